/*
 * log.c - levelled log lines, as text or JSON.
 *
 *   log_line() -> the message, formatted once
 *              -> [held at start until the configuration is applied: log_hold]
 *              -> one line in the format set:
 *                   text: stamp pid LEVEL [C-7: db/user@addr:port ]message
 *                   json: {"ts", "level", "pid", ["worker"], "event", [who], [figures], "msg"}
 *              -> stderr (unless quiet or daemonized), the log file, each with
 *                 a single write(2) so that lines never interleave
 *              -> syslog(3) when syslog = 1: the same line without stamp, pid
 *                 and level in text (syslog has its own), the object in json
 *
 * The level, format and destinations are set by the main thread with the
 * world stopped (pgbun_apply), and read by every worker.
 */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#define TEXT_LINE_MAX  4096  /* as it has always been: a longer line is cut */
#define JSON_LINE_MAX  16384 /* room for a 4 KB message escaped, with the fields */
#define JSON_FIELD_MAX 600   /* one identity or figure field; a longer name is cut */
#define HOLD_MAX       1000  /* lines held at start; more are written at once */

const char *const log_format_names[] = {"text", "json", NULL};
const char *const log_syslog_facilities[] = {"auth",   "authpriv", "daemon", "user",   "local0", "local1", "local2",
                                             "local3", "local4",   "local5", "local6", "local7", NULL};
static const int  facility_codes[] = {LOG_AUTH,   LOG_AUTHPRIV, LOG_DAEMON, LOG_USER,   LOG_LOCAL0, LOG_LOCAL1,
                                      LOG_LOCAL2, LOG_LOCAL3,   LOG_LOCAL4, LOG_LOCAL5, LOG_LOCAL6, LOG_LOCAL7};

static const char *const level_names[] = {"FATAL", "ERROR", "WARNING", "LOG", "DEBUG", "NOISE"};
static const int         level_prios[] = {LOG_CRIT, LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG, LOG_DEBUG};
static const char *const event_names[] = {"process", "config", "admin",  "client", "server",
                                          "pool",    "auth",   "cancel", "stats",  "metrics"};

static int             cur_level = LOGL_INFO;
static enum log_format cur_format = LOG_FORMAT_TEXT;
static bool            to_stderr = true;
static int             log_fd = -1;
static bool            syslog_on;
static int             syslog_code = LOG_DAEMON; /* the facility openlog() was given */
static char           *syslog_ident;             /* ... and the ident, which it keeps a pointer to */

/* Lines held at start (log_hold). */
struct held {
    struct held   *next;
    struct timeval tv;
    int            level;
    enum log_event ev;
    char           msg[]; /* the identity's text prefix, if any, and the message */
};
static bool         holding;
static struct held *held_first, **held_last = &held_first;
static int          held_count;

/* Each worker thread keeps its own. */
static _Thread_local int    my_worker = -1;
static _Thread_local time_t stamp_sec = -1; /* the second the stamps show */
static _Thread_local char   stamp[32];      /* text: 2024-05-01 12:00:00 */
static _Thread_local size_t stamp_len;
static _Thread_local char   iso[32];  /* json: 2024-05-01T12:00:00 */
static _Thread_local char   tzoff[8]; /* json: +02:00 */
static _Thread_local int    stamp_pid;

void log_set_level(int level)
{
    if (level < LOGL_FATAL) level = LOGL_FATAL;
    if (level > LOGL_NOISE) level = LOGL_NOISE;
    cur_level = level;
}

int log_get_level(void)
{
    return cur_level;
}

void log_set_stderr(bool on)
{
    to_stderr = on;
}

void log_set_format(enum log_format f)
{
    cur_format = f == LOG_FORMAT_JSON ? LOG_FORMAT_JSON : LOG_FORMAT_TEXT;
}

void log_set_worker(int id)
{
    my_worker = id;
}

void log_forked(void)
{
    stamp_sec = -1; /* a new pid: look again */
}

