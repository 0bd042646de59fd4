/*
 * test_config.c - config_load() from defaults, ini files and the environment.
 *
 * Each case writes an ini file with mkstemp, loads it, checks the snapshot
 * or the error message, and removes the file. Warnings go to a temporary log
 * file so that ignored keys can be checked without noise on stderr.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "tap.h"

static char log_path[] = "/tmp/pgbun_test_config_log_XXXXXX";

static const char *const env_names[] = {
    "POOL_MODE",
    "SERVER_HOST",
    "SERVER_PORT",
    "MAX_CLIENT_CONN",
    "DEFAULT_POOL_SIZE",
    "LISTEN_ADDR",
    "LISTEN_PORT",
    "PGBUN_POOL_MODE",
    "PGBUN_LISTEN_PORT",
    "PGBUN_SERVER_HOST",
    "PGBUN_QUERY_TIMEOUT",
    "PGBUN_LOG_POOLER_ERRORS",
    "PGBUN_LOG_CONNECTIONS",
};

static void clear_env(void)
{
    for (size_t i = 0; i < sizeof(env_names) / sizeof(env_names[0]); i++)
        unsetenv(env_names[i]);
}

/* Writes `text` to a new temporary file; returns its malloc'd path. */
static char *write_ini(const char *text)
{
    char  *path = strdup("/tmp/pgbun_test_config_XXXXXX");
    int    fd = mkstemp(path);
    size_t len = strlen(text);

    if (fd < 0 || write(fd, text, len) != (ssize_t)len) {
        printf("Bail out! cannot write temp file\n");
        exit(1);
    }
    close(fd);
    return path;
}

static void remove_ini(char *path)
{
    unlink(path);
    free(path);
}

/* Loads `text`; expects failure; checks the error contains "<path>:<want>". */
static void expect_error(const char *text, const char *want, const char *name)
{
    char                *path = write_ini(text);
    char                *err = NULL;
    char                 expected[512];
    struct pgbun_config *cfg = config_load(path, &err);

    snprintf(expected, sizeof(expected), "%s:%s", path, want);
    ok(cfg == NULL && err != NULL && strstr(err, expected) != NULL, "%s", name);
    if (err == NULL || strstr(err, expected) == NULL)
        printf("#   got '%s', want '%s'\n", err ? err : "(null)", expected);
    config_free(cfg);
    free(err);
    remove_ini(path);
}

static bool log_contains(const char *needle)
{
    FILE  *f = fopen(log_path, "r");
    char   buf[8192];
    size_t n;

    if (f == NULL) return false;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return strstr(buf, needle) != NULL;
}

static void test_defaults_in_sidecar_mode(void)
{
    char                   *err = NULL;
    struct pgbun_config    *cfg = config_load(NULL, &err);
    const struct db_config *db;

    ok(cfg != NULL && err == NULL, "sidecar mode loads without a file");
    if (cfg == NULL) {
        free(err);
        return;
    }
    is_str(cfg->path, NULL, "sidecar: path is NULL");
    is_str(cfg->listen_addr, "127.0.0.1", "default listen_addr");
    is_int(cfg->listen_port, 6432, "default listen_port");
    is_str(cfg->unix_socket_dir, "/tmp", "default unix_socket_dir");
    is_int(cfg->unix_socket_mode, 0777, "default unix_socket_mode");
    is_int(cfg->listen_backlog, 128, "default listen_backlog");
    is_int(cfg->so_reuseport, 0, "default so_reuseport");
    is_int(cfg->log_format, LOG_FORMAT_TEXT, "default log_format");
    is_int(cfg->syslog, 0, "default syslog");
    is_str(cfg->syslog_ident, "pgbun", "default syslog_ident");
    is_str(log_syslog_facilities[cfg->syslog_facility], "daemon", "default syslog_facility");
    is_int(cfg->pool_mode, POOL_SESSION, "default pool_mode");
    is_int(cfg->max_client_conn, 100, "default max_client_conn");
    is_int(cfg->default_pool_size, 20, "default default_pool_size");
    is_int(cfg->min_pool_size, 0, "default min_pool_size");
    is_int(cfg->reserve_pool_size, 0, "default reserve_pool_size");
    is_int(cfg->reserve_pool_timeout, 5 * USEC_PER_SEC, "default reserve_pool_timeout");
    is_int(cfg->max_db_connections, 0, "default max_db_connections");
    is_int(cfg->max_user_connections, 0, "default max_user_connections");
    is_int(cfg->max_prepared_statements, 200, "default max_prepared_statements");
    is_str(config_session_state_name(cfg->session_state), "track", "default session_state");
    is_str(cfg->server_reset_query, "DISCARD ALL", "default server_reset_query");
    is_str(cfg->server_check_query, "<empty>",
           "default server_check_query is <empty> (an empty query), as in PgBouncer");
    is_int(cfg->server_check_delay, 30 * USEC_PER_SEC, "default server_check_delay");
    is_int(cfg->server_lifetime, 3600 * USEC_PER_SEC, "default server_lifetime");
    is_int(cfg->server_idle_timeout, 600 * USEC_PER_SEC, "default server_idle_timeout");
    is_int(cfg->server_connect_timeout, 15 * USEC_PER_SEC, "default server_connect_timeout");
    is_int(cfg->server_login_retry, 15 * USEC_PER_SEC, "default server_login_retry");
    is_int(cfg->query_timeout, 0, "default query_timeout");
    is_int(cfg->query_wait_timeout, 120 * USEC_PER_SEC, "default query_wait_timeout");
    is_int(cfg->client_idle_timeout, 0, "default client_idle_timeout");
    is_int(cfg->client_login_timeout, 60 * USEC_PER_SEC, "default client_login_timeout");
    is_int(cfg->idle_transaction_timeout, 0, "default idle_transaction_timeout");
    is_int(cfg->transaction_timeout, 0, "default transaction_timeout");
    is_int(cfg->stats_period, 60 * USEC_PER_SEC, "default stats_period");
    is_int(cfg->auth_type, AUTH_MD5, "default auth_type");
    is_int(cfg->log_connections, 1, "default log_connections");
    is_int(cfg->log_disconnections, 1, "default log_disconnections");
    is_int(cfg->pkt_buf, 4096, "default pkt_buf");
    is_int(cfg->max_packet_size, 268435456, "default max_packet_size");
    is_int(cfg->verbose, 0, "default verbose");
    is_str(cfg->client_tls_sslmode, "disable", "default client_tls_sslmode");
    is_str(cfg->server_tls_sslmode, "prefer", "default server_tls_sslmode: prefer, as PgBouncer");
    is_str(cfg->server_host, "127.0.0.1", "default server_host");
    is_int(cfg->server_port, 5432, "default server_port");
    is_str(cfg->auth_file, NULL, "default auth_file is NULL");
    is_str(cfg->admin_users, NULL, "default admin_users is NULL");
    is_str(cfg->ignore_startup_parameters, NULL, "default ignore_startup_parameters is NULL");
    ok(cfg->users == NULL, "sidecar: no users");

    db = config_find_db(cfg, "anything");
    ok(db != NULL && strcmp(db->name, "*") == 0, "sidecar: any database finds the '*' entry");
    if (db != NULL) {
        is_str(db->host, NULL, "sidecar '*': host NULL (server_host applies)");
        is_int(db->port, 0, "sidecar '*': port 0 (server_port applies)");
        is_int(db->pool_size, -1, "sidecar '*': pool_size inherits");
        is_int(db->pool_mode, POOL_MODE_UNSET, "sidecar '*': pool_mode inherits");
        ok(db->next == NULL, "sidecar: exactly one database entry");
    }
    config_free(cfg);
}

