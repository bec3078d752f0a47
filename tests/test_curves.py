"""The learning-curve benchmark: its README table, its missing-row list and its FLOP counter."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def curves():
    return _load("curves")


@pytest.fixture(scope="module")
def report(curves):
    return _load("curves_report")


def test_readme_curves_table_is_the_curves_file(report):
    result = json.loads((ROOT / "benchmarks" / "curves.json").read_text())
    readme = (ROOT / "README.md").read_text()
    block = readme.split(report.START, 1)[1].split(report.END, 1)[0].strip("\n")
    expected = report.readme_table(
        result["rows"], result["floors"], result["points"], result["split_floor"]
    )
    assert block.splitlines() == expected
    for name, *_ in report.ROWS:  # every row of the protocol, measured or not
        assert f"| {name} |" in block


def test_missing_lists_every_unmeasured_pair(curves, report):
    args = type("Args", (), {"points": [15.0, 45.0]})()
    rows = [{"row": "udpm-exact", "point_minutes": 15.0}]
    gaps = report.missing(rows, args)
    assert "udpm-exact @ 15 min" not in gaps
    assert "udpm-exact @ 45 min" in gaps
    assert len(gaps) == 2 * len(curves.ROWS) - 1


def test_a_small_n_row_is_set_beside_rows_scored_at_its_n_only(report, tmp_path, monkeypatch):
    def row(name, n, fd):
        return {"row": name, "n": n, "fd": fd, "kid_mean": 0.0, "precision": 0.5,
                "recall": 0.5, "point_minutes": 45.0}  # fmt: skip

    (tmp_path / "same-n").mkdir()
    extra = row("udpm-exact", 200, 10.5)
    (tmp_path / "same-n" / "row-udpm-exact@45-n200.json").write_text(json.dumps(extra))
    monkeypatch.setattr(report, "CURVES", tmp_path)
    rows = [row("ddpm-ancestral-1000", 200, 7.8), row("udpm-exact", 2000, 11.1)]
    lines = report.same_n_lines(rows, {200: {"fd": 1.0, "recall": 0.9}})
    table = [line for line in lines if line.startswith("| ") and "FD" not in line]
    assert [line.split(" | ")[2] for line in table] == ["10.50", "7.80"]  # ROWS order, n = 200
    assert any("Floor at n = 200: FD 1.00" in line for line in lines)
    assert "11.10" not in "\n".join(lines)  # the n = 2,000 row stays out


def _method(preset, **sets):
    from udpm.config import preset_config
    from udpm.config.overrides import apply_overrides
    from udpm.methods import get_method

    config = apply_overrides(preset_config(preset), [f"{k}={v}" for k, v in sets.items()])
    torch.manual_seed(0)
    return get_method(config.method)(config, "cpu")


def test_flop_count_matches_torch_counter_and_survives_r1(curves):
    x0 = torch.rand(4, 3, 32, 32) * 2 - 1
    ddpm = _method("emoji32-cpu-ddpm")
    with FlopCounterMode(display=False) as reference:
        ddpm.step(x0, None, 0)
    with curves.FlopCount() as mine:
        ddpm.step(x0, None, 1)
    assert mine.total == reference.get_total_flops() > 0

    counts = {}
    for r1 in ("[0.0,0.0,0.0]", "[1.0,1.0,1.0]"):
        udpm_method = _method("emoji32-cpu", r1=r1)
        udpm_method.draw_level = lambda: 1
        with curves.FlopCount() as c:  # torch's own counter refuses R1's autograd.grad
            udpm_method.step(x0, None, 0)
        counts[r1] = c.total
    assert counts["[1.0,1.0,1.0]"] > counts["[0.0,0.0,0.0]"] > 0  # R1's double backward counted


def test_long_candidate_ships_by_validation_seeds_not_by_reported_ones():
    """The choice reads the validation rows; the reported row of that step decides."""
    pq = _load("pretrained_quality")

    def rows(fds):
        return [{"step": s, "fd": fd} for s, fd in zip((35_000, 37_500, 40_000), fds)]

    run = {"name": pq.LONG, "validation_rows": rows([12.0, 9.0, 11.0]),
           "rows": rows([8.0, 14.0, 7.0])}  # fmt: skip
    assert "step 37500" in pq.verdict(run) and ": shipped" in pq.verdict(run)
    run["rows"] = rows([8.0, 16.0, 7.0])  # the chosen step's reported FD is above 15.42
    assert "not shipped" in pq.verdict(run)
    run["validation_rows"] = run["validation_rows"][:2]  # not scored up to 40,000 yet
    assert "no verdict" in pq.verdict(run)
    # A user's own retrain with validation rows is judged the same way, whatever its name.
    mine = {"name": "mine", "validation_rows": rows([12.0, 9.0, 11.0]),
            "rows": rows([8.0, 14.0, 7.0])}  # fmt: skip
    assert "step 37500" in pq.verdict(mine)


def test_reused_curve_keeps_the_rows_of_checkpoints_the_run_rotated_out():
    """``curve --reuse`` after ``keep`` deleted a run's oldest checkpoints: their earlier
    scores stay, in step order, and only steps on the ``--every`` spacing come back."""
    pq = _load("pretrained_quality")

    def row(step):
        return {"step": step, "checkpoint": f"model-{step:07d}.safetensors", "fd": 1.0}

    done = {x["checkpoint"]: x for x in map(row, (2500, 3000, 5000, 7500))}
    rows = [row(7500), row(10000)]  # the files still there, 7,500 reused, 10,000 new
    merged = pq.with_rotated_out(rows, done, every=2500)
    assert [x["step"] for x in merged] == [2500, 5000, 7500, 10000]  # 3,000 is off-spacing
    assert [x["step"] for x in pq.with_rotated_out(rows, {}, 2500)] == [7500, 10000]
    assert len(pq.with_rotated_out(rows, done, every=0)) == 5  # no spacing: every row


def test_shipped_run_chooses_the_checkpoint_nearest_both_targets():
    """Since its fourth extension the shipped run's rule weighs FD against 5 × floor and
    recall against 0.5, taking the worse ratio: neither target alone decides."""
    pq = _load("pretrained_quality")

    def row(step, fd, recall):
        return {"step": step, "fd": fd, "precision": 0.7, "recall": recall}

    # floor 0.4: FD 2.0 is exactly 5× the floor, recall 0.5 exactly the target.
    val = [row(1, 2.0, 0.25), row(2, 3.0, 0.5), row(3, 2.2, 0.45)]  # ratios 2.0, 1.5, 1.11
    run = {"name": pq.MSB, "floor": {"fd": 0.4}, "validation_rows": val,
           "rows": [row(s, 9.0, 0.1) for s in (1, 2, 3)]}  # fmt: skip
    assert pq.msb_chosen(run)["step"] == 3  # neither the lowest FD (1) nor the best recall (2)
    assert pq.target_gap(row(4, 2.0, 0.5), 0.4) == pytest.approx(1.0)  # both met, just
    assert pq.target_gap(row(5, 1.0, 0.0), 0.4) == float("inf")  # no recall, never chosen
    assert "step 3 is nearest the targets" in pq.msb_ship_verdict(run)
    assert "Shipped: 0.1.0+msb+nodrop, step 3" == pq.section_title(pq.SHIPPED, run)


def test_ninth_revision_chooses_by_the_means_over_fresh_seed_sets_once_all_are_scored():
    """One validation set picks step A; the means over the fresh sets pick step B. Until
    every candidate has every set, the validation choice stands."""
    pq = _load("pretrained_quality")
    a, b = pq.CHOICE_STEPS[0], pq.CHOICE_STEPS[-1]

    def row(step, fd, recall, seed=0):
        ck = f"model-{step:07d}.safetensors"
        return {"step": step, "checkpoint": ck, "fd": fd, "precision": 0.7, "recall": recall,
                "seed": seed}  # fmt: skip

    val = [row(a, 1.8, 0.53), row(b, 1.5, 0.51)]  # ratios 0.94 and 0.98 at floor 0.4: A
    run = {"name": pq.MSB, "floor": {"fd": 0.4}, "validation_rows": val,
           "rows": [row(a, 1.6, 0.49), row(b, 1.5, 0.52)], "choice_rows": []}  # fmt: skip
    for s in pq.CHOICE_STEPS:
        for i, seed in enumerate(pq.CHOICE_SEEDS):
            recall = (0.52 if s == b else 0.48) + (0.01 if i % 2 else -0.01)  # B: mean 0.52
            run["choice_rows"].append(row(s, 1.7, recall, seed))
    assert pq.msb_chosen(run)["step"] == b
    best = pq.msb_chosen(run)
    assert best["recall"] == pytest.approx(0.52) and best["sets"] == len(pq.CHOICE_SEEDS)
    assert best["recall_sd"] == pytest.approx(
        0.01 * (len(pq.CHOICE_SEEDS) / (len(pq.CHOICE_SEEDS) - 1)) ** 0.5
    )
    assert "fresh seed sets" in pq.msb_ship_verdict(run)
    assert "reported FD 1.50" in pq.msb_ship_verdict(run)  # B's reported row is quoted
    run["choice_rows"].pop()  # one set of one candidate missing: no half-scored choice
    assert pq.msb_chosen(run)["step"] == a


@pytest.mark.parametrize("name", ["0.1.0+ms", "0.1.0+msb+nodrop"])
def test_mode_seeking_run_joins_the_preset_only_past_both_baselines(name):
    """The rule reads the two committed baseline curves at their named steps."""
    pq = _load("pretrained_quality")
    assert name in pq.EQUAL_STEP_RULES
    base = [
        next(x for x in json.loads((pq.CURVES / f"{n}.json").read_text())["rows"] if x["step"] == s)
        for n, s in pq.MS_BASELINES.items()
    ]
    best_recall, worse_fd = max(b["recall"] for b in base), max(b["fd"] for b in base)

    def run(fd, recall):
        return {"name": name, "rows": [{"step": 12500, "fd": fd, "recall": recall}]}

    assert "joins the preset" in pq.verdict(run(worse_fd, best_recall + 0.06))
    assert "does not join" in pq.verdict(run(worse_fd, best_recall + 0.04))
    assert "does not join" in pq.verdict(run(worse_fd + 0.1, best_recall + 0.2))
    assert "no verdict" in pq.verdict({"name": name, "rows": [{"step": 10000}]})


@pytest.mark.parametrize("name", ["0.1.0+msb+nodrop+lazy", "0.1.0+msb+nodrop+lw"])
def test_a_cheaper_step_keeps_the_quality_only_within_both_margins(name):
    """Each rule reads the shipped run's committed curve at its own steps (5,000 and 7,500),
    and the candidate's at its own (equal steps for lazy R1, equal time for the level draws)."""
    pq = _load("pretrained_quality")
    mine_steps, base_steps = pq.COST_TESTS[name]
    base = [
        x
        for x in json.loads((pq.CURVES / f"{pq.MSB}.json").read_text())["rows"]
        if x["step"] in base_steps
    ]
    fd = sum(x["fd"] for x in base) / 2
    recall = sum(x["recall"] for x in base) / 2

    def run(fds, recalls):
        rows = [{"step": s, "fd": f, "recall": r} for s, f, r in zip(mine_steps, fds, recalls)]
        return {"name": name, "rows": rows}

    # The means are judged, not each step: one step far above the bar, the other below it.
    assert "keeps the quality" in pq.verdict(run([fd, 1.28 * fd], [recall, recall - 0.05]))
    assert "does not keep" in pq.verdict(run([1.2 * fd, 1.2 * fd], [recall, recall]))
    assert "does not keep" in pq.verdict(run([fd, fd], [recall - 0.04, recall - 0.04]))
    assert "no verdict" in pq.verdict({"name": name, "rows": [{"step": mine_steps[0]}]})
    if mine_steps != base_steps:  # the shipped run's steps are not the candidate's
        rows = [{"step": s, "fd": fd, "recall": recall} for s in base_steps]
        assert "no verdict" in pq.verdict({"name": name, "rows": rows})


