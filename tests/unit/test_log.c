/*
 * test_log.c - JSON string escaping (quotes, control characters, UTF-8 kept
 * or replaced, cut only between characters), and whole lines in both
 * formats written to a file: the identity as a text prefix or as fields, a
 * cut message that still closes its object, lines held at start.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "tap.h"

static char log_path[] = "/tmp/pgbun-test-log-XXXXXX";

static const char *esc(const char *s, size_t len, size_t size)
{
    static char out[256];

    log_json_escape(out, size, s, len);
    return out;
}

#define ESC(lit) esc(lit, sizeof(lit) - 1, sizeof(char[256]))

static void test_escape(void)
{
    char   big[64];
    size_t n;

    is_str(ESC("plain text 123"), "plain text 123", "printable ASCII is kept");
    is_str(ESC("say \"hi\" \\o/"), "say \\\"hi\\\" \\\\o/", "quotes and backslashes are escaped");
    is_str(ESC("a\nb\tc\rd\be\ff"), "a\\nb\\tc\\rd\\be\\ff", "\\n \\t \\r \\b \\f have their short forms");
    is_str(ESC("\x01\x1f\x7f"), "\\u0001\\u001f\x7f", "other control characters are \\u00XX; DEL is kept");
    is_str(ESC("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"), "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80",
           "valid 2, 3 and 4 byte UTF-8 is kept as is");
    is_str(ESC("a\xFF"
               "b"),
           "a\xEF\xBF\xBD"
           "b",
           "a byte that cannot start UTF-8 becomes U+FFFD");
    is_str(ESC("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD", "an overlong form is replaced byte by byte");
    is_str(ESC("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD", "a UTF-16 surrogate is replaced");
    is_str(ESC("\xF4\x90\x80\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD",
           "a code point above U+10FFFF is replaced");
    is_str(ESC("x\xE2\x82"), "x\xEF\xBF\xBD\xEF\xBF\xBD", "a sequence cut short at the end is replaced");
    is_str(ESC("\xE2(\xA1"), "\xEF\xBF\xBD(\xEF\xBF\xBD", "a lead byte without its continuation is replaced");
    is_str(esc("a\"b", 3, 3), "a", "an escape that does not fit whole is left out");
    is_str(esc("a\"b", 3, 4), "a\\\"", "... and one that fits is written");
    is_str(esc("\xC3\xA9", 2, 2), "", "a character is never cut in two");
    is_str(esc("\x01", 1, 6), "", "\\u0001 needs 6 bytes and a NUL");
    is_str(esc("abc", 2, 10), "ab", "only len bytes are read");
    n = log_json_escape(big, sizeof(big), "0123456789", 10);
    is_int(n, 10, "returns the bytes written");
    n = log_json_escape(big, 1, "abc", 3);
    ok(n == 0 && big[0] == '\0', "size 1 writes only the NUL");
}

static char *read_log(void)
{
    static char buf[65536];
    FILE       *f = fopen(log_path, "r");
    size_t      n = 0;

    if (f != NULL) {
        n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
    }
    buf[n] = '\0';
    return buf;
}

static void reset_log(void)
{
    if (truncate(log_path, 0) != 0) printf("# could not truncate %s\n", log_path);
}

/* The quotes of a JSON line balance (none is left open) and it is one object on one line. */
static bool json_line_shape(const char *line)
{
    size_t len = strlen(line);
    int    quotes = 0;

    if (len < 3 || line[0] != '{' || strcmp(line + len - 2, "}\n") != 0) return false;
    if (strchr(line, '\n') != line + len - 1) return false;
    for (size_t i = 0; i < len; i++) {
        if (line[i] == '\\') {
            i++;
            continue;
        }
        if (line[i] == '"') quotes++;
        if ((unsigned char)line[i] < 0x20 && line[i] != '\n') return false;
    }
    return quotes % 2 == 0;
}

