/*
 * API request parsing: repair bodies, divergence queries, bearer tokens.
 * Pure functions only; the handlers are covered by
 * tests/integration/test_api.py.
 */
#include "api.h"
#include "unit.h"

#include <stdlib.h>

/* Parses body (a C string); returns the parser's result, err in err. */
static int body(const char *text, struct api_repair_req *r, char *err, size_t errlen)
{
    return api_parse_repair_body(text, strlen(text), r, err, errlen);
}

TEST(api_repair_body_keys)
{
    struct api_repair_req r;
    char err[256];

    CHECK(body("{\"keys\":[\"a\",\"b:c\"],\"replica\":\"r1\"}", &r, err, sizeof(err)) == 0);
    CHECK(r.nkeys == 2 && !r.all_open);
    CHECK_STR(r.keys[0], "a");
    CHECK(r.lens[1] == 3 && !memcmp(r.keys[1], "b:c", 3));
    CHECK_STR(r.replica, "r1");
    api_repair_req_free(&r);

    /* JSON escapes, a NUL among them, and base64 keys after plain ones. */
    CHECK(body("{\"keys\":[\"x\\u0000y\"],\"keys_base64\":[\"AP8=\",\"\"]}", &r, err,
               sizeof(err)) == 0);
    CHECK(r.nkeys == 3);
    CHECK(r.lens[0] == 3 && !memcmp(r.keys[0], "x\0y", 3));
    CHECK(r.lens[1] == 2 && (unsigned char)r.keys[1][0] == 0 &&
          (unsigned char)r.keys[1][1] == 0xff);
    CHECK(r.lens[2] == 0);
    CHECK_STR(r.replica, "");
    api_repair_req_free(&r);

    CHECK(body("{\"all_open\":true}", &r, err, sizeof(err)) == 0);
    CHECK(r.all_open && r.nkeys == 0);
    api_repair_req_free(&r);
    CHECK(body(" {\"all_open\":true,\"replica\":\"c1\"} ", &r, err, sizeof(err)) == 0);
    CHECK(r.all_open && !strcmp(r.replica, "c1"));
    CHECK(r.db == -1);
    api_repair_req_free(&r);

    /* An optional db; without it every configured db (-1). */
    CHECK(body("{\"keys\":[\"a\"],\"db\":3}", &r, err, sizeof(err)) == 0);
    CHECK(r.db == 3 && r.nkeys == 1);
    api_repair_req_free(&r);
    CHECK(body("{\"all_open\":true,\"db\":0}", &r, err, sizeof(err)) == 0);
    CHECK(r.db == 0 && r.all_open);
    api_repair_req_free(&r);
}

TEST(api_repair_body_errors)
{
    static const struct {
        const char *body, *reason;
    } bad[] = {
        {"", "not valid JSON"},
        {"{", "not valid JSON"},
        {"[\"a\"]", "must be a JSON object"},
        {"{\"keys\":\"a\"}", "field 'keys' must be an array"},
        {"{\"keys\":[1]}", "field 'keys': element 0 is not a string"},
        {"{\"keys_base64\":[\"!!\"]}", "field 'keys_base64': element 0 is not valid base64"},
        {"{\"keys\":[]}", "field 'keys' is empty"},
        {"{\"keys\":[\"a\"],\"replica\":3}", "field 'replica'"},
        {"{\"keys\":[\"a\"],\"replica\":\"\"}", "field 'replica'"},
        {"{\"keys\":[\"a\"],\"all_open\":true}", "not both"},
        {"{\"all_open\":\"yes\"}", "field 'all_open' must be true or false"},
        {"{\"all_open\":false}", "nothing to repair"},
        {"{}", "nothing to repair"},
        {"{\"keys\":[\"a\"],\"key\":\"b\"}", "unknown field 'key'"},
        {"{\"keys\":[\"a\"],\"keys\":[\"b\"]}", "not valid JSON"},
        {"{\"keys\":[\"a\"],\"db\":-1}", "field 'db'"},
        {"{\"keys\":[\"a\"],\"db\":\"3\"}", "field 'db'"},
        {"{\"keys\":[\"a\"],\"db\":1.5}", "field 'db'"},
        {"{\"keys\":[\"a\"],\"db\":100001}", "field 'db'"},
    };
    struct api_repair_req r;
    char err[256];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        int rc = body(bad[i].body, &r, err, sizeof(err));
        CHECK(rc == -1);
        CHECK(r.nkeys == 0 && r.keys == NULL);
        if (!strstr(err, bad[i].reason)) {
            fprintf(stderr, "  body %s: reason \"%s\" lacks \"%s\"\n", bad[i].body, err,
                    bad[i].reason);
            unit_failed_checks++;
        }
    }
}

