/*
 * Comparison: DUMP payload equality and digests, and every verdict of
 * cmp_judge. No server: cmp_fetch and cmp_deep are covered by
 * tests/integration/test_compare.py.
 */
#include "compare.h"
#include "unit.h"

#include <stdlib.h>

/* A DUMP-shaped payload: body, then a 2-byte version and an 8-byte "CRC". */
static size_t mkdump(char *out, const char *body, size_t blen, unsigned char ver, char crc)
{
    memcpy(out, body, blen);
    out[blen] = (char)ver;
    out[blen + 1] = 0;
    memset(out + blen + 2, crc, 8);
    return blen + 10;
}

/* A present side holding a copy of the payload, with a TTL. */
static struct cmp_side present(const char *dump, size_t len, long long pttl)
{
    struct cmp_side s;
    s.dump = NULL;
    cmp_side_clear(&s);
    s.exists = 1;
    s.pttl = pttl;
    s.mem = 64;
    if (dump) {
        s.dump = malloc(len ? len : 1);
        memcpy(s.dump, dump, len);
        s.dumplen = len;
        s.digest = cmp_dump_digest(dump, len);
    }
    return s;
}

static struct cmp_side absent(void)
{
    struct cmp_side s;
    s.dump = NULL;
    cmp_side_clear(&s);
    s.exists = 0;
    return s;
}

static struct cmp_side unknown(void)
{
    struct cmp_side s;
    s.dump = NULL;
    cmp_side_clear(&s);
    return s;
}

static const struct cmp_opts opts = {
    .ttl_tolerance_ms = 1000, .lag_ms = 500, .missing_is_divergence = 1};

TEST(compare_kind_names)
{
    CHECK_STR(cmp_kind_name(CMP_EQUAL), "equal");
    CHECK_STR(cmp_kind_name(CMP_MISSING), "missing");
    CHECK_STR(cmp_kind_name(CMP_EXTRA), "extra");
    CHECK_STR(cmp_kind_name(CMP_TYPE), "type");
    CHECK_STR(cmp_kind_name(CMP_VALUE), "value");
    CHECK_STR(cmp_kind_name(CMP_TTL), "ttl");
    CHECK_STR(cmp_kind_name(CMP_GONE), "gone");
    CHECK_STR(cmp_kind_name(CMP_SKIPPED), "skipped");
    CHECK_STR(cmp_kind_name(CMP_ERROR), "error");
    CHECK_STR(cmp_kind_name(CMP_KIND_COUNT), "unknown");
    CHECK_STR(cmp_kind_name((enum cmp_kind) - 1), "unknown");
}

TEST(compare_is_divergence)
{
    int n = 0;
    for (int k = 0; k < CMP_KIND_COUNT; k++)
        n += cmp_is_divergence((enum cmp_kind)k) != 0;
    CHECK(n == 5);
    CHECK(cmp_is_divergence(CMP_MISSING) && cmp_is_divergence(CMP_EXTRA));
    CHECK(cmp_is_divergence(CMP_TYPE) && cmp_is_divergence(CMP_VALUE));
    CHECK(cmp_is_divergence(CMP_TTL));
    CHECK(!cmp_is_divergence(CMP_EQUAL) && !cmp_is_divergence(CMP_GONE));
    CHECK(!cmp_is_divergence(CMP_SKIPPED) && !cmp_is_divergence(CMP_ERROR));
}

TEST(compare_dump_equal_ignores_the_trailer)
{
    char a[64], b[64], c[64];
    size_t al = mkdump(a, "\x00\x05hello", 7, 10, 'x');
    size_t bl = mkdump(b, "\x00\x05hello", 7, 11, 'y'); /* other version and CRC */
    size_t cl = mkdump(c, "\x00\x05hellp", 7, 10, 'x'); /* other body, same trailer */

    CHECK(cmp_dump_equal(a, al, b, bl));
    CHECK(cmp_dump_equal(b, bl, a, al));
    CHECK(!cmp_dump_equal(a, al, c, cl));
    /* A body that is a prefix of the other is not equal. */
    size_t dl = mkdump(c, "\x00\x05hell", 6, 10, 'x');
    CHECK(!cmp_dump_equal(a, al, c, dl));
    CHECK(!cmp_dump_equal(a, al, NULL, 0));
    CHECK(!cmp_dump_equal(NULL, 0, NULL, 0));
}

