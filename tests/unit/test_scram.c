/*
 * test_scram.c - SCRAM-SHA-256 on both sides: the RFC 7677 vector, round
 * trips, and malformed messages of every kind. Every message is handed over
 * in a heap buffer of exactly its length, with no NUL after it, so that a
 * parser reading one byte too far trips AddressSanitizer.
 */
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base64.h"
#include "scram.h"
#include "tap.h"

#define RFC_PASSWORD     "pencil"
#define RFC_CNONCE       "rOprNGfwEbeRWgbNEkqO"
#define RFC_SNONCE       "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define RFC_NONCE        RFC_CNONCE RFC_SNONCE
#define RFC_CLIENT_FIRST "n,,n=user,r=" RFC_CNONCE
#define RFC_SERVER_FIRST "r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
#define RFC_CLIENT_FINAL "c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
#define RFC_SERVER_FINAL "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
/* The vector's secret, computed independently (Python hashlib) from "pencil", the salt and 4096. */
#define RFC_SECRET                                                                                                     \
    "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"                        \
    "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
/* pgbun's client sends "n=," so its proof differs from the RFC's; also computed with hashlib. */
#define PG_CLIENT_FINAL "c=biws,r=" RFC_NONCE ",p=qvT2SWdEH5Q06albL+hjSYuUhCG7VndFyzIb7CK4n9k="
#define PG_SERVER_FINAL "v=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOg="

static const uint8_t rfc_salt[16] = {0x5b, 0x6d, 0x99, 0x68, 0x9d, 0x12, 0x35, 0x8e,
                                     0xec, 0xa0, 0x4b, 0x14, 0x12, 0x36, 0xfa, 0x81};

static struct secret rfc_secret;

/* An exact-length heap copy: no terminator for a parser to lean on. */
static char *exact(const char *s, size_t n)
{
    char *p = malloc(n ? n : 1);

    memcpy(p, s, n);
    return p;
}

static bool server_first(struct scram_server *st, const char *msg, size_t n, char **out, const char **err)
{
    char *m = exact(msg, n);
    bool  r = scram_server_first(st, m, n, out, err);

    free(m);
    return r;
}

static bool server_final(struct scram_server *st, const char *msg, size_t n, char **out, const char **err)
{
    char *m = exact(msg, n);
    bool  r = scram_server_final(st, m, n, out, err);

    free(m);
    return r;
}

static bool client_final(struct scram_client *st, const char *pw, const char *msg, size_t n, char **out,
                         const char **err)
{
    char *m = exact(msg, n);
    bool  r = scram_client_final(st, pw, m, n, out, err);

    free(m);
    return r;
}

static bool client_verify(struct scram_client *st, const char *msg, size_t n, const char **err)
{
    char *m = exact(msg, n);
    bool  r = scram_client_verify(st, m, n, err);

    free(m);
    return r;
}

/* A server that has answered the RFC client-first, ready for a client-final. */
static void server_after_first(struct scram_server *st)
{
    char       *out = NULL;
    const char *err = NULL;

    if (!scram_server_begin(st, &rfc_secret, RFC_SNONCE) ||
        !server_first(st, RFC_CLIENT_FIRST, strlen(RFC_CLIENT_FIRST), &out, &err))
        abort();
    free(out);
}

/* A client that has sent "n,,n=,r=<RFC client nonce>". */
static void client_after_first(struct scram_client *st)
{
    char *out = NULL;

    if (!scram_client_first(st, RFC_CNONCE, &out)) abort();
    free(out);
}

static void test_make_secret_matches_the_vector(void)
{
    char *s = scram_make_secret(RFC_PASSWORD, rfc_salt, sizeof(rfc_salt), 4096);

    is_str(s, RFC_SECRET, "scram_make_secret reproduces the RFC 7677 keys");
    free(s);
    ok(secret_parse(&rfc_secret, "user", RFC_SECRET) && rfc_secret.kind == SECRET_SCRAM,
       "the vector's secret parses as SCRAM");
    is_int(rfc_secret.scram_iter, 4096, "iterations parsed");
    ok(rfc_secret.scram_salt_len == 16 && memcmp(rfc_secret.scram_salt, rfc_salt, 16) == 0, "salt decoded");
    ok(scram_make_secret("x", rfc_salt, 0, 4096) == NULL, "empty salt refused");
    ok(scram_make_secret("x", rfc_salt, sizeof(rfc_salt), 0) == NULL, "zero iterations refused");
}

