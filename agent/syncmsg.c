/*
 * syncmsg -- the messages of the sync channel: a pure parser and encoder.
 *
 * The json format is strict about the fields it knows (types, ranges, no
 * duplicates, no field that makes no sense for the op) and ignores fields it
 * does not know, so publishers may add fields without breaking subscribers.
 */
#include "syncmsg.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t syncmsg_b64_encoded_size(size_t len)
{
    return (len + 2) / 3 * 4 + 1;
}

size_t syncmsg_b64_encode(char *out, const void *src, size_t len)
{
    const unsigned char *p = src;
    size_t o = 0, i = 0;

    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[o++] = b64_alphabet[v >> 18];
        out[o++] = b64_alphabet[(v >> 12) & 63];
        out[o++] = b64_alphabet[(v >> 6) & 63];
        out[o++] = b64_alphabet[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        out[o++] = b64_alphabet[v >> 18];
        out[o++] = b64_alphabet[(v >> 12) & 63];
        out[o++] = '=';
        out[o++] = '=';
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        out[o++] = b64_alphabet[v >> 18];
        out[o++] = b64_alphabet[(v >> 12) & 63];
        out[o++] = b64_alphabet[(v >> 6) & 63];
        out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/*
 * Decodes strictly: only the standard alphabet, '=' padding only at the end
 * and only to a multiple of four, and the unused low bits of the last
 * character must be zero (so every byte string has one encoding).
 */
long syncmsg_b64_decode(void *out, const char *src, size_t len)
{
    unsigned char *o = out;
    size_t pad = 0, n = 0;
    uint32_t acc = 0;
    int bits = 0;

    while (len > 0 && src[len - 1] == '=' && pad < 2) {
        len--;
        pad++;
    }
    if (pad && (len + pad) % 4 != 0)
        return -1;
    if (len % 4 == 1)
        return -1;
    for (size_t i = 0; i < len; i++) {
        int v = b64_value((unsigned char)src[i]);
        if (v < 0)
            return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            o[n++] = (unsigned char)(acc >> bits);
        }
    }
    if (bits && (acc & ((1u << bits) - 1)) != 0)
        return -1;
    return (long)n;
}

void syncmsg_free(struct syncmsg *m)
{
    if (!m)
        return;
    free(m->sm_mem);
    memset(m, 0, sizeof(*m));
}

/* Fills why and returns SYNCMSG_MALFORMED. */
static int malformed(char *why, size_t whylen, const char *reason)
{
    if (whylen)
        snprintf(why, whylen, "%s", reason);
    return SYNCMSG_MALFORMED;
}

/*
 * One binary string field that may come plain (name) or base64 (b64name).
 * On success *plain or *b64 is set (exactly one) and *cap is the room its
 * decoded bytes need. Returns SYNCMSG_OK, or MALFORMED with a reason; *found
 * says whether either field was present.
 */
static int json_bytes_field(json_t *obj, const char *name, const char *b64name, json_t **plain,
                            json_t **b64, size_t *cap, int *found, char *why, size_t whylen)
{
    json_t *p = json_object_get(obj, name);
    json_t *b = json_object_get(obj, b64name);
    char msg[SYNCMSG_WHY_MAX];

    *plain = *b64 = NULL;
    *cap = 0;
    *found = p || b;
    if (!*found)
        return SYNCMSG_OK;
    if (p && b) {
        snprintf(msg, sizeof(msg), "both %s and %s", name, b64name);
        return malformed(why, whylen, msg);
    }
    if (p && !json_is_string(p)) {
        snprintf(msg, sizeof(msg), "%s is not a string", name);
        return malformed(why, whylen, msg);
    }
    if (b && !json_is_string(b)) {
        snprintf(msg, sizeof(msg), "%s is not a string", b64name);
        return malformed(why, whylen, msg);
    }
    if (p) {
        *plain = p;
        *cap = json_string_length(p);
    } else {
        *b64 = b;
        *cap = json_string_length(b) / 4 * 3 + 3;
    }
    return SYNCMSG_OK;
}

/* Copies or decodes a field chosen by json_bytes_field into dst; returns its length or -1. */
static long json_bytes_copy(char *dst, json_t *plain, json_t *b64)
{
    if (plain) {
        size_t n = json_string_length(plain);
        memcpy(dst, json_string_value(plain), n);
        return (long)n;
    }
    return syncmsg_b64_decode(dst, json_string_value(b64), json_string_length(b64));
}

/* The json format; see syncmsg_parse. root is released here. */
static int parse_json_object(json_t *root, struct syncmsg *m, char *why, size_t whylen)
{
    json_t *op, *kp, *kb, *vp = NULL, *vb = NULL, *ttl;
    size_t kcap, vcap = 0;
    int found, vfound = 0, rc;
    const char *ops;
    long n;

    if (!json_is_object(root))
        return malformed(why, whylen, "not a JSON object");
    op = json_object_get(root, "op");
    if (!op)
        return malformed(why, whylen, "missing op");
    if (!json_is_string(op))
        return malformed(why, whylen, "op is not a string");
    ops = json_string_value(op);
    if (json_string_length(op) == 3 && !strcmp(ops, "set"))
        m->sm_op = SYNCMSG_SET;
    else if (json_string_length(op) == 3 && !strcmp(ops, "del"))
        m->sm_op = SYNCMSG_DEL;
    else
        return malformed(why, whylen, "unknown op");

    rc = json_bytes_field(root, "key", "key_b64", &kp, &kb, &kcap, &found, why, whylen);
    if (rc != SYNCMSG_OK)
        return rc;
    if (!found)
        return malformed(why, whylen, "missing key");

    rc = json_bytes_field(root, "value", "value_b64", &vp, &vb, &vcap, &vfound, why, whylen);
    if (rc != SYNCMSG_OK)
        return rc;
    ttl = json_object_get(root, "ttl_ms");
    if (m->sm_op == SYNCMSG_DEL) {
        if (vfound)
            return malformed(why, whylen, "op del takes no value");
        if (ttl)
            return malformed(why, whylen, "op del takes no ttl_ms");
    } else {
        if (!vfound)
            return malformed(why, whylen, "missing value");
        if (ttl) {
            if (!json_is_integer(ttl) || json_integer_value(ttl) <= 0)
                return malformed(why, whylen, "ttl_ms is not a positive integer");
            if (json_integer_value(ttl) > SYNCMSG_TTL_MAX)
                return malformed(why, whylen, "ttl_ms too large");
            m->sm_ttl_ms = (long long)json_integer_value(ttl);
        }
    }

    m->sm_mem = malloc(kcap + vcap + 2);
    if (!m->sm_mem)
        return SYNCMSG_NOMEM;
    n = json_bytes_copy(m->sm_mem, kp, kb);
    if (n < 0)
        return malformed(why, whylen, "key_b64 is not base64");
    if (n == 0)
        return malformed(why, whylen, "empty key");
    if (n > SYNCMSG_KEY_MAX)
        return malformed(why, whylen, "key longer than 1 MiB");
    m->sm_key = m->sm_mem;
    m->sm_keylen = (size_t)n;
    if (m->sm_op == SYNCMSG_SET) {
        char *vdst = m->sm_mem + m->sm_keylen + 1;
        n = json_bytes_copy(vdst, vp, vb);
        if (n < 0)
            return malformed(why, whylen, "value_b64 is not base64");
        m->sm_value = vdst;
        m->sm_valuelen = (size_t)n;
    }
    return SYNCMSG_OK;
}

int syncmsg_parse(enum msg_format fmt, const void *buf, size_t len, struct syncmsg *m, char *why,
                  size_t whylen)
{
    memset(m, 0, sizeof(*m));
    if (whylen)
        why[0] = '\0';

    if (fmt == FMT_KEY) {
        if (len == 0)
            return malformed(why, whylen, "empty payload");
        if (len > SYNCMSG_KEY_MAX)
            return malformed(why, whylen, "key longer than 1 MiB");
        m->sm_op = SYNCMSG_REFRESH;
        m->sm_key = buf;
        m->sm_keylen = len;
        return SYNCMSG_OK;
    }
    if (fmt != FMT_JSON)
        return malformed(why, whylen, "unknown message format");
    if (len == 0)
        return malformed(why, whylen, "empty payload");

    json_error_t jerr;
    json_t *root =
        json_loadb(buf, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL | JSON_DECODE_ANY, &jerr);
    if (!root) {
        if (json_error_code(&jerr) == json_error_out_of_memory)
            return SYNCMSG_NOMEM;
        char msg[SYNCMSG_WHY_MAX];
        snprintf(msg, sizeof(msg), "bad JSON at byte %d: %.60s", jerr.position, jerr.text);
        return malformed(why, whylen, msg);
    }
    int rc = parse_json_object(root, m, why, whylen);
    json_decref(root);
    if (rc != SYNCMSG_OK) {
        free(m->sm_mem);
        memset(m, 0, sizeof(*m));
    }
    return rc;
}

/* Adds bytes as name (a JSON string) when they are NUL-free UTF-8, else as b64name. */
static int json_add_bytes(json_t *obj, const char *name, const char *b64name, const char *p,
                          size_t len)
{
    json_t *s = NULL;

    if (!memchr(p, '\0', len))
        s = json_stringn(p, len); /* NULL when p is not valid UTF-8 */
    if (s)
        return json_object_set_new(obj, name, s);

    char *enc = malloc(syncmsg_b64_encoded_size(len));
    if (!enc)
        return -1;
    size_t n = syncmsg_b64_encode(enc, p, len);
    s = json_stringn(enc, n);
    free(enc);
    if (!s)
        return -1;
    return json_object_set_new(obj, b64name, s);
}

char *syncmsg_encode_json(const struct syncmsg *m, size_t *outlen)
{
    json_t *o;
    char *s = NULL;
    int bad = 0;

    if (!m || (m->sm_op != SYNCMSG_SET && m->sm_op != SYNCMSG_DEL) || !m->sm_key ||
        m->sm_keylen == 0 || m->sm_keylen > SYNCMSG_KEY_MAX)
        return NULL;
    if (m->sm_op == SYNCMSG_SET &&
        ((!m->sm_value && m->sm_valuelen) || m->sm_ttl_ms < 0 || m->sm_ttl_ms > SYNCMSG_TTL_MAX))
        return NULL;
    o = json_object();
    if (!o)
        return NULL;
    bad |= json_object_set_new(o, "op", json_string(m->sm_op == SYNCMSG_SET ? "set" : "del"));
    bad |= json_add_bytes(o, "key", "key_b64", m->sm_key, m->sm_keylen);
    if (m->sm_op == SYNCMSG_SET) {
        bad |=
            json_add_bytes(o, "value", "value_b64", m->sm_value ? m->sm_value : "", m->sm_valuelen);
        if (m->sm_ttl_ms > 0)
            bad |= json_object_set_new(o, "ttl_ms", json_integer(m->sm_ttl_ms));
    }
    if (!bad)
        s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (s && outlen)
        *outlen = strlen(s);
    return s;
}

char *syncmsg_encode(enum msg_format fmt, const struct syncmsg *m, size_t *outlen)
{
    if (fmt == FMT_JSON)
        return syncmsg_encode_json(m, outlen);
    if (fmt != FMT_KEY || !m || !m->sm_key || m->sm_keylen == 0 || m->sm_keylen > SYNCMSG_KEY_MAX)
        return NULL;
    char *s = malloc(m->sm_keylen + 1);
    if (!s)
        return NULL;
    memcpy(s, m->sm_key, m->sm_keylen);
    s[m->sm_keylen] = '\0';
    if (outlen)
        *outlen = m->sm_keylen;
    return s;
}
