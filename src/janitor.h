/*
 * janitor.h - each worker's periodic pass over its pools, and the stats_period.
 *
 * Every JANITOR_PERIOD a worker's timer closes what outlived its timeout,
 * frees pools unused for pool_idle_timeout, keeps min_pool_size servers
 * open and opens the reserve; worker 0 also ends each stats_period. So a
 * timeout fires at most one period late.
 */
#ifndef PGBUN_JANITOR_H
#define PGBUN_JANITOR_H

#include <stdbool.h>

struct worker;

/* Sets up worker w's pools (pool_init) and starts the timer that tends them. */
bool janitor_init(struct worker *w) __attribute__((warn_unused_result));
/* Closes every connection of worker w and frees its pools (pool_fini) and its timer (shutdown, its loop ended). */
void janitor_fini(struct worker *w);
/* Logs each pool's totals (shutdown, with the world stopped). */
void janitor_log_totals(void);
/* Zeroes every counter and high-water mark, and begins a new stats_period (RESET STATS, with the world stopped). */
void janitor_reset_stats(void);

#endif
