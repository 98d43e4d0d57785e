/*
 * lostwrites - power loss for the fault lab: undo every write a program
 * did not make durable.  kill -9 proves nothing about fsync (the page cache
 * survives the process), so this models what a machine losing power loses.
 *
 * One source, built twice (docs/lab.md):
 *   build/tests/liblostwrites.so  (-DLW_SHIM) for LD_PRELOAD: while the
 *       program runs it records, for every file under LOSTWRITES_DIR, the
 *       undo data of each change not yet durable, in an undo log beside
 *       the directory (DIR.lostwrites/, so it survives kill -9);
 *   build/tests/lostwrites  the command that applies the log afterwards:
 *       lostwrites rollback DIR | status DIR | forget DIR
 *
 * The model, per file (inode): a durable size and, for every byte changed
 * since the last sync, the byte's durable value (a pre-image, or zero
 * beyond the durable size).  fsync/fdatasync of the file (and sync, syncfs)
 * make it all durable; a write through O_SYNC/O_DSYNC or with
 * RWF_SYNC/RWF_DSYNC makes its own bytes and the file's size durable once
 * it completes (for kernel AIO, when io_getevents reports it).  O_DIRECT
 * alone is not durable (the drive's cache and the file's metadata are not
 * flushed).  Rollback truncates each file to its durable size and writes
 * the durable values back.
 *
 * Names (create, O_TMPFILE + linkat, rename, unlink, mkdir, rmdir): with
 * LOSTWRITES_DIRS=posix only an fsync of the directory holding the entry
 * (the target's, for a rename) makes it durable; the default,
 * LOSTWRITES_DIRS=journal, models ext4 and XFS, whose journal commits every
 * earlier namespace change with any fsync, fdatasync or synchronous write.
 * An unlinked or replaced file is kept as a hard link in DIR.lostwrites/
 * until its removal is durable, so that a rollback can bring it back.
 *
 * The log is rewritten with only what is still not durable once it is
 * larger than LOSTWRITES_LOG_LIMIT bytes (default 32 MiB) and mostly dead.
 *
 * LOSTWRITES_NOSYNC=1 is the negative control: fsync, fdatasync, syncfs,
 * sync, sync_file_range, O_SYNC/O_DSYNC and RWF_SYNC/RWF_DSYNC are
 * swallowed (not performed, not counted), so a rollback undoes everything
 * since the program started.
 *
 * Intercepted: open* / creat* (with their _2 fortify forms), write, pwrite,
 * writev, pwritev, pwritev2, ftruncate, truncate, fallocate,
 * posix_fallocate, fsync, fdatasync, sync, syncfs, sync_file_range, rename*,
 * unlink*, rmdir, link*, mkdir*, and syscall() for the same calls plus
 * io_submit / io_getevents / io_pgetevents (libraft submits its log writes
 * through syscall(__NR_io_submit) with RWF_DSYNC).  Not modelled (see
 * docs/lab.md): stdio's own writes (glibc calls the kernel directly),
 * writes through shared writable mappings (a warning is printed),
 * copy_file_range, sendfile, splice, symlinks, RENAME_EXCHANGE, and a
 * write racing a sync of the same file from another thread.
 */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <linux/aio_abi.h>
#include <linux/falloc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#define LW_MAGIC 0x4c575231u /* "LWR1" */
#define LW_SUFFIX ".lostwrites"

/* --- the model: records, and the state they build ------------------------ */

enum lw_type {
    LW_BASE = 1,  /* ino, a=size: the file's durable size (first change) */
    LW_PRE,       /* ino, a=off, payload: durable bytes */
    LW_PREZERO,   /* ino, a=off, b=len: durable bytes are zeros */
    LW_CLEAR,     /* ino, a=off, b=len: these bytes are durable now */
    LW_DSIZE,     /* ino, a=size: the durable size is now size */
    LW_SYNC,      /* ino: everything durable (or the inode is gone) */
    LW_NS_CREATE, /* ino, a=parent, flags, payload=path */
    LW_NS_UNLINK, /* ino, a=parent, b=mode, flags, payload=path\0shadow */
    LW_NS_RENAME, /* ino, a=new parent, b=mode of replaced, c=replaced ino,
                     flags, payload=from\0to\0shadow */
    LW_NS_COMMIT, /* a=directory (0: every namespace change) */
};

#define LW_F_DIR 1u          /* the entry is a directory */
#define LW_F_REPLACED_DIR 2u /* a rename replaced an (empty) directory */

struct lw_hdr
{
    uint32_t magic;
    uint16_t type;
    uint16_t flags;
    uint64_t ino;
    uint64_t a, b, c;
    uint64_t len; /* payload bytes that follow */
};

struct lw_range
{
    uint64_t off, len;
    unsigned char *data; /* NULL: zeros */
};

struct lw_file
{
    uint64_t ino;
    uint64_t dsize;
    struct lw_range *r; /* sorted, disjoint */
    size_t n, cap;
};

struct lw_ns
{
    uint16_t type, flags;
    uint64_t ino, a, b, c;
    char *p1, *p2, *p3; /* path (from), to, shadow: "" when absent */
};

struct lw_model
{
    struct lw_file *f;
    size_t nf, capf;
    struct lw_ns *ns;
    size_t nns, capns;
    uint64_t live; /* bytes a compacted log would hold, roughly */
};

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n == 0 ? 1 : n);
    if (q == NULL) {
        fputs("lostwrites: out of memory\n", stderr);
        abort();
    }
    return q;
}

static struct lw_file *model_file(struct lw_model *m, uint64_t ino)
{
    for (size_t i = 0; i < m->nf; i++) {
        if (m->f[i].ino == ino) {
            return &m->f[i];
        }
    }
    return NULL;
}

static struct lw_file *model_add_file(struct lw_model *m,
                                      uint64_t ino,
                                      uint64_t dsize)
{
    if (m->nf == m->capf) {
        m->capf = m->capf ? 2 * m->capf : 16;
        m->f = xrealloc(m->f, m->capf * sizeof *m->f);
    }
    struct lw_file *f = &m->f[m->nf++];
    memset(f, 0, sizeof *f);
    f->ino = ino;
    f->dsize = dsize;
    m->live += sizeof(struct lw_hdr);
    return f;
}

static void model_drop_file(struct lw_model *m, uint64_t ino)
{
    struct lw_file *f = model_file(m, ino);
    if (f == NULL) {
        return;
    }
    for (size_t i = 0; i < f->n; i++) {
        m->live -= sizeof(struct lw_hdr) + (f->r[i].data ? f->r[i].len : 0);
        free(f->r[i].data);
    }
    free(f->r);
    m->live -= sizeof(struct lw_hdr);
    *f = m->f[--m->nf];
}

