/*
 * backup.c - scheduled backups; see backup.h.
 */
#include "backup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../lib/err.h"
#include "../lib/fdio.h"

#define DAY_MS 86400000ull
#define STALE_PART_S 3600 /* a part file this old was left by a crash */

/* The first slot of the schedule's time of day strictly after ref_ms. */
static uint64_t slot_after(const struct cd_backup_schedule *bs,
                           uint64_t ref_ms,
                           uint64_t interval_ms)
{
    time_t ref = (time_t)(ref_ms / 1000);
    struct tm tm;
    if (localtime_r(&ref, &tm) == NULL) {
        return ref_ms + interval_ms;
    }
    tm.tm_hour = (int)(bs->at_minute / 60);
    tm.tm_min = (int)(bs->at_minute % 60);
    tm.tm_sec = 0;
    tm.tm_isdst = -1; /* whatever local time says on that day */
    time_t base = mktime(&tm);
    if (base == (time_t)-1) {
        return ref_ms + interval_ms;
    }
    uint64_t base_ms = (uint64_t)base * 1000;
    /* The day's slot may be later in the day than ref: anchor on the day
     * before, so that slots earlier than ref's time are counted. */
    if (base_ms > ref_ms) {
        base_ms = base_ms >= DAY_MS ? base_ms - DAY_MS : 0;
    }
    while (base_ms > ref_ms) {
        base_ms = base_ms >= interval_ms ? base_ms - interval_ms : 0;
    }
    return base_ms + ((ref_ms - base_ms) / interval_ms + 1) * interval_ms;
}

uint64_t backup_next_ms(const struct cd_backup_schedule *bs,
                        const struct cd_backup_result *last)
{
    if (bs == NULL || bs->interval_s == 0) {
        return 0;
    }
    uint64_t interval_ms = bs->interval_s * 1000;
    uint64_t next;
    if (bs->has_at) {
        next = slot_after(bs, last != NULL ? last->time_ms : bs->set_ms,
                          interval_ms);
    } else {
        next = last != NULL ? last->time_ms + interval_ms : bs->set_ms;
    }
    if (last != NULL && !last->ok) {
        uint64_t wait =
            interval_ms < BACKUP_RETRY_MS ? interval_ms : BACKUP_RETRY_MS;
        if (last->time_ms + wait < next) {
            next = last->time_ms + wait;
        }
    }
    return next;
}

/* mkdir -p path, the new directories 0750 (backups hold everything). */
static int make_dir(const char *path)
{
    char buf[CD_BACKUP_DIR_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) {
        return -ENAMETOOLONG;
    }
    for (char *p = buf + 1; *p != '\0'; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(buf, 0750) != 0 && errno != EEXIST) {
                return -errno;
            }
            *p = '/';
        }
    }
    if (mkdir(buf, 0750) != 0 && errno != EEXIST) {
        return -errno;
    }
    struct stat st;
    if (stat(buf, &st) != 0) {
        return -errno;
    }
    return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

static int has_affixes(const char *name, const char *prefix, const char *suffix)
{
    size_t n = strlen(name), p = strlen(prefix), s = strlen(suffix);
    return n > p + s && strncmp(name, prefix, p) == 0 &&
           strcmp(name + n - s, suffix) == 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int backup_prune(const char *dir,
                 uint64_t cluster_id,
                 unsigned keep,
                 unsigned *pruned)
{
    char prefix[40], part_prefix[40], path[CD_BACKUP_FILE_MAX];
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    unsigned deleted = 0;
    snprintf(prefix, sizeof prefix, "clusterd-%016" PRIx64 "-", cluster_id);
    snprintf(part_prefix, sizeof part_prefix, ".clusterd-%016" PRIx64 "-",
             cluster_id);
    DIR *d = opendir(dir);
    if (d == NULL) {
        return -errno;
    }
    time_t now = time(NULL);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (has_affixes(e->d_name, part_prefix, ".part") ||
            has_affixes(e->d_name, part_prefix, ".check")) {
            /* Another parent may be writing this one into a shared
             * directory right now: only old ones go. */
            struct stat st;
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            if (stat(path, &st) == 0 && now - st.st_mtime > STALE_PART_S) {
                unlink(path);
            }
            continue;
        }
        if (!has_affixes(e->d_name, prefix, ".snap")) {
            continue;
        }
        if (n == cap) {
            size_t c = cap != 0 ? cap * 2 : 32;
            char **p = realloc(names, c * sizeof *p);
            if (p == NULL) {
                rc = -ENOMEM;
                break;
            }
            names = p;
            cap = c;
        }
        if ((names[n] = strdup(e->d_name)) == NULL) {
            rc = -ENOMEM;
            break;
        }
        n++;
    }
    closedir(d);
    if (rc == 0 && keep > 0 && n > keep) {
        qsort(names, n, sizeof *names, by_name);
        for (size_t i = 0; i + keep < n; i++) {
            snprintf(path, sizeof path, "%s/%s", dir, names[i]);
            if (unlink(path) != 0 && errno != ENOENT) {
                rc = -errno;
                break;
            }
            deleted++;
        }
    }
    for (size_t i = 0; i < n; i++) {
        free(names[i]);
    }
    free(names);
    if (pruned != NULL) {
        *pruned = deleted;
    }
    return rc;
}

