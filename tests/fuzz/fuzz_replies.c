/*
 * libFuzzer harness for the reply readers (agent/replyrd.c): arbitrary bytes
 * as the fetch script's reply or as a SCAN page, fed in two pieces so the
 * reader's state between reads is exercised. The first byte picks the
 * reader and the keys asked for, the second max-value-bytes. The checks
 * below flag results that break the documented contract; AddressSanitizer
 * flags a payload kept by a side and not let go.
 */
#include "replyrd.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NKEYS 8

static int feed(redisReader *r, const uint8_t *data, size_t size, size_t split, void **reply)
{
    if (redisReaderFeed(r, (const char *)data, split) != REDIS_OK ||
        redisReaderGetReply(r, reply) != REDIS_OK)
        return -1;
    if (*reply)
        return 0;
    if (redisReaderFeed(r, (const char *)data + split, size - split) != REDIS_OK ||
        redisReaderGetReply(r, reply) != REDIS_OK)
        return -1;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cmp_side s[NKEYS];
    struct scan_pg pg;
    void *reply = NULL;
    volatile unsigned char sink = 0;

    if (size < 2)
        return 0;
    int scan = data[0] & 1;
    size_t n = (size_t)(data[0] >> 1) % NKEYS + 1;
    long long max = data[1] % 4 == 0 ? 0 : (long long)data[1] * 4;
    data += 2;
    size -= 2;

    memset(&pg, 0, sizeof(pg));
    for (size_t i = 0; i < NKEYS; i++) {
        s[i].dump = NULL;
        cmp_side_clear(&s[i]);
    }
    struct fetch_rd rd = {.out = s, .n = n, .max = max};
    redisReader *r = redisReaderCreateWithFunctions(scan ? &scan_pg_fns : &fetch_rd_fns);
    if (!r)
        return 0;
    r->privdata = scan ? (void *)&pg : (void *)&rd;
    if (scan)
        scan_pg_begin(&pg);
    int ok = feed(r, data, size, size / 2, &reply) == 0 && reply;

    if (scan) {
        if (ok && scan_pg_end(&pg) == 0) {
            if (pg.n > pg.ncap)
                abort();
            for (size_t i = 0; i < pg.n; i++) {
                if (pg.key[i] < pg.buf || pg.key[i] + pg.len[i] > pg.buf + pg.used)
                    abort();
                for (size_t k = 0; k < pg.len[i]; k++)
                    sink ^= (unsigned char)pg.key[i][k];
            }
        }
        if (!memchr(pg.err, '\0', sizeof(pg.err)))
            abort();
        scan_pg_free(&pg);
    } else {
        if (ok) {
            unsigned calls;
            size_t m = fetch_rd_finish(&rd, &calls);
            if (m > n || calls > 3 * m)
                abort();
            for (size_t i = 0; i < m; i++) {
                if (s[i].exists != 0 && s[i].exists != 1)
                    abort();
                if (s[i].dump && (!s[i].exists || s[i].large || !s[i].digest))
                    abort();
                if (s[i].large && (max <= 0 || s[i].mem <= max))
                    abort();
                for (size_t k = 0; s[i].dump && k < s[i].dumplen; k++)
                    sink ^= (unsigned char)s[i].dump[k];
            }
            for (size_t i = m; i < NKEYS; i++)
                if (s[i].dump || s[i].exists != -1)
                    abort();
        }
        if (!memchr(rd.err, '\0', sizeof(rd.err)))
            abort();
        for (size_t i = 0; i < NKEYS; i++)
            cmp_side_clear(&s[i]);
    }
    redisReaderFree(r);
    (void)sink;
    return 0;
}
