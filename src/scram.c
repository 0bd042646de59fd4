/*
 * scram.c - SCRAM-SHA-256 (RFC 5802, RFC 7677) in PostgreSQL's dialect:
 * the client sends an empty user name ("n=,") and the server uses the
 * startup packet's user instead. As a server, pgbun binds the exchange to
 * its TLS connection (SCRAM-SHA-256-PLUS, tls-server-end-point); as a
 * client of PostgreSQL it does not bind ("n").
 *
 *   client                                   server (pgbun or PostgreSQL)
 *   scram_client_first  -- n,,n=,r=CN -->    scram_server_first
 *                       <-- r=CN+SN,s=,i= --
 *   scram_client_final  -- c=biws,r=,p= -->  scram_server_final (checks proof)
 *   scram_client_verify <-- v=ServerSig ---
 *
 * Messages arrive from the network with a length and no terminating NUL;
 * every parser works on (pointer, length) and copies only what it keeps.
 * Keys are cleansed in the *_free functions and wherever a temporary held one.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* asprintf, getline */
#endif
#include <assert.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <openssl/rand.h>

#include "base64.h"
#include "scram.h"

#define DEFAULT_ITER     4096
#define DEFAULT_SALT_LEN 16
#define MAX_CLIENT_ITER  10000000 /* a server asking for more is refusing service, not hashing */
#define MAX_MSG_LEN      4096     /* far above any honest SCRAM message */

static const char err_malformed[] = "malformed SCRAM message";

/* ---- primitives ---- */

static bool hmac(const uint8_t *key, size_t keylen, const void *data, size_t len, uint8_t out[SCRAM_KEY_LEN])
{
    unsigned int n = 0;

    return HMAC(EVP_sha256(), key, (int)keylen, data, len, out, &n) != NULL && n == SCRAM_KEY_LEN;
}

static bool sha256(const void *data, size_t len, uint8_t out[SCRAM_KEY_LEN])
{
    unsigned int n = 0;

    return EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) == 1 && n == SCRAM_KEY_LEN;
}

/*
 * SaltedPassword = PBKDF2(password, salt, iter); ClientKey, StoredKey and
 * ServerKey follow from it. client_key may be NULL. The password is used
 * as-is: SASLprep leaves ASCII alone, and PostgreSQL also falls back to the
 * raw bytes when SASLprep rejects a non-ASCII password.
 */
static bool derive_keys(const char *password, const uint8_t *salt, size_t salt_len, int iter,
                        uint8_t client_key[SCRAM_KEY_LEN], uint8_t stored_key[SCRAM_KEY_LEN],
                        uint8_t server_key[SCRAM_KEY_LEN])
{
    uint8_t salted[SCRAM_KEY_LEN], ck[SCRAM_KEY_LEN];
    bool    good;

    if (salt_len > INT_MAX || strlen(password) > INT_MAX || iter < 1) return false;
    good = PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, (int)salt_len, iter, EVP_sha256(), SCRAM_KEY_LEN,
                             salted) == 1 &&
           hmac(salted, SCRAM_KEY_LEN, "Client Key", 10, ck) && sha256(ck, SCRAM_KEY_LEN, stored_key) &&
           hmac(salted, SCRAM_KEY_LEN, "Server Key", 10, server_key);
    if (good && client_key != NULL) memcpy(client_key, ck, SCRAM_KEY_LEN);
    OPENSSL_cleanse(salted, sizeof(salted));
    OPENSSL_cleanse(ck, sizeof(ck));
    return good;
}

/* base64 of SCRAM_NONCE_LEN random bytes, or a copy of test_nonce. */
static char *make_nonce(const char *test_nonce)
{
    uint8_t raw[SCRAM_NONCE_LEN];

    if (test_nonce != NULL) return strdup(test_nonce);
    if (RAND_bytes(raw, sizeof(raw)) != 1) return NULL;
    return base64_encode(raw, sizeof(raw));
}

static char *concat3(const char *a, const char *b, const char *c)
{
    char  *out;
    size_t la = strlen(a), lb = strlen(b), lc = strlen(c);

    out = malloc(la + lb + lc + 3);
    if (out == NULL) return NULL;
    memcpy(out, a, la);
    out[la] = ',';
    memcpy(out + la + 1, b, lb);
    out[la + 1 + lb] = ',';
    memcpy(out + la + lb + 2, c, lc);
    out[la + lb + lc + 2] = '\0';
    return out;
}

