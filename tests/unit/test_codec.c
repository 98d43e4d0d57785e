/*
 * test_codec.c - unit tests for the wire codec (proto/codec.h).
 *
 * Round trips go through the public API only.  Inputs the encoder refuses
 * to produce (unknown enum values, missing fields, hostile layouts) are
 * written by hand with the small protobuf writer below, so that the tests
 * do not depend on the generated code that only proto/codec.c may use.
 * Each rejection test first shows that the same bytes with the offending
 * part corrected decode, so that it fails if the rejection happens for
 * some other reason.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "lib/err.h"
#include "proto/codec.h"
#include "tests/fuzz/msg_diff.h"

#define BUF(s)             \
    {                      \
        (s), sizeof(s) - 1 \
    }

#define expect_rc(got, want)                                            \
    do {                                                                \
        int got_ = (got);                                               \
        int want_ = (want);                                             \
        if (got_ != want_) {                                            \
            fail_msg("%s: expected %s (%d), got %s (%d)", #got,         \
                     cd_errname(want_), want_, cd_errname(got_), got_); \
        }                                                               \
    } while (0)

#define expect_no_diff(diff, what)                                          \
    do {                                                                    \
        const char *d_ = (diff);                                            \
        if (d_ != NULL) {                                                   \
            fail_msg("%s: decoded differs from the original at %s", (what), \
                     d_);                                                   \
        }                                                                   \
    } while (0)

/* --- a protobuf writer for hand-made inputs ---------------------------- */

enum { WT_VARINT = 0, WT_64BIT = 1, WT_LEN = 2, WT_32BIT = 5 };

struct pbw
{
    uint8_t *buf;
    size_t len;
    size_t cap;
};

static void pbw_raw(struct pbw *w, const void *p, size_t n)
{
    if (w->len + n > w->cap) {
        size_t cap = w->cap != 0 ? w->cap : 64;

        while (cap < w->len + n) {
            cap *= 2;
        }
        w->buf = realloc(w->buf, cap);
        assert_non_null(w->buf);
        w->cap = cap;
    }
    if (n > 0) {
        memcpy(w->buf + w->len, p, n);
    }
    w->len += n;
}

static void pbw_varint(struct pbw *w, uint64_t v)
{
    uint8_t b[10];
    size_t n = 0;

    do {
        b[n] = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v != 0) {
            b[n] |= 0x80;
        }
        n++;
    } while (v != 0);
    pbw_raw(w, b, n);
}

static void pbw_tag(struct pbw *w, unsigned field, unsigned wire_type)
{
    pbw_varint(w, (uint64_t)field << 3 | wire_type);
}

static void pbw_uint(struct pbw *w, unsigned field, uint64_t v)
{
    pbw_tag(w, field, WT_VARINT);
    pbw_varint(w, v);
}

/* An enum or int32 as protobuf writes it: negatives are ten bytes. */
static void pbw_int(struct pbw *w, unsigned field, int64_t v)
{
    pbw_uint(w, field, (uint64_t)v);
}

static void pbw_bytes(struct pbw *w, unsigned field, const void *p, size_t n)
{
    pbw_tag(w, field, WT_LEN);
    pbw_varint(w, n);
    pbw_raw(w, p, n);
}

static void pbw_str(struct pbw *w, unsigned field, const char *s)
{
    pbw_bytes(w, field, s, strlen(s));
}

/* Append sub as a nested message and release it. */
static void pbw_msg(struct pbw *w, unsigned field, struct pbw *sub)
{
    pbw_bytes(w, field, sub->buf, sub->len);
    free(sub->buf);
    memset(sub, 0, sizeof(*sub));
}

static void pbw_free(struct pbw *w)
{
    free(w->buf);
    memset(w, 0, sizeof(*w));
}

/* Envelope{request_id = 1, <field> = body}; body is released. */
static struct pbw envelope(unsigned field, struct pbw *body)
{
    struct pbw e = {0};

    pbw_uint(&e, 1, 1);
    pbw_msg(&e, field, body);
    return e;
}

/* Decode w as an Envelope payload, free what decoded, release w. */
static int decode_rc(struct pbw *w)
{
    struct cd_msg m;
    int rc = codec_decode(w->buf, w->len, &m);

    if (rc == 0) {
        codec_msg_free(&m);
    } else if (m.codec__owned != NULL || m.type != CD_MSG_NONE) {
        fail_msg("failed decode (%s) left a non-zeroed message",
                 cd_errname(rc));
    }
    pbw_free(w);
    return rc;
}

static int command_decode_rc(struct pbw *w)
{
    struct codec_command c;
    int rc = codec_command_decode(w->buf, w->len, &c);

    if (rc == 0) {
        codec_command_free(&c);
    } else if (c.owned != NULL) {
        fail_msg("failed command decode (%s) left memory owned",
                 cd_errname(rc));
    }
    pbw_free(w);
    return rc;
}

/* --- sample content ---------------------------------------------------- */

static const struct cd_compare sample_compares[] = {
    {.key = BUF("k1"),
     .target = CD_CMP_VALUE,
     .result = CD_CMP_EQUAL,
     .value = BUF("v\0 1")},
    {.key = BUF("k2"),
     .target = CD_CMP_VERSION,
     .result = CD_CMP_NOT_EQUAL,
     .number = 3},
    /* A zero number must survive: "version == 0" means "absent". */
    {.key = BUF("k3"),
     .target = CD_CMP_CREATE_REV,
     .result = CD_CMP_LESS,
     .number = 0},
    {.key = BUF("k4"),
     .target = CD_CMP_MOD_REV,
     .result = CD_CMP_GREATER,
     .number = UINT64_MAX},
    {.key = BUF("k5"),
     .target = CD_CMP_EXISTS,
     .result = CD_CMP_EQUAL,
     .number = 1},
};

static const struct cd_op sample_then[] = {
    {.type = CD_OP_PUT, .key = BUF("t1"), .value = BUF("tv1")},
    {.type = CD_OP_DELETE, .key = BUF("t2")},
    {.type = CD_OP_DELETE_PREFIX, .key = BUF("t/")},
};

static const struct cd_op sample_else[] = {
    /* An empty value and an empty prefix are content, not absence. */
    {.type = CD_OP_PUT, .key = BUF("e1"), .value = {NULL, 0}},
    {.type = CD_OP_DELETE_PREFIX, .key = {NULL, 0}},
};

static const struct cd_op sample_txn = {
    .type = CD_OP_TXN,
    .client_id = 77,
    .seq = 78,
    .compares = sample_compares,
    .n_compares = sizeof(sample_compares) / sizeof(sample_compares[0]),
    .then_ops = sample_then,
    .n_then = sizeof(sample_then) / sizeof(sample_then[0]),
    .else_ops = sample_else,
    .n_else = sizeof(sample_else) / sizeof(sample_else[0]),
};

/* One of every op type, with every field its type uses. */
static struct cd_op sample_ops[6];

static void sample_ops_init(void)
{
    static const struct cd_op put = {.type = CD_OP_PUT,
                                     .client_id = 1,
                                     .seq = 2,
                                     .key = BUF("key\0\xff"),
                                     .value = BUF("value")};
    static const struct cd_op del = {
        .type = CD_OP_DELETE, .client_id = 3, .seq = 4, .key = BUF("gone")};
    static const struct cd_op delp = {.type = CD_OP_DELETE_PREFIX,
                                      .key = BUF("dir/")};
    static const struct cd_op compact = {.type = CD_OP_COMPACT, .revision = 0};
    static const struct cd_op log = {.type = CD_OP_LOG_APPEND,
                                     .child_id = 9,
                                     .log_seq = 10,
                                     .log_time_ms = 1700000000123ull,
                                     .value = BUF("log line")};

    sample_ops[0] = put;
    sample_ops[1] = del;
    sample_ops[2] = delp;
    sample_ops[3] = sample_txn;
    sample_ops[4] = compact;
    sample_ops[5] = log;
}

static const struct cd_kv sample_kvs[] = {
    {.key = BUF("a"),
     .value = BUF("1"),
     .create_rev = 1,
     .mod_rev = 2,
     .version = 3},
    {.key = BUF("b\0"), .value = {NULL, 0}, .create_rev = UINT64_MAX},
};

static const struct cd_event sample_events[] = {
    {.type = CD_EVENT_PUT,
     .sub = 0,
     .kv = {.key = BUF("x"), .value = BUF("y"), .mod_rev = 5}},
    {.type = CD_EVENT_DELETE, .sub = UINT32_MAX, .kv = {.key = BUF("z")}},
};

static const struct cd_member sample_members[] = {
    {.id = 1,
     .address = "10.0.0.1:7000",
     .role = CD_ROLE_VOTER,
     .api_address = "10.0.0.1:7001",
     .leader = 1,
     .reachable = 1},
    {.id = 2, .address = "10.0.0.2:7000", .role = CD_ROLE_STANDBY},
    {.id = 3, .address = "", .role = CD_ROLE_SPARE, .reachable = 1},
    {.id = UINT64_MAX, .address = "10.0.0.4:7000", .role = CD_ROLE_UNSET},
};

static const struct cd_log_record sample_records[] = {
    {.seq = 1, .time_ms = 2, .record = BUF("first")},
    {.seq = 2, .time_ms = 3, .record = {NULL, 0}},
};

static const char *const sample_addresses[] = {"10.0.1.5", "fe80::1", ""};

/* A registry record with every field set. */
static const struct cd_child_info sample_info = {
    .id = 31,
    .hostname = "child-1",
    .addresses = sample_addresses,
    .n_addresses = sizeof(sample_addresses) / sizeof(sample_addresses[0]),
    .mac = "00:11:22:33:44:55",
    .os = "linux 6.1",
    .app_version = "agent 2.1.0",
    .joined_ms = 1700000000789ull,
};

static const struct cd_service_health sample_services[] = {
    {.name = "sshd", .up = 1, .detail = "active (running)"},
    {.name = "scanner", .up = 0, .detail = NULL},
    {.name = "", .up = 1, .detail = ""},
};

static const struct cd_child_status sample_children[] = {
    /* Seen 0 ms ago is present, not absent. */
    {.info = {.id = 31,
              .hostname = "child-1",
              .addresses = sample_addresses,
              .n_addresses = 2,
              .mac = "00:11:22:33:44:55",
              .os = "linux",
              .app_version = "2.1",
              .joined_ms = 5},
     .state = "following",
     .has_last_seen = 1,
     .last_seen_ms_ago = 0,
     .revision = 40,
     .lag = 2,
     .services = sample_services,
     .n_services = 2,
     .staleness_ms = 1500},
    /* Registered, never heard from: nothing but the record's id. */
    {.info = {.id = UINT64_MAX}, .state = "unknown"},
    {.info = {.id = 33, .hostname = "child-3"},
     .state = "gone",
     .has_last_seen = 1,
     .last_seen_ms_ago = 86400000,
     .services = sample_services + 2,
     .n_services = 1},
};

static const struct cd_backup_schedule sample_schedule = {
    .interval_s = 86400,
    .retain = 14,
    .has_at = 1,
    .at_minute = 0, /* midnight: present although zero */
    .set_ms = 1796521600677ull,
    .dir = "/var/backups/clusterd",
};

static const struct cd_backup_result sample_result = {
    .time_ms = 1796529600000ull,
    .ok = 0,
    .node_id = 4,
    .revision = 0, /* a failed backup may have none */
    .bytes = 0,
    .keys = 0,
    .duration_ms = 12,
    .failures = 3,
    .pruned = 0,
    .last_ok_ms = 1796443200000ull,
    .file = "",
    .last_ok_file =
        "/var/backups/clusterd/clusterd-04ee216504a59979-20261205T040000Z-"
        "r5120.snap",
    .error = "cannot create /var/backups/clusterd: No space left on device",
};

static const enum cd_msg_type all_types[] = {
    CD_MSG_ERROR,
    CD_MSG_OK,
    CD_MSG_WRITE,
    CD_MSG_WRITE_RESP,
    CD_MSG_GET,
    CD_MSG_RANGE,
    CD_MSG_RANGE_RESP,
    CD_MSG_WATCH,
    CD_MSG_CHANGES,
    CD_MSG_STATUS,
    CD_MSG_STATUS_RESP,
    CD_MSG_MEMBERS,
    CD_MSG_MEMBERS_RESP,
    CD_MSG_MEMBER_CHANGE,
    CD_MSG_TRANSFER,
    CD_MSG_SNAPSHOT,
    CD_MSG_SNAPSHOT_CHUNK,
    CD_MSG_HELLO,
    CD_MSG_LOG_UPLOAD,
    CD_MSG_LOG_ACK,
    CD_MSG_COMMAND,
    CD_MSG_SHUTDOWN,
    CD_MSG_TOKEN,
    CD_MSG_TOKEN_RESP,
    CD_MSG_CHILD_JOIN,
    CD_MSG_CHILD_JOIN_RESP,
    CD_MSG_CHILD_LEAVE,
    CD_MSG_CHILD_REPORT,
    CD_MSG_CHILDREN,
    CD_MSG_CHILDREN_RESP,
    CD_MSG_BACKUP,
    CD_MSG_BACKUP_RESP,
};

#define N_ALL_TYPES (sizeof(all_types) / sizeof(all_types[0]))