def test_whole_step_weighs_levels_as_drawn():
    ts = _load("train_speed")
    levels = {1: 60.0, 2: 140.0, 3: 210.0}
    uniform = ts.whole_step(levels, None)
    assert uniform == pytest.approx(3 / sum(1 / r for r in levels.values()))
    assert ts.whole_step(levels, [1, 1, 1]) == pytest.approx(uniform)
    assert ts.whole_step(levels, [0.0, 0.0, 2.0]) == pytest.approx(210.0)  # only level 3
    assert ts.whole_step(levels, [0.1, 0.3, 0.6]) > uniform  # the dear level drawn less


def test_time_to_quality_reads_first_and_sustained_steps():
    ttq = _load("time_to_quality")
    rows = [
        {"step": s, "fd": f, "recall": r}
        for s, f, r in [(1, 9.0, 0.1), (2, 4.0, 0.3), (3, 6.0, 0.3), (4, 4.0, 0.3), (5, 3.0, 0.4)]
    ]
    assert ttq.reached(rows, fd=5.0, recall=0.25) == (2, 4)  # step 3 breaks the run of passes
    assert ttq.reached(rows, fd=5.0, recall=0.35) == (5, 5)
    assert ttq.reached(rows[:3], fd=5.0, recall=0.25) == (2, None)  # the last one fails
    assert ttq.reached(rows, fd=1.0, recall=0.0) == (None, None)


