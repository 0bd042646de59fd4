/*
 * janitor.c - each worker's periodic pass over its pools, and the stats_period.
 *
 * Every JANITOR_PERIOD_USEC, on each worker's loop:
 *
 *   janitor_cb -> a pool unused for pool_idle_timeout: freed (pool_remove)
 *              -> maintain: client, wait, query and transaction timeouts,
 *                 server_lifetime, server_idle_timeout, notices of long pins
 *              -> top_up: the reserve, min_pool_size (pool_open_min)
 *              -> idle servers to other workers, blocked pools served
 *              -> worker 0, when a stats_period is over: the world stopped,
 *                 every pool's last_period is what it added, logged
 *
 * What it closes goes through client_close and server_close; what it opens,
 * through the pool's limits (pool.c).
 */
#define LOG_EVENT LOGE_POOL /* the event kind of this file's log lines (log.h) */
#include "janitor.h"

#include <event2/event.h>
#include <string.h>

#include "client.h"
#include "log.h"
#include "pgbun.h"
#include "pool.h"
#include "server.h"
#include "session.h"
#include "stats.h"
#include "worker.h"

/* How often the timeouts are checked; a timeout fires at most this late. */
#define JANITOR_PERIOD_USEC 250000

/*
 * How long a query canceled for query_timeout may take to end. A cancel
 * that lands ends it in milliseconds; one that cannot reach the server (the
 * network problem query_timeout is for) would leave its client waiting as
 * long as TCP retries: past this, the server is closed and the client told.
 */
#define CANCEL_GRACE_USEC (5 * USEC_PER_SEC)

static struct event *timers[WORKERS_MAX]; /* each worker's, on its loop */

static double secs(usec_t us)
{
    return (double)us / USEC_PER_SEC;
}

/* How long a client has gone without a query of its own running or due. */
static usec_t client_idle_for(const struct client *c, usec_t now)
{
    usec_t since = c->request_time;

    if (c->state == CL_IDLE) {
        if (c->state_since > since) since = c->state_since;
    } else if (c->state == CL_ACTIVE && server_is_clean(c->server)) {
        /* Session mode: an idle client still holds its server. */
        if (c->server->last_ready > since) since = c->server->last_ready;
    } else {
        return 0;
    }
    return now - since;
}

/* query_timeout, transaction_timeout and idle_transaction_timeout of a linked server. */
static void check_linked(struct server *s, usec_t now)
{
    const struct pool *p = s->pool;

    if (s->client == NULL || s->phase != PHASE_NONE) return;
    if (s->txstatus != 'I' && p->transaction_timeout > 0 && now - s->xact_start > p->transaction_timeout) {
        client_close(s->client, "25P04", "transaction_timeout: transaction open for more than %g s",
                     secs(p->transaction_timeout));
        return;
    }
    if (s->txstatus != 'I' && s->expect_rfq == 0 && p->idle_transaction_timeout > 0 &&
        now - s->last_ready > p->idle_transaction_timeout) {
        client_close(s->client, "25P03", "idle_transaction_timeout: idle in a transaction for more than %g s",
                     secs(p->idle_transaction_timeout));
        return;
    }
    if (s->expect_rfq > 0 && !s->query_timed_out && p->query_timeout > 0 && now - s->request_start > p->query_timeout) {
        server_log(s, LOGL_INFO, "query_timeout: canceling a query running for more than %g s", secs(p->query_timeout));
        s->query_timed_out = true;
        s->cancel_sent = now;
        server_send_cancel(s);
    } else if (s->expect_rfq > 0 && s->query_timed_out && now - s->cancel_sent > CANCEL_GRACE_USEC) {
        client_close(s->client, "08006", "query_timeout: the server did not end the query within %g s of its cancel",
                     secs(CANCEL_GRACE_USEC));
    }
}

/*
 * Clients pinned to their servers for pin_notice_delay leave the pool
 * fewer servers to share: say so, at most once per ten times that delay.
 */
