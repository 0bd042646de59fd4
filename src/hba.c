/*
 * hba.c - the hba file: read once per start or RELOAD into rules, matched
 * at each login (first match wins).
 *
 *   file --read_line (comments, quotes, "\" continuation)--> fields
 *        --parse_rule--> struct rule { type, databases, users, address, method }
 *   login: hba_match(conn) --> the first rule whose four tests pass
 *
 * A list field is items separated by commas; a quoted item is a name even
 * when it spells a keyword ("all" quoted is a database called all), as in
 * PostgreSQL. @file items are read when the rule is, relative to the hba
 * file's folder.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* getline */
#endif
#include "hba.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <ifaddrs.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum conn_type { CONN_LOCAL, CONN_HOST, CONN_HOSTSSL, CONN_HOSTNOSSL };
enum addr_kind { ADDR_ANY, ADDR_SAMEHOST, ADDR_SAMENET, ADDR_NET };

struct item {
    char *name;
    bool  keyword; /* written unquoted: all, sameuser, replication mean what they say */
};

struct list {
    struct item *items;
    size_t       n;
};

/* An address and mask, IPv4 in the first 4 bytes. */
struct net {
    int     family; /* AF_INET or AF_INET6 */
    uint8_t addr[16];
    uint8_t mask[16];
};

struct rule {
    int            line;
    enum conn_type type;
    struct list    dbs;
    struct list    users;
    enum addr_kind addr_kind;
    struct net     net; /* ADDR_NET */
    enum auth_type method;
};

struct hba {
    struct rule *rules;
    size_t       n;
    struct net  *local; /* this machine's interfaces, for samehost and samenet (read at load) */
    size_t       nlocal;
};

/* ---- errors ---- */

struct reader {
    const char *path;
    int         line;
    char      **errmsg;
};

static bool fail(struct reader *rd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static bool fail(struct reader *rd, const char *fmt, ...)
{
    char    msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (rd->errmsg != NULL) {
        free(*rd->errmsg);
        if (asprintf(rd->errmsg, "%s:%d: %s", rd->path, rd->line, msg) < 0) *rd->errmsg = NULL;
    }
    return false;
}

/* ---- lists ---- */

static void list_free(struct list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i].name);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

static bool list_add(struct list *l, const char *name, size_t len, bool keyword)
{
    struct item *grown = realloc(l->items, (l->n + 1) * sizeof(*grown));
    char        *copy = strndup(name, len);

    if (grown == NULL || copy == NULL) {
        if (grown != NULL) l->items = grown;
        free(copy);
        return false;
    }
    l->items = grown;
    l->items[l->n].name = copy;
    l->items[l->n].keyword = keyword;
    l->n++;
    return true;
}

static bool is_keyword(const struct item *it, const char *word)
{
    return it->keyword && strcmp(it->name, word) == 0;
}

/* ---- tokens ---- */

/*
 * The next item of a field at *p: a name, quoted or not, ending at a comma,
 * a space or the end. *more: a comma followed (the field goes on).
 */
static bool next_item(struct reader *rd, const char **p, const char **start, size_t *len, bool *quoted, bool *more)
{
    const char *s = *p;

    *quoted = false;
    *more = false;
    if (*s == '"') {
        const char *end = strchr(s + 1, '"');

        if (end == NULL) return fail(rd, "unterminated quoted string");
        *start = s + 1;
        *len = (size_t)(end - s - 1);
        *quoted = true;
        s = end + 1;
    } else {
        *start = s;
        while (*s != '\0' && *s != ',' && *s != '#' && !isspace((unsigned char)*s)) {
            if (*s == '"') return fail(rd, "a quote inside a name: quote the whole name");
            s++;
        }
        *len = (size_t)(s - *start);
    }
    if (*s == ',') {
        *more = true;
        s++;
        while (isspace((unsigned char)*s))
            s++; /* "a, b" is one list, as in PostgreSQL */
    } else if (*s != '\0' && *s != '#' && !isspace((unsigned char)*s)) {
        return fail(rd, "unexpected character after a quoted name");
    }
    *p = s;
    return true;
}

