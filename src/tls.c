/*
 * tls.c - OpenSSL contexts from the config, and TLS started on a socket.
 *
 *   config applied -> tls_conf_new(): client_tls_* -> accept context
 *                                     server_tls_* -> connect context
 *   SSLRequest 'S' (or a ClientHello first) -> tls_accept(io)
 *   PostgreSQL's 'S'                        -> tls_connect(io, host)
 *   then io_read / io_flush carry it (io.c)
 *
 * Sessions are not resumed (no tickets, no cache: libpq does not resume
 * either), renegotiation is off, and ALPN "postgresql" is offered and
 * required as PostgreSQL 17 does.
 */
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"

/* ALPN protocol list in wire format: PostgreSQL's one name. */
static const unsigned char alpn_pg[] = "\x0apostgresql";

static const char *const mode_names[] = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"};

enum tls_mode tls_mode_parse(const char *name)
{
    for (size_t i = 0; i < sizeof(mode_names) / sizeof(mode_names[0]); i++)
        if (name != NULL && strcmp(name, mode_names[i]) == 0) return (enum tls_mode)i;
    return TLS_DISABLE;
}

const char *tls_mode_name(enum tls_mode mode)
{
    return mode_names[mode];
}

static bool __attribute__((format(printf, 2, 3))) fail(char **errmsg, const char *fmt, ...)
{
    char    msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (errmsg != NULL) *errmsg = strdup(msg);
    ERR_clear_error();
    return false;
}

/* OpenSSL's reason for the last failure, for an error message. */
static const char *ssl_reason(void)
{
    unsigned long e = ERR_peek_last_error();
    const char   *r = e != 0 ? ERR_reason_error_string(e) : NULL;

    return r != NULL ? r : "unknown OpenSSL error";
}

/* client_tls_protocols / server_tls_protocols: "secure", "all", "legacy" or a list such as "tlsv1.2,tlsv1.3". */
static bool set_protocols(SSL_CTX *ctx, const char *key, const char *value, char **errmsg)
{
    static const struct {
        const char *name;
        int         version;
    } versions[] = {
        {"tlsv1.0", TLS1_VERSION},   {"tlsv1", TLS1_VERSION},     {"tlsv1.1", TLS1_1_VERSION},
        {"tlsv1.2", TLS1_2_VERSION}, {"tlsv1.3", TLS1_3_VERSION},
    };
    int         lo = 0, hi = 0;
    const char *p = value != NULL && value[0] != '\0' ? value : "secure";

    while (*p != '\0') {
        char   word[32];
        size_t n = strcspn(p, ", \t:");
        int    a = 0, b = 0;

        if (n == 0) {
            p++;
            continue;
        }
        if (n >= sizeof(word)) return fail(errmsg, "%s: unknown protocol \"%.*s\"", key, (int)n, p);
        memcpy(word, p, n);
        word[n] = '\0';
        p += n;
        if (strcasecmp(word, "secure") == 0) {
            a = TLS1_2_VERSION;
            b = TLS1_3_VERSION;
        } else if (strcasecmp(word, "all") == 0 || strcasecmp(word, "legacy") == 0) {
            a = TLS1_VERSION;
            b = TLS1_3_VERSION;
        } else {
            for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++)
                if (strcasecmp(word, versions[i].name) == 0) a = b = versions[i].version;
            if (a == 0)
                return fail(errmsg, "%s: unknown protocol \"%s\" (expected secure, all, legacy, or tlsv1.0 to tlsv1.3)",
                            key, word);
        }
        if (lo == 0 || a < lo) lo = a;
        if (b > hi) hi = b;
    }
    if (lo == 0) return fail(errmsg, "%s: no protocol named", key);
    /* A list with a gap (tlsv1.0,tlsv1.3) allows what lies between: OpenSSL takes a range. */
    if (!SSL_CTX_set_min_proto_version(ctx, lo) || !SSL_CTX_set_max_proto_version(ctx, hi))
        return fail(errmsg, "%s = %s: %s", key, value, ssl_reason());
    return true;
}

/* *_tls_ciphers (TLS 1.2 and below: "default", "secure", "fast", "normal", "all" or OpenSSL syntax) and
 * *_tls13_ciphers. */
