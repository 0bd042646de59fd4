/*
 * server.c - connections to PostgreSQL: connect, log in, relay replies.
 *
 *   server_launch -> CONNECTING (DNS, non-blocking connect)
 *     -> LOGIN ([SSLRequest -> 'S' + TLS handshake, or 'N'] StartupMessage;
 *        cleartext/md5/SCRAM answers; ParameterStatus, BackendKeyData)
 *     -> ReadyForQuery -> pool_server_ready -> IDLE
 *   ACTIVE: replies framed from s->in and moved to the client's output.
 *     ReadyForQuery 'I' with nothing outstanding makes the server clean;
 *     outside session mode that returns it to the pool at once.
 *
 * pgbun's own queries (parameter SETs, server_reset_query) run in a phase
 * whose replies are consumed here and never reach a client. What those
 * queries say about the session, and what their replies mean for it and
 * for the client pinned to it, is session.c's: this file sends and reads.
 */
#define LOG_EVENT LOGE_SERVER /* the event kind of this file's log lines (log.h) */
#include "server.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/dns.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "auth.h"
#include "cancel.h"
#include "client.h"
#include "creds.h"
#include "log.h"
#include "pgbun.h"
#include "replyq.h"
#include "scan.h"
#include "scram.h"
#include "pstmt_fwd.h"
#include "tls.h"
#include "worker.h"

/* Messages pgbun must read whole while logging in or in its own phases. */
#define SERVER_MSG_MAX (1024 * 1024)

static atomic_uint_fast64_t next_server_id;

static void server_read_cb(evutil_socket_t fd, short what, void *arg);
static void server_write_cb(evutil_socket_t fd, short what, void *arg);
static void relay(struct server *s);

static void timeval_of(usec_t us, struct timeval *tv)
{
    tv->tv_sec = (time_t)(us / USEC_PER_SEC);
    tv->tv_usec = (suseconds_t)(us % USEC_PER_SEC);
}

/* Close a server that never became usable, and tell the pool why. */
static void server_fail(struct server *s, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void server_fail(struct server *s, const char *sqlstate, const char *fmt, ...)
{
    char         msg[512];
    va_list      ap;
    struct pool *p = s->pool;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    server_close(s, "%s", msg);
    pool_server_failed(p, sqlstate, msg);
}

/* The lookup's end, told once. */
static void tell_lookup(struct server *s, const struct pg_error *err)
{
    const struct server_lookup_ops *ops = s->lookup;

    s->lookup = NULL;
    if (ops != NULL) ops->done(s->lookup_arg, err);
}

void server_log_line(const struct server *s, int level, const char *fmt, ...)
{
    struct log_who who = {'S', (unsigned long long)s->id, s->pool->dbname, s->pool->user, s->pool->host, s->pool->port};
    va_list        ap;

    va_start(ap, fmt);
    log_vline(level, LOGE_SERVER, &who, NULL, 0, fmt, ap);
    va_end(ap);
}

void server_close(struct server *s, const char *fmt, ...)
{
    char           reason[512];
    va_list        ap;
    struct client *c = s->client;

    if (s->state == SV_CLOSING) return;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    server_log(s, LOGL_INFO, "closing: %s", reason);

    if (s->lookup != NULL) {
        struct pg_error e = {.severity = "FATAL", .sqlstate = "08006"};

        snprintf(e.message, sizeof(e.message), "server connection closed: %.400s", reason);
        tell_lookup(s, &e);
    }
    if (c != NULL) {
        pool_unlink(c, s);
        /* An ErrorResponse in the middle of a relayed message would be garbage to the client. */
        client_close(c, s->fwd_left > 0 ? NULL : "08006", "server connection closed: %s", reason);
    }
    if (s->cancel != NULL) {
        cancel_orphan(s->cancel); /* it carries on alone */
        s->cancel = NULL;
    }
    if (s->dns != NULL) {
        struct evdns_getaddrinfo_request *req = s->dns;

        s->dns = NULL;
        evdns_getaddrinfo_cancel(req);
    }
    evtimer_del(&s->timer);
    if (s->io.fd >= 0 && s->state != SV_CONNECTING) {
        evbuffer_drain(s->out, evbuffer_get_length(s->out));
        proto_add_terminate(s->out);
        (void)io_flush(&s->io, s->out);
    }
    io_close(&s->io);
    pool_set_server_state(s, SV_CLOSING);
    /* A slot is free: waiting clients may get a new server. */
    pool_dispatch_later(s->pool);
}

void server_free(struct server *s)
{
    assert(s->state == SV_CLOSING);
    evbuffer_free(s->in);
    evbuffer_free(s->out);
    if (s->addrs) evutil_freeaddrinfo(s->addrs);
    varlist_clear(&s->params);
    varlist_clear(&s->applied);
    varlist_clear(&s->applying);
    varlist_clear(&s->scan_names);
    varlist_clear(&s->baseline);
    replyq_deinit(&s->rq);
    pstmt_cache_clear(&s->stmts);
    if (s->scram) {
        scram_client_free(s->scram);
        free(s->scram);
    }
    free(s);
}

bool server_is_clean(const struct server *s)
{
    return s->expect_rfq == 0 && !s->unsynced && !s->in_copy && s->txstatus == 'I' && s->phase == PHASE_NONE &&
           replyq_empty(&s->rq) && s->fwd_left == 0 && s->cancel == NULL &&
           (s->client == NULL || s->client->fwd_left == 0);
}

bool server_flush(struct server *s)
{
    if (io_flush(&s->io, s->out) == IO_ERROR) {
        if (s->state == SV_LOGIN)
            server_fail(s, "08006", "server login failed: %s:%d: %s", s->host, s->port, io_strerror(errno));
        else
            server_close(s, "write to server failed: %s", io_strerror(errno));
        return false;
    }
    return true;
}

/* ---- connecting ---- */

/* How long server_check_query may take: server_connect_timeout, or 15 s when that is off. */
static usec_t check_deadline(void)
{
    return pgbun.cfg->server_connect_timeout > 0 ? pgbun.cfg->server_connect_timeout : 15 * USEC_PER_SEC;
}

static void timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct server *s = arg;

    if (s->state == SV_TESTING) {
        server_close(s, "%s: no answer within %g s", s->phase == PHASE_LOOKUP ? "auth_query" : "server_check_query",
                     (double)check_deadline() / USEC_PER_SEC);
        return;
    }
    server_fail(s, "08006", "could not connect to server %s:%d: server_connect_timeout (%.0f s) expired",
                s->host[0] != '\0' ? s->host : s->pool->host, s->host[0] != '\0' ? s->port : s->pool->port,
                (double)pgbun.cfg->server_connect_timeout / USEC_PER_SEC);
}

static void send_startup(struct server *s)
{
    struct varlist params = {0};
    struct pool   *p = s->pool;

    if (!varlist_set(&params, "user", p->server_user) || !varlist_set(&params, "database", p->server_db) ||
        (p->application_name && !varlist_set(&params, "application_name", p->application_name))) {
        varlist_clear(&params);
        server_fail(s, "53200", "out of memory");
        return;
    }
    proto_add_startup(s->out, &params);
    varlist_clear(&params);
    pool_set_server_state(s, SV_LOGIN);
    io_set_reading(&s->io, true);
    (void)server_flush(s);
}

/*
 * Connected: over TCP, ask for TLS first unless server_tls_sslmode is
 * disable (never on a unix socket, as libpq); the answer is read in
 * tls_answer(). The StartupMessage follows, inside TLS or not. Under
 * allow, as libpq: plain text first, and TLS only once that is refused.
 */