/* Index of the first range that ends after off. */
static size_t range_find(const struct lw_file *f, uint64_t off)
{
    size_t lo = 0, hi = f->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (f->r[mid].off + f->r[mid].len <= off) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

/* The first part of [off, end) that no range covers: 1 and [*ga, *gb), or
 * 0 when all of it is covered. */
static int range_next_gap(const struct lw_file *f,
                          uint64_t off,
                          uint64_t end,
                          uint64_t *ga,
                          uint64_t *gb)
{
    size_t i = range_find(f, off);
    while (off < end) {
        if (i < f->n && f->r[i].off <= off) {
            off = f->r[i].off + f->r[i].len;
            i++;
            continue;
        }
        *ga = off;
        *gb = i < f->n && f->r[i].off < end ? f->r[i].off : end;
        return 1;
    }
    return 0;
}

/* Record [off, off+len) (data NULL: zeros) where nothing is recorded yet:
 * the first pre-image of a byte since its last sync is its durable value. */
static void range_insert(struct lw_model *m,
                         struct lw_file *f,
                         uint64_t off,
                         uint64_t len,
                         const unsigned char *data)
{
    uint64_t a, b, end = off + len;
    while (range_next_gap(f, off, end, &a, &b)) {
        if (f->n == f->cap) {
            f->cap = f->cap ? 2 * f->cap : 8;
            f->r = xrealloc(f->r, f->cap * sizeof *f->r);
        }
        size_t i = range_find(f, a);
        memmove(&f->r[i + 1], &f->r[i], (f->n - i) * sizeof *f->r);
        f->r[i].off = a;
        f->r[i].len = b - a;
        f->r[i].data = NULL;
        if (data != NULL) {
            f->r[i].data = xrealloc(NULL, (size_t)(b - a));
            memcpy(f->r[i].data, data + (a - off), (size_t)(b - a));
            m->live += b - a;
        }
        m->live += sizeof(struct lw_hdr);
        f->n++;
        off = b;
    }
}

/* Forget what is recorded for [off, off+len): those bytes are durable. */
static void range_clear(struct lw_model *m,
                        struct lw_file *f,
                        uint64_t off,
                        uint64_t len)
{
    uint64_t end = off + len;
    size_t i = range_find(f, off);
    while (i < f->n && f->r[i].off < end) {
        struct lw_range *r = &f->r[i];
        uint64_t rend = r->off + r->len;
        if (r->off < off && rend > end) {
            /* Split: keep the head here and the tail after it. */
            struct lw_range tail = {end, rend - end, NULL};
            if (r->data != NULL) {
                tail.data = xrealloc(NULL, (size_t)tail.len);
                memcpy(tail.data, r->data + (end - r->off), (size_t)tail.len);
            }
            m->live -= r->data ? end - off : 0;
            r->len = off - r->off;
            if (f->n == f->cap) {
                f->cap = 2 * f->cap;
                f->r = xrealloc(f->r, f->cap * sizeof *f->r);
            }
            memmove(&f->r[i + 2], &f->r[i + 1], (f->n - i - 1) * sizeof *f->r);
            f->r[i + 1] = tail;
            f->n++;
            m->live += sizeof(struct lw_hdr);
            return;
        }
        if (r->off >= off && rend <= end) {
            m->live -= sizeof(struct lw_hdr) + (r->data ? r->len : 0);
            free(r->data);
            memmove(&f->r[i], &f->r[i + 1], (f->n - i - 1) * sizeof *f->r);
            f->n--;
            continue;
        }
        if (r->off < off) { /* overlaps the start of the cleared part */
            m->live -= r->data ? rend - off : 0;
            r->len = off - r->off;
            i++;
            continue;
        }
        /* overlaps its end: drop the head of this range */
        uint64_t cut = end - r->off;
        if (r->data != NULL) {
            memmove(r->data, r->data + cut, (size_t)(r->len - cut));
            m->live -= cut;
        }
        r->off = end;
        r->len -= cut;
        i++;
    }
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = xrealloc(NULL, n);
    memcpy(p, s, n);
    return p;
}

static void ns_free(struct lw_ns *x)
{
    free(x->p1);
    free(x->p2);
    free(x->p3);
}

/* Does a commit of directory dir (0: all) make namespace change x durable? */
static int ns_committed_by(const struct lw_ns *x, uint64_t dir)
{
    return dir == 0 || x->a == dir;
}

/* Apply one record.  payload holds h->len bytes. */
static void model_apply(struct lw_model *m,
                        const struct lw_hdr *h,
                        const unsigned char *payload)
{
    struct lw_file *f = model_file(m, h->ino);
    switch (h->type) {
        case LW_BASE:
            if (f == NULL) {
                model_add_file(m, h->ino, h->a);
            }
            break;
        case LW_PRE:
        case LW_PREZERO:
            if (f == NULL) {
                /* The shim writes a file's BASE before its pre-images:
                 * without one there is no durable size to go back to. */
                break;
            }
            range_insert(m, f, h->a, h->type == LW_PRE ? h->len : h->b,
                         h->type == LW_PRE ? payload : NULL);
            break;
        case LW_CLEAR:
            if (f != NULL) {
                range_clear(m, f, h->a, h->b);
            }
            break;
        case LW_DSIZE:
            if (f != NULL) {
                f->dsize = h->a;
            }
            break;
        case LW_SYNC:
            model_drop_file(m, h->ino);
            break;
        case LW_NS_CREATE:
        case LW_NS_UNLINK:
        case LW_NS_RENAME: {
            const char *p = (const char *)payload;
            const char *end = p + h->len;
            const char *s[3] = {"", "", ""};
            for (int k = 0; k < 3 && p < end; k++) {
                s[k] = p;
                p += strnlen(p, (size_t)(end - p)) + 1;
            }
            if (m->nns == m->capns) {
                m->capns = m->capns ? 2 * m->capns : 16;
                m->ns = xrealloc(m->ns, m->capns * sizeof *m->ns);
            }
            struct lw_ns *x = &m->ns[m->nns++];
            x->type = h->type;
            x->flags = h->flags;
            x->ino = h->ino;
            x->a = h->a;
            x->b = h->b;
            x->c = h->c;
            x->p1 = xstrdup(s[0]);
            x->p2 = xstrdup(s[1]);
            x->p3 = xstrdup(s[2]);
            m->live += sizeof(struct lw_hdr) + h->len;
            break;
        }
        case LW_NS_COMMIT: {
            size_t k = 0;
            for (size_t i = 0; i < m->nns; i++) {
                if (ns_committed_by(&m->ns[i], h->a)) {
                    m->live -= sizeof(struct lw_hdr) + strlen(m->ns[i].p1) +
                               strlen(m->ns[i].p2) + strlen(m->ns[i].p3) + 3;
                    ns_free(&m->ns[i]);
                } else {
                    m->ns[k++] = m->ns[i];
                }
            }
            m->nns = k;
            break;
        }
        default:
            break;
    }
}

/*
 * Replay the log in fd into m.  Returns the length of its valid part (a
 * record cut short by a kill during its append is not part of it), or -1.
 */
static off_t model_load(struct lw_model *m, int fd)
{
    off_t pos = 0;
    unsigned char *buf = NULL;
    size_t cap = 0;
    for (;;) {
        struct lw_hdr h;
        ssize_t n = pread(fd, &h, sizeof h, pos);
        if (n != (ssize_t)sizeof h || h.magic != LW_MAGIC ||
            h.len > ((uint64_t)1 << 32)) {
            break;
        }
        if (h.len > cap) {
            cap = (size_t)h.len;
            buf = xrealloc(buf, cap);
        }
        if (h.len > 0 && pread(fd, buf, (size_t)h.len, pos + (off_t)sizeof h) !=
                             (ssize_t)h.len) {
            break;
        }
        model_apply(m, &h, buf);
        pos += (off_t)(sizeof h + h.len);
    }
    free(buf);
    return pos;
}

#ifdef LW_SHIM
/* ===================== the LD_PRELOAD shim ============================= */

static int path_under(const char *root, size_t rootlen, const char *p)
{
    return strncmp(p, root, rootlen) == 0 &&
           (p[rootlen] == '\0' || p[rootlen] == '/');
}

/* The real functions, found lazily: a wrapper may run before the
 * constructor (another library's constructor may write). */
#define REAL(name, type)                                 \
    static type real_##name;                             \
    static type get_##name(void)                         \
    {                                                    \
        if (real_##name == NULL) {                       \
            real_##name = (type)dlsym(RTLD_NEXT, #name); \
        }                                                \
        return real_##name;                              \
    }

typedef int (*openat_fn)(int, const char *, int, ...);
typedef ssize_t (*write_fn)(int, const void *, size_t);
typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
typedef ssize_t (*writev_fn)(int, const struct iovec *, int);
typedef ssize_t (*pwritev_fn)(int, const struct iovec *, int, off_t);
typedef ssize_t (*pwritev2_fn)(int, const struct iovec *, int, off_t, int);
typedef int (*ftruncate_fn)(int, off_t);
typedef int (*truncate_fn)(const char *, off_t);
typedef int (*fallocate_fn)(int, int, off_t, off_t);
typedef int (*posix_fallocate_fn)(int, off_t, off_t);
typedef int (*fd_fn)(int);
typedef void (*sync_fn)(void);
typedef int (*sfr_fn)(int, off_t, off_t, unsigned int);
typedef int (*renameat2_fn)(int, const char *, int, const char *, unsigned);
typedef int (*unlinkat_fn)(int, const char *, int);
typedef int (*linkat_fn)(int, const char *, int, const char *, int);
typedef int (*mkdirat_fn)(int, const char *, mode_t);
typedef long (*syscall_fn)(long, ...);
typedef void *(*mmap_fn)(void *, size_t, int, int, int, off_t);

REAL(openat, openat_fn)
REAL(write, write_fn)
REAL(pwrite, pwrite_fn)
REAL(writev, writev_fn)
REAL(pwritev, pwritev_fn)
REAL(pwritev2, pwritev2_fn)
REAL(ftruncate, ftruncate_fn)
REAL(truncate, truncate_fn)
REAL(fallocate, fallocate_fn)
REAL(posix_fallocate, posix_fallocate_fn)
REAL(fsync, fd_fn)
REAL(fdatasync, fd_fn)
REAL(syncfs, fd_fn)
REAL(sync, sync_fn)
REAL(sync_file_range, sfr_fn)
REAL(renameat2, renameat2_fn)
REAL(unlinkat, unlinkat_fn)
REAL(linkat, linkat_fn)
REAL(mkdirat, mkdirat_fn)
REAL(syscall, syscall_fn)
REAL(mmap, mmap_fn)

/* An in-flight kernel AIO request whose completion makes bytes durable. */
struct lw_aio
{
    const void *iocb;
    uint64_t ino;
    int fd;
    int is_sync; /* IOCB_CMD_FSYNC / FDSYNC */
    uint64_t off, len;
};

static struct
{
    int active;
    int nosync;
    int posix_dirs;
    char root[PATH_MAX];
    size_t rootlen;
    dev_t dev;
    char state[PATH_MAX + 16];
    int logfd, lockfd;
    uint64_t logsize;
    uint64_t log_limit; /* compact past this size (LOSTWRITES_LOG_LIMIT) */
    struct lw_model m;
    struct lw_aio *aio;
    size_t naio, capaio;
    unsigned long long shadow_seq;
    int warned_mmap, warned_exchange;
    pthread_mutex_t mu;
} g = {.logfd = -1, .lockfd = -1, .mu = PTHREAD_MUTEX_INITIALIZER};

static void die(const char *what)
{
    char msg[512];
    int n = snprintf(msg, sizeof msg,
                     "lostwrites: %s: %s (the model is lost: aborting)\n", what,
                     strerror(errno));
    get_write()(2, msg, n > 0 ? (size_t)n : 0);
    abort();
}

static void log_append(const struct lw_hdr *h, const void *payload)
{
    struct iovec iov[2] = {{(void *)(uintptr_t)h, sizeof *h},
                           {(void *)(uintptr_t)payload, (size_t)h->len}};
    size_t want = sizeof *h + (size_t)h->len;
    ssize_t n = get_writev()(g.logfd, iov, h->len > 0 ? 2 : 1);
    if (n != (ssize_t)want) {
        die("cannot append to the undo log");
    }
    g.logsize += want;
}

/* Write everything the model holds to a fresh log and put it in place of
 * the old one (rename: a kill -9 leaves one or the other, whole). */
static void log_compact(void)
{
    char tmp[PATH_MAX + 32], path[PATH_MAX + 32];
    snprintf(tmp, sizeof tmp, "%s/undo.log.new", g.state);
    snprintf(path, sizeof path, "%s/undo.log", g.state);
    int old = g.logfd;
    g.logfd =
        get_openat()(AT_FDCWD, tmp,
                     O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
    if (g.logfd < 0) {
        die("cannot compact the undo log");
    }
    g.logsize = 0;
    for (size_t i = 0; i < g.m.nns; i++) {
        const struct lw_ns *x = &g.m.ns[i];
        size_t l1 = strlen(x->p1) + 1, l2 = strlen(x->p2) + 1,
               l3 = strlen(x->p3) + 1;
        char *p = xrealloc(NULL, l1 + l2 + l3);
        memcpy(p, x->p1, l1);
        memcpy(p + l1, x->p2, l2);
        memcpy(p + l1 + l2, x->p3, l3);
        struct lw_hdr h = {LW_MAGIC, x->type, x->flags, x->ino,
                           x->a,     x->b,    x->c,     l1 + l2 + l3};
        log_append(&h, p);
        free(p);
    }
    for (size_t i = 0; i < g.m.nf; i++) {
        const struct lw_file *f = &g.m.f[i];
        struct lw_hdr h = {LW_MAGIC, LW_BASE, 0, f->ino, f->dsize, 0, 0, 0};
        log_append(&h, NULL);
        for (size_t k = 0; k < f->n; k++) {
            const struct lw_range *r = &f->r[k];
            struct lw_hdr p = {LW_MAGIC, r->data ? LW_PRE : LW_PREZERO,
                               0,        f->ino,
                               r->off,   r->data ? 0 : r->len,
                               0,        r->data ? r->len : 0};
            log_append(&p, r->data);
        }
    }
    if (rename(tmp, path) != 0) {
        die("cannot replace the undo log");
    }
    close(old);
}

/* Append a record and apply it to the model: one code path for the shim's
 * state and a later replay of the log.  Called with g.mu held. */
static void emit(uint16_t type,
                 uint16_t flags,
                 uint64_t ino,
                 uint64_t a,
                 uint64_t b,
                 uint64_t c,
                 const void *payload,
                 uint64_t len)
{
    struct lw_hdr h = {LW_MAGIC, type, flags, ino, a, b, c, len};
    log_append(&h, payload);
    model_apply(&g.m, &h, payload);
    /* Most of a long log is dead (pre-images of writes synced since):
     * rewrite it once it is both large and mostly dead. */
    if (g.logsize > g.log_limit &&
        g.logsize > 4 * g.m.live + g.log_limit / 32) {
        log_compact();
    }
}

/* --- which files are modelled -------------------------------------------- */

/* Lexically normalise an absolute path (".", "..", "//"); symlinks are not
 * followed: the directories the programs use are plain. */
static void normalise(char *p)
{
    char *out = p, *in = p;
    while (*in != '\0') {
        while (*in == '/') {
            in++;
        }
        char *seg = in;
        while (*in != '\0' && *in != '/') {
            in++;
        }
        size_t n = (size_t)(in - seg);
        if (n == 0 || (n == 1 && seg[0] == '.')) {
            continue;
        }
        if (n == 2 && seg[0] == '.' && seg[1] == '.') {
            while (out > p && *--out != '/') {
            }
            continue;
        }
        *out++ = '/';
        memmove(out, seg, n);
        out += n;
    }
    if (out == p) {
        *out++ = '/';
    }
    *out = '\0';
}

/* The absolute path of (dirfd, path), or -1. */
static int resolve(int dirfd, const char *path, char *out, size_t outlen)
{
    char base[PATH_MAX];
    if (path == NULL) {
        return -1;
    }
    if (path[0] == '/') {
        base[0] = '\0';
    } else if (dirfd == AT_FDCWD) {
        if (getcwd(base, sizeof base) == NULL) {
            return -1;
        }
    } else {
        char link[64];
        snprintf(link, sizeof link, "/proc/self/fd/%d", dirfd);
        ssize_t n = readlink(link, base, sizeof base - 1);
        if (n <= 0) {
            return -1;
        }
        base[n] = '\0';
    }
    if ((size_t)snprintf(out, outlen, "%s/%s", base, path) >= outlen) {
        return -1;
    }
    normalise(out);
    return 0;
}

static int under_root(const char *abs)
{
    return path_under(g.root, g.rootlen, abs);
}

static const char *rel(const char *abs)
{
    return abs[g.rootlen] == '/' ? abs + g.rootlen + 1 : "";
}

/* Is fd a regular file or directory under the root?  Fills *st. */
static int tracked_fd(int fd, struct stat *st)
{
    char link[64], path[PATH_MAX];
    if (fstat(fd, st) != 0 || st->st_dev != g.dev ||
        !(S_ISREG(st->st_mode) || S_ISDIR(st->st_mode))) {
        return 0;
    }
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0) {
        return 0;
    }
    path[n] = '\0';
    /* An unlinked file (O_TMPFILE, or removed while open) reads
     * "/dir/name (deleted)": it still counts by its directory. */
    char *del = strstr(path, " (deleted)");
    if (del != NULL && del[10] == '\0') {
        *del = '\0';
    }
    return under_root(path);
}

static uint64_t parent_ino(const char *abs)
{
    char dir[PATH_MAX];
    struct stat st;
    snprintf(dir, sizeof dir, "%s", abs);
    char *slash = strrchr(dir, '/');
    if (slash == NULL) {
        return 0;
    }
    if (slash == dir) {
        slash[1] = '\0';
    } else {
        *slash = '\0';
    }
    return stat(dir, &st) == 0 ? (uint64_t)st.st_ino : 0;
}

/* --- content changes -------------------------------------------------------
 */

/* Make sure the model has the file: its size now is its durable size. */
static struct lw_file *file_state(uint64_t ino, uint64_t size)
{
    struct lw_file *f = model_file(&g.m, ino);
    if (f == NULL) {
        emit(LW_BASE, 0, ino, size, 0, 0, NULL, 0);
        f = model_file(&g.m, ino);
    }
    return f;
}

static int all_zero(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] != 0) {
            return 0;
        }
    }
    return 1;
}

