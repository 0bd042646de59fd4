/*
 * log.h - levelled log lines to stderr, `logfile` and syslog, as text or JSON.
 *
 * A line has a level, an event kind (what it is about), a message, and may
 * name whom it concerns (a client, a server or a pool: struct log_who) and
 * carry figures (struct log_field). The text format writes
 *
 *   2024-05-01 12:00:00.123 4242 LOG C-7: app/alice@10.0.0.5:51234 closing: ...
 *
 * with the identity as the message's prefix, as it always has; the JSON
 * format (log_format = json) writes one object per line, the identity and
 * the figures as fields of their own:
 *
 *   {"ts":"2024-05-01T12:00:00.123+02:00","level":"LOG","pid":4242,"worker":0,
 *    "event":"client","client_id":7,"database":"app","user":"alice",
 *    "client_addr":"10.0.0.5","client_port":51234,"msg":"closing: ..."}
 *
 * Each .c file names the event kind of its plain log_info() ... lines by
 * defining LOG_EVENT before its first #include (as the kernel's pr_fmt);
 * log_ev() gives another one. Secrets never reach these functions.
 */
#ifndef PGBUN_LOG_H
#define PGBUN_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

enum log_level {
    LOGL_FATAL = 0,
    LOGL_ERROR,
    LOGL_WARNING,
    LOGL_INFO,
    LOGL_DEBUG,
    LOGL_NOISE,
};

/* The "event" field: what a line is about. Their names are in log.c. */
enum log_event {
    LOGE_PROCESS, /* start, stop, signals, workers, listening sockets */
    LOGE_CONFIG,  /* the configuration: warnings, reloads, what changed */
    LOGE_ADMIN,   /* a command from the admin console */
    LOGE_CLIENT,  /* a client connection */
    LOGE_SERVER,  /* a server connection */
    LOGE_POOL,    /* a pool: created, changed, freed, pinned clients */
    LOGE_AUTH,    /* auth_query lookups */
    LOGE_CANCEL,  /* cancel requests */
    LOGE_STATS,   /* log_stats figures, each pool's totals at exit */
    LOGE_METRICS, /* the metrics endpoint */
};

#ifndef LOG_EVENT
#define LOG_EVENT LOGE_PROCESS
#endif

enum log_format {
    LOG_FORMAT_TEXT = 0,
    LOG_FORMAT_JSON,
};

/* The values of log_format and syslog_facility, NULL-terminated, indexed by enum log_format and facility number. */
extern const char *const log_format_names[];
extern const char *const log_syslog_facilities[];

/* Whom a line concerns. */
struct log_who {
    char               kind;     /* 'C' client, 'S' server, 'P' pool */
    unsigned long long id;       /* the C-/S- number; unused for a pool */
    const char        *database; /* NULL: not known yet */
    const char        *user;     /* NULL: not known yet */
    const char        *addr;     /* client: its address or "unix"; server: its host; pool: unused */
    int                port;     /* 0: none (a unix socket client) */
};

enum log_field_type { LOGF_STR, LOGF_INT, LOGF_NUM };

/* A figure of a line: a field of its own in JSON; the text format has it in the message already. */
struct log_field {
    const char         *key;
    enum log_field_type type;
    union {
        const char *s; /* NULL: null */
        long long   i;
        double      d; /* not finite: null */
    } v;
};

#define LOG_STR(k, x)                                                                                                  \
    {                                                                                                                  \
        k, LOGF_STR,                                                                                                   \
        {                                                                                                              \
            .s = (x)                                                                                                   \
        }                                                                                                              \
    }
#define LOG_INT(k, x)                                                                                                  \
    {                                                                                                                  \
        k, LOGF_INT,                                                                                                   \
        {                                                                                                              \
            .i = (long long)(x)                                                                                        \
        }                                                                                                              \
    }
#define LOG_NUM(k, x)                                                                                                  \
    {                                                                                                                  \
        k, LOGF_NUM,                                                                                                   \
        {                                                                                                              \
            .d = (double)(x)                                                                                           \
        }                                                                                                              \
    }

void log_set_level(int level);
int  log_get_level(void);
void log_set_stderr(bool on);
void log_set_format(enum log_format f);
/* syslog = 1: lines go to syslog too, under ident (NULL or "": the program's name) and a facility of the list. */
void log_set_syslog(bool on, const char *ident, int facility);
/* The worker whose thread this is (the "worker" field); -1: none. */
void log_set_worker(int id);
/* After fork(): the next line asks for the pid again. */
void log_forked(void);
/* Opens (or reopens) the log file; NULL closes it. Returns false with errno set. */
bool log_set_file(const char *path) __attribute__((warn_unused_result));
/*
 * At start, until the configuration says which format to write: hold the
 * lines (true), then write them in the format set meanwhile (false).
 */
void log_hold(bool on);

void log_line(int level, enum log_event ev, const struct log_who *who, const struct log_field *fields, int nfields,
              const char *fmt, ...) __attribute__((format(printf, 6, 7)));
void log_vline(int level, enum log_event ev, const struct log_who *who, const struct log_field *fields, int nfields,
               const char *fmt, va_list ap) __attribute__((format(printf, 6, 0)));

/*
 * Writes src[0..len) as the inside of a JSON string into dst (NUL-terminated,
 * at most size - 1 bytes): quotes, backslashes and control characters
 * escaped, each byte that is not part of valid UTF-8 replaced by U+FFFD.
 * Stops before a character that does not fit. Returns the bytes written.
 */
size_t log_json_escape(char *dst, size_t size, const char *src, size_t len);

#define log_enabled(l)         (log_get_level() >= (l))
#define log_msg(level, ...)    log_line(level, LOG_EVENT, NULL, NULL, 0, __VA_ARGS__)
#define log_ev(level, ev, ...) log_line(level, ev, NULL, NULL, 0, __VA_ARGS__)
#define log_fatal(...)         log_msg(LOGL_FATAL, __VA_ARGS__)
#define log_error(...)         log_msg(LOGL_ERROR, __VA_ARGS__)
#define log_warning(...)       log_msg(LOGL_WARNING, __VA_ARGS__)
#define log_info(...)          log_msg(LOGL_INFO, __VA_ARGS__)
#define log_debug(...)                                                                                                 \
    do {                                                                                                               \
        if (log_enabled(LOGL_DEBUG)) log_msg(LOGL_DEBUG, __VA_ARGS__);                                                 \
    } while (0)
#define log_noise(...)                                                                                                 \
    do {                                                                                                               \
        if (log_enabled(LOGL_NOISE)) log_msg(LOGL_NOISE, __VA_ARGS__);                                                 \
    } while (0)

#endif
