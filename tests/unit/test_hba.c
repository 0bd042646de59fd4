/*
 * test_hba.c - auth_hba_file: hba_load() on files written to a temp dir,
 * hba_match() against unix, TCP and TLS connections, hba_uses().
 *
 * Each case writes pg_hba.conf (and @files) into one mkdtemp directory,
 * loads it, checks which method and line a connection gets, or which
 * "path:line: message" refuses the file. The process runs from / so that
 * an @file found relative to the hba file's folder cannot be found by the
 * working directory instead.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* asprintf */
#endif
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hba.h"
#include "tap.h"

static char tmpdir[] = "/tmp/pgbun_test_hba_XXXXXX";

/* Files written into tmpdir, removed at the end. */
static char *written[64];
static int   nwritten;

/* Writes text to tmpdir/name (replacing it); returns its path (owned by `written`). */
static const char *write_file(const char *name, const char *text)
{
    char *path;
    FILE *f;

    if (asprintf(&path, "%s/%s", tmpdir, name) < 0) abort();
    f = fopen(path, "w");
    if (f == NULL || fputs(text, f) < 0 || fclose(f) != 0) {
        printf("Bail out! cannot write %s\n", path);
        exit(1);
    }
    for (int i = 0; i < nwritten; i++) {
        if (strcmp(written[i], path) == 0) {
            free(path);
            return written[i];
        }
    }
    if (nwritten == (int)(sizeof(written) / sizeof(written[0]))) abort();
    written[nwritten++] = path;
    return path;
}

/* Loads text as tmpdir/pg_hba.conf; a failure to load fails the test (and is printed). */
static struct hba *load(const char *text, const char *name)
{
    const char *path = write_file("pg_hba.conf", text);
    char       *err = NULL;
    struct hba *h = hba_load(path, &err);

    if (!ok(h != NULL && err == NULL, "%s: loads", name)) printf("#   error: %s\n", err ? err : "(null)");
    free(err);
    return h;
}

/* Loads text as tmpdir/<file>; expects a refusal whose message contains "<tmpdir>/<where>: <msg>". */
static void expect_refused_in(const char *file, const char *text, const char *where, const char *msg, const char *name)
{
    const char *path = write_file(file, text);
    char       *err = NULL;
    char       *want;
    struct hba *h = hba_load(path, &err);

    if (asprintf(&want, "%s/%s: %s", tmpdir, where, msg) < 0) abort();
    if (!ok(h == NULL && err != NULL && strstr(err, want) != NULL, "refused: %s", name))
        printf("#   got %s '%s', want '%s'\n", h ? "a loaded file and" : "", err ? err : "(null)", want);
    hba_free(h);
    free(err);
    free(want);
}

/* The same for tmpdir/pg_hba.conf; where is the line number only. */
static void expect_refused(const char *text, int line, const char *msg, const char *name)
{
    char where[64];

    snprintf(where, sizeof(where), "pg_hba.conf:%d", line);
    expect_refused_in("pg_hba.conf", text, where, msg, name);
}

static bool refuses(const char *text)
{
    const char *path = write_file("pg_hba.conf", text);
    char       *err = NULL;
    struct hba *h = hba_load(path, &err);
    bool        refused = h == NULL && err != NULL;

    hba_free(h);
    free(err);
    return refused;
}

enum kind { UNIX, TCP, TLS };

static const char *kind_name(enum kind k)
{
    return k == UNIX ? "unix" : k == TCP ? "tcp" : "tls";
}

static const char *method_name(enum auth_type m)
{
    switch (m) {
    case AUTH_TRUST: return "trust";
    case AUTH_PLAIN: return "password";
    case AUTH_MD5: return "md5";
    case AUTH_SCRAM: return "scram-sha-256";
    case AUTH_CERT: return "cert";
    case AUTH_PEER: return "peer";
    case AUTH_HBA: return "hba";
    case AUTH_REJECT: return "reject";
    }
    return "?";
}

/* Whether hba_match gives a connection the method want at line want_line (0: no rule matched); says what it got. */
static bool match_is(const struct hba *h, enum kind k, const char *addr, const char *db, const char *user,
                     enum auth_type want, int want_line, char *got_text, size_t n)
{
    struct hba_conn c = {k == UNIX, k == TLS, k == UNIX ? NULL : addr, db, user, false};
    int             line = -1;
    enum auth_type  got = hba_match(h, &c, &line);

    snprintf(got_text, n, "%s at line %d, want %s at line %d", method_name(got), line, method_name(want), want_line);
    return got == want && line == want_line;
}

static void expect_match(const struct hba *h, enum kind k, const char *addr, const char *db, const char *user,
                         enum auth_type want, int want_line, const char *name)
{
    char got[128];

    if (!ok(match_is(h, k, addr, db, user, want, want_line, got, sizeof(got)), "%s (%s %s, db %s, user %s)", name,
            kind_name(k), addr ? addr : "", db, user))
        printf("#   got %s\n", got);
}

/* ---- connection types ---- */