static void test_full_ini(void)
{
    char                     *path = write_ini("; a pgbouncer.ini as PgBouncer users write it\n"
                                                                   "# second comment style\n"
                                                                   "[databases]\n"
                                                                   "app = host=db1.example.com port=5433 dbname=appdb user=svc password='it''s a \\'secret' "
                                                                   "pool_size=7 min_pool_size=2 reserve_pool=3 max_db_connections=50 pool_mode=transaction "
                                                                   "application_name='my app' session_state=off\n"
                                                                   "\"my db\" = host=/var/run/postgresql dbname = other reserve_pool_size=4\n"
                                                                   "empty =\n"
                                                                   "* = host=fallback\n"
                                                                   "\n"
                                                                   "[pgbouncer]\n"
                                                                   "  Listen_Addr = * \r\n"
                                                                   "listen_port = 7432\n"
                                                                   "unix_socket_dir =\n"
                                                                   "unix_socket_mode = 0700\n"
                                                                   "auth_type = scram-sha-256\n"
                                                                   "auth_file = /etc/pgbouncer/userlist.txt\n"
                                                                   "admin_users = admin, root\n"
                                                                   "pool_mode = statement\n"
                                                                   "max_client_conn = 1000\n"
                                                                   "default_pool_size = 30\n"
                                                                   "server_lifetime = 1.5\n"
                                                                   "server_idle_timeout = 500ms\n"
                                                                   "query_wait_timeout = 2min\n"
                                                                   "so_reuseport = on\n"
                                                                   "log_connections = 0\n"
                                                                   "server_reset_query = DEALLOCATE ALL; SELECT 1 -- kept raw\n"
                                                                   "max_packet_size = 2147483647\n"
                                                                   "client_tls_sslmode = require\n"
                                                                   "log_pooler_errors = 1\n"
                                                                   "tcp_defer_accept = 1\n"
                                                                   "\n"
                                                                   "[users]\n"
                                                                   "alice = pool_mode=session pool_size=3 max_user_connections=9\n"
                                                                   "bob = query_timeout=5\n");
    char                     *err = NULL;
    struct pgbun_config      *cfg = config_load(path, &err);
    const struct db_config   *db;
    const struct user_config *u;

    ok(cfg != NULL, "full pgbouncer.ini loads");
    if (err != NULL) printf("#   error: %s\n", err);
    free(err);
    if (cfg == NULL) {
        remove_ini(path);
        return;
    }
    is_str(cfg->path, path, "path is kept");
    is_str(cfg->listen_addr, "*", "key names are case-insensitive, values trimmed, CR dropped");
    is_int(cfg->listen_port, 7432, "listen_port from file");
    is_str(cfg->unix_socket_dir, "", "empty unix_socket_dir disables (stays \"\")");
    is_int(cfg->unix_socket_mode, 0700, "unix_socket_mode is octal");
    is_int(cfg->auth_type, AUTH_SCRAM, "auth_type scram-sha-256");
    is_str(cfg->auth_file, "/etc/pgbouncer/userlist.txt", "auth_file");
    ok(config_list_has(cfg->admin_users, "root"), "admin_users list");
    is_int(cfg->pool_mode, POOL_STATEMENT, "pool_mode statement");
    is_int(cfg->max_client_conn, 1000, "max_client_conn");
    is_int(cfg->default_pool_size, 30, "default_pool_size");
    is_int(cfg->server_lifetime, 1500000, "server_lifetime 1.5 s");
    is_int(cfg->server_idle_timeout, 500000, "server_idle_timeout 500ms");
    is_int(cfg->query_wait_timeout, 120 * USEC_PER_SEC, "query_wait_timeout 2min");
    is_int(cfg->so_reuseport, 1, "so_reuseport on");
    is_int(cfg->log_connections, 0, "log_connections 0");
    is_str(cfg->server_reset_query, "DEALLOCATE ALL; SELECT 1 -- kept raw", "values are raw: ';' mid-line is kept");
    is_int(cfg->max_packet_size, 2147483647, "PgBouncer's max_packet_size default loads");
    is_str(cfg->client_tls_sslmode, "require", "client_tls_sslmode");
    ok(log_contains(":28: key 'log_pooler_errors' is not supported yet and is ignored"),
       "ignored key warns with file:line");
    ok(log_contains("key 'tcp_defer_accept' is not supported yet and is ignored"), "tcp_defer_accept warns");

    db = config_find_db(cfg, "app");
    ok(db != NULL && strcmp(db->name, "app") == 0, "find db 'app'");
    if (db != NULL) {
        is_str(db->host, "db1.example.com", "db host");
        is_int(db->port, 5433, "db port");
        is_str(db->dbname, "appdb", "db dbname");
        is_str(db->user, "svc", "db user");
        is_str(db->password, "it's a 'secret", "quoted value with '' and \\' escapes");
        is_int(db->pool_size, 7, "db pool_size");
        is_int(db->min_pool_size, 2, "db min_pool_size");
        is_int(db->reserve_pool_size, 3, "reserve_pool is an alias of reserve_pool_size");
        is_int(db->max_db_connections, 50, "db max_db_connections");
        is_int(db->pool_mode, POOL_TRANSACTION, "db pool_mode");
        is_str(db->application_name, "my app", "db application_name quoted");
        is_str(config_session_state_name(db->session_state), "off", "db session_state");
    }
    db = config_find_db(cfg, "my db");
    ok(db != NULL && strcmp(db->name, "my db") == 0, "double-quoted database name");
    if (db != NULL) {
        is_str(db->host, "/var/run/postgresql", "unix socket host");
        is_str(db->dbname, "other", "spaces around '=' in a connstr");
        is_int(db->reserve_pool_size, 4, "reserve_pool_size");
        is_int(db->port, 0, "unset port is 0");
        is_int(db->pool_size, -1, "unset pool_size is -1");
        is_int(db->pool_mode, POOL_MODE_UNSET, "unset pool_mode");
        is_str(db->user, NULL, "unset user is NULL");
    }
    db = config_find_db(cfg, "empty");
    ok(db != NULL && strcmp(db->name, "empty") == 0 && db->host == NULL, "an empty connstr is a valid entry");
    db = config_find_db(cfg, "nosuchdb");
    ok(db != NULL && strcmp(db->name, "*") == 0, "unknown name falls back to '*'");
    if (db != NULL) is_str(db->host, "fallback", "'*' entry host");
    db = config_find_db(cfg, "APP");
    ok(db != NULL && strcmp(db->name, "*") == 0, "database names are case-sensitive");

    u = config_find_user(cfg, "alice");
    ok(u != NULL, "find user alice");
    if (u != NULL) {
        is_int(u->pool_mode, POOL_SESSION, "user pool_mode");
        is_int(u->pool_size, 3, "user pool_size");
        is_int(u->max_user_connections, 9, "user max_user_connections");
    }
    u = config_find_user(cfg, "bob");
    ok(u != NULL && u->pool_size == -1 && u->pool_mode == POOL_MODE_UNSET && u->max_user_connections == -1,
       "user with only an ignored key keeps inherit defaults");
    ok(config_find_user(cfg, "carol") == NULL, "unknown user is NULL");
    config_free(cfg);
    remove_ini(path);
}

static void test_no_databases_section(void)
{
    char                *path = write_ini("[pgbun]\nlisten_port = 6000\n");
    char                *err = NULL;
    struct pgbun_config *cfg = config_load(path, &err);

    ok(cfg != NULL && cfg->databases == NULL, "a file without [databases] gets no '*' entry");
    ok(cfg != NULL && config_find_db(cfg, "x") == NULL, "config_find_db is NULL without entries");
    config_free(cfg);
    free(err);
    remove_ini(path);
}

static void test_duplicates_replace(void)
{
    char                *path = write_ini("[databases]\n"
                                                         "a = host=one\n"
                                                         "b = host=two\n"
                                                         "a = host=three\n"
                                                         "[pgbun]\n"
                                                         "listen_port = 1\n"
                                                         "listen_port = 2\n");
    char                *err = NULL;
    struct pgbun_config *cfg = config_load(path, &err);

    ok(cfg != NULL, "duplicates load");
    if (cfg != NULL) {
        is_str(cfg->databases->name, "a", "redefined db keeps its place");
        is_str(cfg->databases->host, "three", "later db definition wins");
        ok(cfg->databases->next != NULL && cfg->databases->next->next == NULL, "no duplicate entry");
        is_int(cfg->listen_port, 2, "later key wins");
    }
    config_free(cfg);
    free(err);
    remove_ini(path);
}

