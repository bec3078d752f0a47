"""Quality of the emoji32-cpu UDPM run against training time, and export of the shipped model.

    python benchmarks/pretrained_quality.py curve  --history RUN/checkpoints
    python benchmarks/pretrained_quality.py export --checkpoint MODEL_FILE
    python benchmarks/pretrained_quality.py choose --history RUN/checkpoints

Each run's curve is kept in ``pretrained_curves/NAME.json`` (``--name``): the shipped one
(``SHIPPED``) and every retrain candidate, shipped or not, so none is dropped.

``curve`` measures FD (shipped emoji32 feature network), precision and recall of 2,000
samples against all 3,781 emoji for every saved checkpoint, next to the floor: the FD
between two random halves of the data set. It writes ``benchmarks/PRETRAINED.md`` and
``benchmarks/pretrained_quality.png``.
``choose`` scores the shipped run's candidates on the fresh seed sets of its rule's ninth
revision (``CHOICE_STEPS``, ``CHOICE_SEEDS``); it resumes if interrupted.
``export`` writes the fp16 EMA weights into the package (``udpm.load()`` reads them).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
CURVES = HERE / "pretrained_curves"  # one JSON per trained run, by name
SHIPPED = "0.1.0+msb+nodrop"  # the run whose checkpoint is packaged (by MSB_SHIP_RULE)
# The runs shipped before it, newest first, with the checkpoint each shipped; kept to compare.
PREVIOUS = {"long": "step 30,000, chosen by its rule", "0.1.0": "its last checkpoint"}
# Written before the run trained, and not changed after: which checkpoint ships.
SHIPPING_RULE = (
    "Shipping rule, fixed before any candidate trained: ship a candidate run's last "
    "checkpoint (step 13,000, the 0.1.0 model's length, planned from the start), provided "
    "its FD at n = 2,000 (seeds 0..1999) is below the 0.1.0 model's 15.42; otherwise keep "
    "the 0.1.0 model. No intermediate checkpoint is picked by its score."
)
OLD_FD = 15.42
# The third candidate's rule, written (and committed) before that run trained past 12,500.
LONG = "long"
LONG_RULE = (
    "Rule for `long`, fixed before it trained past step 12,500: issue 14's UDPM run "
    "(`benchmarks/cache/curves/run-udpm`: the emoji32-cpu recipe, seed 0, open-ended) "
    "continued to 40,000 steps; its checkpoints every 2,500 steps are scored on validation "
    "seeds 100000..101999 (n = 2,000, `curve --seed 100000 --validation`); the one with the "
    "lowest validation FD ships if its FD on the reported seeds 0..1999 is below 15.42, "
    "and its reported-seed scores are the ones quoted."
)


# Equal-steps tests of the mode-seeking term (lambda_ms, benchmarks/TOP_LEVEL.md), each rule
# written and committed before any of that run's checkpoints after step 1,500 was scored.
MS = "0.1.0+ms"
MSB = "0.1.0+msb+nodrop"  # the bounded form, D without dropout (top-level probe, round 4)
MS_BASELINES = {"long": 12500, "0.1.0": 12250}  # the recipe without the term, nearest steps
MS_RULE = (
    "Rule for `0.1.0+ms`, fixed before any of its checkpoints after step 1,500 was scored: "
    "an equal-steps test of the mode-seeking term, not a shipping candidate (the shipped "
    "model trained 30,000 steps). Its step-12,500 checkpoint is compared with the two runs "
    "of the same recipe without the term at their nearest scored steps (`long` at 12,500, "
    "`0.1.0` at 12,250). The term joins the emoji32-cpu preset if its recall is at least "
    "0.05 above both and its FD is no worse than the worse of theirs."
)
EQUAL_STEP_RULES = {
    MS: MS_RULE,
    MSB: "Rule for `0.1.0+msb+nodrop`, fixed before it trained past step 1,500: the same "
    "test and margins as `0.1.0+ms`'s, for the bounded term (`ms_bounded=true`, weight 1 at "
    "the top level) with no dropout in D (the choice the top-level probe's fourth round made "
    "by its rule): its step-12,500 checkpoint against `long` at 12,500 and `0.1.0` at "
    "12,250; the two changes join the emoji32-cpu preset if its recall is at least 0.05 "
    "above both and its FD is no worse than the worse of theirs. `0.1.0+ms` is shown "
    "beside it, not part of the rule. If it joins, the run continues to 30,000 steps as a "
    "shipping candidate chosen as `long` was (lowest FD on validation seeds 100000..101999 "
    "among its checkpoints every 2,500 steps), shipped only if that checkpoint's FD on the "
    "reported seeds is below the shipped model's 6.71.",
}


# Written after 0.1.0+msb+nodrop's reported-seed curve was seen (FD 4.73 at 12,500) and
# committed before any of its checkpoints was scored on validation seeds. The choice uses
# validation seeds only, on both sides; the reported seeds are quoted, never used to choose.
MSB_SHIP_RULE = (
    "Shipping rule for `0.1.0+msb+nodrop`, written after its reported-seed curve was seen "
    "and committed before any of its checkpoints was scored on validation seeds: of its "
    "checkpoints every 2,500 steps up to 12,500, the lowest FD on validation seeds "
    "100000..101999 (n = 2,000) replaces the shipped model if that FD is below the shipped "
    "model's own validation FD (6.74, `long` at 30,000); its reported-seed scores are "
    "quoted. The preset question is separate (the rule above). Extended before the run "
    "trained past 12,500 (it had shipped step 12,500 by then): the run continues to 17,500 "
    "steps (20,000 at first, cut to what the session's time allowed before any checkpoint "
    "past 12,500 was scored), and the lowest validation FD among all its checkpoints every "
    "2,500 steps up to 17,500 is the one shipped. Extended again before it trained past "
    "17,500 (step 17,500 shipped by then): the run continues to 27,500 steps (cut earlier "
    "only for the session's time, decided before any checkpoint past 17,500 is scored), and "
    "the lowest validation FD among all its checkpoints every 2,500 steps is the one shipped. "
    "Extended a third time before it trained past 27,500 (step 27,500 shipped by then): the "
    "run continues to 32,500 steps, the same choice among all its checkpoints. Extended a "
    "fourth time before it trained past 32,500 (step 27,500 shipped by then), and this time "
    "the choice changes, written after the validation scores up to 32,500 were seen: FD had "
    "levelled off (2.46, 2.46, 2.52 at 27,500-32,500) while recall kept rising, and an "
    "FD-only rule cannot weigh the issue's second target. The run continues to 50,000 steps "
    "(45,000 at first, lengthened before any checkpoint past 32,500 was scored; cut "
    "earlier only for the session's time, decided before any checkpoint past 32,500 is "
    "scored: at step 40,600 it was cut to 47,500 for the session's time), and the "
    "checkpoint shipped is the one nearest the issue's two targets on the "
    "validation seeds: the lowest max(FD / (5 × floor), 0.5 / recall), the worse of its "
    "two target ratios (1 or less meets both). Among the checkpoints already seen this picks "
    "30,000 (1.25 against 1.28 for 27,500), so it was not blind to them. Extended a fifth "
    "time before it trained past 47,510 (step 47,500 shipped by then): the run continues "
    "to 55,000 steps, stopped for the session's time at the last 2,500-step checkpoint it "
    "reaches by 16:10 UTC on 2026-12-02 (fixed now, before it resumes), with the same "
    "choice among all its checkpoints. Extended a sixth time before it trained past "
    "55,000 (step 52,500 shipped by then; reported recall 0.494, 0.006 short of the "
    "target): to 65,000 steps, stopped at the last 2,500-step checkpoint it reaches by "
    "17:55 UTC on 2026-12-02, with the same choice among all its checkpoints. Extended a "
    "seventh time before it trained past 65,000 (step 52,500 still chosen; validation FD "
    "still falling, 1.82 -> 1.54 from 52,500 to 65,000): to 70,000 steps, stopped at the "
    "last 2,500-step checkpoint it reaches by 18:50 UTC on 2026-12-02, with the same choice. "
    "Extended an eighth time before it trained past 70,000 (step 52,500 still chosen; "
    "validation FD still falling, 1.82 -> 1.37 from 52,500 to 70,000, recall flat at "
    "0.45-0.51): to 90,000 steps, stopped at the last 2,500-step checkpoint it reaches by "
    "23:10 UTC on 2026-12-02, with the same choice. Revised a ninth time after the run "
    "ended at 90,000 (flat since 70,000), because `seed_spread.py` (`SEED_SPREAD.md`, planned "
    "as a measurement that would not change the choice) found the choice to be the "
    "validation set's noise: on 20 fresh seed sets step 52,500 reads recall 0.488 ± 0.017 "
    "and step 90,000 0.516 ± 0.013, while one set's recall moves by 0.017, as much as "
    "neighbouring checkpoints differ. The choice is made again, by the same target ratio, "
    "on the means over 10 fresh seed sets (seeds 300000 + 2,000·i .. +1999, i = 0..9, "
    "disjoint from the reported, validation and seed_spread seeds) of every checkpoint "
    "every 2,500 steps from 50,000 to 90,000 (every earlier one reads a validation ratio "
    "of 1.10 or more); the one chosen ships and its reported-seed scores (0..1999, never "
    "used to choose) are quoted. Written and committed before any of those sets was "
    "scored (`pretrained_quality.py choose`); the earlier choices stay in the history."
)
# The ninth revision's candidates and seed sets (n = 2,000 each).
CHOICE_STEPS = tuple(range(50_000, 90_001, 2_500))
CHOICE_SEEDS = tuple(300_000 + 2_000 * i for i in range(10))
TARGET_FLOOR_MULTIPLE, TARGET_RECALL = 5.0, 0.5  # issue 15's targets, at n = 2,000


def target_gap(row: dict, floor_fd: float) -> float:
    """The worse of a row's two ratios to the targets: FD / (5 × floor) and 0.5 / recall."""
    recall_gap = TARGET_RECALL / row["recall"] if row["recall"] > 0 else float("inf")
    return max(row["fd"] / (TARGET_FLOOR_MULTIPLE * floor_fd), recall_gap)


