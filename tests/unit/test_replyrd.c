/*
 * The fetch-script and SCAN-page readers (agent/replyrd.c), fed RESP bytes
 * through a hiredis reader: whole, and one byte at a time, since a reply
 * arrives in pieces and the reader keeps its state between them.
 */
#include "replyrd.h"
#include "unit.h"

#include <stdlib.h>
#include <string.h>

/* Feeds a whole reply to a reader built on fns; 0 when it read one. */
static int feed(redisReplyObjectFunctions *fns, void *pd, const char *buf, size_t len, int bytewise)
{
    redisReader *r = redisReaderCreateWithFunctions(fns);
    void *reply = NULL;
    int rc = -1;

    r->privdata = pd;
    for (size_t at = 0; at < len;) {
        size_t n = bytewise ? 1 : len - at;
        if (redisReaderFeed(r, buf + at, n) != REDIS_OK)
            break;
        at += n;
        if (redisReaderGetReply(r, &reply) != REDIS_OK)
            break;
        if (reply) {
            rc = at == len ? 0 : -1;
            break;
        }
    }
    redisReaderFree(r);
    return rc;
}

static void clear_all(struct cmp_side *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        s[i].dump = NULL;
        cmp_side_clear(&s[i]);
    }
}

/* Three keys: present and small, absent, present and above max (1000). */
static const char three[] = "*9\r\n"
                            ":1500\r\n:80\r\n$12\r\n\x00\x03"
                            "abc\x0a\x00"
                            "crc88\r\n"
                            ":-2\r\n:-1\r\n$0\r\n\r\n"
                            ":-1\r\n:5000\r\n$4\r\nhash\r\n";

TEST(fetch_reader_fills_sides_whole_or_in_pieces)
{
    for (int bytewise = 0; bytewise < 2; bytewise++) {
        struct cmp_side s[3];
        unsigned calls = 99;
        clear_all(s, 3);
        struct fetch_rd rd = {.out = s, .n = 3, .max = 1000};
        CHECK(feed(&fetch_rd_fns, &rd, three, sizeof(three) - 1, bytewise) == 0);
        CHECK(fetch_rd_finish(&rd, &calls) == 3);
        CHECK(calls == 7); /* 3 + 1 + 3 */
        CHECK(s[0].exists == 1 && s[0].pttl == 1500 && s[0].mem == 80 && !s[0].large);
        CHECK(s[0].dump && s[0].dumplen == 12 &&
              memcmp(s[0].dump,
                     "\x00\x03"
                     "abc",
                     5) == 0);
        CHECK(s[0].digest == cmp_dump_digest(s[0].dump, s[0].dumplen) && s[0].digest != 0);
        CHECK(s[1].exists == 0 && s[1].pttl == -2 && !s[1].dump);
        CHECK(s[2].exists == 1 && s[2].large && !s[2].dump && s[2].pttl == -1);
        CHECK_STR(s[2].type, "hash");
        for (int i = 0; i < 3; i++)
            cmp_side_clear(&s[i]);
    }
}

TEST(fetch_reader_takes_a_short_reply_and_drops_without_out)
{
    struct cmp_side s[4];
    unsigned calls;
    clear_all(s, 4);
    /* The byte bound stopped the script after one key of four. */
    const char one[] = "*3\r\n:-1\r\n:60\r\n$11\r\n\x00\x01xyzw-trail\r\n";
    struct fetch_rd rd = {.out = s, .n = 4, .max = 0};
    CHECK(feed(&fetch_rd_fns, &rd, one, sizeof(one) - 1, 0) == 0);
    CHECK(fetch_rd_finish(&rd, &calls) == 1 && calls == 3);
    CHECK(s[0].exists == 1 && s[0].dumplen == 11 && !s[0].large);
    CHECK(s[1].exists == -1 && !s[1].dump);
    cmp_side_clear(&s[0]);

    struct fetch_rd drop = {.out = NULL, .n = 3, .max = 1000};
    CHECK(feed(&fetch_rd_fns, &drop, three, sizeof(three) - 1, 1) == 0);
    CHECK(fetch_rd_finish(&drop, &calls) == 3 && calls == 0);
}

TEST(fetch_reader_refuses_what_is_not_an_answer)
{
    static const struct {
        const char *resp;
        size_t n;
        const char *err;
    } bad[] = {
        {"-NOPERM this user has no permissions to run the 'eval' command\r\n", 2,
         "NOPERM this user"},
        {"*0\r\n", 2, ""},
        {"*4\r\n:1\r\n:2\r\n$1\r\nx\r\n:4\r\n", 2, ""},                  /* not 3 per key */
        {"*6\r\n:1\r\n:2\r\n$1\r\nx\r\n:1\r\n:2\r\n$1\r\ny\r\n", 1, ""}, /* more keys than asked */
        {"*3\r\n$1\r\n1\r\n:2\r\n$1\r\nx\r\n", 1, ""},                   /* PTTL not an integer */
        {"*3\r\n:1\r\n:2\r\n:3\r\n", 1, ""},                             /* value an integer */
        {"*3\r\n:1\r\n:2\r\n*1\r\n$1\r\nx\r\n", 1, ""},                  /* nested array */
        {"*3\r\n:1\r\n:2\r\n$-1\r\n", 1, ""},                            /* nil */
        {"*3\r\n:1\r\n:2\r\n+OK\r\n", 1, ""},                            /* status, not bulk */
        /* a good first key, then a bad item: the first key's payload is let go */
        {"*6\r\n:1\r\n:2\r\n$3\r\nabc\r\n:1\r\n:2\r\n:3\r\n", 2, ""},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct cmp_side s[2];
        unsigned calls;
        clear_all(s, 2);
        struct fetch_rd rd = {.out = s, .n = bad[i].n, .max = 100};
        CHECK(feed(&fetch_rd_fns, &rd, bad[i].resp, strlen(bad[i].resp), (int)(i % 2)) == 0);
        CHECK(fetch_rd_finish(&rd, &calls) == 0);
        CHECK(strncmp(rd.err, bad[i].err, strlen(bad[i].err)) == 0);
        CHECK(s[0].exists == -1 && !s[0].dump && s[1].exists == -1 && !s[1].dump);
    }
}

