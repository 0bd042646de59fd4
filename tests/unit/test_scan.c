/*
 * test_scan.c - the session-state scanner fed SQL text: each statement
 * form, quoting and comments that hide words, several statements, and
 * every prefix of a query in a buffer of exactly its size.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scan.h"
#include "tap.h"

static struct scan_effects fx;
static char                names[SCAN_MAX_NAMES * SCAN_NAME_MAX];

/* Scans sql; names gets the setting names joined with ','. */
static unsigned scan(const char *sql, bool std_strings)
{
    names[0] = '\0';
    scan_init(&fx);
    scan_sql(sql, strlen(sql), std_strings, ~0u, &fx);
    for (int i = 0; i < fx.nnames; i++) {
        if (i > 0) strcat(names, ",");
        strcat(names, fx.names[i]);
    }
    return fx.flags;
}

/* sql on one line, for a TAP test name. */
static const char *shown(const char *sql)
{
    static char line[512];
    size_t      i;

    for (i = 0; sql[i] != '\0' && i < sizeof(line) - 1; i++)
        line[i] = sql[i] == '\n' || sql[i] == '\t' ? ' ' : sql[i];
    line[i] = '\0';
    return line;
}

static void sets(const char *sql, const char *want)
{
    unsigned flags = scan(sql, true);

    if (!ok(flags == SCAN_SETTING && strcmp(names, want) == 0, "%s: sets %s", shown(sql), want))
        printf("#   flags %#x, names '%s'\n", flags, names);
}

/* A RESET of want, or SET want TO DEFAULT: back to its start value. */
static void resets(const char *sql, const char *want)
{
    unsigned flags = scan(sql, true);

    if (!ok(flags == (SCAN_SETTING | SCAN_RESET) && strcmp(names, want) == 0, "%s: resets %s", shown(sql), want))
        printf("#   flags %#x, names '%s'\n", flags, names);
}

static void flags_of(const char *sql, unsigned want)
{
    unsigned flags = scan(sql, true);

    if (!ok(flags == want, "%s: flags %#x", shown(sql), want)) printf("#   got %#x, names '%s'\n", flags, names);
}

static void forms_of_set(void)
{
    sets("SET search_path TO a, b", "search_path");
    sets("set SESSION myext.tenant = 'alpha'", "myext.tenant");
    sets("SeT SeArCh_PaTh = public", "search_path");
    sets("SET \"MyExt\".Tenant = 1", "myext.tenant");
    resets("SET work_mem = DEFAULT", "work_mem");
    sets("SET TIME ZONE 'UTC'", "timezone");
    resets("SET SESSION TIME ZONE LOCAL", "timezone");
    sets("SET SCHEMA 'app'", "search_path");
    sets("SET NAMES 'UTF8'", "client_encoding");
    sets("SET ROLE reader", "role");
    sets("SET SESSION AUTHORIZATION bob", "session_authorization");
    sets("SET XML OPTION DOCUMENT", "xmloption");
    sets("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
         "default_transaction_isolation,default_transaction_read_only,default_transaction_deferrable");
    resets("RESET work_mem", "work_mem");
    resets("RESET TIME ZONE", "timezone");
    resets("RESET ROLE", "role");
    sets("RESET SESSION AUTHORIZATION", "session_authorization");
    resets("RESET app.tenant_id", "app.tenant_id");
    sets("SET /* why */ search_path -- to what\n TO a", "search_path");
    resets("SET a.b = 1; SET a.b = 2; RESET a.b", "a.b");
    resets("SET search_path TO DEFAULT", "search_path");
    resets("set names default", "client_encoding");
    sets("SET TIME ZONE 'local'", "timezone");
    flags_of("SET LOCAL statement_timeout = 5", 0);
    flags_of("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", 0);
    flags_of("SET CONSTRAINTS ALL DEFERRED", 0);
    flags_of("SET", 0);
    flags_of("RESET ALL", SCAN_RESET_ALL);
    flags_of("DISCARD ALL", SCAN_DISCARD_ALL | SCAN_RESET_ALL);
    flags_of("DISCARD TEMP", SCAN_DROP);
    flags_of("DISCARD PLANS", 0);
    flags_of("SHOW search_path", 0);
}