/* The fields of one line: each a list of items. */
struct fields {
    struct list f[16];
    int         n;
};

static void fields_free(struct fields *fs)
{
    for (int i = 0; i < fs->n; i++)
        list_free(&fs->f[i]);
    fs->n = 0;
}

static bool split_fields(struct reader *rd, const char *line, struct fields *fs)
{
    const char *p = line;

    fs->n = 0;
    for (;;) {
        bool more = true;

        while (isspace((unsigned char)*p))
            p++;
        if (*p == '\0' || *p == '#') return true;
        if (fs->n == (int)(sizeof(fs->f) / sizeof(fs->f[0]))) return fail(rd, "too many fields");
        memset(&fs->f[fs->n], 0, sizeof(fs->f[0]));
        fs->n++;
        while (more) {
            const char *start = NULL;
            size_t      len = 0;
            bool        quoted;

            if (!next_item(rd, &p, &start, &len, &quoted, &more)) return false;
            if (len == 0 && !quoted) return fail(rd, "an empty name in a list");
            if (!list_add(&fs->f[fs->n - 1], start, len, !quoted)) return fail(rd, "out of memory");
            if (more && (*p == '\0' || *p == '#')) return fail(rd, "a list ends with a comma");
        }
    }
}

/* ---- @file ---- */

static char *relative_to(const char *hba_path, const char *name)
{
    const char *slash = strrchr(hba_path, '/');
    char       *out;

    if (name[0] == '/' || slash == NULL) return strdup(name);
    if (asprintf(&out, "%.*s/%s", (int)(slash - hba_path), hba_path, name) < 0) return NULL;
    return out;
}

static bool take_name(struct reader *rd, struct list *out, const struct item *it, const char *what);

/* Adds the names of @file to l (whitespace or commas between them, # comments). */
static bool add_file_items(struct reader *rd, struct list *l, const char *name, const char *what)
{
    char         *path = relative_to(rd->path, name);
    FILE         *f;
    char         *line = NULL;
    size_t        cap = 0;
    bool          good = true;
    struct reader sub;
    int           lineno = 0;

    if (path == NULL) return fail(rd, "out of memory");
    if ((f = fopen(path, "r")) == NULL) {
        fail(rd, "could not open @%s (%s): %s", name, path, strerror(errno));
        free(path);
        return false;
    }
    sub.path = path;
    sub.errmsg = rd->errmsg;
    while (good && getline(&line, &cap, f) >= 0) {
        struct fields fs;

        sub.line = ++lineno;
        line[strcspn(line, "\r\n")] = '\0';
        if (!split_fields(&sub, line, &fs)) {
            fields_free(&fs);
            good = false;
            break;
        }
        for (int i = 0; good && i < fs.n; i++) {
            for (size_t k = 0; good && k < fs.f[i].n; k++) {
                const struct item *it = &fs.f[i].items[k];

                if (it->keyword && it->name[0] == '@')
                    good = fail(&sub, "@file inside @file is not supported");
                else
                    good = take_name(&sub, l, it, what);
            }
        }
        fields_free(&fs);
    }
    if (good && ferror(f)) good = fail(&sub, "could not read: %s", strerror(errno));
    free(line);
    fclose(f);
    free(path);
    return good;
}

/* A name of a database or user field, from the rule or from an @file: what pgbun cannot honour is refused. */
static bool take_name(struct reader *rd, struct list *out, const struct item *it, const char *what)
{
    if (it->keyword && it->name[0] == '+')
        return fail(rd, "%s \"%s\": +group (role membership) is not supported; list the users, or use @file", what,
                    it->name);
    if (it->keyword && it->name[0] == '/')
        return fail(rd, "%s \"%s\": regular expressions are not supported", what, it->name);
    if (it->keyword && (strcmp(it->name, "samerole") == 0 || strcmp(it->name, "samegroup") == 0))
        return fail(rd, "%s \"%s\" is not supported (it needs role membership)", what, it->name);
    if (!list_add(out, it->name, strlen(it->name), it->keyword)) return fail(rd, "out of memory");
    return true;
}