/*
 * Record the durable value of every byte in [off, off+len) not recorded
 * yet: read from the file below its durable size, zero beyond it.  fd is
 * the program's descriptor (opened for writing; it may not be readable, so
 * reading goes through a descriptor of our own).  Called with g.mu held.
 */
static void capture(int fd, const struct stat *st, uint64_t off, uint64_t len)
{
    struct lw_file *f = file_state((uint64_t)st->st_ino, (uint64_t)st->st_size);
    uint64_t a, b, end = off + len;
    int rfd = -1;
    static unsigned char buf[256 << 10];
    while (len > 0 && range_next_gap(f, off, end, &a, &b)) {
        off = b;
        uint64_t dsize = f->dsize;
        if (a >= dsize) {
            emit(LW_PREZERO, 0, f->ino, a, b - a, 0, NULL, 0);
            f = model_file(&g.m, st->st_ino);
            continue;
        }
        if (b > dsize) {
            emit(LW_PREZERO, 0, f->ino, dsize, b - dsize, 0, NULL, 0);
            f = model_file(&g.m, st->st_ino);
            b = dsize;
        }
        if (rfd < 0) {
            char link[64];
            snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
            rfd = get_openat()(AT_FDCWD, link, O_RDONLY | O_CLOEXEC);
            if (rfd < 0) {
                die("cannot read a pre-image");
            }
        }
        for (uint64_t p = a; p < b;) {
            size_t n = (size_t)(b - p < sizeof buf ? b - p : sizeof buf);
            ssize_t got = pread(rfd, buf, n, (off_t)p);
            if (got < 0) {
                die("cannot read a pre-image");
            }
            /* Bytes past the end of the file now read as zeros. */
            memset(buf + got, 0, n - (size_t)got);
            if (all_zero(buf, n)) {
                emit(LW_PREZERO, 0, f->ino, p, n, 0, NULL, 0);
            } else {
                emit(LW_PRE, 0, f->ino, p, 0, 0, buf, n);
            }
            f = model_file(&g.m, st->st_ino);
            p += n;
        }
    }
    if (rfd >= 0) {
        close(rfd);
    }
}

