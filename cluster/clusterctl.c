/*
 * clusterctl.c - clusterctl: the operator's command line for a clusterd
 * cluster, over the API (cluster/client.h).
 *
 *   clusterctl [--endpoints A,B,C] [-o table|json] [--timeout MS]
 *              [--cluster-id HEX] <command> [args]
 *
 * A table of subcommands, each a *_main(argc, argv) with its own --help
 * (as wireguard-tools' wg).  Output goes to stdout, as an aligned table
 * for people or one JSON object per result for programs; errors go to
 * stderr as "clusterctl: <what>: <message> (<code name>)".  The exit
 * status tells scripts what happened without parsing anything; see
 * EXIT_* below and docs/clusterctl.1.md.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cluster/client.h"
#include "lib/err.h"
#include "lib/fdio.h"
#include "storage/clusterd.h"

enum {
    EXIT_OK = 0,
    EXIT_FAIL = 1,        /* the operation failed; message on stderr */
    EXIT_USAGE = 2,       /* bad command line or txn script */
    EXIT_NOTFOUND = 3,    /* get: no such key */
    EXIT_TXNFAILED = 4,   /* txn: the compares failed (else ran) */
    EXIT_UNAVAILABLE = 5, /* no endpoint answered, no leader, timed out */
};

#define DEFAULT_ENDPOINTS "127.0.0.1:7101"
#define STATUS_TIMEOUT_MS 3000u
#define MAX_ATTEMPT_MS 5000u

/* The global options; set once by main() before any subcommand runs. */
static struct
{
    char **endpoints;
    size_t n_endpoints;
    const char *endpoints_csv;
    int json;
    unsigned timeout_ms; /* 0: the client's defaults */
    uint64_t cluster_id;
} g;

/* --- errors and exit codes --------------------------------------------- */

/* The errors that mean "the cluster could not be reached or did not
 * answer in time", as opposed to "it answered: no". */
static int is_unavailable(int rc)
{
    switch (rc) {
        case -ECONNREFUSED:
        case -ECONNRESET:
        case -ETIMEDOUT:
        case -EHOSTUNREACH:
        case -ENETUNREACH:
        case -ENETDOWN:
        case -EPIPE:
        case -ENOTCONN:
        case -EADDRNOTAVAIL:
        case -EAGAIN:
        case CD_ETIMEOUT:
        case CD_ENOTLEADER:
        case CD_ELEADERLOST:
        case CD_ESHUTDOWN:
            return 1;
        default:
            return 0;
    }
}

static int exit_code(int rc)
{
    if (rc == 0) {
        return EXIT_OK;
    }
    if (rc == CD_ENOTFOUND) {
        return EXIT_NOTFOUND;
    }
    if (rc == CD_ETXNFAILED) {
        return EXIT_TXNFAILED;
    }
    return is_unavailable(rc) ? EXIT_UNAVAILABLE : EXIT_FAIL;
}

/*
 * Report rc for what ("put /a/b") and return the exit code.  A second line
 * says what to do when the code alone leaves the operator guessing.
 * is_write: the outcome of a write is unknown after a timeout.
 */
static int fail(const char *what, int rc, int is_write)
{
    fprintf(stderr, "clusterctl: %s: %s (%s)\n", what, cd_strerror(rc),
            cd_errname(rc));
    if (is_write && (rc == CD_ETIMEOUT || rc == CD_ELEADERLOST ||
                     rc == CD_ESHUTDOWN || rc == CD_EMALFORMED)) {
        fprintf(stderr,
                "clusterctl: the write may still be applied (once): read it "
                "back before deciding to retry\n");
    } else if (rc == CD_ENOTLEADER) {
        fprintf(stderr,
                "clusterctl: no leader was elected in time: is a majority of "
                "the voters up? (clusterctl status)\n");
    } else if (is_unavailable(rc) && !cd_err_is_project(rc)) {
        fprintf(stderr, "clusterctl: no endpoint answered (tried %s)\n",
                g.endpoints_csv);
    } else if (rc == CD_ETIMEOUT) {
        fprintf(stderr,
                "clusterctl: no answer in time (--timeout): is the cluster "
                "overloaded or without a majority? (clusterctl status)\n");
    } else if (rc == CD_EBADCLUSTER) {
        fprintf(stderr,
                "clusterctl: the endpoint belongs to another cluster: check "
                "--cluster-id and --endpoints\n");
    } else if (rc == CD_EMALFORMED || rc == CD_EFRAMETOOBIG) {
        fprintf(stderr,
                "clusterctl: the endpoint does not speak the clusterd API: "
                "is it the API port (not the raft port)?\n");
    }
    return exit_code(rc);
}

static int usage_error(const char *cmd, const char *msg)
{
    fprintf(stderr, "clusterctl %s: %s (see clusterctl %s --help)\n", cmd, msg,
            cmd);
    return EXIT_USAGE;
}

/* --- numbers ----------------------------------------------------------- */

static int parse_u64_base(const char *s, int base, uint64_t *out)
{
    char *end;
    unsigned long long v;

    if (s == NULL || s[0] == '\0' || s[0] == '-' || s[0] == '+' ||
        s[0] == ' ') {
        return -EINVAL;
    }
    errno = 0;
    v = strtoull(s, &end, base);
    if (errno != 0 || *end != '\0') {
        return -EINVAL;
    }
    *out = v;
    return 0;
}

/* Decimal, or hexadecimal with 0x (never octal: "010" is ten). */
static int parse_u64(const char *s, uint64_t *out)
{
    if (s != NULL && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        return parse_u64_base(s + 2, 16, out);
    }
    return parse_u64_base(s, 10, out);
}

/* --- output ------------------------------------------------------------ */

/* A JSON string: quotes, backslashes, control bytes and DEL escaped;
 * everything else (UTF-8 included) as is. */
static void json_str(const void *data, size_t len)
{
    const unsigned char *p = data;

    putchar('"');
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = p[i];

        if (ch == '"' || ch == '\\') {
            putchar('\\');
            putchar(ch);
        } else if (ch == '\n') {
            fputs("\\n", stdout);
        } else if (ch == '\t') {
            fputs("\\t", stdout);
        } else if (ch < 0x20 || ch == 0x7f) {
            printf("\\u%04x", ch);
        } else {
            putchar(ch);
        }
    }
    putchar('"');
}

static void json_cstr(const char *s)
{
    if (s == NULL) {
        fputs("null", stdout);
    } else {
        json_str(s, strlen(s));
    }
}

/* For tables: one line per value, control bytes visible.  From malloc;
 * NULL when out of memory. */
static char *escape(const void *data, size_t len)
{
    const unsigned char *p = data;
    char *out = malloc(len * 4 + 1);
    size_t n = 0;

    if (out == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = p[i];

        if (ch == '\\') {
            out[n++] = '\\';
            out[n++] = '\\';
        } else if (ch == '\n') {
            out[n++] = '\\';
            out[n++] = 'n';
        } else if (ch == '\t') {
            out[n++] = '\\';
            out[n++] = 't';
        } else if (ch < 0x20 || ch == 0x7f) {
            n += (size_t)snprintf(out + n, 5, "\\x%02x", ch);
        } else {
            out[n++] = (char)ch;
        }
    }
    out[n] = '\0';
    return out;
}

/* Columns as wide as their widest cell (counted in UTF-8 characters). */
struct table
{
    size_t n_cols;
    const char *const *header;
    char **cells; /* row-major, owned */
    size_t n_rows;
    size_t cap_rows;
    int nomem;
};

static size_t text_width(const char *s)
{
    size_t w = 0;

    for (; *s != '\0'; s++) {
        w += ((unsigned char)*s & 0xc0) != 0x80;
    }
    return w;
}

/* Add a row; the table takes the cells (from malloc; NULL: out of
 * memory, which table_print reports). */
static void table_add(struct table *t, char **cells)
{
    if (t->n_rows == t->cap_rows) {
        size_t cap = t->cap_rows != 0 ? t->cap_rows * 2 : 16;
        char **grown = realloc(t->cells, cap * t->n_cols * sizeof(*grown));

        if (grown == NULL) {
            for (size_t i = 0; i < t->n_cols; i++) {
                free(cells[i]);
            }
            t->nomem = 1;
            return;
        }
        t->cells = grown;
        t->cap_rows = cap;
    }
    for (size_t i = 0; i < t->n_cols; i++) {
        t->nomem |= cells[i] == NULL;
        t->cells[t->n_rows * t->n_cols + i] = cells[i];
    }
    t->n_rows++;
}

static char *fmt_u64(uint64_t v)
{
    char *s = NULL;

    if (asprintf(&s, "%" PRIu64, v) < 0) {
        return NULL;
    }
    return s;
}

static char *dup_or_dash(const char *s)
{
    return strdup(s != NULL && s[0] != '\0' ? s : "-");
}

static int table_print(struct table *t)
{
    size_t width[16] = {0};

    if (t->nomem) {
        return -ENOMEM;
    }
    for (size_t c = 0; c < t->n_cols && c < 16; c++) {
        width[c] = text_width(t->header[c]);
        for (size_t r = 0; r < t->n_rows; r++) {
            size_t w = text_width(t->cells[r * t->n_cols + c]);

            width[c] = w > width[c] ? w : width[c];
        }
    }
    for (size_t r = 0; r <= t->n_rows; r++) {
        for (size_t c = 0; c < t->n_cols; c++) {
            const char *cell =
                r == 0 ? t->header[c] : t->cells[(r - 1) * t->n_cols + c];

            if (c + 1 == t->n_cols) {
                printf("%s\n", cell);
            } else {
                printf("%s%*s", cell, (int)(width[c] - text_width(cell) + 2),
                       "");
            }
        }
    }
    return 0;
}

static void table_free(struct table *t)
{
    for (size_t i = 0; i < t->n_rows * t->n_cols; i++) {
        free(t->cells[i]);
    }
    free(t->cells);
}

/* --- command lines ----------------------------------------------------- */

struct opt
{
    const char *name;   /* "--limit" */
    int takes_value;    /* see OPT_* */
    const char **value; /* where the value goes */
    int *flag;          /* set to 1 when present */
};

enum {
    OPT_FLAG = 0,   /* no value */
    OPT_VALUE = 1,  /* "--name V" or "--name=V" */
    OPT_INLINE = 2, /* "--name" alone, or "--name=V" */
};

/*
 * Options anywhere among the arguments ("--name V", "--name=V"), "--" ends
 * them; the rest go to pos[] (at most max_pos).  Returns 0, EXIT_USAGE
 * after a message, or -1 for --help (the caller prints its help).
 */
static int parse_args(const char *cmd,
                      int argc,
                      char **argv,
                      const struct opt *opts,
                      char **pos,
                      int max_pos,
                      int *n_pos)
{
    int only_pos = 0;

    *n_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const struct opt *o = NULL;
        const char *eq;
        size_t name_len;

        if (only_pos || a[0] != '-' || strcmp(a, "-") == 0) {
            if (*n_pos == max_pos) {
                return usage_error(cmd, "too many arguments");
            }
            pos[(*n_pos)++] = argv[i];
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_pos = 1;
            continue;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            return -1;
        }
        eq = strchr(a, '=');
        name_len = eq != NULL ? (size_t)(eq - a) : strlen(a);
        for (const struct opt *p = opts; p != NULL && p->name != NULL; p++) {
            if (strlen(p->name) == name_len &&
                strncmp(p->name, a, name_len) == 0) {
                o = p;
                break;
            }
        }
        if (o == NULL) {
            fprintf(stderr, "clusterctl %s: unknown option '%s'\n", cmd, a);
            return usage_error(cmd, "bad option");
        }
        if (o->flag != NULL) {
            *o->flag = 1;
        }
        if (o->takes_value == OPT_FLAG && eq != NULL) {
            return usage_error(cmd, "this option takes no value");
        }
        if (o->takes_value == OPT_FLAG ||
            (o->takes_value == OPT_INLINE && eq == NULL)) {
            continue;
        }
        if (eq != NULL) {
            *o->value = eq + 1;
        } else if (i + 1 < argc) {
            *o->value = argv[++i];
        } else {
            fprintf(stderr, "clusterctl %s: %s needs a value\n", cmd, o->name);
            return usage_error(cmd, "missing value");
        }
    }
    return 0;
}

/* The client for the global options (with endpoints, when not NULL,
 * instead of --endpoints). */
static int open_client_with(const char *const *endpoints,
                            size_t n,
                            unsigned total_ms,
                            struct cd_client **out)
{
    struct cd_client_config cfg;

    memset(&cfg, 0, sizeof(cfg));
    cfg.endpoints = endpoints;
    cfg.n_endpoints = n;
    cfg.total_timeout_ms = total_ms;
    /* One attempt may take the whole --timeout when it is short; a long
     * one still moves on from a silent endpoint after MAX_ATTEMPT_MS. */
    cfg.timeout_ms = total_ms < MAX_ATTEMPT_MS ? total_ms : MAX_ATTEMPT_MS;
    cfg.cluster_id = g.cluster_id;
    return cd_client_open(&cfg, out);
}

static int open_client(struct cd_client **out)
{
    int rc = open_client_with((const char *const *)g.endpoints, g.n_endpoints,
                              g.timeout_ms, out);

    if (rc != 0) {
        return fail("cannot set up the client", rc, 0);
    }
    return 0;
}

/* "what KEY" for error messages (keys are shown escaped). */
static char *what_key(const char *what, const char *key)
{
    char *e = escape(key, strlen(key));
    char *s = NULL;

    if (e == NULL || asprintf(&s, "%s %s", what, e) < 0) {
        s = NULL;
    }
    free(e);
    return s;
}

static int fail_key(const char *what, const char *key, int rc, int is_write)
{
    char *w = what_key(what, key);
    int code = fail(w != NULL ? w : what, rc, is_write);

    free(w);
    return code;
}

/* Send a WRITE of op; the reply goes to *resp (to free). */
static int do_write(struct cd_op *op, struct cd_msg *resp)
{
    struct cd_client *c;
    struct cd_msg req;
    int rc;

    rc = open_client(&c);
    if (rc != 0) {
        return rc;
    }
    memset(&req, 0, sizeof(req));
    req.type = CD_MSG_WRITE;
    req.u.write.op = *op;
    rc = cd_client_call(c, &req, resp);
    cd_client_close(c);
    return rc;
}

/* --- put, get, del, range ---------------------------------------------- */

