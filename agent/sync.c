/*
 * sync -- `keydrift sync`: keeps one pubsub cache in step with the primary.
 *
 * Three connections: a subscriber on the primary (SUBSCRIBE channel), a
 * reader on the primary and a writer on the cache. The loop waits for one
 * message, drains whatever else is already readable (up to sync-batch
 * messages), coalesces repeats of a key, then sends the batch's reads as one
 * pipeline and its writes as another:
 *
 *   key format   MULTI; DUMP k; PTTL k; ...; EXEC   on the primary, then
 *                RESTORE k ttl payload REPLACE | DEL k   on the cache.
 *   json format  a guarded SET (refused if the key holds a non-string) or
 *                DEL on the cache; the primary is not read.
 *
 * Because the key format copies the key's latest state, a key whose write
 * failed while the cache or the reader was down can be applied later: such
 * keys wait in a bounded pending set and are flushed a chunk per loop turn
 * once both sides answer. Messages published while the subscription is down
 * are lost (pub/sub keeps nothing); the loss is logged with its duration.
 */
#include "sync.h"
#include "http.h"
#include "metrics.h"
#include "clock.h"
#include "cmds.h"
#include "config.h"
#include "log.h"
#include "rconn.h"
#include "syncmsg.h"

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <xxhash.h>

#define SYNC_PENDING_MAX  100000            /* keys kept while the cache is down */
#define SYNC_POLL_MS      100               /* longest wait for a message */
#define SYNC_PING_IDLE_US (3 * 1000000ULL)  /* PING the subscription after this silence */
#define SYNC_STATS_US     (60 * 1000000ULL) /* a stats line at most this often */
#define SYNC_LOG_PER_SEC  10                /* warnings of one kind per second */
#define SYNC_EXCERPT      81                /* log excerpts: 80 bytes + NUL */
#define SYNC_RETRY_US     (200 * 1000ULL)   /* between retry rounds of the pending set */

/*
 * The json SET, run on the cache: json carries strings only, so a key that
 * holds another type there is refused rather than silently replaced.
 * ARGV[2] is the TTL in ms, "0" for none.
 */
static const char sync_set_script[] =
    "local t = redis.call('TYPE', KEYS[1])['ok'] "
    "if t ~= 'string' and t ~= 'none' then "
    "return redis.error_reply('WRONGTYPE the key holds a ' .. t .. ', not a string') end "
    "if ARGV[2] == '0' then return redis.call('SET', KEYS[1], ARGV[1]) end "
    "return redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])";

static volatile sig_atomic_t sync_stop;

/* ---------------------------------------------------------------- key sets */

/*
 * A set of keys in arrival order with a message count per key: an array of
 * entries plus an open-addressing index of entry numbers (0 = empty slot).
 * With ks_owns the keys are malloc'd copies freed by the set; otherwise they
 * point into replies the caller keeps alive.
 */
struct kentry {
    const char *ke_key;
    size_t ke_len;
    uint64_t ke_hash;
    unsigned long long ke_nmsg;
};

struct keyset {
    struct kentry *ks_ents;
    size_t ks_n, ks_cap;
    uint32_t *ks_idx;
    size_t ks_idxcap; /* a power of two, at least twice ks_n */
    int ks_owns;
};

/* Rebuilds the index with idxcap slots; -1 when out of memory. */
static int keyset_reindex(struct keyset *s, size_t idxcap)
{
    uint32_t *idx = calloc(idxcap, sizeof(*idx));
    if (!idx)
        return -1;
    for (size_t i = 0; i < s->ks_n; i++) {
        size_t slot = s->ks_ents[i].ke_hash & (idxcap - 1);
        while (idx[slot])
            slot = (slot + 1) & (idxcap - 1);
        idx[slot] = (uint32_t)(i + 1);
    }
    free(s->ks_idx);
    s->ks_idx = idx;
    s->ks_idxcap = idxcap;
    return 0;
}

/*
 * Adds nmsg messages for key (copied when the set owns its keys). Returns 1
 * when the key is new, 0 when it was there (its count grows), -1 when out of
 * memory; *pos gets the entry number.
 */
static int keyset_add(struct keyset *s, const char *key, size_t len, unsigned long long nmsg,
                      size_t *pos)
{
    uint64_t h = XXH3_64bits(key, len);

    if (s->ks_idxcap) {
        size_t slot = h & (s->ks_idxcap - 1);
        for (; s->ks_idx[slot]; slot = (slot + 1) & (s->ks_idxcap - 1)) {
            struct kentry *e = &s->ks_ents[s->ks_idx[slot] - 1];
            if (e->ke_hash == h && e->ke_len == len && !memcmp(e->ke_key, key, len)) {
                e->ke_nmsg += nmsg;
                if (pos)
                    *pos = s->ks_idx[slot] - 1;
                return 0;
            }
        }
    }
    if ((s->ks_n + 1) * 2 > s->ks_idxcap &&
        keyset_reindex(s, s->ks_idxcap ? s->ks_idxcap * 2 : 64) < 0)
        return -1;
    if (s->ks_n == s->ks_cap) {
        size_t cap = s->ks_cap ? s->ks_cap * 2 : 32;
        struct kentry *ents = realloc(s->ks_ents, cap * sizeof(*ents));
        if (!ents)
            return -1;
        s->ks_ents = ents;
        s->ks_cap = cap;
    }
    const char *k = key;
    if (s->ks_owns) {
        char *copy = malloc(len ? len : 1);
        if (!copy)
            return -1;
        memcpy(copy, key, len);
        k = copy;
    }
    s->ks_ents[s->ks_n] = (struct kentry){k, len, h, nmsg};
    size_t slot = h & (s->ks_idxcap - 1);
    while (s->ks_idx[slot])
        slot = (slot + 1) & (s->ks_idxcap - 1);
    s->ks_idx[slot] = (uint32_t)(s->ks_n + 1);
    if (pos)
        *pos = s->ks_n;
    s->ks_n++;
    return 1;
}