static void test_server_rfc7677_vector(void)
{
    struct scram_server st;
    char               *out = NULL;
    const char         *err = NULL;

    ok(scram_server_begin(&st, &rfc_secret, RFC_SNONCE), "server begins from a SCRAM secret");
    ok(server_first(&st, RFC_CLIENT_FIRST, strlen(RFC_CLIENT_FIRST), &out, &err),
       "server accepts the RFC client-first");
    is_str(out, RFC_SERVER_FIRST, "server-first matches the RFC");
    free(out);
    out = NULL;
    ok(server_final(&st, RFC_CLIENT_FINAL, strlen(RFC_CLIENT_FINAL), &out, &err), "server accepts the RFC proof");
    is_str(out, RFC_SERVER_FINAL, "server-final matches the RFC");
    free(out);
    out = NULL;
    ok(!server_final(&st, RFC_CLIENT_FINAL, strlen(RFC_CLIENT_FINAL), &out, &err) && out == NULL,
       "a second client-final is refused");
    scram_server_free(&st);
}

static void test_client_vector_with_empty_user(void)
{
    struct scram_client st;
    char               *out = NULL;
    const char         *err = NULL;

    ok(scram_client_first(&st, RFC_CNONCE, &out), "client-first built");
    is_str(out, "n,,n=,r=" RFC_CNONCE, "client-first has an empty user name");
    free(out);
    out = NULL;
    ok(client_final(&st, RFC_PASSWORD, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), &out, &err),
       "client answers the RFC server-first");
    is_str(out, PG_CLIENT_FINAL, "client proof matches an independent computation");
    free(out);
    ok(client_verify(&st, PG_SERVER_FINAL, strlen(PG_SERVER_FINAL), &err), "client verifies the server signature");
    ok(!client_verify(&st, PG_SERVER_FINAL, strlen(PG_SERVER_FINAL), &err), "the signature is checked only once");
    scram_client_free(&st);
}

/* client <-> server in memory; returns whether the server accepted and the client verified. */
static bool round_trip(const struct secret *secret, const char *password, const char **where)
{
    struct scram_server srv;
    struct scram_client cli;
    char               *m1 = NULL, *m2 = NULL, *m3 = NULL, *m4 = NULL;
    const char         *err = NULL;
    bool                good = false;

    *where = "begin";
    memset(&cli, 0, sizeof(cli));
    if (!scram_server_begin(&srv, secret, NULL)) return false;
    *where = "client-first";
    if (!scram_client_first(&cli, NULL, &m1)) goto out;
    *where = "server-first";
    if (!server_first(&srv, m1, strlen(m1), &m2, &err)) goto out;
    *where = "client-final";
    if (!client_final(&cli, password, m2, strlen(m2), &m3, &err)) goto out;
    *where = err = NULL;
    if (!server_final(&srv, m3, strlen(m3), &m4, &err)) {
        *where = err;
        goto out;
    }
    *where = "verify";
    good = client_verify(&cli, m4, strlen(m4), &err);
out:
    free(m1);
    free(m2);
    free(m3);
    free(m4);
    scram_server_free(&srv);
    scram_client_free(&cli);
    return good;
}

static void test_round_trips(void)
{
    struct secret plain, scram, md5;
    char         *made = scram_make_secret("s3cret", NULL, 0, 4096);
    const char   *where;

    ok(made != NULL && strncmp(made, "SCRAM-SHA-256$4096:", 19) == 0, "random-salt secret made");
    ok(secret_parse(&plain, "alice", "s3cret"), "plain secret parsed");
    ok(secret_parse(&scram, "alice", made), "made secret parsed");
    ok(secret_parse(&md5, "alice", "md53175bce1d3201d16594cebf9d7eb3f9d"), "md5 secret parsed");
    ok(round_trip(&plain, "s3cret", &where), "round trip against a plain secret");
    ok(round_trip(&scram, "s3cret", &where), "round trip against a SCRAM secret");
    ok(!round_trip(&plain, "wrong", &where) && where && strcmp(where, "invalid proof") == 0,
       "wrong password against a plain secret: invalid proof");
    ok(!round_trip(&scram, "wrong", &where) && where && strcmp(where, "invalid proof") == 0,
       "wrong password against a SCRAM secret: invalid proof");
    ok(!round_trip(&md5, "postgres", &where) && strcmp(where, "begin") == 0, "an md5 secret cannot do SCRAM");
    ok(round_trip(&rfc_secret, RFC_PASSWORD, &where), "round trip against the vector's secret");
    secret_clear(&plain);
    secret_clear(&scram);
    secret_clear(&md5);
    free(made);
}

