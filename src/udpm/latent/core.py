"""The latent of one image as an object and a file, and decoding latents into images.

A UDPM image is a deterministic function of its ``L`` noise maps ``e_1..e_L``
(``e_l`` of shape ``(C, H/γ^l, W/γ^l)``, ``x_L = s_L e_L``) and, for class-conditional
models, its class. A :class:`Latent` holds exactly that, plus the sha256 of the checkpoint it
was made with, so that a latent file is never silently decoded by another model.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from udpm.errors import UDPMError
from udpm.noise import seeded_noise

FORMAT = "udpm-latent-v1"
SUFFIX = ".latent.safetensors"
_FILE_HASHES: dict[tuple, str] = {}  # (path, mtime, size) -> sha256: hash each file once


def require_udpm(model) -> None:
    """Raise unless ``model``'s latent is per-level maps (UDPM's; swap and perturb need them)."""
    method = model.config.method
    if not model.spec.has_levels:
        where = model.meta.get("path", "this checkpoint")
        raise UDPMError(
            f"the latent tools need a UDPM checkpoint; {where} is a {method} model "
            "(its latent is not a set of per-level noise maps)"
        )


def model_hash(model) -> str:
    """sha256 of the model file the pipeline was loaded from, else of its weights.

    The weights hash covers every tensor's name, dtype, shape and bytes (on the CPU), so it
    does not depend on the device.
    """
    path = model.meta.get("path")
    h = hashlib.sha256()
    if path and os.path.isfile(path):
        stat = os.stat(path)
        key = (os.path.abspath(path), stat.st_mtime_ns, stat.st_size)
        if key not in _FILE_HASHES:
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            _FILE_HASHES[key] = h.hexdigest()
        return _FILE_HASHES[key]
    for name, tensor in sorted(model.network.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@dataclass
class Latent:
    """The noise maps of one image.

    Attributes:
        noises: ``[e_1, .., e_L]``, ``e_l`` of shape ``(C, H/γ^l, W/γ^l)``, float32, CPU.
        class_label: the class it is decoded with (``None`` for unconditional models).
        model_sha256: :func:`model_hash` of the checkpoint it belongs to (``None``: any).
        seed: the seed it was drawn from, if any (provenance only).
    """

    noises: list[torch.Tensor]
    class_label: int | None = None
    model_sha256: str | None = None
    seed: int | None = None

    @property
    def levels(self) -> int:
        return len(self.noises)

    @classmethod
    def from_seed(cls, model, seed: int, class_label: int | None = None) -> Latent:
        """The latent that ``model.sample(1, seed=seed)`` decodes (same maps, same class)."""
        require_udpm(model)
        noises = [e[0] for e in seeded_noise(model.latent_shapes(), [seed])]
        labels = model.class_labels(1, class_label, seed)
        label = None if labels is None else int(labels[0])
        return cls(noises, label, model_hash(model), int(seed))

    def save(self, path: str | os.PathLike) -> Path:
        """Write the maps (tensors ``e_1..e_L``) and the metadata as one safetensors file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {f"e_{l}": e.detach().cpu().float().clone() for l, e in enumerate(self.noises, 1)}
        meta = {
            "format": FORMAT,
            "levels": json.dumps(self.levels),
            "class_label": json.dumps(self.class_label),
            "model_sha256": json.dumps(self.model_sha256),
            "seed": json.dumps(self.seed),
        }
        save_file(tensors, str(path), metadata=meta)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, model=None, check_hash: bool = True) -> Latent:
        """Read a latent file; with ``model``, check its levels, shapes and checkpoint hash."""
        path = Path(path)
        if not path.is_file():
            raise UDPMError(f"latent file not found: {path}")
        try:
            with safe_open(str(path), framework="pt") as f:
                raw = f.metadata() or {}
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise UDPMError(f"{path} is not a readable safetensors file ({exc})")
        if raw.get("format") != FORMAT:
            raise UDPMError(f"{path} is a safetensors file but not a udpm latent")
        meta = {k: json.loads(v) for k, v in raw.items() if k != "format"}
        names = [f"e_{l}" for l in range(1, len(tensors) + 1)]
        if sorted(tensors) != sorted(names):
            raise UDPMError(f"latent file {path} holds {sorted(tensors)}, expected e_1..e_L")
        latent = cls(
            [tensors[n].float() for n in names],
            meta.get("class_label"),
            meta.get("model_sha256"),
            meta.get("seed"),
        )
        if model is not None:
            latent.check(model, check_hash=check_hash, source=str(path))
        return latent

    def check(self, model, check_hash: bool = True, source: str = "latent") -> None:
        """Raise unless this latent fits ``model``: UDPM, ``L`` maps of its shapes, same hash."""
        require_udpm(model)
        shapes = model.latent_shapes()
        if self.levels != len(shapes):
            raise UDPMError(
                f"{source} has {self.levels} noise maps, this model needs {len(shapes)}"
            )
        for l, (e, shape) in enumerate(zip(self.noises, shapes), 1):
            if tuple(e.shape) != shape:
                raise UDPMError(
                    f"{source}: noise map {l} has shape {tuple(e.shape)}, expected {shape}"
                )
        if check_hash and self.model_sha256 is not None:
            here = model_hash(model)
            if here != self.model_sha256:
                raise UDPMError(
                    f"{source} was made with another checkpoint (sha256 {self.model_sha256[:12]}…, "
                    f"this one is {here[:12]}…)"
                )
        if model.num_classes and not (
            self.class_label is not None and 0 <= self.class_label < model.num_classes
        ):
            raise UDPMError(
                f"{source} has class {self.class_label}; this class-conditional model needs "
                f"one in 0..{model.num_classes - 1}"
            )

    def with_noises(self, noises: Sequence[torch.Tensor]) -> Latent:
        """The same class and checkpoint with other maps (``seed`` is dropped)."""
        return Latent(list(noises), self.class_label, self.model_sha256, None)


