/*
 * pgbun-admin - an interactive console for pgbun's admin database, on libpq
 * and readline.
 *
 *   pgbun-admin [-h host] [-p port] [-U user] [-d db] [-c cmd]... [--json|--csv]
 *               [--watch N] [--no-color] [top]
 *
 *   -c given        run each command in order, exit 0 only if all succeeded
 *   stdin not a tty read commands from it, one per line
 *   otherwise       readline prompt: history, Tab completion, \watch, \top
 *
 * Connection defaults are libpq's (PGHOST, PGPORT, PGUSER, PGPASSWORD,
 * ~/.pgpass, the unix socket); the database is "pgbun". A query that fails
 * because the connection was lost reconnects once and runs again.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <libpq-fe.h>
#include <poll.h>
#include <readline/history.h>
#include <readline/readline.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "output.h"
#include "pqparams.h"
#include "top.h"

#ifndef PGBUN_VERSION
#define PGBUN_VERSION PACKAGE_VERSION
#endif

#define HISTORY_FILE ".pgbun_admin_history"
#define HISTORY_MAX  1000

static struct {
    const char     *host, *port, *user, *dbname;
    enum out_format format;
    bool            color;
    PGconn         *conn;
    char           *password; /* asked for once, kept for reconnects */
    char            prompt[256];
    char           *last;    /* the last command run, for \watch */
    char           *pending; /* a line read by readline, run outside its callback */
    bool            quit;
} app = {.dbname = "pgbun"};

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* SIGINT interrupts poll() and sleeps (no SA_RESTART) and only sets a flag. */
static void catch_sigint(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
}

/* ---- messages ---- */

static void say_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void say_error(const char *fmt, ...)
{
    va_list ap;
    bool    red = app.color && isatty(STDERR_FILENO);

    fputs(red ? "\033[31m" : "", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs(red ? "\033[0m" : "", stderr);
}

/* Notices (RELOAD's list of changes, SHOW HELP) go to stderr, like psql's. */
static void on_notice(void *arg, const PGresult *res)
{
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY);

    (void)arg;
    fprintf(stderr, "%s: %s\n", sev ? sev : "NOTICE", msg ? msg : "");
}

static void report_error(const PGresult *res)
{
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY);
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

    if (msg == NULL) {
        say_error("%s", PQresultErrorMessage(res));
        return;
    }
    say_error("%s: %s (SQLSTATE %s)\n", sev ? sev : "ERROR", msg, state ? state : "?????");
}

/* ---- connecting ---- */

/* Reads a password from the terminal without echo. */
static char *ask_password(void)
{
    struct termios old, quiet;
    char           buf[1024];
    FILE          *tty = fopen("/dev/tty", "r+");
    bool           have;

    if (tty == NULL) return NULL;
    fprintf(tty, "Password for user %s: ", app.user ? app.user : getenv("PGUSER") ? getenv("PGUSER") : "(default)");
    fflush(tty);
    tcgetattr(fileno(tty), &old);
    quiet = old;
    quiet.c_lflag &= ~(tcflag_t)ECHO;
    tcsetattr(fileno(tty), TCSAFLUSH, &quiet);
    have = fgets(buf, sizeof(buf), tty) != NULL;
    tcsetattr(fileno(tty), TCSAFLUSH, &old);
    fputc('\n', tty);
    fclose(tty);
    if (!have) return NULL;
    buf[strcspn(buf, "\r\n")] = '\0';
    return strdup(buf);
}

static PGconn *open_conn(void)
{
    struct pq_params p = {0};

    pq_param(&p, "host", app.host);
    pq_param(&p, "port", app.port);
    pq_param(&p, "user", app.user);
    pq_param(&p, "dbname", app.dbname);
    pq_param(&p, "password", app.password);
    pq_param(&p, "fallback_application_name", "pgbun-admin");
    return PQconnectdbParams(p.keys, p.vals, 0);
}