static void notice_long_pins(struct pool *p, usec_t now)
{
    usec_t   delay = pgbun.cfg->pin_notice_delay;
    unsigned why = 0;
    int      n = 0;
    char     names[128];

    if (delay <= 0 || (p->pin_noticed != 0 && now - p->pin_noticed < 10 * delay)) return;
    for (const struct server *s = TAILQ_FIRST(&p->servers[SV_ACTIVE]); s != NULL; s = TAILQ_NEXT(s, entry)) {
        if (s->held != 0 && s->client != NULL && now - s->held_since >= delay) {
            why |= s->held;
            n++;
        }
    }
    if (n == 0) return;
    p->pin_noticed = now;
    pool_log(p, LOGL_WARNING, "%d client%s pinned to %s server for more than %g s (%s), %d of %d servers", n,
             n == 1 ? "" : "s", n == 1 ? "its" : "their", secs(delay), session_held_names(why, names, sizeof(names)), n,
             pool_servers_total(p));
}

/*
 * One pass over a pool's clients and servers, closing whatever outlived its
 * timeout. Each close moves only the object at hand (and its linked peer),
 * so the next element is taken before the current one is handled.
 */
static void maintain(struct pool *p, usec_t now)
{
    static const enum client_state idle_states[] = {CL_IDLE, CL_ACTIVE};
    static const enum client_state wait_states[] = {CL_WELCOME, CL_WAITING};
    const struct pgbun_config     *cfg = pgbun.cfg;
    struct client                 *c, *cnext;
    struct server                 *s, *snext;

    for (size_t i = 0; p->client_idle_timeout > 0 && i < 2; i++) {
        for (c = TAILQ_FIRST(&p->clients[idle_states[i]]); c != NULL; c = cnext) {
            cnext = TAILQ_NEXT(c, entry);
            if (client_idle_for(c, now) > p->client_idle_timeout)
                client_close(c, "57P05", "client_idle_timeout: idle for more than %g s", secs(p->client_idle_timeout));
        }
    }
    for (size_t i = 0; p->query_wait_timeout > 0 && i < 2; i++) {
        for (c = TAILQ_FIRST(&p->clients[wait_states[i]]); c != NULL; c = cnext) {
            cnext = TAILQ_NEXT(c, entry);
            if (now - c->state_since > p->query_wait_timeout) pool_wait_timed_out(c, "query_wait_timeout");
        }
    }
    for (c = TAILQ_FIRST(&p->clients[CL_WAITING]); cfg->query_wait_notify > 0 && c != NULL; c = cnext) {
        cnext = TAILQ_NEXT(c, entry);
        if (c->wait_noticed != c->state_since && now - c->state_since >= cfg->query_wait_notify) {
            c->wait_noticed = c->state_since; /* once per wait */
            client_notice(c, "No server connection available in postgres backend, client being queued");
        }
    }
    for (s = TAILQ_FIRST(&p->servers[SV_ACTIVE]); s != NULL; s = snext) {
        snext = TAILQ_NEXT(s, entry);
        if (!server_close_if_retired(s)) check_linked(s, now);
    }
    notice_long_pins(p, now);
    for (s = TAILQ_FIRST(&p->servers[SV_IDLE]); s != NULL; s = snext) {
        snext = TAILQ_NEXT(s, entry);
        if (pool_server_too_old(s, now))
            server_close(s, "server_lifetime: connection older than %g s", secs(p->server_lifetime));
        else if (cfg->server_idle_timeout > 0 && now - s->state_since > cfg->server_idle_timeout &&
                 pool_servers_total(p) > p->min_pool_size)
            server_close(s, "server_idle_timeout: unused for more than %g s", secs(cfg->server_idle_timeout));
    }
}

/*
 * pool_idle_timeout: a pool without a client or a server for that long is
 * freed, its counters with it. (Objects closing still point at their pool
 * until reaped, at the end of the loop iteration: a pool counts as empty
 * from one janitor run to a later one, never within one.)
 */
static bool deserted(struct pool *p, usec_t now)
{
    int n = p->njobs;

    for (int i = 0; i < CL_NSTATES; i++)
        n += p->nclients[i];
    for (int i = 0; i < SV_NSTATES; i++)
        n += p->nservers[i];
    /* A server moving to another worker is on no list but still points here, and holds its slot. */
    if (n > 0 || p->admin || pool_servers_total(p) > 0) {
        p->empty_since = 0;
        return false;
    }
    if (p->empty_since == 0) p->empty_since = now;
    return pgbun.cfg->pool_idle_timeout > 0 && now - p->empty_since > pgbun.cfg->pool_idle_timeout;
}