static char *dup_n(const char *p, size_t n)
{
    char *out = malloc(n + 1);

    if (out == NULL) return NULL;
    memcpy(out, p, n);
    out[n] = '\0';
    return out;
}

/* A nonce is printable ASCII except ','. */
static bool valid_nonce(const char *p, size_t n)
{
    if (n == 0) return false;
    for (size_t i = 0; i < n; i++)
        if (p[i] < 0x21 || p[i] > 0x7e || p[i] == ',') return false;
    return true;
}

/* ---- attribute reader over (pointer, length) ---- */

struct reader {
    const char *p;   /* next unread byte */
    const char *end; /* one past the last byte */
};

/* Reads "<name>=<value>" up to the next ',' or the end; consumes the ',' too. */
static bool read_attr(struct reader *r, char name, const char **val, size_t *vlen)
{
    const char *comma;

    if (r->end - r->p < 2 || r->p[0] != name || r->p[1] != '=') return false;
    *val = r->p + 2;
    comma = memchr(*val, ',', (size_t)(r->end - *val));
    *vlen = (size_t)((comma ? comma : r->end) - *val);
    r->p = comma ? comma + 1 : r->end;
    return true;
}

/* Common checks for a message off the wire: bounded and free of NUL bytes. */
static bool sane_message(const char *msg, size_t len)
{
    return msg != NULL && len > 0 && len <= MAX_MSG_LEN && memchr(msg, '\0', len) == NULL;
}

/* ---- server side ---- */

static uint8_t        mock_key[SCRAM_KEY_LEN]; /* keys the mock salts: random, made once per process */
static bool           mock_key_ok;
static pthread_once_t mock_once = PTHREAD_ONCE_INIT;

static void mock_key_init(void)
{
    mock_key_ok = RAND_bytes(mock_key, sizeof(mock_key)) == 1;
}

/*
 * The salt pgbun shows for a user whose secret has none of its own (a
 * plain password, or none at all): the same for a name every time, as a
 * stored SCRAM secret's would be, so that no answer tells the three apart.
 */
static bool user_salt(const char *user, uint8_t salt[DEFAULT_SALT_LEN])
{
    uint8_t mac[SCRAM_KEY_LEN];

    pthread_once(&mock_once, mock_key_init);
    if (!mock_key_ok || !hmac(mock_key, sizeof(mock_key), user, strlen(user), mac)) return false;
    memcpy(salt, mac, DEFAULT_SALT_LEN);
    return true;
}

bool scram_mock_secret(struct secret *out, const char *user)
{
    memset(out, 0, sizeof(*out));
    if (!user_salt(user, out->scram_salt) || RAND_bytes(out->scram_stored_key, SCRAM_KEY_LEN) != 1 ||
        RAND_bytes(out->scram_server_key, SCRAM_KEY_LEN) != 1)
        return false;
    out->kind = SECRET_SCRAM;
    out->scram_iter = DEFAULT_ITER;
    out->scram_salt_len = DEFAULT_SALT_LEN;
    out->user = strdup(user);
    out->secret = strdup("");
    if (out->user == NULL || out->secret == NULL) {
        secret_clear(out);
        return false;
    }
    return true;
}

