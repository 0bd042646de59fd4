/*
 * hba.h - auth_hba_file: which authentication method a connection gets,
 * in PostgreSQL's pg_hba.conf format as PgBouncer reads it.
 *
 *   TYPE       DATABASE      USER        [ADDRESS [MASK]]  METHOD
 *   local      all           all                           peer
 *   hostssl    app,@dbs.txt  alice,bob   10.0.0.0/8        scram-sha-256
 *   host       all           all         samenet           md5
 *
 * Types local, host, hostssl and hostnossl; databases all, sameuser,
 * replication, @file and names; users all, @file and names; addresses all,
 * samehost, samenet, CIDR and address + mask (IPv4 and IPv6); methods
 * trust, reject, password, md5, scram-sha-256, cert (hostssl) and peer
 * (local). Anything else - a host name, +group, samerole, a regular
 * expression, an option such as map=, an include directive - is refused
 * when the file is read, naming file and line, never skipped: a rule that
 * does not hold what it says is worse than none. The first rule that
 * matches decides; none: rejected.
 */
#ifndef PGBUN_HBA_H
#define PGBUN_HBA_H

#include <stdbool.h>

#include "config.h"

struct hba;

/* What a rule is matched against. */
struct hba_conn {
    bool        is_unix;
    bool        tls;
    const char *addr; /* the client's address, as text (TCP) */
    const char *dbname;
    const char *user;
    bool        console; /* the admin console: a rule for "pgbun" or "pgbouncer" holds for it */
};

/* On error returns NULL and sets *errmsg (malloc'd) naming file and line. */
struct hba *hba_load(const char *path, char **errmsg) __attribute__((warn_unused_result));
void        hba_free(struct hba *h);
/* The method of the first matching rule, and its line; AUTH_REJECT and line 0 when none matches. */
enum auth_type hba_match(const struct hba *h, const struct hba_conn *conn, int *line);
/* Whether some rule's method is m. */
bool hba_uses(const struct hba *h, enum auth_type m);
/* Rules loaded (SHOW LISTS, tests). */
int hba_rule_count(const struct hba *h);

#endif