/* A message of type t with every field set to something nonzero. */
static void sample_msg(enum cd_msg_type t, struct cd_msg *m)
{
    memset(m, 0, sizeof(*m));
    m->type = t;
    m->request_id = 0x0123456789abcdefull + (uint64_t)t;
    m->has_cluster_id = 1;
    m->cluster_id = 0xfeedfacecafebeefull;
    switch (t) {
        case CD_MSG_ERROR:
            m->u.error.code = CD_ENOTLEADER;
            m->u.error.name = "CD_ENOTLEADER";
            m->u.error.message = "not the leader";
            m->u.error.leader = "10.0.0.9:7001";
            break;
        case CD_MSG_WRITE:
            m->u.write.op = sample_txn;
            break;
        case CD_MSG_WRITE_RESP:
            m->u.write_resp.revision = 100;
            m->u.write_resp.succeeded = 1;
            m->u.write_resp.deleted = 7;
            break;
        case CD_MSG_GET:
            m->u.get.key = (struct cd_buf)BUF("get\0me");
            m->u.get.serializable = 1;
            break;
        case CD_MSG_RANGE:
            m->u.range.prefix = (struct cd_buf)BUF("p/");
            m->u.range.start = (struct cd_buf)BUF("p/m");
            m->u.range.limit = 500;
            m->u.range.serializable = 1;
            m->u.range.keys_only = 1;
            break;
        case CD_MSG_RANGE_RESP:
            m->u.range_resp.kvs = sample_kvs;
            m->u.range_resp.n_kvs = sizeof(sample_kvs) / sizeof(sample_kvs[0]);
            m->u.range_resp.more = 1;
            m->u.range_resp.revision = 44;
            m->u.range_resp.serializable = 1;
            break;
        case CD_MSG_WATCH:
            m->u.watch.since = 12;
            m->u.watch.prefix = (struct cd_buf)BUF("w/");
            break;
        case CD_MSG_CHANGES:
            m->u.changes.events = sample_events;
            m->u.changes.n_events =
                sizeof(sample_events) / sizeof(sample_events[0]);
            m->u.changes.revision = 99;
            m->u.changes.compacted = 1;
            m->u.changes.compact_rev = 50;
            m->u.changes.epoch = 0x8000000000000001ull;
            break;
        case CD_MSG_STATUS_RESP:
            m->u.status_resp.id = 1;
            m->u.status_resp.leader_id = 2;
            m->u.status_resp.leader_api = "10.0.0.2:7001";
            m->u.status_resp.term = 3;
            m->u.status_resp.revision = 4;
            m->u.status_resp.applied_index = 5;
            m->u.status_resp.commit_index = 6;
            m->u.status_resp.state = "follower";
            m->u.status_resp.version = "clusterd 0.1";
            m->u.status_resp.epoch = 0xe90c;
            break;
        case CD_MSG_MEMBERS_RESP:
            m->u.members_resp.members = sample_members;
            m->u.members_resp.n_members =
                sizeof(sample_members) / sizeof(sample_members[0]);
            break;
        case CD_MSG_MEMBER_CHANGE:
            m->u.member_change.action = CD_MEMBER_ASSIGN;
            m->u.member_change.id = 5;
            m->u.member_change.address = "10.0.0.5:7000";
            m->u.member_change.role = CD_ROLE_STANDBY;
            m->u.member_change.token = "join-token";
            m->u.member_change.api_address = "10.0.0.5:7001";
            break;
        case CD_MSG_TRANSFER:
            m->u.transfer.to = 3;
            break;
        case CD_MSG_SNAPSHOT:
            m->u.snapshot.recent = 1;
            break;
        case CD_MSG_SNAPSHOT_CHUNK:
            m->u.snapshot_chunk.offset = 1u << 20;
            m->u.snapshot_chunk.data = (struct cd_buf)BUF("\0\1\2\3chunk");
            m->u.snapshot_chunk.last = 1;
            m->u.snapshot_chunk.revision = 77;
            break;
        case CD_MSG_HELLO:
            m->u.hello.cluster_id = 0xfeedfacecafebeefull;
            m->u.hello.child_id = 31;
            m->u.hello.revision = 32;
            m->u.hello.hostname = "child-1";
            m->u.hello.version = "clusterd 0.1";
            m->u.hello.registered_rev = 30;
            m->u.hello.epoch = 0xfffffffffffffffeull;
            break;
        case CD_MSG_LOG_UPLOAD:
            m->u.log_upload.child_id = 31;
            m->u.log_upload.records = sample_records;
            m->u.log_upload.n_records =
                sizeof(sample_records) / sizeof(sample_records[0]);
            break;
        case CD_MSG_LOG_ACK:
            m->u.log_ack.committed_seq = 1234;
            break;
        case CD_MSG_COMMAND:
            m->u.command.time_ms = 1700000000000ull;
            m->u.command.ops = sample_ops;
            m->u.command.n_ops = sizeof(sample_ops) / sizeof(sample_ops[0]);
            break;
        case CD_MSG_TOKEN:
            m->u.token.ttl_s = 3600;
            break;
        case CD_MSG_TOKEN_RESP:
            m->u.token_resp.token = "0123456789abcdef0123456789abcdef";
            m->u.token_resp.expires_ms = 1700000000000ull;
            break;
        case CD_MSG_CHILD_JOIN:
            m->u.child_join.token = "0123456789abcdef0123456789abcdef";
            m->u.child_join.info = sample_info;
            break;
        case CD_MSG_CHILD_JOIN_RESP:
            m->u.child_join_resp.child_id = 31;
            m->u.child_join_resp.cluster_id = 0xfeedfacecafebeefull;
            m->u.child_join_resp.registered_rev = 30;
            break;
        case CD_MSG_CHILD_LEAVE:
            m->u.child_leave.child_id = 31;
            break;
        case CD_MSG_CHILD_REPORT:
            m->u.child_report.child_id = 31;
            m->u.child_report.revision = 41;
            m->u.child_report.state = "degraded";
            m->u.child_report.services = sample_services;
            m->u.child_report.n_services =
                sizeof(sample_services) / sizeof(sample_services[0]);
            m->u.child_report.staleness_ms = 2500;
            break;
        case CD_MSG_CHILDREN_RESP:
            m->u.children_resp.children = sample_children;
            m->u.children_resp.n_children =
                sizeof(sample_children) / sizeof(sample_children[0]);
            m->u.children_resp.revision = 42;
            break;
        case CD_MSG_BACKUP:
            m->u.backup.has_schedule = 1;
            m->u.backup.schedule = sample_schedule;
            m->u.backup.now = 1;
            break;
        case CD_MSG_BACKUP_RESP:
            m->u.backup_resp.has_schedule = 1;
            m->u.backup_resp.schedule = sample_schedule;
            m->u.backup_resp.has_last = 1;
            m->u.backup_resp.last = sample_result;
            m->u.backup_resp.next_ms = 1796529600000ull;
            m->u.backup_resp.running = 1;
            break;
        default:
            break;
    }
}

static int setup(void **state)
{
    (void)state;
    sample_ops_init();
    return 0;
}

/* Encode m, check the frame header, decode the payload into *out. */
static void encode_decode(const struct cd_msg *m,
                          struct cd_msg *out,
                          uint8_t **frame,
                          size_t *frame_len)
{
    expect_rc(codec_encode(m, 0, frame, frame_len), 0);
    assert_non_null(*frame);
    assert_true(*frame_len >= CODEC_HEADER_SIZE);
    uint32_t announced = (uint32_t)(*frame)[0] << 24 |
                         (uint32_t)(*frame)[1] << 16 |
                         (uint32_t)(*frame)[2] << 8 | (*frame)[3];
    if (announced != *frame_len - CODEC_HEADER_SIZE) {
        fail_msg("header announces %u bytes, payload is %zu", announced,
                 *frame_len - CODEC_HEADER_SIZE);
    }
    expect_rc(codec_decode(*frame + CODEC_HEADER_SIZE,
                           *frame_len - CODEC_HEADER_SIZE, out),
              0);
}

/* --- names and error replies ------------------------------------------- */

static void test_type_names(void **state)
{
    (void)state;
    assert_string_equal(codec_msg_type_name(CD_MSG_WRITE), "WRITE");
    assert_string_equal(codec_msg_type_name(CD_MSG_CHANGES), "CHANGES");
    assert_string_equal(codec_msg_type_name(CD_MSG_MEMBER_CHANGE),
                        "MEMBER_CHANGE");
    assert_string_equal(codec_msg_type_name(CD_MSG_COMMAND), "COMMAND");
    assert_string_equal(codec_msg_type_name(CD_MSG_CHILD_JOIN), "CHILD_JOIN");
    assert_string_equal(codec_msg_type_name(CD_MSG_CHILD_JOIN_RESP),
                        "CHILD_JOIN_RESP");
    assert_string_equal(codec_msg_type_name(CD_MSG_CHILD_LEAVE), "CHILD_LEAVE");
    assert_string_equal(codec_msg_type_name(CD_MSG_CHILD_REPORT),
                        "CHILD_REPORT");
    assert_string_equal(codec_msg_type_name(CD_MSG_CHILDREN), "CHILDREN");
    assert_string_equal(codec_msg_type_name(CD_MSG_CHILDREN_RESP),
                        "CHILDREN_RESP");
    assert_string_equal(codec_msg_type_name(CD_MSG_NONE), "UNKNOWN");
    assert_string_equal(codec_msg_type_name((enum cd_msg_type)99), "UNKNOWN");
    for (size_t i = 0; i < N_ALL_TYPES; i++) {
        if (strcmp(codec_msg_type_name(all_types[i]), "UNKNOWN") == 0) {
            fail_msg("type %d has no name", all_types[i]);
        }
    }
}

static void test_error_msg(void **state)
{
    struct cd_msg m;
    struct cd_msg d;
    uint8_t *frame;
    size_t len;

    (void)state;
    memset(&m, 0xa5, sizeof(m));
    codec_error_msg(&m, 42, CD_ENOTLEADER, "10.1.1.1:7001");
    assert_int_equal(m.type, CD_MSG_ERROR);
    assert_int_equal(m.request_id, 42);
    assert_int_equal(m.has_cluster_id, 0);
    assert_null(m.codec__owned);
    assert_int_equal(m.u.error.code, CD_ENOTLEADER);
    assert_string_equal(m.u.error.name, "CD_ENOTLEADER");
    assert_string_equal(m.u.error.message, cd_strerror(CD_ENOTLEADER));
    assert_string_equal(m.u.error.message, "not the leader");
    assert_string_equal(m.u.error.leader, "10.1.1.1:7001");

    encode_decode(&m, &d, &frame, &len);
    expect_no_diff(msg_diff(&m, &d), "error reply");
    codec_msg_free(&d);
    free(frame);

    /* A plain errno and no leader. */
    codec_error_msg(&m, 7, -ENOMEM, NULL);
    assert_string_equal(m.u.error.name, "ENOMEM");
    assert_string_equal(m.u.error.message, strerror(ENOMEM));
    assert_null(m.u.error.leader);
    encode_decode(&m, &d, &frame, &len);
    expect_no_diff(msg_diff(&m, &d), "errno reply");
    assert_null(d.u.error.leader);
    codec_msg_free(&d);
    free(frame);
}

/* --- round trips ------------------------------------------------------- */

static void test_roundtrip_every_type(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_ALL_TYPES; i++) {
        struct cd_msg m;
        struct cd_msg d;
        uint8_t *frame;
        uint8_t *again;
        size_t len;
        size_t again_len;

        sample_msg(all_types[i], &m);
        encode_decode(&m, &d, &frame, &len);
        if (d.type != m.type) {
            fail_msg("%s decoded as type %d", codec_msg_type_name(m.type),
                     d.type);
        }
        expect_no_diff(msg_diff(&m, &d), codec_msg_type_name(m.type));

        /* Encoding is deterministic: the decoded copy packs identically. */
        expect_rc(codec_encode(&d, 0, &again, &again_len), 0);
        if (again_len != len || memcmp(again, frame, len) != 0) {
            fail_msg("%s: re-encoding the decoded message gave other bytes",
                     codec_msg_type_name(m.type));
        }
        free(again);
        codec_msg_free(&d);
        assert_null(d.codec__owned);
        free(frame);
    }
}

/* Absent optional content decodes as NULL / 0, not as empty strings. */
static void test_roundtrip_absent_fields(void **state)
{
    struct cd_msg m = {.type = CD_MSG_STATUS_RESP, .request_id = 0};
    struct cd_msg d;
    uint8_t *frame;
    size_t len;

    (void)state;
    encode_decode(&m, &d, &frame, &len);
    expect_no_diff(msg_diff(&m, &d), "empty status reply");
    assert_null(d.u.status_resp.leader_api);
    assert_null(d.u.status_resp.state);
    assert_int_equal(d.has_cluster_id, 0);
    codec_msg_free(&d);
    free(frame);

    /* An empty string is content and stays one. */
    m.u.status_resp.state = "";
    encode_decode(&m, &d, &frame, &len);
    assert_non_null(d.u.status_resp.state);
    assert_string_equal(d.u.status_resp.state, "");
    codec_msg_free(&d);
    free(frame);

    /* Flags are booleans on the wire. */
    struct cd_msg g = {.type = CD_MSG_GET, .u.get = {BUF("k"), 5}};
    encode_decode(&g, &d, &frame, &len);
    assert_int_equal(d.u.get.serializable, 1);
    codec_msg_free(&d);
    free(frame);
}

