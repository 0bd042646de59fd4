/*
 * replay.c - the main of a harness in a build without libFuzzer: runs
 * LLVMFuzzerTestOneInput once on every file named, or in a directory named,
 * on the command line, and ignores libFuzzer's -options. So the seed corpus,
 * crashes once found among it, is a regression test of every build, and
 * fuzz/run calls either kind of program the same way.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

static int replayed;

static void replay_file(const char *path)
{
    FILE    *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    size_t   len = 0, cap = 0, n;

    if (f == NULL) {
        fprintf(stderr, "replay: %s: cannot open\n", path);
        exit(2);
    }
    do {
        if (cap - len < 4096) {
            cap = cap * 2 + 4096;
            buf = realloc(buf, cap);
            if (buf == NULL) abort();
        }
        n = fread(buf + len, 1, cap - len, f);
        len += n;
    } while (n > 0);
    fclose(f);
    /* An exact-size copy, so that a read past the input's end is caught as it would be under libFuzzer. */
    {
        uint8_t *exact = malloc(len > 0 ? len : 1);

        if (exact == NULL) abort();
        if (len > 0) memcpy(exact, buf, len);
        free(buf);
        LLVMFuzzerTestOneInput(exact, len);
        free(exact);
    }
    replayed++;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

static void replay_path(const char *path)
{
    struct dirent **names;
    struct stat     st;
    int             n;

    if (stat(path, &st) != 0) {
        fprintf(stderr, "replay: %s: no such file or directory\n", path);
        exit(2);
    }
    if (!S_ISDIR(st.st_mode)) {
        replay_file(path);
        return;
    }
    n = scandir(path, &names, NULL, by_name);
    if (n < 0) exit(2);
    for (int i = 0; i < n; i++) {
        char full[4096];

        if (names[i]->d_name[0] != '.') {
            snprintf(full, sizeof(full), "%s/%s", path, names[i]->d_name);
            replay_path(full);
        }
        free(names[i]);
    }
    free(names);
}

int main(int argc, char **argv)
{
    LLVMFuzzerInitialize(&argc, &argv); /* the harness's, or common.c's */
    for (int i = 1; i < argc; i++)
        if (argv[i][0] != '-') replay_path(argv[i]);
    printf("replayed %d inputs\n", replayed);
    return 0;
}
