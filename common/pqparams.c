/*
 * pqparams.c - libpq keyword/value lists of the settings given.
 */
#include "pqparams.h"

#include <assert.h>
#include <stddef.h>

void pq_param(struct pq_params *p, const char *key, const char *val)
{
    assert(p->n < PQ_PARAMS_MAX);
    if (val == NULL || p->n >= PQ_PARAMS_MAX) return;
    p->keys[p->n] = key;
    p->vals[p->n++] = val;
    p->keys[p->n] = p->vals[p->n] = NULL;
}
