/*
 * tap.h - a minimal Test Anything Protocol emitter for the unit tests.
 *
 *   plan_no_plan(); ok(cond, "name"); is_int(got, want, "name");
 *   is_str(got, want, "name"); return done_testing();
 */
#ifndef PGBUN_TAP_H
#define PGBUN_TAP_H

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int tap_run, tap_failed;

__attribute__((format(printf, 2, 3), unused)) static int ok(int cond, const char *fmt, ...)
{
    va_list ap;

    tap_run++;
    if (!cond) tap_failed++;
    printf("%sok %d - ", cond ? "" : "not ", tap_run);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
    return cond;
}

#define is_int(got, want, ...)                                                                                         \
    do {                                                                                                               \
        long long g_ = (long long)(got), w_ = (long long)(want);                                                       \
        if (!ok(g_ == w_, __VA_ARGS__)) printf("#   got %lld, want %lld\n", g_, w_);                                   \
    } while (0)

#define is_str(got, want, ...)                                                                                         \
    do {                                                                                                               \
        const char *g_ = (got), *w_ = (want);                                                                          \
        int         same_ = (g_ == NULL && w_ == NULL) || (g_ && w_ && strcmp(g_, w_) == 0);                           \
        if (!ok(same_, __VA_ARGS__)) printf("#   got '%s', want '%s'\n", g_ ? g_ : "(null)", w_ ? w_ : "(null)");      \
    } while (0)

__attribute__((unused)) static int done_testing(void)
{
    printf("1..%d\n", tap_run);
    return tap_failed ? 1 : 0;
}

#endif
