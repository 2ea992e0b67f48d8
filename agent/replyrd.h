/*
 * replyrd -- readers for the two replies a comparison reads most: the fetch
 * script's (three items per key) and SCAN's (a cursor and a page of keys).
 *
 * hiredis builds a reply as a tree of redisReply objects, one allocation or
 * two per item, freed item by item; for these replies that was the larger
 * part of the agent's work per key compared. These readers are hiredis
 * reply-object functions (rconn_reply_with) that keep only what the caller
 * needs: the fetch reply goes straight into the keys' struct cmp_side, a
 * SCAN page into one buffer. The reader's privdata (in the root task) is
 * the struct below; every function returns it, never NULL.
 */
#ifndef KD_REPLYRD_H
#define KD_REPLYRD_H
#include <hiredis/hiredis.h>
#include <stddef.h>

#include "compare.h"

/*
 * The fetch script's reply for n keys: a flat array, three items per key
 * (PTTL, MEMORY USAGE, then the DUMP payload, the type name of a value above
 * max, or "" for an absent key). The items of a key arrive in order, so its
 * PTTL and size are known when its value does, and only a payload to keep is
 * copied. out[0..n) must be cleared (cmp_side_clear) before; out == NULL
 * reads and drops the reply.
 */
struct fetch_rd {
    struct cmp_side *out;
    size_t n;      /* keys the call asked for */
    long long max; /* max-value-bytes (<= 0: none) */
    size_t items;  /* of the top-level array */
    int bad;       /* not a well-formed answer */
    char err[200]; /* an error reply's text, "" if none */
};
extern redisReplyObjectFunctions fetch_rd_fns;

/*
 * After a fetch reply was read: the number of keys it covers, with out[]
 * finished (exists, large); 0 when it is not a well-formed answer (then
 * out[0..n) is cleared again). *calls gets the commands the script ran.
 */
size_t fetch_rd_finish(struct fetch_rd *rd, unsigned *calls);

/*
 * A SCAN reply: the cursor and the keys, kept in one buffer that is reused
 * from page to page. Call scan_pg_begin before reading, scan_pg_end after.
 */
struct scan_pg {
    unsigned long long cursor;
    size_t n;         /* keys */
    const char **key; /* valid after scan_pg_end */
    size_t *len;
    int bad;
    int parts;     /* what was read: 1 the cursor, 2 the keys' array */
    char err[200]; /* an error reply's text, "" if none */
    /* storage */
    char *buf;
    size_t used, cap, ncap;
    size_t *off;
};
extern redisReplyObjectFunctions scan_pg_fns;

void scan_pg_begin(struct scan_pg *pg);
/* 0 when the reply was a SCAN page (key[] then set), -1 otherwise. */
int scan_pg_end(struct scan_pg *pg);
void scan_pg_free(struct scan_pg *pg);
#endif