/* A database or user field: @file expanded, each name checked. */
static bool take_names(struct reader *rd, struct list *in, struct list *out, const char *what)
{
    for (size_t i = 0; i < in->n; i++) {
        const struct item *it = &in->items[i];

        if (it->keyword && it->name[0] == '@') {
            if (it->name[1] == '\0') return fail(rd, "@ without a file name");
            if (!add_file_items(rd, out, it->name + 1, what)) return false;
        } else if (!take_name(rd, out, it, what)) {
            return false;
        }
    }
    return true;
}

/* ---- addresses ---- */

static bool parse_ip(const char *text, struct net *n)
{
    struct in6_addr a6;
    struct in_addr  a4;

    memset(n, 0, sizeof(*n));
    if (inet_pton(AF_INET, text, &a4) == 1) {
        n->family = AF_INET;
        memcpy(n->addr, &a4, 4);
        return true;
    }
    if (inet_pton(AF_INET6, text, &a6) == 1) {
        /* An IPv4 client on a dual-stack socket: compared as IPv4. */
        if (IN6_IS_ADDR_V4MAPPED(&a6)) {
            n->family = AF_INET;
            memcpy(n->addr, a6.s6_addr + 12, 4);
        } else {
            n->family = AF_INET6;
            memcpy(n->addr, &a6, 16);
        }
        return true;
    }
    return false;
}

static void mask_of_bits(struct net *n, int bits)
{
    memset(n->mask, 0, sizeof(n->mask));
    for (int i = 0; i < bits; i++)
        n->mask[i / 8] |= (uint8_t)(0x80 >> (i % 8));
}

static bool net_contains(const struct net *n, const struct net *a)
{
    size_t len = n->family == AF_INET ? 4 : 16;

    if (n->family != a->family) return false;
    for (size_t i = 0; i < len; i++)
        if ((a->addr[i] & n->mask[i]) != (n->addr[i] & n->mask[i])) return false;
    return true;
}

/* "all", "samehost", "samenet", "a.b.c.d/n", "::1/128", or an address whose mask is the next field (*used_mask). */
static bool parse_address(struct reader *rd, struct rule *r, const struct list *addr, const struct list *mask,
                          bool *used_mask)
{
    const struct item *it;
    char               text[INET6_ADDRSTRLEN + 8];
    char              *slash;
    int                maxbits;

    *used_mask = false;
    if (addr->n != 1) return fail(rd, "only one address per rule");
    it = &addr->items[0];
    if (is_keyword(it, "all")) {
        r->addr_kind = ADDR_ANY;
        return true;
    }
    if (is_keyword(it, "samehost") || is_keyword(it, "samenet")) {
        r->addr_kind = is_keyword(it, "samehost") ? ADDR_SAMEHOST : ADDR_SAMENET;
        return true;
    }
    r->addr_kind = ADDR_NET;
    if (strlen(it->name) >= sizeof(text)) return fail(rd, "invalid IP address \"%s\"", it->name);
    strcpy(text, it->name);
    if ((slash = strchr(text, '/')) != NULL) *slash = '\0';
    if (!parse_ip(text, &r->net)) {
        if (!isdigit((unsigned char)text[0]) && text[0] != ':')
            return fail(rd,
                        "address \"%s\": host names and domain suffixes are not supported; write an IP address "
                        "with a CIDR mask",
                        it->name);
        return fail(rd, "invalid IP address \"%s\"", it->name);
    }
    maxbits = r->net.family == AF_INET ? 32 : 128;
    if (slash != NULL) {
        char *end;
        long  bits = strtol(slash + 1, &end, 10);
        bool  mapped = r->net.family == AF_INET && strchr(text, ':') != NULL; /* ::ffff:a.b.c.d, compared as IPv4 */

        if (mapped && bits >= 0) bits = bits >= 96 ? bits - 96 : -1;
        if (slash[1] == '\0' || *end != '\0' || bits < 0 || bits > maxbits)
            return fail(rd, "invalid CIDR mask in address \"%s\"", it->name);
        mask_of_bits(&r->net, (int)bits);
        return true;
    }
    /* An address without /bits: the mask is the next field, as in PostgreSQL. */
    if (mask == NULL || mask->n != 1)
        return fail(rd, "address \"%s\" has no CIDR mask and no mask field follows", it->name);
    {
        struct net m;

        if (!parse_ip(mask->items[0].name, &m) || m.family != r->net.family)
            return fail(rd, "invalid IP mask \"%s\"", mask->items[0].name);
        memcpy(r->net.mask, m.addr, sizeof(r->net.mask));
    }
    *used_mask = true;
    return true;
}

