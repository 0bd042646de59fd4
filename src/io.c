/*
 * io.c - non-blocking socket reads and writes on evbuffers.
 */
#include "io.h"

#include <errno.h>
#include <event2/buffer.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

void io_init(struct io *io, struct event_base *base, int fd, event_callback_fn read_cb, event_callback_fn write_cb,
             void *arg)
{
    io->fd = fd;
    io->reading = false;
    io->writing = false;
    event_assign(&io->rev, base, fd, EV_READ | EV_PERSIST, read_cb, arg);
    /* Most connections never fill their socket buffer: the write event is made when one does. */
    io->wev = NULL;
    io->write_cb = write_cb;
    io->arg = arg;
}

void io_close(struct io *io)
{
    if (io->fd < 0) return;
    event_del(&io->rev);
    if (io->wev != NULL) {
        event_free(io->wev);
        io->wev = NULL;
    }
    io->reading = io->writing = false;
    close(io->fd);
    io->fd = -1;
}

void io_detach(struct io *io)
{
    if (io->reading) event_del(&io->rev);
    if (io->wev != NULL) event_free(io->wev);
    io->wev = NULL;
    io->reading = io->writing = false;
}

void io_attach(struct io *io, struct event_base *base)
{
    event_assign(&io->rev, base, io->fd, EV_READ | EV_PERSIST, event_get_callback(&io->rev), io->arg);
}

void io_set_reading(struct io *io, bool on)
{
    if (io->fd < 0 || io->reading == on) return;
    if (on)
        event_add(&io->rev, NULL);
    else
        event_del(&io->rev);
    io->reading = on;
}

bool io_want_write(struct io *io)
{
    if (io->fd < 0 || io->writing) return true;
    if (io->wev == NULL &&
        (io->wev = event_new(event_get_base(&io->rev), io->fd, EV_WRITE | EV_PERSIST, io->write_cb, io->arg)) == NULL) {
        errno = ENOMEM;
        return false;
    }
    event_add(io->wev, NULL);
    io->writing = true;
    return true;
}

void io_stop_writing(struct io *io)
{
    if (!io->writing) return;
    event_del(io->wev);
    io->writing = false;
}

/*
 * One readv() straight into reserved buffer space: no FIONREAD ioctl per
 * read (evbuffer_read's way), so a wakeup costs one syscall per socket.
 */
int io_read(struct io *io, struct evbuffer *buf, int max)
{
    struct evbuffer_iovec v[2];
    int                   nvec = evbuffer_reserve_space(buf, max, v, 2);
    ssize_t               n;

    if (nvec <= 0) {
        errno = ENOMEM;
        return IO_ERROR;
    }
    do {
        n = readv(io->fd, (struct iovec *)v, nvec);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) {
        int saved = errno;

        evbuffer_commit_space(buf, NULL, 0);
        if (n == 0) return 0;
        errno = saved;
        return errno == EAGAIN || errno == EWOULDBLOCK ? IO_AGAIN : IO_ERROR;
    }
    if ((size_t)n <= v[0].iov_len) {
        v[0].iov_len = (size_t)n;
        nvec = 1;
    } else {
        v[1].iov_len = (size_t)n - v[0].iov_len;
    }
    evbuffer_commit_space(buf, v, nvec);
    return (int)n;
}

int io_flush(struct io *io, struct evbuffer *buf)
{
    while (evbuffer_get_length(buf) > 0) {
        int n = evbuffer_write(buf, io->fd);

        if (n >= 0) continue;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return io_want_write(io) ? IO_AGAIN : IO_ERROR;
        return IO_ERROR;
    }
    io_stop_writing(io);
    return 0;
}

void io_tune_tcp(int fd, const struct io_tcp *t)
{
    int on = 1, keep = t->keepalive;

    /* Best effort, as PgBouncer: a refused option leaves the system's default. */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    (void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &keep, sizeof(keep));
    if (keep && t->keepidle > 0) (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &t->keepidle, sizeof(t->keepidle));
    if (keep && t->keepintvl > 0) (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &t->keepintvl, sizeof(t->keepintvl));
    if (keep && t->keepcnt > 0) (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &t->keepcnt, sizeof(t->keepcnt));
    if (t->user_timeout_ms > 0)
        (void)setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &t->user_timeout_ms, sizeof(t->user_timeout_ms));
    if (t->socket_buffer > 0) {
        (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &t->socket_buffer, sizeof(t->socket_buffer));
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &t->socket_buffer, sizeof(t->socket_buffer));
    }
}