/* Empties the set (freeing owned keys), keeping its memory for reuse. */
static void keyset_clear(struct keyset *s)
{
    if (s->ks_owns)
        for (size_t i = 0; i < s->ks_n; i++)
            free((char *)s->ks_ents[i].ke_key);
    s->ks_n = 0;
    if (s->ks_idx)
        memset(s->ks_idx, 0, s->ks_idxcap * sizeof(*s->ks_idx));
}

/* Frees everything the set holds; it can be used again afterwards. */
static void keyset_free(struct keyset *s)
{
    keyset_clear(s);
    free(s->ks_ents);
    free(s->ks_idx);
    s->ks_ents = NULL;
    s->ks_idx = NULL;
    s->ks_cap = s->ks_idxcap = 0;
}

/* Swaps the contents of two sets. */
static void keyset_swap(struct keyset *a, struct keyset *b)
{
    struct keyset t = *a;
    *a = *b;
    *b = t;
}

/* ------------------------------------------------------------ rate limits */

/* At most SYNC_LOG_PER_SEC lines a second of one kind; the rest are counted. */
struct ratelimit {
    const char *rl_what;
    uint64_t rl_window_us;
    int rl_lines;
    unsigned long long rl_suppressed;
};

/* Logs how many lines were suppressed once their one-second window is over. */
static void ratelimit_flush(struct ratelimit *rl, int force)
{
    uint64_t now = clock_mono_us();

    if (!force && now - rl->rl_window_us < 1000000)
        return;
    if (rl->rl_suppressed)
        log_warnx("suppressed %llu more %s warnings in %.1f s", rl->rl_suppressed, rl->rl_what,
                  (double)(now - rl->rl_window_us) / 1e6);
    rl->rl_window_us = now;
    rl->rl_lines = 0;
    rl->rl_suppressed = 0;
}

/* Returns 1 when one more line may be logged now, else counts it and returns 0. */
static int ratelimit_allow(struct ratelimit *rl)
{
    ratelimit_flush(rl, 0);
    if (rl->rl_lines < SYNC_LOG_PER_SEC) {
        rl->rl_lines++;
        return 1;
    }
    rl->rl_suppressed++;
    return 0;
}

/* ------------------------------------------------------------ the syncer */

/* One message of a batch: its reply (owner of a key-format payload) and parse. */
struct bmsg {
    redisReply *bm_reply;
    struct syncmsg bm_msg;
    size_t bm_ent; /* entry in the batch key set */
};

struct syncer {
    struct config *sy_cfg;
    struct rnode sy_pnode, sy_cnode;
    struct rconn *sy_sub, *sy_rd, *sy_wr;
    struct sync_stats sy_stats;

    /* subscription state */
    int sy_sub_sent;          /* SUBSCRIBE written on this connection */
    int sy_subscribed;        /* confirmed */
    int sy_ever_subscribed;   /* for the "was down" warning */
    uint64_t sy_sub_lost_us;  /* when the subscription was lost (monotonic), 0 if up */
    uint64_t sy_sub_rx_us;    /* last reply on the subscription */
    uint64_t sy_ping_sent_us; /* PING outstanding since, 0 if none */
    int sy_sub_err_logged;

    /* the batch being built */
    struct bmsg *sy_batch;
    size_t sy_nbatch;
    struct keyset sy_bkeys;
    size_t *sy_last; /* json: the last message per batch key */

    /* key format: keys waiting for the cache or the reader */
    struct keyset sy_pending;  /* new failures go here */
    struct keyset sy_flushing; /* being retried, from sy_flush_next on */
    size_t sy_flush_next;
    uint64_t sy_next_round_us; /* no new retry round before this (monotonic) */
    int sy_down_logged;        /* "cache/primary unreachable" said for this outage */
    int sy_overflow_logged;

    char sy_sha[48]; /* the json SET script's SHA1 on the cache, "" until loaded */

    struct ratelimit sy_rl_malformed, sy_rl_failed;
    uint64_t sy_stats_us;
    unsigned long long sy_stats_last;
};

#define STAT_ADD(s, f, v) atomic_fetch_add_explicit(&(s)->sy_stats.f, (v), memory_order_relaxed)
#define STAT_SUB(s, f, v) atomic_fetch_sub_explicit(&(s)->sy_stats.f, (v), memory_order_relaxed)
#define STAT_GET(s, f)    atomic_load_explicit(&(s)->sy_stats.f, memory_order_relaxed)

static void sync_on_signal(int sig)
{
    (void)sig;
    sync_stop = 1;
}

/* Escapes a key for the log into out (SYNC_EXCERPT bytes). */
static const char *excerpt(char *out, const void *p, size_t len)
{
    return log_escape(out, SYNC_EXCERPT, p, len);
}

/*
 * Keeps nmsg messages' worth of key for a later retry. The set is bounded:
 * past SYNC_PENDING_MAX keys a new key is dropped and its messages count as
 * failed (the agent's scan finds what this loses).
 */
static void pend_key(struct syncer *s, const char *key, size_t len, unsigned long long nmsg)
{
    size_t before = s->sy_pending.ks_n;
    int rc = -1;

    if (before < SYNC_PENDING_MAX)
        rc = keyset_add(&s->sy_pending, key, len, nmsg, NULL);
    else if (s->sy_pending.ks_idxcap) {
        /* Full: an existing key still absorbs its message. */
        uint64_t h = XXH3_64bits(key, len);
        size_t slot = h & (s->sy_pending.ks_idxcap - 1);
        for (; s->sy_pending.ks_idx[slot]; slot = (slot + 1) & (s->sy_pending.ks_idxcap - 1)) {
            struct kentry *e = &s->sy_pending.ks_ents[s->sy_pending.ks_idx[slot] - 1];
            if (e->ke_hash == h && e->ke_len == len && !memcmp(e->ke_key, key, len)) {
                rc = keyset_add(&s->sy_pending, key, len, nmsg, NULL);
                break;
            }
        }
    }
    if (rc < 0) {
        STAT_ADD(s, ss_failed, nmsg);
        STAT_ADD(s, ss_pending_dropped, 1);
        if (!s->sy_overflow_logged) {
            log_warnx("pending set full (%d keys%s): further changed keys are dropped until the "
                      "cache is back; the agent's scan will find them",
                      SYNC_PENDING_MAX, before < SYNC_PENDING_MAX ? ", or out of memory" : "");
            s->sy_overflow_logged = 1;
        }
        return;
    }
    if (rc == 1)
        STAT_ADD(s, ss_pending_keys, 1);
    STAT_ADD(s, ss_pending_msgs, nmsg);
}

