/*
 * HTTP: the query-string parser (pure), then an in-process server on
 * 127.0.0.1 with an ephemeral port, fetched with libcurl.
 */
#include "clock.h"
#include "http.h"
#include "metrics.h"
#include "unit.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---------------------------------------------------------------------------
 * http_query_get
 * ------------------------------------------------------------------------- */

TEST(http_query_found_and_absent)
{
    char out[64];
    size_t len = 99;

    CHECK(http_query_get("a=1&b=x%20y", "b", out, sizeof(out), &len) == 1);
    CHECK_STR(out, "x y");
    CHECK(len == 3);
    CHECK(http_query_get("a=1&b=x%20y", "a", out, sizeof(out), &len) == 1);
    CHECK_STR(out, "1");
    CHECK(http_query_get("a=1&b=2", "c", out, sizeof(out), &len) == 0);
    CHECK(len == 0 && out[0] == '\0');
    CHECK(http_query_get("", "a", out, sizeof(out), NULL) == 0);
    CHECK(http_query_get(NULL, "a", out, sizeof(out), NULL) == 0);
    CHECK(http_query_get("ab=1", "a", out, sizeof(out), NULL) == 0); /* no prefix match */
    CHECK(http_query_get("a", "a", out, sizeof(out), &len) == 1);    /* no '=' */
    CHECK(len == 0 && out[0] == '\0');
    CHECK(http_query_get("a=", "a", out, sizeof(out), &len) == 1);
    CHECK(http_query_get("&&a=1&", "a", out, sizeof(out), NULL) == 1);
    CHECK_STR(out, "1");
    CHECK(http_query_get("a=1&a=2", "a", out, sizeof(out), NULL) == 1); /* first wins */
    CHECK_STR(out, "1");
    CHECK(http_query_get("a=b=c", "a", out, sizeof(out), NULL) == 1);
    CHECK_STR(out, "b=c");
    CHECK(http_query_get("%6b%65y=v", "key", out, sizeof(out), NULL) == 1); /* encoded name */
    CHECK_STR(out, "v");
    CHECK(http_query_get("a=1", "a", NULL, 0, NULL) == 1); /* presence only */
}

TEST(http_query_decoding)
{
    char out[64];
    size_t len = 0;

    CHECK(http_query_get("q=a+b%2Bc", "q", out, sizeof(out), NULL) == 1);
    CHECK_STR(out, "a b+c");
    CHECK(http_query_get("my+key=1", "my key", out, sizeof(out), NULL) == 1);
    CHECK(http_query_get("k=%e2%82%AC", "k", out, sizeof(out), &len) == 1);
    CHECK_STR(out, "\xe2\x82\xac");
    /* %00 is kept: the value is binary-safe and its length is reported. */
    CHECK(http_query_get("k=a%00b", "k", out, sizeof(out), &len) == 1);
    CHECK(len == 3 && memcmp(out, "a\0b", 4) == 0);
}

TEST(http_query_malformed_and_too_long)
{
    char out[4];
    size_t len = 7;

    CHECK(http_query_get("k=%", "k", out, sizeof(out), NULL) == -1);
    CHECK(http_query_get("k=%4", "k", out, sizeof(out), NULL) == -1);
    CHECK(http_query_get("k=%zz", "k", out, sizeof(out), NULL) == -1);
    CHECK(http_query_get("%g=1&k=2", "k", out, sizeof(out), NULL) == -1); /* anywhere */
    CHECK(http_query_get("k=2&x=%", "k", out, sizeof(out), NULL) == -1);
    CHECK(http_query_get("k=abc", "k", out, sizeof(out), &len) == 1); /* 3 + NUL fits */
    CHECK(len == 3);
    CHECK(http_query_get("k=abcd", "k", out, sizeof(out), &len) == -1);
    CHECK(http_query_get("k=%41%42%43%44", "k", out, sizeof(out), NULL) == -1);
    CHECK(http_query_get("k=ab&x=%", "k", out, sizeof(out), &len) == -1);
    CHECK(out[0] == '\0' && len == 0); /* nothing left behind on -1 */
    CHECK(http_query_get("k=1", "k", out, 0, NULL) == -1);
    CHECK(http_query_get("k=1", NULL, out, sizeof(out), NULL) == -1);
}