/*
 * Pass-through: the ClientKey a client's right proof reveals, with the
 * secret's ServerKey, logs in to a second server holding the same secret,
 * and proves what the password itself would.
 */
static void test_pass_through_keys(void)
{
    struct scram_server srv, again;
    struct scram_client cli, relay, by_password;
    char               *m1 = NULL, *m2 = NULL, *m3 = NULL, *m4 = NULL, *r1 = NULL, *r2 = NULL, *r3 = NULL, *r4 = NULL;
    char               *p3 = NULL;
    const char         *err = NULL;
    uint8_t             key[SCRAM_KEY_LEN];
    bool                revealed = false;

    memset(&cli, 0, sizeof(cli));
    memset(&relay, 0, sizeof(relay));
    memset(&by_password, 0, sizeof(by_password));
    ok(scram_server_begin(&srv, &rfc_secret, NULL) && scram_client_first(&cli, NULL, &m1) &&
           server_first(&srv, m1, strlen(m1), &m2, &err) &&
           client_final(&cli, RFC_PASSWORD, m2, strlen(m2), &m3, &err) && server_final(&srv, m3, strlen(m3), &m4, &err),
       "a client logs in with its password");
    revealed = srv.have_client_key;
    ok(revealed, "its proof revealed the ClientKey");
    if (revealed) memcpy(key, srv.client_key, sizeof(key));
    scram_server_free(&srv);
    ok(!srv.have_client_key, "scram_server_free forgets it");
    ok(revealed && scram_server_begin(&again, &rfc_secret, NULL) && scram_client_first(&relay, NULL, &r1) &&
           server_first(&again, r1, strlen(r1), &r2, &err) &&
           scram_client_final_keys(&relay, key, rfc_secret.scram_server_key, r2, strlen(r2), &r3, &err) &&
           server_final(&again, r3, strlen(r3), &r4, &err) && client_verify(&relay, r4, strlen(r4), &err),
       "the keys log in to a server with the same secret, and verify its signature");
    scram_server_free(&again);
    /* The vector's server-first answered from the keys: the proof the password gives. */
    scram_client_free(&relay);
    memset(&relay, 0, sizeof(relay));
    free(r1);
    r1 = NULL;
    ok(revealed && scram_client_first(&relay, RFC_CNONCE, &r1) &&
           scram_client_final_keys(&relay, key, rfc_secret.scram_server_key, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST),
                                   &p3, &err),
       "the keys answer the vector's server-first");
    is_str(p3, PG_CLIENT_FINAL, "with the proof the password gives");
    {
        uint8_t wrong[SCRAM_KEY_LEN];
        char   *w1 = NULL, *w2 = NULL, *w3 = NULL, *w4 = NULL;

        memcpy(wrong, key, sizeof(wrong));
        wrong[0] ^= 1;
        memset(&by_password, 0, sizeof(by_password));
        ok(scram_server_begin(&again, &rfc_secret, NULL) && scram_client_first(&by_password, NULL, &w1) &&
               server_first(&again, w1, strlen(w1), &w2, &err) &&
               scram_client_final_keys(&by_password, wrong, rfc_secret.scram_server_key, w2, strlen(w2), &w3, &err) &&
               !server_final(&again, w3, strlen(w3), &w4, &err) && strcmp(err, "invalid proof") == 0,
           "another ClientKey is refused");
        scram_server_free(&again);
        scram_client_free(&by_password);
        free(w1);
        free(w2);
        free(w3);
        free(w4);
    }
    scram_client_free(&cli);
    scram_client_free(&relay);
    free(m1);
    free(m2);
    free(m3);
    free(m4);
    free(r1);
    free(r2);
    free(r3);
    free(r4);
    free(p3);
}