static void test_line_kinds(void)
{
    struct hba *h;
    static const struct {
        const char    *user;
        enum auth_type want[3]; /* unix, tcp, tls */
        int            line[3];
    } cases[] = {
        {"u_local", {AUTH_TRUST, AUTH_REJECT, AUTH_REJECT}, {1, 0, 0}},
        {"u_host", {AUTH_REJECT, AUTH_MD5, AUTH_MD5}, {0, 2, 2}},
        {"u_ssl", {AUTH_REJECT, AUTH_REJECT, AUTH_SCRAM}, {0, 0, 3}},
        {"u_nossl", {AUTH_REJECT, AUTH_PLAIN, AUTH_REJECT}, {0, 4, 0}},
    };

    /* A "local" rule has no address: one there is read as the method. */
    ok(refuses("local all all 127.0.0.1/32 trust\n"), "a local rule takes no address");
    h = load("local     all u_local             trust\n"
             "host      all u_host    all       md5\n"
             "hostssl   all u_ssl     all       scram-sha-256\n"
             "hostnossl all u_nossl   all       password\n",
             "one rule of each connection type");
    is_int(hba_rule_count(h), 4, "four rules");
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        for (int k = UNIX; k <= TLS; k++)
            expect_match(h, (enum kind)k, "10.0.0.1", "app", cases[i].user, cases[i].want[k], cases[i].line[k],
                         "each type matches its connections");
    hba_free(h);
}

/* ---- databases and users ---- */

static void test_databases(void)
{
    struct hba *h = load("host sameuser      all 10.0.0.1/32 trust\n"
                         "host replication   all 10.0.0.1/32 reject\n"
                         "host \"all\"         all 10.0.0.1/32 md5\n"
                         "host app,\"other db\" all 10.0.0.1/32 password\n"
                         "host x, y,z        all 10.0.0.1/32 scram-sha-256\n"
                         "host \"replication\" all 10.0.0.1/32 md5\n"
                         "host \"sameuser\"    all 10.0.0.1/32 password\n"
                         "host all           all 10.0.0.1/32 reject\n",
                         "database keywords and names");

    expect_match(h, TCP, "10.0.0.1", "alice", "alice", AUTH_TRUST, 1, "sameuser: the database named as the user");
    expect_match(h, TCP, "10.0.0.1", "bob", "alice", AUTH_REJECT, 8, "sameuser: not another database");
    expect_match(h, TCP, "10.0.0.1", "replication", "bob", AUTH_MD5, 6,
                 "the keyword replication matches no database, not even one called replication");
    expect_match(h, TCP, "10.0.0.1", "all", "bob", AUTH_MD5, 3, "\"all\" quoted is a database called all");
    expect_match(h, TCP, "10.0.0.1", "app", "bob", AUTH_PLAIN, 4, "a comma list: first name");
    expect_match(h, TCP, "10.0.0.1", "other db", "bob", AUTH_PLAIN, 4, "a comma list: a quoted name with a space");
    expect_match(h, TCP, "10.0.0.1", "\"other db\"", "bob", AUTH_REJECT, 8, "the quotes are not part of the name");
    expect_match(h, TCP, "10.0.0.1", "x", "bob", AUTH_SCRAM, 5, "\"x, y,z\": x");
    expect_match(h, TCP, "10.0.0.1", "y", "bob", AUTH_SCRAM, 5, "\"x, y,z\": y after a comma and a space");
    expect_match(h, TCP, "10.0.0.1", "z", "bob", AUTH_SCRAM, 5, "\"x, y,z\": z");
    {
        char got[128];

        ok(match_is(h, TCP, "10.0.0.1", "sameuser", "bob", AUTH_PLAIN, 7, got, sizeof(got)),
           "\"sameuser\" quoted is a database name; the keyword sameuser does not match it for bob");
        expect_match(h, TCP, "10.0.0.1", "sameuser", "sameuser", AUTH_TRUST, 1,
                     "sameuser: a database and a user both called sameuser");
    }
    expect_match(h, TCP, "10.0.0.1", "App", "bob", AUTH_REJECT, 8, "names are case-sensitive");
    expect_match(h, TCP, "10.0.0.1", "zzz", "bob", AUTH_REJECT, 8, "all: any other database");
    hba_free(h);
}

static void test_users(void)
{
    struct hba *h = load("host all alice,bob 10.0.0.1/32 trust\n"
                         "host all \"all\"     10.0.0.1/32 md5\n"
                         "host all sameuser  10.0.0.1/32 password\n"
                         "host all all       10.0.0.1/32 scram-sha-256\n",
                         "user names");

    expect_match(h, TCP, "10.0.0.1", "db", "alice", AUTH_TRUST, 1, "a user of the list");
    expect_match(h, TCP, "10.0.0.1", "db", "bob", AUTH_TRUST, 1, "another user of the list");
    expect_match(h, TCP, "10.0.0.1", "db", "all", AUTH_MD5, 2, "\"all\" quoted is a user called all");
    expect_match(h, TCP, "10.0.0.1", "db", "sameuser", AUTH_PLAIN, 3, "sameuser is only a keyword for databases");
    expect_match(h, TCP, "10.0.0.1", "db", "db", AUTH_SCRAM, 4, "sameuser does not mean the database's name");
    expect_match(h, TCP, "10.0.0.1", "db", "carol", AUTH_SCRAM, 4, "all: any other user");
    hba_free(h);
}

