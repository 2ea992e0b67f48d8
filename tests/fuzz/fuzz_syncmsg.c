/*
 * libFuzzer harness for the sync-message parser. The first input byte picks
 * the format (even: key, odd: json); the rest is the payload. Every message
 * that parses as json must encode and parse back to the same fields, and the
 * key format must hand back the payload itself.
 */
#include "syncmsg.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int same_bytes(const char *a, size_t an, const char *b, size_t bn)
{
    return an == bn && (an == 0 || memcmp(a, b, an) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct syncmsg m, back;
    char why[SYNCMSG_WHY_MAX];
    enum msg_format fmt;
    size_t n;
    int rc;

    if (size == 0)
        return 0;
    fmt = (data[0] & 1) ? FMT_JSON : FMT_KEY;
    rc = syncmsg_parse(fmt, data + 1, size - 1, &m, why, sizeof(why));
    if (rc == SYNCMSG_MALFORMED && (why[0] == '\0' || strlen(why) >= sizeof(why)))
        abort();
    if (rc != SYNCMSG_OK) {
        syncmsg_free(&m);
        return 0;
    }
    if (m.sm_keylen == 0 || m.sm_keylen > SYNCMSG_KEY_MAX)
        abort();
    if (fmt == FMT_KEY) {
        if (m.sm_op != SYNCMSG_REFRESH || m.sm_key != (const char *)data + 1)
            abort();
        char *s = syncmsg_encode(FMT_KEY, &m, &n);
        if (!s || !same_bytes(s, n, m.sm_key, m.sm_keylen))
            abort();
        free(s);
        return 0;
    }
    if (m.sm_op == SYNCMSG_SET && (m.sm_ttl_ms < 0 || m.sm_ttl_ms > SYNCMSG_TTL_MAX))
        abort();
    char *s = syncmsg_encode_json(&m, &n);
    if (!s)
        abort();
    if (syncmsg_parse(FMT_JSON, s, n, &back, why, sizeof(why)) != SYNCMSG_OK)
        abort();
    if (back.sm_op != m.sm_op || !same_bytes(back.sm_key, back.sm_keylen, m.sm_key, m.sm_keylen))
        abort();
    if (m.sm_op == SYNCMSG_SET &&
        (back.sm_ttl_ms != m.sm_ttl_ms ||
         !same_bytes(back.sm_value, back.sm_valuelen, m.sm_value, m.sm_valuelen)))
        abort();
    free(s);
    syncmsg_free(&back);
    syncmsg_free(&m);
    return 0;
}