/* Pends entries ents[0..n) and says once per outage why. */
static void pend_all(struct syncer *s, const struct kentry *ents, size_t n, const char *why)
{
    if (n && !s->sy_down_logged) {
        log_warnx("%s; keeping up to %d changed keys to apply when it is back", why,
                  SYNC_PENDING_MAX);
        s->sy_down_logged = 1;
    }
    for (size_t i = 0; i < n; i++)
        pend_key(s, ents[i].ke_key, ents[i].ke_len, ents[i].ke_nmsg);
}

/* Counts a write the cache refused and logs it (rate-limited). */
static void write_failed(struct syncer *s, const struct kentry *e, const char *what,
                         const char *err)
{
    char ex[SYNC_EXCERPT];

    STAT_ADD(s, ss_failed, e->ke_nmsg);
    if (ratelimit_allow(&s->sy_rl_failed))
        log_warnx("cannot apply %s of key \"%s\": %.200s", what, excerpt(ex, e->ke_key, e->ke_len),
                  err);
}

/* True for error replies that mean "not now" (loading, busy script, ...), not "never". */
static int transient_error(const char *err)
{
    static const char *const prefixes[] = {"LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN"};
    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
        if (!strncmp(err, prefixes[i], strlen(prefixes[i])))
            return 1;
    return 0;
}

/* Says the cache and the reader are fine again, once after an outage. */
static void sides_up(struct syncer *s)
{
    if (s->sy_down_logged && !s->sy_pending.ks_n && s->sy_flush_next >= s->sy_flushing.ks_n) {
        log_notice("cache %s:%d and primary reads are back; pending keys applied",
                   s->sy_cfg->cache.host, s->sy_cfg->cache.port);
        s->sy_down_logged = 0;
        s->sy_overflow_logged = 0;
    }
}

/*
 * Key format: copies the keys ents[0..n) from the primary to the cache.
 * Reads every key's DUMP and PTTL in one MULTI/EXEC on the primary (so a
 * payload and its TTL belong together), then writes RESTORE ... REPLACE (or
 * DEL when the key is gone or expiring) in one pipeline on the cache. Keys
 * whose write could not be confirmed because a link failed go to the pending
 * set; error replies count as failed. The entries stay the caller's.
 */
static void apply_keys(struct syncer *s, const struct kentry *ents, size_t n)
{
    redisReply *exec = NULL, *r;
    char why[300];
    size_t i;

    if (n == 0)
        return;
    if (rconn_ensure(s->sy_rd) < 0) {
        snprintf(why, sizeof(why), "cannot read from the primary (%s)", rconn_errstr(s->sy_rd));
        pend_all(s, ents, n, why);
        return;
    }
    if (rconn_ensure(s->sy_wr) < 0) {
        snprintf(why, sizeof(why), "cache unreachable (%s)", rconn_errstr(s->sy_wr));
        pend_all(s, ents, n, why);
        return;
    }

    /* Reads: MULTI, DUMP/PTTL per key, EXEC. */
    int ok = rconn_append(s->sy_rd, "MULTI") == 0;
    for (i = 0; ok && i < n; i++) {
        const char *dump[2] = {"DUMP", ents[i].ke_key};
        const char *pttl[2] = {"PTTL", ents[i].ke_key};
        size_t lens[2] = {4, ents[i].ke_len};
        ok = rconn_append_argv(s->sy_rd, 2, dump, lens) == 0 &&
             rconn_append_argv(s->sy_rd, 2, pttl, lens) == 0;
    }
    ok = ok && rconn_append(s->sy_rd, "EXEC") == 0;
    int transient = 0; /* a command was refused for now (LOADING): EXEC aborts */
    for (i = 0; ok && i < 2 * n + 2; i++) {
        r = rconn_reply(s->sy_rd);
        if (!r) {
            ok = 0;
        } else if (i == 2 * n + 1) {
            exec = r;
        } else {
            if (r->type == REDIS_REPLY_ERROR && transient_error(r->str))
                transient = 1;
            freeReplyObject(r);
        }
    }
    if (!ok) {
        snprintf(why, sizeof(why), "reading from the primary failed (%s)", rconn_errstr(s->sy_rd));
        pend_all(s, ents, n, why);
        return;
    }
    if (exec->type != REDIS_REPLY_ARRAY && transient) {
        pend_all(s, ents, n, "the primary cannot serve reads now (loading or busy)");
        freeReplyObject(exec);
        return;
    }
    if (exec->type != REDIS_REPLY_ARRAY || exec->elements != 2 * n) {
        const char *err = exec->type == REDIS_REPLY_ERROR ? exec->str : "transaction aborted";
        for (i = 0; i < n; i++)
            write_failed(s, &ents[i], "a read", err);
        freeReplyObject(exec);
        return;
    }

    /*
     * Writes: RESTORE or DEL per key. state[i]: 0 unresolved, 1 DEL sent,
     * 2 RESTORE sent, 3 resolved (counted applied or failed).
     */
    unsigned char *state = calloc(n, 1);
    if (!state) {
        pend_all(s, ents, n, "out of memory");
        freeReplyObject(exec);
        return;
    }
    ok = 1;
    for (i = 0; i < n && ok; i++) {
        redisReply *dump = exec->element[2 * i], *pttl = exec->element[2 * i + 1];
        if (dump->type == REDIS_REPLY_ERROR || pttl->type == REDIS_REPLY_ERROR) {
            write_failed(s, &ents[i], "a read",
                         dump->type == REDIS_REPLY_ERROR ? dump->str : pttl->str);
            state[i] = 3;
            continue;
        }
        long long ttl = pttl->type == REDIS_REPLY_INTEGER ? pttl->integer : -2;
        if (dump->type != REDIS_REPLY_STRING || ttl == -2 || ttl == 0) {
            /* Gone, or expiring right now: the cache must not keep it. */
            const char *argv[2] = {"DEL", ents[i].ke_key};
            size_t lens[2] = {3, ents[i].ke_len};
            ok = rconn_append_argv(s->sy_wr, 2, argv, lens) == 0;
            state[i] = 1;
        } else {
            char ttls[24];
            int tl = snprintf(ttls, sizeof(ttls), "%lld", ttl > 0 ? ttl : 0);
            const char *argv[5] = {"RESTORE", ents[i].ke_key, ttls, dump->str, "REPLACE"};
            size_t lens[5] = {7, ents[i].ke_len, (size_t)tl, dump->len, 7};
            ok = rconn_append_argv(s->sy_wr, 5, argv, lens) == 0;
            state[i] = 2;
        }
    }
    freeReplyObject(exec);

    /* Replies, in order. A failed append closed the link: nothing to read then. */
    for (i = 0; i < n && ok; i++) {
        if (state[i] != 1 && state[i] != 2)
            continue;
        r = rconn_reply(s->sy_wr);
        if (!r) {
            ok = 0;
            break;
        }
        if (r->type == REDIS_REPLY_ERROR && transient_error(r->str)) {
            snprintf(why, sizeof(why), "the cache cannot take writes now (%.100s)", r->str);
            pend_all(s, &ents[i], 1, why);
        } else if (r->type == REDIS_REPLY_ERROR)
            write_failed(s, &ents[i], state[i] == 1 ? "DEL" : "RESTORE", r->str);
        else
            STAT_ADD(s, ss_applied, ents[i].ke_nmsg);
        state[i] = 3;
        freeReplyObject(r);
    }
    if (!ok) {
        /* Every key not confirmed is retried later: re-applying is harmless. */
        snprintf(why, sizeof(why), "writing to the cache failed (%s)", rconn_errstr(s->sy_wr));
        for (i = 0; i < n; i++)
            if (state[i] != 3)
                pend_all(s, &ents[i], 1, why);
    } else {
        sides_up(s);
    }
    free(state);
}

