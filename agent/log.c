/*
 * log -- levelled logging to stderr or syslog.
 */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static int log_syslog;
static enum log_level log_min = LOG_LVL_INFO;
static const char *log_ident = "keydrift";

static const char *const log_names[] = {"debug", "info", "notice", "warning", "error"};
static const int log_prio[] = {LOG_DEBUG, LOG_INFO, LOG_NOTICE, LOG_WARNING, LOG_ERR};

void log_init(const char *ident, int use_syslog)
{
    log_ident = ident;
    log_syslog = use_syslog;
    if (use_syslog)
        openlog(ident, LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

void log_set_level(enum log_level lvl)
{
    log_min = lvl;
}

int log_enabled(enum log_level lvl)
{
    return lvl >= log_min;
}

int log_level_parse(const char *s, enum log_level *out)
{
    for (size_t i = 0; i < sizeof(log_names) / sizeof(log_names[0]); i++) {
        if (strcmp(s, log_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

static void log_vemit(enum log_level lvl, const char *fmt, va_list ap, const char *suffix)
{
    char msg[2048];
    int n;

    if (lvl < log_min)
        return;
    n = vsnprintf(msg, sizeof(msg), fmt, ap);
    if (n < 0)
        return;
    if (log_syslog) {
        syslog(log_prio[lvl], "%s%s%s", msg, suffix ? ": " : "", suffix ? suffix : "");
        return;
    }

    char line[2300];
    struct timespec ts;
    struct tm tm;
    char stamp[32];

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
    n = snprintf(line, sizeof(line), "%s.%03ldZ %s[%d] %s: %s%s%s\n", stamp, ts.tv_nsec / 1000000,
                 log_ident, (int)getpid(), log_names[lvl], msg, suffix ? ": " : "",
                 suffix ? suffix : "");
    if (n < 0)
        return;
    if ((size_t)n >= sizeof(line)) {
        n = sizeof(line) - 1;
        line[n - 1] = '\n';
    }
    /* One write per line keeps lines from different threads whole. */
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}

#define LOG_FN(name, lvl)                                                                          \
    void name(const char *fmt, ...)                                                                \
    {                                                                                              \
        va_list ap;                                                                                \
        va_start(ap, fmt);                                                                         \
        log_vemit(lvl, fmt, ap, NULL);                                                             \
        va_end(ap);                                                                                \
    }

LOG_FN(log_debug, LOG_LVL_DEBUG)
LOG_FN(log_info, LOG_LVL_INFO)
LOG_FN(log_notice, LOG_LVL_NOTICE)
LOG_FN(log_warnx, LOG_LVL_WARNING)
LOG_FN(log_errorx, LOG_LVL_ERROR)

void log_warn(const char *fmt, ...)
{
    va_list ap;
    char err[128];
    int saved = errno;

    snprintf(err, sizeof(err), "%s", strerror(saved));
    va_start(ap, fmt);
    log_vemit(LOG_LVL_WARNING, fmt, ap, err);
    va_end(ap);
    errno = saved;
}

void fatalx(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_vemit(LOG_LVL_ERROR, fmt, ap, NULL);
    va_end(ap);
    exit(2);
}

char *log_escape(char *out, size_t outsz, const void *buf, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = buf;
    size_t o = 0;

    if (outsz == 0)
        return out;
    for (size_t i = 0; i < len; i++) {
        char tmp[4];
        size_t tn;
        unsigned char c = p[i];

        if (c == '"' || c == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)c;
            tn = 2;
        } else if (c >= 0x20 && c < 0x7f) {
            tmp[0] = (char)c;
            tn = 1;
        } else {
            tmp[0] = '\\';
            tmp[1] = 'x';
            tmp[2] = hex[c >> 4];
            tmp[3] = hex[c & 15];
            tn = 4;
        }
        if (o + tn + 4 > outsz) { /* keep room for "..." and NUL */
            if (o + 4 <= outsz) {
                memcpy(out + o, "...", 3);
                o += 3;
            }
            break;
        }
        memcpy(out + o, tmp, tn);
        o += tn;
    }
    out[o] = '\0';
    return out;
}
