/*
 * log.h - levelled logging to stderr and/or a log file.
 *
 * Every message is one line: timestamp, pid, level, text. Connection code
 * prefixes its own identity (see client.h/server.h). Secrets never reach
 * these functions.
 */
#ifndef PGBUN_LOG_H
#define PGBUN_LOG_H

#include <stdarg.h>
#include <stdbool.h>

enum log_level {
    LOGL_FATAL = 0,
    LOGL_ERROR,
    LOGL_WARNING,
    LOGL_INFO,
    LOGL_DEBUG,
    LOGL_NOISE,
};

void log_set_level(int level);
int  log_get_level(void);
void log_set_stderr(bool on);
/* After fork(): the next line asks for the pid again. */
void log_forked(void);
/* Opens (or reopens) the log file; NULL closes it. Returns false with errno set. */
bool log_set_file(const char *path) __attribute__((warn_unused_result));
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_vmsg(int level, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

#define log_enabled(l)   (log_get_level() >= (l))
#define log_fatal(...)   log_msg(LOGL_FATAL, __VA_ARGS__)
#define log_error(...)   log_msg(LOGL_ERROR, __VA_ARGS__)
#define log_warning(...) log_msg(LOGL_WARNING, __VA_ARGS__)
#define log_info(...)    log_msg(LOGL_INFO, __VA_ARGS__)
#define log_debug(...)                                                                                                 \
    do {                                                                                                               \
        if (log_enabled(LOGL_DEBUG)) log_msg(LOGL_DEBUG, __VA_ARGS__);                                                 \
    } while (0)
#define log_noise(...)                                                                                                 \
    do {                                                                                                               \
        if (log_enabled(LOGL_NOISE)) log_msg(LOGL_NOISE, __VA_ARGS__);                                                 \
    } while (0)

#endif
