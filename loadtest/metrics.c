/*
 * metrics.c - latency histogram and error table of pgbun-loadtest.
 */
#include <stdio.h>
#include <string.h>

#include "metrics.h"

int hist_bucket(nsec_t v)
{
    int msb;

    if (v < 0) v = 0;
    if (v < HIST_EXACT) return (int)v;
    msb = 63 - __builtin_clzll((unsigned long long)v);
    if (msb >= HIST_TOP_BIT) return HIST_BUCKETS - 1;
    return HIST_EXACT + (msb - HIST_SUB_BITS - 1) * HIST_SUB + (int)((v >> (msb - HIST_SUB_BITS)) - HIST_SUB);
}

nsec_t hist_bucket_low(int i)
{
    int k, msb;

    if (i < HIST_EXACT) return i;
    if (i >= HIST_BUCKETS - 1) return (nsec_t)1 << HIST_TOP_BIT;
    k = i - HIST_EXACT;
    msb = k / HIST_SUB + HIST_SUB_BITS + 1;
    return (nsec_t)(HIST_SUB + k % HIST_SUB) << (msb - HIST_SUB_BITS);
}

nsec_t hist_bucket_width(int i)
{
    if (i < HIST_EXACT) return 1;
    if (i >= HIST_BUCKETS - 1) return 0;
    return (nsec_t)1 << ((i - HIST_EXACT) / HIST_SUB + 1);
}

void hist_add(struct hist *h, nsec_t v)
{
    if (v < 0) v = 0;
    h->n++;
    h->sum += (uint64_t)v;
    if ((uint64_t)v > h->max) h->max = (uint64_t)v;
    h->bucket[hist_bucket(v)]++;
}

void hist_merge(struct hist *dst, const struct hist *src)
{
    dst->n += src->n;
    dst->sum += src->sum;
    if (src->max > dst->max) dst->max = src->max;
    for (int i = 0; i < HIST_BUCKETS; i++)
        dst->bucket[i] += src->bucket[i];
}

void hist_clear(struct hist *h)
{
    memset(h, 0, sizeof(*h));
}

double hist_avg_ms(const struct hist *h)
{
    return h->n ? (double)h->sum / (double)h->n / NS_PER_MS : 0.0;
}

double hist_quantile_ms(const struct hist *h, double q)
{
    uint64_t rank, seen = 0;

    if (h->n == 0) return 0.0;
    rank = (uint64_t)(q * (double)h->n + 0.999999);
    if (rank < 1) rank = 1;
    if (rank > h->n) rank = h->n;
    for (int i = 0; i < HIST_BUCKETS; i++) {
        seen += h->bucket[i];
        if (seen >= rank) {
            /* The middle of the bucket, never past the largest value seen. */
            double v = (double)hist_bucket_low(i) + (double)hist_bucket_width(i) / 2.0;

            if (v > (double)h->max) v = (double)h->max;
            return v / NS_PER_MS;
        }
    }
    return (double)h->max / NS_PER_MS;
}

void errors_add(struct errors *e, const char *code, const char *message)
{
    int i;

    if (code == NULL || code[0] == '\0') code = "unknown";
    e->total++;
    for (i = 0; i < e->nkinds; i++)
        if (strcmp(e->kind[i].code, code) == 0) break;
    if (i == e->nkinds) {
        if (e->nkinds < ERR_KINDS) {
            e->nkinds++;
        } else {
            i = ERR_KINDS;
            code = "other";
        }
        snprintf(e->kind[i].code, sizeof(e->kind[i].code), "%s", code);
    }
    e->kind[i].count++;
    if (message != NULL && e->nsamples < ERR_SAMPLES) {
        char  *s = e->sample[e->nsamples];
        size_t len;

        snprintf(s, sizeof(e->sample[0]), "%s: %s", code, message);
        len = strlen(s);
        if (len == sizeof(e->sample[0]) - 1) {
            /* Cut short: drop a UTF-8 sequence the cut left incomplete. */
            size_t lead = len;

            while (lead > 0 && ((unsigned char)s[lead - 1] & 0xC0) == 0x80)
                lead--;
            if (lead > 0 && (unsigned char)s[lead - 1] >= 0xC0) {
                unsigned char c = (unsigned char)s[lead - 1];
                size_t        need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;

                if (len - (lead - 1) < need) len = lead - 1;
            }
            s[len] = '\0';
        }
        while (len > 0 && (s[len - 1] == '\n' || s[len - 1] == ' '))
            s[--len] = '\0';
        for (int j = 0; j < e->nsamples; j++)
            if (strcmp(e->sample[j], s) == 0) return; /* one sample per distinct message */
        e->nsamples++;
    }
}
