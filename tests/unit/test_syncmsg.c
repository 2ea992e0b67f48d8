/*
 * Sync-message parser and encoder: every kind of malformed message, valid
 * messages in both formats (binary keys, UTF-8, big TTLs), base64 and the
 * encode/parse round trip.
 */
#include "syncmsg.h"
#include "unit.h"

#include <stdlib.h>

/* Parses a NUL-terminated json text; returns the code, the reason in why. */
static int pj(const char *text, struct syncmsg *m, char *why)
{
    return syncmsg_parse(FMT_JSON, text, strlen(text), m, why, SYNCMSG_WHY_MAX);
}

/* Expects text to be malformed with a reason that starts with reason. */
static int malformed_as(const char *text, const char *reason)
{
    struct syncmsg m;
    char why[SYNCMSG_WHY_MAX];
    int rc = pj(text, &m, why);
    int ok = rc == SYNCMSG_MALFORMED && !strncmp(why, reason, strlen(reason)) && !m.sm_mem;
    if (!ok)
        fprintf(stderr, "  %s: rc %d why '%s', want '%s'\n", text, rc, why, reason);
    syncmsg_free(&m);
    return ok;
}

static int bytes_eq(const char *p, size_t n, const char *q, size_t qn)
{
    return n == qn && (n == 0 || memcmp(p, q, n) == 0);
}

TEST(syncmsg_key_format)
{
    struct syncmsg m;
    char why[SYNCMSG_WHY_MAX];
    const char bin[] = {'a', '\0', 'b', '\n', ' ', (char)0xff};

    CHECK(syncmsg_parse(FMT_KEY, "user:1", 6, &m, why, sizeof(why)) == SYNCMSG_OK);
    CHECK(m.sm_op == SYNCMSG_REFRESH);
    CHECK(bytes_eq(m.sm_key, m.sm_keylen, "user:1", 6));
    CHECK(m.sm_mem == NULL);
    syncmsg_free(&m);

    CHECK(syncmsg_parse(FMT_KEY, bin, sizeof(bin), &m, why, sizeof(why)) == SYNCMSG_OK);
    CHECK(m.sm_key == bin && m.sm_keylen == sizeof(bin));
    syncmsg_free(&m);

    /* JSON-looking text is just a key name in the key format. */
    CHECK(syncmsg_parse(FMT_KEY, "{\"op\":1}", 8, &m, why, sizeof(why)) == SYNCMSG_OK);
    syncmsg_free(&m);

    CHECK(syncmsg_parse(FMT_KEY, "", 0, &m, why, sizeof(why)) == SYNCMSG_MALFORMED);
    CHECK_STR(why, "empty payload");

    char *big = calloc(1, SYNCMSG_KEY_MAX + 1);
    CHECK(syncmsg_parse(FMT_KEY, big, SYNCMSG_KEY_MAX, &m, why, sizeof(why)) == SYNCMSG_OK);
    CHECK(syncmsg_parse(FMT_KEY, big, SYNCMSG_KEY_MAX + 1, &m, why, sizeof(why)) ==
          SYNCMSG_MALFORMED);
    CHECK_STR(why, "key longer than 1 MiB");
    free(big);
}

