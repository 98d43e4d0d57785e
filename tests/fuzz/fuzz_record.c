/*
 * fuzz_record.c - libFuzzer target: the store's record decoders.
 *
 * Records come from disk or from a snapshot someone handed us; every
 * decoder must refuse malformed bytes with CD_ECORRUPT and never read out
 * of bounds.  What decodes must encode back to the same bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/err.h"
#include "storage/record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    if (len == 0) {
        return 0;
    }
    uint8_t which = data[0] % 6;
    data++;
    len--;
    switch (which) {
        case 0: {
            struct record_kv r;
            if (record_kv_decode(data, len, &r) == 0) {
                uint8_t *out = malloc(record_kv_size(r.value_len));
                record_kv_encode(out, &r);
                if (memcmp(out, data, len) != 0) {
                    abort();
                }
                free(out);
            }
            break;
        }
        case 1: {
            struct record_change r;
            if (record_change_decode(data, len, &r) == 0) {
                size_t n = record_change_size(r.key_len, r.value_len);
                uint8_t *out = malloc(n);
                if (n != len) {
                    abort();
                }
                record_change_encode(out, &r);
                if (memcmp(out, data, len) != 0) {
                    abort();
                }
                free(out);
            }
            break;
        }
        case 2: {
            uint64_t rev;
            uint32_t sub;
            if (record_change_key_decode(data, len, &rev, &sub) == 0) {
                uint8_t out[RECORD_CHANGE_KEY];
                record_change_key(out, rev, sub);
                if (memcmp(out, data, len) != 0) {
                    abort();
                }
            }
            break;
        }
        case 3: {
            uint64_t t;
            const void *rec;
            size_t rlen;
            if (record_log_decode(data, len, &t, &rec, &rlen) == 0 &&
                rlen + RECORD_LOG_HEADER != len) {
                abort();
            }
            uint64_t child, seq;
            (void)record_log_key_decode(data, len, &child, &seq);
            break;
        }
        case 4: {
            struct record_client c;
            if (record_client_decode(data, len, &c) == 0) {
                uint8_t out[RECORD_CLIENT_SIZE];
                record_client_encode(out, &c);
                if (memcmp(out, data, len) != 0) {
                    abort();
                }
            }
            break;
        }
        default: {
            uint64_t v;
            (void)record_meta_decode(data, len, &v);
            break;
        }
    }
    return 0;
}