static const char put_help[] =
    "usage: clusterctl put KEY VALUE\n"
    "\n"
    "Set KEY to VALUE through the leader and print the new revision.  A\n"
    "VALUE starting with '-' goes after '--': clusterctl put /k -- -5.\n"
    "Revision 0 means an earlier attempt of this same command was applied\n"
    "and its answer lost on the way (the revision is then not known).\n";

static int put_main(int argc, char **argv)
{
    char *pos[2];
    int n;
    int rc = parse_args("put", argc, argv, NULL, pos, 2, &n);
    struct cd_op op;
    struct cd_msg resp;

    if (rc < 0) {
        fputs(put_help, stdout);
        return EXIT_OK;
    }
    if (rc != 0) {
        return rc;
    }
    if (n != 2) {
        return usage_error("put", "expected KEY VALUE");
    }
    memset(&op, 0, sizeof(op));
    op.type = CD_OP_PUT;
    op.key = (struct cd_buf){pos[0], strlen(pos[0])};
    op.value = (struct cd_buf){pos[1], strlen(pos[1])};
    rc = do_write(&op, &resp);
    if (rc != 0) {
        return rc > 0 ? rc : fail_key("put", pos[0], rc, 1);
    }
    if (g.json) {
        printf("{\"revision\":%" PRIu64 "}\n", resp.u.write_resp.revision);
    } else {
        printf("revision %" PRIu64 "\n", resp.u.write_resp.revision);
    }
    codec_msg_free(&resp);
    return EXIT_OK;
}

static const char get_help[] =
    "usage: clusterctl get KEY [--serializable] [--local[=FILE]]\n"
    "\n"
    "Print KEY's value (as stored, then a newline; -o json adds its\n"
    "revisions).  Exit status 3 if KEY does not exist.\n"
    "\n"
    "  --serializable  answer from the node reached, without asking the\n"
    "                  leader: faster, works without a quorum, may be stale\n"
    "  --local[=FILE]  no network: read this host's store file directly\n"
    "                  (default $CLUSTERD_DB, else " CLUSTERD_DEFAULT_PATH
    ");\n"
    "                  works with every parent down; as fresh as the last\n"
    "                  contact with them (-o json shows age_ms)\n";

static int get_local(const char *file, const char *key)
{
    clusterd_db *db;
    char *value;
    size_t len;
    uint64_t rev = 0;
    struct clusterd_staleness st;
    int rc = clusterd_open(file, &db);

    if (rc != 0) {
        char *w = NULL;
        const char *env = getenv("CLUSTERD_DB");
        const char *shown = file != NULL ? file
                            : env != NULL && env[0] != '\0'
                                ? env
                                : CLUSTERD_DEFAULT_PATH;
        int code;

        if (asprintf(&w, "get --local: cannot open %s", shown) < 0) {
            w = NULL;
        }
        code = fail(w != NULL ? w : "get --local", rc, 0);
        free(w);
        return code == EXIT_NOTFOUND ? EXIT_FAIL : code;
    }
    rc = clusterd_get(db, key, strlen(key), &value, &len);
    if (rc != 0) {
        clusterd_close(db);
        return fail_key("get", key, rc, 0);
    }
    if (g.json) {
        memset(&st, 0, sizeof(st));
        (void)clusterd_revision(db, &rev);
        (void)clusterd_staleness(db, &st);
        fputs("{\"key\":", stdout);
        json_str(key, strlen(key));
        fputs(",\"value\":", stdout);
        json_str(value, len);
        printf(",\"local\":true,\"revision\":%" PRIu64 ",\"age_ms\":%" PRIu64
               "}\n",
               rev, st.age_ms);
    } else {
        fwrite(value, 1, len, stdout);
        putchar('\n');
    }
    free(value);
    clusterd_close(db);
    return EXIT_OK;
}

static int get_main(int argc, char **argv)
{
    char *pos[2] = {NULL, NULL};
    int n;
    int serializable = 0;
    int local = 0;
    const char *file = NULL;
    const char *key = NULL;
    const struct opt opts[] = {
        {"--serializable", OPT_FLAG, NULL, &serializable},
        {"--local", OPT_INLINE, &file, &local},
        {NULL, 0, NULL, NULL},
    };
    struct cd_client *c;
    struct cd_msg req;
    struct cd_msg resp;
    int rc;

    /* "--local=FILE" names the file; "--local" alone means the default
     * one, unless a second argument follows it ("get KEY --local FILE"). */
    rc = parse_args("get", argc, argv, opts, pos, 2, &n);
    if (rc < 0) {
        fputs(get_help, stdout);
        return EXIT_OK;
    }
    if (rc != 0) {
        return rc;
    }
    if (n == 1) {
        key = pos[0];
    } else if (n == 2 && local && file == NULL) {
        /* Of the two arguments, the one right after --local is the file. */
        for (int i = 1; i + 1 < argc; i++) {
            if (strcmp(argv[i], "--local") == 0 &&
                (argv[i + 1] == pos[0] || argv[i + 1] == pos[1])) {
                file = argv[i + 1];
                key = file == pos[0] ? pos[1] : pos[0];
            }
        }
    }
    if (key == NULL) {
        return usage_error("get", "expected KEY");
    }
    if (local) {
        return get_local(file != NULL && file[0] != '\0' ? file : NULL, key);
    }

    rc = open_client(&c);
    if (rc != 0) {
        return rc;
    }
    memset(&req, 0, sizeof(req));
    req.type = CD_MSG_GET;
    req.u.get.key = (struct cd_buf){key, strlen(key)};
    req.u.get.serializable = serializable;
    rc = cd_client_call(c, &req, &resp);
    cd_client_close(c);
    if (rc == 0 && resp.u.range_resp.n_kvs == 0) {
        codec_msg_free(&resp);
        rc = CD_ENOTFOUND;
    }
    if (rc != 0) {
        return fail_key("get", key, rc, 0);
    }

    const struct cd_kv *kv = &resp.u.range_resp.kvs[0];

    if (g.json) {
        fputs("{\"key\":", stdout);
        json_str(kv->key.data, kv->key.len);
        fputs(",\"value\":", stdout);
        json_str(kv->value.data, kv->value.len);
        printf(",\"create_revision\":%" PRIu64 ",\"mod_revision\":%" PRIu64
               ",\"version\":%" PRIu64 ",\"revision\":%" PRIu64
               ",\"serializable\":%s}\n",
               kv->create_rev, kv->mod_rev, kv->version,
               resp.u.range_resp.revision,
               resp.u.range_resp.serializable ? "true" : "false");
    } else {
        fwrite(kv->value.data, 1, kv->value.len, stdout);
        putchar('\n');
    }
    codec_msg_free(&resp);
    return EXIT_OK;
}

static const char del_help[] =
    "usage: clusterctl del KEY [--prefix]\n"
    "\n"
    "Delete KEY, or with --prefix every key that starts with KEY, and print\n"
    "how many keys went.  Deleting a key that does not exist is not an\n"
    "error (deleted 0).\n";

static int del_main(int argc, char **argv)
{
    char *pos[1];
    int n;
    int prefix = 0;
    const struct opt opts[] = {
        {"--prefix", OPT_FLAG, NULL, &prefix},
        {NULL, 0, NULL, NULL},
    };
    struct cd_op op;
    struct cd_msg resp;
    int rc = parse_args("del", argc, argv, opts, pos, 1, &n);

    if (rc < 0) {
        fputs(del_help, stdout);
        return EXIT_OK;
    }
    if (rc != 0) {
        return rc;
    }
    if (n != 1) {
        return usage_error("del", "expected KEY");
    }
    memset(&op, 0, sizeof(op));
    op.type = prefix ? CD_OP_DELETE_PREFIX : CD_OP_DELETE;
    op.key = (struct cd_buf){pos[0], strlen(pos[0])};
    rc = do_write(&op, &resp);
    if (rc != 0) {
        return rc > 0 ? rc : fail_key("del", pos[0], rc, 1);
    }
    if (g.json) {
        printf("{\"deleted\":%" PRIu64 ",\"revision\":%" PRIu64 "}\n",
               resp.u.write_resp.deleted, resp.u.write_resp.revision);
    } else {
        printf("deleted %" PRIu64 " (revision %" PRIu64 ")\n",
               resp.u.write_resp.deleted, resp.u.write_resp.revision);
    }
    codec_msg_free(&resp);
    return EXIT_OK;
}

static const char range_help[] =
    "usage: clusterctl range [PREFIX] [--limit N] [--serializable] "
    "[--keys-only]\n"
    "\n"
    "List the keys starting with PREFIX (every key without one), in byte\n"
    "order, with their values.  Large results are fetched in pages, each\n"
    "consistent on its own; a key changed between pages may show its old\n"
    "or new value.  Control bytes in tables are shown as \\xNN.\n"
    "\n"
    "  --limit N       at most N keys (default: all)\n"
    "  --serializable  answer from the node reached, without the leader\n"
    "  --keys-only     no values\n";

/* The pages of a range, kept until printed (they own the kvs). */
struct range_pages
{
    struct cd_msg *msgs;
    size_t n;
    size_t n_kvs;
    uint64_t revision;
    int more;
};

static void print_range_json(const struct range_pages *p, int keys_only)
{
    size_t k = 0;

    printf("{\"revision\":%" PRIu64 ",\"count\":%zu,\"more\":%s,\"kvs\":[",
           p->revision, p->n_kvs, p->more ? "true" : "false");
    for (size_t i = 0; i < p->n; i++) {
        const struct cd_msg *m = &p->msgs[i];

        for (size_t j = 0; j < m->u.range_resp.n_kvs; j++, k++) {
            const struct cd_kv *kv = &m->u.range_resp.kvs[j];

            fputs(k > 0 ? ",{\"key\":" : "{\"key\":", stdout);
            json_str(kv->key.data, kv->key.len);
            if (!keys_only) {
                fputs(",\"value\":", stdout);
                json_str(kv->value.data, kv->value.len);
            }
            printf(",\"create_revision\":%" PRIu64 ",\"mod_revision\":%" PRIu64
                   ",\"version\":%" PRIu64 "}",
                   kv->create_rev, kv->mod_rev, kv->version);
        }
    }
    printf("]}\n");
}

static int print_range_table(const struct range_pages *p, int keys_only)
{
    static const char *const header[] = {"KEY", "MOD", "VERSION", "VALUE"};
    struct table t = {.n_cols = keys_only ? 3 : 4, .header = header};
    int rc;

    for (size_t i = 0; i < p->n; i++) {
        const struct cd_msg *m = &p->msgs[i];

        for (size_t j = 0; j < m->u.range_resp.n_kvs; j++) {
            const struct cd_kv *kv = &m->u.range_resp.kvs[j];
            char *cells[4] = {
                escape(kv->key.data, kv->key.len),
                fmt_u64(kv->mod_rev),
                fmt_u64(kv->version),
                keys_only ? NULL : escape(kv->value.data, kv->value.len),
            };

            table_add(&t, cells);
        }
    }
    rc = p->n_kvs > 0 ? table_print(&t) : 0;
    table_free(&t);
    if (rc == 0 && p->more) {
        fprintf(stderr, "(more keys follow: raise --limit)\n");
    }
    return rc;
}

/* Fetch pages until limit keys (0: all) or the end. */
static int fetch_range(struct cd_client *c,
                       const char *prefix,
                       uint64_t limit,
                       int serializable,
                       int keys_only,
                       struct range_pages *p)
{
    char *start = NULL;
    size_t start_len = 0;
    int rc = 0;

    for (;;) {
        struct cd_msg req;
        struct cd_msg resp;
        struct cd_msg *grown;
        const struct cd_kv *last;

        memset(&req, 0, sizeof(req));
        req.type = CD_MSG_RANGE;
        req.u.range.prefix = (struct cd_buf){prefix, strlen(prefix)};
        req.u.range.start = (struct cd_buf){start, start_len};
        req.u.range.limit = limit != 0 ? limit - p->n_kvs : 0;
        req.u.range.serializable = serializable;
        req.u.range.keys_only = keys_only;
        rc = cd_client_call(c, &req, &resp);
        if (rc != 0) {
            break;
        }
        grown = realloc(p->msgs, (p->n + 1) * sizeof(*grown));
        if (grown == NULL) {
            codec_msg_free(&resp);
            rc = -ENOMEM;
            break;
        }
        p->msgs = grown;
        p->msgs[p->n++] = resp;
        p->n_kvs += resp.u.range_resp.n_kvs;
        p->revision = resp.u.range_resp.revision;
        p->more = resp.u.range_resp.more;
        if (!p->more || resp.u.range_resp.n_kvs == 0 ||
            (limit != 0 && p->n_kvs >= limit)) {
            break;
        }
        /* The next page starts just after the last key: start is
         * inclusive, and key + "\0" is the smallest key after key. */
        last = &resp.u.range_resp.kvs[resp.u.range_resp.n_kvs - 1];
        free(start);
        start = malloc(last->key.len + 1);
        if (start == NULL) {
            rc = -ENOMEM;
            break;
        }
        memcpy(start, last->key.data, last->key.len);
        start[last->key.len] = '\0';
        start_len = last->key.len + 1;
    }
    free(start);
    return rc;
}

static int range_main(int argc, char **argv)
{
    char *pos[1];
    int n;
    int serializable = 0;
    int keys_only = 0;
    const char *limit_s = NULL;
    uint64_t limit = 0;
    const struct opt opts[] = {
        {"--limit", OPT_VALUE, &limit_s, NULL},
        {"--serializable", OPT_FLAG, NULL, &serializable},
        {"--keys-only", OPT_FLAG, NULL, &keys_only},
        {NULL, 0, NULL, NULL},
    };
    struct range_pages p = {0};
    struct cd_client *c;
    int rc = parse_args("range", argc, argv, opts, pos, 1, &n);

    if (rc < 0) {
        fputs(range_help, stdout);
        return EXIT_OK;
    }
    if (rc != 0) {
        return rc;
    }
    if (limit_s != NULL && parse_u64(limit_s, &limit) != 0) {
        return usage_error("range", "--limit takes a number");
    }
    rc = open_client(&c);
    if (rc != 0) {
        return rc;
    }
    rc =
        fetch_range(c, n > 0 ? pos[0] : "", limit, serializable, keys_only, &p);
    cd_client_close(c);
    if (rc == 0) {
        if (g.json) {
            print_range_json(&p, keys_only);
        } else {
            rc = print_range_table(&p, keys_only);
        }
    }
    for (size_t i = 0; i < p.n; i++) {
        codec_msg_free(&p.msgs[i]);
    }
    free(p.msgs);
    return rc != 0 ? fail("range", rc, 0) : EXIT_OK;
}