TEST(syncmsg_json_valid)
{
    struct syncmsg m;
    char why[SYNCMSG_WHY_MAX];

    CHECK(pj("{\"op\":\"set\",\"key\":\"k\",\"value\":\"v\"}", &m, why) == SYNCMSG_OK);
    CHECK(m.sm_op == SYNCMSG_SET);
    CHECK(bytes_eq(m.sm_key, m.sm_keylen, "k", 1));
    CHECK(bytes_eq(m.sm_value, m.sm_valuelen, "v", 1));
    CHECK(m.sm_ttl_ms == 0);
    syncmsg_free(&m);
    CHECK(m.sm_mem == NULL && m.sm_key == NULL);

    CHECK(pj(" {\"ttl_ms\":1500, \"value\":\"\", \"key\":\"k\", \"op\":\"set\"}\n", &m, why) ==
          SYNCMSG_OK);
    CHECK(m.sm_ttl_ms == 1500 && m.sm_valuelen == 0 && m.sm_value != NULL);
    syncmsg_free(&m);

    CHECK(pj("{\"op\":\"set\",\"key\":\"k\",\"value\":\"v\",\"ttl_ms\":9007199254740991}", &m,
             why) == SYNCMSG_OK);
    CHECK(m.sm_ttl_ms == SYNCMSG_TTL_MAX);
    syncmsg_free(&m);

    CHECK(pj("{\"op\":\"del\",\"key\":\"gone\"}", &m, why) == SYNCMSG_OK);
    CHECK(m.sm_op == SYNCMSG_DEL && m.sm_value == NULL);
    CHECK(bytes_eq(m.sm_key, m.sm_keylen, "gone", 4));
    syncmsg_free(&m);

    /* UTF-8, escapes, \u0000 inside a key, unknown fields ignored. */
    CHECK(pj("{\"op\":\"set\",\"key\":\"caf\\u00e9 \xe2\x82\xac\\u0000x\",\"value\":\"a\\nb\","
             "\"source\":\"app-7\"}",
             &m, why) == SYNCMSG_OK);
    CHECK(bytes_eq(m.sm_key, m.sm_keylen, "caf\xc3\xa9 \xe2\x82\xac\0x", 11));
    CHECK(bytes_eq(m.sm_value, m.sm_valuelen, "a\nb", 3));
    syncmsg_free(&m);

    /* Binary key and value in base64: "\x00\xff k" and "\x01\x02". */
    CHECK(pj("{\"op\":\"set\",\"key_b64\":\"AP8gaw==\",\"value_b64\":\"AQI\"}", &m, why) ==
          SYNCMSG_OK);
    CHECK(bytes_eq(m.sm_key, m.sm_keylen, "\0\xff k", 4));
    CHECK(bytes_eq(m.sm_value, m.sm_valuelen, "\x01\x02", 2));
    syncmsg_free(&m);
}

