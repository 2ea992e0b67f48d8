/*
 * api -- the agent's JSON API and status page (see api.h and docs/http-api.md).
 *
 * Every handler takes the agent's lock for reading while it looks at the
 * configuration, the lag monitor, the detection engine or the store, so a
 * reload (which takes it for writing) never frees what a handler uses. The
 * longest a handler holds it is a repair request's bounded wait.
 */
#include "api.h"
#include "agent.h"
#include "clock.h"
#include "detect.h"
#include "http.h"
#include "lag.h"
#include "log.h"
#include "repair.h"
#include "store.h"
#include "textenc.h"
#include "topo.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <unistd.h>

/* ------------------------------------------------------------ pure parsers */

int api_token_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    /* Walks all of b whatever a holds, so timing says nothing about a's bytes. */
    volatile unsigned char diff = alen != blen;
    for (size_t i = 0; i < blen; i++)
        diff |= (unsigned char)b[i] ^ (unsigned char)(alen ? a[i % alen] : 0);
    return diff == 0;
}

int api_check_bearer(const char *header, const char *token)
{
    if (!header)
        return -1;
    while (*header == ' ' || *header == '\t')
        header++;
    if (strncasecmp(header, "Bearer", 6) != 0 || (header[6] != ' ' && header[6] != '\t'))
        return -1;
    const char *t = header + 7;
    while (*t == ' ' || *t == '\t')
        t++;
    size_t n = strlen(t);
    while (n && (t[n - 1] == ' ' || t[n - 1] == '\t'))
        n--;
    if (n == 0)
        return -1;
    return api_token_equal(token, strlen(token), t, n);
}

void api_repair_req_free(struct api_repair_req *r)
{
    for (int i = 0; i < r->nkeys; i++)
        free(r->keys[i]);
    free(r->keys);
    free(r->lens);
    memset(r, 0, sizeof(*r));
    r->db = -1;
}

/* Appends a copy of key (len bytes, NUL added) to r. 0, or -1 out of memory. */
static int req_add_key(struct api_repair_req *r, const char *key, size_t len)
{
    char *k = malloc(len + 1);
    if (!k)
        return -1;
    memcpy(k, key, len);
    k[len] = '\0';
    r->keys[r->nkeys] = k;
    r->lens[r->nkeys] = len;
    r->nkeys++;
    return 0;
}

/*
 * Adds the strings of array field name (raw bytes, or base64-decoded when
 * b64) to r. Fails with a reason naming the field and the element.
 */
static int req_add_keys(struct api_repair_req *r, const char *name, json_t *arr, int b64, char *err,
                        size_t errlen)
{
    size_t i;
    json_t *v;

    json_array_foreach(arr, i, v)
    {
        if (!json_is_string(v)) {
            snprintf(err, errlen, "field '%s': element %zu is not a string", name, i);
            return -1;
        }
        const char *s = json_string_value(v);
        size_t n = json_string_length(v);
        if (!b64) {
            if (req_add_key(r, s, n) < 0)
                goto oom;
            continue;
        }
        size_t klen = 0;
        char *k = text_unbase64(s, n, &klen);
        if (!k) {
            snprintf(err, errlen, "field '%s': element %zu is not valid base64", name, i);
            return -1;
        }
        int rc = req_add_key(r, k, klen);
        free(k);
        if (rc < 0)
            goto oom;
    }
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
    return -1;
}

int api_parse_repair_body(const char *body, size_t len, struct api_repair_req *out, char *err,
                          size_t errlen)
{
    json_error_t je;
    json_t *keys = NULL, *keys64 = NULL;
    const char *name;
    json_t *v;
    int has_all = 0;

    memset(out, 0, sizeof(*out));
    out->db = -1;
    json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (!j) {
        snprintf(err, errlen, "the body is not valid JSON: %s (at character %d)", je.text,
                 je.position);
        return -1;
    }
    if (!json_is_object(j)) {
        snprintf(err, errlen, "the body must be a JSON object");
        goto fail;
    }
    json_object_foreach(j, name, v)
    {
        if (!strcmp(name, "keys") || !strcmp(name, "keys_base64")) {
            if (!json_is_array(v)) {
                snprintf(err, errlen, "field '%s' must be an array of strings", name);
                goto fail;
            }
            if (!strcmp(name, "keys"))
                keys = v;
            else
                keys64 = v;
        } else if (!strcmp(name, "replica")) {
            if (!json_is_string(v) || json_string_length(v) == 0 ||
                json_string_length(v) >= sizeof(out->replica) ||
                strlen(json_string_value(v)) != json_string_length(v)) {
                snprintf(err, errlen, "field 'replica' must be a replica's name");
                goto fail;
            }
            snprintf(out->replica, sizeof(out->replica), "%s", json_string_value(v));
        } else if (!strcmp(name, "all_open")) {
            if (!json_is_boolean(v)) {
                snprintf(err, errlen, "field 'all_open' must be true or false");
                goto fail;
            }
            has_all = 1;
            out->all_open = json_is_true(v);
        } else if (!strcmp(name, "db")) {
            if (!json_is_integer(v) || json_integer_value(v) < 0 ||
                json_integer_value(v) > API_MAX_DB) {
                snprintf(err, errlen, "field 'db' must be a database number (0 to %d)", API_MAX_DB);
                goto fail;
            }
            out->db = (int)json_integer_value(v);
        } else {
            snprintf(err, errlen,
                     "unknown field '%.64s' (expected keys, keys_base64, replica, db, all_open)",
                     name);
            goto fail;
        }
    }
    size_t n = (keys ? json_array_size(keys) : 0) + (keys64 ? json_array_size(keys64) : 0);
    if (out->all_open && (keys || keys64)) {
        snprintf(err, errlen, "give either 'keys' or 'all_open', not both");
        goto fail;
    }
    if (!out->all_open && !keys && !keys64) {
        snprintf(err, errlen,
                 has_all ? "nothing to repair: 'all_open' is false and no 'keys' given"
                         : "nothing to repair: give 'keys' (or 'keys_base64') or 'all_open':true");
        goto fail;
    }
    if (!out->all_open && n == 0) {
        snprintf(err, errlen, "field 'keys' is empty");
        goto fail;
    }
    if (n > API_MAX_KEYS) {
        snprintf(err, errlen, "field 'keys': %zu keys, at most %d per request", n, API_MAX_KEYS);
        goto fail;
    }
    if (n) {
        out->keys = calloc(n, sizeof(*out->keys));
        out->lens = calloc(n, sizeof(*out->lens));
        if (!out->keys || !out->lens) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
    }
    if ((keys && req_add_keys(out, "keys", keys, 0, err, errlen) < 0) ||
        (keys64 && req_add_keys(out, "keys_base64", keys64, 1, err, errlen) < 0))
        goto fail;
    json_decref(j);
    return 0;
fail:
    json_decref(j);
    api_repair_req_free(out);
    return -1;
}

static const char *const div_states[] = {"open",     "suspect", "confirmed", "repairing",
                                         "resolved", "cleared", NULL};
static const char *const div_kinds[] = {"missing", "extra", "type", "value", "ttl", NULL};
static const char *const div_params[] = {"state", "replica",    "kind",  "since",
                                         "key",   "key_base64", "limit", NULL};

static int in_list(const char *const *list, const char *s)
{
    for (; *list; list++)
        if (!strcmp(*list, s))
            return 1;
    return 0;
}

/*
 * Checks every name in a raw query string against allowed. Returns 0, or -1
 * with the first unknown name in err.
 */
