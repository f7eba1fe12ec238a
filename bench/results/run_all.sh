#!/bin/sh
# The measurement runs behind bench/README.md's "End to end" figures, one after another (2026-12-02; the soak,
# latency and load again after the second session's fixes, in that order).
cd "$(dirname "$0")/../.." || exit 1

.venv/bin/python bench/soak.py > bench/results/soak.out 2>&1
.venv/bin/python bench/latency.py --turns 8 > bench/results/latency.out 2>&1
.venv/bin/python bench/barge_in.py --turns 10 > bench/results/barge_in.out 2>&1
.venv/bin/python bench/load.py --seconds 30 > bench/results/load.out 2>&1
