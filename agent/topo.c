/*
 * topo -- discovery, shards and their workers. See topo.h for the model.
 *
 * hiredis 0.14 knows nothing of Sentinel or Cluster, so both are spoken here
 * over plain connections: Sentinel's SENTINEL commands and +switch-master
 * channel, Cluster's CLUSTER SHARDS / CLUSTER NODES, with the slot of a key
 * computed locally (CRC16, as Redis does).
 */
#include "topo.h"
#include "clock.h"
#include "lag.h"
#include "log.h"
#include "metrics.h"

#include <ctype.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WATCH_TICK_MS 200

static atomic_uint topo_kicks; /* bumped by topo_kick(); each watch compares */

/* ------------------------------------------------------------ helpers */

/* CRC16-CCITT (XModem), the checksum Redis Cluster hashes keys with. */
static uint16_t crc16(const char *buf, size_t len)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)((unsigned char)buf[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = (uint16_t)(crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1);
    }
    return crc;
}

int topo_key_slot(const char *key, size_t len)
{
    size_t s, e;

    for (s = 0; s < len && key[s] != '{'; s++)
        ;
    if (s < len) {
        for (e = s + 1; e < len && key[e] != '}'; e++)
            ;
        if (e < len && e > s + 1)
            return crc16(key + s + 1, e - s - 1) & (TOPO_SLOTS - 1);
    }
    return crc16(key, len) & (TOPO_SLOTS - 1);
}

