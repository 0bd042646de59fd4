/*
 * authfile.c - the auth_file parser (src/auth.c, src/secret.c) over any
 * file: every user it loads has a secret that parses back, and checking a
 * password against it does not fail on its shape.
 */
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "fuzz.h"
#include "secret.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t salt[4] = {1, 2, 3, 4};
    const char          *path = fuzz_file("userlist.txt", data, size);
    char                *err = NULL;
    struct auth_file    *af = auth_file_load(path, &err);

    if (af == NULL) return fuzz_refused(err);
    for (size_t i = 0; i < auth_file_count(af); i++) {
        const char          *user = auth_file_user(af, i);
        const struct secret *s = auth_file_find(af, user);
        char                 md5[MD5_PASSWD_LEN + 1];

        if (s == NULL) abort(); /* every listed user is found by name */
        if (s->kind == SECRET_MD5) {
            auth_md5_salted(s->secret, salt, md5);
            (void)auth_check_md5(s, salt, md5);
            (void)auth_check_plain(s, "x");
        } else if (s->kind == SECRET_PLAIN) {
            /* Its own text logs in, unless empty: an empty password never does. */
            if (auth_check_plain(s, s->secret) != (s->secret[0] != '\0')) abort();
        }
        /* (A SCRAM secret's check runs PBKDF2 for as many rounds as the file says: slow, and scram.c's.) */
    }
    (void)auth_file_find(af, "");
    auth_file_free(af);
    return 0;
}