static bool set_ciphers(SSL_CTX *ctx, const char *side, const char *ciphers, const char *ciphers13, char **errmsg)
{
    const char *list = ciphers;

    if (list == NULL || list[0] == '\0' || strcasecmp(list, "default") == 0 || strcasecmp(list, "secure") == 0 ||
        strcasecmp(list, "fast") == 0 || strcasecmp(list, "normal") == 0)
        list = NULL; /* OpenSSL's own defaults, as PgBouncer */
    else if (strcasecmp(list, "all") == 0)
        list = "ALL:!aNULL:!eNULL";
    if (list != NULL && SSL_CTX_set_cipher_list(ctx, list) != 1)
        return fail(errmsg, "%s_tls_ciphers = %s: no cipher OpenSSL knows (%s)", side, ciphers, ssl_reason());
    if (ciphers13 != NULL && ciphers13[0] != '\0' && SSL_CTX_set_ciphersuites(ctx, ciphers13) != 1)
        return fail(errmsg, "%s_tls13_ciphers = %s: no TLS 1.3 cipher suite OpenSSL knows (%s)", side, ciphers13,
                    ssl_reason());
    return true;
}

/* The certificate and its key (named by their keys in messages): both or neither; the key must be the certificate's. */
static bool load_pair(SSL_CTX *ctx, const char *cert_key, const char *cert, const char *key_key, const char *key,
                      char **errmsg)
{
    if (cert == NULL && key == NULL) return true;
    if (cert == NULL || key == NULL)
        return fail(errmsg, "%s is set but %s is not: both are needed", cert ? cert_key : key_key,
                    cert ? key_key : cert_key);
    errno = 0;
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
        return fail(errmsg, "%s %s: could not load the certificate: %s%s%s", cert_key, cert, ssl_reason(),
                    errno != 0 ? ": " : "", errno != 0 ? strerror(errno) : "");
    errno = 0;
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
        return fail(errmsg, "%s %s: could not load the private key: %s%s%s", key_key, key, ssl_reason(),
                    errno != 0 ? ": " : "", errno != 0 ? strerror(errno) : "");
    if (SSL_CTX_check_private_key(ctx) != 1)
        return fail(errmsg, "%s %s does not match the certificate in %s %s", key_key, key, cert_key, cert);
    return true;
}

static bool load_ca(SSL_CTX *ctx, const char *key, const char *file, char **errmsg)
{
    errno = 0;
    if (SSL_CTX_load_verify_locations(ctx, file, NULL) != 1)
        return fail(errmsg, "%s %s: could not load the CA certificates: %s%s%s", key, file, ssl_reason(),
                    errno != 0 ? ": " : "", errno != 0 ? strerror(errno) : "");
    return true;
}

static SSL_CTX *ctx_new(const SSL_METHOD *method, char **errmsg)
{
    SSL_CTX *ctx = SSL_CTX_new(method);

    if (ctx == NULL) {
        fail(errmsg, "could not create a TLS context: %s", ssl_reason());
        return NULL;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET |
                                 SSL_OP_IGNORE_UNEXPECTED_EOF);
    /* io.c writes one record per call and may retry it from another address. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    /* Whole records per read(): one syscall per wakeup, not two per record. */
    SSL_CTX_set_read_ahead(ctx, 1);
    return ctx;
}

