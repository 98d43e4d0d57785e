/*
 * test_store.c - unit tests of storage/: schema, apply, reads, history,
 * compaction, deduplication, logs, limits, snapshots, the consistency walk
 * and the read-only client library.  Each test uses a fresh store in its
 * own temporary directory.
 */
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib/err.h"
#include "storage/clusterd.h"
#include "storage/store.h"

struct fx
{
    char dir[64];
    char path[96];
    struct store *s;
    int sync[2];
    int sync2[2];
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    struct store_config cfg;
    if (f == NULL) {
        return -1;
    }
    snprintf(f->dir, sizeof f->dir, "/tmp/cd-test-store-XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof f->path, "%s/state.mdb", f->dir);
    store_config_init(&cfg, f->path);
    cfg.durability = STORE_DURABLE_NONE;
    if (store_open(&cfg, &f->s) != 0) {
        rmdir(f->dir);
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    char cmd[128];
    store_close(f->s);
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    if (system(cmd) != 0) {
        return -1;
    }
    free(f);
    return 0;
}

/* Assert a call returned rc, printing names when it did not. */
#define assert_rc(expr, want)                                                \
    do {                                                                     \
        int got_ = (expr);                                                   \
        if (got_ != (want)) {                                                \
            fail_msg("%s: expected %s (%d), got %s (%d)", #expr,             \
                     cd_errname(want), (int)(want), cd_errname(got_), got_); \
        }                                                                    \
    } while (0)

#define S(str) (str), strlen(str)

static void check_ok(struct store *s)
{
    char why[256];
    int rc = store_check(s, why, sizeof why);
    if (rc != 0) {
        fail_msg("store_check: %s: %s", cd_errname(rc), why);
    }
}

static struct store_meta meta(struct store *s)
{
    struct store_read *r;
    struct store_meta m;
    assert_rc(store_read_begin(s, &r), 0);
    assert_rc(store_read_meta(r, &m), 0);
    store_read_end(r);
    return m;
}

/* Get key; returns 0 or the error; copies the value as a string. */
static int get(struct store *s,
               const char *key,
               char *val,
               size_t vlen,
               struct store_kv *out)
{
    struct store_read *r;
    struct store_kv kv = {0};
    assert_rc(store_read_begin(s, &r), 0);
    int rc = store_read_get(r, key, strlen(key), &kv);
    if (rc == 0) {
        if (val != NULL) {
            size_t n = kv.value_len < vlen - 1 ? kv.value_len : vlen - 1;
            memcpy(val, kv.value, n);
            val[n] = '\0';
        }
        if (out != NULL) {
            *out = kv;
            out->key = out->value = NULL;
        }
    }
    store_read_end(r);
    return rc;
}

static void test_open_errors(void **state)
{
    (void)state;
    struct store_config cfg;
    struct store *s = NULL;

    store_config_init(&cfg, NULL);
    assert_rc(store_open(&cfg, &s), CD_ECONFIG);
    store_config_init(&cfg, "/tmp/x.mdb");
    cfg.map_size = 1000;
    assert_rc(store_open(&cfg, &s), CD_ECONFIG);
    store_config_init(&cfg, "/nonexistent-dir/state.mdb");
    cfg.read_only = 1;
    assert_rc(store_open(&cfg, &s), -ENOENT);
    cfg.read_only = 0;
    assert_rc(store_open(&cfg, &s), -ENOENT);
    cfg.durability = 7;
    assert_rc(store_open(&cfg, &s), CD_ECONFIG);
    assert_null(s);
}

static void test_put_get_revisions(void **state)
{
    struct fx *f = *state;
    struct store_kv kv = {0};
    char v[64] = "";
    uint64_t rev;

    assert_rc(store_put(f->s, S("/a"), S("1"), &rev), 0);
    assert_int_equal(rev, 1);
    assert_rc(store_put(f->s, S("/b"), S("2"), &rev), 0);
    assert_int_equal(rev, 2);
    assert_rc(store_put(f->s, S("/a"), S("3"), &rev), 0);
    assert_int_equal(rev, 3);

    assert_rc(get(f->s, "/a", v, sizeof v, &kv), 0);
    assert_string_equal(v, "3");
    assert_int_equal(kv.create_rev, 1);
    assert_int_equal(kv.mod_rev, 3);
    assert_int_equal(kv.version, 2);
    assert_rc(get(f->s, "/nope", v, sizeof v, NULL), CD_ENOTFOUND);

    /* Empty values are values. */
    assert_rc(store_put(f->s, S("/empty"), NULL, 0, &rev), 0);
    assert_rc(get(f->s, "/empty", v, sizeof v, &kv), 0);
    assert_string_equal(v, "");
    assert_int_equal(meta(f->s).revision, 4);
    check_ok(f->s);
}

static void test_bad_keys_and_values(void **state)
{
    struct fx *f = *state;
    char big[STORE_MAX_KEY + 2];
    memset(big, 'k', sizeof big);
    big[0] = '/';

    assert_rc(store_put(f->s, "", 0, S("v"), NULL), CD_EBADKEY);
    assert_rc(store_put(f->s, big, STORE_MAX_KEY + 1, S("v"), NULL),
              CD_EKEYTOOBIG);
    assert_rc(store_put(f->s, big, STORE_MAX_KEY, S("v"), NULL), 0);
    assert_rc(store_delete(f->s, big, STORE_MAX_KEY + 1, NULL), CD_EKEYTOOBIG);

    size_t n = ((size_t)1 << 20) + 1;
    char *val = calloc(1, n);
    assert_rc(store_put(f->s, S("/big"), val, n, NULL), CD_EVALTOOBIG);
    assert_rc(store_put(f->s, S("/big"), val, n - 1, NULL), 0);
    free(val);
    /* Failed puts took no revision. */
    assert_int_equal(meta(f->s).revision, 2);

    struct store_read *r;
    struct store_kv kv = {0};
    assert_rc(store_read_begin(f->s, &r), 0);
    assert_rc(store_read_get(r, "", 0, &kv), CD_EBADKEY);
    assert_rc(store_read_get(r, big, STORE_MAX_KEY + 1, &kv), CD_EKEYTOOBIG);
    store_read_end(r);
    check_ok(f->s);
}

static void test_delete_and_prefix(void **state)
{
    struct fx *f = *state;
    uint64_t n = 99;

    assert_rc(store_put(f->s, S("/p/1"), S("x"), NULL), 0);
    assert_rc(store_put(f->s, S("/p/2"), S("x"), NULL), 0);
    assert_rc(store_put(f->s, S("/p/3"), S("x"), NULL), 0);
    assert_rc(store_put(f->s, S("/q/1"), S("x"), NULL), 0);
    assert_rc(store_put(f->s, S("/p"), S("x"), NULL), 0);

    assert_rc(store_delete(f->s, S("/absent"), &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(meta(f->s).revision, 5); /* nothing changed: no rev */

    assert_rc(store_delete(f->s, S("/p/2"), &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(meta(f->s).revision, 6);

    assert_rc(store_delete_prefix(f->s, S("/p/"), &n), 0);
    assert_int_equal(n, 2);
    /* One revision for the whole prefix delete. */
    assert_int_equal(meta(f->s).revision, 7);
    assert_rc(get(f->s, "/p/1", NULL, 0, NULL), CD_ENOTFOUND);
    assert_rc(get(f->s, "/p", NULL, 0, NULL), 0);
    assert_rc(get(f->s, "/q/1", NULL, 0, NULL), 0);

    assert_rc(store_delete_prefix(f->s, S("/zzz"), &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(meta(f->s).revision, 7);

    /* Recreated key starts a new life: create_rev and version reset. */
    struct store_kv kv = {0};
    assert_rc(store_put(f->s, S("/p/1"), S("y"), NULL), 0);
    assert_rc(get(f->s, "/p/1", NULL, 0, &kv), 0);
    assert_int_equal(kv.create_rev, 8);
    assert_int_equal(kv.version, 1);

    /* The empty prefix is every key. */
    assert_rc(store_delete_prefix(f->s, NULL, 0, &n), 0);
    assert_int_equal(n, 3);
    check_ok(f->s);
}

struct collect
{
    char keys[64][32];
    int n;
    int stop_after;
};

static int collect_kv(void *arg, const struct store_kv *kv)
{
    struct collect *c = arg;
    snprintf(c->keys[c->n], sizeof c->keys[0], "%.*s", (int)kv->key_len,
             (const char *)kv->key);
    c->n++;
    return c->stop_after != 0 && c->n >= c->stop_after;
}

static void test_range(void **state)
{
    struct fx *f = *state;
    struct store_read *r;
    struct collect c;
    int more;
    const char *keys[] = {"/a", "/b/1", "/b/2", "/b/3", "/b0", "/c"};
    for (size_t i = 0; i < 6; i++) {
        assert_rc(store_put(f->s, S(keys[i]), S("v"), NULL), 0);
    }
    assert_rc(store_read_begin(f->s, &r), 0);

    memset(&c, 0, sizeof c);
    assert_rc(store_read_range(r, S("/b/"), NULL, 0, 0, collect_kv, &c, &more),
              0);
    assert_int_equal(c.n, 3);
    assert_string_equal(c.keys[0], "/b/1");
    assert_string_equal(c.keys[2], "/b/3");
    assert_int_equal(more, 0);

    memset(&c, 0, sizeof c);
    assert_rc(store_read_range(r, S("/b/"), NULL, 0, 2, collect_kv, &c, &more),
              0);
    assert_int_equal(c.n, 2);
    assert_int_equal(more, 1);

    /* Continue from a start key. */
    memset(&c, 0, sizeof c);
    assert_rc(
        store_read_range(r, S("/b/"), S("/b/3"), 2, collect_kv, &c, &more), 0);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.keys[0], "/b/3");
    assert_int_equal(more, 0);

    /* Everything; and a callback that stops early. */
    memset(&c, 0, sizeof c);
    assert_rc(store_read_range(r, NULL, 0, NULL, 0, 0, collect_kv, &c, NULL),
              0);
    assert_int_equal(c.n, 6);
    memset(&c, 0, sizeof c);
    c.stop_after = 2;
    assert_rc(store_read_range(r, NULL, 0, NULL, 0, 0, collect_kv, &c, NULL),
              0);
    assert_int_equal(c.n, 2);

    /* A prefix matching nothing. */
    memset(&c, 0, sizeof c);
    assert_rc(store_read_range(r, S("/zz"), NULL, 0, 0, collect_kv, &c, NULL),
              0);
    assert_int_equal(c.n, 0);
    store_read_end(r);
}

static int txn(struct store *s,
               const struct cd_compare *cmps,
               size_t ncmp,
               const struct cd_op *then_ops,
               size_t nthen,
               const struct cd_op *else_ops,
               size_t nelse,
               struct cd_result *res)
{
    struct cd_op op = {.type = CD_OP_TXN,
                       .compares = cmps,
                       .n_compares = ncmp,
                       .then_ops = then_ops,
                       .n_then = nthen,
                       .else_ops = else_ops,
                       .n_else = nelse};
    struct cd_batch b = {.time_ms = 1, .ops = &op, .n_ops = 1};
    int rc = store_apply(s, &b, 0, res);
    return rc != 0 ? rc : res->status;
}

static void test_txn(void **state)
{
    struct fx *f = *state;
    struct cd_result res;
    char v[32] = "";
    assert_rc(store_put(f->s, S("/k"), S("b"), NULL), 0); /* rev 1, ver 1 */

    struct cd_op put_then[] = {
        {.type = CD_OP_PUT, .key = {S("/k")}, .value = {S("then")}},
        {.type = CD_OP_PUT, .key = {S("/k2")}, .value = {S("then")}},
    };
    struct cd_op put_else[] = {
        {.type = CD_OP_PUT, .key = {S("/k")}, .value = {S("else")}},
    };

    struct
    {
        struct cd_compare c;
        int holds;
    } cases[] = {
        {{{S("/k")}, CD_CMP_VALUE, CD_CMP_EQUAL, {S("b")}, 0}, 1},
        {{{S("/k")}, CD_CMP_VALUE, CD_CMP_EQUAL, {S("bb")}, 0}, 0},
        {{{S("/k")}, CD_CMP_VALUE, CD_CMP_LESS, {S("c")}, 0}, 1},
        {{{S("/k")}, CD_CMP_VALUE, CD_CMP_GREATER, {S("a")}, 0}, 1},
        {{{S("/k")}, CD_CMP_VALUE, CD_CMP_GREATER, {S("b")}, 0}, 0},
        {{{S("/k")}, CD_CMP_VALUE, CD_CMP_NOT_EQUAL, {S("x")}, 0}, 1},
        {{{S("/absent")}, CD_CMP_VALUE, CD_CMP_NOT_EQUAL, {S("x")}, 0}, 0},
        {{{S("/k")}, CD_CMP_VERSION, CD_CMP_EQUAL, {NULL, 0}, 1}, 1},
        {{{S("/k")}, CD_CMP_CREATE_REV, CD_CMP_EQUAL, {NULL, 0}, 1}, 1},
        {{{S("/k")}, CD_CMP_MOD_REV, CD_CMP_LESS, {NULL, 0}, 1}, 0},
        {{{S("/k")}, CD_CMP_EXISTS, CD_CMP_EQUAL, {NULL, 0}, 1}, 1},
        {{{S("/absent")}, CD_CMP_EXISTS, CD_CMP_EQUAL, {NULL, 0}, 0}, 1},
        {{{S("/absent")}, CD_CMP_VERSION, CD_CMP_EQUAL, {NULL, 0}, 0}, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        /* Compares only, no branches: nothing changes either way. */
        assert_rc(txn(f->s, &cases[i].c, 1, NULL, 0, NULL, 0, &res), 0);
        if (res.succeeded != cases[i].holds) {
            fail_msg("compare case %zu: expected %d, got %d", i, cases[i].holds,
                     res.succeeded);
        }
    }
    assert_int_equal(meta(f->s).revision, 1);

    /* Then branch: both puts share one revision. */
    struct cd_compare ok = {{S("/k")}, CD_CMP_VALUE, CD_CMP_EQUAL, {S("b")}, 0};
    assert_rc(txn(f->s, &ok, 1, put_then, 2, put_else, 1, &res), 0);
    assert_int_equal(res.succeeded, 1);
    assert_int_equal(res.revision, 2);
    assert_rc(get(f->s, "/k", v, sizeof v, NULL), 0);
    assert_string_equal(v, "then");
    assert_rc(get(f->s, "/k2", v, sizeof v, NULL), 0);

    /* Else branch. */
    assert_rc(txn(f->s, &ok, 1, put_then, 2, put_else, 1, &res), 0);
    assert_int_equal(res.succeeded, 0);
    assert_int_equal(res.revision, 3);
    assert_rc(get(f->s, "/k", v, sizeof v, NULL), 0);
    assert_string_equal(v, "else");

    /* All or nothing: an invalid op in a branch fails the whole txn. */
    struct cd_op bad_then[] = {
        {.type = CD_OP_PUT, .key = {S("/k3")}, .value = {S("x")}},
        {.type = CD_OP_PUT, .key = {"", 0}, .value = {S("x")}},
    };
    assert_rc(txn(f->s, NULL, 0, bad_then, 2, NULL, 0, &res), CD_EBADKEY);
    assert_rc(get(f->s, "/k3", NULL, 0, NULL), CD_ENOTFOUND);
    assert_int_equal(meta(f->s).revision, 3);

    /* Ops not allowed in a branch, and bad compares. */
    struct cd_op nested[] = {{.type = CD_OP_TXN}};
    assert_rc(txn(f->s, NULL, 0, nested, 1, NULL, 0, &res), CD_EBADOP);
    struct cd_compare badcmp = {{S("/k")}, 99, CD_CMP_EQUAL, {NULL, 0}, 0};
    assert_rc(txn(f->s, &badcmp, 1, NULL, 0, NULL, 0, &res), CD_EBADOP);
    struct cd_compare nokey = {{"", 0}, CD_CMP_EXISTS, CD_CMP_EQUAL, {0}, 0};
    assert_rc(txn(f->s, &nokey, 1, NULL, 0, NULL, 0, &res), CD_EBADKEY);

    /* Delete in a txn, counted. */
    struct cd_op del[] = {{.type = CD_OP_DELETE_PREFIX, .key = {S("/k")}}};
    assert_rc(txn(f->s, NULL, 0, del, 1, NULL, 0, &res), 0);
    assert_int_equal(res.n_deleted, 2);
    check_ok(f->s);
}

struct changes
{
    uint64_t rev[64];
    uint32_t sub[64];
    int type[64];
    int n;
};

static int collect_change(void *arg, const struct store_change *c)
{
    struct changes *cs = arg;
    cs->rev[cs->n] = c->revision;
    cs->sub[cs->n] = c->sub;
    cs->type[cs->n] = c->type;
    cs->n++;
    return 0;
}

static void test_changes_and_compact(void **state)
{
    struct fx *f = *state;
    struct store_read *r;
    struct changes cs;
    uint64_t next;

    assert_rc(store_put(f->s, S("/x/1"), S("a"), NULL), 0);  /* 1 */
    assert_rc(store_put(f->s, S("/x/2"), S("a"), NULL), 0);  /* 2 */
    assert_rc(store_put(f->s, S("/x/3"), S("a"), NULL), 0);  /* 3 */
    assert_rc(store_delete_prefix(f->s, S("/x/"), NULL), 0); /* 4.0-2 */
    assert_rc(store_put(f->s, S("/y"), S("a"), NULL), 0);    /* 5 */

    assert_rc(store_read_begin(f->s, &r), 0);
    memset(&cs, 0, sizeof cs);
    assert_rc(store_read_changes(r, 0, 0, collect_change, &cs, &next), 0);
    assert_int_equal(cs.n, 7);
    assert_int_equal(next, 5);
    assert_int_equal(cs.rev[3], 4);
    assert_int_equal(cs.sub[5], 2);
    assert_int_equal(cs.type[4], STORE_CHANGE_DELETE);

    /* A limit never splits a revision. */
    memset(&cs, 0, sizeof cs);
    assert_rc(store_read_changes(r, 2, 2, collect_change, &cs, &next), 0);
    assert_int_equal(cs.n, 4); /* rev 3, then all three of rev 4 */
    assert_int_equal(next, 4);
    memset(&cs, 0, sizeof cs);
    assert_rc(store_read_changes(r, next, 2, collect_change, &cs, &next), 0);
    assert_int_equal(cs.n, 1);
    assert_int_equal(next, 5);

    /* Caught up: nothing, next stays.  Beyond the revision: an error. */
    memset(&cs, 0, sizeof cs);
    assert_rc(store_read_changes(r, 5, 0, collect_change, &cs, &next), 0);
    assert_int_equal(cs.n, 0);
    assert_int_equal(next, 5);
    assert_rc(store_read_changes(r, 6, 0, collect_change, &cs, &next),
              CD_EBADREV);
    store_read_end(r);

    /* Compaction. */
    assert_rc(store_compact(f->s, 0), CD_EBADREV);
    assert_rc(store_compact(f->s, 6), CD_EBADREV);
    assert_rc(store_compact(f->s, 3), 0);
    assert_rc(store_compact(f->s, 3), CD_ECOMPACTED);
    assert_rc(store_compact(f->s, 2), CD_ECOMPACTED);
    assert_int_equal(meta(f->s).compact_rev, 3);
    assert_int_equal(meta(f->s).revision, 5); /* compaction takes no rev */

    assert_rc(store_read_begin(f->s, &r), 0);
    memset(&cs, 0, sizeof cs);
    assert_rc(store_read_changes(r, 2, 0, collect_change, &cs, &next),
              CD_ECOMPACTED);
    assert_int_equal(cs.n, 0);
    assert_rc(store_read_changes(r, 3, 0, collect_change, &cs, &next), 0);
    assert_int_equal(cs.n, 4);
    store_read_end(r);
    check_ok(f->s);
}

/* Changes copied out of a read view (a child receives them on the wire). */
struct copied
{
    struct store_change ch[64];
    char buf[64][2][32];
    size_t n;
};

static int copy_change(void *arg, const struct store_change *c)
{
    struct copied *cp = arg;
    assert_true(cp->n < 64);
    struct store_change *d = &cp->ch[cp->n];
    *d = *c;
    assert_true(c->kv.key_len < 32 && c->kv.value_len < 32);
    memcpy(cp->buf[cp->n][0], c->kv.key, c->kv.key_len);
    memcpy(cp->buf[cp->n][1], c->kv.value, c->kv.value_len);
    d->kv.key = cp->buf[cp->n][0];
    d->kv.value = cp->buf[cp->n][1];
    cp->n++;
    return 0;
}

/* Every key, value and revision triple of a store, as one string. */
static int dump_kv(void *arg, const struct store_kv *kv)
{
    char *out = arg;
    size_t len = strlen(out);
    snprintf(out + len, 2048 - len, "%.*s=%.*s@%llu/%llu/%llu;",
             (int)kv->key_len, (const char *)kv->key, (int)kv->value_len,
             (const char *)kv->value, (unsigned long long)kv->create_rev,
             (unsigned long long)kv->mod_rev, (unsigned long long)kv->version);
    return 0;
}

static void dump(struct store *s, char *out)
{
    struct store_read *r;
    out[0] = '\0';
    assert_rc(store_read_begin(s, &r), 0);
    assert_rc(store_read_range(r, NULL, 0, NULL, 0, 0, dump_kv, out, NULL), 0);
    store_read_end(r);
}

static void test_apply_changes(void **state)
{
    struct fx *f = *state;
    struct store *cache;
    struct store_config cfg;
    char path[128], want[2048], got[2048];
    snprintf(path, sizeof path, "%s/cache.mdb", f->dir);
    store_config_init(&cfg, path);
    cfg.durability = STORE_DURABLE_NONE;
    assert_rc(store_open(&cfg, &cache), 0);

    assert_rc(store_put(f->s, S("/a"), S("1"), NULL), 0);    /* 1 */
    assert_rc(store_put(f->s, S("/b/1"), S("2"), NULL), 0);  /* 2 */
    assert_rc(store_put(f->s, S("/b/2"), S("3"), NULL), 0);  /* 3 */
    assert_rc(store_put(f->s, S("/a"), S("4"), NULL), 0);    /* 4 */
    assert_rc(store_delete_prefix(f->s, S("/b/"), NULL), 0); /* 5.0-1 */
    assert_rc(store_put(f->s, S("/b/1"), S("5"), NULL), 0);  /* 6 */

    /* Follow in pages of two changes, as a child does. */
    uint64_t since = 0, next = 0;
    int pages = 0;
    do {
        struct store_read *r;
        struct copied cp = {.n = 0};
        assert_rc(store_read_begin(f->s, &r), 0);
        assert_rc(store_read_changes(r, since, 2, copy_change, &cp, &next), 0);
        store_read_end(r);
        if (next == since) {
            break;
        }
        assert_rc(store_apply_changes(cache, cp.ch, cp.n, next, 0, 1234), 0);
        /* The same batch again (a reconnect replays it): nothing moves. */
        assert_rc(store_apply_changes(cache, cp.ch, cp.n, next, 0, 1234),
                  -EALREADY);
        assert_int_equal(meta(cache).revision, next);
        since = next;
        pages++;
    } while (pages < 10);
    assert_int_equal(since, 6);
    dump(f->s, want);
    dump(cache, got);
    assert_string_equal(got, want);
    assert_string_equal(got, "/a=4@1/4/2;/b/1=5@6/6/1;");
    check_ok(cache);

    /* A heartbeat (no change, the same revision): nothing moves. */
    assert_rc(store_apply_changes(cache, NULL, 0, 6, 0, 0), -EALREADY);
    assert_int_equal(meta(cache).updated_ms, 1234);

    /* Out of order or past the batch revision: refused, nothing written. */
    struct store_change bad[2] = {
        {.revision = 7,
         .sub = 0,
         .type = STORE_CHANGE_PUT,
         .kv = {.key = "/z",
                .key_len = 2,
                .value = "v",
                .value_len = 1,
                .create_rev = 7,
                .mod_rev = 7,
                .version = 1}},
        {.revision = 6,
         .sub = 0,
         .type = STORE_CHANGE_PUT,
         .kv = {.key = "/y",
                .key_len = 2,
                .value = "v",
                .value_len = 1,
                .create_rev = 6,
                .mod_rev = 6,
                .version = 1}},
    };
    assert_rc(store_apply_changes(cache, bad, 2, 7, 0, 0), CD_EBADREV);
    assert_rc(store_apply_changes(cache, bad, 1, 6, 0, 0), CD_EBADREV);
    bad[0].kv.key_len = 0;
    assert_rc(store_apply_changes(cache, bad, 1, 7, 0, 0), CD_EBADKEY);
    bad[0].kv.key_len = 2;
    bad[0].type = 7;
    assert_rc(store_apply_changes(cache, bad, 1, 7, 0, 0), CD_EBADOP);
    assert_int_equal(meta(cache).revision, 6);
    dump(cache, got);
    assert_string_equal(got, want);

    /* The parents' compaction is mirrored with the batch that reports it. */
    bad[0].type = STORE_CHANGE_PUT;
    assert_rc(store_apply_changes(cache, bad, 1, 7, 4, 0), 0);
    assert_int_equal(meta(cache).compact_rev, 4);
    struct store_read *r;
    struct copied cp = {.n = 0};
    assert_rc(store_read_begin(cache, &r), 0);
    assert_rc(store_read_changes(r, 3, 0, copy_change, &cp, &next),
              CD_ECOMPACTED);
    assert_rc(store_read_changes(r, 4, 0, copy_change, &cp, &next), 0);
    assert_int_equal(cp.n, 4); /* 5.0, 5.1, 6, 7 */
    assert_int_equal(cp.ch[3].revision, 7);
    store_read_end(r);
    check_ok(cache);
    store_close(cache);
}

static void test_apply_index_and_batch(void **state)
{
    struct fx *f = *state;
    struct cd_result res[4];
    struct cd_op ops[4] = {
        {.type = CD_OP_PUT, .key = {S("/1")}, .value = {S("a")}},
        {.type = CD_OP_PUT, .key = {"", 0}, .value = {S("a")}}, /* fails */
        {.type = 42},                                           /* fails */
        {.type = CD_OP_PUT, .key = {S("/2")}, .value = {S("a")}},
    };
    struct cd_batch b = {.time_ms = 1700000000000ULL, .ops = ops, .n_ops = 4};

    assert_rc(store_apply(f->s, &b, 10, res), 0);
    assert_rc(res[0].status, 0);
    assert_rc(res[1].status, CD_EBADKEY);
    assert_rc(res[2].status, CD_EBADOP);
    assert_rc(res[3].status, 0);
    assert_int_equal(res[0].revision, 1);
    assert_int_equal(res[3].revision, 2);
    struct store_meta m = meta(f->s);
    assert_int_equal(m.applied_index, 10);
    assert_int_equal(m.updated_ms, 1700000000000ULL);

    /* Replays at or below the applied index are skipped. */
    assert_rc(store_apply(f->s, &b, 10, res), -EALREADY);
    assert_rc(store_apply(f->s, &b, 3, res), -EALREADY);
    assert_int_equal(meta(f->s).revision, 2);

    /* An empty batch (a Raft barrier) still records its index. */
    struct cd_batch empty = {.time_ms = 5, .ops = NULL, .n_ops = 0};
    assert_rc(store_apply(f->s, &empty, 11, NULL), 0);
    assert_int_equal(meta(f->s).applied_index, 11);
    assert_rc(store_apply(f->s, NULL, 12, NULL), -EINVAL);
    check_ok(f->s);
}

/* What another thread sees of f->s while this one holds a group. */
struct other_view
{
    struct store *s;
    int write; /* also try to apply (index 99) and commit */
    struct store_meta m;
    int read_rc, apply_rc, commit_rc;
};

static void *other_thread(void *arg)
{
    struct other_view *v = arg;
    struct store_read *r;
    struct cd_op op = {.type = CD_OP_PUT, .key = {S("/o")}, .value = {S("o")}};
    struct cd_result res;
    struct cd_batch b = {.time_ms = 1, .ops = &op, .n_ops = 1};
    v->read_rc = store_read_begin(v->s, &r);
    if (v->read_rc == 0) {
        v->read_rc = store_read_meta(r, &v->m);
        store_read_end(r);
    }
    if (v->write) {
        v->apply_rc = store_apply_group(v->s, &b, 99, &res);
        v->commit_rc = store_group_commit(v->s);
    }
    return NULL;
}

static struct other_view seen_by_other_thread(struct store *s, int write)
{
    struct other_view v = {.s = s, .write = write};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, other_thread, &v), 0);
    pthread_join(t, NULL);
    return v;
}

static void test_group_commit(void **state)
{
    struct fx *f = *state;
    struct cd_result res[2];
    struct cd_op ops[2] = {
        {.type = CD_OP_PUT, .key = {S("/a")}, .value = {S("1")}},
        {.type = CD_OP_PUT, .key = {S("/b")}, .value = {S("2")}},
    };
    struct cd_batch b = {.time_ms = 1700000000000ULL, .ops = ops, .n_ops = 2};

    assert_rc(store_group_commit(f->s), 0); /* none open: nothing to do */
    assert_int_equal(store_group_entries(f->s), 0);
    assert_rc(store_apply_group(f->s, &b, 0, res), -EINVAL);
    assert_rc(store_apply_group(f->s, &b, 10, res), 0);
    assert_int_equal(res[0].revision, 1);
    assert_int_equal(res[1].revision, 2);
    assert_rc(store_apply_group(f->s, &b, 11, res), 0);
    assert_int_equal(res[1].revision, 4);
    /* A replayed index inside the group is skipped and keeps the group. */
    assert_rc(store_apply_group(f->s, &b, 11, res), -EALREADY);
    assert_int_equal(store_group_entries(f->s), 2);

    /* Other threads see the state before the group, and cannot use it. */
    struct other_view v = seen_by_other_thread(f->s, 1);
    assert_rc(v.read_rc, 0);
    assert_int_equal(v.m.applied_index, 0);
    assert_int_equal(v.m.revision, 0);
    assert_rc(v.apply_rc, -EBUSY);
    assert_rc(v.commit_rc, -EBUSY);

    /* A read view on the owner's thread commits the group first. */
    struct store_meta m = meta(f->s);
    assert_int_equal(m.applied_index, 11);
    assert_int_equal(m.revision, 4);
    assert_int_equal(store_group_entries(f->s), 0);
    v = seen_by_other_thread(f->s, 0);
    assert_int_equal(v.m.applied_index, 11);

    /* A local write on the owner's thread commits the group first too
     * (instead of waiting for the writer lock the group holds). */
    assert_rc(store_apply_group(f->s, &b, 12, res), 0);
    assert_rc(store_put(f->s, S("/local"), S("x"), NULL), 0);
    assert_int_equal(meta(f->s).revision, 7);
    assert_int_equal(meta(f->s).applied_index, 12);

    /* An explicit commit, then another thread's group once it is free. */
    assert_rc(store_apply_group(f->s, &b, 13, res), 0);
    assert_rc(store_group_commit(f->s), 0);
    v = seen_by_other_thread(f->s, 1);
    assert_int_equal(v.m.applied_index, 13);
    assert_int_equal(v.m.revision, 9);
    assert_rc(v.apply_rc, 0);
    assert_rc(v.commit_rc, 0);
    assert_int_equal(meta(f->s).applied_index, 99);
    check_ok(f->s);
}

/*
 * A group holds the same state as the same entries applied one by one:
 * compare two stores fed the same entries, one with store_apply, one in
 * groups of varied sizes.
 */
static void test_group_same_as_single(void **state)
{
    struct fx *f = *state;
    struct store_config cfg;
    struct store *one;
    char path[128];
    snprintf(path, sizeof path, "%s/one.mdb", f->dir);
    store_config_init(&cfg, path);
    cfg.durability = STORE_DURABLE_NONE;
    assert_rc(store_open(&cfg, &one), 0);

    uint64_t index = 1;
    for (int e = 0; e < 60; e++, index++) {
        char key[3][16], val[3][16];
        struct cd_op ops[3];
        struct cd_result r1[3], r2[3];
        for (int i = 0; i < 3; i++) {
            snprintf(key[i], sizeof key[i], "/k/%d", (e * 7 + i * 13) % 20);
            snprintf(val[i], sizeof val[i], "v%d.%d", e, i);
            ops[i] = (struct cd_op){
                .type = CD_OP_PUT, .key = {S(key[i])}, .value = {S(val[i])}};
        }
        if (e % 5 == 4) {
            ops[1] = (struct cd_op){.type = CD_OP_DELETE, .key = {S(key[0])}};
        }
        if (e % 11 == 10) {
            ops[2] =
                (struct cd_op){.type = CD_OP_DELETE_PREFIX, .key = {S("/k/1")}};
        }
        struct cd_batch b = {
            .time_ms = 1000 + (uint64_t)e, .ops = ops, .n_ops = 3};
        assert_rc(store_apply(one, &b, index, r1), 0);
        assert_rc(store_apply_group(f->s, &b, index, r2), 0);
        for (int i = 0; i < 3; i++) {
            assert_int_equal(r1[i].revision, r2[i].revision);
            assert_int_equal(r1[i].n_deleted, r2[i].n_deleted);
        }
        if (e % 7 == 6) {
            assert_rc(store_group_commit(f->s), 0);
        }
    }
    assert_rc(store_group_commit(f->s), 0);
    struct store_meta m1 = meta(one), m2 = meta(f->s);
    assert_int_equal(m1.revision, m2.revision);
    assert_int_equal(m1.applied_index, m2.applied_index);
    assert_int_equal(m1.updated_ms, m2.updated_ms);
    for (int k = 0; k < 20; k++) {
        char key[16], v1[16] = "", v2[16] = "";
        struct store_kv kv1 = {0}, kv2 = {0};
        snprintf(key, sizeof key, "/k/%d", k);
        int rc1 = get(one, key, v1, sizeof v1, &kv1);
        assert_rc(get(f->s, key, v2, sizeof v2, &kv2), rc1);
        assert_string_equal(v1, v2);
        assert_int_equal(kv1.mod_rev, kv2.mod_rev);
        assert_int_equal(kv1.create_rev, kv2.create_rev);
        assert_int_equal(kv1.version, kv2.version);
    }
    check_ok(one);
    check_ok(f->s);
    store_close(one);
}

/* An entry that fails in a group undoes the whole group. */
static void test_group_abort(void **state)
{
    struct fx *f = *state;
    struct store_config cfg;
    struct store *s;
    char path[128];
    static char val[4096];
    snprintf(path, sizeof path, "%s/small.mdb", f->dir);
    store_config_init(&cfg, path);
    cfg.map_size = (size_t)1 << 20;
    cfg.durability = STORE_DURABLE_NONE;
    assert_rc(store_open(&cfg, &s), 0);
    memset(val, 'v', sizeof val);

    struct cd_op small = {
        .type = CD_OP_PUT, .key = {S("/s")}, .value = {S("x")}};
    struct cd_result res[400];
    struct cd_batch b1 = {.time_ms = 1, .ops = &small, .n_ops = 1};
    assert_rc(store_apply_group(s, &b1, 1, res), 0);
    assert_rc(store_group_commit(s), 0);
    assert_rc(store_apply_group(s, &b1, 2, res), 0);
    assert_rc(store_apply_group(s, &b1, 3, res), 0);

    struct cd_op huge[400];
    char keys[400][16];
    for (int i = 0; i < 400; i++) {
        snprintf(keys[i], sizeof keys[i], "/h/%03d", i);
        huge[i] = (struct cd_op){
            .type = CD_OP_PUT, .key = {S(keys[i])}, .value = {val, sizeof val}};
    }
    struct cd_batch b2 = {.time_ms = 2, .ops = huge, .n_ops = 400};
    assert_rc(store_apply_group(s, &b2, 4, res), CD_EMAPFULL);
    assert_int_equal(store_group_entries(s), 0);
    /* Entries 2 and 3 went with the group: the store is at entry 1. */
    struct store_meta m = meta(s);
    assert_int_equal(m.applied_index, 1);
    assert_int_equal(m.revision, 1);
    check_ok(s);
    /* The store takes the lost entries again. */
    assert_rc(store_apply_group(s, &b1, 2, res), 0);
    assert_rc(store_group_commit(s), 0);
    assert_int_equal(meta(s).applied_index, 2);
    store_close(s);
}

static void test_dedup(void **state)
{
    struct fx *f = *state;
    struct cd_result res[3];
    struct cd_op op = {.type = CD_OP_PUT,
                       .client_id = 77,
                       .seq = 100,
                       .key = {S("/d")},
                       .value = {S("v")}};
    struct cd_batch b = {.time_ms = 1, .ops = &op, .n_ops = 1};

    assert_rc(store_apply(f->s, &b, 0, res), 0);
    assert_rc(res[0].status, 0);
    /* The same request again: not applied. */
    assert_rc(store_apply(f->s, &b, 0, res), 0);
    assert_rc(res[0].status, CD_EDUPLICATE);
    assert_int_equal(meta(f->s).revision, 1);

    /* Out of order inside the window is fine, once. */
    op.seq = 90;
    assert_rc(store_apply(f->s, &b, 0, res), 0);
    assert_rc(res[0].status, 0);
    assert_rc(store_apply(f->s, &b, 0, res), 0);
    assert_rc(res[0].status, CD_EDUPLICATE);
    /* Far below the window: cannot tell, refused. */
    op.seq = 20;
    assert_rc(store_apply(f->s, &b, 0, res), 0);
    assert_rc(res[0].status, CD_ETOOOLD);
    /* A jump moves the window. */
    op.seq = 1000;
    assert_rc(store_apply(f->s, &b, 0, res), 0);
    assert_rc(res[0].status, 0);
    op.seq = 100;
    assert_rc(store_apply(f->s, &b, 0, res), 0);
    assert_rc(res[0].status, CD_ETOOOLD);
    /* seq 0 with a client id is malformed. */
    op.seq = 0;
    assert_rc(store_apply(f->s, &b, 0, res), 0);
    assert_rc(res[0].status, CD_EBADOP);
    /* Another client is independent; a failed op does not consume its id. */
    struct cd_op two[2] = {
        {.type = CD_OP_PUT, .client_id = 78, .seq = 1, .key = {"", 0}},
        {.type = CD_OP_PUT, .client_id = 78, .seq = 1, .key = {S("/e")}},
    };
    struct cd_batch b2 = {.time_ms = 1, .ops = two, .n_ops = 2};
    assert_rc(store_apply(f->s, &b2, 0, res), 0);
    assert_rc(res[0].status, CD_EBADKEY);
    assert_rc(res[1].status, 0);
    assert_int_equal(meta(f->s).revision, 4);
    check_ok(f->s);
}

struct logs
{
    uint64_t seq[16];
    char rec[16][16];
    int n;
};

static int collect_log(void *arg, const struct store_log *l)
{
    struct logs *ls = arg;
    ls->seq[ls->n] = l->seq;
    snprintf(ls->rec[ls->n], sizeof ls->rec[0], "%.*s", (int)l->record_len,
             (const char *)l->record);
    ls->n++;
    return 0;
}

static void test_logs(void **state)
{
    struct fx *f = *state;
    struct cd_result res[4];
    struct cd_op ops[4] = {
        {.type = CD_OP_LOG_APPEND,
         .child_id = 5,
         .log_seq = 1,
         .log_time_ms = 10,
         .value = {S("one")}},
        {.type = CD_OP_LOG_APPEND,
         .child_id = 5,
         .log_seq = 2,
         .log_time_ms = 11,
         .value = {S("two")}},
        {.type = CD_OP_LOG_APPEND,
         .child_id = 6,
         .log_seq = 1,
         .log_time_ms = 12,
         .value = {S("other")}},
        {.type = CD_OP_LOG_APPEND, .child_id = 0, .log_seq = 1},
    };
    struct cd_batch b = {.time_ms = 1, .ops = ops, .n_ops = 4};
    assert_rc(store_apply(f->s, &b, 1, res), 0);
    assert_rc(res[0].status, 0);
    assert_rc(res[3].status, CD_EBADOP);
    /* Re-upload of the same records: duplicates, nothing doubled. */
    assert_rc(store_apply(f->s, &b, 2, res), 0);
    assert_rc(res[0].status, CD_EDUPLICATE);
    assert_rc(res[1].status, CD_EDUPLICATE);
    assert_int_equal(meta(f->s).revision, 0); /* logs are not kv */

    struct store_read *r;
    struct logs ls;
    memset(&ls, 0, sizeof ls);
    assert_rc(store_read_begin(f->s, &r), 0);
    assert_rc(store_read_logs(r, 5, 0, 0, collect_log, &ls), 0);
    assert_int_equal(ls.n, 2);
    assert_string_equal(ls.rec[1], "two");
    memset(&ls, 0, sizeof ls);
    assert_rc(store_read_logs(r, 5, 2, 0, collect_log, &ls), 0);
    assert_int_equal(ls.n, 1);
    assert_int_equal(ls.seq[0], 2);
    store_read_end(r);
    check_ok(f->s);
}

static void test_map_full(void **state)
{
    struct fx *f = *state;
    struct store_config cfg;
    struct store *s;
    char path[128];
    char val[4096];
    char key[32];
    int rc = 0;
    int i;

    snprintf(path, sizeof path, "%s/small.mdb", f->dir);
    store_config_init(&cfg, path);
    cfg.map_size = (size_t)1 << 20;
    cfg.durability = STORE_DURABLE_NONE;
    assert_rc(store_open(&cfg, &s), 0);
    memset(val, 'v', sizeof val);
    for (i = 0; i < 10000; i++) {
        snprintf(key, sizeof key, "/fill/%05d", i);
        rc = store_put(s, S(key), val, sizeof val, NULL);
        if (rc != 0) {
            break;
        }
    }
    assert_rc(rc, CD_EMAPFULL);
    assert_true(i > 10);
    /* The store is intact and holds every acknowledged put. */
    check_ok(s);
    assert_int_equal(meta(s).revision, (uint64_t)i);
    snprintf(key, sizeof key, "/fill/%05d", i - 1);
    assert_rc(get(s, key, NULL, 0, NULL), 0);

    /* In a batch, the op that overflows fails alone; small ones pass. */
    struct cd_op ops[2] = {
        {.type = CD_OP_PUT, .key = {S("/small")}, .value = {S("x")}},
        {.type = CD_OP_PUT, .key = {S("/huge")}, .value = {val, sizeof val}},
    };
    struct cd_op many[40];
    for (int j = 0; j < 40; j++) {
        many[j] = ops[1];
    }
    many[0] = ops[0];
    struct cd_result res[40];
    struct cd_batch b = {.time_ms = 1, .ops = many, .n_ops = 40};
    rc = store_apply(s, &b, 0, res);
    if (rc == 0) {
        assert_rc(res[39].status, CD_EMAPFULL);
    } else {
        /* Not even the index and meta fit: nothing applied at all. */
        assert_rc(rc, CD_EMAPFULL);
    }
    check_ok(s);

    /* A replicated entry that does not fit fails as a whole: replicas with
     * other file layouts must not end up applying a different subset. */
    uint64_t before = meta(s).revision;
    rc = store_apply(s, &b, 1000, res);
    assert_rc(rc, CD_EMAPFULL);
    assert_int_equal(meta(s).revision, before);
    assert_int_equal(meta(s).applied_index, 0);
    check_ok(s);

    /* Reopen: still good. */
    store_close(s);
    assert_rc(store_open(&cfg, &s), 0);
    check_ok(s);
    store_close(s);
}

/*
 * Run fn in a child process and return its exit status.  LMDB forbids one
 * process to open the same environment twice, and the readers it serves
 * (the child's local programs) are other processes anyway.
 */
static int in_child(void (*fn)(struct fx *), struct fx *f)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        fn(f);
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

#define child_check(cond, code)                                               \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "child: %s failed (line %d)\n", #cond, __LINE__); \
            _exit(code);                                                      \
        }                                                                     \
    } while (0)

static void read_only_child(struct fx *f)
{
    struct store_config cfg;
    struct store *ro;
    char v[8] = "";
    store_config_init(&cfg, f->path);
    cfg.read_only = 1;
    child_check(store_open(&cfg, &ro) == 0, 2);
    child_check(store_put(ro, S("/r"), S("w"), NULL) == -EROFS, 3);
    child_check(get(ro, "/r", v, sizeof v, NULL) == 0, 4);
    child_check(strcmp(v, "v") == 0, 5);
    store_close(ro);
}

static void read_only_child2(struct fx *f)
{
    struct store_config cfg;
    struct store *ro;
    char v[8] = "";
    store_config_init(&cfg, f->path);
    cfg.read_only = 1;
    child_check(store_open(&cfg, &ro) == 0, 2);
    child_check(get(ro, "/r", v, sizeof v, NULL) == 0, 4);
    child_check(strcmp(v, "w") == 0, 5);
    store_close(ro);
}

static void test_read_only(void **state)
{
    struct fx *f = *state;
    assert_rc(store_put(f->s, S("/r"), S("v"), NULL), 0);
    assert_int_equal(in_child(read_only_child, f), 0);
    /* A write by the writer is seen by the reader's next open view. */
    assert_rc(store_put(f->s, S("/r"), S("w"), NULL), 0);
    assert_int_equal(in_child(read_only_child2, f), 0);
}

/* Open the raw LMDB file behind the store's back to damage it. */
static void raw_put(const char *path,
                    const char *db,
                    const void *k,
                    size_t klen,
                    const void *v,
                    size_t vlen)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 8);
    mdb_env_set_mapsize(env, (size_t)1 << 30);
    assert_int_equal(mdb_env_open(env, path, MDB_NOSUBDIR, 0644), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, db, 0, &dbi), 0);
    MDB_val kk = {klen, (void *)(uintptr_t)k};
    MDB_val vv = {vlen, (void *)(uintptr_t)v};
    if (v == NULL) {
        assert_int_equal(mdb_del(txn, dbi, &kk, NULL), 0);
    } else {
        assert_int_equal(mdb_put(txn, dbi, &kk, &vv, 0), 0);
    }
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

static void test_check_detects_corruption(void **state)
{
    struct fx *f = *state;
    char why[256];
    assert_rc(store_put(f->s, S("/c1"), S("v"), NULL), 0);
    assert_rc(store_put(f->s, S("/c2"), S("v"), NULL), 0);
    check_ok(f->s);

    /* A kv record that does not decode. */
    raw_put(f->path, "kv", S("/c1"), "\x01xx", 3);
    assert_rc(store_check(f->s, why, sizeof why), CD_ECORRUPT);
    assert_non_null(strstr(why, "kv"));
    {
        struct store_read *r;
        struct store_kv kv;
        assert_rc(store_read_begin(f->s, &r), 0);
        assert_rc(store_read_get(r, S("/c1"), &kv), CD_ECORRUPT);
        store_read_end(r);
    }
    /* Restore it properly, then drop a history record. */
    assert_rc(store_put(f->s, S("/c1"), S("v"), NULL), CD_ECORRUPT);
    raw_put(f->path, "kv", S("/c1"), NULL, 0);
    uint8_t ck[12] = {0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0};
    raw_put(f->path, "changes", ck, sizeof ck, NULL, 0);
    assert_rc(store_check(f->s, why, sizeof why), CD_ECORRUPT);

    /* A newer format is refused at open. */
    uint8_t fmt[8] = {99};
    raw_put(f->path, NULL, S("meta/format"), fmt, 8);
    struct store_config cfg;
    struct store *s2;
    store_config_init(&cfg, f->path);
    assert_rc(store_open(&cfg, &s2), CD_EVERSION);
}

/* Snapshot helpers: to a temp file and back. */
static int snap_to_file(struct store *s, const char *file)
{
    int fd = open(file, O_RDWR | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    int rc = store_snapshot(s, fd, NULL);
    close(fd);
    return rc;
}

static int restore_from_file(struct store *s, const char *file)
{
    int fd = open(file, O_RDONLY);
    assert_true(fd >= 0);
    int rc = store_restore(s, fd, NULL);
    close(fd);
    return rc;
}

static void flip_byte(const char *file, off_t off)
{
    int fd = open(file, O_RDWR);
    uint8_t b;
    assert_true(fd >= 0);
    if (off < 0) {
        off += lseek(fd, 0, SEEK_END);
    }
    assert_int_equal(pread(fd, &b, 1, off), 1);
    b ^= 0x5a;
    assert_int_equal(pwrite(fd, &b, 1, off), 1);
    close(fd);
}

static void test_snapshot_restore(void **state)
{
    struct fx *f = *state;
    char snap[128], other[128], v[32];
    struct store_config cfg;
    struct store *t;

    for (int i = 0; i < 500; i++) {
        char key[32];
        snprintf(key, sizeof key, "/s/%03d", i);
        assert_rc(store_put(f->s, S(key), S("value"), NULL), 0);
    }
    assert_rc(store_delete_prefix(f->s, S("/s/1"), NULL), 0);
    assert_rc(store_set_cluster_id(f->s, 0xabcdef), 0);
    assert_int_equal(meta(f->s).epoch, 0); /* none until one is set */
    assert_rc(store_set_epoch(f->s, 0x5eed), 0);
    snprintf(snap, sizeof snap, "%s/snap.bin", f->dir);
    assert_rc(snap_to_file(f->s, snap), 0);

    /* Verify without a store. */
    {
        char tmp[128];
        struct store_snapshot_info info;
        snprintf(tmp, sizeof tmp, "%s/verify.tmp", f->dir);
        int fd = open(snap, O_RDONLY);
        assert_rc(store_snapshot_verify(fd, tmp, &info), 0);
        close(fd);
        assert_int_equal(info.meta.revision, 501);
        assert_int_equal(info.meta.cluster_id, 0xabcdef);
        assert_int_equal(info.meta.epoch, 0x5eed);
        /* 500 keys put, the 100 of /s/1xx deleted. */
        assert_int_equal(info.keys, 400);
        assert_true(info.bytes > 0);
        assert_int_equal(access(tmp, F_OK), -1); /* cleaned up */

        /* The same check through libclusterd (clusterctl snapshot verify). */
        struct clusterd_backup_info b;
        assert_rc(clusterd_backup_verify(snap, f->dir, &b), 0);
        assert_int_equal(b.revision, 501);
        assert_int_equal(b.cluster_id, 0xabcdef);
        assert_int_equal(b.epoch, 0x5eed);
        assert_int_equal(b.keys, 400);
        assert_int_equal(b.bytes, info.bytes);
        assert_int_equal(b.crc32, info.crc32);
        assert_int_equal(b.format, STORE_FORMAT);
        assert_rc(clusterd_backup_verify("/nonexistent/x", f->dir, &b),
                  -ENOENT);
    }

    /* Restore into a different store that has other data. */
    snprintf(other, sizeof other, "%s/other.mdb", f->dir);
    store_config_init(&cfg, other);
    cfg.durability = STORE_DURABLE_NONE;
    assert_rc(store_open(&cfg, &t), 0);
    assert_rc(store_put(t, S("/only-here"), S("x"), NULL), 0);
    assert_rc(restore_from_file(t, snap), 0);
    assert_rc(get(t, "/only-here", NULL, 0, NULL), CD_ENOTFOUND);
    assert_rc(get(t, "/s/250", v, sizeof v, NULL), 0);
    assert_string_equal(v, "value");
    assert_rc(get(t, "/s/150", NULL, 0, NULL), CD_ENOTFOUND);
    assert_int_equal(meta(t).revision, 501);
    assert_int_equal(meta(t).cluster_id, 0xabcdef);
    /* The epoch comes with the snapshot: a child restored from one takes
     * the parents' history. */
    assert_int_equal(meta(t).epoch, 0x5eed);
    check_ok(t);
    /* It goes on from there. */
    uint64_t rev;
    assert_rc(store_put(t, S("/after"), S("x"), &rev), 0);
    assert_int_equal(rev, 502);

    /* Damage: checksum, truncation, garbage.  The store stays intact. */
    char bad[128];
    snprintf(bad, sizeof bad, "%s/bad.bin", f->dir);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "cp %s %s", snap, bad);
    assert_int_equal(system(cmd), 0);
    flip_byte(bad, 4096 + 24 + 100);
    assert_rc(restore_from_file(t, bad), CD_ECHECKSUM);
    assert_rc(clusterd_backup_verify(bad, f->dir, NULL), CD_ECHECKSUM);
    assert_rc(get(t, "/after", NULL, 0, NULL), 0);

    snprintf(cmd, sizeof cmd, "head -c 5000 %s > %s", snap, bad);
    assert_int_equal(system(cmd), 0);
    assert_rc(restore_from_file(t, bad), CD_ETRUNCATED);
    snprintf(cmd, sizeof cmd, "head -c 10 %s > %s", snap, bad);
    assert_int_equal(system(cmd), 0);
    assert_rc(restore_from_file(t, bad), CD_ETRUNCATED);
    snprintf(cmd, sizeof cmd, "echo 'not a snapshot at all, no' > %s", bad);
    assert_int_equal(system(cmd), 0);
    assert_rc(restore_from_file(t, bad), CD_EBADSNAP);
    snprintf(cmd, sizeof cmd, ": > %s", bad);
    assert_int_equal(system(cmd), 0);
    assert_rc(restore_from_file(t, bad), CD_EBADSNAP);
    assert_rc(get(t, "/after", NULL, 0, NULL), 0);
    assert_int_equal(meta(t).revision, 502);
    check_ok(t);
    store_close(t);
}

static void test_snapshot_through_pipe(void **state)
{
    struct fx *f = *state;
    int p[2];
    char other[128];
    struct store_config cfg;
    struct store *t;
    for (int i = 0; i < 2000; i++) {
        char key[32];
        snprintf(key, sizeof key, "/pipe/%04d", i);
        assert_rc(store_put(f->s, S(key), S("some value to fill pages"), NULL),
                  0);
    }
    snprintf(other, sizeof other, "%s/piped.mdb", f->dir);
    store_config_init(&cfg, other);
    cfg.durability = STORE_DURABLE_NONE;
    assert_rc(store_open(&cfg, &t), 0);
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        _exit(store_snapshot(f->s, p[1], NULL) == 0 ? 0 : 1);
    }
    close(p[1]);
    assert_rc(store_restore(t, p[0], NULL), 0);
    close(p[0]);
    int status;
    waitpid(pid, &status, 0);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(meta(t).revision, 2000);
    check_ok(t);
    store_close(t);
}

/* --- libclusterd --------------------------------------------------------- */

static int count_range(void *arg,
                       const char *k,
                       size_t kl,
                       const char *v,
                       size_t vl)
{
    (void)k;
    (void)kl;
    (void)v;
    (void)vl;
    (*(int *)arg)++;
    return 0;
}

static void client_child(struct fx *f)
{
    clusterd_db *db;
    char *val;
    size_t len;
    uint64_t rev;
    const char *p;

    child_check(clusterd_open("/nonexistent/cache.mdb", &db) == -ENOENT, 2);
    child_check(clusterd_open(f->path, &db) == 0, 3);
    child_check(clusterd_get(db, S("/policies/spam"), &val, &len) == 0, 4);
    child_check(len == 2 && strcmp(val, "on") == 0, 5);
    free(val);
    child_check(clusterd_get(db, S("/nope"), &val, &len) == CLUSTERD_ENOTFOUND,
                6);
    int n = 0;
    child_check(clusterd_range(db, S("/policies/"), 0, count_range, &n) == 0,
                7);
    child_check(n == 2, 8);
    child_check(clusterd_revision(db, &rev) == 0 && rev == 2, 9);

    struct clusterd_staleness st;
    child_check(clusterd_staleness(db, &st) == 0, 10);
    child_check(st.revision == 2 && st.contact_ms == 1000, 11);
    child_check(st.age_ms > 1000000, 12); /* contact long ago, in 1970 */

    /* A view is a snapshot: a write made meanwhile is not seen in it.
     * The parent writes when it reads our byte on the pipe. */
    clusterd_view *v;
    child_check(clusterd_view_begin(db, &v) == 0, 13);
    child_check(write(f->sync[1], "w", 1) == 1, 14);
    char b;
    child_check(read(f->sync2[0], &b, 1) == 1, 15);
    child_check(clusterd_view_get(v, S("/policies/spam"), &p, &len) == 0, 16);
    child_check(len == 2 && memcmp(p, "on", 2) == 0, 17);
    clusterd_view_end(v);
    child_check(clusterd_get(db, S("/policies/spam"), &val, &len) == 0, 18);
    child_check(strcmp(val, "off") == 0, 19);
    free(val);
    child_check(
        strcmp(clusterd_strerror(CLUSTERD_ENOTFOUND), "key not found") == 0,
        20);
    clusterd_close(db);
    clusterd_close(NULL);
}

static void test_client_library(void **state)
{
    struct fx *f = *state;
    char b;
    assert_rc(store_put(f->s, S("/policies/spam"), S("on"), NULL), 0);
    assert_rc(store_put(f->s, S("/policies/virus"), S("on"), NULL), 0);
    assert_rc(store_set_contact(f->s, 1000), 0);
    assert_int_equal(pipe(f->sync), 0);
    assert_int_equal(pipe(f->sync2), 0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close(f->sync[0]);
        close(f->sync2[1]);
        client_child(f);
        _exit(0);
    }
    /* Keep only our ends, so a reader that dies gives EOF, not a hang. */
    close(f->sync[1]);
    close(f->sync2[0]);
    if (read(f->sync[0], &b, 1) != 1) {
        int st = 0;
        waitpid(pid, &st, 0);
        fail_msg("reader process died before its view (exit %d)",
                 WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    }
    assert_rc(store_put(f->s, S("/policies/spam"), S("off"), NULL), 0);
    assert_int_equal(write(f->sync2[1], "g", 1), 1);
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fail_msg(
            "client library checks failed in the reader process "
            "(status %d)",
            status);
    }
    close(f->sync[0]);
    close(f->sync2[1]);
}

static void test_error_table(void **state)
{
    (void)state;
    assert_string_equal(cd_errname(CD_EMAPFULL), "CD_EMAPFULL");
    assert_string_equal(cd_strerror(CD_EMAPFULL),
                        "store is full: map size reached");
    assert_string_equal(cd_errname(-ENOSPC), "ENOSPC");
    assert_string_equal(cd_strerror(-ENOENT), "No such file or directory");
    assert_true(cd_err_is_project(CD_ECORRUPT));
    assert_false(cd_err_is_project(-EIO));
    assert_string_equal(cd_errname(12345), "UNKNOWN");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_error_table),
        cmocka_unit_test_setup_teardown(test_put_get_revisions, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_bad_keys_and_values, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_delete_and_prefix, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_range, setup, teardown),
        cmocka_unit_test_setup_teardown(test_txn, setup, teardown),
        cmocka_unit_test_setup_teardown(test_changes_and_compact, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_apply_changes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_apply_index_and_batch, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_same_as_single, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_group_abort, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dedup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_logs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_map_full, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_detects_corruption, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_restore, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_through_pipe, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_client_library, setup, teardown),
    };
    return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