TEST(syncmsg_json_malformed)
{
    CHECK(malformed_as("", "empty payload"));
    CHECK(malformed_as("{", "bad JSON"));
    CHECK(malformed_as("{\"op\":\"del\",\"key\":\"k\"} x", "bad JSON"));
    CHECK(malformed_as("{\"op\":\"del\",\"key\":\"k\",\"key\":\"j\"}", "bad JSON"));
    CHECK(malformed_as("{\"op\":\"set\",\"key\":\"\xff\",\"value\":\"v\"}", "bad JSON"));
    CHECK(malformed_as("{\"op\":\"set\",\"key\":\"k\",\"value\":\"v\",\"ttl_ms\":"
                       "99999999999999999999999}",
                       "bad JSON"));
    CHECK(malformed_as("[\"set\",\"k\"]", "not a JSON object"));
    CHECK(malformed_as("\"k\"", "not a JSON object"));
    CHECK(malformed_as("{\"key\":\"k\"}", "missing op"));
    CHECK(malformed_as("{\"op\":1,\"key\":\"k\"}", "op is not a string"));
    CHECK(malformed_as("{\"op\":\"SET\",\"key\":\"k\",\"value\":\"v\"}", "unknown op"));
    CHECK(malformed_as("{\"op\":\"incr\",\"key\":\"k\"}", "unknown op"));
    CHECK(malformed_as("{\"op\":\"set\\u0000\",\"key\":\"k\",\"value\":\"v\"}", "unknown op"));
    CHECK(malformed_as("{\"op\":\"del\"}", "missing key"));
    CHECK(malformed_as("{\"op\":\"del\",\"key\":null}", "key is not a string"));
    CHECK(malformed_as("{\"op\":\"del\",\"key\":7}", "key is not a string"));
    CHECK(malformed_as("{\"op\":\"del\",\"key\":\"\"}", "empty key"));
    CHECK(malformed_as("{\"op\":\"del\",\"key_b64\":\"\"}", "empty key"));
    CHECK(malformed_as("{\"op\":\"del\",\"key_b64\":\"a!==\"}", "key_b64 is not base64"));
    CHECK(malformed_as("{\"op\":\"del\",\"key_b64\":3}", "key_b64 is not a string"));
    CHECK(malformed_as("{\"op\":\"del\",\"key\":\"k\",\"key_b64\":\"aw==\"}",
                       "both key and key_b64"));
    CHECK(malformed_as("{\"op\":\"set\",\"key\":\"k\"}", "missing value"));
    CHECK(malformed_as("{\"op\":\"set\",\"key\":\"k\",\"value\":5}", "value is not a string"));
    CHECK(malformed_as("{\"op\":\"set\",\"key\":\"k\",\"value\":{\"a\":1}}",
                       "value is not a string"));
    CHECK(malformed_as("{\"op\":\"set\",\"key\":\"k\",\"value\":\"v\",\"value_b64\":\"dg==\"}",
                       "both value and value_b64"));
    CHECK(malformed_as("{\"op\":\"set\",\"key\":\"k\",\"value_b64\":\"d\"}",
                       "value_b64 is not base64"));
    CHECK(malformed_as("{\"op\":\"set\",\"key\":\"k\",\"value\":\"v\",\"ttl_ms\":0}",
                       "ttl_ms is not a positive integer"));
    CHECK(malformed_as("{\"op\":\"set\",\"key\":\"k\",\"value\":\"v\",\"ttl_ms\":-5}",
                       "ttl_ms is not a positive integer"));
    CHECK(malformed_as("{\"op\":\"set\",\"key\":\"k\",\"value\":\"v\",\"ttl_ms\":1.5}",
                       "ttl_ms is not a positive integer"));
    CHECK(malformed_as("{\"op\":\"set\",\"key\":\"k\",\"value\":\"v\",\"ttl_ms\":\"100\"}",
                       "ttl_ms is not a positive integer"));
    CHECK(malformed_as("{\"op\":\"set\",\"key\":\"k\",\"value\":\"v\",\"ttl_ms\":"
                       "9007199254740992}",
                       "ttl_ms too large"));
    CHECK(malformed_as("{\"op\":\"del\",\"key\":\"k\",\"value\":\"v\"}", "op del takes no value"));
    CHECK(malformed_as("{\"op\":\"del\",\"key\":\"k\",\"ttl_ms\":5}", "op del takes no ttl_ms"));

    /* A short reason buffer truncates, never overflows. */
    struct syncmsg m;
    char small[8];
    CHECK(syncmsg_parse(FMT_JSON, "{", 1, &m, small, sizeof(small)) == SYNCMSG_MALFORMED);
    CHECK(strlen(small) == 7);
}

TEST(syncmsg_base64)
{
    char enc[64];
    unsigned char dec[64];
    static const char *const vec[][2] = {{"", ""},
                                         {"f", "Zg=="},
                                         {"fo", "Zm8="},
                                         {"foo", "Zm9v"},
                                         {"foob", "Zm9vYg=="},
                                         {"fooba", "Zm9vYmE="},
                                         {"foobar", "Zm9vYmFy"}};

    for (size_t i = 0; i < sizeof(vec) / sizeof(vec[0]); i++) {
        size_t n = strlen(vec[i][0]);
        CHECK(syncmsg_b64_encoded_size(n) == strlen(vec[i][1]) + 1);
        CHECK(syncmsg_b64_encode(enc, vec[i][0], n) == strlen(vec[i][1]));
        CHECK_STR(enc, vec[i][1]);
        CHECK(syncmsg_b64_decode(dec, vec[i][1], strlen(vec[i][1])) == (long)n);
        CHECK(memcmp(dec, vec[i][0], n) == 0);
    }
    CHECK(syncmsg_b64_decode(dec, "Zm8", 3) == 2);    /* padding optional */
    CHECK(syncmsg_b64_decode(dec, "Zm9=", 4) == -1);  /* non-zero unused bits */
    CHECK(syncmsg_b64_decode(dec, "Z", 1) == -1);     /* impossible length */
    CHECK(syncmsg_b64_decode(dec, "Zm8==", 5) == -1); /* too much padding */
    CHECK(syncmsg_b64_decode(dec, "Zm 8", 4) == -1);  /* whitespace */
    CHECK(syncmsg_b64_decode(dec, "Z=m8", 4) == -1);  /* padding in the middle */
    CHECK(syncmsg_b64_decode(dec, "-_8=", 4) == -1);  /* url-safe alphabet */
}

