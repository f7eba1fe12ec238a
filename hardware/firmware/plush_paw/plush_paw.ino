// The Plush paw board: a Seeed Studio XIAO RP2040 in the toy's paw, on USB to the plush's Pi.
//
// All protocol logic is the host-tested core in ../src (paw.c/paw.h), copied next to this sketch by
// `make sketch` (the Arduino IDE compiles only the sketch's own folder). This file only touches hardware:
// the button on D1 (to ground, internal pull-up), the XIAO's built-in RGB LED (NeoPixel on GPIO12, powered by
// GPIO11), and the USB serial port.
#include <Adafruit_NeoPixel.h>

extern "C" {
#include "paw.h"
}

#ifndef PIN_BUTTON
#define PIN_BUTTON D1
#endif
#ifndef PIN_NEOPIXEL_DATA
#define PIN_NEOPIXEL_DATA 12
#endif
#ifndef PIN_NEOPIXEL_POWER
#define PIN_NEOPIXEL_POWER 11
#endif

static Adafruit_NeoPixel pixel(1, PIN_NEOPIXEL_DATA, NEO_GRB + NEO_KHZ800);
static paw_line_reader reader;
static paw_board board;
static paw_debounce button;
static char reply[PAW_LINE_MAX + 1];

static void send_line(const char *line) {
  Serial.print(line);
  Serial.print('\n');
}

void setup() {
  pinMode(PIN_BUTTON, INPUT_PULLUP);
  pinMode(PIN_NEOPIXEL_POWER, OUTPUT);
  digitalWrite(PIN_NEOPIXEL_POWER, HIGH);
  pixel.begin();
  Serial.begin(115200);
  uint32_t now = millis();
  paw_line_init(&reader);
  paw_board_init(&board, now);
  paw_debounce_init(&button, digitalRead(PIN_BUTTON) == LOW, now);
  // A newline first: if the host holds half a line from before a reset, it ends there, not in our HELLO.
  Serial.print('\n');
  paw_hello(reply, sizeof reply);
  send_line(reply);
}

void loop() {
  uint32_t now = millis();
  while (Serial.available() > 0) {
    if (paw_line_feed(&reader, (uint8_t)Serial.read()) == PAW_LINE_READY &&
        paw_handle_line(&board, reader.buf, now, reply, sizeof reply)) {
      send_line(reply);
    }
  }
  paw_button_event event = paw_debounce_update(&button, digitalRead(PIN_BUTTON) == LOW, now);
  if (event == PAW_BUTTON_DOWN) {
    send_line("BTN DOWN");
  } else if (event == PAW_BUTTON_UP) {
    send_line("BTN UP");
  }
  paw_rgb color = paw_led_color(paw_shown_led(&board, now), now);
  pixel.setPixelColor(0, pixel.Color(color.r, color.g, color.b));
  pixel.show();
  delay(5);  // ~200 Hz: smooth LED patterns, and the 25 ms debounce sees several samples
}
