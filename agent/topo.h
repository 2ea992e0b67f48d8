/*
 * topo -- the topology the agent runs: discovery (static, Sentinel, Cluster)
 * resolved into replication groups ("shards"), and the workers of each.
 *
 * A shard is one primary with its replicas. Static and Sentinel deployments
 * are one shard; a Redis Cluster has one per primary that owns slots, and
 * `shard-index i/n` keeps those whose index (shards sorted by their first
 * slot, counted from 0) satisfies index % n == i-1.
 *
 * A topo_unit runs one shard: its own lag monitor (its own heartbeat key,
 * hash-tagged into the shard's slots in cluster mode) and one detection
 * engine per configured db. A unit's config is a view of the agent's: the
 * same option values (borrowed strings, never freed through the view) with
 * the shard's primary, replicas and heartbeat agent-id.
 *
 * A topo_watch thread keeps the topology current (Sentinel: +switch-master
 * plus a periodic re-query; Cluster: a periodic re-read, sooner after a
 * topo_kick()). It never touches agent state: the agent polls it and swaps
 * its workers when it reports a change.
 */
#ifndef KD_TOPO_H
#define KD_TOPO_H

#include <stdint.h>

#include "config.h"
#include "detect.h"
#include "rconn.h"

#define TOPO_MAX_SHARDS 128
#define TOPO_MAX_RANGES 64
#define TOPO_SLOTS      16384

struct store;
struct lag;

struct topo_shard {
    int ts_index;      /* position among all shards, by first slot (0 outside a cluster) */
    char ts_label[16]; /* the `shard` metric label: ts_index in decimal */
    char ts_primary_name[CFG_NAME_MAX]; /* node label: "primary", or "ip-port" in a cluster */
    struct cfg_addr ts_primary;
    struct cfg_replica ts_replicas[CFG_MAX_REPLICAS];
    int ts_nreplicas;
    int ts_ranges[TOPO_MAX_RANGES][2]; /* cluster: slot ranges, inclusive */
    int ts_nranges;
    char ts_tag[16]; /* cluster: "{kdN}", a hash tag whose slot the shard owns; "" otherwise */
};

struct topo {
    int t_nshards; /* shards this agent runs (after shard-index) */
    int t_total;   /* shards discovered in all */
    struct topo_shard t_shards[TOPO_MAX_SHARDS];
};

/*
 * Resolves cfg's discovery into t (the caller's, overwritten). Static: the
 * configured primary and replicas. Sentinel: asks each sentinel in turn for
 * the master's address and its healthy replicas (named "ip-port"), plus the
 * configured replicas (pubsub caches). Cluster: CLUSTER SHARDS (CLUSTER NODES
 * before 7.0) from the first seed that answers. Returns 0, or -1 with why in
 * err. Blocks for at most about connect-timeout per address tried.
 */
int topo_resolve(const struct config *cfg, struct topo *t, char *err, size_t errlen);
/* True when a and b name the same nodes in the same roles. */
int topo_equal(const struct topo *a, const struct topo *b);
/* The Redis Cluster hash slot of a key (CRC16 of its hash tag or whole name). Pure. */
int topo_key_slot(const char *key, size_t len);
/* One line describing a shard's nodes, for logs and events. */
void topo_describe(const struct topo_shard *s, char *buf, size_t len);

/* ------------------------------------------------------------ units */

struct topo_unit {
    struct config u_cfg; /* a view of the agent's config; see above */
    char u_agent_id[CFG_NAME_MAX + 64];
    struct topo_shard u_shard;
    struct rnode *u_primary; /* the caller's nodes, or u_own_* */
    struct rnode *u_replicas;
    struct rnode u_own_primary;
    struct rnode u_own_replicas[CFG_MAX_REPLICAS];
    struct lag *u_lag;
    struct detect *u_detect[CFG_MAX_DBS];
    int u_dbs[CFG_MAX_DBS]; /* the db of each engine */
    int u_ndetect;
};

/*
 * Starts unit u for shard s under base (which must outlive the unit): sets
 * up its config view and nodes (primary/replicas may be NULL to use the
 * unit's own, else arrays the caller keeps) and starts its lag monitor.
 * Returns 0, or -1 when the lag monitor could not start.
 */
int topo_unit_start(struct topo_unit *u, const struct config *base, const struct topo_shard *s,
                    struct rnode *primary, struct rnode *replicas, struct store *store);
/*
 * Starts one detection engine per db of the unit's config from the template
 * tmpl (cfg, primary, replicas, lag, store and db are filled in); none when
 * detection is off or the shard has no replica.
 */
void topo_unit_start_detect(struct topo_unit *u, const struct detect_opts *tmpl,
                            struct store *store);
/* Stops a unit's engines and lag monitor; u may be reused afterwards. */
void topo_unit_stop(struct topo_unit *u);
/*
 * The progress of every engine of n units as one: counts summed, cycles the
 * fewest any engine finished, scan progress weighted by each engine's keys,
 * watch enabled when it is on every engine, the first error.
 */
void topo_units_progress(struct topo_unit *units, int n, struct detect_progress *sum);
/*
 * Publishes keydrift_divergence_ratio for every replica of n units, over
 * the random samples of every engine (db) that samples it.
 */
void topo_units_ratio(struct topo_unit *units, int n);

/* ------------------------------------------------------------ watch */

struct topo_watch;

/* Starts the watch thread on a copy of cfg's discovery settings, from topology cur. */
struct topo_watch *topo_watch_start(const struct config *cfg, const struct topo *cur);
void topo_watch_stop(struct topo_watch *w);
/*
 * When the topology changed since the last call, returns the new one (the
 * caller frees it) with *why set to "failover" when a primary changed, else
 * "topology"; NULL otherwise. Never blocks for long.
 */
struct topo *topo_watch_poll(struct topo_watch *w, const char **why);
/* Asks every watch to re-read the topology now (a MOVED reply, a primary that is no master). */
void topo_kick(void);

/* Registers keydrift_shard_info and the discovery metrics (once). */
void topo_metrics_init(void);
/* Publishes t as keydrift_shard_info{shard,primary} series. */
void topo_metrics_set(const struct topo *t);
/*
 * Sets a unit's metrics at render time: its lag monitor's, and per engine
 * keydrift_shard_keys_checked_total / keydrift_shard_scan_progress_ratio
 * labelled {shard,db}.
 */
void topo_unit_collect(struct topo_unit *u);

#endif