TEST(api_repair_body_key_limit)
{
    struct api_repair_req r;
    char err[256];
    size_t cap = 16 + (API_MAX_KEYS + 1) * 6;
    char *b = malloc(cap);
    for (int n = API_MAX_KEYS; n <= API_MAX_KEYS + 1; n++) {
        size_t o = (size_t)snprintf(b, cap, "{\"keys\":[");
        for (int i = 0; i < n; i++)
            o += (size_t)snprintf(b + o, cap - o, "%s\"k\"", i ? "," : "");
        snprintf(b + o, cap - o, "]}");
        int rc = body(b, &r, err, sizeof(err));
        CHECK(rc == (n == API_MAX_KEYS ? 0 : -1));
        CHECK(rc == 0 || strstr(err, "at most 1000"));
        api_repair_req_free(&r);
    }
    free(b);
}

TEST(api_divergence_query)
{
    struct api_div_query q;
    char err[256];
    const int64_t now = 1700000000000LL;

    CHECK(api_parse_divergence_query("", now, &q, err, sizeof(err)) == 0);
    CHECK(!q.state[0] && !q.has_key && q.since == 0 && q.limit == 0);
    CHECK(api_parse_divergence_query("state=open&replica=r1&kind=ttl&limit=5&since=1h", now, &q,
                                     err, sizeof(err)) == 0);
    CHECK_STR(q.state, "open");
    CHECK_STR(q.replica, "r1");
    CHECK_STR(q.kind, "ttl");
    CHECK(q.limit == 5 && q.since == now - 3600000);
    CHECK(api_parse_divergence_query("since=1699999999000", now, &q, err, sizeof(err)) == 0);
    CHECK(q.since == 1699999999000LL);
    /* The escaped text form, percent-encoded in the URL. */
    CHECK(api_parse_divergence_query("key=a%5Cx00b%5C%5C", now, &q, err, sizeof(err)) == 0);
    CHECK(q.has_key && q.keylen == 4 && !memcmp(q.key, "a\0b\\", 4));
    /* base64, with '+' sent unescaped (it arrives as a space) or as %2B. */
    CHECK(api_parse_divergence_query("key_base64=+/8=", now, &q, err, sizeof(err)) == 0);
    CHECK(q.has_key && q.keylen == 2 && (unsigned char)q.key[0] == 0xfb);
    CHECK(api_parse_divergence_query("key_base64=%2B%2F8%3D", now, &q, err, sizeof(err)) == 0);
    CHECK(q.keylen == 2 && (unsigned char)q.key[1] == 0xff);
}

TEST(api_divergence_query_errors)
{
    static const struct {
        const char *query, *reason;
    } bad[] = {
        {"state=gone", "parameter 'state'"},
        {"kind=weird", "parameter 'kind'"},
        {"since=yesterday", "parameter 'since'"},
        {"since=-5", "parameter 'since'"},
        {"since=0s", "parameter 'since'"},
        {"limit=0", "parameter 'limit'"},
        {"limit=10001", "parameter 'limit'"},
        {"limit=abc", "parameter 'limit'"},
        {"replica=", "parameter 'replica'"},
        {"key=a%5Cq", "parameter 'key'"},
        {"key_base64=abc", "parameter 'key_base64'"},
        {"key=a&key_base64=YQ==", "not both"},
        {"states=open", "unknown parameter 'states'"},
        {"state=%zz", "malformed"},
        {"replica=a%00b", "NUL"},
    };
    struct api_div_query q;
    char err[256];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        CHECK(api_parse_divergence_query(bad[i].query, 1000000, &q, err, sizeof(err)) == -1);
        if (!strstr(err, bad[i].reason)) {
            fprintf(stderr, "  query %s: reason \"%s\" lacks \"%s\"\n", bad[i].query, err,
                    bad[i].reason);
            unit_failed_checks++;
        }
    }
}

TEST(api_token_compare)
{
    CHECK(api_token_equal("secret", 6, "secret", 6));
    CHECK(!api_token_equal("secret", 6, "secreT", 6));
    CHECK(!api_token_equal("secret", 6, "secret2", 7));
    CHECK(!api_token_equal("secret", 6, "secre", 5));
    CHECK(!api_token_equal("secret", 6, "", 0));
    CHECK(!api_token_equal("", 0, "x", 1));
    /* A prefix repeated must not pass (the comparison wraps over the token). */
    CHECK(!api_token_equal("ab", 2, "abab", 4));

    CHECK(api_check_bearer("Bearer secret", "secret") == 1);
    CHECK(api_check_bearer("bearer   secret  ", "secret") == 1);
    CHECK(api_check_bearer("Bearer wrong", "secret") == 0);
    CHECK(api_check_bearer(NULL, "secret") == -1);
    CHECK(api_check_bearer("Basic c2VjcmV0", "secret") == -1);
    CHECK(api_check_bearer("Bearer", "secret") == -1);
    CHECK(api_check_bearer("Bearer ", "secret") == -1);
    CHECK(api_check_bearer("Bearersecret", "secret") == -1);
}
