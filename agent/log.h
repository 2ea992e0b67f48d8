/*
 * log -- levelled logging to stderr or syslog.
 *
 * log_warn() appends strerror(errno); log_warnx() does not. fatal() logs and
 * exits with status 2. All functions are thread-safe (one write(2) a line).
 */
#ifndef KD_LOG_H
#define KD_LOG_H

#include <stddef.h>

enum log_level { LOG_LVL_DEBUG, LOG_LVL_INFO, LOG_LVL_NOTICE, LOG_LVL_WARNING, LOG_LVL_ERROR };

void log_init(const char *ident, int use_syslog);
void log_set_level(enum log_level lvl);
int log_level_parse(const char *s, enum log_level *out);
int log_enabled(enum log_level lvl);

void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_notice(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_errorx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void fatalx(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/*
 * Writes a printable, bounded excerpt of buf into out (always NUL-terminated):
 * bytes outside 0x20..0x7e become \xNN, '"' and '\\' are escaped, and input
 * beyond what fits is replaced by "...". Returns out.
 */
char *log_escape(char *out, size_t outsz, const void *buf, size_t len);

#endif