static int query_names_known(const char *query, const char *const *allowed, char *err,
                             size_t errlen)
{
    const char *p = query;
    while (*p) {
        const char *amp = strchr(p, '&');
        size_t n = amp ? (size_t)(amp - p) : strlen(p);
        const char *eq = memchr(p, '=', n);
        size_t nl = eq ? (size_t)(eq - p) : n;
        int known = 0;
        for (const char *const *a = allowed; *a && nl; a++)
            if (strlen(*a) == nl && !memcmp(*a, p, nl))
                known = 1;
        if (nl && !known) {
            snprintf(err, errlen, "unknown parameter '%.*s'", (int)(nl > 40 ? 40 : nl), p);
            return -1;
        }
        p += n;
        if (*p == '&')
            p++;
    }
    return 0;
}

/* Reads parameter name into out; -1 (with a reason) when malformed. */
static int query_param(const char *query, const char *name, char *out, size_t outsz, int *found,
                       char *err, size_t errlen)
{
    size_t len = 0;
    int rc = http_query_get(query, name, out, outsz, &len);
    if (rc < 0) {
        snprintf(err, errlen, "parameter '%s': malformed or longer than %zu bytes", name,
                 outsz - 1);
        return -1;
    }
    if (rc == 1 && strlen(out) != len) {
        snprintf(err, errlen, "parameter '%s' holds a NUL byte", name);
        return -1;
    }
    *found = rc == 1;
    return 0;
}

/* Parses a positive decimal integer (no sign, no spaces). -1 when not one. */
static int parse_uint(const char *s, long long max, long long *out)
{
    long long v = 0;
    if (!*s)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        if (v > (max - (*s - '0')) / 10)
            return -1;
        v = v * 10 + (*s - '0');
    }
    *out = v;
    return 0;
}

int api_parse_divergence_query(const char *query, int64_t now_ms, struct api_div_query *q,
                               char *err, size_t errlen)
{
    char buf[2048];
    int found;

    memset(q, 0, sizeof(*q));
    if (!query)
        query = "";
    if (http_query_get(query, "", NULL, 0, NULL) < 0) {
        snprintf(err, errlen, "malformed query string");
        return -1;
    }
    if (query_names_known(query, div_params, err, errlen) < 0)
        return -1;

    if (query_param(query, "state", q->state, sizeof(q->state), &found, err, errlen) < 0)
        return -1;
    if (found && !in_list(div_states, q->state)) {
        snprintf(err, errlen,
                 "parameter 'state': '%s' is not one of open, suspect, confirmed, repairing, "
                 "resolved, cleared",
                 q->state);
        return -1;
    }
    if (query_param(query, "kind", q->kind, sizeof(q->kind), &found, err, errlen) < 0)
        return -1;
    if (found && !in_list(div_kinds, q->kind)) {
        snprintf(err, errlen,
                 "parameter 'kind': '%s' is not one of missing, extra, type, value, ttl", q->kind);
        return -1;
    }
    if (query_param(query, "replica", q->replica, sizeof(q->replica), &found, err, errlen) < 0)
        return -1;
    if (found && !q->replica[0]) {
        snprintf(err, errlen, "parameter 'replica' is empty");
        return -1;
    }

    if (query_param(query, "since", buf, 64, &found, err, errlen) < 0)
        return -1;
    if (found) {
        long long v;
        if (buf[0] >= '0' && buf[0] <= '9' && parse_uint(buf, INT64_MAX, &v) == 0) {
            q->since = v; /* Unix milliseconds */
        } else if (cfg_parse_duration_ms(buf, &v) == 0 && v > 0) {
            q->since = now_ms > v ? now_ms - v : 1;
        } else {
            snprintf(err, errlen,
                     "parameter 'since': '%.40s' is neither Unix milliseconds nor a duration "
                     "like 90s, 15m, 1h, 7d",
                     buf);
            return -1;
        }
    }

    if (query_param(query, "limit", buf, 64, &found, err, errlen) < 0)
        return -1;
    if (found) {
        long long v;
        if (parse_uint(buf, 1000000, &v) < 0 || v < 1 || v > 10000) {
            snprintf(err, errlen, "parameter 'limit': '%.20s' is not a number from 1 to 10000",
                     buf);
            return -1;
        }
        q->limit = (int)v;
    }

    size_t len = 0;
    int rk = http_query_get(query, "key", buf, sizeof(buf), &len);
    int rb = http_query_get(query, "key_base64", NULL, 0, NULL);
    if (rk == 1 && rb == 1) {
        snprintf(err, errlen, "give either 'key' or 'key_base64', not both");
        return -1;
    }
    if (rk < 0) {
        snprintf(err, errlen, "parameter 'key': malformed or too long");
        return -1;
    }
    if (rk == 1) {
        if (strlen(buf) != len || text_unescape(buf, q->key, sizeof(q->key), &q->keylen) < 0) {
            snprintf(err, errlen,
                     "parameter 'key': not a key in escaped form (\\\\ for a backslash, \\xNN "
                     "for other bytes) or too long");
            return -1;
        }
        q->has_key = 1;
    } else if (rb == 1) {
        if (http_query_get(query, "key_base64", buf, sizeof(buf), &len) < 0) {
            snprintf(err, errlen, "parameter 'key_base64': malformed or too long");
            return -1;
        }
        /* An unescaped '+' arrives as a space: base64 has no spaces, so undo it. */
        for (size_t i = 0; i < len; i++)
            if (buf[i] == ' ')
                buf[i] = '+';
        size_t klen = 0;
        char *k = text_unbase64(buf, len, &klen);
        if (!k || klen > sizeof(q->key)) {
            free(k);
            snprintf(err, errlen, "parameter 'key_base64': not valid base64 or too long");
            return -1;
        }
        memcpy(q->key, k, klen);
        q->keylen = klen;
        q->has_key = 1;
        free(k);
    }
    return 0;
}

/* ------------------------------------------------------------ helpers */

/* Sends j (a reference this takes) as the response body. */
static void reply_json(struct http_response *resp, int status, json_t *j)
{
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
    json_decref(j);
    if (!s) {
        http_reply_json_error(resp, 500, "out of memory");
        return;
    }
    http_reply_owned(resp, status, "application/json", s, strlen(s));
}

/* True when a Host header value ("name", "name:port", "[v6]:port") names a loopback host. */
static int host_is_loopback(const char *host)
{
    char name[CFG_HOST_MAX];
    size_t n;

    if (host[0] == '[') {
        const char *end = strchr(host, ']');
        if (!end)
            return 0;
        n = (size_t)(end - host) + 1;
    } else {
        const char *colon = strrchr(host, ':');
        n = colon ? (size_t)(colon - host) : strlen(host);
    }
    if (n == 0 || n >= sizeof(name))
        return 0;
    memcpy(name, host, n);
    name[n] = '\0';
    return agent_is_loopback(name);
}

/*
 * The gate in front of every endpoint that changes something. With a token
 * configured: "Authorization: Bearer <token>" (401 without one, 403 for a
 * wrong one). Without: only from loopback, with a loopback Host header (so a
 * web page on another site cannot reach it by DNS rebinding). Then the body
 * must be declared JSON, which a cross-site form or simple request cannot
 * do without a CORS preflight the agent never grants. Returns 0 when the
 * request may go on, else -1 with the response filled in. Takes a->a_lock.
 */
