/*
 * fuzz_frame.c - libFuzzer target for the frame reader and the codec.
 *
 * The first input byte picks how the rest is cut into reads, as a socket
 * might deliver it: its low three bits the size of the first read (one
 * byte up to everything), its high three bits how the size of each later
 * read steps through the same list (not at all, or round it).  The stream is
 * copied to the heap once and everything outside the current read is
 * poisoned, so that AddressSanitizer sees any access outside it; a heap copy
 * per read would catch the same and cost most of the fuzzing time.  The
 * reader (with a small maximum frame) hands out payloads; each is decoded
 * both as an Envelope and as a Raft Command.  Whatever decodes must encode
 * again and decode to an equal message: the codec promises that anything
 * encode accepts, decode accepts and gives back equal.  The whole stream
 * is also decoded as a registry record (a ChildInfo) under the same
 * promise.  Any broken promise calls abort(), which libFuzzer reports as a
 * crash.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#include <sanitizer/asan_interface.h>
#endif
#endif
#ifndef ASAN_POISON_MEMORY_REGION
#define ASAN_POISON_MEMORY_REGION(addr, size) ((void)(addr), (void)(size))
#define ASAN_UNPOISON_MEMORY_REGION(addr, size) ((void)(addr), (void)(size))
#endif

#include "lib/err.h"
#include "proto/codec.h"
#include "tests/fuzz/msg_diff.h"

#define FUZZ_MAX_FRAME (64u << 10)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void die(const char *what, int rc)
{
    fprintf(stderr, "fuzz_frame: %s (%s)\n", what, cd_errname(rc));
    abort();
}

/* Decoding may refuse input only with the codes codec.h documents. */
static void check_refusal(const char *what, int rc)
{
    if (rc != CD_EMALFORMED && rc != CD_EBADOP && rc != CD_ETOOMANY &&
        rc != -ENOMEM) {
        die(what, rc);
    }
}

static void check_envelope(const uint8_t *payload, size_t len)
{
    struct cd_msg m;
    struct cd_msg again;
    uint8_t *frame;
    size_t frame_len;
    const char *diff;
    int rc;

    rc = codec_decode(payload, len, &m);
    if (rc != 0) {
        check_refusal("decode refused with an undocumented code", rc);
        return;
    }
    rc = codec_encode(&m, 0, &frame, &frame_len);
    if (rc != 0) {
        die("a decoded message does not encode", rc);
    }
    if (frame_len < CODEC_HEADER_SIZE ||
        ((uint32_t)frame[0] << 24 | (uint32_t)frame[1] << 16 |
         (uint32_t)frame[2] << 8 | frame[3]) != frame_len - CODEC_HEADER_SIZE) {
        die("the encoded header does not match the payload", 0);
    }
    rc = codec_decode(frame + CODEC_HEADER_SIZE, frame_len - CODEC_HEADER_SIZE,
                      &again);
    if (rc != 0) {
        die("a re-encoded message does not decode", rc);
    }
    if (again.type != m.type || again.request_id != m.request_id) {
        die("type or request id changed in a round trip", 0);
    }
    diff = msg_diff(&m, &again);
    if (diff != NULL) {
        fprintf(stderr, "fuzz_frame: round trip changed %s\n", diff);
        abort();
    }
    codec_msg_free(&again);
    codec_msg_free(&m);
    free(frame);
}

static void check_command(const uint8_t *payload, size_t len)
{
    struct codec_command c;
    struct codec_command again;
    uint8_t *buf;
    size_t buf_len;
    const char *diff;
    int rc;

    rc = codec_command_decode(payload, len, &c);
    if (rc != 0) {
        check_refusal("command decode refused with an undocumented code", rc);
        return;
    }
    rc = codec_command_encode(&c.batch, c.cluster_id, NULL, &buf, &buf_len);
    if (rc != 0) {
        die("a decoded command does not encode", rc);
    }
    rc = codec_command_decode(buf, buf_len, &again);
    if (rc != 0) {
        die("a re-encoded command does not decode", rc);
    }
    if (again.cluster_id != c.cluster_id) {
        die("cluster id changed in a round trip", 0);
    }
    diff = batch_diff("batch", &c.batch, &again.batch);
    if (diff != NULL) {
        fprintf(stderr, "fuzz_frame: command round trip changed %s\n", diff);
        abort();
    }
    codec_command_free(&again);
    codec_command_free(&c);
    free(buf);
}

static void check_child_info(const uint8_t *buf, size_t len)
{
    struct cd_child_info ci;
    struct cd_child_info again;
    uint8_t *out;
    size_t out_len;
    const char *diff;
    int rc;

    rc = codec_child_info_decode(buf, len, &ci);
    if (rc != 0) {
        check_refusal("record decode refused with an undocumented code", rc);
        return;
    }
    rc = codec_child_info_encode(&ci, &out, &out_len);
    if (rc != 0) {
        die("a decoded record does not encode", rc);
    }
    rc = codec_child_info_decode(out, out_len, &again);
    if (rc != 0) {
        die("a re-encoded record does not decode", rc);
    }
    diff = child_info_diff("info", &ci, &again);
    if (diff != NULL) {
        fprintf(stderr, "fuzz_frame: record round trip changed %s\n", diff);
        abort();
    }
    codec_child_info_free(&again);
    codec_child_info_free(&ci);
    free(out);
}

