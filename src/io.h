/*
 * io.h - the socket layer under every connection, plain or TLS.
 *
 * A connection owns one struct io: its fd, two events and, once TLS is
 * started on it (tls.c), an OpenSSL session. Read readiness stays armed
 * while the owner wants input; write readiness is armed only while an
 * output buffer could not be written in full, so a connection that keeps
 * up costs no epoll_ctl per message. The owner calls io_read and io_flush
 * the same way either way: a TLS handshake is driven from inside them, and
 * a TLS read that needs the socket writable (or a write that needs it
 * readable) is retried from the other event. EINTR and EAGAIN end here.
 */
#ifndef PGBUN_IO_H
#define PGBUN_IO_H

#include <event2/event.h>
#include <event2/event_struct.h>
#include <stdbool.h>

struct evbuffer;
struct ssl_st;

#define IO_ERROR (-1)
#define IO_AGAIN (-2)

struct io {
    int               fd;                /* -1 when closed */
    struct event      rev;               /* read readiness, persistent */
    struct event     *wev;               /* write readiness, armed while output is pending; made the first time */
    event_callback_fn read_cb;           /* the owner's callbacks */
    event_callback_fn write_cb;          /* ... */
    void             *arg;               /* ... and their argument */
    struct ssl_st    *ssl;               /* TLS session, or NULL: plain */
    bool              reading;           /* the owner wants input */
    bool              rev_on;            /* rev is armed (reading, or TLS needs to read) */
    bool              writing;           /* wev is armed */
    bool              tls_handshaking;   /* handshake not finished */
    bool              tls_flush_waiting; /* an io_flush met the unfinished handshake: flush again once done */
    bool              tls_read_on_write; /* the last TLS read needs the socket writable */
    bool              tls_write_on_read; /* the last TLS write needs the socket readable */
    bool              tls_failed;        /* a fatal TLS error: no close_notify */
};

void io_init(struct io *io, struct event_base *base, int fd, event_callback_fn read_cb, event_callback_fn write_cb,
             void *arg);
/* Stops every event of the connection, which moves to another loop... */
void io_detach(struct io *io);
/* ... and binds them to that loop's base there (nothing armed). */
void io_attach(struct io *io, struct event_base *base);
/* Closes the socket (after a TLS close_notify when the session is sound) and frees the TLS session. */
void io_close(struct io *io);
void io_set_reading(struct io *io, bool on);
/* Arms write readiness (a connect under way, or output the socket did not take); false: out of memory. */
bool io_want_write(struct io *io) __attribute__((warn_unused_result));
void io_stop_writing(struct io *io);

/*
 * Reads up to max bytes into buf: >0 bytes read, 0 on EOF, IO_AGAIN or
 * IO_ERROR (errno set; EPROTO for a TLS failure, see io_strerror).
 */
int io_read(struct io *io, struct evbuffer *buf, int max);

/*
 * Writes as much of buf as the socket takes. Returns 0 when buf is empty,
 * IO_AGAIN when bytes remain (write readiness is then armed) or IO_ERROR.
 */
int io_flush(struct io *io, struct evbuffer *buf);

/*
 * Gives OpenSSL's read and write buffers (about 34 KB) back while nothing
 * is pending in them: for a connection that may now sit idle. The next
 * read or write takes them again.
 */
void io_trim(struct io *io);

/* The text of an error io_read or io_flush returned: OpenSSL's reason for EPROTO, else strerror(). */
const char *io_strerror(int err);

/* Socket options of TCP connections: PgBouncer's tcp_* keys (0: the system's default). */
struct io_tcp {
    bool keepalive;       /* SO_KEEPALIVE */
    int  keepidle;        /* TCP_KEEPIDLE, seconds */
    int  keepintvl;       /* TCP_KEEPINTVL, seconds */
    int  keepcnt;         /* TCP_KEEPCNT */
    int  user_timeout_ms; /* TCP_USER_TIMEOUT */
    int  socket_buffer;   /* SO_SNDBUF and SO_RCVBUF, bytes */
};

/*
 * TCP_NODELAY and the io_tcp options for an accepted or outgoing TCP
 * socket. Both kinds are created non-blocking and close-on-exec (accept4
 * and socket flags), which saves three fcntl calls per connection.
 */
void io_tune_tcp(int fd, const struct io_tcp *t);

#endif