static void begin_login(struct server *s)
{
    /* Length 8, then PROTO_CODE_SSL (80877103) in network order. */
    static const uint8_t     ssl_request[8] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f};
    const struct tls_target *t = s->pool->tls;

    _Static_assert(PROTO_CODE_SSL == 0x04d2162fu, "SSLRequest code");
    if (t->ctx == NULL || s->host[0] == '/' || (t->mode == TLS_ALLOW && !s->allow_tls)) {
        send_startup(s);
        return;
    }
    evbuffer_add(s->out, ssl_request, sizeof(ssl_request));
    s->tls_asked = true;
    pool_set_server_state(s, SV_LOGIN);
    io_set_reading(&s->io, true);
    (void)server_flush(s);
}

/* PostgreSQL's one-byte answer to the SSLRequest. */
static void tls_answer(struct server *s)
{
    uint8_t answer;

    if (evbuffer_copyout(s->in, &answer, 1) != 1) return;
    s->tls_asked = false;
    /* An ErrorResponse instead (a server that cannot take the connection at all): login_step reads it. */
    if (answer == 'E') return;
    evbuffer_drain(s->in, 1);
    if (answer == 'S') {
        /* Bytes after 'S' were not protected by the handshake (CVE-2021-23222): refuse them, as libpq does. */
        if (evbuffer_get_length(s->in) > 0) {
            server_fail(s, "08P01", "server %s:%d sent unencrypted data after accepting TLS", s->host, s->port);
            return;
        }
        if (!tls_connect(&s->io, s->pool->tls, s->host)) {
            server_fail(s, "53200", "could not start TLS with server %s:%d: out of memory", s->host, s->port);
            return;
        }
        send_startup(s); /* the handshake goes first: io_flush drives it */
        return;
    }
    if (answer == 'N' && s->pool->tls->mode < TLS_REQUIRE) {
        send_startup(s);
        return;
    }
    if (answer == 'N')
        server_fail(s, "08006", "server %s:%d does not support TLS, and %s = %s requires it", s->host, s->port,
                    s->pool->tls->db != NULL ? "sslmode" : "server_tls_sslmode", tls_mode_name(s->pool->tls->mode));
    else
        server_fail(s, "08P01", "server %s:%d answered the SSL request with '%c' (0x%02x), not S, N or an error",
                    s->host, s->port, answer >= 32 && answer < 127 ? answer : '?', answer);
}

static void connect_addr(struct server *s, const struct sockaddr *sa, socklen_t salen);
static void connect_host(struct server *s);

/* Drops the socket and the addresses tried, and connects to entry s->host_at of the host list afresh. */
static void connect_entry_again(struct server *s)
{
    io_close(&s->io);
    if (s->addrs != NULL) evutil_freeaddrinfo(s->addrs);
    s->addrs = s->addr = NULL;
    connect_host(s);
}

/* sslmode allow, as libpq: PostgreSQL refused the plain-text login; connect to the same host again, with TLS. */
static void retry_with_tls(struct server *s)
{
    s->allow_tls = true;
    evbuffer_drain(s->in, evbuffer_get_length(s->in));
    evbuffer_drain(s->out, evbuffer_get_length(s->out));
    varlist_clear(&s->params);
    if (s->scram) {
        scram_client_free(s->scram);
        free(s->scram);
        s->scram = NULL;
    }
    pool_set_server_state(s, SV_CONNECTING);
    s->hosts_left++; /* the same entry of the host list again */
    connect_entry_again(s);
}

/*
 * The host being tried is out of reach: try the next one of the pool's host
 * list, or give up with the reason. A host list is tried in order from the
 * entry this connection started with, so one host down costs a connect, not
 * a failed login.
 */
static void __attribute__((format(printf, 2, 3))) host_failed(struct server *s, const char *fmt, ...)
{
    char    reason[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    if (s->hosts_left > 0) {
        server_log(s, LOGL_WARNING, "%s; trying the next host", reason);
        s->host_at = (s->host_at + 1) % (unsigned)config_list_count(s->pool->host);
        connect_entry_again(s);
        return;
    }
    server_fail(s, "08006", "%s", reason);
}

/*
 * A connect failed: try the host's next address, as libpq does (localhost
 * may name ::1 before 127.0.0.1), then the next host of a list, or give up.
 */
static void connect_failed(struct server *s, int err)
{
    if (s->addr != NULL && s->addr->ai_next != NULL) {
        server_log(s, LOGL_DEBUG, "connect failed (%s), trying the next address", strerror(err));
        io_close(&s->io);
        s->addr = s->addr->ai_next;
        connect_addr(s, s->addr->ai_addr, (socklen_t)s->addr->ai_addrlen);
        return;
    }
    host_failed(s, "could not connect to server %s:%d: %s", s->host, s->port, strerror(err));
}

static void connect_addr(struct server *s, const struct sockaddr *sa, socklen_t salen)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0) {
        host_failed(s, "could not create a socket for server %s:%d: %s", s->host, s->port, strerror(errno));
        return;
    }
    if (sa->sa_family != AF_UNIX) io_tune_tcp(fd, &pgbun.cfg->tcp);
    io_init(&s->io, s->pool->w->base, fd, server_read_cb, server_write_cb, s);
    if (connect(fd, sa, salen) == 0) {
        begin_login(s);
        return;
    }
    if (errno != EINPROGRESS) {
        connect_failed(s, errno);
        return;
    }
    if (!io_want_write(&s->io)) connect_failed(s, ENOMEM);
}

static void dns_cb(int result, struct evutil_addrinfo *res, void *arg)
{
    struct server *s = arg;

    if (result == EVUTIL_EAI_CANCEL) return;
    s->dns = NULL;
    if (result != 0 || res == NULL) {
        if (res) evutil_freeaddrinfo(res);
        host_failed(s, "could not resolve server host \"%s\": %s", s->host, evutil_gai_strerror(result));
        return;
    }
    s->addrs = s->addr = res; /* freed with the server */
    connect_addr(s, res->ai_addr, (socklen_t)res->ai_addrlen);
}

/* Connects to entry s->host_at of the pool's host list (a list of one, usually): a socket directory, an address or a
 * name to resolve. */