static void test_include(void)
{
    char                *inner = write_ini("max_client_conn = 77\n[databases]\ninc = host=included\n");
    const char          *base = strrchr(inner, '/') + 1;
    char                 text[512];
    char                *outer, *err = NULL;
    struct pgbun_config *cfg;

    snprintf(text, sizeof(text), "[pgbun]\n%%include %s\nafter = host=a\n", base);
    outer = write_ini(text);
    cfg = config_load(outer, &err);
    ok(cfg != NULL, "%%include relative to the including file loads");
    if (err != NULL) printf("#   error: %s\n", err);
    if (cfg != NULL) {
        is_int(cfg->max_client_conn, 77, "included file inherits the current section");
        ok(config_find_db(cfg, "inc") != NULL, "included [databases] entry");
        ok(config_find_db(cfg, "after") != NULL, "section switched by the include carries over");
    }
    config_free(cfg);
    free(err);
    remove_ini(outer);

    /* An include of a missing file names the missing file. */
    outer = write_ini("[pgbun]\n%include /nonexistent/pgbun-inc.ini\n");
    err = NULL;
    cfg = config_load(outer, &err);
    ok(cfg == NULL && err != NULL && strstr(err, "/nonexistent/pgbun-inc.ini: cannot open: ") != NULL,
       "missing %%include file is an error");
    config_free(cfg);
    free(err);
    remove_ini(outer);

    /* Self-inclusion stops at the depth limit. */
    outer = write_ini("");
    {
        FILE *f = fopen(outer, "w");
        fprintf(f, "%%include %s\n", outer);
        fclose(f);
    }
    err = NULL;
    cfg = config_load(outer, &err);
    ok(cfg == NULL && err != NULL && strstr(err, "nested too deeply") != NULL, "recursive %%include is refused");
    config_free(cfg);
    free(err);
    remove_ini(outer);
    remove_ini(inner);
}

static void test_errors(void)
{
    char                *err = NULL;
    struct pgbun_config *cfg;

    expect_error("[pgbun]\n\nlisten_port = abc\n", "3: listen_port: invalid integer 'abc'",
                 "bad int names file:line:key");
    expect_error("[pgbun]\nlisten_port = 70000\n", "2: listen_port: value 70000 out of range", "port range");
    expect_error("[pgbun]\nlisten_port = 0\n", "2: listen_port: value 0 out of range", "port 0 refused");
    expect_error("[pgbun]\ndefault_pool_size = -1\n", "2: default_pool_size: value -1 out of range",
                 "negative pool size refused");
    expect_error("[pgbun]\npkt_buf = 0\n", "2: pkt_buf: value 0 out of range (1..", "pkt_buf 0 refused");
    expect_error("[pgbun]\npkt_buf = -4096\n", "2: pkt_buf: value -4096 out of range (1..", "negative pkt_buf refused");
    expect_error("[pgbun]\nlisten_port = 12abc\n", "2: listen_port: invalid integer '12abc'", "trailing junk in int");
    expect_error("[pgbun]\nno_such_key = 1\n", "2: unknown key 'no_such_key'", "unknown key");
    expect_error("[pgbun]\n[bogus]\n", "2: unknown section [bogus]", "unknown section");
    expect_error("[pgbun]\npool_mode = sometimes\n", "2: pool_mode: invalid pool_mode 'sometimes'", "bad pool_mode");
    expect_error("[pgbun]\nauth_type = ldap\n", "2: auth_type: auth_type 'ldap' is not supported yet",
                 "auth_type ldap");
    expect_error("[pgbun]\nauth_type = rot13\n", "2: auth_type: invalid auth_type 'rot13'", "bad auth_type");
    expect_error("[pgbun]\nlog_connections = maybe\n", "2: log_connections: invalid boolean 'maybe'", "bad bool");
    expect_error("[pgbun]\nserver_lifetime = 5 fortnights\n", "2: server_lifetime: invalid time '5 fortnights'",
                 "bad time");
    expect_error("[pgbun]\nunix_socket_mode = 0789\n", "2: unix_socket_mode: invalid octal mode '0789'", "bad octal");
    expect_error("[pgbun]\nserver_tls_sslmode = sometimes\n", "2: server_tls_sslmode: invalid value 'sometimes'",
                 "bad sslmode");
    expect_error("[databases]\nfoo = host=x bogus=1\n", "2: unknown key 'bogus'", "bad db entry key");
    expect_error("[databases]\nfoo = port=abc\n", "2: port: invalid integer 'abc'", "bad db port");
    expect_error("[databases]\nfoo = host=a,b port=1,abc\n", "2: port: invalid integer 'abc'", "bad port in a list");
    expect_error("[databases]\nfoo = host=a,b port=5432,70000\n", "2: port: value 70000 out of range",
                 "port of a list out of range");
    expect_error("[databases]\nfoo = host=a,b port=1,2,3\n", "2: port: 3 ports for 2 hosts", "more ports than hosts");
    expect_error("[databases]\nfoo = port=1,2\n", "2: port: 2 ports for 1 hosts", "a port list without a host list");
    expect_error("[databases]\nfoo = host=a,,b\n", "2: host: entry 2 of the host list is empty", "empty host entry");
    expect_error("[databases]\nfoo = pool_mode=never\n", "2: pool_mode: invalid pool_mode 'never'", "bad db pool_mode");
    expect_error("[pgbun]\nsession_state = sometimes\n", "2: session_state: invalid value 'sometimes'",
                 "bad session_state");
    expect_error("[databases]\nfoo = session_state=maybe\n", "2: session_state: invalid value 'maybe'",
                 "bad db session_state");
    expect_error("[databases]\nfoo = password='unterminated\n", "2: password: unterminated quoted value",
                 "unterminated quote");
    expect_error("[databases]\nfoo = host\n", "2: host: missing '=' after key", "db key without '='");
    expect_error("[databases]\nfoo = host=x =y\n", "2: syntax error: empty key", "db pair without key");
    expect_error("[users]\nalice = pool_size=x\n", "2: pool_size: invalid integer 'x'", "bad user pool_size");
    expect_error("[users]\nalice = colour=blue\n", "2: unknown key 'colour'", "bad user key");
    expect_error("listen_port = 1\n", "1: key 'listen_port' outside of any section", "key before any section");
    expect_error("[pgbun]\njust words\n", "2: syntax error", "line without '='");
    expect_error("[databases]\n\"open = host=x\n", "2: unterminated quoted name", "unterminated db name");

    cfg = config_load("/nonexistent/pgbun.ini", &err);
    ok(cfg == NULL && err != NULL && strcmp(err, "/nonexistent/pgbun.ini: cannot open: No such file or directory") == 0,
       "missing file: '<file>: cannot open: <strerror>'");
    if (cfg != NULL || err == NULL || strstr(err, "cannot open") == NULL)
        printf("#   got '%s'\n", err ? err : "(null)");
    config_free(cfg);
    free(err);
}

/* host= may list hosts, with one port for all or one per host (config_list_* read the lists). */
static void test_host_and_port_lists(void)
{
    char                   *err = NULL, *path, one[CONFIG_HOST_MAX];
    struct pgbun_config    *cfg;
    const struct db_config *a, *b;

    path = write_ini("[databases]\na = host='h1, /tmp/s ,10.0.0.3' port=5432\nb = host=h1,h2 port='5432, 6543'\n");
    cfg = config_load(path, &err);
    ok(cfg != NULL, "host lists load");
    if (cfg == NULL) printf("#   got '%s'\n", err ? err : "(null)");
    a = cfg ? config_find_db(cfg, "a") : NULL;
    b = cfg ? config_find_db(cfg, "b") : NULL;
    ok(a != NULL && strcmp(a->host, "h1, /tmp/s ,10.0.0.3") == 0 && a->port == 5432 && a->ports == NULL,
       "a host list keeps its text; one port for all");
    ok(a != NULL && config_list_count(a->host) == 3 && config_list_entry(a->host, 1, one, sizeof(one)) &&
           strcmp(one, "/tmp/s") == 0,
       "entries are read trimmed");
    ok(a != NULL && !config_list_entry(a->host, 3, one, sizeof(one)), "no entry past the end");
    ok(b != NULL && b->port == 5432 && b->ports != NULL && strcmp(b->ports, "5432, 6543") == 0 &&
           config_list_entry(b->ports, 1, one, sizeof(one)) && strcmp(one, "6543") == 0,
       "a port per host: the first in port, the list kept");
    config_free(cfg);
    free(err);
    remove_ini(path);
}

