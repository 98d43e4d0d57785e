/*
 * gen_frame_seeds.c - writes the seed corpus of fuzz_frame.
 *
 * The seeds are committed in tests/fuzz/corpus/frame/ so that fuzzing
 * starts from valid frames of every message type instead of discovering
 * the protobuf layout by chance.  This program is their source; after a
 * change to the wire format, rebuild them with
 *
 *   make build/lib/libcdcore.a
 *   cc -std=gnu11 -D_GNU_SOURCE -I. -Ibuild/gen tests/fuzz/gen_frame_seeds.c \
 *      build/lib/libcdcore.a -lprotobuf-c -o build/fuzz/gen_frame_seeds
 *   build/fuzz/gen_frame_seeds tests/fuzz/corpus/frame
 *
 * A seed is fuzz_frame's input: one byte choosing how the stream is split
 * into reads, then the stream of frames.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/err.h"
#include "proto/codec.h"

#define BUF(s)             \
    {                      \
        (s), sizeof(s) - 1 \
    }

static const char *dir;

static void write_seed(const char *name,
                       uint8_t split,
                       const uint8_t *data,
                       size_t len)
{
    char path[4096];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "wb");
    if (f == NULL || fputc(split, f) == EOF ||
        (len > 0 && fwrite(data, 1, len, f) != len) || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

static const struct cd_compare compares[] = {
    {.key = BUF("k"),
     .target = CD_CMP_VALUE,
     .result = CD_CMP_EQUAL,
     .value = BUF("v")},
    {.key = BUF("k"),
     .target = CD_CMP_VERSION,
     .result = CD_CMP_GREATER,
     .number = 2},
};
static const struct cd_op then_ops[] = {
    {.type = CD_OP_PUT, .key = BUF("a"), .value = BUF("1")},
    {.type = CD_OP_DELETE_PREFIX, .key = BUF("b/")},
};
static const struct cd_op else_ops[] = {
    {.type = CD_OP_DELETE, .key = BUF("c")},
};
static const struct cd_op ops[] = {
    {.type = CD_OP_PUT,
     .client_id = 1,
     .seq = 1,
     .key = BUF("key"),
     .value = BUF("value")},
    {.type = CD_OP_TXN,
     .compares = compares,
     .n_compares = 2,
     .then_ops = then_ops,
     .n_then = 2,
     .else_ops = else_ops,
     .n_else = 1},
    {.type = CD_OP_COMPACT, .revision = 10},
    {.type = CD_OP_LOG_APPEND,
     .child_id = 2,
     .log_seq = 3,
     .log_time_ms = 4,
     .value = BUF("line")},
};
static const struct cd_kv kvs[] = {
    {.key = BUF("a"),
     .value = BUF("1"),
     .create_rev = 1,
     .mod_rev = 2,
     .version = 1},
    {.key = BUF("b"), .create_rev = 3, .mod_rev = 3, .version = 1},
};
static const struct cd_event events[] = {
    {.type = CD_EVENT_PUT,
     .sub = 0,
     .kv = {.key = BUF("a"), .value = BUF("1")}},
    {.type = CD_EVENT_DELETE, .sub = 1, .kv = {.key = BUF("b")}},
};
static const struct cd_member members[] = {
    {.id = 1,
     .address = "10.0.0.1:7000",
     .role = CD_ROLE_VOTER,
     .api_address = "10.0.0.1:7001",
     .leader = 1,
     .reachable = 1},
    {.id = 2, .address = "10.0.0.2:7000", .role = CD_ROLE_SPARE},
};
static const struct cd_log_record records[] = {
    {.seq = 1, .time_ms = 5, .record = BUF("rec")},
};

static void sample(enum cd_msg_type t, struct cd_msg *m)
{
    memset(m, 0, sizeof(*m));
    m->type = t;
    m->request_id = (uint64_t)t;
    m->has_cluster_id = (int)(t % 2);
    m->cluster_id = 7;
    switch (t) {
        case CD_MSG_ERROR:
            codec_error_msg(m, 1, CD_ENOTLEADER, "10.0.0.1:7001");
            break;
        case CD_MSG_WRITE:
            m->u.write.op = ops[1];
            break;
        case CD_MSG_WRITE_RESP:
            m->u.write_resp.revision = 5;
            m->u.write_resp.succeeded = 1;
            m->u.write_resp.deleted = 2;
            break;
        case CD_MSG_GET:
            m->u.get.key = (struct cd_buf)BUF("key");
            break;
        case CD_MSG_RANGE:
            m->u.range.prefix = (struct cd_buf)BUF("p/");
            m->u.range.limit = 10;
            m->u.range.keys_only = 1;
            break;
        case CD_MSG_RANGE_RESP:
            m->u.range_resp.kvs = kvs;
            m->u.range_resp.n_kvs = 2;
            m->u.range_resp.more = 1;
            m->u.range_resp.revision = 3;
            break;
        case CD_MSG_WATCH:
            m->u.watch.since = 1;
            m->u.watch.prefix = (struct cd_buf)BUF("w/");
            break;
        case CD_MSG_CHANGES:
            m->u.changes.events = events;
            m->u.changes.n_events = 2;
            m->u.changes.revision = 4;
            break;
        case CD_MSG_STATUS_RESP:
            m->u.status_resp.id = 1;
            m->u.status_resp.leader_id = 1;
            m->u.status_resp.term = 2;
            m->u.status_resp.state = "leader";
            m->u.status_resp.version = "0.1";
            break;
        case CD_MSG_MEMBERS_RESP:
            m->u.members_resp.members = members;
            m->u.members_resp.n_members = 2;
            break;
        case CD_MSG_MEMBER_CHANGE:
            m->u.member_change.action = CD_MEMBER_ASSIGN;
            m->u.member_change.id = 2;
            m->u.member_change.role = CD_ROLE_STANDBY;
            break;
        case CD_MSG_TRANSFER:
            m->u.transfer.to = 2;
            break;
        case CD_MSG_SNAPSHOT_CHUNK:
            m->u.snapshot_chunk.offset = 0;
            m->u.snapshot_chunk.data = (struct cd_buf)BUF("\0\1\2");
            m->u.snapshot_chunk.last = 1;
            break;
        case CD_MSG_HELLO:
            m->u.hello.cluster_id = 7;
            m->u.hello.child_id = 9;
            m->u.hello.hostname = "child";
            break;
        case CD_MSG_LOG_UPLOAD:
            m->u.log_upload.child_id = 9;
            m->u.log_upload.records = records;
            m->u.log_upload.n_records = 1;
            break;
        case CD_MSG_LOG_ACK:
            m->u.log_ack.committed_seq = 1;
            break;
        case CD_MSG_COMMAND:
            m->u.command.time_ms = 1000;
            m->u.command.ops = ops;
            m->u.command.n_ops = 4;
            break;
        default:
            break;
    }
}

int main(int argc, char **argv)
{
    uint8_t *all = NULL;
    uint8_t *grown;
    size_t all_len = 0;
    uint8_t *frame;
    size_t len;
    char name[64];
    int rc;

    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    dir = argv[1];

    /* One frame of each type, read all at once (split byte 7 is "whole"),
     * and every frame again in one stream read a byte at a time. */
    for (int t = CD_MSG_ERROR; t <= CD_MSG_TOKEN_RESP; t++) {
        struct cd_msg m;

        sample((enum cd_msg_type)t, &m);
        rc = codec_encode(&m, 0, &frame, &len);
        if (rc != 0) {
            fprintf(stderr, "type %d: %s\n", t, cd_strerror(rc));
            free(all);
            return 1;
        }
        snprintf(name, sizeof(name), "%s", codec_msg_type_name(m.type));
        for (char *p = name; *p != '\0'; p++) {
            *p = (char)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
        }
        write_seed(name, 7, frame, len);
        grown = realloc(all, all_len + len + 1);
        if (grown == NULL) {
            free(all);
            return 1;
        }
        all = grown;
        memcpy(all + all_len, frame, len);
        all_len += len;
        free(frame);
    }
    write_seed("stream", 0, all, all_len);

    /* A bare Command as a frame's payload, for the Command decoder. */
    {
        struct cd_batch b = {.time_ms = 1000, .ops = ops, .n_ops = 4};
        uint8_t *cmd;
        size_t cmd_len;

        rc = codec_command_encode(&b, 7, NULL, &cmd, &cmd_len);
        if (rc != 0) {
            fprintf(stderr, "command: %s\n", cd_strerror(rc));
            return 1;
        }
        frame = malloc(CODEC_HEADER_SIZE + cmd_len);
        if (frame == NULL) {
            return 1;
        }
        codec_put_header(frame, (uint32_t)cmd_len);
        memcpy(frame + CODEC_HEADER_SIZE, cmd, cmd_len);
        write_seed("raft_command", 3, frame, CODEC_HEADER_SIZE + cmd_len);
        free(frame);
        free(cmd);
    }

    /* Edge frames: empty, and one announcing more than the maximum. */
    write_seed("zero_length", 1, (const uint8_t *)"\0\0\0\0", 4);
    write_seed("oversize", 2, (const uint8_t *)"\x7f\xff\xff\xff", 4);
    free(all);
    return 0;
}