/* This machine's addresses and their networks, for samehost and samenet. */
static bool read_local_nets(struct hba *h)
{
    struct ifaddrs *ifs, *i;

    if (getifaddrs(&ifs) != 0) return false;
    for (i = ifs; i != NULL; i = i->ifa_next) {
        struct net  n;
        char        text[INET6_ADDRSTRLEN];
        struct net *grown;
        const void *a, *m;
        int         fam;

        if (i->ifa_addr == NULL || i->ifa_netmask == NULL) continue;
        fam = i->ifa_addr->sa_family;
        if (fam != AF_INET && fam != AF_INET6) continue;
        a = fam == AF_INET ? (const void *)&((const struct sockaddr_in *)(const void *)i->ifa_addr)->sin_addr
                           : (const void *)&((const struct sockaddr_in6 *)(const void *)i->ifa_addr)->sin6_addr;
        m = fam == AF_INET ? (const void *)&((const struct sockaddr_in *)(const void *)i->ifa_netmask)->sin_addr
                           : (const void *)&((const struct sockaddr_in6 *)(const void *)i->ifa_netmask)->sin6_addr;
        if (inet_ntop(fam, a, text, sizeof(text)) == NULL || !parse_ip(text, &n)) continue;
        memcpy(n.mask, m, fam == AF_INET ? 4 : 16);
        if ((grown = realloc(h->local, (h->nlocal + 1) * sizeof(*grown))) == NULL) {
            freeifaddrs(ifs);
            return false;
        }
        h->local = grown;
        h->local[h->nlocal++] = n;
    }
    freeifaddrs(ifs);
    return true;
}

/* ---- rules ---- */

static bool parse_method(struct reader *rd, struct rule *r, const struct list *f)
{
    static const struct {
        const char    *name;
        enum auth_type method;
    } methods[] = {
        {"trust", AUTH_TRUST}, {"reject", AUTH_REJECT},       {"password", AUTH_PLAIN}, {"md5", AUTH_MD5},
        {"cert", AUTH_CERT},   {"scram-sha-256", AUTH_SCRAM}, {"peer", AUTH_PEER},
    };

    if (f->n != 1) return fail(rd, "one authentication method per rule");
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        if (f->items[0].keyword && strcmp(f->items[0].name, methods[i].name) == 0) {
            r->method = methods[i].method;
            if (r->method == AUTH_PEER && r->type != CONN_LOCAL)
                return fail(rd, "peer authentication is only for \"local\" (unix-socket) rules");
            if (r->method == AUTH_CERT && r->type != CONN_HOSTSSL)
                return fail(rd, "cert authentication is only for \"hostssl\" rules");
            return true;
        }
    }
    return fail(rd,
                "authentication method \"%s\" is not supported (trust, reject, password, md5, scram-sha-256, "
                "cert, peer)",
                f->items[0].name);
}