/* A node's metric label from its address: "ip-port", other bytes as '_'. */
static void node_name(const struct cfg_addr *a, char *out, size_t outsz)
{
    snprintf(out, outsz, "%s-%d", a->host, a->port);
    for (char *p = out; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_' && *p != '.')
            *p = '_';
}

static int addr_eq(const struct cfg_addr *a, const struct cfg_addr *b)
{
    return a->port == b->port && !strcmp(a->host, b->host);
}

static int set_addr(struct cfg_addr *a, const char *host, size_t hl, long long port)
{
    if (hl == 0 || hl >= sizeof(a->host) || port <= 0 || port > 65535)
        return -1;
    memcpy(a->host, host, hl);
    a->host[hl] = '\0';
    a->port = (int)port;
    return 0;
}

/* Adds a native replica at a unless the shard has it already (by address). */
static void add_native(struct topo_shard *s, const struct cfg_addr *a)
{
    if (addr_eq(a, &s->ts_primary) || s->ts_nreplicas >= CFG_MAX_REPLICAS)
        return;
    for (int i = 0; i < s->ts_nreplicas; i++)
        if (addr_eq(a, &s->ts_replicas[i].addr))
            return;
    struct cfg_replica *r = &s->ts_replicas[s->ts_nreplicas++];
    memset(r, 0, sizeof(*r));
    node_name(a, r->name, sizeof(r->name));
    r->addr = *a;
    r->kind = REPLICA_NATIVE;
    r->missing_is_divergence = 1;
}

static int cmp_replica(const void *a, const void *b)
{
    return strcmp(((const struct cfg_replica *)a)->name, ((const struct cfg_replica *)b)->name);
}

static struct rconn *open_conn(const struct config *cfg, const struct cfg_addr *a, int sentinel)
{
    struct rconn_opts o = {.user = sentinel ? cfg->sentinel_user : cfg->redis_user,
                           .password = sentinel ? cfg->sentinel_password : cfg->redis_password,
                           .connect_timeout_ms = cfg->connect_timeout,
                           .command_timeout_ms = cfg->command_timeout,
                           .backoff_max_ms = 1000};
    return rconn_new(a, &o, NULL);
}

/* The string value of a reply element (status, string or integer), in buf. */
static const char *elem_str(const redisReply *e, char *buf, size_t len)
{
    if (e->type == REDIS_REPLY_STRING || e->type == REDIS_REPLY_STATUS)
        snprintf(buf, len, "%.*s", (int)e->len, e->str);
    else if (e->type == REDIS_REPLY_INTEGER)
        snprintf(buf, len, "%lld", e->integer);
    else
        buf[0] = '\0';
    return buf;
}

/* In a flat [k1, v1, k2, v2...] array, the value of key k, or NULL. */
static const redisReply *map_get(const redisReply *m, const char *k)
{
    if (!m || m->type != REDIS_REPLY_ARRAY)
        return NULL;
    for (size_t i = 0; i + 1 < m->elements; i += 2)
        if (m->element[i]->type == REDIS_REPLY_STRING && strlen(k) == m->element[i]->len &&
            !memcmp(m->element[i]->str, k, m->element[i]->len))
            return m->element[i + 1];
    return NULL;
}

/* ------------------------------------------------------------ static, sentinel */

static void resolve_static(const struct config *cfg, struct topo *t)
{
    struct topo_shard *s = &t->t_shards[0];

    memset(s, 0, sizeof(*s));
    snprintf(s->ts_label, sizeof(s->ts_label), "0");
    snprintf(s->ts_primary_name, sizeof(s->ts_primary_name), "primary");
    s->ts_primary = cfg->primary;
    memcpy(s->ts_replicas, cfg->replicas, sizeof(cfg->replicas[0]) * (size_t)cfg->nreplicas);
    s->ts_nreplicas = cfg->nreplicas;
    t->t_nshards = t->t_total = 1;
}

/*
 * Asks one sentinel. The shard gets the master's address, the configured
 * pubsub caches (Sentinel does not know them) and every replica Sentinel
 * lists that is not flagged down or disconnected.
 */
static int ask_sentinel(const struct config *cfg, const struct cfg_addr *sa, struct topo *t,
                        char *err, size_t errlen)
{
    struct rconn *c = open_conn(cfg, sa, 1);
    struct topo_shard *s = &t->t_shards[0];
    redisReply *r = NULL;
    int rc = -1;
    char buf[CFG_HOST_MAX];

    if (!c)
        return -1;
    r = rconn_command(c, "SENTINEL get-master-addr-by-name %s", cfg->discovery_master);
    if (!r) {
        snprintf(err, errlen, "sentinel %s", rconn_errstr(c));
        goto out;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
        snprintf(err, errlen, "sentinel %s:%d: %s", sa->host, sa->port,
                 r->type == REDIS_REPLY_ERROR ? r->str : "does not know the master");
        goto out;
    }
    memset(s, 0, sizeof(*s));
    snprintf(s->ts_label, sizeof(s->ts_label), "0");
    snprintf(s->ts_primary_name, sizeof(s->ts_primary_name), "primary");
    char pb[16];
    elem_str(r->element[0], buf, sizeof(buf));
    if (set_addr(&s->ts_primary, buf, strlen(buf), atoll(elem_str(r->element[1], pb, sizeof(pb)))) <
        0) {
        snprintf(err, errlen, "sentinel %s:%d: bad master address", sa->host, sa->port);
        goto out;
    }
    for (int i = 0; i < cfg->nreplicas; i++)
        if (cfg->replicas[i].kind == REPLICA_PUBSUB && s->ts_nreplicas < CFG_MAX_REPLICAS)
            s->ts_replicas[s->ts_nreplicas++] = cfg->replicas[i];
    int npub = s->ts_nreplicas;
    freeReplyObject(r);
    r = rconn_command(c, "SENTINEL replicas %s", cfg->discovery_master);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        snprintf(err, errlen, "sentinel %s:%d: SENTINEL replicas: %s", sa->host, sa->port,
                 r && r->type == REDIS_REPLY_ERROR ? r->str : rconn_errstr(c));
        goto out;
    }
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *ip = map_get(r->element[i], "ip");
        const redisReply *port = map_get(r->element[i], "port");
        const redisReply *flags = map_get(r->element[i], "flags");
        char fl[256];
        struct cfg_addr a;
        if (!ip || !port)
            continue;
        elem_str(flags ? flags : ip, fl, sizeof(fl));
        if (flags && (strstr(fl, "s_down") || strstr(fl, "o_down") || strstr(fl, "disconnected")))
            continue;
        elem_str(ip, buf, sizeof(buf));
        if (set_addr(&a, buf, strlen(buf), atoll(elem_str(port, pb, sizeof(pb)))) == 0)
            add_native(s, &a);
    }
    /* Discovered replicas in a stable order, so equal topologies compare equal. */
    qsort(s->ts_replicas + npub, (size_t)(s->ts_nreplicas - npub), sizeof(s->ts_replicas[0]),
          cmp_replica);
    t->t_nshards = t->t_total = 1;
    rc = 0;
out:
    if (r)
        freeReplyObject(r);
    rconn_free(c);
    return rc;
}

static int resolve_sentinel(const struct config *cfg, struct topo *t, char *err, size_t errlen)
{
    for (int i = 0; i < cfg->ndiscovery_addrs; i++)
        if (ask_sentinel(cfg, &cfg->discovery_addrs[i], t, err, errlen) == 0)
            return 0;
    return -1;
}

/* ------------------------------------------------------------ cluster */

/* A shard as parsed, before sorting: the primary's id links replicas (CLUSTER NODES). */
struct raw_shard {
    char id[64];
    struct topo_shard sh;
    int has_primary;
};

