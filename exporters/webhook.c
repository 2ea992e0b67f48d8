/*
 * webhook -- JSON notifications to an HTTP endpoint (see webhook.h).
 *
 * Callers only lock a mutex and append to a ring of WH_QUEUE_MAX events, so
 * webhook_event() never waits on the network. One sender thread takes the
 * oldest event, waits WH_BATCH_MS for more of the same kind, and POSTs up to
 * WH_BATCH_MAX of them in one request:
 *
 *   idle --(event)--> gather (WH_BATCH_MS) --> POST --2xx--> sent
 *                                               |
 *                     5xx, 408, 429, network error: retry after 1 s, 2 s, 4 s
 *                     (WH_ATTEMPTS in all), then failed; other 4xx: failed
 *
 * At shutdown the sender gets WH_SHUTDOWN_MS in all to send what is queued;
 * a transfer still running then is aborted and the rest counted as dropped.
 * Each event counts once in keydrift_webhook_events_total{outcome}.
 */
#include "webhook.h"
#include "clock.h"
#include "log.h"
#include "metrics.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WH_QUEUE_MAX   1024
#define WH_BATCH_MAX   100
#define WH_BATCH_MS    200
#define WH_ATTEMPTS    4
#define WH_BACKOFF_MS  1000
#define WH_SHUTDOWN_MS 3000

struct wh_event {
    char kind[32];
    uint64_t time_ms;
    json_t *data;
};

static struct {
    int w_running;
    char *w_url;
    long long w_timeout_ms;
    pthread_t w_thread;
    pthread_mutex_t w_mu;
    pthread_cond_t w_cond;
    struct wh_event w_ring[WH_QUEUE_MAX];
    size_t w_head, w_len;
    int w_stop;                  /* under w_mu */
    atomic_ullong w_deadline_us; /* 0, or when an aborting shutdown cuts transfers short */
    struct metric *w_sent, *w_failed, *w_dropped;
} wh = {.w_mu = PTHREAD_MUTEX_INITIALIZER, .w_cond = PTHREAD_COND_INITIALIZER};

/* Absolute CLOCK_REALTIME time ms from now, for pthread_cond_timedwait. */
static struct timespec abs_in_ms(long long ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* libcurl's progress hook: a non-zero return aborts the transfer (at shutdown). */
static int on_progress(void *p, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void)p;
    (void)dt;
    (void)dn;
    (void)ut;
    (void)un;
    unsigned long long d = atomic_load(&wh.w_deadline_us);
    return d && clock_mono_us() >= d;
}

/* Discards the response body. */
static size_t on_body(char *ptr, size_t size, size_t n, void *arg)
{
    (void)ptr;
    (void)arg;
    return size * n;
}

/*
 * One POST of body. Returns 1 sent (2xx), 0 worth retrying (network error,
 * timeout, 408, 429, 5xx), -1 not worth retrying (any other status). why
 * gets a reason when not sent.
 */
static int post_once(CURL *c, const char *body, char *why, size_t whylen)
{
    struct curl_slist *hdrs = NULL;
    char errbuf[CURL_ERROR_SIZE] = "";
    long status = 0;

    hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, wh.w_url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "keydrift/" KEYDRIFT_VERSION);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)wh.w_timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)wh.w_timeout_ms);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    CURLcode rc = curl_easy_perform(c);
    curl_slist_free_all(hdrs);
    if (rc != CURLE_OK) {
        snprintf(why, whylen, "%s", errbuf[0] ? errbuf : curl_easy_strerror(rc));
        return 0;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (status >= 200 && status < 300)
        return 1;
    snprintf(why, whylen, "HTTP %ld", status);
    return status == 408 || status == 429 || status >= 500 ? 0 : -1;
}

/*
 * Takes the batch to send next out of the ring (called with w_mu held and
 * the ring not empty): the oldest event and the ones of its kind queued right
 * behind it. Returns the {"events":[...]} document (new reference) and the
 * count in *n.
 */
static json_t *take_batch(size_t *n)
{
    json_t *events = json_array();
    char kind[32];

    snprintf(kind, sizeof(kind), "%s", wh.w_ring[wh.w_head].kind);
    *n = 0;
    while (wh.w_len && *n < WH_BATCH_MAX && !strcmp(wh.w_ring[wh.w_head].kind, kind)) {
        struct wh_event *e = &wh.w_ring[wh.w_head];
        json_array_append_new(events, json_pack("{s:s,s:I,s:o}", "kind", e->kind, "time_ms",
                                                (json_int_t)e->time_ms, "data", e->data));
        e->data = NULL;
        wh.w_head = (wh.w_head + 1) % WH_QUEUE_MAX;
        wh.w_len--;
        (*n)++;
    }
    return json_pack("{s:o}", "events", events);
}

/* Sleeps ms unless a shutdown starts (returns 1 then). Called with w_mu held. */
static int backoff_wait(long long ms)
{
    struct timespec ts = abs_in_ms(ms);
    while (!wh.w_stop)
        if (pthread_cond_timedwait(&wh.w_cond, &wh.w_mu, &ts) != 0)
            break;
    return wh.w_stop;
}

