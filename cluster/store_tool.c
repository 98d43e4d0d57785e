/*
 * store_tool.c - clusterd-store: inspect, check, back up and restore a
 * node's store file directly.
 *
 *   clusterd-store [-d FILE] <command> [args]
 *
 * The file is <data>/state.mdb on a parent, <data>/cache.mdb on a child.
 * Reading commands (get, range, changes, status, check, snapshot) are safe
 * while clusterd runs: they are LMDB readers.  Writing commands (put, del,
 * compact, restore) are for a stopped node only, or for scratch stores:
 * on a running parent every write must go through Raft (clusterctl).
 *
 * Exit codes: 0 success, 1 the operation failed (message on stderr),
 * 2 usage error, 3 key not found.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/err.h"
#include "storage/store.h"

static const char *db_path = "state.mdb";

static int open_store(int read_only, struct store **s)
{
    struct store_config cfg;
    store_config_init(&cfg, db_path);
    cfg.read_only = read_only;
    int rc = store_open(&cfg, s);
    if (rc != 0) {
        fprintf(stderr, "clusterd-store: cannot open %s: %s (%s)\n", db_path,
                cd_strerror(rc), cd_errname(rc));
    }
    return rc;
}

static int report(const char *what, int rc)
{
    if (rc == CD_ENOTFOUND) {
        fprintf(stderr, "clusterd-store: %s: not found\n", what);
        return 3;
    }
    if (rc != 0) {
        fprintf(stderr, "clusterd-store: %s: %s (%s)\n", what, cd_strerror(rc),
                cd_errname(rc));
        return 1;
    }
    return 0;
}

static int cmd_put(int argc, char **argv)
{
    struct store *s;
    uint64_t rev;
    if (argc != 3) {
        fprintf(stderr, "usage: clusterd-store put KEY VALUE\n");
        return 2;
    }
    if (open_store(0, &s) != 0) {
        return 1;
    }
    int rc =
        store_put(s, argv[1], strlen(argv[1]), argv[2], strlen(argv[2]), &rev);
    if (rc == 0) {
        printf("revision %" PRIu64 "\n", rev);
    }
    store_close(s);
    return report("put", rc);
}

static int cmd_del(int argc, char **argv)
{
    struct store *s;
    uint64_t n = 0;
    int prefix = argc == 3 && strcmp(argv[1], "--prefix") == 0;
    if (argc != 2 && !prefix) {
        fprintf(stderr, "usage: clusterd-store del [--prefix] KEY\n");
        return 2;
    }
    if (open_store(0, &s) != 0) {
        return 1;
    }
    const char *k = argv[argc - 1];
    int rc = prefix ? store_delete_prefix(s, k, strlen(k), &n)
                    : store_delete(s, k, strlen(k), &n);
    if (rc == 0) {
        printf("deleted %" PRIu64 "\n", n);
    }
    store_close(s);
    return report("del", rc);
}

static int cmd_get(int argc, char **argv)
{
    struct store *s;
    struct store_read *r;
    struct store_kv kv;
    if (argc != 2) {
        fprintf(stderr, "usage: clusterd-store get KEY\n");
        return 2;
    }
    if (open_store(1, &s) != 0) {
        return 1;
    }
    int rc = store_read_begin(s, &r);
    if (rc == 0) {
        rc = store_read_get(r, argv[1], strlen(argv[1]), &kv);
        if (rc == 0) {
            fwrite(kv.value, 1, kv.value_len, stdout);
            printf("\n");
        }
        store_read_end(r);
    }
    store_close(s);
    return report(argv[1], rc);
}

static int print_kv(void *arg, const struct store_kv *kv)
{
    (void)arg;
    printf("%.*s = %.*s  (create %" PRIu64 ", mod %" PRIu64 ", version %" PRIu64
           ")\n",
           (int)kv->key_len, (const char *)kv->key, (int)kv->value_len,
           (const char *)kv->value, kv->create_rev, kv->mod_rev, kv->version);
    return 0;
}

static int cmd_range(int argc, char **argv)
{
    struct store *s;
    struct store_read *r;
    int more = 0;
    if (argc < 1 || argc > 3) {
        fprintf(stderr, "usage: clusterd-store range [PREFIX [LIMIT]]\n");
        return 2;
    }
    const char *prefix = argc > 1 ? argv[1] : "";
    size_t limit = argc > 2 ? strtoul(argv[2], NULL, 10) : 0;
    if (open_store(1, &s) != 0) {
        return 1;
    }
    int rc = store_read_begin(s, &r);
    if (rc == 0) {
        rc = store_read_range(r, prefix, strlen(prefix), NULL, 0, limit,
                              print_kv, NULL, &more);
        store_read_end(r);
    }
    if (rc == 0 && more) {
        printf("... more keys follow\n");
    }
    store_close(s);
    return report("range", rc);
}

static int print_change(void *arg, const struct store_change *c)
{
    (void)arg;
    printf("%" PRIu64 ".%u %s %.*s%s%.*s\n", c->revision, c->sub,
           c->type == STORE_CHANGE_PUT ? "PUT" : "DEL", (int)c->kv.key_len,
           (const char *)c->kv.key, c->type == STORE_CHANGE_PUT ? " = " : "",
           (int)c->kv.value_len, (const char *)c->kv.value);
    return 0;
}

static int cmd_changes(int argc, char **argv)
{
    struct store *s;
    struct store_read *r;
    uint64_t next = 0;
    if (argc > 3) {
        fprintf(stderr, "usage: clusterd-store changes [SINCE [LIMIT]]\n");
        return 2;
    }
    uint64_t since = argc > 1 ? strtoull(argv[1], NULL, 10) : 0;
    size_t limit = argc > 2 ? strtoul(argv[2], NULL, 10) : 0;
    if (open_store(1, &s) != 0) {
        return 1;
    }
    int rc = store_read_begin(s, &r);
    if (rc == 0) {
        rc = store_read_changes(r, since, limit, print_change, NULL, &next);
        store_read_end(r);
    }
    if (rc == 0) {
        printf("next since: %" PRIu64 "\n", next);
    }
    store_close(s);
    return report("changes", rc);
}

static void print_meta(const struct store_meta *m)
{
    printf("revision        %" PRIu64 "\n", m->revision);
    printf("applied index   %" PRIu64 "\n", m->applied_index);
    printf("compacted to    %" PRIu64 "\n", m->compact_rev);
    printf("cluster id      %016" PRIx64 "\n", m->cluster_id);
    printf("history epoch   %016" PRIx64 "\n", m->epoch);
    printf("last update     %" PRIu64 " ms\n", m->updated_ms);
    printf("last contact    %" PRIu64 " ms\n", m->contact_ms);
    printf("format          %" PRIu64 "\n", m->format);
}

static int cmd_status(int argc, char **argv)
{
    (void)argv;
    struct store *s;
    struct store_read *r;
    struct store_meta m;
    if (argc != 1) {
        fprintf(stderr, "usage: clusterd-store status\n");
        return 2;
    }
    if (open_store(1, &s) != 0) {
        return 1;
    }
    int rc = store_read_begin(s, &r);
    if (rc == 0) {
        rc = store_read_meta(r, &m);
        store_read_end(r);
    }
    if (rc == 0) {
        print_meta(&m);
    }
    store_close(s);
    return report("status", rc);
}

static int cmd_check(int argc, char **argv)
{
    (void)argv;
    struct store *s;
    char why[512];
    if (argc != 1) {
        fprintf(stderr, "usage: clusterd-store check\n");
        return 2;
    }
    if (open_store(1, &s) != 0) {
        return 1;
    }
    int rc = store_check(s, why, sizeof why);
    store_close(s);
    if (rc == CD_ECORRUPT) {
        fprintf(stderr, "clusterd-store: check: CORRUPT: %s\n", why);
        return 1;
    }
    if (rc == 0) {
        printf("check: ok\n");
    }
    return report("check", rc);
}

static int cmd_compact(int argc, char **argv)
{
    struct store *s;
    if (argc != 2) {
        fprintf(stderr, "usage: clusterd-store compact REVISION\n");
        return 2;
    }
    if (open_store(0, &s) != 0) {
        return 1;
    }
    int rc = store_compact(s, strtoull(argv[1], NULL, 10));
    store_close(s);
    return report("compact", rc);
}

/* FILE "-" means stdout / stdin. */
static int open_file(const char *name, int write_mode)
{
    if (strcmp(name, "-") == 0) {
        return write_mode ? STDOUT_FILENO : STDIN_FILENO;
    }
    return write_mode ? open(name, O_WRONLY | O_CREAT | O_TRUNC, 0600)
                      : open(name, O_RDONLY);
}

