/*
 * conn.c - pgbun's live connection code, client side and server side at
 * once: one client on a socketpair, handed to client_accept as the listener
 * would, and a fake PostgreSQL on a unix socket that pgbun's pools dial.
 * Both peers' bytes come from the input, so the login, the relay state
 * machine, the reply queue, COPY, the extended protocol, tracked session
 * state, prepared statements in transaction mode, cancel requests and the
 * console all see hostile clients and hostile servers.
 *
 *   input = flags  op*
 *   flags: bits 0-1  database: tx (transaction), sess (session), stmt
 *                    (statement), pgbun (the console, as a stats user)
 *          bit 2     the client's bytes start raw: no StartupMessage is
 *                    sent for it (SSLRequest, CancelRequest, bad packets)
 *          bit 3     servers log in raw: no AuthenticationOk ... ReadyForQuery
 *                    answers a StartupMessage; the input must
 *   op:    byte % 6  0 client sends, 1 newest server sends: a length byte,
 *                       then that many bytes (fewer at the input's end)
 *                    2 run the loop once more
 *                    3 the client goes away (its socket closes)
 *                    4 the newest server goes away
 *                    5 the client stops reading, or reads again: pgbun's
 *                      socket to it has a small send buffer, so what it
 *                      sends backs up (write readiness, output limits)
 *
 * After every op pgbun's loop runs until it has nothing more to do, and what
 * it wrote to either peer is read and dropped; what it wrote to a client that
 * logged in normally must be whole messages, one after another. At the end both peers close
 * and pgbun must free the client and every server: libFuzzer's leak check
 * catches what it does not.
 */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "client.h"
#include "fuzz.h"
#include "pgbun.h"
#include "pool.h"
#include "proto.h"
#include "worker.h"

#define MAX_SERVERS 16

struct peer {
    int     fd;
    bool    greeted; /* a server: its first packet was seen (and answered, unless raw) */
    uint8_t head[8]; /* ... the first bytes of it; the client: the message header being read */
    size_t  nhead;
    bool    framed;  /* the client: check that what pgbun sends it is whole messages, one after another */
    size_t  body;    /* ... bytes of the current message's body still to come */
    bool    stalled; /* the client: not reading */
};

/*
 * What pgbun sends a client that logged in with a StartupMessage is a run of
 * messages, type byte and length each: never a message of its own inside a
 * forwarded one, never a length that cannot be. (A client that starts raw
 * may have asked for TLS, answered by one byte: not checked.)
 */
static void check_framing(struct peer *p, const uint8_t *buf, size_t n)
{
    while (n > 0) {
        if (p->body > 0) {
            size_t take = n < p->body ? n : p->body;

            p->body -= take;
            buf += take;
            n -= take;
            continue;
        }
        p->head[p->nhead++] = *buf++;
        n--;
        if (p->nhead < 5) continue;
        p->nhead = 0;
        {
            uint32_t len =
                (uint32_t)p->head[1] << 24 | (uint32_t)p->head[2] << 16 | (uint32_t)p->head[3] << 8 | p->head[4];

            if (len < 4 || len > 0x3fffffff) {
                fprintf(stderr, "conn: pgbun sent its client a message of type 0x%02x and length %u\n", p->head[0],
                        len);
                abort();
            }
            p->body = len - 4;
        }
    }
}

static struct event_base *base;
static int                listen_fd = -1;
static struct peer        servers[MAX_SERVERS];
static int                nservers;
static bool               raw_server;

static void nonblock(int fd)
{
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0) abort();
}

/* Best effort: a peer that cannot take more (pgbun stopped reading) loses the rest, as a real one would wait. */
static void send_all(int fd, const void *data, size_t len)
{
    const uint8_t *p = data;

    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

        if (n <= 0) return;
        p += n;
        len -= (size_t)n;
    }
}

/* Sends what buf holds, then empties and frees it. */
static void send_buffer(int fd, struct evbuffer *buf)
{
    send_all(fd, evbuffer_pullup(buf, -1), evbuffer_get_length(buf));
    evbuffer_free(buf);
}