bool log_set_file(const char *path)
{
    int fd = -1;

    if (path != NULL && path[0] != '\0') {
        fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
        if (fd < 0) return false;
    }
    if (log_fd >= 0) close(log_fd);
    log_fd = fd;
    return true;
}

void log_set_syslog(bool on, const char *ident, int facility)
{
    int   code = facility >= 0 && facility < (int)(sizeof(facility_codes) / sizeof(facility_codes[0]))
                     ? facility_codes[facility]
                     : LOG_DAEMON;
    char *copy = NULL;

    if (ident != NULL && ident[0] == '\0') ident = NULL;
    if (on && syslog_on && code == syslog_code &&
        (ident == NULL ? syslog_ident == NULL : syslog_ident != NULL && strcmp(ident, syslog_ident) == 0))
        return;
    if (syslog_on) closelog();
    syslog_on = false;
    if (on) {
        /* Out of memory: the program's name rather than no syslog. */
        if (ident != NULL) copy = strdup(ident);
        openlog(copy, LOG_PID, code);
        syslog_code = code;
        syslog_on = true;
    }
    free(syslog_ident); /* openlog() holds the new one now */
    syslog_ident = copy;
}

/* ------------------------------------------------------------------ JSON */

/* Length of the valid UTF-8 sequence at s (RFC 3629: no overlong forms, no surrogates), or 0. */
static size_t utf8_len(const unsigned char *s, size_t left)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xBF;
    size_t        n;

    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        n = 3;
    else if (c >= 0xF0 && c <= 0xF4)
        n = 4;
    else
        return 0;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
    if (left < n || s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xBF) return 0;
    return n;
}

size_t log_json_escape(char *dst, size_t size, const char *src, size_t len)
{
    const unsigned char *s = (const unsigned char *)src;
    size_t               i = 0, n = 0;

    if (size == 0) return 0;
    while (i < len) {
        unsigned char ch = s[i];
        char          esc[8];
        const char   *out = esc;
        size_t        olen = 2, step = 1;

        esc[0] = '\\';
        switch (ch) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            if (ch < 0x20) {
                olen = (size_t)snprintf(esc, sizeof(esc), "\\u%04x", ch);
            } else if (ch < 0x80) {
                out = (const char *)s + i;
                olen = 1;
            } else if ((step = utf8_len(s + i, len - i)) > 0) {
                out = (const char *)s + i;
                olen = step;
            } else {
                out = "\xEF\xBF\xBD"; /* U+FFFD for a byte that is not UTF-8 */
                olen = 3;
                step = 1;
            }
        }
        if (olen > size - 1 - n) break;
        memcpy(dst + n, out, olen);
        n += olen;
        i += step;
    }
    dst[n] = '\0';
    return n;
}

/* A JSON line being built: pieces go in whole or not at all; `cap` leaves room for the closing "}\n". */
struct jbuf {
    char  *p;
    size_t len;
    size_t cap;
};

static void jput(struct jbuf *b, const char *s, size_t n)
{
    if (n <= b->cap - b->len) {
        memcpy(b->p + b->len, s, n);
        b->len += n;
    }
}

static void jstr(struct jbuf *b, const char *key, const char *s)
{
    char   f[JSON_FIELD_MAX];
    size_t n = (size_t)snprintf(f, sizeof(f), ",\"%s\":", key);

    if (n >= sizeof(f) - 8) return;
    if (s == NULL) {
        memcpy(f + n, "null", 4);
        n += 4;
    } else {
        f[n++] = '"';
        n += log_json_escape(f + n, sizeof(f) - n - 1, s, strlen(s));
        f[n++] = '"';
    }
    jput(b, f, n);
}

static void jint(struct jbuf *b, const char *key, long long v, bool null)
{
    char f[128];
    int  n = null ? snprintf(f, sizeof(f), ",\"%s\":null", key) : snprintf(f, sizeof(f), ",\"%s\":%lld", key, v);

    if (n > 0 && (size_t)n < sizeof(f)) jput(b, f, (size_t)n);
}