/* Connects, asking for a password when the server wants one and a terminal is there. */
static bool connect_db(void)
{
    PGconn *conn = open_conn();

    if (PQstatus(conn) == CONNECTION_BAD && PQconnectionNeedsPassword(conn) && app.password == NULL &&
        isatty(STDIN_FILENO)) {
        PQfinish(conn);
        if ((app.password = ask_password()) == NULL) return false;
        conn = open_conn();
    }
    if (PQstatus(conn) == CONNECTION_BAD) {
        say_error("pgbun-admin: could not connect: %s", PQerrorMessage(conn));
        fprintf(stderr, "hint: is pgbun running and listening on %s, port %s? (-h/-p, or PGHOST/PGPORT)\n",
                PQhost(conn) && *PQhost(conn) ? PQhost(conn) : "the default unix socket",
                PQport(conn) && *PQport(conn) ? PQport(conn) : "6432");
        PQfinish(conn);
        return false;
    }
    PQsetNoticeReceiver(conn, on_notice, NULL);
    if (app.conn) PQfinish(app.conn);
    app.conn = conn;
    snprintf(app.prompt, sizeof(app.prompt), "pgbun-admin %s:%s> ", PQhost(conn)[0] == '/' ? "unix" : PQhost(conn),
             PQport(conn));
    return true;
}

/* ---- running commands ---- */

/* Sends sql, prints every result; false when any statement failed. */
static bool execute(const char *sql, bool *lost)
{
    PGresult *res;
    bool      ok = true;

    *lost = false;
    if (!PQsendQuery(app.conn, sql)) {
        *lost = PQstatus(app.conn) == CONNECTION_BAD;
        if (!*lost) say_error("pgbun-admin: %s", PQerrorMessage(app.conn));
        return false;
    }
    while ((res = PQgetResult(app.conn)) != NULL) {
        switch (PQresultStatus(res)) {
        case PGRES_TUPLES_OK: out_print(stdout, res, app.format); break;
        case PGRES_COMMAND_OK:
            if (app.format == OUT_TABLE) printf("%s\n", PQcmdStatus(res));
            break;
        case PGRES_EMPTY_QUERY: break;
        default:
            if (PQstatus(app.conn) == CONNECTION_BAD && PQresultErrorField(res, PG_DIAG_SQLSTATE) == NULL) {
                *lost = true;
            } else {
                report_error(res);
            }
            ok = false;
            break;
        }
        PQclear(res);
    }
    fflush(stdout);
    if (PQstatus(app.conn) == CONNECTION_BAD) *lost = true;
    return ok;
}

/* Runs one command; a lost connection is re-made once and the command retried. */
static bool run(const char *sql)
{
    bool lost, ok = execute(sql, &lost);

    if (!lost) return ok;
    fprintf(stderr, "pgbun-admin: the connection was lost; reconnecting\n");
    if (!connect_db()) return false;
    ok = execute(sql, &lost);
    if (lost) say_error("pgbun-admin: the connection was lost again: %s", PQerrorMessage(app.conn));
    return ok && !lost;
}

static PGresult *admin_query(const char *sql)
{
    PGresult *res = PQexec(app.conn, sql);

    if (PQresultStatus(res) != PGRES_TUPLES_OK && PQstatus(app.conn) == CONNECTION_BAD && connect_db()) {
        PQclear(res);
        res = PQexec(app.conn, sql);
    }
    return res;
}

/* Sleeps up to ms, or until Ctrl-C. false when interrupted. */
static bool admin_sleep(int ms)
{
    struct timespec end, now;

    clock_gettime(CLOCK_MONOTONIC, &end);
    end.tv_sec += ms / 1000;
    end.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (end.tv_nsec >= 1000000000L) {
        end.tv_sec++;
        end.tv_nsec -= 1000000000L;
    }
    for (;;) {
        long left;

        if (interrupted) return false;
        clock_gettime(CLOCK_MONOTONIC, &now);
        left = (long)(end.tv_sec - now.tv_sec) * 1000 + (end.tv_nsec - now.tv_nsec) / 1000000L;
        if (left <= 0) return true;
        (void)poll(NULL, 0, (int)left);
    }
}