static int cmd_snapshot(int argc, char **argv)
{
    struct store *s;
    struct store_snapshot_info info;
    if (argc != 2) {
        fprintf(stderr, "usage: clusterd-store snapshot FILE|-\n");
        return 2;
    }
    int fd = open_file(argv[1], 1);
    if (fd < 0) {
        return report(argv[1], -errno);
    }
    if (open_store(1, &s) != 0) {
        return 1;
    }
    int rc = store_snapshot(s, fd, &info);
    if (rc == 0 && fd != STDOUT_FILENO && fsync(fd) != 0) {
        rc = -errno;
    }
    store_close(s);
    if (fd != STDOUT_FILENO) {
        close(fd);
    }
    if (rc == 0) {
        fprintf(stderr, "snapshot: %" PRIu64 " bytes, crc32 %08x\n", info.bytes,
                info.crc32);
    }
    return report("snapshot", rc);
}

static int cmd_verify(int argc, char **argv)
{
    struct store_snapshot_info info;
    char tmp[] = "/tmp/clusterd-verify-XXXXXX";
    if (argc != 2) {
        fprintf(stderr, "usage: clusterd-store verify FILE|-\n");
        return 2;
    }
    int fd = open_file(argv[1], 0);
    if (fd < 0) {
        return report(argv[1], -errno);
    }
    int t = mkstemp(tmp);
    if (t < 0) {
        return report("mkstemp", -errno);
    }
    close(t);
    int rc = store_snapshot_verify(fd, tmp, &info);
    if (fd != STDIN_FILENO) {
        close(fd);
    }
    if (rc == 0) {
        printf("snapshot ok: %" PRIu64 " bytes, crc32 %08x, %" PRIu64 " keys\n",
               info.bytes, info.crc32, info.keys);
        print_meta(&info.meta);
    }
    return report("verify", rc);
}

