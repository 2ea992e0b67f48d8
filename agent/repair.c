/*
 * repair -- the repair strategies: each write is conditional on the value
 * that was compared, so a repair never writes an older value over a newer
 * one. See repair.h.
 */
#include "repair.h"
#include "log.h"

#include <stdio.h>
#include <string.h>

/*
 * rewrite (native, on the primary): re-issue the key with the value we
 * compared, only if the primary still holds it, so replication carries it
 * again. For a key only the replica has: create and delete it in one step,
 * so the replica drops it.
 */
static const char rewrite_lua[] = "if ARGV[1] == 'extra' then\n"
                                  "  if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end\n"
                                  "  redis.call('SET', KEYS[1], '')\n"
                                  "  redis.call('DEL', KEYS[1])\n"
                                  "  return 1\n"
                                  "end\n"
                                  "local cur = redis.call('DUMP', KEYS[1])\n"
                                  "if not cur or cur ~= ARGV[2] then return 0 end\n"
                                  "local ttl = redis.call('PTTL', KEYS[1])\n"
                                  "if ttl == -2 then return 0 end\n"
                                  "if ttl < 0 then ttl = 0 end\n"
                                  "redis.call('RESTORE', KEYS[1], ttl, cur, 'REPLACE')\n"
                                  "return 1\n";

/*
 * write (pubsub, on the cache): replace the cache's value with the
 * primary's only if the cache still holds the stale value we saw ('' = the
 * cache had no such key); an empty new value deletes.
 */
static const char write_lua[] = "local cur = redis.call('DUMP', KEYS[1])\n"
                                "if ARGV[1] == '' then\n"
                                "  if cur then return 0 end\n"
                                "elseif not cur or cur ~= ARGV[1] then\n"
                                "  return 0\n"
                                "end\n"
                                "if ARGV[2] == '' then redis.call('DEL', KEYS[1]) return 1 end\n"
                                "redis.call('RESTORE', KEYS[1], ARGV[3], ARGV[2], 'REPLACE')\n"
                                "return 1\n";

/*
 * publish, json format (on the primary): read the value and publish it in
 * one script, so no write can slip between the read and the PUBLISH.
 */
static const char publish_json_lua[] =
    "local t = redis.call('TYPE', KEYS[1])['ok']\n"
    "if t == 'none' then\n"
    "  return redis.call('PUBLISH', ARGV[1], cjson.encode({op='del', key=KEYS[1]}))\n"
    "end\n"
    "if t ~= 'string' then\n"
    "  return redis.error_reply('the json format carries strings only; the key is a ' .. t)\n"
    "end\n"
    "local m = {op='set', key=KEYS[1], value=redis.call('GET', KEYS[1])}\n"
    "local ttl = redis.call('PTTL', KEYS[1])\n"
    "if ttl > 0 then m['ttl_ms'] = ttl end\n"
    "return redis.call('PUBLISH', ARGV[1], cjson.encode(m))\n";

const char *repair_strategy_name(const struct config *cfg, const struct cfg_replica *rc)
{
    if (rc->kind == REPLICA_NATIVE)
        return "rewrite";
    return cfg->repair_pubsub_strategy == PUBSUB_WRITE ? "write" : "publish";
}

/* 0 when the node says it is a master (ROLE), -1 with a reason otherwise. */
static int check_master(struct rconn *c, const char *what, char *err, size_t errlen)
{
    redisReply *r = rconn_command(c, "ROLE");
    int ok = r && r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
             r->element[0]->type == REDIS_REPLY_STRING && !strcmp(r->element[0]->str, "master");

    if (!r)
        snprintf(err, errlen, "%s: %s", what, rconn_errstr(c));
    else if (!ok)
        snprintf(err, errlen, "%s is not a master (ROLE %s): not writing to it", what,
                 r->type == REDIS_REPLY_ARRAY && r->elements &&
                         r->element[0]->type == REDIS_REPLY_STRING
                     ? r->element[0]->str
                     : "?");
    if (r)
        freeReplyObject(r);
    return ok ? 0 : -1;
}

