/*
 * repair -- putting a replica's stale key right, safely.
 *
 * Strategies, by replica kind:
 *   publish (pubsub, default): re-publish the key on the channel so the
 *       cache's subscriber applies it again; with the json format the read on
 *       the primary and the PUBLISH run in one Lua script.
 *   write (pubsub): write the primary's value to the cache with a script that
 *       replaces it only if the cache still holds the value seen as stale.
 *   rewrite (native): re-issue the key on the primary with a script that first
 *       checks it still holds the value compared, so replication carries it
 *       again; for an extra key, create-and-delete in one script.
 * ROLE is checked before any write; nothing is ever written to a native
 * replica. A repair never writes an older value over a newer one: every
 * write is conditional on the value that was compared.
 *
 * Requests (from the API, the CLI or auto-repair) are jobs, executed by the
 * detection engine thread, which owns the divergences; callers wait for a
 * job's outcome a bounded time.
 */
#ifndef KD_REPAIR_H
#define KD_REPAIR_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct detect;

enum repair_trigger { TRIGGER_AUTO, TRIGGER_API, TRIGGER_CLI };

/*
 * Submits a repair job. keys (nkeys of them, binary-safe) on replica (NULL:
 * every replica where the key is open), or every open divergence when
 * all_open. Returns the job id (> 0), or -1 with a reason in err (unknown
 * replica, too many keys, repairs off). Never blocks on Redis.
 */
int64_t repair_submit(struct detect *d, const char *replica, const char *const *keys,
                      const size_t *lens, int nkeys, int all_open, enum repair_trigger trigger,
                      char *err, size_t errlen);

/*
 * The job as JSON: {"id":N,"state":"queued|running|done","trigger":"api",
 * "results":[{"replica":..,"key":..,"key_base64":..,"outcome":"repaired|failed|
 * skipped|dry-run|not-divergent","strategy":..,"error":..}]}, waiting up to
 * wait_ms for it to be done. NULL when the id is unknown (old jobs are
 * forgotten after a while). A new reference.
 */
json_t *repair_job_json(struct detect *d, int64_t id, long long wait_ms);

/* Auto-repair's guard: paused (why in buf) or not; an operator resumes it. */
int repair_paused(struct detect *d, char *why, size_t whylen);
void repair_resume(struct detect *d);

/* ---------------------------------------------- for the detection engine */

#include "compare.h"
#include "config.h"
#include "rconn.h"

enum repair_result {
    REPAIR_WRITTEN, /* a write was made: verify once the replica caught up */
    REPAIR_NOTHING, /* the guard found the value changed: nothing written */
    REPAIR_FAILED,  /* see err */
};

/*
 * Applies one divergence's repair with the replica's strategy. ps/rs are the
 * sides as just fetched (DUMP payloads included). *strategy gets the
 * strategy's name. Checks ROLE first; writes only to the primary (native:
 * rewrite; pubsub: publish) or to the cache itself (pubsub: write).
 */
enum repair_result repair_apply(const struct config *cfg, const struct cfg_replica *rc,
                                struct rconn *primary, struct rconn *replica, const char *key,
                                size_t keylen, enum cmp_kind kind, const struct cmp_side *ps,
                                const struct cmp_side *rs, const char **strategy, char *err,
                                size_t errlen);

/* The strategy used for a replica kind ("rewrite", "publish" or "write"). */
const char *repair_strategy_name(const struct config *cfg, const struct cfg_replica *rc);

#endif