/* The salt a server's first message shows for user (its "s=" attribute), into out. */
static bool salt_shown(const struct secret *secret, char *out, size_t n)
{
    struct scram_server srv;
    struct scram_client cli;
    char               *m1 = NULL, *m2 = NULL;
    const char         *err = NULL, *s, *e;
    bool                good = false;

    memset(&cli, 0, sizeof(cli));
    if (!scram_server_begin(&srv, secret, NULL)) return false;
    if (scram_client_first(&cli, NULL, &m1) && server_first(&srv, m1, strlen(m1), &m2, &err) &&
        (s = strstr(m2, ",s=")) != NULL && (e = strchr(s + 3, ',')) != NULL && (size_t)(e - s - 3) < n) {
        memcpy(out, s + 3, (size_t)(e - s - 3));
        out[e - s - 3] = '\0';
        good = true;
    }
    free(m1);
    free(m2);
    scram_server_free(&srv);
    scram_client_free(&cli);
    return good;
}

/* A stranger's exchange goes on to the proof, with a salt as fixed as a user's, and fails. */
static void test_mock_secret(void)
{
    struct secret mock, again, other, plain;
    char          a[64], b[64], c[64], d[64], e[64];
    const char   *where;

    ok(scram_mock_secret(&mock, "nobody") && scram_mock_secret(&again, "nobody") &&
           scram_mock_secret(&other, "somebody"),
       "mock secrets made");
    ok(!round_trip(&mock, "", &where) && where && strcmp(where, "invalid proof") == 0,
       "a mock secret: the exchange ends at the proof, which fails");
    ok(!round_trip(&mock, "nobody", &where) && where && strcmp(where, "invalid proof") == 0, "whatever the password");
    ok(salt_shown(&mock, a, sizeof(a)) && salt_shown(&again, b, sizeof(b)) && strcmp(a, b) == 0,
       "the same salt for a name every time");
    ok(salt_shown(&other, c, sizeof(c)) && strcmp(a, c) != 0, "another salt for another name");
    ok(secret_parse(&plain, "nobody", "s3cret") && salt_shown(&plain, d, sizeof(d)) &&
           salt_shown(&plain, e, sizeof(e)) && strcmp(d, e) == 0,
       "a plain secret shows one salt every time too");
    secret_clear(&mock);
    secret_clear(&again);
    secret_clear(&other);
    secret_clear(&plain);
}

static void test_server_first_malformed(void)
{
    static const struct {
        const char *msg;
        const char *err; /* NULL: any error */
    } cases[] = {
        {"", NULL},
        {"n", NULL},
        {"n,", NULL},
        {"n,,", NULL},
        {"n,,n=user", NULL},
        {"n,,n=user,", NULL},
        {"n,,n=user,r=", NULL},
        {"n,,r=abc", NULL},
        {"n,,n=,x=abc", NULL},
        {"x,,n=,r=abc", NULL},
        {"nn,n=,r=abc", NULL},
        {"n,,n=,r=ab c", NULL},
        {"n,,n=,r=ab\x01", NULL},
        {"n,,n=,r=ab\xff", NULL},
        {"p=tls-server-end-point,,n=,r=abc",
         "SCRAM channel binding data sent, but SCRAM-SHA-256 without channel binding was selected"},
        {"n,a=bob,n=,r=abc", NULL},
        {"n,,m=ext,n=,r=abc", NULL},
    };
    struct scram_server st;
    char               *out;
    const char         *err;
    size_t              full = strlen(RFC_CLIENT_FIRST), need = strlen("n,,n=user,r=") + 1;
    int                 bad = 0;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        bool r;

        if (!scram_server_begin(&st, &rfc_secret, RFC_SNONCE)) abort();
        out = NULL;
        err = NULL;
        r = server_first(&st, cases[i].msg, strlen(cases[i].msg), &out, &err);
        ok(!r && out == NULL && err != NULL && (cases[i].err == NULL || strcmp(err, cases[i].err) == 0),
           "client-first '%s' refused (%s)", cases[i].msg, err ? err : "?");
        scram_server_free(&st);
    }

    /* An embedded NUL is refused rather than silently cutting the message. */
    if (!scram_server_begin(&st, &rfc_secret, RFC_SNONCE)) abort();
    out = NULL;
    ok(!server_first(&st, "n,,n=,r=ab\0cd", 13, &out, &err) && out == NULL, "client-first with a NUL byte refused");
    scram_server_free(&st);

    /* Every truncation: only those that still carry a nonce may pass. */
    for (size_t cut = 0; cut <= full; cut++) {
        bool r;

        if (!scram_server_begin(&st, &rfc_secret, RFC_SNONCE)) abort();
        out = NULL;
        r = server_first(&st, RFC_CLIENT_FIRST, cut, &out, &err);
        if (r != (cut >= need) || (r && out == NULL) || (!r && out != NULL)) bad++;
        free(out);
        scram_server_free(&st);
    }
    is_int(bad, 0, "client-first truncated at every byte: refused until the nonce starts");

    /* Messages out of order. */
    if (!scram_server_begin(&st, &rfc_secret, RFC_SNONCE)) abort();
    ok(!server_final(&st, RFC_CLIENT_FINAL, strlen(RFC_CLIENT_FINAL), &out, &err),
       "client-final before client-first refused");
    scram_server_free(&st);
    server_after_first(&st);
    ok(!server_first(&st, RFC_CLIENT_FIRST, strlen(RFC_CLIENT_FIRST), &out, &err), "a second client-first refused");
    scram_server_free(&st);
}