static void test_at_files(void)
{
    struct hba *h;
    char       *abs_line;

    write_file("dbs.txt", "# databases of the app\n"
                          "app1, app2\n"
                          "  app3   # the third\n"
                          "\"quoted db\"\n"
                          "\n");
    write_file("users.txt", "alice\nbob,carol\n");
    h = load("host @dbs.txt @users.txt 10.0.0.1/32 md5\n"
             "host app0,@dbs.txt dave  10.0.0.1/32 password\n"
             "host all   all         10.0.0.1/32 reject\n",
             "@file for databases and users, relative to the hba file");
    expect_match(h, TCP, "10.0.0.1", "app1", "alice", AUTH_MD5, 1, "@dbs.txt: a name of its first line");
    expect_match(h, TCP, "10.0.0.1", "app2", "bob", AUTH_MD5, 1, "@dbs.txt: after a comma; @users.txt: 2nd line");
    expect_match(h, TCP, "10.0.0.1", "app3", "carol", AUTH_MD5, 1, "@dbs.txt: a name before a comment");
    expect_match(h, TCP, "10.0.0.1", "quoted db", "alice", AUTH_MD5, 1, "@dbs.txt: a quoted name");
    expect_match(h, TCP, "10.0.0.1", "the", "alice", AUTH_REJECT, 3, "@dbs.txt: a comment's words are no names");
    expect_match(h, TCP, "10.0.0.1", "databases", "alice", AUTH_REJECT, 3, "@dbs.txt: comment line skipped");
    expect_match(h, TCP, "10.0.0.1", "app1", "dave", AUTH_PLAIN, 2, "a name and an @file in one list: the @file");
    expect_match(h, TCP, "10.0.0.1", "app0", "dave", AUTH_PLAIN, 2, "a name and an @file in one list: the name");
    expect_match(h, TCP, "10.0.0.1", "app1", "erin", AUTH_REJECT, 3, "a user in no @file");
    hba_free(h);

    if (asprintf(&abs_line, "local @%s/users.txt all trust\n", tmpdir) < 0) abort();
    h = load(abs_line, "an @file with an absolute path");
    expect_match(h, UNIX, NULL, "bob", "x", AUTH_TRUST, 1, "an @file with an absolute path: its names");
    hba_free(h);
    free(abs_line);

    write_file("quoted.txt", "x\n");
    h = load("local \"@quoted.txt\" all trust\n", "a quoted @name");
    expect_match(h, UNIX, NULL, "@quoted.txt", "u", AUTH_TRUST, 1, "a quoted @name is a plain name");
    expect_match(h, UNIX, NULL, "x", "u", AUTH_REJECT, 0, "a quoted @name reads no file");
    hba_free(h);

    write_file("allusers.txt", "all\n");
    h = load("local all @allusers.txt md5\n", "an @file holding all");
    expect_match(h, UNIX, NULL, "db", "anyone", AUTH_MD5, 1, "all in an @file is the keyword, as in PostgreSQL");
    hba_free(h);
}

/* ---- addresses ---- */

/* The first address of this machine in family fam that is (or is not) a loopback one, and its prefix length. */
static bool local_addr(int fam, bool loopback, char *out, size_t n, int *bits)
{
    struct ifaddrs *ifs, *i;
    bool            found = false;

    if (getifaddrs(&ifs) != 0) return false;
    for (i = ifs; i != NULL && !found; i = i->ifa_next) {
        const uint8_t *a, *m;
        size_t         len = fam == AF_INET ? 4 : 16;
        bool           is_lo;

        if (i->ifa_addr == NULL || i->ifa_netmask == NULL || i->ifa_addr->sa_family != fam) continue;
        if (fam == AF_INET) {
            a = (const uint8_t *)&((const struct sockaddr_in *)(const void *)i->ifa_addr)->sin_addr;
            m = (const uint8_t *)&((const struct sockaddr_in *)(const void *)i->ifa_netmask)->sin_addr;
            is_lo = a[0] == 127;
        } else {
            const struct in6_addr *a6 = &((const struct sockaddr_in6 *)(const void *)i->ifa_addr)->sin6_addr;

            if (IN6_IS_ADDR_LINKLOCAL(a6)) continue; /* its zone is not part of the address a client has */
            a = a6->s6_addr;
            m = ((const struct sockaddr_in6 *)(const void *)i->ifa_netmask)->sin6_addr.s6_addr;
            is_lo = IN6_IS_ADDR_LOOPBACK(a6);
        }
        if (is_lo != loopback) continue;
        *bits = 0;
        for (size_t b = 0; b < len * 8; b++)
            if (m[b / 8] & (0x80 >> (b % 8))) (*bits)++;
        found = inet_ntop(fam, a, out, (socklen_t)n) != NULL;
    }
    freeifaddrs(ifs);
    return found;
}

