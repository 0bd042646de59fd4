/*
 * pgbun.c - the process: its state, its configuration and how it stops.
 *
 * Owns `pgbun` (the running config and auth_file, client count, shutdown
 * flags). A new config is built (config.c), compared with the running one
 * (config_diff(), whose lines RELOAD sends as NOTICEs and SIGHUP and SET
 * log) and swapped in with the world stopped:
 *
 *   config_load() -> pgbun_apply(): config_check() -> auth_file_load()
 *                 -> tls_conf_new() -> config_diff() -> swap
 *                 -> check_fd_limit() -> pool_config_changed()
 *
 * Every certificate, key and CA file is read again at each apply, so a
 * RELOAD picks up renewed files under the same names; one that fails to
 * load fails the RELOAD and the running setup stays.
 *
 * A shutdown (signal or console SHUTDOWN) closes the listeners as asked and
 * looks every 100 ms whether what it waits for (no clients, no server in
 * use) has come, then ends the loops; main.c then tears down.
 */
#define LOG_EVENT LOGE_CONFIG /* the event kind of this file's log lines (log.h) */
#include "pgbun.h"

#include <errno.h>
#include <limits.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "auth.h"
#include "creds.h"
#include "hba.h"
#include "client.h"
#include "listener.h"
#include "metrics.h"
#include "log.h"
#include "pool.h"
#include "str.h"
#include "tls.h"
#include "worker.h"

struct pgbun_state pgbun;

static const char   *config_path;
static int           extra_verbosity;
static struct event *shutdown_timer;
static enum { RUNNING, STOP_AFTER_CLIENTS, STOP_AFTER_SERVERS } run_mode = RUNNING;

usec_t pgbun_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (usec_t)ts.tv_sec * USEC_PER_SEC + ts.tv_nsec / 1000;
}

void pgbun_init(const char *path, int verbosity)
{
    config_path = path;
    extra_verbosity = verbosity;
}

void pgbun_fini(void)
{
    if (shutdown_timer) event_free(shutdown_timer);
    shutdown_timer = NULL;
    if (pgbun.auth) auth_file_free(pgbun.auth);
    hba_free(pgbun.hba);
    tls_conf_free(pgbun.tls);
    config_free(pgbun.cfg);
    pgbun.auth = NULL;
    pgbun.hba = NULL;
    pgbun.tls = NULL;
    pgbun.cfg = NULL;
}

/* Whether the way pgbun reaches PostgreSQL over TLS changed: open servers were made the old way. */
static bool server_tls_changed(const struct pgbun_config *a, const struct pgbun_config *b)
{
    return !str_same(a->server_tls_sslmode, b->server_tls_sslmode) ||
           !str_same(a->server_tls_ca_file, b->server_tls_ca_file) ||
           !str_same(a->server_tls_key_file, b->server_tls_key_file) ||
           !str_same(a->server_tls_cert_file, b->server_tls_cert_file) ||
           !str_same(a->server_tls_protocols, b->server_tls_protocols) ||
           !str_same(a->server_tls_ciphers, b->server_tls_ciphers) ||
           !str_same(a->server_tls13_ciphers, b->server_tls13_ciphers);
}

static void apply_log_settings(const struct pgbun_config *cfg)
{
    log_set_level(LOGL_INFO + cfg->verbose + extra_verbosity);
    log_set_format((enum log_format)cfg->log_format);
    log_set_syslog(cfg->syslog, cfg->syslog_ident, cfg->syslog_facility);
}

bool pgbun_reload(const char *path, config_change_fn *report, void *arg, char **errmsg)
{
    struct pgbun_config *cfg = config_load(path, errmsg);

    return cfg != NULL && pgbun_apply(cfg, report, arg, errmsg);
}

void pgbun_log_change(void *arg, const char *line)
{
    (void)arg;
    log_info("changed: %s", line);
}

const char *pgbun_config_path(void)
{
    return config_path;
}

/*
 * The most descriptors cfg may need at once: every client, every server
 * connection its pools may open, and a few for listeners, logs and the
 * workers' wake-ups. Servers are counted as PgBouncer counts them: each
 * database's pool size (with its reserve, capped by max_db_connections) for
 * every user pgbun knows, once for a database with a forced user. Pools of
 * users found by auth_query or of the "*" fallback's databases are not known
 * ahead, so this is a floor there, not a ceiling.
 */
static long fds_possible(const struct pgbun_config *cfg, int *servers)
{
    long users = 0, total = 0;

    for (const struct user_config *u = cfg->users; u != NULL; u = u->next)
        users++;
    if (pgbun.auth != NULL && (long)auth_file_count(pgbun.auth) > users) users = (long)auth_file_count(pgbun.auth);
    if (users == 0) users = 1;
    for (const struct db_config *db = cfg->databases; db != NULL; db = db->next) {
        struct config_settings eff;
        long                   per_user, n;

        config_resolve(cfg, db, NULL, db->name, &eff);
        per_user = eff.pool_size > 0 ? (long)eff.pool_size + eff.reserve_pool_size : cfg->max_client_conn;
        n = per_user * (eff.force_user != NULL ? 1 : users);
        if (eff.max_db_connections > 0 && n > eff.max_db_connections) n = eff.max_db_connections;
        total += n;
    }
    *servers = total > INT_MAX ? INT_MAX : (int)total;
    return (long)cfg->max_client_conn + total + 10 + 2L * cfg->workers;
}

