/*
 * drsn-edge wire protocol v1: reference framer for microcontrollers.
 *
 * Plain C99, no allocation, no libc beyond <stdint.h>/<stddef.h>/<string.h>.
 * A frame on the wire is  0x00 COBS(header | payload | crc32c) 0x00  with
 *   header = version u8, type u8, payload length u16, sequence u32,
 *            device time in microseconds u64, encoder count u64   (24 bytes, little-endian)
 *   crc32c = CRC-32C (Castagnoli) over header and payload, little-endian u32.
 * See docs/protocol.md for every message payload.
 */
#ifndef DRSN_FRAME_H
#define DRSN_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define DRSN_PROTOCOL_VERSION 1u
#define DRSN_HEADER_SIZE 24u
#define DRSN_CRC_SIZE 4u
#define DRSN_MAX_PAYLOAD 8196u
#define DRSN_MAX_FRAME (DRSN_HEADER_SIZE + DRSN_MAX_PAYLOAD + DRSN_CRC_SIZE)
/* COBS adds one byte per 254; plus the two delimiters. */
#define DRSN_MAX_WIRE (DRSN_MAX_FRAME + DRSN_MAX_FRAME / 254u + 4u)

enum drsn_type {
    DRSN_HELLO = 0x01, DRSN_SAMPLES = 0x02, DRSN_LINE = 0x03, DRSN_REJECT = 0x10,
    DRSN_ACK = 0x20, DRSN_NAK = 0x21, DRSN_HEARTBEAT = 0x30, DRSN_ERROR = 0x7F
};

enum drsn_status {
    DRSN_OK = 0, DRSN_E_SPACE = -1, DRSN_E_COBS = -2, DRSN_E_SHORT = -3,
    DRSN_E_CRC = -4, DRSN_E_VERSION = -5, DRSN_E_LENGTH = -6
};

typedef struct {
    uint8_t version;
    uint8_t type;
    uint16_t length;
    uint32_t seq;
    uint64_t timestamp_us;
    uint64_t encoder;
} drsn_header_t;

/* CRC-32C, reflected polynomial 0x82F63B78, init 0xFFFFFFFF, final XOR 0xFFFFFFFF.
 * drsn_crc32c("123456789", 9) == 0xE3069283. */
uint32_t drsn_crc32c(const uint8_t *data, size_t len);

/* COBS encode `len` bytes into `out` (no delimiter). Returns the encoded length, 0 if out_cap is too small. */
size_t drsn_cobs_encode(const uint8_t *in, size_t len, uint8_t *out, size_t out_cap);

/* COBS decode (input without delimiter). Returns DRSN_OK and sets *out_len, or DRSN_E_COBS / DRSN_E_SPACE. */
int drsn_cobs_decode(const uint8_t *in, size_t len, uint8_t *out, size_t out_cap, size_t *out_len);

/* Build the wire bytes of one frame (both delimiters included) into `out`.
 * `scratch` holds header | payload | crc before encoding (at least DRSN_HEADER_SIZE + len + DRSN_CRC_SIZE).
 * Returns the number of bytes to send, or 0 when a buffer is too small or len > DRSN_MAX_PAYLOAD. */
size_t drsn_frame_build(const drsn_header_t *hdr, const uint8_t *payload, uint16_t len,
                        uint8_t *scratch, size_t scratch_cap, uint8_t *out, size_t out_cap);

/* Parse one encoded frame (the bytes between two delimiters) into *hdr and a payload pointer
 * inside `scratch`. Returns DRSN_OK or a negative drsn_status. */
int drsn_frame_parse(const uint8_t *encoded, size_t len, uint8_t *scratch, size_t scratch_cap,
                     drsn_header_t *hdr, const uint8_t **payload);

/* Byte-at-a-time receiver for an interrupt handler or DMA ring: push every received byte;
 * when it returns 1 a complete encoded frame is in rx->buf[0..rx->len). Oversize input is
 * dropped up to the next delimiter and counted. */
typedef struct {
    uint8_t buf[DRSN_MAX_WIRE];
    size_t len;
    uint8_t overflow;
    uint8_t ready;
    uint32_t dropped;
} drsn_rx_t;

void drsn_rx_init(drsn_rx_t *rx);
int drsn_rx_push(drsn_rx_t *rx, uint8_t byte);

/* The decision ids of the latest REJECTs a device took, with the answer it gave each (docs/protocol.md,
 * REJECT): the gateway sends a REJECT again, with the same decision id, when it hears no answer within
 * 100 ms, so a REJECT whose answer was lost comes twice. Look every REJECT up first: a repeat is answered
 * as before and not fired again; a new one is scheduled, answered, then remembered. Remember only REJECTs
 * taken (ACK, or NAK too late); one refused as busy was not taken, and its next send is new.
 * Clear it at start and when the gateway asks for a HELLO: a gateway's session may number its decisions
 * from 1 again (a new decision log), and an old id must not swallow a new REJECT. Only the latest
 * DRSN_REMEMBERED_REJECTS are kept (16 KB and 4 KB at the default 4,096): seconds of a line-scan belt
 * with every patch rejected, far beyond the 0.3 s of a REJECT's three sends. */
#ifndef DRSN_REMEMBERED_REJECTS
#define DRSN_REMEMBERED_REJECTS 4096u
#endif

typedef struct {
    uint32_t decision_id[DRSN_REMEMBERED_REJECTS];
    uint8_t answer[DRSN_REMEMBERED_REJECTS];  /* 0: ACK; otherwise the NAK reason given */
    uint32_t next;                             /* the slot the next REJECT takes (the oldest when full) */
    uint32_t count;                            /* slots in use, up to DRSN_REMEMBERED_REJECTS */
} drsn_rejects_t;

void drsn_rejects_clear(drsn_rejects_t *r);

/* 1 when `decision_id` is remembered, with the answer it was given in *answer; 0 when it is new. */
int drsn_rejects_find(const drsn_rejects_t *r, uint32_t decision_id, uint8_t *answer);

/* Remember a REJECT just taken and the answer it was given; the oldest remembered is forgotten when full. */
void drsn_rejects_remember(drsn_rejects_t *r, uint32_t decision_id, uint8_t answer);

#endif /* DRSN_FRAME_H */