/* ---------------------------------------------------------------------------
 * A live server
 * ------------------------------------------------------------------------- */

#define TEST_MAX_BODY 1024

struct fetch {
    long status;
    char body[8192];
    size_t body_len;
    char ctype[128];
    char allow[128];
    char cache[64];
};

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    struct fetch *f = arg;
    size_t len = size * n;
    size_t room = sizeof(f->body) - 1 - f->body_len;
    size_t take = len < room ? len : room;
    memcpy(f->body + f->body_len, data, take);
    f->body_len += take;
    f->body[f->body_len] = '\0';
    return len;
}

/* Copies the value of header `name` (case-insensitive) from a header line. */
static void take_header(const char *line, size_t len, const char *name, char *out, size_t outsz)
{
    size_t nl = strlen(name);
    if (len <= nl + 1 || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
        return;
    const char *v = line + nl + 1;
    size_t vl = len - nl - 1;
    while (vl && (*v == ' '))
        v++, vl--;
    while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n'))
        vl--;
    if (vl >= outsz)
        vl = outsz - 1;
    memcpy(out, v, vl);
    out[vl] = '\0';
}

static size_t on_header(char *data, size_t size, size_t n, void *arg)
{
    struct fetch *f = arg;
    take_header(data, size * n, "Content-Type", f->ctype, sizeof(f->ctype));
    take_header(data, size * n, "Allow", f->allow, sizeof(f->allow));
    take_header(data, size * n, "Cache-Control", f->cache, sizeof(f->cache));
    return size * n;
}

struct upload {
    const char *data;
    size_t len, off;
};

static size_t on_read(char *buf, size_t size, size_t n, void *arg)
{
    struct upload *u = arg;
    size_t take = size * n < u->len - u->off ? size * n : u->len - u->off;
    memcpy(buf, u->data + u->off, take);
    u->off += take;
    return take;
}

/*
 * One request. body != NULL sends it (with Content-Length, or chunked when
 * chunked != 0). The path is sent as is (no "/../" normalisation). Returns
 * the curl result; f gets status, body and a few headers.
 */
static CURLcode fetch_ex(CURL *h, int port, const char *method, const char *path, const char *body,
                         size_t body_len, int chunked, struct fetch *f)
{
    char url[512];
    struct curl_slist *hdrs = NULL;
    struct upload up = {body, body_len, 0};
    int own = h == NULL;

    memset(f, 0, sizeof(*f));
    if (own)
        h = curl_easy_init();
    else
        curl_easy_reset(h);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, f);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, f);
    if (!strcmp(method, "HEAD"))
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    else if (strcmp(method, "GET") != 0)
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    if (body && !chunked) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    } else if (body) {
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(h, CURLOPT_READDATA, &up);
        hdrs = curl_slist_append(hdrs, "Transfer-Encoding: chunked");
    }
    hdrs = curl_slist_append(hdrs, "Authorization: Bearer t0ken");
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    CURLcode rc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &f->status);
    curl_slist_free_all(hdrs);
    if (own)
        curl_easy_cleanup(h);
    return rc;
}

static CURLcode fetch(int port, const char *method, const char *path, struct fetch *f)
{
    return fetch_ex(NULL, port, method, path, NULL, 0, 0, f);
}

/* Echoes what the handler saw: method, path, query q, body, remote, auth. */
static void handle_echo(const struct http_request *req, struct http_response *resp, void *arg)
{
    (void)arg;
    char q[64] = "";
    int qrc = http_query_get(req->query, "q", q, sizeof(q), NULL);
    size_t cap = req->body_len + 512;
    char *out = malloc(cap);
    if (!out)
        return;
    int n = snprintf(out, cap, "%s %s q=%d:%s remote=%s auth=%s len=%zu body=%s", req->method,
                     req->path, qrc, q, req->remote, req->authorization ? req->authorization : "-",
                     req->body_len, req->body);
    http_reply_owned(resp, 200, "text/plain", out, (size_t)n);
    resp->extra_header_name = "X-Echo";
    resp->extra_header_value = "1";
}