def msb_chosen(r: dict) -> dict:
    """The row ``MSB_SHIP_RULE`` picks: since its ninth revision the best mean over the
    fresh seed sets, once every candidate has all of them; before, the best validation row."""
    rows = choice_means(r) or r["validation_rows"]
    return min(rows, key=lambda x: target_gap(x, r["floor"]["fd"]))


def choice_means(r: dict) -> list[dict]:
    """Each ninth-revision candidate's scores averaged over its seed sets; empty until every
    candidate has every set (a half-scored choice would favour the steps scored first)."""
    by_step: dict[int, list[dict]] = {}
    for x in r.get("choice_rows", []):
        by_step.setdefault(x["step"], []).append(x)
    if any(len(by_step.get(s, [])) < len(CHOICE_SEEDS) for s in CHOICE_STEPS):
        return []
    return [mean_row(by_step[s]) for s in CHOICE_STEPS]


def mean_row(rows: list[dict]) -> dict:
    keys = ("fd", "precision", "recall")
    out = {k: statistics.mean(x[k] for x in rows) for k in keys}
    out.update({f"{k}_sd": statistics.stdev(x[k] for x in rows) for k in keys})
    return {"step": rows[0]["step"], "checkpoint": rows[0]["checkpoint"], "sets": len(rows), **out}


