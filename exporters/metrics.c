/*
 * metrics -- the Prometheus registry: families, series, collectors, rendering.
 *
 * One registry mutex guards the structure (the family list, each family's
 * series list and hash table, the collector list). Values are not guarded by
 * it: a series keeps its value as the bit pattern of a double in an
 * _Atomic uint64_t, updated with a compare-and-swap loop, so metric_inc() on
 * a cached series takes no lock. A histogram keeps one atomic count per
 * bucket (not cumulative; +Inf last) and an atomic sum; its _count is
 * rendered as the total of its buckets, so _count always equals the +Inf
 * bucket even while observations race with a render.
 */
#include "metrics.h"
#include "log.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

struct metric {
    struct metric_family *m_fam;
    struct metric *m_next;  /* creation order */
    struct metric *m_hnext; /* hash chain */
    uint64_t m_hash;
    char **m_values;             /* m_fam->f_nlabels label values */
    _Atomic uint64_t m_bits;     /* the value, or a histogram's sum */
    _Atomic uint64_t *m_buckets; /* histograms: f_nbuckets + 1 counts */
};

struct metric_family {
    char *f_name;
    char *f_help;
    enum metric_type f_type;
    int f_nlabels;
    char **f_labels;
    double *f_bounds; /* histograms: upper bounds, +Inf implicit */
    int f_nbuckets;
    struct metric *f_first, *f_last; /* series in creation order */
    struct metric **f_tab;           /* hash table over label values */
    size_t f_tabsz, f_nseries;
    struct metric_family *f_next; /* registration order */
};

struct collector {
    metrics_collector c_fn;
    void *c_arg;
};

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct metric_family *reg_first, *reg_last;
static struct collector *reg_collectors;
static int reg_ncollectors;

/* ---------------------------------------------------------------------------
 * Atomic doubles
 * ------------------------------------------------------------------------- */

static uint64_t dbl_bits(double v)
{
    uint64_t b;
    memcpy(&b, &v, sizeof(b));
    return b;
}

static double bits_dbl(uint64_t b)
{
    double v;
    memcpy(&v, &b, sizeof(v));
    return v;
}

/* Adds v to the double stored in *p, retrying until no writer raced us. */
static void atomic_add_dbl(_Atomic uint64_t *p, double v)
{
    uint64_t old = atomic_load_explicit(p, memory_order_relaxed);
    uint64_t new;
    do {
        new = dbl_bits(bits_dbl(old) + v);
    } while (!atomic_compare_exchange_weak_explicit(p, &old, new, memory_order_relaxed,
                                                    memory_order_relaxed));
}

/* ---------------------------------------------------------------------------
 * Names and label values
 * ------------------------------------------------------------------------- */

/* A metric name is [a-zA-Z_:][a-zA-Z0-9_:]*; a label name has no ':'. */
static int valid_name(const char *s, int colon_ok)
{
    if (!s || !*s)
        return 0;
    for (const char *p = s; *p; p++) {
        int c = (unsigned char)*p;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                 (colon_ok && c == ':') || (p != s && c >= '0' && c <= '9');
        if (!ok)
            return 0;
    }
    return 1;
}

/* Hashes the label values of a series, length-prefixed so ("a","bc") != ("ab","c"). */
static uint64_t values_hash(int n, const char *const *values)
{
    uint64_t h = 0;
    for (int i = 0; i < n; i++) {
        const char *v = values && values[i] ? values[i] : "";
        uint64_t len = strlen(v);
        h = XXH64(&len, sizeof(len), h);
        h = XXH64(v, len, h);
    }
    return h;
}

static int values_equal(int n, char *const *a, const char *const *b)
{
    for (int i = 0; i < n; i++) {
        const char *v = b && b[i] ? b[i] : "";
        if (strcmp(a[i], v) != 0)
            return 0;
    }
    return 1;
}

