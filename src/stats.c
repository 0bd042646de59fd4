/*
 * stats.c - running totals, snapshot differences and histogram quantiles.
 */
#include "stats.h"

#include <stddef.h>

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
}

#define NCOUNTERS (sizeof(((struct stats *)0)->all) / sizeof(uint64_t))

void stats_add(struct stats *dst, const struct stats *src)
{
    for (size_t i = 0; i < NCOUNTERS; i++)
        dst->all[i] += src->all[i];
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