/*
 * At start and at every apply: says what the descriptor limit allows, raises
 * the soft limit up to the hard one when the config needs more (as a process
 * may without privileges), and warns when even that is short: clients beyond
 * it are refused with 53300 (listener.c). Logged only when the numbers
 * change.
 */
static void check_fd_limit(const struct pgbun_config *cfg)
{
    static long   last_need = -1;
    static rlim_t last_cur;
    struct rlimit lim;
    int           servers;
    long          need = fds_possible(cfg, &servers);
    rlim_t        was;

    if (getrlimit(RLIMIT_NOFILE, &lim) != 0) {
        log_warning("could not read the file descriptor limit: %s", strerror(errno));
        return;
    }
    was = lim.rlim_cur;
    if (lim.rlim_cur != RLIM_INFINITY && lim.rlim_cur < (rlim_t)need &&
        (lim.rlim_max == RLIM_INFINITY || lim.rlim_cur < lim.rlim_max)) {
        struct rlimit want = lim;

        want.rlim_cur = lim.rlim_max != RLIM_INFINITY && lim.rlim_max < (rlim_t)need ? lim.rlim_max : (rlim_t)need;
        if (setrlimit(RLIMIT_NOFILE, &want) == 0)
            lim = want;
        else
            log_warning("could not raise the file descriptor limit from %llu to %llu: %s",
                        (unsigned long long)lim.rlim_cur, (unsigned long long)want.rlim_cur, strerror(errno));
    }
    if (need == last_need && lim.rlim_cur == last_cur) return;
    last_need = need;
    last_cur = lim.rlim_cur;
    if (lim.rlim_cur != was)
        log_info("file descriptor limit raised from %llu to %llu (hard limit %llu)", (unsigned long long)was,
                 (unsigned long long)lim.rlim_cur, (unsigned long long)lim.rlim_max);
    log_info("file descriptor limit: %llu (hard %llu), max_client_conn: %d, max fds possible: %ld",
             (unsigned long long)lim.rlim_cur, (unsigned long long)lim.rlim_max, cfg->max_client_conn, need);
    if (lim.rlim_cur != RLIM_INFINITY && lim.rlim_cur < (rlim_t)need)
        log_warning("the file descriptor limit (%llu) is below what max_client_conn = %d and up to %d server "
                    "connections may need (%ld): connections beyond it will be refused; raise the hard limit "
                    "(ulimit -Hn, systemd's LimitNOFILE=) or lower max_client_conn",
                    (unsigned long long)lim.rlim_cur, cfg->max_client_conn, servers, need);
}

