/*
 * cancel.h - CancelRequests carried to PostgreSQL.
 *
 * A cancel goes on a new connection to the same peer as the server whose
 * query it cancels, with that backend's key; PostgreSQL answers by closing
 * it. The server that asked is told when it has landed, so that it stays
 * with its client until then: a late cancel must not hit the next client.
 */
#ifndef PGBUN_CANCEL_H
#define PGBUN_CANCEL_H

#include <stdint.h>

struct cancel_conn;
struct worker;

/* Told when a cancel has landed (answered, failed or timed out), with the arg given to cancel_new. */
typedef void cancel_landed_fn(void *arg);

/*
 * A cancel for the backend with `key`, at the peer of socket server_fd, on
 * worker w's loop; not yet sent. NULL when none could be made (the server
 * connection is gone, no socket, out of memory): nothing will be told then.
 */
struct cancel_conn *cancel_new(struct worker *w, int server_fd, const uint8_t key[8], cancel_landed_fn *landed,
                               void *arg);
/* Connects and sends it. landed may be told at once, before this returns, when that fails. */
void cancel_start(struct cancel_conn *cc);
/* The one who asked is gone: the cancel carries on alone, and tells no one. */
void cancel_orphan(struct cancel_conn *cc);
/* Drops the cancels still in flight on w (shutdown), telling no one. */
void cancel_fini(struct worker *w);

#endif