/* --- txn --------------------------------------------------------------- */

static const char txn_help[] =
    "usage: clusterctl txn < SCRIPT\n"
    "\n"
    "Run a transaction read from stdin: if every compare holds, the 'then'\n"
    "operations run, else the 'else' ones, all in one revision.  Prints\n"
    "whether the compares held, and the revision.  Exit status 4 when they\n"
    "did not (the else branch ran).\n"
    "\n"
    "The script, one item per line ('#' starts a comment):\n"
    "\n"
    "  compare KEY TARGET OP ARG   zero or more, first\n"
    "  then                        the operations if every compare holds\n"
    "  else                        the operations otherwise\n"
    "  put KEY VALUE               an operation: set a key\n"
    "  del KEY                     an operation: delete a key\n"
    "  del-prefix KEY              an operation: delete keys starting KEY\n"
    "\n"
    "TARGET is value (ARG: bytes), version (puts since creation), create or\n"
    "mod (the revision that created or last changed KEY), or exists (ARG 1:\n"
    "the key exists, 0: it does not); those take a decimal ARG, 0 when the\n"
    "key is absent.  OP is =, !=, < or >.  A value compare on an absent key\n"
    "is false whatever OP.  KEY, VALUE and ARG are words, or \"quoted\" with\n"
    "\\\" \\\\ \\n \\t \\xNN escapes.  Example (create /lock if absent):\n"
    "\n"
    "  compare /lock exists = 0\n"
    "  then\n"
    "  put /lock \"host-a since 03:12\"\n"
    "  else\n"
    "  # nothing: exit status 4 tells the caller it is taken\n";

/* Everything a parsed script owns; freed at once. */
struct txn_script
{
    struct cd_compare *cmps;
    size_t n_cmps;
    struct cd_op *ops[2]; /* then, else */
    size_t n_ops[2];
    char **strings;
    size_t n_strings;
};

static void txn_free(struct txn_script *s)
{
    for (size_t i = 0; i < s->n_strings; i++) {
        free(s->strings[i]);
    }
    free(s->strings);
    free(s->cmps);
    free(s->ops[0]);
    free(s->ops[1]);
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9') {
        return ch - '0';
    }
    if (ch >= 'a' && ch <= 'f') {
        return ch - 'a' + 10;
    }
    if (ch >= 'A' && ch <= 'F') {
        return ch - 'A' + 10;
    }
    return -1;
}

/*
 * The next word of *p (advanced past it) into a new string owned by s:
 * 0 with *out, 1 at the end of the line (or a comment), or -EINVAL with
 * *why for a bad quoted word.
 */
static int next_word(struct txn_script *s,
                     const char **p,
                     struct cd_buf *out,
                     const char **why)
{
    const char *q = *p;
    char *w;
    size_t n = 0;
    char **grown;

    while (*q == ' ' || *q == '\t' || *q == '\r' || *q == '\n') {
        q++;
    }
    if (*q == '\0' || *q == '#') {
        *p = q;
        return 1;
    }
    w = malloc(strlen(q) + 1);
    if (w == NULL) {
        *why = "out of memory";
        return -ENOMEM;
    }
    if (*q != '"') {
        while (*q != '\0' && *q != ' ' && *q != '\t' && *q != '\r' &&
               *q != '\n') {
            w[n++] = *q++;
        }
    } else {
        for (q++; *q != '"'; q++) {
            if (*q == '\0' || *q == '\n') {
                free(w);
                *why = "unterminated quoted word";
                return -EINVAL;
            }
            if (*q != '\\') {
                w[n++] = *q;
                continue;
            }
            q++;
            if (*q == 'n') {
                w[n++] = '\n';
            } else if (*q == 't') {
                w[n++] = '\t';
            } else if (*q == '\\' || *q == '"') {
                w[n++] = *q;
            } else if (*q == 'x' && hexval(q[1]) >= 0 && hexval(q[2]) >= 0) {
                w[n++] = (char)(hexval(q[1]) * 16 + hexval(q[2]));
                q += 2;
            } else {
                free(w);
                *why = "bad escape (use \\\" \\\\ \\n \\t or \\xNN)";
                return -EINVAL;
            }
        }
        q++;
        if (*q != '\0' && *q != ' ' && *q != '\t' && *q != '\r' && *q != '\n') {
            free(w);
            *why = "text right after a closing quote";
            return -EINVAL;
        }
    }
    w[n] = '\0';
    grown = realloc(s->strings, (s->n_strings + 1) * sizeof(*grown));
    if (grown == NULL) {
        free(w);
        *why = "out of memory";
        return -ENOMEM;
    }
    s->strings = grown;
    s->strings[s->n_strings++] = w;
    *out = (struct cd_buf){w, n};
    *p = q;
    return 0;
}

static int word_is(struct cd_buf w, const char *s)
{
    return w.len == strlen(s) && memcmp(w.data, s, w.len) == 0;
}

/* Read words for a line into words[] (exactly n of them). */
static int line_words(struct txn_script *s,
                      const char *line,
                      struct cd_buf *words,
                      size_t n,
                      const char **why)
{
    struct cd_buf extra;

    for (size_t i = 0; i < n; i++) {
        int rc = next_word(s, &line, &words[i], why);

        if (rc < 0) {
            return rc;
        }
        if (rc == 1) {
            *why = "too few words";
            return -EINVAL;
        }
    }
    int rc = next_word(s, &line, &extra, why);

    if (rc < 0) {
        return rc;
    }
    if (rc == 0) {
        *why = "too many words (quote a VALUE with spaces)";
        return -EINVAL;
    }
    return 0;
}

static int parse_compare(const struct cd_buf *w,
                         struct cd_compare *c,
                         const char **why)
{
    static const struct
    {
        const char *name;
        enum cd_cmp_target target;
    } targets[] = {
        {"value", CD_CMP_VALUE},       {"version", CD_CMP_VERSION},
        {"create", CD_CMP_CREATE_REV}, {"mod", CD_CMP_MOD_REV},
        {"exists", CD_CMP_EXISTS},
    };
    static const struct
    {
        const char *name;
        enum cd_cmp_result result;
    } results[] = {
        {"=", CD_CMP_EQUAL},
        {"!=", CD_CMP_NOT_EQUAL},
        {"<", CD_CMP_LESS},
        {">", CD_CMP_GREATER},
    };
    char num[24];

    memset(c, 0, sizeof(*c));
    c->key = w[1];
    for (size_t i = 0; i < sizeof(targets) / sizeof(targets[0]); i++) {
        if (word_is(w[2], targets[i].name)) {
            c->target = targets[i].target;
        }
    }
    for (size_t i = 0; i < sizeof(results) / sizeof(results[0]); i++) {
        if (word_is(w[3], results[i].name)) {
            c->result = results[i].result;
        }
    }
    if (c->target == 0) {
        *why = "TARGET is value, version, create, mod or exists";
        return -EINVAL;
    }
    if (c->result == 0) {
        *why = "OP is =, !=, < or >";
        return -EINVAL;
    }
    if (c->target == CD_CMP_VALUE) {
        c->value = w[4];
        return 0;
    }
    if (w[4].len >= sizeof(num)) {
        *why = "ARG is a decimal number for this TARGET";
        return -EINVAL;
    }
    memcpy(num, w[4].data, w[4].len);
    num[w[4].len] = '\0';
    if (parse_u64_base(num, 10, &c->number) != 0) {
        *why = "ARG is a decimal number for this TARGET";
        return -EINVAL;
    }
    return 0;
}

/* Parse the script from f.  On error *line_no and *why say where and what. */
static int txn_parse(FILE *f,
                     struct txn_script *s,
                     size_t *line_no,
                     const char **why)
{
    char *line = NULL;
    size_t cap = 0;
    int section = -1; /* -1 compares, 0 then, 1 else */
    int rc = 0;

    *line_no = 0;
    while (rc == 0 && getline(&line, &cap, f) >= 0) {
        const char *p = line;
        struct cd_buf w[5];
        int more;

        (*line_no)++;
        more = next_word(s, &p, &w[0], why);
        if (more < 0) {
            rc = more;
            break;
        }
        if (more == 1) {
            continue;
        }
        if (word_is(w[0], "then") || word_is(w[0], "else")) {
            int to = word_is(w[0], "then") ? 0 : 1;

            if (to <= section) {
                *why = "'then' comes before 'else', each once";
                rc = -EINVAL;
            } else {
                section = to;
                rc = line_words(s, p, w, 0, why);
            }
        } else if (word_is(w[0], "compare")) {
            struct cd_compare *grown;

            if (section != -1) {
                *why = "compares come before 'then' and 'else'";
                rc = -EINVAL;
                break;
            }
            rc = line_words(s, p, w + 1, 4, why);
            if (rc != 0) {
                break;
            }
            grown = realloc(s->cmps, (s->n_cmps + 1) * sizeof(*grown));
            if (grown == NULL) {
                *why = "out of memory";
                rc = -ENOMEM;
                break;
            }
            s->cmps = grown;
            rc = parse_compare(w, &s->cmps[s->n_cmps], why);
            s->n_cmps += rc == 0;
        } else if (word_is(w[0], "put") || word_is(w[0], "del") ||
                   word_is(w[0], "del-prefix")) {
            int is_put = word_is(w[0], "put");
            int is_prefix = word_is(w[0], "del-prefix");
            struct cd_op *grown;

            if (section == -1) {
                *why = "operations go after 'then' or 'else'";
                rc = -EINVAL;
                break;
            }
            rc = line_words(s, p, w + 1, is_put ? 2 : 1, why);
            if (rc != 0) {
                break;
            }
            grown = realloc(s->ops[section],
                            (s->n_ops[section] + 1) * sizeof(*grown));
            if (grown == NULL) {
                *why = "out of memory";
                rc = -ENOMEM;
                break;
            }
            s->ops[section] = grown;
            memset(&grown[s->n_ops[section]], 0, sizeof(*grown));
            grown[s->n_ops[section]].type =
                is_put ? CD_OP_PUT
                       : (is_prefix ? CD_OP_DELETE_PREFIX : CD_OP_DELETE);
            grown[s->n_ops[section]].key = w[1];
            if (is_put) {
                grown[s->n_ops[section]].value = w[2];
            }
            s->n_ops[section]++;
        } else {
            *why = "expected compare, then, else, put, del or del-prefix";
            rc = -EINVAL;
        }
    }
    free(line);
    if (rc == 0 && ferror(f)) {
        *why = "cannot read stdin";
        rc = -EIO;
    }
    return rc;
}

static int txn_main(int argc, char **argv)
{
    char *pos[1];
    int n;
    struct txn_script s = {0};
    size_t line_no;
    const char *why = NULL;
    struct cd_op op;
    struct cd_msg resp;
    int rc = parse_args("txn", argc, argv, NULL, pos, 0, &n);

    if (rc < 0) {
        fputs(txn_help, stdout);
        return EXIT_OK;
    }
    if (rc != 0) {
        return rc;
    }
    if (isatty(STDIN_FILENO)) {
        fprintf(stderr,
                "clusterctl txn: reading the script from the "
                "terminal; end it with Ctrl-D\n");
    }
    rc = txn_parse(stdin, &s, &line_no, &why);
    if (rc != 0) {
        fprintf(stderr, "clusterctl txn: line %zu: %s\n", line_no, why);
        txn_free(&s);
        return rc == -EINVAL ? EXIT_USAGE : EXIT_FAIL;
    }
    memset(&op, 0, sizeof(op));
    op.type = CD_OP_TXN;
    op.compares = s.cmps;
    op.n_compares = s.n_cmps;
    op.then_ops = s.ops[0];
    op.n_then = s.n_ops[0];
    op.else_ops = s.ops[1];
    op.n_else = s.n_ops[1];
    rc = do_write(&op, &resp);
    txn_free(&s);
    if (rc != 0) {
        return rc > 0 ? rc : fail("txn", rc, 1);
    }
    if (resp.u.write_resp.revision == 0) {
        /* The write was applied by an attempt whose answer was lost. */
        fprintf(stderr,
                "clusterctl: txn: applied by an earlier attempt whose answer "
                "was lost: whether the compares held is unknown; read the "
                "keys back\n");
        codec_msg_free(&resp);
        return EXIT_FAIL;
    }
    if (g.json) {
        printf("{\"succeeded\":%s,\"revision\":%" PRIu64 ",\"deleted\":%" PRIu64
               "}\n",
               resp.u.write_resp.succeeded ? "true" : "false",
               resp.u.write_resp.revision, resp.u.write_resp.deleted);
    } else {
        printf("succeeded  %s\nrevision   %" PRIu64 "\n",
               resp.u.write_resp.succeeded ? "yes" : "no (else ran)",
               resp.u.write_resp.revision);
    }
    rc = resp.u.write_resp.succeeded ? EXIT_OK : EXIT_TXNFAILED;
    codec_msg_free(&resp);
    return rc;
}

/* --- watch ------------------------------------------------------------- */

static const char watch_help[] =
    "usage: clusterctl watch [PREFIX] [--since REV] [--timeout MS]\n"
    "\n"
    "Print changes to keys starting with PREFIX (every key without one) as\n"
    "they happen, one line each: REVISION PUT KEY VALUE, or REVISION DEL\n"
    "KEY.  Runs until interrupted, or until no change came for --timeout\n"
    "milliseconds (then exit status 0).\n"
    "\n"
    "  --since REV   start with the changes after revision REV (default: the\n"
    "                current revision, i.e. only new changes); if REV is\n"
    "                older than the compacted history, the watch fails and\n"
    "                says from which revision it could start\n"
    "  --timeout MS  stop after MS milliseconds without a change\n";