/* out->error = "what path: message". */
static int failed(struct backup_outcome *out,
                  int rc,
                  const char *what,
                  const char *path)
{
    snprintf(out->error, sizeof out->error, "%s %s: %s", what, path,
             cd_strerror(rc));
    return rc;
}

int backup_take(struct store *s,
                const char *dir,
                uint64_t cluster_id,
                unsigned retain,
                uint64_t now_ms,
                struct backup_outcome *out)
{
    char stamp[32], part[CD_BACKUP_FILE_MAX], check[CD_BACKUP_FILE_MAX];
    struct stat st = {0};
    time_t t = (time_t)(now_ms / 1000);
    struct tm tm;
    int rc;

    memset(out, 0, sizeof *out);
    if (gmtime_r(&t, &tm) == NULL ||
        strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm) == 0) {
        return failed(out, -EINVAL, "naming a backup in", dir);
    }
    if ((rc = make_dir(dir)) != 0) {
        return failed(out, rc, "cannot create", dir);
    }
    snprintf(part, sizeof part, "%s/.clusterd-%016" PRIx64 "-%s.part", dir,
             cluster_id, stamp);
    snprintf(check, sizeof check, "%s/.clusterd-%016" PRIx64 "-%s.check", dir,
             cluster_id, stamp);
    int fd = open(part, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        return failed(out, -errno, "cannot create", part);
    }
    rc = store_snapshot(s, fd, NULL);
    if (rc != 0) {
        failed(out, rc, "writing", part);
    } else if (fsync(fd) != 0) {
        rc = failed(out, -errno, "syncing", part);
    } else if (fstat(fd, &st) != 0) {
        rc = failed(out, -errno, "reading", part);
    }
    if (close(fd) != 0 && rc == 0) {
        rc = failed(out, -errno, "closing", part);
    }
    /* What reached the disk is checked, as `clusterctl snapshot verify`
     * checks it, before it takes a backup's name. */
    if (rc == 0) {
        fd = open(part, O_RDONLY | O_CLOEXEC);
        rc = fd < 0 ? -errno : store_snapshot_verify(fd, check, &out->info);
        if (fd >= 0) {
            close(fd);
        }
        if (rc == 0 && out->info.meta.cluster_id != cluster_id) {
            rc = CD_EBADCLUSTER;
        }
        if (rc != 0) {
            failed(out, rc, "checking", part);
        }
    }
    if (rc == 0) {
        snprintf(out->file, sizeof out->file,
                 "%s/clusterd-%016" PRIx64 "-%s-r%" PRIu64 ".snap", dir,
                 cluster_id, stamp, out->info.meta.revision);
        out->file_bytes = (uint64_t)st.st_size;
        if ((rc = fd_rename_synced(part, out->file)) != 0) {
            failed(out, rc, "renaming", part);
            out->file[0] = '\0';
        }
    }
    if (rc != 0) {
        unlink(part);
        unlink(check); /* the check removes it; a crash in it would not */
        return rc;
    }
    int prc = backup_prune(dir, cluster_id, retain, &out->pruned);
    if (prc != 0) {
        failed(out, prc, "deleting old backups in", dir);
    }
    return 0;
}
