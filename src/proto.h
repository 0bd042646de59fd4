/*
 * proto.h - PostgreSQL v3 wire protocol: framing, readers and builders.
 *
 * Every regular message is  type:u8  length:u32 (counts itself)  body.
 * The startup family has no type byte: length:u32  code:u32  body.
 *
 * Framing never consumes bytes: proto_peek_* looks at the head of an
 * evbuffer and says OK / NEED_MORE / BAD, so callers resume on the next read
 * without keeping parser state beyond "bytes of this message still to pass".
 */
#ifndef PGBUN_PROTO_H
#define PGBUN_PROTO_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "varlist.h"

struct evbuffer;

#define PROTO_STARTUP_MIN 8
#define PROTO_STARTUP_MAX 10000
#define PROTO_HDR_LEN     5

/*
 * The longest PasswordMessage or SASL message a client may send during login,
 * its length field included: a cleartext password of up to PROTO_PASSWORD_MAX
 * bytes (PgBouncer's limit) plus the length word and the terminating NUL.
 */
#define PROTO_PASSWORD_MAX 65531
#define PROTO_AUTH_MSG_MAX (PROTO_PASSWORD_MAX + 4 + 1)

#define PROTO_VERSION(major, minor) (((uint32_t)(major) << 16) | (uint32_t)(minor))
#define PROTO_CODE_CANCEL           80877102u
#define PROTO_CODE_SSL              80877103u
#define PROTO_CODE_GSSENC           80877104u

/* Authentication request codes ('R' messages). */
enum {
    AUTH_REQ_OK = 0,
    AUTH_REQ_CLEARTEXT = 3,
    AUTH_REQ_MD5 = 5,
    AUTH_REQ_SASL = 10,
    AUTH_REQ_SASL_CONTINUE = 11,
    AUTH_REQ_SASL_FINAL = 12,
};

enum proto_result {
    PROTO_OK = 0,
    PROTO_NEED_MORE,
    PROTO_BAD,
};

/*
 * What a frontend message is once its client has logged in, by type byte:
 * one table load, so that no other byte (0 included) is taken for one of
 * these. FE_INVALID: PostgreSQL closes a connection that sends it.
 */
enum fe_kind {
    FE_INVALID = 0,
    FE_QUERY,     /* Q: answered up to its ReadyForQuery */
    FE_FUNCTION,  /* F: the same */
    FE_SYNC,      /* S: ends a batch of extended-protocol messages with a ReadyForQuery */
    FE_FLUSH,     /* H: sends what is pending; no reply of its own */
    FE_EXTENDED,  /* P B D E C: answered (or skipped after an error) before the next Sync's ReadyForQuery */
    FE_COPY,      /* d c f: COPY FROM STDIN data, done, fail; ignored outside a COPY */
    FE_TERMINATE, /* X */
};

extern const uint8_t proto_fe_kinds[256];

static inline enum fe_kind proto_fe_kind(uint8_t type)
{
    return (enum fe_kind)proto_fe_kinds[type];
}

/* Head of a regular message: len is the length field (body + 4). */
enum proto_result proto_peek_header(struct evbuffer *buf, uint32_t max_len, uint8_t *type, uint32_t *len);
/* Head of a startup-family packet: len is the whole packet length. */
enum proto_result proto_peek_startup(struct evbuffer *buf, uint32_t *len);

/* A bounds-checked cursor over a message body. Any overrun sets `bad`. */
struct proto_reader {
    const uint8_t *p;
    size_t         left;
    bool           bad;
};

void     proto_reader_init(struct proto_reader *r, const void *data, size_t len);
uint8_t  proto_get_u8(struct proto_reader *r);
uint16_t proto_get_u16(struct proto_reader *r);
uint32_t proto_get_u32(struct proto_reader *r);
/* A NUL-terminated string inside the body; "" and bad on overrun. */
const char    *proto_get_str(struct proto_reader *r);
const uint8_t *proto_get_bytes(struct proto_reader *r, size_t n);

/* Parsed StartupMessage body (after the length and version). */
struct startup_packet {
    uint32_t       version;
    struct varlist params;     /* every name/value pair, in order */
    struct varlist pq_options; /* "_pq_." options, for NegotiateProtocolVersion */
};