static void handle_slow(const struct http_request *req, struct http_response *resp, void *arg)
{
    (void)req;
    (void)arg;
    clock_sleep_ms(600, NULL);
    http_reply_text(resp, 200, "text/plain", "slow\n");
}

static int count_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

static struct http_server *start_server(int *port)
{
    struct http_opts o = {.listen = "127.0.0.1:0",
                          .max_connections = 64,
                          .per_ip_connections = 64,
                          .timeout_ms = 5000,
                          .max_body = TEST_MAX_BODY};
    char err[256] = "";
    struct http_server *s = http_new(&o);
    CHECK(s != NULL);
    if (!s)
        return NULL;
    http_add_metrics_routes(s);
    http_route(s, "POST", "/echo", 0, handle_echo, NULL);
    http_route(s, "PUT", "/echo", 0, handle_echo, NULL);
    http_route(s, "GET", "/api/", 1, handle_echo, NULL);
    http_route(s, "GET", "/slow", 0, handle_slow, NULL);
    int rc = http_start(s, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "  http_start: %s\n", err);
    CHECK(rc == 0);
    *port = http_port(s);
    CHECK(*port > 0);
    return s;
}

TEST(http_server_routes)
{
    struct fetch f;
    int port = 0;
    int fds_before = count_fds();

    curl_global_init(CURL_GLOBAL_DEFAULT);
    metrics_shutdown();
    metric_inc(metrics_series0(
        metrics_family("kd_test_http_total", "Requests.", METRIC_COUNTER, 0, NULL)));
    struct http_server *s = start_server(&port);

    CHECK(fetch(port, "GET", "/metrics", &f) == CURLE_OK);
    CHECK(f.status == 200);
    CHECK_STR(f.ctype, "text/plain; version=0.0.4; charset=utf-8");
    CHECK_STR(f.cache, "no-store");
    CHECK(strstr(f.body, "\nkd_test_http_total 1\n") != NULL);

    CHECK(fetch(port, "GET", "/healthz", &f) == CURLE_OK);
    CHECK(f.status == 200);
    CHECK_STR(f.body, "ok\n");
    CHECK(fetch(port, "HEAD", "/healthz", &f) == CURLE_OK);
    CHECK(f.status == 200 && f.body_len == 0);

    CHECK(fetch(port, "GET", "/nope", &f) == CURLE_OK);
    CHECK(f.status == 404);
    CHECK_STR(f.body, "{\"error\":\"not found\"}");
    CHECK_STR(f.ctype, "application/json");

    CHECK(fetch(port, "DELETE", "/metrics", &f) == CURLE_OK);
    CHECK(f.status == 405);
    CHECK_STR(f.allow, "GET, HEAD");
    CHECK(fetch(port, "GET", "/echo", &f) == CURLE_OK);
    CHECK(f.status == 405);
    CHECK_STR(f.allow, "POST, PUT");

    /* Prefix route, the raw query, the remote address, Authorization. */
    CHECK(fetch(port, "GET", "/api/v1/x%20y?q=a+b%21&z=1", &f) == CURLE_OK);
    CHECK(f.status == 200);
    CHECK_STR(f.body, "GET /api/v1/x y q=1:a b! remote=127.0.0.1 auth=Bearer t0ken len=0 body=");

    /* Bad paths. */
    CHECK(fetch(port, "GET", "/api/../metrics", &f) == CURLE_OK);
    CHECK(f.status == 400);
    CHECK(fetch(port, "GET", "/api/%2e%2e/metrics", &f) == CURLE_OK);
    CHECK(f.status == 400);
    CHECK(fetch(port, "GET", "/api/a%00b", &f) == CURLE_OK);
    CHECK(f.status == 400);
    CHECK(fetch(port, "GET", "/api/%zz", &f) == CURLE_OK);
    CHECK(f.status == 400);
    CHECK(fetch(port, "GET", "/api/..x", &f) == CURLE_OK); /* only whole ".." segments */
    CHECK(f.status == 200);

    http_free(s);
    metrics_shutdown();
    curl_global_cleanup();
    CHECK(count_fds() == fds_before);
}

