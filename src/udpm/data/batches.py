"""Shuffled, resumable mini-batches of an in-memory image set: the training loop's data."""

from __future__ import annotations

import torch

from udpm.errors import UDPMError
from udpm.images import from_uint8


class Batches:
    """Shuffled mini-batches of an in-memory uint8 image tensor, with resumable state.

    It is also the distributed sampler: every rank holds the same generator, so all draw
    the same permutation (a new one every epoch) and the same global batch, and keep their
    own part of it (``next(indices)``).
    """

    def __init__(self, images, labels, batch_size: int, hflip: bool, seed: int):
        if batch_size > len(images):
            raise UDPMError(f"batch size {batch_size} exceeds the {len(images)} images")
        self.images, self.labels = images, labels
        self.batch_size, self.hflip = batch_size, hflip
        self.gen = torch.Generator().manual_seed(seed)
        self.perm, self.pos = torch.randperm(len(images), generator=self.gen), 0

    def next(self, indices: slice | None = None):
        """The next global batch, scaled to [-1, 1]; ``indices`` selects this rank's part."""
        if self.pos + self.batch_size > len(self.perm):
            self.perm, self.pos = torch.randperm(len(self.images), generator=self.gen), 0
        idx = self.perm[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        flip = torch.rand(len(idx), generator=self.gen) < 0.5
        if indices is not None:
            idx, flip = idx[indices], flip[indices]
        x = from_uint8(self.images[idx])
        if self.hflip:
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        labels = None if self.labels is None else self.labels[idx]
        return x, labels

    def state_dict(self) -> dict:
        return {"gen": self.gen.get_state(), "perm": self.perm, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.gen.set_state(state["gen"])
        self.perm, self.pos = state["perm"], int(state["pos"])