static void connect_host(struct server *s)
{
    struct pool *p = s->pool;
    char         port[16];

    assert(s->hosts_left > 0);
    s->hosts_left--;
    if (!config_list_entry(p->host, (int)s->host_at, s->host, sizeof(s->host))) {
        host_failed(s, "entry %u of the host list \"%s\" is empty or too long", s->host_at + 1, p->host);
        return;
    }
    s->port = p->port;
    if (p->ports != NULL && (!config_list_entry(p->ports, (int)s->host_at, port, sizeof(port)) ||
                             (s->port = atoi(port)) <= 0 || s->port > 65535)) {
        host_failed(s, "no port for entry %u of the host list \"%s\" in \"%s\"", s->host_at + 1, p->host, p->ports);
        return;
    }
    if (s->host[0] == '/') {
        struct sockaddr_un un = {.sun_family = AF_UNIX};

        if ((size_t)snprintf(un.sun_path, sizeof(un.sun_path), "%s/.s.PGSQL.%d", s->host, s->port) >=
            sizeof(un.sun_path)) {
            host_failed(s, "unix socket path for server %s:%d is too long", s->host, s->port);
            return;
        }
        connect_addr(s, (struct sockaddr *)&un, sizeof(un));
        return;
    }
    {
        struct sockaddr_storage ss;
        struct sockaddr_in     *in = (struct sockaddr_in *)&ss;
        struct sockaddr_in6    *in6 = (struct sockaddr_in6 *)&ss;

        memset(&ss, 0, sizeof(ss));
        if (inet_pton(AF_INET, s->host, &in->sin_addr) == 1) {
            in->sin_family = AF_INET;
            in->sin_port = htons((uint16_t)s->port);
            connect_addr(s, (struct sockaddr *)in, sizeof(*in));
            return;
        }
        if (inet_pton(AF_INET6, s->host, &in6->sin6_addr) == 1) {
            in6->sin6_family = AF_INET6;
            in6->sin6_port = htons((uint16_t)s->port);
            connect_addr(s, (struct sockaddr *)in6, sizeof(*in6));
            return;
        }
    }
    if (p->w->dns == NULL) p->w->dns = evdns_base_new(p->w->base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
    if (p->w->dns == NULL) {
        host_failed(s, "could not start the DNS resolver for server \"%s\"", s->host);
        return;
    }
    {
        struct evutil_addrinfo            hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
        struct evdns_getaddrinfo_request *req;

        snprintf(port, sizeof(port), "%d", s->port);
        /* The callback may run before this returns; s->dns is set only if it did not. */
        s->dns = (struct evdns_getaddrinfo_request *)1;
        req = evdns_getaddrinfo(p->w->dns, s->host, port, &hints, dns_cb, s);
        if (s->dns == (struct evdns_getaddrinfo_request *)1) s->dns = req;
    }
}

bool server_launch(struct pool *p, bool ahead)
{
    struct server *s = calloc(1, sizeof(*s));
    struct timeval tv;
    unsigned       nhosts = (unsigned)config_list_count(p->host);

    if (s == NULL || (s->in = evbuffer_new()) == NULL || (s->out = evbuffer_new()) == NULL) {
        if (s) {
            if (s->in) evbuffer_free(s->in);
            free(s);
        }
        log_error("out of memory opening a server connection");
        return false;
    }
    s->id = atomic_fetch_add(&next_server_id, 1) + 1;
    s->io.fd = -1;
    s->txstatus = 'I';
    s->std_strings = true;
    s->connect_time = pgbun_now();
    s->opened_ahead = ahead;
    replyq_init(&s->rq, pstmt_fwd_emit, pstmt_fwd_settle, s);
    pool_add_server(p, s);
    evtimer_assign(&s->timer, p->w->base, timeout_cb, s);
    if (pgbun.cfg->server_connect_timeout > 0) {
        timeval_of(pgbun.cfg->server_connect_timeout, &tv);
        evtimer_add(&s->timer, &tv);
    }
    server_log(s, LOGL_DEBUG, "connecting");
    /* A host list: each new connection starts with the next host (PgBouncer's round-robin), then goes down the list. */
    s->host_at = p->host_next++ % nhosts;
    s->hosts_left = nhosts;
    connect_host(s);
    return true;
}

/* ---- login ---- */

/*
 * What pgbun logs in with as the pool's server user: the password of the
 * database entry or of auth_file (plain, or an md5 secret that answers md5
 * challenges); else an md5 secret auth_query found; else, for SCRAM, the
 * keys a client's proof revealed (pass-through). Nothing: NULL and no keys.
 */
struct login_creds {
    const char *password; /* plain or "md5..."; NULL: none */
    char        md5[MD5_PASSWD_LEN + 1];
    bool        has_keys;
    uint8_t     client_key[SCRAM_KEY_LEN];
    uint8_t     server_key[SCRAM_KEY_LEN];
};

static void login_creds_get(const struct pool *p, struct login_creds *lc)
{
    lc->password = p->password;
    lc->has_keys = false;
    if (p->password != NULL || p->secret_place == NULL) return;
    if (creds_md5_secret(p->server_user, p->secret_place, lc->md5)) lc->password = lc->md5;
    lc->has_keys = creds_scram_keys(p->server_user, p->secret_place, lc->client_key, lc->server_key);
}

static void login_creds_clear(struct login_creds *lc)
{
    OPENSSL_cleanse(lc, sizeof(*lc));
}

static bool is_md5(const char *password)
{
    return strncmp(password, "md5", 3) == 0 && strlen(password) == MD5_PASSWD_LEN;
}

static void answer_auth(struct server *s, const uint8_t *body, size_t len)
{
    struct proto_reader r;
    struct pool        *p = s->pool;
    uint32_t            code;
    const char         *err = NULL;
    char               *reply = NULL;
    struct login_creds  lc;

    proto_reader_init(&r, body, len);
    code = proto_get_u32(&r);
    if (code == AUTH_REQ_OK) return;
    login_creds_get(p, &lc);
    if (lc.password == NULL && !lc.has_keys) {
        server_fail(s, "28000",
                    "server login failed: no password for user \"%s\" (set password= in [databases], a secret in "
                    "auth_file, or let a client of that user log in with SCRAM first)",
                    p->server_user);
        goto out;
    }
    switch (code) {
    case AUTH_REQ_CLEARTEXT:
        if (lc.password == NULL || is_md5(lc.password)) {
            server_fail(s, "28000",
                        "server login failed: server asks for a cleartext password but only %s is known for user "
                        "\"%s\"",
                        lc.password == NULL ? "SCRAM keys are" : "an md5 secret is", p->server_user);
            goto out;
        }
        proto_add_password(s->out, lc.password);
        break;
    case AUTH_REQ_MD5: {
        char           secret[MD5_PASSWD_LEN + 1], answer[MD5_PASSWD_LEN + 1];
        const uint8_t *salt = proto_get_bytes(&r, 4);

        if (salt == NULL) break;
        if (lc.password == NULL) {
            server_fail(s, "28000",
                        "server login failed: server asks for md5 but only SCRAM keys are known for user \"%s\"",
                        p->server_user);
            goto out;
        }
        if (is_md5(lc.password))
            snprintf(secret, sizeof(secret), "%s", lc.password);
        else
            auth_md5_secret(p->server_user, lc.password, secret);
        auth_md5_salted(secret, salt, answer);
        proto_add_password(s->out, answer);
        OPENSSL_cleanse(secret, sizeof(secret));
        break;
    }
    case AUTH_REQ_SASL: {
        bool have = false;

        for (;;) {
            const char *mech = proto_get_str(&r);

            if (r.bad || mech[0] == '\0') break;
            if (strcmp(mech, "SCRAM-SHA-256") == 0) have = true;
        }
        if (!have) {
            server_fail(s, "28000", "server login failed: server offers no SASL mechanism pgbun supports");
            goto out;
        }
        if ((lc.password == NULL || is_md5(lc.password)) && !lc.has_keys) {
            server_fail(s, "28000",
                        "server login failed: server asks for SCRAM but only an md5 secret is known for user \"%s\"",
                        p->server_user);
            goto out;
        }
        s->scram = calloc(1, sizeof(*s->scram));
        if (s->scram == NULL || !scram_client_first(s->scram, NULL, &reply)) {
            server_fail(s, "53200", "out of memory");
            goto out;
        }
        proto_add_sasl_initial(s->out, "SCRAM-SHA-256", reply, strlen(reply));
        free(reply);
        break;
    }
    case AUTH_REQ_SASL_CONTINUE: {
        bool good;

        /* A plain password of the entry or auth_file first; else the keys of a client's proof. */
        if (s->scram == NULL)
            good = false;
        else if (lc.password != NULL && !is_md5(lc.password))
            good = scram_client_final(s->scram, lc.password, (const char *)r.p, r.left, &reply, &err);
        else
            good = scram_client_final_keys(s->scram, lc.client_key, lc.server_key, (const char *)r.p, r.left, &reply,
                                           &err);
        if (!good) {
            server_fail(s, "08P01", "server login failed: %s", err ? err : "unexpected SASL message");
            goto out;
        }
        proto_add_sasl_response(s->out, reply, strlen(reply));
        free(reply);
        break;
    }
    case AUTH_REQ_SASL_FINAL:
        if (s->scram == NULL || !scram_client_verify(s->scram, (const char *)r.p, r.left, &err)) {
            server_fail(s, "08P01", "server login failed: %s", err ? err : "unexpected SASL message");
            goto out;
        }
        goto out;
    default:
        server_fail(s, "28000", "server login failed: unsupported authentication method %u requested by server", code);
        goto out;
    }
    if (r.bad) {
        server_fail(s, "08P01", "server login failed: malformed authentication request");
        goto out;
    }
    (void)server_flush(s);
out:
    login_creds_clear(&lc);
}

static bool record_param(struct server *s, const uint8_t *body, size_t len, const char **name, const char **value)
{
    struct proto_reader r;

    proto_reader_init(&r, body, len);
    *name = proto_get_str(&r);
    *value = proto_get_str(&r);
    if (r.bad) return false;
    if (strcasecmp(*name, "standard_conforming_strings") == 0) s->std_strings = strcmp(*value, "on") == 0;
    return varlist_set(&s->params, *name, *value);
}

/*
 * connect_query runs on a new server before anyone uses it. At login, a
 * read of the session-level settings it made follows in the same flight:
 * those are the server's baseline, which pgbun restores instead of
 * resetting when a client's own value of one goes (docs/SESSION_STATE.md).
 * After server_reset_query (PHASE_CONNECT) it runs alone.
 */
static void send_connect_query(struct server *s, bool login)
{
    static const char baseline_sql[] = "SELECT name, setting FROM pg_catalog.pg_settings WHERE source = 'session'";

    server_log(s, LOGL_DEBUG, "running connect_query");
    proto_add_query(s->out, s->pool->connect_query);
    if (login) {
        proto_add_query(s->out, baseline_sql);
        varlist_clear(&s->applying);
        s->login_rfq = 2;
    }
    (void)server_flush(s);
}

static void login_step(struct server *s)
{
    while (s->state == SV_LOGIN) {
        uint8_t         type, *msg;
        uint32_t        len;
        struct pg_error e;

        switch (proto_peek_header(s->in, SERVER_MSG_MAX, &type, &len)) {
        case PROTO_NEED_MORE: return;
        case PROTO_BAD: server_fail(s, "08P01", "server login failed: invalid message length %u", len); return;
        case PROTO_OK: break;
        }
        if (evbuffer_get_length(s->in) < (size_t)len + 1) return;
        msg = evbuffer_pullup(s->in, (ev_ssize_t)len + 1);
        switch (type) {
        case 'R': answer_auth(s, msg + 5, len - 4); break;
        case 'S': {
            const char *n, *v;

            if (!record_param(s, msg + 5, len - 4, &n, &v)) {
                server_fail(s, "08P01", "server login failed: malformed ParameterStatus");
                return;
            }
            break;
        }
        case 'K':
            if (len != 12) {
                server_fail(s, "08P01", "server login failed: malformed BackendKeyData");
                return;
            }
            memcpy(s->cancel_key, msg + 5, 8);
            s->backend_pid = (int)((uint32_t)msg[5] << 24 | (uint32_t)msg[6] << 16 | (uint32_t)msg[7] << 8 | msg[8]);
            break;
        case 'Z': {
            char status = len == 5 ? (char)msg[5] : '?';

            evbuffer_drain(s->in, (size_t)len + 1);
            if (s->scram) {
                scram_client_free(s->scram);
                free(s->scram);
                s->scram = NULL;
            }
            if (s->login_rfq == 0 && s->pool->connect_query != NULL && s->connect_status == '\0') {
                send_connect_query(s, true);
                continue;
            }
            if (s->login_rfq > 0) {
                if (s->login_rfq == 2) s->connect_status = status;
                if (--s->login_rfq > 0) continue;
                if (s->connect_status != 'I') {
                    /* A person must fix the query: the pool's clients hear why, and new servers wait. */
                    server_fail(s, "25001",
                                "connect_query left a transaction open (status %c): server connection closed",
                                s->connect_status);
                    return;
                }
                if (!varlist_copy(&s->baseline, &s->applying)) {
                    server_fail(s, "53200", "out of memory");
                    return;
                }
                varlist_clear(&s->applying);
            }
            evtimer_del(&s->timer);
            s->txstatus = 'I';
            s->last_ready = pgbun_now();
            if (pgbun.cfg->log_connections) {
                char tls[128];

                tls_describe(&s->io, tls, sizeof(tls));
                server_log(s, LOGL_INFO, "new server connection, backend pid %d%s%s%s", s->backend_pid,
                           tls[0] ? " (tls=" : "", tls, tls[0] ? ")" : "");
            }
            pool_server_ready(s);
            return;
        }
        case 'E':
            proto_parse_error(msg + 5, len - 4, &e);
            if (s->login_rfq > 0) {
                /* As in PgBouncer: logged, and the connection is used anyway (the query's text is not logged). */
                server_log(s, s->login_rfq == 2 ? LOGL_WARNING : LOGL_DEBUG, "%s failed: %s (SQLSTATE %s)",
                           s->login_rfq == 2 ? "connect_query" : "reading connect_query's settings", e.message,
                           e.sqlstate);
                break;
            }
            if (s->pool->tls->mode == TLS_ALLOW && s->pool->tls->ctx != NULL && !s->allow_tls && s->io.ssl == NULL &&
                s->host[0] != '/') {
                server_log(s, LOGL_INFO, "plain-text login refused (%s): trying again with TLS (sslmode allow)",
                           e.message);
                retry_with_tls(s);
                return;
            }
            server_fail(s, e.sqlstate[0] ? e.sqlstate : "08006", "%s", e.message);
            return;
        case 'D':
            /* The baseline read's rows; connect_query's own rows are dropped. */
            if (s->login_rfq == 1 && !session_read_row(&s->applying, &s->held_read, msg + 5, len - 4)) {
                server_fail(s, "08P01", "server login failed: malformed row of connect_query's settings");
                return;
            }
            if (s->login_rfq == 0) goto unexpected;
            break;
        case 'T':
        case 'C':
        case 'I':
        case 'A':
            if (s->login_rfq == 0) goto unexpected;
            break;
        case 'N':
        case 'v': break;
        default:
        unexpected:
            server_fail(s, "08P01", "server login failed: unexpected message '%c'%s",
                        type >= 32 && type < 127 ? type : '?', s->login_rfq > 0 ? " in reply to connect_query" : "");
            return;
        }
        if (s->state != SV_LOGIN) return;
        evbuffer_drain(s->in, (size_t)len + 1);
    }
}

/* ---- pgbun's own queries ---- */

/* A query pgbun sent for itself: its replies are not the client's. */
static void own_request(struct server *s)
{
    if (!replyq_push_simple(&s->rq, 'Q', REPLYQ_DROP)) server_close(s, "out of memory");
}

void server_prepare_for(struct server *s, struct client *c)
{
    char  *sql = NULL;
    size_t len = 0;
    /*
     * Settings pgbun cannot name (set_config in a function, a DO block) stay
     * with their client only while it keeps this server: anyone else, or
     * the same client back from another server, gets it reset first, then
     * whatever it wants set.
     */
    bool clean = s->unknown_of != 0 && (s->unknown_of != c->id || c->last_server != s->id);

    assert(s->client == c && s->phase == PHASE_NONE);
    c->last_server = s->id;
    s->restore_due = false;
    if (clean) varlist_clear(&s->applied);
    if (!session_settings_sql(&sql, &len, &c->params, c->sets, &s->applied, &s->params, &s->baseline, clean)) {
        free(sql);
        client_close(c, "53200", "could not build the parameter settings for the server");
        return;
    }
    if (sql == NULL) {
        client_start(c);
        return;
    }
    if (!session_want_all(&s->applying, &c->params, c->sets)) {
        free(sql);
        client_close(c, "53200", "out of memory");
        return;
    }
    server_log(s, LOGL_DEBUG, "applying client parameters: %s", sql);
    s->pool->stats.replays++;
    proto_add_query(s->out, sql);
    own_request(s);
    free(sql);
    s->cleaning = clean;
    s->phase = PHASE_SETTING;
    s->expect_rfq++;
    s->has_phase_error = false;
    (void)server_flush(s);
}

/* Runs q (server_reset_query, or DISCARD ALL after a pinned client), then returns the server to the pool. */
static void start_reset(struct server *s, const char *q)
{
    if (q == NULL || q[0] == '\0') {
        pool_release_server(s);
        return;
    }
    pool_set_server_state(s, SV_RESETTING);
    proto_add_query(s->out, q);
    own_request(s);
    /* DISCARD ALL leaves no prepared statement (what pgbun prepares next needs no Close first), and no setting. */
    s->cleaning = strcasecmp(q, "DISCARD ALL") == 0;
    s->stmts_dirty = !s->cleaning;
    s->phase = PHASE_RESET;
    s->expect_rfq++;
    s->has_phase_error = false;
    (void)server_flush(s);
}

/* Something now pins the server's client to it. */
static void pinned(struct server *s)
{
    s->held_since = pgbun_now();
    s->pool->stats.pins++;
}

/*
 * The client's text may have changed session settings or made state that
 * pins it (scan.h): ask the server what its session holds now, before
 * anyone else gets it.
 */
static void start_readback(struct server *s)
{
    unsigned was = s->held;
    char    *sql;

    s->readback_settings = (s->scan_pending & SCAN_READBACK) != 0;
    s->readback_held = (s->scan_pending & SCAN_PIN) != 0;
    if ((sql = session_readback_sql(&s->scan_names, &s->applied, s->scan_pending)) == NULL) {
        server_close(s, "out of memory");
        return;
    }
    s->held = session_pin_load(s->held, s->scan_pending);
    if (was == 0 && s->held != 0) pinned(s);
    s->held_read = 0;
    proto_add_query(s->out, sql);
    own_request(s);
    free(sql);
    varlist_clear(&s->scan_names);
    varlist_clear(&s->applying);
    s->scan_pending = 0;
    s->phase = PHASE_READBACK;
    s->expect_rfq++;
    s->has_phase_error = false;
    (void)server_flush(s);
}

/* What the state read back means for the server and its client. */
static bool readback_done(struct server *s)
{
    struct client *c = s->client;
    unsigned       was = s->held;

    if (s->readback_held) s->held = s->held_read | (s->held & HELD_LOAD);
    if (s->readback_settings && !session_settings_read(&s->applied, &s->applying, &s->baseline,
                                                       c != NULL ? &c->params : NULL, c != NULL ? &c->sets : NULL))
        return false;
    if (s->pool->pin_settings && s->readback_settings)
        s->held = (s->held & ~HELD_SET) | (c != NULL && c->sets != NULL ? HELD_SET : 0);
    if (s->held != 0 && was == 0) pinned(s);
    if (s->held != was && c != NULL) {
        char now[128];

        client_log(c, LOGL_DEBUG, "%s its server: %s", s->held ? "pinned to" : "no longer pinned to",
                   session_held_names(s->held ? s->held : was, now, sizeof(now)));
    }
    return true;
}

/* A query of pgbun's on an unlinked server (TESTING), sent: its ReadyForQuery is due within check_deadline(). */
static void begin_timed_phase(struct server *s, enum server_phase phase)
{
    struct timeval tv;

    s->phase = phase;
    s->expect_rfq++;
    s->has_phase_error = false;
    timeval_of(check_deadline(), &tv);
    evtimer_add(&s->timer, &tv);
    (void)server_flush(s);
}

void server_check(struct server *s)
{
    const char *q = pgbun.cfg->server_check_query;

    server_log(s, LOGL_DEBUG, "unused for %g s: running server_check_query",
               (double)(pgbun_now() - s->last_ready) / USEC_PER_SEC);
    pool_set_server_state(s, SV_TESTING);
    /* "<empty>" sends an empty query: the cheapest round trip, as in PgBouncer. */
    proto_add_query(s->out, strcmp(q, "<empty>") == 0 ? "" : q);
    own_request(s);
    begin_timed_phase(s, PHASE_CHECK);
}

void server_lookup(struct server *s, const char *query, const char *param, const struct server_lookup_ops *ops,
                   void *arg)
{
    static const char safe_path[] = "SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true)";
    static const char steps[] = "PBEPBES";

    assert(s->state == SV_TESTING && s->client == NULL && server_is_clean(s));
    s->lookup = ops;
    s->lookup_arg = arg;
    s->lookup_stmt = 0;
    /* One implicit transaction up to the Sync: the search_path holds for the query, and only for it. */
    proto_add_parse(s->out, "", safe_path, NULL, 0);
    proto_add_bind_text(s->out, NULL);
    proto_add_execute(s->out);
    proto_add_parse(s->out, "", query, NULL, 0);
    proto_add_bind_text(s->out, param);
    proto_add_execute(s->out);
    proto_add_sync(s->out);
    for (const char *t = steps; *t != '\0'; t++) {
        if (!replyq_push_simple(&s->rq, *t, REPLYQ_DROP)) {
            server_close(s, "out of memory");
            return;
        }
    }
    begin_timed_phase(s, PHASE_LOOKUP);
}

void server_client_gone(struct server *s, bool quit)
{
    assert(s->client == NULL);
    s->throttled = false;
    io_set_reading(&s->io, true);
    if (s->phase != PHASE_NONE) {
        /* pgbun's own query is running; its ReadyForQuery decides. */
        if (s->state == SV_ACTIVE) pool_set_server_state(s, SV_RESETTING);
        return;
    }
    if (!server_is_clean(s)) {
        /*
         * A running query would run on for nobody, holding its locks:
         * PostgreSQL notices the closed socket only when it next writes.
         * The cancel carries on alone once the server is closed.
         */
        bool cancel = !quit && s->expect_rfq > 0 && !s->copy_in && s->cancel == NULL;

        if (cancel) server_send_cancel(s);
        server_close(s, "client %s while the server was busy (status %c, %d replies due%s%s)", quit ? "quit" : "left",
                     s->txstatus, s->expect_rfq, s->in_copy ? ", in COPY" : "",
                     cancel && s->cancel ? "; query canceled" : "");
        return;
    }
    switch (session_after_client(s->held, s->scan_pending,
                                 s->pool->mode == POOL_SESSION || pgbun.cfg->server_reset_query_always)) {
    case SESSION_READBACK: start_readback(s); break; /* ends in phase_done, which comes back here */
    case SESSION_CLOSE: server_close(s, "its client loaded a library (LOAD), which cannot be undone"); break;
    case SESSION_DISCARD: {
        char why[128];

        server_log(s, LOGL_DEBUG, "its pinned client left (%s): DISCARD ALL",
                   session_held_names(s->held, why, sizeof(why)));
        start_reset(s, "DISCARD ALL");
        break;
    }
    case SESSION_RESET: start_reset(s, pgbun.cfg->server_reset_query); break;
    case SESSION_RELEASE: pool_release_server(s); break;
    }
}

static void phase_done(struct server *s)
{
    struct client    *c = s->client;
    enum server_phase phase = s->phase;

    assert(replyq_empty(&s->rq));
    s->phase = PHASE_NONE;
    if (phase == PHASE_CHECK) {
        evtimer_del(&s->timer);
        if (s->has_phase_error) {
            server_close(s, "server_check_query failed: %s", s->phase_error.message);
            return;
        }
        if (!server_is_clean(s)) {
            server_close(s, "server not idle after server_check_query (status %c)", s->txstatus);
            return;
        }
        s->checked = true;
        pool_release_server(s);
        return;
    }
    if (phase == PHASE_LOOKUP) {
        evtimer_del(&s->timer);
        tell_lookup(s, s->has_phase_error ? &s->phase_error : NULL);
        if (s->state == SV_CLOSING) return;
        if (!server_is_clean(s)) {
            server_close(s, "server not idle after auth_query (status %c)", s->txstatus);
            return;
        }
        pool_release_server(s);
        return;
    }
    if (phase == PHASE_READBACK) {
        if (s->has_phase_error) {
            server_close(s, "could not read back the session's settings: %s", s->phase_error.message);
            return;
        }
        if (!readback_done(s)) {
            server_close(s, "out of memory");
            return;
        }
        if (c == NULL)
            server_client_gone(s, false);
        else if (!server_release_if_done(s) && s->client == c && s->phase == PHASE_NONE)
            client_resume(c); /* pinned: it keeps the server, and may have sent more meanwhile */
        return;
    }
    if (phase == PHASE_RESET) {
        varlist_clear(&s->applied);
        if (s->cleaning && !s->has_phase_error) s->unknown_of = 0; /* DISCARD ALL reset every setting */
        s->cleaning = false;
        s->held = 0;
        pstmt_cache_clear(&s->stmts); /* prepared afresh (closed first unless it was DISCARD ALL) */
        if (s->has_phase_error) {
            server_close(s, "server_reset_query failed: %s", s->phase_error.message);
            return;
        }
        if (!server_is_clean(s)) {
            server_close(s, "server not idle after server_reset_query (status %c)", s->txstatus);
            return;
        }
        if (s->pool->connect_query != NULL) {
            /* The reset undid what connect_query set: the next client starts where the first one did. */
            own_request(s);
            s->phase = PHASE_CONNECT;
            s->expect_rfq++;
            s->has_phase_error = false;
            send_connect_query(s, false);
            return;
        }
        pool_release_server(s);
        return;
    }
    if (phase == PHASE_CONNECT) {
        if (s->has_phase_error)
            server_log(s, LOGL_WARNING, "connect_query failed: %s (SQLSTATE %s)", s->phase_error.message,
                       s->phase_error.sqlstate);
        if (!server_is_clean(s)) {
            server_close(s, "connect_query left a transaction open (status %c)", s->txstatus);
            return;
        }
        pool_release_server(s);
        return;
    }
    /* PHASE_SETTING */
    if (s->has_phase_error) {
        s->cleaning = false; /* the SETs ran as one implicit transaction: the reset is undone too */
        /* Nothing was applied: the SETs ran as one implicit transaction. */
        if (c != NULL)
            client_close(c, s->phase_error.sqlstate[0] ? s->phase_error.sqlstate : "22023", "%s",
                         s->phase_error.message);
        else
            server_client_gone(s, false);
        return;
    }
    if (!session_settings_applied(&s->applied, &s->applying)) {
        server_close(s, "out of memory");
        return;
    }
    if (s->cleaning) s->unknown_of = 0;
    s->cleaning = false;
    if (c != NULL)
        client_start(c);
    else
        server_client_gone(s, false);
}

/*
 * Sets each startup parameter of c that has no session-level value on the
 * server back to its startup value (session_restore_sql). One query of
 * pgbun's, sent when the client's request that had the RESET is answered;
 * its replies are dropped, its ParameterStatus passed on. false: the server
 * was closed.
 */
static bool server_restore_params(struct server *s, const struct client *c)
{
    char *sql;

    s->restore_due = false;
    if (!session_restore_sql(&c->params, &sql)) {
        server_close(s, "out of memory");
        return false;
    }
    if (sql == NULL) return true;
    server_log(s, LOGL_DEBUG, "restoring its client's startup parameters after a RESET");
    proto_add_query(s->out, sql);
    free(sql);
    if (!replyq_push_simple(&s->rq, 'Q', REPLYQ_DROP)) {
        server_close(s, "out of memory");
        return false;
    }
    return true;
}

/* ---- relaying ---- */

/* A ReadyForQuery answered one of the client's requests (s->txstatus is its status). */
static void count_reply(struct server *s, usec_t now)
{
    struct stats *st = &s->pool->stats;

    stats_add_query(st, now - s->request_start);
    if (s->txstatus == 'I') stats_add_xact(st, now - s->xact_start);
}

bool server_close_if_retired(struct server *s)
{
    struct client *c = s->client;

    if (!pgbun.cfg->server_fast_close || !s->close_needed || c == NULL || s->state != SV_ACTIVE ||
        !server_is_clean(s) || evbuffer_get_length(s->in) > 0 || evbuffer_get_length(c->out) > 0)
        return false;
    server_close(s, "server_fast_close: database configuration changed (RECONNECT or RELOAD)");
    return true;
}

bool server_release_if_done(struct server *s)
{
    struct client *c = s->client;

    if (c == NULL || s->pool->mode == POOL_SESSION || !server_is_clean(s) || evbuffer_get_length(s->in) > 0)
        return false;
    if (!client_flush(c)) return true;
    assert(replyq_empty(&s->rq));
    if (session_readback_due(s->scan_pending)) {
        start_readback(s); /* the client's next bytes wait (client_process) */
        return false;
    }
    if (s->held) return false; /* pinned: the server stays the client's, as in session mode */
    pool_unlink(c, s);
    pool_set_client_state(c, CL_IDLE);
    pool_release_server(s);
    /* The client may have pipelined its next request already. */
    if (c->state == CL_IDLE) client_resume(c);
    return true;
}

/*
 * Relaying a batch of replies. Each reply at the head of s->in goes through
 * the steps below in turn, until one of them has dealt with it:
 *
 *   frame_reply -> match_request -> take_reply -> pass_on
 *
 * and a reply longer than what has come streams: its head is passed on,
 * its rest follows as s->fwd_left (pass_rest). What pgbun must parse is
 * read whole; everything else moves between buffers without a copy.
 */

/* What a step did with the reply. */
enum step {
    STEP_ON,   /* nothing that ends it: the next step, and at last pass_on */
    STEP_DONE, /* dealt with (passed on, dropped or replaced): the next reply */
    STEP_WAIT, /* more of it must come first */
    STEP_STOP, /* the server or its client was closed */
};

/* The reply at the head of s->in. */
struct reply {
    struct client *c;         /* the server's client when the reply was reached, or NULL */
    bool           to_client; /* replies go to c: no phase of pgbun's own runs */
    bool           own;       /* it answers a request of pgbun's own, and is read whole */
    bool           restore;   /* ReadyForQuery after a RESET of c's startup parameters */
    uint8_t        type;
    uint32_t       len;   /* its length field: len + 1 bytes in all */
    size_t         avail; /* bytes in s->in */
    uint8_t       *msg;   /* the whole message, when it was read whole; else NULL */
};

/* Moves the next n bytes of s->in to the client's output, or drops them when they are not the client's. */
static inline void move_bytes(struct server *s, const struct reply *r, size_t n)
{
    if (r->to_client)
        evbuffer_remove_buffer(s->in, r->c->out, n);
    else
        evbuffer_drain(s->in, n);
}

/* The rest of a reply whose head was passed on. */
static void pass_rest(struct server *s, const struct reply *r)
{
    size_t n = r->avail < s->fwd_left ? r->avail : s->fwd_left;

    move_bytes(s, r, n);
    s->fwd_left -= (uint32_t)n;
}

/* Read whole what pgbun must parse, or pass on between its own replies; an error for the client streams. */
static inline bool read_whole(const struct server *s, const struct reply *r)
{
    uint8_t type = r->type;

    return type == 'Z' || type == 'S' || r->own ||
           (type == 'D' && (s->phase == PHASE_READBACK || s->phase == PHASE_LOOKUP)) ||
           (type == 'C' && r->to_client && s->drop_all_due && r->len < SERVER_MSG_MAX) ||
           (type == 'E' && (!r->to_client || (s->query_timed_out && r->len < SERVER_MSG_MAX))) ||
           (!r->to_client && r->c != NULL && (type == 'A' || type == 'N'));
}

/* Reads the reply's header, and the whole reply where pgbun must parse it. */
static enum step frame_reply(struct server *s, struct reply *r, uint32_t max)
{
    switch (proto_peek_header(s->in, max, &r->type, &r->len)) {
    case PROTO_NEED_MORE: return STEP_WAIT;
    case PROTO_BAD: server_close(s, "protocol error from server: invalid message length %u", r->len); return STEP_STOP;
    case PROTO_OK: break;
    }
    /* A reply to a request of pgbun's own, to be dropped or replaced: whole, as pgbun's own are small. */
    r->own = r->to_client && replyq_head_is_own(&s->rq) && r->len < SERVER_MSG_MAX && r->type != 'A' && r->type != 'S';
    r->msg = NULL;
    if (!read_whole(s, r)) return STEP_ON;
    if (r->avail < (size_t)r->len + 1) {
        if (r->len > SERVER_MSG_MAX) {
            server_close(s, "protocol error from server: '%c' message of %u bytes", r->type, r->len);
            return STEP_STOP;
        }
        return STEP_WAIT;
    }
    r->msg = evbuffer_pullup(s->in, (ev_ssize_t)r->len + 1);
    return STEP_ON;
}

/* Tells the queue of requests (replyq.h) of the reply: pgbun's own replies end here, or stand in for an error. */
static enum step match_request(struct server *s, struct reply *r)
{
    if (r->own && r->type == 'E' && replyq_head_replaces_error(&s->rq)) {
        struct pg_error e;

        /* pgbun's error replaces only the one it provoked; any other (an aborted transaction) is the truth. */
        proto_parse_error(r->msg + 5, r->len - 4, &e);
        if (strcmp(e.sqlstate, "26000") != 0) replyq_head_pass(&s->rq);
    } else if (r->own && r->type != 'N' && replyq_head_replaces_error(&s->rq)) {
        /* The Describe meant to fail found a statement: the client made one under pgbun's reserved name. */
        client_close(r->c, "42P05",
                     "prepared statement \"%s\" already exists (and \"%s\" was prepared on the "
                     "server under a name reserved by pgbun: names starting with pgbun_ are pgbun's)",
                     s->rq.e[s->rq.head].name, PSTMT_NO_SUCH_NAME);
        return STEP_STOP;
    }
    r->restore = r->type == 'Z' && r->to_client && replyq_head_restores(&s->rq);
    if (!replyq_reply(&s->rq, (char)r->type) && r->own) {
        evbuffer_drain(s->in, (size_t)r->len + 1); /* pgbun's own Parse or Close answered, or its error written */
        return STEP_DONE;
    }
    return STEP_ON;
}

/* ReadyForQuery: the server's transaction status, the clocks and counts of the request it answers. */
static void note_ready(struct server *s, struct client *c, char status)
{
    usec_t now = pgbun_now();

    /* A transaction (or an autocommit statement) began with the request this answers. */
    if (s->txstatus == 'I') s->xact_start = s->request_start;
    s->txstatus = status;
    s->last_ready = now;
    s->query_timed_out = false;
    if (s->expect_rfq > 0) {
        if (s->phase == PHASE_NONE) count_reply(s, now);
        /* A pipelined request is next: its clock starts now. */
        if (--s->expect_rfq > 0) s->request_start = now;
    }
    if (s->expect_rfq == 0 && s->drop_all_due) {
        s->drop_all_due = false;
        if (c != NULL) pstmt_fwd_drop_refused(c); /* answered, and no tag said it ran */
    }
    s->in_copy = false;
    s->copy_in = false;
}

static enum step ready_for_query(struct server *s, const struct reply *r)
{
    struct client *c = r->c;

    if (r->len != 5) {
        server_close(s, "protocol error from server: malformed ReadyForQuery");
        return STEP_STOP;
    }
    note_ready(s, c, (char)r->msg[5]);
    if (!r->to_client) {
        evbuffer_drain(s->in, 6);
        if (s->phase != PHASE_NONE && s->expect_rfq == 0)
            phase_done(s);
        else if (s->phase == PHASE_NONE && c == NULL && !server_is_clean(s))
            server_close(s, "unexpected ReadyForQuery from an unlinked server");
        return STEP_DONE;
    }
    if (s->pool->mode == POOL_STATEMENT && s->txstatus != 'I') {
        /* The error takes the place of ReadyForQuery, so the client reads it at once. */
        evbuffer_drain(s->in, 6);
        client_close(c, "25P01", "transaction blocks not allowed in statement pooling mode");
        return STEP_STOP;
    }
    evbuffer_remove_buffer(s->in, c->out, 6);
    /* A RESET of startup parameters answered (its COPY, if any, done): set them again. */
    if (r->restore && (!server_restore_params(s, c) || !server_flush(s))) return STEP_STOP;
    /* Released at the end of this batch, once everything before it is relayed. */
    return STEP_DONE;
}

static enum step parameter_status(struct server *s, const struct reply *r)
{
    struct client *c = r->c;
    const char    *n, *v;

    if (!record_param(s, r->msg + 5, r->len - 4, &n, &v)) {
        server_close(s, "protocol error from server: malformed ParameterStatus");
        return STEP_STOP;
    }
    /*
     * A change pgbun did not make: what it applied no longer holds.
     * One it made (the restore of a startup parameter after RESET,
     * its own query in PHASE_NONE) holds for this client.
     */
    if (s->phase == PHASE_NONE) {
        if (!replyq_head_is_own(&s->rq))
            varlist_del(&s->applied, n);
        else if (!varlist_set(&s->applied, n, v)) {
            server_close(s, "out of memory");
            return STEP_STOP;
        }
        if (c != NULL && !s->pool->track_session && !session_follow_reported(&c->params, &c->sets, n, v)) {
            server_close(s, "out of memory");
            return STEP_STOP;
        }
    }
    if (c != NULL && s->phase != PHASE_RESET)
        evbuffer_remove_buffer(s->in, c->out, (size_t)r->len + 1);
    else
        evbuffer_drain(s->in, (size_t)r->len + 1);
    return STEP_DONE;
}

static enum step error_response(struct server *s, const struct reply *r)
{
    struct pg_error e;

    s->in_copy = false;
    s->copy_in = false;
    if (r->to_client && r->msg != NULL) {
        /* pgbun's own cancel: say why, not "due to user request". */
        proto_parse_error(r->msg + 5, r->len - 4, &e);
        if (strcmp(e.sqlstate, "57014") == 0) {
            evbuffer_drain(s->in, (size_t)r->len + 1);
            proto_add_error(r->c->out, "ERROR", "57014", "query_timeout: query canceled after %g s",
                            (double)s->pool->query_timeout / USEC_PER_SEC);
            s->query_timed_out = false;
            return STEP_DONE;
        }
    }
    if (r->to_client) return STEP_ON;
    /* The error of pgbun's own query, reported when its phase ends. */
    proto_parse_error(r->msg + 5, r->len - 4, &e);
    if (s->phase != PHASE_NONE && !s->has_phase_error) {
        s->phase_error = e;
        s->has_phase_error = true;
    }
    evbuffer_drain(s->in, (size_t)r->len + 1);
    if (s->phase == PHASE_NONE) {
        server_close(s, "server error while unlinked: %s: %s", e.severity, e.message);
        return STEP_STOP;
    }
    return STEP_DONE;
}

/*
 * CopyInResponse: PostgreSQL ignores Sync and Flush until CopyDone or
 * CopyFail, including a Sync that libpq sent right behind the COPY's
 * Execute. Those will get no ReadyForQuery.
 */
static void copy_in_started(struct server *s)
{
    s->in_copy = true;
    s->copy_in = true;
    replyq_copy_in(&s->rq, s->syncs_since_execute);
    s->expect_rfq -= s->syncs_since_execute;
    if (s->expect_rfq < 0) s->expect_rfq = 0;
    s->syncs_since_execute = 0;
}

/* What the reply means for the server: its state, pgbun's own phase, the reply itself where pgbun answers instead. */
static enum step take_reply(struct server *s, const struct reply *r)
{
    switch (r->type) {
    case 'Z': return ready_for_query(s, r);
    case 'S': return parameter_status(s, r);
    case 'E': return error_response(s, r);
    case 'G': copy_in_started(s); return STEP_ON;
    case 'H':
    case 'W': s->in_copy = true; return STEP_ON;
    case 'C':
        if (r->msg != NULL && s->drop_all_due) pstmt_fwd_command_done(r->c, (const char *)r->msg + 5, r->len - 4);
        if (s->phase == PHASE_LOOKUP) s->lookup_stmt++;
        __attribute__((fallthrough));
    case 'c': s->in_copy = false; return STEP_ON;
    case 'N':
    case 'A':
        /*
         * A notification (or notice) that came while pgbun's own query runs
         * on the client's server (the read-back after LISTEN, say) is still
         * the client's.
         */
        if (r->to_client || r->c == NULL) return STEP_ON;
        evbuffer_remove_buffer(s->in, r->c->out, (size_t)r->len + 1);
        return STEP_DONE;
    case 'D':
        if (s->phase == PHASE_READBACK) {
            if (!session_read_row(&s->applying, &s->held_read, r->msg + 5, r->len - 4)) {
                server_close(s, "protocol error from server: malformed row of settings");
                return STEP_STOP;
            }
            return STEP_ON;
        }
        if (s->phase == PHASE_LOOKUP) {
            if (s->lookup_stmt == 1 && s->lookup != NULL) s->lookup->row(s->lookup_arg, r->msg + 5, r->len - 4);
            return STEP_ON;
        }
        __attribute__((fallthrough));
    default:
        if (!r->to_client && s->phase == PHASE_NONE) {
            server_close(s, "unexpected message '%c' from an unlinked server",
                         r->type >= 32 && r->type < 127 ? r->type : '?');
            return STEP_STOP;
        }
        return STEP_ON;
    }
}

/* Passes the reply on to the client, or drops it: what of it has come, the rest as s->fwd_left. */
static void pass_on(struct server *s, const struct reply *r)
{
    size_t whole = (size_t)r->len + 1;

    if (r->avail >= whole) {
        move_bytes(s, r, whole);
    } else {
        move_bytes(s, r, r->avail);
        s->fwd_left = (uint32_t)(whole - r->avail);
    }
}

/* The batch is relayed: release the server if it is done, else flush to the client, and pause while it cannot keep up.
 */
static void end_batch(struct server *s)
{
    struct client *c = s->client;

    if (s->state == SV_CLOSING || c == NULL) return;
    if (s->fwd_left == 0) replyq_answer_due(&s->rq);
    if (server_release_if_done(s)) return;
    if (!client_flush(c)) return;
    if (server_close_if_retired(s)) return;
    if (evbuffer_get_length(c->out) > PGBUN_OUT_LIMIT) {
        s->throttled = true;
        io_set_reading(&s->io, false);
    }
}

static void relay_input(struct server *s)
{
    uint32_t max = (uint32_t)pgbun.cfg->max_packet_size;

    while (evbuffer_get_length(s->in) > 0 && s->state != SV_CLOSING) {
        struct reply r;
        enum step    step;

        r.c = s->client;
        r.avail = evbuffer_get_length(s->in);
        r.to_client = r.c != NULL && s->phase == PHASE_NONE;
        if (s->fwd_left > 0) {
            pass_rest(s, &r);
            continue;
        }
        replyq_answer_due(&s->rq); /* replies pgbun owes before this message */
        step = frame_reply(s, &r, max);
        if (step == STEP_ON) step = match_request(s, &r);
        if (step == STEP_ON) step = take_reply(s, &r);
        if (step == STEP_ON) pass_on(s, &r);
        if (step == STEP_WAIT) break;
        if (step == STEP_STOP) return;
    }
    end_batch(s);
}

/*
 * Every way into a server's input comes here, and none recurses: a call
 * from inside relay_input (a released server resumed by the pool, say)
 * asks the outer call for one more pass, made in a loop.
 */
static void relay(struct server *s)
{
    if (s->relaying) {
        s->relay_again = true;
        return;
    }
    s->relaying = true;
    do {
        s->relay_again = false;
        relay_input(s);
    } while (s->relay_again && s->state != SV_CLOSING && evbuffer_get_length(s->in) > 0);
    s->relaying = false;
    /* Released meanwhile: another worker may be waiting for it (last: it may leave this thread). */
    if (worker_count() > 1) pool_offer_server(s);
}

void server_resume(struct server *s)
{
    if (s->state == SV_CLOSING) return;
    s->throttled = false;
    io_set_reading(&s->io, true);
    if (evbuffer_get_length(s->in) > 0) relay(s);
}

static void server_read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct server *s = arg;
    int            n = io_read(&s->io, s->in, PGBUN_READ_MAX);

    if (n == IO_AGAIN) return;
    if (n == 0 || n == IO_ERROR) {
        const char *why = n == 0 ? "server closed the connection" : io_strerror(errno);

        if (s->state == SV_LOGIN && n == IO_ERROR && errno == EPROTO)
            server_fail(s, "08006", "server login failed: %s:%d: %s", s->host, s->port, why);
        else if (s->state == SV_LOGIN)
            server_fail(s, "08006", "server login failed: %s", why);
        else
            server_close(s, "%s", why);
        return;
    }
    if (s->state == SV_LOGIN && s->tls_asked) {
        tls_answer(s);
        if (s->state != SV_LOGIN) return; /* refused: closed */
    }
    if (s->state == SV_LOGIN)
        login_step(s);
    else
        relay(s);
}