static void set_config_calls(void)
{
    sets("SELECT set_config('myext.tenant', 'alpha', false)", "myext.tenant");
    sets("select pg_catalog.set_config('A.B', $1, FALSE)", "a.b");
    sets("SELECT set_config($$x.y$$, 'v', 'f')", "x.y");
    sets("SELECT set_config('a.b', lower(concat('X', 1)), false)", "a.b");
    sets("SELECT set_config('a.b', 'x', is_local) FROM t", "a.b");
    sets("SELECT \"set_config\"('a.b', 'x', false)", "a.b");
    flags_of("SELECT \"SET_CONFIG\"('a.b', 'x', false)", SCAN_CALL); /* a function of its own */
    sets("SELECT set_config('a.b', '1', false), set_config('c.d', '2', false)", "a.b,c.d");
    sets("SELECT set_config('a.b', '1', true), set_config('c.d', '2', false)", "c.d");
    flags_of("SELECT set_config('a.b', 'x', true)", 0);
    flags_of("SELECT set_config('a.b', 'x', 'on')", 0);
    flags_of("SELECT set_config(name, 'x', false) FROM settings", SCAN_SETTING_ANY);
    sets("SELECT set_config(U&'a.b', 'x', false)", "a.b");
    flags_of("SELECT set_config(U&'a!0062' UESCAPE '!', 'x', false)", SCAN_SETTING_ANY);
    flags_of("SELECT set_config('a.b', my_value(), false)", SCAN_SETTING | SCAN_CALL);
    flags_of("SELECT set_config('a.b', 'x'", SCAN_SETTING_ANY);
    flags_of("SELECT 'set_config(''a.b'', ''x'', false)'", 0);
    flags_of("SELECT current_setting('a.b')", 0);
}

static void other_state(void)
{
    flags_of("LISTEN jobs", SCAN_LISTEN);
    flags_of("UNLISTEN *", SCAN_UNLISTEN);
    flags_of("select pg_advisory_lock(1)", SCAN_LOCK);
    flags_of("SELECT pg_try_advisory_lock_shared(1, 2)", SCAN_LOCK);
    flags_of("SELECT pg_catalog.pg_advisory_lock (42)", SCAN_LOCK);
    flags_of("SELECT pg_advisory_unlock_all()", SCAN_UNLOCK);
    flags_of("SELECT pg_advisory_unlock(1)", SCAN_UNLOCK);
    flags_of("SELECT pg_advisory_xact_lock(1)", 0);
    flags_of("SELECT pg_advisory_lock", 0);
    flags_of("CREATE TEMP TABLE t (a int)", SCAN_TEMP);
    flags_of("create global temporary table t ()", SCAN_TEMP);
    flags_of("CREATE OR REPLACE TEMP VIEW v AS SELECT 1", SCAN_TEMP);
    flags_of("CREATE TEMPORARY SEQUENCE s", SCAN_TEMP);
    flags_of("CREATE TABLE pg_temp.t (a int)", SCAN_TEMP);
    flags_of("SELECT 1 AS a INTO TEMP t", SCAN_TEMP);
    flags_of("CREATE TABLE t (temp int)", 0);
    flags_of("INSERT INTO temp VALUES (1)", 0);
    flags_of("SELECT temp FROM weather", 0);
    flags_of("DROP TABLE t", SCAN_DROP);
    flags_of("DECLARE c CURSOR WITH HOLD FOR SELECT 1", SCAN_HOLD);
    flags_of("declare c binary no scroll cursor with hold for select 1", SCAN_HOLD);
    flags_of("DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1", 0);
    flags_of("DECLARE c CURSOR FOR SELECT 1 AS with, 2 AS hold", 0);
    flags_of("CLOSE c", SCAN_CLOSE);
    flags_of("PREPARE p (int) AS SELECT $1", SCAN_PREPARE);
    flags_of("PREPARE TRANSACTION 'tx1'", 0);
    flags_of("DEALLOCATE ALL", SCAN_DEALLOCATE | SCAN_DEALLOCATE_ALL);
    flags_of("deallocate prepare all", SCAN_DEALLOCATE | SCAN_DEALLOCATE_ALL);
    flags_of("DEALLOCATE s1", SCAN_DEALLOCATE);
    flags_of("DEALLOCATE PREPARE s1", SCAN_DEALLOCATE);
    flags_of("DEALLOCATE \"all\"", SCAN_DEALLOCATE);
    flags_of("LOAD 'auto_explain'", SCAN_LOAD);
    flags_of("BEGIN; SELECT 1; COMMIT", 0);
}

