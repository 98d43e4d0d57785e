/*
 * bench_store.c - the store against the disk's physical limit.
 *
 *   bench_store --dir DIR [--rounds N] [--seconds S]
 *
 * Measures, on the disk holding DIR:
 *   fdatasync loop    4 KiB pwrite + fdatasync: the floor of any durable
 *                     commit on this disk;
 *   synced commits    one put per transaction, in the durability mode
 *                     parents run (STORE_DURABLE_DEFERRED: one flush per
 *                     commit; a commit is durable once the next one, or
 *                     store_sync(), returns; the run ends with a sync);
 *   each-durable      one put per transaction, STORE_DURABLE_EACH (durable
 *                     on return: LMDB flushes data, then meta: two flushes);
 *   batched puts      1,000 puts of 256-byte values per transaction;
 *   point reads       random gets of 100,000 keys on one thread, a read
 *                     view renewed every 1,000 gets.
 * The disk's speed swings between runs (a virtual disk that throttles), so
 * the synced figures are measured in interleaved rounds, store and
 * fdatasync loop side by side, and the medians and their ratio reported.
 * Besides the table it prints "figure NAME VALUE UNIT" lines.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lib/err.h"
#include "storage/store.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t rng = 88172645463325252ULL;
static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "bench_store: %s: %s\n", what, cd_strerror(rc));
    exit(1);
}

static char dir[512];
static double seconds = 2.0;

static struct store *open_store(const char *name, int durability)
{
    char path[600], cmd[1300];
    struct store_config cfg;
    struct store *s;
    snprintf(path, sizeof path, "%s/%s.mdb", dir, name);
    snprintf(cmd, sizeof cmd, "rm -f '%s' '%s-lock'", path, path);
    if (system(cmd) != 0) {
        die("rm", -EIO);
    }
    store_config_init(&cfg, path);
    cfg.durability = durability;
    cfg.map_size = (size_t)4 << 30;
    int rc = store_open(&cfg, &s);
    if (rc != 0) {
        die("store_open", rc);
    }
    return s;
}

static double fdatasync_loop(void)
{
    char path[600];
    static char buf[4096];
    snprintf(path, sizeof path, "%s/fdatasync.bin", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) {
        die("open", -errno);
    }
    memset(buf, 'f', sizeof buf);
    /* Preallocate so the loop measures overwrites, as LMDB's pages are. */
    for (int i = 0; i < 256; i++) {
        if (pwrite(fd, buf, sizeof buf, (off_t)i * 4096) < 0) {
            die("pwrite", -errno);
        }
    }
    fdatasync(fd);
    long n = 0;
    double t0 = now(), t;
    do {
        if (pwrite(fd, buf, sizeof buf, (off_t)(n % 256) * 4096) < 0 ||
            fdatasync(fd) != 0) {
            die("fdatasync", -errno);
        }
        n++;
    } while ((t = now() - t0) < seconds && n < 200000);
    close(fd);
    unlink(path);
    return (double)n / t;
}

static double single_commits(int durability)
{
    struct store *s = open_store("commits", durability);
    static char val[256];
    char key[32];
    memset(val, 'v', sizeof val);
    long n = 0;
    double t0 = now();
    do {
        snprintf(key, sizeof key, "/bench/c/%04ld", n % 1000);
        int rc = store_put(s, key, strlen(key), val, sizeof val, NULL);
        if (rc != 0) {
            die("put", rc);
        }
        n++;
    } while (now() - t0 < seconds && n < 200000);
    /* The last commit of a deferred run becomes durable here. */
    int rc = store_sync(s);
    if (rc != 0) {
        die("sync", rc);
    }
    double t = now() - t0;
    store_close(s);
    return (double)n / t;
}

/*
 * ordered: each batch adds new keys in key order (an import, a registry
 * growing); otherwise keys are random over a million-key space, so each
 * transaction rewrites about a thousand distinct B-tree leaves.
 */
static double batched_puts(int ordered)
{
    struct store *s = open_store("batched", STORE_DURABLE_EACH);
    enum { PER_TXN = 1000 };
    static struct cd_op ops[PER_TXN];
    static struct cd_result res[PER_TXN];
    static char keys[PER_TXN][32];
    static char val[256];
    memset(val, 'b', sizeof val);
    long n = 0;
    double t0 = now(), t;
    do {
        for (int i = 0; i < PER_TXN; i++) {
            snprintf(keys[i], sizeof keys[i], "/bench/b/%010llu",
                     ordered ? (unsigned long long)(n + i)
                             : (unsigned long long)(rnd() % 1000000));
            ops[i] = (struct cd_op){.type = CD_OP_PUT,
                                    .key = {keys[i], strlen(keys[i])},
                                    .value = {val, sizeof val}};
        }
        struct cd_batch b = {.time_ms = 1, .ops = ops, .n_ops = PER_TXN};
        int rc = store_apply(s, &b, 0, res);
        if (rc != 0 || res[0].status != 0) {
            die("apply", rc != 0 ? rc : res[0].status);
        }
        n += PER_TXN;
    } while ((t = now() - t0) < seconds && n < 5000000);
    store_close(s);
    return (double)n / t;
}

