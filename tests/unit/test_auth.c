/*
 * test_auth.c - secrets (plain, md5, SCRAM), the md5 scheme, password checks
 * and the userlist.txt loader, including malformed files whose error
 * messages must name path:line and never echo the secret.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* asprintf */
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "scram.h"
#include "tap.h"

#define PG_MD5        "md53175bce1d3201d16594cebf9d7eb3f9d" /* user postgres, password postgres */
#define PG_MD5_SALTED "md568be9ed08db75f318087ab337aaea044" /* PG_MD5 answering salt 01 02 03 04 */
#define RFC_SECRET                                                                                                     \
    "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"                        \
    "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="

/* Made by PostgreSQL 15 (CREATE ROLE x / y PASSWORD 'pencil'; SELECT rolpassword FROM pg_authid). */
#define PG15_SCRAM_X                                                                                                   \
    "SCRAM-SHA-256$4096:DYG9o+H3Mu3FYbWz+WWXPQ==$5rgTKVm7UrIzYbCBBOHDkmYYZ7Ozuk+HIXN9ZE8/EAQ=:"                        \
    "GJYr4hFtFQrozK4d1FM3UezKpaOCrlNBMCpAhnF2IhI="
#define PG15_MD5_Y "md5a80a6c0967e923f0e3eba985228a4417"

static const uint8_t salt4[4] = {1, 2, 3, 4};

static char tmpdir[] = "/tmp/pgbun_test_auth_XXXXXX";

/* Writes text to a fresh file in tmpdir; returns its malloc'd path. */
static char *write_file(const char *name, const char *text)
{
    char *path;
    FILE *f;

    if (asprintf(&path, "%s/%s", tmpdir, name) < 0) abort();
    f = fopen(path, "w");
    if (f == NULL) abort();
    fputs(text, f);
    fclose(f);
    return path;
}

static void test_md5_scheme(void)
{
    char out[MD5_PASSWD_LEN + 1];

    auth_md5_secret("postgres", "postgres", out);
    is_str(out, PG_MD5, "md5 secret of postgres/postgres matches PostgreSQL");
    auth_md5_salted(PG_MD5, salt4, out);
    is_str(out, PG_MD5_SALTED, "salted md5 reply matches an independent computation");
    auth_md5_salted("md53175BCE1D3201D16594CEBF9D7EB3F9D", salt4, out);
    is_str(out, PG_MD5_SALTED, "an uppercase md5 secret hashes like the lowercase one");
    auth_md5_salted("md5nothex", salt4, out);
    is_str(out, "", "a malformed md5 secret gives an empty reply");
}

static void test_secret_parse(void)
{
    static const char *bad[] = {
        "md5zz75bce1d3201d16594cebf9d7eb3f9d",
        "SCRAM-SHA-256$",
        "SCRAM-SHA-256$4096",
        "SCRAM-SHA-256$0:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$-1:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$99999999999:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$4096:$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ=$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=",
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT:"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=AAAA",
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2d*=",
        /* 66-byte salt: more than SCRAM_MAX_SALT */
        "SCRAM-SHA-256$4096:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA$"
        "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
    };
    struct secret s;

    ok(secret_parse(&s, "u", "hunter2") && s.kind == SECRET_PLAIN, "plain text is SECRET_PLAIN");
    is_str(s.secret, "hunter2", "secret kept as written");
    is_str(s.user, "u", "user kept");
    secret_clear(&s);
    ok(s.user == NULL && s.secret == NULL, "clear leaves no pointers");
    ok(secret_parse(&s, "u", PG_MD5) && s.kind == SECRET_MD5, "md5 + 32 hex is SECRET_MD5");
    secret_clear(&s);
    ok(secret_parse(&s, "u", "md53175BCE1D3201D16594CEBF9D7EB3F9D") && s.kind == SECRET_MD5,
       "uppercase hex is SECRET_MD5");
    secret_clear(&s);
    ok(secret_parse(&s, "u", "md5sum") && s.kind == SECRET_PLAIN, "a short md5... text is a plain password");
    secret_clear(&s);
    ok(secret_parse(&s, "u", "SCRAM-SHA-1$x") && s.kind == SECRET_PLAIN, "other SCRAM flavours are plain text");
    secret_clear(&s);
    ok(secret_parse(&s, "u", RFC_SECRET) && s.kind == SECRET_SCRAM, "SCRAM secret is SECRET_SCRAM");
    ok(s.scram_iter == 4096 && s.scram_salt_len == 16 && s.scram_salt[0] == 0x5b && s.scram_stored_key[0] == 0x58 &&
           s.scram_server_key[0] == 0xc1,
       "SCRAM fields decoded");
    secret_clear(&s);

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        bool r = secret_parse(&s, "u", bad[i]);

        ok(!r && s.user == NULL && s.secret == NULL, "malformed secret %zu refused", i);
        if (r) secret_clear(&s);
    }
}