static void quoting_and_statements(void)
{
    unsigned flags = scan("SELECT 1; SET a.b = 1; LISTEN x;", true);

    ok(flags == (SCAN_SETTING | SCAN_LISTEN) && strcmp(names, "a.b") == 0, "three statements: a SET and a LISTEN");
    flags_of("SELECT 'SET a.b = 1; LISTEN x'", 0);
    flags_of("SELECT 'it''s; LISTEN x'", 0);
    flags_of("SELECT $$; LISTEN x$$", 0);
    flags_of("SELECT $tag$ $$ ; LISTEN x $tag$", 0);
    flags_of("SELECT $tag$ x $tag$; LISTEN x", SCAN_LISTEN);
    flags_of("SELECT \"; LISTEN x\"", 0);
    flags_of("SELECT 1 -- ; LISTEN x\n", 0);
    flags_of("SELECT 1 -- comment\n; LISTEN x", SCAN_LISTEN);
    flags_of("SELECT /* ; /* nested */ LISTEN x */ 1", 0);
    flags_of("SELECT /* a */ 1; /* b */ LISTEN x", SCAN_LISTEN);
    flags_of("SELECT E'\\'; LISTEN x'", 0);
    flags_of("SELECT '\\'; LISTEN x", SCAN_LISTEN);
    ok(scan("SELECT '\\'; LISTEN x'", false) == 0, "standard_conforming_strings off: a backslash escapes the quote");
    flags_of("SELECT $1; LISTEN x", SCAN_LISTEN);
    flags_of("SELECT a$b; LISTEN x", SCAN_LISTEN);
    flags_of("SELECT 1.5e10; LISTEN x", SCAN_LISTEN);
    flags_of("SELECT U&'\\0041; LISTEN x'", 0);
    flags_of("SELECT 'abc; LISTEN x", 0);
    flags_of("SELECT /* ; LISTEN x", 0);
    flags_of("SELECT $$ ; LISTEN x", 0);
    flags_of("", 0);
    flags_of(";;;", 0);
    flags_of("  \n\t ", 0);
    flags_of("SELECT 'ünïcödé'; LISTEN x", SCAN_LISTEN);
}

/* U&"..." names decoded as PostgreSQL decodes them; what cannot be decoded is any setting. */
static void unicode_names(void)
{
    sets("SET U&\"app.ten\\0061nt\" = 'x'", "app.tenant");
    sets("SET U&\"App\".U&\"T\\+000065nant\" = 'x'", "app.tenant");
    sets("SET U&\"a.\\00E9t\\00E9\" = 'x'", "a.\xc3\xa9t\xc3\xa9");
    sets("SET U&\"a.\\D83D\\DE00\" = 'x'", "a.\xf0\x9f\x98\x80");
    sets("SET U&\"a.b\\\\c\" = 1", "a.b\\c");
    flags_of("SET U&\"a.!0062\" UESCAPE '!' = 'x'", SCAN_SETTING_ANY);
    flags_of("SET U&\"a.\\D83D\" = 'x'", SCAN_SETTING_ANY);
    flags_of("SET U&\"a.\\00zz\" = 'x'", SCAN_SETTING_ANY);
    flags_of("SET U&\"a.\\0000\" = 'x'", SCAN_SETTING_ANY);
    flags_of("SET U&\"a.\\12\" = 'x'", SCAN_SETTING_ANY);
}