static double point_reads(void)
{
    struct store *s = open_store("reads", STORE_DURABLE_NONE);
    enum { KEYS = 100000, PER_TXN = 1000 };
    static struct cd_op ops[PER_TXN];
    static struct cd_result res[PER_TXN];
    static char keys[PER_TXN][32];
    static char val[256];
    memset(val, 'r', sizeof val);
    for (int base = 0; base < KEYS; base += PER_TXN) {
        for (int i = 0; i < PER_TXN; i++) {
            snprintf(keys[i], sizeof keys[i], "/bench/r/%08d", base + i);
            ops[i] = (struct cd_op){.type = CD_OP_PUT,
                                    .key = {keys[i], strlen(keys[i])},
                                    .value = {val, sizeof val}};
        }
        struct cd_batch b = {.time_ms = 1, .ops = ops, .n_ops = PER_TXN};
        int rc = store_apply(s, &b, 0, res);
        if (rc != 0) {
            die("load", rc);
        }
    }
    /* Keys are formatted before the clock starts: this measures reads. */
    static char all[KEYS][20];
    static uint32_t order[PER_TXN * 64];
    for (int i = 0; i < KEYS; i++) {
        snprintf(all[i], sizeof all[i], "/bench/r/%08d", i);
    }
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        order[i] = (uint32_t)(rnd() % KEYS);
    }
    long n = 0;
    uint64_t sum = 0;
    size_t o = 0;
    double t0 = now(), t;
    do {
        struct store_read *r;
        int rc = store_read_begin(s, &r);
        if (rc != 0) {
            die("read_begin", rc);
        }
        for (int i = 0; i < PER_TXN; i++) {
            struct store_kv kv;
            const char *key =
                all[order[o++ % (sizeof order / sizeof order[0])]];
            rc = store_read_get(r, key, 17, &kv);
            if (rc != 0) {
                die("get", rc);
            }
            sum += kv.value_len;
        }
        store_read_end(r);
        n += PER_TXN;
    } while ((t = now() - t0) < seconds && n < 100000000);
    store_close(s);
    if (sum != (uint64_t)n * sizeof val) {
        die("read sizes", CD_ECORRUPT);
    }
    return (double)n / t;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv)
{
    int rounds = 3;
    snprintf(dir, sizeof dir, "build/bench-store.d");
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
            snprintf(dir, sizeof dir, "%s", argv[++i]);
        } else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc) {
            rounds = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
            seconds = atof(argv[++i]);
        } else {
            fprintf(stderr,
                    "usage: bench_store [--dir DIR] [--rounds N] "
                    "[--seconds S]\n");
            return 2;
        }
    }
    if (rounds < 1 || rounds > 50 || seconds <= 0 || seconds > 60) {
        fprintf(stderr, "bench_store: rounds 1..50, seconds (0, 60]\n");
        return 2;
    }
    mkdir(dir, 0755);

    double fs[50], dc[50], ec[50], ratio_d[50], ratio_e[50];
    printf("bench-store: %s, %d interleaved rounds of %.1f s\n", dir, rounds,
           seconds);
    printf("%-6s %14s %16s %16s\n", "round", "fdatasync/s", "synced/s",
           "each-durable/s");
    for (int r = 0; r < rounds; r++) {
        fs[r] = fdatasync_loop();
        dc[r] = single_commits(STORE_DURABLE_DEFERRED);
        ec[r] = single_commits(STORE_DURABLE_EACH);
        ratio_d[r] = dc[r] / fs[r];
        ratio_e[r] = ec[r] / fs[r];
        printf("%-6d %14.0f %16.0f %16.0f\n", r + 1, fs[r], dc[r], ec[r]);
        fflush(stdout);
    }
    double f = median(fs, rounds), d = median(dc, rounds),
           e = median(ec, rounds);
    double rd = median(ratio_d, rounds), re = median(ratio_e, rounds);
    double bp = batched_puts(1);
    double bpr = batched_puts(0);
    double rd_s = point_reads();

    printf("\n%-44s %14s %8s\n", "measure", "value", "vs disk");
    printf("%-44s %14.0f %8s\n", "fdatasync loop (4 KiB), per s", f, "1.00");
    printf("%-44s %14.0f %8.2f\n", "synced single-put commits (1 flush), per s",
           d, rd);
    printf("%-44s %14.0f %8.2f\n",
           "durable-on-return commits (2 flushes), per s", e, re);
    printf("%-44s %14.0f %8s\n", "batched puts, ordered keys, per s", bp, "");
    printf("%-44s %14.0f %8s\n", "batched puts, random keys (1M), per s", bpr,
           "");
    printf("%-44s %14.0f %8s\n", "point reads, one thread, per s", rd_s, "");
    printf("\n");
    printf("figure fdatasync_loop_per_s %.0f 1/s\n", f);
    printf("figure store_synced_commits_per_s %.0f 1/s\n", d);
    printf("figure store_synced_ratio_vs_fdatasync %.2f ratio\n", rd);
    printf("figure store_each_durable_commits_per_s %.0f 1/s\n", e);
    printf("figure store_each_durable_ratio_vs_fdatasync %.2f ratio\n", re);
    printf("figure store_batched_puts_per_s %.0f 1/s\n", bp);
    printf("figure store_batched_random_puts_per_s %.0f 1/s\n", bpr);
    printf("figure store_reads_per_s %.0f 1/s\n", rd_s);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : 1;
}
