/* Without libFuzzer (no clang): drive the fuzz target with seeded random and mutated protocol lines for a
 * bounded number of runs, under the sanitizers. `fuzz_driver RUNS SEED`. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const SEEDS[] = {"HELLO?\n", "PING 1\n", "LED idle\n", "LED speaking\r\n", "PING abcdefghijklmnop\n"};

int main(int argc, char **argv) {
    long runs = argc > 1 ? atol(argv[1]) : 100000;
    srand(argc > 2 ? (unsigned)atoi(argv[2]) : 1u);
    uint8_t buf[512];
    for (long run = 0; run < runs; run++) {
        size_t size = 0;
        while (size < sizeof buf - 32 && rand() % 8) {
            if (rand() % 2) {
                const char *seed = SEEDS[rand() % (sizeof SEEDS / sizeof *SEEDS)];
                size_t n = strlen(seed);
                memcpy(buf + size, seed, n);
                if (rand() % 3 == 0) {
                    buf[size + (size_t)rand() % n] = (uint8_t)rand(); /* mutate one byte */
                }
                size += n;
            } else {
                size_t n = (size_t)rand() % 24;
                for (size_t i = 0; i < n; i++) {
                    buf[size++] = (uint8_t)rand();
                }
            }
        }
        LLVMFuzzerTestOneInput(buf, size);
    }
    printf("fuzz: %ld runs, no crash\n", runs);
    return 0;
}
