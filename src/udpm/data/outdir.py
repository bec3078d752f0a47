"""Sample folders that say whose images they hold, so outputs of two models never mix.

``udpm sample`` writes ``.udpm-samples.json`` (the model's hash and path, the seeds) next
to its PNGs. A later run into the same folder goes on only for the same model; another
model, or image files of unknown origin, are refused unless ``overwrite``, which first
removes the earlier outputs (PNGs, latents, grids) so that no stale file survives.
"""

from __future__ import annotations

import json
from pathlib import Path

from udpm.errors import UDPMError

MARKER = ".udpm-samples.json"
_OUTPUTS = ("*.png", "*.latent.safetensors")


def _outputs(folder: Path) -> list[Path]:
    return sorted(p for pattern in _OUTPUTS for p in folder.glob(pattern))


def prepare_sample_folder(folder: Path, model_sha256: str, overwrite: bool = False) -> None:
    """Check (or clear, with ``overwrite``) ``folder`` before samples of this model go in."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise UDPMError(f"--out {folder} exists and is not a folder")
    outputs = _outputs(folder)
    marker = folder / MARKER
    owner = json.loads(marker.read_text()).get("model_sha256") if marker.is_file() else None
    if not outputs or owner == model_sha256:
        return
    if not overwrite:
        whose = "another model's" if owner else f"{len(outputs)} image file(s) of unknown origin"
        raise UDPMError(
            f"{folder} already holds {whose} outputs; choose another --out, or pass "
            "--overwrite to delete them first"
        )
    for path in outputs:
        path.unlink()
    marker.unlink(missing_ok=True)


def mark_sample_folder(folder: Path, model_sha256: str, record: dict) -> None:
    """Record whose samples ``folder`` holds (see `prepare_sample_folder`)."""
    (folder / MARKER).write_text(json.dumps({"model_sha256": model_sha256, **record}, indent=1))
