/*
 * client.c - the client connection: login, then framing and forwarding.
 *
 *   accept -> LOGIN: [SSLRequest -> 'S' + TLS handshake, or 'N'] StartupMessage
 *          -> auth exchange
 *          -> WELCOME (first server of the pool logs in) -> IDLE
 *   IDLE   -> first message -> WAITING -> ACTIVE: messages framed from
 *             c->in and moved (not copied) to s->out; ReadyForQuery on
 *             the server side decides when the link ends (server.c).
 *
 * A message is moved whole when it is here whole; a large one (COPY data,
 * a big Bind) streams by byte count with fwd_left, so no message is ever
 * buffered in full and no byte is copied twice.
 */
#define LOG_EVENT LOGE_CLIENT /* the event kind of this file's log lines (log.h) */
#include "client.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <event2/buffer.h>
#include <openssl/rand.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "admin.h"
#include "creds.h"
#include "hba.h"
#include "log.h"
#include "pgbun.h"
#include "worker.h"
#include "proto.h"
#include "scan.h"
#include "scram.h"
#include "server.h"
#include "pstmt_fwd.h"
#include "tls.h"

static atomic_uint_fast64_t next_client_id;

static void client_read_cb(evutil_socket_t fd, short what, void *arg);
static void client_write_cb(evutil_socket_t fd, short what, void *arg);
static void client_process(struct client *c);

/*
 * Cryptographic random bytes for cancel keys, drawn from RAND_bytes 4 KB at a
 * time: one call per login cost more than the rest of a trust login.
 */
static bool random_bytes(uint8_t *out, size_t n)
{
    static _Thread_local uint8_t pool[4096];
    static _Thread_local size_t  left;

    assert(n <= sizeof(pool));
    if (left < n) {
        if (RAND_bytes(pool, (int)sizeof(pool)) != 1) return false;
        left = sizeof(pool);
    }
    memcpy(out, pool + sizeof(pool) - left, n);
    memset(pool + sizeof(pool) - left, 0, n); /* a key handed out is not kept */
    left -= n;
    return true;
}

static void login_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct client *c = arg;

    if (c->state == CL_WELCOME)
        pool_wait_timed_out(c, "client_login_timeout"); /* authenticated, waiting for a first server */
    else if (c->step == LOGIN_LOOKUP && authq_trouble(&c->login->waiter) != NULL)
        client_close(c, "08006", "client_login_timeout: auth_query could not run: %s",
                     authq_trouble(&c->login->waiter));
    else if (c->step == LOGIN_LOOKUP)
        client_close(c, "08P01", "client_login_timeout: login not completed in time (auth_query did not answer)");
    else
        client_close(c, "08P01", "client_login_timeout: login not completed in time");
}

void client_accept(int fd, const struct sockaddr *sa, int salen, bool is_unix)
{
    struct client             *c = calloc(1, sizeof(*c));
    const struct pgbun_config *cfg = pgbun.cfg;

    if (c == NULL || (c->in = evbuffer_new()) == NULL || (c->out = evbuffer_new()) == NULL ||
        (c->login = calloc(1, sizeof(*c->login))) == NULL) {
        log_error("out of memory accepting a client");
        if (c) {
            if (c->in) evbuffer_free(c->in);
            free(c);
        }
        close(fd);
        return;
    }
    c->id = atomic_fetch_add(&next_client_id, 1) + 1;
    c->w = worker_self;
    c->is_unix = is_unix;
    if (is_unix) {
        snprintf(c->addr, sizeof(c->addr), "unix");
    } else if (sa != NULL && sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;

        inet_ntop(AF_INET, &in->sin_addr, c->addr, sizeof(c->addr));
        c->port = ntohs(in->sin_port);
    } else if (sa != NULL && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;

        inet_ntop(AF_INET6, &in6->sin6_addr, c->addr, sizeof(c->addr));
        c->port = ntohs(in6->sin6_port);
    }
    (void)salen;
    if (!is_unix) io_tune_tcp(fd, &pgbun.cfg->tcp);
    io_init(&c->io, c->w->base, fd, client_read_cb, client_write_cb, c);
    c->login->client = c;
    evtimer_assign(&c->login->timer, c->w->base, login_timeout_cb, c);
    c->connect_time = c->request_time = pgbun_now();
    atomic_fetch_add(&pgbun.client_count, 1);
    pool_register_client(c);
    if (cfg->client_login_timeout > 0) {
        struct timeval tv = {(time_t)(cfg->client_login_timeout / USEC_PER_SEC),
                             (suseconds_t)(cfg->client_login_timeout % USEC_PER_SEC)};

        evtimer_add(&c->login->timer, &tv);
    }
    io_set_reading(&c->io, true);
    client_log(c, LOGL_DEBUG, "accepted");
}

void client_log_line(const struct client *c, int level, const char *fmt, ...)
{
    struct log_who who = {'C', (unsigned long long)c->id, c->dbname, c->user, c->addr, c->port};
    va_list        ap;

    va_start(ap, fmt);
    log_vline(level, LOGE_CLIENT, &who, NULL, 0, fmt, ap);
    va_end(ap);
}

void client_close(struct client *c, const char *sqlstate, const char *fmt, ...)
{
    char           reason[512];
    va_list        ap;
    struct server *s = c->server;

    if (c->state == CL_CLOSING) return;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);

    if (sqlstate != NULL) {
        client_log(c, LOGL_INFO, "closing: %s (%s)", reason, sqlstate);
        /* Not in the middle of a message the server is still relaying to it. */
        if (c->io.fd >= 0 && (s == NULL || s->fwd_left == 0)) {
            proto_add_error(c->out, "FATAL", sqlstate, "%s", reason);
            (void)io_flush(&c->io, c->out);
        }
    } else if (pgbun.cfg->log_disconnections && c->step == LOGIN_DONE) {
        client_log(c, LOGL_INFO, "closing: %s", reason);
    } else {
        client_log(c, LOGL_DEBUG, "closing: %s", reason);
    }
    if (s != NULL) {
        bool partial = c->fwd_left > 0;

        pool_unlink(c, s);
        if (partial)
            server_close(s, "client left in the middle of a message");
        else
            server_client_gone(s, c->quit);
    }
    if (c->login != NULL) {
        evtimer_del(&c->login->timer);
        authq_cancel(&c->login->waiter); /* its lookup runs on for others, and tells it nothing more */
    }
    io_close(&c->io);
    atomic_fetch_sub(&pgbun.client_count, 1);
    pool_set_client_state(c, CL_CLOSING);
}

void client_notice(struct client *c, const char *fmt, ...)
{
    va_list ap;

    assert(c->server == NULL || c->server->fwd_left == 0);
    va_start(ap, fmt);
    proto_add_vnotice(c->out, fmt, ap);
    va_end(ap);
    (void)client_flush(c);
}