/* PgBouncer checks no range for pkt_buf: pgbun takes every size from 1 up (no buffer is sized by it). */
static void test_pkt_buf_takes_any_positive_size(void)
{
    static const char *const values[] = {"1", "100", "511", "2147483647"};

    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        char                 text[64], *err = NULL, *path;
        struct pgbun_config *cfg;

        snprintf(text, sizeof(text), "[pgbun]\npkt_buf = %s\n", values[i]);
        path = write_ini(text);
        cfg = config_load(path, &err);
        ok(cfg != NULL && cfg->pkt_buf == atoi(values[i]), "pkt_buf = %s accepted", values[i]);
        if (cfg == NULL) printf("#   got '%s'\n", err ? err : "(null)");
        config_free(cfg);
        free(err);
        remove_ini(path);
    }
}

static void test_connect_query_fast_close_and_wait_notify(void)
{
    char                *path = write_ini("[pgbouncer]\nserver_fast_close = 1\nquery_wait_notify = 2.5\n"
                                                         "[databases]\nfoo = host=h connect_query='SET a.b = ''x y'''\n");
    char                *err = NULL;
    struct pgbun_config *cfg = config_load(path, &err), *copy;
    const char          *q;

    ok(cfg != NULL, "connect_query, server_fast_close and query_wait_notify load");
    if (err != NULL) printf("#   error: %s\n", err);
    q = cfg ? config_find_db(cfg, "foo")->connect_query : NULL;
    ok(q != NULL && strcmp(q, "SET a.b = 'x y'") == 0, "connect_query is unquoted");
    ok(cfg && cfg->server_fast_close && cfg->query_wait_notify == 2500000, "server_fast_close and query_wait_notify");
    copy = cfg ? config_dup(cfg) : NULL;
    q = copy ? config_find_db(copy, "foo")->connect_query : NULL;
    ok(q != NULL && strcmp(q, "SET a.b = 'x y'") == 0, "config_dup copies connect_query");
    ok(!log_contains("key 'connect_query' is not supported"), "no warning for connect_query");
    config_free(copy);
    config_free(cfg);
    free(err);
    remove_ini(path);
}

static void test_ignored_and_peers(void)
{
    char                *path = write_ini("[pgbouncer]\n"
                                                         "job_name = x\ndns_nxdomain_ttl = 15\ntcp_keepcnt = 3\ndns_max_ttl = 15\n"
                                                         "server_tls_key_file = /k\nauth_ident_file = d\npeer_id = 1\n"
                                                         "[databases]\nfoo = host=h client_encoding=UTF8 datestyle=ISO "
                                                         "load_balance_hosts=disable auth_user=x\n"
                                                         "[peers]\n1 = host=/tmp/p1\n");
    char                *err = NULL;
    struct pgbun_config *cfg = config_load(path, &err);

    ok(cfg != NULL, "ignored keys, db params and [peers] load");
    if (err != NULL) printf("#   error: %s\n", err);
    ok(log_contains("key 'datestyle' is not supported yet and is ignored"), "ignored db param warns");
    ok(log_contains("section [peers] is not supported yet and is ignored"), "[peers] warns");
    ok(cfg != NULL && config_find_db(cfg, "foo") != NULL && strcmp(config_find_db(cfg, "foo")->host, "h") == 0,
       "entry with ignored params keeps the real ones");
    config_free(cfg);
    free(err);
    remove_ini(path);
}

static void test_env(void)
{
    char                *path = write_ini("[pgbun]\npool_mode = session\nlisten_port = 7000\nserver_host = filehost\n");
    char                *err = NULL;
    struct pgbun_config *cfg;

    clear_env();
    cfg = config_load(path, &err);
    ok(cfg != NULL && cfg->pool_mode == POOL_SESSION, "file value without env");
    config_free(cfg);

    setenv("POOL_MODE", "transaction", 1);
    setenv("LISTEN_PORT", "7001", 1);
    cfg = config_load(path, &err);
    ok(cfg != NULL && cfg->pool_mode == POOL_TRANSACTION, "POOL_MODE beats the file");
    ok(cfg != NULL && cfg->listen_port == 7001, "LISTEN_PORT beats the file");
    config_free(cfg);

    setenv("PGBUN_POOL_MODE", "statement", 1);
    setenv("PGBUN_SERVER_HOST", "envhost", 1);
    setenv("PGBUN_QUERY_TIMEOUT", "2.5", 1);
    setenv("PGBUN_LOG_CONNECTIONS", "off", 1);
    setenv("PGBUN_LOG_POOLER_ERRORS", "1", 1);
    cfg = config_load(path, &err);
    ok(cfg != NULL && cfg->pool_mode == POOL_STATEMENT, "PGBUN_POOL_MODE beats POOL_MODE");
    ok(cfg != NULL && cfg->server_host != NULL && strcmp(cfg->server_host, "envhost") == 0,
       "PGBUN_SERVER_HOST beats the file");
    ok(cfg != NULL && cfg->query_timeout == 2500000, "PGBUN_ time value");
    ok(cfg != NULL && !cfg->log_connections, "PGBUN_ bool value");
    ok(log_contains("environment PGBUN_LOG_POOLER_ERRORS: key 'log_pooler_errors' is not supported yet and is ignored"),
       "ignored key from the environment warns");
    config_free(cfg);

    setenv("PGBUN_LISTEN_PORT", "x", 1);
    cfg = config_load(path, &err);
    ok(cfg == NULL, "bad env value fails the load");
    is_str(err, "environment PGBUN_LISTEN_PORT: invalid integer 'x'", "bad env value names the variable");
    free(err);
    err = NULL;
    unsetenv("PGBUN_LISTEN_PORT");

    setenv("SERVER_PORT", "99999", 1);
    cfg = config_load(NULL, &err);
    ok(cfg == NULL && err != NULL && strstr(err, "environment SERVER_PORT: value 99999 out of range") != NULL,
       "short env name range error");
    free(err);
    err = NULL;
    unsetenv("SERVER_PORT");

    setenv("SERVER_HOST", "pg.internal", 1);
    unsetenv("PGBUN_SERVER_HOST");
    cfg = config_load(NULL, &err);
    ok(cfg != NULL && strcmp(cfg->server_host, "pg.internal") == 0, "sidecar: SERVER_HOST applies");
    ok(cfg != NULL && config_find_db(cfg, "x") != NULL, "sidecar with env still has '*'");
    config_free(cfg);
    free(err);

    clear_env();
    remove_ini(path);
}

static void test_parse_time(void)
{
    static const struct {
        const char *in;
        usec_t      want;
    } good[] = {
        {"15", 15 * USEC_PER_SEC},
        {"1.5", 1500000},
        {"500ms", 500000},
        {"10s", 10 * USEC_PER_SEC},
        {"2min", 120 * USEC_PER_SEC},
        {"1h", 3600 * USEC_PER_SEC},
        {"0", 0},
        {"0.25", 250000},
        {" 3 s ", 3 * USEC_PER_SEC},
        {"750us", 750},
        {"1d", 86400 * USEC_PER_SEC},
        {".5", 500000},
        {"0.000001", 1},
        {"1.5ms", 1500},
        {"3600.0", 3600 * USEC_PER_SEC},
    };
    static const char *const bad[] = {
        "",        "abc", "-1", "1x", "1.2.3", "s", ".", "10 seconds", "1e3", "0x10", "99999999999999999999",
        "1 min 2", "inf", "nan"};

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        usec_t v = -1;
        bool   r = config_parse_time(good[i].in, &v);
        ok(r && v == good[i].want, "config_parse_time('%s') = %lld", good[i].in, (long long)good[i].want);
        if (!r || v != good[i].want) printf("#   got %d, %lld\n", r, (long long)v);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        usec_t v = 42;
        ok(!config_parse_time(bad[i], &v) && v == 42, "config_parse_time('%s') fails, leaves output", bad[i]);
    }
    {
        usec_t v = 42;
        ok(!config_parse_time(NULL, &v), "config_parse_time(NULL) fails");
    }
}