/* Every op type as the body of a write, except LOG_APPEND. */
static void test_roundtrip_write_each_op(void **state)
{
    (void)state;
    for (size_t i = 0; i < 6; i++) {
        struct cd_msg m = {.type = CD_MSG_WRITE, .request_id = i};
        struct cd_msg d;
        uint8_t *frame;
        size_t len;

        m.u.write.op = sample_ops[i];
        if (sample_ops[i].type == CD_OP_LOG_APPEND) {
            expect_rc(codec_encode(&m, 0, &frame, &len), CD_EBADOP);
            assert_null(frame);
            continue;
        }
        encode_decode(&m, &d, &frame, &len);
        expect_no_diff(msg_diff(&m, &d), "write");
        codec_msg_free(&d);
        free(frame);
    }
}

/* The children messages with every optional part absent or empty:
 * strings come back NULL, arrays NULL with a count of 0. */
static void test_roundtrip_children_absent(void **state)
{
    struct cd_msg m;
    struct cd_msg d;
    uint8_t *frame;
    size_t len;

    (void)state;
    memset(&m, 0, sizeof(m));
    m.type = CD_MSG_CHILD_JOIN;
    m.u.child_join.token = "";
    encode_decode(&m, &d, &frame, &len);
    expect_no_diff(msg_diff(&m, &d), "bare child join");
    assert_string_equal(d.u.child_join.token, "");
    assert_int_equal(d.u.child_join.info.id, 0);
    assert_null(d.u.child_join.info.hostname);
    assert_null(d.u.child_join.info.addresses);
    assert_int_equal(d.u.child_join.info.n_addresses, 0);
    assert_null(d.u.child_join.info.mac);
    assert_null(d.u.child_join.info.os);
    assert_null(d.u.child_join.info.app_version);
    assert_int_equal(d.u.child_join.info.joined_ms, 0);
    codec_msg_free(&d);
    free(frame);

    /* Zero ids are content: required fields always go on the wire. */
    memset(&m, 0, sizeof(m));
    m.type = CD_MSG_CHILD_JOIN_RESP;
    encode_decode(&m, &d, &frame, &len);
    expect_no_diff(msg_diff(&m, &d), "zero join reply");
    codec_msg_free(&d);
    free(frame);
    m.type = CD_MSG_CHILD_LEAVE;
    encode_decode(&m, &d, &frame, &len);
    expect_no_diff(msg_diff(&m, &d), "zero leave");
    codec_msg_free(&d);
    free(frame);
    m.type = CD_MSG_CHILDREN;
    encode_decode(&m, &d, &frame, &len);
    assert_int_equal(d.type, CD_MSG_CHILDREN);
    codec_msg_free(&d);
    free(frame);

    memset(&m, 0, sizeof(m));
    m.type = CD_MSG_CHILD_REPORT;
    m.u.child_report.child_id = 7;
    encode_decode(&m, &d, &frame, &len);
    expect_no_diff(msg_diff(&m, &d), "bare report");
    assert_int_equal(d.u.child_report.child_id, 7);
    assert_null(d.u.child_report.state);
    assert_null(d.u.child_report.services);
    assert_int_equal(d.u.child_report.n_services, 0);
    codec_msg_free(&d);
    free(frame);

    /* A service without detail; an empty state stays an empty string. */
    static const struct cd_service_health bare_service[] = {{.name = "x"}};
    m.u.child_report.state = "";
    m.u.child_report.services = bare_service;
    m.u.child_report.n_services = 1;
    encode_decode(&m, &d, &frame, &len);
    expect_no_diff(msg_diff(&m, &d), "report with a bare service");
    assert_string_equal(d.u.child_report.state, "");
    assert_int_equal(d.u.child_report.n_services, 1);
    assert_string_equal(d.u.child_report.services[0].name, "x");
    assert_int_equal(d.u.child_report.services[0].up, 0);
    assert_null(d.u.child_report.services[0].detail);
    codec_msg_free(&d);
    free(frame);

    memset(&m, 0, sizeof(m));
    m.type = CD_MSG_CHILDREN_RESP;
    encode_decode(&m, &d, &frame, &len);
    expect_no_diff(msg_diff(&m, &d), "empty listing");
    assert_null(d.u.children_resp.children);
    assert_int_equal(d.u.children_resp.n_children, 0);
    codec_msg_free(&d);
    free(frame);

    /* The second sample child has nothing but its id. */
    m.u.children_resp.children = &sample_children[1];
    m.u.children_resp.n_children = 1;
    encode_decode(&m, &d, &frame, &len);
    expect_no_diff(msg_diff(&m, &d), "listing of a bare child");
    {
        const struct cd_child_status *c = &d.u.children_resp.children[0];

        assert_int_equal(c->info.id, UINT64_MAX);
        assert_null(c->info.hostname);
        assert_null(c->info.addresses);
        assert_string_equal(c->state, "unknown");
        assert_int_equal(c->has_last_seen, 0);
        assert_int_equal(c->last_seen_ms_ago, 0);
        assert_null(c->services);
        assert_int_equal(c->n_services, 0);
    }
    codec_msg_free(&d);
    free(frame);

    /* Seen 0 ms ago is kept apart from never seen. */
    m.u.children_resp.children = &sample_children[0];
    encode_decode(&m, &d, &frame, &len);
    assert_int_equal(d.u.children_resp.children[0].has_last_seen, 1);
    assert_int_equal(d.u.children_resp.children[0].last_seen_ms_ago, 0);
    codec_msg_free(&d);
    free(frame);

    /* Flags are booleans on the wire. */
    static const struct cd_service_health five_up[] = {{.name = "s", .up = 5}};
    struct cd_child_status flagged = {.has_last_seen = 9,
                                      .last_seen_ms_ago = 3,
                                      .services = five_up,
                                      .n_services = 1};
    m.u.children_resp.children = &flagged;
    encode_decode(&m, &d, &frame, &len);
    expect_no_diff(msg_diff(&m, &d), "flags");
    assert_int_equal(d.u.children_resp.children[0].has_last_seen, 1);
    assert_int_equal(d.u.children_resp.children[0].last_seen_ms_ago, 3);
    assert_int_equal(d.u.children_resp.children[0].services[0].up, 1);
    codec_msg_free(&d);
    free(frame);
}

/*
 * The comparison the round trips rely on sees a change in each part of
 * the children messages, down to one address or one service flag: the
 * round-trip tests above can fail.
 */
static void test_children_diff_can_fail(void **state)
{
    struct cd_msg a;
    struct cd_msg b;
    struct cd_child_status kids[3];
    struct cd_service_health svcs[3];
    const char *addrs[3];
    const char *d;

    (void)state;
    sample_msg(CD_MSG_CHILDREN_RESP, &a);
    assert_null(msg_diff(&a, &a));

#define EXPECT_DIFF(what, want)                                         \
    do {                                                                \
        d = msg_diff(&a, &b);                                           \
        if (d == NULL || strcmp(d, (want)) != 0) {                      \
            fail_msg("%s: expected a difference at %s, got %s", (what), \
                     (want), d != NULL ? d : "none");                   \
        }                                                               \
    } while (0)
#define RESET_CHILDREN()                                \
    do {                                                \
        b = a;                                          \
        memcpy(kids, sample_children, sizeof(kids));    \
        memcpy(svcs, sample_services, sizeof(svcs));    \
        memcpy(addrs, sample_addresses, sizeof(addrs)); \
        kids[0].services = svcs;                        \
        kids[0].info.addresses = addrs;                 \
        b.u.children_resp.children = kids;              \
    } while (0)

    RESET_CHILDREN();
    assert_null(msg_diff(&a, &b));
    addrs[1] = "fe80::2";
    EXPECT_DIFF("address", "u.children_resp.children[0].info.addresses[1]");
    RESET_CHILDREN();
    svcs[1].up = 1;
    EXPECT_DIFF("service flag", "u.children_resp.children[0].services[1].up");
    RESET_CHILDREN();
    svcs[0].detail = NULL;
    EXPECT_DIFF("detail", "u.children_resp.children[0].services[0].detail");
    RESET_CHILDREN();
    kids[0].last_seen_ms_ago = 1;
    EXPECT_DIFF("last seen", "u.children_resp.children[0].last_seen_ms_ago");
    RESET_CHILDREN();
    kids[1].last_seen_ms_ago = 1; /* not present: not compared */
    assert_null(msg_diff(&a, &b));
    kids[1].has_last_seen = 1;
    EXPECT_DIFF("presence", "u.children_resp.children[1].has_last_seen");
    RESET_CHILDREN();
    kids[2].info.hostname = NULL;
    EXPECT_DIFF("hostname", "u.children_resp.children[2].info.hostname");
    RESET_CHILDREN();
    kids[2].staleness_ms = 1;
    EXPECT_DIFF("staleness", "u.children_resp.children[2].staleness_ms");
    RESET_CHILDREN();
    b.u.children_resp.n_children = 2;
    EXPECT_DIFF("count", "u.children_resp.n_children");

    sample_msg(CD_MSG_CHILD_JOIN, &a);
    b = a;
    b.u.child_join.info.mac = "00:11:22:33:44:56";
    EXPECT_DIFF("mac", "u.child_join.info.mac");
    b = a;
    b.u.child_join.info.n_addresses = 2;
    EXPECT_DIFF("address count", "u.child_join.info.n_addresses");
    sample_msg(CD_MSG_CHILD_REPORT, &a);
    b = a;
    b.u.child_report.state = "following";
    EXPECT_DIFF("state", "u.child_report.state");
    b = a;
    b.u.child_report.services = sample_services + 1;
    b.u.child_report.n_services = 2;
    EXPECT_DIFF("services", "u.child_report.n_services");
    sample_msg(CD_MSG_CHILD_JOIN_RESP, &a);
    b = a;
    b.u.child_join_resp.registered_rev = 0;
    EXPECT_DIFF("registered revision", "u.child_join_resp.registered_rev");
    sample_msg(CD_MSG_HELLO, &a);
    b = a;
    b.u.hello.epoch = 0;
    EXPECT_DIFF("epoch", "u.hello.epoch");
    sample_msg(CD_MSG_CHANGES, &a);
    b = a;
    b.u.changes.epoch = 1;
    EXPECT_DIFF("epoch", "u.changes.epoch");
#undef RESET_CHILDREN
#undef EXPECT_DIFF
}

/* --- registry records -------------------------------------------------- */

static void expect_child_info_roundtrip(const struct cd_child_info *ci,
                                        const char *what)
{
    struct cd_child_info got;
    uint8_t *buf;
    uint8_t *copy;
    size_t len;

    expect_rc(codec_child_info_encode(ci, &buf, &len), 0);
    assert_non_null(buf);
    /* Decode from a private copy that is gone before the comparison:
     * the record must borrow nothing from it (ASan sees any use). */
    copy = malloc(len);
    assert_non_null(copy);
    memcpy(copy, buf, len);
    expect_rc(codec_child_info_decode(copy, len, &got), 0);
    memset(copy, 0xa5, len);
    free(copy);
    expect_no_diff(child_info_diff("info", ci, &got), what);
    /* Deterministic: the decoded record encodes to the same bytes. */
    {
        uint8_t *again;
        size_t again_len;

        expect_rc(codec_child_info_encode(&got, &again, &again_len), 0);
        if (again_len != len || memcmp(again, buf, len) != 0) {
            fail_msg("%s: re-encoding the decoded record gave other bytes",
                     what);
        }
        free(again);
    }
    codec_child_info_free(&got);
    assert_null(got.hostname);
    assert_null(got.addresses);
    assert_int_equal(got.n_addresses, 0);
    free(buf);
}

static void test_child_info_roundtrip(void **state)
{
    struct cd_child_info ci = {.id = 5};
    struct cd_child_info got;
    uint8_t *buf;
    size_t len;

    (void)state;
    expect_child_info_roundtrip(&sample_info, "full record");
    expect_child_info_roundtrip(&sample_children[2].info, "hostname only");
    expect_child_info_roundtrip(&ci, "id only");

    /* Absent strings come back NULL, no addresses as NULL and 0. */
    expect_rc(codec_child_info_encode(&ci, &buf, &len), 0);
    expect_rc(codec_child_info_decode(buf, len, &got), 0);
    assert_int_equal(got.id, 5);
    assert_null(got.hostname);
    assert_null(got.addresses);
    assert_int_equal(got.n_addresses, 0);
    assert_null(got.mac);
    assert_null(got.os);
    assert_null(got.app_version);
    assert_int_equal(got.joined_ms, 0);
    codec_child_info_free(&got);
    free(buf);

    /* Empty strings are content; addresses given with n 0 are none. */
    ci.hostname = "";
    ci.addresses = sample_addresses;
    ci.n_addresses = 0;
    expect_rc(codec_child_info_encode(&ci, &buf, &len), 0);
    expect_rc(codec_child_info_decode(buf, len, &got), 0);
    assert_non_null(got.hostname);
    assert_string_equal(got.hostname, "");
    assert_null(got.addresses);
    codec_child_info_free(&got);
    free(buf);

    /* The same record as the body of a join decodes equal, too. */
    {
        struct cd_msg m;
        struct cd_msg d;
        uint8_t *frame;

        sample_msg(CD_MSG_CHILD_JOIN, &m);
        encode_decode(&m, &d, &frame, &len);
        expect_no_diff(
            child_info_diff("info", &sample_info, &d.u.child_join.info),
            "join's info");
        codec_msg_free(&d);
        free(frame);
    }

    /* Unknown fields (a newer writer's) are skipped. */
    {
        struct pbw w = {0};

        expect_rc(codec_child_info_encode(&sample_info, &buf, &len), 0);
        pbw_raw(&w, buf, len);
        free(buf);
        pbw_uint(&w, 100, 1);
        pbw_bytes(&w, 101, "future", 6);
        expect_rc(codec_child_info_decode(w.buf, w.len, &got), 0);
        expect_no_diff(child_info_diff("info", &sample_info, &got),
                       "record with unknown fields");
        codec_child_info_free(&got);
        pbw_free(&w);
    }
}