/* Runs a script; returns its integer reply, or -1 with a reason. */
static long long eval(struct rconn *c, const char *lua, int argc, const char **argv,
                      const size_t *lens, char *err, size_t errlen)
{
    const char *av[8];
    size_t al[8];
    long long v = -1;

    av[0] = "EVAL";
    al[0] = 4;
    av[1] = lua;
    al[1] = strlen(lua);
    av[2] = "1";
    al[2] = 1;
    for (int i = 0; i < argc && i < 5; i++) {
        av[3 + i] = argv[i];
        al[3 + i] = lens[i];
    }
    redisReply *r = rconn_argv(c, 3 + argc, av, al);
    if (!r) {
        snprintf(err, errlen, "%s", rconn_errstr(c));
        return -1;
    }
    if (r->type == REDIS_REPLY_INTEGER)
        v = r->integer;
    else if (r->type == REDIS_REPLY_ERROR)
        snprintf(err, errlen, "%.200s", r->str);
    else
        snprintf(err, errlen, "unexpected reply to the repair script");
    freeReplyObject(r);
    return v;
}

enum repair_result repair_apply(const struct config *cfg, const struct cfg_replica *rc,
                                struct rconn *primary, struct rconn *replica, const char *key,
                                size_t keylen, enum cmp_kind kind, const struct cmp_side *ps,
                                const struct cmp_side *rs, const char **strategy, char *err,
                                size_t errlen)
{
    long long v;

    *strategy = repair_strategy_name(cfg, rc);
    err[0] = '\0';
    if (ps->large || rs->large) {
        snprintf(err, errlen, "larger than max-value-bytes: not repaired");
        return REPAIR_FAILED;
    }
    if (rc->kind == REPLICA_NATIVE) {
        /* Never write to a native replica: the primary re-issues the key. */
        if (check_master(primary, "the primary", err, errlen) < 0)
            return REPAIR_FAILED;
        if (kind == CMP_EXTRA) {
            const char *a[] = {key, "extra"};
            size_t l[] = {keylen, 5};
            v = eval(primary, rewrite_lua, 2, a, l, err, errlen);
        } else {
            if (!ps->dump) {
                snprintf(err, errlen, "the primary's value could not be read");
                return REPAIR_FAILED;
            }
            const char *a[] = {key, "value", ps->dump};
            size_t l[] = {keylen, 5, ps->dumplen};
            v = eval(primary, rewrite_lua, 3, a, l, err, errlen);
        }
    } else if (cfg->repair_pubsub_strategy == PUBSUB_PUBLISH) {
        if (check_master(primary, "the primary", err, errlen) < 0)
            return REPAIR_FAILED;
        if (cfg->message_format == FMT_JSON) {
            const char *a[] = {key, cfg->channel};
            size_t l[] = {keylen, strlen(cfg->channel)};
            v = eval(primary, publish_json_lua, 2, a, l, err, errlen);
        } else {
            const char *a[] = {"PUBLISH", cfg->channel, key};
            size_t l[] = {7, strlen(cfg->channel), keylen};
            redisReply *r = rconn_argv(primary, 3, a, l);
            v = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
            if (!r)
                snprintf(err, errlen, "%s", rconn_errstr(primary));
            else if (r->type == REDIS_REPLY_ERROR)
                snprintf(err, errlen, "%.200s", r->str);
            if (r)
                freeReplyObject(r);
        }
        if (v == 0) {
            snprintf(err, errlen, "no subscriber on channel %s: nobody applied it", cfg->channel);
            return REPAIR_FAILED;
        }
        if (v > 0)
            v = 1;
    } else {
        /* write: straight to the cache, guarded by the stale value. */
        char ttl[32];
        if (check_master(replica, "the cache", err, errlen) < 0)
            return REPAIR_FAILED;
        if (ps->exists == 1 && !ps->dump) {
            snprintf(err, errlen, "the primary's value could not be read");
            return REPAIR_FAILED;
        }
        if (rs->exists == 1 && !rs->dump) {
            snprintf(err, errlen, "the cache's value could not be read");
            return REPAIR_FAILED;
        }
        snprintf(ttl, sizeof(ttl), "%lld", ps->pttl > 0 ? ps->pttl : 0);
        const char *a[] = {key, rs->exists == 1 ? rs->dump : "", ps->exists == 1 ? ps->dump : "",
                           ttl};
        size_t l[] = {keylen, rs->exists == 1 ? rs->dumplen : 0, ps->exists == 1 ? ps->dumplen : 0,
                      strlen(ttl)};
        v = eval(replica, write_lua, 4, a, l, err, errlen);
    }
    if (v < 0)
        return REPAIR_FAILED;
    return v == 1 ? REPAIR_WRITTEN : REPAIR_NOTHING;
}