/* Parses name/value pairs of a StartupMessage; *err names the problem. */
bool proto_parse_startup(const uint8_t *body, size_t len, struct startup_packet *sp, const char **err)
    __attribute__((warn_unused_result));
void proto_startup_free(struct startup_packet *sp);

/*
 * Splits an `options` startup value ("-c a=b --c=d", backslash escapes
 * spaces) into name/value pairs. false on a malformed option.
 */
bool proto_parse_options(const char *options, struct varlist *out, const char **err)
    __attribute__((warn_unused_result));

/* ErrorResponse / NoticeResponse fields we care about. */
struct pg_error {
    char severity[16];
    char sqlstate[6];
    char message[512];
};
void proto_parse_error(const uint8_t *body, size_t len, struct pg_error *out);

/*
 * Takes the whole message of `len` (its length field) at the front of `in`:
 * a malloc'd copy of its body with a NUL after it, the message drained.
 * NULL on OOM (nothing drained).
 */
uint8_t *proto_take_body(struct evbuffer *in, uint32_t len);

/* Builders: each appends one complete message to `out`. */
void proto_add_error(struct evbuffer *out, const char *severity, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void proto_add_verror(struct evbuffer *out, const char *severity, const char *sqlstate, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));
void proto_add_vnotice(struct evbuffer *out, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
void proto_add_command_complete(struct evbuffer *out, const char *tag);
void proto_add_parse_complete(struct evbuffer *out);
void proto_add_bind_complete(struct evbuffer *out);
void proto_add_close_complete(struct evbuffer *out);
void proto_add_no_data(struct evbuffer *out);
void proto_add_empty_query(struct evbuffer *out);
void proto_add_no_params(struct evbuffer *out); /* ParameterDescription with none */
void proto_add_auth(struct evbuffer *out, uint32_t code, const void *data, size_t len);
void proto_add_param_status(struct evbuffer *out, const char *name, const char *value);
void proto_add_backend_key(struct evbuffer *out, const uint8_t key[8]);
void proto_add_ready(struct evbuffer *out, char status);
void proto_add_query(struct evbuffer *out, const char *sql);
/* Parse of statement name: the query, then params (int16 count, int32 type OIDs); NULL: none. */
void proto_add_parse(struct evbuffer *out, const char *name, const char *query, const void *params, size_t params_len);
/* Describe ('D') or Close ('C') of prepared statement name. */
void proto_add_statement_request(struct evbuffer *out, char type, const char *name);
void proto_add_sync(struct evbuffer *out);
/* Bind of the unnamed statement to the unnamed portal with one text parameter (NULL: none); Execute of that portal. */
void proto_add_bind_text(struct evbuffer *out, const char *value);
void proto_add_execute(struct evbuffer *out);
/* The header alone (type, length) of a message whose len - 4 body bytes follow. */
void proto_add_header(struct evbuffer *out, char type, uint32_t len);
void proto_add_password(struct evbuffer *out, const char *password);
void proto_add_sasl_initial(struct evbuffer *out, const char *mech, const char *data, size_t len);
void proto_add_sasl_response(struct evbuffer *out, const char *data, size_t len);
void proto_add_startup(struct evbuffer *out, const struct varlist *params);
void proto_add_cancel(struct evbuffer *out, const uint8_t key[8]);
void proto_add_terminate(struct evbuffer *out);
void proto_add_negotiate(struct evbuffer *out, uint32_t minor, const struct varlist *unsupported);

/* A name that can be a GUC: letters, digits, '_', '.', '$'. */
bool proto_valid_param_name(const char *name);

/*
 * Appends `SELECT pg_catalog.set_config('name', 'value', false);` to a query
 * string, quoting both as literals. false when `name` is not a valid
 * parameter name.
 */
bool proto_append_set(char **sql, size_t *len, const char *name, const char *value) __attribute__((warn_unused_result));

/* Appends `('name', 'value')` to a VALUES list, a comma first unless *len is `start`. false as proto_append_set. */
bool proto_append_pair(char **sql, size_t *len, size_t start, const char *name, const char *value)
    __attribute__((warn_unused_result));

/* Appends `RESET name;`. */
bool proto_append_reset(char **sql, size_t *len, const char *name) __attribute__((warn_unused_result));

#endif
