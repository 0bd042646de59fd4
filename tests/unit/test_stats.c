/*
 * test_stats.c - the latency histogram (bucket edges, quantiles against an
 * exact sort) and snapshot arithmetic.
 */
#include <stdlib.h>

#include "stats.h"
#include "tap.h"

static void test_buckets(void)
{
    int prev = -1, monotonic = 1, edges = 1;

    for (usec_t v = 0; v < 5000000; v += v < 4096 ? 1 : 997) {
        int b = stats_bucket(v);

        if (b < prev) monotonic = 0;
        prev = b;
        if (stats_bucket_low(b) > v || (b + 1 < STATS_BUCKETS && stats_bucket_low(b + 1) <= v)) edges = 0;
    }
    ok(monotonic, "bucket index never decreases with the value");
    ok(edges, "every value lies in [low(b), low(b+1))");
    for (int i = 0; i < STATS_BUCKETS; i++)
        if (stats_bucket(stats_bucket_low(i)) != i) {
            ok(0, "low(%d) maps back to %d", i, i);
            return;
        }
    ok(1, "each bucket's lowest value maps back to it");
    is_int(stats_bucket(0), 0, "0 us is bucket 0");
    is_int(stats_bucket(15), 15, "values below 16 us are exact");
    is_int(stats_bucket(-5), 0, "a negative value counts as 0");
    is_int(stats_bucket((usec_t)1 << 50), STATS_BUCKETS - 1, "huge values share the last bucket");
    is_int(stats_bucket(((usec_t)1 << 40) - 1), STATS_BUCKETS - 1, "2^40-1 us is in the last bucket");
}

static int cmp_usec(const void *a, const void *b)
{
    usec_t x = *(const usec_t *)a, y = *(const usec_t *)b;

    return (x > y) - (x < y);
}

/* Quantiles of a spread of latencies stay within one bucket (12.5%) of the exact ones. */
static void test_quantiles(void)
{
    enum { N = 20000 };
    static usec_t       vals[N];
    static struct stats st;
    static const double qs[] = {0.5, 0.9, 0.95, 0.99, 0.999, 1.0};
    unsigned            seed = 12345;

    is_int(stats_percentile(&st, 0.5), 0, "an empty histogram reports 0");
    for (int i = 0; i < N; i++) {
        seed = seed * 1103515245u + 12345u;
        /* log-uniform between 20 us and ~1 s */
        vals[i] = (usec_t)(20 << ((seed >> 16) % 16)) + (usec_t)((seed >> 4) % 1000);
        stats_add_query(&st, vals[i]);
    }
    qsort(vals, N, sizeof(vals[0]), cmp_usec);
    for (size_t k = 0; k < sizeof(qs) / sizeof(qs[0]); k++) {
        size_t rank = (size_t)(qs[k] * N + 0.999999);
        usec_t exact = vals[rank - 1], got = stats_percentile(&st, qs[k]);

        ok(got >= exact - exact / 8 && got <= exact + exact / 8, "p%g: %lld us, exact %lld us", qs[k] * 100,
           (long long)got, (long long)exact);
    }
    is_int(st.query_count, N, "query_count counts every query");

    {
        struct stats one = {0};

        stats_add_query(&one, 7);
        is_int(stats_percentile(&one, 0.5), 7, "one small value is reported exactly");
        is_int(stats_percentile(&one, 0.99), 7, "and is every percentile");
    }
}

static void test_snapshots(void)
{
    static struct stats a, b, d, sum;

    a.assignments = 10;
    a.bytes_in = 500;
    stats_add_query(&a, 100);
    b = a;
    b.assignments += 5;
    b.bytes_in += 50;
    stats_add_query(&b, 3000);
    stats_add_query(&b, 3000);
    stats_diff(&d, &b, &a);
    is_int(d.assignments, 5, "diff: assignments of the period");
    is_int(d.bytes_in, 50, "diff: bytes of the period");
    is_int(d.query_count, 2, "diff: queries of the period");
    is_int(d.query_time, 6000, "diff: query time of the period");
    ok(stats_percentile(&d, 0.5) >= 2800 && stats_percentile(&d, 0.5) <= 3200,
       "diff: the period's median ignores the earlier 100 us query");
    stats_add(&sum, &a);
    stats_add(&sum, &d);
    is_int(sum.query_count, b.query_count, "add: a + (b - a) = b (queries)");
    is_int(sum.hist[stats_bucket(3000)], 2, "add: histograms add bucket by bucket");
}