static int first_slot(const struct topo_shard *s)
{
    int m = TOPO_SLOTS;
    for (int i = 0; i < s->ts_nranges; i++)
        if (s->ts_ranges[i][0] < m)
            m = s->ts_ranges[i][0];
    return m;
}

static int cmp_shard(const void *a, const void *b)
{
    return first_slot(&((const struct raw_shard *)a)->sh) -
           first_slot(&((const struct raw_shard *)b)->sh);
}

static void add_range(struct topo_shard *s, int lo, int hi)
{
    if (lo < 0 || hi >= TOPO_SLOTS || lo > hi || s->ts_nranges >= TOPO_MAX_RANGES)
        return;
    s->ts_ranges[s->ts_nranges][0] = lo;
    s->ts_ranges[s->ts_nranges][1] = hi;
    s->ts_nranges++;
}

/* Parses a CLUSTER SHARDS reply (Redis 7.0+) into raw shards. Returns the count. */
static int parse_shards(const redisReply *r, struct raw_shard *out, int max)
{
    int n = 0;
    char buf[CFG_HOST_MAX], pb[16];

    for (size_t i = 0; i < r->elements && n < max; i++) {
        const redisReply *slots = map_get(r->element[i], "slots");
        const redisReply *nodes = map_get(r->element[i], "nodes");
        struct raw_shard *rs = &out[n];
        if (!slots || !nodes || slots->type != REDIS_REPLY_ARRAY ||
            nodes->type != REDIS_REPLY_ARRAY)
            continue;
        memset(rs, 0, sizeof(*rs));
        for (size_t k = 0; k + 1 < slots->elements; k += 2)
            add_range(&rs->sh, (int)atoll(elem_str(slots->element[k], pb, sizeof(pb))),
                      (int)atoll(elem_str(slots->element[k + 1], pb, sizeof(pb))));
        for (size_t k = 0; k < nodes->elements; k++) {
            const redisReply *nd = nodes->element[k];
            const redisReply *ip = map_get(nd, "ip"), *port = map_get(nd, "port");
            if (!port) /* a TLS-only node (tls-cluster yes, port 0) */
                port = map_get(nd, "tls-port");
            const redisReply *role = map_get(nd, "role"), *health = map_get(nd, "health");
            struct cfg_addr a;
            char rl[16], hl[16];
            if (!ip || !port || !role)
                continue;
            elem_str(ip, buf, sizeof(buf));
            if (set_addr(&a, buf, strlen(buf), atoll(elem_str(port, pb, sizeof(pb)))) < 0)
                continue;
            elem_str(role, rl, sizeof(rl));
            elem_str(health ? health : role, hl, sizeof(hl));
            if (!strcmp(rl, "master")) {
                rs->sh.ts_primary = a;
                rs->has_primary = 1;
            } else if (!health || strcmp(hl, "failed") != 0) {
                /* "loading" included: 7.0 reports a replica that has seen no
                 * write yet (offset 0) as loading; the lag poller tells. */
                add_native(&rs->sh, &a);
            }
        }
        if (rs->has_primary && rs->sh.ts_nranges > 0)
            n++;
    }
    return n;
}

/*
 * Parses CLUSTER NODES text (before 7.0): primaries with slots become shards;
 * replicas join their primary's by id; failed or handshaking nodes are skipped.
 */
static int parse_nodes(const char *text, struct raw_shard *out, int max)
{
    int n = 0;
    const char *line = text;

    /* Two passes: primaries first, so a replica line can find its shard. */
    for (int pass = 0; pass < 2; pass++) {
        for (line = text; line && *line;) {
            const char *nl = strchr(line, '\n');
            size_t ll = nl ? (size_t)(nl - line) : strlen(line);
            char l[8192], *f[8 + TOPO_MAX_RANGES], *save = NULL;
            int nf = 0;
            if (ll < sizeof(l)) {
                memcpy(l, line, ll);
                l[ll] = '\0';
                for (char *p = strtok_r(l, " \r", &save); p && nf < (int)(sizeof(f) / sizeof(f[0]));
                     p = strtok_r(NULL, " \r", &save))
                    f[nf++] = p;
            }
            line = nl ? nl + 1 : NULL;
            if (nf < 8 || strstr(f[2], "fail") || strstr(f[2], "handshake") ||
                strstr(f[2], "noaddr"))
                continue;
            char *at = strchr(f[1], '@'), *colon;
            if (at)
                *at = '\0';
            colon = strrchr(f[1], ':');
            struct cfg_addr a;
            if (!colon || set_addr(&a, f[1], (size_t)(colon - f[1]), atoll(colon + 1)) < 0)
                continue;
            int is_master = strstr(f[2], "master") != NULL;
            if (pass == 0 && is_master && nf > 8 && n < max) {
                struct raw_shard *rs = &out[n];
                memset(rs, 0, sizeof(*rs));
                snprintf(rs->id, sizeof(rs->id), "%s", f[0]);
                rs->sh.ts_primary = a;
                rs->has_primary = 1;
                for (int k = 8; k < nf; k++) {
                    int lo, hi;
                    if (f[k][0] == '[')
                        continue; /* importing / migrating */
                    if (sscanf(f[k], "%d-%d", &lo, &hi) == 2)
                        add_range(&rs->sh, lo, hi);
                    else if (sscanf(f[k], "%d", &lo) == 1)
                        add_range(&rs->sh, lo, lo);
                }
                if (rs->sh.ts_nranges > 0)
                    n++;
            } else if (pass == 1 && !is_master) {
                for (int k = 0; k < n; k++)
                    if (!strcmp(out[k].id, f[3]))
                        add_native(&out[k].sh, &a);
            }
        }
    }
    return n;
}

