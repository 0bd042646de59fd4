/*
 * hashtab.h - uthash, as every module uses it.
 *
 * Include this, never <uthash.h> itself: an allocation failure then leaves
 * the entry out of its table (its hh.tbl stays NULL, and the caller reports
 * out of memory) instead of exiting the process.
 */
#ifndef PGBUN_HASHTAB_H
#define PGBUN_HASHTAB_H

#define HASH_NONFATAL_OOM 1
#include <uthash.h>

#endif