static void test_lines(void)
{
    struct log_who   client = {'C', 7, "app", "al\"i\nce\xFF", "10.0.0.5", 51234};
    struct log_who   server = {'S', 3, "app", "alice", "/tmp", 5432};
    struct log_who   nodb = {'C', 8, NULL, NULL, "unix", 0};
    struct log_field figs[] = {LOG_NUM("rate", 12.5), LOG_INT("count", 42), LOG_STR("name", "x\"y"),
                               LOG_NUM("whole", 3.0)};
    char            *line, *long_msg;

    log_set_format(LOG_FORMAT_TEXT);
    reset_log();
    log_line(LOGL_INFO, LOGE_CLIENT, &client, NULL, 0, "closing: %s", "bye");
    line = read_log();
    ok(strstr(line, " LOG C-7: app/al\"i\nce\xFF@10.0.0.5:51234 closing: bye\n") != NULL,
       "text: the identity prefixes the message, as before");
    reset_log();
    log_line(LOGL_WARNING, LOGE_POOL, &(struct log_who){'P', 0, "db", "u", NULL, 0}, NULL, 0, "freed");
    ok(strstr(read_log(), " WARNING pool db/u: freed\n") != NULL, "text: a pool line begins with pool db/user:");
    reset_log();
    log_line(LOGL_INFO, LOGE_CLIENT, &nodb, NULL, 0, "accepted");
    ok(strstr(read_log(), " LOG C-8: (nodb)/(nouser)@unix:0 accepted\n") != NULL,
       "text: an unknown database and user show as (nodb)/(nouser)");

    log_set_format(LOG_FORMAT_JSON);
    log_set_worker(2);
    reset_log();
    log_line(LOGL_INFO, LOGE_CLIENT, &client, NULL, 0, "closing: %s", "bye");
    line = read_log();
    ok(json_line_shape(line), "json: one object on one line");
    ok(strncmp(line, "{\"ts\":\"", 7) == 0 && line[17] == 'T' && line[26] == '.' &&
           (line[30] == '+' || line[30] == '-') && line[33] == ':' && line[36] == '"',
       "json: ts is ISO 8601 with milliseconds and offset");
    ok(strstr(line, "\"level\":\"LOG\"") != NULL && strstr(line, "\"pid\":") != NULL, "json: level and pid");
    ok(strstr(line, "\"worker\":2,\"event\":\"client\"") != NULL, "json: worker and event");
    ok(strstr(line, "\"client_id\":7,\"database\":\"app\",\"user\":\"al\\\"i\\nce\xEF\xBF\xBD\",\"client_addr\":"
                    "\"10.0.0.5\",\"client_port\":51234") != NULL,
       "json: the client's identity as fields, escaped");
    ok(strstr(line, "\"msg\":\"closing: bye\"}\n") != NULL, "json: the message without the prefix, last");

    reset_log();
    log_line(LOGL_DEBUG, LOGE_CLIENT, &nodb, NULL, 0, "hidden");
    is_str(read_log(), "", "a level above the one set writes nothing");
    log_set_level(LOGL_DEBUG);
    log_line(LOGL_DEBUG, LOGE_CLIENT, &nodb, NULL, 0, "accepted");
    line = read_log();
    ok(strstr(line, "\"level\":\"DEBUG\"") && strstr(line, "\"database\":null,\"user\":null") &&
           strstr(line, "\"client_addr\":\"unix\",\"client_port\":null"),
       "json: unknown database, user and port are null");
    log_set_level(LOGL_INFO);

    reset_log();
    log_line(LOGL_ERROR, LOGE_SERVER, &server, figs, 4, "closing");
    line = read_log();
    ok(json_line_shape(line), "json: a server line with figures is one object");
    ok(strstr(line, "\"server_id\":3,\"database\":\"app\",\"user\":\"alice\",\"server_addr\":\"/tmp\","
                    "\"server_port\":5432,\"rate\":12.5,\"count\":42,\"name\":\"x\\\"y\",\"whole\":3,\"msg\":") != NULL,
       "json: server identity, then figures typed (numbers unquoted)");

    reset_log();
    log_set_worker(-1);
    log_line(LOGL_INFO, LOGE_STATS, NULL, (struct log_field[]){LOG_NUM("inf", 1.0 / 0.0)}, 1, "x");
    line = read_log();
    ok(strstr(line, "\"inf\":null") != NULL && strstr(line, "\"worker\"") == NULL,
       "json: a number that is not finite is null; no worker off the workers");

    long_msg = malloc(6000);
    memset(long_msg, '"', 5999);
    long_msg[5999] = '\0';
    reset_log();
    log_line(LOGL_INFO, LOGE_PROCESS, &client, NULL, 0, "%s", long_msg);
    line = read_log();
    ok(json_line_shape(line) && strstr(line, "\"msg\":\"\\\"\\\"") != NULL, "json: a long message is cut, closed");
    free(long_msg);

    /* At start: held until the config says the format. */
    log_set_format(LOG_FORMAT_TEXT);
    reset_log();
    log_hold(true);
    log_line(LOGL_WARNING, LOGE_CONFIG, NULL, NULL, 0, "key 'x' is ignored");
    is_str(read_log(), "", "held lines are not written yet");
    log_set_format(LOG_FORMAT_JSON);
    log_hold(false);
    line = read_log();
    ok(json_line_shape(line) && strstr(line, "\"event\":\"config\",\"msg\":\"key 'x' is ignored\"") != NULL,
       "held lines are written in the format set meanwhile");
    reset_log();
    log_line(LOGL_INFO, LOGE_CONFIG, NULL, NULL, 0, "after");
    ok(strstr(read_log(), "\"msg\":\"after\"") != NULL, "once released, lines are written at once");
}

int main(void)
{
    int fd = mkstemp(log_path);

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
    test_escape();
    test_lines();
    if (!log_set_file(NULL)) printf("# could not close the log file\n");
    unlink(log_path);
    return done_testing();
}