/* The first "{kdN}" whose slot the shard owns: the shard's heartbeat hash tag. */
static void find_tag(struct topo_shard *s)
{
    for (int n = 0; n < 1000000; n++) {
        char tag[16];
        int len = snprintf(tag, sizeof(tag), "{kd%d}", n);
        int slot = topo_key_slot(tag, (size_t)len);
        for (int i = 0; i < s->ts_nranges; i++) {
            if (slot >= s->ts_ranges[i][0] && slot <= s->ts_ranges[i][1]) {
                snprintf(s->ts_tag, sizeof(s->ts_tag), "%s", tag);
                return;
            }
        }
    }
}

static int resolve_cluster(const struct config *cfg, struct topo *t, char *err, size_t errlen)
{
    struct raw_shard *raw = calloc(TOPO_MAX_SHARDS, sizeof(*raw));
    int n = -1;

    if (!raw) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (int i = 0; i < cfg->ndiscovery_addrs && n < 0; i++) {
        const struct cfg_addr *sa = &cfg->discovery_addrs[i];
        struct rconn *c = open_conn(cfg, sa, 0);
        redisReply *r = c ? rconn_command(c, "CLUSTER SHARDS") : NULL;
        if (r && r->type == REDIS_REPLY_ARRAY) {
            n = parse_shards(r, raw, TOPO_MAX_SHARDS);
        } else if (r && r->type == REDIS_REPLY_ERROR && strstr(r->str, "unknown")) {
            freeReplyObject(r);
            r = rconn_command(c, "CLUSTER NODES");
            if (r && r->type == REDIS_REPLY_STRING)
                n = parse_nodes(r->str, raw, TOPO_MAX_SHARDS);
        }
        if (n < 0)
            snprintf(err, errlen, "cluster seed %s:%d: %s", sa->host, sa->port,
                     r && r->type == REDIS_REPLY_ERROR ? r->str
                                                       : (c ? rconn_errstr(c) : "out of memory"));
        if (r)
            freeReplyObject(r);
        rconn_free(c);
    }
    if (n == 0) {
        snprintf(err, errlen, "the cluster has no primary that owns slots");
        n = -1;
    }
    if (n < 0) {
        free(raw);
        return -1;
    }
    qsort(raw, (size_t)n, sizeof(*raw), cmp_shard);
    t->t_total = n;
    t->t_nshards = 0;
    for (int i = 0; i < n; i++) {
        struct topo_shard *s = &raw[i].sh;
        if (i % cfg->shard_count != cfg->shard_index - 1)
            continue;
        s->ts_index = i;
        snprintf(s->ts_label, sizeof(s->ts_label), "%d", i);
        node_name(&s->ts_primary, s->ts_primary_name, sizeof(s->ts_primary_name));
        qsort(s->ts_replicas, (size_t)s->ts_nreplicas, sizeof(s->ts_replicas[0]), cmp_replica);
        find_tag(s);
        t->t_shards[t->t_nshards++] = *s;
    }
    free(raw);
    return 0;
}

/* The address a discovered node at a is reached at (address-map). */
static void map_addr(const struct config *cfg, struct cfg_addr *a)
{
    for (int i = 0; i < cfg->naddr_map; i++)
        if (addr_eq(a, &cfg->addr_map[i].from)) {
            *a = cfg->addr_map[i].to;
            return;
        }
}

/*
 * Discovery reports the nodes' own addresses; each is replaced by where
 * address-map says it is reached. Names stay those of the discovered
 * addresses, so they do not depend on the way in.
 */
static void map_topo(const struct config *cfg, struct topo *t)
{
    for (int i = 0; i < t->t_nshards; i++) {
        struct topo_shard *s = &t->t_shards[i];
        map_addr(cfg, &s->ts_primary);
        for (int k = 0; k < s->ts_nreplicas; k++)
            if (s->ts_replicas[k].kind == REPLICA_NATIVE)
                map_addr(cfg, &s->ts_replicas[k].addr);
    }
}