static const struct top_console top_console = {admin_query, admin_sleep};

/* \watch and --watch: runs the commands every `secs` seconds until Ctrl-C. */
static bool watch(char **cmds, int n, double secs)
{
    bool ok = true;

    interrupted = 0;
    while (!interrupted) {
        time_t    t = time(NULL);
        struct tm tm;
        char      when[64];

        localtime_r(&t, &tm);
        strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
        if (isatty(STDOUT_FILENO)) fputs("\033[H\033[2J", stdout);
        if (app.format == OUT_TABLE) printf("%s (every %gs)\n\n", when, secs);
        for (int i = 0; i < n && !interrupted; i++)
            ok = run(cmds[i]) && ok;
        if (!admin_sleep((int)(secs * 1000))) break;
    }
    interrupted = 0;
    putchar('\n');
    return ok;
}

/* ---- interactive ---- */

static const char *const commands[] = {
    "SHOW",      "SET",        "RELOAD",   "PAUSE", "RESUME", "DISABLE", "ENABLE",  "KILL",  "KILL_CLIENT",
    "RECONNECT", "WAIT_CLOSE", "SHUTDOWN", "RESET", "\\?",    "\\q",     "\\watch", "\\top", NULL,
};
static const char *const topics[] = {
    "POOLS",   "STATS",          "STATS_TOTALS", "STATS_AVERAGES", "TOTALS", "SERVERS", "CLIENTS",
    "SOCKETS", "ACTIVE_SOCKETS", "DATABASES",    "USERS",          "CONFIG", "LISTS",   "STATE",
    "MEM",     "DNS_HOSTS",      "DNS_ZONES",    "VERSION",        "HELP",   NULL,
};
static const char *const shutdown_modes[] = {"WAIT_FOR_SERVERS", "WAIT_FOR_CLIENTS", NULL};
static const char *const reset_what[] = {"STATS", NULL};

static char **choices;   /* what the generator offers for the word being completed */
static bool   lowercase; /* the user types keywords in lower case: complete them so */

static void free_choices(void)
{
    for (size_t i = 0; choices && choices[i]; i++)
        free(choices[i]);
    free(choices);
    choices = NULL;
}

static void set_choices(const char *const *list)
{
    size_t n = 0;

    free_choices();
    while (list[n])
        n++;
    if ((choices = calloc(n + 1, sizeof(*choices))) == NULL) return;
    for (size_t i = 0; i < n; i++)
        choices[i] = strdup(list[i]);
}

/* The first column of a console query, as choices (SHOW CONFIG keys, SHOW DATABASES names). */
static void query_choices(const char *sql)
{
    PGresult *res = PQexec(app.conn, sql);
    int       n = PQresultStatus(res) == PGRES_TUPLES_OK ? PQntuples(res) : 0;

    free_choices();
    if ((choices = calloc((size_t)n + 1, sizeof(*choices))) != NULL) {
        int k = 0;

        for (int i = 0; i < n; i++)
            if (strcmp(PQgetvalue(res, i, 0), "*") != 0) /* the fallback entry is no name to type */
                choices[k++] = strdup(PQgetvalue(res, i, 0));
    }
    PQclear(res);
}

static char *generator(const char *text, int state)
{
    static size_t i, len;

    if (state == 0) {
        i = 0;
        len = strlen(text);
    }
    while (choices && choices[i]) {
        const char *c = choices[i++];

        if (strncasecmp(c, text, len) == 0) {
            char *m = strdup(c);

            if (m && lowercase && isupper((unsigned char)c[0]))
                for (char *p = m; *p; p++)
                    *p = (char)tolower((unsigned char)*p);
            return m;
        }
    }
    return NULL;
}