/* A ChildInfo{id = 1, addresses = n times "a"} as bytes. */
static struct pbw child_info_with_addresses(size_t n)
{
    struct pbw ci = {0};

    pbw_uint(&ci, 1, 1);
    for (size_t i = 0; i < n; i++) {
        pbw_str(&ci, 3, "a");
    }
    return ci;
}

static int child_info_decode_rc(struct pbw *w)
{
    struct cd_child_info ci;
    int rc = codec_child_info_decode(w->buf, w->len, &ci);

    if (rc == 0) {
        codec_child_info_free(&ci);
    } else if (ci.hostname != NULL || ci.addresses != NULL ||
               ci.n_addresses != 0 || ci.id != 0) {
        fail_msg("failed record decode (%s) left a non-zeroed record",
                 cd_errname(rc));
    }
    pbw_free(w);
    return rc;
}

static void test_child_info_too_many(void **state)
{
    const char **addrs;
    struct cd_child_info ci = {.id = 1};
    struct pbw w;
    uint8_t *out;
    size_t len;

    (void)state;
    /* Decoding: the bound itself is fine, one more is not. */
    w = child_info_with_addresses(CODEC_MAX_ADDRESSES);
    expect_rc(child_info_decode_rc(&w), 0);
    w = child_info_with_addresses(CODEC_MAX_ADDRESSES + 1);
    expect_rc(child_info_decode_rc(&w), CD_ETOOMANY);

    /* Encoding refuses the same. */
    addrs = calloc(CODEC_MAX_ADDRESSES + 1, sizeof(*addrs));
    assert_non_null(addrs);
    for (size_t i = 0; i <= CODEC_MAX_ADDRESSES; i++) {
        addrs[i] = "10.0.0.1";
    }
    ci.addresses = addrs;
    ci.n_addresses = CODEC_MAX_ADDRESSES;
    expect_rc(codec_child_info_encode(&ci, &out, &len), 0);
    free(out);
    ci.n_addresses = CODEC_MAX_ADDRESSES + 1;
    out = (uint8_t *)&ci;
    len = 99;
    expect_rc(codec_child_info_encode(&ci, &out, &len), CD_ETOOMANY);
    assert_null(out);
    assert_int_equal(len, 0);

    /* A NULL address cannot go on the wire. */
    ci.n_addresses = 2;
    addrs[1] = NULL;
    expect_rc(codec_child_info_encode(&ci, &out, &len), CD_EBADOP);
    assert_null(out);
    addrs[1] = "10.0.0.2";
    expect_rc(codec_child_info_encode(&ci, &out, &len), 0);
    free(out);
    ci.addresses = NULL;
    expect_rc(codec_child_info_encode(&ci, &out, &len), CD_EBADOP);
    free(addrs);
}

/*
 * A truncated record is malformed, unless the cut falls exactly between
 * two fields after the id: such a prefix is a complete, shorter record.
 */
static void test_child_info_truncated(void **state)
{
    struct pbw w = {0};
    size_t ends[8];
    size_t n_ends = 0;

    (void)state;
    pbw_uint(&w, 1, 300); /* a two-byte varint */
    ends[n_ends++] = w.len;
    pbw_str(&w, 2, "child-1");
    ends[n_ends++] = w.len;
    pbw_str(&w, 3, "10.0.1.5");
    ends[n_ends++] = w.len;
    pbw_str(&w, 3, "fe80::1");
    ends[n_ends++] = w.len;
    pbw_str(&w, 4, "00:11:22:33:44:55");
    ends[n_ends++] = w.len;
    pbw_str(&w, 5, "linux");
    ends[n_ends++] = w.len;
    pbw_str(&w, 6, "2.1");
    ends[n_ends++] = w.len;
    pbw_uint(&w, 7, 1700000000789ull);
    ends[n_ends++] = w.len;

    /* Control: the whole record decodes, with every field. */
    {
        struct cd_child_info ci;

        expect_rc(codec_child_info_decode(w.buf, w.len, &ci), 0);
        assert_int_equal(ci.id, 300);
        assert_int_equal(ci.n_addresses, 2);
        assert_string_equal(ci.addresses[1], "fe80::1");
        assert_string_equal(ci.app_version, "2.1");
        assert_int_equal(ci.joined_ms, 1700000000789ull);
        codec_child_info_free(&ci);
    }

    for (size_t cut = 0; cut < w.len; cut++) {
        /* Copy, so that ASan sees a read past the cut. */
        uint8_t *p = malloc(cut + 1);
        struct cd_child_info ci;
        int want = CD_EMALFORMED;
        int rc;

        for (size_t i = 0; i < n_ends; i++) {
            if (ends[i] == cut) {
                want = 0;
            }
        }
        assert_non_null(p);
        memcpy(p, w.buf, cut);
        rc = codec_child_info_decode(p, cut, &ci);
        free(p);
        if (rc == 0) {
            codec_child_info_free(&ci);
        }
        if (rc != want) {
            fail_msg("record cut to %zu bytes: expected %s, got %s", cut,
                     want == 0 ? "success" : cd_errname(want), cd_errname(rc));
        }
    }
    pbw_free(&w);

    /* No id at all: the one required field. */
    pbw_str(&w, 2, "child-1");
    expect_rc(child_info_decode_rc(&w), CD_EMALFORMED);
    pbw_uint(&w, 1, 0);
    pbw_str(&w, 2, "child-1");
    expect_rc(child_info_decode_rc(&w), 0);
    /* Garbage. */
    pbw_raw(&w, "hello, world", 12);
    expect_rc(child_info_decode_rc(&w), CD_EMALFORMED);
}

static size_t alloc_calls;
static size_t alloc_last_size;

static void *counting_alloc(size_t size)
{
    alloc_calls++;
    alloc_last_size = size;
    return malloc(size);
}

static void test_command_roundtrip(void **state)
{
    struct cd_batch b = {
        .time_ms = 1700000000456ull, .ops = sample_ops, .n_ops = 6};
    struct codec_command c;
    uint8_t *buf;
    size_t len;
    uint8_t *buf0;
    size_t len0;

    (void)state;
    alloc_calls = 0;
    expect_rc(codec_command_encode(&b, 0x1122334455667788ull, counting_alloc,
                                   &buf, &len),
              0);
    assert_int_equal(alloc_calls, 1);
    assert_int_equal(alloc_last_size, len);

    expect_rc(codec_command_decode(buf, len, &c), 0);
    assert_int_equal(c.cluster_id, 0x1122334455667788ull);
    expect_no_diff(batch_diff("batch", &b, &c.batch), "command");
    /* The TXN is the fourth op; check its branches explicitly too. */
    assert_int_equal(c.batch.ops[3].type, CD_OP_TXN);
    assert_int_equal(c.batch.ops[3].n_compares, 5);
    assert_int_equal(c.batch.ops[3].n_then, 3);
    assert_int_equal(c.batch.ops[3].n_else, 2);
    assert_int_equal(c.batch.ops[3].compares[2].number, 0);
    assert_int_equal(c.batch.ops[3].compares[3].number, UINT64_MAX);
    assert_int_equal(c.batch.ops[3].then_ops[2].type, CD_OP_DELETE_PREFIX);
    assert_int_equal(c.batch.ops[3].else_ops[1].key.len, 0);
    codec_command_free(&c);
    assert_null(c.owned);

    /* cluster_id 0 is left out, so the encoding is shorter, and NULL
     * alloc_fn means malloc (ASan would flag a mismatched free). */
    expect_rc(codec_command_encode(&b, 0, NULL, &buf0, &len0), 0);
    assert_true(len0 < len);
    expect_rc(codec_command_decode(buf0, len0, &c), 0);
    assert_int_equal(c.cluster_id, 0);
    expect_no_diff(batch_diff("batch", &b, &c.batch), "command, no cluster");
    codec_command_free(&c);
    free(buf0);
    free(buf);

    /* An empty batch is a valid entry. */
    struct cd_batch empty = {.time_ms = 0};
    expect_rc(codec_command_encode(&empty, 0, NULL, &buf, &len), 0);
    expect_rc(codec_command_decode(buf, len, &c), 0);
    assert_int_equal(c.batch.n_ops, 0);
    assert_null(c.batch.ops);
    codec_command_free(&c);
    free(buf);
}

static void *failing_alloc(size_t size)
{
    (void)size;
    return NULL;
}

static void test_command_alloc_failure(void **state)
{
    struct cd_batch b = {.time_ms = 1, .ops = sample_ops, .n_ops = 1};
    uint8_t *buf = (uint8_t *)&b;
    size_t len = 99;

    (void)state;
    expect_rc(codec_command_encode(&b, 0, failing_alloc, &buf, &len), -ENOMEM);
    assert_null(buf);
    assert_int_equal(len, 0);
}

/* --- framing ----------------------------------------------------------- */

/* Three frames of different types back to back; caller frees *out. */
static void three_frames(uint8_t **out, size_t *out_len, size_t ends[3])
{
    static const enum cd_msg_type types[3] = {CD_MSG_GET, CD_MSG_COMMAND,
                                              CD_MSG_OK};
    struct pbw all = {0};

    for (int i = 0; i < 3; i++) {
        struct cd_msg m;
        uint8_t *f;
        size_t n;

        sample_msg(types[i], &m);
        expect_rc(codec_encode(&m, 0, &f, &n), 0);
        pbw_raw(&all, f, n);
        ends[i] = all.len;
        free(f);
    }
    *out = all.buf;
    *out_len = all.len;
}

/* Decode a frame handed out by the reader and check it is the i-th. */
static void check_frame(int i, const uint8_t *payload, size_t len)
{
    static const enum cd_msg_type types[3] = {CD_MSG_GET, CD_MSG_COMMAND,
                                              CD_MSG_OK};
    struct cd_msg want;
    struct cd_msg got;

    if (i < 0 || i >= 3) {
        fail_msg("frame %d handed out from a stream of three", i);
        return; /* fail_msg() does not return; say so to analysers */
    }
    sample_msg(types[i], &want);
    expect_rc(codec_decode(payload, len, &got), 0);
    expect_no_diff(msg_diff(&want, &got), codec_msg_type_name(types[i]));
    codec_msg_free(&got);
}

static void test_reader_byte_by_byte(void **state)
{
    struct codec_reader r;
    uint8_t *stream;
    size_t len;
    size_t ends[3];
    int frames = 0;

    (void)state;
    three_frames(&stream, &len, ends);
    codec_reader_init(&r, CODEC_DEFAULT_MAX_FRAME);
    for (size_t i = 0; i < len; i++) {
        /* A private copy of each byte, so that ASan catches any read
         * past what was given. */
        uint8_t *one = malloc(1);
        const uint8_t *payload;
        size_t payload_len;
        size_t consumed;
        int rc;

        assert_non_null(one);
        *one = stream[i];
        rc = codec_reader_feed(&r, one, 1, &consumed, &payload, &payload_len);
        free(one);
        assert_int_equal(consumed, 1);
        if (frames < 3 && i + 1 == ends[frames]) {
            if (rc != 1) {
                fail_msg("byte %zu ends frame %d: expected 1, got %d", i,
                         frames, rc);
            }
            check_frame(frames, payload, payload_len);
            frames++;
        } else if (rc != 0) {
            fail_msg("byte %zu is inside a frame: expected 0, got %d", i, rc);
        }
    }
    assert_int_equal(frames, 3);
    codec_reader_free(&r);
    free(stream);
}

static void test_reader_many_frames_one_buffer(void **state)
{
    struct codec_reader r;
    uint8_t *stream;
    size_t len;
    size_t ends[3];
    size_t want_end;
    size_t off = 0;
    int frames = 0;

    (void)state;
    three_frames(&stream, &len, ends);
    codec_reader_init(&r, CODEC_DEFAULT_MAX_FRAME);
    while (off < len) {
        const uint8_t *payload;
        size_t payload_len;
        size_t consumed;
        int rc = codec_reader_feed(&r, stream + off, len - off, &consumed,
                                   &payload, &payload_len);

        if (rc != 1) {
            fail_msg("offset %zu: expected a whole frame (1), got %d", off, rc);
        }
        off += consumed;
        /* 0 when the reader hands out a frame the stream does not have. */
        want_end = frames < 3 ? ends[frames] : 0;
        if (off != want_end) {
            fail_msg("frame %d: consumed up to %zu, frame ends at %zu", frames,
                     off, want_end);
        }
        check_frame(frames, payload, payload_len);
        frames++;
    }
    assert_int_equal(frames, 3);

    /* Nothing left over: an empty feed asks for more. */
    {
        const uint8_t *payload;
        size_t payload_len;
        size_t consumed;

        assert_int_equal(
            codec_reader_feed(&r, NULL, 0, &consumed, &payload, &payload_len),
            0);
        assert_int_equal(consumed, 0);
        assert_null(payload);
    }
    codec_reader_free(&r);

    /* Split unevenly: a frame end and the next frame's header in one
     * chunk, a header split across chunks. */
    codec_reader_init(&r, CODEC_DEFAULT_MAX_FRAME);
    frames = 0;
    off = 0;
    size_t cut = ends[0] + 2;
    while (off < len) {
        size_t chunk_end = off < cut ? cut : len;

        while (off < chunk_end) {
            const uint8_t *payload;
            size_t payload_len;
            size_t consumed;
            int rc = codec_reader_feed(&r, stream + off, chunk_end - off,
                                       &consumed, &payload, &payload_len);

            assert_true(rc == 0 || rc == 1);
            off += consumed;
            if (rc == 1) {
                check_frame(frames++, payload, payload_len);
            } else {
                assert_int_equal(off, chunk_end);
            }
        }
    }
    assert_int_equal(frames, 3);
    codec_reader_free(&r);
    free(stream);
}

