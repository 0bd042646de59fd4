/*
 * main.c - pgbun: command line, config, process set-up, signals, the loop.
 *
 *   parse args -> load config + auth_file -> bind listeners -> [daemonize]
 *   -> pidfile -> drop root -> event loop -> orderly shutdown
 *
 * Signals: SIGHUP reloads; SIGTERM stops accepting and exits when the last
 * client has left; SIGINT exits once no server is in use; SIGQUIT (or a
 * second SIGTERM/SIGINT) exits at once; SIGUSR1 pauses (no server is handed
 * out, running transactions finish), SIGUSR2 resumes.
 */
#include "config.h"

#include <errno.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <malloc.h>
#include <pwd.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "client.h"
#include "janitor.h"
#include "listener.h"
#include "log.h"
#include "pgbun.h"
#include "pool.h"
#include "worker.h"

struct pgbun_state pgbun;

static const char   *config_path;
static char         *pidfile_written;
static int           extra_verbosity;
static bool          quiet;
static struct event *shutdown_timer;
static enum { RUNNING, STOP_AFTER_CLIENTS, STOP_AFTER_SERVERS } run_mode = RUNNING;

usec_t pgbun_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (usec_t)ts.tv_sec * USEC_PER_SEC + ts.tv_nsec / 1000;
}

static void usage(FILE *out)
{
    fprintf(out,
            "pgbun %s - a PostgreSQL connection pooler\n"
            "\n"
            "Usage: pgbun [OPTION]... [CONFIG.ini]\n"
            "\n"
            "  -d, --daemon     run in the background (logs go to logfile)\n"
            "  -v, --verbose    more log detail; repeat for more\n"
            "  -q, --quiet      no log output on stderr\n"
            "  -V, --version    print the version and exit\n"
            "  -h, --help       print this help and exit\n"
            "\n"
            "With no CONFIG.ini, pgbun runs as a sidecar: every database is forwarded to\n"
            "SERVER_HOST:SERVER_PORT (default 127.0.0.1:5432). Any setting can also come from\n"
            "the environment as PGBUN_<KEY> (e.g. PGBUN_POOL_MODE=transaction); LISTEN_ADDR,\n"
            "LISTEN_PORT, POOL_MODE, MAX_CLIENT_CONN and DEFAULT_POOL_SIZE are read too.\n"
            "Precedence: built-in default < file < environment.\n"
            "\n"
            "Signals: HUP reload, TERM stop after clients leave, INT stop after servers are\n"
            "released, QUIT stop now, USR1 pause (new queries wait), USR2 resume.\n",
            PGBUN_VERSION);
}

static void apply_log_settings(const struct pgbun_config *cfg)
{
    log_set_level(LOGL_INFO + cfg->verbose + extra_verbosity);
}

bool pgbun_reload(const char *path, char **errmsg)
{
    struct pgbun_config *cfg = config_load(path, errmsg);

    return cfg != NULL && pgbun_apply(cfg, errmsg);
}

const char *pgbun_config_path(void)
{
    return config_path;
}

bool pgbun_apply(struct pgbun_config *cfg, char **errmsg)
{
    struct auth_file *af = NULL;

    if (!config_check(cfg, errmsg)) {
        config_free(cfg);
        return false;
    }
    if (cfg->auth_file != NULL && cfg->auth_file[0] != '\0') {
        af = authfile_load(cfg->auth_file, errmsg);
        if (af == NULL) {
            config_free(cfg);
            return false;
        }
    } else if (cfg->auth_type == AUTH_TRUST && !cfg->auth_trust_any_user) {
        /* trust lets in the users of auth_file: with none, letting in everyone must be said, not fallen into. */
        if (errmsg != NULL)
            *errmsg = strdup("auth_type = trust lets in the users listed in auth_file, and no auth_file is set: set "
                             "auth_file, or auth_trust_any_user = 1 to let any user name through to PostgreSQL");
        config_free(cfg);
        return false;
    }
    if (cfg->auth_trust_any_user && cfg->auth_type != AUTH_TRUST)
        log_warning("auth_trust_any_user has no effect unless auth_type = trust (auth_type is %s)",
                    config_auth_type_name(cfg->auth_type));
    if (pgbun.cfg != NULL) {
        const struct pgbun_config *old = pgbun.cfg;

        if (old->listen_port != cfg->listen_port || strcmp(old->listen_addr, cfg->listen_addr) != 0 ||
            strcmp(old->unix_socket_dir, cfg->unix_socket_dir) != 0)
            log_warning("listen_addr, listen_port and unix_socket_dir changes take effect after a restart");
        if (cfg->logfile && (!old->logfile || strcmp(old->logfile, cfg->logfile) != 0) && !log_set_file(cfg->logfile))
            log_error("could not open logfile %s: %s", cfg->logfile, strerror(errno));
    }
    if (pgbun.auth) authfile_free(pgbun.auth);
    if (pgbun.cfg) config_free(pgbun.cfg);
    pgbun.cfg = cfg;
    pgbun.auth = af;
    apply_log_settings(cfg);
    pool_config_changed();
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
        log_info("second shutdown request: stopping now");
        stop_loop();
        return;
    }
    log_info("%s", how);
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
        log_info("%s: stopping now", who);
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