/* DO, CALL and functions pgbun does not know may do anything; DO's body is looked into for names. */
static void calls(void)
{
    unsigned flags = scan("DO $$BEGIN PERFORM set_config('app.tenant', 'x', false); END$$", true);

    ok(flags == (SCAN_CALL | SCAN_SETTING) && strcmp(names, "app.tenant") == 0,
       "DO: anything, and the name in its body");
    flags_of("do language plpgsql $x$ BEGIN NULL; END $x$", SCAN_CALL);
    flags_of("DO 'BEGIN PERFORM set_config(''a.b'', ''x'', false); END'", SCAN_CALL);
    flags =
        scan("DO $a$ BEGIN EXECUTE $b$ DO $c$ BEGIN PERFORM set_config('x.y', '1', false); END $c$ $b$; END $a$", true);
    ok(flags == SCAN_CALL && fx.nnames == 0, "a DO in a DO body is not looked into");
    scan("DO $$BEGIN DEALLOCATE s1; END$$", true);
    ok(fx.deallocated[0] == '\0' && fx.statements == 1, "a DEALLOCATE in a DO body is not the text's own");
    flags_of("CALL refresh_all()", SCAN_CALL);
    flags_of("SELECT set_tenant('acme')", SCAN_CALL);
    flags_of("SELECT app.set_tenant('acme')", SCAN_CALL);
    flags_of("SELECT \"Lower\"(x) FROM t", SCAN_CALL);
    flags_of("SELECT myschema.lower(x) FROM t", SCAN_CALL);
    flags_of("SELECT * FROM my_function()", SCAN_CALL);
    flags_of("SELECT count(*), lower(name), now(), coalesce(a, b) FROM t WHERE id IN (1, 2)", 0);
    flags_of("SELECT pg_catalog.lower(x), pg_catalog.set_config('a.b', 'c', true)", 0);
    flags_of("INSERT INTO t (a, b) VALUES (1, 2) ON CONFLICT (a) DO UPDATE SET (a, b) = (3, 4)", 0);
    flags_of("INSERT INTO public.t (a) VALUES ($1) RETURNING (a)", 0);
    flags_of("CREATE TABLE t (a varchar(10), b numeric(10, 2), c timestamp(3))", 0);
    flags_of("WITH x (a) AS (SELECT 1) SELECT * FROM x AS y(b)", 0);
    flags_of("SELECT CAST(x AS character varying(5)), row_number() OVER (PARTITION BY a) FROM t", 0);
    flags_of("COPY t (a, b) FROM STDIN", 0);
    flags_of("EXPLAIN (ANALYZE) SELECT 1", 0);
    flags_of("SELECT 1 WHERE EXISTS (SELECT 1) AND NOT (1 = 2) OR x = ANY (ARRAY[1])", 0);
    flags_of("CREATE FUNCTION f(a int) RETURNS int AS 'select set_config(1)' LANGUAGE sql", 0);
    flags_of("SELECT 'f(x)', \"g\" FROM t", 0);
    flags_of("DELETE FROM t USING evil() e WHERE t.a = e.a", SCAN_CALL);
    flags_of("SELECT list(1), hash(2)", SCAN_CALL);
    flags_of("SELECT 1 FROM t WHERE a = explain(1)", SCAN_CALL);
    flags_of("SELECT evil.set_config('a.b', 'x', false)", SCAN_CALL);
    flags_of("SELECT evil.pg_advisory_lock(1)", SCAN_CALL);
    flags = scan("SET U&\"a.b\" = 1; RESET search_path", true);
    ok(flags == (SCAN_SETTING | SCAN_RESET) && strcmp(names, "a.b,search_path") == 0,
       "a U& name, then a plain one: both named");
}

/* DEALLOCATE of one name: the name as PostgreSQL reads it, and how many statements the text holds. */
static void deallocate_targets(void)
{
    static const struct {
        const char *sql;
        const char *name;
        int         statements;
    } cases[] = {
        {"DEALLOCATE _pg3_0", "_pg3_0", 1},
        {"deallocate prepare \"S_2\";", "S_2", 1},
        {"/* pdo */ DEALLOCATE Pdo_Stmt_00000001 -- done", "pdo_stmt_00000001", 1},
        {"DEALLOCATE \"a\"\"b\"", "a\"b", 1},
        {"DEALLOCATE ALL", "", 1},
        {"DEALLOCATE PREPARE ALL", "", 1},
        {"DEALLOCATE s1 s2", "", 1},
        {"DEALLOCATE 's1'", "", 1},
        {"DEALLOCATE s1; SELECT 1", "s1", 2},
        {";;DEALLOCATE s1;", "s1", 1},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        scan(cases[i].sql, true);
        if (!ok(strcmp(fx.deallocated, cases[i].name) == 0 && fx.statements == cases[i].statements,
                "%s: deallocates \"%s\", %d statement(s)", cases[i].sql, cases[i].name, cases[i].statements))
            printf("#   got \"%s\", %d\n", fx.deallocated, fx.statements);
    }
}

