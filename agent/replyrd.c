/*
 * replyrd -- readers for the fetch script's replies and SCAN pages. See
 * replyrd.h.
 */
#include "replyrd.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PG_KEEP  (1u << 20) /* a page buffer larger than this is not kept */
#define PG_NKEEP 65536      /* nor room for more keys than this */

/* The reader's state: the root task's privdata. */
static void *root_pd(const redisReadTask *t)
{
    while (t->parent)
        t = t->parent;
    return t->privdata;
}

/* Depth of a task: 0 for the reply itself, 1 for its items, ... */
static int depth(const redisReadTask *t)
{
    int d = 0;
    while (t->parent) {
        t = t->parent;
        d++;
    }
    return d;
}

/* ------------------------------------------------------------ fetch */

/* Which item of its key t is (0 PTTL, 1 size, 2 value), -1 if t is no key's item. */
static int fetch_item(const redisReadTask *t, const struct fetch_rd *rd)
{
    if (depth(t) != 1 || rd->bad || (size_t)t->idx >= rd->items)
        return -1;
    return t->idx % 3;
}

static void *fetch_array(const redisReadTask *t, int n)
{
    struct fetch_rd *rd = root_pd(t);
    if (t->parent || n <= 0 || n % 3 || (size_t)n / 3 > rd->n)
        rd->bad = 1;
    else
        rd->items = (size_t)n;
    return rd;
}

static void *fetch_integer(const redisReadTask *t, long long v)
{
    struct fetch_rd *rd = root_pd(t);
    int item = fetch_item(t, rd);
    if (item < 0 || item == 2)
        rd->bad = 1;
    else if (rd->out && item == 0)
        rd->out[t->idx / 3].pttl = v;
    else if (rd->out)
        rd->out[t->idx / 3].mem = v;
    return rd;
}

static void *fetch_string(const redisReadTask *t, char *str, size_t len)
{
    struct fetch_rd *rd = root_pd(t);
    struct cmp_side *s;

    if (!t->parent && t->type == REDIS_REPLY_ERROR)
        snprintf(rd->err, sizeof(rd->err), "%.*s", (int)(len < 199 ? len : 199), str);
    if (fetch_item(t, rd) != 2 || t->type != REDIS_REPLY_STRING) {
        rd->bad = 1;
        return rd;
    }
    if (!rd->out)
        return rd;
    s = &rd->out[t->idx / 3];
    if (s->pttl == -2)
        return rd; /* absent */
    if (rd->max > 0 && s->mem > rd->max) {
        size_t k = len < sizeof(s->type) - 1 ? len : sizeof(s->type) - 1;
        memcpy(s->type, str, k);
        s->type[k] = '\0';
        return rd;
    }
    s->dump = malloc(len ? len : 1); /* NULL: the payload stays unknown */
    if (s->dump) {
        memcpy(s->dump, str, len);
        s->dumplen = len;
        s->digest = cmp_dump_digest(s->dump, len);
    }
    return rd;
}

static void *fetch_nil(const redisReadTask *t)
{
    struct fetch_rd *rd = root_pd(t);
    rd->bad = 1;
    return rd;
}

/* Nothing is allocated for the reply itself: the payloads are the sides'. */
static void no_free(void *obj)
{
    (void)obj;
}

redisReplyObjectFunctions fetch_rd_fns = {fetch_string, fetch_array, fetch_integer, fetch_nil,
                                          no_free};

size_t fetch_rd_finish(struct fetch_rd *rd, unsigned *calls)
{
    size_t m = rd->items / 3;

    *calls = 0;
    if (!rd->out)
        return rd->bad ? 0 : m;
    if (rd->bad || m == 0) {
        for (size_t i = 0; i < rd->n; i++)
            cmp_side_clear(&rd->out[i]);
        return 0;
    }
    for (size_t i = 0; i < m; i++) {
        struct cmp_side *s = &rd->out[i];
        (*calls)++;
        if (s->pttl == -2) {
            s->exists = 0;
            s->mem = -1;
            continue;
        }
        *calls += 2;
        s->exists = 1;
        s->large = rd->max > 0 && s->mem > rd->max;
    }
    return m;
}

