#!/usr/bin/env bash
# The DDGAN row of RESULTS.md: emoji32-cpu-ddgan trained for a step budget (the machine is
# shared while it runs, so minutes would measure the load), then the same eval as the others.
# 500 steps: DDGAN's step costs ~3-4x UDPM's per image here, so this is about the 8 idle
# minutes the other rows had (UDPM: 1950 steps, DDPM: 750).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
$PY benchmarks/trilemma.py train --methods ddgan --budget-steps 500 --chunk 250
$PY benchmarks/trilemma.py eval --rows ddgan-4 --n 400 --repeats 2 --force