/* Whether an IPv4 address is one of this machine's (network: or on one of its networks). */
static bool ipv4_is_local(const char *text, bool network)
{
    struct ifaddrs *ifs, *i;
    struct in_addr  x;
    bool            found = false;

    if (inet_pton(AF_INET, text, &x) != 1 || getifaddrs(&ifs) != 0) return true;
    for (i = ifs; i != NULL; i = i->ifa_next) {
        uint32_t a, m;

        if (i->ifa_addr == NULL || i->ifa_netmask == NULL || i->ifa_addr->sa_family != AF_INET) continue;
        a = ((const struct sockaddr_in *)(const void *)i->ifa_addr)->sin_addr.s_addr;
        m = network ? ((const struct sockaddr_in *)(const void *)i->ifa_netmask)->sin_addr.s_addr : 0xffffffffu;
        if ((a & m) == (x.s_addr & m)) found = true;
    }
    freeifaddrs(ifs);
    return found;
}

static void test_addresses(void)
{
    static const char *const candidates[] = {"203.0.113.9", "198.51.100.9", "100.64.7.9", "172.31.254.9"};
    const char              *foreign = NULL;
    char                     mine[INET_ADDRSTRLEN], neighbour[INET_ADDRSTRLEN], v6[INET6_ADDRSTRLEN];
    int                      bits;
    struct hba              *h = load("host all a1 all                        trust\n"
                                                   "host all a2 10.1.2.0/24                trust\n"
                                                   "host all a3 2001:db8::/32              trust\n"
                                                   "host all a4 10.9.0.0      255.255.0.0  trust\n"
                                                   "host all a5 samehost                   trust\n"
                                                   "host all a6 samenet                    trust\n"
                                                   "host all a7 2001:db8::    ffff:ffff::  trust\n"
                                                   "host all a8 10.1.2.3/32                trust\n"
                                                   "host all a9 10.1.2.99/24               trust\n"
                                                   "host all a0 0.0.0.0/0                  trust\n"
                                                   "host all a0 ::/0                       md5\n",
                                      "addresses");

    /* An address on none of this machine's networks, for samehost and samenet to refuse. */
    for (size_t i = 0; i < sizeof(candidates) / sizeof(candidates[0]) && foreign == NULL; i++)
        if (!ipv4_is_local(candidates[i], true)) foreign = candidates[i];
    if (foreign == NULL) {
        printf("Bail out! every candidate foreign address is on a network of this machine\n");
        exit(1);
    }

    expect_match(h, TCP, "10.1.2.3", "db", "a1", AUTH_TRUST, 1, "all: IPv4");
    expect_match(h, TCP, "2001:db8::1", "db", "a1", AUTH_TRUST, 1, "all: IPv6");

    expect_match(h, TCP, "10.1.2.200", "db", "a2", AUTH_TRUST, 2, "CIDR /24: inside");
    expect_match(h, TCP, "10.1.3.1", "db", "a2", AUTH_REJECT, 0, "CIDR /24: outside");
    expect_match(h, TCP, "::ffff:10.1.2.7", "db", "a2", AUTH_TRUST, 2, "an IPv4-mapped IPv6 client is IPv4");
    expect_match(h, TCP, "::ffff:10.1.3.7", "db", "a2", AUTH_REJECT, 0, "an IPv4-mapped client outside");
    expect_match(h, TCP, "2001:db8::1", "db", "a2", AUTH_REJECT, 0, "an IPv4 rule: not an IPv6 client");

    expect_match(h, TCP, "2001:db8:1::5", "db", "a3", AUTH_TRUST, 3, "IPv6 CIDR: inside");
    expect_match(h, TCP, "2001:db9::1", "db", "a3", AUTH_REJECT, 0, "IPv6 CIDR: outside");
    expect_match(h, TCP, "10.1.2.3", "db", "a3", AUTH_REJECT, 0, "an IPv6 rule: not an IPv4 client");
    expect_match(h, TCP, "::ffff:10.1.2.3", "db", "a3", AUTH_REJECT, 0, "an IPv6 rule: not an IPv4-mapped client");

    expect_match(h, TCP, "10.9.255.1", "db", "a4", AUTH_TRUST, 4, "address and mask field: inside");
    expect_match(h, TCP, "10.8.0.1", "db", "a4", AUTH_REJECT, 0, "address and mask field: outside");
    expect_match(h, TCP, "2001:db8:5::1", "db", "a7", AUTH_TRUST, 7, "IPv6 address and mask field: inside");
    expect_match(h, TCP, "2001:db9::1", "db", "a7", AUTH_REJECT, 0, "IPv6 address and mask field: outside");

    expect_match(h, TCP, "10.1.2.3", "db", "a8", AUTH_TRUST, 8, "/32: the address");
    expect_match(h, TCP, "10.1.2.4", "db", "a8", AUTH_REJECT, 0, "/32: the next address");
    expect_match(h, TCP, "10.1.2.4", "db", "a9", AUTH_TRUST, 9, "host bits under the mask are ignored");

    expect_match(h, TCP, "192.0.2.77", "db", "a0", AUTH_TRUST, 10, "0.0.0.0/0: any IPv4");
    expect_match(h, TCP, "2001:db8::77", "db", "a0", AUTH_MD5, 11, "::/0: any IPv6, not 0.0.0.0/0");
    expect_match(h, TCP, "not-an-address", "db", "a0", AUTH_REJECT, 0, "an address that does not parse matches none");
    expect_match(h, UNIX, NULL, "db", "a1", AUTH_REJECT, 0, "host rules: not a unix connection");

    expect_match(h, TCP, "127.0.0.1", "db", "a5", AUTH_TRUST, 5, "samehost: 127.0.0.1 is this machine");
    expect_match(h, TCP, "::ffff:127.0.0.1", "db", "a5", AUTH_TRUST, 5, "samehost: IPv4-mapped 127.0.0.1");
    expect_match(h, TCP, foreign, "db", "a5", AUTH_REJECT, 0, "samehost: not an address of another network");
    expect_match(h, TCP, "127.0.0.1", "db", "a6", AUTH_TRUST, 6, "samenet: 127.0.0.1");
    expect_match(h, TCP, foreign, "db", "a6", AUTH_REJECT, 0, "samenet: not an address of another network");
    expect_match(h, TCP, "2001:db8::1", "db", "a6", AUTH_REJECT, 0, "samenet: not an IPv6 address elsewhere");
    /* lo is 127.0.0.1/8: 127.1.2.3 is on its network without being an address of this machine. */
    if (local_addr(AF_INET, true, mine, sizeof(mine), &bits) && bits <= 8 && !ipv4_is_local("127.1.2.3", false)) {
        expect_match(h, TCP, "127.1.2.3", "db", "a5", AUTH_REJECT, 0, "samehost: another loopback address");
        expect_match(h, TCP, "127.1.2.3", "db", "a6", AUTH_TRUST, 6, "samenet: another address of lo's network");
    }
    /* A non-loopback interface: its address, and its address with the last bit flipped (same network). */
    if (local_addr(AF_INET, false, mine, sizeof(mine), &bits) && bits < 31) {
        struct in_addr a;

        inet_pton(AF_INET, mine, &a);
        a.s_addr = htonl(ntohl(a.s_addr) ^ 1u);
        inet_ntop(AF_INET, &a, neighbour, sizeof(neighbour));
        expect_match(h, TCP, mine, "db", "a5", AUTH_TRUST, 5, "samehost: a non-loopback address of this machine");
        expect_match(h, TCP, mine, "db", "a6", AUTH_TRUST, 6, "samenet: a non-loopback address of this machine");
        expect_match(h, TCP, neighbour, "db", "a6", AUTH_TRUST, 6, "samenet: a neighbour on that network");
        if (!ipv4_is_local(neighbour, false))
            expect_match(h, TCP, neighbour, "db", "a5", AUTH_REJECT, 0, "samehost: not a neighbour's address");
    }
    if (local_addr(AF_INET6, true, v6, sizeof(v6), &bits))
        expect_match(h, TCP, "::1", "db", "a5", AUTH_TRUST, 5, "samehost: ::1");
    hba_free(h);
}