static int authorize(struct agent *a, const struct http_request *req, struct http_response *resp)
{
    int verdict = 1;

    pthread_rwlock_rdlock(&a->a_lock);
    if (a->a_cfg.http_token && a->a_cfg.http_token[0])
        verdict = api_check_bearer(req->authorization, a->a_cfg.http_token);
    else if (!agent_is_loopback(req->remote ? req->remote : "") ||
             (req->host && !host_is_loopback(req->host)))
        verdict = -2;
    pthread_rwlock_unlock(&a->a_lock);

    if (verdict == -1) {
        http_reply_json_error(resp, 401,
                              "this endpoint needs 'Authorization: Bearer <token>' (the token "
                              "in the agent's http-token-file)");
        resp->extra_header_name = "WWW-Authenticate";
        resp->extra_header_value = "Bearer realm=\"keydrift\"";
        return -1;
    }
    if (verdict == 0) {
        http_reply_json_error(resp, 403, "wrong token");
        return -1;
    }
    if (verdict == -2) {
        http_reply_json_error(resp, 403,
                              "no http-token-file is configured: this endpoint is only served "
                              "to loopback clients addressing a loopback host");
        return -1;
    }
    const char *ct = req->content_type ? req->content_type : "";
    size_t n = strcspn(ct, "; \t");
    if (n != strlen("application/json") || strncasecmp(ct, "application/json", n) != 0) {
        http_reply_json_error(resp, 415, "Content-Type must be application/json");
        return -1;
    }
    return 0;
}

/* Reads ?wait_ms= (0..API_MAX_WAIT_MS) into *wait; -1 with a 400 filled in. */
static int query_wait(const struct http_request *req, struct http_response *resp, long long *wait)
{
    char buf[32];
    int rc = http_query_get(req->query, "wait_ms", buf, sizeof(buf), NULL);
    long long v;

    if (rc == 0)
        return 0;
    if (rc < 0 || parse_uint(buf, INT64_MAX, &v) < 0 || v > API_MAX_WAIT_MS) {
        http_reply_json_error(resp, 400, "parameter 'wait_ms' must be a number from 0 to 10000");
        return -1;
    }
    *wait = v;
    return 0;
}

/* ------------------------------------------------------------ status */

static void h_readyz(const struct http_request *req, struct http_response *resp, void *arg)
{
    struct agent *a = arg;
    (void)req;

    pthread_rwlock_rdlock(&a->a_lock);
    /* Ready only when every shard's primary answers (one outside a cluster). */
    int primary = atomic_load(&a->a_primary.rn_up);
    for (int u = 0; u < a->a_nunits; u++)
        primary &= atomic_load(&a->a_units[u].u_primary->rn_up);
    const char *storage = "disabled";
    int storage_ok = 1;
    char serr[256] = "";
    if (a->a_store) {
        storage_ok = store_writable(a->a_store);
        storage = storage_ok ? "ok" : "failing";
        snprintf(serr, sizeof(serr), "%s", store_last_error(a->a_store));
    } else if (a->a_cfg.history_db[0]) {
        storage_ok = 0;
        storage = "unavailable";
        snprintf(serr, sizeof(serr), "%s", a->a_store_error);
    }
    pthread_rwlock_unlock(&a->a_lock);

    json_t *j = json_pack("{s:b,s:s,s:s}", "ready", primary && storage_ok, "primary",
                          primary ? "up" : "down", "storage", storage);
    if (serr[0])
        json_object_set_new(j, "storage_error", json_string(serr));
    reply_json(resp, primary && storage_ok ? 200 : 503, j);
}

static json_t *replica_json(struct agent *a, int i)
{
    const struct cfg_replica *r = &a->a_cfg.replicas[i];
    struct lag_view v;
    char addr[CFG_HOST_MAX + 8];

    snprintf(addr, sizeof(addr), "%s:%d", r->addr.host, r->addr.port);
    json_t *j =
        json_pack("{s:s,s:s,s:s,s:b}", "name", r->name, "address", addr, "kind",
                  cfg_replica_kind_name(r->kind), "up", atomic_load(&a->a_replicas[i].rn_up));
    if (!a->a_lag)
        return j;
    lag_get(a->a_lag, i, &v);
    json_object_set_new(j, "status", json_string(lag_status_name(v.status)));
    json_object_set_new(j, "status_reason", json_string(v.status_reason));
    json_object_set_new(j, "lag_seconds",
                        v.lag_seconds >= 0 ? json_real(v.lag_seconds) : json_null());
    json_object_set_new(j, "link_up", json_boolean(v.link_up && v.reachable));
    if (r->kind == REPLICA_NATIVE) {
        json_object_set_new(j, "lag_bytes",
                            v.lag_bytes >= 0 ? json_integer(v.lag_bytes) : json_null());
        json_object_set_new(j, "offset", v.offset >= 0 ? json_integer(v.offset) : json_null());
        json_object_set_new(j, "sync_in_progress", json_boolean(v.sync_in_progress));
        json_object_set_new(j, "resyncs", json_integer((json_int_t)v.resyncs));
    }
    return j;
}

/*
 * The "repair" member of /api/v1/status: paused when any engine's guard
 * paused it, with every paused engine's reason (named by shard and db when
 * there are several engines). Called with a->a_lock held.
 */
static json_t *repair_state_json(struct agent *a)
{
    static const char *const policies[] = {"off", "manual", "auto"};
    char why[1024] = "", one[160];
    int paused = 0, nengines = 0;
    size_t o = 0;

    for (int u = 0; u < a->a_nunits; u++)
        nengines += a->a_units[u].u_ndetect;
    for (int u = 0; u < a->a_nunits; u++)
        for (int k = 0; k < a->a_units[u].u_ndetect; k++) {
            if (!repair_paused(a->a_units[u].u_detect[k], one, sizeof(one)))
                continue;
            if (o < sizeof(why)) {
                if (nengines > 1)
                    o += (size_t)snprintf(why + o, sizeof(why) - o, "%sshard %s db %d: %s",
                                          paused ? "; " : "", a->a_units[u].u_shard.ts_label,
                                          a->a_units[u].u_dbs[k], one);
                else
                    o += (size_t)snprintf(why + o, sizeof(why) - o, "%s", one);
            }
            paused = 1;
        }

    return json_pack("{s:s,s:b,s:o,s:b,s:b}", "policy", policies[a->a_cfg.repair], "paused", paused,
                     "paused_reason", paused ? json_string(why) : json_null(), "dry_run",
                     a->a_cfg.repair_dry_run, "token_required",
                     a->a_cfg.http_token && a->a_cfg.http_token[0]);
}

/*
 * Every shard the agent watches (one outside a cluster): its primary, its
 * replicas with lag and status, and what its engines checked. a_lock held.
 */
static json_t *shards_json(struct agent *a)
{
    static const char *const disc[] = {"static", "sentinel", "cluster"};
    json_t *arr = json_array();

    for (int u = 0; u < a->a_nunits; u++) {
        struct topo_unit *un = &a->a_units[u];
        char addr[CFG_HOST_MAX + 8];
        json_t *reps = json_array();
        json_int_t checked = 0;
        for (int i = 0; i < un->u_cfg.nreplicas; i++) {
            struct lag_view v;
            const struct cfg_replica *r = &un->u_cfg.replicas[i];
            lag_get(un->u_lag, i, &v);
            snprintf(addr, sizeof(addr), "%s:%d", r->addr.host, r->addr.port);
            json_array_append_new(
                reps, json_pack("{s:s,s:s,s:s,s:o}", "name", r->name, "address", addr, "status",
                                lag_status_name(v.status), "lag_seconds",
                                v.lag_seconds >= 0 ? json_real(v.lag_seconds) : json_null()));
        }
        for (int k = 0; k < un->u_ndetect; k++) {
            struct detect_progress p;
            detect_progress(un->u_detect[k], &p);
            checked += (json_int_t)p.keys_checked;
        }
        snprintf(addr, sizeof(addr), "%s:%d", un->u_cfg.primary.host, un->u_cfg.primary.port);
        json_array_append_new(
            arr, json_pack("{s:s,s:s,s:s,s:b,s:o,s:I,s:s}", "shard", un->u_shard.ts_label,
                           "primary", addr, "primary_node", un->u_primary->rn_name, "primary_up",
                           atomic_load(&un->u_primary->rn_up), "replicas", reps, "keys_checked",
                           checked, "discovery", disc[a->a_cfg.discovery]));
    }
    return arr;
}