static int print_changes(void *arg, const struct cd_msg *m)
{
    uint64_t *compact_rev = arg;

    if (m->u.changes.compacted) {
        *compact_rev = m->u.changes.compact_rev;
        return CD_ECOMPACTED;
    }
    for (size_t i = 0; i < m->u.changes.n_events; i++) {
        const struct cd_event *e = &m->u.changes.events[i];
        uint64_t rev =
            e->kv.mod_rev != 0 ? e->kv.mod_rev : m->u.changes.revision;
        int put = e->type == CD_EVENT_PUT;

        if (g.json) {
            printf("{\"revision\":%" PRIu64 ",\"type\":\"%s\",\"key\":", rev,
                   put ? "PUT" : "DEL");
            json_str(e->kv.key.data, e->kv.key.len);
            if (put) {
                fputs(",\"value\":", stdout);
                json_str(e->kv.value.data, e->kv.value.len);
            }
            fputs("}\n", stdout);
        } else {
            char *k = escape(e->kv.key.data, e->kv.key.len);
            char *v = put ? escape(e->kv.value.data, e->kv.value.len) : NULL;

            if (k == NULL || (put && v == NULL)) {
                free(k);
                free(v);
                return -ENOMEM;
            }
            printf("%" PRIu64 " %s %s%s%s\n", rev, put ? "PUT" : "DEL", k,
                   put ? " " : "", put ? v : "");
            free(k);
            free(v);
        }
    }
    /* Someone is waiting on the other end of the pipe. */
    return fflush(stdout) == 0 ? 0 : -errno;
}

/* The current revision, from the node the client reaches (*endpoint:
 * from malloc, or NULL). */
static int current_revision(struct cd_client *c, uint64_t *rev, char **endpoint)
{
    struct cd_msg resp;
    int rc = cd_client_status(c, &resp);

    if (rc == 0) {
        *rev = resp.u.status_resp.revision;
        *endpoint = cd_client_endpoint(c) != NULL
                        ? strdup(cd_client_endpoint(c))
                        : NULL;
        codec_msg_free(&resp);
    }
    return rc;
}

static int watch_main(int argc, char **argv)
{
    char *pos[1];
    int n;
    const char *since_s = NULL;
    const char *timeout_s = NULL;
    uint64_t since = 0;
    uint64_t idle_ms = 0;
    uint64_t compact_rev = 0;
    char *first = NULL;
    const char **eps;
    size_t n_eps = 0;
    const struct opt opts[] = {
        {"--since", OPT_VALUE, &since_s, NULL},
        {"--timeout", OPT_VALUE, &timeout_s, NULL},
        {NULL, 0, NULL, NULL},
    };
    struct cd_client *c;
    const char *prefix;
    int rc = parse_args("watch", argc, argv, opts, pos, 1, &n);

    if (rc < 0) {
        fputs(watch_help, stdout);
        return EXIT_OK;
    }
    if (rc != 0) {
        return rc;
    }
    if (since_s != NULL && parse_u64(since_s, &since) != 0) {
        return usage_error("watch", "--since takes a revision number");
    }
    if (timeout_s != NULL &&
        (parse_u64(timeout_s, &idle_ms) != 0 || idle_ms > UINT32_MAX)) {
        return usage_error("watch", "--timeout takes milliseconds");
    }
    prefix = n > 0 ? pos[0] : "";
    if (since_s == NULL) {
        rc = open_client(&c);
        if (rc != 0) {
            return rc;
        }
        rc = current_revision(c, &since, &first);
        cd_client_close(c);
        if (rc != 0) {
            return fail("watch: current revision", rc, 0);
        }
    }

    /* Watch on the node that gave the revision first: another one may not
     * have applied it yet, and would refuse it (CD_EBADREV).  A fresh
     * client, so that cd_client_endpoint() says whether the watch began. */
    eps = calloc(g.n_endpoints + 1, sizeof(*eps));
    if (eps == NULL) {
        free(first);
        return fail("watch", -ENOMEM, 0);
    }
    if (first != NULL) {
        eps[n_eps++] = first;
    }
    for (size_t i = 0; i < g.n_endpoints; i++) {
        if (first == NULL || strcmp(first, g.endpoints[i]) != 0) {
            eps[n_eps++] = g.endpoints[i];
        }
    }
    rc = open_client_with(eps, n_eps, g.timeout_ms, &c);
    free(eps);
    free(first);
    if (rc != 0) {
        return fail("watch", rc, 0);
    }
    rc = cd_client_watch(c, since, prefix, strlen(prefix), (unsigned)idle_ms,
                         print_changes, &compact_rev);
    if (rc == CD_ETIMEOUT && idle_ms != 0 && cd_client_endpoint(c) != NULL) {
        rc = 0; /* idle for --timeout: the normal end */
    }
    cd_client_close(c);
    if (rc == 0) {
        return EXIT_OK;
    }
    n = fail("watch", rc, 0);
    if (rc == CD_ECOMPACTED) {
        fprintf(stderr,
                "clusterctl: history up to revision %" PRIu64
                " is gone: read the current state (range), then watch "
                "--since %" PRIu64 " or later\n",
                compact_rev, compact_rev);
    }
    return n;
}

/* --- compact ----------------------------------------------------------- */

static const char compact_help[] =
    "usage: clusterctl compact REV\n"
    "\n"
    "Drop the history of changes at or below revision REV on every node, to\n"
    "reclaim space.  Current values are kept; watches and children that are\n"
    "further behind than REV must start over from a snapshot.\n";

static int compact_main(int argc, char **argv)
{
    char *pos[1];
    int n;
    uint64_t rev;
    struct cd_op op;
    struct cd_msg resp;
    int rc = parse_args("compact", argc, argv, NULL, pos, 1, &n);

    if (rc < 0) {
        fputs(compact_help, stdout);
        return EXIT_OK;
    }
    if (rc != 0) {
        return rc;
    }
    if (n != 1 || parse_u64(pos[0], &rev) != 0) {
        return usage_error("compact", "expected a revision number");
    }
    memset(&op, 0, sizeof(op));
    op.type = CD_OP_COMPACT;
    op.revision = rev;
    rc = do_write(&op, &resp);
    if (rc != 0) {
        return rc > 0 ? rc : fail("compact", rc, 1);
    }
    if (g.json) {
        printf("{\"compacted\":%" PRIu64 ",\"revision\":%" PRIu64 "}\n", rev,
               resp.u.write_resp.revision);
    } else {
        printf("compacted history up to revision %" PRIu64 "\n", rev);
    }
    codec_msg_free(&resp);
    return EXIT_OK;
}

/* --- status, members --------------------------------------------------- */

static const char status_help[] =
    "usage: clusterctl status\n"
    "\n"
    "Ask every endpoint for its own view: node id, raft state, term,\n"
    "revision, applied and commit indexes, and who it thinks leads.  Each\n"
    "endpoint gets --timeout (default 3000 ms).  Exit status 0 when all\n"
    "answered, 5 when none did, 1 when some did not.\n";

static int status_one(const char *ep, struct table *t, size_t *n_failed)
{
    struct cd_client *c;
    struct cd_msg resp;
    int rc = open_client_with(
        &ep, 1, g.timeout_ms != 0 ? g.timeout_ms : STATUS_TIMEOUT_MS, &c);

    if (rc == 0) {
        rc = cd_client_status(c, &resp);
        cd_client_close(c);
    }
    if (rc != 0) {
        char *w = NULL;

        (*n_failed)++;
        if (asprintf(&w, "status %s", ep) < 0) {
            w = NULL;
        }
        fprintf(stderr, "clusterctl: %s: %s (%s)\n", w != NULL ? w : ep,
                cd_strerror(rc), cd_errname(rc));
        free(w);
        if (g.json) {
            fputs("{\"endpoint\":", stdout);
            json_cstr(ep);
            printf(",\"error\":");
            json_cstr(cd_errname(rc));
            printf(",\"message\":");
            json_cstr(cd_strerror(rc));
            printf("}\n");
        } else {
            char *cells[9] = {
                strdup(ep),
                strdup("-"),
                strdup(is_unavailable(rc) ? "unreachable" : "error"),
                strdup("-"),
                strdup("-"),
                strdup("-"),
                strdup("-"),
                strdup("-"),
                strdup(cd_errname(rc))};

            table_add(t, cells);
        }
        return rc;
    }

    const typeof(resp.u.status_resp) *s = &resp.u.status_resp;

    if (g.json) {
        fputs("{\"endpoint\":", stdout);
        json_cstr(ep);
        printf(",\"id\":%" PRIu64 ",\"state\":", s->id);
        json_cstr(s->state);
        printf(",\"term\":%" PRIu64 ",\"revision\":%" PRIu64
               ",\"applied_index\":%" PRIu64 ",\"commit_index\":%" PRIu64
               ",\"leader_id\":%" PRIu64 ",\"leader_api\":",
               s->term, s->revision, s->applied_index, s->commit_index,
               s->leader_id);
        json_cstr(s->leader_api);
        fputs(",\"version\":", stdout);
        json_cstr(s->version);
        printf(",\"epoch\":\"%016" PRIx64 "\"}\n", s->epoch);
    } else {
        char *leader = NULL;

        if (s->leader_id == 0) {
            leader = strdup("none");
        } else if (asprintf(&leader, "%" PRIu64 " (%s)", s->leader_id,
                            s->leader_api != NULL ? s->leader_api : "?") < 0) {
            leader = NULL;
        }
        char *cells[9] = {strdup(ep),
                          fmt_u64(s->id),
                          dup_or_dash(s->state),
                          fmt_u64(s->term),
                          fmt_u64(s->revision),
                          fmt_u64(s->applied_index),
                          fmt_u64(s->commit_index),
                          leader,
                          dup_or_dash(s->version)};

        table_add(t, cells);
    }
    codec_msg_free(&resp);
    return 0;
}

static int status_main(int argc, char **argv)
{
    static const char *const header[] = {"ENDPOINT", "ID",       "STATE",
                                         "TERM",     "REVISION", "APPLIED",
                                         "COMMIT",   "LEADER",   "VERSION"};
    struct table t = {.n_cols = 9, .header = header};
    char *pos[1];
    int n;
    size_t failed = 0;
    int rc = parse_args("status", argc, argv, NULL, pos, 0, &n);

    if (rc < 0) {
        fputs(status_help, stdout);
        return EXIT_OK;
    }
    if (rc != 0) {
        return rc;
    }
    for (size_t i = 0; i < g.n_endpoints; i++) {
        status_one(g.endpoints[i], &t, &failed);
    }
    rc = g.json ? 0 : table_print(&t);
    table_free(&t);
    if (rc != 0) {
        return fail("status", rc, 0);
    }
    if (failed == g.n_endpoints) {
        return EXIT_UNAVAILABLE;
    }
    return failed > 0 ? EXIT_FAIL : EXIT_OK;
}

static const char *role_name(enum cd_member_role r)
{
    switch (r) {
        case CD_ROLE_VOTER:
            return "voter";
        case CD_ROLE_STANDBY:
            return "standby";
        case CD_ROLE_SPARE:
            return "spare";
        default:
            return "-";
    }
}

static void member_json(const struct cd_member *m)
{
    printf("{\"id\":%" PRIu64 ",\"role\":\"%s\",\"address\":", m->id,
           role_name(m->role));
    json_cstr(m->address);
    fputs(",\"api_address\":", stdout);
    json_cstr(m->api_address);
    printf(",\"leader\":%s,\"reachable\":%s}", m->leader ? "true" : "false",
           m->reachable ? "true" : "false");
}

static const char members_help[] =
    "usage: clusterctl members\n"
    "\n"
    "List the cluster's parents as the leader knows them: id, role (voter:\n"
    "counts for the majority; standby: replicates, promoted when a voter\n"
    "goes; spare: neither), whether it leads, whether the leader reaches\n"
    "it, its raft address and its API address.\n";

static int members_main(int argc, char **argv)
{
    static const char *const header[] = {"ID",        "ROLE",    "LEADER",
                                         "REACHABLE", "ADDRESS", "API"};
    struct table t = {.n_cols = 6, .header = header};
    char *pos[1];
    int n;
    struct cd_client *c;
    struct cd_msg req;
    struct cd_msg resp;
    int rc = parse_args("members", argc, argv, NULL, pos, 0, &n);

    if (rc < 0) {
        fputs(members_help, stdout);
        return EXIT_OK;
    }
    if (rc != 0) {
        return rc;
    }
    rc = open_client(&c);
    if (rc != 0) {
        return rc;
    }
    memset(&req, 0, sizeof(req));
    req.type = CD_MSG_MEMBERS;
    rc = cd_client_call(c, &req, &resp);
    cd_client_close(c);
    if (rc != 0) {
        return fail("members", rc, 0);
    }
    if (g.json) {
        fputs("{\"members\":[", stdout);
        for (size_t i = 0; i < resp.u.members_resp.n_members; i++) {
            fputs(i > 0 ? "," : "", stdout);
            member_json(&resp.u.members_resp.members[i]);
        }
        fputs("]}\n", stdout);
    } else {
        for (size_t i = 0; i < resp.u.members_resp.n_members; i++) {
            const struct cd_member *m = &resp.u.members_resp.members[i];
            char *cells[6] = {fmt_u64(m->id),
                              strdup(role_name(m->role)),
                              strdup(m->leader ? "*" : ""),
                              strdup(m->reachable ? "yes" : "no"),
                              dup_or_dash(m->address),
                              dup_or_dash(m->api_address)};

            table_add(&t, cells);
        }
        rc = table_print(&t);
    }
    table_free(&t);
    codec_msg_free(&resp);
    return rc != 0 ? fail("members", rc, 0) : EXIT_OK;
}

/* --- children ------------------------------------------------------------ */

static const char children_help[] =
    "usage: clusterctl children\n"
    "\n"
    "Every registered child, as the leader sees it: its id and host, state\n"
    "(following: streaming from a parent; degraded: serving its cache with\n"
    "no parent stream; gone: no report for 15 s; unknown: no report since\n"
    "this leader took over), when it last reported, its cache revision and\n"
    "lag behind the leader, and its services (name:up|down).\n";

static char *fmt_ago(const struct cd_child_status *st)
{
    char *out = NULL;
    if (!st->has_last_seen) {
        return strdup("never");
    }
    if (asprintf(&out, "%.1fs", (double)st->last_seen_ms_ago / 1000.0) < 0) {
        return NULL;
    }
    return out;
}

static char *fmt_services(const struct cd_child_status *st)
{
    size_t len = 1, used = 0;
    if (st->n_services == 0) {
        return strdup("-");
    }
    for (size_t i = 0; i < st->n_services; i++) {
        len += strlen(st->services[i].name) + 7;
    }
    char *out = malloc(len);
    if (out == NULL) {
        return NULL;
    }
    out[0] = '\0';
    for (size_t i = 0; i < st->n_services && used < len; i++) {
        int k =
            snprintf(out + used, len - used, "%s%s:%s", i > 0 ? "," : "",
                     st->services[i].name, st->services[i].up ? "up" : "down");
        if (k < 0) {
            break;
        }
        used += (size_t)k;
    }
    return out;
}

