/*
 * varlist.h - a small ordered list of (name, value) parameters.
 *
 * Used for startup parameters, ParameterStatus values and the SETs a client
 * expects on its server. Names compare case-insensitively, like GUC names.
 * Lists are short (a dozen entries), so a flat array beats a hash.
 */
#ifndef PGBUN_VARLIST_H
#define PGBUN_VARLIST_H

#include <stdbool.h>
#include <stddef.h>

struct var {
    char *name;
    char *value;
};

struct varlist {
    struct var *vars;
    size_t      count;
    size_t      cap;
};

const char *varlist_get(const struct varlist *vl, const char *name);
/* Sets or replaces; false only on out of memory. */
bool varlist_set(struct varlist *vl, const char *name, const char *value) __attribute__((warn_unused_result));
void varlist_del(struct varlist *vl, const char *name);
void varlist_clear(struct varlist *vl);
bool varlist_copy(struct varlist *dst, const struct varlist *src) __attribute__((warn_unused_result));

#endif