bool scram_server_begin(struct scram_server *st, const struct secret *secret, const char *test_nonce)
{
    assert(st != NULL);
    memset(st, 0, sizeof(*st));
    if (secret == NULL || secret->secret == NULL) return false;
    switch (secret->kind) {
    case SECRET_PLAIN:
        if (secret->secret[0] == '\0') return false; /* empty passwords never match */
        st->iter = DEFAULT_ITER;
        st->salt_len = DEFAULT_SALT_LEN;
        if (secret->user != NULL ? !user_salt(secret->user, st->salt) : RAND_bytes(st->salt, (int)st->salt_len) != 1)
            return false;
        if (!derive_keys(secret->secret, st->salt, st->salt_len, st->iter, NULL, st->stored_key, st->server_key)) {
            scram_server_free(st);
            return false;
        }
        break;
    case SECRET_SCRAM:
        if (secret->scram_salt_len == 0 || secret->scram_salt_len > SCRAM_MAX_SALT || secret->scram_iter < 1)
            return false;
        st->iter = secret->scram_iter;
        st->salt_len = secret->scram_salt_len;
        memcpy(st->salt, secret->scram_salt, st->salt_len);
        memcpy(st->stored_key, secret->scram_stored_key, SCRAM_KEY_LEN);
        memcpy(st->server_key, secret->scram_server_key, SCRAM_KEY_LEN);
        break;
    case SECRET_MD5: return false;
    }
    /* Until scram_server_first runs, nonce holds the server's part alone. */
    st->nonce = make_nonce(test_nonce);
    if (st->nonce == NULL || !valid_nonce(st->nonce, strlen(st->nonce))) {
        scram_server_free(st);
        return false;
    }
    return true;
}

void scram_server_channel_binding(struct scram_server *st, const uint8_t *data, size_t len, bool plus)
{
    assert(len > 0 && len <= sizeof(st->cb_data));
    memcpy(st->cb_data, data, len);
    st->cb_len = len;
    st->cb_plus = plus;
}

/*
 * client-first-message = gs2-header client-first-message-bare
 *   gs2-header = ("n" / "y" / "p=" cb-name) "," [ "a=" authzid ] ","
 *     n: no binding; y: the client could bind but thinks the server cannot;
 *     p=tls-server-end-point: bound, under SCRAM-SHA-256-PLUS only
 *   bare       = [ "m=" ext "," ] "n=" user "," "r=" nonce [ "," extensions ]
 */
bool scram_server_first(struct scram_server *st, const char *msg, size_t len, char **out, const char **err)
{
    struct reader r = {msg, msg + len};
    const char   *bare, *val, *cnonce;
    size_t        vlen, cnonce_len;
    char         *salt_b64 = NULL, *nonce = NULL;
    int           n;

    assert(st != NULL && out != NULL && err != NULL);
    *out = NULL;
    if (st->nonce == NULL || st->server_first != NULL || st->done) {
        *err = "unexpected SCRAM message";
        return false;
    }
    st->done = true; /* until proven otherwise: a failed exchange cannot be resumed */
    *err = err_malformed;
    if (!sane_message(msg, len)) return false;

    if (len >= 2 && msg[0] == 'p' && msg[1] == '=') {
        static const char type[] = "p=tls-server-end-point,";

        if (!st->cb_plus) {
            *err = "SCRAM channel binding data sent, but SCRAM-SHA-256 without channel binding was selected";
            return false;
        }
        if (len < sizeof(type) - 1 || memcmp(msg, type, sizeof(type) - 1) != 0) {
            *err = "unsupported SCRAM channel binding type (only tls-server-end-point)";
            return false;
        }
        r.p = msg + sizeof(type) - 1;
    } else {
        if (len < 2 || (msg[0] != 'n' && msg[0] != 'y') || msg[1] != ',') return false;
        if (st->cb_plus) {
            *err = "SCRAM-SHA-256-PLUS was selected, but the client sent no channel binding";
            return false;
        }
        /* "y" over a connection where pgbun offered binding: someone in between took the offer away. */
        if (msg[0] == 'y' && st->cb_len > 0) {
            *err = "SCRAM channel binding negotiation error: the client thinks the server cannot bind, but it can";
            return false;
        }
        r.p = msg + 2;
    }
    if (r.p < r.end && *r.p == 'a') {
        *err = "SCRAM authorization identity not supported";
        return false;
    }
    if (r.p >= r.end || *r.p != ',') return false;
    r.p++;
    bare = r.p;

    if (r.end - r.p >= 2 && r.p[0] == 'm' && r.p[1] == '=') {
        *err = "unsupported SCRAM extension";
        return false;
    }
    if (!read_attr(&r, 'n', &val, &vlen) || r.p == r.end) return false; /* user name ignored: startup user wins */
    if (!read_attr(&r, 'r', &cnonce, &cnonce_len) || !valid_nonce(cnonce, cnonce_len)) return false;
    /* anything after is an optional extension, which we ignore */

    st->gs2_header = dup_n(msg, (size_t)(bare - msg));
    st->client_first_bare = dup_n(bare, (size_t)(r.end - bare));
    salt_b64 = base64_encode(st->salt, st->salt_len);
    nonce = malloc(cnonce_len + strlen(st->nonce) + 1);
    if (st->gs2_header == NULL || st->client_first_bare == NULL || salt_b64 == NULL || nonce == NULL) goto oom;
    memcpy(nonce, cnonce, cnonce_len);
    strcpy(nonce + cnonce_len, st->nonce);
    free(st->nonce);
    st->nonce = nonce;
    nonce = NULL;

    n = asprintf(&st->server_first, "r=%s,s=%s,i=%d", st->nonce, salt_b64, st->iter);
    if (n < 0) {
        st->server_first = NULL;
        goto oom;
    }
    free(salt_b64);
    salt_b64 = NULL;
    *out = strdup(st->server_first);
    if (*out == NULL) goto oom;
    st->done = false;
    *err = NULL;
    return true;
oom:
    free(salt_b64);
    free(nonce);
    *err = "out of memory";
    return false;
}