TEST(compare_dump_short_payloads_compare_whole)
{
    /* Shorter than the trailer: not a valid DUMP, compared byte for byte. */
    CHECK(cmp_dump_equal("abc", 3, "abc", 3));
    CHECK(!cmp_dump_equal("abc", 3, "abd", 3));
    CHECK(!cmp_dump_equal("abc", 3, "ab", 2));
    CHECK(cmp_dump_equal("", 0, "", 0));
    CHECK(!cmp_dump_equal("123456789", 9, "123456780", 9));
    /* Exactly a trailer: the body is empty, so any two are equal. */
    CHECK(cmp_dump_equal("0123456789", 10, "abcdefghij", 10));
    /* Digests agree with equality for short payloads too. */
    CHECK(cmp_dump_digest("abc", 3) == cmp_dump_digest("abc", 3));
    CHECK(cmp_dump_digest("abc", 3) != cmp_dump_digest("abd", 3));
    CHECK(cmp_dump_digest("0123456789", 10) == cmp_dump_digest("abcdefghij", 10));
}

TEST(compare_digest_equal_iff_bodies_equal)
{
    char a[64], b[64], c[64];
    size_t al = mkdump(a, "\x02\x03xyz", 5, 10, 'x');
    size_t bl = mkdump(b, "\x02\x03xyz", 5, 9, 'q');
    size_t cl = mkdump(c, "\x02\x03xyZ", 5, 10, 'x');

    CHECK(cmp_dump_digest(a, al) == cmp_dump_digest(b, bl));
    CHECK(cmp_dump_digest(a, al) != cmp_dump_digest(c, cl));
    CHECK(cmp_dump_digest(a, al) != 0); /* 0 means unknown */
    CHECK(cmp_dump_digest(NULL, 0) == 0);
    /* Over many bodies: digest equality follows body equality exactly. */
    for (int i = 0; i < 64; i++) {
        char x[32], y[32], body[16];
        snprintf(body, sizeof(body), "body-%d", i);
        size_t xl = mkdump(x, body, strlen(body), (unsigned char)i, (char)i);
        for (int j = 0; j < 64; j++) {
            char body2[16];
            snprintf(body2, sizeof(body2), "body-%d", j);
            size_t yl = mkdump(y, body2, strlen(body2), 10, 'c');
            int eq = cmp_dump_equal(x, xl, y, yl);
            CHECK(eq == (i == j));
            CHECK((cmp_dump_digest(x, xl) == cmp_dump_digest(y, yl)) == eq);
        }
    }
}

TEST(compare_side_clear_resets)
{
    struct cmp_side s = present("payload-and-trailer", 19, 5);
    s.large = 1;
    strcpy(s.type, "hash");
    cmp_side_clear(&s);
    CHECK(s.dump == NULL && s.dumplen == 0);
    CHECK(s.exists == -1 && s.pttl == -2 && s.mem == -1);
    CHECK(s.digest == 0 && s.large == 0 && s.type[0] == '\0');
    cmp_side_clear(&s); /* twice is harmless */
}

TEST(compare_judge_presence)
{
    char d[64];
    size_t dl = mkdump(d, "v", 1, 10, 'x');
    struct cmp_side p = present(d, dl, -1), r = present(d, dl, -1);
    struct cmp_side no = absent(), unk = unknown();
    int deep = 7;

    CHECK(cmp_judge(&no, &no, &opts, &deep) == CMP_GONE && deep == 0);
    CHECK(cmp_judge(&no, &r, &opts, &deep) == CMP_EXTRA && deep == 0);
    CHECK(cmp_judge(&p, &no, &opts, &deep) == CMP_MISSING && deep == 0);
    CHECK(cmp_judge(&unk, &r, &opts, &deep) == CMP_ERROR && deep == 0);
    CHECK(cmp_judge(&p, &unk, &opts, &deep) == CMP_ERROR);
    CHECK(cmp_judge(&unk, &no, &opts, &deep) == CMP_ERROR);
    CHECK(cmp_judge(&no, &unk, &opts, &deep) == CMP_ERROR);
    CHECK(cmp_judge(&p, &r, &opts, &deep) == CMP_EQUAL && deep == 0);
    CHECK(cmp_judge(&p, &r, &opts, NULL) == CMP_EQUAL); /* needs_deep may be NULL */
    cmp_side_clear(&p);
    cmp_side_clear(&r);
}

TEST(compare_judge_missing_tolerance_and_policy)
{
    char d[64];
    size_t dl = mkdump(d, "v", 1, 10, 'x');
    struct cmp_side no = absent();
    struct cmp_opts lenient = opts;
    int deep;

    lenient.missing_is_divergence = 0;
    long long ttls[] = {-1, 0, 999, 1000, 5000};
    enum cmp_kind want[] = {CMP_MISSING, CMP_EQUAL, CMP_EQUAL, CMP_MISSING, CMP_MISSING};
    for (size_t i = 0; i < sizeof(ttls) / sizeof(ttls[0]); i++) {
        struct cmp_side p = present(d, dl, ttls[i]);
        /* About to expire (pttl below the tolerance) is not missing. */
        CHECK(cmp_judge(&p, &no, &opts, &deep) == want[i]);
        /* missing-is-divergence no: a miss is never a divergence... */
        CHECK(cmp_judge(&p, &no, &lenient, &deep) == CMP_EQUAL);
        /* ...but an extra key still is. */
        CHECK(cmp_judge(&no, &p, &lenient, &deep) == CMP_EXTRA);
        cmp_side_clear(&p);
    }
}