/* ------------------------------------------------------------ SCAN */

static void *pg_array(const redisReadTask *t, int n)
{
    struct scan_pg *pg = root_pd(t);
    int d = depth(t);

    if (d == 0) {
        if (n != 2)
            pg->bad = 1;
    } else if (d == 1 && t->idx == 1 && n >= 0 && !pg->bad) {
        pg->parts |= 2;
        if ((size_t)n > pg->ncap) {
            size_t *off = realloc(pg->off, (size_t)n * sizeof(*off));
            size_t *len = off ? realloc(pg->len, (size_t)n * sizeof(*len)) : NULL;
            const char **key = len ? realloc(pg->key, (size_t)n * sizeof(*key)) : NULL;
            if (off)
                pg->off = off;
            if (len)
                pg->len = len;
            if (key) {
                pg->key = key;
                pg->ncap = (size_t)n;
            } else {
                pg->bad = 1; /* out of memory */
            }
        }
    } else {
        pg->bad = 1;
    }
    return pg;
}

static void *pg_string(const redisReadTask *t, char *str, size_t len)
{
    struct scan_pg *pg = root_pd(t);
    int d = depth(t);

    if (d == 0 && t->type == REDIS_REPLY_ERROR)
        snprintf(pg->err, sizeof(pg->err), "%.*s", (int)(len < 199 ? len : 199), str);
    if (pg->bad || t->type != REDIS_REPLY_STRING) {
        pg->bad = 1;
    } else if (d == 1 && t->idx == 0) {
        char num[24], *end;
        if (len == 0 || len >= sizeof(num)) {
            pg->bad = 1;
            return pg;
        }
        memcpy(num, str, len);
        num[len] = '\0';
        errno = 0;
        pg->cursor = strtoull(num, &end, 10);
        if (*end || errno)
            pg->bad = 1;
        pg->parts |= 1;
    } else if (d == 2 && t->parent->idx == 1 && pg->n < pg->ncap) {
        if (!pg->buf || pg->used + len > pg->cap) {
            size_t cap = pg->cap ? pg->cap : 16384;
            while (cap < pg->used + len)
                cap *= 2;
            char *nb = realloc(pg->buf, cap);
            if (!nb) {
                pg->bad = 1;
                return pg;
            }
            pg->buf = nb;
            pg->cap = cap;
        }
        memcpy(pg->buf + pg->used, str, len);
        pg->off[pg->n] = pg->used;
        pg->len[pg->n++] = len;
        pg->used += len;
    } else {
        pg->bad = 1;
    }
    return pg;
}

static void *pg_integer(const redisReadTask *t, long long v)
{
    struct scan_pg *pg = root_pd(t);
    (void)v;
    pg->bad = 1;
    return pg;
}

static void *pg_nil(const redisReadTask *t)
{
    struct scan_pg *pg = root_pd(t);
    pg->bad = 1;
    return pg;
}

redisReplyObjectFunctions scan_pg_fns = {pg_string, pg_array, pg_integer, pg_nil, no_free};

void scan_pg_begin(struct scan_pg *pg)
{
    if (pg->cap > PG_KEEP) {
        free(pg->buf);
        pg->buf = NULL;
        pg->cap = 0;
    }
    if (pg->ncap > PG_NKEEP) {
        free(pg->off);
        free(pg->len);
        free(pg->key);
        pg->off = pg->len = NULL;
        pg->key = NULL;
        pg->ncap = 0;
    }
    pg->parts = 0;
    pg->err[0] = '\0';
    pg->cursor = 0;
    pg->n = 0;
    pg->used = 0;
    pg->bad = 0;
}

int scan_pg_end(struct scan_pg *pg)
{
    if (pg->bad || pg->parts != 3) {
        pg->n = 0;
        return -1;
    }
    for (size_t i = 0; i < pg->n; i++)
        pg->key[i] = pg->buf + pg->off[i];
    return 0;
}

void scan_pg_free(struct scan_pg *pg)
{
    free(pg->buf);
    free(pg->off);
    free(pg->len);
    free(pg->key);
    memset(pg, 0, sizeof(*pg));
}