static void server_write_cb(evutil_socket_t fd, short what, void *arg)
{
    struct server *s = arg;

    if (s->state == SV_CONNECTING) {
        int       err = 0;
        socklen_t len = sizeof(err);

        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
        io_stop_writing(&s->io);
        if (err != 0) {
            connect_failed(s, err);
            return;
        }
        begin_login(s);
        return;
    }
    if (!server_flush(s)) return;
    if (s->client != NULL && s->client->throttled && evbuffer_get_length(s->out) <= PGBUN_OUT_LIMIT)
        client_resume(s->client);
}

/* ---- cancel requests ---- */

/* The cancel has landed: the server may be clean now. */
static void cancel_landed(void *arg)
{
    struct server *s = arg;

    s->cancel = NULL;
    (void)server_release_if_done(s);
}

void server_send_cancel(struct server *s)
{
    if (s->cancel != NULL) return; /* one is already on its way */
    /* Until it lands the server stays with this client: a late cancel must not hit the next one. */
    s->cancel = cancel_new(s->pool->w, s->io.fd, s->cancel_key, cancel_landed, s);
    if (s->cancel != NULL) cancel_start(s->cancel);
}

/* ---- moving between workers ---- */

void server_detach(struct server *s)
{
    assert(s->client == NULL && s->dns == NULL && s->cancel == NULL);
    io_detach(&s->io);
    evtimer_del(&s->timer);
}

void server_attach(struct server *s, struct pool *p)
{
    s->pool = p;
    s->state_since = pgbun_now();
    io_attach(&s->io, p->w->base);
    evtimer_assign(&s->timer, p->w->base, timeout_cb, s);
    s->throttled = false;
    io_set_reading(&s->io, true); /* idle: a close or a notice from the server is seen */
}

void server_discard(struct server *s)
{
    io_detach(&s->io);
    evtimer_del(&s->timer);
    io_close(&s->io);
    s->state = SV_CLOSING;
    server_free(s);
}
