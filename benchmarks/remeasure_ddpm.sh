#!/usr/bin/env bash
# Re-measure the DDPM/DDIM rows of RESULTS.md with x̂₀ clipping and DDPM's own optimiser
# (framework issue). Budget: the 750 steps the 0.1.0 DDPM run reached in 8 idle minutes,
# as a step budget because this machine is shared while it runs. Other rows are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
$PY benchmarks/trilemma.py train --methods ddpm --budget-steps 750 --chunk 250
$PY benchmarks/trilemma.py eval --rows ddim-10 ddim-50 ddpm-ancestral-50 --n 400 --repeats 2 --force
$PY benchmarks/trilemma.py report
# What clipping alone changes on the same model:
$PY benchmarks/trilemma.py eval --rows ddim-10-unclipped ddpm-ancestral-50-unclipped --n 400 --repeats 2 --force
$PY benchmarks/trilemma.py report