/* ---- methods ---- */

static void test_methods(void)
{
    struct hba *h = load("local   all m_trust    trust\n"
                         "local   all m_reject   reject\n"
                         "local   all m_password password\n"
                         "local   all m_md5      md5\n"
                         "local   all m_scram    scram-sha-256\n"
                         "local   all m_peer     peer\n"
                         "hostssl all m_cert     all cert\n"
                         "host    all all        all md5\n",
                         "every method");

    expect_match(h, UNIX, NULL, "db", "m_trust", AUTH_TRUST, 1, "trust");
    expect_match(h, UNIX, NULL, "db", "m_reject", AUTH_REJECT, 2, "reject: the rule's line, not 0");
    expect_match(h, UNIX, NULL, "db", "m_password", AUTH_PLAIN, 3, "password");
    expect_match(h, UNIX, NULL, "db", "m_md5", AUTH_MD5, 4, "md5");
    expect_match(h, UNIX, NULL, "db", "m_scram", AUTH_SCRAM, 5, "scram-sha-256");
    expect_match(h, UNIX, NULL, "db", "m_peer", AUTH_PEER, 6, "peer");
    expect_match(h, TLS, "10.0.0.1", "db", "m_cert", AUTH_CERT, 7, "cert");
    expect_match(h, TCP, "10.0.0.1", "db", "m_cert", AUTH_MD5, 8, "cert is hostssl: plain TCP falls through");
    for (int m = AUTH_TRUST; m <= AUTH_REJECT; m++)
        is_int(hba_uses(h, (enum auth_type)m), m != AUTH_HBA, "hba_uses(%s) with every method",
               method_name((enum auth_type)m));
    hba_free(h);

    h = load("host all all 10.0.0.0/8 md5\nlocal all all reject\n", "two methods");
    for (int m = AUTH_TRUST; m <= AUTH_REJECT; m++)
        is_int(hba_uses(h, (enum auth_type)m), m == AUTH_MD5 || m == AUTH_REJECT, "hba_uses(%s) with md5 and reject",
               method_name((enum auth_type)m));
    hba_free(h);
    ok(!hba_uses(NULL, AUTH_TRUST), "hba_uses(NULL) is false");
    is_int(hba_rule_count(NULL), 0, "hba_rule_count(NULL) is 0");
}

