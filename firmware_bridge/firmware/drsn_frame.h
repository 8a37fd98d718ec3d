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

#endif /* DRSN_FRAME_H */