/* Make every earlier namespace change that the commit of dir makes
 * durable (journal: any commit) drop out of the model, with the hard links
 * that kept removed files.  Called with g.mu held. */
static void ns_commit(uint64_t dir)
{
    size_t n = 0;
    for (size_t i = 0; i < g.m.nns; i++) {
        n += ns_committed_by(&g.m.ns[i], dir);
    }
    if (n == 0) {
        return;
    }
    char(*shadows)[PATH_MAX + 64] = xrealloc(NULL, n * sizeof *shadows);
    uint64_t *gone = xrealloc(NULL, n * sizeof *gone);
    size_t ns = 0, ng = 0;
    for (size_t i = 0; i < g.m.nns; i++) {
        const struct lw_ns *x = &g.m.ns[i];
        if (!ns_committed_by(x, dir) || x->p3[0] == '\0') {
            continue;
        }
        snprintf(shadows[ns], sizeof *shadows, "%s/shadow/%s", g.state, x->p3);
        struct stat st;
        /* The removed inode has no other name: its content is gone. */
        if (lstat(shadows[ns], &st) == 0 && st.st_nlink == 1) {
            gone[ng++] = (uint64_t)st.st_ino;
        }
        ns++;
    }
    emit(LW_NS_COMMIT, 0, 0, dir, 0, 0, NULL, 0);
    for (size_t i = 0; i < ns; i++) {
        get_unlinkat()(AT_FDCWD, shadows[i], 0);
    }
    for (size_t i = 0; i < ng; i++) {
        if (model_file(&g.m, gone[i]) != NULL) {
            emit(LW_SYNC, 0, gone[i], 0, 0, 0, NULL, 0);
        }
    }
    free(shadows);
    free(gone);
}

/* A sync of fd (a file or a directory) completed.  Called with g.mu held. */
static void synced(const struct stat *st)
{
    if (S_ISREG(st->st_mode) && model_file(&g.m, st->st_ino) != NULL) {
        emit(LW_SYNC, 0, st->st_ino, 0, 0, 0, NULL, 0);
    }
    if (!g.posix_dirs) {
        ns_commit(0);
    } else if (S_ISDIR(st->st_mode)) {
        ns_commit((uint64_t)st->st_ino);
    }
}

/* [off, off+n) of fd was written durably (O_DSYNC, RWF_DSYNC): those bytes
 * and the file's size are durable.  Called with g.mu held. */
static void durable_written(int fd, uint64_t ino, uint64_t off, uint64_t n)
{
    struct lw_file *f = model_file(&g.m, ino);
    struct stat st;
    if (f != NULL) {
        uint64_t size = off + n > f->dsize ? off + n : f->dsize;
        if (fstat(fd, &st) == 0 && (uint64_t)st.st_ino == ino) {
            size = (uint64_t)st.st_size;
        }
        emit(LW_CLEAR, 0, ino, off, n, 0, NULL, 0);
        emit(LW_DSIZE, 0, ino, size, 0, 0, NULL, 0);
        f = model_file(&g.m, ino);
        if (f != NULL && f->n == 0) {
            emit(LW_SYNC, 0, ino, 0, 0, 0, NULL, 0);
        }
    }
    if (!g.posix_dirs) {
        ns_commit(0);
    }
}

static uint64_t iov_len(const struct iovec *iov, int cnt)
{
    uint64_t n = 0;
    for (int i = 0; i < cnt; i++) {
        n += iov[i].iov_len;
    }
    return n;
}

/*
 * Before a write of len bytes at pos (-1: the file position; append mode
 * and RWF_APPEND: the end).  Returns 1 when the write is modelled and
 * *durable tells whether it is durable once it returns.
 */
static int before_write(int fd,
                        off_t pos,
                        uint64_t len,
                        int rwf,
                        int *durable,
                        uint64_t *ino,
                        uint64_t *off)
{
    struct stat st;
    if (!g.active || !tracked_fd(fd, &st) || !S_ISREG(st.st_mode)) {
        return 0;
    }
    int fl = fcntl(fd, F_GETFL);
    if ((fl >= 0 && (fl & O_APPEND)) || (rwf & RWF_APPEND)) {
        pos = st.st_size;
    } else if (pos < 0) {
        pos = lseek(fd, 0, SEEK_CUR);
        if (pos < 0) {
            return 0;
        }
    }
    *durable = !g.nosync &&
               ((fl >= 0 && (fl & O_DSYNC)) || (rwf & (RWF_DSYNC | RWF_SYNC)));
    *ino = (uint64_t)st.st_ino;
    *off = (uint64_t)pos;
    pthread_mutex_lock(&g.mu);
    capture(fd, &st, (uint64_t)pos, len);
    pthread_mutex_unlock(&g.mu);
    return 1;
}

static ssize_t after_write(int fd,
                           ssize_t rv,
                           int durable,
                           uint64_t ino,
                           uint64_t off)
{
    if (rv > 0 && durable) {
        int e = errno;
        pthread_mutex_lock(&g.mu);
        durable_written(fd, ino, off, (uint64_t)rv);
        pthread_mutex_unlock(&g.mu);
        errno = e;
    }
    return rv;
}

ssize_t write(int fd, const void *buf, size_t n)
{
    int durable;
    uint64_t ino, off;
    if (!before_write(fd, -1, n, 0, &durable, &ino, &off)) {
        return get_write()(fd, buf, n);
    }
    return after_write(fd, get_write()(fd, buf, n), durable, ino, off);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t pos)
{
    int durable;
    uint64_t ino, off;
    if (!before_write(fd, pos, n, 0, &durable, &ino, &off)) {
        return get_pwrite()(fd, buf, n, pos);
    }
    return after_write(fd, get_pwrite()(fd, buf, n, pos), durable, ino, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t pos)
{
    return pwrite(fd, buf, n, pos);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    int durable;
    uint64_t ino, off;
    if (!before_write(fd, -1, iov_len(iov, cnt), 0, &durable, &ino, &off)) {
        return get_writev()(fd, iov, cnt);
    }
    return after_write(fd, get_writev()(fd, iov, cnt), durable, ino, off);
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t pos)
{
    int durable;
    uint64_t ino, off;
    if (!before_write(fd, pos, iov_len(iov, cnt), 0, &durable, &ino, &off)) {
        return get_pwritev()(fd, iov, cnt, pos);
    }
    return after_write(fd, get_pwritev()(fd, iov, cnt, pos), durable, ino, off);
}

ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t pos)
{
    return pwritev(fd, iov, cnt, pos);
}

ssize_t pwritev2(int fd, const struct iovec *iov, int cnt, off_t pos, int fl)
{
    int durable;
    uint64_t ino, off;
    if (!before_write(fd, pos, iov_len(iov, cnt), fl, &durable, &ino, &off)) {
        return get_pwritev2()(fd, iov, cnt, pos, fl);
    }
    if (g.nosync) {
        fl &= ~(RWF_DSYNC | RWF_SYNC);
    }
    return after_write(fd, get_pwritev2()(fd, iov, cnt, pos, fl), durable, ino,
                       off);
}

ssize_t pwritev64v2(int fd, const struct iovec *iov, int cnt, off_t pos, int fl)
{
    return pwritev2(fd, iov, cnt, pos, fl);
}

/* Before a change of size (truncate, fallocate): the bytes it removes or
 * zeroes are recorded.  Returns 1 when fd is modelled. */