static void test_list_has(void)
{
    ok(config_list_has("admin,root", "root"), "list: comma");
    ok(config_list_has("admin, root", "root"), "list: comma and space");
    ok(config_list_has("  admin   root ", "admin"), "list: spaces only");
    ok(config_list_has("Admin,ROOT", "root"), "list: case-insensitive");
    ok(config_list_has("extra_float_digits,options", "OPTIONS"), "list: parameter names");
    ok(!config_list_has("admin,root", "roo"), "list: no prefix match");
    ok(!config_list_has("admin,root", "rootx"), "list: no longer match");
    ok(!config_list_has("", "root"), "list: empty list");
    ok(!config_list_has(NULL, "root"), "list: NULL list");
    ok(!config_list_has("a,,b", ""), "list: empty name never matches");
}

static void test_names(void)
{
    is_str(config_pool_mode_name(POOL_SESSION), "session", "pool mode name session");
    is_str(config_pool_mode_name(POOL_TRANSACTION), "transaction", "pool mode name transaction");
    is_str(config_pool_mode_name(POOL_STATEMENT), "statement", "pool mode name statement");
    is_str(config_auth_type_name(AUTH_TRUST), "trust", "auth name trust");
    is_str(config_auth_type_name(AUTH_PLAIN), "plain", "auth name plain");
    is_str(config_auth_type_name(AUTH_MD5), "md5", "auth name md5");
    is_str(config_auth_type_name(AUTH_SCRAM), "scram-sha-256", "auth name scram-sha-256");
}

/* The SHOW CONFIG row for `key`: true and *out filled (value malloc'd), or false. */
static bool find_item(const struct pgbun_config *cfg, const char *key, struct config_item *out)
{
    for (size_t i = 0; i < config_item_count(); i++) {
        struct config_item it;

        if (!config_item(cfg, i, &it)) return false;
        if (strcmp(it.key, key) == 0) {
            *out = it;
            return true;
        }
        free(it.value);
    }
    return false;
}

/* Checks the SHOW CONFIG value of `key`. */
static void is_item(const struct pgbun_config *cfg, const char *key, const char *want, const char *name)
{
    struct config_item it;

    if (!find_item(cfg, key, &it)) {
        ok(0, "%s", name);
        printf("#   no item '%s'\n", key);
        return;
    }
    is_str(it.value, want, "%s", name);
    free(it.value);
}

/* Every item's value, in order; NULL-free array of config_item_count() malloc'd strings. */
static char **item_values(const struct pgbun_config *cfg)
{
    size_t n = config_item_count();
    char **v = calloc(n, sizeof(*v));

    for (size_t i = 0; v != NULL && i < n; i++) {
        struct config_item it;

        if (!config_item(cfg, i, &it)) {
            printf("Bail out! config_item(%zu) failed\n", i);
            exit(1);
        }
        v[i] = it.value;
    }
    return v;
}

static void free_values(char **v)
{
    for (size_t i = 0; v != NULL && i < config_item_count(); i++)
        free(v[i]);
    free(v);
}

/* Number of items whose value differs between a and b; each difference is printed. */
static int count_differences(char **a, char **b)
{
    int diffs = 0;

    for (size_t i = 0; i < config_item_count(); i++) {
        if (strcmp(a[i], b[i]) != 0) {
            printf("#   item %zu: '%s' vs '%s'\n", i, a[i], b[i]);
            diffs++;
        }
    }
    return diffs;
}

static void test_items_list_keys_with_a_field_in_table_order(void)
{
    static const char *const ignored[] = {"job_name", "log_pooler_errors", "tcp_defer_accept", "peer_id",
                                          "auth_ident_file"};
    static const char *const restart[] = {"listen_addr",    "listen_port",  "unix_socket_dir",   "unix_socket_mode",
                                          "listen_backlog", "so_reuseport", "workers",           "user",
                                          "pidfile",        "logfile",      "unix_socket_group", "disable_pqexec"};
    struct pgbun_config     *cfg = config_load(NULL, NULL);
    size_t                   n = config_item_count();
    int                      bad_ignored = 0, duplicates = 0, restart_only = 0, restart_listed = 0;
    struct config_item       first = {0}, it;

    ok(n >= 50, "config_item_count() lists every implemented key (%zu)", n);
    ok(cfg != NULL && config_item(cfg, 0, &first) && strcmp(first.key, "listen_addr") == 0,
       "items are in table order: listen_addr first");
    free(first.value);
    for (size_t i = 0; cfg != NULL && i < n; i++) {
        if (!config_item(cfg, i, &it)) break;
        for (size_t j = 0; j < sizeof(ignored) / sizeof(ignored[0]); j++)
            if (strcmp(it.key, ignored[j]) == 0) bad_ignored++;
        for (size_t j = 0; j < sizeof(restart) / sizeof(restart[0]); j++)
            if (strcmp(it.key, restart[j]) == 0 && !it.changeable) restart_listed++;
        if (!it.changeable) restart_only++;
        for (size_t j = 0; j < i; j++) {
            struct config_item other;

            if (config_item(cfg, j, &other)) {
                if (strcmp(other.key, it.key) == 0) duplicates++;
                free(other.value);
            }
        }
        free(it.value);
    }
    is_int(bad_ignored, 0, "no ignored key (log_pooler_errors, tcp_defer_accept, ...) is listed");
    is_int(duplicates, 0, "every key is listed once");
    is_int(restart_listed, 12, "the twelve start-only keys are listed as not changeable");
    is_int(restart_only, 12, "every other key is changeable");
    ok(cfg != NULL && find_item(cfg, "default_pool_size", &it) && it.changeable, "default_pool_size is changeable");
    if (cfg != NULL) free(it.value);
    config_free(cfg);
}

static void test_items_of_a_default_config_equal_their_defaults(void)
{
    struct pgbun_config *cfg = config_load(NULL, NULL);
    int                  differ = 0, failed = 0;

    ok(cfg != NULL, "default config loads");
    if (cfg == NULL) return;
    for (size_t i = 0; i < config_item_count(); i++) {
        struct config_item it;

        if (!config_item(cfg, i, &it)) {
            failed++;
            continue;
        }
        if (it.def == NULL || strcmp(it.value, it.def) != 0) {
            printf("#   %s: value '%s', default '%s'\n", it.key, it.value, it.def ? it.def : "(null)");
            differ++;
        }
        free(it.value);
    }
    is_int(failed, 0, "config_item succeeds for every index");
    is_int(differ, 0, "every value equals its default on a default config");

    /* Defaults print in the same canonical form as values. */
    {
        static const struct {
            const char *key, *def;
        } defs[] = {{"listen_port", "6432"},
                    {"so_reuseport", "0"},
                    {"log_connections", "1"},
                    {"unix_socket_mode", "0777"},
                    {"server_idle_timeout", "600"},
                    {"pool_mode", "session"},
                    {"auth_type", "md5"},
                    {"auth_file", ""},
                    {"server_check_query", "<empty>"},
                    {"server_tls_sslmode", "prefer"},
                    {"max_packet_size", "268435456"}};

        for (size_t i = 0; i < sizeof(defs) / sizeof(defs[0]); i++) {
            struct config_item it;

            if (!find_item(cfg, defs[i].key, &it)) {
                ok(0, "item %s exists", defs[i].key);
                continue;
            }
            is_str(it.def, defs[i].def, "default of %s in canonical form", defs[i].key);
            free(it.value);
        }
    }
    config_free(cfg);
}

