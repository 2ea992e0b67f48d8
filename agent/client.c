/*
 * client -- `keydrift status` and `keydrift repair`: small libcurl clients of
 * a running agent's HTTP API (docs/http-api.md).
 *
 * Exit codes, for both: 0 ok; 1 a repair failed or did not finish in time,
 * or the agent is unhealthy; 2 a usage error, no agent answering, or the
 * agent refusing the request.
 */
#include "cmds.h"
#include "textenc.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define CL_DEFAULT_AGENT "http://127.0.0.1:9643"
#define CL_MAX_BODY      (64 << 20)

/* One response: status, body (NUL-terminated) and the Location header. */
struct cl_resp {
    long status;
    char *body;
    size_t len;
    int too_big;
    char location[256];
};

static size_t on_body(char *ptr, size_t size, size_t n, void *arg)
{
    struct cl_resp *r = arg;
    size_t add = size * n;
    if (r->len + add > CL_MAX_BODY) {
        r->too_big = 1;
        return 0;
    }
    char *b = realloc(r->body, r->len + add + 1);
    if (!b)
        return 0;
    memcpy(b + r->len, ptr, add);
    r->len += add;
    b[r->len] = '\0';
    r->body = b;
    return add;
}

static size_t on_header(char *buf, size_t size, size_t n, void *arg)
{
    struct cl_resp *r = arg;
    size_t len = size * n;
    if (len > 9 && !strncasecmp(buf, "Location:", 9)) {
        const char *v = buf + 9;
        while (*v == ' ')
            v++;
        size_t vl = len - (size_t)(v - buf);
        while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
            vl--;
        if (vl < sizeof(r->location)) {
            memcpy(r->location, v, vl);
            r->location[vl] = '\0';
        }
    }
    return len;
}

/*
 * One request to the agent at base + path. body (JSON) makes it a POST;
 * token adds a bearer credential. Returns 0 with the response in *r (the
 * caller frees r->body), or -1 after printing why on stderr: no agent,
 * timeout, or any other transport error.
 */
static int cl_request(const char *base, const char *path, const char *body, const char *token,
                      long timeout_ms, struct cl_resp *r)
{
    char url[2048], auth[4200], errbuf[CURL_ERROR_SIZE] = "";
    struct curl_slist *hdrs = NULL;
    CURL *c = curl_easy_init();

    memset(r, 0, sizeof(*r));
    if (!c) {
        fprintf(stderr, "keydrift: cannot initialise libcurl\n");
        return -1;
    }
    snprintf(url, sizeof(url), "%s%s", base, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "keydrift/" KEYDRIFT_VERSION);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    if (body) {
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    }
    if (token) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
        hdrs = curl_slist_append(hdrs, auth);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    CURLcode rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(c);
    if (rc == CURLE_OK && !r->body)
        r->body = strdup("");
    if (rc == CURLE_OK && r->body)
        return 0;
    if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST)
        fprintf(stderr, "keydrift: no agent answering at %s — is keydrift run running? (%s)\n",
                base, errbuf[0] ? errbuf : curl_easy_strerror(rc));
    else if (rc == CURLE_OPERATION_TIMEDOUT)
        fprintf(stderr, "keydrift: the agent at %s did not answer within %.1f s\n", base,
                timeout_ms / 1000.0);
    else if (r->too_big)
        fprintf(stderr, "keydrift: the agent's answer is larger than %d bytes\n", CL_MAX_BODY);
    else
        fprintf(stderr, "keydrift: request to %s failed: %s\n", url,
                errbuf[0] ? errbuf : curl_easy_strerror(rc));
    free(r->body);
    r->body = NULL;
    return -1;
}

/*
 * Explains a non-2xx answer on stderr (the reason from its JSON body when it
 * has one) and returns the exit code for it (2).
 */
static int cl_refused(const char *base, const struct cl_resp *r)
{
    json_t *j = json_loads(r->body ? r->body : "", 0, NULL);
    const char *reason = json_string_value(json_object_get(j, "error"));

    if (r->status == 401 || r->status == 403)
        fprintf(stderr, "keydrift: the agent wants a token: --token-file FILE (HTTP %ld: %s)\n",
                r->status, reason ? reason : "refused");
    else
        fprintf(stderr, "keydrift: the agent at %s answered HTTP %ld: %s\n", base, r->status,
                reason ? reason : "(no reason given)");
    json_decref(j);
    return 2;
}

