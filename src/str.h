/*
 * str.h - string helpers any module may use; header only, it calls nothing.
 */
#ifndef PGBUN_STR_H
#define PGBUN_STR_H

#include <stdbool.h>
#include <string.h>

/* Equal strings, or both NULL. */
static inline bool str_same(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

#endif