static void test_items_show_values_from_a_file(void)
{
    char                *path = write_ini("[pgbun]\n"
                                                         "default_pool_size = 33\n"
                                                         "log_connections = off\n"
                                                         "so_reuseport = yes\n"
                                                         "query_timeout = 250ms\n"
                                                         "server_lifetime = 1.5\n"
                                                         "server_idle_timeout = 2min\n"
                                                         "query_wait_timeout = 750us\n"
                                                         "pool_mode = Transaction\n"
                                                         "auth_type = scram-sha-256\n"
                                                         "unix_socket_mode = 700\n"
                                                         "unix_socket_dir =\n"
                                                         "server_reset_query = DEALLOCATE ALL\n"
                                                         "client_tls_sslmode = REQUIRE\n"
                                                         "admin_users = admin, root\n");
    char                *err = NULL;
    struct pgbun_config *cfg = config_load(path, &err);

    ok(cfg != NULL, "file with changed keys loads");
    if (err != NULL) printf("#   error: %s\n", err);
    free(err);
    if (cfg != NULL) {
        is_item(cfg, "default_pool_size", "33", "int value");
        is_item(cfg, "log_connections", "0", "bool 'off' shows as 0");
        is_item(cfg, "so_reuseport", "1", "bool 'yes' shows as 1");
        is_item(cfg, "query_timeout", "0.25", "250ms shows as 0.25");
        is_item(cfg, "server_lifetime", "1.5", "1.5 s shows as 1.5");
        is_item(cfg, "server_idle_timeout", "120", "2min shows as 120");
        is_item(cfg, "query_wait_timeout", "0.00075", "750us shows as 0.00075");
        is_item(cfg, "pool_mode", "transaction", "pool_mode by name");
        is_item(cfg, "auth_type", "scram-sha-256", "auth_type by name");
        is_item(cfg, "unix_socket_mode", "0700", "octal with a leading 0");
        is_item(cfg, "unix_socket_dir", "", "empty string");
        is_item(cfg, "server_reset_query", "DEALLOCATE ALL", "string as stored");
        is_item(cfg, "client_tls_sslmode", "require", "choice as the table spells it");
        is_item(cfg, "admin_users", "admin, root", "list as written");
        is_item(cfg, "auth_file", "", "unset string shows as ''");
    }
    config_free(cfg);
    remove_ini(path);
}

/* Every value, written back into a file, loads to the same values, without warnings. */
static void test_item_values_read_back_from_a_file(void)
{
    struct pgbun_config *cfg, *again;
    char                *path, *text, **before, **after;
    char                *err = NULL;
    size_t               len = 16;

    cfg = config_load(NULL, NULL);
    if (cfg == NULL || !config_set(cfg, "query_timeout", "0.000001", NULL) ||
        !config_set(cfg, "server_lifetime", "1.5ms", NULL) || !config_set(cfg, "pool_mode", "statement", NULL)) {
        ok(0, "round trip setup");
        config_free(cfg);
        return;
    }
    before = item_values(cfg);
    for (size_t i = 0; i < config_item_count(); i++)
        len += strlen(before[i]) + 64;
    text = malloc(len);
    strcpy(text, "[pgbun]\n");
    for (size_t i = 0; i < config_item_count(); i++) {
        struct config_item it;

        if (!config_item(cfg, i, &it)) break;
        snprintf(text + strlen(text), len - strlen(text), "%s = %s\n", it.key, it.value);
        free(it.value);
    }
    path = write_ini(text);
    again = config_load(path, &err);
    ok(again != NULL, "every SHOW CONFIG value loads back from a file");
    if (err != NULL) printf("#   error: %s\n", err);
    if (again != NULL) {
        after = item_values(again);
        is_int(count_differences(before, after), 0, "and gives the same values");
        free_values(after);
    }
    ok(!log_contains(path), "no listed key warns as ignored");
    free(err);
    free(text);
    free_values(before);
    config_free(again);
    config_free(cfg);
    remove_ini(path);
}

static void test_dup_is_equal_and_independent(void)
{
    char                *path = write_ini("[databases]\n"
                                                         "app = host=db1 port=5433 dbname=appdb user=svc password=secret pool_size=7 "
                                                         "application_name=x\n"
                                                         "* = host=fallback\n"
                                                         "[pgbun]\n"
                                                         "pool_mode = transaction\n"
                                                         "admin_users = admin\n"
                                                         "[users]\n"
                                                         "alice = pool_size=3\n"
                                                         "bob = pool_mode=statement\n");
    struct pgbun_config *cfg = config_load(path, NULL), *copy;
    char               **a, **b;
    struct db_config    *cdb;

    ok(cfg != NULL, "config for config_dup loads");
    if (cfg == NULL) {
        remove_ini(path);
        return;
    }
    copy = config_dup(cfg);
    ok(copy != NULL, "config_dup succeeds");
    if (copy == NULL) {
        config_free(cfg);
        remove_ini(path);
        return;
    }
    a = item_values(cfg);
    b = item_values(copy);
    is_int(count_differences(a, b), 0, "the copy shows the same values");
    free_values(b);
    is_str(copy->path, cfg->path, "path copied");
    ok(copy->path != cfg->path && copy->admin_users != cfg->admin_users && copy->listen_addr != cfg->listen_addr,
       "strings are copies, not shared");
    cdb = copy->databases;
    ok(cdb != NULL && cdb != cfg->databases && strcmp(cdb->name, "app") == 0 && strcmp(cdb->host, "db1") == 0 &&
           cdb->port == 5433 && strcmp(cdb->dbname, "appdb") == 0 && strcmp(cdb->user, "svc") == 0 &&
           strcmp(cdb->password, "secret") == 0 && cdb->pool_size == 7 && strcmp(cdb->application_name, "x") == 0 &&
           cdb->host != cfg->databases->host,
       "first [databases] entry copied field by field");
    ok(cdb != NULL && cdb->next != NULL && strcmp(cdb->next->name, "*") == 0 && cdb->next->next == NULL &&
           cdb->next->dbname == NULL,
       "[databases] order and NULL fields kept");
    ok(copy->users != NULL && copy->users != cfg->users && strcmp(copy->users->name, "alice") == 0 &&
           copy->users->pool_size == 3 && copy->users->next != NULL && strcmp(copy->users->next->name, "bob") == 0 &&
           copy->users->next->pool_mode == POOL_STATEMENT && copy->users->next->next == NULL,
       "[users] copied in order");

    ok(config_set(copy, "admin_users", "someone", NULL), "change a string in the copy");
    if (cdb != NULL) {
        free(cdb->host);
        cdb->host = strdup("elsewhere");
        cdb->pool_size = 99;
    }
    copy->users->pool_size = 42;
    is_str(cfg->admin_users, "admin", "the original string is unchanged");
    is_str(cfg->databases->host, "db1", "the original db host is unchanged");
    is_int(cfg->databases->pool_size, 7, "the original db pool_size is unchanged");
    is_int(cfg->users->pool_size, 3, "the original user is unchanged");
    b = item_values(cfg);
    is_int(count_differences(a, b), 0, "the original shows the same values as before");
    free_values(a);
    free_values(b);
    config_free(cfg);
    ok(copy->databases != NULL && strcmp(copy->databases->host, "elsewhere") == 0, "the copy outlives the original");
    config_free(copy);
    remove_ini(path);

    cfg = config_load(NULL, NULL);
    copy = cfg != NULL ? config_dup(cfg) : NULL;
    ok(copy != NULL && copy->path == NULL && copy->databases != NULL && strcmp(copy->databases->name, "*") == 0 &&
           copy->users == NULL,
       "config_dup of a sidecar config (no path, no users)");
    config_free(copy);
    config_free(cfg);
}

/* config_set(key, value) fails with exactly `want`. */
static void expect_set_error(struct pgbun_config *cfg, const char *key, const char *value, const char *want)
{
    char *err = (char *)"garbage";

    ok(!config_set(cfg, key, value, &err), "SET %s = '%s' fails", key, value);
    is_str(err, want, "  with '%s'", want);
    free(err);
}

