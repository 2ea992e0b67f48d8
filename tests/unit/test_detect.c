/*
 * Pure parts of detection: the glob matcher that exclude-pattern uses, and
 * the key encodings shown to users.
 */
#include "detect.h"
#include "textenc.h"
#include "unit.h"

#include <math.h>
#include <stdlib.h>

static int gm(const char *p, const char *s)
{
    return detect_glob_match(p, strlen(p), s, strlen(s));
}

TEST(glob_matches_like_redis)
{
    CHECK(gm("*", ""));
    CHECK(gm("*", "anything"));
    CHECK(gm("user:*", "user:1"));
    CHECK(!gm("user:*", "users:1"));
    CHECK(gm("h?llo", "hello"));
    CHECK(!gm("h?llo", "hllo"));
    CHECK(gm("h[ae]llo", "hallo"));
    CHECK(!gm("h[ae]llo", "hillo"));
    CHECK(gm("h[^e]llo", "hallo"));
    CHECK(!gm("h[^e]llo", "hello"));
    CHECK(gm("h[a-c]llo", "hbllo"));
    CHECK(gm("h[c-a]llo", "hbllo"));
    CHECK(gm("a\\*b", "a*b"));
    CHECK(!gm("a\\*b", "axb"));
    CHECK(gm("*:tmp:*", "x:tmp:y"));
    CHECK(gm("**a", "bba"));
    CHECK(!gm("[abc", "a"));
    CHECK(detect_glob_match("a*", 2, "a\0b", 3));
    CHECK(!detect_glob_match("a?", 2, "a\0b", 3));
}

TEST(text_escape_and_base64)
{
    char *e = text_escape("a\0\n\"\\\xff", 6);
    CHECK_STR(e, "a\\x00\\x0a\"\\\\\\xff");
    char back[16];
    size_t bl;
    CHECK(text_unescape(e, back, sizeof(back), &bl) == 0 && bl == 6 &&
          memcmp(back, "a\0\n\"\\\xff", 6) == 0);
    free(e);
    const char *cases[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    const char *want[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (int i = 0; i < 7; i++) {
        char *b = text_base64(cases[i], strlen(cases[i]));
        CHECK_STR(b, want[i]);
        size_t n = 99;
        char *d = text_unbase64(b, strlen(b), &n);
        CHECK(d && n == strlen(cases[i]) && memcmp(d, cases[i], n) == 0);
        free(d);
        free(b);
    }
    size_t n;
    CHECK(text_unbase64("Zg=", 3, &n) == NULL);
    CHECK(text_unbase64("Z!==", 4, &n) == NULL);
    CHECK(text_unbase64("Zg==Zg==", 8, &n) == NULL);
    char bin[256];
    for (int i = 0; i < 256; i++)
        bin[i] = (char)i;
    char *b = text_base64(bin, 256);
    char *d = text_unbase64(b, strlen(b), &n);
    CHECK(d && n == 256 && memcmp(d, bin, 256) == 0);
    free(b);
    free(d);
}

TEST(wilson_interval)
{
    double p, lo, hi;

    /* 10 of 100: 0.1 in [0.0552, 0.1744] (the textbook figures). */
    detect_wilson(100, 10, &p, &lo, &hi);
    CHECK(fabs(p - 0.1) < 1e-12);
    CHECK(fabs(lo - 0.0552) < 1e-4 && fabs(hi - 0.1744) < 1e-4);
    /* None divergent: the lower bound is 0, the upper one shrinks with n. */
    detect_wilson(10, 0, &p, &lo, &hi);
    CHECK(p == 0 && lo == 0 && fabs(hi - 0.2775) < 1e-4);
    detect_wilson(400, 200, &p, &lo, &hi);
    CHECK(p == 0.5 && fabs(lo - 0.4512) < 1e-4 && fabs(hi - 0.5488) < 1e-4);
    detect_wilson(50, 50, &p, &lo, &hi);
    CHECK(p == 1 && fabs(hi - 1) < 1e-9 && fabs(lo - 0.9287) < 1e-4);
    /* No samples: nothing known. */
    detect_wilson(0, 0, &p, &lo, &hi);
    CHECK(p == 0 && lo == 0 && hi == 1);
}