int topo_resolve(const struct config *cfg, struct topo *t, char *err, size_t errlen)
{
    int rc;

    switch (cfg->discovery) {
    case DISCOVERY_SENTINEL:
        rc = resolve_sentinel(cfg, t, err, errlen);
        break;
    case DISCOVERY_CLUSTER:
        rc = resolve_cluster(cfg, t, err, errlen);
        break;
    case DISCOVERY_STATIC:
    default:
        resolve_static(cfg, t);
        return 0;
    }
    if (rc == 0)
        map_topo(cfg, t);
    return rc;
}

int topo_equal(const struct topo *a, const struct topo *b)
{
    if (a->t_nshards != b->t_nshards || a->t_total != b->t_total)
        return 0;
    for (int i = 0; i < a->t_nshards; i++) {
        const struct topo_shard *x = &a->t_shards[i], *y = &b->t_shards[i];
        if (!addr_eq(&x->ts_primary, &y->ts_primary) || x->ts_nreplicas != y->ts_nreplicas ||
            x->ts_nranges != y->ts_nranges || strcmp(x->ts_label, y->ts_label) != 0 ||
            memcmp(x->ts_ranges, y->ts_ranges, sizeof(x->ts_ranges[0]) * (size_t)x->ts_nranges))
            return 0;
        for (int k = 0; k < x->ts_nreplicas; k++)
            if (strcmp(x->ts_replicas[k].name, y->ts_replicas[k].name) != 0 ||
                !addr_eq(&x->ts_replicas[k].addr, &y->ts_replicas[k].addr) ||
                x->ts_replicas[k].kind != y->ts_replicas[k].kind)
                return 0;
    }
    return 1;
}

/* True when some shard of b has a primary that no shard of a has. */
static int primary_changed(const struct topo *a, const struct topo *b)
{
    for (int i = 0; i < b->t_nshards; i++) {
        int found = 0;
        for (int k = 0; k < a->t_nshards && !found; k++)
            found = addr_eq(&a->t_shards[k].ts_primary, &b->t_shards[i].ts_primary);
        if (!found)
            return 1;
    }
    return 0;
}

void topo_describe(const struct topo_shard *s, char *buf, size_t len)
{
    size_t o = (size_t)snprintf(buf, len, "shard %s: primary %s:%d", s->ts_label,
                                s->ts_primary.host, s->ts_primary.port);
    for (int i = 0; i < s->ts_nreplicas && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, "%s%s", i ? ", " : ", replicas ",
                              s->ts_replicas[i].name);
}

/* ------------------------------------------------------------ units */

int topo_unit_start(struct topo_unit *u, const struct config *base, const struct topo_shard *s,
                    struct rnode *primary, struct rnode *replicas, struct store *store)
{
    u->u_shard = *s;
    /* The view: every option as configured; the shard's nodes; the borrowed
     * strings stay owned by base (the view is never passed to cfg_free). */
    u->u_cfg = *base;
    u->u_cfg.primary = s->ts_primary;
    memcpy(u->u_cfg.replicas, s->ts_replicas, sizeof(s->ts_replicas[0]) * (size_t)s->ts_nreplicas);
    u->u_cfg.nreplicas = s->ts_nreplicas;
    /* In a cluster the heartbeat key must hash to this shard: the tag comes
     * first, so braces in the agent-id cannot change the slot. */
    if (s->ts_tag[0])
        snprintf(u->u_agent_id, sizeof(u->u_agent_id), "%s:%s", s->ts_tag, base->agent_id);
    else
        snprintf(u->u_agent_id, sizeof(u->u_agent_id), "%s", base->agent_id);
    u->u_cfg.agent_id = u->u_agent_id;

    u->u_primary = primary ? primary : &u->u_own_primary;
    u->u_replicas = replicas ? replicas : u->u_own_replicas;
    memset(u->u_primary, 0, sizeof(*u->u_primary));
    snprintf(u->u_primary->rn_name, sizeof(u->u_primary->rn_name), "%s", s->ts_primary_name);
    snprintf(u->u_primary->rn_role, sizeof(u->u_primary->rn_role), "primary");
    u->u_primary->rn_addr = s->ts_primary;
    for (int i = 0; i < s->ts_nreplicas; i++) {
        struct rnode *n = &u->u_replicas[i];
        memset(n, 0, sizeof(*n));
        snprintf(n->rn_name, sizeof(n->rn_name), "%s", s->ts_replicas[i].name);
        snprintf(n->rn_role, sizeof(n->rn_role), "%s",
                 s->ts_replicas[i].kind == REPLICA_NATIVE ? "replica" : "cache");
        n->rn_addr = s->ts_replicas[i].addr;
    }
    u->u_ndetect = 0;
    u->u_lag = lag_start(&u->u_cfg, u->u_primary, u->u_replicas, store);
    return u->u_lag ? 0 : -1;
}

