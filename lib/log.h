/*
 * log.h - leveled logging to stderr.
 *
 * The macros test the level before evaluating their arguments, so a debug
 * line costs one comparison when debug logging is off.  Lines look like
 *   2026-11-23T03:41:07.123Z clusterd[1234] warn store: map 91% full
 * and go to stderr, which systemd and docker both collect.
 *
 * Thread-safety: log_set_level() is for start-up; the macros may be called
 * from any thread (each line is written with one write(2)).
 */
#ifndef CD_LOG_H
#define CD_LOG_H

enum log_level { LOG_LVL_ERROR, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

extern enum log_level log__level;

/* Set the process name shown in every line (borrowed: must outlive use). */
void log_set_ident(const char *ident);
void log_set_level(enum log_level level);
/* Parse "error|warn|info|debug"; returns 0 or -EINVAL. */
int log_parse_level(const char *s, enum log_level *out);

void log__write(enum log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define LOG__AT(lvl, mod, ...)                     \
    do {                                           \
        if ((lvl) <= log__level) {                 \
            log__write((lvl), (mod), __VA_ARGS__); \
        }                                          \
    } while (0)

#define log_error(mod, ...) LOG__AT(LOG_LVL_ERROR, mod, __VA_ARGS__)
#define log_warn(mod, ...) LOG__AT(LOG_LVL_WARN, mod, __VA_ARGS__)
#define log_info(mod, ...) LOG__AT(LOG_LVL_INFO, mod, __VA_ARGS__)
#define log_debug(mod, ...) LOG__AT(LOG_LVL_DEBUG, mod, __VA_ARGS__)

#endif