static void test_server_final_malformed(void)
{
    static const struct {
        const char *msg;
        const char *err;
    } cases[] = {
        {"", "malformed SCRAM message"},
        {"c=biws", "malformed SCRAM message"},
        {"c=biws,r=" RFC_NONCE, "malformed SCRAM message"},
        {"c=biws,r=" RFC_NONCE ",", "malformed SCRAM message"},
        {"c=biws,r=" RFC_NONCE ",p=", "malformed SCRAM message"},
        {"c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ", "malformed SCRAM message"},
        {"c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=,x=1", "malformed SCRAM message"},
        {"c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7And!Q=", "malformed SCRAM message"},
        {"c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=AAAA", "malformed SCRAM message"},
        {"c=biws,r=" RFC_NONCE ",p=AAAA", "malformed SCRAM message"},
        {"c=biws,r=" RFC_NONCE ",p=dHzb=apWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", "malformed SCRAM message"},
        {"c=bi=s,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", "malformed SCRAM message"},
        {"r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", "malformed SCRAM message"},
        {"c=biws,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", "malformed SCRAM message"},
        {"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", "malformed SCRAM message"},
        {"c=eSws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", "SCRAM channel binding check failed"},
        {"c=biws,r=" RFC_CNONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", "SCRAM nonce mismatch"},
        {"c=biws,r=" RFC_NONCE "x,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", "SCRAM nonce mismatch"},
        {"c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVR=", "malformed SCRAM message"},
        {"c=biws,r=" RFC_NONCE ",p=eHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", "invalid proof"},
        {"c=biws,r=" RFC_NONCE ",p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "invalid proof"},
        /* an extension is signed too, so adding one breaks the proof */
        {"c=biws,r=" RFC_NONCE ",x=1,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", "invalid proof"},
    };
    struct scram_server st;
    char               *out;
    const char         *err;
    size_t              full = strlen(RFC_CLIENT_FINAL);
    int                 bad = 0;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        bool r;

        server_after_first(&st);
        out = NULL;
        err = NULL;
        r = server_final(&st, cases[i].msg, strlen(cases[i].msg), &out, &err);
        ok(!r && out == NULL && err != NULL && strcmp(err, cases[i].err) == 0, "client-final '%s' refused: %s",
           cases[i].msg, cases[i].err);
        if (err && strcmp(err, cases[i].err) != 0) printf("#   got '%s'\n", err);
        scram_server_free(&st);
    }

    for (size_t cut = 0; cut < full; cut++) {
        server_after_first(&st);
        out = NULL;
        if (server_final(&st, RFC_CLIENT_FINAL, cut, &out, &err) || out != NULL) bad++;
        free(out);
        scram_server_free(&st);
    }
    is_int(bad, 0, "client-final truncated at every byte is refused");

    server_after_first(&st);
#define WRONG_FINAL "c=biws,r=" RFC_NONCE ",p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
    ok(!server_final(&st, WRONG_FINAL, strlen(WRONG_FINAL), &out, &err), "wrong proof refused");
    ok(!server_final(&st, RFC_CLIENT_FINAL, strlen(RFC_CLIENT_FINAL), &out, &err) &&
           strcmp(err, "unexpected SCRAM message") == 0,
       "no second try after a wrong proof");
    scram_server_free(&st);
}

static void test_client_final_malformed(void)
{
    static const struct {
        const char *msg;
        const char *err;
    } cases[] = {
        {"", "malformed SCRAM message"},
        {"r=" RFC_NONCE, "malformed SCRAM message"},
        {"r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==", "malformed SCRAM message"},
        {"r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=", "malformed SCRAM message"},
        {"r=" RFC_NONCE ",s=,i=4096", "malformed SCRAM message"},
        {"r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ=,i=4096", "malformed SCRAM message"},
        {"r=" RFC_NONCE ",s=W22Z!J0SNY7soEsUEjb6gQ==,i=4096", "malformed SCRAM message"},
        {"r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=40x6", "malformed SCRAM message"},
        {"r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=-1", "malformed SCRAM message"},
        {"r=" RFC_NONCE ",i=4096,s=W22ZaJ0SNY7soEsUEjb6gQ==", "malformed SCRAM message"},
        {"s=W22ZaJ0SNY7soEsUEjb6gQ==,r=" RFC_NONCE ",i=4096", "malformed SCRAM message"},
        {"m=x,r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", "unsupported SCRAM extension"},
        {"r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0", "SCRAM iteration count out of range"},
        {"r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=10000001", "SCRAM iteration count out of range"},
        {"r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=99999999999999999999999", "SCRAM iteration count out of range"},
        {"r=" RFC_CNONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", "SCRAM nonce mismatch"},
        {"r=rOprNGfwEbeRWgbNEkqX" RFC_SNONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", "SCRAM nonce mismatch"},
        {"r=rOpr,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", "SCRAM nonce mismatch"},
        {"e=other-error", "malformed SCRAM message"},
    };
    struct scram_client st;
    char               *out;
    const char         *err;
    size_t              full = strlen(RFC_SERVER_FIRST), need = strlen(RFC_SERVER_FIRST) - 3;
    int                 bad = 0;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        bool r;

        client_after_first(&st);
        out = NULL;
        err = NULL;
        r = client_final(&st, RFC_PASSWORD, cases[i].msg, strlen(cases[i].msg), &out, &err);
        ok(!r && out == NULL && err != NULL && strcmp(err, cases[i].err) == 0, "server-first '%s' refused: %s",
           cases[i].msg, cases[i].err);
        if (err && strcmp(err, cases[i].err) != 0) printf("#   got '%s'\n", err);
        scram_client_free(&st);
    }

    /* Truncations pass only once "i=" has a digit (i=4, i=40, i=409 are valid counts). */
    for (size_t cut = 0; cut <= full; cut++) {
        bool r;

        client_after_first(&st);
        out = NULL;
        r = client_final(&st, RFC_PASSWORD, RFC_SERVER_FIRST, cut, &out, &err);
        if (r != (cut >= need) || (r && out == NULL) || (!r && out != NULL)) bad++;
        free(out);
        scram_client_free(&st);
    }
    is_int(bad, 0, "server-first truncated at every byte: refused until the iteration count starts");

    memset(&st, 0, sizeof(st));
    ok(!client_final(&st, RFC_PASSWORD, RFC_SERVER_FIRST, full, &out, &err),
       "server-first before client-first refused");
    ok(!client_verify(&st, PG_SERVER_FINAL, strlen(PG_SERVER_FINAL), &err), "server-final before server-first refused");
}

static void test_client_verify_malformed(void)
{
    static const struct {
        const char *msg;
        const char *err;
    } cases[] = {
        {"", "malformed SCRAM message"},
        {"v=", "malformed SCRAM message"},
        {"v=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOg", "malformed SCRAM message"},
        {"v=3HO6Qt1M4MKJrmlKaoOqLAI0", "malformed SCRAM message"},
        {"x=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOg=", "malformed SCRAM message"},
        {"v=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOh=", "malformed SCRAM message"},
        {"v=4HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOg=", "invalid server signature"},
        {"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=", "invalid server signature"},
        {"e=invalid-proof", "server reported SCRAM error: invalid-proof"},
        {"e=something-new", "server reported a SCRAM error"},
    };
    struct scram_client st;
    char               *out;
    const char         *err;
    int                 bad = 0;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        client_after_first(&st);
        if (!client_final(&st, RFC_PASSWORD, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), &out, &err)) abort();
        free(out);
        err = NULL;
        ok(!client_verify(&st, cases[i].msg, strlen(cases[i].msg), &err) && err && strcmp(err, cases[i].err) == 0,
           "server-final '%s' refused: %s", cases[i].msg, cases[i].err);
        scram_client_free(&st);
    }

    for (size_t cut = 0; cut < strlen(PG_SERVER_FINAL); cut++) {
        client_after_first(&st);
        if (!client_final(&st, RFC_PASSWORD, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), &out, &err)) abort();
        free(out);
        if (client_verify(&st, PG_SERVER_FINAL, cut, &err)) bad++;
        scram_client_free(&st);
    }
    is_int(bad, 0, "server-final truncated at every byte is refused");

    client_after_first(&st);
    if (!client_final(&st, RFC_PASSWORD, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), &out, &err)) abort();
    free(out);
    ok(client_verify(&st, PG_SERVER_FINAL ",x=ext", strlen(PG_SERVER_FINAL ",x=ext"), &err),
       "server-final extensions after v= are ignored");
    scram_client_free(&st);
}