/* Encodes m, parses it back, and checks the fields survive. */
static int round_trips(const struct syncmsg *in, const char *expect_json)
{
    struct syncmsg out;
    char why[SYNCMSG_WHY_MAX];
    size_t n = 0;
    char *s = syncmsg_encode_json(in, &n);
    int ok = s != NULL && strlen(s) == n;

    if (ok && expect_json && strcmp(s, expect_json) != 0) {
        fprintf(stderr, "  encoded %s, want %s\n", s, expect_json);
        ok = 0;
    }
    if (ok && syncmsg_parse(FMT_JSON, s, n, &out, why, sizeof(why)) == SYNCMSG_OK) {
        ok = out.sm_op == in->sm_op &&
             bytes_eq(out.sm_key, out.sm_keylen, in->sm_key, in->sm_keylen);
        if (in->sm_op == SYNCMSG_SET)
            ok = ok && out.sm_ttl_ms == in->sm_ttl_ms &&
                 bytes_eq(out.sm_value, out.sm_valuelen, in->sm_value, in->sm_valuelen);
        syncmsg_free(&out);
    } else {
        ok = 0;
    }
    free(s);
    return ok;
}

TEST(syncmsg_encode)
{
    struct syncmsg m = {.sm_op = SYNCMSG_SET,
                        .sm_key = "k",
                        .sm_keylen = 1,
                        .sm_value = "v",
                        .sm_valuelen = 1,
                        .sm_ttl_ms = 2500};
    CHECK(round_trips(&m, "{\"op\":\"set\",\"key\":\"k\",\"value\":\"v\",\"ttl_ms\":2500}"));

    m = (struct syncmsg){.sm_op = SYNCMSG_DEL, .sm_key = "a\"b", .sm_keylen = 3};
    CHECK(round_trips(&m, "{\"op\":\"del\",\"key\":\"a\\\"b\"}"));

    /* NUL and invalid UTF-8 go to base64; valid UTF-8 stays readable. */
    m = (struct syncmsg){.sm_op = SYNCMSG_SET,
                         .sm_key = "a\0b",
                         .sm_keylen = 3,
                         .sm_value = "\xff\xfe",
                         .sm_valuelen = 2};
    CHECK(round_trips(&m, "{\"op\":\"set\",\"key_b64\":\"YQBi\",\"value_b64\":\"//4=\"}"));
    m = (struct syncmsg){.sm_op = SYNCMSG_SET,
                         .sm_key = "\xc3\xa9",
                         .sm_keylen = 2,
                         .sm_value = "",
                         .sm_valuelen = 0,
                         .sm_ttl_ms = SYNCMSG_TTL_MAX};
    CHECK(round_trips(&m, NULL));

    /* Not encodable: REFRESH in json, empty key, negative TTL. */
    m = (struct syncmsg){.sm_op = SYNCMSG_REFRESH, .sm_key = "k", .sm_keylen = 1};
    CHECK(syncmsg_encode_json(&m, NULL) == NULL);
    m = (struct syncmsg){.sm_op = SYNCMSG_DEL, .sm_key = "", .sm_keylen = 0};
    CHECK(syncmsg_encode_json(&m, NULL) == NULL);
    m = (struct syncmsg){.sm_op = SYNCMSG_SET, .sm_key = "k", .sm_keylen = 1, .sm_ttl_ms = -1};
    CHECK(syncmsg_encode_json(&m, NULL) == NULL);

    /* The key format is the raw key. */
    size_t n;
    m = (struct syncmsg){.sm_op = SYNCMSG_REFRESH, .sm_key = "x\0y", .sm_keylen = 3};
    char *s = syncmsg_encode(FMT_KEY, &m, &n);
    CHECK(s && n == 3 && !memcmp(s, "x\0y", 3));
    free(s);
    m.sm_keylen = 0;
    CHECK(syncmsg_encode(FMT_KEY, &m, &n) == NULL);
}