def test_time_to_quality_speedup_is_reference_first_over_candidate_sustained():
    ttq = _load("time_to_quality")

    def curve(points):
        return {"rows": [{"step": s, "fd": f, "recall": r} for s, f, r in points]}

    curves = {
        "0.1.0": curve([(6500, 20.0, 0.1), (13000, 15.0, 0.25)]),
        "long": curve([(15000, 9.0, 0.25), (30000, 6.0, 0.25), (40000, 9.0, 0.25)]),
        "new": curve([(5000, 5.0, 0.3), (7500, 8.0, 0.2), (10000, 5.0, 0.3)]),
    }
    speed = {
        "batch_size": 32,
        "variants": {
            "0.1.0": {"whole_step_images_per_s": 100.0},
            "new": {"whole_step_images_per_s": 200.0},
        },
    }
    out = ttq.measure(curves, speed)
    new = next(r for r in out["long"]["rows"] if r["run"] == "new")
    # `long` (the 0.1.0 recipe's rate) first at 30,000; `new` sustained from 10,000 at 2x.
    assert (new["first"], new["sustained"]) == (5000, 10000)
    assert new["speedup"] == pytest.approx((30000 / 100) / (10000 / 200))
    assert next(r for r in out["long"]["rows"] if r["run"] == "long")["speedup"] is None


