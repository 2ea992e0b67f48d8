/*
 * api -- the agent's JSON API and status page on the HTTP server.
 *
 *   GET  /readyz                  ready = primary reachable and storage writable
 *   GET  /api/v1/status           topology, lag, detection progress, repair state
 *   GET  /api/v1/divergences      history from SQLite, filtered
 *   POST /api/v1/repair           submit a repair job, wait a bounded time for it
 *   GET  /api/v1/repairs/<id>     one job
 *   POST /api/v1/repair/resume    resume auto-repair after its guard paused it
 *   GET  /                        the status page (HTML, inline CSS and JS)
 *
 * Handlers never block on Redis: they read in-memory state and SQLite, or
 * wait a bounded time for a repair job run by the detection engine. The
 * request parsers below are pure functions over bytes, unit-tested and
 * fuzzed (tests/fuzz/fuzz_api_body.c). docs/http-api.md has the contract.
 */
#ifndef KD_API_H
#define KD_API_H

#include <stddef.h>
#include <stdint.h>

struct http_server;
struct agent;

/* Most keys one repair request may name. */
#define API_MAX_KEYS 1000
/* Longest wait a client may ask for with ?wait_ms= on GET /api/v1/repairs/<id>. */
#define API_MAX_WAIT_MS 10000
/* How long POST /api/v1/repair waits for its job before answering 202. */
#define API_REPAIR_WAIT_MS 2000
/* Highest database number a repair request may name (Redis's own limit is configurable). */
#define API_MAX_DB 100000
/* API repair jobs remembered for GET /api/v1/repairs/<id>; older ones are forgotten. */
#define API_JOBS_MAX 256

/* Adds every route above to s; a is read under a->a_lock on each request. */
void api_register(struct http_server *s, struct agent *a);

/*
 * A parsed POST /api/v1/repair body. keys[i] (lens[i] bytes, binary-safe,
 * each also NUL-terminated) come from "keys" (JSON strings, taken as their
 * UTF-8 bytes) followed by "keys_base64". Owned by the struct: release with
 * api_repair_req_free().
 */
struct api_repair_req {
    int all_open;
    char replica[64]; /* "" = every replica */
    int db;           /* -1 = every configured db */
    int nkeys;
    char **keys;
    size_t *lens;
};

/*
 * Parses a repair request body (len bytes, need not be NUL-terminated).
 * Accepts exactly an object with the fields keys, keys_base64 (arrays of
 * strings), replica (a non-empty string), db (an integer 0..API_MAX_DB) and
 * all_open (a boolean); either
 * keys or all_open:true, not both; 1..API_MAX_KEYS keys. Returns 0, or -1
 * with a reason naming the field in err (and out left empty). Pure.
 */
int api_parse_repair_body(const char *body, size_t len, struct api_repair_req *out, char *err,
                          size_t errlen);
void api_repair_req_free(struct api_repair_req *r);

/*
 * A parsed GET /api/v1/divergences query. Pointers point into the struct;
 * has_* say which filters were given.
 */
struct api_div_query {
    char state[16];
    char replica[64];
    char kind[16];
    int64_t since; /* ms; 0 = no filter */
    int has_key;
    char key[1024];
    size_t keylen;
    int limit; /* 0 = the store's default */
};

/*
 * Parses the raw query string of GET /api/v1/divergences: state (a state
 * name or "open"), replica, kind, since (Unix ms, or a duration such as
 * "1h" meaning now_ms minus it), key (escaped text, see store_key_unescape)
 * or key_base64, limit (1..10000). Unknown parameters are errors, so a
 * mistyped filter is never silently ignored. Returns 0, or -1 with a reason
 * naming the parameter in err. Pure.
 */
int api_parse_divergence_query(const char *query, int64_t now_ms, struct api_div_query *q,
                               char *err, size_t errlen);

/*
 * Checks an Authorization header value against the configured token: 1 when
 * it is "Bearer <token>" with the right token, 0 when the token is wrong,
 * -1 when the header is missing or not a bearer credential. The token bytes
 * are compared in constant time (api_token_equal).
 */
int api_check_bearer(const char *header, const char *token);
/* 1 when a and b are equal, in time that depends only on their lengths. */
int api_token_equal(const char *a, size_t alen, const char *b, size_t blen);

#endif