/* The backup records (the values of /cluster/backup/...): what decodes
 * encodes, and comes back the same. */
static void check_backup_records(const uint8_t *buf, size_t len)
{
    struct cd_backup_schedule bs, bs2;
    struct cd_backup_result br, br2;
    uint8_t *out;
    size_t out_len;
    const char *diff = NULL;
    int rc = codec_backup_schedule_decode(buf, len, &bs);

    if (rc != 0) {
        check_refusal("schedule decode refused with an undocumented code", rc);
    } else {
        rc = codec_backup_schedule_encode(&bs, &out, &out_len);
        if (rc != 0) {
            die("a decoded schedule does not encode", rc);
        }
        rc = codec_backup_schedule_decode(out, out_len, &bs2);
        free(out);
        if (rc != 0) {
            die("a re-encoded schedule does not decode", rc);
        }
        diff = backup_schedule_diff("schedule", &bs, &bs2);
    }
    rc = codec_backup_result_decode(buf, len, &br);
    if (rc != 0) {
        check_refusal("result decode refused with an undocumented code", rc);
    } else if (diff == NULL) {
        rc = codec_backup_result_encode(&br, &out, &out_len);
        if (rc != 0) {
            die("a decoded result does not encode", rc);
        }
        rc = codec_backup_result_decode(out, out_len, &br2);
        free(out);
        if (rc != 0) {
            die("a re-encoded result does not decode", rc);
        }
        diff = backup_result_diff("result", &br, &br2);
    }
    if (diff != NULL) {
        fprintf(stderr, "fuzz_frame: backup record round trip changed %s\n",
                diff);
        abort();
    }
}

/* Feed stream[from, to) as one read; returns what the reader last said. */
static int feed_read(struct codec_reader *r,
                     uint8_t *stream,
                     size_t size,
                     size_t from,
                     size_t to)
{
    size_t used = from;
    int rc = 0;

    ASAN_POISON_MEMORY_REGION(stream, from);
    ASAN_POISON_MEMORY_REGION(stream + to, size - to);
    while (used < to) {
        const uint8_t *payload;
        size_t payload_len;
        size_t consumed;

        rc = codec_reader_feed(r, stream + used, to - used, &consumed, &payload,
                               &payload_len);
        if (consumed > to - used) {
            die("the reader consumed more than it was given", rc);
        }
        used += consumed;
        if (rc == 1) {
            if (payload_len > FUZZ_MAX_FRAME) {
                die("the reader handed out an oversized frame", rc);
            }
            check_envelope(payload, payload_len);
            check_command(payload, payload_len);
        } else if (rc == 0) {
            /* Needing more bytes means every byte was taken. */
            if (used != to) {
                die("the reader stopped early without a frame", rc);
            }
        } else if (rc == CD_EFRAMETOOBIG || rc == -ENOMEM) {
            break;
        } else {
            die("the reader returned an undocumented code", rc);
        }
    }
    ASAN_UNPOISON_MEMORY_REGION(stream, size);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t splits[8] = {1, 2, 3, 5, 7, 64, 4096, SIZE_MAX};
    struct codec_reader r;
    uint8_t *stream;
    unsigned split;
    unsigned step;
    size_t chunk;
    size_t off;
    size_t to;
    int rc = 0;

    if (size == 0) {
        return 0;
    }
    split = data[0] & 7u;
    step = data[0] >> 5;
    data++;
    size--;
    /* libFuzzer's buffer may be larger than size; a copy of exactly size
     * bytes lets AddressSanitizer see reads past the end. */
    stream = malloc(size + 1);
    if (stream == NULL) {
        abort();
    }
    memcpy(stream, data, size);

    codec_reader_init(&r, FUZZ_MAX_FRAME);
    for (off = 0; off < size; off = to) {
        chunk = splits[split];
        split = (split + step) & 7u;
        /* Tiny reads cost a reader call each and would take most of the
         * fuzzing time on long inputs, while the reader's paths do not
         * depend on the offset.  Past the first 64 bytes reads are at
         * least 64 bytes long; they still end anywhere in a later frame
         * or header, so every reassembly path stays reachable. */
        if (off >= 64 && chunk < 64) {
            chunk = 64;
        }
        to = size - off < chunk ? size : off + chunk;

        rc = feed_read(&r, stream, size, off, to);
        if (rc < 0) {
            break;
        }
    }
    if (rc == CD_EFRAMETOOBIG) {
        /* Sticky: the stream is dead from here on. */
        const uint8_t *payload;
        size_t payload_len;
        size_t consumed;

        rc = codec_reader_feed(&r, (const uint8_t *)"\0\0\0\0", 4, &consumed,
                               &payload, &payload_len);
        if (rc != CD_EFRAMETOOBIG || consumed != 0) {
            die("CD_EFRAMETOOBIG did not stick", rc);
        }
    }
    codec_reader_free(&r);
    check_child_info(stream, size);
    check_backup_records(stream, size);
    free(stream);
    return 0;
}