static void limits(void)
{
    char sql[1024];
    int  n;

    n = snprintf(sql, sizeof(sql), "SELECT set_config('%0200d', 'x', false)", 0);
    ok(n > 0 && scan(sql, true) == SCAN_SETTING_ANY, "a 200-byte set_config name: any setting");
    snprintf(sql, sizeof(sql), "SET a%070d = 1", 0);
    ok(scan(sql, true) == SCAN_SETTING_ANY, "a 71-byte identifier: any setting");
    strcpy(sql, "");
    for (int i = 0; i <= SCAN_MAX_NAMES; i++)
        snprintf(sql + strlen(sql), sizeof(sql) - strlen(sql), "SET x.n%d = 1;", i);
    ok(scan(sql, true) == (SCAN_SETTING | SCAN_SETTING_ANY) && fx.nnames == SCAN_MAX_NAMES,
       "%d names: the first %d kept, then any setting", SCAN_MAX_NAMES + 1, SCAN_MAX_NAMES);
}

/* Every prefix, copied to a buffer of exactly its length: no read past the end. */
static void every_prefix(void)
{
    static const char *const queries[] = {
        "SET \"A\".b = 'x'; SELECT set_config('c.d', E'\\'', false) /* c */ -- d\n; LISTEN \"ch\"",
        "SELECT $q$ ' \" $q$, $1, a$b, U&\"x\", B'01', X'ff', N'n'; DECLARE c CURSOR WITH HOLD FOR SELECT 1",
        "CREATE TEMP TABLE t (a int); SELECT pg_advisory_lock(1); RESET ALL; DISCARD ALL",
    };
    int bad = 0;

    for (size_t q = 0; q < sizeof(queries) / sizeof(queries[0]); q++) {
        size_t len = strlen(queries[q]);

        for (size_t cut = 0; cut <= len; cut++) {
            char *buf = malloc(cut ? cut : 1);

            memcpy(buf, queries[q], cut);
            scan_init(&fx);
            scan_sql(buf, cut, q != 1, ~0u, &fx);
            if (fx.nnames > SCAN_MAX_NAMES) bad++;
            free(buf);
        }
    }
    ok(bad == 0, "every prefix of three queries scans within its bytes");
    scan("SET \"A\".b = 'x'; SELECT set_config('c.d', E'\\'', false) /* c */ -- d\n; LISTEN \"ch\"", true);
    ok(fx.flags == (SCAN_SETTING | SCAN_LISTEN) && strcmp(names, "a.b,c.d") == 0, "the whole first query");
}

/*
 * Asked only about settings and prepared statements: text without SET,
 * RESET, set_config, DISCARD or DEALLOCATE is skipped, never wrongly.
 */
static void settings_only(void)
{
    static const struct {
        const char *sql;
        unsigned    flags;
    } cases[] = {
        {"SELECT abalance FROM pgbench_accounts WHERE aid = 1", 0},
        {"LISTEN jobs", 0},
        {"SELECT 1 OFFSET 0", 0},
        {"sEt search_path = a", SCAN_SETTING},
        {"RESET ALL", SCAN_RESET_ALL},
        {"SELECT SET_CONFIG('a.b', 'c', false)", SCAN_SETTING},
        {"Discard All", SCAN_DISCARD_ALL | SCAN_RESET_ALL},
        {"SELECT 1; SET a.b = 1", SCAN_SETTING},
        {"se", 0},
        {"DEALLOCATE ALL", SCAN_DEALLOCATE | SCAN_DEALLOCATE_ALL},
        {"select 1; deallocate s", SCAN_DEALLOCATE},
        {"SELECT 'd'", 0},
        {"dealloc", 0},
        {"SELECT 1 -- DISCARD", 0},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        scan_init(&fx);
        scan_sql(cases[i].sql, strlen(cases[i].sql), true, SCAN_READBACK | SCAN_STATEMENTS, &fx);
        if (!ok(fx.flags == cases[i].flags, "settings and statements only: %s: flags %#x", cases[i].sql,
                cases[i].flags))
            printf("#   got %#x\n", fx.flags);
    }
}

int main(void)
{
    forms_of_set();
    set_config_calls();
    other_state();
    quoting_and_statements();
    unicode_names();
    calls();
    deallocate_targets();
    limits();
    every_prefix();
    settings_only();
    return done_testing();
}