# The step-cost target's quality checks, each written and committed before that run trained:
# name -> (its scored steps, the shipped run's steps they are set against).
LAZY = "0.1.0+msb+nodrop+lazy"
LW = "0.1.0+msb+nodrop+lw"
COST_TESTS = {LAZY: ((5000, 7500), (5000, 7500)), LW: ((7000, 10500), (5000, 7500))}
LAZY_RULE = (
    "Rule for `0.1.0+msb+nodrop+lazy`, fixed before it trained: an equal-steps test of lazy "
    "R1 (every 16 steps, weighted by 16) on the shipped recipe, for the step-cost target. "
    "It trains to 7,500 steps in one process of two threads, as the shipped run did (two "
    "processes of one thread were planned first and dropped before it trained: "
    "`train_processes.py` measured them no faster). Its FD and recall on "
    "the reported seeds, averaged over steps 5,000 and 7,500, are set against the shipped "
    "run's at the same steps: lazy R1 keeps the quality if its mean FD is at most 1.15× the "
    "shipped run's and its mean recall at most 0.03 below. One training seed each, so only "
    "differences larger than that can be seen."
)
LW_RULE = (
    "Rule for `0.1.0+msb+nodrop+lw`, fixed before it trained: an equal-time test of drawing "
    "the levels with probabilities 0.1, 0.3, 0.6 on the shipped recipe, for the step-cost "
    "target. By the per-level rates in `train_speed.json` (shipped recipe: 60, 140, 211 "
    "images/s) its average step costs 1/1.43 of the shipped recipe's (1/1.54 of the 0.1.0 "
    "recipe's), so its steps 7,000 and 10,500 take about the idle-machine time of the "
    "shipped run's 5,000 and 7,500 (7,164 and 10,746, rounded down to its checkpoints, "
    "against it). It trains to 10,500 steps in one process of two threads, as the shipped "
    "run did. Its FD and recall on the reported seeds, averaged over steps 7,000 and 10,500, "
    "are set against the shipped run's averaged over 5,000 and 7,500, with lazy R1's bars: "
    "the level draws keep the quality if the mean FD is at most 1.15× the shipped run's and "
    "the mean recall at most 0.03 below. The step's speed is then measured by "
    "`train_speed.py` on the idle machine; the rule does not use it."
)
COST_RULES = {LAZY: LAZY_RULE, LW: LW_RULE}
COST_CHANGE = {LAZY: "lazy R1", LW: "drawing the levels 0.1, 0.3, 0.6"}