bool pgbun_apply(struct pgbun_config *cfg, config_change_fn *report, void *arg, char **errmsg)
{
    struct auth_file *af = NULL;
    struct hba       *hba = NULL;
    struct tls_conf  *tls;
    bool              reconnect = false;

    if (!config_check(cfg, errmsg)) {
        config_free(cfg);
        return false;
    }
    if (cfg->auth_file != NULL && cfg->auth_file[0] != '\0') {
        af = auth_file_load(cfg->auth_file, errmsg);
        if (af == NULL) {
            config_free(cfg);
            return false;
        }
    } else if ((cfg->auth_type == AUTH_TRUST || cfg->auth_type == AUTH_CERT || cfg->auth_type == AUTH_PEER) &&
               !cfg->auth_trust_any_user && !config_looks_up_users(cfg)) {
        /* trust lets in the users of auth_file: with none, letting in everyone must be said, not fallen into. */
        char msg[256];

        snprintf(msg, sizeof(msg),
                 "auth_type = %s lets in the users listed in auth_file, and no auth_file is set: set auth_file, "
                 "auth_user (users found by auth_query), or auth_trust_any_user = 1 to let any user name through to "
                 "PostgreSQL",
                 config_auth_type_name(cfg->auth_type));
        if (errmsg != NULL) *errmsg = strdup(msg);
        config_free(cfg);
        return false;
    }
    /* A broken hba file leaves the running rules in place, as a broken config does. */
    if (cfg->auth_type == AUTH_HBA && (hba = hba_load(cfg->auth_hba_file, errmsg)) == NULL) {
        if (af) auth_file_free(af);
        config_free(cfg);
        return false;
    }
    if (hba != NULL && hba_uses(hba, AUTH_CERT) && strcmp(cfg->client_tls_sslmode, "verify-ca") != 0 &&
        strcmp(cfg->client_tls_sslmode, "verify-full") != 0) {
        char msg[256];

        snprintf(msg, sizeof(msg),
                 "auth_hba_file has cert rules, which need client_tls_sslmode = verify-ca or verify-full (it is %s)",
                 cfg->client_tls_sslmode);
        if (errmsg != NULL) *errmsg = strdup(msg);
        hba_free(hba);
        if (af) auth_file_free(af);
        config_free(cfg);
        return false;
    }
    if ((tls = tls_conf_new(cfg, errmsg)) == NULL) {
        hba_free(hba);
        if (af) auth_file_free(af);
        config_free(cfg);
        return false;
    }
    if (cfg->auth_trust_any_user && cfg->auth_type != AUTH_TRUST && cfg->auth_type != AUTH_CERT &&
        cfg->auth_type != AUTH_PEER && cfg->auth_type != AUTH_HBA)
        log_warning("auth_trust_any_user has no effect unless auth_type = trust, cert, peer or hba (auth_type is %s)",
                    config_auth_type_name(cfg->auth_type));
    if (pgbun.cfg != NULL) {
        const struct pgbun_config *old = pgbun.cfg;

        if (old->listen_port != cfg->listen_port || strcmp(old->listen_addr, cfg->listen_addr) != 0 ||
            strcmp(old->unix_socket_dir, cfg->unix_socket_dir) != 0)
            log_warning("listen_addr, listen_port and unix_socket_dir changes take effect after a restart");
        /* Reopened even under the same name, as PgBouncer does: a RELOAD or SIGHUP after rotating the file. */
        if (cfg->logfile && cfg->logfile[0] != '\0' && !log_set_file(cfg->logfile))
            log_error("could not open logfile %s: %s", cfg->logfile, strerror(errno));
        reconnect = server_tls_changed(old, cfg);
        metrics_apply(old, cfg);
    }
    if (report != NULL && pgbun.cfg != NULL) config_diff(pgbun.cfg, cfg, report, arg);
    if (pgbun.auth) auth_file_free(pgbun.auth);
    hba_free(pgbun.hba);
    tls_conf_free(pgbun.tls);
    if (pgbun.cfg) config_free(pgbun.cfg);
    pgbun.cfg = cfg;
    pgbun.auth = af;
    pgbun.hba = hba;
    pgbun.tls = tls;
    apply_log_settings(cfg);
    check_fd_limit(cfg);
    creds_reset(); /* RELOAD: secrets auth_query found are looked up again */
    pool_config_changed();
    /* As PgBouncer: servers reached under other TLS settings are replaced (RECONNECT). */
    if (reconnect) {
        int n = pool_reconnect(NULL);

        if (n > 0) log_info("server TLS settings changed: %d server connections to replace", n);
    }
    return true;
}

static void stop_loop(void)
{
    worker_stop_loops();
}

static void shutdown_check_cb(evutil_socket_t fd, short what, void *arg)
{
    bool done;

    worker_stop_world();
    if (run_mode == STOP_AFTER_SERVERS) client_refuse_waiting(); /* any that came to wait since the last look */
    done = (run_mode == STOP_AFTER_CLIENTS && pool_total_clients() == 0) ||
           (run_mode == STOP_AFTER_SERVERS && pool_total_active_servers() == 0);
    worker_start_world();
    if (done) stop_loop();
}

static void begin_shutdown(int mode, const char *how, bool keep_tcp)
{
    struct timeval tv = {0, 100000};

    if (run_mode != RUNNING) {
        log_ev(LOGL_INFO, LOGE_PROCESS, "second shutdown request: stopping now");
        stop_loop();
        return;
    }
    log_ev(LOGL_INFO, LOGE_PROCESS, "%s", how);
    run_mode = mode;
    pgbun.shutting_down = true;
    if (mode == STOP_AFTER_SERVERS) {
        /* As PgBouncer: a PAUSE that also ends the clients waiting for a server, and those that come to want one. */
        pgbun.refuse_servers = true;
        pgbun.paused = true;
        client_refuse_waiting();
    }
    if (!keep_tcp || pgbun.cfg->so_reuseport) listener_stop_tcp();
    shutdown_timer = event_new(worker_self->base, -1, EV_PERSIST, shutdown_check_cb, NULL);
    if (shutdown_timer) {
        event_add(shutdown_timer, &tv);
        event_active(shutdown_timer, EV_TIMEOUT, 0); /* a first look right after this callback */
    }
}

void pgbun_shutdown(enum pgbun_stop how, const char *who, bool keep_tcp)
{
    char msg[128];

    switch (how) {
    case PGBUN_STOP_NOW:
        log_ev(LOGL_INFO, LOGE_PROCESS, "%s: stopping now", who);
        stop_loop();
        break;
    case PGBUN_STOP_AFTER_CLIENTS:
        snprintf(msg, sizeof(msg), "%s: stopping once every client has left", who);
        begin_shutdown(STOP_AFTER_CLIENTS, msg, keep_tcp);
        break;
    case PGBUN_STOP_AFTER_SERVERS:
        snprintf(msg, sizeof(msg), "%s: stopping once no server is in use", who);
        begin_shutdown(STOP_AFTER_SERVERS, msg, keep_tcp);
        break;
    }
}