/*
 * client-final-message = "c=" b64(gs2-header) "," "r=" nonce [ "," extensions ] "," "p=" b64(proof)
 */
bool scram_server_final(struct scram_server *st, const char *msg, size_t len, char **out, const char **err)
{
    struct reader r = {msg, msg + len};
    const char   *val, *last_comma;
    size_t        vlen, n, without_proof_len;
    uint8_t       cbind[128 + SCRAM_CB_MAX], proof[SCRAM_KEY_LEN], sig[SCRAM_KEY_LEN], key[SCRAM_KEY_LEN],
        check[SCRAM_KEY_LEN];
    size_t hlen;
    char  *without_proof = NULL, *auth_message = NULL, *v = NULL;
    bool   good = false;

    assert(st != NULL && out != NULL && err != NULL);
    *out = NULL;
    if (st->server_first == NULL || st->done) {
        *err = "unexpected SCRAM message";
        return false;
    }
    st->done = true; /* one client-final per exchange, right or wrong */
    *err = err_malformed;
    if (!sane_message(msg, len)) return false;

    /* The proof is the last attribute; everything before its ',' is signed. */
    last_comma = msg + len;
    while (last_comma > msg && last_comma[-1] != ',')
        last_comma--;
    if (last_comma == msg) return false;
    last_comma--;
    without_proof_len = (size_t)(last_comma - msg);

    r.end = last_comma;
    if (!read_attr(&r, 'c', &val, &vlen)) return false;
    if (!base64_decode(val, vlen, cbind, sizeof(cbind), &n)) return false;
    /* c= is the gs2 header again, followed under PLUS by the binding data of this very connection. */
    hlen = strlen(st->gs2_header);
    if (n != hlen + (st->cb_plus ? st->cb_len : 0) || memcmp(cbind, st->gs2_header, hlen) != 0 ||
        (st->cb_plus && memcmp(cbind + hlen, st->cb_data, st->cb_len) != 0)) {
        *err = "SCRAM channel binding check failed";
        return false;
    }
    if (!read_attr(&r, 'r', &val, &vlen)) return false;
    if (vlen != strlen(st->nonce) || memcmp(val, st->nonce, vlen) != 0) {
        *err = "SCRAM nonce mismatch";
        return false;
    }
    /* extensions between r= and p= are ignored */

    r.p = last_comma + 1;
    r.end = msg + len;
    if (!read_attr(&r, 'p', &val, &vlen)) return false;
    if (!base64_decode(val, vlen, proof, sizeof(proof), &n) || n != SCRAM_KEY_LEN) return false;

    *err = "out of memory";
    without_proof = dup_n(msg, without_proof_len);
    if (without_proof == NULL) goto out;
    auth_message = concat3(st->client_first_bare, st->server_first, without_proof);
    if (auth_message == NULL) goto out;

    /* ClientKey = proof XOR HMAC(StoredKey, AuthMessage); H(ClientKey) must be StoredKey. */
    if (!hmac(st->stored_key, SCRAM_KEY_LEN, auth_message, strlen(auth_message), sig)) goto out;
    for (size_t i = 0; i < SCRAM_KEY_LEN; i++)
        key[i] = proof[i] ^ sig[i];
    if (!sha256(key, SCRAM_KEY_LEN, check)) goto out;
    if (!secret_eq(check, st->stored_key, SCRAM_KEY_LEN)) {
        *err = "invalid proof";
        goto out;
    }
    if (!hmac(st->server_key, SCRAM_KEY_LEN, auth_message, strlen(auth_message), sig)) goto out;
    memcpy(st->client_key, key, SCRAM_KEY_LEN); /* what pgbun logs in to PostgreSQL with (pass-through) */
    st->have_client_key = true;
    v = base64_encode(sig, SCRAM_KEY_LEN);
    if (v == NULL) goto out;
    *out = malloc(strlen(v) + 3);
    if (*out == NULL) goto out;
    sprintf(*out, "v=%s", v);
    good = true;
    *err = NULL;
out:
    free(without_proof);
    free(auth_message);
    free(v);
    OPENSSL_cleanse(key, sizeof(key));
    OPENSSL_cleanse(sig, sizeof(sig));
    OPENSSL_cleanse(proof, sizeof(proof));
    return good;
}