def cost_verdict(r: dict) -> str:
    mine_steps, base_steps = COST_TESTS[r["name"]]

    def means(rows: list[dict], steps) -> tuple[float, float] | None:
        picked = [x for x in rows if x["step"] in steps]
        if len(picked) < len(steps):
            return None
        return tuple(sum(x[k] for x in picked) / len(picked) for k in ("fd", "recall"))

    mine = means(r["rows"], mine_steps)
    if mine is None:
        steps = " and ".join(f"{s:,}" for s in mine_steps)
        return f"Steps {steps} not both scored yet: no verdict."
    base = means(json.loads((CURVES / f"{MSB}.json").read_text())["rows"], base_steps)
    ok = mine[0] <= 1.15 * base[0] and mine[1] >= base[1] - 0.03
    return (
        f"Verdict by the rule: mean FD {mine[0]:.2f}, mean recall {mine[1]:.3f} against the "
        f"shipped run's {base[0]:.2f}, {base[1]:.3f} (FD bar {1.15 * base[0]:.2f}, recall bar "
        f"{base[1] - 0.03:.3f}): {COST_CHANGE[r['name']]} "
        f"{'keeps' if ok else 'does not keep'} the quality."
    )


def msb_ship_verdict(r: dict) -> str:
    if not r.get("validation_rows"):
        return "Not scored on validation seeds yet: no shipping verdict."
    best = msb_chosen(r)
    reported = next(x for x in r["rows"] if x["step"] == best["step"])
    # The bar: the validation FD that chose `long`, read from its committed curve (6.74).
    bar = chosen(json.loads((CURVES / f"{LONG}.json").read_text()))["fd"]
    ok = best["fd"] < bar
    gap = target_gap(best, r["floor"]["fd"])
    where = f"the means of {best['sets']} fresh seed sets" if "sets" in best else "validation seeds"
    return (
        f"Shipping verdict: step {best['step']} is nearest the targets on {where} "
        f"(worse ratio {gap:.2f}; FD {best['fd']:.2f} {'<' if ok else '≥'} {bar:.2f}, "
        f"recall {best['recall']:.3f}): "
        f"{'shipped' if ok else 'not shipped'}; its reported FD {reported['fd']:.2f}, "
        f"precision {reported['precision']:.3f}, recall {reported['recall']:.3f}."
    )