static void child_json(const struct cd_child_status *st)
{
    const struct cd_child_info *in = &st->info;
    printf("{\"id\":%" PRIu64 ",\"hostname\":", in->id);
    json_cstr(in->hostname != NULL ? in->hostname : "");
    fputs(",\"addresses\":[", stdout);
    for (size_t i = 0; i < in->n_addresses; i++) {
        fputs(i > 0 ? "," : "", stdout);
        json_cstr(in->addresses[i]);
    }
    fputs("],\"mac\":", stdout);
    json_cstr(in->mac != NULL ? in->mac : "");
    fputs(",\"os\":", stdout);
    json_cstr(in->os != NULL ? in->os : "");
    fputs(",\"app_version\":", stdout);
    json_cstr(in->app_version != NULL ? in->app_version : "");
    printf(",\"joined_ms\":%" PRIu64 ",\"state\":", in->joined_ms);
    json_cstr(st->state != NULL ? st->state : "");
    if (st->has_last_seen) {
        printf(",\"last_seen_ms_ago\":%" PRIu64, st->last_seen_ms_ago);
    }
    printf(",\"revision\":%" PRIu64 ",\"lag\":%" PRIu64
           ",\"staleness_ms\":%" PRIu64 ",\"services\":[",
           st->revision, st->lag, st->staleness_ms);
    for (size_t i = 0; i < st->n_services; i++) {
        fputs(i > 0 ? "," : "", stdout);
        fputs("{\"name\":", stdout);
        json_cstr(st->services[i].name);
        printf(",\"up\":%s", st->services[i].up ? "true" : "false");
        if (st->services[i].detail != NULL) {
            fputs(",\"detail\":", stdout);
            json_cstr(st->services[i].detail);
        }
        fputs("}", stdout);
    }
    fputs("]}", stdout);
}

static int children_main(int argc, char **argv)
{
    static const char *const header[] = {"ID",        "HOSTNAME", "STATE",
                                         "LAST-SEEN", "REVISION", "LAG",
                                         "ADDRESS",   "SERVICES"};
    struct table t = {.n_cols = 8, .header = header};
    char *pos[1];
    int n;
    struct cd_client *c;
    struct cd_msg req, resp;
    int rc = parse_args("children", argc, argv, NULL, pos, 0, &n);

    if (rc < 0) {
        fputs(children_help, stdout);
        return EXIT_OK;
    }
    if (rc != 0) {
        return rc;
    }
    if ((rc = open_client(&c)) != 0) {
        return rc;
    }
    memset(&req, 0, sizeof req);
    req.type = CD_MSG_CHILDREN;
    rc = cd_client_call(c, &req, &resp);
    cd_client_close(c);
    if (rc != 0) {
        return fail("children", rc, 0);
    }
    if (g.json) {
        printf("{\"revision\":%" PRIu64 ",\"children\":[",
               resp.u.children_resp.revision);
        for (size_t i = 0; i < resp.u.children_resp.n_children; i++) {
            fputs(i > 0 ? "," : "", stdout);
            child_json(&resp.u.children_resp.children[i]);
        }
        fputs("]}\n", stdout);
    } else {
        for (size_t i = 0; i < resp.u.children_resp.n_children; i++) {
            const struct cd_child_status *st =
                &resp.u.children_resp.children[i];
            char *cells[8] = {
                fmt_u64(st->info.id),
                dup_or_dash(st->info.hostname),
                dup_or_dash(st->state),
                fmt_ago(st),
                st->has_last_seen ? fmt_u64(st->revision) : strdup("-"),
                st->has_last_seen ? fmt_u64(st->lag) : strdup("-"),
                dup_or_dash(st->info.n_addresses > 0 ? st->info.addresses[0]
                                                     : NULL),
                fmt_services(st),
            };
            table_add(&t, cells);
        }
        rc = table_print(&t);
    }
    table_free(&t);
    codec_msg_free(&resp);
    return rc != 0 ? fail("children", rc, 0) : EXIT_OK;
}

/* --- member, leader ---------------------------------------------------- */

static const char member_help[] =
    "usage: clusterctl member add ADDR [--api ADDR] [--token TOKEN | "
    "--token-file FILE]\n"
    "       clusterctl member remove ID\n"
    "       clusterctl member promote ID\n"
    "       clusterctl member demote ID\n"
    "\n"
    "Change the cluster's parents (IDs as 'clusterctl members' shows them).\n"
    "\n"
    "  add      add the parent whose raft address is ADDR (host:port) as a\n"
    "           spare; the leader then promotes it as the configured number\n"
    "           of voters needs.  --api is its API address (host:port), for\n"
    "           clients sent to it when it leads.  A join token is needed:\n"
    "           the first leader writes one to <data>/join-token\n"
    "  remove   take parent ID out of the cluster (stop it afterwards)\n"
    "  promote  make parent ID a voter\n"
    "  demote   make voter ID a standby: it keeps replicating but no longer\n"
    "           counts for the majority\n"
    "\n"
    "One change at a time: CD_EBUSY means another is under way; retry.\n"
    "A change whose answer was lost (CD_ETIMEOUT) is not retried by itself:\n"
    "check 'clusterctl members' before repeating it.\n";

/* CD_ENOTFOUND from a membership call is about a member, not a key: say
 * so, and keep exit status 3 for keys. */
static int not_a_member(void)
{
    fprintf(stderr,
            "clusterctl: no such member, or no voter to hand "
            "leadership to (clusterctl members)\n");
    return EXIT_FAIL;
}

static int read_token_file(const char *file, char *buf, size_t size)
{
    FILE *f = fopen(file, "r");
    size_t n;

    if (f == NULL) {
        return -errno;
    }
    n = fread(buf, 1, size - 1, f);
    fclose(f);
    buf[n] = '\0';
    buf[strcspn(buf, " \t\r\n")] = '\0';
    return buf[0] != '\0' ? 0 : -EINVAL;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* How long 'leave' keeps asking while the leader is busy with another
 * membership change, or changed hands under the request: --timeout, else
 * this. */
#define BUSY_WAIT_MS 15000u

/* One membership change.  retry (a removal: the same request again means
 * the same thing, ids are never reused): CD_EBUSY (another change under
 * way) and CD_ELEADERLOST (the leader changed before the answer) are asked
 * again every 200 ms until --timeout (BUSY_WAIT_MS without one); after a
 * lost answer, CD_ENOTFOUND means the first attempt did it.  Without
 * retry, the first answer is the answer. */
static int member_change(const char *what,
                         struct cd_msg *req,
                         const char *done_msg,
                         int retry)
{
    struct cd_client *c;
    struct cd_msg resp;
    int rc = open_client(&c);
    int lost = 0;
    uint64_t deadline =
        mono_ms() + (g.timeout_ms != 0 ? g.timeout_ms : BUSY_WAIT_MS);

    if (rc != 0) {
        return rc;
    }
    req->type = CD_MSG_MEMBER_CHANGE;
    for (;;) {
        rc = cd_client_call(c, req, &resp);
        if (rc == CD_ENOTFOUND && lost) {
            rc = 0; /* the attempt whose answer was lost removed it */
            memset(&resp, 0, sizeof resp);
            break;
        }
        if (!retry || (rc != CD_EBUSY && rc != CD_ELEADERLOST) ||
            mono_ms() + 200 >= deadline) {
            break;
        }
        lost |= rc == CD_ELEADERLOST;
        usleep(200000);
    }
    cd_client_close(c);
    if (rc != 0) {
        int code = fail(what, rc, 0);

        if (rc == CD_ETIMEOUT) {
            fprintf(stderr,
                    "clusterctl: the change may still happen: check "
                    "'clusterctl members' before repeating it\n");
        } else if (rc == -EACCES) {
            fprintf(stderr,
                    "clusterctl: the join token is missing, wrong or "
                    "expired\n");
        } else if (rc == CD_ENOTFOUND) {
            return not_a_member();
        }
        return code;
    }
    if (resp.type == CD_MSG_MEMBERS_RESP && resp.u.members_resp.n_members > 0) {
        const struct cd_member *m = &resp.u.members_resp.members[0];

        if (g.json) {
            member_json(m);
            putchar('\n');
        } else {
            printf("%s: id %" PRIu64 ", role %s\n", done_msg, m->id,
                   role_name(m->role));
        }
    } else if (g.json) {
        puts("{\"ok\":true}");
    } else {
        puts(done_msg);
    }
    codec_msg_free(&resp);
    return EXIT_OK;
}

static int member_add(int argc, char **argv)
{
    char *pos[1];
    int n;
    const char *api = NULL;
    const char *token = NULL;
    const char *token_file = NULL;
    char token_buf[256];
    const struct opt opts[] = {
        {"--api", OPT_VALUE, &api, NULL},
        {"--token", OPT_VALUE, &token, NULL},
        {"--token-file", OPT_VALUE, &token_file, NULL},
        {NULL, 0, NULL, NULL},
    };
    struct cd_msg req;
    int rc = parse_args("member add", argc, argv, opts, pos, 1, &n);

    if (rc < 0) {
        fputs(member_help, stdout);
        return EXIT_OK;
    }
    if (rc != 0) {
        return rc;
    }
    if (n != 1) {
        return usage_error("member add", "expected ADDR");
    }
    if (token_file != NULL) {
        rc = read_token_file(token_file, token_buf, sizeof(token_buf));
        if (rc != 0) {
            char *w = NULL;
            int code;

            if (asprintf(&w, "member add: token file %s", token_file) < 0) {
                w = NULL;
            }
            code = fail(w != NULL ? w : "member add", rc, 0);
            free(w);
            return code;
        }
        token = token_buf;
    }
    memset(&req, 0, sizeof(req));
    req.u.member_change.action = CD_MEMBER_ADD;
    req.u.member_change.address = pos[0];
    req.u.member_change.api_address = api;
    req.u.member_change.token = token;
    return member_change("member add", &req, "member added", 0);
}

static int member_by_id(const char *cmd,
                        int argc,
                        char **argv,
                        enum cd_member_action action,
                        enum cd_member_role role,
                        const char *done_msg)
{
    char *pos[1];
    int n;
    uint64_t id;
    struct cd_msg req;
    char what[32];
    int rc = parse_args(cmd, argc, argv, NULL, pos, 1, &n);

    if (rc < 0) {
        fputs(member_help, stdout);
        return EXIT_OK;
    }
    if (rc != 0) {
        return rc;
    }
    if (n != 1 || parse_u64(pos[0], &id) != 0 || id == 0) {
        return usage_error(cmd, "expected a member ID (clusterctl members)");
    }
    memset(&req, 0, sizeof(req));
    req.u.member_change.action = action;
    req.u.member_change.id = id;
    req.u.member_change.role = role;
    snprintf(what, sizeof(what), "%s %" PRIu64, cmd, id);
    return member_change(what, &req, done_msg, 0);
}

static int member_main(int argc, char **argv)
{
    const char *sub = argc > 1 ? argv[1] : "";

    if (strcmp(sub, "add") == 0) {
        return member_add(argc - 1, argv + 1);
    }
    if (strcmp(sub, "remove") == 0) {
        return member_by_id("member remove", argc - 1, argv + 1,
                            CD_MEMBER_REMOVE, CD_ROLE_UNSET, "member removed");
    }
    if (strcmp(sub, "promote") == 0) {
        return member_by_id("member promote", argc - 1, argv + 1,
                            CD_MEMBER_ASSIGN, CD_ROLE_VOTER,
                            "member promoted to voter");
    }
    if (strcmp(sub, "demote") == 0) {
        return member_by_id("member demote", argc - 1, argv + 1,
                            CD_MEMBER_ASSIGN, CD_ROLE_STANDBY,
                            "member demoted to standby");
    }
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
        fputs(member_help, stdout);
        return EXIT_OK;
    }
    fputs(member_help, stderr);
    return EXIT_USAGE;
}

static const char leader_help[] =
    "usage: clusterctl leader transfer [ID]\n"
    "\n"
    "Hand leadership (and the VIP) to voter ID, or without ID to the voter\n"
    "that is most up to date; for maintenance of the current leader.\n"
    "Clients see a short pause.  CD_ETIMEOUT: the transfer did not complete\n"
    "(check 'clusterctl status'); it is not retried by itself.\n";

static int leader_main(int argc, char **argv)
{
    char *pos[1];
    int n;
    uint64_t id = 0;
    struct cd_client *c;
    struct cd_msg req;
    struct cd_msg resp;
    int rc;

    if (argc < 2 || strcmp(argv[1], "transfer") != 0) {
        int help = argc > 1 && (strcmp(argv[1], "--help") == 0 ||
                                strcmp(argv[1], "-h") == 0);

        fputs(leader_help, help ? stdout : stderr);
        return help ? EXIT_OK : EXIT_USAGE;
    }
    rc = parse_args("leader transfer", argc - 1, argv + 1, NULL, pos, 1, &n);
    if (rc < 0) {
        fputs(leader_help, stdout);
        return EXIT_OK;
    }
    if (rc != 0) {
        return rc;
    }
    if (n == 1 && (parse_u64(pos[0], &id) != 0 || id == 0)) {
        return usage_error("leader transfer", "ID is a member id");
    }
    rc = open_client(&c);
    if (rc != 0) {
        return rc;
    }
    memset(&req, 0, sizeof(req));
    req.type = CD_MSG_TRANSFER;
    req.u.transfer.to = id;
    rc = cd_client_call(c, &req, &resp);
    cd_client_close(c);
    if (rc != 0) {
        int code = fail("leader transfer", rc, 0);

        return rc == CD_ENOTFOUND ? not_a_member() : code;
    }
    codec_msg_free(&resp);
    if (g.json) {
        puts("{\"ok\":true}");
    } else {
        puts("leadership transferred");
    }
    return EXIT_OK;
}

/* --- snapshot ---------------------------------------------------------- */

static const char snapshot_help[] =
    "usage: clusterctl snapshot save FILE\n"
    "       clusterctl snapshot verify FILE...\n"
    "\n"
    "save: write a backup of the cluster's data to FILE.  It is written as\n"
    "FILE.part, synced, verified, then renamed, so FILE is never a partial\n"
    "or damaged backup.  ('-' streams it to stdout, unverified.)\n"
    "\n"
    "verify: check backups offline (no cluster needed): framing, length,\n"
    "CRC-32, that the store inside opens, and its records; print each one's\n"
    "cluster id, history epoch, revision, keys and size.  Exit status 0 if\n"
    "all are sound, 1 if not (the message says what is wrong).\n"
    "\n"
    "Restore a backup into a new cluster with\n"
    "'clusterd --bootstrap --restore FILE' (clusterd(8)).\n";

