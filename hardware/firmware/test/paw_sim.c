/* The paw board, simulated on the host with the firmware's own protocol core: the tests' "board on a USB cable".
 *
 *   paw_sim FD     speak the protocol on file descriptor FD (the board end of a pseudo-terminal)
 *
 * Standard input drives the simulated hardware, one word per line:
 *   press / release   the button's raw contact (debounced by the core, as on the board)
 *   bounce            10 ms of contact bounce, then pressed
 *   garbage           write noise bytes to the host;  long   write an over-long line;  quit   unplug
 * Each LED change is reported on standard output as "led <state>", so a test can see what the LEDs show.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../src/paw.h"

static uint32_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint32_t)(ts.tv_sec * 1000u + ts.tv_nsec / 1000000u);
}

static void send_line(int fd, const char *line) {
    char out[PAW_LINE_MAX * 2 + 2]; /* room for the over-long lines the "long" command sends on purpose */
    int n = snprintf(out, sizeof out, "%s\n", line);
    if (n < 0 || (size_t)n >= sizeof out || (write(fd, out, (size_t)n) < 0 && errno != EAGAIN)) {
        exit(0); /* the host side is gone */
    }
}

/* One control command; false for "quit". */
static bool run_command(int fd, const char *cmd, bool *raw, int *bounce_left) {
    if (strcmp(cmd, "quit") == 0) {
        return false;
    }
    if (strcmp(cmd, "press") == 0) {
        *raw = true;
    } else if (strcmp(cmd, "release") == 0) {
        *raw = false;
    } else if (strcmp(cmd, "bounce") == 0) {
        *bounce_left = 10;
    } else if (strcmp(cmd, "garbage") == 0) {
        const char noise[] = "\x01\xff\x00zz\x1b[2J";
        (void)!write(fd, noise, sizeof noise - 1);
        send_line(fd, "");
    } else if (strcmp(cmd, "long") == 0) {
        char line[PAW_LINE_MAX * 2];
        memset(line, 'X', sizeof line - 1);
        line[sizeof line - 1] = '\0';
        send_line(fd, line);
    }
    return true;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: paw_sim FD\n");
        return 2;
    }
    int fd = atoi(argv[1]);
    paw_line_reader reader;
    paw_board board;
    paw_debounce button;
    char reply[PAW_LINE_MAX + 1];
    bool raw = false;
    int bounce_left = 0;
    paw_led_state shown = PAW_LED_COUNT;
    char control[256];
    size_t control_len = 0;
    setvbuf(stdout, NULL, _IOLBF, 0);
    paw_line_init(&reader);
    paw_board_init(&board, now_ms());
    paw_debounce_init(&button, false, now_ms());
    paw_hello(reply, sizeof reply);
    send_line(fd, reply);

    for (;;) {
        struct pollfd fds[2] = {{fd, POLLIN, 0}, {STDIN_FILENO, POLLIN, 0}};
        poll(fds, 2, 1);
        if (fds[0].revents & POLLIN) {
            uint8_t buf[256];
            ssize_t n = read(fd, buf, sizeof buf);
            if (n <= 0) {
                return 0;
            }
            for (ssize_t i = 0; i < n; i++) {
                if (paw_line_feed(&reader, buf[i]) == PAW_LINE_READY &&
                    paw_handle_line(&board, reader.buf, now_ms(), reply, sizeof reply)) {
                    send_line(fd, reply);
                }
            }
        }
        if (fds[1].revents & (POLLIN | POLLHUP)) {
            /* read(2), not stdio: commands that arrive together must not wait in a FILE buffer poll cannot see */
            ssize_t n = read(STDIN_FILENO, control + control_len, sizeof control - 1 - control_len);
            if (n <= 0) {
                return 0;
            }
            control_len += (size_t)n;
            control[control_len] = '\0';
            char *line = control, *end;
            while ((end = strchr(line, '\n')) != NULL) {
                *end = '\0';
                if (!run_command(fd, line, &raw, &bounce_left)) {
                    return 0;
                }
                line = end + 1;
            }
            control_len = strlen(line);
            memmove(control, line, control_len + 1);
        }
        if (bounce_left > 0) {
            raw = --bounce_left == 0 ? true : !raw;
        }
        paw_button_event event = paw_debounce_update(&button, raw, now_ms());
        if (event != PAW_BUTTON_NONE) {
            send_line(fd, event == PAW_BUTTON_DOWN ? "BTN DOWN" : "BTN UP");
        }
        paw_led_state led = paw_shown_led(&board, now_ms());
        if (led != shown) {
            shown = led;
            printf("led %s\n", paw_led_name(led));
        }
    }
}
