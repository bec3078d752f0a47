#!/usr/bin/env bash
# Ship one checkpoint of the shipped run (benchmarks/pretrained_quality.py's SHIPPED, chosen
# by its rule) and regenerate everything in the README that comes from the shipped model:
#   benchmarks/ship_udpm.sh 27500
# The package's model file, docs/images/samples.png, the latent figures, the trilemma's
# udpm-shipped rows (timed: run it on an idle machine), the top-level rows, explore.png,
# and the reports that read them. The README's prose numbers stay a hand edit.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
step=${1:?usage: benchmarks/ship_udpm.sh STEP}
run=benchmarks/cache/ablation/0.1.0+msb+nodrop
model=$run/checkpoints/model-$(printf %07d "$step").safetensors
[ -f "$model" ] || { echo "no model file $model" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

$PY benchmarks/pretrained_quality.py export --checkpoint "$model"
$PY -m udpm.cli sample --n 64 --seed 0 --grid --out "$tmp/samples"  # the packaged model
cp "$tmp/samples/grid.png" docs/images/samples.png
$PY benchmarks/latent_figures.py
# trilemma.py's udpm-shipped rows read the newest model file of a folder: give it only this one.
mkdir "$tmp/history" && ln -s "$(realpath "$model")" "$tmp/history/"
$PY benchmarks/trilemma.py eval --rows udpm-shipped udpm-shipped-scalar --n 400 --force \
    --udpm-history "$tmp/history"
$PY benchmarks/trilemma.py report
$PY benchmarks/top_level.py eval --shipped --variants none
$PY benchmarks/top_level.py report
UDPM_EXPLORE_SCREENSHOT=docs/images/explore.png \
    $PY -m pytest -q -p no:cacheprovider tests/test_explore_browser.py
$PY benchmarks/pretrained_quality.py report
$PY benchmarks/udpm_ablation.py report
