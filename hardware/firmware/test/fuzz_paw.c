/* libFuzzer target: any bytes from the serial line go through the line reader and the command handler.
 * Invariants: no crash or sanitizer report, every line handed out fits PAW_LINE_MAX and holds only printable
 * ASCII, every reply fits its buffer and is a known kind. */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../src/paw.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    paw_line_reader reader;
    paw_board board;
    char reply[PAW_LINE_MAX + 1];
    paw_line_init(&reader);
    paw_board_init(&board, 0);
    for (size_t i = 0; i < size; i++) {
        if (paw_line_feed(&reader, data[i]) != PAW_LINE_READY) {
            continue;
        }
        size_t n = strlen(reader.buf);
        assert(n <= PAW_LINE_MAX);
        for (size_t j = 0; j < n; j++) {
            assert(reader.buf[j] >= 0x20 && reader.buf[j] < 0x7f);
        }
        if (paw_handle_line(&board, reader.buf, (uint32_t)i, reply, sizeof reply)) {
            assert(strlen(reply) <= PAW_LINE_MAX);
            assert(!strncmp(reply, "HELLO ", 6) || !strncmp(reply, "PONG ", 5) || !strncmp(reply, "OK LED ", 7) ||
                   !strncmp(reply, "ERR ", 4));
        }
        assert((unsigned)paw_shown_led(&board, (uint32_t)i) < PAW_LED_COUNT);
    }
    return 0;
}