static void test_set(void)
{
    static const char *const restart[] = {"listen_addr",    "listen_port",  "unix_socket_dir",   "unix_socket_mode",
                                          "listen_backlog", "so_reuseport", "workers",           "user",
                                          "pidfile",        "logfile",      "unix_socket_group", "disable_pqexec"};
    struct pgbun_config     *cfg = config_load(NULL, NULL);
    char                    *err = (char *)"garbage";
    char                   **before, **after;
    int                      refused = 0;

    ok(cfg != NULL, "config for config_set loads");
    if (cfg == NULL) return;

    ok(config_set(cfg, "default_pool_size", "7", &err) && err == NULL, "SET default_pool_size = 7 (errmsg NULL)");
    is_int(cfg->default_pool_size, 7, "default_pool_size applied");
    is_item(cfg, "default_pool_size", "7", "and shown");
    ok(config_set(cfg, "query_timeout", "1.5", NULL), "SET query_timeout = 1.5");
    is_int(cfg->query_timeout, 1500000, "query_timeout applied in microseconds");
    ok(config_set(cfg, "pool_mode", "transaction", NULL), "SET pool_mode = transaction");
    is_int(cfg->pool_mode, POOL_TRANSACTION, "pool_mode applied");
    ok(config_set(cfg, "server_check_query", "", NULL), "SET server_check_query = ''");
    ok(cfg->server_check_query != NULL && cfg->server_check_query[0] == '\0',
       "server_check_query is '' (the check is off), as in the file");
    ok(config_set(cfg, "log_connections", "off", NULL) && !cfg->log_connections, "SET log_connections = off");
    ok(config_set(cfg, "client_tls_sslmode", "VERIFY-FULL", NULL) &&
           strcmp(cfg->client_tls_sslmode, "verify-full") == 0,
       "SET a choice: stored as the table spells it");
    ok(config_set(cfg, "auth_file", "/etc/users.txt", NULL) && strcmp(cfg->auth_file, "/etc/users.txt") == 0,
       "SET auth_file");
    ok(config_set(cfg, "auth_file", "", NULL) && cfg->auth_file == NULL, "SET auth_file = '' unsets it");
    ok(config_set(cfg, "server_reset_query", "'quoted'", NULL) && strcmp(cfg->server_reset_query, "'quoted'") == 0,
       "the value is taken as is, not unquoted again");
    ok(config_set(cfg, "DEFAULT_POOL_SIZE", "9", NULL) && cfg->default_pool_size == 9,
       "key names are case-insensitive");
    ok(config_set(cfg, "log_format", "JSON", NULL) && cfg->log_format == LOG_FORMAT_JSON, "SET log_format = json");
    ok(config_set(cfg, "syslog", "1", NULL) && cfg->syslog, "SET syslog = 1");
    ok(config_set(cfg, "syslog_ident", "bun2", NULL) && strcmp(cfg->syslog_ident, "bun2") == 0, "SET syslog_ident");
    ok(config_set(cfg, "syslog_facility", "local3", NULL) &&
           strcmp(log_syslog_facilities[cfg->syslog_facility], "local3") == 0,
       "SET syslog_facility = local3");

    before = item_values(cfg);
    expect_set_error(cfg, "default_pool_size", "abc", "default_pool_size: invalid integer 'abc'");
    expect_set_error(cfg, "default_pool_size", "-1", "default_pool_size: value -1 out of range (0..2147483647)");
    expect_set_error(cfg, "default_pool_size", " 7", "default_pool_size: invalid integer ' 7'");
    expect_set_error(cfg, "query_timeout", "soon", "query_timeout: invalid time 'soon'");
    expect_set_error(cfg, "pool_mode", "never",
                     "pool_mode: invalid pool_mode 'never' (expected session, transaction or statement)");
    expect_set_error(cfg, "log_connections", "maybe", "log_connections: invalid boolean 'maybe' (expected 0 or 1)");
    expect_set_error(cfg, "server_tls_sslmode", "sometimes", "server_tls_sslmode: invalid value 'sometimes'");
    expect_set_error(cfg, "auth_type", "pam", "auth_type: auth_type 'pam' is not supported yet");
    expect_set_error(cfg, "foo", "1", "unknown key 'foo'");
    expect_set_error(cfg, "log_pooler_errors", "1", "log_pooler_errors: not supported yet");
    expect_set_error(cfg, "log_format", "xml", "log_format: invalid value 'xml'");
    expect_set_error(cfg, "syslog_facility", "local8", "syslog_facility: invalid value 'local8'");
    expect_set_error(cfg, "syslog", "maybe", "syslog: invalid boolean 'maybe' (expected 0 or 1)");
    expect_set_error(cfg, "listen_port", "7000", "listen_port: cannot be changed without a restart");
    expect_set_error(cfg, "Listen_Port", "x", "listen_port: cannot be changed without a restart");
    for (size_t i = 0; i < sizeof(restart) / sizeof(restart[0]); i++)
        if (!config_set(cfg, restart[i], "1", NULL)) refused++;
    is_int(refused, 12, "every start-only key is refused");
    ok(!config_set(cfg, "foo", "1", NULL), "errmsg may be NULL");
    after = item_values(cfg);
    is_int(count_differences(before, after), 0, "failed SETs leave the config unchanged");
    is_int(cfg->default_pool_size, 9, "default_pool_size still 9");
    is_int(cfg->listen_port, 6432, "listen_port still 6432");
    free_values(before);
    free_values(after);
    config_free(cfg);
}

/* ---- [databases] and [users] entries: one table drives diff, SHOW and resolution ---- */

static struct pgbun_config *load_text(const char *text)
{
    char                *path = write_ini(text);
    char                *err = NULL;
    struct pgbun_config *cfg = config_load(path, &err);

    if (cfg == NULL) printf("#   config_load: %s\n", err ? err : "(null)");
    free(err);
    remove_ini(path);
    return cfg;
}

struct lines {
    int  n;
    char text[8][160];
};

static void collect(void *arg, const char *line)
{
    struct lines *l = arg;

    if (l->n < 8) snprintf(l->text[l->n], sizeof(l->text[0]), "%s", line);
    l->n++;
}

/* A SHOW cell as text: "NULL", the integer, or the text. */
static void shown_text(const struct config_shown *v, char *buf, size_t size)
{
    if (v->type == SHOWN_INT)
        snprintf(buf, size, "%lld", v->i);
    else
        snprintf(buf, size, "%s", v->type == SHOWN_TEXT ? v->text : "NULL");
}

/* The cell of `column` for the entry named "e" of cfg, resolved as SHOW DATABASES/USERS does. */
static bool cell(const struct pgbun_config *cfg, enum config_entry_kind kind, const char *column, char *buf,
                 size_t size)
{
    const void *entry =
        kind == CONFIG_DATABASE ? (const void *)config_find_db(cfg, "e") : (const void *)config_find_user(cfg, "e");
    struct config_settings eff;
    struct config_shown    v;

    if (kind == CONFIG_DATABASE)
        config_resolve(cfg, entry, NULL, "e", &eff);
    else
        config_resolve(cfg, NULL, entry, NULL, &eff);
    if (!config_show(kind, column, entry, &eff, &v)) return false;
    shown_text(&v, buf, size);
    return true;
}

/*
 * Every key of both entry tables: setting it alone is a change config_diff()
 * reports for that entry, and a key with a SHOW column shows the new value.
 * A key added to the table and forgotten in either fails here.
 */
static void test_every_entry_key_is_diffed_and_shown(void)
{
    static const char *const samples[] = {"7", "statement", "pin", "x", "require"};

    for (int kind = CONFIG_DATABASE; kind <= CONFIG_USER; kind++) {
        const char *section = kind == CONFIG_DATABASE ? "databases" : "users";
        const char *key, *column;
        char        base_text[256], want[64];

        snprintf(base_text, sizeof(base_text), "[pgbun]\n[%s]\ne =\n", section);
        snprintf(want, sizeof(want), "[%s] e: changed", section);
        for (size_t i = 0; config_entry_key(kind, i, &key, &column); i++) {
            struct pgbun_config *base = load_text(base_text), *changed = NULL;
            struct lines         l = {0};
            char                 text[256], before[128] = "", after[128] = "";

            for (size_t j = 0; changed == NULL && j < sizeof(samples) / sizeof(samples[0]); j++) {
                char *err = NULL, *path;

                snprintf(text, sizeof(text), "[pgbun]\n[%s]\ne = %s=%s\n", section, key, samples[j]);
                path = write_ini(text);
                changed = config_load(path, &err);
                free(err);
                remove_ini(path);
            }
            if (base == NULL || changed == NULL) {
                ok(0, "[%s] %s: no sample value loads", section, key);
                config_free(base);
                config_free(changed);
                continue;
            }
            ok(config_diff(base, changed, collect, &l) == 1 && l.n == 1 && strcmp(l.text[0], want) == 0,
               "[%s] %s alone is a change of the entry", section, key);
            if (l.n != 1) printf("#   %d changes, the first '%s'\n", l.n, l.n ? l.text[0] : "");
            if (column != NULL) {
                ok(cell(base, kind, column, before, sizeof(before)) &&
                       cell(changed, kind, column, after, sizeof(after)) && strcmp(before, after) != 0,
                   "[%s] %s shows in column %s (%s -> %s)", section, key, column, before, after);
            }
            config_free(base);
            config_free(changed);
        }
    }
}

