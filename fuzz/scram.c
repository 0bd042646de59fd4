/*
 * scram.c - both sides of SCRAM-SHA-256 against hostile messages.
 *
 * The first byte picks a side:
 *   even: pgbun as the server (a client logging in to pgbun). The rest is
 *         client-first-message, NUL, client-final-message, checked against a
 *         SCRAM secret and the mock secret of an unknown user, with and
 *         without channel binding. (A plain secret only adds a PBKDF2 run
 *         before the same code.)
 *   odd:  pgbun as the client (logging in to PostgreSQL). The rest is
 *         server-first-message, NUL, server-final-message, with pass-through
 *         keys, and with a password when the iteration count is small: a
 *         server may ask for up to 10 million PBKDF2 rounds by design, which
 *         takes seconds and would only slow the search.
 * Fixed nonces keep an input's path the same every run.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "scram.h"
#include "secret.h"

#define CNONCE "rOprNGfwEbeRWgbNEkqO"
#define SNONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
/* RFC 7677's example: user "user", password "pencil". */
#define SECRET                                                                                                         \
    "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"                        \
    "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="

static struct secret scram_secret;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (!secret_parse(&scram_secret, "user", SECRET) || scram_secret.kind != SECRET_SCRAM) abort();
    return 0;
}

static void split(const uint8_t *data, size_t size, char **first, size_t *first_len, char **final, size_t *final_len)
{
    const uint8_t *nul = memchr(data, '\0', size);

    *first_len = nul != NULL ? (size_t)(nul - data) : size;
    *first = fuzz_strndup(data, *first_len);
    *final_len = nul != NULL ? size - *first_len - 1 : 0;
    *final = fuzz_strndup(nul != NULL ? nul + 1 : data, *final_len);
}

static void server_side(const char *first, size_t first_len, const char *final, size_t final_len,
                        const struct secret *secret, bool binding)
{
    static const uint8_t cb[32] = {1, 2, 3};
    struct scram_server  st = {0};
    const char          *err = NULL;
    char                *out = NULL;

    if (!scram_server_begin(&st, secret, SNONCE)) abort();
    if (binding) scram_server_channel_binding(&st, cb, sizeof(cb), first_len > 0 && first[0] == 'p');
    if (scram_server_first(&st, first, first_len, &out, &err)) {
        free(out);
        out = NULL;
        if (scram_server_final(&st, final, final_len, &out, &err)) {
            /* Only the right proof gets here, which no input should find. */
            if (!st.have_client_key) abort();
        }
        free(out);
    }
    scram_server_free(&st);
}

/* No "i=" with five digits or more. */
static bool cheap_count(const char *msg)
{
    for (const char *p = strstr(msg, "i="); p != NULL; p = strstr(p + 2, "i=")) {
        size_t n = strspn(p + 2, "0123456789");

        if (n >= 5) return false;
    }
    return true;
}

static void client_side(const char *first, size_t first_len, const char *final, size_t final_len, bool keys)
{
    static const uint8_t key[SCRAM_KEY_LEN] = {7};
    struct scram_client  st = {0};
    const char          *err = NULL;
    char                *out = NULL;
    bool                 ok;

    if (!scram_client_first(&st, CNONCE, &out)) abort();
    free(out);
    out = NULL;
    if (!keys && !cheap_count(first)) keys = true;
    if (keys)
        ok = scram_client_final_keys(&st, key, key, first, first_len, &out, &err);
    else
        ok = scram_client_final(&st, "pencil", first, first_len, &out, &err);
    free(out);
    if (ok && scram_client_verify(&st, final, final_len, &err)) {
        /* A right server signature: only a server that knows the secret can send it. */
    }
    scram_client_free(&st);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char  *first, *final;
    size_t first_len, final_len;

    if (size < 1) return 0;
    split(data + 1, size - 1, &first, &first_len, &final, &final_len);
    if ((data[0] & 1) == 0) {
        struct secret mock = {0};

        server_side(first, first_len, final, final_len, &scram_secret, (data[0] & 2) != 0);
        if (!scram_mock_secret(&mock, "nobody")) abort();
        server_side(first, first_len, final, final_len, &mock, (data[0] & 2) != 0);
        secret_clear(&mock);
    } else {
        client_side(first, first_len, final, final_len, (data[0] & 2) != 0);
    }
    free(first);
    free(final);
    return 0;
}
