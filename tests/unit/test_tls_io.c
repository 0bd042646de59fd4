/*
 * test_tls_io.c - io_read and io_flush over TLS, both ends pgbun's own io
 * layer on a socketpair, one accepting (tls_accept) and one connecting
 * (tls_connect), driven by one libevent loop. The bytes must arrive whole
 * and in order however the records are cut: small socket buffers make
 * OpenSSL's writes stop mid-record (SSL_ERROR_WANT_WRITE, retried from the
 * buffer as it then is), tiny reads leave decrypted bytes inside OpenSSL
 * that no socket readiness announces, and output made of many small chains
 * goes through the staging buffer. A certificate for the wrong host fails
 * the handshake with OpenSSL's reason.
 */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "io.h"
#include "tap.h"
#include "tls.h"

struct end {
    struct io        io;
    struct evbuffer *buf;      /* what this end still has to send, or what it got */
    size_t           want;     /* bytes the receiving end waits for */
    int              read_max; /* bytes per io_read */
    int              error;    /* errno of a failed io_read or io_flush */
    bool             eof;
};

static struct event_base *base;
static char               tmpdir[] = "/tmp/pgbun_test_tls_XXXXXX";
static char               key_path[256], cert_path[256];

static void read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct end *e = arg;
    int         n;

    (void)fd;
    (void)what;
    n = io_read(&e->io, e->buf, e->read_max);
    if (n == IO_AGAIN) return;
    if (n == 0) e->eof = true;
    if (n == IO_ERROR) e->error = errno;
    if (n <= 0 || evbuffer_get_length(e->buf) >= e->want) event_base_loopbreak(base);
}

static void write_cb(evutil_socket_t fd, short what, void *arg)
{
    struct end *e = arg;

    (void)fd;
    (void)what;
    if (io_flush(&e->io, e->buf) == IO_ERROR) {
        e->error = errno;
        event_base_loopbreak(base);
    }
}

static void timed_out(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    printf("# no progress for 20 s\n");
    event_base_loopbreak(base);
}

/* A throwaway key and a self-signed certificate for CN=localhost, written as PEM files. */
static bool make_cert(void)
{
    EVP_PKEY  *key = EVP_RSA_gen(2048);
    X509      *x = X509_new();
    X509_NAME *name;
    FILE      *f;
    bool       good = key != NULL && x != NULL && mkdtemp(tmpdir) != NULL;

    if (good) {
        ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
        X509_gmtime_adj(X509_getm_notBefore(x), -3600);
        X509_gmtime_adj(X509_getm_notAfter(x), 3600);
        X509_set_pubkey(x, key);
        name = X509_get_subject_name(x);
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1, -1, 0);
        X509_set_issuer_name(x, name);
        good = X509_sign(x, key, EVP_sha256()) > 0;
    }
    snprintf(key_path, sizeof(key_path), "%s/key.pem", tmpdir);
    snprintf(cert_path, sizeof(cert_path), "%s/cert.pem", tmpdir);
    if (good && (f = fopen(key_path, "w")) != NULL) {
        good = PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) == 1;
        fclose(f);
    }
    if (good && (f = fopen(cert_path, "w")) != NULL) {
        good = PEM_write_X509(f, x) == 1;
        fclose(f);
    }
    EVP_PKEY_free(key);
    X509_free(x);
    return good;
}

static void set(char **field, const char *value)
{
    free(*field);
    *field = value ? strdup(value) : NULL;
}

/* TLS for both roles from the same files; the connecting side trusts that certificate (verify-full). */
static struct tls_conf *conf(void)
{
    struct pgbun_config *cfg = config_load(NULL, NULL);
    struct tls_conf     *tc;
    char                *err = NULL;

    if (cfg == NULL) return NULL;
    set(&cfg->client_tls_sslmode, "require");
    set(&cfg->client_tls_key_file, key_path);
    set(&cfg->client_tls_cert_file, cert_path);
    set(&cfg->server_tls_sslmode, "verify-full");
    set(&cfg->server_tls_ca_file, cert_path);
    tc = tls_conf_new(cfg, &err);
    if (tc == NULL) printf("# %s\n", err ? err : "?");
    free(err);
    config_free(cfg);
    return tc;
}