static void test_reader_oversize(void **state)
{
    struct codec_reader r;
    const uint8_t *payload;
    size_t payload_len;
    size_t consumed;
    uint8_t frame[CODEC_HEADER_SIZE + 1024];

    (void)state;
    memset(frame, 0, sizeof(frame));

    /* Exactly max_frame is accepted... */
    codec_reader_init(&r, 1024);
    codec_put_header(frame, 1024);
    assert_int_equal(codec_reader_feed(&r, frame, sizeof(frame), &consumed,
                                       &payload, &payload_len),
                     1);
    assert_int_equal(payload_len, 1024);
    codec_reader_free(&r);

    /* ...one more is refused as soon as the header is complete, before
     * the reader allocates anything, even split across calls. */
    codec_reader_init(&r, 1024);
    codec_put_header(frame, 1025);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(codec_reader_feed(&r, frame + i, 1, &consumed,
                                           &payload, &payload_len),
                         0);
    }
    expect_rc(codec_reader_feed(&r, frame + 3, sizeof(frame) - 3, &consumed,
                                &payload, &payload_len),
              CD_EFRAMETOOBIG);
    assert_null(r.payload);
    assert_null(payload);

    /* Sticky: a valid frame afterwards gets the same answer. */
    codec_put_header(frame, 1);
    expect_rc(
        codec_reader_feed(&r, frame, 5, &consumed, &payload, &payload_len),
        CD_EFRAMETOOBIG);
    assert_int_equal(consumed, 0);
    assert_null(r.payload);
    codec_reader_free(&r);

    /* The largest length a header can hold: no 4 GiB allocation. */
    codec_reader_init(&r, CODEC_DEFAULT_MAX_FRAME);
    codec_put_header(frame, UINT32_MAX);
    expect_rc(codec_reader_feed(&r, frame, CODEC_HEADER_SIZE, &consumed,
                                &payload, &payload_len),
              CD_EFRAMETOOBIG);
    assert_null(r.payload);
    codec_reader_free(&r);

    /* A reader initialised again after failing works again. */
    codec_reader_init(&r, 1024);
    codec_put_header(frame, 2);
    assert_int_equal(
        codec_reader_feed(&r, frame, 6, &consumed, &payload, &payload_len), 1);
    assert_int_equal(payload_len, 2);
    codec_reader_free(&r);
}

static void test_reader_zero_length_frame(void **state)
{
    static const uint8_t zero[4] = {0, 0, 0, 0};
    struct codec_reader r;
    const uint8_t *payload;
    size_t payload_len = 99;
    size_t consumed;
    struct cd_msg m;

    (void)state;
    codec_reader_init(&r, 0); /* 0: the default maximum */
    assert_int_equal(r.max_frame, CODEC_DEFAULT_MAX_FRAME);
    assert_int_equal(
        codec_reader_feed(&r, zero, 4, &consumed, &payload, &payload_len), 1);
    assert_int_equal(consumed, 4);
    assert_int_equal(payload_len, 0);
    assert_non_null(payload);
    expect_rc(codec_decode(payload, payload_len, &m), CD_EMALFORMED);
    expect_rc(codec_decode(NULL, 0, &m), CD_EMALFORMED);
    codec_reader_free(&r);
    codec_reader_free(NULL);
}

static void test_put_header(void **state)
{
    uint8_t h[4];

    (void)state;
    codec_put_header(h, 0x01020304u);
    assert_int_equal(h[0], 1);
    assert_int_equal(h[1], 2);
    assert_int_equal(h[2], 3);
    assert_int_equal(h[3], 4);
}

/* --- hostile and broken input ------------------------------------------ */

static void test_decode_garbage(void **state)
{
    static const struct
    {
        const char *what;
        const char *bytes;
        size_t len;
    } cases[] = {
        {"lone tag", "\x08", 1},
        {"unterminated varint", "\x08\xff\xff", 3},
        {"eleven-byte varint",
         "\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 12},
        {"length past the end", "\x08\x01\x62\x10\x0a", 5},
        {"group wire type", "\x08\x01\x0b\x0c", 4},
        {"wire type 7", "\x08\x01\x0f", 3},
        {"field number 0", "\x00\x01", 2},
        {"body with wrong wire type", "\x08\x01\x60\x01", 4},
        {"request_id as bytes", "\x0a\x01\x01\x5a\x00", 5},
        {"no request_id", "\x5a\x00", 2},
        {"no body", "\x08\x01", 2},
        {"ASCII", "hello, world", 12},
    };
    struct cd_msg m;

    (void)state;
    /* Control: request_id and an empty Ok body decode. */
    expect_rc(codec_decode((const uint8_t *)"\x08\x01\x5a\x00", 4, &m), 0);
    assert_int_equal(m.type, CD_MSG_OK);
    codec_msg_free(&m);

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc =
            codec_decode((const uint8_t *)cases[i].bytes, cases[i].len, &m);

        if (rc != CD_EMALFORMED) {
            fail_msg("%s: expected CD_EMALFORMED, got %s", cases[i].what,
                     cd_errname(rc));
        }
        assert_null(m.codec__owned);
    }
}

/* Every strict prefix of a valid frame is malformed. */
static void test_decode_truncated(void **state)
{
    (void)state;
    for (size_t t = 0; t < N_ALL_TYPES; t++) {
        struct cd_msg m;
        uint8_t *frame;
        size_t len;

        sample_msg(all_types[t], &m);
        expect_rc(codec_encode(&m, 0, &frame, &len), 0);
        for (size_t cut = 0; cut < len - CODEC_HEADER_SIZE; cut++) {
            /* Copy, so that ASan sees a read past the cut. */
            uint8_t *p = malloc(cut + 1);
            struct cd_msg d;
            int rc;

            assert_non_null(p);
            memcpy(p, frame + CODEC_HEADER_SIZE, cut);
            rc = codec_decode(p, cut, &d);
            free(p);
            if (rc != CD_EMALFORMED) {
                codec_msg_free(&d);
                fail_msg(
                    "%s cut to %zu bytes: expected CD_EMALFORMED, got "
                    "%s",
                    codec_msg_type_name(m.type), cut, cd_errname(rc));
            }
        }
        free(frame);
    }
}

/* Random bytes and random mutations of valid frames: any documented
 * result is fine, a crash or leak is not. */
static void test_decode_random(void **state)
{
    uint64_t x = 0x9e3779b97f4a7c15ull;
    uint8_t buf[512];
    int decoded = 0;

    (void)state;
    for (int iter = 0; iter < 40000; iter++) {
        size_t len;
        struct cd_msg m;
        int rc;

        if (iter % 2 == 0) {
            len = (size_t)(x % sizeof(buf));
            for (size_t i = 0; i < len; i++) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf[i] = (uint8_t)x;
            }
        } else {
            struct cd_msg s;
            uint8_t *frame;
            size_t flen;

            sample_msg(all_types[(size_t)iter / 2 % N_ALL_TYPES], &s);
            expect_rc(codec_encode(&s, 0, &frame, &flen), 0);
            len = flen - CODEC_HEADER_SIZE;
            assert_true(len <= sizeof(buf));
            memcpy(buf, frame + CODEC_HEADER_SIZE, len);
            free(frame);
            for (int k = 0; k < 3; k++) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf[x % len] ^= (uint8_t)(x >> 32);
            }
        }
        rc = codec_decode(buf, len, &m);
        if (rc == 0) {
            decoded++;
            codec_msg_free(&m);
        } else if (rc != CD_EMALFORMED && rc != CD_EBADOP &&
                   rc != CD_ETOOMANY) {
            fail_msg("iteration %d: undocumented result %s", iter,
                     cd_errname(rc));
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    /* Some mutations only touch values; if none decoded, the mutation
     * half of this test did not run as intended. */
    assert_true(decoded > 0);
}

/* Op{type, key} with a given type, wrapped in WriteRequest. */
static struct pbw write_with_op_type(int64_t type)
{
    struct pbw op = {0};
    struct pbw req = {0};

    pbw_int(&op, 1, type);
    pbw_bytes(&op, 4, "k", 1);
    pbw_uint(&op, 6, 5); /* revision, for COMPACT */
    pbw_msg(&req, 1, &op);
    return envelope(12, &req);
}

/* A Command with one TXN whose compare has the given target and result
 * and whose then-branch holds one op of then_type. */
static struct pbw txn_command(int64_t target, int64_t result, int64_t then_type)
{
    struct pbw cmp = {0};
    struct pbw top = {0};
    struct pbw op = {0};
    struct pbw cmd = {0};

    pbw_bytes(&cmp, 1, "k", 1);
    pbw_int(&cmp, 2, target);
    pbw_int(&cmp, 3, result);
    pbw_bytes(&cmp, 4, "v", 1);
    pbw_uint(&cmp, 5, 1);
    pbw_int(&top, 1, then_type);
    pbw_bytes(&top, 2, "t", 1);
    pbw_int(&op, 1, CD_OP_TXN);
    pbw_msg(&op, 10, &cmp);
    pbw_msg(&op, 11, &top);
    pbw_uint(&cmd, 1, 123);
    pbw_msg(&cmd, 2, &op);
    return cmd;
}

static struct pbw changes_with_event_type(int64_t type)
{
    struct pbw kv = {0};
    struct pbw ev = {0};
    struct pbw cb = {0};

    pbw_bytes(&kv, 1, "k", 1);
    pbw_int(&ev, 1, type);
    pbw_msg(&ev, 2, &kv);
    pbw_msg(&cb, 1, &ev);
    pbw_uint(&cb, 2, 10);
    return envelope(18, &cb);
}

static struct pbw members_with_role(int64_t role)
{
    struct pbw mem = {0};
    struct pbw resp = {0};

    pbw_uint(&mem, 1, 1);
    pbw_str(&mem, 2, "10.0.0.1:7000");
    pbw_int(&mem, 3, role);
    pbw_msg(&resp, 1, &mem);
    return envelope(22, &resp);
}

static struct pbw member_change(int64_t action, int64_t role)
{
    struct pbw mc = {0};

    pbw_int(&mc, 1, action);
    pbw_uint(&mc, 2, 4);
    pbw_str(&mc, 3, "10.0.0.4:7000");
    pbw_int(&mc, 4, role);
    return envelope(23, &mc);
}

static void test_decode_unknown_enums(void **state)
{
    struct pbw w;

    (void)state;
    for (int t = CD_OP_PUT; t <= CD_OP_COMPACT; t++) {
        w = write_with_op_type(t);
        expect_rc(decode_rc(&w), 0);
    }
    static const int64_t bad[] = {0, 7, 99, -1, INT32_MAX, INT32_MIN};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        w = write_with_op_type(bad[i]);
        expect_rc(decode_rc(&w), CD_EBADOP);

        w = txn_command(bad[i], CD_CMP_EQUAL, CD_OP_PUT);
        expect_rc(command_decode_rc(&w), CD_EBADOP);
        w = txn_command(CD_CMP_VALUE, bad[i], CD_OP_PUT);
        expect_rc(command_decode_rc(&w), CD_EBADOP);
        w = txn_command(CD_CMP_VALUE, CD_CMP_EQUAL, bad[i]);
        expect_rc(command_decode_rc(&w), CD_EBADOP);

        w = changes_with_event_type(bad[i] == 7 ? 3 : bad[i]);
        expect_rc(decode_rc(&w), CD_EBADOP);
        w = members_with_role(bad[i] == 7 ? 4 : bad[i]);
        expect_rc(decode_rc(&w), CD_EBADOP);
        w = member_change(bad[i] == 7 ? 4 : bad[i], CD_ROLE_VOTER);
        expect_rc(decode_rc(&w), CD_EBADOP);
        w = member_change(CD_MEMBER_ASSIGN, bad[i] == 7 ? 4 : bad[i]);
        expect_rc(decode_rc(&w), CD_EBADOP);
    }
    /* Controls: every valid value of each enum decodes. */
    for (int t = CD_CMP_VALUE; t <= CD_CMP_EXISTS; t++) {
        for (int r = CD_CMP_EQUAL; r <= CD_CMP_GREATER; r++) {
            w = txn_command(t, r, CD_OP_PUT);
            expect_rc(command_decode_rc(&w), 0);
        }
    }
    w = changes_with_event_type(CD_EVENT_PUT);
    expect_rc(decode_rc(&w), 0);
    w = changes_with_event_type(CD_EVENT_DELETE);
    expect_rc(decode_rc(&w), 0);
    for (int r = CD_ROLE_VOTER; r <= CD_ROLE_SPARE; r++) {
        w = members_with_role(r);
        expect_rc(decode_rc(&w), 0);
        w = member_change(CD_MEMBER_ASSIGN, r);
        expect_rc(decode_rc(&w), 0);
    }
    for (int a = CD_MEMBER_ADD; a <= CD_MEMBER_ASSIGN; a++) {
        w = member_change(a, CD_ROLE_VOTER);
        expect_rc(decode_rc(&w), 0);
    }
}

