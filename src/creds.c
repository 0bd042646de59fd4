/*
 * creds.c - credentials learned at run time, in one table by user name:
 *
 *   user --> one entry per place its secret comes from ("auth_file", or
 *            "auth database/auth_user" for auth_query): the secret found
 *            there, when and in which generation; the SCRAM keys a client
 *            revealed against that secret (pass-through)
 *
 * By place, because one role name may have other passwords on other
 * servers: a pool logs in with what was learned where its own secret
 * comes from.
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
    char         *where;    /* "auth_file", or auth database and auth_user */
    bool          by_query; /* auth_query found a secret here (SHOW USERS) */
    char         *secret;   /* what it found; NULL: the role has no usable password */
    usec_t        at;       /* when it was found */
    unsigned      gen;      /* creds_gen() when its lookup began; 0: to be asked again */
    bool          has_keys; /* a client's proof revealed these, against the secret of this place */
    uint8_t       client_key[SCRAM_KEY_LEN];
    uint8_t       server_key[SCRAM_KEY_LEN];
};

struct user_creds {
    UT_hash_handle hh;
    char          *user;
    struct found  *found;
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

/* The entry of place `where`, made if missing; NULL: out of memory. */
static struct found *found_make(struct user_creds *u, const char *where)
{
    struct found *f = found_at(u, where);

    if (f != NULL) return f;
    if ((f = calloc(1, sizeof(*f))) == NULL || (f->where = strdup(where)) == NULL) {
        free(f);
        return NULL;
    }
    f->next = u->found;
    u->found = f;
    return f;
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
    if ((f = found_make(u, where)) == NULL) {
        secret_free(copy);
        goto out;
    }
    if (f->secret == NULL || copy == NULL || strcmp(f->secret, copy) != 0) {
        /* Another secret: keys a client revealed against the old one log in no more. */
        f->has_keys = false;
        OPENSSL_cleanse(f->client_key, sizeof(f->client_key));
    }
    secret_free(f->secret);
    f->secret = copy;
    f->by_query = true;
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

        yes = false;
        for (const struct found *f = u != NULL ? u->found : NULL; f != NULL && !yes; f = f->next)
            yes = f->by_query;
    }
    pthread_mutex_unlock(&lock);
    return yes;
}

bool creds_md5_secret(const char *user, const char *where, char *out)
{
    bool have;

    pthread_mutex_lock(&lock);
    {
        const struct found *f = found_at(user_get(user, false), where);

        have = f != NULL && f->secret != NULL && secret_is_md5(f->secret);
        if (have) memcpy(out, f->secret, MD5_PASSWD_LEN + 1);
    }
    pthread_mutex_unlock(&lock);
    return have;
}

void creds_put_scram_keys(const char *user, const char *where, const uint8_t client_key[SCRAM_KEY_LEN],
                          const uint8_t server_key[SCRAM_KEY_LEN])
{
    struct user_creds *u;
    struct found      *f;

    pthread_mutex_lock(&lock);
    if ((u = user_get(user, true)) != NULL && (f = found_make(u, where)) != NULL) {
        memcpy(f->client_key, client_key, SCRAM_KEY_LEN);
        memcpy(f->server_key, server_key, SCRAM_KEY_LEN);
        f->has_keys = true;
    }
    pthread_mutex_unlock(&lock);
}

bool creds_scram_keys(const char *user, const char *where, uint8_t client_key[SCRAM_KEY_LEN],
                      uint8_t server_key[SCRAM_KEY_LEN])
{
    bool have;

    pthread_mutex_lock(&lock);
    {
        const struct found *f = found_at(user_get(user, false), where);

        have = f != NULL && f->has_keys;
        if (have) {
            memcpy(client_key, f->client_key, SCRAM_KEY_LEN);
            memcpy(server_key, f->server_key, SCRAM_KEY_LEN);
        }
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
            OPENSSL_cleanse(f->client_key, sizeof(f->client_key));
            OPENSSL_cleanse(f->server_key, sizeof(f->server_key));
            free(f->where);
            free(f);
        }
        free(u->user);
        free(u);
    }
    pthread_mutex_unlock(&lock);
}
