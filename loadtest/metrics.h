/*
 * metrics.h - what pgbun-loadtest measures: query latencies in a fine
 * log-linear histogram, and errors counted by SQLSTATE with the first few
 * messages kept.
 *
 * The histogram gives each value below 256 ns its own bucket and splits every
 * power of two above into 128 buckets, so a reported percentile is within
 * 0.8% of the true value; averages and the maximum are exact.
 */
#ifndef PGBUN_LOADTEST_METRICS_H
#define PGBUN_LOADTEST_METRICS_H

#include <stdbool.h>
#include <stdint.h>

typedef int64_t nsec_t;

#define NS_PER_MS  1000000LL
#define NS_PER_SEC 1000000000LL

#define HIST_SUB_BITS 7
#define HIST_SUB      (1 << HIST_SUB_BITS)
#define HIST_EXACT    (2 * HIST_SUB)
#define HIST_TOP_BIT  44 /* values of 2^44 ns (about 4.9 hours) and over share the last bucket */
#define HIST_BUCKETS  (HIST_EXACT + (HIST_TOP_BIT - HIST_SUB_BITS - 1) * HIST_SUB + 1)

struct hist {
    uint64_t n;                    /* values recorded */
    uint64_t sum;                  /* their sum, ns */
    uint64_t max;                  /* the largest, ns */
    uint64_t bucket[HIST_BUCKETS]; /* counts */
};

void   hist_add(struct hist *h, nsec_t v);
void   hist_merge(struct hist *dst, const struct hist *src);
void   hist_clear(struct hist *h);
double hist_avg_ms(const struct hist *h);
/* The q-quantile (0 < q <= 1) in ms; 0 when the histogram is empty. */
double hist_quantile_ms(const struct hist *h, double q);
/* Bucket index of a value and the bucket's bounds (for tests and quantiles). */
int    hist_bucket(nsec_t v);
nsec_t hist_bucket_low(int i);
nsec_t hist_bucket_width(int i);

#define ERR_KINDS   64 /* distinct SQLSTATEs kept; the rest count as "other" */
#define ERR_SAMPLES 5  /* messages kept */

struct errors {
    uint64_t total;
    int      nkinds;
    struct {
        char     code[24];
        uint64_t count;
    } kind[ERR_KINDS + 1];
    int  nsamples;
    char sample[ERR_SAMPLES][256];
};

/* Counts one error. code is a SQLSTATE, or a name for a failure the load
 * tester detected itself (see README); message may be NULL. */
void errors_add(struct errors *e, const char *code, const char *message);

#endif
