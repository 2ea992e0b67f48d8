/*
 * process -- the standard process_* metrics, read from /proc/self on every
 * render. Names and meanings follow the Prometheus client libraries.
 */
#include "metrics.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* The fields of /proc/self/stat the collector needs, converted to base units. */
struct proc_stat {
    double cpu_seconds;    /* utime + stime */
    double start_ticks;    /* since boot, in clock ticks */
    double virtual_bytes;  /* vsize */
    double resident_bytes; /* rss pages * page size */
};

/*
 * Parses /proc/self/stat. The command name (field 2) is in parentheses and
 * may itself contain spaces and ')', so fields are counted from the last ')'.
 * Returns 0, or -1 if the file cannot be read or has too few fields.
 */
static int read_proc_stat(struct proc_stat *ps)
{
    char buf[1024];
    FILE *fp = fopen("/proc/self/stat", "re");
    if (!fp)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    p++;

    /* After ')': field 3 (state) is index 0 here; utime is field 14. */
    unsigned long long f[24] = {0};
    int field = 3;
    char *save = NULL;
    for (char *tok = strtok_r(p, " \n", &save); tok && field <= 24;
         tok = strtok_r(NULL, " \n", &save), field++) {
        if (field >= 4)
            f[field - 1] = strtoull(tok, NULL, 10);
    }
    if (field <= 24)
        return -1;
    long ticks = sysconf(_SC_CLK_TCK);
    long page = sysconf(_SC_PAGESIZE);
    if (ticks <= 0)
        ticks = 100;
    if (page <= 0)
        page = 4096;
    ps->cpu_seconds = (double)(f[13] + f[14]) / (double)ticks; /* fields 14, 15 */
    ps->start_ticks = (double)f[21];                           /* field 22 */
    ps->virtual_bytes = (double)f[22];                         /* field 23 */
    ps->resident_bytes = (double)f[23] * (double)page;         /* field 24 */
    return 0;
}

/* Boot time in seconds since the epoch (btime in /proc/stat), or -1. */
static double boot_time(void)
{
    char line[256];
    double bt = -1;
    FILE *fp = fopen("/proc/stat", "re");
    if (!fp)
        return -1;
    while (fgets(line, sizeof(line), fp)) {
        if (strncmp(line, "btime ", 6) == 0) {
            bt = strtod(line + 6, NULL);
            break;
        }
    }
    fclose(fp);
    return bt;
}

/* Number of open descriptors (entries of /proc/self/fd, minus the one we open). */
static double open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n > 0 ? n - 1 : 0;
}

static void set0(const char *name, const char *help, enum metric_type type, double v)
{
    metric_set(metrics_series0(metrics_family(name, help, type, 0, NULL)), v);
}

/*
 * The collector: refreshes every process_* gauge and counter. Families are
 * looked up by name each time, so it keeps working after a registry reset.
 */
static void process_collect(void *arg)
{
    (void)arg;
    struct proc_stat ps;
    if (read_proc_stat(&ps) == 0) {
        set0("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
             METRIC_COUNTER, ps.cpu_seconds);
        set0("process_resident_memory_bytes", "Resident memory size in bytes.", METRIC_GAUGE,
             ps.resident_bytes);
        set0("process_virtual_memory_bytes", "Virtual memory size in bytes.", METRIC_GAUGE,
             ps.virtual_bytes);
        double bt = boot_time();
        long ticks = sysconf(_SC_CLK_TCK);
        if (bt >= 0 && ticks > 0)
            set0("process_start_time_seconds",
                 "Start time of the process since unix epoch in seconds.", METRIC_GAUGE,
                 bt + ps.start_ticks / (double)ticks);
    }
    double fds = open_fds();
    if (fds >= 0)
        set0("process_open_fds", "Number of open file descriptors.", METRIC_GAUGE, fds);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        set0("process_max_fds", "Maximum number of open file descriptors.", METRIC_GAUGE,
             (double)rl.rlim_cur);
}

/*
 * Registers the process collector (once; a second call is a no-op) and runs
 * it, so the families exist in registration order from the start.
 */
void metrics_register_process(void)
{
    metrics_add_collector(process_collect, NULL);
    process_collect(NULL);
}