static void jnum(struct jbuf *b, const char *key, double v)
{
    char f[128];
    int  n;

    if (!isfinite(v)) {
        jint(b, key, 0, true);
        return;
    }
    n = snprintf(f, sizeof(f), ",\"%s\":%.3f", key, v);
    if (n <= 0 || (size_t)n >= sizeof(f)) return;
    while (f[n - 1] == '0') /* 12.500 -> 12.5, 12.000 -> 12 */
        n--;
    if (f[n - 1] == '.') n--;
    jput(b, f, (size_t)n);
}

static void json_who(struct jbuf *b, const struct log_who *who)
{
    const char *side = who->kind == 'S' ? "server" : "client";
    char        key[32];

    if (who->kind != 'P') {
        snprintf(key, sizeof(key), "%s_id", side);
        jint(b, key, (long long)who->id, false);
    }
    jstr(b, "database", who->database);
    jstr(b, "user", who->user);
    if (who->kind != 'P') {
        snprintf(key, sizeof(key), "%s_addr", side);
        jstr(b, key, who->addr);
        snprintf(key, sizeof(key), "%s_port", side);
        jint(b, key, who->port, who->port <= 0);
    }
}

/* ------------------------------------------------------------------ lines */

/* The text prefix that names whom a line concerns, as connection lines have always begun. */
static size_t who_prefix(char *dst, size_t size, const struct log_who *who)
{
    int n;

    if (who == NULL) return 0;
    if (who->kind == 'P')
        n = snprintf(dst, size, "pool %s/%s: ", who->database, who->user);
    else
        n = snprintf(dst, size, "%c-%llu: %s/%s@%s:%d ", who->kind, who->id, who->database ? who->database : "(nodb)",
                     who->user ? who->user : "(nouser)", who->addr, who->port);
    if (n < 0) return 0;
    return (size_t)n < size ? (size_t)n : size - 1;
}

static void stamp_update(time_t sec)
{
    struct tm tm;
    long      off;

    /* A busy pooler logs many lines a second (log_connections): format the
     * date once per second, and ask for the pid only when the second turns
     * (it changes once, when -d forks). */
    if (sec == stamp_sec) return;
    localtime_r(&sec, &tm);
    stamp_len = strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", &tm);
    strftime(iso, sizeof(iso), "%Y-%m-%dT%H:%M:%S", &tm);
    off = tm.tm_gmtoff / 60;
    snprintf(tzoff, sizeof(tzoff), "%c%02ld:%02ld", off < 0 ? '-' : '+', labs(off) / 60 % 100, labs(off) % 60);
    stamp_sec = sec;
    stamp_pid = (int)getpid();
}

static void write_out(const char *line, size_t n)
{
    if (to_stderr) {
        ssize_t w = write(STDERR_FILENO, line, n);
        (void)w;
    }
    if (log_fd >= 0) {
        ssize_t w = write(log_fd, line, n);
        (void)w;
    }
}

static void emit_text(const struct timeval *tv, int level, const struct log_who *who, const char *msg)
{
    char   line[TEXT_LINE_MAX];
    size_t n, head;
    int    r;

    memcpy(line, stamp, stamp_len);
    n = stamp_len;
    r = snprintf(line + n, sizeof(line) - n, ".%03d %d %s ", (int)(tv->tv_usec / 1000), stamp_pid, level_names[level]);
    if (r > 0) n += (size_t)r;
    head = n;
    if (n < sizeof(line)) {
        n += who_prefix(line + n, sizeof(line) - n, who);
        r = snprintf(line + n, sizeof(line) - n, "%s", msg);
        if (r > 0) n += (size_t)r;
    }
    if (n > sizeof(line) - 2) n = sizeof(line) - 2;
    if (syslog_on) {
        line[n] = '\0';
        syslog(syslog_code | level_prios[level], "%s", line + head);
    }
    line[n++] = '\n';
    write_out(line, n);
}