static bool parse_rule(struct reader *rd, struct fields *fs, struct rule *r)
{
    static const char *const types[] = {"local", "host", "hostssl", "hostnossl"};
    const struct item       *t = &fs->f[0].items[0];
    int                      at;
    bool                     used_mask = false;

    memset(r, 0, sizeof(*r));
    r->line = rd->line;
    if (fs->f[0].n != 1 || !t->keyword) return fail(rd, "invalid connection type");
    if (strncmp(t->name, "include", 7) == 0)
        return fail(rd, "\"%s\" directives are not supported: write the rules in this file", t->name);
    for (at = 0; at < 4 && strcmp(t->name, types[at]) != 0; at++)
        ;
    if (at == 4) {
        if (strcmp(t->name, "hostgssenc") == 0 || strcmp(t->name, "hostnogssenc") == 0)
            return fail(rd, "connection type \"%s\" is not supported: pgbun has no GSSAPI encryption", t->name);
        return fail(rd, "invalid connection type \"%s\"", t->name);
    }
    r->type = (enum conn_type)at;
    if (fs->n < (r->type == CONN_LOCAL ? 4 : 5)) return fail(rd, "end of line before the authentication method");
    if (!take_names(rd, &fs->f[1], &r->dbs, "database") || !take_names(rd, &fs->f[2], &r->users, "user")) return false;
    at = 3;
    if (r->type != CONN_LOCAL) {
        if (!parse_address(rd, r, &fs->f[3], fs->n > 4 ? &fs->f[4] : NULL, &used_mask)) return false;
        at = used_mask ? 5 : 4;
        if (at >= fs->n) return fail(rd, "end of line before the authentication method");
    }
    if (!parse_method(rd, r, &fs->f[at])) return false;
    if (at + 1 < fs->n)
        return fail(rd,
                    "authentication option \"%s\" is not supported (pgbun takes no options such as map= or "
                    "clientcert=)",
                    fs->f[at + 1].items[0].name);
    return true;
}

static void rule_free(struct rule *r)
{
    list_free(&r->dbs);
    list_free(&r->users);
}

void hba_free(struct hba *h)
{
    if (h == NULL) return;
    for (size_t i = 0; i < h->n; i++)
        rule_free(&h->rules[i]);
    free(h->rules);
    free(h->local);
    free(h);
}

/* The next logical line: a "\" at the end joins the next one, as in PostgreSQL 16. */
static bool read_line(FILE *f, char **buf, size_t *cap, int *lineno, char **out)
{
    char  *joined = NULL;
    size_t jlen = 0;

    for (;;) {
        ssize_t n = getline(buf, cap, f);
        char   *grown;

        if (n < 0) {
            *out = joined;
            return joined != NULL;
        }
        (*lineno)++;
        while (n > 0 && ((*buf)[n - 1] == '\n' || (*buf)[n - 1] == '\r'))
            (*buf)[--n] = '\0';
        if ((grown = realloc(joined, jlen + (size_t)n + 2)) == NULL) {
            free(joined);
            *out = NULL;
            return false;
        }
        joined = grown;
        memcpy(joined + jlen, *buf, (size_t)n + 1);
        jlen += (size_t)n;
        if (jlen > 0 && joined[jlen - 1] == '\\') {
            joined[jlen - 1] = ' ';
            continue;
        }
        *out = joined;
        return true;
    }
}

struct hba *hba_load(const char *path, char **errmsg)
{
    struct hba   *h = calloc(1, sizeof(*h));
    struct reader rd = {.path = path, .line = 0, .errmsg = errmsg};
    FILE         *f;
    char         *buf = NULL, *line;
    size_t        cap = 0;
    int           lineno = 0;
    bool          good = true;