/* What PostgreSQL answers a StartupMessage with when it trusts the user. */
static void server_login(int fd)
{
    static const char *const params[][2] = {
        {"server_version", "16.4"},
        {"server_encoding", "UTF8"},
        {"client_encoding", "UTF8"},
        {"DateStyle", "ISO, MDY"},
        {"TimeZone", "UTC"},
        {"integer_datetimes", "on"},
        {"standard_conforming_strings", "on"},
        {"application_name", ""},
        {"is_superuser", "off"},
    };
    static const uint8_t key[8] = {0, 0, 0, 42, 1, 2, 3, 4};
    struct evbuffer     *buf = evbuffer_new();

    if (buf == NULL) abort();
    proto_add_auth(buf, AUTH_REQ_OK, NULL, 0);
    for (size_t i = 0; i < sizeof(params) / sizeof(params[0]); i++)
        proto_add_param_status(buf, params[i][0], params[i][1]);
    proto_add_backend_key(buf, key);
    proto_add_ready(buf, 'I');
    send_buffer(fd, buf);
}

/* Reads and drops what pgbun sent; a server's first packet is looked at once. Returns bytes read. */
static size_t drain(struct peer *p, bool server)
{
    uint8_t buf[16384];
    ssize_t n;
    size_t  got = 0;

    while (p->fd >= 0 && (n = recv(p->fd, buf, sizeof(buf), 0)) > 0) {
        got += (size_t)n;
        if (!server && p->framed) check_framing(p, buf, (size_t)n);
        if (!server || p->greeted) continue;
        for (ssize_t i = 0; i < n && p->nhead < sizeof(p->head); i++)
            p->head[p->nhead++] = buf[i];
        if (p->nhead < sizeof(p->head)) continue;
        p->greeted = true;
        /* Protocol 3.0: a StartupMessage, not a CancelRequest. */
        if (!raw_server && p->head[4] == 0 && p->head[5] == 3 && p->head[6] == 0 && p->head[7] == 0)
            server_login(p->fd);
    }
    return got;
}

static size_t accept_servers(void)
{
    size_t got = 0;
    int    fd;

    while ((fd = accept(listen_fd, NULL, NULL)) >= 0) {
        if (nservers == MAX_SERVERS) {
            close(fd);
            continue;
        }
        nonblock(fd);
        servers[nservers++] = (struct peer){.fd = fd};
        got++;
    }
    return got;
}

/* Runs pgbun's loop until two rounds in a row move nothing (at most 32 rounds). */
static void pump(struct peer *client)
{
    for (int round = 0, idle = 0; round < 32 && idle < 2; round++) {
        size_t moved;

        event_base_loop(base, EVLOOP_NONBLOCK);
        moved = accept_servers() + (client->stalled ? 0 : drain(client, false));
        for (int i = 0; i < nservers; i++)
            moved += drain(&servers[i], true);
        idle = moved > 0 ? 0 : idle + 1;
    }
}

static void close_peer(struct peer *p)
{
    if (p->fd >= 0) close(p->fd);
    p->fd = -1;
}

static struct peer *newest_server(void)
{
    for (int i = nservers - 1; i >= 0; i--)
        if (servers[i].fd >= 0) return &servers[i];
    return NULL;
}