/*
 * Sends `total` bytes from the connecting end to the accepting one, in
 * chains of `chunk` bytes, and checks they arrive whole. sndbuf > 0 shrinks
 * both sockets' buffers; read_max is the receiver's bytes per read.
 */
static void transfer(const struct tls_conf *tc, const char *host, size_t total, size_t chunk, int sndbuf, int read_max,
                     const char *what)
{
    struct end     a = {0}, c = {0};
    int            sv[2];
    unsigned char *data = malloc(total), *got;
    bool           same;

    for (size_t i = 0; i < total; i++)
        data[i] = (unsigned char)(i * 7 + i / 251);
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) abort();
    if (sndbuf > 0)
        for (int i = 0; i < 2; i++) {
            (void)setsockopt(sv[i], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
            (void)setsockopt(sv[i], SOL_SOCKET, SO_RCVBUF, &sndbuf, sizeof(sndbuf));
        }
    a.buf = evbuffer_new();
    c.buf = evbuffer_new();
    a.want = total;
    a.read_max = read_max;
    c.read_max = 16384;
    io_init(&a.io, base, sv[0], read_cb, write_cb, &a);
    io_init(&c.io, base, sv[1], read_cb, write_cb, &c);
    if (!tls_accept(&a.io, tc) || !tls_connect(&c.io, &tc->server, host)) abort();
    for (size_t off = 0; off < total; off += chunk)
        evbuffer_add(c.buf, data + off, total - off < chunk ? total - off : chunk);
    io_set_reading(&a.io, true);
    io_set_reading(&c.io, true);
    (void)io_flush(&c.io, c.buf); /* starts the handshake; the rest follows from the events */
    {
        /* Bounded: bytes stuck inside OpenSSL would otherwise hang here rather than fail. */
        struct timeval tv = {20, 0};
        struct event  *limit = evtimer_new(base, timed_out, NULL);

        evtimer_add(limit, &tv);
        event_base_dispatch(base);
        event_free(limit);
    }

    if (strcmp(host, "localhost") != 0) {
        ok(c.error == EPROTO || a.error != 0 || a.eof, "%s: the handshake fails", what);
        ok(c.error == EPROTO && strstr(io_strerror(c.error), "certificate verify failed") != NULL &&
               strstr(io_strerror(c.error), "hostname mismatch") != NULL,
           "%s: ... and says why (%s)", what, c.error ? io_strerror(c.error) : "no error");
    } else {
        is_int(evbuffer_get_length(a.buf), total, "%s: every byte arrives", what);
        got = evbuffer_pullup(a.buf, -1);
        same = evbuffer_get_length(a.buf) == total && memcmp(got, data, total) == 0;
        ok(same, "%s: ... in order, unchanged", what);
        ok(a.error == 0 && c.error == 0 && !a.eof, "%s: no error on either end", what);
    }
    io_close(&a.io);
    io_close(&c.io);
    evbuffer_free(a.buf);
    evbuffer_free(c.buf);
    free(data);
}

int main(void)
{
    struct tls_conf *tc;

    signal(SIGPIPE, SIG_IGN); /* as pgbun: a close_notify to a peer that left is an error, not a signal */
    base = event_base_new();
    ok(make_cert(), "a throwaway certificate");
    tc = conf();
    ok(tc != NULL && tc->accept != NULL && tc->server.ctx != NULL, "TLS contexts for both roles");
    if (tc == NULL) return done_testing();

    transfer(tc, "localhost", 1 << 20, 1 << 20, 0, 16384, "1 MB in one chain");
    transfer(tc, "localhost", 1 << 20, 5, 0, 16384, "1 MB in 5-byte chains (the staging buffer)");
    transfer(tc, "localhost", 512 * 1024, 3000, 4096, 16384, "small socket buffers (writes cut mid-record)");
    transfer(tc, "localhost", 200 * 1024, 1000, 4096, 7, "7-byte reads (bytes left inside OpenSSL)");
    transfer(tc, "wrong.example", 1000, 1000, 0, 16384, "verify-full against another name");

    tls_conf_free(tc);
    event_base_free(base);
    unlink(key_path);
    unlink(cert_path);
    rmdir(tmpdir);
    return done_testing();
}