/* Keeps min_pool_size servers open, and opens the reserve to clients that waited long enough. */
static void top_up(struct pool *p, usec_t now)
{
    if (pool_is_paused(p->dbname) || pgbun.shutting_down || p->admin) return;
    if (p->blocked && pool_waited_long(p, now)) {
        pool_dispatch(p); /* it may now take an idle server of a pool whose clients are connected */
        return;
    }
    if (pool_reserve_open(p, now)) {
        pool_dispatch(p);
        return;
    }
    pool_open_min(p, now);
}

/* Ends a stats_period: every pool's last_period becomes what it added; logs the totals. */
static void end_stats_period(void)
{
    static struct stats total, sum; /* ~2.5 KiB each: kept off the stack */
    struct pool        *p;
    usec_t              len = stats_period_end(pgbun_now());

    memset(&total, 0, sizeof(total));
    for (p = pool_first(); p != NULL; p = pool_next(p)) {
        stats_diff(&p->last_period, &p->stats, &p->period_start);
        p->period_start = p->stats;
        stats_add(&total, &p->last_period);
    }
    if (!pgbun.cfg->log_stats) return;
    for (p = pool_first(); p != NULL; p = pool_next(p)) {
        if (pool_seen(p)) continue;
        memset(&sum, 0, sizeof(sum));
        for (struct pool *q = p; q != NULL; q = pool_next_same(q))
            stats_add(&sum, &q->last_period);
        stats_log_pool_period(p->dbname, p->user, &sum, len);
    }
    stats_log_period(&total, len);
}

static void janitor_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    struct pool   *p, *next;
    usec_t         now = pgbun_now();

    for (p = pool_first_of(w); p != NULL; p = next) {
        next = TAILQ_NEXT(p, entry);
        if (deserted(p, now)) {
            pool_log(p, LOGL_INFO, "freed, unused for more than %g s (pool_idle_timeout)",
                     secs(pgbun.cfg->pool_idle_timeout));
            pool_remove(p);
            continue;
        }
        maintain(p, now);
        top_up(p, now);
    }
    if (worker_count() > 1) { /* in case a wake-up came between two looks */
        pool_give_wanted();
        pool_serve_blocked();
    }
    if (w->id == 0 && pgbun.cfg->stats_period > 0 && stats_period_age(now) >= pgbun.cfg->stats_period) {
        worker_stop_world();
        end_stats_period();
        worker_start_world();
    }
}

bool janitor_init(struct worker *w)
{
    struct timeval tv = {0, JANITOR_PERIOD_USEC};

    if (!pool_init(w)) return false;
    stats_period_reset(pgbun_now());
    timers[w->id] = event_new(w->base, -1, EV_PERSIST, janitor_cb, w);
    if (timers[w->id] == NULL) return false;
    event_add(timers[w->id], &tv);
    return true;
}

void janitor_fini(struct worker *w)
{
    pool_fini(w);
    if (timers[w->id] != NULL) event_free(timers[w->id]);
    timers[w->id] = NULL;
}

/* ---- counters ---- */

void janitor_log_totals(void)
{
    struct stats sum;

    if (!pgbun.cfg->log_stats) return;
    for (struct pool *p = pool_first(); p != NULL; p = pool_next(p)) {
        if (p->admin || pool_seen(p)) continue;
        memset(&sum, 0, sizeof(sum));
        for (struct pool *q = p; q != NULL; q = pool_next_same(q))
            stats_add(&sum, &q->stats);
        stats_log_totals(p->dbname, p->user, &sum, pool_peak_servers(p));
    }
}

void janitor_reset_stats(void)
{
    struct pool *p;

    for (p = pool_first(); p != NULL; p = pool_next(p)) {
        memset(&p->stats, 0, sizeof(p->stats));
        memset(&p->period_start, 0, sizeof(p->period_start));
        memset(&p->last_period, 0, sizeof(p->last_period));
    }
    pool_reset_peaks(); /* they start from what is open now, not from 0 */
    stats_period_reset(pgbun_now());
}
