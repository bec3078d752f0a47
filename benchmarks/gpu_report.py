"""``benchmarks/GPU.md`` from the result dict of ``benchmarks/gpu.py``."""

from __future__ import annotations


def _num(value, fmt: str = ".3g") -> str:
    return "—" if value is None else format(value, fmt)


def _header(result: dict) -> list[str]:
    env = result["environment"]
    where = env.get("gpu", env["cpu"])
    versions = f"torch {env['torch']}"
    if "cuda" in env:
        versions += f", CUDA {env['cuda']}, cuDNN {env['cudnn']}"
    commands = "; ".join(f"`{c}`" for c in result["commands"])
    lines = [
        "# GPU measurements (issue 17)",
        "",
        f"{commands} on **{where}** ({env['device']}; {versions}; Python {env['python']}), "
        f"{env['date']}; {result['total_seconds']:.0f} s in all.",
    ]
    if "tf32_conv" in env:
        lines.append(
            f"PyTorch defaults kept: TF32 convolutions {env['tf32_conv']}, TF32 matmuls "
            f"{env['tf32_matmul']} (so 'fp32' convolutions may run in TF32)."
        )
    if result["smoke"]:
        lines += [
            "",
            "**Smoke run: tiny networks, not the presets' sizes. No figure here "
            "means anything about speed.**",
        ]
    return lines + [""]


def _sampling(rows: list[dict]) -> list[str]:
    lines = [
        "## Sampling throughput",
        "",
        "Random weights. `udpm_3_calls` is UDPM's whole sampler, `full_resolution_pass` one "
        "call of the same network on a full-size input, `ddim_10` DDIM with 10 calls of a "
        "DDPM network of the same size. Noise is drawn on the device beforehand. Median over "
        "the repeats, min–max in brackets; warm-up includes compilation or graph capture.",
        "",
        "| preset | workload | batch | precision | mode | images/s | ms/image [min–max] "
        "| warm-up s | peak MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            continue
        lo, hi = r["ms_per_image_range"]
        lines.append(
            f"| {r['preset']} | {r['workload']} | {r['batch']} | {r['precision']} | "
            f"{r['mode']} | {r['images_per_s']:.4g} | {r['ms_per_image']:.3g} "
            f"[{lo:.3g}–{hi:.3g}] | {r['warmup_s']:.1f} | {_num(r['peak_memory_mb'], '.0f')} |"
        )
    return lines + [""]


def _ratios(rows: list[dict], paper: str) -> list[str]:
    ms = {
        (r["preset"], r["workload"], r["batch"], r["precision"], r["mode"]): r["ms_per_image"]
        for r in rows
        if "error" not in r
    }
    lines = [
        "## UDPM's 3 calls against one full-resolution pass and against DDIM-10",
        "",
        "Same run, same network family, same batch, precision and mode. The paper claims "
        "3 UDPM calls cost about 0.3 of one full-resolution step.",
        "",
        "| preset | batch | precision | mode | UDPM images/s | UDPM / full pass | DDIM-10 / UDPM |",
        "|---|---|---|---|---|---|---|",
    ]
    for (preset, workload, batch, precision, mode), value in ms.items():
        if workload != "udpm_3_calls":
            continue
        full = ms.get((preset, "full_resolution_pass", batch, precision, mode))
        ddim = ms.get((preset, "ddim_10", batch, precision, mode))
        lines.append(
            f"| {preset} | {batch} | {precision} | {mode} | {1000 / value:.4g} | "
            f"{_num(full and value / full, '.2f')} | {_num(ddim and ddim / value, '.1f')} |"
        )
    return lines + ["", f"For comparison: {paper}.", ""]


def _overhead(rows: list[dict]) -> list[str]:
    lines = [
        "## The sampler's own overhead",
        "",
        "Share of UDPM sampling time spent outside the network calls (posterior draws, "
        "per-seed noise drawn on the CPU and copied over, launches), from "
        "`udpm.eval.speed.time_sampling`; the target is at most 5% at batch 64.",
        "",
        "| preset | batch | precision | mode | overhead | ms/image |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" not in r:
            lines.append(
                f"| {r['preset']} | {r['batch']} | {r['precision']} | {r['mode']} | "
                f"{100 * r['overhead_fraction']:.1f}% | {r['ms_per_image']:.3g} |"
            )
    return lines + [""]


def _training(rows: list[dict]) -> list[str]:
    lines = [
        "## Training throughput (UDPM, LPIPS off)",
        "",
        "A step is one D and one G step at one level; the whole-step figure averages the "
        "three levels as uniform level sampling does. The emoji32 recipes are those of "
        "`ABLATION.md`'s step-cost tables (`@no-r1`: a ceiling, not a recipe).",
        "",
        "| recipe | precision | batch | images/s | per level 1 / 2 / 3 | peak MB |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" not in r:
            levels = " / ".join(f"{v:.4g}" for v in r["images_per_s_per_level"].values())
            lines.append(
                f"| {r.get('workload', r['preset'])} | {r['precision']} | {r['batch']} | "
                f"{r['images_per_s']:.4g} | {levels} | "
                f"{_num(r['peak_memory_mb'], '.0f')} |"
            )
    return lines + [""]


def _emoji(emoji: dict | None) -> list[str]:
    if not emoji:
        return ["## emoji32 on the device", "", "Not run (`--emoji-steps 0`).", ""]
    lines = [
        "## emoji32-cpu trained on the device: FD against training time",
        "",
        f"FD of {emoji['n']} samples against all emoji32 images (shipped feature network).",
        "",
        "| step | training seconds | FD |",
        "|---|---|---|",
    ]
    lines += [f"| {r['step']} | {r['train_seconds']:.0f} | {r['fd']:.2f} |" for r in emoji["rows"]]
    return lines + [""]


def _errors(result: dict) -> list[str]:
    failed = [
        (section, r)
        for section in ("sampling", "overhead", "training")
        for r in result.get(section, [])
        if "error" in r
    ]
    missing = [s for s in ("sampling", "overhead", "training") if s not in result]
    if not failed and not missing:
        return ["## What did not run", "", "Everything ran.", ""]
    lines = ["## What did not run", ""]
    lines += [f"- {section}: not measured (the run stopped before it)" for section in missing]
    for section, r in failed:
        what = ", ".join(f"{k}={v}" for k, v in r.items() if k != "error")
        lines.append(f"- {section} ({what}): {r['error']}")
    return lines + [""]


def markdown(result: dict) -> str:
    lines = _header(result)
    lines += _sampling(result.get("sampling", []))
    lines += _ratios(result.get("sampling", []), result["paper"])
    lines += _overhead(result.get("overhead", []))
    lines += _training(result.get("training", []))
    lines += _emoji(result.get("emoji"))
    lines += _errors(result)
    return "\n".join(lines)
