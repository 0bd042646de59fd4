/*
 * io.c - non-blocking socket reads and writes on evbuffers.
 */
#include "io.h"

#include <errno.h>
#include <event2/buffer.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include "pgbun.h"

void io_init(struct io *io, int fd, event_callback_fn read_cb, event_callback_fn write_cb, void *arg)
{
    io->fd = fd;
    io->reading = false;
    io->writing = false;
    event_assign(&io->rev, pgbun.base, fd, EV_READ | EV_PERSIST, read_cb, arg);
    event_assign(&io->wev, pgbun.base, fd, EV_WRITE | EV_PERSIST, write_cb, arg);
}

void io_close(struct io *io)
{
    if (io->fd < 0) return;
    event_del(&io->rev);
    event_del(&io->wev);
    io->reading = io->writing = false;
    close(io->fd);
    io->fd = -1;
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

int io_read(struct io *io, struct evbuffer *buf, int max)
{
    for (;;) {
        int n = evbuffer_read(buf, io->fd, max);

        if (n >= 0) return n;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return IO_AGAIN;
        return IO_ERROR;
    }
}

int io_flush(struct io *io, struct evbuffer *buf)
{
    while (evbuffer_get_length(buf) > 0) {
        int n = evbuffer_write(buf, io->fd);

        if (n >= 0) continue;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (!io->writing) {
                event_add(&io->wev, NULL);
                io->writing = true;
            }
            return IO_AGAIN;
        }
        return IO_ERROR;
    }
    if (io->writing) {
        event_del(&io->wev);
        io->writing = false;
    }
    return 0;
}

void io_tune_socket(int fd, bool tcp)
{
    int on = 1;
    int flags = fcntl(fd, F_GETFL);

    if (flags >= 0) (void)fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
    if (tcp) {
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
        (void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
    }
}