/* A client that offers ALPN must offer "postgresql" (PostgreSQL 17); one that offers none is judged later. */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    if (SSL_select_next_proto((unsigned char **)out, outlen, alpn_pg, sizeof(alpn_pg) - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    return SSL_TLSEXT_ERR_OK;
}

static SSL_CTX *accept_ctx_new(const struct pgbun_config *cfg, enum tls_mode mode, char **errmsg)
{
    SSL_CTX    *ctx;
    const char *curve = cfg->client_tls_ecdhcurve;
    const char *dh = cfg->client_tls_dheparams;

    if (cfg->client_tls_key_file == NULL || cfg->client_tls_cert_file == NULL) {
        fail(errmsg, "client_tls_sslmode = %s needs client_tls_key_file and client_tls_cert_file",
             cfg->client_tls_sslmode);
        return NULL;
    }
    if (mode >= TLS_VERIFY_CA && cfg->client_tls_ca_file == NULL) {
        fail(errmsg, "client_tls_sslmode = %s needs client_tls_ca_file to check client certificates against",
             cfg->client_tls_sslmode);
        return NULL;
    }
    if ((ctx = ctx_new(TLS_server_method(), errmsg)) == NULL) return NULL;
    if (!set_protocols(ctx, "client_tls_protocols", cfg->client_tls_protocols, errmsg) ||
        !set_ciphers(ctx, "client", cfg->client_tls_ciphers, cfg->client_tls13_ciphers, errmsg) ||
        !load_pair(ctx, "client_tls_cert_file", cfg->client_tls_cert_file, "client_tls_key_file",
                   cfg->client_tls_key_file, errmsg))
        goto bad;
    SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    if (curve != NULL && strcasecmp(curve, "none") == 0) {
        fail(errmsg, "client_tls_ecdhcurve = none is refused: TLS 1.3 always needs a key exchange group; name the "
                     "groups to allow (prime256v1, X25519, ...) or use auto");
        goto bad;
    }
    if (curve != NULL && curve[0] != '\0' && strcasecmp(curve, "auto") != 0 &&
        SSL_CTX_set1_groups_list(ctx, curve) != 1) {
        fail(errmsg, "client_tls_ecdhcurve = %s: not a curve OpenSSL knows", curve);
        goto bad;
    }
    if (dh != NULL && strcasecmp(dh, "legacy") == 0) {
        fail(errmsg,
             "client_tls_dheparams = legacy (1024-bit DH) is refused: too weak, and OpenSSL 3 rejects it at its "
             "default security level; use auto");
        goto bad;
    }
    if (dh == NULL || strcasecmp(dh, "none") != 0) SSL_CTX_set_dh_auto(ctx, 1);
    if (cfg->client_tls_ca_file != NULL) {
        STACK_OF(X509_NAME) * names;

        if (!load_ca(ctx, "client_tls_ca_file", cfg->client_tls_ca_file, errmsg)) goto bad;
        /* The CAs a client may pick its certificate by. */
        if ((names = SSL_load_client_CA_file(cfg->client_tls_ca_file)) != NULL) SSL_CTX_set_client_CA_list(ctx, names);
    }
    /* As PgBouncer: below verify-ca a client certificate is not asked for, nor checked. */
    SSL_CTX_set_verify(ctx, mode >= TLS_VERIFY_CA ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT : SSL_VERIFY_NONE,
                       NULL);
    {
        static const unsigned char sid[] = "pgbun";

        SSL_CTX_set_session_id_context(ctx, sid, sizeof(sid) - 1);
    }
    ERR_clear_error();
    return ctx;
bad:
    SSL_CTX_free(ctx);
    return NULL;
}

/* What a tls_target is made from, and the names its keys go by in messages. */
struct target_spec {
    const char   *where; /* "" or "[databases] NAME: " */
    const char   *mode_name;
    enum tls_mode mode;
    const char   *ca, *cert, *key;
    const char   *ca_key, *cert_key, *key_key;
};

static SSL_CTX *connect_ctx_new(const struct pgbun_config *cfg, const struct target_spec *t, char **errmsg)
{
    SSL_CTX *ctx = ctx_new(TLS_client_method(), errmsg);
    char     ca_key[160], cert_key[160], key_key[160];

    if (ctx == NULL) return NULL;
    snprintf(ca_key, sizeof(ca_key), "%s%s", t->where, t->ca_key);
    snprintf(cert_key, sizeof(cert_key), "%s%s", t->where, t->cert_key);
    snprintf(key_key, sizeof(key_key), "%s%s", t->where, t->key_key);
    if (!set_protocols(ctx, "server_tls_protocols", cfg->server_tls_protocols, errmsg) ||
        !set_ciphers(ctx, "server", cfg->server_tls_ciphers, cfg->server_tls13_ciphers, errmsg) ||
        !load_pair(ctx, cert_key, t->cert, key_key, t->key, errmsg))
        goto bad;
    if (t->ca != NULL) {
        if (!load_ca(ctx, ca_key, t->ca, errmsg)) goto bad;
    } else if (t->mode >= TLS_VERIFY_CA && SSL_CTX_set_default_verify_paths(ctx) != 1) {
        fail(errmsg, "%s%s = %s with no %s: the system's CA certificates did not load (%s)", t->where, t->mode_name,
             tls_mode_name(t->mode), ca_key, ssl_reason());
        goto bad;
    }
    /* As libpq: below verify-ca the server's certificate is not checked. */
    SSL_CTX_set_verify(ctx, t->mode >= TLS_VERIFY_CA ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    if (SSL_CTX_set_alpn_protos(ctx, alpn_pg, sizeof(alpn_pg) - 1) != 0) {
        fail(errmsg, "could not set ALPN: %s", ssl_reason());
        goto bad;
    }
    ERR_clear_error();
    return ctx;
bad:
    SSL_CTX_free(ctx);
    return NULL;
}

static bool target_init(struct tls_target *tt, const struct pgbun_config *cfg, const struct target_spec *t,
                        char **errmsg)
{
    tt->mode = t->mode;
    return t->mode == TLS_DISABLE || (tt->ctx = connect_ctx_new(cfg, t, errmsg)) != NULL;
}

/* The [databases] entries that set sslmode, sslrootcert, sslcert or sslkey get a target of their own. */
static bool db_targets(struct tls_conf *tc, const struct pgbun_config *cfg, char **errmsg)
{
    const struct db_config *db;
    size_t                  n = 0;

    for (db = cfg->databases; db != NULL; db = db->next)
        if (db->sslmode != NULL || db->sslrootcert != NULL || db->sslcert != NULL || db->sslkey != NULL) n++;
    if (n == 0) return true;
    if ((tc->dbs = calloc(n, sizeof(*tc->dbs))) == NULL) return fail(errmsg, "out of memory");
    for (db = cfg->databases; db != NULL; db = db->next) {
        struct config_settings set;
        struct target_spec     t;
        char                   where[128];

        if (db->sslmode == NULL && db->sslrootcert == NULL && db->sslcert == NULL && db->sslkey == NULL) continue;
        config_resolve(cfg, db, NULL, NULL, &set);
        snprintf(where, sizeof(where), "[databases] %s: ", db->name);
        t = (struct target_spec){where,
                                 "sslmode",
                                 tls_mode_parse(set.sslmode),
                                 set.sslrootcert,
                                 set.sslcert,
                                 set.sslkey,
                                 db->sslrootcert ? "sslrootcert" : "server_tls_ca_file",
                                 db->sslcert ? "sslcert" : "server_tls_cert_file",
                                 db->sslkey ? "sslkey" : "server_tls_key_file"};
        if ((tc->dbs[tc->ndbs].db = strdup(db->name)) == NULL) return fail(errmsg, "out of memory");
        if (!target_init(&tc->dbs[tc->ndbs++], cfg, &t, errmsg)) return false;
    }
    return true;
}

struct tls_conf *tls_conf_new(const struct pgbun_config *cfg, char **errmsg)
{
    struct tls_conf   *tc = calloc(1, sizeof(*tc));
    struct target_spec global;

    if (tc == NULL) {
        fail(errmsg, "out of memory");
        return NULL;
    }
    tc->client_mode = tls_mode_parse(cfg->client_tls_sslmode);
    if (tc->client_mode != TLS_DISABLE && (tc->accept = accept_ctx_new(cfg, tc->client_mode, errmsg)) == NULL) goto bad;
    global = (struct target_spec){"",
                                  "server_tls_sslmode",
                                  tls_mode_parse(cfg->server_tls_sslmode),
                                  cfg->server_tls_ca_file,
                                  cfg->server_tls_cert_file,
                                  cfg->server_tls_key_file,
                                  "server_tls_ca_file",
                                  "server_tls_cert_file",
                                  "server_tls_key_file"};
    if (!target_init(&tc->server, cfg, &global, errmsg) || !db_targets(tc, cfg, errmsg)) goto bad;
    return tc;
bad:
    tls_conf_free(tc);
    return NULL;
}

const struct tls_target *tls_target_for(const struct tls_conf *tc, const char *db)
{
    for (size_t i = 0; i < tc->ndbs; i++)
        if (db != NULL && strcmp(tc->dbs[i].db, db) == 0) return &tc->dbs[i];
    return &tc->server;
}

void tls_conf_free(struct tls_conf *tc)
{
    if (tc == NULL) return;
    SSL_CTX_free(tc->accept);
    SSL_CTX_free(tc->server.ctx);
    for (size_t i = 0; i < tc->ndbs; i++) {
        SSL_CTX_free(tc->dbs[i].ctx);
        free(tc->dbs[i].db);
    }
    free(tc->dbs);
    free(tc);
}

static SSL *session_new(struct io *io, SSL_CTX *ctx)
{
    SSL *ssl = SSL_new(ctx);

    if (ssl == NULL || SSL_set_fd(ssl, io->fd) != 1) {
        SSL_free(ssl);
        ERR_clear_error();
        return NULL;
    }
    return ssl;
}

bool tls_accept(struct io *io, const struct tls_conf *tc)
{
    SSL *ssl;

    if (tc == NULL || tc->accept == NULL || (ssl = session_new(io, tc->accept)) == NULL) return false;
    SSL_set_accept_state(ssl);
    io->ssl = ssl;
    io->tls_handshaking = true;
    return true;
}

bool tls_connect(struct io *io, const struct tls_target *t, const char *host)
{
    SSL            *ssl;
    struct in6_addr a6;
    struct in_addr  a4;
    bool            is_ip = inet_pton(AF_INET, host, &a4) == 1 || inet_pton(AF_INET6, host, &a6) == 1;

    if (t == NULL || t->ctx == NULL || (ssl = session_new(io, t->ctx)) == NULL) return false;
    /* SNI is for names only (RFC 6066), as libpq sends it. */
    if (!is_ip && host[0] != '\0' && SSL_set_tlsext_host_name(ssl, host) != 1) goto bad;
    if (t->mode == TLS_VERIFY_FULL) {
        X509_VERIFY_PARAM *param = SSL_get0_param(ssl);

        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if ((is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, host) : X509_VERIFY_PARAM_set1_host(param, host, 0)) != 1)
            goto bad;
    }
    SSL_set_connect_state(ssl);
    io->ssl = ssl;
    io->tls_handshaking = true;
    return true;
bad:
    SSL_free(ssl);
    ERR_clear_error();
    return false;
}

bool tls_alpn_ok(const struct io *io)
{
    const unsigned char *proto = NULL;
    unsigned int         len = 0;

    if (io->ssl == NULL) return false;
    SSL_get0_alpn_selected(io->ssl, &proto, &len);
    return len == sizeof(alpn_pg) - 2 && memcmp(proto, alpn_pg + 1, len) == 0;
}

void tls_describe(const struct io *io, char *buf, size_t len)
{
    const SSL_CIPHER *cipher;
    char              kx[48] = "";

    if (len == 0) return;
    buf[0] = '\0';
    if (io->ssl == NULL || io->tls_handshaking) return;
    cipher = SSL_get_current_cipher(io->ssl);
    /* The key exchange's group, as PgBouncer shows it: ECDH=X25519, or DH=<bits> for finite-field groups. */
    if (SSL_version(io->ssl) == TLS1_3_VERSION || (cipher != NULL && SSL_CIPHER_get_kx_nid(cipher) == NID_kx_ecdhe)) {
        int nid = SSL_get_negotiated_group(io->ssl);

        if (nid != NID_undef && nid != 0) {
            const char *name = OBJ_nid2sn(nid);

            if (name != NULL && strncmp(name, "ffdhe", 5) == 0)
                snprintf(kx, sizeof(kx), "/DH=%s", name + 5);
            else if (name != NULL)
                snprintf(kx, sizeof(kx), "/ECDH=%s", name);
        }
    } else if (cipher != NULL && SSL_CIPHER_get_kx_nid(cipher) == NID_kx_dhe) {
        snprintf(kx, sizeof(kx), "/DH=?");
    }
    snprintf(buf, len, "%s/%s%s", SSL_get_version(io->ssl), cipher != NULL ? SSL_CIPHER_get_name(cipher) : "-", kx);
}

size_t tls_server_end_point(const struct io *io, unsigned char *out, size_t len)
{
    X509         *cert = io->ssl != NULL ? SSL_get_certificate(io->ssl) : NULL;
    int           md_nid = NID_undef;
    const EVP_MD *md;
    unsigned char buf[EVP_MAX_MD_SIZE];
    unsigned int  n = 0;

    if (cert == NULL || !OBJ_find_sigid_algs(X509_get_signature_nid(cert), &md_nid, NULL)) return 0;
    if (md_nid == NID_md5 || md_nid == NID_sha1) md_nid = NID_sha256;
    if ((md = EVP_get_digestbynid(md_nid)) == NULL || X509_digest(cert, md, buf, &n) != 1 || n > len) {
        ERR_clear_error();
        return 0;
    }
    memcpy(out, buf, n);
    return n;
}

bool tls_peer_cn(const struct io *io, char *buf, size_t len)
{
    X509          *cert;
    X509_NAME     *name;
    ASN1_STRING   *data;
    unsigned char *utf8 = NULL;
    int            i, n;
    bool           ok = false;

    if (io->ssl == NULL || io->tls_handshaking || SSL_get_verify_result(io->ssl) != X509_V_OK ||
        (cert = SSL_get0_peer_certificate(io->ssl)) == NULL || (name = X509_get_subject_name(cert)) == NULL ||
        (i = X509_NAME_get_index_by_NID(name, NID_commonName, -1)) < 0 ||
        (data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i))) == NULL)
        return false;
    n = ASN1_STRING_to_UTF8(&utf8, data);
    if (n > 0 && (size_t)n < len && memchr(utf8, '\0', (size_t)n) == NULL) {
        memcpy(buf, utf8, (size_t)n);
        buf[n] = '\0';
        ok = true;
    }
    OPENSSL_free(utf8);
    ERR_clear_error();
    return ok;
}

bool tls_looks_like_hello(unsigned char first)
{
    /* A record of ContentType handshake (22). As a startup packet's length it would be over 369 MB: never valid. */
    return first == 0x16;
}