void scram_server_free(struct scram_server *st)
{
    if (st == NULL) return;
    OPENSSL_cleanse(st->client_key, sizeof(st->client_key));
    st->have_client_key = false;
    free(st->client_first_bare);
    free(st->server_first);
    free(st->nonce);
    free(st->gs2_header);
    OPENSSL_cleanse(st, sizeof(*st)); /* zeroes the keys and leaves every pointer NULL */
}

/* ---- client side ---- */

bool scram_client_first(struct scram_client *st, const char *test_nonce, char **out)
{
    memset(st, 0, sizeof(*st));
    *out = NULL;
    st->client_nonce = make_nonce(test_nonce);
    if (st->client_nonce == NULL || !valid_nonce(st->client_nonce, strlen(st->client_nonce))) goto fail;
    if (asprintf(&st->client_first_bare, "n=,r=%s", st->client_nonce) < 0) {
        st->client_first_bare = NULL;
        goto fail;
    }
    if (asprintf(out, "n,,%s", st->client_first_bare) < 0) {
        *out = NULL;
        goto fail;
    }
    return true;
fail:
    scram_client_free(st);
    return false;
}

/*
 * server-first-message = [ "m=" ext "," ] "r=" nonce "," "s=" salt "," "i=" iter [ "," extensions ]
 */