/* ---- order, lines, format ---- */

static void test_first_match_and_no_match(void)
{
    struct hba *h = load("host all alice 10.0.0.0/8  trust\n"
                         "host all alice 10.0.0.1/32 reject\n"
                         "host all bob   10.0.0.1/32 reject\n"
                         "host all bob   10.0.0.0/8  trust\n"
                         "host all all   10.0.0.1/32 md5\n",
                         "first match");

    expect_match(h, TCP, "10.0.0.1", "db", "alice", AUTH_TRUST, 1, "a reject after a matching rule does not apply");
    expect_match(h, TCP, "10.0.0.1", "db", "bob", AUTH_REJECT, 3, "a reject before a matching rule applies");
    expect_match(h, TCP, "10.0.0.2", "db", "bob", AUTH_TRUST, 4, "the reject's address does not match: the next");
    expect_match(h, TCP, "10.0.0.1", "db", "carol", AUTH_MD5, 5, "a later rule for everyone else");
    expect_match(h, TCP, "11.0.0.1", "db", "carol", AUTH_REJECT, 0, "no rule matches: reject, line 0");
    expect_match(h, UNIX, NULL, "db", "alice", AUTH_REJECT, 0, "no local rule: a unix connection is rejected");
    hba_free(h);

    h = load("", "an empty file");
    is_int(hba_rule_count(h), 0, "an empty file has no rules");
    expect_match(h, UNIX, NULL, "db", "u", AUTH_REJECT, 0, "an empty file rejects everyone");
    hba_free(h);
    h = load("# only\n\n   # comments\n", "a file of comments");
    is_int(hba_rule_count(h), 0, "a file of comments has no rules");
    hba_free(h);
    {
        struct hba_conn c = {true, false, NULL, "db", "u", false};
        int             line = 42;

        is_int(hba_match(NULL, &c, &line), AUTH_REJECT, "no rules at all (NULL): reject");
        is_int(line, 0, "no rules at all (NULL): line 0");
    }
}

static void test_lines_comments_continuation(void)
{
    struct hba *h = load("# TYPE DATABASE USER ADDRESS METHOD\n"
                         "\n"
                         "   \t \n"
                         "\tlocal all alice trust   # a comment after a rule\n"
                         "local all \"b#b\" md5\n"
                         "host all \\\n"
                         "   carol \\\n"
                         "   10.0.0.0/8 password\n"
                         "local all dave reject\r\n"
                         "local all all scram-sha-256",
                         "comments, blank lines, continuation, CRLF, no newline at the end");

    is_int(hba_rule_count(h), 5, "five rules");
    expect_match(h, UNIX, NULL, "db", "alice", AUTH_TRUST, 4, "a rule after comments and blank lines: line 4");
    expect_match(h, UNIX, NULL, "db", "b#b", AUTH_MD5, 5, "# inside quotes is part of a name");
    expect_match(h, TCP, "10.1.1.1", "db", "carol", AUTH_PLAIN, 6, "a rule continued with \\: its first line");
    expect_match(h, UNIX, NULL, "db", "dave", AUTH_REJECT, 9, "the line count goes on after a continuation; CRLF");
    expect_match(h, UNIX, NULL, "db", "erin", AUTH_SCRAM, 10, "the last rule, with no newline");
    hba_free(h);

    h = load("local all all trust # comment ends with a backslash \\\n"
             "local all all reject\n",
             "a comment ending with a backslash");
    is_int(hba_rule_count(h), 1, "a comment's trailing \\ joins the next line into it, as in PostgreSQL 16");
    hba_free(h);

    /* PostgreSQL starts a comment at any # outside quotes, PgBouncer too. */
    {
        const char *path = write_file("pg_hba.conf", "local all alice trust#no space before the comment\n");
        char       *err = NULL;
        struct hba *h2 = hba_load(path, &err);
        char        got[128];

        ok(h2 != NULL && match_is(h2, UNIX, NULL, "db", "alice", AUTH_TRUST, 1, got, sizeof(got)),
           "a # right after a word starts a comment");
        hba_free(h2);
        free(err);
    }
}

/* ---- refusals ---- */

