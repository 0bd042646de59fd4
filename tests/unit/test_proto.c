/*
 * test_proto.c - framing, startup parsing and builders, fed raw bytes:
 * split at every byte, merged, truncated and oversized.
 */
#include <arpa/inet.h>
#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "tap.h"

/* Builds Query('SELECT 1') + Sync + a DataRow-ish message. */
static size_t sample_stream(uint8_t *out)
{
    struct evbuffer *b = evbuffer_new();
    size_t           n;

    proto_add_query(b, "SELECT 1");
    evbuffer_add(b, "S\0\0\0\4", 5);
    proto_add_param_status(b, "client_encoding", "UTF8");
    n = evbuffer_get_length(b);
    evbuffer_remove(b, out, n);
    evbuffer_free(b);
    return n;
}

/* Frames everything in buf, counting whole messages; returns the count. */
static int frame_all(struct evbuffer *buf, char *types)
{
    int      count = 0;
    uint8_t  type;
    uint32_t len;

    while (proto_peek_header(buf, 1 << 20, &type, &len) == PROTO_OK && evbuffer_get_length(buf) >= (size_t)len + 1) {
        types[count++] = (char)type;
        evbuffer_drain(buf, (size_t)len + 1);
    }
    types[count] = '\0';
    return count;
}

static void test_split_at_every_byte(void)
{
    uint8_t stream[256];
    size_t  n = sample_stream(stream);
    int     good = 1;

    for (size_t cut = 0; cut <= n; cut++) {
        struct evbuffer *b = evbuffer_new();
        char             types[8];
        int              got;

        evbuffer_add(b, stream, cut);
        got = frame_all(b, types);
        evbuffer_add(b, stream + cut, n - cut);
        got += frame_all(b, types + got);
        if (got != 3 || evbuffer_get_length(b) != 0) good = 0;
        evbuffer_free(b);
    }
    ok(good, "a stream split at every byte frames into the same 3 messages");
}

static void test_merged_and_truncated(void)
{
    uint8_t          stream[256];
    size_t           n = sample_stream(stream);
    struct evbuffer *b = evbuffer_new();
    char             types[16];
    uint8_t          type;
    uint32_t         len;

    evbuffer_add(b, stream, n);
    evbuffer_add(b, stream, n);
    is_int(frame_all(b, types), 6, "two streams merged frame into 6 messages");
    is_str(types, "QSSQSS", "message types in order");

    evbuffer_add(b, stream, 3);
    is_int(proto_peek_header(b, 1 << 20, &type, &len), PROTO_NEED_MORE, "3 bytes of a header need more");
    evbuffer_free(b);
}

static void test_bad_lengths(void)
{
    struct evbuffer *b = evbuffer_new();
    uint8_t          type;
    uint32_t         len;
    uint8_t          tiny[5] = {'Q', 0, 0, 0, 3};
    uint8_t          huge[5] = {'Q', 0x7f, 0xff, 0xff, 0xff};

    evbuffer_add(b, tiny, 5);
    is_int(proto_peek_header(b, 1 << 20, &type, &len), PROTO_BAD, "length under 4 is bad");
    evbuffer_drain(b, 5);
    evbuffer_add(b, huge, 5);
    is_int(proto_peek_header(b, 1 << 20, &type, &len), PROTO_BAD, "length over the limit is bad");
    evbuffer_drain(b, 5);

    {
        uint32_t n = htonl(7);

        evbuffer_add(b, &n, 4);
        is_int(proto_peek_startup(b, &len), PROTO_BAD, "startup packet of 7 bytes is bad");
        evbuffer_drain(b, 4);
        n = htonl(10001);
        evbuffer_add(b, &n, 4);
        is_int(proto_peek_startup(b, &len), PROTO_BAD, "startup packet of 10001 bytes is bad");
        evbuffer_drain(b, 4);
        n = htonl(10000);
        evbuffer_add(b, &n, 4);
        is_int(proto_peek_startup(b, &len), PROTO_OK, "startup packet of 10000 bytes is accepted");
        evbuffer_drain(b, 4);
        evbuffer_add(b, "GET ", 4);
        is_int(proto_peek_startup(b, &len), PROTO_BAD, "an HTTP request is a bad startup packet");
    }
    evbuffer_free(b);
}