static char **complete(const char *text, int start, int end)
{
    char first[64] = "";
    int  words = 0;
    bool in_word = false;

    (void)end;
    rl_attempted_completion_over = 1; /* never file names */
    for (int i = 0; i < start; i++) {
        bool space = isspace((unsigned char)rl_line_buffer[i]);

        if (!space && !in_word) {
            words++;
            if (words == 1) {
                int n = 0;

                while (i + n < start && !isspace((unsigned char)rl_line_buffer[i + n]) && n < 63) {
                    first[n] = rl_line_buffer[i + n];
                    n++;
                }
                first[n] = '\0';
            }
        }
        in_word = !space;
    }
    lowercase = text[0] != '\0' ? islower((unsigned char)text[0]) : (first[0] && islower((unsigned char)first[0]));
    if (words == 0) {
        set_choices(commands);
    } else if (words == 1 && (strcasecmp(first, "SHOW") == 0 || strcasecmp(first, "SELECT") == 0)) {
        set_choices(topics);
    } else if (words == 1 && strcasecmp(first, "SET") == 0) {
        lowercase = false;
        query_choices("SHOW CONFIG");
    } else if (words == 1 &&
               (strcasecmp(first, "PAUSE") == 0 || strcasecmp(first, "RESUME") == 0 || strcasecmp(first, "KILL") == 0 ||
                strcasecmp(first, "RECONNECT") == 0 || strcasecmp(first, "ENABLE") == 0 ||
                strcasecmp(first, "DISABLE") == 0 || strcasecmp(first, "WAIT_CLOSE") == 0)) {
        lowercase = false;
        query_choices("SHOW DATABASES");
    } else if (words == 1 && strcasecmp(first, "SHUTDOWN") == 0) {
        set_choices(shutdown_modes);
    } else if (words == 1 && strcasecmp(first, "RESET") == 0) {
        set_choices(reset_what);
    } else {
        return NULL;
    }
    return rl_completion_matches(text, generator);
}

static void help(void)
{
    printf("Commands go to pgbun's admin console; Tab completes them.\n"
           "  SHOW POOLS | STATS | STATS_TOTALS | STATS_AVERAGES | TOTALS | SERVERS | CLIENTS\n"
           "       | SOCKETS | ACTIVE_SOCKETS | DATABASES | USERS | CONFIG | LISTS | STATE | MEM\n"
           "       | DNS_HOSTS | DNS_ZONES | VERSION | HELP\n"
           "  SET key = value    RELOAD    RESET STATS\n"
           "  PAUSE [db]  RESUME [db]  DISABLE db  ENABLE db  KILL [db]  KILL_CLIENT id\n"
           "  RECONNECT [db]  WAIT_CLOSE [db]  SHUTDOWN [WAIT_FOR_SERVERS | WAIT_FOR_CLIENTS]\n"
           "Here:\n"
           "  \\watch N   run the last command every N seconds until Ctrl-C\n"
           "  \\top       the live per-pool view (Ctrl-C leaves it)\n"
           "  \\?         this help\n"
           "  \\q         quit (or Ctrl-D)\n");
}

/* One line typed at the prompt (outside readline's callback). */
static void handle_line(char *line)
{
    char *s = line;

    while (isspace((unsigned char)*s))
        s++;
    for (char *e = s + strlen(s); e > s && isspace((unsigned char)e[-1]);)
        *--e = '\0';
    if (*s == '\0') return;
    add_history(s);
    if (strcmp(s, "\\q") == 0) {
        app.quit = true;
    } else if (strcmp(s, "\\?") == 0 || strcasecmp(s, "help") == 0) {
        help();
    } else if (strncmp(s, "\\watch", 6) == 0) {
        double secs = s[6] ? strtod(s + 6, NULL) : 2;

        if (app.last == NULL)
            say_error("\\watch: no command to repeat yet\n");
        else if (secs <= 0)
            say_error("\\watch: give the interval in seconds, e.g. \\watch 2\n");
        else
            watch(&app.last, 1, secs);
    } else if (strcmp(s, "\\top") == 0) {
        top_run(&top_console, app.color && isatty(STDOUT_FILENO));
    } else if (s[0] == '\\') {
        say_error("unknown command %s; \\? lists them\n", s);
    } else {
        run(s);
        free(app.last);
        app.last = strdup(s);
    }
}