static int before_resize(int fd, int mode, uint64_t off, uint64_t len)
{
    struct stat st;
    if (!g.active || !tracked_fd(fd, &st) || !S_ISREG(st.st_mode)) {
        return 0;
    }
    uint64_t size = (uint64_t)st.st_size;
    pthread_mutex_lock(&g.mu);
    file_state((uint64_t)st.st_ino, size);
    /* A truncation to off (mode < 0) and a collapse or insert at off both
     * change every byte from off to the end. */
    if (mode < 0 ||
        (mode & (FALLOC_FL_COLLAPSE_RANGE | FALLOC_FL_INSERT_RANGE))) {
        if (off < size) {
            capture(fd, &st, off, size - off);
        }
    } else if (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) {
        uint64_t end = off + len < size ? off + len : size;
        if (off < end) {
            capture(fd, &st, off, end - off);
        }
    }
    pthread_mutex_unlock(&g.mu);
    return 1;
}

int ftruncate(int fd, off_t len)
{
    if (len >= 0) {
        before_resize(fd, -1, (uint64_t)len, 0);
    }
    return get_ftruncate()(fd, len);
}

int ftruncate64(int fd, off_t len)
{
    return ftruncate(fd, len);
}

int truncate(const char *path, off_t len)
{
    char abs[PATH_MAX];
    if (!g.active || resolve(AT_FDCWD, path, abs, sizeof abs) != 0 ||
        !under_root(abs)) {
        return get_truncate()(path, len);
    }
    int fd = get_openat()(AT_FDCWD, path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    int rv = ftruncate(fd, len);
    int e = errno;
    close(fd);
    errno = e;
    return rv;
}

int truncate64(const char *path, off_t len)
{
    return truncate(path, len);
}

int fallocate(int fd, int mode, off_t off, off_t len)
{
    if (off >= 0 && len >= 0) {
        before_resize(fd, mode, (uint64_t)off, (uint64_t)len);
    }
    return get_fallocate()(fd, mode, off, len);
}

int fallocate64(int fd, int mode, off_t off, off_t len)
{
    return fallocate(fd, mode, off, len);
}

int posix_fallocate(int fd, off_t off, off_t len)
{
    before_resize(fd, 0, (uint64_t)off, (uint64_t)len);
    return get_posix_fallocate()(fd, off, len);
}

int posix_fallocate64(int fd, off_t off, off_t len)
{
    return posix_fallocate(fd, off, len);
}

/* --- syncs ------------------------------------------------------------------
 */

static int do_sync(int fd, fd_fn real)
{
    struct stat st;
    if (!g.active || !tracked_fd(fd, &st)) {
        return real(fd);
    }
    if (g.nosync) {
        return 0;
    }
    int rv = real(fd);
    if (rv == 0) {
        pthread_mutex_lock(&g.mu);
        synced(&st);
        pthread_mutex_unlock(&g.mu);
    }
    return rv;
}

int fsync(int fd)
{
    return do_sync(fd, get_fsync());
}

int fdatasync(int fd)
{
    return do_sync(fd, get_fdatasync());
}

/* Everything under the root is durable after sync() and syncfs(). */
static void sync_all(void)
{
    pthread_mutex_lock(&g.mu);
    while (g.m.nf > 0) {
        emit(LW_SYNC, 0, g.m.f[0].ino, 0, 0, 0, NULL, 0);
    }
    ns_commit(0);
    pthread_mutex_unlock(&g.mu);
}

void sync(void)
{
    if (g.active && g.nosync) {
        return;
    }
    get_sync()();
    if (g.active) {
        sync_all();
    }
}

int syncfs(int fd)
{
    struct stat st;
    if (!g.active || fstat(fd, &st) != 0 || st.st_dev != g.dev) {
        return get_syncfs()(fd);
    }
    if (g.nosync) {
        return 0;
    }
    int rv = get_syncfs()(fd);
    if (rv == 0) {
        sync_all();
    }
    return rv;
}

/* sync_file_range flushes no metadata and no drive cache: it makes nothing
 * durable, so only the control swallows it. */
int sync_file_range(int fd, off_t off, off_t n, unsigned int flags)
{
    struct stat st;
    if (g.active && g.nosync && tracked_fd(fd, &st)) {
        return 0;
    }
    return get_sync_file_range()(fd, off, n, flags);
}

/* --- names ------------------------------------------------------------------
 */

static void shadow_name(char *name, size_t len)
{
    snprintf(name, len, "%ld-%llu", (long)getpid(), ++g.shadow_seq);
}

/* Keep the inode at abs alive under DIR.lostwrites/shadow/ as name. */
static int keep(const char *abs, char *name, size_t len)
{
    char path[PATH_MAX + 64];
    shadow_name(name, len);
    snprintf(path, sizeof path, "%s/shadow/%s", g.state, name);
    if (get_linkat()(AT_FDCWD, abs, AT_FDCWD, path, 0) != 0) {
        name[0] = '\0';
        return -1;
    }
    return 0;
}

static void unkeep(const char *name)
{
    char path[PATH_MAX + 64];
    if (name[0] != '\0') {
        snprintf(path, sizeof path, "%s/shadow/%s", g.state, name);
        get_unlinkat()(AT_FDCWD, path, 0);
    }
}

static void emit_ns(uint16_t type,
                    uint16_t flags,
                    uint64_t ino,
                    uint64_t a,
                    uint64_t b,
                    uint64_t c,
                    const char *p1,
                    const char *p2,
                    const char *p3)
{
    char buf[3 * PATH_MAX];
    size_t l1 = strlen(p1) + 1, l2 = strlen(p2) + 1, l3 = strlen(p3) + 1;
    memcpy(buf, p1, l1);
    memcpy(buf + l1, p2, l2);
    memcpy(buf + l1 + l2, p3, l3);
    emit(type, flags, ino, a, b, c, buf, l1 + l2 + l3);
}

/* A new inode got a name (or none, O_TMPFILE): whatever the model knew of
 * an older inode with the same number is void. */
static void created(const char *abs, const struct stat *st)
{
    if (model_file(&g.m, st->st_ino) != NULL) {
        emit(LW_SYNC, 0, st->st_ino, 0, 0, 0, NULL, 0);
    }
    if (abs != NULL) {
        emit_ns(LW_NS_CREATE, S_ISDIR(st->st_mode) ? LW_F_DIR : 0, st->st_ino,
                parent_ino(abs), 0, 0, rel(abs), "", "");
    }
}

static int lw_openat(int dirfd, const char *path, int flags, mode_t mode)
{
    char abs[PATH_MAX];
    struct stat st;
    if (!g.active || resolve(dirfd, path, abs, sizeof abs) != 0 ||
        !under_root(abs)) {
        return get_openat()(dirfd, path, flags, mode);
    }
    if (g.nosync) {
        flags &= ~(O_SYNC | O_DSYNC);
    }
    int tmpfile = (flags & O_TMPFILE) == O_TMPFILE;
    int existed = lstat(abs, &st) == 0;
    if (existed && S_ISREG(st.st_mode) && (flags & O_TRUNC) &&
        (flags & O_ACCMODE) != O_RDONLY && st.st_size > 0) {
        /* The truncation by open loses the old content: record it first,
         * through a descriptor of our own. */
        int rfd = get_openat()(AT_FDCWD, abs, O_RDONLY | O_CLOEXEC);
        if (rfd >= 0) {
            pthread_mutex_lock(&g.mu);
            file_state((uint64_t)st.st_ino, (uint64_t)st.st_size);
            capture(rfd, &st, 0, (uint64_t)st.st_size);
            pthread_mutex_unlock(&g.mu);
            close(rfd);
        }
    }
    int fd = get_openat()(dirfd, path, flags, mode);
    if (fd >= 0 && (tmpfile || ((flags & O_CREAT) && !existed)) &&
        fstat(fd, &st) == 0) {
        int e = errno;
        pthread_mutex_lock(&g.mu);
        created(tmpfile ? NULL : abs, &st);
        pthread_mutex_unlock(&g.mu);
        errno = e;
    }
    return fd;
}

static mode_t mode_arg(int flags, va_list ap)
{
    return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE
               ? (mode_t)va_arg(ap, int)
               : 0;
}

int open(const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    return lw_openat(AT_FDCWD, path, flags, mode);
}

int open64(const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    return lw_openat(AT_FDCWD, path, flags, mode);
}

int openat(int dirfd, const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    return lw_openat(dirfd, path, flags, mode);
}

int openat64(int dirfd, const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    return lw_openat(dirfd, path, flags, mode);
}

int creat(const char *path, mode_t mode)
{
    return lw_openat(AT_FDCWD, path, O_WRONLY | O_CREAT | O_TRUNC, mode);
}

int creat64(const char *path, mode_t mode)
{
    return creat(path, mode);
}

/* The forms _FORTIFY_SOURCE compiles open(path, flags) into. */
int __open_2(const char *path, int flags);
int __open64_2(const char *path, int flags);
int __openat_2(int dirfd, const char *path, int flags);
int __openat64_2(int dirfd, const char *path, int flags);

int __open_2(const char *path, int flags)
{
    return lw_openat(AT_FDCWD, path, flags, 0);
}

int __open64_2(const char *path, int flags)
{
    return lw_openat(AT_FDCWD, path, flags, 0);
}

int __openat_2(int dirfd, const char *path, int flags)
{
    return lw_openat(dirfd, path, flags, 0);
}

int __openat64_2(int dirfd, const char *path, int flags)
{
    return lw_openat(dirfd, path, flags, 0);
}

int renameat2(int odir, const char *from, int ndir, const char *to, unsigned fl)
{
    char a[PATH_MAX], b[PATH_MAX], shadow[64] = "";
    struct stat st, old;
    if (!g.active || resolve(odir, from, a, sizeof a) != 0 ||
        resolve(ndir, to, b, sizeof b) != 0 ||
        (!under_root(a) && !under_root(b)) || lstat(a, &st) != 0) {
        return get_renameat2()(odir, from, ndir, to, fl);
    }
    if (fl & RENAME_EXCHANGE) {
        if (!g.warned_exchange) {
            g.warned_exchange = 1;
            fprintf(stderr, "lostwrites: RENAME_EXCHANGE is not modelled\n");
        }
        return get_renameat2()(odir, from, ndir, to, fl);
    }
    pthread_mutex_lock(&g.mu);
    int replaced =
        under_root(b) && lstat(b, &old) == 0 && old.st_ino != st.st_ino;
    if (replaced && !S_ISDIR(old.st_mode)) {
        keep(b, shadow, sizeof shadow);
    }
    int rv = get_renameat2()(odir, from, ndir, to, fl);
    int e = errno;
    if (rv != 0) {
        unkeep(shadow);
    } else if (under_root(b)) {
        /* A name that came from outside the root is undone by removal. */
        emit_ns(LW_NS_RENAME,
                (S_ISDIR(st.st_mode) ? LW_F_DIR : 0) |
                    (replaced && S_ISDIR(old.st_mode) ? LW_F_REPLACED_DIR : 0),
                st.st_ino, parent_ino(b), replaced ? old.st_mode : 0,
                replaced ? old.st_ino : 0, under_root(a) ? rel(a) : "", rel(b),
                shadow);
    } else {
        /* Moved out of the root: to the model, an unlink it cannot undo. */
        emit_ns(LW_NS_UNLINK, S_ISDIR(st.st_mode) ? LW_F_DIR : 0, st.st_ino,
                parent_ino(a), st.st_mode, 0, rel(a), "", "");
    }
    pthread_mutex_unlock(&g.mu);
    errno = e;
    return rv;
}

int renameat(int odir, const char *from, int ndir, const char *to)
{
    return renameat2(odir, from, ndir, to, 0);
}

int rename(const char *from, const char *to)
{
    return renameat2(AT_FDCWD, from, AT_FDCWD, to, 0);
}

int unlinkat(int dirfd, const char *path, int flags)
{
    char abs[PATH_MAX], shadow[64] = "";
    struct stat st;
    if (!g.active || resolve(dirfd, path, abs, sizeof abs) != 0 ||
        !under_root(abs) || lstat(abs, &st) != 0) {
        return get_unlinkat()(dirfd, path, flags);
    }
    pthread_mutex_lock(&g.mu);
    if (!S_ISDIR(st.st_mode)) {
        keep(abs, shadow, sizeof shadow);
    }
    uint64_t parent = parent_ino(abs);
    int rv = get_unlinkat()(dirfd, path, flags);
    int e = errno;
    if (rv != 0) {
        unkeep(shadow);
    } else {
        emit_ns(LW_NS_UNLINK, S_ISDIR(st.st_mode) ? LW_F_DIR : 0, st.st_ino,
                parent, st.st_mode & 07777, 0, rel(abs), "", shadow);
    }
    pthread_mutex_unlock(&g.mu);
    errno = e;
    return rv;
}

int unlink(const char *path)
{
    return unlinkat(AT_FDCWD, path, 0);
}

int rmdir(const char *path)
{
    return unlinkat(AT_FDCWD, path, AT_REMOVEDIR);
}

int linkat(int odir, const char *from, int ndir, const char *to, int flags)
{
    char abs[PATH_MAX];
    struct stat st;
    int rv = get_linkat()(odir, from, ndir, to, flags);
    if (rv == 0 && g.active && resolve(ndir, to, abs, sizeof abs) == 0 &&
        under_root(abs) && lstat(abs, &st) == 0) {
        int e = errno;
        pthread_mutex_lock(&g.mu);
        emit_ns(LW_NS_CREATE, 0, st.st_ino, parent_ino(abs), 0, 0, rel(abs), "",
                "");
        pthread_mutex_unlock(&g.mu);
        errno = e;
    }
    return rv;
}

int link(const char *from, const char *to)
{
    return linkat(AT_FDCWD, from, AT_FDCWD, to, 0);
}

int mkdirat(int dirfd, const char *path, mode_t mode)
{
    char abs[PATH_MAX];
    struct stat st;
    int rv = get_mkdirat()(dirfd, path, mode);
    if (rv == 0 && g.active && resolve(dirfd, path, abs, sizeof abs) == 0 &&
        under_root(abs) && lstat(abs, &st) == 0) {
        int e = errno;
        pthread_mutex_lock(&g.mu);
        created(abs, &st);
        pthread_mutex_unlock(&g.mu);
        errno = e;
    }
    return rv;
}

int mkdir(const char *path, mode_t mode)
{
    return mkdirat(AT_FDCWD, path, mode);
}

/* Writes through a shared writable mapping reach the file unseen. */
void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    struct stat st;
    if (g.active && fd >= 0 && (prot & PROT_WRITE) && (flags & MAP_SHARED) &&
        !g.warned_mmap && tracked_fd(fd, &st)) {
        g.warned_mmap = 1;
        fprintf(stderr,
                "lostwrites: a file under %s is mapped shared and writable: "
                "writes through the mapping are not modelled (expected for "
                "LMDB's lock file)\n",
                g.root);
    }
    return get_mmap()(addr, len, prot, flags, fd, off);
}

