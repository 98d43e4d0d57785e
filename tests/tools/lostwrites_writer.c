/*
 * lostwrites_writer - small writers for the power-loss shim's test
 * (tests/integration/test_lostwrites.sh).  Each prints "ack N" on stdout
 * once its N-th change has returned (the change a program would
 * acknowledge), then "done", and waits to be killed.
 *
 *   lostwrites_writer plain FILE COUNT [--fdatasync | --dsync | --sync-at K]
 *       COUNT records of 100 bytes with pwrite at 100*i; fdatasync after
 *       each, an O_DSYNC descriptor, or one fdatasync after record K
 *   lostwrites_writer aio FILE COUNT [--dsync]
 *       COUNT blocks of 4096 bytes, O_DIRECT, through the kernel's AIO by
 *       syscall(__NR_io_submit) as libraft does, RWF_DSYNC or not
 *   lostwrites_writer store PATH each|deferred|none COUNT
 *       COUNT store_put commits of /k/NNNNNN (STORE_DURABLE_EACH: LMDB's
 *       default flags; DEFERRED: MDB_NOMETASYNC; NONE: MDB_NOSYNC)
 *   lostwrites_writer names DIR [--fsync-dir]
 *       in DIR (holding old, gone, victim): create new, rename old to
 *       renamed, unlink gone, replace victim by rename, mkdir sub and
 *       create sub/f, every file fsynced; the directories only with
 *       --fsync-dir
 *
 * Exit codes: 1 an operation failed, 2 bad usage; otherwise it never
 * exits by itself.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "storage/store.h"

static const char usage[] =
    "usage: lostwrites_writer plain FILE COUNT [--fdatasync|--dsync|--sync-at "
    "K]\n"
    "       lostwrites_writer aio FILE COUNT [--dsync]\n"
    "       lostwrites_writer store PATH each|deferred|none COUNT\n"
    "       lostwrites_writer names DIR [--fsync-dir]\n";

static int fail(const char *what)
{
    fprintf(stderr, "lostwrites_writer: %s: %s\n", what, strerror(errno));
    return 1;
}

static void ack(long i)
{
    dprintf(1, "ack %ld\n", i);
}

static _Noreturn int wait_to_be_killed(void)
{
    dprintf(1, "done\n");
    for (;;) {
        pause();
    }
}

static long count_arg(const char *s)
{
    char *end;
    long n = strtol(s, &end, 10);
    return *end == '\0' && n > 0 && n <= 10000000 ? n : -1;
}

static int plain(const char *file, long count, const char *opt, long sync_at)
{
    int dsync = opt != NULL && strcmp(opt, "--dsync") == 0;
    int each = opt != NULL && strcmp(opt, "--fdatasync") == 0;
    int fd = open(file, O_WRONLY | O_CREAT | O_CLOEXEC | (dsync ? O_DSYNC : 0),
                  0644);
    if (fd < 0) {
        return fail(file);
    }
    for (long i = 0; i < count; i++) {
        char rec[100];
        memset(rec, '.', sizeof rec);
        int n = snprintf(rec, sizeof rec, "record %06ld", i);
        rec[n] = ' ';
        rec[sizeof rec - 1] = '\n';
        if (pwrite(fd, rec, sizeof rec, (off_t)(i * 100)) != sizeof rec) {
            return fail("pwrite");
        }
        if ((each || i + 1 == sync_at) && fdatasync(fd) != 0) {
            return fail("fdatasync");
        }
        ack(i);
    }
    return wait_to_be_killed();
}

static int aio(const char *file, long count, int dsync)
{
    aio_context_t ctx = 0;
    void *buf;
    int fd = open(file, O_WRONLY | O_CREAT | O_DIRECT | O_CLOEXEC, 0644);
    if (fd < 0) {
        return fail(file);
    }
    if (posix_memalign(&buf, 4096, 4096) != 0) {
        return fail("posix_memalign");
    }
    if (syscall(SYS_io_setup, 1, &ctx) != 0) {
        return fail("io_setup");
    }
    for (long i = 0; i < count; i++) {
        struct iovec iov = {buf, 4096};
        struct iocb cb;
        struct iocb *cbs[1] = {&cb};
        struct io_event ev;
        memset(buf, 'a' + (int)(i % 26), 4096);
        snprintf(buf, 4096, "block %06ld", i);
        memset(&cb, 0, sizeof cb);
        cb.aio_lio_opcode = IOCB_CMD_PWRITEV;
        cb.aio_fildes = (unsigned)fd;
        cb.aio_buf = (unsigned long)&iov;
        cb.aio_nbytes = 1;
        cb.aio_offset = i * 4096;
        cb.aio_rw_flags = dsync ? RWF_DSYNC : 0;
        if (syscall(SYS_io_submit, ctx, 1, cbs) != 1) {
            return fail("io_submit");
        }
        if (syscall(SYS_io_getevents, ctx, 1, 1, &ev, NULL) != 1 ||
            ev.res != 4096) {
            return fail("io_getevents");
        }
        ack(i);
    }
    return wait_to_be_killed();
}

static int store(const char *path, const char *mode, long count)
{
    struct store_config cfg;
    struct store *s;
    store_config_init(&cfg, path);
    cfg.map_size = (size_t)64 << 20;
    if (strcmp(mode, "none") == 0) {
        cfg.durability = STORE_DURABLE_NONE;
    } else if (strcmp(mode, "deferred") == 0) {
        cfg.durability = STORE_DURABLE_DEFERRED;
    } else if (strcmp(mode, "each") != 0) {
        fputs(usage, stderr);
        return 2;
    }
    int rc = store_open(&cfg, &s);
    if (rc != 0) {
        fprintf(stderr, "lostwrites_writer: store_open: %d\n", rc);
        return 1;
    }
    for (long i = 0; i < count; i++) {
        char key[32], val[64];
        snprintf(key, sizeof key, "/k/%06ld", i);
        snprintf(val, sizeof val, "value %ld", i);
        rc = store_put(s, key, strlen(key), val, strlen(val), NULL);
        if (rc != 0) {
            fprintf(stderr, "lostwrites_writer: store_put: %d\n", rc);
            return 1;
        }
        ack(i);
    }
    return wait_to_be_killed();
}

static int put_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text) ||
        fsync(fd) != 0) {
        return fail(path);
    }
    close(fd);
    return 0;
}

static int sync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0) {
        return fail(path);
    }
    close(fd);
    return 0;
}

static const char *in(char *buf, size_t len, const char *dir, const char *name)
{
    snprintf(buf, len, "%s/%s", dir, name);
    return buf;
}

static int names(const char *dir, int fsync_dir)
{
    char a[4096], b[4096];
    if (put_file(in(a, sizeof a, dir, "new"), "new\n") != 0) {
        return 1;
    }
    if (rename(in(a, sizeof a, dir, "old"), in(b, sizeof b, dir, "renamed")) !=
        0) {
        return fail("rename");
    }
    if (unlink(in(a, sizeof a, dir, "gone")) != 0) {
        return fail("unlink");
    }
    if (put_file(in(a, sizeof a, dir, "tmp"), "replacement\n") != 0) {
        return 1;
    }
    if (rename(in(a, sizeof a, dir, "tmp"), in(b, sizeof b, dir, "victim")) !=
        0) {
        return fail("rename over");
    }
    if (mkdir(in(a, sizeof a, dir, "sub"), 0755) != 0) {
        return fail("mkdir");
    }
    if (put_file(in(a, sizeof a, dir, "sub/f"), "f\n") != 0) {
        return 1;
    }
    if (fsync_dir &&
        (sync_dir(in(a, sizeof a, dir, "sub")) != 0 || sync_dir(dir) != 0)) {
        return 1;
    }
    ack(0);
    return wait_to_be_killed();
}

int main(int argc, char **argv)
{
    long n;
    if (argc >= 4 && strcmp(argv[1], "plain") == 0 &&
        (n = count_arg(argv[3])) > 0) {
        if (argc == 4) {
            return plain(argv[2], n, NULL, 0);
        }
        if (argc == 5 && (strcmp(argv[4], "--fdatasync") == 0 ||
                          strcmp(argv[4], "--dsync") == 0)) {
            return plain(argv[2], n, argv[4], 0);
        }
        if (argc == 6 && strcmp(argv[4], "--sync-at") == 0 &&
            count_arg(argv[5]) > 0) {
            return plain(argv[2], n, NULL, count_arg(argv[5]));
        }
    } else if (argc >= 4 && strcmp(argv[1], "aio") == 0 &&
               (n = count_arg(argv[3])) > 0 &&
               (argc == 4 || (argc == 5 && strcmp(argv[4], "--dsync") == 0))) {
        return aio(argv[2], n, argc == 5);
    } else if (argc == 5 && strcmp(argv[1], "store") == 0 &&
               (n = count_arg(argv[4])) > 0) {
        return store(argv[2], argv[3], n);
    } else if (argc >= 3 && strcmp(argv[1], "names") == 0 &&
               (argc == 3 ||
                (argc == 4 && strcmp(argv[3], "--fsync-dir") == 0))) {
        return names(argv[2], argc == 4);
    }
    fputs(usage, stderr);
    return 2;
}
