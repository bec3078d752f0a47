"""The README runs as written: every ```bash and ```python block, in order, in one folder.

Blocks run in a fresh temporary folder (so ``runs/emoji32`` trained by one block is there
for the next), with ``udpm`` on the PATH pointing at this checkout. A block is skipped
only when the line above its fence says so: ``<!-- no-test: why -->`` (GPU, torchrun and
set-up blocks). ```text blocks are transcripts and synopses, not run.

Big numbers are made small by the substitutions below, and only by them, so a reader's
command and the tested one differ in nothing else.
"""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SRC = Path(__file__).resolve().parents[1] / "src"

#: (pattern, replacement), applied line by line to every block before it runs.
SUBSTITUTIONS = [
    # Step counts in thousands become at most 3: training 2000 -> 2 and 8000 -> 3 (the
    # --resume line still continues the run), DDPM's 1000 ancestral steps -> 1.
    (r"--steps (\d+)000\b", lambda m: f"--steps {min(int(m.group(1)), 3)}"),
    # Hundreds of training steps (the autoencoder's 400) become 3 as well.
    (r"^(\s*udpm train .*?)--steps \d{3}\b", r"\1--steps 3"),
    # Chunks alike: --stop-at 2000 -> 2, 8000 -> 3 (within a planned 3 or more).
    (r"--stop-at (\d+)000\b", lambda m: f"--stop-at {min(int(m.group(1)), 3)}"),
    # A training command without --steps would run its preset's thousands: 2 steps (a
    # chunk of a run, --stop-at, keeps its planned target).
    (r"^(\s*udpm train (?:(?!--steps|--stop-at)[^#\n])*?)(\s*#.*)?$", r"\1 --steps 2\2"),
    # Sampling and timing it: 2 steps of any sampler, 4 images unless a count is given.
    (r"^(\s*udpm (?:sample|bench) .*?)--steps \d+\b", r"\1--steps 2"),
    (r"^(\s*udpm sample (?:(?!--n )[^#\n])*?)(\s*#.*)?$", r"\1 --n 4\2"),
    # Sample counts for measuring (--n 2000, n=2000) -> 8 images.
    (r"--n \d{3,}\b", "--n 8"),
    (r"\bn=\d{3,}\b", "n=8"),
    # Timing: one repeat of small batches instead of five of 1 and 64.
    (r"^(\s*udpm bench\b)", r"\1 --repeats 1 --batches 1,2"),
]


def substitute(code: str) -> str:
    lines = code.splitlines()
    for pattern, replacement in SUBSTITUTIONS:
        lines = [re.sub(pattern, replacement, line) for line in lines]
    return "\n".join(lines) + "\n"


def blocks(text: str) -> list[tuple[str, str, int, bool]]:
    """``(language, code, line, skipped)`` of every fenced block, in order."""
    found, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^(\s*)```(\w*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        indent, language, start = len(fence.group(1)), fence.group(2), i
        body = []
        i += 1
        while not re.match(r"^\s*```\s*$", lines[i]):
            body.append(lines[i][indent:])
            i += 1
        before = next((line for line in reversed(lines[:start]) if line.strip()), "")
        found.append((language, "\n".join(body), start + 1, "<!-- no-test" in before))
        i += 1
    return found


def test_blocks_are_found_and_marks_are_explicit():
    text = (
        "a\n<!-- no-test: gpu -->\n```bash\nx\n```\n\n```python\n  y\n```\n"
        "- item\n  ```bash\n  z\n  ```\n"
    )
    assert [(lang, code, skip) for lang, code, _, skip in blocks(text)] == [
        ("bash", "x", True),
        ("python", "  y", False),
        ("bash", "z", False),
    ]


def test_substitutions_shrink_only_the_big_numbers():
    code = (
        "udpm train --preset emoji32-cpu-ddpm --out runs/ddpm   # or --method ddpm\n"
        "udpm train --preset emoji32-cpu --out r --steps 8000 --resume\n"
        "udpm train --out r --resume --stop-at 8000\n"
        "udpm train --preset emoji32-cpu-ae --out ae --steps 400   # stage 1\n"
        "udpm sample --checkpoint r --out o --sampler ddim --steps 10\n"
        "udpm sample --out o --n 64 --grid\n"
        "udpm bench --checkpoint r --sampler ddim --steps 50\n"
        'evaluate(m, "emoji32", n=2000)\n'
        "udpm eval --n 2000 --json e.json\n"
    )
    assert substitute(code).splitlines() == [
        "udpm train --preset emoji32-cpu-ddpm --out runs/ddpm --steps 2   # or --method ddpm",
        "udpm train --preset emoji32-cpu --out r --steps 3 --resume",
        "udpm train --out r --resume --stop-at 3",
        "udpm train --preset emoji32-cpu-ae --out ae --steps 3   # stage 1",
        "udpm sample --checkpoint r --out o --sampler ddim --steps 2 --n 4",
        "udpm sample --out o --n 64 --grid",
        "udpm bench --repeats 1 --batches 1,2 --checkpoint r --sampler ddim --steps 2",
        'evaluate(m, "emoji32", n=8)',
        "udpm eval --n 8 --json e.json",
    ]


def _environment(tmp_path: Path) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "udpm"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m udpm.cli "$@"\n')
    shim.chmod(0o755)
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = f"{SRC}{os.pathsep}{env.get('PYTHONPATH', '')}"
    env.update(UDPM_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    return env


def _my_digits(root: Path) -> None:
    """The walk-through's own images: grey 28-px "digits" in three class folders."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(48):  # more than the preset batch of 32
        folder = root / "my_digits" / str(i % 3)
        folder.mkdir(parents=True, exist_ok=True)
        image = rng.integers(0, 60, (28, 28), dtype=np.uint8)
        image[4 + 6 * (i % 3) : 10 + 6 * (i % 3), 4:24] = 255  # a bar whose place is the class
        Image.fromarray(image).save(folder / f"{i}.png")


def test_every_readme_block_runs(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    _my_digits(work)
    env = _environment(tmp_path)
    ran = 0
    for language, code, line, skipped in blocks(README.read_text()):
        if skipped or language not in ("bash", "python"):
            continue
        command = (
            ["bash", "-euo", "pipefail", "-c"] if language == "bash" else [sys.executable, "-c"]
        )
        t0 = time.perf_counter()
        proc = subprocess.run(
            [*command, substitute(code)], cwd=work, env=env, capture_output=True, text=True
        )
        if proc.returncode:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
            pytest.fail(f"README.md line {line} ({language}) failed:\n{code}\n---\n{tail}")
        ran += 1
        print(f"README.md line {line}: {time.perf_counter() - t0:.1f}s")
    assert ran >= 5  # the walk-through, the Python API, the baselines, measuring
