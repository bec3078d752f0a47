"""Training time to a fixed quality: each UDPM recipe's steps and idle-machine minutes until
it matches a reference checkpoint's FD and recall.

    python benchmarks/time_to_quality.py

A cheaper step only helps if the quality per step holds, and a better recipe helps even at
the same step cost, so the fair figure for "faster at the same quality" is the training time
to reach a given quality. Reads the committed curves (``pretrained_curves/*.json``: FD and
recall at n = 2,000 on the reported seeds) and the step costs measured side by side on the
idle machine (``train_speed.json``); writes ``time_to_quality.json`` and
``TIME_TO_QUALITY.md``.

For each run and reference, two steps are read off its scored checkpoints:

- *first*: the first checkpoint with FD at most and recall at least the reference's;
- *sustained*: the first checkpoint from which every later one also does (none if its last
  one does not).

The speed-up of a recipe over the reference's recipe sets the reference run's *first*
(the kinder reading for the old recipe) against the candidate's *sustained* (the harsher
one for the new). Minutes are steps × batch / the whole step's images/s in
``train_speed.json`` (run minutes in the curves include time shared with other jobs).
One training seed per run: two runs of the same recipe (``0.1.0`` and ``long``) show how
far a second seed can move these steps.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CURVES = HERE / "pretrained_curves"
# The quality bars: the model shipped when the speed target was set (the 0.1.0 model's last
# checkpoint), and the best the same recipe shipped after 40,000 steps (`long`, chosen by its
# validation seeds).
REFERENCES = {"0.1.0": 13000, "long": 30000}
RECIPE_OF = {"long": "0.1.0"}  # run -> its recipe's name in train_speed.json, where they differ


def reached(rows: list[dict], fd: float, recall: float) -> tuple[int | None, int | None]:
    """(first, sustained): the scored steps described in the module's docstring."""
    ok = [(r["step"], r["fd"] <= fd and r["recall"] >= recall) for r in rows]
    first = next((s for s, good in ok if good), None)
    sustained = None
    for s, good in reversed(ok):
        if not good:
            break
        sustained = s
    return first, sustained


def minutes(steps: int | None, rate: float | None, batch: int) -> float | None:
    return None if steps is None or rate is None else steps * batch / rate / 60


def measure(curves: dict, speed: dict) -> dict:
    batch, rates = speed["batch_size"], speed["variants"]

    def rate(run: str) -> float | None:
        v = rates.get(RECIPE_OF.get(run, run))
        return v and v["whole_step_images_per_s"]

    out = {}
    for ref, ref_step in REFERENCES.items():
        bar = next(r for r in curves[ref]["rows"] if r["step"] == ref_step)
        ref_first, _ = reached(curves[ref]["rows"], bar["fd"], bar["recall"])
        ref_minutes = minutes(ref_first, rate(ref), batch)
        rows = []
        for run, c in curves.items():
            first, sustained = reached(c["rows"], bar["fd"], bar["recall"])
            run_rate = rate(run)
            mins = minutes(sustained, run_rate, batch)
            rows.append(
                {
                    "run": run,
                    "scored_to": c["rows"][-1]["step"],
                    "first": first,
                    "sustained": sustained,
                    "images_per_s": run_rate,
                    "sustained_minutes": mins,
                    "speedup": ref_minutes / mins if mins and ref_minutes else None,
                }
            )
        out[ref] = {
            "step": ref_step,
            "fd": bar["fd"],
            "recall": bar["recall"],
            "first": ref_first,
            "minutes": ref_minutes,
            "rows": rows,
        }
    return out


def fmt(x, spec: str = ",", none: str = "—") -> str:
    return none if x is None else format(x, spec)


def markdown(result: dict) -> str:
    lines = [
        "# Training time to a fixed quality",
        "",
        f"`{result['command']}` from the committed curves (n = 2,000, reported seeds 0..1999, "
        f"k = 3, the shipped emoji32 feature network) and the step costs of "
        f"`{result['speed_command']}` ({result['machine']}, batch {result['batch_size']}, the "
        "machine otherwise idle). One training seed per run. How *first* and *sustained* are "
        "read, and why the speed-up sets the reference's *first* against the candidate's "
        "*sustained*: `benchmarks/time_to_quality.py`.",
        "",
    ]
    for ref, r in result["references"].items():
        lines += [
            f"## Bar: `{ref}` at step {r['step']:,} (FD ≤ {r['fd']:.2f}, recall ≥ "
            f"{r['recall']:.3f})",
            "",
            f"`{ref}` itself first reached it at step {fmt(r['first'])} "
            f"({fmt(r['minutes'], '.1f')} idle minutes).",
            "",
            "| run | scored to | first | sustained from | step images/s | minutes to sustained "
            "| speed-up |",
            "|---|---|---|---|---|---|---|",
        ]
        for x in r["rows"]:
            lines.append(
                f"| {x['run']} | {x['scored_to']:,} | {fmt(x['first'])} | "
                f"{fmt(x['sustained'])} | {fmt(x['images_per_s'], '.0f', 'not timed')} | "
                f"{fmt(x['sustained_minutes'], '.1f')} | {fmt(x['speedup'], '.2f')} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--speed", default="train_speed.json", help="step costs, in benchmarks/")
    args = p.parse_args()
    curves = {f.stem: json.loads(f.read_text()) for f in sorted(CURVES.glob("*.json"))}
    speed = json.loads((HERE / args.speed).read_text())
    result = {
        "command": "python benchmarks/time_to_quality.py " + " ".join(sys.argv[1:]),
        "speed_command": speed["command"],
        "machine": speed["machine"],
        "batch_size": speed["batch_size"],
        "references": measure(curves, speed),
    }
    (HERE / "time_to_quality.json").write_text(json.dumps(result, indent=2) + "\n")
    (HERE / "TIME_TO_QUALITY.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