static void test_random_nonces_differ(void)
{
    struct scram_client a, b;
    char               *ma = NULL, *mb = NULL;

    ok(scram_client_first(&a, NULL, &ma) && scram_client_first(&b, NULL, &mb), "two random client-firsts");
    ok(ma && mb && strlen(ma) == strlen("n,,n=,r=") + 24 && strcmp(ma, mb) != 0,
       "random nonces are 24 chars and differ");
    free(ma);
    free(mb);
    scram_client_free(&a);
    scram_client_free(&b);
}

/* A client's proof for the RFC password over auth_message, computed here from the definitions (RFC 5802, 3). */
static char *proof_for(const char *auth_message)
{
    uint8_t      salted[32], client_key[32], stored[32], sig[32], proof[32];
    unsigned int n = 0;

    PKCS5_PBKDF2_HMAC(RFC_PASSWORD, (int)strlen(RFC_PASSWORD), rfc_salt, sizeof(rfc_salt), 4096, EVP_sha256(), 32,
                      salted);
    HMAC(EVP_sha256(), salted, 32, (const uint8_t *)"Client Key", 10, client_key, &n);
    EVP_Digest(client_key, 32, stored, &n, EVP_sha256(), NULL);
    HMAC(EVP_sha256(), stored, 32, (const uint8_t *)auth_message, strlen(auth_message), sig, &n);
    for (int i = 0; i < 32; i++)
        proof[i] = client_key[i] ^ sig[i];
    return base64_encode(proof, 32);
}

