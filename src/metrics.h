/*
 * metrics.h - the Prometheus endpoint: GET /metrics over HTTP (libevent's
 * evhttp) on worker 0's loop, when metrics_listen_port is not 0.
 *
 * It serves the metric names of prometheus-community's pgbouncer_exporter,
 * read from the console's own SHOW results the way that exporter reads
 * them, and pgbun's own under pgbun_ (latency histograms, reuse, prepared
 * statements, session state, TLS, auth_query, worker load). The text format
 * by default, OpenMetrics when the scraper's Accept header asks for it.
 */
#ifndef PGBUN_METRICS_H
#define PGBUN_METRICS_H

#include <stdbool.h>
#include <sys/types.h>

struct pgbun_config;

/* Listens as cfg says (nothing when metrics_listen_port is 0); false with *err (malloc'd) when it cannot. */
bool metrics_start(const struct pgbun_config *cfg, char **err) __attribute__((warn_unused_result));
/* RELOAD, once metrics_start ran: listens anew when the address, port or socket mode changed (a failure is
 * logged, and the endpoint is off). */
void metrics_apply(const struct pgbun_config *old, const struct pgbun_config *cfg);
/* Gives the unix sockets to the user pgbun runs as. */
void metrics_chown(uid_t uid, gid_t gid);
/* Closes everything, removes the unix sockets. */
void metrics_stop(void);

#endif
