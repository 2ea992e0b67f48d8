/*
 * textenc -- how keys (arbitrary bytes) are shown: escaped text and base64.
 */
#include "textenc.h"

#include <stdlib.h>
#include <string.h>

char *text_escape(const void *buf, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *k = buf;
    char *out = malloc(len * 4 + 1), *o = out;

    if (!out)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = k[i];
        if (c == '\\') {
            *o++ = '\\';
            *o++ = '\\';
        } else if (c >= 0x20 && c < 0x7f) {
            *o++ = (char)c;
        } else {
            *o++ = '\\';
            *o++ = 'x';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        }
    }
    *o = '\0';
    return out;
}

/* The value of hex digit c, or -1. */
static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int text_unescape(const char *text, void *out, size_t outsz, size_t *outlen)
{
    unsigned char *o = out;
    size_t n = 0;

    for (const char *p = text; *p; p++) {
        int c = (unsigned char)*p;
        if (c == '\\') {
            if (p[1] == '\\') {
                p++;
            } else if (p[1] == 'x' && hexval(p[2]) >= 0 && hexval(p[3]) >= 0) {
                c = hexval(p[2]) * 16 + hexval(p[3]);
                p += 3;
            } else {
                return -1;
            }
        }
        if (n == outsz)
            return -1;
        o[n++] = (unsigned char)c;
    }
    *outlen = n;
    return 0;
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
