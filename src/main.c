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
#include "creds.h"

#include <errno.h>
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
#include <unistd.h>

#include "janitor.h"
#include "listener.h"
#include "metrics.h"
#include "log.h"
#include "pgbun.h"
#include "pool.h"
#include "worker.h"

static const char *config_path;
static char       *pidfile_written;
static bool        quiet;

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

static void reload(void)
{
    char *err = NULL;

    log_ev(LOGL_INFO, LOGE_CONFIG, "SIGHUP: reloading the configuration");
    if (pgbun_reload(config_path, pgbun_log_change, NULL, &err))
        log_ev(LOGL_INFO, LOGE_CONFIG, "configuration reloaded");
    else
        log_ev(LOGL_ERROR, LOGE_CONFIG, "reload failed, keeping the running configuration: %s",
               err ? err : "out of memory");
    free(err);
}

/* libevent's own warnings become log lines of ours, in the format set, rather than bytes on stderr. */
static void libevent_log_cb(int severity, const char *msg)
{
    int level = severity >= EVENT_LOG_ERR    ? LOGL_ERROR
                : severity == EVENT_LOG_WARN ? LOGL_WARNING
                : severity == EVENT_LOG_MSG  ? LOGL_INFO
                                             : LOGL_DEBUG;

    log_msg(level, "libevent: %s", msg);
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
    metrics_chown(pw->pw_uid, pw->pw_gid);
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
    int              ch, extra_verbosity = 0;

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
    event_set_log_callback(libevent_log_cb);
    pgbun_init(config_path, extra_verbosity);
    /* The config's warnings come before its log_format is known: held, then written as it says. */
    log_hold(true);
    ok = pgbun_reload(config_path, NULL, NULL, &err);
    log_hold(false);
    if (!ok) {
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
    if (pgbun.cfg->auth_type != AUTH_TRUST && pgbun.cfg->auth_type != AUTH_HBA && pgbun.auth == NULL &&
        !config_looks_up_users(pgbun.cfg))
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
    if (!metrics_start(pgbun.cfg, &err)) {
        fprintf(stderr, "pgbun: %s\n", err ? err : "out of memory");
        log_error("%s", err ? err : "metrics endpoint: out of memory");
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
    metrics_stop();
    for (int i = 0; i < worker_count(); i++)
        janitor_fini(worker_get(i));
    pool_fini_shared();
    creds_fini();
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        if (sigev[i]) event_free(sigev[i]);
    if (pidfile_written) {
        unlink(pidfile_written);
        free(pidfile_written);
    }
    pgbun_fini();
    worker_fini();
    log_info("stopped");
    log_set_syslog(false, NULL, 0);
    if (!log_set_file(NULL)) return ok ? 0 : 1;
    return ok ? 0 : 1;
}