/* Drops what only a login needed (not from the login timer's own callback: client_close only stops it). */
static void login_free(struct client *c)
{
    struct client_login *l = c->login;

    if (l == NULL) return;
    evtimer_del(&l->timer);
    authq_cancel(&l->waiter);
    if (l->has_secret) secret_clear(&l->secret);
    if (l->scram) {
        scram_server_free(l->scram);
        free(l->scram);
    }
    free(l);
    c->login = NULL;
}

void client_free(struct client *c)
{
    assert(c->state == CL_CLOSING);
    if (c->in) evbuffer_free(c->in);
    if (c->out) evbuffer_free(c->out);
    varlist_clear(&c->params);
    if (c->sets) {
        varlist_clear(c->sets);
        free(c->sets);
    }
    pstmt_fwd_client_free(c);
    admin_client_free(c);
    free(c->user);
    free(c->dbname);
    login_free(c);
    free(c);
}

bool client_flush(struct client *c)
{
    size_t before = evbuffer_get_length(c->out);

    if (io_flush(&c->io, c->out) == IO_ERROR) {
        if (errno == EPROTO) client_log(c, LOGL_INFO, "TLS failed: %s", io_strerror(errno));
        client_close(c, NULL, "write failed: %s", io_strerror(errno));
        return false;
    }
    if (c->pool != NULL) c->pool->stats.bytes_out += before - evbuffer_get_length(c->out);
    return true;
}

/* ---- login ---- */

static void fail_password(struct client *c)
{
    /* The password may have changed in PostgreSQL since auth_query was asked: the next login asks again. */
    if (c->login->from_query) authq_failed_login(c->dbname, c->user, c->console_db);
    client_close(c, "28P01", "password authentication failed for user \"%s\"", c->user);
}

static void login_ok(struct client *c)
{
    const char  *err = NULL;
    struct pool *p;

    /* Only now, authenticated, may the client learn what databases there are. */
    if (!c->console_db && pool_is_disabled(c->dbname)) {
        client_close(c, "57P03", "database \"%s\" is disabled (DISABLE on the admin console)", c->dbname);
        return;
    }

    if (c->login->has_secret) {
        secret_clear(&c->login->secret);
        c->login->has_secret = false;
    }
    if (c->login->scram) {
        scram_server_free(c->login->scram);
        free(c->login->scram);
        c->login->scram = NULL;
    }
    if (c->console_db) {
        if ((p = admin_login(c)) == NULL) return;
    } else if ((p = pool_get(c->dbname, c->user, &err)) == NULL) {
        client_close(c, "3D000", "no such database: \"%s\" (%s)", c->dbname, err);
        return;
    }
    if (!pool_admit_client(p, c)) return;
    pool_adopt_client(p, c);
    p->stats.login_count++;
    c->step = LOGIN_DONE;
    do {
        if (!random_bytes(c->cancel_key, sizeof(c->cancel_key))) {
            client_close(c, "53000", "could not generate a cancel key");
            return;
        }
        /* With several workers the key's low six bits say whose client it is, so a cancel goes straight there. */
        if (worker_count() > 1) c->cancel_key[0] = (uint8_t)((c->cancel_key[0] & ~0x3f) | c->w->id);
    } while (pool_cancel_key_taken(c->cancel_key));
    if (!pool_index_cancel_key(c)) {
        client_close(c, "53200", "out of memory");
        return;
    }
    if (p->welcome_ready) {
        client_welcome(c);
        return;
    }
    pool_set_client_state(c, CL_WELCOME);
    pool_dispatch(p);
}