static void test_refusals(void)
{
    static const struct {
        const char *text;
        int         line;
        const char *msg;
        const char *name;
    } cases[] = {
        {"local all all ident\n", 1, "authentication method \"ident\" is not supported", "ident"},
        {"host all all 10.0.0.0/8 ldap ldapserver=x\n", 1, "authentication method \"ldap\" is not supported", "ldap"},
        {"host all all 10.0.0.0/8 gss\n", 1, "authentication method \"gss\" is not supported", "gss"},
        {"host all all 10.0.0.0/8 sspi\n", 1, "authentication method \"sspi\" is not supported", "sspi"},
        {"host all all 10.0.0.0/8 pam\n", 1, "authentication method \"pam\" is not supported", "pam"},
        {"host all all 10.0.0.0/8 radius\n", 1, "authentication method \"radius\" is not supported", "radius"},
        {"local all all \"trust\"\n", 1, "authentication method \"trust\" is not supported", "a quoted method"},
        {"local all all trust,md5\n", 1, "one authentication method per rule", "two methods"},
        {"local all all TRUST\n", 1, "authentication method \"TRUST\" is not supported", "an upper-case method"},
        {"host all all db.example.com md5\n", 1,
         "address \"db.example.com\": host names and domain suffixes are not supported", "a host name"},
        {"host all all .example.com md5\n", 1,
         "address \".example.com\": host names and domain suffixes are not supported", "a domain suffix"},
        {"host all all localhost md5\n", 1, "address \"localhost\": host names and domain suffixes are not supported",
         "localhost"},
        {"host all all \"all\" md5\n", 1, "address \"all\": host names", "\"all\" quoted as an address"},
        {"local all +admins trust\n", 1, "user \"+admins\": +group (role membership) is not supported", "+group user"},
        {"local +admins all trust\n", 1, "database \"+admins\": +group (role membership) is not supported",
         "+group database"},
        {"local all /^a.*$ trust\n", 1, "user \"/^a.*$\": regular expressions are not supported", "a regex user"},
        {"local /^db trust all trust\n", 1, "database \"/^db\": regular expressions are not supported",
         "a regex database"},
        {"local all all peer map=omicron\n", 1, "authentication option \"map=omicron\" is not supported", "map="},
        {"hostssl all all all cert clientcert=verify-full\n", 1,
         "authentication option \"clientcert=verify-full\" is not supported", "clientcert="},
        {"host all all all md5 # ok\nlocal all all trust x\n", 2, "authentication option \"x\" is not supported",
         "an extra word after the method"},
        {"include other.conf\n", 1, "\"include\" directives are not supported", "include"},
        {"include_if_exists other.conf\n", 1, "\"include_if_exists\" directives are not supported",
         "include_if_exists"},
        {"include_dir conf.d\n", 1, "\"include_dir\" directives are not supported", "include_dir"},
        {"hostgssenc all all all md5\n", 1, "connection type \"hostgssenc\" is not supported", "hostgssenc"},
        {"hostnogssenc all all all md5\n", 1, "connection type \"hostnogssenc\" is not supported", "hostnogssenc"},
        {"hosts all all all md5\n", 1, "invalid connection type \"hosts\"", "an unknown connection type"},
        {"\"local\" all all trust\n", 1, "invalid connection type", "a quoted connection type"},
        {"local,host all all trust\n", 1, "invalid connection type", "a list of connection types"},
        {"local \"all all trust\n", 1, "unterminated quoted string", "an unterminated quote"},
        {"local all \"a\"b trust\n", 1, "unexpected character after a quoted name", "a quote then a letter"},
        {"local all a\"b\" trust\n", 1, "a quote inside a name", "a quote inside a name"},
        {"local all alice,,bob trust\n", 1, "an empty name in a list", "an empty list item"},
        {"local all all trust,\n", 1, "a list ends with a comma", "a list ending with a comma"},
        {"local all all\n", 1, "end of line before the authentication method", "local: missing method"},
        {"host all all 10.0.0.0/8\n", 1, "end of line before the authentication method", "host: missing method"},
        {"host all all\n", 1, "end of line before the authentication method", "host: missing address"},
        {"local all all \\\n", 1, "end of line before the authentication method", "a continuation then end of file"},
        {"host all all all cert\n", 1, "cert authentication is only for \"hostssl\" rules", "cert on host"},
        {"hostnossl all all all cert\n", 1, "cert authentication is only for \"hostssl\" rules", "cert on hostnossl"},
        {"local all all cert\n", 1, "cert authentication is only for \"hostssl\" rules", "cert on local"},
        {"host all all all peer\n", 1, "peer authentication is only for \"local\" (unix-socket) rules", "peer on host"},
        {"hostssl all all all peer\n", 1, "peer authentication is only for \"local\"", "peer on hostssl"},
        {"host all all 10.0.0.0/33 md5\n", 1, "invalid CIDR mask in address \"10.0.0.0/33\"", "/33"},
        {"host all all ::1/129 md5\n", 1, "invalid CIDR mask in address \"::1/129\"", "IPv6 /129"},
        {"host all all 10.0.0.0/ md5\n", 1, "invalid CIDR mask in address \"10.0.0.0/\"", "an empty CIDR mask"},
        {"host all all 10.0.0.0/8x md5\n", 1, "invalid CIDR mask in address \"10.0.0.0/8x\"", "a CIDR mask 8x"},
        {"host all all 10.0.0.0/-1 md5\n", 1, "invalid CIDR mask in address \"10.0.0.0/-1\"", "a negative mask"},
        {"host all all 10.0.0.300/8 md5\n", 1, "invalid IP address \"10.0.0.300/8\"", "an octet of 300"},
        {"host all all 10.0.0.1 md5\n", 1, "invalid IP mask \"md5\"", "no mask: the method is read as the mask"},
        {"host all all 10.0.0.1 255.255.255.0,255.0.0.0 md5\n", 1,
         "address \"10.0.0.1\" has no CIDR mask and no mask field follows", "a list as the mask"},
        {"host all all 10.0.0.1 ffff:: md5\n", 1, "invalid IP mask \"ffff::\"", "an IPv6 mask for an IPv4 address"},
        {"host all all 10.0.0.0/8,11.0.0.0/8 md5\n", 1, "only one address per rule", "two addresses"},
        {"local @nope.txt all trust\n", 1, "could not open @nope.txt (", "@missing-file"},
        {"local all @ trust\n", 1, "@ without a file name", "@ without a name"},
        {"local all all trust\n\n# x\nhost all all all ident\nlocal all all trust\n", 4,
         "authentication method \"ident\"", "a bad line after good ones: its number"},
        {"# c\nhost all \\\n  all \\\n  all ident\n", 2, "authentication method \"ident\"",
         "a continued rule: its first line"},
        {"local a b c d e f g h i j k l m n o p q\n", 1, "too many fields", "too many fields"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_refused(cases[i].text, cases[i].line, cases[i].msg, cases[i].name);

    /* The message of a missing @file names the path it tried: the hba file's folder. */
    {
        char *msg;

        if (asprintf(&msg, "could not open @nope.txt (%s/nope.txt): No such file or directory", tmpdir) < 0) abort();
        expect_refused("local @nope.txt all trust\n", 1, msg, "@missing-file: relative to the hba file's folder");
        free(msg);
    }
    /* Errors inside an @file name the @file and its line. */
    write_file("nested.txt", "alice\n@users.txt\n");
    expect_refused_in("pg_hba.conf", "local all @nested.txt trust\n", "nested.txt:2",
                      "@file inside @file is not supported", "@file inside an @file");
    write_file("badquote.txt", "# x\n\"alice\n");
    expect_refused_in("pg_hba.conf", "local all @badquote.txt trust\n", "badquote.txt:2", "unterminated quoted string",
                      "an unterminated quote in an @file");

    /* The hba file itself missing. */
    {
        char       *path, *err = NULL, *want;
        struct hba *h;

        if (asprintf(&path, "%s/no-such-hba.conf", tmpdir) < 0 ||
            asprintf(&want, "could not open auth_hba_file %s: No such file or directory", path) < 0)
            abort();
        h = hba_load(path, &err);
        ok(h == NULL && err != NULL && strcmp(err, want) == 0, "a missing hba file is refused, naming it");
        if (err == NULL || strcmp(err, want) != 0) printf("#   got '%s'\n", err ? err : "(null)");
        ok(hba_load(path, NULL) == NULL, "a missing hba file with no errmsg: NULL");
        free(err);
        free(want);
        free(path);
    }
    ok(refuses("local all all ident\n"), "a refused file with errmsg");
    ok(hba_load(write_file("pg_hba.conf", "local all all ident\n"), NULL) == NULL,
       "a refused file with no errmsg: NULL, no crash");
}

/*
 * Known gaps: what PostgreSQL gives a meaning pgbun does not implement is
 * read as a plain name instead of being refused, so a reject rule written
 * with it does not reject (hba.h: "never skipped").
 */
static void test_unimplemented_keywords_are_refused(void)
{
    write_file("groups.txt", "+admins\n");
    write_file("regex.txt", "/^adm\n");
    ok(refuses("host @groups.txt all all reject\nhost all all all trust\n"), "refused: +group inside an @file");
    ok(refuses("host all @regex.txt all reject\nhost all all all trust\n"), "refused: /regex inside an @file");
    ok(refuses("host samerole all all reject\nhost all all all trust\n"),
       "refused: the database keyword samerole (role membership)");
    ok(refuses("host samegroup all all reject\nhost all all all trust\n"),
       "refused: the database keyword samegroup (role membership)");
}

int main(void)
{
    if (mkdtemp(tmpdir) == NULL) {
        printf("Bail out! cannot create %s\n", tmpdir);
        return 1;
    }
    if (chdir("/") != 0) {
        printf("Bail out! cannot chdir to /\n");
        return 1;
    }

    test_line_kinds();
    test_databases();
    test_users();
    test_at_files();
    test_addresses();
    test_methods();
    test_first_match_and_no_match();
    test_lines_comments_continuation();
    test_refusals();
    test_unimplemented_keywords_are_refused();

    for (int i = 0; i < nwritten; i++) {
        unlink(written[i]);
        free(written[i]);
    }
    rmdir(tmpdir);
    return done_testing();
}