static void test_decode_bad_placement(void **state)
{
    struct pbw w;

    (void)state;
    /* Branches hold PUT, DELETE and DELETE_PREFIX only. */
    for (int t = CD_OP_PUT; t <= CD_OP_DELETE_PREFIX; t++) {
        w = txn_command(CD_CMP_VALUE, CD_CMP_EQUAL, t);
        expect_rc(command_decode_rc(&w), 0);
    }
    w = txn_command(CD_CMP_VALUE, CD_CMP_EQUAL, CD_OP_TXN);
    expect_rc(command_decode_rc(&w), CD_EBADOP);
    w = txn_command(CD_CMP_VALUE, CD_CMP_EQUAL, CD_OP_COMPACT);
    expect_rc(command_decode_rc(&w), CD_EBADOP);
    w = txn_command(CD_CMP_VALUE, CD_CMP_EQUAL, CD_OP_LOG_APPEND);
    expect_rc(command_decode_rc(&w), CD_EBADOP);

    /* The same TXN with a COMPACT in its else-branch, via an Envelope. */
    {
        struct pbw eo = {0};
        struct pbw op = {0};
        struct pbw req = {0};

        pbw_int(&eo, 1, CD_OP_COMPACT);
        pbw_bytes(&eo, 2, "k", 1);
        pbw_int(&op, 1, CD_OP_TXN);
        pbw_msg(&op, 12, &eo);
        pbw_msg(&req, 1, &op);
        w = envelope(12, &req);
        expect_rc(decode_rc(&w), CD_EBADOP);
    }

    /* LOG_APPEND is a Command op, never a client write. */
    {
        struct pbw op = {0};
        struct pbw req = {0};
        struct pbw cmd = {0};

        pbw_int(&op, 1, CD_OP_LOG_APPEND);
        pbw_bytes(&op, 5, "rec", 3);
        pbw_uint(&op, 7, 1);
        pbw_uint(&op, 8, 2);
        pbw_uint(&op, 9, 3);
        pbw_raw(&cmd, "\x08\x01", 2);
        pbw_bytes(&cmd, 2, op.buf, op.len);
        pbw_msg(&req, 1, &op);
        w = envelope(12, &req);
        expect_rc(decode_rc(&w), CD_EBADOP);
        expect_rc(command_decode_rc(&cmd), 0);
    }
}

/* Fields an operation reads must be present: absent is not zero. */
static void test_decode_missing_fields(void **state)
{
    static const struct
    {
        const char *what;
        unsigned body;
        const char *bytes;
        size_t len;
        int want;
    } cases[] = {
        {"PUT with key", 12, "\x0a\x05\x08\x01\x22\x01k", 7, 0},
        {"PUT without key", 12, "\x0a\x02\x08\x01", 4, CD_EMALFORMED},
        {"DELETE without key", 12, "\x0a\x02\x08\x02", 4, CD_EMALFORMED},
        {"DELETE_PREFIX, empty prefix", 12, "\x0a\x04\x08\x03\x22\x00", 6, 0},
        {"DELETE_PREFIX without key", 12, "\x0a\x02\x08\x03", 4, CD_EMALFORMED},
        {"COMPACT with revision 0", 12, "\x0a\x04\x08\x05\x30\x00", 6, 0},
        {"COMPACT without revision", 12, "\x0a\x02\x08\x05", 4, CD_EMALFORMED},
        {"TXN with nothing", 12, "\x0a\x02\x08\x04", 4, 0},
        {"PUT with a compare", 12,
         "\x0a\x0f\x08\x01\x22\x01k\x52\x08\x0a\x00\x10\x02\x18\x01\x28\x00",
         17, CD_EMALFORMED},
        {"TXN, VERSION compare with number", 12,
         "\x0a\x0c\x08\x04\x52\x08\x0a\x00\x10\x02\x18\x01\x28\x00", 14, 0},
        {"TXN, VERSION compare without number", 12,
         "\x0a\x0a\x08\x04\x52\x06\x0a\x00\x10\x02\x18\x01", 12, CD_EMALFORMED},
        {"TXN, VALUE compare without value", 12,
         "\x0a\x0a\x08\x04\x52\x06\x0a\x00\x10\x01\x18\x01", 12, CD_EMALFORMED},
        {"TXN, branch op without key", 12, "\x0a\x06\x08\x04\x5a\x02\x08\x01",
         8, CD_EMALFORMED},
        {"write without op", 12, "", 0, CD_EMALFORMED},
        {"error with code -1", 10, "\x08\x01", 2, 0},
        {"error with code 0", 10, "\x08\x00", 2, CD_EMALFORMED},
        {"error with code 1", 10, "\x08\x02", 2, CD_EMALFORMED},
        {"error without code", 10, "", 0, CD_EMALFORMED},
        {"REMOVE with id", 23, "\x08\x02\x10\x00", 4, 0},
        {"REMOVE without id", 23, "\x08\x02", 2, CD_EMALFORMED},
        {"ADD with address only", 23, "\x08\x01\x1a\x01x", 5, 0},
        {"ADD without address", 23, "\x08\x01\x10\x05", 4, CD_EMALFORMED},
        {"ASSIGN without role", 23, "\x08\x03\x10\x05", 4, CD_EMALFORMED},
        {"member without address", 22, "\x0a\x02\x08\x01", 4, CD_EMALFORMED},
        {"event without kv", 18, "\x0a\x02\x08\x01\x10\x01", 6, CD_EMALFORMED},
        {"changes without revision", 18, "", 0, CD_EMALFORMED},
        {"get without key", 14, "", 0, CD_EMALFORMED},
        {"chunk without data", 26, "\x08\x00", 2, CD_EMALFORMED},
        {"hello without cluster id", 27, "", 0, CD_EMALFORMED},
        {"log ack without seq", 29, "", 0, CD_EMALFORMED},
        {"log record without record", 28, "\x08\x01\x12\x04\x08\x01\x10\x01", 8,
         CD_EMALFORMED},
        {"command without time", 30, "", 0, CD_EMALFORMED},
        {"LOG_APPEND without child", 30,
         "\x08\x01\x12\x08\x08\x06\x2a\x00\x40\x01\x48\x01", 12, CD_EMALFORMED},
        {"LOG_APPEND complete", 30,
         "\x08\x01\x12\x0a\x08\x06\x2a\x00\x38\x01\x40\x01\x48\x01", 14, 0},
        {"child join complete", 34, "\x0a\x01t\x12\x02\x08\x05", 7, 0},
        {"child join without info", 34, "\x0a\x01t", 3, CD_EMALFORMED},
        {"child join without token", 34, "\x12\x02\x08\x05", 4, CD_EMALFORMED},
        {"child join, info without id", 34, "\x0a\x01t\x12\x00", 5,
         CD_EMALFORMED},
        {"join reply complete", 35,
         "\x08\x01\x11\x01\x02\x03\x04\x05\x06\x07\x08", 11, 0},
        {"join reply without cluster id", 35, "\x08\x01\x18\x05", 4,
         CD_EMALFORMED},
        {"join reply without child id", 35,
         "\x11\x01\x02\x03\x04\x05\x06\x07\x08", 9, CD_EMALFORMED},
        {"child leave with id", 36, "\x08\x00", 2, 0},
        {"child leave without id", 36, "", 0, CD_EMALFORMED},
        {"report with id only", 37, "\x08\x01", 2, 0},
        {"report without id", 37, "\x10\x05", 2, CD_EMALFORMED},
        {"report, service complete", 37, "\x08\x01\x22\x05\x0a\x01s\x10\x01", 9,
         0},
        {"report, service without up", 37, "\x08\x01\x22\x03\x0a\x01s", 7,
         CD_EMALFORMED},
        {"report, service without name", 37, "\x08\x01\x22\x02\x10\x01", 6,
         CD_EMALFORMED},
        {"listing, child with info", 39, "\x0a\x04\x0a\x02\x08\x01", 6, 0},
        {"listing, child without info", 39, "\x0a\x02\x12\x00", 4,
         CD_EMALFORMED},
        {"listing, child's info without id", 39, "\x0a\x02\x0a\x00", 4,
         CD_EMALFORMED},
        {"listing, child's service without up", 39,
         "\x0a\x09\x0a\x02\x08\x01\x32\x03\x0a\x01s", 11, CD_EMALFORMED},
        {"listing, child's service complete", 39,
         "\x0a\x0b\x0a\x02\x08\x01\x32\x05\x0a\x01s\x10\x00", 13, 0},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct pbw body = {0};
        struct pbw w;
        int rc;

        pbw_raw(&body, cases[i].bytes, cases[i].len);
        w = envelope(cases[i].body, &body);
        rc = decode_rc(&w);
        if (rc != cases[i].want) {
            fail_msg("%s: expected %s, got %s", cases[i].what,
                     cases[i].want == 0 ? "success" : cd_errname(cases[i].want),
                     cd_errname(rc));
        }
    }
}

/* The backup records as stored: round trip, the limits of the texts held
 * in place. */
static void test_backup_records(void **state)
{
    struct cd_backup_schedule bs, bs2;
    struct cd_backup_result br, br2;
    uint8_t *buf;
    size_t len;
    const char *d;

    (void)state;
    expect_rc(codec_backup_schedule_encode(&sample_schedule, &buf, &len), 0);
    expect_rc(codec_backup_schedule_decode(buf, len, &bs), 0);
    free(buf);
    d = backup_schedule_diff("schedule", &sample_schedule, &bs);
    if (d != NULL) {
        fail_msg("schedule differs after a round trip: %s", d);
    }
    assert_true(bs.has_at && bs.at_minute == 0);
    /* Off: an empty record, still a record. */
    memset(&bs, 0, sizeof(bs));
    expect_rc(codec_backup_schedule_encode(&bs, &buf, &len), 0);
    expect_rc(codec_backup_schedule_decode(buf, len, &bs2), 0);
    free(buf);
    assert_int_equal(bs2.interval_s, 0);
    assert_false(bs2.has_at);

    expect_rc(codec_backup_result_encode(&sample_result, &buf, &len), 0);
    expect_rc(codec_backup_result_decode(buf, len, &br), 0);
    free(buf);
    d = backup_result_diff("result", &sample_result, &br);
    if (d != NULL) {
        fail_msg("result differs after a round trip: %s", d);
    }

    /* An unterminated array cannot be encoded. */
    bs = sample_schedule;
    memset(bs.dir, 'd', sizeof(bs.dir));
    expect_rc(codec_backup_schedule_encode(&bs, &buf, &len), CD_EBADOP);
    assert_null(buf);

    /* From the wire: a dir that does not fit is refused, a long error
     * text is cut, time_ms is required. */
    {
        char long_dir[CD_BACKUP_DIR_MAX + 8];
        char long_err[CD_BACKUP_ERROR_MAX * 2];
        struct pbw w = {0};

        memset(long_dir, 'x', sizeof(long_dir) - 1);
        long_dir[sizeof(long_dir) - 1] = '\0';
        pbw_str(&w, 3, long_dir);
        expect_rc(codec_backup_schedule_decode(w.buf, w.len, &bs),
                  CD_EMALFORMED);
        pbw_free(&w);

        memset(long_err, 'e', sizeof(long_err) - 1);
        long_err[sizeof(long_err) - 1] = '\0';
        pbw_uint(&w, 1, 5);
        pbw_str(&w, 9, long_err);
        expect_rc(codec_backup_result_decode(w.buf, w.len, &br2), 0);
        assert_int_equal(strlen(br2.error), CD_BACKUP_ERROR_MAX - 1);
        pbw_free(&w);

        pbw_uint(&w, 2, 1); /* ok, but no time_ms */
        expect_rc(codec_backup_result_decode(w.buf, w.len, &br2),
                  CD_EMALFORMED);
        pbw_free(&w);
        expect_rc(codec_backup_result_decode((const uint8_t *)"\xff", 1, &br2),
                  CD_EMALFORMED);
    }
}

/*
 * Children older than history epochs send a Hello without field 7: it
 * decodes as epoch 0, which is what a parent of a never-restored cluster
 * has, so they keep following.  A child of epoch 0 sends exactly those
 * bytes, so older parents read it as before.
 */
static void test_hello_epoch_compat(void **state)
{
    struct pbw body = {0};
    struct pbw w;
    struct cd_msg m;
    uint8_t *out;
    size_t len;

    (void)state;
    pbw_uint(&body, 1, 0x1234); /* cluster_id */
    pbw_uint(&body, 2, 5);      /* child_id */
    pbw_uint(&body, 3, 77);     /* revision */
    w = envelope(27, &body);
    expect_rc(codec_decode(w.buf, w.len, &m), 0);
    assert_int_equal(m.type, CD_MSG_HELLO);
    assert_int_equal(m.u.hello.revision, 77);
    assert_int_equal(m.u.hello.epoch, 0);
    codec_msg_free(&m);

    memset(&m, 0, sizeof(m));
    m.request_id = 1;
    m.type = CD_MSG_HELLO;
    m.u.hello.cluster_id = 0x1234;
    m.u.hello.child_id = 5;
    m.u.hello.revision = 77;
    expect_rc(codec_encode(&m, 0, &out, &len), 0);
    assert_int_equal(len - CODEC_HEADER_SIZE, w.len);
    assert_memory_equal(out + CODEC_HEADER_SIZE, w.buf, w.len);
    free(out);
    pbw_free(&w);
}

