/* drsn-edge wire protocol v1: reference framer (see drsn_frame.h). Plain C99, no allocation. */
#include "drsn_frame.h"

#include <string.h>

uint32_t drsn_crc32c(const uint8_t *data, size_t len)
{
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < len; i++) {
        crc ^= data[i];
        for (int bit = 0; bit < 8; bit++)
            crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
    }
    return crc ^ 0xFFFFFFFFu;
}

size_t drsn_cobs_encode(const uint8_t *in, size_t len, uint8_t *out, size_t out_cap)
{
    size_t code_at = 0, o = 1;
    uint8_t code = 1;
    if (out_cap < len + len / 254u + 1u)
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (in[i] != 0) {
            out[o++] = in[i];
            code++;
        }
        if (code == 0xFF && i + 1 == len)   /* a full block ends the data: no empty block after it */
            break;
        if (in[i] == 0 || code == 0xFF) {
            out[code_at] = code;
            code_at = o++;
            code = 1;
        }
    }
    out[code_at] = code;
    return o;
}

int drsn_cobs_decode(const uint8_t *in, size_t len, uint8_t *out, size_t out_cap, size_t *out_len)
{
    size_t i = 0, o = 0;
    while (i < len) {
        uint8_t code = in[i++];
        if (code == 0)
            return DRSN_E_COBS;
        for (uint8_t k = 1; k < code; k++) {
            if (i >= len || in[i] == 0)
                return DRSN_E_COBS;
            if (o >= out_cap)
                return DRSN_E_SPACE;
            out[o++] = in[i++];
        }
        if (code != 0xFF && i < len) {
            if (o >= out_cap)
                return DRSN_E_SPACE;
            out[o++] = 0;
        }
    }
    *out_len = o;
    return DRSN_OK;
}

static void put_le(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

size_t drsn_frame_build(const drsn_header_t *hdr, const uint8_t *payload, uint16_t len,
                        uint8_t *scratch, size_t scratch_cap, uint8_t *out, size_t out_cap)
{
    size_t body = DRSN_HEADER_SIZE + (size_t)len;
    if (len > DRSN_MAX_PAYLOAD || scratch_cap < body + DRSN_CRC_SIZE || out_cap < 2)
        return 0;
    scratch[0] = DRSN_PROTOCOL_VERSION;
    scratch[1] = hdr->type;
    put_le(scratch + 2, len, 2);
    put_le(scratch + 4, hdr->seq, 4);
    put_le(scratch + 8, hdr->timestamp_us, 8);
    put_le(scratch + 16, hdr->encoder, 8);
    if (len)
        memcpy(scratch + DRSN_HEADER_SIZE, payload, len);
    put_le(scratch + body, drsn_crc32c(scratch, body), 4);
    out[0] = 0;
    size_t n = drsn_cobs_encode(scratch, body + DRSN_CRC_SIZE, out + 1, out_cap - 2);
    if (n == 0)
        return 0;
    out[n + 1] = 0;
    return n + 2;
}

int drsn_frame_parse(const uint8_t *encoded, size_t len, uint8_t *scratch, size_t scratch_cap,
                     drsn_header_t *hdr, const uint8_t **payload)
{
    size_t n = 0;
    int rc = drsn_cobs_decode(encoded, len, scratch, scratch_cap, &n);
    if (rc != DRSN_OK)
        return rc;
    if (n < DRSN_HEADER_SIZE + DRSN_CRC_SIZE)
        return DRSN_E_SHORT;
    if (drsn_crc32c(scratch, n - DRSN_CRC_SIZE) != (uint32_t)get_le(scratch + n - DRSN_CRC_SIZE, 4))
        return DRSN_E_CRC;
    hdr->version = scratch[0];
    hdr->type = scratch[1];
    hdr->length = (uint16_t)get_le(scratch + 2, 2);
    hdr->seq = (uint32_t)get_le(scratch + 4, 4);
    hdr->timestamp_us = get_le(scratch + 8, 8);
    hdr->encoder = get_le(scratch + 16, 8);
    if (hdr->version != DRSN_PROTOCOL_VERSION)
        return DRSN_E_VERSION;
    if ((size_t)hdr->length != n - DRSN_HEADER_SIZE - DRSN_CRC_SIZE)
        return DRSN_E_LENGTH;
    *payload = scratch + DRSN_HEADER_SIZE;
    return DRSN_OK;
}

void drsn_rx_init(drsn_rx_t *rx)
{
    rx->len = 0;
    rx->overflow = 0;
    rx->ready = 0;
    rx->dropped = 0;
}

int drsn_rx_push(drsn_rx_t *rx, uint8_t byte)
{
    if (rx->ready) {            /* the caller has consumed the previous frame */
        rx->ready = 0;
        rx->len = 0;
    }
    if (byte == 0) {
        if (rx->overflow) {     /* end of an oversize run: count it, start afresh */
            rx->overflow = 0;
            rx->dropped++;
            rx->len = 0;
            return 0;
        }
        if (rx->len == 0)       /* delimiter between frames */
            return 0;
        rx->ready = 1;
        return 1;
    }
    if (rx->overflow)
        return 0;
    if (rx->len >= sizeof rx->buf) {
        rx->overflow = 1;
        return 0;
    }
    rx->buf[rx->len++] = byte;
    return 0;
}

void drsn_rejects_clear(drsn_rejects_t *r)
{
    r->next = 0;
    r->count = 0;
}

int drsn_rejects_find(const drsn_rejects_t *r, uint32_t decision_id, uint8_t *answer)
{
    for (uint32_t i = 0; i < r->count; i++) {
        if (r->decision_id[i] == decision_id) {
            *answer = r->answer[i];
            return 1;
        }
    }
    return 0;
}

void drsn_rejects_remember(drsn_rejects_t *r, uint32_t decision_id, uint8_t answer)
{
    r->decision_id[r->next] = decision_id;
    r->answer[r->next] = answer;
    r->next = (r->next + 1u) % DRSN_REMEMBERED_REJECTS;
    if (r->count < DRSN_REMEMBERED_REJECTS)
        r->count++;
}