static void test_check_plain(void)
{
    struct secret s;
    char         *made = scram_make_secret("correct horse", NULL, 0, 4096);

    if (!secret_parse(&s, "postgres", "postgres")) abort();
    ok(auth_check_plain(&s, "postgres"), "plain secret: right password");
    ok(!auth_check_plain(&s, "postgre"), "plain secret: prefix refused");
    ok(!auth_check_plain(&s, "postgresx"), "plain secret: longer refused");
    ok(!auth_check_plain(&s, ""), "plain secret: empty password refused");
    secret_clear(&s);

    if (!secret_parse(&s, "u", "")) abort();
    ok(!auth_check_plain(&s, ""), "empty plain secret never matches");
    secret_clear(&s);

    if (!secret_parse(&s, "postgres", PG_MD5)) abort();
    ok(auth_check_plain(&s, "postgres"), "md5 secret: right password");
    ok(!auth_check_plain(&s, "Postgres"), "md5 secret: wrong password");
    ok(!auth_check_plain(&s, PG_MD5), "md5 secret: the secret itself is not a password");
    secret_clear(&s);

    if (!secret_parse(&s, "postgres", "md53175BCE1D3201D16594CEBF9D7EB3F9D")) abort();
    ok(auth_check_plain(&s, "postgres"), "uppercase md5 secret: right password");
    secret_clear(&s);

    if (!secret_parse(&s, "user", RFC_SECRET)) abort();
    ok(auth_check_plain(&s, "pencil"), "SCRAM secret (RFC 7677): right password");
    ok(!auth_check_plain(&s, "pencil2"), "SCRAM secret (RFC 7677): wrong password");
    secret_clear(&s);

    if (!secret_parse(&s, "x", PG15_SCRAM_X)) abort();
    ok(auth_check_plain(&s, "pencil") && !auth_check_plain(&s, "pencil "), "SCRAM secret made by PostgreSQL 15");
    secret_clear(&s);
    if (!secret_parse(&s, "y", PG15_MD5_Y)) abort();
    ok(auth_check_plain(&s, "pencil") && !auth_check_plain(&s, "pencil "), "md5 secret made by PostgreSQL 15");
    secret_clear(&s);

    ok(made != NULL, "scram_make_secret with a random salt");
    ok(secret_parse(&s, "bob", made) && s.kind == SECRET_SCRAM && s.scram_salt_len == 16,
       "made secret parses with a 16-byte salt");
    ok(auth_check_plain(&s, "correct horse"), "made SCRAM secret: right password");
    ok(!auth_check_plain(&s, "correct horse "), "made SCRAM secret: wrong password");
    secret_clear(&s);
    free(made);

    ok(secret_eq("abc", "abc", 3) && !secret_eq("abc", "abd", 3), "secret_eq");
}

static void test_check_md5(void)
{
    struct secret s;

    if (!secret_parse(&s, "postgres", "postgres")) abort();
    ok(auth_check_md5(&s, salt4, PG_MD5_SALTED), "plain secret: right md5 reply");
    ok(!auth_check_md5(&s, (const uint8_t[4]){1, 2, 3, 5}, PG_MD5_SALTED), "plain secret: reply to another salt");
    ok(!auth_check_md5(&s, salt4, "postgres"), "plain secret: cleartext is not an md5 reply");
    secret_clear(&s);

    if (!secret_parse(&s, "postgres", PG_MD5)) abort();
    ok(auth_check_md5(&s, salt4, PG_MD5_SALTED), "md5 secret: right md5 reply");
    ok(!auth_check_md5(&s, salt4, "md568be9ed08db75f318087ab337aaea045"), "md5 secret: wrong reply");
    ok(!auth_check_md5(&s, salt4, "md568be9ed08db75f318087ab337aaea04"), "md5 secret: short reply");
    ok(!auth_check_md5(&s, salt4, ""), "md5 secret: empty reply");
    secret_clear(&s);

    if (!secret_parse(&s, "user", RFC_SECRET)) abort();
    ok(!auth_check_md5(&s, salt4, PG_MD5_SALTED), "SCRAM secret cannot answer md5");
    secret_clear(&s);
}

