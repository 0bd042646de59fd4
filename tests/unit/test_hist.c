/*
 * test_hist.c - pgbun-loadtest's latency histogram: bucket edges, quantiles
 * within 0.8% of an exact sort, merging, and the error table.
 */
#include <math.h>
#include <stdlib.h>

#include "metrics.h"
#include "tap.h"

static void test_buckets(void)
{
    int prev = -1, monotonic = 1, edges = 1, back = 1;

    for (nsec_t v = 0; v < 50 * NS_PER_SEC; v += v < 100000 ? 1 : v / 1000 + 7) {
        int b = hist_bucket(v);

        if (b < prev) monotonic = 0;
        prev = b;
        if (hist_bucket_low(b) > v || v >= hist_bucket_low(b) + hist_bucket_width(b)) edges = 0;
    }
    ok(monotonic, "bucket index never decreases with the value");
    ok(edges, "every value lies in [low(b), low(b) + width(b))");
    for (int i = 0; i < HIST_BUCKETS - 1; i++)
        if (hist_bucket(hist_bucket_low(i)) != i || hist_bucket_low(i) + hist_bucket_width(i) != hist_bucket_low(i + 1))
            back = 0;
    ok(back, "buckets map back to themselves and tile the range without gaps");
    is_int(hist_bucket(255), 255, "values below 256 ns are exact");
    is_int(hist_bucket(-3), 0, "a negative value counts as 0");
    is_int(hist_bucket((nsec_t)1 << 50), HIST_BUCKETS - 1, "huge values share the last bucket");
    ok((double)hist_bucket_width(hist_bucket(NS_PER_MS)) / (double)NS_PER_MS < 0.008,
       "a bucket near 1 ms is under 0.8%% wide");
}

static int cmp_ns(const void *a, const void *b)
{
    nsec_t x = *(const nsec_t *)a, y = *(const nsec_t *)b;

    return (x > y) - (x < y);
}

static void test_quantiles(void)
{
    enum { N = 50000 };
    static nsec_t      v[N];
    static struct hist h, a, b;
    double             qs[] = {0.5, 0.9, 0.95, 0.99, 0.999, 1.0};
    double             sum = 0;
    int                close = 1;

    srand(7);
    for (int i = 0; i < N; i++) {
        /* a long-tailed mix: most around 0.2-2 ms, a few up to 2 s */
        v[i] = (nsec_t)(200000 + rand() % 1800000);
        if (i % 100 == 0) v[i] = (nsec_t)(rand() % 2000) * NS_PER_MS;
        sum += (double)v[i];
        hist_add(&h, v[i]);
        hist_add(i % 2 ? &a : &b, v[i]);
    }
    qsort(v, N, sizeof(v[0]), cmp_ns);
    for (size_t i = 0; i < sizeof(qs) / sizeof(qs[0]); i++) {
        size_t rank = (size_t)ceil(qs[i] * N);
        double exact = (double)v[rank - 1] / NS_PER_MS, got = hist_quantile_ms(&h, qs[i]);

        if (fabs(got - exact) > exact * 0.008 + 1e-6) {
            close = 0;
            printf("# q=%.3f: %.4f ms, exact %.4f ms\n", qs[i], got, exact);
        }
    }
    ok(close, "quantiles are within 0.8%% of an exact sort");
    ok(fabs(hist_avg_ms(&h) - sum / N / NS_PER_MS) < 1e-6, "the average is exact");
    ok(hist_quantile_ms(&h, 1.0) <= (double)v[N - 1] / NS_PER_MS, "no quantile exceeds the maximum");
    hist_merge(&a, &b);
    ok(a.n == h.n && a.sum == h.sum && a.max == h.max && memcmp(a.bucket, h.bucket, sizeof(h.bucket)) == 0,
       "merging two halves gives the whole");
    hist_clear(&a);
    ok(a.n == 0 && hist_quantile_ms(&a, 0.95) == 0.0 && hist_avg_ms(&a) == 0.0, "an empty histogram reports 0");
}

static void test_errors(void)
{
    static struct errors e;
    char                 code[16];

    errors_add(&e, "22012", "division by zero");
    errors_add(&e, "22012", "division by zero");
    errors_add(&e, NULL, "lost\n");
    is_int((int)e.total, 3, "every error is counted");
    is_int(e.nkinds, 2, "one kind per SQLSTATE");
    is_str(e.kind[1].code, "unknown", "no SQLSTATE counts as unknown");
    is_int(e.nsamples, 2, "a repeated message is kept once");
    is_str(e.sample[1], "unknown: lost", "a sample names its SQLSTATE, without the trailing newline");
    {
        static struct errors u;
        char                 msg[400];

        /* 'é' (2 bytes) straddles the 255-byte cut: the sample stops before it */
        memset(msg, 'a', sizeof(msg));
        msg[246] = (char)0xC3;
        msg[247] = (char)0xA9;
        msg[sizeof(msg) - 1] = '\0';
        errors_add(&u, "XX000", msg); /* "XX000: " is 7 bytes: the 'é' is at 253-254, cut after 254 */
        is_int((int)strlen(u.sample[0]), 255, "a long sample keeps a whole UTF-8 character at the cut");
        msg[246] = 'a';
        msg[247] = (char)0xC3;
        msg[248] = (char)0xA9;
        errors_add(&u, "XX001", msg); /* now at 254-255: half of it would be kept */
        is_int((int)strlen(u.sample[1]), 254, "... and drops one the cut would split");
    }
    for (int i = 0; i < ERR_KINDS + 10; i++) {
        snprintf(code, sizeof(code), "X%04d", i);
        errors_add(&e, code, NULL);
    }
    is_int(e.nkinds, ERR_KINDS, "the table keeps at most ERR_KINDS kinds");
    is_int((int)e.kind[ERR_KINDS].count, 12, "the rest count as other");
    is_str(e.kind[ERR_KINDS].code, "other", "... under that name");
    is_int((int)e.total, 3 + ERR_KINDS + 10, "the total counts them all");
}

int main(void)
{
    test_buckets();
    test_quantiles();
    test_errors();
    return done_testing();
}