/* The agent's base URL: --agent, else $KEYDRIFT_AGENT, else the default; no trailing '/'. */
static void cl_base(const char *opt, char *out, size_t outsz)
{
    const char *env = getenv("KEYDRIFT_AGENT");
    snprintf(out, outsz, "%s", opt ? opt : env && *env ? env : CL_DEFAULT_AGENT);
    size_t n = strlen(out);
    while (n && out[n - 1] == '/')
        out[--n] = '\0';
}

/* ------------------------------------------------------------ status */

static void status_usage(FILE *f)
{
    fprintf(f, "usage: keydrift status [--agent URL] [--json]\n"
               "\n"
               "Shows a running agent's replicas, their status and lag, and open divergences.\n"
               "  --agent URL   the agent (default $KEYDRIFT_AGENT or " CL_DEFAULT_AGENT ")\n"
               "  --json        print the agent's /api/v1/status document as it is\n"
               "Exit: 0 healthy, 1 unhealthy (primary down, or a replica down or stalled),\n"
               "      2 usage error or no agent answering.\n");
}

/* True when the status document shows a problem an operator must look at. */
static int status_unhealthy(json_t *st)
{
    size_t i;
    json_t *r;

    if (!json_is_true(json_object_get(json_object_get(st, "primary"), "up")))
        return 1;
    json_array_foreach(json_object_get(st, "replicas"), i, r)
    {
        const char *s = json_string_value(json_object_get(r, "status"));
        if (s && (!strcmp(s, "down") || !strcmp(s, "stalled")))
            return 1;
    }
    return 0;
}

/* Prints the human table for a status document. */
static void status_print(json_t *st)
{
    json_t *p = json_object_get(st, "primary"), *d = json_object_get(st, "detection");
    json_t *rp = json_object_get(st, "repair"), *r;
    size_t i;

    printf("agent %s (keydrift %s), primary %s %s\n",
           json_string_value(json_object_get(st, "agent_id")),
           json_string_value(json_object_get(st, "version")),
           json_string_value(json_object_get(p, "address")),
           json_is_true(json_object_get(p, "up")) ? "up" : "DOWN");
    printf("\n%-20s %-7s %-22s %-9s %-12s %s\n", "REPLICA", "KIND", "ADDRESS", "STATUS", "LAG",
           "REASON");
    json_array_foreach(json_object_get(st, "replicas"), i, r)
    {
        char lag[32] = "-";
        json_t *l = json_object_get(r, "lag_seconds");
        if (json_is_number(l))
            snprintf(lag, sizeof(lag), "%.3f s", json_number_value(l));
        const char *s = json_string_value(json_object_get(r, "status"));
        const char *why = json_string_value(json_object_get(r, "status_reason"));
        printf("%-20s %-7s %-22s %-9s %-12s %s\n", json_string_value(json_object_get(r, "name")),
               json_string_value(json_object_get(r, "kind")),
               json_string_value(json_object_get(r, "address")), s ? s : "?", lag, why ? why : "");
    }
    if (d)
        printf("\nopen divergences: %lld  (suspects %lld, scan cycle %lld at %.0f %%)\n",
               (long long)json_integer_value(json_object_get(d, "open_divergences")),
               (long long)json_integer_value(json_object_get(d, "suspects")),
               (long long)json_integer_value(json_object_get(d, "scan_cycles")),
               100 * json_number_value(json_object_get(d, "scan_progress")));
    else
        printf("\ndetection: off\n");
    if (rp) {
        const char *why = json_string_value(json_object_get(rp, "paused_reason"));
        printf("repair: %s%s%s%s\n", json_string_value(json_object_get(rp, "policy")),
               json_is_true(json_object_get(rp, "paused")) ? ", paused: " : "",
               json_is_true(json_object_get(rp, "paused")) && why ? why : "",
               json_is_true(json_object_get(rp, "dry_run")) ? " (dry run)" : "");
    }
}

