/*
 * stats.c - running totals, snapshot differences and histogram quantiles;
 * the stats_period and the log lines made of the counters.
 */
#define LOG_EVENT LOGE_STATS /* the event kind of this file's log lines (log.h) */
#include "stats.h"

#include <stdatomic.h>
#include <stddef.h>

#include "log.h"

static usec_t period_began; /* when the current stats_period began */
static usec_t period_len;   /* how long the last full one lasted */

static atomic_uint_fast64_t events[STATS_EV_KINDS];

const usec_t stats_prom_bounds[STATS_PROM_BOUNDS] = {
    100,    250,    500,    1000,    2500,    5000,    10000,    25000,    50000,
    100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000, 30000000, 60000000,
};

/* The metrics bucket of a value: the first bound it does not exceed (most are within the first few). */
static int prom_bucket(usec_t v)
{
    int i = 0;

    while (i < STATS_PROM_BOUNDS && v > stats_prom_bounds[i])
        i++;
    return i;
}

int stats_bucket(usec_t v)
{
    int e;

    if (v < STATS_EXACT) return v < 0 ? 0 : (int)v;
    e = 63 - __builtin_clzll((unsigned long long)v); /* v >= 2^e */
    if (e > STATS_TOP_BIT) return STATS_BUCKETS - 1;
    return STATS_EXACT + (e - STATS_SUB_BITS - 1) * STATS_SUB + (int)((v >> (e - STATS_SUB_BITS)) & (STATS_SUB - 1));
}

usec_t stats_bucket_low(int i)
{
    int j, e;

    if (i < STATS_EXACT) return i;
    j = i - STATS_EXACT;
    e = j / STATS_SUB + STATS_SUB_BITS + 1;
    return (usec_t)(STATS_SUB + j % STATS_SUB) << (e - STATS_SUB_BITS);
}

static usec_t bucket_width(int i)
{
    return i < STATS_EXACT ? 1 : stats_bucket_low(i) / STATS_SUB;
}

void stats_add_query(struct stats *st, usec_t latency)
{
    if (latency < 0) latency = 0;
    st->query_count++;
    st->query_time += (uint64_t)latency;
    st->hist[stats_bucket(latency)]++;
    st->prom[STATS_PROM_QUERY][prom_bucket(latency)]++;
}

void stats_add_xact(struct stats *st, usec_t len)
{
    if (len < 0) len = 0;
    st->xact_count++;
    st->xact_time += (uint64_t)len;
    st->prom[STATS_PROM_XACT][prom_bucket(len)]++;
}

void stats_add_wait(struct stats *st, usec_t wait)
{
    if (wait < 0) wait = 0;
    st->wait_time += (uint64_t)wait;
    st->prom[STATS_PROM_WAIT][prom_bucket(wait)]++;
}

void stats_event(enum stats_event e)
{
    atomic_fetch_add_explicit(&events[e], 1, memory_order_relaxed);
}

uint64_t stats_event_count(enum stats_event e)
{
    return atomic_load_explicit(&events[e], memory_order_relaxed);
}

#define NCOUNTERS (sizeof(((struct stats *)0)->all) / sizeof(uint64_t))

void stats_add(struct stats *dst, const struct stats *src)
{
    for (size_t i = 0; i < NCOUNTERS; i++)
        dst->all[i] += src->all[i];
}

void stats_add_counters(struct stats *dst, const struct stats *src)
{
    for (size_t i = 0; i < STATS_SCALARS; i++)
        dst->all[i] += src->all[i];
    for (int k = 0; k < STATS_PROM_KINDS; k++)
        for (int i = 0; i < STATS_PROM_BUCKETS; i++)
            dst->prom[k][i] += src->prom[k][i];
}

void stats_add_hist(struct stats *dst, const struct stats *src)
{
    for (int i = 0; i < STATS_BUCKETS; i++)
        dst->hist[i] += src->hist[i];
}

void stats_diff(struct stats *dst, const struct stats *now, const struct stats *then)
{
    for (size_t i = 0; i < NCOUNTERS; i++)
        dst->all[i] = now->all[i] - then->all[i];
}

usec_t stats_percentile(const struct stats *st, double q)
{
    uint64_t total = 0, seen = 0, rank;
    double   r;

    for (int i = 0; i < STATS_BUCKETS; i++)
        total += st->hist[i];
    if (total == 0) return 0;
    if (q > 1) q = 1;
    r = q * (double)total; /* rank = ceil(r), at least 1 */
    rank = (uint64_t)r;
    if ((double)rank < r || rank == 0) rank++;
    for (int i = 0; i < STATS_BUCKETS; i++) {
        uint64_t n = st->hist[i];

        if (n == 0) continue;
        if (seen + n >= rank) {
            /* Spread the bucket's counts evenly over its width. */
            double frac = (double)(rank - seen) / (double)n;

            return stats_bucket_low(i) + (usec_t)(frac * (double)(bucket_width(i) - 1) + 0.5);
        }
        seen += n;
    }
    return stats_bucket_low(STATS_BUCKETS - 1);
}

void stats_period_reset(usec_t now)
{
    period_began = now;
    period_len = 0;
}

usec_t stats_period_age(usec_t now)
{
    return now - period_began;
}

usec_t stats_period_end(usec_t now)
{
    period_len = now - period_began;
    period_began = now;
    return period_len;
}

usec_t stats_last_period_len(void)
{
    return period_len;
}

/* A period's length in seconds, to divide by: 1 for an empty one. */
static double period_secs(usec_t len)
{
    return len > 0 ? (double)len / USEC_PER_SEC : 1;
}

