/*
 * base64.c - standard base64 with padding.
 */
#include "base64.h"

#include <stdlib.h>
#include <string.h>

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Returns a malloc'd, padded, NUL-terminated encoding. */
char *base64_encode(const uint8_t *in, size_t len)
{
    char  *out = malloc((len + 2) / 3 * 4 + 1), *o = out;
    size_t i;

    if (out == NULL) return NULL;
    for (i = 0; i + 2 < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];

        *o++ = alphabet[v >> 18];
        *o++ = alphabet[(v >> 12) & 63];
        *o++ = alphabet[(v >> 6) & 63];
        *o++ = alphabet[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0);

        *o++ = alphabet[v >> 18];
        *o++ = alphabet[(v >> 12) & 63];
        *o++ = i + 1 < len ? alphabet[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    *o = '\0';
    return out;
}

static int value_of(char c)
{
    const char *p = c != '\0' ? strchr(alphabet, c) : NULL;

    return p ? (int)(p - alphabet) : -1;
}

/* Strict: padded to a multiple of 4, '=' only at the end, zero bits under it. false if invalid or over cap. */
bool base64_decode(const char *in, size_t len, uint8_t *out, size_t cap, size_t *outlen)
{
    size_t   pad = 0, n, o = 0;
    uint32_t acc = 0;

    if (len % 4 != 0) return false;
    if (len > 0 && in[len - 1] == '=') pad++;
    if (pad == 1 && in[len - 2] == '=') pad++;
    n = len / 4 * 3 - pad;
    if (n > cap) return false;
    for (size_t i = 0; i < len; i++) {
        int v = i >= len - pad ? 0 : value_of(in[i]);

        if (v < 0) return false;
        acc = (acc << 6) | (uint32_t)v;
        if (i % 4 == 3) {
            uint8_t b[3] = {(uint8_t)(acc >> 16), (uint8_t)(acc >> 8), (uint8_t)acc};

            /* bits under the padding must be zero: one encoding per byte string */
            if (i == len - 1 && pad > 0 && (acc & (pad == 1 ? 0xffu : 0xffffu)) != 0) return false;
            for (int k = 0; k < 3 && o < n; k++)
                out[o++] = b[k];
            acc = 0;
        }
    }
    *outlen = n;
    return true;
}
