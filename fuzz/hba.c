/*
 * hba.c - the auth_hba_file parser (src/hba.c) over any file, and what it
 * loads matched against unix, TCP (IPv4 and IPv6) and TLS connections.
 */
#include <stdlib.h>

#include "fuzz.h"
#include "hba.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct hba_conn conns[] = {
        {true, false, NULL, "app", "alice", false},
        {false, false, "10.1.2.3", "app", "bob", false},
        {false, true, "2001:db8::5", "pgbun", "admin", true},
        {false, false, "127.0.0.1", "all", "all", false},
    };
    const char *path = fuzz_file("hba.conf", data, size);
    char       *err = NULL;
    struct hba *h = hba_load(path, &err);

    if (h == NULL) return fuzz_refused(err);
    for (size_t i = 0; i < sizeof(conns) / sizeof(conns[0]); i++) {
        int line = -1;

        (void)hba_match(h, &conns[i], &line);
        if (line < 0 || line > (int)size + 1) abort();
    }
    (void)hba_uses(h, AUTH_MD5);
    if (hba_rule_count(h) < 0) abort();
    hba_free(h);
    return 0;
}