TEST(http_server_bodies)
{
    struct fetch f;
    int port = 0;
    char big[TEST_MAX_BODY * 4];

    curl_global_init(CURL_GLOBAL_DEFAULT);
    struct http_server *s = start_server(&port);
    memset(big, 'x', sizeof(big));

    const char *json = "{\"keys\":[\"a\",\"b\"]}";
    CHECK(fetch_ex(NULL, port, "POST", "/echo", json, strlen(json), 0, &f) == CURLE_OK);
    CHECK(f.status == 200);
    CHECK_STR(f.body, "POST /echo q=0: remote=127.0.0.1 auth=Bearer t0ken len=18 "
                      "body={\"keys\":[\"a\",\"b\"]}");

    /* Exactly max_body is fine, one more byte is not (by Content-Length). */
    CHECK(fetch_ex(NULL, port, "POST", "/echo", big, TEST_MAX_BODY, 0, &f) == CURLE_OK);
    CHECK(f.status == 200);
    CHECK(strstr(f.body, "len=1024 ") != NULL);
    CHECK(fetch_ex(NULL, port, "POST", "/echo", big, TEST_MAX_BODY + 1, 0, &f) == CURLE_OK);
    CHECK(f.status == 413);
    CHECK_STR(f.body, "{\"error\":\"request body larger than 1024 bytes\"}");

    /* Chunked: no length up front, so the overflow is found while reading. */
    CHECK(fetch_ex(NULL, port, "POST", "/echo", big, sizeof(big), 1, &f) == CURLE_OK);
    CHECK(f.status == 413);
    CHECK(fetch_ex(NULL, port, "POST", "/echo", big, 100, 1, &f) == CURLE_OK);
    CHECK(f.status == 200);
    CHECK(strstr(f.body, "len=100 ") != NULL);

    /* A large body with Expect: 100-continue is refused before it is sent. */
    size_t huge_len = 4 << 20;
    char *huge = malloc(huge_len);
    CHECK(huge != NULL);
    if (huge) {
        memset(huge, 'y', huge_len);
        CHECK(fetch_ex(NULL, port, "POST", "/echo", huge, huge_len, 0, &f) == CURLE_OK);
        CHECK(f.status == 413);
        free(huge);
    }
    /* The server still answers afterwards. */
    CHECK(fetch(port, "GET", "/healthz", &f) == CURLE_OK);
    CHECK(f.status == 200);

    http_free(s);
    curl_global_cleanup();
}

struct client {
    int port;
    int ok;
};

static void *client_run(void *arg)
{
    struct client *c = arg;
    CURL *h = curl_easy_init();
    struct fetch f;
    for (int i = 0; i < 25; i++) {
        const char *path = i % 2 ? "/metrics" : "/api/t?q=x";
        if (fetch_ex(h, c->port, "GET", path, NULL, 0, 0, &f) == CURLE_OK && f.status == 200)
            c->ok++;
    }
    curl_easy_cleanup(h);
    return NULL;
}

/* 8 threads x 25 requests (keep-alive, a handle per thread): all 200 succeed. */
TEST(http_server_concurrent)
{
    int port = 0;
    pthread_t t[8];
    struct client c[8];

    curl_global_init(CURL_GLOBAL_DEFAULT);
    metrics_shutdown();
    metrics_register_process();
    struct http_server *s = start_server(&port);
    for (int i = 0; i < 8; i++) {
        c[i] = (struct client){port, 0};
        CHECK(pthread_create(&t[i], NULL, client_run, &c[i]) == 0);
    }
    int ok = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        ok += c[i].ok;
    }
    CHECK(ok == 200);
    http_free(s);
    metrics_shutdown();
    curl_global_cleanup();
}

static void *slow_client(void *arg)
{
    struct fetch f;
    fetch(*(int *)arg, "GET", "/slow", &f);
    return NULL;
}