static void h_status(const struct http_request *req, struct http_response *resp, void *arg)
{
    struct agent *a = arg;
    char paddr[CFG_HOST_MAX + 8];
    char run_id[48] = "";
    (void)req;

    pthread_rwlock_rdlock(&a->a_lock);
    snprintf(paddr, sizeof(paddr), "%s:%d", a->a_cfg.primary.host, a->a_cfg.primary.port);
    if (a->a_lag)
        lag_primary_run_id(a->a_lag, run_id, sizeof(run_id));
    json_t *replicas = json_array();
    for (int i = 0; i < a->a_cfg.nreplicas; i++)
        json_array_append_new(replicas, replica_json(a, i));
    json_t *j = json_pack(
        "{s:s,s:s,s:I,s:{s:s,s:b,s:s,s:I},s:o,s:s,s:s}", "version", KEYDRIFT_VERSION, "agent_id",
        a->a_cfg.agent_id, "started_ms", (json_int_t)a->a_started_ms, "primary", "address", paddr,
        "up", atomic_load(&a->a_primary.rn_up), "run_id", run_id, "offset",
        (json_int_t)(a->a_lag ? lag_primary_offset(a->a_lag) : -1), "replicas", replicas, "channel",
        a->a_cfg.channel, "message_format", cfg_format_name(a->a_cfg.message_format));
    if (a->a_detect) { /* the sum of every engine: several dbs, several shards */
        struct detect_progress p;
        topo_units_progress(a->a_units, a->a_nunits, &p);
        json_object_set_new(
            j, "detection",
            json_pack("{s:I,s:f,s:I,s:I,s:I,s:I,s:b}", "scan_cycles", (json_int_t)p.cycles,
                      "scan_progress", p.scan_progress, "keys_checked", (json_int_t)p.keys_checked,
                      "keys_in_db", (json_int_t)p.keys_in_db, "suspects", (json_int_t)p.suspects,
                      "open_divergences", (json_int_t)p.open, "watch_enabled", p.watch_enabled));
    }
    json_object_set_new(j, "repair", repair_state_json(a));
    json_object_set_new(j, "shards", shards_json(a));
    pthread_rwlock_unlock(&a->a_lock);
    reply_json(resp, 200, j);
}

/* ------------------------------------------------------------ divergences */

static void h_divergences(const struct http_request *req, struct http_response *resp, void *arg)
{
    struct agent *a = arg;
    struct api_div_query q;
    char err[256];

    if (api_parse_divergence_query(req->query, (int64_t)clock_wall_ms(), &q, err, sizeof(err)) <
        0) {
        http_reply_json_error(resp, 400, err);
        return;
    }
    struct store_filter f = {.state = q.state[0] ? q.state : NULL,
                             .replica = q.replica[0] ? q.replica : NULL,
                             .kind = q.kind[0] ? q.kind : NULL,
                             .key = q.key,
                             .keylen = q.keylen,
                             .has_key = q.has_key,
                             .since = q.since,
                             .limit = q.limit};
    json_t *list = NULL;
    int status = 200;

    pthread_rwlock_rdlock(&a->a_lock);
    if (q.replica[0] && !cfg_find_replica(&a->a_cfg, q.replica)) {
        snprintf(err, sizeof(err), "parameter 'replica': no replica named '%s'", q.replica);
        status = 400;
    } else if (!a->a_store && !a->a_cfg.history_db[0]) {
        snprintf(err, sizeof(err),
                 "no history: the agent runs without a database (history-db \"\")");
        status = 503;
    } else if (!a->a_store) {
        snprintf(err, sizeof(err), "the history database is unavailable: %s", a->a_store_error);
        status = 503;
    } else if (!(list = store_query_divergences(a->a_store, &f, err, sizeof(err)))) {
        status = 500;
    }
    pthread_rwlock_unlock(&a->a_lock);
    if (status != 200) {
        http_reply_json_error(resp, status, err);
        return;
    }
    reply_json(resp, 200, json_pack("{s:o}", "divergences", list));
}

/* ------------------------------------------------------------ repair */

/*
 * Answers with a job: 200 with the whole job when it is done, else 202 with
 * its id and state and a Location to poll. Takes the reference to job.
 */
static void reply_job(struct http_response *resp, json_t *job, int64_t id)
{
    static __thread char location[64];
    const char *state = json_string_value(json_object_get(job, "state"));

    if (state && !strcmp(state, "done")) {
        reply_json(resp, 200, job);
        return;
    }
    json_t *j = json_pack("{s:I,s:s}", "id", (json_int_t)id, "state", state ? state : "queued");
    json_decref(job);
    snprintf(location, sizeof(location), "/api/v1/repairs/%lld", (long long)id);
    reply_json(resp, 202, j);
    resp->extra_header_name = "Location";
    resp->extra_header_value = location;
}

/*
 * Repair jobs across engines. An agent runs one detection engine per shard
 * and db, and a request may reach several of them; the API gives the caller
 * one job id standing for the engines' jobs (its sub-jobs), kept in a small
 * table like the engines' own: slot id % API_JOBS_MAX, the oldest forgotten.
 * Engines are only ever submitted to through this table, and each API job
 * makes at most one job per engine, so an engine forgets a job only after
 * the table has. Engine pointers are kept with the workers' generation: a
 * job of engines since stopped (a reload, a failover) is reported unknown.
 */
struct api_sub {
    struct detect *s_detect; /* NULL when the submission was refused */
    int64_t s_id;            /* the engine's job id */
    char s_shard[16];
    int s_db;
    json_t *s_failed; /* refused: the results standing for it */
};

struct api_job {
    int64_t j_id;
    uint64_t j_gen;
    int j_nsubs;
    struct api_sub *j_subs;
};

static pthread_mutex_t api_jobs_mu = PTHREAD_MUTEX_INITIALIZER;
static struct api_job api_jobs[API_JOBS_MAX];
static int64_t api_next_job;

static void subs_free(struct api_sub *subs, int n)
{
    for (int i = 0; subs && i < n; i++)
        json_decref(subs[i].s_failed);
    free(subs);
}

/* Records a job of n sub-jobs (taking subs) and returns its id. */
static int64_t jobs_add(uint64_t gen, struct api_sub *subs, int n)
{
    pthread_mutex_lock(&api_jobs_mu);
    int64_t id = ++api_next_job;
    struct api_job *j = &api_jobs[id % API_JOBS_MAX];
    struct api_sub *old = j->j_subs;
    int nold = j->j_nsubs;
    *j = (struct api_job){.j_id = id, .j_gen = gen, .j_nsubs = n, .j_subs = subs};
    pthread_mutex_unlock(&api_jobs_mu);
    subs_free(old, nold);
    return id;
}

