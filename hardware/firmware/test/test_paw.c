/* Host unit tests of the paw's protocol core: parser, commands, debounce, LED patterns. `make test` runs them
 * under AddressSanitizer and UndefinedBehaviorSanitizer. Prints "N passed, M failed" and exits non-zero on a
 * failure. */
#include <stdio.h>
#include <string.h>

#include "../src/paw.h"

static int passed, failed;

#define CHECK(cond)                                                                                          \
    do {                                                                                                     \
        if (cond) {                                                                                          \
            passed++;                                                                                        \
        } else {                                                                                             \
            failed++;                                                                                        \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);                         \
        }                                                                                                    \
    } while (0)

/* Feed a string; return the status of its last byte (and leave any line in reader->buf). */
static paw_line_status feed(paw_line_reader *reader, const char *text) {
    paw_line_status status = PAW_LINE_NONE;
    for (const char *p = text; *p; p++) {
        paw_line_status s = paw_line_feed(reader, (uint8_t)*p);
        if (s != PAW_LINE_NONE) {
            status = s;
        }
    }
    return status;
}

static void test_lines_are_split_at_newlines_and_crlf_is_accepted(void) {
    paw_line_reader r;
    paw_line_init(&r);
    CHECK(feed(&r, "PING 1") == PAW_LINE_NONE);
    CHECK(feed(&r, "\r\n") == PAW_LINE_READY);
    CHECK(strcmp(r.buf, "PING 1") == 0);
    CHECK(feed(&r, "LED idle\n") == PAW_LINE_READY && strcmp(r.buf, "LED idle") == 0);
}

static void test_an_over_long_line_is_dropped_and_the_next_one_works(void) {
    paw_line_reader r;
    paw_line_init(&r);
    char longline[PAW_LINE_MAX * 3];
    memset(longline, 'A', sizeof longline - 1);
    longline[sizeof longline - 1] = '\0';
    CHECK(feed(&r, longline) == PAW_LINE_NONE);
    CHECK(feed(&r, "\n") == PAW_LINE_TOO_LONG);
    CHECK(feed(&r, "HELLO?\n") == PAW_LINE_READY && strcmp(r.buf, "HELLO?") == 0);
    char exact[PAW_LINE_MAX + 2];
    memset(exact, 'B', PAW_LINE_MAX);
    exact[PAW_LINE_MAX] = '\n';
    exact[PAW_LINE_MAX + 1] = '\0';
    CHECK(feed(&r, exact) == PAW_LINE_READY && strlen(r.buf) == PAW_LINE_MAX);
}

static void test_garbage_bytes_never_reach_a_command(void) {
    paw_line_reader r;
    paw_line_init(&r);
    const uint8_t noise[] = {0x00, 0xff, 0x1b, 'L', 0x80, 'E', 'D', 0x07, ' ', 'i', 'd', 'l', 'e', '\n'};
    paw_line_status last = PAW_LINE_NONE;
    for (size_t i = 0; i < sizeof noise; i++) {
        last = paw_line_feed(&r, noise[i]);
    }
    CHECK(last == PAW_LINE_READY && strcmp(r.buf, "LED idle") == 0);
}

static void test_commands_get_their_replies(void) {
    paw_board b;
    char reply[PAW_LINE_MAX + 1];
    paw_board_init(&b, 0);
    CHECK(paw_handle_line(&b, "HELLO?", 10, reply, sizeof reply));
    CHECK(strcmp(reply, "HELLO plush-paw " PAW_VERSION " proto=1") == 0);
    CHECK(paw_handle_line(&b, "PING 42", 20, reply, sizeof reply) && strcmp(reply, "PONG 42") == 0);
    CHECK(paw_handle_line(&b, "LED thinking", 30, reply, sizeof reply) && strcmp(reply, "OK LED thinking") == 0);
    CHECK(b.led == PAW_LED_THINKING);
    CHECK(!paw_handle_line(&b, "", 40, reply, sizeof reply));
}

static void test_bad_commands_are_answered_with_err_and_change_nothing(void) {
    paw_board b;
    char reply[PAW_LINE_MAX + 1];
    paw_board_init(&b, 0);
    const char *bad[] = {"LED purple", "LED", "LEDidle", "PING", "PING 12345678901234567", "FOO", "hello?"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK(paw_handle_line(&b, bad[i], 5, reply, sizeof reply) && strncmp(reply, "ERR ", 4) == 0);
    }
    CHECK(b.led == PAW_LED_IDLE);
    CHECK(!b.host_seen);
}