static void reload(void)
{
    char *err = NULL;

    log_info("SIGHUP: reloading the configuration");
    if (pgbun_reload(config_path, &err))
        log_info("configuration reloaded");
    else
        log_error("reload failed, keeping the running configuration: %s", err ? err : "out of memory");
    free(err);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
    worker_stop_world();
    switch (sig) {
    case SIGHUP: reload(); break;
    case SIGTERM: pgbun_shutdown(PGBUN_STOP_AFTER_CLIENTS, "SIGTERM", false); break;
    case SIGINT: pgbun_shutdown(PGBUN_STOP_AFTER_SERVERS, "SIGINT", false); break;
    case SIGQUIT: pgbun_shutdown(PGBUN_STOP_NOW, "SIGQUIT", false); break;
    case SIGUSR1:
        log_info("SIGUSR1: paused; new queries wait, running transactions finish");
        pool_pause(NULL, true);
        break;
    case SIGUSR2:
        log_info("SIGUSR2: resumed");
        pool_pause(NULL, false);
        break;
    default: break;
    }
    worker_start_world();
}

static bool write_pidfile(const char *path)
{
    char  buf[32];
    int   fd, n;
    FILE *f = fopen(path, "r");

    if (f != NULL) {
        long pid = 0;

        if (fscanf(f, "%ld", &pid) == 1 && pid > 0 && kill((pid_t)pid, 0) == 0) {
            fclose(f);
            fprintf(stderr, "pgbun: pidfile %s names running process %ld; is pgbun already running?\n", path, pid);
            return false;
        }
        fclose(f);
    }
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        fprintf(stderr, "pgbun: cannot write pidfile %s: %s\n", path, strerror(errno));
        return false;
    }
    n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
    if (write(fd, buf, (size_t)n) != n) {
        close(fd);
        return false;
    }
    close(fd);
    pidfile_written = strdup(path);
    return true;
}