/* "2026-12-06T04:00:00Z" for a time in ms since the epoch ("-" for 0). */
static void fmt_utc(uint64_t ms, char *out, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;

    if (ms == 0 || gmtime_r(&t, &tm) == NULL ||
        strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
        snprintf(out, len, "-");
    }
}

/* The directory part of path ("." when it has none), for scratch files
 * next to a backup. */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');

    if (slash == NULL) {
        return strdup(".");
    }
    if (slash == path) {
        return strdup("/");
    }
    return strndup(path, (size_t)(slash - path));
}

static void print_backup_info(const char *file,
                              const struct clusterd_backup_info *b,
                              long long file_bytes,
                              int saved)
{
    char when[32];

    fmt_utc(b->updated_ms, when, sizeof(when));
    if (g.json) {
        fputs("{\"file\":", stdout);
        json_cstr(file);
        printf(",\"ok\":true,\"cluster_id\":\"%016" PRIx64
               "\",\"epoch\":\"%016" PRIx64 "\",\"revision\":%" PRIu64
               ",\"compact_revision\":%" PRIu64 ",\"keys\":%" PRIu64
               ",\"bytes\":%lld,\"store_bytes\":%" PRIu64
               ",\"crc32\":\"%08x\",\"last_change_ms\":%" PRIu64
               ",\"format\":%u}\n",
               b->cluster_id, b->epoch, b->revision, b->compact_rev, b->keys,
               file_bytes, b->bytes, b->crc32, b->updated_ms, b->format);
        return;
    }
    printf("%s %s: ok\n", saved ? "saved" : "backup", file);
    printf("cluster id     %016" PRIx64 "\n", b->cluster_id);
    printf("history epoch  %016" PRIx64 "\n", b->epoch);
    printf("revision       %" PRIu64 "\n", b->revision);
    printf("compacted to   %" PRIu64 "\n", b->compact_rev);
    printf("keys           %" PRIu64 "\n", b->keys);
    printf("size           %lld bytes (store %" PRIu64 " bytes, crc32 %08x)\n",
           file_bytes, b->bytes, b->crc32);
    printf("last change    %s\n", when);
    printf("format         %u\n", b->format);
}

static int snapshot_verify(const char *file)
{
    struct clusterd_backup_info b;
    struct stat st;
    char *what = NULL;
    int rc;

    /* The check copies the store inside to a scratch file: the default
     * ($TMPDIR or /tmp) works for read-only media too. */
    rc = clusterd_backup_verify(strcmp(file, "-") == 0 ? "/dev/stdin" : file,
                                NULL, &b);
    if (rc != 0) {
        if (asprintf(&what, "snapshot verify %s", file) < 0) {
            what = NULL;
        }
        rc = fail(what != NULL ? what : "snapshot verify", rc, 0);
        free(what);
        /* A damaged backup is a failed check, never "unavailable". */
        return rc == EXIT_UNAVAILABLE ? EXIT_FAIL : rc;
    }
    if (strcmp(file, "-") == 0 || stat(file, &st) != 0) {
        st.st_size = -1;
    }
    /* A blank line between the reports of several files. */
    static int shown;
    if (shown++ && !g.json) {
        putchar('\n');
    }
    print_backup_info(file, &b, (long long)st.st_size, 0);
    return EXIT_OK;
}

static int snapshot_save(const char *file)
{
    struct clusterd_backup_info b;
    struct cd_client *c;
    struct stat st;
    uint64_t rev = 0;
    char *part = NULL, *dir = NULL;
    int fd;
    int rc = open_client(&c);

    if (rc != 0) {
        return rc;
    }
    if (strcmp(file, "-") == 0) {
        rc = cd_client_snapshot(c, STDOUT_FILENO, &rev);
        cd_client_close(c);
        if (rc != 0) {
            return fail("snapshot save", rc, 0);
        }
        /* stdout is the snapshot: the report goes to stderr. */
        fprintf(stderr,
                "snapshot streamed at revision %" PRIu64
                " (not verified: check the file with 'clusterctl snapshot "
                "verify')\n",
                rev);
        return EXIT_OK;
    }
    dir = dir_of(file);
    if (dir == NULL || asprintf(&part, "%s.part", file) < 0) {
        part = NULL;
        fd = -1;
        errno = ENOMEM;
    } else {
        fd = open(part, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    }
    if (fd < 0) {
        rc = -errno;
        fprintf(stderr, "clusterctl: snapshot save: cannot create %s: %s\n",
                part != NULL ? part : file, cd_strerror(rc));
        free(part);
        free(dir);
        cd_client_close(c);
        return EXIT_FAIL;
    }
    rc = cd_client_snapshot(c, fd, &rev);
    cd_client_close(c);
    if (rc == 0 && fsync(fd) != 0) {
        rc = -errno;
    }
    if (rc == 0 && fstat(fd, &st) != 0) {
        rc = -errno;
    }
    close(fd);
    /* What reached the disk is checked before it takes the name FILE. */
    if (rc == 0) {
        rc = clusterd_backup_verify(part, dir, &b);
    }
    if (rc == 0) {
        rc = fd_rename_synced(part, file);
    }
    if (rc != 0) {
        unlink(part);
    }
    free(part);
    free(dir);
    if (rc != 0) {
        return fail("snapshot save", rc, 0);
    }
    print_backup_info(file, &b, (long long)st.st_size, 1);
    return EXIT_OK;
}

#define VERIFY_MAX_FILES 1024

static int snapshot_main(int argc, char **argv)
{
    char *pos[VERIFY_MAX_FILES];
    int n;
    int rc;
    int verify = argc >= 2 && strcmp(argv[1], "verify") == 0;
    const char *cmd = verify ? "snapshot verify" : "snapshot save";

    if (argc < 2 || (!verify && strcmp(argv[1], "save") != 0)) {
        int help = argc > 1 && (strcmp(argv[1], "--help") == 0 ||
                                strcmp(argv[1], "-h") == 0);

        fputs(snapshot_help, help ? stdout : stderr);
        return help ? EXIT_OK : EXIT_USAGE;
    }
    rc = parse_args(cmd, argc - 1, argv + 1, NULL, pos,
                    verify ? VERIFY_MAX_FILES : 1, &n);
    if (rc < 0) {
        fputs(snapshot_help, stdout);
        return EXIT_OK;
    }
    if (rc != 0) {
        return rc;
    }
    if (n < 1) {
        return usage_error(cmd, verify ? "expected FILE..." : "expected FILE");
    }
    if (!verify) {
        return snapshot_save(pos[0]);
    }
    /* Each file is checked, a failure does not stop the others; the
     * status is the worst. */
    rc = EXIT_OK;
    for (int i = 0; i < n; i++) {
        int one = snapshot_verify(pos[i]);

        rc = one != EXIT_OK ? one : rc;
    }
    return rc;
}

/* --- backup ------------------------------------------------------------ */

static const char backup_help[] =
    "usage: clusterctl backup schedule --every DURATION --dir DIR\n"
    "                                  [--retain N] [--at HH:MM] [--now]\n"
    "       clusterctl backup schedule --off\n"
    "       clusterctl backup status\n"
    "       clusterctl backup now\n"
    "\n"
    "Backups the leader takes by itself, configured in the cluster's store\n"
    "(so that any leader follows the schedule).  Each is the store's\n"
    "snapshot, written into DIR on the parent that leads at the time as\n"
    "clusterd-<cluster>-<UTC time>-r<revision>.snap: aside first, synced,\n"
    "checked, then renamed.  Beyond N (--retain; 0: keep all) the oldest of\n"
    "this cluster in DIR are deleted.\n"
    "\n"
    "  --every DURATION  30s, 15m, 6h, 1d or seconds; 0 or --off: none\n"
    "  --at HH:MM        align on this time of day (the leader's local time),\n"
    "                    then every DURATION; without it the first backup is\n"
    "                    taken at once\n"
    "  --now             also take one now\n"
    "\n"
    "status: the schedule, the next backup, the last one (by any leader)\n"
    "and the last one that worked.  now: take one at once into the\n"
    "schedule's directory and wait for it (exit status 1 if it failed).\n";

/* "30s", "15m", "6h", "1d", "90": seconds. */
static int parse_duration(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;
    uint64_t unit = 1;

    if (s == NULL || s[0] < '0' || s[0] > '9') {
        return -EINVAL;
    }
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0) {
        return -EINVAL;
    }
    if (strcmp(end, "m") == 0) {
        unit = 60;
    } else if (strcmp(end, "h") == 0) {
        unit = 3600;
    } else if (strcmp(end, "d") == 0) {
        unit = 86400;
    } else if (strcmp(end, "s") != 0 && end[0] != '\0') {
        return -EINVAL;
    }
    if (v > UINT64_MAX / unit) {
        return -EINVAL;
    }
    *out = v * unit;
    return 0;
}

/* "1d", "6h", "90m", "45s": the largest unit that divides it. */
static void fmt_duration(uint64_t s, char *out, size_t len)
{
    if (s != 0 && s % 86400 == 0) {
        snprintf(out, len, "%" PRIu64 "d", s / 86400);
    } else if (s != 0 && s % 3600 == 0) {
        snprintf(out, len, "%" PRIu64 "h", s / 3600);
    } else if (s != 0 && s % 60 == 0) {
        snprintf(out, len, "%" PRIu64 "m", s / 60);
    } else {
        snprintf(out, len, "%" PRIu64 "s", s);
    }
}

static uint64_t wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* backup_call() could not even set up a client (open_client said why). */
#define NO_CLIENT INT_MIN

/* One BACKUP request; the reply (OK or BACKUP_RESP) goes to *resp. */
static int backup_call(const struct cd_msg *req, struct cd_msg *resp)
{
    struct cd_client *c;
    struct cd_msg r = *req;
    int rc = open_client(&c);

    if (rc != 0) {
        return NO_CLIENT;
    }
    rc = cd_client_call(c, &r, resp);
    cd_client_close(c);
    return rc;
}

static int backup_status_of(struct cd_msg *resp)
{
    struct cd_msg req;

    memset(&req, 0, sizeof(req));
    req.type = CD_MSG_BACKUP;
    return backup_call(&req, resp);
}

static void json_schedule(const struct cd_backup_schedule *bs)
{
    printf("{\"interval_s\":%" PRIu64 ",\"retain\":%u,\"dir\":", bs->interval_s,
           bs->retain);
    json_cstr(bs->dir);
    if (bs->has_at) {
        printf(",\"at\":\"%02u:%02u\"", bs->at_minute / 60, bs->at_minute % 60);
    } else {
        fputs(",\"at\":null", stdout);
    }
    printf(",\"set_ms\":%" PRIu64 "}", bs->set_ms);
}

static void json_result(const struct cd_backup_result *br)
{
    printf("{\"time_ms\":%" PRIu64 ",\"ok\":%s,\"node_id\":%" PRIu64
           ",\"file\":",
           br->time_ms, br->ok ? "true" : "false", br->node_id);
    json_cstr(br->file[0] != '\0' ? br->file : NULL);
    printf(",\"revision\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"keys\":%" PRIu64
           ",\"duration_ms\":%" PRIu64 ",\"error\":",
           br->revision, br->bytes, br->keys, br->duration_ms);
    json_cstr(br->error[0] != '\0' ? br->error : NULL);
    printf(",\"failures\":%u,\"pruned\":%u,\"last_ok_ms\":%" PRIu64
           ",\"last_ok_file\":",
           br->failures, br->pruned, br->last_ok_ms);
    json_cstr(br->last_ok_file[0] != '\0' ? br->last_ok_file : NULL);
    putchar('}');
}

static void print_backup_status(const struct cd_msg *m)
{
    const struct cd_backup_schedule *bs = &m->u.backup_resp.schedule;
    const struct cd_backup_result *br = &m->u.backup_resp.last;
    char t1[32], t2[32], every[32];

    if (g.json) {
        fputs("{\"schedule\":", stdout);
        if (m->u.backup_resp.has_schedule) {
            json_schedule(bs);
        } else {
            fputs("null", stdout);
        }
        fputs(",\"last\":", stdout);
        if (m->u.backup_resp.has_last) {
            json_result(br);
        } else {
            fputs("null", stdout);
        }
        printf(",\"next_ms\":%" PRIu64 ",\"running\":%s}\n",
               m->u.backup_resp.next_ms,
               m->u.backup_resp.running ? "true" : "false");
        return;
    }
    if (!m->u.backup_resp.has_schedule || bs->interval_s == 0) {
        fputs("schedule     none", stdout);
        if (m->u.backup_resp.has_schedule && bs->dir[0] != '\0') {
            printf(" ('backup now' writes into %s)", bs->dir);
        }
        putchar('\n');
    } else {
        fmt_duration(bs->interval_s, every, sizeof(every));
        printf("schedule     every %s", every);
        if (bs->has_at) {
            printf(" from %02u:%02u (the leader's local time)",
                   bs->at_minute / 60, bs->at_minute % 60);
        }
        if (bs->retain == 0) {
            printf(", keep all, into %s on the leader\n", bs->dir);
        } else {
            printf(", keep %u, into %s on the leader\n", bs->retain, bs->dir);
        }
    }
    if (m->u.backup_resp.next_ms != 0) {
        uint64_t now = wall_ms();
        uint64_t next = m->u.backup_resp.next_ms;

        fmt_utc(next, t1, sizeof(t1));
        if (next > now) {
            uint64_t in = (next - now + 999) / 1000;

            if (in >= 3600) {
                snprintf(every, sizeof(every), "%" PRIu64 "h%02" PRIu64 "m",
                         in / 3600, in % 3600 / 60);
            } else if (in >= 60) {
                snprintf(every, sizeof(every), "%" PRIu64 "m%02" PRIu64 "s",
                         in / 60, in % 60);
            } else {
                snprintf(every, sizeof(every), "%" PRIu64 "s", in);
            }
            printf("next         %s (in %s)\n", t1, every);
        } else {
            printf("next         due now\n");
        }
    }
    printf("running      %s\n", m->u.backup_resp.running ? "yes" : "no");
    if (!m->u.backup_resp.has_last) {
        puts("last         none yet");
        return;
    }
    fmt_utc(br->time_ms, t1, sizeof(t1));
    if (br->ok) {
        printf("last         %s  ok, by node %" PRIu64 ", in %.1f s\n", t1,
               br->node_id, (double)br->duration_ms / 1000);
        printf("file         %s\n", br->file);
        printf("             revision %" PRIu64 ", %" PRIu64 " keys, %" PRIu64
               " bytes; %u older deleted\n",
               br->revision, br->keys, br->bytes, br->pruned);
        if (br->error[0] != '\0') {
            printf("warning      %s\n", br->error);
        }
        return;
    }
    printf("last         %s  FAILED, by node %" PRIu64 " (%u in a row)\n", t1,
           br->node_id, br->failures);
    printf("error        %s\n", br->error);
    fmt_utc(br->last_ok_ms, t2, sizeof(t2));
    printf("last ok      %s  %s\n", br->last_ok_ms != 0 ? t2 : "never",
           br->last_ok_file);
}