void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    return mmap(addr, len, prot, flags, fd, off);
}

/* --- kernel AIO, through syscall() ------------------------------------------
 */

static void aio_forget(const void *iocb)
{
    for (size_t i = 0; i < g.naio; i++) {
        if (g.aio[i].iocb == iocb) {
            g.aio[i] = g.aio[--g.naio];
            return;
        }
    }
}

static long lw_io_submit(aio_context_t ctx, long nr, struct iocb **iocbs)
{
    if (!g.active || nr <= 0) {
        return get_syscall()(SYS_io_submit, ctx, nr, iocbs);
    }
    for (long i = 0; i < nr; i++) {
        struct iocb *cb = iocbs[i];
        struct stat st;
        int op = cb->aio_lio_opcode;
        if ((op != IOCB_CMD_PWRITE && op != IOCB_CMD_PWRITEV &&
             op != IOCB_CMD_FSYNC && op != IOCB_CMD_FDSYNC) ||
            !tracked_fd((int)cb->aio_fildes, &st) || !S_ISREG(st.st_mode)) {
            continue;
        }
        struct lw_aio x = {cb, (uint64_t)st.st_ino, (int)cb->aio_fildes, 1, 0,
                           0};
        if (op == IOCB_CMD_PWRITE || op == IOCB_CMD_PWRITEV) {
            int fl = fcntl(x.fd, F_GETFL);
            int durable = (fl >= 0 && (fl & O_DSYNC)) ||
                          (cb->aio_rw_flags & (RWF_DSYNC | RWF_SYNC));
            if (g.nosync) {
                cb->aio_rw_flags &= ~(RWF_DSYNC | RWF_SYNC);
                durable = 0;
            }
            x.is_sync = 0;
            x.off = (uint64_t)cb->aio_offset;
            x.len = op == IOCB_CMD_PWRITE
                        ? cb->aio_nbytes
                        : iov_len((const struct iovec *)(uintptr_t)cb->aio_buf,
                                  (int)cb->aio_nbytes);
            pthread_mutex_lock(&g.mu);
            capture(x.fd, &st, x.off, x.len);
            pthread_mutex_unlock(&g.mu);
            if (!durable) {
                continue;
            }
        } else if (g.nosync) {
            /* An AIO fsync cannot be swallowed here; it is not counted. */
            continue;
        }
        pthread_mutex_lock(&g.mu);
        if (g.naio == g.capaio) {
            g.capaio = g.capaio ? 2 * g.capaio : 16;
            g.aio = xrealloc(g.aio, g.capaio * sizeof *g.aio);
        }
        g.aio[g.naio++] = x;
        pthread_mutex_unlock(&g.mu);
    }
    long rv = get_syscall()(SYS_io_submit, ctx, nr, iocbs);
    int e = errno;
    pthread_mutex_lock(&g.mu);
    for (long i = rv < 0 ? 0 : rv; i < nr; i++) {
        aio_forget(iocbs[i]); /* not submitted */
    }
    pthread_mutex_unlock(&g.mu);
    errno = e;
    return rv;
}

