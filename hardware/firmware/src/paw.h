/*
 * The Plush paw board's protocol core: line parser, command handling, button debounce and LED patterns.
 *
 * Plain C99 with no hardware access, so the same code runs in the Arduino sketch (plush_paw/plush_paw.ino)
 * and on the host, where it is unit-tested, fuzzed and built into the board simulator (test/paw_sim.c).
 *
 * The serial protocol: ASCII lines ending in '\n' (a '\r' before it is ignored), at most PAW_LINE_MAX bytes.
 *   board -> host:  HELLO plush-paw <version> proto=<n>   at boot (after a bare "\n", so a line the host
 *                                                         half-received before a reset ends there) and in
 *                                                         answer to "HELLO?"
 *                   BTN DOWN / BTN UP                     the paw's button, debounced
 *                   PONG <token>                          answer to "PING <token>"
 *                   OK LED <state>                        an LED state was set
 *                   ERR <reason>                          a line the board did not understand
 *   host -> board:  HELLO?   PING <token>   LED <off|idle|listening|thinking|speaking|offline|error>
 * When the host has sent nothing for PAW_HOST_TIMEOUT_MS the LEDs show "offline" on their own, so a plush
 * whose Pi has crashed or lost power does not look alive.
 */
#ifndef PLUSH_PAW_H
#define PLUSH_PAW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PAW_VERSION "1.0.0"
#define PAW_PROTOCOL 1
#define PAW_LINE_MAX 64
#define PAW_DEBOUNCE_MS 25
#define PAW_HOST_TIMEOUT_MS 6000

typedef enum {
    PAW_LED_OFF = 0,
    PAW_LED_IDLE,
    PAW_LED_LISTENING,
    PAW_LED_THINKING,
    PAW_LED_SPEAKING,
    PAW_LED_OFFLINE,
    PAW_LED_ERROR,
    PAW_LED_COUNT
} paw_led_state;

/* ---- line reader: bytes in, whole lines out ---------------------------------------------------------------- */

typedef enum { PAW_LINE_NONE, PAW_LINE_READY, PAW_LINE_TOO_LONG } paw_line_status;

typedef struct {
    char buf[PAW_LINE_MAX + 1];
    size_t len;
    bool overflow; /* the current line grew past PAW_LINE_MAX: drop it up to its '\n' */
} paw_line_reader;

void paw_line_init(paw_line_reader *reader);
/* Feed one byte. PAW_LINE_READY: reader->buf holds a NUL-terminated line (without "\r\n") until the next call.
 * PAW_LINE_TOO_LONG: an over-long line ended and was dropped. NUL and other control bytes are dropped. */
paw_line_status paw_line_feed(paw_line_reader *reader, uint8_t byte);

/* ---- the board's state and its commands ------------------------------------------------------------------- */

typedef struct {
    paw_led_state led;       /* what the host asked for */
    uint32_t last_host_ms;   /* when the host last said anything valid */
    bool host_seen;
} paw_board;

void paw_board_init(paw_board *board, uint32_t now_ms);
/* Handle one line from the host; writes the reply line (without '\n') to `reply`; returns false if none. */
bool paw_handle_line(paw_board *board, const char *line, uint32_t now_ms, char *reply, size_t reply_size);
/* The greeting the board sends at boot. */
void paw_hello(char *reply, size_t reply_size);
/* The LED state to show now: the host's, or offline when the host has gone quiet. */
paw_led_state paw_shown_led(const paw_board *board, uint32_t now_ms);
const char *paw_led_name(paw_led_state state);
/* The state named `name`, or PAW_LED_COUNT when there is none. */
paw_led_state paw_led_from_name(const char *name);

/* ---- button debounce --------------------------------------------------------------------------------------- */

typedef struct {
    bool pressed;         /* the debounced state */
    bool raw;             /* the last raw reading */
    uint32_t raw_since;   /* when the raw reading last changed */
} paw_debounce;

typedef enum { PAW_BUTTON_NONE = 0, PAW_BUTTON_DOWN, PAW_BUTTON_UP } paw_button_event;

void paw_debounce_init(paw_debounce *debounce, bool raw_pressed, uint32_t now_ms);
/* A new raw reading; reports a press or release once the reading has been stable for PAW_DEBOUNCE_MS. */
paw_button_event paw_debounce_update(paw_debounce *debounce, bool raw_pressed, uint32_t now_ms);

/* ---- LED patterns ------------------------------------------------------------------------------------------ */

typedef struct {
    uint8_t r, g, b;
} paw_rgb;

/* The colour of an LED state at time `now_ms`: idle breathes warm white, listening is steady green, thinking
 * pulses amber, speaking ripples cyan, offline blinks dim red slowly, error blinks red fast, off is dark. */
paw_rgb paw_led_color(paw_led_state state, uint32_t now_ms);

#endif
