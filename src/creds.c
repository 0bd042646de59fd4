/*
 * creds.c - credentials learned at run time, in one table by user name:
 *
 *   user --> keys (SCRAM pass-through: ClientKey, ServerKey), or none
 *        --> found: one secret per place auth_query asked (where), with
 *            when and in which generation it was found
 *
 * Workers look things up at logins only (never per query), so one mutex
 * guards it all. Entries stay until exit: there is one per role that
 * logged in, and a role's secret is small.
 */
#include "creds.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "hashtab.h"

struct found {
    struct found *next;
    char         *where;  /* auth database and auth_user */
    char         *secret; /* NULL: the role has no usable password */
    usec_t        at;     /* when it was found */
    unsigned      gen;    /* creds_gen() when its lookup began */
};

struct user_creds {
    UT_hash_handle hh;
    char          *user;
    struct found  *found;
    bool           has_keys;
    uint8_t        client_key[SCRAM_KEY_LEN];
    uint8_t        server_key[SCRAM_KEY_LEN];
};

static pthread_mutex_t    lock = PTHREAD_MUTEX_INITIALIZER;
static struct user_creds *table;
static unsigned           generation = 1;

static void secret_free(char *p)
{
    if (p != NULL) OPENSSL_cleanse(p, strlen(p));
    free(p);
}

static struct user_creds *user_get(const char *user, bool make)
{
    struct user_creds *u;

    HASH_FIND_STR(table, user, u);
    if (u != NULL || !make) return u;
    if ((u = calloc(1, sizeof(*u))) == NULL || (u->user = strdup(user)) == NULL) {
        free(u);
        return NULL;
    }
    HASH_ADD_KEYPTR(hh, table, u->user, strlen(u->user), u);
    if (u->hh.tbl == NULL) {
        free(u->user);
        free(u);
        return NULL;
    }
    return u;
}

static struct found *found_at(const struct user_creds *u, const char *where)
{
    for (struct found *f = u != NULL ? u->found : NULL; f != NULL; f = f->next)
        if (strcmp(f->where, where) == 0) return f;
    return NULL;
}

bool creds_find(const char *user, const char *where, usec_t now, usec_t ttl, char **secret, bool *oom)
{
    const struct found *f;
    bool                fresh;

    *secret = NULL;
    *oom = false;
    pthread_mutex_lock(&lock);
    f = found_at(user_get(user, false), where);
    fresh = f != NULL && f->gen == generation && now - f->at < ttl;
    if (fresh && f->secret != NULL && (*secret = strdup(f->secret)) == NULL) fresh = false, *oom = true;
    pthread_mutex_unlock(&lock);
    return fresh;
}

void creds_put(const char *user, const char *where, const char *secret, unsigned gen, usec_t now)
{
    struct user_creds *u;
    struct found      *f;
    char              *copy = NULL;

    pthread_mutex_lock(&lock);
    if (gen != generation || (u = user_get(user, true)) == NULL) goto out;
    if (secret != NULL && (copy = strdup(secret)) == NULL) goto out;
    if ((f = found_at(u, where)) == NULL) {
        if ((f = calloc(1, sizeof(*f))) == NULL || (f->where = strdup(where)) == NULL) {
            free(f);
            secret_free(copy);
            goto out;
        }
        f->next = u->found;
        u->found = f;
    }
    secret_free(f->secret);
    f->secret = copy;
    f->at = now;
    f->gen = gen;
out:
    pthread_mutex_unlock(&lock);
}

void creds_drop(const char *user, const char *where)
{
    struct found *f;

    pthread_mutex_lock(&lock);
    if ((f = found_at(user_get(user, false), where)) != NULL) f->gen = 0; /* stale: asked again, still shown */
    pthread_mutex_unlock(&lock);
}

void creds_reset(void)
{
    pthread_mutex_lock(&lock);
    if (++generation == 0) generation = 1; /* 0 marks a dropped entry */
    pthread_mutex_unlock(&lock);
}

unsigned creds_gen(void)
{
    unsigned g;

    pthread_mutex_lock(&lock);
    g = generation;
    pthread_mutex_unlock(&lock);
    return g;
}

bool creds_found_by_query(const char *user)
{
    bool yes;

    pthread_mutex_lock(&lock);
    {
        const struct user_creds *u = user_get(user, false);

        yes = u != NULL && u->found != NULL;
    }
    pthread_mutex_unlock(&lock);
    return yes;
}

bool creds_md5_secret(const char *user, char *out)
{
    const struct found *best = NULL;

    pthread_mutex_lock(&lock);
    {
        const struct user_creds *u = user_get(user, false);

        for (const struct found *f = u != NULL ? u->found : NULL; f != NULL; f = f->next)
            if (f->secret != NULL && secret_is_md5(f->secret) && (best == NULL || f->at > best->at)) best = f;
        if (best != NULL) memcpy(out, best->secret, MD5_PASSWD_LEN + 1);
    }
    pthread_mutex_unlock(&lock);
    return best != NULL;
}

void creds_put_scram_keys(const char *user, const uint8_t client_key[SCRAM_KEY_LEN],
                          const uint8_t server_key[SCRAM_KEY_LEN])
{
    struct user_creds *u;

    pthread_mutex_lock(&lock);
    if ((u = user_get(user, true)) != NULL) {
        memcpy(u->client_key, client_key, SCRAM_KEY_LEN);
        memcpy(u->server_key, server_key, SCRAM_KEY_LEN);
        u->has_keys = true;
    }
    pthread_mutex_unlock(&lock);
}

bool creds_scram_keys(const char *user, uint8_t client_key[SCRAM_KEY_LEN], uint8_t server_key[SCRAM_KEY_LEN])
{
    const struct user_creds *u;
    bool                     have;

    pthread_mutex_lock(&lock);
    u = user_get(user, false);
    have = u != NULL && u->has_keys;
    if (have) {
        memcpy(client_key, u->client_key, SCRAM_KEY_LEN);
        memcpy(server_key, u->server_key, SCRAM_KEY_LEN);
    }
    pthread_mutex_unlock(&lock);
    return have;
}

void creds_fini(void)
{
    struct user_creds *u, *tmp;

    pthread_mutex_lock(&lock);
    HASH_ITER(hh, table, u, tmp)
    {
        HASH_DEL(table, u);
        while (u->found != NULL) {
            struct found *f = u->found;

            u->found = f->next;
            secret_free(f->secret);
            free(f->where);
            free(f);
        }
        OPENSSL_cleanse(u->client_key, sizeof(u->client_key));
        OPENSSL_cleanse(u->server_key, sizeof(u->server_key));
        free(u->user);
        free(u);
    }
    pthread_mutex_unlock(&lock);
}
