/*
 * metrics -- a Prometheus metrics registry and its text rendering (format 0.0.4).
 *
 * Families are registered once (metrics_family) with a fixed list of label
 * names; series are created on first use (metrics_series) and live until
 * metrics_family_reset() or process exit, so a struct metric * may be cached
 * and updated from any thread. Values are updated atomically; rendering takes
 * a consistent-enough snapshot without blocking writers for long. Collectors
 * registered with metrics_add_collector() run at the start of every render
 * (for values read on demand: /proc, atomics owned by other modules).
 */
#ifndef KD_METRICS_H
#define KD_METRICS_H

#include <stddef.h>

enum metric_type { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

struct metric_family;
struct metric;

/*
 * Registers a family (or returns the existing one of that name). labels is an
 * array of nlabels label names (may be NULL when nlabels is 0). For
 * histograms, buckets are the nbuckets upper bounds in increasing order
 * (+Inf is implicit); metrics_family(..., METRIC_HISTOGRAM, ...) uses the
 * client libraries' defaults (.005 .. 10 seconds). The registry copies what
 * it needs. An invalid name, label or bucket list, or a name already taken by
 * a family of another type/labels/buckets, logs a warning and returns NULL;
 * every function below accepts a NULL family or series and does nothing.
 * A family without labels has its one series from the start (rendered as 0);
 * a labelled family is rendered once it has a series.
 */
struct metric_family *metrics_family(const char *name, const char *help, enum metric_type type,
                                     int nlabels, const char *const *labels);
struct metric_family *metrics_histogram(const char *name, const char *help, int nlabels,
                                        const char *const *labels, const double *buckets,
                                        int nbuckets);

/* The series with these label values (nlabels strings), created at 0 if new. */
struct metric *metrics_series(struct metric_family *f, const char *const *values);
/* Shorthands for families with 0, 1, 2 labels. */
struct metric *metrics_series0(struct metric_family *f);
struct metric *metrics_series1(struct metric_family *f, const char *v1);
struct metric *metrics_series2(struct metric_family *f, const char *v1, const char *v2);

/*
 * Updates are lock-free (an atomic compare-and-swap on the value). metric_set
 * also works on counters, for collectors that copy a total kept elsewhere;
 * metric_add ignores negative or NaN amounts on counters. metric_value gives a
 * histogram's observation count.
 */
void metric_set(struct metric *m, double v); /* gauges */
void metric_add(struct metric *m, double v); /* counters (v >= 0) and gauges */
void metric_inc(struct metric *m);
double metric_value(const struct metric *m);
void metric_observe(struct metric *m, double v); /* histograms */

/*
 * Drops every series of a family (e.g. when a replica is removed on reload).
 * Every struct metric * obtained from that family becomes invalid: callers
 * must drop cached pointers first and look series up again afterwards.
 */
void metrics_family_reset(struct metric_family *f);

/*
 * Adds a function run at the start of every metrics_render(), outside the
 * registry lock (so it may call metrics_series and metric_set). Adding the
 * same (fn, arg) twice is a no-op.
 */
typedef void (*metrics_collector)(void *arg);
void metrics_add_collector(metrics_collector fn, void *arg);

/*
 * Renders every family in the text exposition format into a malloc'd,
 * NUL-terminated buffer; *len gets its length. The caller frees it.
 */
char *metrics_render(size_t *len);

/* Registers process_* metrics (cpu, rss, fds, start time, from /proc/self). */
void metrics_register_process(void);

/*
 * Frees the whole registry, collectors included (for leak-clean exits and
 * tests). Every family and series pointer becomes invalid; the registry may
 * be used again afterwards, empty.
 */
void metrics_shutdown(void);

#endif