void topo_unit_start_detect(struct topo_unit *u, const struct detect_opts *tmpl,
                            struct store *store)
{
    /* A one-pass check scans whatever sample-modes says; the daemon honours "none". */
    if (!u->u_lag || (!u->u_cfg.modes && !tmpl->one_pass) || u->u_cfg.nreplicas == 0)
        return;
    /* One engine per db: each scans only its db on this shard's primary. */
    for (int k = 0; k < u->u_cfg.ndbs; k++) {
        struct detect_opts o = *tmpl;
        o.cfg = &u->u_cfg;
        o.primary = u->u_primary;
        o.replicas = u->u_replicas;
        o.lag = u->u_lag;
        o.store = store;
        o.db = u->u_cfg.dbs[k];
        u->u_detect[u->u_ndetect] = detect_start(&o);
        if (u->u_detect[u->u_ndetect])
            u->u_dbs[u->u_ndetect++] = o.db;
        else
            log_errorx("shard %s db %d: cannot start the detection engine", u->u_shard.ts_label,
                       o.db);
    }
}

void topo_unit_stop(struct topo_unit *u)
{
    for (int k = 0; k < u->u_ndetect; k++)
        detect_stop(u->u_detect[k]);
    u->u_ndetect = 0;
    lag_stop(u->u_lag);
    u->u_lag = NULL;
}

/* ------------------------------------------------------------ watch */

struct topo_watch {
    struct config w_cfg; /* a shallow copy: strings borrowed from the agent's config */
    pthread_t w_thr;
    volatile int w_stop;
    unsigned w_kicks;
    pthread_mutex_t w_mu;
    struct topo *w_cur;     /* what the thread last resolved (thread only) */
    struct topo *w_pending; /* a change not yet taken by topo_watch_poll, under w_mu */
    int w_has_pending;
    const char *w_why;
    int w_failing; /* the last resolution failed (log once per failure streak) */
};

void topo_kick(void)
{
    atomic_fetch_add(&topo_kicks, 1);
}

static struct metric_family *m_shard_info, *m_disc_up, *m_changes, *m_shard_checked,
    *m_shard_progress;

/* Re-resolves; on a difference from w_cur, hands the new topology to the agent. */
static void refresh(struct topo_watch *w, struct topo *scratch)
{
    char err[CFG_ERR_MAX];

    if (topo_resolve(&w->w_cfg, scratch, err, sizeof(err)) < 0) {
        if (!w->w_failing)
            log_warnx("discovery: %s; keeping the current topology and retrying", err);
        w->w_failing = 1;
        metric_set(metrics_series0(m_disc_up), 0);
        return;
    }
    if (w->w_failing)
        log_notice("discovery: answering again");
    w->w_failing = 0;
    metric_set(metrics_series0(m_disc_up), 1);
    if (topo_equal(w->w_cur, scratch))
        return;
    const char *why = primary_changed(w->w_cur, scratch) ? "failover" : "topology";
    *w->w_cur = *scratch;
    pthread_mutex_lock(&w->w_mu);
    /* A failover not yet taken stays one when a later look changes more. */
    if (!w->w_has_pending || strcmp(w->w_why, "failover") != 0)
        w->w_why = why;
    *w->w_pending = *scratch;
    w->w_has_pending = 1;
    pthread_mutex_unlock(&w->w_mu);
    metric_inc(metrics_series1(m_changes, why));
}

/*
 * Sentinel only: keeps a subscription to +switch-master on one sentinel
 * (rotating through them when one fails) and waits up to a tick for a
 * message. Returns 1 when our master switched.
 */
