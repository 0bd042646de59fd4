/*
 * startup.c - the startup family of packets, as a client sends them first:
 * framing (proto_peek_startup), the StartupMessage's name/value pairs
 * (proto_parse_startup) and the `options` value's -c switches
 * (proto_parse_options). The live path, with SSLRequest and CancelRequest,
 * is fuzzed by conn.c.
 */
#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct evbuffer      *buf = evbuffer_new();
    struct startup_packet sp = {0};
    const char           *err = NULL;
    uint32_t              len = 0;

    if (buf == NULL) abort();
    evbuffer_add(buf, data, size);
    /* The header says how long the packet is; the caller waits for the rest. */
    if (proto_peek_startup(buf, &len) == PROTO_OK && len <= size) {
        uint8_t *pkt = evbuffer_pullup(buf, len);

        if (pkt == NULL || len < PROTO_STARTUP_MIN) abort();
        if (proto_parse_startup(pkt + 8, len - 8, &sp, &err)) {
            for (size_t i = 0; i < sp.params.count; i++) {
                struct varlist opts = {0};

                if (strcmp(sp.params.vars[i].name, "options") != 0) continue;
                if (proto_parse_options(sp.params.vars[i].value, &opts, &err))
                    for (size_t j = 0; j < opts.count; j++)
                        (void)proto_valid_param_name(opts.vars[j].name);
                varlist_clear(&opts);
            }
        }
        proto_startup_free(&sp);
    }
    evbuffer_free(buf);
    return 0;
}
