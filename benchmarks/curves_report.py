"""The learning curves' report: ``CURVES.md``, ``curves.json``, ``curves.png`` and the
README's table, from the rows ``curves.py eval`` wrote (``python benchmarks/curves.py report``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import curves
from curves import CURVES, HERE, ROWS, floor


def report_stage(args) -> None:
    rows = [json.loads(p.read_text()) for p in sorted(CURVES.glob("row-*@*.json"))]
    if not rows:
        sys.exit(f"no rows in {CURVES}: run the eval stage first")
    floors = {n: floor(n) for n in sorted({r["n"] for r in rows})}
    split = split_floor()
    order = [r[0] for r in ROWS]
    rows.sort(key=lambda r: (order.index(r["row"]), r["point_minutes"]))
    units = cost_units()
    lines = markdown(rows, floors, units, args) + split_floor_lines(split)
    reading = HERE / "curves_reading.md"  # hand-written, kept beside the generated tables
    if reading.exists():
        lines += ["", reading.read_text().rstrip()]
    (HERE / "CURVES.md").write_text("\n".join(lines) + "\n")
    result = {"rows": rows, "floors": floors, "split_floor": split, "points": args.points,
              "cost_units": units,
              "missing": missing(rows, args), "same_n": same_n_rows()}  # fmt: skip
    (HERE / "curves.json").write_text(json.dumps(result, indent=2))
    plot(rows, split, HERE / "curves.png")
    update_readme(rows, floors, args, split)
    print("\n".join(lines))


def split_floor() -> dict:
    """Data against *other* data: one half of emoji32 (seeded permutation) against the other,
    the floor ``PRETRAINED.md`` uses. The same-reference floor above shares its images with
    the reference, so it is lower than any model could score; this one is what a perfect
    model's fresh samples would score at n ≈ 1,890."""
    from pretrained_quality import floor as halves

    return halves(curves.real_images())


def split_floor_lines(f: dict) -> list[str]:
    return [
        "",
        f"Floor with disjoint images (one half of emoji32, n = {f['n']}, against the other "
        f"{f['n_reference']}): FD {f['fd']:.2f}, precision {f['precision']:.3f}, "
        f"recall {f['recall']:.3f}. The floor above shares its n images with the reference "
        "and is therefore lower than any model can reach; this one is the realistic target.",
    ]


def missing(rows, args) -> list[str]:
    """Every (row, point) of the protocol without a result yet: listed, never silently absent."""
    have = {(r["row"], r["point_minutes"]) for r in rows}
    return [f"{name} @ {m:g} min" for name, *_ in ROWS for m in args.points
            if (name, m) not in have]  # fmt: skip


def protocol_lines() -> list[str]:
    """The protocol, written once: the bullet list of ``curves.py``'s docstring."""
    doc = curves.__doc__.split("at the top of ``CURVES.md``):", 1)[1]
    return [line.removeprefix("    ") if line.strip() else "" for line in
            doc.split("On a GPU")[0].strip("\n").splitlines()]  # fmt: skip


def markdown(rows, floors, units, args) -> list[str]:
    lines = [
        "# Learning curves on emoji32 (every system, equal wall clock)",
        "",
        f"`python benchmarks/curves.py all --budget {args.budget:g} --points "
        f"{','.join(f'{m:g}' for m in args.points)}` then `report`, on "
        f"{'; '.join(sorted({r['machine'] for r in rows}))}, no GPU. "
        "Every row is listed, none dropped.",
        "",
        "## Protocol",
        "",
        *protocol_lines(),
        "",
        "## Rows",
        "",
        "| row | at (min) | steps | images seen | train img/s | train GFLOPs/img | NFE "
        "| GFLOPs/img | ms/img b1 | ms/img b64 | FD ↓ | KID×1e3 ↓ | precision | recall "
        "| bpd ↓ | n | seeds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        # Throughput of the network this row trained: LDM's clock also holds its autoencoder.
        seconds = max((r["train_minutes"] - r.get("autoencoder_minutes", 0.0)) * 60, 1e-9)
        bpd = f"{r['bpd']:.3f} ± {r['bpd_stderr']:.3f}" if r.get("bpd") is not None else "—"
        lines.append(
            f"| {r['row']} | {r['point_minutes']:g} | {r['train_steps']} | {r['images_seen']} "
            f"| {r['images_seen'] / seconds:.0f} | {r.get('train_flops_per_image', 0) / 1e9:.2f} "
            f"| {r['nfe']} | {r['flops_per_image'] / 1e9:.2f} | {r['ms_per_image_batch1']:.1f} "
            f"| {r['ms_per_image_batch64']:.1f} | {r['fd']:.2f} | {r['kid_mean'] * 1e3:.1f} "
            f"| {r['precision']:.3f} | {r['recall']:.3f} | {bpd} | {r['n']} | {len(r['seeds'])} |"
        )
    lines.append("")
    for n, f in floors.items():
        lines.append(
            f"Floor at n = {n} (data against the same reference): FD {f['fd']:.2f}, "
            f"KID×1e3 {f['kid_mean'] * 1e3:.1f}, precision {f['precision']:.3f}, "
            f"recall {f['recall']:.3f}."
        )
    few = sorted({r["row"] for r in rows if r.get("timing_repeats", 3) < 3})
    if few:  # a 1000-call chain at batch 64 is minutes per repeat on a CPU
        lines.append(f"Timed with one repeat per batch (others: median of 3): {', '.join(few)}.")
    if any("autoencoder_minutes" in r for r in rows):
        lines.append(
            "Train img/s of a latent-diffusion row is its second stage's own (images seen over "
            "the minutes after the autoencoder's); its `at` minutes count both stages."
        )
    gaps = missing(rows, args)
    if gaps:
        lines += ["", f"Not measured yet ({len(gaps)}): " + ", ".join(gaps) + "."]
    return lines + same_n_lines(rows, floors) + ["", *units_markdown(units), "",
                                                 *latency_lines(rows)]  # fmt: skip


def same_n_rows() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((CURVES / "same-n").glob("row-*.json"))]


