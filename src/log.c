/*
 * log.c - levelled logging.
 *
 * Lines go to stderr (unless quiet or daemonized) and to the log file when
 * one is configured. Each line is formatted once and written with a single
 * write(2) so that lines from a reopened file never interleave.
 */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int  cur_level = LOGL_INFO;
static bool to_stderr = true;
static int  log_fd = -1;

/* Each worker thread keeps its own. */
static _Thread_local time_t stamp_sec = -1; /* the second stamp[] shows */
static _Thread_local char   stamp[32];
static _Thread_local size_t stamp_len;
static _Thread_local int    stamp_pid;

static const char *const level_names[] = {"FATAL", "ERROR", "WARNING", "LOG", "DEBUG", "NOISE"};

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

void log_vmsg(int level, const char *fmt, va_list ap)
{
    char           line[4096];
    struct timeval tv;
    size_t         n;
    int            r;
    int            saved_errno = errno;

    if (level > cur_level) return;
    gettimeofday(&tv, NULL);
    /* A busy pooler logs many lines a second (log_connections): format the
     * date once per second, and ask for the pid only when the second turns
     * (it changes once, when -d forks). */
    if (tv.tv_sec != stamp_sec) {
        struct tm tm;

        localtime_r(&tv.tv_sec, &tm);
        stamp_len = strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", &tm);
        stamp_sec = tv.tv_sec;
        stamp_pid = (int)getpid();
    }
    memcpy(line, stamp, stamp_len);
    n = stamp_len;
    r = snprintf(line + n, sizeof(line) - n, ".%03d %d %s ", (int)(tv.tv_usec / 1000), stamp_pid, level_names[level]);
    if (r > 0) n += (size_t)r;
    if (n < sizeof(line)) {
        r = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
        if (r > 0) n += (size_t)r;
    }
    if (n > sizeof(line) - 2) n = sizeof(line) - 2;
    line[n++] = '\n';

    if (to_stderr) {
        ssize_t w = write(STDERR_FILENO, line, n);
        (void)w;
    }
    if (log_fd >= 0) {
        ssize_t w = write(log_fd, line, n);
        (void)w;
    }
    errno = saved_errno;
}

void log_msg(int level, const char *fmt, ...)
{
    va_list ap;

    if (level > cur_level) return;
    va_start(ap, fmt);
    log_vmsg(level, fmt, ap);
    va_end(ap);
}
