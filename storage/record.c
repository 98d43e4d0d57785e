/*
 * record.c - see record.h.
 */
#include "record.h"

#include <string.h>

#include "../lib/err.h"

void record_put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

uint64_t record_get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

void record_put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

uint32_t record_get_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
           ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

void record_put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

uint64_t record_get_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

size_t record_kv_size(size_t value_len)
{
    return RECORD_KV_HEADER + value_len;
}

void record_kv_encode(uint8_t *out, const struct record_kv *r)
{
    out[0] = RECORD_FORMAT;
    record_put_le64(out + 1, r->create_rev);
    record_put_le64(out + 9, r->mod_rev);
    record_put_le64(out + 17, r->version);
    if (r->value_len > 0) {
        memcpy(out + RECORD_KV_HEADER, r->value, r->value_len);
    }
}

int record_kv_decode(const void *buf, size_t len, struct record_kv *out)
{
    const uint8_t *p = buf;
    if (len < RECORD_KV_HEADER || p[0] != RECORD_FORMAT) {
        return CD_ECORRUPT;
    }
    out->create_rev = record_get_le64(p + 1);
    out->mod_rev = record_get_le64(p + 9);
    out->version = record_get_le64(p + 17);
    out->value = p + RECORD_KV_HEADER;
    out->value_len = len - RECORD_KV_HEADER;
    if (out->create_rev == 0 || out->mod_rev < out->create_rev ||
        out->version == 0) {
        return CD_ECORRUPT;
    }
    return 0;
}

size_t record_change_size(size_t key_len, size_t value_len)
{
    return RECORD_CHANGE_HEADER + key_len + value_len;
}

void record_change_encode(uint8_t *out, const struct record_change *r)
{
    out[0] = RECORD_FORMAT;
    out[1] = r->type;
    record_put_le64(out + 2, r->create_rev);
    record_put_le64(out + 10, r->mod_rev);
    record_put_le64(out + 18, r->version);
    record_put_be32(out + 26, (uint32_t)r->key_len);
    memcpy(out + RECORD_CHANGE_HEADER, r->key, r->key_len);
    if (r->value_len > 0) {
        memcpy(out + RECORD_CHANGE_HEADER + r->key_len, r->value, r->value_len);
    }
}

int record_change_decode(const void *buf, size_t len, struct record_change *out)
{
    const uint8_t *p = buf;
    if (len < RECORD_CHANGE_HEADER || p[0] != RECORD_FORMAT) {
        return CD_ECORRUPT;
    }
    out->type = p[1];
    out->create_rev = record_get_le64(p + 2);
    out->mod_rev = record_get_le64(p + 10);
    out->version = record_get_le64(p + 18);
    uint32_t klen = record_get_be32(p + 26);
    if (out->type != 1 && out->type != 2) {
        return CD_ECORRUPT;
    }
    if (klen == 0 || klen > len - RECORD_CHANGE_HEADER) {
        return CD_ECORRUPT;
    }
    out->key = p + RECORD_CHANGE_HEADER;
    out->key_len = klen;
    out->value = p + RECORD_CHANGE_HEADER + klen;
    out->value_len = len - RECORD_CHANGE_HEADER - klen;
    if (out->type == 2 && (out->value_len != 0 || out->version != 0)) {
        return CD_ECORRUPT;
    }
    if (out->type == 1 && out->version == 0) {
        return CD_ECORRUPT;
    }
    return 0;
}

void record_change_key(uint8_t out[RECORD_CHANGE_KEY],
                       uint64_t rev,
                       uint32_t sub)
{
    record_put_be64(out, rev);
    record_put_be32(out + 8, sub);
}

int record_change_key_decode(const void *buf,
                             size_t len,
                             uint64_t *rev,
                             uint32_t *sub)
{
    if (len != RECORD_CHANGE_KEY) {
        return CD_ECORRUPT;
    }
    *rev = record_get_be64(buf);
    *sub = record_get_be32((const uint8_t *)buf + 8);
    return 0;
}

void record_log_key(uint8_t out[RECORD_LOG_KEY], uint64_t child, uint64_t seq)
{
    record_put_be64(out, child);
    record_put_be64(out + 8, seq);
}

int record_log_key_decode(const void *buf,
                          size_t len,
                          uint64_t *child,
                          uint64_t *seq)
{
    if (len != RECORD_LOG_KEY) {
        return CD_ECORRUPT;
    }
    *child = record_get_be64(buf);
    *seq = record_get_be64((const uint8_t *)buf + 8);
    return 0;
}

int record_log_decode(const void *buf,
                      size_t len,
                      uint64_t *time_ms,
                      const void **rec,
                      size_t *rec_len)
{
    const uint8_t *p = buf;
    if (len < RECORD_LOG_HEADER || p[0] != RECORD_FORMAT) {
        return CD_ECORRUPT;
    }
    *time_ms = record_get_le64(p + 1);
    *rec = p + RECORD_LOG_HEADER;
    *rec_len = len - RECORD_LOG_HEADER;
    return 0;
}

void record_client_encode(uint8_t out[RECORD_CLIENT_SIZE],
                          const struct record_client *c)
{
    out[0] = RECORD_FORMAT;
    record_put_le64(out + 1, c->max_seq);
    record_put_le64(out + 9, c->window);
    record_put_le64(out + 17, c->last_ms);
}

int record_client_decode(const void *buf, size_t len, struct record_client *out)
{
    const uint8_t *p = buf;
    if (len != RECORD_CLIENT_SIZE || p[0] != RECORD_FORMAT) {
        return CD_ECORRUPT;
    }
    out->max_seq = record_get_le64(p + 1);
    out->window = record_get_le64(p + 9);
    out->last_ms = record_get_le64(p + 17);
    if (out->max_seq == 0 || (out->window & 1) == 0) {
        return CD_ECORRUPT;
    }
    return 0;
}

int record_meta_decode(const void *buf, size_t len, uint64_t *out)
{
    if (len != 8) {
        return CD_ECORRUPT;
    }
    *out = record_get_le64(buf);
    return 0;
}