int cmd_status(int argc, char **argv)
{
    const char *agent_opt = NULL;
    int as_json = 0;
    char base[1024];
    struct cl_resp r;

    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            status_usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--json")) {
            as_json = 1;
        } else if (!strcmp(argv[i], "--agent") && i + 1 < argc) {
            agent_opt = argv[++i];
        } else {
            fprintf(stderr, "keydrift status: unexpected argument '%s'\n", argv[i]);
            status_usage(stderr);
            return 2;
        }
    }
    cl_base(agent_opt, base, sizeof(base));
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = 2;
    if (cl_request(base, "/api/v1/status", NULL, NULL, 10000, &r) < 0)
        goto out;
    if (r.status != 200) {
        rc = cl_refused(base, &r);
        free(r.body);
        goto out;
    }
    json_t *st = json_loads(r.body, 0, NULL);
    if (!json_is_object(st)) {
        fprintf(stderr, "keydrift: %s did not answer with a status document\n", base);
    } else {
        if (as_json)
            printf("%s\n", r.body);
        else
            status_print(st);
        rc = status_unhealthy(st);
    }
    json_decref(st);
    free(r.body);
out:
    curl_global_cleanup();
    return rc;
}

/* ------------------------------------------------------------ repair */

static void repair_usage(FILE *f)
{
    fprintf(f, "usage: keydrift repair KEY... | --all-open [--replica NAME] [--db N]\n"
               "                       [--agent URL] [--token-file FILE] [--base64]\n"
               "                       [--wait SECONDS] [--json]\n"
               "       keydrift repair --resume [--agent URL] [--token-file FILE]\n"
               "\n"
               "Asks a running agent to repair keys (every replica where the key is open, or\n"
               "only --replica) and prints each key's outcome. In a cluster each key goes to\n"
               "the shard that owns its slot; --all-open covers every shard.\n"
               "  --all-open        every open divergence instead of named keys\n"
               "  --replica NAME    only this replica (and so only its shard)\n"
               "  --db N            only database N (default: every db the agent watches)\n"
               "  --base64          the KEYs are base64 (for binary keys)\n"
               "  --agent URL       the agent (default $KEYDRIFT_AGENT or " CL_DEFAULT_AGENT ")\n"
               "  --token-file F    the file holding the agent's API token (http-token-file)\n"
               "  --wait SECONDS    how long to wait for the job (default 30)\n"
               "  --resume          resume auto-repair after its guard paused it\n"
               "  --json            print the job document as it is\n"
               "Exit: 0 every key repaired (or nothing to do), 1 a repair failed or the job did\n"
               "      not finish within --wait, 2 usage error, no agent, or the agent refused.\n");
}