static void on_readline(char *line)
{
    /* Removed here, before readline puts the prompt back up: the command's output starts on a clean line. */
    rl_callback_handler_remove();
    if (line == NULL) { /* Ctrl-D */
        app.quit = true;
        putchar('\n');
        return;
    }
    app.pending = line;
}

static int interactive(void)
{
    char        path[4096] = "";
    const char *home = getenv("HOME");

    if (home) {
        snprintf(path, sizeof(path), "%s/%s", home, HISTORY_FILE);
        read_history(path);
    }
    stifle_history(HISTORY_MAX);
    rl_readline_name = "pgbun-admin";
    rl_attempted_completion_function = complete;
    rl_catch_signals = 0;
    catch_sigint();
    printf("pgbun-admin %s, connected to %s:%s as %s. \\? for help, \\q to quit.\n", PGBUN_VERSION, PQhost(app.conn),
           PQport(app.conn), PQuser(app.conn));
    rl_callback_handler_install(app.prompt, on_readline);
    while (!app.quit) {
        struct pollfd pfd = {STDIN_FILENO, POLLIN, 0};

        if (poll(&pfd, 1, -1) < 0) {
            if (errno != EINTR) break;
            if (interrupted) { /* Ctrl-C: drop the line, new prompt */
                interrupted = 0;
                rl_free_line_state();
                rl_callback_sigcleanup();
                rl_replace_line("", 0);
                rl_crlf();
                rl_on_new_line();
                rl_redisplay();
            }
            continue;
        }
        rl_callback_read_char();
        if (app.pending != NULL) {
            char *line = app.pending;

            app.pending = NULL;
            handle_line(line);
            free(line);
            if (!app.quit) rl_callback_handler_install(app.prompt, on_readline);
        }
    }
    rl_callback_handler_remove();
    if (path[0]) write_history(path);
    free_choices();
    return 0;
}

/* Commands from a pipe, one per line. */
static int from_stdin(void)
{
    char   *line = NULL;
    size_t  cap = 0;
    ssize_t n;
    bool    ok = true;

    while ((n = getline(&line, &cap, stdin)) >= 0) {
        char *s = line;

        line[strcspn(line, "\r\n")] = '\0';
        while (isspace((unsigned char)*s))
            s++;
        if (*s == '\0' || strncmp(s, "--", 2) == 0) continue;
        if (strcmp(s, "\\q") == 0) break;
        ok = run(s) && ok;
    }
    free(line);
    return ok ? 0 : 1;
}

/* ---- main ---- */