static void emit_json(const struct timeval *tv, int level, enum log_event ev, const struct log_who *who,
                      const struct log_field *fields, int nfields, const char *msg)
{
    char        line[JSON_LINE_MAX];
    struct jbuf b = {line, 0, sizeof(line) - 3}; /* "}\n and a NUL */
    int         r;

    r = snprintf(line, b.cap, "{\"ts\":\"%s.%03d%s\",\"level\":\"%s\",\"pid\":%d", iso, (int)(tv->tv_usec / 1000),
                 tzoff, level_names[level], stamp_pid);
    b.len = r > 0 ? (size_t)r : 0;
    if (my_worker >= 0) jint(&b, "worker", my_worker, false);
    jstr(&b, "event", event_names[ev]);
    if (who != NULL) json_who(&b, who);
    for (int i = 0; i < nfields; i++) {
        const struct log_field *f = &fields[i];

        switch (f->type) {
        case LOGF_STR: jstr(&b, f->key, f->v.s); break;
        case LOGF_INT: jint(&b, f->key, f->v.i, false); break;
        case LOGF_NUM: jnum(&b, f->key, f->v.d); break;
        }
    }
    /* The message last: it has the rest of the line, cut at a character if it must. */
    if (b.cap - b.len > 10) {
        jput(&b, ",\"msg\":\"", 8);
        b.len += log_json_escape(line + b.len, b.cap - b.len, msg, strlen(msg));
        line[b.len++] = '"';
    }
    line[b.len++] = '}';
    if (syslog_on) {
        line[b.len] = '\0';
        syslog(syslog_code | level_prios[level], "%s", line);
    }
    line[b.len++] = '\n';
    write_out(line, b.len);
}

static void emit(const struct timeval *tv, int level, enum log_event ev, const struct log_who *who,
                 const struct log_field *fields, int nfields, const char *msg)
{
    stamp_update(tv->tv_sec);
    if (cur_format == LOG_FORMAT_JSON)
        emit_json(tv, level, ev, who, fields, nfields, msg);
    else
        emit_text(tv, level, who, msg);
}

/* At start: keep the line, its identity as text, until the format is known. false: not held. */
static bool hold(const struct timeval *tv, int level, enum log_event ev, const struct log_who *who, const char *msg)
{
    char         prefix[256];
    size_t       plen = who_prefix(prefix, sizeof(prefix), who), mlen = strlen(msg);
    struct held *h;

    if (held_count >= HOLD_MAX || (h = malloc(sizeof(*h) + plen + mlen + 1)) == NULL) return false;
    h->next = NULL;
    h->tv = *tv;
    h->level = level;
    h->ev = ev;
    memcpy(h->msg, prefix, plen);
    memcpy(h->msg + plen, msg, mlen + 1);
    *held_last = h;
    held_last = &h->next;
    held_count++;
    return true;
}

void log_hold(bool on)
{
    struct held *h;

    holding = on;
    if (on) return;
    while ((h = held_first) != NULL) {
        held_first = h->next;
        emit(&h->tv, h->level, h->ev, NULL, NULL, 0, h->msg);
        free(h);
    }
    held_last = &held_first;
    held_count = 0;
}

void log_vline(int level, enum log_event ev, const struct log_who *who, const struct log_field *fields, int nfields,
               const char *fmt, va_list ap)
{
    char           msg[TEXT_LINE_MAX];
    struct timeval tv;
    int            saved_errno = errno;

    if (level > cur_level) return;
    if (level < LOGL_FATAL) level = LOGL_FATAL;
    if ((unsigned)ev >= sizeof(event_names) / sizeof(event_names[0])) ev = LOGE_PROCESS;
    gettimeofday(&tv, NULL);
    if (vsnprintf(msg, sizeof(msg), fmt, ap) < 0) msg[0] = '\0';
    if (!holding || !hold(&tv, level, ev, who, msg)) emit(&tv, level, ev, who, fields, nfields, msg);
    errno = saved_errno;
}

void log_line(int level, enum log_event ev, const struct log_who *who, const struct log_field *fields, int nfields,
              const char *fmt, ...)
{
    va_list ap;

    if (level > cur_level) return;
    va_start(ap, fmt);
    log_vline(level, ev, who, fields, nfields, fmt, ap);
    va_end(ap);
}