static int sentinel_wait(struct topo_watch *w, struct rconn **sub, int *which, int *subscribed)
{
    redisReply *r = NULL;

    if (!*sub) {
        *sub = open_conn(&w->w_cfg, &w->w_cfg.discovery_addrs[*which], 1);
        *subscribed = 0;
    }
    if (!*subscribed) {
        if (rconn_ensure(*sub) < 0 || rconn_append(*sub, "SUBSCRIBE +switch-master") < 0) {
            rconn_free(*sub);
            *sub = NULL;
            *which = (*which + 1) % w->w_cfg.ndiscovery_addrs;
            usleep(WATCH_TICK_MS * 1000);
            return 0;
        }
        *subscribed = 1;
    }
    int rc = rconn_poll_reply(*sub, WATCH_TICK_MS, &r);
    if (rc < 0) {
        log_warnx("discovery: lost the +switch-master subscription: %s", rconn_errstr(*sub));
        rconn_free(*sub);
        *sub = NULL;
        *which = (*which + 1) % w->w_cfg.ndiscovery_addrs;
        return 1; /* a re-query costs little and may catch what we missed */
    }
    if (rc == 0 || !r)
        return 0;
    int hit = 0;
    /* ["message", "+switch-master", "<name> <old-ip> <old-port> <new-ip> <new-port>"] */
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
        r->element[2]->type == REDIS_REPLY_STRING) {
        size_t nl = strlen(w->w_cfg.discovery_master);
        hit = r->element[2]->len > nl && r->element[2]->str[nl] == ' ' &&
              !memcmp(r->element[2]->str, w->w_cfg.discovery_master, nl);
        if (hit)
            log_notice("discovery: sentinel reports +switch-master %.*s", (int)r->element[2]->len,
                       r->element[2]->str);
    }
    freeReplyObject(r);
    return hit;
}

/* The watch thread: waits for events or the refresh interval, then re-resolves. */
static void *watch_main(void *arg)
{
    struct topo_watch *w = arg;
    struct topo *scratch = malloc(sizeof(*scratch));
    struct rconn *sub = NULL;
    int which = 0, subscribed = 0;
    uint64_t every_us = (uint64_t)w->w_cfg.discovery_interval * 1000u;
    uint64_t next = clock_mono_us() + every_us;

    if (!scratch)
        return NULL;
    while (!w->w_stop) {
        int now_please = 0;
        if (w->w_cfg.discovery == DISCOVERY_SENTINEL)
            now_please = sentinel_wait(w, &sub, &which, &subscribed);
        else
            usleep(WATCH_TICK_MS * 1000);
        unsigned k = atomic_load(&topo_kicks);
        if (k != w->w_kicks) {
            w->w_kicks = k;
            now_please = 1;
        }
        if (now_please || clock_mono_us() >= next) {
            refresh(w, scratch);
            /* Without a working topology, try again every second. */
            int lost = w->w_failing || w->w_cur->t_nshards == 0;
            next = clock_mono_us() + (lost && every_us > 1000000u ? 1000000u : every_us);
        }
    }
    rconn_free(sub);
    free(scratch);
    return NULL;
}

struct topo_watch *topo_watch_start(const struct config *cfg, const struct topo *cur)
{
    struct topo_watch *w;

    if (cfg->discovery == DISCOVERY_STATIC || cfg->ndiscovery_addrs == 0)
        return NULL;
    w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->w_cfg = *cfg;
    w->w_cur = malloc(sizeof(*w->w_cur));
    w->w_pending = malloc(sizeof(*w->w_pending));
    if (!w->w_cur || !w->w_pending)
        goto fail;
    *w->w_cur = *cur;
    w->w_kicks = atomic_load(&topo_kicks);
    pthread_mutex_init(&w->w_mu, NULL);
    if (pthread_create(&w->w_thr, NULL, watch_main, w) != 0) {
        pthread_mutex_destroy(&w->w_mu);
        goto fail;
    }
    return w;
fail:
    log_errorx("discovery: cannot start the topology watch");
    free(w->w_cur);
    free(w->w_pending);
    free(w);
    return NULL;
}

void topo_watch_stop(struct topo_watch *w)
{
    if (!w)
        return;
    w->w_stop = 1;
    pthread_join(w->w_thr, NULL);
    pthread_mutex_destroy(&w->w_mu);
    free(w->w_cur);
    free(w->w_pending);
    free(w);
}

struct topo *topo_watch_poll(struct topo_watch *w, const char **why)
{
    struct topo *t = NULL;

    if (!w)
        return NULL;
    pthread_mutex_lock(&w->w_mu);
    if (w->w_has_pending && (t = malloc(sizeof(*t))) != NULL) {
        *t = *w->w_pending;
        *why = w->w_why;
        w->w_has_pending = 0;
    }
    pthread_mutex_unlock(&w->w_mu);
    return t;
}

/* ------------------------------------------------------------ metrics */

