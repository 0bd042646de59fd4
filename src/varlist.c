/*
 * varlist.c - ordered (name, value) list with case-insensitive names.
 */
#include "varlist.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

static struct var *find(const struct varlist *vl, const char *name)
{
    for (size_t i = 0; i < vl->count; i++)
        if (strcasecmp(vl->vars[i].name, name) == 0) return &vl->vars[i];
    return NULL;
}

const char *varlist_get(const struct varlist *vl, const char *name)
{
    struct var *v = find(vl, name);

    return v ? v->value : NULL;
}

bool varlist_set(struct varlist *vl, const char *name, const char *value)
{
    struct var *v = find(vl, name);
    char       *copy = strdup(value);

    if (copy == NULL) return false;
    if (v != NULL) {
        free(v->value);
        v->value = copy;
        return true;
    }
    if (vl->count == vl->cap) {
        size_t      cap = vl->cap ? vl->cap * 2 : 8;
        struct var *vars = realloc(vl->vars, cap * sizeof(*vars));

        if (vars == NULL) goto fail;
        vl->vars = vars;
        vl->cap = cap;
    }
    v = &vl->vars[vl->count];
    v->name = strdup(name);
    if (v->name == NULL) goto fail;
    v->value = copy;
    vl->count++;
    return true;
fail:
    free(copy);
    return false;
}

void varlist_del(struct varlist *vl, const char *name)
{
    struct var *v = find(vl, name);

    if (v == NULL) return;
    free(v->name);
    free(v->value);
    memmove(v, v + 1, (size_t)(vl->vars + vl->count - (v + 1)) * sizeof(*v));
    vl->count--;
}

void varlist_clear(struct varlist *vl)
{
    for (size_t i = 0; i < vl->count; i++) {
        free(vl->vars[i].name);
        free(vl->vars[i].value);
    }
    free(vl->vars);
    vl->vars = NULL;
    vl->count = vl->cap = 0;
}

bool varlist_copy(struct varlist *dst, const struct varlist *src)
{
    for (size_t i = 0; i < src->count; i++)
        if (!varlist_set(dst, src->vars[i].name, src->vars[i].value)) return false;
    return true;
}