static int backup_status_main(void)
{
    struct cd_msg resp;
    int rc = backup_status_of(&resp);

    if (rc != 0) {
        return rc == NO_CLIENT ? EXIT_FAIL : fail("backup status", rc, 0);
    }
    print_backup_status(&resp);
    codec_msg_free(&resp);
    return EXIT_OK;
}

/* Take one now and wait (within --timeout) for its result. */
static int backup_now_main(void)
{
    struct cd_msg req, resp;
    uint64_t asked = wall_ms();
    uint64_t deadline = asked + (g.timeout_ms != 0 ? g.timeout_ms : 15000u) +
                        60000u; /* a large store takes a while to copy */
    int rc;

    memset(&req, 0, sizeof(req));
    req.type = CD_MSG_BACKUP;
    req.u.backup.now = 1;
    rc = backup_call(&req, &resp);
    if (rc == -ENOENT) {
        fprintf(stderr,
                "clusterctl: backup now: no backup directory: set "
                "one with 'clusterctl backup schedule'\n");
        return EXIT_FAIL;
    }
    if (rc != 0) {
        return rc == NO_CLIENT ? EXIT_FAIL : fail("backup now", rc, 0);
    }
    /* Its result is the first one recorded after the request (the leader's
     * clock, which a few ms of skew could put before ours). */
    while (resp.u.backup_resp.running || !resp.u.backup_resp.has_last ||
           resp.u.backup_resp.last.time_ms + 1000 < asked) {
        codec_msg_free(&resp);
        if (wall_ms() > deadline) {
            fprintf(stderr,
                    "clusterctl: backup now: no result in time; see "
                    "'clusterctl backup status'\n");
            return EXIT_UNAVAILABLE;
        }
        usleep(100000);
        rc = backup_status_of(&resp);
        if (rc != 0) {
            return rc == NO_CLIENT ? EXIT_FAIL : fail("backup now", rc, 0);
        }
    }
    print_backup_status(&resp);
    rc = resp.u.backup_resp.last.ok ? EXIT_OK : EXIT_FAIL;
    codec_msg_free(&resp);
    return rc;
}

static int backup_schedule_main(int argc, char **argv)
{
    const char *every = NULL, *dir = NULL, *retain = NULL, *at = NULL;
    int off = 0, now = 0;
    char *pos[1];
    int n;
    uint64_t v;
    struct cd_msg req, resp;
    const struct opt opts[] = {
        {"--every", OPT_VALUE, &every, NULL},
        {"--dir", OPT_VALUE, &dir, NULL},
        {"--retain", OPT_VALUE, &retain, NULL},
        {"--at", OPT_VALUE, &at, NULL},
        {"--off", OPT_FLAG, NULL, &off},
        {"--now", OPT_FLAG, NULL, &now},
        {NULL, 0, NULL, NULL},
    };
    int rc = parse_args("backup schedule", argc, argv, opts, pos, 0, &n);

    if (rc < 0) {
        fputs(backup_help, stdout);
        return EXIT_OK;
    }
    if (rc != 0) {
        return rc;
    }
    memset(&req, 0, sizeof(req));
    req.type = CD_MSG_BACKUP;
    req.u.backup.has_schedule = 1;
    struct cd_backup_schedule *bs = &req.u.backup.schedule;
    if (off) {
        if (every != NULL || at != NULL) {
            return usage_error("backup schedule", "--off goes alone");
        }
        /* Keep the directory (and retention) for `backup now`. */
        rc = backup_status_of(&resp);
        if (rc != 0) {
            return rc == NO_CLIENT ? EXIT_FAIL : fail("backup schedule", rc, 0);
        }
        if (resp.u.backup_resp.has_schedule) {
            *bs = resp.u.backup_resp.schedule;
        }
        codec_msg_free(&resp);
        bs->interval_s = 0;
        bs->has_at = 0;
    } else {
        if (every == NULL || parse_duration(every, &bs->interval_s) != 0) {
            return usage_error("backup schedule",
                               "--every takes a duration: 30s, 15m, 6h, 1d");
        }
        if (dir == NULL || dir[0] != '/' || strlen(dir) >= sizeof(bs->dir)) {
            return usage_error("backup schedule",
                               "--dir takes an absolute directory");
        }
        snprintf(bs->dir, sizeof(bs->dir), "%s", dir);
    }
    if (retain != NULL) {
        if (parse_u64(retain, &v) != 0 || v > 100000) {
            return usage_error("backup schedule",
                               "--retain takes a count (0: keep all)");
        }
        bs->retain = (uint32_t)v;
    }
    if (at != NULL) {
        uint64_t hh, mm;
        char hh_s[3] = {0}, mm_s[3] = {0};

        if (strlen(at) != 5 || at[2] != ':') {
            return usage_error("backup schedule", "--at takes HH:MM");
        }
        memcpy(hh_s, at, 2);
        memcpy(mm_s, at + 3, 2);
        if (parse_u64_base(hh_s, 10, &hh) != 0 ||
            parse_u64_base(mm_s, 10, &mm) != 0 || hh > 23 || mm > 59) {
            return usage_error("backup schedule", "--at takes HH:MM");
        }
        bs->has_at = 1;
        bs->at_minute = (uint32_t)(hh * 60 + mm);
    }
    rc = backup_call(&req, &resp);
    if (rc != 0) {
        if (rc == -EINVAL) {
            fprintf(stderr,
                    "clusterctl: backup schedule: refused by the "
                    "leader (its log says why)\n");
            return EXIT_FAIL;
        }
        return rc == NO_CLIENT ? EXIT_FAIL : fail("backup schedule", rc, 1);
    }
    codec_msg_free(&resp);
    return now ? backup_now_main() : backup_status_main();
}

static int backup_main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "schedule") == 0) {
        return backup_schedule_main(argc - 1, argv + 1);
    }
    if (argc >= 2 &&
        (strcmp(argv[1], "status") == 0 || strcmp(argv[1], "now") == 0)) {
        char *pos[1];
        int n;
        int rc = parse_args(argv[1][0] == 's' ? "backup status" : "backup now",
                            argc - 1, argv + 1, NULL, pos, 0, &n);

        if (rc < 0) {
            fputs(backup_help, stdout);
            return EXIT_OK;
        }
        if (rc != 0) {
            return rc;
        }
        return argv[1][0] == 's' ? backup_status_main() : backup_now_main();
    }
    int help = argc > 1 &&
               (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0);

    fputs(backup_help, help ? stdout : stderr);
    return help ? EXIT_OK : EXIT_USAGE;
}

/* --- token, join, leave ------------------------------------------------ */

static const char token_help[] =
    "usage: clusterctl token create [--ttl SECONDS]\n"
    "\n"
    "Make a join token valid SECONDS seconds (default 3600).  A new parent\n"
    "presents it once, when it joins; the cluster stores only its SHA-256.\n"
    "The first token of a new cluster is in <data>/join-token on the first\n"
    "parent.\n";

static int token_main(int argc, char **argv)
{
    char *pos[1];
    int n;
    const char *ttl_s = NULL;
    uint64_t ttl = 3600;
    const struct opt opts[] = {
        {"--ttl", OPT_VALUE, &ttl_s, NULL},
        {NULL, 0, NULL, NULL},
    };
    int rc = parse_args("token", argc, argv, opts, pos, 1, &n);

    if (rc < 0) {
        fputs(token_help, stdout);
        return EXIT_OK;
    }
    if (rc != 0) {
        return rc;
    }
    if (n != 1 || strcmp(pos[0], "create") != 0) {
        return usage_error("token", "expected 'create'");
    }
    if (ttl_s != NULL &&
        (parse_u64(ttl_s, &ttl) != 0 || ttl == 0 || ttl > 31536000)) {
        return usage_error("token", "--ttl expects 1..31536000 seconds");
    }
    struct cd_client *c;
    struct cd_msg req, resp;
    if ((rc = open_client(&c)) != 0) {
        return rc;
    }
    memset(&req, 0, sizeof(req));
    req.type = CD_MSG_TOKEN;
    req.u.token.ttl_s = (uint32_t)ttl;
    rc = cd_client_call(c, &req, &resp);
    cd_client_close(c);
    if (rc != 0) {
        return fail("token create", rc, 0);
    }
    if (g.json) {
        printf("{\"token\":");
        json_cstr(resp.u.token_resp.token);
        printf(",\"expires_ms\":%" PRIu64 "}\n", resp.u.token_resp.expires_ms);
    } else {
        printf("%s\n", resp.u.token_resp.token);
    }
    codec_msg_free(&resp);
    return EXIT_OK;
}

static const char join_help[] =
    "usage: clusterctl --endpoints A,B,.. join --token TOKEN\n"
    "                  [--config FILE] [--raft ADDR] [--api ADDR] "
    "[--data DIR]\n"
    "\n"
    "Prepare this host's clusterd to join the cluster at --endpoints: set\n"
    "join, token (and the addresses or data directory given) in its\n"
    "configuration file (default /etc/clusterd/clusterd.conf), keeping\n"
    "every other setting.  Then start clusterd (systemctl start clusterd):\n"
    "on its first start it joins, gets its id from the cluster, catches up\n"
    "and is promoted to voter or standby by itself.\n"
    "\n"
    "       clusterctl --endpoints VIP,A,B,.. join --child --token TOKEN\n"
    "                  [--data DIR] [--app-version V]\n"
    "\n"
    "Register this host as a child now: the cluster assigns its id and\n"
    "records its hostname, addresses, MAC, OS and version under\n"
    "/cluster/children/<id>; the identity is kept in DIR/child (default\n"
    "/var/lib/clusterd).  Then start clusterd-child, which follows the\n"
    "parents into DIR/cache.mdb.\n";

/* Set key = value in a "key = value" file, keeping every other line. */
static int conf_set_all(const char *path,
                        const char *const *keys,
                        const char *const *values,
                        size_t n)
{
    FILE *in = fopen(path, "r");
    char tmp[4200];
    char line[1024];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *out = fopen(tmp, "w");
    if (out == NULL) {
        int e = errno;
        if (in != NULL) {
            fclose(in);
        }
        return -e;
    }
    while (in != NULL && fgets(line, sizeof(line), in) != NULL) {
        const char *p = line;
        int replaced = 0;
        while (*p == ' ' || *p == '\t') {
            p++;
        }
        for (size_t i = 0; i < n; i++) {
            size_t kl = strlen(keys[i]);
            if (values[i] != NULL && strncmp(p, keys[i], kl) == 0 &&
                (p[kl] == ' ' || p[kl] == '\t' || p[kl] == '=')) {
                replaced = 1;
            }
        }
        if (!replaced) {
            fputs(line, out);
        }
    }
    if (in != NULL) {
        fclose(in);
    }
    for (size_t i = 0; i < n; i++) {
        if (values[i] != NULL) {
            fprintf(out, "%s = %s\n", keys[i], values[i]);
        }
    }
    if (fflush(out) != 0 || fsync(fileno(out)) != 0) {
        int e = errno;
        fclose(out);
        return -e;
    }
    fclose(out);
    return rename(tmp, path) == 0 ? 0 : -errno;
}

/* join --child: register this host now, and keep its identity. */
static int join_child(const char *token, const char *data, const char *app)
{
    struct cd_client *c;
    struct cd_child_identity id;
    const char *dir = data != NULL ? data : "/var/lib/clusterd";
    int rc = cd_child_identity_load(dir, &id);
    if (rc == 0) {
        fprintf(stderr,
                "clusterctl join: %s already holds child %" PRIu64
                " of cluster %016" PRIx64
                "; 'clusterctl leave --child' first, or wipe it\n",
                dir, id.child_id, id.cluster_id);
        return EXIT_FAIL;
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        return fail(dir, -errno, 0);
    }
    if ((rc = open_client(&c)) != 0) {
        return rc;
    }
    memset(&id, 0, sizeof id);
    rc = cd_client_child_join(c, token, app, &id);
    cd_client_close(c);
    if (rc != 0) {
        return fail("join --child", rc, 1);
    }
    snprintf(id.endpoints, sizeof id.endpoints, "%s", g.endpoints_csv);
    rc = cd_child_identity_save(dir, &id);
    if (rc != 0) {
        fprintf(stderr,
                "clusterctl join: registered as child %" PRIu64
                " but could not write %s/child\n",
                id.child_id, dir);
        return fail(dir, rc, 0);
    }
    if (g.json) {
        printf("{\"child_id\":%" PRIu64 ",\"cluster_id\":\"%016" PRIx64
               "\",\"registered_rev\":%" PRIu64 ",\"data\":",
               id.child_id, id.cluster_id, id.registered_rev);
        json_cstr(dir);
        printf("}\n");
    } else {
        printf("registered as child %" PRIu64 " of cluster %016" PRIx64
               " (identity in %s/child)\n"
               "next: systemctl start clusterd-child   (or: clusterd-child "
               "--data %s)\n",
               id.child_id, id.cluster_id, dir, dir);
    }
    return EXIT_OK;
}