/* A copy of n sub-jobs (free with subs_free), or NULL out of memory. */
static struct api_sub *subs_copy(const struct api_sub *subs, int n)
{
    struct api_sub *copy = calloc((size_t)(n ? n : 1), sizeof(*copy));
    for (int i = 0; copy && i < n; i++) {
        copy[i] = subs[i];
        json_incref(copy[i].s_failed);
    }
    return copy;
}

/* A copy of job id's sub-jobs (free with subs_free), or NULL when unknown. */
static struct api_sub *jobs_get(int64_t id, uint64_t *gen, int *n)
{
    struct api_sub *copy = NULL;

    pthread_mutex_lock(&api_jobs_mu);
    struct api_job *j = &api_jobs[id % API_JOBS_MAX];
    if (id > 0 && j->j_id == id && (copy = subs_copy(j->j_subs, j->j_nsubs))) {
        *gen = j->j_gen;
        *n = j->j_nsubs;
    }
    pthread_mutex_unlock(&api_jobs_mu);
    return copy;
}

/* One result of a sub-job that has no engine job behind it: outcome failed. */
static json_t *failed_result(const char *replica, const char *key, size_t len, const char *shard,
                             int db, const char *error)
{
    char *k = text_escape(key, len), *b = text_base64(key, len);
    json_t *r = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:i}", "replica", replica, "key", k ? k : "",
                          "key_base64", b ? b : "", "outcome", "failed", "error", error, "shard",
                          shard, "db", db);
    free(k);
    free(b);
    return r;
}

/*
 * The job as one document: the first sub-job's with the API id, state done
 * only when every sub-job is, and every sub-job's results (each with its
 * shard and db). Waits up to wait_ms in all. a->a_lock held for reading
 * with the job's generation checked, so its engines are alive.
 */
static json_t *job_merged(int64_t id, const struct api_sub *subs, int n, long long wait_ms)
{
    uint64_t deadline = clock_mono_us() + (uint64_t)wait_ms * 1000;
    json_t *out = NULL, *results = json_array();
    int ndone = 0, nqueued = 0;

    for (int i = 0; i < n; i++) {
        const struct api_sub *s = &subs[i];
        json_t *sub = NULL, *list = s->s_failed, *x;
        size_t k;
        if (s->s_detect) {
            uint64_t now = clock_mono_us();
            long long left = now < deadline ? (long long)((deadline - now) / 1000) : 0;
            sub = repair_job_json(s->s_detect, s->s_id, left);
            list = sub ? json_object_get(sub, "results") : NULL;
            if (!sub)
                json_array_append_new(results,
                                      failed_result("", "", 0, s->s_shard, s->s_db,
                                                    "the detection engine forgot this job; its "
                                                    "outcome is unknown"));
        }
        const char *state = sub ? json_string_value(json_object_get(sub, "state")) : "done";
        if (state && !strcmp(state, "done"))
            ndone++;
        else if (!state || !strcmp(state, "queued"))
            nqueued++;
        json_array_foreach(list, k, x)
        {
            if (sub) {
                json_object_set_new(x, "shard", json_string(s->s_shard));
                json_object_set_new(x, "db", json_integer(s->s_db));
            }
            json_array_append(results, x);
        }
        if (sub && !out)
            out = sub;
        else
            json_decref(sub);
    }
    if (!out)
        out = json_pack("{s:I,s:s,s:s,s:I}", "id", (json_int_t)id, "state", "done", "trigger",
                        "api", "created_ms", (json_int_t)clock_wall_ms());
    json_object_set_new(out, "id", json_integer((json_int_t)id));
    /* Queued while no sub-job has started, done when all are, else running. */
    const char *state = "running";
    if (ndone == n)
        state = "done";
    else if (nqueued == n)
        state = "queued";
    json_object_set_new(out, "state", json_string(state));
    json_object_set_new(out, "results", results);
    return out;
}

/* The unit (index into a_units) whose shard has replica name, or -1. a_lock held. */
static int unit_of_replica(struct agent *a, const char *name)
{
    for (int u = 0; u < a->a_nunits; u++)
        if (cfg_find_replica(&a->a_units[u].u_cfg, name))
            return u;
    return -1;
}

/*
 * The unit that holds a key: in a cluster the shard owning its slot (-1
 * when this agent runs no such shard), else the only one. a_lock held.
 */
static int unit_of_key(struct agent *a, const char *key, size_t len, int *slot)
{
    *slot = -1;
    if (a->a_cfg.discovery != DISCOVERY_CLUSTER)
        return a->a_nunits ? 0 : -1;
    *slot = topo_key_slot(key, len);
    for (int u = 0; u < a->a_nunits; u++) {
        const struct topo_shard *s = &a->a_units[u].u_shard;
        for (int i = 0; i < s->ts_nranges; i++)
            if (*slot >= s->ts_ranges[i][0] && *slot <= s->ts_ranges[i][1])
                return u;
    }
    return -1;
}

static int db_configured(const struct config *c, int db)
{
    for (int i = 0; i < c->ndbs; i++)
        if (c->dbs[i] == db)
            return 1;
    return 0;
}

/* The request being routed to engines (a->a_lock held for reading). */
struct route {
    struct agent *a;
    const struct api_repair_req *r;
    struct api_sub *subs; /* one per engine at most */
    int nsubs;
    char *err;
    size_t errlen;
};

/*
 * Submits keys (NULL with all_open) to engine k of unit u, recording the
 * sub-job. The first refusal refuses the whole request (nothing queued yet,
 * -1 with err set); a later one becomes failed results in the job.
 */
static int route_submit(struct route *rt, int u, int k, const char *const *keys, const size_t *lens,
                        int nkeys)
{
    struct topo_unit *un = &rt->a->a_units[u];
    const struct api_repair_req *r = rt->r;
    struct api_sub *s = &rt->subs[rt->nsubs];
    char why[256] = "";

    snprintf(s->s_shard, sizeof(s->s_shard), "%s", un->u_shard.ts_label);
    s->s_db = un->u_dbs[k];
    s->s_id = repair_submit(un->u_detect[k], r->replica[0] ? r->replica : NULL, keys, lens, nkeys,
                            r->all_open, TRIGGER_API, why, sizeof(why));
    if (s->s_id < 0 && rt->nsubs == 0) {
        snprintf(rt->err, rt->errlen, "%s", why);
        return -1;
    }
    if (s->s_id >= 0) {
        s->s_detect = un->u_detect[k];
    } else {
        s->s_failed = json_array();
        for (int i = 0; i < (r->all_open ? 1 : nkeys); i++)
            json_array_append_new(s->s_failed, failed_result(r->replica, r->all_open ? "" : keys[i],
                                                             r->all_open ? 0 : lens[i], s->s_shard,
                                                             s->s_db, why));
    }
    rt->nsubs++;
    return 0;
}

/* How many engines of unit u serve the request's db. */
static int unit_engines(const struct route *rt, int u)
{
    const struct topo_unit *un = &rt->a->a_units[u];
    int n = 0;

    for (int k = 0; k < un->u_ndetect; k++)
        n += rt->r->db < 0 || un->u_dbs[k] == rt->r->db;
    return n;
}

/* Submits to every engine of unit u that serves the request's db. */
static int route_unit(struct route *rt, int u, const char *const *keys, const size_t *lens,
                      int nkeys)
{
    struct topo_unit *un = &rt->a->a_units[u];

    for (int k = 0; k < un->u_ndetect; k++)
        if ((rt->r->db < 0 || un->u_dbs[k] == rt->r->db) &&
            route_submit(rt, u, k, keys, lens, nkeys) < 0)
            return -1;
    return 0;
}