static void test_resolution_user_over_database_over_global(void)
{
    struct pgbun_config   *cfg = load_text("[pgbun]\ndefault_pool_size = 5\nsession_state = track\n"
                                             "query_wait_timeout = 30\n"
                                             "[databases]\nd = pool_size=6 session_state=off query_wait_timeout=40\n"
                                             "* = host=elsewhere\n"
                                             "[users]\nu = pool_size=7 session_state=pin\nv = query_wait_timeout=50\n");
    struct config_settings set;

    if (cfg == NULL) {
        ok(0, "resolution config loads");
        return;
    }
    config_resolve(cfg, config_find_db(cfg, "d"), config_find_user(cfg, "u"), "d", &set);
    is_int(set.pool_size, 7, "the user's pool_size first");
    is_str(config_session_state_name(set.session_state), "pin", "session_state under [users] wins");
    is_int(set.query_wait_timeout, 40 * USEC_PER_SEC, "then the database's");
    is_str(set.dbname, "d", "dbname: the name asked for");
    is_str(set.host, "127.0.0.1", "host: server_host");
    config_resolve(cfg, config_find_db(cfg, "d"), config_find_user(cfg, "v"), "d", &set);
    is_int(set.pool_size, 6, "the database's pool_size next");
    is_int(set.query_wait_timeout, 50 * USEC_PER_SEC, "the user's query_wait_timeout first");
    is_str(config_session_state_name(set.session_state), "off", "the database's session_state");
    config_resolve(cfg, config_find_db(cfg, "other"), NULL, "other", &set);
    is_int(set.pool_size, 5, "default_pool_size last");
    is_str(set.host, "elsewhere", "the \"*\" entry's host");
    is_str(set.dbname, "other", "its dbname: the name asked for");
    is_str(config_session_state_name(set.session_state), "track", "the global session_state");
    {
        struct pgbun_config *copy = config_dup(cfg);

        ok(copy != NULL && config_find_db(copy, "d") != NULL && config_find_db(copy, "d") != config_find_db(cfg, "d") &&
               strcmp(config_find_db(copy, "nowhere")->name, "*") == 0 && config_find_user(copy, "v") != NULL &&
               config_find_user(copy, "v") != config_find_user(cfg, "v") && config_db_named(copy, "nowhere") == NULL,
           "a copy finds its own entries by name");
        config_free(copy);
    }
    config_free(cfg);
}

static void test_diff_lists_keys_and_entries(void)
{
    struct pgbun_config *a = load_text("[pgbun]\ndefault_pool_size = 5\n[databases]\nd1 = \nd2 = \n[users]\nu1 =\n");
    struct pgbun_config *b = load_text("[pgbun]\ndefault_pool_size = 6\n[databases]\nd2 = \nd3 = \n[users]\nu2 =\n");
    struct lines         l = {0};

    if (a == NULL || b == NULL) {
        ok(0, "diff configs load");
    } else {
        is_int(config_diff(a, b, collect, &l), 5, "five differences");
        is_str(l.text[0], "default_pool_size: 5 -> 6", "a [pgbun] key, old -> new");
        is_str(l.text[1], "[databases] d3: added", "an added database");
        is_str(l.text[2], "[databases] d1: removed", "a removed database");
        is_str(l.text[3], "[users] u2: added", "an added user");
        is_str(l.text[4], "[users] u1: removed", "a removed user");
        l.n = 0;
        is_int(config_diff(a, a, collect, &l), 0, "a config does not differ from itself");
    }
    config_free(a);
    config_free(b);
}

/* auth_user, auth_query and auth_dbname: per database over [pgbun]; what config_check refuses. */
static void test_auth_query_keys(void)
{
    struct pgbun_config     *cfg = load_text("[pgbun]\nauth_user = looker\nauth_query_cache_ttl = 2\n"
                                                 "[databases]\nshop = host=h auth_user=shopper auth_dbname=meta "
                                                 "auth_query='SELECT u, p FROM f($1)'\nmeta = host=h\nplain = host=h\n");
    struct config_auth_route r;
    char                     place[CONFIG_PLACE_MAX], *err = NULL;

    ok(cfg != NULL && config_check(cfg, &err), "per-database auth keys load and pass the checks");
    free(err);
    err = NULL;
    ok(cfg != NULL && cfg->auth_query_cache_ttl == 2 * USEC_PER_SEC, "auth_query_cache_ttl in seconds");
    ok(cfg != NULL && strcmp(cfg->auth_query, AUTH_QUERY_DEFAULT) == 0, "auth_query defaults to PgBouncer's");
    ok(cfg != NULL && config_auth_route(cfg, "shop", false, &r) && strcmp(r.auth_user, "shopper") == 0 &&
           strcmp(r.authdb, "meta") == 0 && strcmp(r.query, "SELECT u, p FROM f($1)") == 0,
       "a database's own auth_user, auth_dbname and auth_query");
    ok(config_auth_place(&r, place) && strcmp(place, "meta/shopper") == 0, "its place: auth database/auth_user");
    ok(cfg != NULL && config_auth_route(cfg, "plain", false, &r) && strcmp(r.auth_user, "looker") == 0 &&
           strcmp(r.authdb, "plain") == 0 && strcmp(r.query, AUTH_QUERY_DEFAULT) == 0,
       "another database: the global auth_user, run in the database asked for");
    ok(cfg != NULL && config_auth_route(cfg, "pgbun", true, &r) && r.authdb == NULL && !config_auth_place(&r, place),
       "the console without auth_dbname: nowhere to ask");
    ok(cfg != NULL && config_looks_up_users(cfg), "config_looks_up_users");
    config_free(cfg);

    cfg = load_text("[pgbun]\nauth_user = looker\nauth_dbname = nowhere\n[databases]\nshop = host=h\n");
    ok(cfg != NULL && !config_check(cfg, &err) && err && strstr(err, "auth_dbname \"nowhere\""),
       "an auth_dbname that is not a database is refused");
    free(err);
    err = NULL;
    config_free(cfg);
    cfg = load_text("[pgbun]\nauth_user = looker\nauth_query =\n[databases]\nshop = host=h\n");
    ok(cfg != NULL && !config_check(cfg, &err) && err && strstr(err, "auth_query is empty"),
       "an empty auth_query is refused");
    free(err);
    err = NULL;
    config_free(cfg);
    cfg = load_text("[pgbun]\nauth_type = hba\n[databases]\nshop = host=h\n");
    ok(cfg != NULL && !config_check(cfg, &err) && err && strstr(err, "auth_type = hba needs auth_hba_file"),
       "auth_type = hba without auth_hba_file is refused");
    free(err);
    config_free(cfg);
    cfg = load_text("[pgbun]\nauth_type = peer\n");
    ok(cfg != NULL && cfg->auth_type == AUTH_PEER && !config_looks_up_users(cfg), "auth_type = peer loads");
    config_free(cfg);
}

int main(void)
{
    int fd = mkstemp(log_path);
    int rc;

    if (fd < 0) {
        printf("Bail out! cannot create log file\n");
        return 1;
    }
    close(fd);
    log_set_stderr(false);
    if (!log_set_file(log_path)) {
        printf("Bail out! cannot open log file\n");
        return 1;
    }
    clear_env();

    test_defaults_in_sidecar_mode();
    test_full_ini();
    test_no_databases_section();
    test_duplicates_replace();
    test_include();
    test_errors();
    test_pkt_buf_takes_any_positive_size();
    test_host_and_port_lists();
    test_ignored_and_peers();
    test_connect_query_fast_close_and_wait_notify();
    test_env();
    test_parse_time();
    test_list_has();
    test_names();
    test_items_list_keys_with_a_field_in_table_order();
    test_items_of_a_default_config_equal_their_defaults();
    test_items_show_values_from_a_file();
    test_item_values_read_back_from_a_file();
    test_dup_is_equal_and_independent();
    test_set();
    test_every_entry_key_is_diffed_and_shown();
    test_resolution_user_over_database_over_global();
    test_diff_lists_keys_and_entries();
    test_auth_query_keys();

    rc = done_testing();
    if (!log_set_file(NULL)) rc = 1;
    unlink(log_path);
    return rc;
}