/*
 * The log_stats lines. The text has the figures in its message; JSON has
 * them as fields too (rates per second, times in microseconds, counts).
 */
void stats_log_pool_period(const char *dbname, const char *user, const struct stats *st, usec_t len)
{
    double           s = period_secs(len);
    double           xacts = (double)st->xact_count / s, queries = (double)st->query_count / s;
    long long        avg = (long long)stats_avg(st->query_time, st->query_count);
    long long        p95 = (long long)stats_percentile(st, 0.95);
    double           reused = stats_percent(st->reused, st->assignments);
    struct log_field f[] = {
        LOG_STR("database", dbname),
        LOG_STR("user", user),
        LOG_NUM("period_sec", s),
        LOG_NUM("xacts_per_sec", xacts),
        LOG_NUM("queries_per_sec", queries),
        LOG_INT("query_avg_us", avg),
        LOG_INT("query_p95_us", p95),
        LOG_NUM("reused_pct", reused),
    };

    if (st->query_count == 0) return;
    log_line(LOGL_INFO, LOGE_STATS, NULL, f, (int)(sizeof(f) / sizeof(f[0])),
             "stats: pool %s/%s: %.0f xacts/s, %.0f queries/s, query %lld us (p95 %lld us), %.1f%% reused", dbname,
             user, xacts, queries, avg, p95, reused);
}

void stats_log_period(const struct stats *total, usec_t len)
{
    double           s = period_secs(len);
    double           xacts = (double)total->xact_count / s, queries = (double)total->query_count / s;
    double           in = (double)total->bytes_in / s, out = (double)total->bytes_out / s;
    long long        xact_avg = (long long)stats_avg(total->xact_time, total->xact_count);
    long long        query_avg = (long long)stats_avg(total->query_time, total->query_count);
    long long        wait_avg = (long long)stats_avg(total->wait_time, total->assignments);
    long long        p50 = (long long)stats_percentile(total, 0.50), p95 = (long long)stats_percentile(total, 0.95);
    long long        p99 = (long long)stats_percentile(total, 0.99);
    struct log_field f[] = {
        LOG_NUM("period_sec", s),
        LOG_NUM("xacts_per_sec", xacts),
        LOG_NUM("queries_per_sec", queries),
        LOG_NUM("bytes_in_per_sec", in),
        LOG_NUM("bytes_out_per_sec", out),
        LOG_INT("xact_avg_us", xact_avg),
        LOG_INT("query_avg_us", query_avg),
        LOG_INT("wait_avg_us", wait_avg),
        LOG_INT("query_p50_us", p50),
        LOG_INT("query_p95_us", p95),
        LOG_INT("query_p99_us", p99),
        LOG_INT("assignments", total->assignments),
        LOG_INT("reused", total->reused),
        LOG_INT("servers_opened", total->servers_opened),
    };

    log_line(LOGL_INFO, LOGE_STATS, NULL, f, (int)(sizeof(f) / sizeof(f[0])),
             "stats: %.0f xacts/s, %.0f queries/s, in %.0f B/s, out %.0f B/s, xact %lld us, query %lld us, "
             "wait %lld us, query p50 %lld us, p95 %lld us, p99 %lld us, %llu of %llu server assignments reused, "
             "%llu servers opened",
             xacts, queries, in, out, xact_avg, query_avg, wait_avg, p50, p95, p99, (unsigned long long)total->reused,
             (unsigned long long)total->assignments, (unsigned long long)total->servers_opened);
}

void stats_log_totals(const char *dbname, const char *user, const struct stats *st, int peak)
{
    struct log_who   who = {'P', 0, dbname, user, NULL, 0};
    long long        xact_avg = (long long)stats_avg(st->xact_time, st->xact_count);
    long long        query_avg = (long long)stats_avg(st->query_time, st->query_count);
    long long        wait_avg = (long long)stats_avg(st->wait_time, st->assignments);
    long long        p50 = (long long)stats_percentile(st, 0.50), p95 = (long long)stats_percentile(st, 0.95);
    long long        p99 = (long long)stats_percentile(st, 0.99);
    struct log_field f[] = {
        LOG_INT("xacts", st->xact_count),
        LOG_INT("queries", st->query_count),
        LOG_INT("assignments", st->assignments),
        LOG_INT("reused", st->reused),
        LOG_INT("servers_opened", st->servers_opened),
        LOG_INT("servers_peak", peak),
        LOG_INT("bytes_in", st->bytes_in),
        LOG_INT("bytes_out", st->bytes_out),
        LOG_INT("xact_avg_us", xact_avg),
        LOG_INT("query_avg_us", query_avg),
        LOG_INT("wait_avg_us", wait_avg),
        LOG_INT("query_p50_us", p50),
        LOG_INT("query_p95_us", p95),
        LOG_INT("query_p99_us", p99),
    };

    log_line(LOGL_INFO, LOGE_STATS, &who, f, (int)(sizeof(f) / sizeof(f[0])),
             "%llu transactions, %llu queries, %llu server assignments (%llu reused), %llu server connections opened, "
             "at most %d at once, %llu bytes in, %llu bytes out; average xact %lld us, query %lld us, wait %lld us; "
             "query p50 %lld us, p95 %lld us, p99 %lld us",
             (unsigned long long)st->xact_count, (unsigned long long)st->query_count,
             (unsigned long long)st->assignments, (unsigned long long)st->reused,
             (unsigned long long)st->servers_opened, peak, (unsigned long long)st->bytes_in,
             (unsigned long long)st->bytes_out, xact_avg, query_avg, wait_avg, p50, p95, p99);
}
