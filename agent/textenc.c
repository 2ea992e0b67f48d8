/*
 * textenc -- how keys (arbitrary bytes) are shown: escaped text and base64.
 */
#include "textenc.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>

char *text_escape(const void *buf, size_t len)
{
    size_t cap = len * 4 + 8; /* every byte as \xNN, plus room for log_escape's margin */
    char *out = malloc(cap);
    if (!out)
        return NULL;
    return log_escape(out, cap, buf, len);
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *text_base64(const void *buf, size_t len)
{
    const unsigned char *p = buf;
    char *out = malloc((len + 2) / 3 * 4 + 1);
    size_t o = 0, i = 0;

    if (!out)
        return NULL;
    for (; i + 2 < len; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8 | p[i + 2];
        out[o++] = b64[v >> 18];
        out[o++] = b64[(v >> 12) & 63];
        out[o++] = b64[(v >> 6) & 63];
        out[o++] = b64[v & 63];
    }
    if (i < len) {
        unsigned v = (unsigned)p[i] << 16 | (i + 1 < len ? (unsigned)p[i + 1] << 8 : 0);
        out[o++] = b64[v >> 18];
        out[o++] = b64[(v >> 12) & 63];
        out[o++] = i + 1 < len ? b64[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    out[o] = '\0';
    return out;
}

static int b64val(int c)
{
    const char *p = c ? strchr(b64, c) : NULL;
    return p ? (int)(p - b64) : -1;
}

char *text_unbase64(const char *s, size_t len, size_t *outlen)
{
    char *out;
    size_t o = 0;

    if (len % 4)
        return NULL;
    out = malloc(len / 4 * 3 + 1);
    if (!out)
        return NULL;
    for (size_t i = 0; i < len; i += 4) {
        int v[4];
        int pad = 0;
        for (int j = 0; j < 4; j++) {
            if (s[i + j] == '=' && i + 4 == len && j >= 2) {
                v[j] = 0;
                pad++;
            } else if (pad || (v[j] = b64val((unsigned char)s[i + j])) < 0) {
                free(out);
                return NULL;
            }
        }
        unsigned x =
            (unsigned)v[0] << 18 | (unsigned)v[1] << 12 | (unsigned)v[2] << 6 | (unsigned)v[3];
        out[o++] = (char)(x >> 16);
        if (pad < 2)
            out[o++] = (char)(x >> 8);
        if (pad < 1)
            out[o++] = (char)x;
    }
    *outlen = o;
    return out;
}