/* Command{time_ms = 1, ops = n DELETE ops} as bytes. */
static struct pbw command_of_deletes(size_t n)
{
    struct pbw cmd = {0};

    pbw_uint(&cmd, 1, 1);
    for (size_t i = 0; i < n; i++) {
        pbw_raw(&cmd, "\x12\x04\x08\x02\x22\x00", 6);
    }
    return cmd;
}

static void test_too_many(void **state)
{
    struct pbw w;
    struct cd_op *ops;
    struct cd_compare *cmps;
    uint8_t *out;
    size_t len;

    (void)state;
    /* Decoding: the bound itself is fine, one more is not. */
    w = command_of_deletes(CODEC_MAX_OPS);
    expect_rc(command_decode_rc(&w), 0);
    w = command_of_deletes(CODEC_MAX_OPS + 1);
    expect_rc(command_decode_rc(&w), CD_ETOOMANY);

    {
        struct pbw cmd = command_of_deletes(CODEC_MAX_OPS + 1);

        w = envelope(30, &cmd);
        expect_rc(decode_rc(&w), CD_ETOOMANY);
    }

    /* A TXN with CODEC_MAX_TXN_OPS + 1 compares or branch ops. */
    for (unsigned field = 10; field <= 12; field++) {
        for (size_t n = CODEC_MAX_TXN_OPS; n <= CODEC_MAX_TXN_OPS + 1; n++) {
            struct pbw op = {0};
            struct pbw req = {0};

            pbw_int(&op, 1, CD_OP_TXN);
            for (size_t i = 0; i < n; i++) {
                if (field == 10) {
                    pbw_bytes(&op, 10, "\x0a\x00\x10\x02\x18\x01\x28\x00", 8);
                } else {
                    pbw_bytes(&op, field, "\x08\x02\x12\x00", 4);
                }
            }
            pbw_msg(&req, 1, &op);
            w = envelope(12, &req);
            expect_rc(decode_rc(&w), n > CODEC_MAX_TXN_OPS ? CD_ETOOMANY : 0);
        }
    }

    /* Encoding refuses the same. */
    ops = calloc(CODEC_MAX_OPS + 1, sizeof(*ops));
    assert_non_null(ops);
    for (size_t i = 0; i <= CODEC_MAX_OPS; i++) {
        ops[i].type = CD_OP_DELETE;
    }
    struct cd_batch b = {.time_ms = 1, .ops = ops, .n_ops = CODEC_MAX_OPS};
    expect_rc(codec_command_encode(&b, 0, NULL, &out, &len), 0);
    free(out);
    b.n_ops = CODEC_MAX_OPS + 1;
    expect_rc(codec_command_encode(&b, 0, NULL, &out, &len), CD_ETOOMANY);
    assert_null(out);
    struct cd_msg m = {.type = CD_MSG_COMMAND, .u.command = b};
    expect_rc(codec_encode(&m, 0, &out, &len), CD_ETOOMANY);
    assert_null(out);

    cmps = calloc(CODEC_MAX_TXN_OPS + 1, sizeof(*cmps));
    assert_non_null(cmps);
    for (size_t i = 0; i <= CODEC_MAX_TXN_OPS; i++) {
        cmps[i].target = CD_CMP_EXISTS;
        cmps[i].result = CD_CMP_EQUAL;
    }
    struct cd_msg wm = {.type = CD_MSG_WRITE};
    wm.u.write.op.type = CD_OP_TXN;
    wm.u.write.op.compares = cmps;
    wm.u.write.op.n_compares = CODEC_MAX_TXN_OPS;
    expect_rc(codec_encode(&wm, 0, &out, &len), 0);
    free(out);
    wm.u.write.op.n_compares = CODEC_MAX_TXN_OPS + 1;
    expect_rc(codec_encode(&wm, 0, &out, &len), CD_ETOOMANY);
    wm.u.write.op.n_compares = 0;
    wm.u.write.op.then_ops = ops;
    wm.u.write.op.n_then = CODEC_MAX_TXN_OPS + 1;
    expect_rc(codec_encode(&wm, 0, &out, &len), CD_ETOOMANY);
    wm.u.write.op.n_then = 0;
    wm.u.write.op.else_ops = ops;
    wm.u.write.op.n_else = CODEC_MAX_TXN_OPS + 1;
    expect_rc(codec_encode(&wm, 0, &out, &len), CD_ETOOMANY);
    wm.u.write.op.n_else = CODEC_MAX_TXN_OPS;
    expect_rc(codec_encode(&wm, 0, &out, &len), 0);
    free(out);
    free(cmps);
    free(ops);
}

/* The children messages' bounds, both ways: the bound itself is fine, one
 * more is CD_ETOOMANY. */
static void test_too_many_children(void **state)
{
    struct pbw w;
    struct cd_msg m;
    struct cd_service_health *svcs;
    struct cd_child_status *kids;
    const char **addrs;
    uint8_t *out;
    size_t len;

    (void)state;
    /* A join whose info has too many addresses. */
    for (size_t n = CODEC_MAX_ADDRESSES; n <= CODEC_MAX_ADDRESSES + 1; n++) {
        struct pbw ci = child_info_with_addresses(n);
        struct pbw req = {0};

        pbw_str(&req, 1, "t");
        pbw_msg(&req, 2, &ci);
        w = envelope(34, &req);
        expect_rc(decode_rc(&w), n > CODEC_MAX_ADDRESSES ? CD_ETOOMANY : 0);
    }
    /* A report with too many services. */
    for (size_t n = CODEC_MAX_SERVICES; n <= CODEC_MAX_SERVICES + 1; n++) {
        struct pbw rep = {0};

        pbw_uint(&rep, 1, 1);
        for (size_t i = 0; i < n; i++) {
            pbw_bytes(&rep, 4, "\x0a\x01s\x10\x01", 5);
        }
        w = envelope(37, &rep);
        expect_rc(decode_rc(&w), n > CODEC_MAX_SERVICES ? CD_ETOOMANY : 0);
    }
    /* A listing with too many children, a child with too many services
     * or too many addresses. */
    for (size_t n = CODEC_MAX_CHILDREN; n <= CODEC_MAX_CHILDREN + 1; n++) {
        struct pbw resp = {0};

        for (size_t i = 0; i < n; i++) {
            pbw_raw(&resp, "\x0a\x04\x0a\x02\x08\x01", 6);
        }
        w = envelope(39, &resp);
        expect_rc(decode_rc(&w), n > CODEC_MAX_CHILDREN ? CD_ETOOMANY : 0);
    }
    for (size_t n = CODEC_MAX_SERVICES; n <= CODEC_MAX_SERVICES + 1; n++) {
        struct pbw st = {0};
        struct pbw resp = {0};

        pbw_bytes(&st, 1, "\x08\x01", 2);
        for (size_t i = 0; i < n; i++) {
            pbw_bytes(&st, 6, "\x0a\x01s\x10\x01", 5);
        }
        pbw_msg(&resp, 1, &st);
        w = envelope(39, &resp);
        expect_rc(decode_rc(&w), n > CODEC_MAX_SERVICES ? CD_ETOOMANY : 0);
    }
    for (size_t n = CODEC_MAX_ADDRESSES; n <= CODEC_MAX_ADDRESSES + 1; n++) {
        struct pbw ci = child_info_with_addresses(n);
        struct pbw st = {0};
        struct pbw resp = {0};

        pbw_msg(&st, 1, &ci);
        pbw_msg(&resp, 1, &st);
        w = envelope(39, &resp);
        expect_rc(decode_rc(&w), n > CODEC_MAX_ADDRESSES ? CD_ETOOMANY : 0);
    }

    /* Encoding refuses the same. */
    addrs = calloc(CODEC_MAX_ADDRESSES + 1, sizeof(*addrs));
    svcs = calloc(CODEC_MAX_SERVICES + 1, sizeof(*svcs));
    kids = calloc(CODEC_MAX_CHILDREN + 1, sizeof(*kids));
    assert_non_null(addrs);
    assert_non_null(svcs);
    assert_non_null(kids);
    for (size_t i = 0; i <= CODEC_MAX_ADDRESSES; i++) {
        addrs[i] = "a";
    }
    for (size_t i = 0; i <= CODEC_MAX_SERVICES; i++) {
        svcs[i].name = "s";
    }

    memset(&m, 0, sizeof(m));
    m.type = CD_MSG_CHILD_JOIN;
    m.u.child_join.token = "t";
    m.u.child_join.info.addresses = addrs;
    m.u.child_join.info.n_addresses = CODEC_MAX_ADDRESSES;
    expect_rc(codec_encode(&m, 0, &out, &len), 0);
    free(out);
    m.u.child_join.info.n_addresses = CODEC_MAX_ADDRESSES + 1;
    expect_rc(codec_encode(&m, 0, &out, &len), CD_ETOOMANY);
    assert_null(out);

    memset(&m, 0, sizeof(m));
    m.type = CD_MSG_CHILD_REPORT;
    m.u.child_report.services = svcs;
    m.u.child_report.n_services = CODEC_MAX_SERVICES;
    expect_rc(codec_encode(&m, 0, &out, &len), 0);
    free(out);
    m.u.child_report.n_services = CODEC_MAX_SERVICES + 1;
    expect_rc(codec_encode(&m, 0, &out, &len), CD_ETOOMANY);
    assert_null(out);

    memset(&m, 0, sizeof(m));
    m.type = CD_MSG_CHILDREN_RESP;
    m.u.children_resp.children = kids;
    m.u.children_resp.n_children = CODEC_MAX_CHILDREN;
    expect_rc(codec_encode(&m, 0, &out, &len), 0);
    free(out);
    m.u.children_resp.n_children = CODEC_MAX_CHILDREN + 1;
    expect_rc(codec_encode(&m, 0, &out, &len), CD_ETOOMANY);
    assert_null(out);
    m.u.children_resp.n_children = 2;
    kids[1].services = svcs;
    kids[1].n_services = CODEC_MAX_SERVICES;
    expect_rc(codec_encode(&m, 0, &out, &len), 0);
    free(out);
    kids[1].n_services = CODEC_MAX_SERVICES + 1;
    expect_rc(codec_encode(&m, 0, &out, &len), CD_ETOOMANY);
    kids[1].n_services = 0;
    kids[1].info.addresses = addrs;
    kids[1].info.n_addresses = CODEC_MAX_ADDRESSES;
    expect_rc(codec_encode(&m, 0, &out, &len), 0);
    free(out);
    kids[1].info.n_addresses = CODEC_MAX_ADDRESSES + 1;
    expect_rc(codec_encode(&m, 0, &out, &len), CD_ETOOMANY);
    free(kids);
    free(svcs);
    free(addrs);
}

/*
 * A non-repeated message field sent many times is merged by protobuf-c,
 * which copies the accumulated arrays each time: quadratic work from a
 * linear frame.  A few repeats are legal protobuf and decode (merged);
 * thousands hit the decoder's allocation budget and fail fast.
 */
static void test_decode_merge_bomb(void **state)
{
    static const char one_cmp_op[] =
        "\x0a\x0c\x08\x04\x52\x08\x0a\x00\x10\x02\x18\x01\x28\x00";
    struct pbw req = {0};
    struct pbw w;
    struct cd_msg m;
    clock_t start;
    double secs;

    (void)state;
    for (int i = 0; i < 3; i++) {
        pbw_raw(&req, one_cmp_op, sizeof(one_cmp_op) - 1);
    }
    w = envelope(12, &req);
    expect_rc(codec_decode(w.buf, w.len, &m), 0);
    assert_int_equal(m.u.write.op.n_compares, 3);
    codec_msg_free(&m);
    pbw_free(&w);

    for (int i = 0; i < 200000; i++) {
        pbw_raw(&req, one_cmp_op, sizeof(one_cmp_op) - 1);
    }
    w = envelope(12, &req);
    start = clock();
    expect_rc(decode_rc(&w), CD_ETOOMANY);
    secs = (double)(clock() - start) / CLOCKS_PER_SEC;
    if (secs > 2.0) {
        fail_msg(
            "rejecting the merge bomb took %.1f s, expected well "
            "under 2 s",
            secs);
    }
}

