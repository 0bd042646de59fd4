/*
 * stats.h - the counters behind pool efficiency.
 *
 * Each pool keeps one struct stats of running totals. Nothing is reset: a
 * rate or an average over a period is the difference of two snapshots
 * (stats_diff), and so is a percentile, because the latency histogram is
 * made of counters too.
 *
 * The histogram has log-linear buckets: values below 16 us get a bucket
 * each, and every power of two above is split into 8 equal buckets, so a
 * reported percentile is within 12.5% of the true value, up to ~12 days.
 */
#ifndef PGBUN_STATS_H
#define PGBUN_STATS_H

#include <stdint.h>

#include "config.h"

#define STATS_SUB_BITS 3
#define STATS_SUB      (1 << STATS_SUB_BITS) /* buckets per power of two */
#define STATS_EXACT    (2 * STATS_SUB)       /* values below this get a bucket each */
#define STATS_TOP_BIT  39                    /* values of 2^40 us and over share the last bucket */
#define STATS_BUCKETS  (STATS_EXACT + (STATS_TOP_BIT - STATS_SUB_BITS) * STATS_SUB)

#define STATS_SCALARS 18 /* the counters before hist */

/*
 * The latency histograms of the metrics endpoint: fixed bounds in decimal
 * seconds, as Prometheus dashboards expect (metrics.c prints them; the
 * bounds are stats_prom_bounds). One count per bucket, not cumulative, so
 * that they add up like every other counter. The last bucket is +Inf.
 */
#define STATS_PROM_BOUNDS  18
#define STATS_PROM_BUCKETS (STATS_PROM_BOUNDS + 1)
enum stats_prom { STATS_PROM_QUERY, STATS_PROM_XACT, STATS_PROM_WAIT, STATS_PROM_KINDS };
extern const usec_t stats_prom_bounds[STATS_PROM_BOUNDS]; /* us, ascending */

/* Every field is a uint64_t counter; `all` lets stats_add and stats_diff walk them. */
struct stats {
    union {
        struct {
            uint64_t assignments;         /* clients given a server */
            uint64_t reused;              /* ... that got a connection already open */
            uint64_t servers_opened;      /* server connections started */
            uint64_t xact_count;          /* transactions ended (ReadyForQuery 'I'), autocommit statements included */
            uint64_t query_count;         /* requests answered (ReadyForQuery) */
            uint64_t bytes_in;            /* read from clients */
            uint64_t bytes_out;           /* written to clients */
            uint64_t xact_time;           /* us, summed over xact_count */
            uint64_t query_time;          /* us, summed over query_count */
            uint64_t wait_time;           /* us clients spent queued for a server, summed over assignments */
            uint64_t parse_count;         /* named Parse messages from clients, while tracked */
            uint64_t server_parse_count;  /* Parse messages pgbun sent for tracked statements */
            uint64_t bind_count;          /* Bind messages of named statements, while tracked */
            uint64_t login_count;         /* client logins */
            uint64_t stmt_hits;           /* a tracked statement the server already had prepared */
            uint64_t stmt_misses;         /* ... that pgbun had to prepare there first */
            uint64_t replays;             /* a client's settings applied to the server it got */
            uint64_t pins;                /* a client pinned to its server (session_state) */
            uint64_t hist[STATS_BUCKETS]; /* query_time, one count per query */
            uint64_t prom[STATS_PROM_KINDS][STATS_PROM_BUCKETS]; /* queries, transactions, waits */
        };
        uint64_t all[STATS_SCALARS + STATS_BUCKETS + STATS_PROM_KINDS * STATS_PROM_BUCKETS];
    };
};

_Static_assert(sizeof(struct stats) ==
                   sizeof(uint64_t) * (STATS_SCALARS + STATS_BUCKETS + STATS_PROM_KINDS * STATS_PROM_BUCKETS),
               "struct stats holds uint64_t counters only");
_Static_assert(STATS_TOP_BIT < 62, "bucket bounds must fit in usec_t");

/* total / n, 0 when n is 0 (an average time per event). */
static inline uint64_t stats_avg(uint64_t total, uint64_t n)
{
    return n ? total / n : 0;
}

/* part of whole in percent, 0 when whole is 0. */
static inline double stats_percent(uint64_t part, uint64_t whole)
{
    return whole ? 100.0 * (double)part / (double)whole : 0.0;
}

/* A query of `latency` us was answered. */
void stats_add_query(struct stats *st, usec_t latency);
/* A transaction of `len` us ended. */
void stats_add_xact(struct stats *st, usec_t len);
/* A client got a server after waiting `wait` us (0: it did not wait). */
void stats_add_wait(struct stats *st, usec_t wait);

/*
 * Events of the whole process that no pool owns, counted by every worker
 * (relaxed atomics: each is rare next to a query).
 */
enum stats_event {
    STATS_EV_TLS_CLIENT_HANDSHAKE, /* a client's TLS handshake completed */
    STATS_EV_TLS_CLIENT_FAILURE,   /* ... failed */
    STATS_EV_TLS_SERVER_HANDSHAKE, /* a server connection's TLS handshake completed */
    STATS_EV_TLS_SERVER_FAILURE,   /* ... failed */
    STATS_EV_AUTHQ_LOOKUP,         /* an auth_query lookup was run */
    STATS_EV_AUTHQ_FAILURE,        /* ... and failed (no answer, an error, a lost server) */
    STATS_EV_KINDS
};
void     stats_event(enum stats_event e);
uint64_t stats_event_count(enum stats_event e);
/* dst += src */
void stats_add(struct stats *dst, const struct stats *src);
/* dst += src for the counters and the metrics buckets only, not the fine histogram (a tenth of the work). */
void stats_add_counters(struct stats *dst, const struct stats *src);
/* dst += src for the fine histogram only (what stats_percentile reads). */
void stats_add_hist(struct stats *dst, const struct stats *src);
/* dst = now - then (counters only grow, so every field stays >= 0) */
void stats_diff(struct stats *dst, const struct stats *now, const struct stats *then);
/* The q-quantile (0 < q <= 1) of the histogram's queries in us; 0 when it is empty. */
usec_t stats_percentile(const struct stats *st, double q);
/* Histogram index of a value, and the smallest value of an index (for tests). */
int    stats_bucket(usec_t v);
usec_t stats_bucket_low(int i);

/*
 * The stats_period, one for the process: SHOW STATS's averages are over the
 * last full one. Changed before the workers run or with the world stopped
 * (worker.h).
 *
 * A period begins at `now` with no full one before it (start, RESET STATS).
 */
void stats_period_reset(usec_t now);
/* How long the current period has lasted at `now`. */
usec_t stats_period_age(usec_t now);
/* The current period ends at `now` and the next one begins; returns how long it lasted. */
usec_t stats_period_end(usec_t now);
/* How long the last full period lasted (its averages are over this), 0 before the first. */
usec_t stats_last_period_len(void);

/* The log lines of log_stats: what a pool (nothing without a query) and what every pool added over a period of
 * `len` us; what a pool did over its life, at most `peak` servers open at once. */
void stats_log_pool_period(const char *dbname, const char *user, const struct stats *st, usec_t len);
void stats_log_period(const struct stats *total, usec_t len);
void stats_log_totals(const char *dbname, const char *user, const struct stats *st, int peak);

#endif