def ms_verdict(r: dict) -> str:
    mine = next((x for x in r["rows"] if x["step"] == 12500), None)
    if mine is None:
        return "Step 12,500 not scored yet: no verdict."
    base = []
    for name, step in MS_BASELINES.items():
        rows = json.loads((CURVES / f"{name}.json").read_text())["rows"]
        base.append(next(x for x in rows if x["step"] == step))
    recall_ok = all(mine["recall"] >= b["recall"] + 0.05 for b in base)
    fd_ok = mine["fd"] <= max(b["fd"] for b in base)
    against = "; ".join(
        f"`{n}` at {b['step']}: FD {b['fd']:.2f}, recall {b['recall']:.3f}"
        for n, b in zip(MS_BASELINES, base)
    )
    return (
        f"Verdict by the rule: at 12,500 FD {mine['fd']:.2f}, recall {mine['recall']:.3f} "
        f"({against}): recall {'clears' if recall_ok else 'does not clear'} the 0.05 margin, "
        f"FD {'is' if fd_ok else 'is not'} within the worse baseline's; the term "
        f"{'joins' if recall_ok and fd_ok else 'does not join'} the preset."
    )


def verdict(r: dict) -> str:
    if r.get("name") == MSB:
        return f"{ms_verdict(r)}\n\n{MSB_SHIP_RULE}\n\n{msb_ship_verdict(r)}"
    if r.get("name") in COST_TESTS:
        return cost_verdict(r)
    if r.get("name") in EQUAL_STEP_RULES:
        return ms_verdict(r)
    if r.get("name") == LONG or r.get("validation_rows"):  # chosen by validation seeds
        return long_verdict(r)
    last = r["rows"][-1]
    if last["step"] < 13000:
        return f"Still training (last evaluated step {last['step']}): no verdict yet."
    ok = last["fd"] < OLD_FD
    return (
        f"Verdict by the rule: last checkpoint FD {last['fd']:.2f} "
        f"{'<' if ok else '≥'} {OLD_FD}: {'shipped' if ok else 'not shipped'}."
    )


def chosen(r: dict) -> dict:
    """The validation row ``LONG_RULE`` picks: the lowest FD on the validation seeds."""
    return min(r["validation_rows"], key=lambda x: x["fd"])


def long_verdict(r: dict) -> str:
    checked = r.get("validation_rows", [])
    if not checked or max(x["step"] for x in checked) < 40_000:
        return "Still training or not yet scored on validation seeds up to 40,000: no verdict yet."
    best = chosen(r)
    reported = next((x for x in r["rows"] if x["step"] == best["step"]), None)
    if reported is None:
        return f"Step {best['step']} (best validation FD) is not scored on reported seeds yet."
    ok = reported["fd"] < OLD_FD
    return (
        f"Verdict by the rule: step {best['step']} has the lowest validation FD "
        f"({best['fd']:.2f}); its reported FD {reported['fd']:.2f} {'<' if ok else '≥'} "
        f"{OLD_FD}: {'shipped' if ok else 'not shipped'}."
    )


ASSET = HERE.parent / "src" / "udpm" / "assets" / "pretrained" / "emoji32-udpm.safetensors"


def real_images() -> torch.Tensor:
    from udpm.data import load_source
    from udpm.images import from_uint8

    return from_uint8(load_source("emoji32").images)


def floor(real: torch.Tensor) -> dict:
    from udpm.eval import compute_metrics

    perm = torch.randperm(len(real), generator=torch.Generator().manual_seed(0))
    half = len(real) // 2
    r = compute_metrics(real[perm[:half]], real[perm[half:]], progress=False)
    return {
        "fd": r["fd"],
        "precision": r["precision"],
        "recall": r["recall"],
        "n": half,
        "n_reference": len(real) - half,
    }