static void test_unknown_fields_tolerated(void **state)
{
    (void)state;
    for (size_t t = 0; t < N_ALL_TYPES; t++) {
        struct cd_msg m;
        struct cd_msg d;
        uint8_t *frame;
        size_t len;
        struct pbw w = {0};

        sample_msg(all_types[t], &m);
        expect_rc(codec_encode(&m, 0, &frame, &len), 0);
        pbw_raw(&w, frame + CODEC_HEADER_SIZE, len - CODEC_HEADER_SIZE);
        free(frame);
        /* One unknown field of each wire type, as a newer peer might
         * add, including a number a future body might use. */
        pbw_uint(&w, 100, 12345);
        pbw_tag(&w, 101, WT_64BIT);
        pbw_raw(&w, "12345678", 8);
        pbw_bytes(&w, 102, "future", 6);
        pbw_tag(&w, 103, WT_32BIT);
        pbw_raw(&w, "1234", 4);
        pbw_uint(&w, 536870911, 1); /* the largest field number */
        expect_rc(codec_decode(w.buf, w.len, &d), 0);
        expect_no_diff(msg_diff(&m, &d), codec_msg_type_name(m.type));
        codec_msg_free(&d);
        pbw_free(&w);
    }

    /* Unknown fields inside nested messages: Op, Compare and TxnOp. */
    {
        struct pbw cmp = {0};
        struct pbw top = {0};
        struct pbw op = {0};
        struct pbw req = {0};
        struct pbw w;
        struct cd_msg d;

        pbw_bytes(&cmp, 1, "k", 1);
        pbw_uint(&cmp, 2, CD_CMP_EXISTS);
        pbw_uint(&cmp, 3, CD_CMP_EQUAL);
        pbw_uint(&cmp, 5, 1);
        pbw_bytes(&cmp, 77, "x", 1);
        pbw_uint(&top, 1, CD_OP_DELETE);
        pbw_bytes(&top, 2, "t", 1);
        pbw_uint(&top, 99, 3);
        pbw_uint(&op, 1, CD_OP_TXN);
        pbw_uint(&op, 50, 1);
        pbw_msg(&op, 10, &cmp);
        pbw_msg(&op, 11, &top);
        pbw_msg(&req, 1, &op);
        pbw_uint(&req, 9, 9);
        w = envelope(12, &req);
        expect_rc(codec_decode(w.buf, w.len, &d), 0);
        assert_int_equal(d.u.write.op.type, CD_OP_TXN);
        assert_int_equal(d.u.write.op.n_compares, 1);
        assert_int_equal(d.u.write.op.compares[0].target, CD_CMP_EXISTS);
        assert_int_equal(d.u.write.op.compares[0].number, 1);
        assert_int_equal(d.u.write.op.n_then, 1);
        assert_int_equal(d.u.write.op.then_ops[0].type, CD_OP_DELETE);
        assert_int_equal(d.u.write.op.then_ops[0].key.len, 1);
        codec_msg_free(&d);
        pbw_free(&w);
    }

    /* A body only a newer peer knows (field 99) is no body to us. */
    {
        struct pbw body = {0};
        struct pbw w;

        pbw_uint(&body, 1, 1);
        w = envelope(99, &body);
        expect_rc(decode_rc(&w), CD_EMALFORMED);
    }
}

static void test_encode_invalid(void **state)
{
    static const struct cd_op log_op = {.type = CD_OP_LOG_APPEND,
                                        .child_id = 1};
    static const struct cd_op txn_in_branch[] = {{.type = CD_OP_TXN}};
    static const struct cd_op compact_in_branch[] = {
        {.type = CD_OP_COMPACT, .revision = 1}};
    static const struct cd_op tagged_in_branch[] = {
        {.type = CD_OP_PUT, .key = BUF("k"), .client_id = 5}};
    static const struct cd_compare bad_target[] = {
        {.key = BUF("k"), .target = 0, .result = CD_CMP_EQUAL}};
    static const struct cd_compare bad_result[] = {
        {.key = BUF("k"), .target = CD_CMP_VALUE, .result = 5}};
    static const struct cd_event bad_event[] = {{.type = 0}};
    static const struct cd_member no_address[] = {{.id = 1}};
    static const struct cd_member bad_role[] = {
        {.id = 1, .address = "a", .role = 4}};
    struct cd_msg m;
    uint8_t *out;
    size_t len;

    (void)state;
#define EXPECT_ENCODE(want)                                 \
    do {                                                    \
        out = (uint8_t *)&m;                                \
        len = 99;                                           \
        expect_rc(codec_encode(&m, 0, &out, &len), (want)); \
        if ((want) != 0) {                                  \
            assert_null(out);                               \
            assert_int_equal(len, 0);                       \
        } else {                                            \
            free(out);                                      \
        }                                                   \
    } while (0)

    memset(&m, 0, sizeof(m));
    EXPECT_ENCODE(CD_EBADOP); /* CD_MSG_NONE */
    m.type = (enum cd_msg_type)99;
    EXPECT_ENCODE(CD_EBADOP);
    m.type = (enum cd_msg_type)9;
    EXPECT_ENCODE(CD_EBADOP);

    m.type = CD_MSG_WRITE;
    m.u.write.op.type = CD_OP_PUT;
    EXPECT_ENCODE(0);
    m.u.write.op = log_op;
    EXPECT_ENCODE(CD_EBADOP);
    m.u.write.op.type = 0;
    EXPECT_ENCODE(CD_EBADOP);
    m.u.write.op.type = 7;
    EXPECT_ENCODE(CD_EBADOP);

    memset(&m.u, 0, sizeof(m.u));
    m.u.write.op.type = CD_OP_TXN;
    m.u.write.op.then_ops = txn_in_branch;
    m.u.write.op.n_then = 1;
    EXPECT_ENCODE(CD_EBADOP);
    m.u.write.op.then_ops = compact_in_branch;
    EXPECT_ENCODE(CD_EBADOP);
    m.u.write.op.then_ops = tagged_in_branch;
    EXPECT_ENCODE(CD_EBADOP);
    m.u.write.op.then_ops = sample_then;
    m.u.write.op.n_then = 3;
    EXPECT_ENCODE(0);
    m.u.write.op.then_ops = NULL;
    EXPECT_ENCODE(CD_EBADOP);
    m.u.write.op.n_then = 0;
    m.u.write.op.compares = bad_target;
    m.u.write.op.n_compares = 1;
    EXPECT_ENCODE(CD_EBADOP);
    m.u.write.op.compares = bad_result;
    EXPECT_ENCODE(CD_EBADOP);
    m.u.write.op.compares = sample_compares;
    EXPECT_ENCODE(0);
    m.u.write.op.type = CD_OP_PUT; /* a PUT with compares */
    EXPECT_ENCODE(CD_EBADOP);

    memset(&m.u, 0, sizeof(m.u));
    m.u.write.op.type = CD_OP_PUT;
    m.u.write.op.key.len = 3; /* bytes without data */
    EXPECT_ENCODE(CD_EBADOP);
    m.u.write.op.key.data = "abc";
    EXPECT_ENCODE(0);
    /* Longer than a protobuf length prefix can say; never read. */
    m.u.write.op.key.len = (size_t)UINT32_MAX + 1;
    EXPECT_ENCODE(CD_EFRAMETOOBIG);

    memset(&m.u, 0, sizeof(m.u));
    m.type = CD_MSG_ERROR;
    m.u.error.code = 0;
    EXPECT_ENCODE(CD_EBADOP);
    m.u.error.code = 5;
    EXPECT_ENCODE(CD_EBADOP);
    m.u.error.code = -5;
    EXPECT_ENCODE(0);

    memset(&m.u, 0, sizeof(m.u));
    m.type = CD_MSG_CHANGES;
    m.u.changes.events = bad_event;
    m.u.changes.n_events = 1;
    EXPECT_ENCODE(CD_EBADOP);
    m.u.changes.events = NULL;
    EXPECT_ENCODE(CD_EBADOP);

    memset(&m.u, 0, sizeof(m.u));
    m.type = CD_MSG_MEMBERS_RESP;
    m.u.members_resp.members = no_address;
    m.u.members_resp.n_members = 1;
    EXPECT_ENCODE(CD_EBADOP);
    m.u.members_resp.members = bad_role;
    EXPECT_ENCODE(CD_EBADOP);
    m.u.members_resp.members = sample_members;
    EXPECT_ENCODE(0);

    memset(&m.u, 0, sizeof(m.u));
    m.type = CD_MSG_MEMBER_CHANGE;
    EXPECT_ENCODE(CD_EBADOP); /* action 0 */
    m.u.member_change.action = CD_MEMBER_ADD;
    EXPECT_ENCODE(CD_EBADOP); /* no address */
    m.u.member_change.address = "10.0.0.9:7000";
    EXPECT_ENCODE(0);
    m.u.member_change.action = CD_MEMBER_ASSIGN;
    EXPECT_ENCODE(CD_EBADOP); /* no role */
    m.u.member_change.role = 7;
    EXPECT_ENCODE(CD_EBADOP);
    m.u.member_change.role = CD_ROLE_SPARE;
    EXPECT_ENCODE(0);
    m.u.member_change.action = 4;
    EXPECT_ENCODE(CD_EBADOP);

    memset(&m.u, 0, sizeof(m.u));
    m.type = CD_MSG_LOG_UPLOAD;
    m.u.log_upload.n_records = 2;
    EXPECT_ENCODE(CD_EBADOP); /* records NULL */
    m.u.log_upload.records = sample_records;
    EXPECT_ENCODE(0);

    /* Required strings and arrays of the children messages. */
    static const struct cd_service_health no_name[] = {{.up = 1}};
    static const char *const null_address[] = {"a", NULL};
    static const struct cd_child_status bad_child[] = {
        {.info = {.id = 1, .addresses = null_address, .n_addresses = 2}}};

    memset(&m.u, 0, sizeof(m.u));
    m.type = CD_MSG_CHILD_JOIN;
    EXPECT_ENCODE(CD_EBADOP); /* no token */
    m.u.child_join.token = "t";
    EXPECT_ENCODE(0);
    m.u.child_join.info.n_addresses = 1;
    EXPECT_ENCODE(CD_EBADOP); /* addresses NULL */
    m.u.child_join.info.addresses = null_address;
    EXPECT_ENCODE(0);
    m.u.child_join.info.n_addresses = 2;
    EXPECT_ENCODE(CD_EBADOP); /* a NULL address */

    memset(&m.u, 0, sizeof(m.u));
    m.type = CD_MSG_CHILD_REPORT;
    m.u.child_report.n_services = 1;
    EXPECT_ENCODE(CD_EBADOP); /* services NULL */
    m.u.child_report.services = no_name;
    EXPECT_ENCODE(CD_EBADOP);
    m.u.child_report.services = sample_services;
    EXPECT_ENCODE(0);

    memset(&m.u, 0, sizeof(m.u));
    m.type = CD_MSG_CHILDREN_RESP;
    m.u.children_resp.n_children = 1;
    EXPECT_ENCODE(CD_EBADOP); /* children NULL */
    m.u.children_resp.children = bad_child;
    EXPECT_ENCODE(CD_EBADOP);
    m.u.children_resp.children = sample_children;
    EXPECT_ENCODE(0);

    /* The frame limit: exactly max_frame fits, one byte less does not. */
    sample_msg(CD_MSG_HELLO, &m);
    expect_rc(codec_encode(&m, 0, &out, &len), 0);
    free(out);
    size_t payload = len - CODEC_HEADER_SIZE;
    expect_rc(codec_encode(&m, payload, &out, &len), 0);
    free(out);
    expect_rc(codec_encode(&m, payload - 1, &out, &len), CD_EFRAMETOOBIG);
    assert_null(out);
#undef EXPECT_ENCODE
}

static void test_free_is_safe(void **state)
{
    struct cd_msg m;
    struct codec_command c;

    (void)state;
    codec_msg_free(NULL);
    memset(&m, 0, sizeof(m));
    codec_msg_free(&m);
    codec_command_free(NULL);
    memset(&c, 0, sizeof(c));
    codec_command_free(&c);
    codec_child_info_free(NULL);
    {
        struct cd_child_info ci;
        uint8_t *buf;
        size_t len;

        memset(&ci, 0, sizeof(ci));
        codec_child_info_free(&ci);
        expect_rc(codec_child_info_encode(&sample_info, &buf, &len), 0);
        expect_rc(codec_child_info_decode(buf, len, &ci), 0);
        free(buf);
        codec_child_info_free(&ci);
        assert_int_equal(ci.id, 0);
        codec_child_info_free(&ci);
    }

    /* Freeing twice is harmless: the first free zeroes the message. */
    sample_msg(CD_MSG_CHANGES, &m);
    {
        uint8_t *frame;
        size_t len;
        struct cd_msg d;

        encode_decode(&m, &d, &frame, &len);
        free(frame);
        codec_msg_free(&d);
        assert_null(d.codec__owned);
        assert_int_equal(d.type, CD_MSG_NONE);
        codec_msg_free(&d);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_type_names),
        cmocka_unit_test(test_error_msg),
        cmocka_unit_test(test_roundtrip_every_type),
        cmocka_unit_test(test_roundtrip_absent_fields),
        cmocka_unit_test(test_roundtrip_write_each_op),
        cmocka_unit_test(test_roundtrip_children_absent),
        cmocka_unit_test(test_children_diff_can_fail),
        cmocka_unit_test(test_child_info_roundtrip),
        cmocka_unit_test(test_child_info_too_many),
        cmocka_unit_test(test_child_info_truncated),
        cmocka_unit_test(test_command_roundtrip),
        cmocka_unit_test(test_command_alloc_failure),
        cmocka_unit_test(test_reader_byte_by_byte),
        cmocka_unit_test(test_reader_many_frames_one_buffer),
        cmocka_unit_test(test_reader_oversize),
        cmocka_unit_test(test_reader_zero_length_frame),
        cmocka_unit_test(test_put_header),
        cmocka_unit_test(test_decode_garbage),
        cmocka_unit_test(test_decode_truncated),
        cmocka_unit_test(test_decode_random),
        cmocka_unit_test(test_decode_unknown_enums),
        cmocka_unit_test(test_decode_bad_placement),
        cmocka_unit_test(test_decode_missing_fields),
        cmocka_unit_test(test_too_many),
        cmocka_unit_test(test_too_many_children),
        cmocka_unit_test(test_decode_merge_bomb),
        cmocka_unit_test(test_unknown_fields_tolerated),
        cmocka_unit_test(test_encode_invalid),
        cmocka_unit_test(test_free_is_safe),
        cmocka_unit_test(test_hello_epoch_compat),
        cmocka_unit_test(test_backup_records),
    };

    return cmocka_run_group_tests(tests, setup, NULL);
}