/*
 * Checks the request against the topology and sends it to its engines:
 * each key to the shard that holds it (or the replica's shard), every
 * configured db unless one is named; all_open to every engine (of the
 * replica's shard). Returns 0 with rt->subs filled, or an HTTP status with
 * rt->err set.
 */
static int route_request(struct route *rt)
{
    struct agent *a = rt->a;
    const struct api_repair_req *r = rt->r;
    int ru = -1, nengines = 0, status = 0;
    int *owner = NULL;
    const char **keys = NULL;
    size_t *lens = NULL;

    for (int u = 0; u < a->a_nunits; u++)
        nengines += a->a_units[u].u_ndetect;
    if (r->replica[0] && (ru = unit_of_replica(a, r->replica)) < 0 &&
        !cfg_find_replica(&a->a_cfg, r->replica)) {
        snprintf(rt->err, rt->errlen, "field 'replica': no replica named '%s'", r->replica);
        return 400;
    }
    if (r->db >= 0 && !db_configured(&a->a_cfg, r->db)) {
        snprintf(rt->err, rt->errlen, "field 'db': db %d is not watched (option 'db')", r->db);
        return 400;
    }
    if (a->a_cfg.repair == REPAIR_OFF) {
        snprintf(rt->err, rt->errlen, "repairs are disabled on this agent (option 'repair off')");
        return 409;
    }
    if (nengines == 0 || (r->replica[0] && ru < 0)) {
        snprintf(rt->err, rt->errlen,
                 "detection is not running (no replicas, or sample-modes is empty), so there is "
                 "nothing to repair with");
        return 503;
    }
    if (!(rt->subs = calloc((size_t)nengines, sizeof(*rt->subs)))) {
        snprintf(rt->err, rt->errlen, "out of memory");
        return 500;
    }
    if (r->all_open) {
        for (int u = 0; u < a->a_nunits; u++)
            if ((ru < 0 || u == ru) && route_unit(rt, u, NULL, NULL, 0) < 0)
                return 400;
        if (rt->nsubs == 0) {
            snprintf(rt->err, rt->errlen,
                     "no detection engine runs for the replica or db asked for, so there is "
                     "nothing to repair with");
            return 503;
        }
        return 0;
    }

    owner = calloc((size_t)r->nkeys, sizeof(*owner));
    keys = calloc((size_t)r->nkeys, sizeof(*keys));
    lens = calloc((size_t)r->nkeys, sizeof(*lens));
    if (!owner || !keys || !lens) {
        snprintf(rt->err, rt->errlen, "out of memory");
        status = 500;
        goto out;
    }
    for (int i = 0; i < r->nkeys; i++) {
        int slot;
        owner[i] = unit_of_key(a, r->keys[i], r->lens[i], &slot);
        if (ru >= 0 && owner[i] != ru && slot >= 0) {
            char *k = text_escape(r->keys[i], r->lens[i]);
            snprintf(rt->err, rt->errlen,
                     "key '%.64s' (slot %d) is not on replica '%s''s shard %s: leave out "
                     "'replica' to repair it where it is",
                     k ? k : "?", slot, r->replica, a->a_units[ru].u_shard.ts_label);
            free(k);
            status = 400;
            goto out;
        }
        if (ru >= 0)
            owner[i] = ru;
        if (owner[i] < 0) {
            char *k = text_escape(r->keys[i], r->lens[i]);
            snprintf(rt->err, rt->errlen,
                     "key '%.64s' (slot %d) is on a shard this agent does not watch (see "
                     "'shard-index')",
                     k ? k : "?", slot);
            free(k);
            status = 400;
            goto out;
        }
        if (unit_engines(rt, owner[i]) == 0) {
            char db[32] = "";
            if (r->db >= 0)
                snprintf(db, sizeof(db), " for db %d", r->db);
            snprintf(rt->err, rt->errlen,
                     "no detection engine runs on shard %s%s, so there is nothing to repair "
                     "its keys with",
                     a->a_units[owner[i]].u_shard.ts_label, db);
            status = 503;
            goto out;
        }
    }
    /* Each unit's keys, in request order, as one job per engine. Only the
     * first submission can refuse the request; see route_submit. */
    for (int u = 0; u < a->a_nunits; u++) {
        int n = 0;
        for (int i = 0; i < r->nkeys; i++)
            if (owner[i] == u) {
                keys[n] = r->keys[i];
                lens[n++] = r->lens[i];
            }
        if (n && route_unit(rt, u, keys, lens, n) < 0) {
            status = 400;
            break;
        }
    }
out:
    free(owner);
    free(keys);
    free(lens);
    return status;
}

static void h_repair(const struct http_request *req, struct http_response *resp, void *arg)
{
    struct agent *a = arg;
    struct api_repair_req r;
    char err[256] = "";
    long long wait = API_REPAIR_WAIT_MS;
    int status;
    int64_t id = -1;
    json_t *job = NULL;

    if (authorize(a, req, resp) < 0 || query_wait(req, resp, &wait) < 0)
        return;
    if (api_parse_repair_body(req->body, req->body_len, &r, err, sizeof(err)) < 0) {
        http_reply_json_error(resp, 400, err);
        return;
    }
    struct route rt = {.a = a, .r = &r, .err = err, .errlen = sizeof(err)};
    pthread_rwlock_rdlock(&a->a_lock);
    status = route_request(&rt);
    if (status == 0) {
        /* The table owns rt.subs from here; this request waits on its own copy. */
        struct api_sub *copy = subs_copy(rt.subs, rt.nsubs);
        id = jobs_add(a->a_workers_gen, rt.subs, rt.nsubs);
        rt.subs = NULL;
        if (copy)
            job = job_merged(id, copy, rt.nsubs, wait);
        subs_free(copy, rt.nsubs);
        if (!job)
            status = 500;
    }
    pthread_rwlock_unlock(&a->a_lock);
    subs_free(rt.subs, rt.nsubs);
    api_repair_req_free(&r);
    if (status == 500 && !err[0])
        snprintf(err, sizeof(err), "repair job %lld vanished", (long long)id);
    if (status) {
        http_reply_json_error(resp, status, err[0] ? err : "repair refused");
        return;
    }
    reply_job(resp, job, id);
}

static void h_repair_job(const struct http_request *req, struct http_response *resp, void *arg)
{
    struct agent *a = arg;
    const char *idtext = req->path + strlen("/api/v1/repairs/");
    long long id, wait = 0;
    json_t *job = NULL;
    char err[128];
    uint64_t gen = 0;
    int n = 0;

    if (parse_uint(idtext, INT64_MAX, &id) < 0 || id == 0) {
        snprintf(err, sizeof(err), "'%.40s' is not a repair job id", idtext);
        http_reply_json_error(resp, 404, err);
        return;
    }
    if (query_wait(req, resp, &wait) < 0)
        return;
    struct api_sub *subs = jobs_get(id, &gen, &n);
    pthread_rwlock_rdlock(&a->a_lock);
    if (subs && gen == a->a_workers_gen)
        job = job_merged(id, subs, n, wait);
    pthread_rwlock_unlock(&a->a_lock);
    subs_free(subs, n);
    if (!job) {
        snprintf(err, sizeof(err), "no repair job %lld (old jobs are forgotten)", id);
        http_reply_json_error(resp, 404, err);
        return;
    }
    reply_json(resp, 200, job);
}