def measure(path: Path, real: torch.Tensor, n: int, seed: int = 0) -> dict:
    import udpm
    from udpm.eval import compute_metrics
    from udpm.eval.reference import dataset_identity

    pipe = udpm.load(path)
    fake = pipe.sample(n, seed=seed, batch_size=500)
    r = compute_metrics(fake, real, reference_key=dataset_identity("emoji32"), progress=False)
    return {
        "checkpoint": path.name,
        "step": pipe.meta["step"],
        "train_minutes": round(pipe.meta.get("train_seconds", 0) / 60, 1),
        "images_seen": pipe.meta.get("images_seen"),
        "fd": r["fd"],
        "precision": r["precision"],
        "recall": r["recall"],
        "n": n,
        "seed": seed,
        "n_reference": r["n_real"],
        "feature_net_hash": r["feature_net_hash"],
    }


def curve(args) -> None:
    real = real_images()
    files = sorted(Path(args.history).glob("model-*.safetensors"))
    if args.every:  # the steps a rule names, not an even spread
        files = [p for p in files if int(p.stem.split("-")[1]) % args.every == 0]
    else:
        files = files[:: max(1, len(files) // args.points)] + files[-1:] if files else []
    out = CURVES / f"{args.name}.json"
    before = json.loads(out.read_text()) if args.reuse and out.exists() else {}
    done = scored(before, args)
    rows = [done.get(p.name) or measure(p, real, args.n, args.seed) for p in dict.fromkeys(files)]
    rows = with_rotated_out(rows, done, args.every)
    for r in rows:
        print(
            f"step {r['step']:6d}  {r['train_minutes']:6.1f} min  FD {r['fd']:.2f}  "
            f"P {r['precision']:.3f}  R {r['recall']:.3f}"
        )
    if args.validation:  # kept beside the reported rows, only for the shipping choice
        if not out.exists():
            raise SystemExit(f"{out} does not exist: run the reported-seed curve first")
        result = json.loads(out.read_text())
        result["validation_rows"] = rows
        out.write_text(json.dumps(result, indent=2))
        return report()
    result = {
        "rows": rows,
        "floor": floor(real),
        "commit": commit(),
        "machine": machine(),
        "command": f"python benchmarks/pretrained_quality.py curve --history {args.history} "
        f"--n {args.n} --points {args.points} --every {args.every} --seed {args.seed}",
    }
    result.update(name=args.name, recipe=args.recipe or "")
    for key in ("validation_rows", "choice_rows", "choice_command"):
        if key in before:  # --reuse: the same run, its scores on other seeds hold
            result[key] = before[key]
    CURVES.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    report()


def with_rotated_out(rows: list[dict], done: dict[str, dict], every: int) -> list[dict]:
    """``rows`` plus the earlier rows (``--reuse``) whose checkpoint files are gone: a run's
    ``keep`` deletes its oldest checkpoints, and their scores must not leave the curve."""
    present = {x["checkpoint"] for x in rows}
    gone = [
        x for x in done.values() if x["checkpoint"] not in present and x["step"] % (every or 1) == 0
    ]
    return sorted(gone + rows, key=lambda x: x["step"])


def scored(before: dict, args) -> dict[str, dict]:
    """Rows of the run's earlier curve file for the same seeds and n, by checkpoint file
    name: a run's checkpoints do not change once written, and CPU sampling is deterministic."""
    rows = before.get("validation_rows" if args.validation else "rows", [])
    return {x["checkpoint"]: x for x in rows if (x["n"], x["seed"]) == (args.n, args.seed)}


def report() -> None:
    curves = {p.stem: json.loads(p.read_text()) for p in sorted(CURVES.glob("*.json"))}
    shipped = curves.pop(SHIPPED)
    write_markdown(shipped, curves)
    plot(shipped, curves)


def write_markdown(shipped: dict, others: dict) -> None:
    fl = shipped["floor"]
    n = shipped["rows"][0]["n"]
    lines = [
        "# The shipped emoji32 UDPM model: quality against training time",
        "",
        f"FD, precision and recall (k = 3) of {n} samples (seeds 0..{n - 1}) against all "
        "3,781 emoji32 images, in the shipped emoji32 feature network (never a training "
        "signal). Training ran on the same 2-core CPU, sometimes next to other jobs, so "
        "minutes are an upper bound on what an idle machine needs. Every run trained is "
        "listed; `python benchmarks/pretrained_quality.py report` rebuilds this page.",
        "",
        SHIPPING_RULE,
        "",
    ]
    for name, r in {SHIPPED: shipped, **others}.items():
        lines += [
            f"## {section_title(name, r)}",
            "",
            f"`{r['command']}` at commit `{r['commit']}`.",
        ]
        lines += ["", f"Recipe: {r['recipe']}", ""] if r.get("recipe") else [""]
        lines += [*curve_table(r["rows"], fl["fd"]), ""]
        rule = [LONG_RULE, ""] if name == LONG else []
        rule += [EQUAL_STEP_RULES[name], ""] if name in EQUAL_STEP_RULES else []
        rule += [COST_RULES[name], ""] if name in COST_RULES else []
        if r.get("validation_rows"):
            lines += [*rule, *validation_table(r["validation_rows"])]
            lines += [*choice_table(r), verdict(r), ""]
        elif name not in PREVIOUS:
            lines += [*rule, verdict(r), ""]
    lines += [
        f"Floor: FD between two random halves of emoji32 ({fl['n']} vs "
        f"{fl['n_reference']} images) is **{fl['fd']:.2f}** (precision "
        f"{fl['precision']:.3f}, recall {fl['recall']:.3f}).",
        "",
    ]
    (HERE / "PRETRAINED.md").write_text("\n".join(lines))


def section_title(name: str, r: dict) -> str:
    if name == SHIPPED:
        # Between a reported-seed curve and its validation scores the choice is not made yet.
        step = msb_chosen(r)["step"] if r.get("validation_rows") else r["rows"][-1]["step"]
        return f"Shipped: {name}, step {step:,}"
    if name in PREVIOUS:
        return f"Shipped before: {name} ({PREVIOUS[name]})"
    return f"Retrain candidate: {name}"


def validation_table(checked: list[dict]) -> list[str]:
    """The validation-seed scores the rule chose by, beside the reported ones above."""
    first = checked[0]["seed"]
    lines = [
        f"Validation seeds {first}..{first + checked[0]['n'] - 1} (used only to choose):",
        "",
        "| step | FD ↓ | precision | recall |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {x['step']} | {x['fd']:.2f} | {x['precision']:.3f} | {x['recall']:.3f} |"
        for x in checked
    ]
    return [*lines, ""]


def choice_table(r: dict) -> list[str]:
    """The ninth revision's means over fresh seed sets, once they are all scored."""
    means = choice_means(r)
    if not means:
        return []
    lines = [
        f"Fresh seed sets {CHOICE_SEEDS[0]}, {CHOICE_SEEDS[1]}, … ({len(CHOICE_SEEDS)} sets of "
        "n = 2,000; mean ± sd over the sets; used only to choose, since the ninth revision):",
        "",
        "| step | FD ↓ | precision | recall | target ratio |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {x['step']} | {x['fd']:.2f} ± {x['fd_sd']:.2f} | {x['precision']:.3f} | "
        f"{x['recall']:.3f} ± {x['recall_sd']:.3f} | {target_gap(x, r['floor']['fd']):.3f} |"
        for x in means
    ]
    return [*lines, ""]


def choose(args) -> None:
    """Score the ninth revision's candidates on its seed sets, saving after each one, so an
    interrupted run resumes where it stopped."""
    from udpm.checkpoint import atomic_write

    out = CURVES / f"{SHIPPED}.json"
    result = json.loads(out.read_text())
    rows = result.setdefault("choice_rows", [])
    done = {(x["step"], x["seed"]) for x in rows}
    real = real_images()
    result["choice_command"] = (
        f"python benchmarks/pretrained_quality.py choose --history {args.history}"
    )
    for step in CHOICE_STEPS:
        path = Path(args.history) / f"model-{step:07d}.safetensors"
        todo = [seed for seed in CHOICE_SEEDS if (step, seed) not in done]
        if todo and not path.exists():
            raise SystemExit(f"{path} does not exist: the choice needs every candidate")
        for seed in todo:
            rows.append(measure(path, real, 2000, seed))
            print(f"step {step}  seed {seed}  FD {rows[-1]['fd']:.2f}  R {rows[-1]['recall']:.3f}")
        # A committed results file is never left half written by an interrupted run.
        text = json.dumps(result, indent=2)
        atomic_write(out, lambda tmp, text=text: Path(tmp).write_text(text))
    report()


def curve_table(rows: list[dict], floor_fd: float) -> list[str]:
    lines = [
        "| step | training minutes | images seen | FD ↓ | FD / floor | precision | recall |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['step']} | {r['train_minutes']} | {r['images_seen']} | "
            f"{r['fd']:.2f} | {r['fd'] / floor_fd:.1f} | {r['precision']:.3f} | "
            f"{r['recall']:.3f} |"
        )
    return lines


def plot(shipped: dict, others: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    curves = [(f"{SHIPPED} (shipped)", shipped, "s-")] + [
        (f"{name} (shipped before)" if name in PREVIOUS else name, r, "o--")
        for name, r in others.items()
    ]
    for label, r, style in curves:
        minutes = [x["train_minutes"] for x in r["rows"]]
        axes[0].plot(minutes, [x["fd"] for x in r["rows"]], style, label=label)
        axes[1].plot(minutes, [x["recall"] for x in r["rows"]], style, label=label)
    axes[0].axhline(shipped["floor"]["fd"], ls=":", color="grey", label="floor (half vs half)")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("FD, emoji32 features (log)")
    axes[1].set_ylabel("recall (k = 3)")
    for ax in axes:
        ax.set_xlabel("training minutes (2-core CPU)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(HERE / "pretrained_quality.png", dpi=120)
    plt.close(fig)


def export(args) -> None:
    from udpm.checkpoint import load_model, save_model

    state, meta = load_model(Path(args.checkpoint))
    meta["exported_from"] = Path(args.checkpoint).name
    ASSET.parent.mkdir(parents=True, exist_ok=True)
    save_model(ASSET, state, meta, half=True)
    print(f"wrote {ASSET} ({ASSET.stat().st_size / 1e6:.1f} MB, step {meta['step']})")


def commit() -> str:
    try:
        return subprocess.check_output(
            ["git", "rev-parse", "--short", "HEAD"], cwd=HERE, text=True
        ).strip()
    except Exception:
        return "unknown"


def machine() -> str:
    return f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("stage", choices=["curve", "report", "export", "choose"])
    p.add_argument("--history", default="runs/emoji32_history", help="folder of model files")
    p.add_argument("--checkpoint", help="export: the model file to ship")
    p.add_argument("--n", type=int, default=2000, help="samples per checkpoint")
    p.add_argument("--points", type=int, default=8, help="checkpoints on the curve")
    p.add_argument("--recipe", help="curve: one line naming the run's recipe, for the report")
    p.add_argument("--name", default=SHIPPED, help="curve: the run's name in pretrained_curves/")
    p.add_argument("--every", type=int, default=0, help="curve: every checkpoint at this spacing")
    p.add_argument("--seed", type=int, default=0, help="curve: first sampling seed")
    p.add_argument("--reuse", action="store_true",
                   help="curve: keep rows scored before (same files, n, seeds)")  # fmt: skip
    p.add_argument("--validation", action="store_true",
                   help="curve: store as the validation scores (the choice)")  # fmt: skip
    args = p.parse_args()
    stages = {"curve": curve, "report": lambda _: report(), "export": export, "choose": choose}
    stages[args.stage](args)


if __name__ == "__main__":
    main()