/*
 * Retries one chunk (sync-batch keys) of the pending set. Returns 1 when it
 * made progress and more remains, 0 when there is nothing (more) to do now.
 */
static int flush_pending(struct syncer *s)
{
    if (s->sy_flush_next >= s->sy_flushing.ks_n) {
        uint64_t now = clock_mono_us();
        keyset_clear(&s->sy_flushing);
        s->sy_flush_next = 0;
        /* A round at most every SYNC_RETRY_US, and only when both sides answer. */
        if (!s->sy_pending.ks_n || now < s->sy_next_round_us)
            return 0;
        if (rconn_ensure(s->sy_rd) < 0 || rconn_ensure(s->sy_wr) < 0)
            return 0;
        log_info("applying %zu keys that changed while the cache or the primary was unreachable",
                 s->sy_pending.ks_n);
        keyset_swap(&s->sy_pending, &s->sy_flushing);
        s->sy_next_round_us = now + SYNC_RETRY_US;
    }
    size_t n = s->sy_flushing.ks_n - s->sy_flush_next;
    if (n > (size_t)s->sy_cfg->sync_batch)
        n = (size_t)s->sy_cfg->sync_batch;
    const struct kentry *ents = s->sy_flushing.ks_ents + s->sy_flush_next;
    unsigned long long msgs = 0;
    for (size_t i = 0; i < n; i++)
        msgs += ents[i].ke_nmsg;
    STAT_SUB(s, ss_pending_keys, n);
    STAT_SUB(s, ss_pending_msgs, msgs);
    s->sy_flush_next += n;
    apply_keys(s, ents, n);
    return s->sy_flush_next < s->sy_flushing.ks_n;
}

/*
 * Loads the json SET script on the cache. Returns 0 when s->sy_sha is set,
 * else -1 with the reason in why.
 */
