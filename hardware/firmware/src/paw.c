/* The Plush paw board's protocol core; see paw.h for the protocol and why it is plain C. */
#include "paw.h"

#include <stdio.h>
#include <string.h>

static const char *const LED_NAMES[PAW_LED_COUNT] = {
    "off", "idle", "listening", "thinking", "speaking", "offline", "error",
};

/* ---- line reader ------------------------------------------------------------------------------------------ */

void paw_line_init(paw_line_reader *reader) {
    reader->len = 0;
    reader->overflow = false;
    reader->buf[0] = '\0';
}

paw_line_status paw_line_feed(paw_line_reader *reader, uint8_t byte) {
    if (byte == '\n') {
        bool dropped = reader->overflow;
        reader->buf[reader->len] = '\0';
        reader->overflow = false;
        if (dropped) {
            reader->len = 0;
            return PAW_LINE_TOO_LONG;
        }
        reader->len = 0;
        return PAW_LINE_READY;
    }
    if (byte == '\r' || byte < 0x20 || byte >= 0x7f) {
        return PAW_LINE_NONE; /* control bytes and non-ASCII noise never reach a command */
    }
    if (reader->overflow) {
        return PAW_LINE_NONE;
    }
    if (reader->len >= PAW_LINE_MAX) {
        reader->overflow = true;
        return PAW_LINE_NONE;
    }
    reader->buf[reader->len++] = (char)byte;
    return PAW_LINE_NONE;
}

/* ---- commands --------------------------------------------------------------------------------------------- */

void paw_board_init(paw_board *board, uint32_t now_ms) {
    board->led = PAW_LED_IDLE;
    board->last_host_ms = now_ms;
    board->host_seen = false;
}

const char *paw_led_name(paw_led_state state) {
    return (unsigned)state < PAW_LED_COUNT ? LED_NAMES[state] : "?";
}

paw_led_state paw_led_from_name(const char *name) {
    for (int i = 0; i < PAW_LED_COUNT; i++) {
        if (strcmp(name, LED_NAMES[i]) == 0) {
            return (paw_led_state)i;
        }
    }
    return PAW_LED_COUNT;
}

void paw_hello(char *reply, size_t reply_size) {
    snprintf(reply, reply_size, "HELLO plush-paw %s proto=%d", PAW_VERSION, PAW_PROTOCOL);
}

static bool starts_with_word(const char *line, const char *word, const char **rest) {
    size_t n = strlen(word);
    if (strncmp(line, word, n) != 0 || (line[n] != '\0' && line[n] != ' ')) {
        return false;
    }
    *rest = line[n] == ' ' ? line + n + 1 : line + n;
    return true;
}

static bool printable_token(const char *token) {
    size_t n = strlen(token);
    if (n == 0 || n > 16) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (token[i] <= ' ' || token[i] >= 0x7f) {
            return false;
        }
    }
    return true;
}

bool paw_handle_line(paw_board *board, const char *line, uint32_t now_ms, char *reply, size_t reply_size) {
    const char *rest = NULL;
    if (line[0] == '\0') {
        return false; /* blank lines are keep-alive noise */
    }
    if (strcmp(line, "HELLO?") == 0) {
        paw_hello(reply, reply_size);
    } else if (starts_with_word(line, "PING", &rest)) {
        if (!printable_token(rest)) {
            snprintf(reply, reply_size, "ERR PING needs a token of 1-16 characters");
            return true;
        }
        snprintf(reply, reply_size, "PONG %s", rest);
    } else if (starts_with_word(line, "LED", &rest)) {
        paw_led_state state = paw_led_from_name(rest);
        if (state == PAW_LED_COUNT) {
            snprintf(reply, reply_size, "ERR unknown LED state");
            return true;
        }
        board->led = state;
        snprintf(reply, reply_size, "OK LED %s", LED_NAMES[state]);
    } else {
        snprintf(reply, reply_size, "ERR unknown command");
        return true;
    }
    board->last_host_ms = now_ms;
    board->host_seen = true;
    return true;
}

paw_led_state paw_shown_led(const paw_board *board, uint32_t now_ms) {
    /* Counted from boot until the host first speaks: a board whose Pi never comes up shows offline too.
     * Unsigned subtraction: correct across the 49-day wrap of a 32-bit millisecond clock. */
    if ((uint32_t)(now_ms - board->last_host_ms) > PAW_HOST_TIMEOUT_MS) {
        return PAW_LED_OFFLINE;
    }
    return board->led;
}

/* ---- debounce --------------------------------------------------------------------------------------------- */

void paw_debounce_init(paw_debounce *debounce, bool raw_pressed, uint32_t now_ms) {
    debounce->pressed = raw_pressed;
    debounce->raw = raw_pressed;
    debounce->raw_since = now_ms;
}

paw_button_event paw_debounce_update(paw_debounce *debounce, bool raw_pressed, uint32_t now_ms) {
    if (raw_pressed != debounce->raw) {
        debounce->raw = raw_pressed;
        debounce->raw_since = now_ms;
        return PAW_BUTTON_NONE;
    }
    if (raw_pressed == debounce->pressed || (uint32_t)(now_ms - debounce->raw_since) < PAW_DEBOUNCE_MS) {
        return PAW_BUTTON_NONE;
    }
    debounce->pressed = raw_pressed;
    return raw_pressed ? PAW_BUTTON_DOWN : PAW_BUTTON_UP;
}

/* ---- LED patterns ----------------------------------------------------------------------------------------- */

/* A triangle wave 0..255..0 over `period_ms` (cheap "breathing" with no floating point on the board). */
static uint8_t triangle(uint32_t now_ms, uint32_t period_ms) {
    uint32_t phase = now_ms % period_ms;
    uint32_t half = period_ms / 2;
    uint32_t level = phase < half ? phase * 255 / half : (period_ms - phase) * 255 / half;
    return (uint8_t)(level > 255 ? 255 : level);
}

static paw_rgb scale(paw_rgb color, uint8_t level) {
    paw_rgb out = {
        (uint8_t)(color.r * level / 255), (uint8_t)(color.g * level / 255), (uint8_t)(color.b * level / 255)};
    return out;
}

paw_rgb paw_led_color(paw_led_state state, uint32_t now_ms) {
    static const paw_rgb warm = {255, 160, 80}, green = {0, 255, 60}, amber = {255, 120, 0};
    static const paw_rgb cyan = {0, 200, 255}, red = {255, 0, 0}, dark = {0, 0, 0};
    switch (state) {
    case PAW_LED_IDLE:
        return scale(warm, (uint8_t)(20 + triangle(now_ms, 4000) * 60 / 255)); /* soft, slow breathing */
    case PAW_LED_LISTENING:
        return green;
    case PAW_LED_THINKING:
        return scale(amber, (uint8_t)(60 + triangle(now_ms, 600) * 195 / 255));
    case PAW_LED_SPEAKING:
        return scale(cyan, (uint8_t)(120 + triangle(now_ms, 300) * 135 / 255));
    case PAW_LED_OFFLINE:
        return (now_ms % 2000) < 1000 ? scale(red, 40) : dark;
    case PAW_LED_ERROR:
        return (now_ms % 500) < 250 ? red : dark;
    default:
        return dark;
    }
}
