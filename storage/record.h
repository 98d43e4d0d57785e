/*
 * record.h - byte layouts of the store's records (internal to storage/).
 *
 * Keys that must sort numerically (changes, logs, clients) are big-endian;
 * values are little-endian with a leading format byte, so a record written
 * by a newer clusterd is recognised rather than misread.  Every decoder
 * checks lengths and returns CD_ECORRUPT on anything malformed: the bytes
 * come from disk, or from a snapshot file someone handed us.
 * docs/storage.md describes the same layouts for operators.
 */
#ifndef CD_STORE_RECORD_H
#define CD_STORE_RECORD_H

#include <stddef.h>
#include <stdint.h>

#define RECORD_FORMAT 1

/* kv value: fmt(1) create_rev(8) mod_rev(8) version(8) value(...) */
#define RECORD_KV_HEADER 25
/* change value: fmt(1) type(1) create(8) mod(8) version(8) klen(4) key val */
#define RECORD_CHANGE_HEADER 30
/* change key: revision(8 BE) sub(4 BE) */
#define RECORD_CHANGE_KEY 12
/* log key: child(8 BE) seq(8 BE); log value: fmt(1) time_ms(8) record */
#define RECORD_LOG_KEY 16
#define RECORD_LOG_HEADER 9
/* client key: id(8 BE); value: fmt(1) max_seq(8) window(8) last_ms(8) */
#define RECORD_CLIENT_KEY 8
#define RECORD_CLIENT_SIZE 25

struct record_kv
{
    uint64_t create_rev;
    uint64_t mod_rev;
    uint64_t version;
    const void *value; /* borrowed from the decoded bytes */
    size_t value_len;
};

struct record_change
{
    uint8_t type; /* 1 put, 2 delete */
    uint64_t create_rev;
    uint64_t mod_rev;
    uint64_t version;
    const void *key;
    size_t key_len;
    const void *value;
    size_t value_len;
};

struct record_client
{
    uint64_t max_seq;
    uint64_t window; /* bit k: seq max_seq - k was applied */
    uint64_t last_ms;
};

void record_put_be64(uint8_t *p, uint64_t v);
uint64_t record_get_be64(const uint8_t *p);
void record_put_be32(uint8_t *p, uint32_t v);
uint32_t record_get_be32(const uint8_t *p);
void record_put_le64(uint8_t *p, uint64_t v);
uint64_t record_get_le64(const uint8_t *p);

/* Encoders write exactly *_size() bytes into out. */
size_t record_kv_size(size_t value_len);
void record_kv_encode(uint8_t *out, const struct record_kv *r);
int record_kv_decode(const void *buf, size_t len, struct record_kv *out);

size_t record_change_size(size_t key_len, size_t value_len);
void record_change_encode(uint8_t *out, const struct record_change *r);
int record_change_decode(const void *buf,
                         size_t len,
                         struct record_change *out);
void record_change_key(uint8_t out[RECORD_CHANGE_KEY],
                       uint64_t rev,
                       uint32_t sub);
int record_change_key_decode(const void *buf,
                             size_t len,
                             uint64_t *rev,
                             uint32_t *sub);

void record_log_key(uint8_t out[RECORD_LOG_KEY], uint64_t child, uint64_t seq);
int record_log_key_decode(const void *buf,
                          size_t len,
                          uint64_t *child,
                          uint64_t *seq);
int record_log_decode(const void *buf,
                      size_t len,
                      uint64_t *time_ms,
                      const void **rec,
                      size_t *rec_len);

void record_client_encode(uint8_t out[RECORD_CLIENT_SIZE],
                          const struct record_client *c);
int record_client_decode(const void *buf,
                         size_t len,
                         struct record_client *out);

/* A meta value is one little-endian u64. */
int record_meta_decode(const void *buf, size_t len, uint64_t *out);

#endif