static void aio_completed(const struct io_event *ev, long n)
{
    if (!g.active || n <= 0) {
        return;
    }
    pthread_mutex_lock(&g.mu);
    for (long i = 0; i < n; i++) {
        for (size_t k = 0; k < g.naio; k++) {
            struct lw_aio x = g.aio[k];
            if ((uint64_t)(uintptr_t)x.iocb != ev[i].obj) {
                continue;
            }
            g.aio[k] = g.aio[--g.naio];
            if (ev[i].res >= 0) {
                if (x.is_sync) {
                    struct stat st;
                    if (fstat(x.fd, &st) == 0 && (uint64_t)st.st_ino == x.ino) {
                        synced(&st);
                    }
                } else if (ev[i].res > 0) {
                    durable_written(x.fd, x.ino, x.off, (uint64_t)ev[i].res);
                }
            }
            break;
        }
    }
    pthread_mutex_unlock(&g.mu);
}

/* syscall(2) itself: libraft reaches the kernel's AIO this way, and a
 * program may call any other write or sync by number. */
long syscall(long nr, ...)
{
    va_list ap;
    va_start(ap, nr);
    long a1 = va_arg(ap, long), a2 = va_arg(ap, long), a3 = va_arg(ap, long);
    long a4 = va_arg(ap, long), a5 = va_arg(ap, long), a6 = va_arg(ap, long);
    va_end(ap);
    long rv;
    int e;
    switch (nr) {
        case SYS_io_submit:
            return lw_io_submit((aio_context_t)a1, a2,
                                (struct iocb **)(uintptr_t)a3);
        case SYS_io_getevents:
        case SYS_io_pgetevents:
            rv = get_syscall()(nr, a1, a2, a3, a4, a5, a6);
            e = errno;
            aio_completed((const struct io_event *)(uintptr_t)a4, rv);
            errno = e;
            return rv;
        case SYS_write:
            return write((int)a1, (const void *)(uintptr_t)a2, (size_t)a3);
        case SYS_pwrite64:
            return pwrite((int)a1, (const void *)(uintptr_t)a2, (size_t)a3,
                          (off_t)a4);
        case SYS_writev:
            return writev((int)a1, (const struct iovec *)(uintptr_t)a2,
                          (int)a3);
        case SYS_pwritev:
            return pwritev((int)a1, (const struct iovec *)(uintptr_t)a2,
                           (int)a3, (off_t)a4);
        case SYS_pwritev2:
            return pwritev2((int)a1, (const struct iovec *)(uintptr_t)a2,
                            (int)a3, (off_t)a4, (int)a6);
        case SYS_fsync:
            return fsync((int)a1);
        case SYS_fdatasync:
            return fdatasync((int)a1);
        case SYS_syncfs:
            return syncfs((int)a1);
        case SYS_ftruncate:
            return ftruncate((int)a1, (off_t)a2);
        case SYS_fallocate:
            return fallocate((int)a1, (int)a2, (off_t)a3, (off_t)a4);
        case SYS_renameat2:
            return renameat2((int)a1, (const char *)(uintptr_t)a2, (int)a3,
                             (const char *)(uintptr_t)a4, (unsigned)a5);
        default:
            return get_syscall()(nr, a1, a2, a3, a4, a5, a6);
    }
}

/* --- start ------------------------------------------------------------------
 */

/* A forked child that does not exec would append to the parent's log
 * through the shared descriptor: it is not modelled. */
static void after_fork_child(void)
{
    g.active = 0;
}

