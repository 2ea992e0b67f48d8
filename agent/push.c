/*
 * push -- pushes `keydrift check` results to a Prometheus Pushgateway, as
 * batch jobs should: PUT replaces the group's metrics, so a gateway always
 * shows the last pass.
 */
#include "push.h"
#include "clock.h"
#include "metrics.h"
#include "textenc.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *push_url(const char *base, const char *instance)
{
    size_t bl = strlen(base);
    char *b64, *out;

    if (strstr(base, "/metrics/job/"))
        return strdup(base);
    while (bl && base[bl - 1] == '/')
        bl--;
    b64 = text_base64(instance, strlen(instance));
    if (!b64)
        return NULL;
    /* base64url, as the Pushgateway wants in a path. */
    for (char *p = b64; *p; p++)
        *p = *p == '+' ? '-' : *p == '/' ? '_' : *p;
    size_t n = bl + strlen(b64) + 64;
    out = malloc(n);
    if (out)
        snprintf(out, n, "%.*s/metrics/job/keydrift_check/instance@base64/%s", (int)bl, base, b64);
    free(b64);
    return out;
}

static size_t discard(char *p, size_t s, size_t n, void *u)
{
    (void)p;
    (void)u;
    return s * n;
}

int push_check(const char *url, const struct config *cfg, long long divergent, double seconds,
               char *err, size_t errlen)
{
    struct metric_family *ok, *div, *dur, *last;
    char *body, *full;
    size_t len;
    CURL *h;
    CURLcode cc;
    long status = 0;
    int rc = -1;

    ok = metrics_family("keydrift_check_success", "1 when the last keydrift check pass completed.",
                        METRIC_GAUGE, 0, NULL);
    div = metrics_family("keydrift_check_divergent_keys",
                         "Divergences confirmed by the last keydrift check pass.", METRIC_GAUGE, 0,
                         NULL);
    dur = metrics_family("keydrift_check_duration_seconds",
                         "How long the last keydrift check pass took.", METRIC_GAUGE, 0, NULL);
    last = metrics_family("keydrift_check_last_run_timestamp_seconds",
                          "When the last keydrift check pass finished (Unix time).", METRIC_GAUGE,
                          0, NULL);
    metric_set(metrics_series0(ok), divergent >= 0);
    if (divergent >= 0)
        metric_set(metrics_series0(div), (double)divergent);
    metric_set(metrics_series0(dur), seconds);
    metric_set(metrics_series0(last), (double)clock_wall_ms() / 1000.0);

    body = metrics_render(&len);
    full = push_url(url, cfg->agent_id);
    h = curl_easy_init();
    if (!body || !full || !h) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: text/plain; version=0.0.4");
    curl_easy_setopt(h, CURLOPT_URL, full);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "PUT");
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)len);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 3000L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    cc = curl_easy_perform(h);
    curl_slist_free_all(hdr);
    if (cc != CURLE_OK) {
        snprintf(err, errlen, "%s", curl_easy_strerror(cc));
        goto out;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200 || status >= 300) {
        snprintf(err, errlen, "the gateway answered HTTP %ld", status);
        goto out;
    }
    rc = 0;
out:
    if (h)
        curl_easy_cleanup(h);
    free(body);
    free(full);
    return rc;
}