static void test_a_silent_host_turns_the_leds_to_offline(void) {
    paw_board b;
    char reply[PAW_LINE_MAX + 1];
    paw_board_init(&b, 1000);
    CHECK(paw_shown_led(&b, 1000 + PAW_HOST_TIMEOUT_MS) == PAW_LED_IDLE); /* a fresh board: idle at first */
    CHECK(paw_shown_led(&b, 1001 + PAW_HOST_TIMEOUT_MS) == PAW_LED_OFFLINE); /* no host after boot: offline */
    paw_handle_line(&b, "LED speaking", 2000, reply, sizeof reply);
    CHECK(paw_shown_led(&b, 2000 + PAW_HOST_TIMEOUT_MS) == PAW_LED_SPEAKING);
    CHECK(paw_shown_led(&b, 2001 + PAW_HOST_TIMEOUT_MS) == PAW_LED_OFFLINE);
    paw_handle_line(&b, "PING x", 20000, reply, sizeof reply);
    CHECK(paw_shown_led(&b, 20001) == PAW_LED_SPEAKING);
    /* the millisecond clock wraps after 49 days: still correct */
    paw_handle_line(&b, "PING y", 0xFFFFFF00u, reply, sizeof reply);
    CHECK(paw_shown_led(&b, 0x00000100u) == PAW_LED_SPEAKING);
}

static void test_debounce_ignores_bounces_and_reports_a_steady_press_once(void) {
    paw_debounce d;
    paw_debounce_init(&d, false, 0);
    int downs = 0, ups = 0;
    /* contact bounce: 1 ms flips for 10 ms, then steady pressed */
    for (uint32_t t = 1; t <= 10; t++) {
        paw_button_event e = paw_debounce_update(&d, t % 2, t);
        downs += e == PAW_BUTTON_DOWN;
    }
    CHECK(downs == 0);
    for (uint32_t t = 11; t <= 100; t++) {
        paw_button_event e = paw_debounce_update(&d, true, t);
        downs += e == PAW_BUTTON_DOWN;
        ups += e == PAW_BUTTON_UP;
    }
    CHECK(downs == 1 && ups == 0 && d.pressed);
    for (uint32_t t = 101; t <= 200; t++) {
        ups += paw_debounce_update(&d, false, t) == PAW_BUTTON_UP;
    }
    CHECK(ups == 1 && !d.pressed);
    /* a 10 ms glitch is not a press */
    for (uint32_t t = 201; t <= 210; t++) {
        downs += paw_debounce_update(&d, true, t) == PAW_BUTTON_DOWN;
    }
    for (uint32_t t = 211; t <= 300; t++) {
        downs += paw_debounce_update(&d, false, t) == PAW_BUTTON_DOWN;
    }
    CHECK(downs == 1);
}

static void test_led_patterns(void) {
    paw_rgb listening = paw_led_color(PAW_LED_LISTENING, 123);
    CHECK(listening.g == 255 && listening.r == 0);
    CHECK(memcmp(&listening, &(paw_rgb){0, 255, 60}, sizeof listening) == 0);
    paw_rgb off = paw_led_color(PAW_LED_OFF, 5);
    CHECK(off.r == 0 && off.g == 0 && off.b == 0);
    /* error blinks: on, then off, four times a second */
    CHECK(paw_led_color(PAW_LED_ERROR, 100).r == 255 && paw_led_color(PAW_LED_ERROR, 300).r == 0);
    /* offline blinks slowly and dimly */
    CHECK(paw_led_color(PAW_LED_OFFLINE, 500).r == 40 && paw_led_color(PAW_LED_OFFLINE, 1500).r == 0);
    /* idle breathes: dimmest at the start of the cycle, brightest at its middle, never off or glaring */
    uint8_t low = paw_led_color(PAW_LED_IDLE, 0).r, high = paw_led_color(PAW_LED_IDLE, 2000).r;
    CHECK(low > 0 && high > low && high < 255);
    /* thinking pulses faster than idle breathes */
    CHECK(paw_led_color(PAW_LED_THINKING, 0).r < paw_led_color(PAW_LED_THINKING, 300).r);
    for (int s = 0; s < PAW_LED_COUNT; s++) {
        CHECK((int)paw_led_from_name(paw_led_name((paw_led_state)s)) == s);
    }
    CHECK(paw_led_from_name("disco") == PAW_LED_COUNT);
}

int main(void) {
    test_lines_are_split_at_newlines_and_crlf_is_accepted();
    test_an_over_long_line_is_dropped_and_the_next_one_works();
    test_garbage_bytes_never_reach_a_command();
    test_commands_get_their_replies();
    test_bad_commands_are_answered_with_err_and_change_nothing();
    test_a_silent_host_turns_the_leds_to_offline();
    test_debounce_ignores_bounces_and_reports_a_steady_press_once();
    test_led_patterns();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