TEST(compare_judge_payloads_need_deep)
{
    char a[64], b[64], c[64];
    size_t al = mkdump(a, "\x04listpack", 9, 10, 'x');
    size_t bl = mkdump(b, "\x04listpack", 9, 11, 'z');   /* other trailer only */
    size_t cl = mkdump(c, "\x0dhashtable", 10, 10, 'x'); /* other encoding */
    struct cmp_side p = present(a, al, -1), r = present(b, bl, -1), q = present(c, cl, -1);
    struct cmp_side nodump = present(NULL, 0, -1), big = present(NULL, 0, -1);
    int deep;

    big.large = 1;
    big.mem = 1 << 30;
    CHECK(cmp_judge(&p, &r, &opts, &deep) == CMP_EQUAL && deep == 0);
    CHECK(cmp_judge(&p, &q, &opts, &deep) == CMP_VALUE && deep == 1);
    /* A large side, or a payload we could not read (DUMP denied), goes deep. */
    CHECK(cmp_judge(&p, &big, &opts, &deep) == CMP_VALUE && deep == 1);
    CHECK(cmp_judge(&big, &big, &opts, &deep) == CMP_VALUE && deep == 1);
    CHECK(cmp_judge(&nodump, &p, &opts, &deep) == CMP_VALUE && deep == 1);
    CHECK(cmp_judge(&p, &nodump, &opts, &deep) == CMP_VALUE && deep == 1);
    /* Types known from the fetch (large keys) and different: no deep look. */
    struct cmp_side big2 = present(NULL, 0, -1);
    big2.large = 1;
    strcpy(big.type, "hash");
    strcpy(big2.type, "set");
    CHECK(cmp_judge(&big, &big2, &opts, &deep) == CMP_TYPE && deep == 0);
    strcpy(big2.type, "hash");
    CHECK(cmp_judge(&big, &big2, &opts, &deep) == CMP_VALUE && deep == 1);
    cmp_side_clear(&p);
    cmp_side_clear(&r);
    cmp_side_clear(&q);
    cmp_side_clear(&nodump);
    cmp_side_clear(&big);
    cmp_side_clear(&big2);
}

/* The verdict for two equal payloads with these TTLs. */
static enum cmp_kind ttl_verdict(long long pt, long long rt, const struct cmp_opts *o)
{
    char d[64];
    size_t dl = mkdump(d, "v", 1, 10, 'x');
    struct cmp_side p = present(d, dl, pt), r = present(d, dl, rt);
    int deep = 7;
    enum cmp_kind k = cmp_judge(&p, &r, o, &deep);
    CHECK(deep == 0);
    /* The TTL rule alone (used after cmp_deep) gives the same verdict. */
    CHECK(cmp_judge_ttl(&p, &r, o) == k);
    cmp_side_clear(&p);
    cmp_side_clear(&r);
    return k;
}

TEST(compare_judge_ttl)
{
    struct cmp_opts nolag = opts;
    nolag.lag_ms = 0;

    CHECK(ttl_verdict(-1, -1, &opts) == CMP_EQUAL);
    /* One side expires, the other never does. */
    CHECK(ttl_verdict(60000, -1, &opts) == CMP_TTL);
    CHECK(ttl_verdict(-1, 60000, &opts) == CMP_TTL);
    /* ...unless the expiring one is within the tolerance of expiring. */
    CHECK(ttl_verdict(999, -1, &opts) == CMP_EQUAL);
    CHECK(ttl_verdict(-1, 999, &opts) == CMP_EQUAL);
    CHECK(ttl_verdict(1000, -1, &opts) == CMP_TTL);
    /* Both expire: the tolerance (1000) plus the lag (500) is allowed. */
    CHECK(ttl_verdict(60000, 60000, &opts) == CMP_EQUAL);
    CHECK(ttl_verdict(60000, 58500, &opts) == CMP_EQUAL);
    CHECK(ttl_verdict(58500, 60000, &opts) == CMP_EQUAL);
    CHECK(ttl_verdict(60000, 58499, &opts) == CMP_TTL);
    CHECK(ttl_verdict(58499, 60000, &opts) == CMP_TTL);
    /* Without lag, only the tolerance. */
    CHECK(ttl_verdict(60000, 58800, &nolag) == CMP_TTL);
    CHECK(ttl_verdict(60000, 59000, &nolag) == CMP_EQUAL);
    /* A negative lag (not measured) counts as none. */
    nolag.lag_ms = -5000;
    CHECK(ttl_verdict(60000, 59000, &nolag) == CMP_EQUAL);
    CHECK(ttl_verdict(60000, 58999, &nolag) == CMP_TTL);
}