/* The metrics endpoint's buckets: a value goes to the first bound it does not exceed (le), and they add up. */
static void test_prom_buckets(void)
{
    static struct stats st, sum;
    uint64_t            n = 0;

    for (int i = 1; i < STATS_PROM_BOUNDS; i++)
        ok(stats_prom_bounds[i] > stats_prom_bounds[i - 1], "bound %d (%lld us) is above the one before", i,
           (long long)stats_prom_bounds[i]);
    is_int(stats_prom_bounds[0], 100, "the first bound is 0.1 ms");
    is_int(stats_prom_bounds[STATS_PROM_BOUNDS - 1], 60000000, "the last is 60 s");
    stats_add_query(&st, 100);      /* on the bound: le="0.0001" */
    stats_add_query(&st, 101);      /* just above: the next */
    stats_add_query(&st, 0);        /* the first */
    stats_add_query(&st, 61000000); /* past the last bound: +Inf */
    stats_add_xact(&st, 2500);      /* le="0.0025" */
    stats_add_wait(&st, 0);         /* a client that did not wait */
    stats_add_wait(&st, -5);        /* a clock that went back counts as 0 */
    is_int(st.prom[STATS_PROM_QUERY][0], 2, "0 and 100 us are in the first bucket");
    is_int(st.prom[STATS_PROM_QUERY][1], 1, "101 us is in the second");
    is_int(st.prom[STATS_PROM_QUERY][STATS_PROM_BOUNDS], 1, "61 s is in +Inf");
    is_int(st.prom[STATS_PROM_XACT][4], 1, "2.5 ms is in le=0.0025");
    is_int(st.xact_count, 1, "stats_add_xact counts the transaction");
    is_int(st.xact_time, 2500, "and its time");
    is_int(st.prom[STATS_PROM_WAIT][0], 2, "waits of 0 are in the first bucket");
    is_int(st.wait_time, 0, "and add no wait time");
    for (int i = 0; i < STATS_PROM_BUCKETS; i++)
        n += st.prom[STATS_PROM_QUERY][i];
    is_int(n, st.query_count, "the query buckets hold every query");
    stats_add(&sum, &st);
    stats_add(&sum, &st);
    is_int(sum.prom[STATS_PROM_QUERY][0], 4, "stats_add adds the buckets");
    {
        static struct stats c, h;

        stats_add_counters(&c, &st);
        is_int(c.query_count, st.query_count, "stats_add_counters adds the counters");
        is_int(c.prom[STATS_PROM_QUERY][0], 2, "and the metrics buckets");
        is_int(c.hist[stats_bucket(100)], 0, "not the fine histogram");
        stats_add_hist(&h, &st);
        is_int(h.hist[stats_bucket(100)], st.hist[stats_bucket(100)], "stats_add_hist adds the fine histogram");
        is_int(h.query_count, 0, "and nothing else");
        is_int(stats_percentile(&h, 1.0), stats_percentile(&st, 1.0), "which is all a percentile reads");
    }
    stats_event(STATS_EV_AUTHQ_LOOKUP);
    stats_event(STATS_EV_AUTHQ_LOOKUP);
    is_int(stats_event_count(STATS_EV_AUTHQ_LOOKUP), 2, "process-wide events are counted");
    is_int(stats_event_count(STATS_EV_TLS_CLIENT_FAILURE), 0, "each on its own");
}

int main(void)
{
    test_buckets();
    test_prom_buckets();
    test_quantiles();
    test_snapshots();
    return done_testing();
}