static int cmd_restore(int argc, char **argv)
{
    struct store *s;
    struct store_snapshot_info info;
    if (argc != 2) {
        fprintf(stderr, "usage: clusterd-store restore FILE|-\n");
        return 2;
    }
    int fd = open_file(argv[1], 0);
    if (fd < 0) {
        return report(argv[1], -errno);
    }
    if (open_store(0, &s) != 0) {
        return 1;
    }
    int rc = store_restore(s, fd, &info);
    if (rc == 0) {
        rc = store_sync(s);
    }
    store_close(s);
    if (fd != STDIN_FILENO) {
        close(fd);
    }
    if (rc == 0) {
        printf("restored: revision %" PRIu64 ", applied index %" PRIu64 "\n",
               info.meta.revision, info.meta.applied_index);
    }
    return report("restore", rc);
}

static const struct
{
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *help;
} subcommands[] = {
    {"status", cmd_status, "revision, applied index, cluster id"},
    {"get", cmd_get, "KEY: print a value"},
    {"range", cmd_range, "[PREFIX [LIMIT]]: list keys and values"},
    {"changes", cmd_changes, "[SINCE [LIMIT]]: the history after SINCE"},
    {"check", cmd_check, "full consistency walk"},
    {"snapshot", cmd_snapshot, "FILE|-: write a backup"},
    {"verify", cmd_verify, "FILE|-: check a backup without restoring it"},
    {"restore", cmd_restore,
     "FILE|-: replace the store's state (stopped "
     "node only)"},
    {"put", cmd_put, "KEY VALUE (stopped node or scratch store only)"},
    {"del", cmd_del, "[--prefix] KEY (stopped node or scratch store only)"},
    {"compact", cmd_compact, "REVISION: drop older history (stopped node)"},
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: clusterd-store [-d FILE] <command> [args]\n\n"
            "FILE is the store (default ./state.mdb; $CLUSTERD_DB).\n\n"
            "commands:\n");
    for (size_t i = 0; i < sizeof subcommands / sizeof subcommands[0]; i++) {
        fprintf(f, "  %-9s %s\n", subcommands[i].name, subcommands[i].help);
    }
    fprintf(f, "\nexit codes: 0 ok, 1 failed, 2 usage, 3 not found\n");
}

int main(int argc, char **argv)
{
    int i = 1;
    const char *env = getenv("CLUSTERD_DB");
    if (env != NULL && env[0] != '\0') {
        db_path = env;
    }
    if (i + 1 < argc && strcmp(argv[i], "-d") == 0) {
        db_path = argv[i + 1];
        i += 2;
    }
    if (i >= argc || strcmp(argv[i], "--help") == 0 ||
        strcmp(argv[i], "-h") == 0) {
        usage(i >= argc ? stderr : stdout);
        return i >= argc ? 2 : 0;
    }
    for (size_t j = 0; j < sizeof subcommands / sizeof subcommands[0]; j++) {
        if (strcmp(argv[i], subcommands[j].name) == 0) {
            if (i + 1 < argc && strcmp(argv[i + 1], "--help") == 0) {
                printf("clusterd-store %s %s\n", subcommands[j].name,
                       subcommands[j].help);
                return 0;
            }
            return subcommands[j].fn(argc - i, argv + i);
        }
    }
    fprintf(stderr, "clusterd-store: unknown command '%s'\n", argv[i]);
    usage(stderr);
    return 2;
}