/* The client-final-message, from the password or (password NULL) from the keys a client's proof revealed. */
static bool client_final(struct scram_client *st, const char *password, const uint8_t *keys_client,
                         const uint8_t *keys_server, const char *server_first, size_t len, char **out, const char **err)
{
    struct reader r = {server_first, server_first + len};
    const char   *nonce, *salt_b64, *iter_s;
    size_t        nonce_len, salt_b64_len, iter_len, salt_len, cn_len;
    uint8_t      *salt = NULL;
    uint8_t       client_key[SCRAM_KEY_LEN], stored_key[SCRAM_KEY_LEN], server_key[SCRAM_KEY_LEN];
    uint8_t       sig[SCRAM_KEY_LEN], proof[SCRAM_KEY_LEN];
    char         *without_proof = NULL, *auth_message = NULL, *proof_b64 = NULL;
    long          iter = 0;
    bool          good = false;

    assert(st != NULL && out != NULL && err != NULL);
    *out = NULL;
    *err = err_malformed;
    if (st->client_first_bare == NULL || st->server_first != NULL) {
        *err = "unexpected SCRAM message";
        return false;
    }
    if (password == NULL && keys_client == NULL) {
        *err = "no password";
        return false;
    }
    if (!sane_message(server_first, len)) return false;
    if (len >= 2 && server_first[0] == 'm' && server_first[1] == '=') {
        *err = "unsupported SCRAM extension";
        return false;
    }
    if (!read_attr(&r, 'r', &nonce, &nonce_len) || !valid_nonce(nonce, nonce_len)) return false;
    cn_len = strlen(st->client_nonce);
    if (nonce_len <= cn_len || memcmp(nonce, st->client_nonce, cn_len) != 0) {
        *err = "SCRAM nonce mismatch";
        return false;
    }
    if (!read_attr(&r, 's', &salt_b64, &salt_b64_len) || salt_b64_len == 0) return false;
    if (!read_attr(&r, 'i', &iter_s, &iter_len) || iter_len == 0) return false;
    for (size_t i = 0; i < iter_len; i++) {
        if (iter_s[i] < '0' || iter_s[i] > '9') return false;
        iter = iter * 10 + (iter_s[i] - '0');
        if (iter > MAX_CLIENT_ITER) {
            *err = "SCRAM iteration count out of range";
            return false;
        }
    }
    if (iter < 1) {
        *err = "SCRAM iteration count out of range";
        return false;
    }

    salt = malloc(salt_b64_len / 4 * 3 + 1);
    if (salt == NULL) goto oom;
    if (!base64_decode(salt_b64, salt_b64_len, salt, salt_b64_len / 4 * 3, &salt_len) || salt_len == 0) {
        free(salt);
        return false;
    }

    st->server_first = dup_n(server_first, len);
    if (st->server_first == NULL) goto oom;
    without_proof = malloc(strlen("c=biws,r=") + nonce_len + 1);
    if (without_proof == NULL) goto oom;
    strcpy(without_proof, "c=biws,r=");
    memcpy(without_proof + 9, nonce, nonce_len);
    without_proof[9 + nonce_len] = '\0';
    auth_message = concat3(st->client_first_bare, st->server_first, without_proof);
    if (auth_message == NULL) goto oom;

    if (password == NULL) {
        /* Pass-through: the salt and count do not matter, the keys are what the client's password made of them. */
        memcpy(client_key, keys_client, SCRAM_KEY_LEN);
        memcpy(server_key, keys_server, SCRAM_KEY_LEN);
    }
    if ((password != NULL ? !derive_keys(password, salt, salt_len, (int)iter, client_key, stored_key, server_key)
                          : !sha256(client_key, SCRAM_KEY_LEN, stored_key)) ||
        !hmac(stored_key, SCRAM_KEY_LEN, auth_message, strlen(auth_message), sig) ||
        !hmac(server_key, SCRAM_KEY_LEN, auth_message, strlen(auth_message), st->server_signature)) {
        *err = "SCRAM key derivation failed";
        goto done;
    }
    st->have_signature = true;
    for (size_t i = 0; i < SCRAM_KEY_LEN; i++)
        proof[i] = client_key[i] ^ sig[i];
    proof_b64 = base64_encode(proof, SCRAM_KEY_LEN);
    if (proof_b64 == NULL || asprintf(out, "%s,p=%s", without_proof, proof_b64) < 0) {
        *out = NULL;
        goto oom;
    }
    good = true;
    *err = NULL;
    goto done;
oom:
    *err = "out of memory";
done:
    if (!good) {
        /* A failed exchange cannot be resumed. */
        st->have_signature = false;
        OPENSSL_cleanse(st->server_signature, SCRAM_KEY_LEN);
    }
    free(salt);
    free(without_proof);
    free(auth_message);
    free(proof_b64);
    OPENSSL_cleanse(client_key, sizeof(client_key));
    OPENSSL_cleanse(stored_key, sizeof(stored_key));
    OPENSSL_cleanse(server_key, sizeof(server_key));
    OPENSSL_cleanse(sig, sizeof(sig));
    OPENSSL_cleanse(proof, sizeof(proof));
    return good;
}

bool scram_client_final(struct scram_client *st, const char *password, const char *server_first, size_t len, char **out,
                        const char **err)
{
    return client_final(st, password, NULL, NULL, server_first, len, out, err);
}

bool scram_client_final_keys(struct scram_client *st, const uint8_t client_key[SCRAM_KEY_LEN],
                             const uint8_t server_key[SCRAM_KEY_LEN], const char *server_first, size_t len, char **out,
                             const char **err)
{
    return client_final(st, NULL, client_key, server_key, server_first, len, out, err);
}