void topo_metrics_init(void)
{
    static const char *const sl[] = {"shard", "primary"};
    static const char *const wl[] = {"reason"};
    static const char *const dl[] = {"shard", "db"};

    m_shard_info = metrics_family("keydrift_shard_info",
                                  "1 for each shard (replication group) this agent watches; "
                                  "shard is its index by first slot, primary its address.",
                                  METRIC_GAUGE, 2, sl);
    m_disc_up = metrics_family("keydrift_discovery_up",
                               "1 when the last Sentinel or Cluster topology query succeeded.",
                               METRIC_GAUGE, 0, NULL);
    m_shard_checked = metrics_family("keydrift_shard_keys_checked_total",
                                     "Keys compared by the detection engine of each shard and db.",
                                     METRIC_COUNTER, 2, dl);
    m_shard_progress = metrics_family("keydrift_shard_scan_progress_ratio",
                                      "Progress of the current SCAN cycle of each shard and db.",
                                      METRIC_GAUGE, 2, dl);
    m_changes = metrics_family("keydrift_topology_changes_total",
                               "Topology changes the agent followed (reason failover: a new "
                               "primary; topology: replicas or shards changed).",
                               METRIC_COUNTER, 1, wl);
    /* Both reasons exist at 0 from the start, so rates have data. */
    metrics_series1(m_changes, "failover");
    metrics_series1(m_changes, "topology");
}

void topo_metrics_set(const struct topo *t)
{
    metrics_family_reset(m_shard_info);
    for (int i = 0; i < t->t_nshards; i++) {
        char a[CFG_HOST_MAX + 8];
        snprintf(a, sizeof(a), "%s:%d", t->t_shards[i].ts_primary.host,
                 t->t_shards[i].ts_primary.port);
        metric_set(metrics_series2(m_shard_info, t->t_shards[i].ts_label, a), 1);
    }
}

void topo_units_progress(struct topo_unit *units, int n, struct detect_progress *sum)
{
    double weighted = 0, plain = 0;
    int engines = 0;

    memset(sum, 0, sizeof(*sum));
    sum->watch_enabled = 1;
    for (int u = 0; u < n; u++) {
        for (int k = 0; k < units[u].u_ndetect; k++) {
            struct detect_progress p;
            detect_progress(units[u].u_detect[k], &p);
            if (engines++ == 0 || p.cycles < sum->cycles)
                sum->cycles = p.cycles;
            sum->keys_checked += p.keys_checked;
            sum->keys_in_db += p.keys_in_db;
            sum->suspects += p.suspects;
            sum->open += p.open;
            sum->watch_enabled &= p.watch_enabled;
            if (p.cycle_seconds > sum->cycle_seconds)
                sum->cycle_seconds = p.cycle_seconds;
            sum->replica_scanned += p.replica_scanned;
            sum->replica_keys += p.replica_keys;
            sum->errors += p.errors;
            weighted += p.scan_progress * (double)p.keys_in_db;
            plain += p.scan_progress;
            if (p.error[0] && !sum->error[0])
                snprintf(sum->error, sizeof(sum->error), "%s", p.error);
        }
    }
    if (!engines)
        sum->watch_enabled = 0;
    else
        sum->scan_progress = sum->keys_in_db ? weighted / (double)sum->keys_in_db : plain / engines;
}

/* Whether a replica of a unit before u is named name. */
static int named_before(const struct topo_unit *units, int u, const char *name)
{
    for (int e = 0; e < u; e++)
        for (int j = 0; j < units[e].u_cfg.nreplicas; j++)
            if (!strcmp(units[e].u_cfg.replicas[j].name, name))
                return 1;
    return 0;
}

void topo_units_ratio(struct topo_unit *units, int n)
{
    for (int u = 0; u < n; u++) {
        for (int i = 0; i < units[u].u_cfg.nreplicas; i++) {
            const char *name = units[u].u_cfg.replicas[i].name;
            long total = 0, divergent = 0, wn, wd;
            if (named_before(units, u, name))
                continue; /* summed there */
            for (int e = u; e < n; e++) {
                for (int j = 0; j < units[e].u_cfg.nreplicas; j++) {
                    if (strcmp(units[e].u_cfg.replicas[j].name, name))
                        continue;
                    for (int k = 0; k < units[e].u_ndetect; k++) {
                        detect_random_window(units[e].u_detect[k], j, &wn, &wd);
                        total += wn;
                        divergent += wd;
                    }
                }
            }
            detect_ratio_publish(name, total, divergent);
        }
    }
}

void topo_unit_collect(struct topo_unit *u)
{
    if (u->u_lag)
        lag_collect(u->u_lag);
    for (int k = 0; k < u->u_ndetect; k++) {
        struct detect_progress p;
        char db[16];
        detect_progress(u->u_detect[k], &p);
        snprintf(db, sizeof(db), "%d", u->u_dbs[k]);
        metric_set(metrics_series2(m_shard_checked, u->u_shard.ts_label, db),
                   (double)p.keys_checked);
        metric_set(metrics_series2(m_shard_progress, u->u_shard.ts_label, db), p.scan_progress);
    }
}