def test_seed_spread_counts_the_sets_that_meet_both_targets():
    """A set counts only if its FD is at most 5 × floor and its recall at least 0.5."""
    spread = _load("seed_spread")

    def row(fd, recall):
        return {"fd": fd, "precision": 0.7, "recall": recall}

    r = {"command": "c", "commit": "x", "machine": "m", "n": 2000, "seeds": [1, 2, 3],
         "floor_fd": 0.4,  # bar 2.0
         "models": {"m": [row(2.0, 0.5), row(2.1, 0.6), row(1.0, 0.49)]}}  # fmt: skip
    line = next(x for x in spread.markdown(r) if x.startswith("| m |"))
    assert line.endswith("| 1 of 3 |")
    assert "0.530 ± 0.061" in line  # recall mean ± sample sd


def test_speed_bounds_remove_the_part_they_name():
    """``train_speed.py --bounds``: `no-adv` has no D and no adversarial term, `no-r1` keeps
    D's step with R1's weight 0."""
    ts = _load("train_speed")
    small = ["batch_size=4"]
    _, full = ts.build("emoji32-cpu", small)
    _, no_adv = ts.build("emoji32-cpu", small + ts.BOUNDS["no-adv"])
    _, no_r1 = ts.build("emoji32-cpu", small + ts.BOUNDS["no-r1"])
    assert list(no_r1.settings.r1) == [0.0, 0.0, 0.0] and max(full.settings.r1) > 0
    x0 = torch.rand(4, 3, 32, 32) * 2 - 1
    for method in (full, no_adv):
        method.draw_level = lambda: 1  # level 1 has an L1 term, so G has a loss without D
    assert "D" not in no_adv.modules  # no D is built at all, so none is stepped
    logs = no_adv.step(x0, None, 0)
    assert "loss_d" not in logs and "adv_g" not in logs and "l1" in logs
    assert "loss_d" in full.step(x0, None, 0)