/* Reads the token from path (trailing whitespace dropped). NULL after printing why. */
static char *read_token(const char *path)
{
    FILE *f = fopen(path, "r");
    char buf[4096];
    if (!f) {
        fprintf(stderr, "keydrift: --token-file %s: %s\n", path, strerror(errno));
        return NULL;
    }
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    if (!n || strchr(buf, '\n')) {
        fprintf(stderr, "keydrift: --token-file %s: %s\n", path,
                n ? "holds more than one line" : "is empty");
        return NULL;
    }
    return strdup(buf);
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Prints a finished job's results; returns 1 if any failed, else 0. */
static int repair_print(json_t *job)
{
    json_t *res = json_object_get(job, "results"), *x;
    size_t i;
    int failed = 0, where = 0;

    if (json_array_size(res) == 0) {
        printf("nothing to repair\n");
        return 0;
    }
    /* Name the shard and db only when the job spans more than one of them. */
    json_array_foreach(res, i, x)
    {
        json_t *first = json_array_get(res, 0);
        if (!json_equal(json_object_get(x, "shard"), json_object_get(first, "shard")) ||
            !json_equal(json_object_get(x, "db"), json_object_get(first, "db")))
            where = 1;
    }
    printf("%-20s %-14s %-9s %s\n", "REPLICA", "OUTCOME", "STRATEGY", "KEY");
    json_array_foreach(res, i, x)
    {
        const char *outcome = json_string_value(json_object_get(x, "outcome"));
        const char *strategy = json_string_value(json_object_get(x, "strategy"));
        const char *err = json_string_value(json_object_get(x, "error"));
        char at[64] = "";
        if (where)
            snprintf(at, sizeof(at), "  (shard %s, db %lld)",
                     json_string_value(json_object_get(x, "shard")),
                     (long long)json_integer_value(json_object_get(x, "db")));
        printf("%-20s %-14s %-9s \"%s\"%s%s%s\n", json_string_value(json_object_get(x, "replica")),
               outcome ? outcome : "?", strategy ? strategy : "-",
               json_string_value(json_object_get(x, "key")), at, err ? "  error: " : "",
               err ? err : "");
        if (!outcome || !strcmp(outcome, "failed"))
            failed = 1;
    }
    return failed;
}

/* Builds the request body from the command line. NULL after printing why. */
static char *repair_body(char **keys, int nkeys, int base64, int all_open, const char *replica,
                         int db)
{
    json_t *j = json_object();
    if (all_open) {
        json_object_set_new(j, "all_open", json_true());
    } else {
        json_t *arr = json_array();
        for (int i = 0; i < nkeys; i++) {
            if (base64) {
                size_t n;
                char *k = text_unbase64(keys[i], strlen(keys[i]), &n);
                if (!k) {
                    fprintf(stderr, "keydrift: '%s' is not base64 (--base64)\n", keys[i]);
                    json_decref(arr);
                    json_decref(j);
                    return NULL;
                }
                free(k);
                json_array_append_new(arr, json_string(keys[i]));
                continue;
            }
            json_t *k = json_string(keys[i]);
            if (!k) {
                fprintf(stderr, "keydrift: key '%s' is not UTF-8; give it with --base64\n",
                        keys[i]);
                json_decref(arr);
                json_decref(j);
                return NULL;
            }
            json_array_append_new(arr, k);
        }
        json_object_set_new(j, base64 ? "keys_base64" : "keys", arr);
    }
    if (replica)
        json_object_set_new(j, "replica", json_string_nocheck(replica));
    if (db >= 0)
        json_object_set_new(j, "db", json_integer(db));
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return s;
}

/*
 * Follows a job after 202 until it is done or wait_s has passed. Returns the
 * final job document (new reference), or NULL after printing why (*rc set).
 */
static json_t *repair_follow(const char *base, const struct cl_resp *first, double deadline,
                             int *rc)
{
    json_t *j = json_loads(first->body, 0, NULL);
    json_int_t id = json_integer_value(json_object_get(j, "id"));
    char path[320];

    json_decref(j);
    if (first->location[0] == '/')
        snprintf(path, sizeof(path), "%s", first->location);
    else
        snprintf(path, sizeof(path), "/api/v1/repairs/%lld", (long long)id);
    for (;;) {
        double left = deadline - mono_s();
        long wait_ms = left > 5 ? 5000 : left > 0 ? (long)(left * 1000) : 0;
        char url[400];
        struct cl_resp r;
        snprintf(url, sizeof(url), "%s?wait_ms=%ld", path, wait_ms);
        if (cl_request(base, url, NULL, NULL, wait_ms + 10000, &r) < 0) {
            *rc = 2;
            return NULL;
        }
        if (r.status != 200) {
            *rc = cl_refused(base, &r);
            free(r.body);
            return NULL;
        }
        json_t *job = json_loads(r.body, 0, NULL);
        free(r.body);
        const char *state = json_string_value(json_object_get(job, "state"));
        if (state && !strcmp(state, "done"))
            return job;
        if (mono_s() >= deadline) {
            fprintf(stderr, "keydrift: repair job %s still %s after --wait; follow it at %s%s\n",
                    path + strlen("/api/v1/repairs/"), state ? state : "?", base, path);
            json_decref(job);
            *rc = 1;
            return NULL;
        }
        json_decref(job);
    }
}

int cmd_repair(int argc, char **argv)
{
    const char *agent_opt = NULL, *replica = NULL, *token_file = NULL;
    int all_open = 0, resume = 0, base64 = 0, as_json = 0, nkeys = 0, db = -1;
    double wait_s = 30;
    char **keys = calloc((size_t)argc + 1, sizeof(*keys));
    char base[1024];
    char *token = NULL, *body = NULL;
    int rc = 2;

    if (!keys)
        return 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_arg = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            repair_usage(stdout);
            free(keys);
            return 0;
        } else if (!strcmp(a, "--all-open")) {
            all_open = 1;
        } else if (!strcmp(a, "--resume")) {
            resume = 1;
        } else if (!strcmp(a, "--base64")) {
            base64 = 1;
        } else if (!strcmp(a, "--json")) {
            as_json = 1;
        } else if (!strcmp(a, "--replica") && has_arg) {
            replica = argv[++i];
        } else if (!strcmp(a, "--agent") && has_arg) {
            agent_opt = argv[++i];
        } else if (!strcmp(a, "--db") && has_arg) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || end == argv[i] || argv[i][0] == '-' || v < 0 || v > 100000) {
                fprintf(stderr, "keydrift repair: --db wants a database number, not '%s'\n",
                        argv[i]);
                goto usage;
            }
            db = (int)v;
        } else if (!strcmp(a, "--token-file") && has_arg) {
            token_file = argv[++i];
        } else if (!strcmp(a, "--wait") && has_arg) {
            char *end;
            wait_s = strtod(argv[++i], &end);
            if (*end || end == argv[i] || !(wait_s >= 0 && wait_s <= 86400)) {
                fprintf(stderr, "keydrift repair: --wait wants seconds (0..86400), not '%s'\n",
                        argv[i]);
                goto usage;
            }
        } else if (!strcmp(a, "--")) {
            while (++i < argc)
                keys[nkeys++] = argv[i];
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "keydrift repair: unknown option '%s'%s\n", a,
                    has_arg ? "" : " (or its value is missing)");
            goto usage;
        } else {
            keys[nkeys++] = argv[i];
        }
    }
    if (!resume && !all_open && nkeys == 0) {
        fprintf(stderr, "keydrift repair: name keys, or --all-open, or --resume\n");
        goto usage;
    }
    if (all_open && nkeys) {
        fprintf(stderr, "keydrift repair: give keys or --all-open, not both\n");
        goto usage;
    }
    if (resume && (all_open || nkeys || replica || db >= 0)) {
        fprintf(stderr, "keydrift repair: --resume takes no keys\n");
        goto usage;
    }
    if (token_file && !(token = read_token(token_file)))
        goto done;
    cl_base(agent_opt, base, sizeof(base));
    curl_global_init(CURL_GLOBAL_DEFAULT);

    struct cl_resp r;
    if (resume) {
        if (cl_request(base, "/api/v1/repair/resume", "{}", token, 10000, &r) < 0)
            goto done_curl;
        if (r.status != 200)
            rc = cl_refused(base, &r);
        else {
            printf("auto-repair resumed\n");
            rc = 0;
        }
        free(r.body);
        goto done_curl;
    }
    if (!(body = repair_body(keys, nkeys, base64, all_open, replica, db)))
        goto done_curl;
    double deadline = mono_s() + wait_s;
    if (cl_request(base, "/api/v1/repair", body, token, 15000, &r) < 0)
        goto done_curl;
    json_t *job = NULL;
    if (r.status == 200) {
        job = json_loads(r.body, 0, NULL);
    } else if (r.status == 202) {
        job = repair_follow(base, &r, deadline, &rc);
    } else {
        rc = cl_refused(base, &r);
    }
    free(r.body);
    if (job) {
        if (as_json) {
            char *s = json_dumps(job, JSON_INDENT(2));
            printf("%s\n", s ? s : "");
            free(s);
            rc = 0;
            json_t *x;
            size_t i;
            json_array_foreach(json_object_get(job, "results"), i, x)
            {
                const char *o = json_string_value(json_object_get(x, "outcome"));
                if (!o || !strcmp(o, "failed"))
                    rc = 1;
            }
        } else {
            rc = repair_print(job);
        }
        json_decref(job);
    }
done_curl:
    curl_global_cleanup();
done:
    free(body);
    free(token);
    free(keys);
    return rc;
usage:
    repair_usage(stderr);
    free(keys);
    return 2;
}