static void test_authfile_load(void)
{
    const char          *text = "; a comment\n"
                                "# another comment\n"
                                "\n"
                                "   \t\n"
                                "\"alice\" \"wonderland\"\n"
                                "\"postgres\" \"" PG_MD5 "\" trailing words are ignored\n"
                                "\"user\" \"" RFC_SECRET "\"\n"
                                "\"o\"\"brien\" \"say \"\"hi\"\"\"\r\n"
                                "  \"spaced\"\t\"x\"\n"
                                "\"alice\" \"rabbit\"\n";
    char                *path = write_file("users.txt", text), *err = (char *)"unset";
    struct auth_file    *af = auth_file_load(path, &err);
    const struct secret *s;

    ok(af != NULL && err == NULL, "userlist loads");
    is_int(auth_file_count(af), 5, "five users (alice listed twice)");
    s = auth_file_find(af, "alice");
    ok(s && auth_check_plain(s, "rabbit") && !auth_check_plain(s, "wonderland"),
       "a later line overrides an earlier one");
    s = auth_file_find(af, "postgres");
    ok(s && s->kind == SECRET_MD5 && auth_check_plain(s, "postgres"), "md5 entry");
    s = auth_file_find(af, "user");
    ok(s && s->kind == SECRET_SCRAM && auth_check_plain(s, "pencil"), "SCRAM entry");
    s = auth_file_find(af, "o\"brien");
    ok(s && s->kind == SECRET_PLAIN && strcmp(s->secret, "say \"hi\"") == 0, "doubled quotes in both fields");
    ok(auth_file_find(af, "spaced") != NULL, "leading blanks and a tab between fields");
    ok(auth_file_find(af, "Alice") == NULL && auth_file_find(af, "alic") == NULL && auth_file_find(af, "") == NULL,
       "find is exact");
    auth_file_free(af);
    unlink(path);
    free(path);

    path = write_file("empty.txt", "; nothing\n");
    af = auth_file_load(path, &err);
    ok(af != NULL && auth_file_count(af) == 0 && auth_file_find(af, "x") == NULL, "a file of comments is empty");
    auth_file_free(af);
    unlink(path);
    free(path);

    path = write_file("nonl.txt", "\"a\" \"b\"");
    af = auth_file_load(path, &err);
    ok(af != NULL && auth_file_find(af, "a") != NULL, "last line without a newline");
    auth_file_free(af);
    unlink(path);
    free(path);
}

static void test_authfile_malformed(void)
{
    static const struct {
        const char *text;
        int         line;
        const char *what;
    } cases[] = {
        {"alice \"TOPSECRET\"\n", 1, "expected a quoted user name"},
        {"\"a\" \"b\"\n\"alice TOPSECRET\n", 2, "unterminated user name"},
        {"\"alice\"\n", 1, "expected a quoted secret after the user name"},
        {"\"alice\" TOPSECRET\n", 1, "expected a quoted secret after the user name"},
        {"; c\n\"alice\" \"TOPSECRET\n", 2, "unterminated secret"},
        {"\"alice\" \"TOPSECRET\"\"\n", 1, "unterminated secret"},
        {"\"\" \"TOPSECRET\"\n", 1, "empty user name"},
        {"\n\n\"alice\" \"md5TOPSECRETTOPSECRETTOPSECRET12345\"\n", 3, "malformed md5 secret"},
        {"\"alice\" \"SCRAM-SHA-256$4096:TOPSECRET$x:y\"\n", 1, "malformed SCRAM secret"},
    };
    char             *err;
    struct auth_file *af;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *path = write_file("bad.txt", cases[i].text), *want;

        if (asprintf(&want, "%s:%d: %s", path, cases[i].line, cases[i].what) < 0) abort();
        err = NULL;
        af = auth_file_load(path, &err);
        ok(af == NULL, "malformed file %zu refused", i);
        is_str(err, want, "error names path:line and the problem (%s)", cases[i].what);
        ok(err && strstr(err, "TOPSECRET") == NULL, "error message does not leak the secret");
        free(want);
        free(err);
        unlink(path);
        free(path);
    }

    {
        char *path = write_file("nul.txt", "x"), *want;
        FILE *f = fopen(path, "w");

        fwrite("\"a\" \"b\0c\"\n", 1, 11, f);
        fclose(f);
        err = NULL;
        af = auth_file_load(path, &err);
        if (asprintf(&want, "%s:1: NUL byte in line", path) < 0) abort();
        ok(af == NULL, "NUL byte refused");
        is_str(err, want, "NUL byte names the line");
        free(want);
        free(err);
        unlink(path);
        free(path);
    }

    {
        char *path, *want;

        if (asprintf(&path, "%s/does-not-exist", tmpdir) < 0 ||
            asprintf(&want, "%s: cannot open: No such file or directory", path) < 0)
            abort();
        err = NULL;
        af = auth_file_load(path, &err);
        ok(af == NULL, "missing file refused");
        is_str(err, want, "missing file: path, cannot open, strerror");
        free(want);
        free(err);
        free(path);
    }

    ok(auth_file_find(NULL, "x") == NULL && auth_file_count(NULL) == 0, "NULL auth_file is empty");
}

int main(void)
{
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    test_md5_scheme();
    test_secret_parse();
    test_check_plain();
    test_check_md5();
    test_authfile_load();
    test_authfile_malformed();
    rmdir(tmpdir);
    return done_testing();
}
