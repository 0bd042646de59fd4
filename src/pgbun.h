/*
 * pgbun.h - process-wide state shared by every module (pgbun.c).
 *
 * `pgbun` holds the active config snapshot and the auth_file contents; a
 * reload swaps them with the world stopped (worker.h), so every worker reads
 * them freely. Each worker's event loop is in its struct worker. main.c sets
 * the process up and runs the loops; nothing includes it.
 */
#ifndef PGBUN_H
#define PGBUN_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"

#ifndef PGBUN_VERSION
#define PGBUN_VERSION PACKAGE_VERSION
#endif

struct auth_file;
struct hba;
struct tls_conf;

struct pgbun_state {
    struct pgbun_config *cfg;            /* current config; replaced on reload */
    struct auth_file    *auth;           /* current auth_file, or NULL */
    struct hba          *hba;            /* current auth_hba_file's rules (auth_type = hba), or NULL */
    struct tls_conf     *tls;            /* TLS contexts built from cfg's files (tls.h) */
    atomic_int           client_count;   /* every client socket of every worker, logged in or not */
    bool                 shutting_down;  /* only console logins; exit when drained */
    bool                 refuse_servers; /* SHUTDOWN WAIT_FOR_SERVERS, SIGINT: a client with no server gets none */
    bool                 paused;         /* SIGUSR1: no server is handed out until SIGUSR2 */
};

extern struct pgbun_state pgbun;

/* Monotonic clock in microseconds. */
usec_t pgbun_now(void);

/* The config file given on the command line (NULL: sidecar) and the -v count, before the first pgbun_reload(). */
void pgbun_init(const char *config_path, int extra_verbosity);
/* Frees the running config, auth_file and TLS setup, at exit. */
void pgbun_fini(void);

/*
 * Applies a new config (and its auth_file). false leaves the running one in
 * place and sets *errmsg (malloc'd) to the reason, naming file, line and key.
 * Each difference from the running config goes to report (config_diff()),
 * unless report is NULL.
 */
bool pgbun_reload(const char *path, config_change_fn *report, void *arg, char **errmsg)
    __attribute__((warn_unused_result));
/* Makes cfg (owned from here on, freed on failure) the running config, with its auth_file and TLS files. */
bool pgbun_apply(struct pgbun_config *cfg, config_change_fn *report, void *arg, char **errmsg)
    __attribute__((warn_unused_result));
/* A config_change_fn that logs the change. */
void pgbun_log_change(void *arg, const char *line);
/* The config file given on the command line, or NULL (sidecar). */
const char *pgbun_config_path(void);

enum pgbun_stop {
    PGBUN_STOP_NOW,           /* SIGQUIT, SHUTDOWN */
    PGBUN_STOP_AFTER_SERVERS, /* SIGINT, SHUTDOWN WAIT_FOR_SERVERS */
    PGBUN_STOP_AFTER_CLIENTS, /* SIGTERM, SHUTDOWN WAIT_FOR_CLIENTS */
};
/*
 * Starts stopping; `who` names the cause in the log. While pgbun waits, the
 * unix socket takes console logins only; so do the TCP listeners when
 * keep_tcp (a SHUTDOWN from the console) and so_reuseport is off, else they
 * close at once and leave the port to the process that takes over.
 */
void pgbun_shutdown(enum pgbun_stop how, const char *who, bool keep_tcp);

#endif

/* Stop reading a side while its peer's output buffer holds more than this. */
#define PGBUN_OUT_LIMIT (256 * 1024)
/* Most bytes read from one socket per wakeup. */
#define PGBUN_READ_MAX (16 * 1024)