static void free_strv(char **v, int n)
{
    if (!v)
        return;
    for (int i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* Copies n strings (NULL entries become ""); NULL if an allocation fails. */
static char **dup_strv(int n, const char *const *src)
{
    char **v = calloc(n > 0 ? (size_t)n : 1, sizeof(*v));
    if (!v)
        return NULL;
    for (int i = 0; i < n; i++) {
        v[i] = strdup(src && src[i] ? src[i] : "");
        if (!v[i]) {
            free_strv(v, i);
            return NULL;
        }
    }
    return v;
}

/* ---------------------------------------------------------------------------
 * Families and series
 * ------------------------------------------------------------------------- */

static void series_free(struct metric *m)
{
    if (!m)
        return;
    free_strv(m->m_values, m->m_fam->f_nlabels);
    free(m->m_buckets);
    free(m);
}

static void family_drop_series(struct metric_family *f)
{
    struct metric *m = f->f_first;
    while (m) {
        struct metric *next = m->m_next;
        series_free(m);
        m = next;
    }
    f->f_first = f->f_last = NULL;
    free(f->f_tab);
    f->f_tab = NULL;
    f->f_tabsz = f->f_nseries = 0;
}

static void family_free(struct metric_family *f)
{
    family_drop_series(f);
    free(f->f_name);
    free(f->f_help);
    free_strv(f->f_labels, f->f_nlabels);
    free(f->f_bounds);
    free(f);
}

static struct metric_family *family_find(const char *name)
{
    for (struct metric_family *f = reg_first; f; f = f->f_next)
        if (strcmp(f->f_name, name) == 0)
            return f;
    return NULL;
}

/* Whether an existing family matches a new registration of the same name. */
static int family_same_shape(const struct metric_family *f, enum metric_type type, int nlabels,
                             const char *const *labels, const double *bounds, int nbuckets)
{
    if (f->f_type != type || f->f_nlabels != nlabels)
        return 0;
    for (int i = 0; i < nlabels; i++)
        if (strcmp(f->f_labels[i], labels[i]) != 0)
            return 0;
    if (type == METRIC_HISTOGRAM) {
        if (f->f_nbuckets != nbuckets)
            return 0;
        for (int i = 0; i < nbuckets; i++)
            if (f->f_bounds[i] != bounds[i])
                return 0;
    }
    return 1;
}

/* Checks a registration's names and buckets; logs and returns 0 if invalid. */
static int family_args_ok(const char *name, enum metric_type type, int nlabels,
                          const char *const *labels, const double *bounds, int nbuckets)
{
    if (!valid_name(name, 1)) {
        log_warnx("metrics: invalid metric name '%s'", name ? name : "(null)");
        return 0;
    }
    if (nlabels < 0 || (nlabels > 0 && !labels)) {
        log_warnx("metrics: %s: bad label list", name);
        return 0;
    }
    for (int i = 0; i < nlabels; i++) {
        if (!valid_name(labels[i], 0) || strncmp(labels[i], "__", 2) == 0 ||
            (type == METRIC_HISTOGRAM && strcmp(labels[i], "le") == 0)) {
            log_warnx("metrics: %s: invalid label name '%s'", name,
                      labels[i] ? labels[i] : "(null)");
            return 0;
        }
        for (int j = 0; j < i; j++)
            if (strcmp(labels[i], labels[j]) == 0) {
                log_warnx("metrics: %s: duplicate label name '%s'", name, labels[i]);
                return 0;
            }
    }
    if (type == METRIC_HISTOGRAM) {
        if (nbuckets < 0 || (nbuckets > 0 && !bounds)) {
            log_warnx("metrics: %s: bad bucket list", name);
            return 0;
        }
        for (int i = 0; i < nbuckets; i++)
            if (isnan(bounds[i]) || isinf(bounds[i]) || (i > 0 && bounds[i] <= bounds[i - 1])) {
                log_warnx("metrics: %s: buckets must be finite and strictly increasing", name);
                return 0;
            }
    }
    return 1;
}

static struct metric *series_get_locked(struct metric_family *f, const char *const *values);

/*
 * Registers a family, or returns the existing one if the name is taken by a
 * family of the same type, labels and buckets. A clash or an invalid name
 * logs a warning and returns NULL (the series functions accept NULL, so a
 * bad registration costs the metric, not the process). A family without
 * labels gets its single series at once, so it renders as 0 before first use,
 * as the Prometheus client libraries do.
 */
static struct metric_family *family_register(const char *name, const char *help,
                                             enum metric_type type, int nlabels,
                                             const char *const *labels, const double *bounds,
                                             int nbuckets)
{
    if (!family_args_ok(name, type, nlabels, labels, bounds, nbuckets))
        return NULL;

    pthread_mutex_lock(&reg_lock);
    struct metric_family *f = family_find(name);
    if (f) {
        if (!family_same_shape(f, type, nlabels, labels, bounds, nbuckets)) {
            log_warnx("metrics: %s registered twice with different type, labels or buckets", name);
            f = NULL;
        }
        pthread_mutex_unlock(&reg_lock);
        return f;
    }

    f = calloc(1, sizeof(*f));
    if (!f)
        goto fail;
    f->f_type = type;
    f->f_nlabels = nlabels;
    f->f_name = strdup(name);
    f->f_help = strdup(help ? help : "");
    f->f_labels = dup_strv(nlabels, labels);
    if (!f->f_name || !f->f_help || !f->f_labels)
        goto fail;
    if (type == METRIC_HISTOGRAM) {
        f->f_nbuckets = nbuckets;
        f->f_bounds = calloc(nbuckets > 0 ? (size_t)nbuckets : 1, sizeof(double));
        if (!f->f_bounds)
            goto fail;
        if (nbuckets > 0)
            memcpy(f->f_bounds, bounds, (size_t)nbuckets * sizeof(double));
    }
    if (nlabels == 0 && !series_get_locked(f, NULL))
        goto fail;
    if (reg_last)
        reg_last->f_next = f;
    else
        reg_first = f;
    reg_last = f;
    pthread_mutex_unlock(&reg_lock);
    return f;

fail:
    pthread_mutex_unlock(&reg_lock);
    if (f)
        family_free(f);
    log_warnx("metrics: %s: out of memory", name);
    return NULL;
}

struct metric_family *metrics_family(const char *name, const char *help, enum metric_type type,
                                     int nlabels, const char *const *labels)
{
    static const double default_buckets[] = {.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10};
    if (type == METRIC_HISTOGRAM)
        return family_register(name, help, type, nlabels, labels, default_buckets,
                               (int)(sizeof(default_buckets) / sizeof(default_buckets[0])));
    return family_register(name, help, type, nlabels, labels, NULL, 0);
}

struct metric_family *metrics_histogram(const char *name, const char *help, int nlabels,
                                        const char *const *labels, const double *buckets,
                                        int nbuckets)
{
    return family_register(name, help, METRIC_HISTOGRAM, nlabels, labels, buckets, nbuckets);
}

/* Doubles a family's hash table once it holds as many series as slots. */
static void family_rehash(struct metric_family *f)
{
    size_t nsz = f->f_tabsz ? f->f_tabsz * 2 : 8;
    struct metric **tab = calloc(nsz, sizeof(*tab));
    if (!tab)
        return; /* keep the old, fuller table */
    for (struct metric *m = f->f_first; m; m = m->m_next) {
        size_t b = m->m_hash & (nsz - 1);
        m->m_hnext = tab[b];
        tab[b] = m;
    }
    free(f->f_tab);
    f->f_tab = tab;
    f->f_tabsz = nsz;
}

/* Finds or creates a series; the caller holds reg_lock. NULL when out of memory. */
static struct metric *series_get_locked(struct metric_family *f, const char *const *values)
{
    uint64_t h = values_hash(f->f_nlabels, values);
    if (f->f_tabsz) {
        for (struct metric *m = f->f_tab[h & (f->f_tabsz - 1)]; m; m = m->m_hnext)
            if (m->m_hash == h && values_equal(f->f_nlabels, m->m_values, values))
                return m;
    }

    struct metric *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->m_fam = f;
    m->m_hash = h;
    m->m_values = dup_strv(f->f_nlabels, values);
    if (f->f_type == METRIC_HISTOGRAM)
        m->m_buckets = calloc((size_t)f->f_nbuckets + 1, sizeof(*m->m_buckets));
    if (!m->m_values || (f->f_type == METRIC_HISTOGRAM && !m->m_buckets)) {
        series_free(m);
        return NULL;
    }
    atomic_init(&m->m_bits, dbl_bits(0.0));

    if (f->f_nseries >= f->f_tabsz)
        family_rehash(f);
    if (!f->f_tabsz) {
        series_free(m);
        return NULL;
    }
    size_t b = h & (f->f_tabsz - 1);
    m->m_hnext = f->f_tab[b];
    f->f_tab[b] = m;
    if (f->f_last)
        f->f_last->m_next = m;
    else
        f->f_first = m;
    f->f_last = m;
    f->f_nseries++;
    return m;
}

struct metric *metrics_series(struct metric_family *f, const char *const *values)
{
    if (!f)
        return NULL;
    pthread_mutex_lock(&reg_lock);
    struct metric *m = series_get_locked(f, values);
    pthread_mutex_unlock(&reg_lock);
    if (!m)
        log_warnx("metrics: %s: cannot create series: out of memory", f->f_name);
    return m;
}

struct metric *metrics_series0(struct metric_family *f)
{
    return metrics_series(f, NULL);
}

struct metric *metrics_series1(struct metric_family *f, const char *v1)
{
    const char *v[1] = {v1};
    return metrics_series(f, v);
}

struct metric *metrics_series2(struct metric_family *f, const char *v1, const char *v2)
{
    const char *v[2] = {v1, v2};
    return metrics_series(f, v);
}

void metrics_family_reset(struct metric_family *f)
{
    if (!f)
        return;
    pthread_mutex_lock(&reg_lock);
    family_drop_series(f);
    if (f->f_nlabels == 0)
        series_get_locked(f, NULL);
    pthread_mutex_unlock(&reg_lock);
}

/* ---------------------------------------------------------------------------
 * Updates (lock-free)
 * ------------------------------------------------------------------------- */

void metric_set(struct metric *m, double v)
{
    if (!m || m->m_fam->f_type == METRIC_HISTOGRAM)
        return;
    atomic_store_explicit(&m->m_bits, dbl_bits(v), memory_order_relaxed);
}

void metric_add(struct metric *m, double v)
{
    if (!m || m->m_fam->f_type == METRIC_HISTOGRAM)
        return;
    if (m->m_fam->f_type == METRIC_COUNTER && !(v >= 0))
        return; /* counters only go up; also drops NaN */
    atomic_add_dbl(&m->m_bits, v);
}

void metric_inc(struct metric *m)
{
    metric_add(m, 1.0);
}

double metric_value(const struct metric *m)
{
    if (!m)
        return 0;
    if (m->m_fam->f_type == METRIC_HISTOGRAM) {
        uint64_t n = 0;
        for (int i = 0; i <= m->m_fam->f_nbuckets; i++)
            n += atomic_load_explicit(&m->m_buckets[i], memory_order_relaxed);
        return (double)n;
    }
    return bits_dbl(atomic_load_explicit(&m->m_bits, memory_order_relaxed));
}

void metric_observe(struct metric *m, double v)
{
    if (!m || m->m_fam->f_type != METRIC_HISTOGRAM)
        return;
    const struct metric_family *f = m->m_fam;
    /* The first bucket whose upper bound is >= v; NaN ends up in +Inf. */
    int lo = 0, hi = f->f_nbuckets;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (v <= f->f_bounds[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    atomic_fetch_add_explicit(&m->m_buckets[lo], 1, memory_order_relaxed);
    atomic_add_dbl(&m->m_bits, v);
}

/* ---------------------------------------------------------------------------
 * Collectors
 * ------------------------------------------------------------------------- */

void metrics_add_collector(metrics_collector fn, void *arg)
{
    if (!fn)
        return;
    pthread_mutex_lock(&reg_lock);
    for (int i = 0; i < reg_ncollectors; i++)
        if (reg_collectors[i].c_fn == fn && reg_collectors[i].c_arg == arg)
            goto out; /* already registered */
    struct collector *c = realloc(reg_collectors, (size_t)(reg_ncollectors + 1) * sizeof(*c));
    if (!c) {
        log_warnx("metrics: cannot add collector: out of memory");
        goto out;
    }
    reg_collectors = c;
    reg_collectors[reg_ncollectors].c_fn = fn;
    reg_collectors[reg_ncollectors].c_arg = arg;
    reg_ncollectors++;
out:
    pthread_mutex_unlock(&reg_lock);
}

/* Runs every collector without holding the lock, so they may create series. */
static void run_collectors(void)
{
    pthread_mutex_lock(&reg_lock);
    int n = reg_ncollectors;
    struct collector *copy = n ? malloc((size_t)n * sizeof(*copy)) : NULL;
    if (copy)
        memcpy(copy, reg_collectors, (size_t)n * sizeof(*copy));
    pthread_mutex_unlock(&reg_lock);
    if (!copy)
        return;
    for (int i = 0; i < n; i++)
        copy[i].c_fn(copy[i].c_arg);
    free(copy);
}

/* ---------------------------------------------------------------------------
 * Rendering
 * ------------------------------------------------------------------------- */

struct buf {
    char *b;
    size_t len, cap;
    int oom;
};

static void buf_grow(struct buf *b, size_t more)
{
    if (b->oom || b->len + more + 1 <= b->cap)
        return;
    size_t ncap = b->cap ? b->cap : 4096;
    while (ncap < b->len + more + 1)
        ncap *= 2;
    char *n = realloc(b->b, ncap);
    if (!n) {
        b->oom = 1;
        return;
    }
    b->b = n;
    b->cap = ncap;
}

static void buf_put(struct buf *b, const char *s, size_t n)
{
    buf_grow(b, n);
    if (b->oom)
        return;
    memcpy(b->b + b->len, s, n);
    b->len += n;
    b->b[b->len] = '\0';
}

static void buf_puts(struct buf *b, const char *s)
{
    buf_put(b, s, strlen(s));
}

/*
 * Length of the valid UTF-8 sequence at s (1..4), or 0 if the bytes there are
 * not one (overlongs, surrogates and code points above U+10FFFF included).
 */
static size_t utf8_seq(const unsigned char *s)
{
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    size_t n;
    unsigned min, cp;
    if ((c & 0xe0) == 0xc0) {
        n = 2, min = 0x80, cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
        n = 3, min = 0x800, cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
        n = 4, min = 0x10000, cp = c & 0x07;
    } else {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

/*
 * Appends s escaped for the exposition format: '\\' and newline always, '"'
 * too inside label values. Bytes that are not valid UTF-8 become U+FFFD,
 * since Prometheus rejects invalid UTF-8.
 */
static void buf_put_escaped(struct buf *b, const char *s, int quote)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        size_t n = utf8_seq(p);
        if (n == 0) {
            buf_puts(b, "\xef\xbf\xbd");
            p++;
        } else if (*p == '\\') {
            buf_puts(b, "\\\\");
            p++;
        } else if (*p == '\n') {
            buf_puts(b, "\\n");
            p++;
        } else if (*p == '"' && quote) {
            buf_puts(b, "\\\"");
            p++;
        } else {
            buf_put(b, (const char *)p, n);
            p += n;
        }
    }
}

/*
 * Formats v the way Prometheus parses it: NaN, +Inf, -Inf, integers without
 * a fraction or exponent where %g allows, and otherwise the shortest of
 * %.15g/%.16g/%.17g that reads back as the same double.
 */
static void fmt_double(char *out, size_t outsz, double v)
{
    if (isnan(v)) {
        snprintf(out, outsz, "NaN");
        return;
    }
    if (isinf(v)) {
        snprintf(out, outsz, "%s", v > 0 ? "+Inf" : "-Inf");
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(out, outsz, "%.*g", prec, v);
        if (strtod(out, NULL) == v)
            return;
    }
}

static void buf_put_double(struct buf *b, double v)
{
    char num[40];
    fmt_double(num, sizeof(num), v);
    buf_puts(b, num);
}

/* Appends {l1="v1",...[,le="x"]} (nothing at all when there are no labels). */
static void put_labels(struct buf *b, const struct metric *m, const char *le)
{
    const struct metric_family *f = m->m_fam;
    if (f->f_nlabels == 0 && !le)
        return;
    buf_puts(b, "{");
    for (int i = 0; i < f->f_nlabels; i++) {
        if (i)
            buf_puts(b, ",");
        buf_puts(b, f->f_labels[i]);
        buf_puts(b, "=\"");
        buf_put_escaped(b, m->m_values[i], 1);
        buf_puts(b, "\"");
    }
    if (le) {
        if (f->f_nlabels)
            buf_puts(b, ",");
        buf_puts(b, "le=\"");
        buf_puts(b, le);
        buf_puts(b, "\"");
    }
    buf_puts(b, "}");
}

/* name{labels} value\n with an optional name suffix and le label. */
static void put_sample(struct buf *b, const struct metric *m, const char *suffix, const char *le,
                       double v)
{
    buf_puts(b, m->m_fam->f_name);
    if (suffix)
        buf_puts(b, suffix);
    put_labels(b, m, le);
    buf_puts(b, " ");
    buf_put_double(b, v);
    buf_puts(b, "\n");
}

static void render_histogram(struct buf *b, const struct metric *m)
{
    const struct metric_family *f = m->m_fam;
    uint64_t cum = 0;
    char le[40];
    for (int i = 0; i <= f->f_nbuckets; i++) {
        cum += atomic_load_explicit(&m->m_buckets[i], memory_order_relaxed);
        if (i < f->f_nbuckets)
            fmt_double(le, sizeof(le), f->f_bounds[i]);
        else
            snprintf(le, sizeof(le), "+Inf");
        put_sample(b, m, "_bucket", le, (double)cum);
    }
    put_sample(b, m, "_sum", NULL,
               bits_dbl(atomic_load_explicit(&m->m_bits, memory_order_relaxed)));
    put_sample(b, m, "_count", NULL, (double)cum);
}

static void render_family(struct buf *b, const struct metric_family *f)
{
    static const char *const type_names[] = {"counter", "gauge", "histogram"};
    if (!f->f_first)
        return; /* nothing to expose yet */
    buf_puts(b, "# HELP ");
    buf_puts(b, f->f_name);
    buf_puts(b, " ");
    buf_put_escaped(b, f->f_help, 0);
    buf_puts(b, "\n# TYPE ");
    buf_puts(b, f->f_name);
    buf_puts(b, " ");
    buf_puts(b, type_names[f->f_type]);
    buf_puts(b, "\n");
    for (const struct metric *m = f->f_first; m; m = m->m_next) {
        if (f->f_type == METRIC_HISTOGRAM)
            render_histogram(b, m);
        else
            put_sample(b, m, NULL, NULL,
                       bits_dbl(atomic_load_explicit(&m->m_bits, memory_order_relaxed)));
    }
}

/*
 * Runs the collectors, then renders all families under the registry lock.
 * Returns a malloc'd NUL-terminated text the caller frees, or NULL when out
 * of memory. A family whose label set has no series yet is left out.
 */
char *metrics_render(size_t *len)
{
    struct buf b = {0};

    run_collectors();
    pthread_mutex_lock(&reg_lock);
    buf_grow(&b, 0);
    if (!b.oom)
        b.b[0] = '\0';
    for (const struct metric_family *f = reg_first; f; f = f->f_next)
        render_family(&b, f);
    pthread_mutex_unlock(&reg_lock);
    if (b.oom) {
        free(b.b);
        if (len)
            *len = 0;
        return NULL;
    }
    if (len)
        *len = b.len;
    return b.b;
}

void metrics_shutdown(void)
{
    pthread_mutex_lock(&reg_lock);
    struct metric_family *f = reg_first;
    while (f) {
        struct metric_family *next = f->f_next;
        family_free(f);
        f = next;
    }
    reg_first = reg_last = NULL;
    free(reg_collectors);
    reg_collectors = NULL;
    reg_ncollectors = 0;
    pthread_mutex_unlock(&reg_lock);
}
