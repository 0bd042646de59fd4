/*
 * base64.h - standard base64 (RFC 4648, with padding), for SCRAM messages
 * and secrets.
 */
#ifndef PGBUN_BASE64_H
#define PGBUN_BASE64_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Returns a malloc'd, padded, NUL-terminated encoding, or NULL. */
char *base64_encode(const uint8_t *in, size_t len);
/*
 * Strict decoding: padded to a multiple of 4, '=' only at the end, zero
 * bits under the padding, so each byte string has one encoding. false when
 * invalid or when the result would exceed cap.
 */
bool base64_decode(const char *in, size_t len, uint8_t *out, size_t cap, size_t *outlen)
    __attribute__((warn_unused_result));

#endif