def same_n_lines(rows, floors) -> list[str]:
    """Rows scored again at a smaller row's n (``curves.py same-n``), beside that row."""
    extra = same_n_rows()
    lines = []
    for n in sorted({r["n"] for r in extra}):
        order = [name for name, *_ in ROWS]
        mine = [r for r in rows if r["n"] == n] + [r for r in extra if r["n"] == n]
        mine.sort(key=lambda r: order.index(r["row"]))
        lines += [
            "",
            f"## At n = {n}, beside the row measured there",
            "",
            "At small n both FD and recall are biased upwards, so a row measured at n = "
            f"{n} compares only with rows scored at the same n: `python benchmarks/curves.py "
            f"same-n --n {n} --rows ...` (seeds 0..{n - 1}, the last point, untimed).",
            "",
            "| row | at (min) | FD ↓ | KID×1e3 ↓ | precision | recall | n |",
            "|---|---|---|---|---|---|---|",
            *(
                f"| {r['row']} | {r['point_minutes']:g} | {r['fd']:.2f} | "
                f"{r['kid_mean'] * 1e3:.1f} | {r['precision']:.3f} | {r['recall']:.3f} | {n} |"
                for r in mine
            ),  # fmt: skip
        ]
        if n in floors:
            f = floors[n]
            lines += ["", f"Floor at n = {n}: FD {f['fd']:.2f}, recall {f['recall']:.3f}."]
    return lines


def cost_units() -> dict:
    """A UDPM sample's FLOPs in units of one network call of each baseline's own paper-sized
    network (random weights; FLOPs do not depend on them). Cached in ``cost-units.json``."""
    cache = CURVES / "cost-units.json"
    if cache.exists():
        return json.loads(cache.read_text())
    from udpm.eval.presets import preset_pipeline
    from udpm.eval.speed import full_resolution_pass_flops, sampling_flops

    pairs = {
        "cifar10": ["cifar10-ddpm", "cifar10-ddgan", "cifar10-vdm"],
        "emoji32-cpu": ["emoji32-cpu-ddpm", "emoji32-cpu-ddgan", "emoji32-cpu-vdm"],
    }
    units = {}
    for udpm_preset, baselines in pairs.items():
        flops, nfe = sampling_flops(preset_pipeline(udpm_preset, "cpu"))
        for b in baselines:
            call = full_resolution_pass_flops(preset_pipeline(b, "cpu"))
            units[f"{udpm_preset} vs {b}"] = {"udpm_flops": flops, "udpm_nfe": nfe,
                                              "baseline_call_flops": call}  # fmt: skip
    cache.write_text(json.dumps(units, indent=2))
    return units


def units_markdown(units: dict) -> list[str]:
    lines = [
        "## A UDPM sample in each baseline's network calls (FLOPs, random weights)",
        "",
        "| UDPM preset vs baseline preset | UDPM sample (3 calls) | one baseline call "
        "| UDPM sample = baseline calls |",
        "|---|---|---|---|",
    ]
    for pair, u in units.items():
        ratio = u["udpm_flops"] / u["baseline_call_flops"]
        lines.append(
            f"| {pair} | {u['udpm_flops'] / 1e9:.2f} G | {u['baseline_call_flops'] / 1e9:.2f} G "
            f"| **{ratio:.2f}** |"
        )
    return lines