static void h_repair_resume(const struct http_request *req, struct http_response *resp, void *arg)
{
    struct agent *a = arg;
    int ok = 0;

    if (authorize(a, req, resp) < 0)
        return;
    pthread_rwlock_rdlock(&a->a_lock);
    for (int u = 0; u < a->a_nunits; u++)
        for (int k = 0; k < a->a_units[u].u_ndetect; k++) {
            repair_resume(a->a_units[u].u_detect[k]);
            ok = 1;
        }
    pthread_rwlock_unlock(&a->a_lock);
    if (!ok) {
        http_reply_json_error(resp, 503,
                              "detection is not running, so there is no repair to resume");
        return;
    }
    log_notice("http: auto-repair resumed by %s", req->remote ? req->remote : "?");
    reply_json(resp, 200, json_pack("{s:b}", "paused", 0));
}

/* ------------------------------------------------------------ status page */

/* The page; "@NONCE@" is replaced by a fresh nonce on every response. */
static const char page_html[] =
    "<!doctype html>\n"
    "<html lang=\"en\">\n"
    "<head>\n"
    "<meta charset=\"utf-8\">\n"
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
    "<title>keydrift</title>\n"
    "<style nonce=\"@NONCE@\">\n"
    "body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}\n"
    "header{background:#1d2330;color:#fff;padding:10px "
    "20px;display:flex;gap:20px;align-items:baseline;flex-wrap:wrap}\n"
    "header h1{font-size:18px;margin:0}\n"
    "main{padding:10px 20px}\n"
    "section{background:#fff;border:1px solid #dde1e8;border-radius:6px;margin:12px 0;padding:10px "
    "14px}\n"
    "h2{font-size:15px;margin:4px 0 8px}\n"
    "table{border-collapse:collapse;width:100%}\n"
    "th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eceef2;vertical-align:top}\n"
    "th{font-weight:600;color:#555}\n"
    "td.key{font-family:ui-monospace,monospace;word-break:break-all}\n"
    ".st{display:inline-block;padding:0 6px;border-radius:3px;color:#fff;background:#888}\n"
    ".st-ok{background:#2e7d32}.st-lagging{background:#ef6c00}.st-stalled,.st-down{background:#"
    "c62828}.st-resynced{background:#6a1b9a}\n"
    ".bar{display:flex;gap:10px;align-items:center;flex-wrap:wrap;margin-bottom:8px}\n"
    "button{cursor:pointer;padding:2px 10px}\n"
    "#outcome{white-space:pre-wrap;font-family:ui-monospace,monospace;margin-top:8px}\n"
    ".err{color:#c62828}.muted{color:#777}\n"
    "</style>\n"
    "</head>\n"
    "<body>\n"
    "<header><h1>keydrift</h1><span id=\"summary\" "
    "class=\"muted\">loading&hellip;</span></header>\n"
    "<main>\n"
    "<section><h2>Replicas</h2>\n"
    "<table "
    "id=\"replicas\"><thead><tr><th>name</th><th>kind</th><th>address</th><th>status</th><th>lag</"
    "th><th>link</th><th>reason</th></tr></thead><tbody></tbody></table>\n"
    "</section>\n"
    "<section><h2>Open divergences <span id=\"divcount\" class=\"muted\"></span></h2>\n"
    "<div class=\"bar\">\n"
    "<label>API token <input type=\"password\" id=\"token\" autocomplete=\"off\" "
    "placeholder=\"only if the agent has one\"></label>\n"
    "<button id=\"repair-all\" type=\"button\">Repair all open</button>\n"
    "<span id=\"repair-state\" class=\"muted\"></span>\n"
    "</div>\n"
    "<table "
    "id=\"divergences\"><thead><tr><th>replica</th><th>key</th><th>kind</th><th>state</"
    "th><th>first seen</th><th>found by</th><th></th></tr></thead><tbody></tbody></table>\n"
    "<div id=\"outcome\"></div>\n"
    "</section>\n"
    "</main>\n"
    "<script nonce=\"@NONCE@\">\n"
    "\"use strict\";\n"
    "var tokenRequired = false;\n"
    "function el(tag, text, cls) {\n"
    "  var e = document.createElement(tag);\n"
    "  if (text !== undefined && text !== null) e.textContent = String(text);\n"
    "  if (cls) e.className = cls;\n"
    "  return e;\n"
    "}\n"
    "function fillRows(tbody, rows) {\n"
    "  while (tbody.firstChild) tbody.removeChild(tbody.firstChild);\n"
    "  rows.forEach(function (r) { tbody.appendChild(r); });\n"
    "}\n"
    "function lagText(r) {\n"
    "  if (r.lag_seconds === null || r.lag_seconds === undefined) return \"-\";\n"
    "  return r.lag_seconds.toFixed(3) + \" s\";\n"
    "}\n"
    "function refreshStatus() {\n"
    "  return fetch(\"/api/v1/status\", {cache: \"no-store\"}).then(function (res) {\n"
    "    return res.json();\n"
    "  }).then(function (s) {\n"
    "    var d = s.detection || {};\n"
    "    var rp = s.repair || {};\n"
    "    tokenRequired = !!rp.token_required;\n"
    "    document.getElementById(\"summary\").textContent = \"primary \" + s.primary.address + \" "
    "\" +\n"
    "      (s.primary.up ? \"up\" : \"DOWN\") + \" \\u00b7 \" + s.replicas.length + \" replica(s) "
    "\\u00b7 \" +\n"
    "      (d.open_divergences !== undefined ? d.open_divergences + \" open divergence(s)\" : "
    "\"detection off\") +\n"
    "      \" \\u00b7 repair \" + (rp.policy || \"?\") + (rp.paused ? \" (paused: \" + "
    "rp.paused_reason + \")\" : \"\");\n"
    "    fillRows(document.querySelector(\"#replicas tbody\"), s.replicas.map(function (r) {\n"
    "      var tr = el(\"tr\");\n"
    "      tr.dataset.replica = r.name;\n"
    "      tr.appendChild(el(\"td\", r.name));\n"
    "      tr.appendChild(el(\"td\", r.kind));\n"
    "      tr.appendChild(el(\"td\", r.address));\n"
    "      var td = el(\"td\");\n"
    "      td.appendChild(el(\"span\", r.status || \"?\", \"st st-\" + (r.status || "
    "\"unknown\")));\n"
    "      tr.appendChild(td);\n"
    "      tr.appendChild(el(\"td\", lagText(r)));\n"
    "      tr.appendChild(el(\"td\", r.link_up ? \"up\" : \"down\"));\n"
    "      tr.appendChild(el(\"td\", r.status_reason || \"\", \"muted\"));\n"
    "      return tr;\n"
    "    }));\n"
    "  }).catch(function (e) {\n"
    "    document.getElementById(\"summary\").textContent = \"agent not answering: \" + e;\n"
    "  });\n"
    "}\n"
    "function refreshDivergences() {\n"
    "  return fetch(\"/api/v1/divergences?state=open&limit=500\", {cache: "
    "\"no-store\"}).then(function (res) {\n"
    "    return res.json().then(function (j) { return {status: res.status, body: j}; });\n"
    "  }).then(function (r) {\n"
    "    var tbody = document.querySelector(\"#divergences tbody\");\n"
    "    if (r.status !== 200) {\n"
    "      fillRows(tbody, []);\n"
    "      document.getElementById(\"divcount\").textContent = \"(\" + (r.body.error || r.status) "
    "+ \")\";\n"
    "      return;\n"
    "    }\n"
    "    var list = r.body.divergences;\n"
    "    document.getElementById(\"divcount\").textContent = \"(\" + list.length + \")\";\n"
    "    fillRows(tbody, list.map(function (d) {\n"
    "      var tr = el(\"tr\");\n"
    "      tr.dataset.replica = d.replica;\n"
    "      tr.dataset.keyB64 = d.key_base64;\n"
    "      tr.appendChild(el(\"td\", d.replica));\n"
    "      tr.appendChild(el(\"td\", d.key, \"key\"));\n"
    "      tr.appendChild(el(\"td\", d.kind));\n"
    "      tr.appendChild(el(\"td\", d.state));\n"
    "      tr.appendChild(el(\"td\", new Date(d.first_seen).toLocaleString()));\n"
    "      tr.appendChild(el(\"td\", d.found_by));\n"
    "      var td = el(\"td\");\n"
    "      var b = el(\"button\", \"Repair\", \"repair\");\n"
    "      b.type = \"button\";\n"
    "      b.addEventListener(\"click\", function () {\n"
    "        repair({keys_base64: [d.key_base64], replica: d.replica});\n"
    "      });\n"
    "      td.appendChild(b);\n"
    "      tr.appendChild(td);\n"
    "      return tr;\n"
    "    }));\n"
    "  }).catch(function () {});\n"
    "}\n"
    "function showOutcome(text, isErr) {\n"
    "  var o = document.getElementById(\"outcome\");\n"
    "  o.textContent = text;\n"
    "  o.className = isErr ? \"err\" : \"\";\n"
    "}\n"
    "function describeJob(job) {\n"
    "  var lines = [\"repair job \" + job.id + \": \" + job.state];\n"
    "  (job.results || []).forEach(function (x) {\n"
    "    lines.push(x.replica + \"  \" + x.key + \"  \" + x.outcome + (x.error ? \"  (\" + x.error "
    "+ \")\" : \"\"));\n"
    "  });\n"
    "  if (job.state === \"done\" && (!job.results || job.results.length === 0)) "
    "lines.push(\"nothing to repair\");\n"
    "  return lines.join(\"\\n\");\n"
    "}\n"
    "function poll(url, left) {\n"
    "  return fetch(url + \"?wait_ms=2000\", {cache: \"no-store\"}).then(function (res) {\n"
    "    return res.json();\n"
    "  }).then(function (job) {\n"
    "    if (job.state === \"done\" || left <= 0) {\n"
    "      showOutcome(describeJob(job), false);\n"
    "      refreshDivergences();\n"
    "      return;\n"
    "    }\n"
    "    showOutcome(describeJob(job), false);\n"
    "    return poll(url, left - 1);\n"
    "  });\n"
    "}\n"
    "function repair(body) {\n"
    "  var tokenInput = document.getElementById(\"token\");\n"
    "  var token = tokenInput.value;\n"
    "  if (tokenRequired && !token) {\n"
    "    showOutcome(\"this agent wants an API token: enter it above, then press Repair again\", "
    "true);\n"
    "    tokenInput.focus();\n"
    "    return;\n"
    "  }\n"
    "  var headers = {\"Content-Type\": \"application/json\"};\n"
    "  if (token) headers[\"Authorization\"] = \"Bearer \" + token;\n"
    "  document.getElementById(\"repair-state\").textContent = \"repairing\\u2026\";\n"
    "  fetch(\"/api/v1/repair\", {method: \"POST\", headers: headers, body: "
    "JSON.stringify(body)}).then(function (res) {\n"
    "    return res.json().then(function (j) { return {status: res.status, body: j, res: res}; "
    "});\n"
    "  }).then(function (r) {\n"
    "    document.getElementById(\"repair-state\").textContent = \"\";\n"
    "    if (r.status === 200) {\n"
    "      showOutcome(describeJob(r.body), false);\n"
    "      refreshDivergences();\n"
    "    } else if (r.status === 202) {\n"
    "      showOutcome(describeJob(r.body), false);\n"
    "      return poll(r.res.headers.get(\"Location\") || \"/api/v1/repairs/\" + r.body.id, 15);\n"
    "    } else if (r.status === 401 || r.status === 403) {\n"
    "      showOutcome(\"the agent refused the token (HTTP \" + r.status + \"): \" + r.body.error, "
    "true);\n"
    "    } else {\n"
    "      showOutcome(\"repair failed (HTTP \" + r.status + \"): \" + r.body.error, true);\n"
    "    }\n"
    "  }).catch(function (e) {\n"
    "    document.getElementById(\"repair-state\").textContent = \"\";\n"
    "    showOutcome(\"repair request failed: \" + e, true);\n"
    "  });\n"
    "}\n"
    "document.getElementById(\"repair-all\").addEventListener(\"click\", function () {\n"
    "  repair({all_open: true});\n"
    "});\n"
    "function tick() {\n"
    "  refreshStatus().then(refreshDivergences);\n"
    "}\n"
    "tick();\n"
    "setInterval(tick, 2000);\n"
    "</script>\n"
    "</body>\n"
    "</html>\n";