/* A handler that takes a while holds one pool thread, not the whole server. */
TEST(http_server_slow_handler_does_not_block)
{
    int port = 0;
    pthread_t t;
    struct fetch f;

    curl_global_init(CURL_GLOBAL_DEFAULT);
    struct http_server *s = start_server(&port);
    CHECK(pthread_create(&t, NULL, slow_client, &port) == 0);
    clock_sleep_ms(100, NULL);
    uint64_t t0 = clock_mono_us();
    CHECK(fetch(port, "GET", "/healthz", &f) == CURLE_OK);
    CHECK(f.status == 200);
    CHECK(clock_mono_us() - t0 < 400000);
    pthread_join(t, NULL);
    http_free(s);
    curl_global_cleanup();
}

TEST(http_server_listen_errors)
{
    int port = 0;
    char err[256], want[128];

    struct http_server *a = start_server(&port);
    struct http_opts o = {.listen = NULL};
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    o.listen = addr;
    struct http_server *b = http_new(&o);
    CHECK(http_start(b, err, sizeof(err)) == -1);
    snprintf(want, sizeof(want), "cannot listen on 127.0.0.1:%d: Address already in use", port);
    CHECK_STR(err, want);
    CHECK(http_port(b) == 0);
    http_free(b);
    http_free(a);

    static const char *const bad[] = {"127.0.0.1", "::1:80", "127.0.0.1:99999", "[::1]80",
                                      "127.0.0.1:x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        o.listen = bad[i];
        b = http_new(&o);
        err[0] = '\0';
        CHECK(http_start(b, err, sizeof(err)) == -1);
        CHECK(strncmp(err, "cannot listen on ", 17) == 0);
        http_free(b);
    }

    /* IPv6 loopback, when the host has it. */
    o.listen = "[::1]:0";
    b = http_new(&o);
    if (http_start(b, err, sizeof(err)) == 0) {
        CHECK(http_port(b) > 0);
    } else {
        fprintf(stderr, "  (no IPv6 loopback: %s)\n", err);
    }
    http_free(b);
}

/* A raw TCP connection to 127.0.0.1:port, or -1. */
static int tcp_connect(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* Milliseconds until the server closes fd (read returns 0 or an error), or -1 after max_ms. */
static long long ms_until_closed(int fd, int max_ms)
{
    uint64_t t0 = clock_mono_us();
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    char b[256];
    while (poll(&pfd, 1, max_ms) > 0) {
        if (read(fd, b, sizeof(b)) <= 0)
            return (long long)((clock_mono_us() - t0) / 1000);
    }
    return -1;
}

/* An idle connection is closed after the timeout; a third one from one IP at once. */
TEST(http_server_timeout_and_per_ip_limit)
{
    struct http_opts o = {.listen = "127.0.0.1:0",
                          .max_connections = 16,
                          .per_ip_connections = 2,
                          .timeout_ms = 1000,
                          .max_body = TEST_MAX_BODY};
    char err[256];
    struct http_server *s = http_new(&o);
    http_add_metrics_routes(s);
    CHECK(http_start(s, err, sizeof(err)) == 0);
    int port = http_port(s);

    int a = tcp_connect(port), b = tcp_connect(port);
    CHECK(a >= 0 && b >= 0);
    clock_sleep_ms(100, NULL); /* let the server accept both */
    int c = tcp_connect(port);
    CHECK(c >= 0);
    long long ms = ms_until_closed(c, 2000);
    CHECK(ms >= 0 && ms < 500); /* over the per-IP limit: dropped at once */
    ms = ms_until_closed(a, 4000);
    CHECK(ms >= 500 && ms < 3500); /* idle: closed after about a second */
    close(a);
    close(b);
    if (c >= 0)
        close(c);
    http_free(s);
}

TEST(http_reply_helpers)
{
    struct http_response r = {0};
    http_reply_text(&r, 201, "text/plain", "hi");
    CHECK(r.status == 201 && r.body_len == 2 && !strcmp(r.body, "hi"));
    http_reply_json_error(&r, 400, "bad \"x\"\n");
    CHECK(r.status == 400);
    CHECK_STR(r.body, "{\"error\":\"bad \\\"x\\\"\\u000a\"}");
    CHECK_STR(r.content_type, "application/json");
    free(r.body);
}