def latency_lines(rows) -> list[str]:
    """Batch-1 latency of a UDPM sample against one step of each multi-step row (same run)."""
    udpm_rows = [r for r in rows if r["row"] == "udpm-exact"]
    if not udpm_rows:
        return []
    u = udpm_rows[-1]
    lines = [
        "## Batch-1 latency: a UDPM sample against one step of the others",
        "",
        f"udpm-exact @ {u['point_minutes']:g} min: {u['ms_per_image_batch1']:.1f} ms per image "
        "at batch 1 (what an interactive user waits).",
        "",
        "| row | ms per image, batch 1 | ms per network call | UDPM sample = calls |",
        "|---|---|---|---|",
    ]
    for r in rows:
        if r["row"].startswith("udpm") or r["point_minutes"] != u["point_minutes"]:
            continue
        per_call = r["ms_per_image_batch1"] / r["nfe"]
        lines.append(
            f"| {r['row']} | {r['ms_per_image_batch1']:.1f} | {per_call:.1f} "
            f"| {u['ms_per_image_batch1'] / per_call:.2f} |"
        )
    return lines


README = HERE.parent / "README.md"
START, END = (
    "<!-- curves-table: generated by benchmarks/curves.py report -->",
    "<!-- /curves-table -->",
)


def readme_table(rows, floors, points, split=None) -> list[str]:
    """The README's summary: every row of the protocol at its first and last point, none
    dropped (a row not measured yet says so), from ``curves.json``."""
    first, last = min(points), max(points)
    table = [
        f"| row | NFE | GFLOPs/image | ms/image (b1) | FD ↓ @ {first:g} min "
        f"| FD ↓ @ {last:g} min | precision @ {last:g} | recall @ {last:g} | n |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    by = {(r["row"], r["point_minutes"]): r for r in rows}
    for name, *_ in ROWS:
        ends = [by.get((name, m)) for m in (first, last)]
        ref = ends[1] or ends[0]
        if ref is None:
            table.append(f"| {name} | not measured yet | | | | | | | |")
            continue
        fd = [f"{x['fd']:.1f}" if x else "—" for x in ends]
        pr = [f"{ends[1][k]:.2f}" if ends[1] else "—" for k in ("precision", "recall")]
        table.append(
            f"| {name} | {ref['nfe']} | {ref['flops_per_image'] / 1e9:.2f} "
            f"| {ref['ms_per_image_batch1']:.1f} | {fd[0]} | {fd[1]} | {pr[0]} | {pr[1]} "
            f"| {ref['n']} |"
        )
    floor_lines = [f"n = {n}: FD {f['fd']:.2f}" for n, f in floors.items()]
    lines = [*table, "", f"Floor (data against the same reference, which holds those images): "
             f"{'; '.join(floor_lines)}."]  # fmt: skip
    if split:
        lines[-1] += (f" With disjoint images (half of emoji32 against the other half, n = "
                      f"{split['n']}): FD {split['fd']:.2f}.")  # fmt: skip
    return lines


def update_readme(rows, floors, args, split) -> None:
    text = README.read_text()
    if START not in text or END not in text:
        sys.exit(f"{README} has no {START} ... {END} block")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    block = [START, *readme_table(rows, floors, args.points, split), END]
    README.write_text(head + "\n".join(block) + tail)


def plot(rows, split: dict, path: Path) -> None:
    """FD against training minutes per row; FD against FLOPs per image at the last point,
    recall written beside each; the dotted line is the disjoint-images floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    placed: list[tuple[float, float]] = []
    for name in dict.fromkeys(r["row"] for r in rows):
        mine = [r for r in rows if r["row"] == name]
        a.plot([r["train_minutes"] for r in mine], [r["fd"] for r in mine], "o-", label=name)
        last = mine[-1]
        xy = (last["flops_per_image"], last["fd"])
        b.scatter(*xy)
        # Rows at nearly the same point (exact and scalar UDPM) get their labels stacked.
        below = sum(_near(xy, other) for other in placed)
        placed.append(xy)
        at_n = f", n={last['n']}" if last["n"] != rows[0]["n"] else ""  # its FD is at its n
        b.annotate(f"{name} (R={last['recall']:.2f}{at_n})", xy, fontsize=7,
                   xytext=(4, 3 - 8 * below), textcoords="offset points")  # fmt: skip
    for ax in (a, b):
        ax.set_yscale("log")
        ax.set_ylabel("FD, emoji32 features (log)")
        ax.axhline(split["fd"], ls=":", color="grey", label=f"floor (FD {split['fd']:.2f})")
    a.set_xlabel("training minutes")
    a.legend(fontsize=6, ncol=2)
    b.set_xscale("log")
    b.set_xlabel("FLOPs per image at the last point (log)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _near(p: tuple[float, float], q: tuple[float, float]) -> bool:
    """Within a label's height on both log axes (a tenth of a decade of FD, half of FLOPs)."""
    import math

    return abs(math.log10(p[0] / q[0])) < 0.5 and abs(math.log10(p[1] / q[1])) < 0.1