TEST(scan_reader_reads_cursor_and_binary_keys)
{
    const char page[] = "*2\r\n$5\r\n12345\r\n*3\r\n$1\r\na\r\n$0\r\n\r\n$3\r\nb\x00"
                        "c\r\n";
    const char last[] = "*2\r\n$1\r\n0\r\n*1\r\n$2\r\nzz\r\n";
    struct scan_pg pg;
    memset(&pg, 0, sizeof(pg));
    for (int bytewise = 0; bytewise < 2; bytewise++) {
        scan_pg_begin(&pg);
        CHECK(feed(&scan_pg_fns, &pg, page, sizeof(page) - 1, bytewise) == 0);
        CHECK(scan_pg_end(&pg) == 0);
        CHECK(pg.cursor == 12345 && pg.n == 3);
        CHECK(pg.len[0] == 1 && memcmp(pg.key[0], "a", 1) == 0);
        CHECK(pg.len[1] == 0);
        CHECK(pg.len[2] == 3 && memcmp(pg.key[2],
                                       "b\x00"
                                       "c",
                                       3) == 0);
        /* The next page reuses the buffer. */
        scan_pg_begin(&pg);
        CHECK(feed(&scan_pg_fns, &pg, last, sizeof(last) - 1, bytewise) == 0);
        CHECK(scan_pg_end(&pg) == 0);
        CHECK(pg.cursor == 0 && pg.n == 1 && pg.len[0] == 2 && memcmp(pg.key[0], "zz", 2) == 0);
    }
    scan_pg_free(&pg);
}

TEST(scan_reader_grows_for_a_large_page)
{
    enum { N = 5000, KL = 100 };
    size_t cap = 64 + (size_t)N * (KL + 16);
    char *buf = malloc(cap), *p = buf, key[KL];
    struct scan_pg pg;
    int ok = 1;

    p += sprintf(p, "*2\r\n$2\r\n77\r\n*%d\r\n", N);
    for (int i = 0; i < N; i++) {
        memset(key, 'a' + i % 26, KL);
        p += sprintf(p, "$%d\r\n", KL);
        memcpy(p, key, KL);
        p += KL;
        p += sprintf(p, "\r\n");
    }
    memset(&pg, 0, sizeof(pg));
    scan_pg_begin(&pg);
    CHECK(feed(&scan_pg_fns, &pg, buf, (size_t)(p - buf), 0) == 0);
    CHECK(scan_pg_end(&pg) == 0);
    CHECK(pg.cursor == 77 && pg.n == N);
    for (size_t i = 0; i < pg.n; i++)
        ok &= pg.len[i] == KL && pg.key[i][0] == 'a' + (int)(i % 26) &&
              pg.key[i][KL - 1] == 'a' + (int)(i % 26);
    CHECK(ok);
    scan_pg_free(&pg);
    free(buf);
}

TEST(scan_reader_refuses_what_is_not_a_page)
{
    static const char *const bad[] = {
        "-NOPERM this user has no permissions to run the 'scan' command\r\n",
        "*2\r\n$3\r\nx12\r\n*0\r\n",                    /* cursor not a number */
        "*2\r\n$0\r\n\r\n*0\r\n",                       /* empty cursor */
        "*2\r\n$21\r\n999999999999999999999\r\n*0\r\n", /* cursor out of range */
        "*3\r\n$1\r\n0\r\n*0\r\n$1\r\nx\r\n",           /* three items */
        "*2\r\n*0\r\n$1\r\n0\r\n",                      /* swapped */
        "*2\r\n$1\r\n0\r\n*1\r\n:5\r\n",                /* a key that is a number */
        "*2\r\n$1\r\n0\r\n*1\r\n*0\r\n",                /* a key that is an array */
        "*1\r\n$1\r\n0\r\n",                            /* no keys */
        ":0\r\n",
    };
    struct scan_pg pg;
    memset(&pg, 0, sizeof(pg));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        scan_pg_begin(&pg);
        CHECK(feed(&scan_pg_fns, &pg, bad[i], strlen(bad[i]), (int)(i % 2)) == 0);
        CHECK(scan_pg_end(&pg) == -1 && pg.n == 0);
    }
    CHECK(strncmp(pg.err, "", 1) == 0); /* the last was no error reply */
    scan_pg_begin(&pg);
    CHECK(feed(&scan_pg_fns, &pg, bad[0], strlen(bad[0]), 0) == 0);
    CHECK(scan_pg_end(&pg) == -1 && strncmp(pg.err, "NOPERM this user", 16) == 0);
    /* An empty page is a page. */
    scan_pg_begin(&pg);
    CHECK(feed(&scan_pg_fns, &pg, "*2\r\n$2\r\n42\r\n*0\r\n", 17, 0) == 0);
    CHECK(scan_pg_end(&pg) == 0 && pg.n == 0 && pg.cursor == 42);
    scan_pg_free(&pg);
}