/* A client-final for a bound exchange: c= carries the gs2 header and then `data`, signed with a right proof. */
static char *bound_final(const char *server_first_msg, const char *bare, const uint8_t *data, size_t len)
{
    static const char header[] = "p=tls-server-end-point,,";
    uint8_t           cbind[sizeof(header) - 1 + SCRAM_CB_MAX];
    char             *c64, *nonce_start, without[512], auth[1024], *p64, *out;

    memcpy(cbind, header, sizeof(header) - 1);
    memcpy(cbind + sizeof(header) - 1, data, len);
    c64 = base64_encode(cbind, sizeof(header) - 1 + len);
    nonce_start = strstr(server_first_msg, "r=") + 2;
    snprintf(without, sizeof(without), "c=%s,r=%.*s", c64, (int)strcspn(nonce_start, ","), nonce_start);
    snprintf(auth, sizeof(auth), "%s,%s,%s", bare, server_first_msg, without);
    p64 = proof_for(auth);
    out = malloc(strlen(without) + strlen(p64) + 4);
    sprintf(out, "%s,p=%s", without, p64);
    free(c64);
    free(p64);
    return out;
}

static void test_channel_binding(void)
{
    static const uint8_t cb[32] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
                                   17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
    static const uint8_t other[32] = {9};
    const char          *bare = "n=,r=" RFC_CNONCE;
    const char          *bound_first = "p=tls-server-end-point,,n=,r=" RFC_CNONCE;
    struct scram_server  st;
    char                *out = NULL, *final;
    const char          *err = NULL;

    /* Right binding data and a right proof: accepted. */
    ok(scram_server_begin(&st, &rfc_secret, RFC_SNONCE), "begin");
    scram_server_channel_binding(&st, cb, sizeof(cb), true);
    ok(server_first(&st, bound_first, strlen(bound_first), &out, &err), "PLUS: a tls-server-end-point header is taken");
    final = bound_final(out, bare, cb, sizeof(cb));
    free(out);
    out = NULL;
    ok(server_final(&st, final, strlen(final), &out, &err), "PLUS: the connection's own binding data is accepted");
    ok(out != NULL && strncmp(out, "v=", 2) == 0, "... with a server signature");
    free(out);
    out = NULL;
    free(final);
    scram_server_free(&st);

    /* Another connection's binding data (a man in the middle relaying the exchange): refused, proof or not. */
    ok(scram_server_begin(&st, &rfc_secret, RFC_SNONCE), "begin");
    scram_server_channel_binding(&st, cb, sizeof(cb), true);
    ok(server_first(&st, bound_first, strlen(bound_first), &out, &err), "first");
    final = bound_final(out, bare, other, sizeof(other));
    free(out);
    out = NULL;
    ok(!server_final(&st, final, strlen(final), &out, &err) && out == NULL, "PLUS: other binding data is refused");
    is_str(err, "SCRAM channel binding check failed", "... as a failed binding check");
    free(final);
    scram_server_free(&st);

    /* PLUS chosen, and then no binding: refused. */
    ok(scram_server_begin(&st, &rfc_secret, RFC_SNONCE), "begin");
    scram_server_channel_binding(&st, cb, sizeof(cb), true);
    ok(!server_first(&st, "n,,n=,r=" RFC_CNONCE, strlen("n,,n=,r=" RFC_CNONCE), &out, &err),
       "PLUS with an \"n\" header is refused");
    scram_server_free(&st);

    /* Binding data under plain SCRAM-SHA-256: refused. */
    ok(scram_server_begin(&st, &rfc_secret, RFC_SNONCE), "begin");
    scram_server_channel_binding(&st, cb, sizeof(cb), false);
    ok(!server_first(&st, bound_first, strlen(bound_first), &out, &err), "binding data under SCRAM-SHA-256 is refused");
    scram_server_free(&st);

    /* "y" (the client thinks the server cannot bind) over TLS, where pgbun offered PLUS: a downgrade. */
    ok(scram_server_begin(&st, &rfc_secret, RFC_SNONCE), "begin");
    scram_server_channel_binding(&st, cb, sizeof(cb), false);
    ok(!server_first(&st, "y,,n=,r=" RFC_CNONCE, strlen("y,,n=,r=" RFC_CNONCE), &out, &err),
       "\"y\" where binding was offered is refused");
    ok(err != NULL && strstr(err, "negotiation") != NULL, "... as a negotiation error");
    scram_server_free(&st);

    /* ... but over plain text, where nothing was offered, "y" is right. */
    ok(scram_server_begin(&st, &rfc_secret, RFC_SNONCE), "begin");
    ok(server_first(&st, "y,,n=,r=" RFC_CNONCE, strlen("y,,n=,r=" RFC_CNONCE), &out, &err),
       "\"y\" over plain text is taken");
    free(out);
    out = NULL;
    scram_server_free(&st);

    /* Another binding type: refused. */
    ok(scram_server_begin(&st, &rfc_secret, RFC_SNONCE), "begin");
    scram_server_channel_binding(&st, cb, sizeof(cb), true);
    ok(!server_first(&st, "p=tls-unique,,n=,r=" RFC_CNONCE, strlen("p=tls-unique,,n=,r=" RFC_CNONCE), &out, &err),
       "tls-unique is refused");
    scram_server_free(&st);
}

int main(void)
{
    test_make_secret_matches_the_vector();
    test_server_rfc7677_vector();
    test_client_vector_with_empty_user();
    test_round_trips();
    test_pass_through_keys();
    test_mock_secret();
    test_server_first_malformed();
    test_server_final_malformed();
    test_client_final_malformed();
    test_client_verify_malformed();
    test_random_nonces_differ();
    test_channel_binding();
    secret_clear(&rfc_secret);
    return done_testing();
}