static void usage(FILE *f)
{
    fprintf(f, "Usage: pgbun-admin [OPTION]... [top]\n"
               "An interactive console for pgbun's admin database.\n\n"
               "  -h, --host HOST       pgbun's host or unix socket directory (PGHOST)\n"
               "  -p, --port PORT       its port (PGPORT; pgbun listens on 6432 by default)\n"
               "  -U, --user USER       user name (PGUSER); the password comes from PGPASSWORD,\n"
               "                        ~/.pgpass or a prompt\n"
               "  -d, --dbname DB       database (default pgbun)\n"
               "  -c, --command CMD     run CMD and exit; may be repeated, run in order\n"
               "      --csv             print results as CSV\n"
               "      --json            print results as JSON (an array of objects)\n"
               "      --watch SECONDS   repeat the -c commands every SECONDS until Ctrl-C\n"
               "      --no-color        no colour (also when NO_COLOR is set)\n"
               "      --help            this help\n"
               "      --version         the version\n\n"
               "With no -c, commands are read from a terminal (readline, Tab completion,\n"
               "history in ~/" HISTORY_FILE ") or from a pipe, one per line.\n"
               "\"top\" opens the live per-pool view. Exit status: 0 when every command\n"
               "succeeded, 1 when one failed, 2 when the connection or the options did.\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"host", required_argument, NULL, 'h'},    {"port", required_argument, NULL, 'p'},
        {"user", required_argument, NULL, 'U'},    {"dbname", required_argument, NULL, 'd'},
        {"command", required_argument, NULL, 'c'}, {"csv", no_argument, NULL, 'C'},
        {"json", no_argument, NULL, 'J'},          {"watch", required_argument, NULL, 'W'},
        {"no-color", no_argument, NULL, 'N'},      {"help", no_argument, NULL, 'H'},
        {"version", no_argument, NULL, 'V'},       {NULL, 0, NULL, 0},
    };
    char **cmds = calloc((size_t)argc + 1, sizeof(*cmds));
    int    ncmds = 0, ch, rc = 0;
    double every = 0;
    bool   top = false;

    if (cmds == NULL) return 2;
    app.color = getenv("NO_COLOR") == NULL;
    while ((ch = getopt_long(argc, argv, "h:p:U:d:c:", opts, NULL)) != -1) {
        switch (ch) {
        case 'h': app.host = optarg; break;
        case 'p': app.port = optarg; break;
        case 'U': app.user = optarg; break;
        case 'd': app.dbname = optarg; break;
        case 'c': cmds[ncmds++] = optarg; break;
        case 'C': app.format = OUT_CSV; break;
        case 'J': app.format = OUT_JSON; break;
        case 'W':
            every = strtod(optarg, NULL);
            if (every <= 0) {
                fprintf(stderr, "pgbun-admin: --watch wants a number of seconds above 0\n");
                {
                    rc = 2;
                    goto out;
                }
            }
            break;
        case 'N': app.color = false; break;
        case 'H':
            usage(stdout);
            {
                rc = 0;
                goto out;
            }
        case 'V':
            printf("pgbun-admin %s\n", PGBUN_VERSION);
            {
                rc = 0;
                goto out;
            }
        default:
            usage(stderr);
            {
                rc = 2;
                goto out;
            }
        }
    }
    for (; optind < argc; optind++) {
        if (strcmp(argv[optind], "top") == 0) {
            top = true;
        } else {
            fprintf(stderr, "pgbun-admin: unexpected argument \"%s\"\n", argv[optind]);
            usage(stderr);
            {
                rc = 2;
                goto out;
            }
        }
    }
    if (every > 0 && ncmds == 0) {
        fprintf(stderr, "pgbun-admin: --watch repeats -c commands: give at least one\n");
        {
            rc = 2;
            goto out;
        }
    }
    if (!connect_db()) {
        rc = 2;
        goto out;
    }

    if (top) {
        catch_sigint();
        rc = top_run(&top_console, app.color && isatty(STDOUT_FILENO)) ? 0 : 1;
    } else if (every > 0) {
        catch_sigint();
        rc = watch(cmds, ncmds, every) ? 0 : 1;
    } else if (ncmds > 0) {
        bool ok = true;

        for (int i = 0; i < ncmds; i++)
            ok = run(cmds[i]) && ok;
        rc = ok ? 0 : 1;
    } else if (isatty(STDIN_FILENO)) {
        rc = interactive();
    } else {
        rc = from_stdin();
    }
    PQfinish(app.conn);
    free(app.last);
out:
    if (app.password) {
        memset(app.password, 0, strlen(app.password));
        free(app.password);
    }
    free(cmds);
    return rc;
}