static int load_script(struct syncer *s, char *why, size_t whylen)
{
    redisReply *r = rconn_command(s->sy_wr, "SCRIPT LOAD %s", sync_set_script);
    int rc = -1;

    if (!r) {
        snprintf(why, whylen, "cache unreachable (%s)", rconn_errstr(s->sy_wr));
        return -1;
    }
    if (r->type == REDIS_REPLY_STRING && r->len < sizeof(s->sy_sha)) {
        memcpy(s->sy_sha, r->str, r->len);
        s->sy_sha[r->len] = '\0';
        rc = 0;
    } else {
        snprintf(why, whylen, "SCRIPT LOAD on the cache failed (%.150s)",
                 r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    }
    freeReplyObject(r);
    return rc;
}

/* Appends the write for json message m: the SET script by SHA (or its body) or DEL. */
static int append_json(struct syncer *s, const struct syncmsg *m, int by_body)
{
    if (m->sm_op == SYNCMSG_DEL) {
        const char *argv[2] = {"DEL", m->sm_key};
        size_t lens[2] = {3, m->sm_keylen};
        return rconn_append_argv(s->sy_wr, 2, argv, lens);
    }
    char ttl[24];
    int tl = snprintf(ttl, sizeof(ttl), "%lld", m->sm_ttl_ms);
    const char *argv[6] = {by_body ? "EVAL" : "EVALSHA",
                           by_body ? sync_set_script : s->sy_sha,
                           "1",
                           m->sm_key,
                           m->sm_value,
                           ttl};
    size_t lens[6] = {by_body ? 4 : 7, strlen(argv[1]), 1,
                      m->sm_keylen,    m->sm_valuelen,  (size_t)tl};
    return rconn_append_argv(s->sy_wr, 6, argv, lens);
}

/* The batch key entry of batch message i. */
static const struct kentry *json_entry(const struct syncer *s, size_t i)
{
    return &s->sy_bkeys.ks_ents[s->sy_batch[i].bm_ent];
}

/*
 * Reads the cache's replies for batch messages list[0..n). A NOSCRIPT reply
 * puts the message on retry (when retry is not NULL). Returns 0, or -1 when
 * the link failed: the unanswered messages are counted failed.
 */
static int json_replies(struct syncer *s, const size_t *list, size_t n, size_t *retry,
                        size_t *nretry)
{
    for (size_t i = 0; i < n; i++) {
        const struct kentry *e = json_entry(s, list[i]);
        redisReply *r = rconn_reply(s->sy_wr);
        if (!r) {
            for (; i < n; i++)
                STAT_ADD(s, ss_failed, json_entry(s, list[i])->ke_nmsg);
            return -1;
        }
        if (r->type == REDIS_REPLY_ERROR && retry && !strncmp(r->str, "NOSCRIPT", 8))
            retry[(*nretry)++] = list[i]; /* the cache restarted or its scripts were flushed */
        else if (r->type == REDIS_REPLY_ERROR)
            write_failed(s, e,
                         s->sy_batch[list[i]].bm_msg.sm_op == SYNCMSG_SET ? "json set" : "DEL",
                         r->str);
        else
            STAT_ADD(s, ss_applied, e->ke_nmsg);
        freeReplyObject(r);
    }
    return 0;
}

/* Counts batch messages list[0..n) failed: their writes were lost with the link. */
static void json_lost(struct syncer *s, const size_t *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        STAT_ADD(s, ss_failed, json_entry(s, list[i])->ke_nmsg);
}

/*
 * Json format: applies the batch's valid messages to the cache, the last one
 * per key only, in arrival order. A json message carries the value itself,
 * so one that cannot be written now is lost (counted failed), not kept.
 */
static void apply_json(struct syncer *s)
{
    struct bmsg *b = s->sy_batch;
    size_t i, nsend = 0, nretry = 0, nvalid = 0;
    size_t *send, *retry;
    int rc = 0;

    for (i = 0; i < s->sy_nbatch; i++)
        if (b[i].bm_msg.sm_key)
            nvalid++;
    if (!nvalid)
        return;
    char why[256];
    if (rconn_ensure(s->sy_wr) < 0)
        snprintf(why, sizeof(why), "cache unreachable (%s)", rconn_errstr(s->sy_wr));
    if (!rconn_connected(s->sy_wr) || (!s->sy_sha[0] && load_script(s, why, sizeof(why)) < 0)) {
        STAT_ADD(s, ss_failed, nvalid);
        if (ratelimit_allow(&s->sy_rl_failed))
            log_warnx("%s: %zu json messages lost", why, nvalid);
        return;
    }
    send = malloc(2 * s->sy_nbatch * sizeof(*send));
    if (!send) {
        STAT_ADD(s, ss_failed, nvalid);
        return;
    }
    retry = send + s->sy_nbatch;
    for (i = 0; i < s->sy_nbatch; i++)
        if (b[i].bm_msg.sm_key && s->sy_last[b[i].bm_ent] == i)
            send[nsend++] = i;
    for (i = 0; i < nsend && rc == 0; i++)
        rc = append_json(s, &b[send[i]].bm_msg, 0);
    if (rc == 0)
        rc = json_replies(s, send, nsend, retry, &nretry);
    else
        json_lost(s, send, nsend);
    if (rc == 0 && nretry) {
        s->sy_sha[0] = '\0'; /* load it again next batch */
        for (i = 0; i < nretry && rc == 0; i++)
            rc = append_json(s, &b[retry[i]].bm_msg, 1);
        if (rc == 0)
            rc = json_replies(s, retry, nretry, NULL, NULL);
        else
            json_lost(s, retry, nretry);
    }
    if (rc < 0 && ratelimit_allow(&s->sy_rl_failed))
        log_warnx("writing to the cache failed (%s); json messages of this batch lost",
                  rconn_errstr(s->sy_wr));
    free(send);
}

/* Frees the messages of the batch and empties it. */
static void batch_reset(struct syncer *s)
{
    for (size_t i = 0; i < s->sy_nbatch; i++) {
        syncmsg_free(&s->sy_batch[i].bm_msg);
        freeReplyObject(s->sy_batch[i].bm_reply);
    }
    s->sy_nbatch = 0;
    keyset_clear(&s->sy_bkeys);
}

/*
 * Adds one "message" reply to the batch (which takes the reply): parses the
 * payload, counts and logs it if malformed, and files its key in the batch
 * key set.
 */
static void batch_add(struct syncer *s, redisReply *r)
{
    redisReply *payload = r->element[2];
    struct bmsg *b = &s->sy_batch[s->sy_nbatch++];
    char why[SYNCMSG_WHY_MAX];
    size_t pos;

    STAT_ADD(s, ss_received, 1);
    b->bm_reply = r;
    int rc = syncmsg_parse(s->sy_cfg->message_format, payload->str, payload->len, &b->bm_msg, why,
                           sizeof(why));
    if (rc == SYNCMSG_OK &&
        keyset_add(&s->sy_bkeys, b->bm_msg.sm_key, b->bm_msg.sm_keylen, 1, &pos) >= 0) {
        b->bm_ent = pos;
        s->sy_last[pos] = s->sy_nbatch - 1;
        return;
    }
    syncmsg_free(&b->bm_msg); /* leaves sm_key NULL: not applied */
    if (rc == SYNCMSG_MALFORMED) {
        char ex[SYNC_EXCERPT];
        STAT_ADD(s, ss_malformed, 1);
        if (ratelimit_allow(&s->sy_rl_malformed))
            log_warnx("malformed %s message on channel %s (%s): \"%s\"",
                      cfg_format_name(s->sy_cfg->message_format), s->sy_cfg->channel, why,
                      excerpt(ex, payload->str, payload->len));
    } else {
        STAT_ADD(s, ss_failed, 1);
        if (ratelimit_allow(&s->sy_rl_failed))
            log_warnx("out of memory handling a message; dropped");
    }
}

/* Applies the batch built so far and empties it. */
static void batch_apply(struct syncer *s)
{
    size_t nvalid = 0;

    if (!s->sy_nbatch)
        return;
    for (size_t i = 0; i < s->sy_nbatch; i++)
        if (s->sy_batch[i].bm_msg.sm_key)
            nvalid++;
    STAT_ADD(s, ss_batches, 1);
    STAT_ADD(s, ss_coalesced, nvalid - s->sy_bkeys.ks_n);
    if (s->sy_cfg->message_format == FMT_KEY)
        apply_keys(s, s->sy_bkeys.ks_ents, s->sy_bkeys.ks_n);
    else
        apply_json(s);
    batch_reset(s);
}

/* Notes that the subscription is gone (the connection is closed already). */
static void sub_lost(struct syncer *s, const char *why)
{
    if (s->sy_subscribed || s->sy_sub_sent)
        log_warnx("subscription to %s lost: %s; re-subscribing", s->sy_cfg->channel, why);
    if (s->sy_subscribed && !s->sy_sub_lost_us)
        s->sy_sub_lost_us = clock_mono_us();
    s->sy_subscribed = 0;
    s->sy_sub_sent = 0;
    s->sy_ping_sent_us = 0;
}

/*
 * Connects the subscriber and sends SUBSCRIBE once per connection. Returns
 * 0 when the link is up (the confirmation may still be on its way), -1 when
 * the primary cannot be reached now.
 */
static int sub_ensure(struct syncer *s)
{
    if (!rconn_connected(s->sy_sub)) {
        s->sy_sub_sent = s->sy_subscribed = 0;
        if (rconn_ensure(s->sy_sub) < 0) {
            if (!s->sy_sub_err_logged)
                log_warnx("cannot subscribe: %s; retrying with backoff", rconn_errstr(s->sy_sub));
            s->sy_sub_err_logged = 1;
            return -1;
        }
    }
    if (!s->sy_sub_sent) {
        /* The agent tells which cache has a subscriber by this name. */
        char name[CFG_HOST_MAX + 32];
        snprintf(name, sizeof(name), "keydrift-sync:%s:%d", s->sy_cfg->cache.host,
                 s->sy_cfg->cache.port);
        const char *nargv[3] = {"CLIENT", "SETNAME", name};
        redisReply *nr = rconn_argv(s->sy_sub, 3, nargv, NULL);
        if (!nr) {
            sub_lost(s, rconn_errstr(s->sy_sub));
            return -1;
        }
        freeReplyObject(nr); /* an error (e.g. ACL) only costs the name */
        const char *argv[2] = {"SUBSCRIBE", s->sy_cfg->channel};
        if (rconn_append_argv(s->sy_sub, 2, argv, NULL) < 0) {
            sub_lost(s, rconn_errstr(s->sy_sub));
            return -1;
        }
        s->sy_sub_sent = 1;
        s->sy_sub_rx_us = clock_mono_us();
    }
    return 0;
}

/* True when reply r is an array whose first element is the bulk string kind. */
static int push_is(const redisReply *r, const char *kind, size_t minelems)
{
    return r->type == REDIS_REPLY_ARRAY && r->elements >= minelems &&
           r->element[0]->type == REDIS_REPLY_STRING && !strcasecmp(r->element[0]->str, kind);
}

/*
 * Handles one reply from the subscription: a message joins the batch (which
 * takes the reply); confirmations and PONGs are consumed and freed here.
 */
static void sub_reply(struct syncer *s, redisReply *r)
{
    uint64_t now = clock_mono_us();

    s->sy_sub_rx_us = now;
    if (push_is(r, "message", 3) && r->element[2]->type == REDIS_REPLY_STRING) {
        batch_add(s, r);
        return;
    }
    if (push_is(r, "subscribe", 3)) {
        const struct cfg_addr *a = rconn_addr(s->sy_sub);
        if (s->sy_sub_lost_us) {
            uint64_t down = now - s->sy_sub_lost_us;
            log_warnx("subscription to %s on %s:%d was down for %.3f s; updates published in "
                      "this window were missed",
                      s->sy_cfg->channel, a->host, a->port, (double)down / 1e6);
            STAT_ADD(s, ss_resubscribes, 1);
            STAT_ADD(s, ss_sub_down_us, down);
            s->sy_sub_lost_us = 0;
        } else if (!s->sy_ever_subscribed) {
            log_notice("subscribed to %s on %s:%d (%s format), serving cache %s:%d",
                       s->sy_cfg->channel, a->host, a->port,
                       cfg_format_name(s->sy_cfg->message_format), s->sy_cfg->cache.host,
                       s->sy_cfg->cache.port);
        }
        s->sy_subscribed = s->sy_ever_subscribed = 1;
        s->sy_sub_err_logged = 0;
    } else if (push_is(r, "pong", 1)) {
        s->sy_ping_sent_us = 0;
    } else if (r->type == REDIS_REPLY_ERROR) {
        log_errorx("the primary refused SUBSCRIBE %s: %.200s", s->sy_cfg->channel, r->str);
    } else {
        log_debug("unexpected reply on the subscription (type %d)", r->type);
    }
    freeReplyObject(r);
}

/*
 * PINGs a silent subscription so a dead peer (no RST, e.g. a vanished host)
 * is noticed within about the command timeout, not the TCP keepalive.
 */
static void sub_keepalive(struct syncer *s)
{
    uint64_t now = clock_mono_us();

    if (!s->sy_subscribed)
        return;
    if (s->sy_ping_sent_us) {
        if (now - s->sy_ping_sent_us > (uint64_t)s->sy_cfg->command_timeout * 1000) {
            rconn_close(s->sy_sub);
            sub_lost(s, "no answer to PING within command-timeout");
        }
        return;
    }
    if (now - s->sy_sub_rx_us > SYNC_PING_IDLE_US) {
        const char *argv[1] = {"PING"};
        if (rconn_append_argv(s->sy_sub, 1, argv, NULL) == 0)
            s->sy_ping_sent_us = now;
    }
}

/* Logs one line with every counter; final says it is the exit summary. */
static void log_stats(struct syncer *s, int final)
{
    char line[512];

    snprintf(line, sizeof(line),
             "received=%llu applied=%llu malformed=%llu failed=%llu batches=%llu coalesced=%llu "
             "pending_keys=%llu pending_msgs=%llu pending_dropped=%llu resubscribes=%llu "
             "sub_down_s=%.3f primary_cmds=%llu cache_cmds=%llu",
             STAT_GET(s, ss_received), STAT_GET(s, ss_applied), STAT_GET(s, ss_malformed),
             STAT_GET(s, ss_failed), STAT_GET(s, ss_batches), STAT_GET(s, ss_coalesced),
             STAT_GET(s, ss_pending_keys), STAT_GET(s, ss_pending_msgs),
             STAT_GET(s, ss_pending_dropped), STAT_GET(s, ss_resubscribes),
             (double)STAT_GET(s, ss_sub_down_us) / 1e6,
             (unsigned long long)atomic_load(&s->sy_pnode.rn_commands),
             (unsigned long long)atomic_load(&s->sy_cnode.rn_commands));
    if (final)
        log_notice("sync summary: %s", line);
    else
        log_info("sync stats: %s", line);
}

/* Once a minute, a stats line if anything arrived since the last one. */
static void periodic(struct syncer *s)
{
    uint64_t now = clock_mono_us();

    ratelimit_flush(&s->sy_rl_malformed, 0);
    ratelimit_flush(&s->sy_rl_failed, 0);
    sub_keepalive(s);
    if (now - s->sy_stats_us >= SYNC_STATS_US) {
        unsigned long long rx = STAT_GET(s, ss_received);
        if (rx != s->sy_stats_last)
            log_stats(s, 0);
        s->sy_stats_last = rx;
        s->sy_stats_us = now;
    }
}

/* The main loop: runs until SIGTERM/SIGINT. */
static void sync_loop(struct syncer *s)
{
    int more_pending = 0;

    while (!sync_stop) {
        redisReply *r;
        int rc;

        periodic(s);
        if (sub_ensure(s) < 0) {
            clock_sleep_ms(50, (const volatile int *)&sync_stop);
            continue;
        }
        rc = rconn_poll_reply(s->sy_sub, more_pending ? 0 : SYNC_POLL_MS, &r);
        if (rc == 1) {
            sub_reply(s, r);
            /* Drain what is already readable, up to a batch. */
            while (s->sy_nbatch < (size_t)s->sy_cfg->sync_batch && !sync_stop &&
                   (rc = rconn_poll_reply(s->sy_sub, 0, &r)) == 1)
                sub_reply(s, r);
            batch_apply(s);
        }
        if (rc < 0)
            sub_lost(s, rconn_errstr(s->sy_sub));
        more_pending = s->sy_cfg->message_format == FMT_KEY && flush_pending(s);
    }
}

/* Creates the connections and buffers; 0, or -1 when out of memory. */
/* ------------------------------------------------------------ metrics */

static struct metric_family *m_msgs, *m_batches, *m_coalesced, *m_pending, *m_dropped, *m_resubs,
    *m_down;

/* Copies the subscriber's counters into the registry at every scrape. */
static void sync_collect(void *arg)
{
    struct sync_stats *st = arg;
    const struct {
        const char *outcome;
        atomic_ullong *v;
    } outcomes[] = {{"received", &st->ss_received},
                    {"applied", &st->ss_applied},
                    {"malformed", &st->ss_malformed},
                    {"failed", &st->ss_failed}};

    for (size_t i = 0; i < sizeof(outcomes) / sizeof(outcomes[0]); i++)
        metric_set(metrics_series1(m_msgs, outcomes[i].outcome),
                   (double)atomic_load(outcomes[i].v));
    metric_set(metrics_series0(m_batches), (double)atomic_load(&st->ss_batches));
    metric_set(metrics_series0(m_coalesced), (double)atomic_load(&st->ss_coalesced));
    metric_set(metrics_series0(m_pending), (double)atomic_load(&st->ss_pending_keys));
    metric_set(metrics_series0(m_dropped), (double)atomic_load(&st->ss_pending_dropped));
    metric_set(metrics_series0(m_resubs), (double)atomic_load(&st->ss_resubscribes));
    metric_set(metrics_series0(m_down), (double)atomic_load(&st->ss_sub_down_us) / 1e6);
}

/*
 * Serves the subscriber's own /metrics and /healthz on sync-metrics-listen.
 * Returns the running server, or NULL with a reason in err.
 */
static struct http_server *start_metrics(struct syncer *s, const struct config *cfg, char *err,
                                         size_t errlen)
{
    static const char *const ol[] = {"outcome"};
    struct http_opts o = {.listen = cfg->sync_metrics_listen,
                          .max_connections = 64,
                          .per_ip_connections = 64,
                          .timeout_ms = cfg->http_timeout,
                          .max_body = 1024};
    struct http_server *h;

    m_msgs = metrics_family("keydrift_sync_messages_total",
                            "Messages on the channel by outcome (received, applied, malformed, "
                            "failed).",
                            METRIC_COUNTER, 1, ol);
    m_batches =
        metrics_family("keydrift_sync_batches_total",
                       "Batches applied (one pipeline to each side).", METRIC_COUNTER, 0, NULL);
    m_coalesced = metrics_family("keydrift_sync_coalesced_total",
                                 "Messages merged with a later one for the same key in a batch.",
                                 METRIC_COUNTER, 0, NULL);
    m_pending = metrics_family("keydrift_sync_pending_keys",
                               "Keys waiting for the cache to come back (key format).",
                               METRIC_GAUGE, 0, NULL);
    m_dropped = metrics_family("keydrift_sync_pending_dropped_total",
                               "Keys not kept while the cache was down (pending set full).",
                               METRIC_COUNTER, 0, NULL);
    m_resubs =
        metrics_family("keydrift_sync_resubscribes_total",
                       "Subscriptions re-established after a loss.", METRIC_COUNTER, 0, NULL);
    m_down = metrics_family("keydrift_sync_subscription_down_seconds_total",
                            "Time the subscription was down; updates published then were lost.",
                            METRIC_COUNTER, 0, NULL);
    metrics_register_process();
    metrics_add_collector(sync_collect, &s->sy_stats);
    h = http_new(&o);
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    http_add_metrics_routes(h);
    if (http_start(h, err, errlen) < 0) {
        http_free(h);
        return NULL;
    }
    return h;
}

static int syncer_init(struct syncer *s, struct config *cfg)
{
    struct rconn_opts o = {
        .user = cfg->redis_user,
        .password = cfg->redis_password,
        .db = cfg->ndbs ? cfg->dbs[0] : 0,
        .connect_timeout_ms = cfg->connect_timeout,
        .command_timeout_ms = cfg->command_timeout,
    };
    size_t cap = (size_t)cfg->sync_batch;

    memset(s, 0, sizeof(*s));
    s->sy_cfg = cfg;
    snprintf(s->sy_pnode.rn_name, sizeof(s->sy_pnode.rn_name), "primary");
    snprintf(s->sy_pnode.rn_role, sizeof(s->sy_pnode.rn_role), "primary");
    s->sy_pnode.rn_addr = cfg->primary;
    snprintf(s->sy_cnode.rn_name, sizeof(s->sy_cnode.rn_name), "cache");
    snprintf(s->sy_cnode.rn_role, sizeof(s->sy_cnode.rn_role), "cache");
    s->sy_cnode.rn_addr = cfg->cache;
    s->sy_sub = rconn_new(&cfg->primary, &o, &s->sy_pnode);
    s->sy_rd = rconn_new(&cfg->primary, &o, &s->sy_pnode);
    s->sy_wr = rconn_new(&cfg->cache, &o, &s->sy_cnode);
    s->sy_batch = calloc(cap, sizeof(*s->sy_batch));
    s->sy_last = calloc(cap, sizeof(*s->sy_last));
    s->sy_pending.ks_owns = 1;
    s->sy_flushing.ks_owns = 1;
    s->sy_rl_malformed.rl_what = "malformed-message";
    s->sy_rl_failed.rl_what = "apply-failure";
    s->sy_stats_us = clock_mono_us();
    return s->sy_sub && s->sy_rd && s->sy_wr && s->sy_batch && s->sy_last ? 0 : -1;
}

/* Frees everything syncer_init and the loop allocated (not the config). */
static void syncer_free(struct syncer *s)
{
    if (s->sy_batch)
        batch_reset(s);
    free(s->sy_batch);
    free(s->sy_last);
    keyset_free(&s->sy_bkeys);
    keyset_free(&s->sy_pending);
    keyset_free(&s->sy_flushing);
    rconn_free(s->sy_sub);
    rconn_free(s->sy_rd);
    rconn_free(s->sy_wr);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: keydrift sync [CONFIG] [--option value...]\n"
            "\n"
            "Subscribes to the sync channel on the primary and applies every update to one\n"
            "pubsub cache. Options (config file or command line):\n"
            "  --primary HOST:PORT          the primary (default 127.0.0.1:6379)\n"
            "  --cache HOST:PORT            the cache this subscriber serves (default "
            "127.0.0.1:6380)\n"
            "  --channel NAME               the channel (default cache_update)\n"
            "  --message-format key|json    key: payload is a key name, copied with DUMP/RESTORE;\n"
            "                               json: {\"op\":\"set\"|\"del\",\"key\":..,\"value\":..,"
            "\"ttl_ms\":..}\n"
            "  --sync-batch N               messages per pipelined batch (default 512)\n"
            "  --redis-user U, --redis-password-file F (or KEYDRIFT_REDIS_PASSWORD)\n"
            "  --connect-timeout D, --command-timeout D, --log-level L, --db N\n"
            "\n"
            "Stops cleanly on SIGTERM or SIGINT and logs a summary of its counters.\n"
            "Exit status: 0 stopped by a signal, 1 could not start, 2 bad usage or config.\n"
            "See docs/sync.md.\n");
}

