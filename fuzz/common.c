/*
 * common.c - the harnesses' shared helpers (fuzz.h).
 */
#include "fuzz.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

static char dir[PATH_MAX - 64]; /* room for a file name after it */
static char path[PATH_MAX];

char *fuzz_strndup(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);

    if (s == NULL) abort();
    if (size > 0) memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

static void remove_dir(void)
{
    char cmd[PATH_MAX + 16];

    if (dir[0] == '\0') return;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "fuzz: could not remove %s\n", dir);
}

const char *fuzz_file(const char *name, const uint8_t *data, size_t size)
{
    FILE *f;

    if (dir[0] == '\0') {
        const char *tmp = getenv("TMPDIR");

        snprintf(dir, sizeof(dir), "%s/pgbun-fuzz-XXXXXX", tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
        if (mkdtemp(dir) == NULL) abort();
        atexit(remove_dir);
    }
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path)) abort();
    f = fopen(path, "w");
    if (f == NULL) abort();
    if (size > 0 && fwrite(data, 1, size, f) != size) abort();
    if (fclose(f) != 0) abort();
    return path;
}

void fuzz_quiet(void)
{
    log_set_stderr(false);
}

/* The harnesses without a set-up of their own get this one (a harness's own wins: this one is weak). */
__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet();
    return 0;
}

int fuzz_refused(char *err)
{
    if (err == NULL) abort();
    free(err);
    return 0;
}