__attribute__((constructor)) static void lw_init(void)
{
    const char *dir = getenv("LOSTWRITES_DIR");
    const char *dirs = getenv("LOSTWRITES_DIRS");
    const char *nosync = getenv("LOSTWRITES_NOSYNC");
    const char *limit = getenv("LOSTWRITES_LOG_LIMIT");
    char path[PATH_MAX + 32];
    struct stat st;

    /* The rollback command must never model its own writes. */
    if (dir == NULL || dir[0] == '\0' ||
        strcmp(program_invocation_short_name, "lostwrites") == 0) {
        return;
    }
    get_mkdirat()(AT_FDCWD, dir, 0755);
    if (realpath(dir, g.root) == NULL || stat(g.root, &st) != 0) {
        fprintf(stderr, "lostwrites: %s: %s: not modelled\n", dir,
                strerror(errno));
        return;
    }
    g.rootlen = strlen(g.root);
    g.dev = st.st_dev;
    g.nosync = nosync != NULL && strcmp(nosync, "1") == 0;
    g.posix_dirs = dirs != NULL && strcmp(dirs, "posix") == 0;
    g.log_limit = (uint64_t)32 << 20;
    if (limit != NULL && limit[0] != '\0') {
        g.log_limit = strtoull(limit, NULL, 10);
    }
    if (dirs != NULL && !g.posix_dirs && strcmp(dirs, "journal") != 0) {
        fprintf(stderr, "lostwrites: LOSTWRITES_DIRS=%s: posix or journal\n",
                dirs);
        abort();
    }
    snprintf(g.state, sizeof g.state, "%s" LW_SUFFIX, g.root);
    get_mkdirat()(AT_FDCWD, g.state, 0700);
    snprintf(path, sizeof path, "%s/shadow", g.state);
    get_mkdirat()(AT_FDCWD, path, 0700);
    snprintf(path, sizeof path, "%s/lock", g.state);
    g.lockfd = get_openat()(AT_FDCWD, path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (g.lockfd < 0 || flock(g.lockfd, LOCK_EX | LOCK_NB) != 0) {
        fprintf(stderr,
                "lostwrites: %s is modelled by another process: this one "
                "(pid %ld) is not\n",
                g.root, (long)getpid());
        if (g.lockfd >= 0) {
            close(g.lockfd);
        }
        return;
    }
    /* A log left by an earlier run of the program (stopped, not rolled
     * back) goes on: what it had not synced is still not durable. */
    snprintf(path, sizeof path, "%s/undo.log", g.state);
    g.logfd = get_openat()(AT_FDCWD, path,
                           O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (g.logfd < 0) {
        die("cannot open the undo log");
    }
    off_t valid = model_load(&g.m, g.logfd);
    if (valid < 0 || get_ftruncate()(g.logfd, valid) != 0) {
        die("cannot read the undo log");
    }
    g.logsize = (uint64_t)valid;
    struct stat sst;
    snprintf(path, sizeof path, "%s/shadow", g.state);
    if (stat(path, &sst) != 0 || sst.st_dev != g.dev) {
        fprintf(stderr,
                "lostwrites: %s is on another file system than %s: removed "
                "files cannot be brought back\n",
                path, g.root);
    }
    pthread_atfork(NULL, NULL, after_fork_child);
    g.active = 1;
    fprintf(stderr,
            "lostwrites: pid %ld: power loss modelled under %s (names: %s%s)\n",
            (long)getpid(), g.root, g.posix_dirs ? "posix" : "journal",
            g.nosync ? "; NOSYNC: syncs are swallowed" : "");
}

#else
/* ===================== the command ======================================= */

static const char usage[] =
    "usage: lostwrites rollback DIR   undo what was not durable under DIR\n"
    "       lostwrites status DIR     what a rollback would undo\n"
    "       lostwrites forget DIR     declare everything durable (drop the "
    "log)\n"
    "  DIR was run under LD_PRELOAD=liblostwrites.so LOSTWRITES_DIR=DIR;\n"
    "  the undo log is in DIR" LW_SUFFIX "/\n";

static void model_free(struct lw_model *m)
{
    while (m->nf > 0) {
        model_drop_file(m, m->f[0].ino);
    }
    for (size_t i = 0; i < m->nns; i++) {
        ns_free(&m->ns[i]);
    }
    free(m->f);
    free(m->ns);
    memset(m, 0, sizeof *m);
}

/* Inode number -> path, for the files under the root. */
static struct
{
    uint64_t *ino;
    char **path;
    size_t n, cap;
} scan;

static int scan_cb(const char *path,
                   const struct stat *st,
                   int type,
                   struct FTW *ftw)
{
    (void)ftw;
    if (type == FTW_F && S_ISREG(st->st_mode)) {
        if (scan.n == scan.cap) {
            scan.cap = scan.cap ? 2 * scan.cap : 64;
            scan.ino = xrealloc(scan.ino, scan.cap * sizeof *scan.ino);
            scan.path = xrealloc(scan.path, scan.cap * sizeof *scan.path);
        }
        scan.ino[scan.n] = (uint64_t)st->st_ino;
        scan.path[scan.n] = xstrdup(path);
        scan.n++;
    }
    return 0;
}

static const char *scan_find(uint64_t ino)
{
    for (size_t i = 0; i < scan.n; i++) {
        if (scan.ino[i] == ino) {
            return scan.path[i];
        }
    }
    return NULL;
}

static int rm_cb(const char *path,
                 const struct stat *st,
                 int type,
                 struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    return type == FTW_DP ? rmdir(path) : unlink(path);
}

static int rm_rf(const char *path)
{
    return nftw(path, rm_cb, 32, FTW_DEPTH | FTW_PHYS);
}

struct tally
{
    unsigned files, gone, names, conflicts;
    uint64_t bytes, truncated;
};

static int same_ino(const char *path, uint64_t ino)
{
    struct stat st;
    return lstat(path, &st) == 0 && (uint64_t)st.st_ino == ino;
}

/* Undo one namespace change (the latest first). */
static void ns_undo(const char *root,
                    const char *state,
                    const struct lw_ns *x,
                    int apply,
                    struct tally *t)
{
    char p1[PATH_MAX * 2], p2[PATH_MAX * 2], sh[PATH_MAX * 2];
    snprintf(p1, sizeof p1, "%s/%s", root, x->p1);
    snprintf(p2, sizeof p2, "%s/%s", root, x->p2);
    snprintf(sh, sizeof sh, "%s/shadow/%s", state, x->p3);
    int ok = 1;
    t->names++;
    switch (x->type) {
        case LW_NS_CREATE:
            /* status only lists: the names are checked as they are undone,
             * after every later change was. */
            if (!apply) {
                printf("  undo create %s\n", x->p1);
            } else if (!same_ino(p1, x->ino)) {
                ok = 0;
            } else {
                ok = ((x->flags & LW_F_DIR) ? rm_rf(p1) : unlink(p1)) == 0;
            }
            break;
        case LW_NS_UNLINK:
            if (!apply) {
                printf("  undo unlink %s\n", x->p1);
            } else if (x->flags & LW_F_DIR) {
                ok = mkdir(p1, (mode_t)x->b) == 0;
            } else if (x->p3[0] != '\0') {
                ok = rename(sh, p1) == 0;
            } else {
                ok = 0; /* moved out of the root: cannot come back */
            }
            break;
        case LW_NS_RENAME:
            if (!apply) {
                printf("  undo rename %s -> %s%s\n", x->p1[0] ? x->p1 : "(out)",
                       x->p2, x->c ? " (over another)" : "");
                break;
            }
            if (!same_ino(p2, x->ino)) {
                ok = 0;
                break;
            }
            if (x->p1[0] != '\0') {
                ok = rename(p2, p1) == 0;
            } else {
                ok = ((x->flags & LW_F_DIR) ? rm_rf(p2) : unlink(p2)) == 0;
            }
            if (x->flags & LW_F_REPLACED_DIR) {
                ok &= mkdir(p2, (mode_t)x->b) == 0;
            } else if (x->p3[0] != '\0') {
                ok &= rename(sh, p2) == 0;
            }
            break;
        default:
            break;
    }
    if (!ok) {
        t->conflicts++;
        fprintf(stderr, "lostwrites: could not undo a change of %s%s%s\n",
                x->p1, x->p2[0] ? " -> " : "", x->p2);
    }
}

static int restore_file(const char *path,
                        const struct lw_file *f,
                        struct tally *t)
{
    static const unsigned char zeros[65536];
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        fprintf(stderr, "lostwrites: %s: %s\n", path, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    if ((uint64_t)st.st_size > f->dsize) {
        t->truncated += (uint64_t)st.st_size - f->dsize;
    }
    /* The size first: pre-images past the durable size do not count. */
    int rc = ftruncate(fd, (off_t)f->dsize);
    for (size_t i = 0; rc == 0 && i < f->n; i++) {
        const struct lw_range *r = &f->r[i];
        uint64_t end = r->off + r->len < f->dsize ? r->off + r->len : f->dsize;
        for (uint64_t p = r->off; rc == 0 && p < end;) {
            size_t n = (size_t)(end - p);
            const unsigned char *src = r->data ? r->data + (p - r->off) : zeros;
            if (r->data == NULL && n > sizeof zeros) {
                n = sizeof zeros;
            }
            ssize_t w = pwrite(fd, src, n, (off_t)p);
            if (w <= 0) {
                rc = -1;
                break;
            }
            p += (uint64_t)w;
            t->bytes += (uint64_t)w;
        }
    }
    if (rc != 0) {
        fprintf(stderr, "lostwrites: %s: %s\n", path, strerror(errno));
    }
    close(fd);
    return rc;
}

static int run(const char *cmd, const char *dir)
{
    char root[PATH_MAX], state[PATH_MAX + 16], path[PATH_MAX + 32];
    int apply = strcmp(cmd, "rollback") == 0;
    int forget = strcmp(cmd, "forget") == 0;
    if (!apply && !forget && strcmp(cmd, "status") != 0) {
        fputs(usage, stderr);
        return 2;
    }
    if (realpath(dir, root) == NULL) {
        fprintf(stderr, "lostwrites: %s: %s\n", dir, strerror(errno));
        return 1;
    }
    snprintf(state, sizeof state, "%s" LW_SUFFIX, root);
    snprintf(path, sizeof path, "%s/lock", state);
    int lock = open(path, O_RDWR | O_CLOEXEC);
    if (lock < 0) {
        printf("lostwrites: %s: nothing recorded\n", root);
        return 0;
    }
    if ((apply || forget) && flock(lock, LOCK_EX | LOCK_NB) != 0) {
        fprintf(stderr,
                "lostwrites: %s: a process under the shim still runs there "
                "(kill it first)\n",
                root);
        close(lock);
        return 1;
    }
    struct lw_model m;
    memset(&m, 0, sizeof m);
    snprintf(path, sizeof path, "%s/undo.log", state);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    off_t valid = fd >= 0 ? model_load(&m, fd) : 0;
    struct stat lst;
    if (fd >= 0 && fstat(fd, &lst) == 0 && lst.st_size > valid) {
        printf(
            "lostwrites: %s: the log ends with a record cut short (%lld "
            "bytes): ignored\n",
            root, (long long)(lst.st_size - valid));
    }
    if (fd >= 0) {
        close(fd);
    }
    struct tally t;
    memset(&t, 0, sizeof t);
    int rc = 0;
    if (!forget) {
        for (size_t i = m.nns; i-- > 0;) {
            ns_undo(root, state, &m.ns[i], apply, &t);
        }
        nftw(root, scan_cb, 32, FTW_PHYS | FTW_MOUNT);
        for (size_t i = 0; i < m.nf; i++) {
            const struct lw_file *f = &m.f[i];
            const char *p = scan_find(f->ino);
            if (p == NULL) {
                t.gone++;
                continue;
            }
            t.files++;
            if (!apply) {
                uint64_t pending = 0;
                for (size_t k = 0; k < f->n; k++) {
                    pending += f->r[k].len;
                }
                t.bytes += pending;
                printf("  %s: durable size %llu, %llu bytes not durable\n",
                       p + strlen(root) + 1, (unsigned long long)f->dsize,
                       (unsigned long long)pending);
            } else if (restore_file(p, f, &t) != 0) {
                rc = 1;
            }
        }
    }
    if (apply || forget) {
        if (rm_rf(state) != 0) {
            fprintf(stderr, "lostwrites: cannot remove %s: %s\n", state,
                    strerror(errno));
            rc = 1;
        }
    }
    if (forget) {
        printf("lostwrites: %s: everything declared durable\n", root);
    } else {
        printf(
            "lostwrites: %s: %s %u files (%llu bytes %s, %llu cut off), "
            "%u names undone%s, %u files gone\n",
            root, apply ? "rolled back" : "would roll back", t.files,
            (unsigned long long)t.bytes, apply ? "restored" : "to restore",
            (unsigned long long)t.truncated, t.names,
            t.conflicts ? " (some failed)" : "", t.gone);
    }
    rc |= t.conflicts != 0;
    model_free(&m);
    close(lock);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc == 2 &&
        (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        fputs(usage, stdout);
        return 0;
    }
    if (argc != 3) {
        fputs(usage, stderr);
        return 2;
    }
    return run(argv[1], argv[2]);
}
#endif