_INT = re.compile(r"[+-]?\d+$")


def resolve_latent(
    model,
    spec: int | str | os.PathLike | Latent,
    class_label: int | None = None,
    check_hash: bool = True,
) -> Latent:
    """A :class:`Latent` from an integer seed, a string holding one, a latent file or a latent.

    ``class_label`` applies to seeds only; a latent file keeps its own class.
    """
    if isinstance(spec, Latent):
        spec.check(model, check_hash=check_hash)
        return spec
    if isinstance(spec, int) or (isinstance(spec, str) and _INT.match(spec.strip())):
        return Latent.from_seed(model, int(spec), class_label)
    path = Path(spec)
    if not path.is_file():
        raise UDPMError(f"{spec!s} is neither an integer seed nor an existing latent file")
    return Latent.load(path, model, check_hash=check_hash)


def stack_noises(latents: Sequence[Latent]) -> list[torch.Tensor]:
    """``[e_1, .., e_L]`` with a batch dimension, ``e_l`` of shape ``(N, C, h_l, w_l)``."""
    return [torch.stack([lat.noises[l] for lat in latents]) for l in range(latents[0].levels)]


@torch.no_grad()
def decode(model, latents: Sequence[Latent], batch_size: int = 256) -> torch.Tensor:
    """Images ``(N, C, H, W)`` in ``[-1, 1]`` on the CPU, each from its latent and class.

    Runs the same sampler as ``model.sample``, so ``decode(model, [Latent.from_seed(model,
    s)])`` equals ``model.sample(1, seed=s)``.
    """
    require_udpm(model)
    if not latents:
        raise UDPMError("nothing to decode: no latents given")
    for lat in latents:
        lat.check(model, check_hash=False)
    noises = stack_noises(latents)
    labels = None
    if model.num_classes:
        labels = torch.tensor([lat.class_label for lat in latents])
    images = []
    for start in range(0, len(latents), batch_size):
        part = slice(start, start + batch_size)
        out = model.spec.sample(
            model,
            range(start, min(start + batch_size, len(latents))),
            [e[part] for e in noises],
            None if labels is None else labels[part],
            model.sampler_options(),
        )
        images.append(out.images.cpu())
    return torch.cat(images).clamp(-1, 1)


def latent_path(image_path: str | os.PathLike) -> Path:
    """``NAME.latent.safetensors`` next to ``NAME.png``."""
    image_path = Path(image_path)
    return image_path.with_name(image_path.stem + SUFFIX)


def save_latents_for(
    model, paths: Sequence[str | os.PathLike], seed: int, class_label: int | None = None
) -> list[Path]:
    """Write the latent of image ``i`` (seed ``seed + i``) next to ``paths[i]``; return paths."""
    require_udpm(model)
    return [
        Latent.from_seed(model, seed + i, class_label).save(latent_path(image_path))
        for i, image_path in enumerate(paths)
    ]