static int join_main(int argc, char **argv)
{
    char *pos[1];
    int n;
    int child = 0;
    const char *token = NULL;
    const char *app = NULL;
    const char *config = "/etc/clusterd/clusterd.conf";
    const char *raft = NULL, *api = NULL, *data = NULL;
    const struct opt opts[] = {
        {"--child", OPT_FLAG, NULL, &child},
        {"--app-version", OPT_VALUE, &app, NULL},
        {"--token", OPT_VALUE, &token, NULL},
        {"--config", OPT_VALUE, &config, NULL},
        {"--raft", OPT_VALUE, &raft, NULL},
        {"--api", OPT_VALUE, &api, NULL},
        {"--data", OPT_VALUE, &data, NULL},
        {NULL, 0, NULL, NULL},
    };
    int rc = parse_args("join", argc, argv, opts, pos, 1, &n);

    if (rc < 0) {
        fputs(join_help, stdout);
        return EXIT_OK;
    }
    if (rc != 0) {
        return rc;
    }
    if (n != 0 || token == NULL || token[0] == '\0') {
        return usage_error("join", "expected --token TOKEN");
    }
    if (child) {
        return join_child(token, data, app);
    }
    const char *keys[] = {"join", "token", "raft_address", "api_address",
                          "data_dir"};
    const char *values[] = {g.endpoints_csv, token, raft, api, data};
    rc = conf_set_all(config, keys, values, 5);
    if (rc != 0) {
        return fail(config, rc, 0);
    }
    if (g.json) {
        printf("{\"config\":");
        json_cstr(config);
        printf(",\"join\":");
        json_cstr(g.endpoints_csv);
        printf("}\n");
    } else {
        printf(
            "wrote %s: clusterd joins %s on its first start\n"
            "next: systemctl start clusterd   (or: clusterd --config "
            "%s)\n",
            config, g.endpoints_csv, config);
    }
    return EXIT_OK;
}

static const char leave_help[] =
    "usage: clusterctl --endpoints A,B,.. leave [--node ADDR]\n"
    "\n"
    "Take the parent whose API is ADDR (default: the first endpoint) out of\n"
    "the cluster and stop it.  A leader hands leadership over first.  It is\n"
    "refused (CD_EQUORUM) when it would leave fewer live voters than a\n"
    "majority.  While the leader is busy with another membership change\n"
    "(CD_EBUSY), or when leadership changed before the answer\n"
    "(CD_ELEADERLOST), it asks again every 200 ms, up to --timeout (15 s\n"
    "without one).\n"
    "The node's data directory is no longer a member's: wipe it before the\n"
    "host joins again.\n"
    "\n"
    "       clusterctl leave --child [--data DIR | --id ID]\n"
    "\n"
    "Deregister a child: this host's (identity in DIR/child, default\n"
    "/var/lib/clusterd), or child ID (one that is gone for good).  Its\n"
    "clusterd-child stops following; its cache stays readable.  On a host\n"
    "that holds a child identity, a bare 'clusterctl leave' means this.\n";

/* leave --child: deregister a child (this host's, or --id N). */
static int leave_child(const char *data, const char *id_arg)
{
    struct cd_client *c;
    struct cd_msg req, resp;
    struct cd_child_identity id;
    const char *dir = data != NULL ? data : "/var/lib/clusterd";
    int have_file = 0;
    memset(&id, 0, sizeof id);
    if (id_arg != NULL) {
        char *end;
        errno = 0;
        id.child_id = strtoull(id_arg, &end, 10);
        if (errno != 0 || *end != '\0' || id.child_id == 0) {
            return usage_error("leave", "--id takes a child id");
        }
    } else {
        int rc = cd_child_identity_load(dir, &id);
        if (rc != 0) {
            fprintf(stderr, "clusterctl leave: no child identity in %s\n", dir);
            return fail(dir, rc, 0);
        }
        have_file = 1;
    }
    int rc = open_client(&c);
    if (rc != 0) {
        return rc;
    }
    memset(&req, 0, sizeof req);
    req.type = CD_MSG_CHILD_LEAVE;
    req.u.child_leave.child_id = id.child_id;
    rc = cd_client_call(c, &req, &resp);
    cd_client_close(c);
    if (rc == CD_ENOTFOUND) {
        fprintf(stderr,
                "clusterctl leave: child %" PRIu64 " is not registered\n",
                id.child_id);
        return EXIT_FAIL;
    }
    if (rc != 0) {
        return fail("leave --child", rc, 1);
    }
    codec_msg_free(&resp);
    if (have_file) {
        /* Its cache stays readable; the identity is no longer valid. */
        char path[600], old[620];
        snprintf(path, sizeof path, "%s/child", dir);
        snprintf(old, sizeof old, "%s/child.left", dir);
        rename(path, old);
    }
    if (g.json) {
        printf("{\"left\":%" PRIu64 "}\n", id.child_id);
    } else {
        printf("child %" PRIu64
               " deregistered; its clusterd-child stops "
               "following (exit status 3)\n",
               id.child_id);
    }
    return EXIT_OK;
}

static int leave_main(int argc, char **argv)
{
    char *pos[1];
    int n;
    int child = 0;
    const char *node = NULL, *data = NULL, *child_id = NULL;
    const struct opt opts[] = {
        {"--node", OPT_VALUE, &node, NULL},
        {"--child", OPT_FLAG, NULL, &child},
        {"--data", OPT_VALUE, &data, NULL},
        {"--id", OPT_VALUE, &child_id, NULL},
        {NULL, 0, NULL, NULL},
    };
    int rc = parse_args("leave", argc, argv, opts, pos, 1, &n);

    if (rc < 0) {
        fputs(leave_help, stdout);
        return EXIT_OK;
    }
    if (rc != 0) {
        return rc;
    }
    if (n != 0) {
        return usage_error("leave", "unexpected argument");
    }
    if (!child && node == NULL && child_id == NULL) {
        /* On a child host, a bare "leave" means this child, never the
         * parent behind the first endpoint (the VIP: the leader). */
        struct cd_child_identity me;
        child = cd_child_identity_load(
                    data != NULL ? data : "/var/lib/clusterd", &me) == 0;
    }
    if (child || child_id != NULL) {
        return leave_child(data, child_id);
    }
    if (node == NULL) {
        node = g.endpoints[0];
    }
    /* Who is it?  Asked of the node itself, never redirected. */
    const char *one[1] = {node};
    struct cd_client *c;
    struct cd_msg req, resp;
    if ((rc = open_client_with(one, 1, STATUS_TIMEOUT_MS, &c)) != 0) {
        return fail("leave", rc, 0);
    }
    memset(&req, 0, sizeof(req));
    req.type = CD_MSG_STATUS;
    rc = cd_client_call(c, &req, &resp);
    cd_client_close(c);
    if (rc != 0) {
        return fail("leave: status of the node", rc, 0);
    }
    uint64_t id = resp.u.status_resp.id;
    codec_msg_free(&resp);

    /* Removal goes through the cluster (the leader; if the node leads, it
     * hands over and the client retries at the new leader). */
    memset(&req, 0, sizeof(req));
    req.u.member_change.action = CD_MEMBER_REMOVE;
    req.u.member_change.id = id;
    char what[64];
    snprintf(what, sizeof(what), "leave: remove %" PRIu64, id);
    rc = member_change(what, &req, "member removed", 1);
    if (rc != EXIT_OK) {
        return rc;
    }
    /* A removed parent never learns it by itself: stop it. */
    if ((rc = open_client_with(one, 1, STATUS_TIMEOUT_MS, &c)) != 0) {
        return fail("leave", rc, 0);
    }
    memset(&req, 0, sizeof(req));
    req.type = CD_MSG_SHUTDOWN;
    rc = cd_client_call(c, &req, &resp);
    cd_client_close(c);
    if (rc != 0) {
        fail("leave: stop the node", rc, 0);
        fprintf(stderr,
                "clusterctl: node %" PRIu64
                " is removed; stop its "
                "clusterd by hand (systemctl stop clusterd)\n",
                id);
        return EXIT_FAIL;
    }
    codec_msg_free(&resp);
    if (!g.json) {
        printf("node %" PRIu64
               " left the cluster and is stopping; wipe its "
               "data directory before it joins again\n",
               id);
    }
    return EXIT_OK;
}

/* --- main -------------------------------------------------------------- */

static const struct
{
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *help;
} subcommands[] = {
    {"put", put_main, "KEY VALUE: set a key"},
    {"get", get_main, "KEY: print a key's value (--local: from this host)"},
    {"del", del_main, "KEY [--prefix]: delete a key or a prefix"},
    {"range", range_main, "[PREFIX]: list keys and values"},
    {"txn", txn_main, "< SCRIPT: compare-and-set transaction from stdin"},
    {"watch", watch_main, "[PREFIX]: print changes as they happen"},
    {"compact", compact_main, "REV: drop history up to a revision"},
    {"status", status_main, "every endpoint's view: state, leader, revision"},
    {"members", members_main, "the parents, their roles and addresses"},
    {"member", member_main, "add|remove|promote|demote: change the parents"},
    {"leader", leader_main, "transfer [ID]: hand leadership to a voter"},
    {"snapshot", snapshot_main, "save|verify FILE: back up, check a backup"},
    {"backup", backup_main, "schedule|status|now: the scheduled backups"},
    {"token", token_main, "create [--ttl S]: a join token for a new parent"},
    {"join", join_main, "[--child] --token T: make this host join"},
    {"leave", leave_main, "[--node ADDR | --child]: remove a parent or child"},
    {"children", children_main, "the children: state, lag, services"},
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: clusterctl [--endpoints A,B,..] [-o table|json] "
            "[--timeout MS]\n"
            "                  [--cluster-id HEX] <command> [args]\n"
            "\n"
            "commands (clusterctl <command> --help for each):\n");
    for (size_t i = 0; i < sizeof(subcommands) / sizeof(subcommands[0]); i++) {
        fprintf(f, "  %-9s %s\n", subcommands[i].name, subcommands[i].help);
    }
    fprintf(f,
            "\n"
            "global options:\n"
            "  --endpoints A,B,..  API addresses (host:port) of the parents,\n"
            "                      VIP first (default $CLUSTERD_ENDPOINTS, "
            "else\n"
            "                      " DEFAULT_ENDPOINTS
            ")\n"
            "  -o table|json       output format (default table)\n"
            "  --timeout MS        give up after MS milliseconds, retries "
            "included\n"
            "                      (default 15000)\n"
            "  --cluster-id HEX    refuse to talk to another cluster\n"
            "\n"
            "exit status: 0 ok, 1 error, 2 usage, 3 key not found,\n"
            "             4 transaction compares failed, 5 unavailable (no\n"
            "             endpoint reachable, no leader, timed out)\n"
            "\n"
            "See clusterctl(1): docs/clusterctl.1.md.\n");
}

/* A global option's value: "--name=V" or "--name V". */
static const char *option_value(int argc, char **argv, int *i, const char *name)
{
    size_t n = strlen(name);

    if (strncmp(argv[*i], name, n) == 0 && argv[*i][n] == '=') {
        return argv[*i] + n + 1;
    }
    if (strcmp(argv[*i], name) == 0 && *i + 1 < argc) {
        return argv[++*i];
    }
    return NULL;
}

static int is_option(const char *a, const char *name)
{
    size_t n = strlen(name);

    return strncmp(a, name, n) == 0 && (a[n] == '\0' || a[n] == '=');
}

static int parse_globals(int argc, char **argv, int *i)
{
    const char *env = getenv("CLUSTERD_ENDPOINTS");
    uint64_t v;

    g.endpoints_csv = env != NULL && env[0] != '\0' ? env : DEFAULT_ENDPOINTS;
    for (*i = 1; *i < argc && argv[*i][0] == '-'; (*i)++) {
        const char *a = argv[*i];
        const char *val;

        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return -1;
        }
        if (is_option(a, "--endpoints")) {
            val = option_value(argc, argv, i, "--endpoints");
            if (val == NULL) {
                break;
            }
            g.endpoints_csv = val;
        } else if (is_option(a, "-o") || is_option(a, "--output")) {
            val = option_value(argc, argv, i, a[1] == 'o' ? "-o" : "--output");
            if (val == NULL ||
                (strcmp(val, "json") != 0 && strcmp(val, "table") != 0)) {
                fprintf(stderr, "clusterctl: -o is table or json\n");
                return EXIT_USAGE;
            }
            g.json = strcmp(val, "json") == 0;
        } else if (is_option(a, "--timeout")) {
            val = option_value(argc, argv, i, "--timeout");
            if (val == NULL || parse_u64(val, &v) != 0 || v == 0 ||
                v > UINT32_MAX) {
                fprintf(stderr, "clusterctl: --timeout takes milliseconds\n");
                return EXIT_USAGE;
            }
            g.timeout_ms = (unsigned)v;
        } else if (is_option(a, "--cluster-id")) {
            val = option_value(argc, argv, i, "--cluster-id");
            if (val != NULL &&
                (val[0] == '0' && (val[1] == 'x' || val[1] == 'X'))) {
                val += 2;
            }
            if (val == NULL || parse_u64_base(val, 16, &v) != 0) {
                fprintf(stderr,
                        "clusterctl: --cluster-id takes a "
                        "hexadecimal id\n");
                return EXIT_USAGE;
            }
            g.cluster_id = v;
        } else {
            fprintf(stderr, "clusterctl: unknown option '%s'\n", a);
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (cd_client_parse_endpoints(g.endpoints_csv, &g.endpoints,
                                  &g.n_endpoints) != 0) {
        fprintf(stderr,
                "clusterctl: bad endpoint list '%s': expected host:port "
                "entries separated by commas ([v6addr]:port for IPv6)\n",
                g.endpoints_csv);
        return EXIT_USAGE;
    }
    return 0;
}

int main(int argc, char **argv)
{
    int i;
    int rc = parse_globals(argc, argv, &i);

    if (rc != 0) {
        return rc < 0 ? EXIT_OK : rc;
    }
    if (i >= argc) {
        usage(stderr);
        rc = EXIT_USAGE;
    } else {
        rc = -1;
        for (size_t j = 0; j < sizeof(subcommands) / sizeof(subcommands[0]);
             j++) {
            if (strcmp(argv[i], subcommands[j].name) == 0) {
                rc = subcommands[j].fn(argc - i, argv + i);
                break;
            }
        }
        if (rc < 0) {
            fprintf(stderr, "clusterctl: unknown command '%s'\n", argv[i]);
            usage(stderr);
            rc = EXIT_USAGE;
        }
    }
    cd_client_free_endpoints(g.endpoints, g.n_endpoints);
    /* Output that did not reach its reader is a failure, not a success. */
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "clusterctl: writing the output: %s\n",
                strerror(errno));
        return rc == EXIT_OK ? EXIT_FAIL : rc;
    }
    return rc;
}