/*
 * Serves the status page with a Content-Security-Policy that lets only its
 * own inline script and style run (by a per-response nonce) and lets them
 * talk only to this agent.
 */
static void h_page(const struct http_request *req, struct http_response *resp, void *arg)
{
    static __thread char csp[256];
    unsigned char rnd[16];
    char nonce[40];
    (void)req;
    (void)arg;

    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
        http_reply_json_error(resp, 500, "no randomness for the page's nonce");
        return;
    }
    for (size_t i = 0; i < sizeof(rnd); i++)
        snprintf(nonce + 2 * i, 3, "%02x", rnd[i]);

    /* Every "@NONCE@" (7 bytes) becomes the 32-hex-digit nonce. */
    size_t cap = sizeof(page_html) + 8 * 32;
    char *out = malloc(cap);
    if (!out) {
        http_reply_json_error(resp, 500, "out of memory");
        return;
    }
    size_t o = 0;
    const char *p = page_html, *m;
    while ((m = strstr(p, "@NONCE@")) != NULL && o + (size_t)(m - p) + 32 < cap) {
        memcpy(out + o, p, (size_t)(m - p));
        o += (size_t)(m - p);
        memcpy(out + o, nonce, 32);
        o += 32;
        p = m + 7;
    }
    size_t rest = strlen(p);
    memcpy(out + o, p, rest);
    o += rest;
    http_reply_owned(resp, 200, "text/html; charset=utf-8", out, o);
    snprintf(csp, sizeof(csp),
             "default-src 'none'; script-src 'nonce-%s'; style-src 'nonce-%s'; connect-src "
             "'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
             nonce, nonce);
    resp->extra_header_name = "Content-Security-Policy";
    resp->extra_header_value = csp;
}

/* ------------------------------------------------------------ routes */

void api_register(struct http_server *s, struct agent *a)
{
    http_route(s, "GET", "/", 0, h_page, a);
    http_route(s, "GET", "/readyz", 0, h_readyz, a);
    http_route(s, "GET", "/api/v1/status", 0, h_status, a);
    http_route(s, "GET", "/api/v1/divergences", 0, h_divergences, a);
    http_route(s, "POST", "/api/v1/repair", 0, h_repair, a);
    http_route(s, "POST", "/api/v1/repair/resume", 0, h_repair_resume, a);
    http_route(s, "GET", "/api/v1/repairs/", 1, h_repair_job, a);
}