static void *sender(void *arg)
{
    CURL *c = curl_easy_init();
    (void)arg;

    pthread_mutex_lock(&wh.w_mu);
    for (;;) {
        while (!wh.w_len && !wh.w_stop)
            pthread_cond_wait(&wh.w_cond, &wh.w_mu);
        if (!wh.w_len)
            break; /* stopping, nothing left */
        if (!wh.w_stop) {
            /* Let events of the same kind arriving close together join the batch. */
            struct timespec ts = abs_in_ms(WH_BATCH_MS);
            while (!wh.w_stop && wh.w_len < WH_BATCH_MAX &&
                   pthread_cond_timedwait(&wh.w_cond, &wh.w_mu, &ts) == 0)
                ;
        }
        if (wh.w_stop && atomic_load(&wh.w_deadline_us) &&
            clock_mono_us() >= atomic_load(&wh.w_deadline_us))
            break; /* out of time: the rest is dropped below */
        size_t n;
        json_t *doc = take_batch(&n);
        pthread_mutex_unlock(&wh.w_mu);

        char *body = json_dumps(doc, JSON_COMPACT);
        json_decref(doc);
        char why[CURL_ERROR_SIZE + 16] = "out of memory";
        int ok = -1;
        for (int attempt = 1; body && c && attempt <= WH_ATTEMPTS; attempt++) {
            ok = post_once(c, body, why, sizeof(why));
            if (ok != 0 || attempt == WH_ATTEMPTS)
                break;
            pthread_mutex_lock(&wh.w_mu);
            int stopping = backoff_wait((long long)WH_BACKOFF_MS << (attempt - 1));
            pthread_mutex_unlock(&wh.w_mu);
            if (stopping)
                break;
        }
        free(body);
        if (ok == 1) {
            metric_add(wh.w_sent, (double)n);
        } else {
            metric_add(wh.w_failed, (double)n);
            log_warnx("webhook: %zu event(s) not delivered to %s: %s", n, wh.w_url, why);
        }
        pthread_mutex_lock(&wh.w_mu);
    }
    /* Whatever is still queued at the end is dropped. */
    while (wh.w_len) {
        json_decref(wh.w_ring[wh.w_head].data);
        wh.w_ring[wh.w_head].data = NULL;
        wh.w_head = (wh.w_head + 1) % WH_QUEUE_MAX;
        wh.w_len--;
        metric_inc(wh.w_dropped);
    }
    pthread_mutex_unlock(&wh.w_mu);
    curl_easy_cleanup(c);
    return NULL;
}

int webhook_init(const char *url, long long timeout_ms)
{
    static const char *const ol[] = {"outcome"};

    if (wh.w_running)
        return 0;
    /* The counters exist (at 0) even with no URL, so dashboards have data. */
    struct metric_family *f =
        metrics_family("keydrift_webhook_events_total",
                       "Webhook events by outcome: sent, failed (after retries), dropped (queue "
                       "full or shutdown).",
                       METRIC_COUNTER, 1, ol);
    wh.w_sent = metrics_series1(f, "sent");
    wh.w_failed = metrics_series1(f, "failed");
    wh.w_dropped = metrics_series1(f, "dropped");
    if (!url || !*url)
        return 0;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return -1;
    wh.w_url = strdup(url);
    wh.w_timeout_ms = timeout_ms > 0 ? timeout_ms : 5000;
    wh.w_head = wh.w_len = 0;
    wh.w_stop = 0;
    atomic_store(&wh.w_deadline_us, 0);
    if (!wh.w_url || pthread_create(&wh.w_thread, NULL, sender, NULL) != 0) {
        free(wh.w_url);
        wh.w_url = NULL;
        curl_global_cleanup();
        return -1;
    }
    pthread_mutex_lock(&wh.w_mu);
    wh.w_running = 1;
    pthread_mutex_unlock(&wh.w_mu);
    log_info("webhook: notifications go to %s", url);
    return 0;
}

void webhook_shutdown(void)
{
    pthread_mutex_lock(&wh.w_mu);
    if (!wh.w_running) {
        pthread_mutex_unlock(&wh.w_mu);
        return;
    }
    wh.w_running = 0; /* no new events from here on */
    wh.w_stop = 1;
    atomic_store(&wh.w_deadline_us, clock_mono_us() + WH_SHUTDOWN_MS * 1000ULL);
    pthread_cond_broadcast(&wh.w_cond);
    pthread_mutex_unlock(&wh.w_mu);
    pthread_join(wh.w_thread, NULL);
    free(wh.w_url);
    wh.w_url = NULL;
    wh.w_sent = wh.w_failed = wh.w_dropped = NULL;
    curl_global_cleanup();
}

void webhook_event(const char *kind, json_t *data)
{
    struct metric *dropped = NULL;
    json_t *old = NULL;

    pthread_mutex_lock(&wh.w_mu);
    if (!wh.w_running) {
        pthread_mutex_unlock(&wh.w_mu);
        json_decref(data);
        return;
    }
    if (wh.w_len == WH_QUEUE_MAX) {
        old = wh.w_ring[wh.w_head].data;
        wh.w_head = (wh.w_head + 1) % WH_QUEUE_MAX;
        wh.w_len--;
        dropped = wh.w_dropped;
    }
    struct wh_event *e = &wh.w_ring[(wh.w_head + wh.w_len) % WH_QUEUE_MAX];
    snprintf(e->kind, sizeof(e->kind), "%s", kind);
    e->time_ms = clock_wall_ms();
    e->data = data ? data : json_object();
    wh.w_len++;
    pthread_cond_signal(&wh.w_cond);
    pthread_mutex_unlock(&wh.w_mu);
    json_decref(old);
    metric_inc(dropped);
}
