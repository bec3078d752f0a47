"""One page's exploration state, with no web framework: a base latent and edits on it.

What the page shows is always ``current = mix(move(base, sliders), partner, t)``:
:func:`~udpm.explore.directions.move` shifts each level's map along its principal
directions, and an optional second latent (the *partner*) is mixed in with the
variance-preserving ``δ a + √(1-δ²) b`` of ``udpm interpolate``, ``δ = cos(π t / 2)``.
Selecting, uploading, re-drawing a level, swapping a level or keeping the current image
make ``current`` (so edited) the new base: the sliders return to 0 and the directions are
recomputed there, because they are local to the latent they were computed at. They are
computed level by level outside the page's worker (the fine levels take seconds), and
installed with :meth:`Explorer.install` only if the base has not changed meanwhile.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import threading
from collections import OrderedDict

import torch

from udpm.errors import UDPMError
from udpm.explore.directions import LevelDirections, level_directions, move, with_map
from udpm.explore.frames import Frame, render
from udpm.latent import Latent, mix_pair

SLIDER_LIMIT = 3.0  # prior standard deviations along a direction (see directions.py)
MAX_SEED = 2**31 - 1


def latent_key(latent: Latent) -> str:
    """A digest of the maps and the class, for caching what depends on the latent only."""
    h = hashlib.sha256(repr(latent.class_label).encode())
    for e in latent.noises:
        h.update(e.contiguous().numpy().tobytes())
    return h.hexdigest()


class DirectionCache:
    """The directions of recently explored latents, shared by every page (thread-safe)."""

    def __init__(self, model, k: int = 4, size: int = 96):
        self.model, self.k, self.size = model, k, size
        self._items: OrderedDict[tuple, LevelDirections] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, latent: Latent, level: int) -> LevelDirections:
        key = (latent_key(latent), level)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        k = min(self.k, latent.noises[level - 1].numel())
        directions = level_directions(self.model, latent, level, k)
        with self._lock:
            self._items[key] = directions
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return directions


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise UDPMError(f"seed must be an integer in 0..{MAX_SEED}, got {seed!r}")
    return seed


def interpolation_delta(t: float) -> float:
    """``δ = cos(π t / 2)``, exactly 1 at ``t = 0`` and exactly 0 at ``t = 1``."""
    return 0.0 if t == 1.0 else math.cos(math.pi / 2 * t)


class Explorer:
    """The state behind one page. Every method returns the :class:`Frame` now shown."""

    def __init__(self, model, directions: DirectionCache, draw_seed: int = 0):
        self.model, self.cache = model, directions
        self.base: Latent | None = None
        self.directions: dict[int, LevelDirections] = {}  # the levels computed so far
        self.version = 0  # counts bases, so that late directions for an old one are dropped
        self.partner: Latent | None = None
        self.values: dict[int, list[float]] = {}
        self.mix = 0.0
        self.frame: Frame | None = None
        self._draws = torch.Generator().manual_seed(draw_seed)

    # -- what is shown ---------------------------------------------------------------
    def current(self) -> Latent:
        moved = move(self.require_base(), list(self.directions.values()), self.values)
        if self.partner is None or self.mix == 0.0:
            return moved
        delta = interpolation_delta(self.mix)
        maps = [mix_pair(a, b, delta) for a, b in zip(moved.noises, self.partner.noises)]
        nearer = self.partner if self.mix > 0.5 else moved
        return nearer.with_noises(maps)

    def render(self, values: dict | None = None, mix: float | None = None) -> Frame:
        """Set the sliders (``{level: [t_1, .., t_k]}``, missing levels keep theirs) and the
        interpolation position ``t`` in ``[0, 1]``, and decode."""
        self.require_base()
        values = {} if values is None else self.check_values(values)
        mix = self.mix if mix is None else self.check_mix(mix)
        self.values, self.mix = {**self.values, **values}, mix
        self.frame = render(self.model, self.current())
        return self.frame

    # -- edits that make a new base --------------------------------------------------
    def select(self, seed: int, class_label: int | None = None) -> Frame:
        return self.commit(Latent.from_seed(self.model, check_seed(seed), class_label))

    def upload(self, data: bytes) -> Frame:
        """Continue from the bytes of a ``.latent.safetensors`` file (checked against the
        model: levels, shapes, checkpoint hash, class)."""
        return self.commit(parse_latent(self.model, data))

    def redraw(self, level: int) -> Frame:
        """Replace ``e_level`` of the current latent with a fresh ``N(0, I)`` map."""
        self.check_level(level)
        e = self.current().noises[level - 1]
        return self.commit(
            with_map(self.current(), level, torch.randn(e.shape, generator=self._draws))
        )

    def swap(self, level: int, seed: int, class_label: int | None = None) -> Frame:
        """Take map ``e_level`` from the image of ``seed`` (paper figure 10)."""
        self.check_level(level)
        other = Latent.from_seed(self.model, check_seed(seed), class_label)
        return self.commit(with_map(self.current(), level, other.noises[level - 1]))

    def set_partner(self, seed: int | None, class_label: int | None = None) -> Frame:
        """Interpolate towards the image of ``seed`` (``None``: stop); ``t`` returns to 0."""
        self.require_base()
        self.partner = (
            None if seed is None else Latent.from_seed(self.model, check_seed(seed), class_label)
        )
        self.mix = 0.0
        return self.render()

    def keep(self) -> Frame:
        """Make the image shown the new base."""
        return self.commit(self.current())

    def commit(self, latent: Latent) -> Frame:
        # Everything that can fail runs before the state changes, so a bad edit damages nothing.
        frame = render(self.model, latent)
        self.base, self.partner, self.values, self.mix = latent, None, {}, 0.0
        self.directions, self.frame, self.version = {}, frame, self.version + 1
        return frame

    # -- directions, computed outside the worker ---------------------------------------
    def snapshot(self) -> tuple[int, Latent]:
        """The base and its version, read on the worker thread for :meth:`install`."""
        return self.version, self.require_base()

    def install(self, version: int, directions: LevelDirections) -> bool:
        """Use ``directions`` if they belong to the current base; say whether they did."""
        if version != self.version:
            return False
        self.directions[directions.level] = directions
        return True

    # -- checks ----------------------------------------------------------------------
    def require_base(self) -> Latent:
        if self.base is None:
            raise UDPMError("no image chosen yet: select a seed or upload a latent first")
        return self.base

    def check_level(self, level) -> int:
        L = self.model.process.levels
        if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= L:
            raise UDPMError(f"level must be an integer in 1..{L}, got {level!r}")
        return level

    def check_values(self, values) -> dict[int, list[float]]:
        if not isinstance(values, dict):
            raise UDPMError("sliders must be an object {level: [values]}")
        self.require_base()
        out = {}
        for key, ts in values.items():
            level = self.check_level(int(key) if str(key).isdigit() else key)
            if level not in self.directions:
                raise UDPMError(f"the sliders of level {level} are not ready yet")
            k = len(self.directions[level].gains)
            if not isinstance(ts, list) or len(ts) != k:
                got = f"{len(ts)} values" if isinstance(ts, list) else repr(ts)[:40]
                raise UDPMError(f"level {level} takes {k} slider values, got {got}")
            out[level] = [check_slider(t) for t in ts]
        return out

    @staticmethod
    def check_mix(t) -> float:
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= t <= 1.0:
            raise UDPMError(f"interpolation position must be a number in [0, 1], got {t!r}")
        return float(t)


def check_slider(t) -> float:
    ok = isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t)
    if not ok or abs(t) > SLIDER_LIMIT:
        raise UDPMError(
            f"slider values must be numbers in [-{SLIDER_LIMIT}, {SLIDER_LIMIT}], got {t!r}"
        )
    return float(t)


def parse_latent(model, data: bytes) -> Latent:
    """A :class:`Latent` from uploaded bytes, parsed as safetensors only.

    The bytes go to a temporary file that this process names (no path comes from the page),
    because :meth:`Latent.load` reads files; error messages say "uploaded file" instead of
    the temporary path.
    """
    fd, path = tempfile.mkstemp(suffix=".latent.safetensors")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        latent = Latent.load(path, model)
    except UDPMError as exc:
        raise UDPMError(str(exc).replace(path, "uploaded file"))
    except (ValueError, TypeError) as exc:  # e.g. metadata that is not JSON
        raise UDPMError(f"uploaded file is not a valid udpm latent ({type(exc).__name__})")
    finally:
        os.unlink(path)
    if not model.num_classes and latent.class_label is not None:
        raise UDPMError("uploaded file has a class label; this model is unconditional")
    if latent.class_label is not None and type(latent.class_label) is not int:
        raise UDPMError(f"uploaded file has class {latent.class_label!r}, not an integer")
    if not all(torch.isfinite(e).all() for e in latent.noises):
        raise UDPMError("uploaded file has noise maps with NaN or infinite values")
    return latent