static void test_startup_roundtrip(void)
{
    struct varlist        in = {0};
    struct evbuffer      *b = evbuffer_new();
    struct startup_packet sp;
    const char           *err = NULL;
    uint8_t              *pkt;
    uint32_t              len;

    if (!varlist_set(&in, "user", "alice") || !varlist_set(&in, "database", "app") ||
        !varlist_set(&in, "application_name", "psql") || !varlist_set(&in, "_pq_.foo", "1"))
        abort();
    proto_add_startup(b, &in);
    is_int(proto_peek_startup(b, &len), PROTO_OK, "built startup packet frames");
    is_int(len, evbuffer_get_length(b), "its length field counts the whole packet");
    pkt = evbuffer_pullup(b, -1);
    ok(proto_parse_startup(pkt + 4, len - 4, &sp, &err), "built startup packet parses");
    is_int(sp.version, PROTO_VERSION(3, 0), "version 3.0");
    is_str(varlist_get(&sp.params, "user"), "alice", "user");
    is_str(varlist_get(&sp.params, "DATABASE"), "app", "names compare case-insensitively");
    is_str(varlist_get(&sp.pq_options, "_pq_.foo"), "1", "_pq_ options are kept apart");
    is_int(sp.params.count, 3, "three ordinary parameters");
    proto_startup_free(&sp);

    /* Truncate the terminator. */
    ok(!proto_parse_startup(pkt + 4, len - 5, &sp, &err), "missing final terminator is rejected");
    proto_startup_free(&sp);
    /* A name without a value. */
    {
        static const uint8_t bad[] = {0, 3, 0, 0, 'u', 's', 'e', 'r', 0};

        ok(!proto_parse_startup(bad, sizeof(bad), &sp, &err), "a name without a value is rejected");
        proto_startup_free(&sp);
    }
    varlist_clear(&in);
    evbuffer_free(b);
}

static void test_options(void)
{
    struct varlist out = {0};
    const char    *err = NULL;

    ok(proto_parse_options("-c search_path=app,public --work-mem=64MB -cstatement_timeout=5s", &out, &err),
       "options with -c, -cX and --x=y parse");
    is_str(varlist_get(&out, "search_path"), "app,public", "-c name=value");
    is_str(varlist_get(&out, "work_mem"), "64MB", "--work-mem=value becomes work_mem");
    is_str(varlist_get(&out, "statement_timeout"), "5s", "-cname=value");
    varlist_clear(&out);
    ok(proto_parse_options("-c application_name=my\\ app", &out, &err), "backslash escapes a space");
    is_str(varlist_get(&out, "application_name"), "my app", "escaped space kept");
    varlist_clear(&out);
    ok(!proto_parse_options("-c", &out, &err), "-c without a setting is rejected");
    ok(!proto_parse_options("-x foo", &out, &err), "unknown switch is rejected");
    ok(!proto_parse_options("-c noequals", &out, &err), "setting without '=' is rejected");
    varlist_clear(&out);
}

static void test_set_quoting(void)
{
    char  *sql = NULL;
    size_t len = 0;

    ok(proto_append_set(&sql, &len, "application_name", "it's"), "set_config with a quote");
    is_str(sql, "SELECT pg_catalog.set_config('application_name','it''s',false);", "single quote doubled");
    free(sql);
    sql = NULL;
    len = 0;
    ok(proto_append_set(&sql, &len, "app.tenant", "a\\b"), "set_config with a backslash");
    is_str(sql, "SELECT pg_catalog.set_config('app.tenant',E'a\\\\b',false);", "backslash uses E'' and is doubled");
    ok(!proto_append_set(&sql, &len, "bad name; DROP TABLE x", "v"), "an invalid parameter name is refused");
    ok(proto_append_reset(&sql, &len, "search_path"), "RESET appended");
    free(sql);
}

static void test_error_roundtrip(void)
{
    struct evbuffer *b = evbuffer_new();
    struct pg_error  e;
    uint8_t         *m;
    uint8_t          type;
    uint32_t         len;

    proto_add_error(b, "FATAL", "28P01", "password authentication failed for user \"%s\"", "bob");
    is_int(proto_peek_header(b, 1 << 20, &type, &len), PROTO_OK, "ErrorResponse frames");
    is_int(type, 'E', "type E");
    m = evbuffer_pullup(b, -1);
    proto_parse_error(m + 5, len - 4, &e);
    is_str(e.severity, "FATAL", "severity");
    is_str(e.sqlstate, "28P01", "sqlstate");
    is_str(e.message, "password authentication failed for user \"bob\"", "message");
    /* A truncated body must not crash. */
    proto_parse_error(m + 5, 7, &e);
    ok(1, "truncated ErrorResponse parsed without overrun");
    evbuffer_free(b);
}

static void test_reader_bounds(void)
{
    struct proto_reader  r;
    static const uint8_t data[] = {0, 0, 0, 1, 'a', 'b'};

    proto_reader_init(&r, data, sizeof(data));
    is_int(proto_get_u32(&r), 1, "u32");
    is_str(proto_get_str(&r), "", "unterminated string yields empty");
    ok(r.bad, "and marks the reader bad");
    is_int(proto_get_u8(&r), 0, "reads after bad yield 0");
}

int main(void)
{
    test_split_at_every_byte();
    test_merged_and_truncated();
    test_bad_lengths();
    test_startup_roundtrip();
    test_options();
    test_set_quoting();
    test_error_roundtrip();
    test_reader_bounds();
    return done_testing();
}