static const char *config_text(const char *dir)
{
    static char text[2048];

    snprintf(text, sizeof(text),
             "[databases]\n"
             "tx = host=%s port=5432 pool_mode=transaction\n"
             "sess = host=%s port=5432 pool_mode=session\n"
             "stmt = host=%s port=5432 pool_mode=statement\n"
             "[pgbun]\n"
             "auth_type = trust\n"
             "auth_trust_any_user = 1\n"
             "unix_socket_dir =\n"
             "stats_users = fuzzstats\n"
             "default_pool_size = 2\n"
             "max_prepared_statements = 8\n"
             "server_login_retry = 0\n",
             dir, dir, dir);
    return text;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    const char        *path, *text;
    char               dir[sizeof(un.sun_path) - 16], *err = NULL;

    (void)argc;
    (void)argv;
    signal(SIGPIPE, SIG_IGN);
    fuzz_quiet();
    /* The directory of fuzz_file() holds both the config and the server's socket. */
    path = fuzz_file("pgbun.ini", (const uint8_t *)"", 0);
    snprintf(dir, sizeof(dir), "%.*s", (int)(strrchr(path, '/') - path), path);
    text = config_text(dir);
    path = fuzz_file("pgbun.ini", (const uint8_t *)text, strlen(text));
    snprintf(un.sun_path, sizeof(un.sun_path), "%s/.s.PGSQL.5432", dir);
    listen_fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&un, sizeof(un)) != 0 || listen(listen_fd, 64) != 0)
        abort();
    nonblock(listen_fd);

    pgbun_init(path, 0);
    if (!pgbun_reload(path, NULL, NULL, &err) || !worker_setup(1, &err) || !pool_init(worker_get(0))) {
        fprintf(stderr, "conn: set-up failed: %s\n", err != NULL ? err : "out of memory");
        abort();
    }
    base = worker_get(0)->base;
    return 0;
}

static void startup(struct peer *client, unsigned db)
{
    static const char *const dbs[] = {"tx", "sess", "stmt", "pgbun"};
    struct varlist           params = {0};
    struct evbuffer         *buf = evbuffer_new();

    if (buf == NULL || !varlist_set(&params, "user", db == 3 ? "fuzzstats" : "fuzz") ||
        !varlist_set(&params, "database", dbs[db]) || !varlist_set(&params, "application_name", "fuzz"))
        abort();
    proto_add_startup(buf, &params);
    varlist_clear(&params);
    send_buffer(client->fd, buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct peer client = {.fd = -1};
    int         sv[2];
    size_t      at = 1;
    int         small = 4096;

    if (size < 1) return 0;
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) abort();
    if (setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)) != 0) abort();
    nonblock(sv[0]);
    nonblock(sv[1]);
    client.fd = sv[0];
    raw_server = (data[0] & 8) != 0;
    nservers = 0;
    client_accept(sv[1], NULL, 0, true);
    if ((data[0] & 4) == 0) {
        client.framed = true;
        startup(&client, data[0] & 3);
    }
    pump(&client);

    while (at < size) {
        uint8_t      op = data[at++] % 6;
        struct peer *s;
        size_t       len;

        switch (op) {
        case 0:
        case 1:
            if (at >= size) break;
            len = data[at++];
            if (len > size - at) len = size - at;
            s = op == 0 ? &client : newest_server();
            if (s != NULL && s->fd >= 0) send_all(s->fd, data + at, len);
            at += len;
            break;
        case 2: break;
        case 3: close_peer(&client); break;
        case 4:
            if ((s = newest_server()) != NULL) close_peer(s);
            break;
        case 5: client.stalled = !client.stalled; break;
        }
        pump(&client);
    }

    /* Both sides go: pgbun must let go of the client and of every server. */
    client.stalled = false;
    pump(&client);
    close_peer(&client);
    for (int i = 0; i < nservers; i++)
        close_peer(&servers[i]);
    pump(&client);
    for (int round = 0; round < 64 && atomic_load(&pgbun.client_count) > 0; round++)
        pump(&client);
    if (atomic_load(&pgbun.client_count) != 0) {
        fprintf(stderr, "conn: a client whose socket closed is still there\n");
        abort();
    }
    /* A server pgbun dialled during the last pump: it must give up on it too. */
    for (int round = 0; round < 64 && nservers > 0; round++) {
        int open = 0;

        for (int i = 0; i < nservers; i++) {
            drain(&servers[i], true);
            close_peer(&servers[i]);
        }
        event_base_loop(base, EVLOOP_NONBLOCK);
        accept_servers();
        for (int i = 0; i < nservers; i++)
            open += servers[i].fd >= 0;
        if (open == 0) break;
    }
    return 0;
}