static bool drop_privileges(const char *user)
{
    struct passwd *pw;

    if (geteuid() != 0) {
        if (user != NULL && user[0] != '\0') {
            pw = getpwnam(user);
            if (pw == NULL || pw->pw_uid != geteuid())
                log_warning("user = %s ignored: pgbun is not started as root", user);
        }
        return true;
    }
    if (user == NULL || user[0] == '\0') {
        fprintf(stderr, "pgbun: refusing to run as root; set \"user = <name>\" in the config (or PGBUN_USER) "
                        "to say which user to run as\n");
        return false;
    }
    pw = getpwnam(user);
    if (pw == NULL) {
        fprintf(stderr, "pgbun: user \"%s\" (config key user) does not exist\n", user);
        return false;
    }
    if (pw->pw_uid == 0) {
        fprintf(stderr, "pgbun: user = %s is root; pgbun does not run as root\n", user);
        return false;
    }
    listener_chown(pw->pw_uid, pw->pw_gid);
    if (setgid(pw->pw_gid) != 0 || initgroups(pw->pw_name, pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0) {
        fprintf(stderr, "pgbun: could not become user %s: %s\n", user, strerror(errno));
        return false;
    }
    return true;
}

static bool daemonize(void)
{
    pid_t pid = fork();
    int   fd;

    if (pid < 0) {
        fprintf(stderr, "pgbun: fork failed: %s\n", strerror(errno));
        return false;
    }
    if (pid > 0) _exit(0);
    setsid();
    pid = fork();
    if (pid < 0) return false;
    if (pid > 0) _exit(0);
    log_forked();
    fd = open("/dev/null", O_RDWR);
    if (fd >= 0) {
        dup2(fd, STDIN_FILENO);
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        if (fd > STDERR_FILENO) close(fd);
    }
    log_set_stderr(false);
    return true;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"daemon", no_argument, NULL, 'd'},  {"verbose", no_argument, NULL, 'v'}, {"quiet", no_argument, NULL, 'q'},
        {"version", no_argument, NULL, 'V'}, {"help", no_argument, NULL, 'h'},    {NULL, 0, NULL, 0},
    };
    static const int sigs[] = {SIGHUP, SIGTERM, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2};
    struct event    *sigev[6] = {0};
    sigset_t         startup_mask;
    bool             daemon_mode = false, ok;
    char            *err = NULL;
    int              ch;

    while ((ch = getopt_long(argc, argv, "dvqVh", opts, NULL)) != -1) {
        switch (ch) {
        case 'd': daemon_mode = true; break;
        case 'v': extra_verbosity++; break;
        case 'q': quiet = true; break;
        case 'V': printf("pgbun %s\n", PGBUN_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 1;
        }
    }
    if (optind < argc - 1) {
        usage(stderr);
        return 1;
    }
    config_path = optind < argc ? argv[optind] : NULL;
    if (quiet) log_set_stderr(false);

    signal(SIGPIPE, SIG_IGN);
    /*
     * The port accepts from listen() on, before the loop handles signals: a
     * SIGTERM or SIGHUP sent in between waits, blocked, until it is handled
     * as it would be later, instead of killing the process outright.
     */
    sigemptyset(&startup_mask);
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        sigaddset(&startup_mask, sigs[i]);
    pthread_sigmask(SIG_BLOCK, &startup_mask, NULL);
    /*
     * Freed memory stays for reuse rather than going back to the kernel a
     * piece at a time: with worker threads every such return (madvise,
     * munmap) also interrupts the other CPUs to flush their TLBs, which cost
     * more than a tenth of the throughput.
     */
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
    if (!pgbun_reload(config_path, &err)) {
        fprintf(stderr, "pgbun: %s\n", err ? err : "out of memory");
        free(err);
        return 1;
    }
    if (!worker_setup(pgbun.cfg->workers, &err)) {
        fprintf(stderr, "pgbun: %s\n", err ? err : "out of memory");
        return 1;
    }
    if (pgbun.cfg->logfile != NULL && pgbun.cfg->logfile[0] != '\0' && !log_set_file(pgbun.cfg->logfile)) {
        fprintf(stderr, "pgbun: cannot open logfile %s: %s\n", pgbun.cfg->logfile, strerror(errno));
        return 1;
    }
    if (pgbun.cfg->auth_type != AUTH_TRUST && pgbun.auth == NULL)
        log_warning("auth_type is %s but no auth_file is set: every login will fail",
                    config_auth_type_name(pgbun.cfg->auth_type));
    if (geteuid() == 0 && (pgbun.cfg->user == NULL || pgbun.cfg->user[0] == '\0')) {
        fprintf(stderr, "pgbun: refusing to run as root; set \"user = <name>\" in the config (or PGBUN_USER) "
                        "to say which user to run as\n");
        return 1;
    }
    if (!listener_start(pgbun.cfg, &err)) {
        fprintf(stderr, "pgbun: %s\n", err ? err : "could not listen");
        log_error("%s", err ? err : "could not listen");
        return 1;
    }
    if (daemon_mode && !daemonize()) return 1;
    worker_reinit();
    if (pgbun.cfg->pidfile != NULL && pgbun.cfg->pidfile[0] != '\0' && !write_pidfile(pgbun.cfg->pidfile)) return 1;
    if (!drop_privileges(pgbun.cfg->user)) return 1;

    for (int i = 0; i < worker_count(); i++) {
        if (!janitor_init(worker_get(i))) {
            fprintf(stderr, "pgbun: out of memory\n");
            return 1;
        }
    }
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
        sigev[i] = evsignal_new(worker_get(0)->base, sigs[i], signal_cb, NULL);
        if (sigev[i]) evsignal_add(sigev[i], NULL);
    }
    pthread_sigmask(SIG_UNBLOCK, &startup_mask, NULL);
    if (worker_count() > 1)
        log_info("pgbun %s started (pid %d, %s mode, %d workers%s)", PGBUN_VERSION, (int)getpid(),
                 config_pool_mode_name(pgbun.cfg->pool_mode), worker_count(),
                 config_path ? "" : ", sidecar: no config file");
    else
        log_info("pgbun %s started (pid %d, %s mode%s)", PGBUN_VERSION, (int)getpid(),
                 config_pool_mode_name(pgbun.cfg->pool_mode), config_path ? "" : ", sidecar: no config file");

    ok = worker_run();

    log_info("shutting down");
    worker_drop_inboxes();
    janitor_log_totals();
    listener_stop();
    for (int i = 0; i < worker_count(); i++)
        janitor_fini(worker_get(i));
    pool_fini_shared();
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        if (sigev[i]) event_free(sigev[i]);
    if (shutdown_timer) event_free(shutdown_timer);
    if (pidfile_written) {
        unlink(pidfile_written);
        free(pidfile_written);
    }
    if (pgbun.auth) authfile_free(pgbun.auth);
    config_free(pgbun.cfg);
    worker_fini();
    log_info("stopped");
    if (!log_set_file(NULL)) return ok ? 0 : 1;
    return ok ? 0 : 1;
}