    if (errmsg != NULL) *errmsg = NULL;
    if (h == NULL) {
        fail(&rd, "out of memory");
        return NULL;
    }
    if ((f = fopen(path, "r")) == NULL) {
        if (errmsg != NULL && asprintf(errmsg, "could not open auth_hba_file %s: %s", path, strerror(errno)) < 0)
            *errmsg = NULL;
        free(h);
        return NULL;
    }
    while (good) {
        struct fields fs;
        int           first = lineno + 1;

        if (!read_line(f, &buf, &cap, &lineno, &line)) break;
        rd.line = first;
        if (!split_fields(&rd, line, &fs)) {
            good = false;
        } else if (fs.n > 0) {
            struct rule  r;
            struct rule *grown;

            if (!parse_rule(&rd, &fs, &r)) {
                rule_free(&r);
                good = false;
            } else if ((grown = realloc(h->rules, (h->n + 1) * sizeof(*grown))) == NULL) {
                rule_free(&r);
                good = fail(&rd, "out of memory");
            } else {
                h->rules = grown;
                h->rules[h->n++] = r;
            }
        }
        fields_free(&fs);
        free(line);
    }
    if (good && ferror(f)) {
        /* A folder, or a read error part-way: rules must not be dropped without a word. */
        rd.line = lineno;
        good = fail(&rd, "could not read the file: %s", strerror(errno));
    }
    free(buf);
    fclose(f);
    if (good && !read_local_nets(h)) {
        /* samehost and samenet then match nothing, which fails safe; say so. */
        h->nlocal = 0;
    }
    if (!good) {
        hba_free(h);
        return NULL;
    }
    return h;
}

bool hba_uses(const struct hba *h, enum auth_type m)
{
    for (size_t i = 0; h != NULL && i < h->n; i++)
        if (h->rules[i].method == m) return true;
    return false;
}

int hba_rule_count(const struct hba *h)
{
    return h != NULL ? (int)h->n : 0;
}

/* ---- matching ---- */

static bool name_in(const struct list *l, const char *name)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->items[i].name, name) == 0) return true;
    return false;
}

static bool db_matches(const struct rule *r, const struct hba_conn *c)
{
    for (size_t i = 0; i < r->dbs.n; i++) {
        const struct item *it = &r->dbs.items[i];

        if (is_keyword(it, "all")) return true;
        if (is_keyword(it, "sameuser")) {
            if (strcmp(c->dbname, c->user) == 0) return true;
            continue;
        }
        if (is_keyword(it, "replication")) continue; /* pgbun takes no replication connections */
        if (strcmp(it->name, c->dbname) == 0) return true;
        /* The console has two names: a rule for either holds for both. */
        if (c->console && (strcmp(it->name, "pgbun") == 0 || strcmp(it->name, "pgbouncer") == 0)) return true;
    }
    return false;
}

static bool user_matches(const struct rule *r, const struct hba_conn *c)
{
    for (size_t i = 0; i < r->users.n; i++)
        if (is_keyword(&r->users.items[i], "all")) return true;
    return name_in(&r->users, c->user);
}

static bool addr_matches(const struct hba *h, const struct rule *r, const struct hba_conn *c)
{
    struct net a;

    if (r->addr_kind == ADDR_ANY) return true;
    if (c->addr == NULL || !parse_ip(c->addr, &a)) return false;
    for (size_t i = 0; r->addr_kind != ADDR_NET && i < h->nlocal; i++) {
        const struct net *l = &h->local[i];
        size_t            len = l->family == AF_INET ? 4 : 16;

        if (r->addr_kind == ADDR_SAMEHOST && l->family == a.family && memcmp(l->addr, a.addr, len) == 0) return true;
        if (r->addr_kind == ADDR_SAMENET && net_contains(l, &a)) return true;
    }
    return r->addr_kind == ADDR_NET && net_contains(&r->net, &a);
}

enum auth_type hba_match(const struct hba *h, const struct hba_conn *c, int *line)
{
    for (size_t i = 0; h != NULL && i < h->n; i++) {
        const struct rule *r = &h->rules[i];

        switch (r->type) {
        case CONN_LOCAL:
            if (!c->is_unix) continue;
            break;
        case CONN_HOST:
            if (c->is_unix) continue;
            break;
        case CONN_HOSTSSL:
            if (c->is_unix || !c->tls) continue;
            break;
        case CONN_HOSTNOSSL:
            if (c->is_unix || c->tls) continue;
            break;
        }
        if (!db_matches(r, c) || !user_matches(r, c)) continue;
        if (!c->is_unix && !addr_matches(h, r, c)) continue;
        *line = r->line;
        return r->method;
    }
    *line = 0;
    return AUTH_REJECT;
}
