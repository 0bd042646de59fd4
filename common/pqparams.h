/*
 * pqparams.h - the connection keywords pgbun-admin and pgbun-loadtest hand
 * to libpq (PQconnectdbParams, PQconnectStartParams): only the settings that
 * were given, so that libpq fills in the others from PGHOST, PGPORT, PGUSER,
 * PGPASSWORD, PGDATABASE, ~/.pgpass and its own defaults.
 */
#ifndef PGBUN_COMMON_PQPARAMS_H
#define PGBUN_COMMON_PQPARAMS_H

#define PQ_PARAMS_MAX 8

/* Zero-initialize; keys and vals are always NULL-terminated. */
struct pq_params {
    const char *keys[PQ_PARAMS_MAX + 1];
    const char *vals[PQ_PARAMS_MAX + 1];
    int         n;
};

/* Adds key=val; a NULL val is left out (libpq's default applies). */
void pq_param(struct pq_params *p, const char *key, const char *val);

#endif