/* RFC 5802 server-error-value -> our message; the server's text is not kept, *err must be static. */
static const char *server_error(const char *val, size_t len)
{
    static const struct {
        const char *value;
        const char *msg;
    } known[] = {
        {"invalid-encoding", "server reported SCRAM error: invalid-encoding"},
        {"extensions-not-supported", "server reported SCRAM error: extensions-not-supported"},
        {"invalid-proof", "server reported SCRAM error: invalid-proof"},
        {"channel-bindings-dont-match", "server reported SCRAM error: channel-bindings-dont-match"},
        {"server-does-support-channel-binding", "server reported SCRAM error: server-does-support-channel-binding"},
        {"channel-binding-not-supported", "server reported SCRAM error: channel-binding-not-supported"},
        {"unsupported-channel-binding-type", "server reported SCRAM error: unsupported-channel-binding-type"},
        {"unknown-user", "server reported SCRAM error: unknown-user"},
        {"invalid-username-encoding", "server reported SCRAM error: invalid-username-encoding"},
        {"no-resources", "server reported SCRAM error: no-resources"},
        {"other-error", "server reported SCRAM error: other-error"},
    };

    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (strlen(known[i].value) == len && memcmp(known[i].value, val, len) == 0) return known[i].msg;
    return "server reported a SCRAM error";
}

/* server-final-message = ( "e=" error / "v=" b64(ServerSignature) ) [ "," extensions ] */
bool scram_client_verify(struct scram_client *st, const char *server_final, size_t len, const char **err)
{
    struct reader r = {server_final, server_final + len};
    const char   *val;
    size_t        vlen, n;
    uint8_t       sig[SCRAM_KEY_LEN];
    bool          good;

    assert(st != NULL && err != NULL);
    *err = err_malformed;
    if (!st->have_signature) {
        *err = "unexpected SCRAM message";
        return false;
    }
    if (!sane_message(server_final, len)) return false;
    if (read_attr(&r, 'e', &val, &vlen)) {
        *err = server_error(val, vlen);
        return false;
    }
    if (!read_attr(&r, 'v', &val, &vlen)) return false;
    if (!base64_decode(val, vlen, sig, sizeof(sig), &n) || n != SCRAM_KEY_LEN) return false;
    good = secret_eq(sig, st->server_signature, SCRAM_KEY_LEN);
    OPENSSL_cleanse(sig, sizeof(sig));
    st->have_signature = false; /* one verification per exchange */
    OPENSSL_cleanse(st->server_signature, SCRAM_KEY_LEN);
    *err = good ? NULL : "invalid server signature";
    return good;
}

void scram_client_free(struct scram_client *st)
{
    if (st == NULL) return;
    free(st->client_nonce);
    free(st->client_first_bare);
    free(st->server_first);
    OPENSSL_cleanse(st, sizeof(*st)); /* zeroes the keys and leaves every pointer NULL */
}

/* ---- secrets ---- */

char *scram_make_secret(const char *password, const uint8_t *salt, size_t salt_len, int iter)
{
    uint8_t rnd[DEFAULT_SALT_LEN], stored[SCRAM_KEY_LEN], server[SCRAM_KEY_LEN];
    char   *salt_b64 = NULL, *stored_b64 = NULL, *server_b64 = NULL, *out = NULL;

    if (password == NULL || iter < 1) return NULL;
    if (salt == NULL) {
        if (RAND_bytes(rnd, sizeof(rnd)) != 1) return NULL;
        salt = rnd;
        salt_len = sizeof(rnd);
    }
    if (salt_len == 0 || salt_len > SCRAM_MAX_SALT) return NULL;
    if (!derive_keys(password, salt, salt_len, iter, NULL, stored, server)) goto done;
    salt_b64 = base64_encode(salt, salt_len);
    stored_b64 = base64_encode(stored, SCRAM_KEY_LEN);
    server_b64 = base64_encode(server, SCRAM_KEY_LEN);
    if (salt_b64 == NULL || stored_b64 == NULL || server_b64 == NULL) goto done;
    if (asprintf(&out, "SCRAM-SHA-256$%d:%s$%s:%s", iter, salt_b64, stored_b64, server_b64) < 0) out = NULL;
done:
    free(salt_b64);
    if (stored_b64) OPENSSL_cleanse(stored_b64, strlen(stored_b64));
    if (server_b64) OPENSSL_cleanse(server_b64, strlen(server_b64));
    free(stored_b64);
    free(server_b64);
    OPENSSL_cleanse(stored, sizeof(stored));
    OPENSSL_cleanse(server, sizeof(server));
    return out;
}
