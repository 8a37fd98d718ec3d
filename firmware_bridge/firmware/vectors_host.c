/*
 * Host-side checker for the reference framer: reads one command per line on stdin,
 * writes one result per line on stdout. Used by the test suite; handy on a bench too.
 *   B <type> <seq> <timestamp_us> <encoder> <payload hex or ->   -> wire bytes in hex
 *   P <wire hex>                                                 -> "<type> <seq> <ts> <enc> <payload hex or ->" or "ERR <code>"
 *   R <wire hex>                                                 -> frames the byte receiver completed, as "F <len>" lines, then "END <dropped>"
 *   C <hex>                                                      -> CRC-32C in hex
 *   J <decision id> <answer>                                     -> a REJECT, as a device takes it: "new" (now
 *                                                                   remembered with <answer>) or "repeat <answer>"
 *   H                                                            -> a gateway's HELLO request: "cleared"
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drsn_frame.h"

static uint8_t payload[DRSN_MAX_PAYLOAD + 8];
static uint8_t scratch[DRSN_MAX_FRAME + 8];
static uint8_t wire[4 * DRSN_MAX_WIRE];
static char line[16 * DRSN_MAX_WIRE];
static drsn_rx_t rx;
static drsn_rejects_t rejects;

static size_t from_hex(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = 0;
    if (strcmp(hex, "-") == 0)
        return 0;
    while (hex[0] && hex[1] && n < cap) {
        unsigned v;
        if (sscanf(hex, "%2x", &v) != 1)
            break;
        out[n++] = (uint8_t)v;
        hex += 2;
    }
    return n;
}

static void print_hex(const uint8_t *p, size_t n)
{
    if (n == 0)
        fputs("-", stdout);
    for (size_t i = 0; i < n; i++)
        printf("%02x", p[i]);
}

int main(void)
{
    drsn_rejects_clear(&rejects);
    while (fgets(line, sizeof line, stdin)) {
        char cmd = line[0];
        char *arg = line + 2;
        arg[strcspn(arg, "\r\n")] = 0;
        if (cmd == 'B') {
            unsigned type;
            uint32_t seq;
            uint64_t ts, enc;
            char hex[2 * DRSN_MAX_PAYLOAD + 8];
            if (sscanf(arg, "%u %" SCNu32 " %" SCNu64 " %" SCNu64 " %s", &type, &seq, &ts, &enc, hex) != 5) {
                puts("ERR input");
                continue;
            }
            drsn_header_t hdr = {DRSN_PROTOCOL_VERSION, (uint8_t)type, 0, seq, ts, enc};
            size_t len = from_hex(hex, payload, sizeof payload);
            size_t n = drsn_frame_build(&hdr, payload, (uint16_t)len, scratch, sizeof scratch, wire, sizeof wire);
            print_hex(wire, n);
            putchar('\n');
        } else if (cmd == 'P') {
            size_t n = from_hex(arg, wire, sizeof wire);
            size_t start = (n && wire[0] == 0) ? 1 : 0, end = (n && wire[n - 1] == 0) ? n - 1 : n;
            drsn_header_t hdr;
            const uint8_t *p = NULL;
            int rc = drsn_frame_parse(wire + start, end - start, scratch, sizeof scratch, &hdr, &p);
            if (rc != DRSN_OK) {
                printf("ERR %d\n", rc);
                continue;
            }
            printf("%u %" PRIu32 " %" PRIu64 " %" PRIu64 " ", hdr.type, hdr.seq, hdr.timestamp_us, hdr.encoder);
            print_hex(p, hdr.length);
            putchar('\n');
        } else if (cmd == 'R') {
            size_t n = from_hex(arg, wire, sizeof wire);
            drsn_rx_init(&rx);
            for (size_t i = 0; i < n; i++)
                if (drsn_rx_push(&rx, wire[i]))
                    printf("F %zu\n", rx.len);
            printf("END %" PRIu32 "\n", rx.dropped);
        } else if (cmd == 'C') {
            size_t n = from_hex(arg, payload, sizeof payload);
            printf("%08" PRIx32 "\n", drsn_crc32c(payload, n));
        } else if (cmd == 'J') {
            uint32_t id;
            unsigned answer;
            uint8_t before;
            if (sscanf(arg, "%" SCNu32 " %u", &id, &answer) != 2) {
                puts("ERR input");
            } else if (drsn_rejects_find(&rejects, id, &before)) {
                printf("repeat %u\n", before);
            } else {
                drsn_rejects_remember(&rejects, id, (uint8_t)answer);
                puts("new");
            }
        } else if (cmd == 'H') {
            drsn_rejects_clear(&rejects);
            puts("cleared");
        }
        fflush(stdout);
    }
    return 0;
}