int cmd_sync(int argc, char **argv)
{
    struct config cfg;
    struct syncer s;
    char err[CFG_ERR_MAX];
    const char *path = NULL;
    int i = 1, rc = 0;
    enum log_level lvl;

    for (int j = 1; j < argc; j++) {
        if (!strcmp(argv[j], "--help") || !strcmp(argv[j], "-h")) {
            usage(stdout);
            return 0;
        }
    }
    if (argc > 1 && strncmp(argv[1], "--", 2) != 0)
        path = argv[i++];
    if (cfg_load(&cfg, path, argc - i, argv + i, err, sizeof(err)) < 0) {
        fprintf(stderr, "keydrift: %s\n", err);
        cfg_free(&cfg);
        return 2;
    }
    if (!strcmp(cfg.cache.host, cfg.primary.host) && cfg.cache.port == cfg.primary.port) {
        fprintf(stderr, "keydrift: option 'cache': %s:%d is the primary's address\n",
                cfg.cache.host, cfg.cache.port);
        cfg_free(&cfg);
        return 2;
    }
    if (!cfg.channel || !*cfg.channel) {
        fprintf(stderr, "keydrift: option 'channel': empty\n");
        cfg_free(&cfg);
        return 2;
    }
    if (cfg.log_target == LOGT_SYSLOG)
        log_init("keydrift", 1);
    if (cfg.log_level && log_level_parse(cfg.log_level, &lvl) == 0)
        log_set_level(lvl);
    if (cfg.ndbs > 1)
        log_warnx("option 'db': sync serves one database; using db %d", cfg.dbs[0]);

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = sync_on_signal; /* no SA_RESTART: poll() returns at once */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    struct http_server *http = NULL;
    if (syncer_init(&s, &cfg) < 0) {
        log_errorx("out of memory");
        rc = 1;
    } else if (cfg.sync_metrics_listen && *cfg.sync_metrics_listen &&
               (http = start_metrics(&s, &cfg, err, sizeof(err))) == NULL) {
        log_errorx("sync-metrics-listen %s: %s", cfg.sync_metrics_listen, err);
        rc = 2;
    } else {
        sync_loop(&s);
        log_stats(&s, 1);
        ratelimit_flush(&s.sy_rl_malformed, 1);
        ratelimit_flush(&s.sy_rl_failed, 1);
    }
    http_free(http);
    metrics_shutdown();
    syncer_free(&s);
    cfg_free(&cfg);
    return rc;
}