static void add_notice(struct evbuffer *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void add_notice(struct evbuffer *out, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    proto_add_vnotice(out, fmt, ap);
    va_end(ap);
}

void client_welcome(struct client *c)
{
    struct pool *p = c->pool;
    const char  *notify = pgbun.cfg->login_notify_message;

    assert(p->welcome_ready);
    proto_add_auth(c->out, AUTH_REQ_OK, NULL, 0);
    for (size_t i = 0; i < p->welcome.count; i++) {
        const struct var *v = &p->welcome.vars[i];
        const char       *mine = varlist_get(&c->params, v->name);

        proto_add_param_status(c->out, v->name, mine ? mine : v->value);
    }
    proto_add_backend_key(c->out, c->cancel_key);
    /* Before ReadyForQuery, where PostgreSQL's own login notices go: libpq shows it as the session opens. */
    if (notify != NULL && notify[0] != '\0') add_notice(c->out, "%s", notify);
    proto_add_ready(c->out, 'I');
    login_free(c);
    pool_set_client_state(c, CL_IDLE);
    if (pgbun.cfg->log_connections) {
        char tls[128];

        tls_describe(&c->io, tls, sizeof(tls));
        client_log(c, LOGL_INFO, "login succeeded%s%s%s", tls[0] ? " (tls=" : "", tls, tls[0] ? ")" : "");
    }
    if (!client_flush(c)) return;
    /* The handshake's buffers: many clients log in and then wait, and an idle TLS client need not hold 34 KB. */
    if (evbuffer_get_length(c->out) == 0) io_trim(&c->io);
    io_set_reading(&c->io, true);
    if (evbuffer_get_length(c->in) > 0) client_process(c);
}

/*
 * trust: a user not in auth_file, let through to PostgreSQL under its own
 * name (auth_trust_any_user), unless PostgreSQL would never see that name
 * to judge it: the admin console, a database that logs in as a forced user.
 */
static bool trust_unlisted(const struct client *c)
{
    const struct db_config *db = config_find_db(pgbun.cfg, c->dbname);

    return pgbun.cfg->auth_trust_any_user && !c->console_db && (db == NULL || db->user == NULL);
}

/* The OS user at the other end of a unix socket (SO_PEERCRED). */
static bool peer_os_user(const struct client *c, char *out, size_t n)
{
    struct ucred  cred;
    socklen_t     len = sizeof(cred);
    struct passwd pw, *found = NULL;
    char          buf[4096];

    if (!c->is_unix || getsockopt(c->io.fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return false;
    if (getpwuid_r(cred.uid, &pw, buf, sizeof(buf), &found) != 0 || found == NULL) return false;
    snprintf(out, n, "%s", found->pw_name);
    return true;
}

/*
 * auth_type, or with auth_type = hba the method of the first rule of
 * auth_hba_file that matches the connection. false: refused (closed).
 */
static bool choose_method(struct client *c)
{
    const char     *where = c->io.ssl != NULL ? "SSL on" : "SSL off";
    struct hba_conn conn = {c->is_unix, c->io.ssl != NULL, c->is_unix ? NULL : c->addr,
                            c->dbname,  c->user,           c->console_db};
    int             line;

    if (pgbun.cfg->auth_type != AUTH_HBA) {
        c->login->method = pgbun.cfg->auth_type;
        return true;
    }
    c->login->method = hba_match(pgbun.hba, &conn, &line);
    if (c->login->method != AUTH_REJECT) {
        client_log(c, LOGL_DEBUG, "auth_hba_file line %d: %s", line, config_auth_type_name(c->login->method));
        return true;
    }
    if (line > 0)
        client_close(c, "28000", "auth_hba_file rejects connection for host \"%s\", user \"%s\", database \"%s\", %s",
                     c->is_unix ? "[local]" : c->addr, c->user, c->dbname, where);
    else
        client_close(c, "28000", "no auth_hba_file entry for host \"%s\", user \"%s\", database \"%s\", %s",
                     c->is_unix ? "[local]" : c->addr, c->user, c->dbname, where);
    return false;
}

/*
 * As PostgreSQL's peer and cert methods: the OS user at the other end of
 * the unix socket, or the common name of the verified client certificate,
 * is the user. false: closed.
 */
static bool identity_is_user(struct client *c)
{
    bool        peer = c->login->method == AUTH_PEER;
    const char *word = peer ? "Peer" : "certificate";
    const char *why = NULL;
    char        name[256];

    if (peer && !c->is_unix)
        why = "not a unix-socket connection";
    else if (peer && !peer_os_user(c, name, sizeof(name)))
        why = "the client's OS user is unknown";
    else if (!peer && c->io.ssl == NULL)
        why = "the connection is not TLS";
    else if (!peer && !tls_peer_cn(&c->io, name, sizeof(name)))
        why = "no verified client certificate with a common name";
    if (why != NULL) {
        client_close(c, "28000", "%s authentication failed for user \"%s\": %s", word, c->user, why);
        return false;
    }
    if (strcmp(name, c->user) != 0) {
        client_log(c, LOGL_INFO, "%s \"%s\" is not the user name", peer ? "OS user" : "certificate common name", name);
        client_close(c, "28000", "%s authentication failed for user \"%s\"", word, c->user);
        return false;
    }
    return true;
}

/*
 * Asks the client for its password (or lets it in), knowing its secret:
 * `secret` (auth_file's or auth_query's text; NULL: none) of a user pgbun
 * knows (`known`) or not.
 */
static void auth_with(struct client *c, const char *secret, bool known)
{
    enum auth_type type = c->login->method;

    /* peer and cert prove who the client is; then, as with trust, the user must be one pgbun knows. */
    if ((type == AUTH_PEER || type == AUTH_CERT) && !identity_is_user(c)) return;
    if (type == AUTH_PEER || type == AUTH_CERT) type = AUTH_TRUST;
    if (type == AUTH_TRUST) {
        /* No password, but a user pgbun knows, as PgBouncer documents it. */
        if (!known && !trust_unlisted(c)) {
            if (c->login->method == AUTH_CERT || c->login->method == AUTH_PEER)
                client_close(c, "28000", "%s authentication failed for user \"%s\": not in %s",
                             c->login->method == AUTH_CERT ? "certificate" : "Peer", c->user,
                             c->login->from_query ? "PostgreSQL (auth_query)" : "auth_file");
            else
                client_close(c, "28000", "\"trust\" authentication failed for user \"%s\"", c->user);
            return;
        }
        login_ok(c);
        return;
    }
    if (secret != NULL) {
        if (!secret_parse(&c->login->secret, c->user, secret)) {
            client_close(c, "28000", "invalid secret for user \"%s\" in %s", c->user,
                         c->login->from_query ? "what auth_query returned" : "auth_file");
            return;
        }
        c->login->has_secret = true;
    }
    /* md5 with a SCRAM secret can only be checked by SCRAM: upgrade, as PostgreSQL does. */
    if (type == AUTH_MD5 && c->login->has_secret && c->login->secret.kind == SECRET_SCRAM) type = AUTH_SCRAM;

    switch (type) {
    case AUTH_PLAIN:
        proto_add_auth(c->out, AUTH_REQ_CLEARTEXT, NULL, 0);
        c->step = LOGIN_PASSWORD;
        break;
    case AUTH_MD5:
        if (RAND_bytes(c->login->md5_salt, 4) != 1) {
            client_close(c, "53000", "could not generate a salt");
            return;
        }
        proto_add_auth(c->out, AUTH_REQ_MD5, c->login->md5_salt, 4);
        c->step = LOGIN_PASSWORD;
        break;
    case AUTH_SCRAM: {
        static const char mechs[] = "SCRAM-SHA-256\0";
        static const char plus[] = "SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0";

        /* Over TLS, binding to the connection is offered first, as PostgreSQL does. */
        if (c->io.ssl != NULL)
            proto_add_auth(c->out, AUTH_REQ_SASL, plus, sizeof(plus));
        else
            proto_add_auth(c->out, AUTH_REQ_SASL, mechs, sizeof(mechs));
        c->step = LOGIN_SASL_INITIAL;
        break;
    }
    case AUTH_TRUST:
    case AUTH_CERT:
    case AUTH_PEER:
    case AUTH_HBA:
    case AUTH_REJECT: break; /* answered above, or never a connection's method */
    }
    (void)client_flush(c);
}

/* What auth_query said of the user. */
static void looked_up(struct client *c, const struct authq_answer *a)
{
    if (a->status == AUTHQ_FAILED) {
        client_close(c, a->sqlstate,
                     "auth_query failed: the password of user \"%s\" could not be looked up (pgbun's log says why)",
                     c->user);
        return;
    }
    c->login->from_query = true;
    auth_with(c, a->status == AUTHQ_FOUND ? a->secret : NULL, a->status == AUTHQ_FOUND);
}

static void lookup_answered(struct authq_waiter *w, const struct authq_answer *a)
{
    struct client *c = ((struct client_login *)((char *)w - offsetof(struct client_login, waiter)))->client;

    looked_up(c, a);
    if (c->state == CL_CLOSING) return;
    io_set_reading(&c->io, true);
    if (evbuffer_get_length(c->in) > 0) client_process(c);
}

/* The user's secret: auth_file's, or auth_query's, which may take a query in PostgreSQL first. */
static void send_auth_request(struct client *c)
{
    const struct secret *sec = pgbun.auth ? auth_file_find(pgbun.auth, c->user) : NULL;
    struct authq_answer  a;
    char                *hold = NULL;

    if (!choose_method(c)) return;
    if (sec != NULL) {
        auth_with(c, sec->secret, true);
        return;
    }
    c->step = LOGIN_LOOKUP; /* before asking: an answer may come at once, through lookup_answered */
    c->login->waiter.done = lookup_answered;
    switch (authq_find(c->dbname, c->user, c->console_db, &c->login->waiter, &a, &hold)) {
    case AUTHQ_OFF: auth_with(c, NULL, false); break;
    case AUTHQ_ANSWER: looked_up(c, &a); break;
    case AUTHQ_WAITING: break;
    }
    authq_answer_free(hold);
}

/* Startup parameters the pooler consumes; everything else is a setting for the server. */
static bool is_protocol_param(const char *name)
{
    return strcmp(name, "user") == 0 || strcmp(name, "database") == 0 || strcmp(name, "options") == 0 ||
           strcmp(name, "replication") == 0;
}

static bool truthy(const char *v)
{
    return strcasecmp(v, "true") == 0 || strcasecmp(v, "on") == 0 || strcasecmp(v, "yes") == 0 || strcmp(v, "1") == 0 ||
           strcasecmp(v, "database") == 0;
}

/*
 * application_name_add_host: the login's application_name (or "app") gets
 * " - address:port" appended, PgBouncer's format, so that pg_stat_activity
 * says where a client came from. Only at login: a later SET is the client's.
 * It is then the client's own startup parameter, set on each server it uses.
 * PostgreSQL keeps 63 bytes of it, as with PgBouncer; a longer name is cut here
 * only to bound the buffer.
 */
#define APP_NAME_MAX 256

static bool add_host_to_app_name(struct client *c)
{
    const char *app = varlist_get(&c->params, "application_name");
    char        buf[APP_NAME_MAX + sizeof(c->addr) + 16];

    if (app == NULL || app[0] == '\0') app = "app";
    if (c->is_unix)
        snprintf(buf, sizeof(buf), "%.*s - unix", APP_NAME_MAX, app);
    else if (strchr(c->addr, ':') != NULL)
        snprintf(buf, sizeof(buf), "%.*s - [%s]:%d", APP_NAME_MAX, app, c->addr, c->port);
    else
        snprintf(buf, sizeof(buf), "%.*s - %s:%d", APP_NAME_MAX, app, c->addr, c->port);
    return varlist_set(&c->params, "application_name", buf);
}

static void handle_startup_params(struct client *c, struct startup_packet *sp)
{
    const struct pgbun_config *cfg = pgbun.cfg;
    const char                *user = varlist_get(&sp->params, "user");
    const char                *db = varlist_get(&sp->params, "database");
    const char                *options = varlist_get(&sp->params, "options");
    const char                *repl = varlist_get(&sp->params, "replication");
    const char                *err = NULL;

    if (user == NULL || user[0] == '\0') {
        client_close(c, "28000", "no PostgreSQL user name specified in startup packet");
        return;
    }
    if (db == NULL || db[0] == '\0') db = user;
    if ((c->user = strdup(user)) == NULL || (c->dbname = strdup(db)) == NULL) {
        client_close(c, "53200", "out of memory");
        return;
    }
    if (c->io.ssl == NULL && !c->is_unix && pgbun.tls->client_mode >= TLS_REQUIRE) {
        client_close(c, "28000", "TLS is required: client_tls_sslmode = %s refuses plain-text logins over TCP",
                     cfg->client_tls_sslmode);
        return;
    }
    if (repl != NULL && truthy(repl)) {
        client_close(c, "08P01", "replication connections are not supported by pgbun");
        return;
    }
    /* As in PostgreSQL, explicit parameters win over "options". */
    if (options != NULL && !proto_parse_options(options, &c->params, &err)) {
        client_close(c, "08P01", "%s", err);
        return;
    }
    for (size_t i = 0; i < sp->params.count; i++) {
        const struct var *v = &sp->params.vars[i];

        if (is_protocol_param(v->name)) continue;
        if (!varlist_set(&c->params, v->name, v->value)) {
            client_close(c, "53200", "out of memory");
            return;
        }
    }
    for (size_t i = 0; i < c->params.count;) {
        if (config_list_has(cfg->ignore_startup_parameters, c->params.vars[i].name))
            varlist_del(&c->params, c->params.vars[i].name);
        else
            i++;
    }
    if (cfg->application_name_add_host && !add_host_to_app_name(c)) {
        client_close(c, "53200", "out of memory");
        return;
    }
    if (atomic_load(&pgbun.client_count) > cfg->max_client_conn) {
        client_close(c, "53300", "no more connections allowed (max_client_conn = %d)", cfg->max_client_conn);
        return;
    }
    /* Stopping: the console stays reachable, nothing else is let in (PostgreSQL's code for a server shutting down). */
    if (pgbun.shutting_down && !admin_is_console(c->dbname)) {
        client_close(c, "57P03", "pgbun is shutting down: only the admin console takes new connections");
        return;
    }
    if (admin_is_console(c->dbname)) {
        c->console_db = true;
        /* pgbun's own OS user on the unix socket needs no password, like PostgreSQL's peer auth. */
        if (admin_peer_is_self(c)) {
            c->peer_admin = true;
            login_ok(c);
            return;
        }
        send_auth_request(c);
        return;
    }
    /* Whether the database exists, or is disabled, is said only after authentication (login_ok). */
    send_auth_request(c);
}

void client_cancel_local(const uint8_t key[8])
{
    struct client *target = pool_find_cancel_key(key);

    if (target != NULL && target->server != NULL) {
        client_log(target, LOGL_INFO, "cancel request forwarded to S-%llu", (unsigned long long)target->server->id);
        server_send_cancel(target->server);
    } else {
        log_ev(LOGL_DEBUG, LOGE_CANCEL, "cancel request for an unknown or idle client ignored");
    }
}

static void handle_cancel(struct client *c, const uint8_t *key)
{
    int owner = key[0] & 0x3f;

    if (worker_count() > 1 && owner != c->w->id && owner < worker_count()) {
        if (!worker_send_cancel(worker_get(owner), key))
            log_ev(LOGL_WARNING, LOGE_CANCEL, "cancel request dropped: out of memory");
    } else {
        client_cancel_local(key);
    }
    client_close(c, NULL, "cancel request handled");
}

/* 'S' to an SSLRequest, in plain text, then the handshake: io_read and io_flush drive it from here on. */
static void start_tls(struct client *c)
{
    evbuffer_add(c->out, "S", 1);
    if (!client_flush(c)) return;
    if (evbuffer_get_length(c->out) > 0) {
        client_close(c, NULL, "could not send the answer to its SSL request");
        return;
    }
    if (!tls_accept(&c->io, pgbun.tls)) client_close(c, "53200", "out of memory starting TLS");
}

/*
 * A PostgreSQL 17 client may open with a TLS ClientHello (direct TLS, no
 * SSLRequest): looked for in the first bytes, left on the socket for
 * OpenSSL to read. Only when pgbun offers TLS, and once.
 */
static bool start_direct_tls(struct client *c)
{
    unsigned char first;
    ssize_t       n;

    c->tls_checked = true;
    if (c->is_unix || pgbun.tls->accept == NULL) return true;
    do {
        n = recv(c->io.fd, &first, 1, MSG_PEEK);
    } while (n < 0 && errno == EINTR);
    if (n != 1 || !tls_looks_like_hello(first)) return true;
    if (!tls_accept(&c->io, pgbun.tls)) {
        client_close(c, "53200", "out of memory starting TLS");
        return false;
    }
    c->tls_direct = true;
    return true;
}

/* SSLRequest, GSSENCRequest, CancelRequest or StartupMessage. */
static void handle_startup_packet(struct client *c)
{
    uint32_t              len, code;
    uint8_t              *pkt;
    struct startup_packet sp;
    const char           *err = NULL;

    /* As PostgreSQL 17: a direct TLS connection must have agreed on ALPN "postgresql", before anything it sends counts.
     */
    if (c->tls_direct && !tls_alpn_ok(&c->io)) {
        client_close(c, "08P01", "direct TLS connection without ALPN protocol \"postgresql\"");
        return;
    }
    for (;;) {
        unsigned char first;

        if (c->io.ssl == NULL && evbuffer_copyout(c->in, &first, 1) == 1 && tls_looks_like_hello(first)) {
            client_log(c, LOGL_INFO, "closing: the client began a TLS handshake without an SSLRequest, %s",
                       pgbun.tls->accept == NULL ? "and client_tls_sslmode = disable: pgbun offers no TLS"
                                                 : "on a unix socket, where pgbun offers no TLS");
            client_close(c, NULL, "TLS handshake not expected");
            return;
        }
        switch (proto_peek_startup(c->in, &len)) {
        case PROTO_NEED_MORE: return;
        case PROTO_BAD:
            client_close(c, "08P01", "invalid startup packet length %u (must be %d to %d bytes)", len,
                         PROTO_STARTUP_MIN, PROTO_STARTUP_MAX);
            return;
        case PROTO_OK: break;
        }
        if (evbuffer_get_length(c->in) < len) return;
        pkt = evbuffer_pullup(c->in, len);
        code = (uint32_t)pkt[4] << 24 | (uint32_t)pkt[5] << 16 | (uint32_t)pkt[6] << 8 | pkt[7];

        if (code == PROTO_CODE_SSL || code == PROTO_CODE_GSSENC) {
            evbuffer_drain(c->in, len);
            /* Bytes sent before the handshake must not count as sent inside it (CVE-2021-23214). */
            if (len != 8 || evbuffer_get_length(c->in) > 0) {
                client_close(c, "08P01", "invalid %s request: unexpected data after it",
                             code == PROTO_CODE_SSL ? "SSL" : "GSSAPI encryption");
                return;
            }
            if (c->io.ssl != NULL) {
                client_close(c, "08P01", "SSL request inside a TLS connection");
                return;
            }
            if (code == PROTO_CODE_SSL && !c->is_unix && pgbun.tls->accept != NULL) {
                start_tls(c);
                return;
            }
            evbuffer_add(c->out, "N", 1);
            (void)client_flush(c);
            return;
        }
        if (code == PROTO_CODE_CANCEL) {
            uint8_t key[8];

            if (len != 16) {
                client_close(c, "08P01", "invalid cancel request length %u", len);
                return;
            }
            memcpy(key, pkt + 8, 8);
            evbuffer_drain(c->in, len);
            handle_cancel(c, key);
            return;
        }
        if (code >> 16 != 3) {
            client_close(c, "08P01", "unsupported frontend protocol %u.%u: pgbun supports 3.0", code >> 16,
                         code & 0xffff);
            return;
        }
        if (!proto_parse_startup(pkt + 4, len - 4, &sp, &err)) {
            proto_startup_free(&sp);
            client_close(c, "08P01", "%s", err);
            return;
        }
        evbuffer_drain(c->in, len);
        /* Newer minor versions and _pq_ options: we speak 3.0 and say so. */
        if ((code & 0xffff) != 0 || sp.pq_options.count > 0) proto_add_negotiate(c->out, 0, &sp.pq_options);
        handle_startup_params(c, &sp);
        proto_startup_free(&sp);
        return;
    }
}

static void handle_password(struct client *c, const uint8_t *body, size_t len)
{
    struct proto_reader r;
    const char         *pw;
    bool                good;

    proto_reader_init(&r, body, len);
    pw = proto_get_str(&r);
    if (r.bad) {
        client_close(c, "08P01", "invalid password message: missing terminator");
        return;
    }
    if (!c->login->has_secret)
        good = false;
    else if (c->login->method == AUTH_PLAIN)
        good = auth_check_plain(&c->login->secret, pw);
    else
        good = auth_check_md5(&c->login->secret, c->login->md5_salt, pw);
    if (!good) {
        fail_password(c);
        return;
    }
    login_ok(c);
}

/* The keys the client's proof revealed, filed where its secret came from, for pgbun's own logins as the user. */
static void keep_scram_keys(const struct client *c)
{
    struct config_auth_route r;
    char                     where[CONFIG_PLACE_MAX];

    if (!c->login->from_query)
        snprintf(where, sizeof(where), "auth_file");
    else if (!config_auth_route(pgbun.cfg, c->dbname, c->console_db, &r) || !config_auth_place(&r, where))
        return;
    creds_put_scram_keys(c->user, where, c->login->scram->client_key, c->login->secret.scram_server_key);
}

static void handle_sasl(struct client *c, const uint8_t *body, size_t len)
{
    struct proto_reader r;
    const char         *err = "malformed SCRAM message";
    char               *reply = NULL;

    proto_reader_init(&r, body, len);
    if (c->step == LOGIN_SASL_INITIAL) {
        const char    *mech = proto_get_str(&r);
        uint32_t       dlen = proto_get_u32(&r);
        const uint8_t *data;
        bool           plus = !r.bad && c->io.ssl != NULL && strcmp(mech, "SCRAM-SHA-256-PLUS") == 0;
        uint8_t        cb[SCRAM_CB_MAX];
        size_t         cb_len = c->io.ssl != NULL ? tls_server_end_point(&c->io, cb, sizeof(cb)) : 0;

        if (r.bad || (!plus && strcmp(mech, "SCRAM-SHA-256") != 0)) {
            client_close(c, "08P01", "client selected an invalid SASL authentication mechanism");
            return;
        }
        data = proto_get_bytes(&r, dlen);
        if (r.bad || dlen == 0xffffffffu) {
            client_close(c, "08P01", "malformed SASL initial response");
            return;
        }
        if (!c->login->has_secret || c->login->secret.kind == SECRET_MD5 ||
            (c->login->secret.kind == SECRET_PLAIN && c->login->secret.secret[0] == '\0')) {
            /* No SCRAM secret (none, an md5 one, an empty password): the exchange goes on all the same, and
             * fails at the proof, as PostgreSQL's does. */
            if (c->login->has_secret) secret_clear(&c->login->secret);
            c->login->mock = true;
            if (!(c->login->has_secret = scram_mock_secret(&c->login->secret, c->user))) {
                client_close(c, "53200", "out of memory");
                return;
            }
        }
        c->login->scram = calloc(1, sizeof(*c->login->scram));
        if (c->login->scram == NULL || !scram_server_begin(c->login->scram, &c->login->secret, NULL)) {
            fail_password(c);
            return;
        }
        if (c->io.ssl != NULL) {
            if (cb_len == 0) {
                client_close(c, "08P01", "could not compute SCRAM channel binding data for the TLS connection");
                return;
            }
            scram_server_channel_binding(c->login->scram, cb, cb_len, plus);
        }
        if (!scram_server_first(c->login->scram, (const char *)data, dlen, &reply, &err)) {
            client_close(c, "08P01", "%s", err);
            return;
        }
        proto_add_auth(c->out, AUTH_REQ_SASL_CONTINUE, reply, strlen(reply));
        free(reply);
        c->step = LOGIN_SASL_RESPONSE;
        (void)client_flush(c);
        return;
    }
    if (!scram_server_final(c->login->scram, (const char *)body, len, &reply, &err)) {
        if (strcmp(err, "invalid proof") == 0 || strstr(err, "proof") != NULL)
            fail_password(c);
        else
            client_close(c, "08P01", "%s", err);
        return;
    }
    proto_add_auth(c->out, AUTH_REQ_SASL_FINAL, reply, strlen(reply));
    free(reply);
    /* The proof revealed the ClientKey of a real SCRAM secret: pgbun logs in to PostgreSQL with it (pass-through). */
    if (c->login->scram->have_client_key && c->login->secret.kind == SECRET_SCRAM && !c->login->mock)
        keep_scram_keys(c);
    login_ok(c);
}

/* One authentication message ('p'). */
static void handle_login_message(struct client *c)
{
    uint8_t  type;
    uint32_t len;

    switch (proto_peek_header(c->in, PROTO_AUTH_MSG_MAX, &type, &len)) {
    case PROTO_NEED_MORE: return;
    case PROTO_BAD:
        if (len > PROTO_AUTH_MSG_MAX)
            client_close(c, "08P01", "authentication message too long (%u bytes; a password may have at most %d)", len,
                         PROTO_PASSWORD_MAX);
        else
            client_close(c, "08P01", "invalid message length %u during authentication", len);
        return;
    case PROTO_OK: break;
    }
    if (type != 'p') {
        if (type == 'X')
            client_close(c, NULL, "client quit during authentication");
        else
            client_close(c, "08P01", "expected a password message during authentication, got '%c'",
                         type >= 32 && type < 127 ? type : '?');
        return;
    }
    if (evbuffer_get_length(c->in) < (size_t)len + 1) return;
    {
        uint8_t *body = proto_take_body(c->in, len);

        if (body == NULL) {
            client_close(c, "53200", "out of memory");
            return;
        }
        if (c->step == LOGIN_PASSWORD)
            handle_password(c, body, len - 4);
        else
            handle_sasl(c, body, len - 4);
        OPENSSL_cleanse(body, len - 4);
        free(body);
    }
}

/* ---- forwarding ---- */

/* One more request whose reply the client waits for (replyq.h). */
static void request_queued(struct client *c, struct server *s, char type)
{
    if (!replyq_push_simple(&s->rq, type, REPLYQ_PASS)) client_close(c, "53200", "out of memory");
}

/*
 * One more ReadyForQuery is due. The oldest outstanding request starts the
 * clock of query_timeout and query time: when it was read, or when the
 * server was linked if the client waited for one.
 */
static inline void request_sent(struct server *s, const struct client *c)
{
    if (s->expect_rfq++ == 0) s->request_start = c->request_time > s->state_since ? c->request_time : s->state_since;
}

#define SCAN_MSG_MAX   (64 * 1024) /* longer queries are not scanned: their settings are read back in any case */
#define SCAN_NAMES_MAX 256         /* custom setting names kept per transaction, past which only built-ins are */

/* Whether pgbun set any of c's startup parameters on s: a RESET there would lose it (server_restore_params). */
static bool params_applied(const struct client *c, const struct server *s)
{
    for (size_t i = 0; i < c->params.count && s->applied.count > 0; i++)
        if (varlist_get(&s->applied, c->params.vars[i].name) != NULL) return true;
    return false;
}

/*
 * A Query or Parse about to go to s: what its SQL text may do to the
 * session (scan.h), noted on the server and returned (with session_state
 * = track or pin, outside session mode), and in deallocated the name a
 * lone DEALLOCATE names, or "". In any mode, a RESET that would lose a
 * startup parameter pgbun applied makes a restore due. A message too big
 * to hold whole has its head scanned (for the names it sets) and counts
 * as any setting.
 */
static unsigned scan_request(struct client *c, struct server *s, uint8_t type, uint32_t len, size_t avail,
                             char deallocated[SCAN_NAME_MAX])
{
    bool                track = s->pool->track_session;
    unsigned            want = track ? SCAN_READBACK | SCAN_PIN | SCAN_STATEMENTS | SCAN_CALL : 0;
    bool                whole = avail >= (size_t)len + 1 && len <= SCAN_MSG_MAX;
    size_t              head = whole ? (size_t)len + 1 : avail < SCAN_MSG_MAX ? avail : SCAN_MSG_MAX;
    struct scan_effects fx;
    struct proto_reader r;
    const char         *sql, *nul;

    deallocated[0] = '\0';
    if (params_applied(c, s)) want |= SCAN_RESTORE;
    if (want == 0) return 0;
    proto_reader_init(&r, evbuffer_pullup(c->in, (ev_ssize_t)head) + 5, head - 5);
    if (type == 'P') (void)proto_get_str(&r); /* the statement name */
    scan_init(&fx);
    if (r.bad) {
        if (whole) return 0; /* PostgreSQL will refuse the message */
    } else {
        /* The text up to its NUL, or up to the end of what is here. */
        sql = (const char *)r.p;
        nul = memchr(sql, '\0', r.left);
        scan_sql(sql, nul != NULL ? (size_t)(nul - sql) : r.left, s->std_strings, want, &fx);
    }
    if (!whole) {
        /* The rest is not seen: read back what it may have done (a pin flag other than LOAD asks what is held), and
         * clean the server before another client gets it; a RESET in it goes unnoticed. */
        fx.flags |= SCAN_SETTING_ANY | SCAN_DROP;
        fx.deallocated[0] = '\0';
    }
    if ((want & SCAN_RESTORE) && (fx.flags & SCAN_RESTORE)) s->restore_due = true;
    if (!track) return 0;
    if (fx.flags & SCAN_UNKNOWN) s->unknown_of = c->id; /* server_prepare_for cleans it for anyone else */
    if ((fx.flags & SCAN_STATEMENTS) && pstmt_fwd_tracked(c)) pstmt_fwd_text_dropped(c, s, fx.flags);
    /* DEALLOCATE of one name, alone in the text: maybe one of the client's protocol-level statements. */
    strcpy(deallocated, fx.statements == 1 ? fx.deallocated : "");
    s->scan_pending |= fx.flags;
    for (int i = 0; i < fx.nnames; i++)
        if (s->scan_names.count >= SCAN_NAMES_MAX || !varlist_set(&s->scan_names, fx.names[i], ""))
            s->scan_pending |= SCAN_SETTING_ANY;
    return fx.flags;
}

/*
 * Whether the message at the head of c->in (type and len from its header,
 * avail bytes of it buffered) can go out now. What pgbun must read whole
 * waits for all of it: a message about a prepared statement it keeps (a
 * Bind only up to its names), and a Query or Parse small enough to scan.
 * The answer depends on the client and its pool only.
 * Anything else streams. A client whose next message cannot go out is
 * given no server, and gives back the one it has once that is clean.
 */
static bool msg_ready(const struct client *c, uint8_t type, uint32_t len, size_t avail)
{
    /* Scanned: to follow session state, or to see a RESET of a startup parameter (the same answer with or without
     * a server, or a client could be given one, send nothing, and give it back, again and again). */
    bool scanned = (c->pool->track_session || c->params.count > 0) && len <= SCAN_MSG_MAX;

    if (avail >= (size_t)len + 1) return true;
    switch (type) {
    case 'Q': return !scanned;
    case 'P': return !scanned && !pstmt_fwd_tracked(c);
    case 'B':
    case 'D':
    case 'C': return !pstmt_fwd_tracked(c) || pstmt_fwd_ready(c->in, type, len, avail);
    default: return true;
    }
}

/* Whether PostgreSQL owes the client a reply to a message of this kind (on s, where a COPY may run). */
static bool gets_reply(enum fe_kind kind, const struct server *s)
{
    return kind == FE_QUERY || kind == FE_FUNCTION || kind == FE_EXTENDED || (kind == FE_SYNC && !s->copy_in);
}

/*
 * A message of type went to s whole. A Query, or the Sync that ends
 * extended messages, whose text may have RESET a startup parameter has
 * them set again once it is answered (server.c, at its ReadyForQuery: not
 * before, as it may start a COPY FROM STDIN).
 */
static void request_done(struct server *s, uint8_t type)
{
    struct replyq_entry *e;

    if (!s->restore_due || (type != 'Q' && type != 'S')) return;
    if ((e = replyq_last(&s->rq)) != NULL && e->type == (char)type) {
        e->restore = true;
        s->restore_due = false;
    }
}

/*
 * disable_pqexec: a simple Query (several statements in one message, the
 * shape SQL injection likes) closes its client, as in PgBouncer. The admin
 * console, which speaks only simple Query, keeps working: idle_input hands
 * its messages over before asking this.
 */
static bool pqexec_refused(struct client *c, uint8_t type)
{
    if (type != 'Q' || !pgbun.cfg->disable_pqexec) return false;
    client_close(c, "08P01", "PQexec disallowed: disable_pqexec = 1 allows only the extended query protocol");
    return true;
}

/* Moves whole (or streaming) messages from c->in to the server. */
static void forward_to_server(struct client *c)
{
    struct server *s = c->server;
    uint32_t       max = (uint32_t)pgbun.cfg->max_packet_size;

    while (evbuffer_get_length(c->in) > 0) {
        size_t       avail = evbuffer_get_length(c->in), taken = 0;
        uint8_t      type;
        uint32_t     len;
        enum fe_kind kind;
        bool         named;                      /* a message about prepared statements, which pgbun keeps */
        unsigned     scanned = 0;                /* what a Query's or Parse's text may do (scan.h) */
        char         deallocated[SCAN_NAME_MAX]; /* ... and the statement a lone DEALLOCATE names */

        if (c->fwd_left > 0) {
            size_t n = avail < c->fwd_left ? avail : c->fwd_left;

            evbuffer_remove_buffer(c->in, s->out, n);
            c->fwd_left -= (uint32_t)n;
            if (c->fwd_left == 0) request_done(s, c->fwd_type);
            continue;
        }
        switch (proto_peek_header(c->in, max, &type, &len)) {
        case PROTO_NEED_MORE: goto out;
        case PROTO_BAD: client_close(c, "08P01", "invalid message length %u (message type '%c')", len, type); return;
        case PROTO_OK: break;
        }
        if ((kind = proto_fe_kind(type)) == FE_INVALID) {
            /* PostgreSQL would close too; forwarded, it would leave a server that looks clean and is not. */
            client_close(c, "08P01", "invalid frontend message type %u", type);
            return;
        }
        if (!msg_ready(c, type, len, avail)) goto out;
        named = kind == FE_EXTENDED && type != 'E' && pstmt_fwd_tracked(c);
        switch (type) {
        case 'X':
            /* What came before it is the client's last word: send it. */
            evbuffer_drain(c->in, evbuffer_get_length(c->in));
            c->quit = true;
            if (server_flush(s)) client_close(c, NULL, "client sent Terminate");
            return;
        case 'Q':
            if (pqexec_refused(c, type)) return;
            s->syncs_since_execute = 0;
            request_sent(s, c);
            scanned = scan_request(c, s, type, len, avail, deallocated);
            break;
        case 'F':
            request_sent(s, c);
            if (s->pool->track_session) s->unknown_of = c->id; /* a function by its OID: may do anything */
            break;
        case 'S':
            if (s->copy_in) break; /* PostgreSQL ignores it during COPY FROM STDIN */
            request_sent(s, c);
            s->syncs_since_execute++;
            s->unsynced = false;
            break;
        case 'E':
            s->syncs_since_execute = 0;
            s->unsynced = true;
            break;
        case 'H':
            if (s->copy_in) break;
            s->unsynced = true;
            break;
        case 'P':
            scanned = scan_request(c, s, type, len, avail, deallocated);
            s->unsynced = true;
            break;
        case 'B':
        case 'D':
        case 'C': s->unsynced = true; break;
        case 'c':
        case 'f': s->copy_in = false; break;
        default: break;
        }
        if (named) {
            switch (pstmt_fwd_message(c, s, type, len, &taken)) {
            case PSTMT_CLOSED: return;
            case PSTMT_DONE: continue;
            case PSTMT_PASS:
            case PSTMT_TAKEN: break;
            }
        }
        if ((scanned & SCAN_DEALLOCATE) && deallocated[0] != '\0' && pstmt_fwd_tracked(c) &&
            pstmt_fwd_deallocate(c, s, type, len, deallocated, &taken) == PSTMT_CLOSED)
            return;
        if (gets_reply(kind, s)) {
            request_queued(c, s, (char)type);
            if (c->state == CL_CLOSING) return;
        }
        /* The message, or what is left of it after a head pgbun rewrote. */
        if (avail >= (size_t)len + 1) {
            evbuffer_remove_buffer(c->in, s->out, (size_t)len + 1 - taken);
            request_done(s, type);
        } else {
            evbuffer_remove_buffer(c->in, s->out, avail - taken);
            c->fwd_left = (uint32_t)((size_t)len + 1 - avail);
            c->fwd_type = type;
        }
    }
out:
    if (!server_flush(s)) return;
    /* Replies pgbun gave itself (a Close, a Parse the server had). */
    if (evbuffer_get_length(c->out) > 0 && !client_flush(c)) return;
    /* The last piece of a message that outlived its ReadyForQuery (COPY data after an error). */
    if (server_release_if_done(s)) return;
    if (c->state == CL_ACTIVE && evbuffer_get_length(s->out) > PGBUN_OUT_LIMIT) {
        c->throttled = true;
        io_set_reading(&c->io, false);
    }
}

/*
 * A client with no server: the message at the head of c->in asks for
 * one, unless pgbun answers it here. COPY messages outside a COPY (there
 * is none without a server) are dropped, as PostgreSQL ignores them; what
 * remains of one still arriving is dropped as it comes (fwd_left).
 */
static void idle_input(struct client *c)
{
    size_t   avail = evbuffer_get_length(c->in);
    uint8_t  type;
    uint32_t len;

    if (c->fwd_left > 0) {
        size_t n = avail < c->fwd_left ? avail : c->fwd_left;

        evbuffer_drain(c->in, n);
        c->fwd_left -= (uint32_t)n;
        c->process_again = c->fwd_left == 0 && avail > n;
        return;
    }
    switch (proto_peek_header(c->in, (uint32_t)pgbun.cfg->max_packet_size, &type, &len)) {
    case PROTO_NEED_MORE: return;
    case PROTO_BAD: client_close(c, "08P01", "invalid message length %u (message type '%c')", len, type); return;
    case PROTO_OK: break;
    }
    if (c->pool->admin) {
        admin_process(c);
        return;
    }
    if (pqexec_refused(c, type)) return;
    switch (proto_fe_kind(type)) {
    case FE_TERMINATE: client_close(c, NULL, "client sent Terminate"); return;
    case FE_INVALID: client_close(c, "08P01", "invalid frontend message type %u", type); return;
    case FE_COPY:
        c->fwd_left = (uint32_t)((size_t)len + 1 - (avail < (size_t)len + 1 ? avail : (size_t)len + 1));
        evbuffer_drain(c->in, (size_t)len + 1 - c->fwd_left);
        c->process_again = true;
        return;
    default:
        /* No server for a message that could not go out on it. */
        if (!msg_ready(c, type, len, avail)) return;
        if (pgbun.refuse_servers) {
            client_close(c, "08P01", "server shutting down");
            return;
        }
        pool_request_server(c);
        return;
    }
}

void client_refuse_waiting(void)
{
    for (struct pool *p = pool_first(); p != NULL; p = pool_next(p)) {
        struct client *c;

        if (p->admin) continue;
        while ((c = TAILQ_FIRST(&p->clients[CL_WAITING])) != NULL || (c = TAILQ_FIRST(&p->clients[CL_WELCOME])) != NULL)
            client_close(c, "08P01", "server shutting down");
    }
}

/* One look at what the client sent, as its state wants; may leave more to do (process_again). */
static void process_input(struct client *c)
{
    switch (c->state) {
    case CL_LOGIN:
        if (c->step == LOGIN_STARTUP)
            handle_startup_packet(c);
        else if (c->step != LOGIN_LOOKUP)
            handle_login_message(c);
        else if (evbuffer_get_length(c->in) > PGBUN_OUT_LIMIT)
            io_set_reading(&c->io, false); /* nothing is due from it before the request for a password */
        break;
    case CL_IDLE: idle_input(c); break;
    case CL_ACTIVE:
        if (c->server->phase == PHASE_NONE) {
            if (!c->throttled) forward_to_server(c);
            break;
        }
        /* pgbun's own query is still running on the server: hold the bytes */
        __attribute__((fallthrough));
    case CL_WELCOME:
    case CL_WAITING:
        /*
         * Hold the bytes until a server is ready, but keep reading (up to a
         * bound) so that a client that gives up is noticed and leaves the queue.
         */
        if (evbuffer_get_length(c->in) > PGBUN_OUT_LIMIT) io_set_reading(&c->io, false);
        break;
    case CL_CLOSING:
    case CL_NSTATES: break;
    }
}

/*
 * Every way into a client's input comes here, and none recurses: giving
 * back a server, getting one and being started all may happen while the
 * client's own input is being forwarded (a server released by that very
 * forwarding goes back to the pool, which serves the queue). Such a call
 * from inside only asks for one more pass, which the outer call makes,
 * as many as it takes, in a loop.
 */
static void client_process(struct client *c)
{
    if (c->processing) {
        c->process_again = true;
        return;
    }
    c->processing = true;
    do {
        c->process_again = false;
        process_input(c);
    } while (c->process_again && c->state != CL_CLOSING && evbuffer_get_length(c->in) > 0);
    c->processing = false;
}

void client_start(struct client *c)
{
    assert(c->state == CL_ACTIVE);
    client_resume(c);
}

void client_resume(struct client *c)
{
    if (c->state == CL_CLOSING) return;
    c->throttled = false;
    io_set_reading(&c->io, true);
    if (evbuffer_get_length(c->in) > 0) client_process(c);
}

static void client_read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct client *c = arg;
    int            n;

    if (!c->tls_checked && !start_direct_tls(c)) return;
    n = io_read(&c->io, c->in, PGBUN_READ_MAX);
    if (n == IO_AGAIN) return;
    if (n == 0) {
        client_close(c, NULL, "client closed the connection");
        return;
    }
    if (n == IO_ERROR) {
        /* A failed handshake is worth a line even with log_disconnections off: it is how a bad certificate shows. */
        if (errno == EPROTO) client_log(c, LOGL_INFO, "TLS failed: %s", io_strerror(errno));
        client_close(c, NULL, "read failed: %s", io_strerror(errno));
        return;
    }
    c->request_time = pgbun_now();
    if (c->pool != NULL) c->pool->stats.bytes_in += (uint64_t)n;
    client_process(c);
}

static void client_write_cb(evutil_socket_t fd, short what, void *arg)
{
    struct client *c = arg;

    if (!client_flush(c)) return;
    if (c->console != NULL) admin_output_drained(c);
    if (c->server != NULL && c->server->throttled && evbuffer_get_length(c->out) <= PGBUN_OUT_LIMIT)
        server_resume(c->server);
}
