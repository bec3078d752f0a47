"""Train the feature network of `udpm.eval.features` on a labelled data set.

The classifier only has to learn features that separate the data set's images well, so the
recipe is small and boring: a stratified held-out split, flips and small translations as
augmentation (no blur, noise or colour jitter, so the features stay sensitive to exactly the
artefacts a generator makes), cross-entropy with classes weighted by 1/sqrt(frequency)
since emoji32 is 60 % one class (full inverse-frequency weighting costs plain accuracy,
none neglects the small classes), AdamW with a cosine learning rate. Everything random draws
from seeded generators and runs on the CPU, so the weights are a function of the options.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch
import torch.nn.functional as F

from udpm.errors import UDPMError
from udpm.eval.features import (
    FeatureNet,
    FeatureNetConfig,
    feature_network_hash,
    save_feature_network,
)
from udpm.images import from_uint8


@dataclass(frozen=True)
class TrainOptions:
    data: str = "emoji32"  # labelled SOURCE (embedded name or path)
    seed: int = 0  # seeds the split, the initial weights, the batches and the augmentation
    epochs: int = 20  # passes over the training split
    batch_size: int = 128  # images per optimiser step
    lr: float = 3e-3  # peak learning rate, cosine-decayed to 0
    weight_decay: float = 5e-4  # AdamW decoupled weight decay
    heldout_fraction: float = 0.15  # of each class, kept out of training to measure accuracy
    widths: tuple[int, ...] = (32, 64, 128, 256)  # channels per stage; the feature is the last
    convs_per_stage: int = 1  # 3×3 conv blocks per stage
    balance: float = 0.5  # class c's loss weight ∝ count_c^-balance: 0 plain, 1 fully balanced
    shift: int = 3  # largest translation in pixels (augmentation)
    threads: int = 1  # torch CPU threads; 1 leaves the machine to others


def load_labelled(source: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Images uint8 (N, C, H, W), labels int64 (N,) and class names of a labelled SOURCE."""
    if source == "emoji32" and not os.path.exists(source):
        with resources.as_file(resources.files("udpm") / "assets" / "emoji32.npz") as path:
            with np.load(path) as npz:
                images = torch.from_numpy(npz["images"].transpose(0, 3, 1, 2).copy())
                return images, torch.from_numpy(npz["labels"]), [str(c) for c in npz["classes"]]
    from udpm.data import load_source

    data = load_source(source)
    if data.labels is None:
        raise UDPMError(f"{source} has no labels; a feature network needs a labelled data set")
    names = data.class_names or [str(i) for i in range(int(data.labels.max()) + 1)]
    return data.images, data.labels, list(names)


def heldout_split(
    labels: torch.Tensor, fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified split: (train indices, held-out indices); ``fraction`` of every class held out."""
    g = torch.Generator().manual_seed(seed)
    train, heldout = [], []
    for c in range(int(labels.max()) + 1):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_out = math.ceil(fraction * len(idx)) if len(idx) > 1 else 0
        heldout.append(idx[:n_out])
        train.append(idx[n_out:])
    return torch.cat(train).sort().values, torch.cat(heldout).sort().values


def augment(x: torch.Tensor, shift: int, g: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and translations by up to ``shift`` pixels (white fill)."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=g) < 0.5
    x = torch.where(flip.view(n, 1, 1, 1), x.flip(-1), x)
    padded = F.pad(x, (shift,) * 4, value=1.0)  # emoji sit on white
    dy, dx = torch.randint(0, 2 * shift + 1, (2, n), generator=g).tolist()
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])


@torch.no_grad()
def predict(net: FeatureNet, images_uint8: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    net.eval()
    chunks = [net.logits(from_uint8(b)).argmax(1) for b in images_uint8.split(batch_size)]
    return torch.cat(chunks)


def accuracies(pred: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Plain accuracy and balanced accuracy (mean of the per-class recalls)."""
    per_class = [(pred[labels == c] == c).float().mean() for c in labels.unique()]
    return {
        "accuracy": float((pred == labels).float().mean()),
        "balanced_accuracy": float(torch.stack(per_class).mean()),
    }


def train_feature_network(
    options: TrainOptions, out: str | os.PathLike | None = None, log=None
) -> dict:
    """Train a `FeatureNet` on ``options.data``; save it to ``out`` if given; return its record."""
    torch.set_num_threads(options.threads)
    images, labels, names = load_labelled(options.data)
    train_idx, heldout_idx = heldout_split(labels, options.heldout_fraction, options.seed)
    config = FeatureNetConfig(
        resolution=images.shape[-1],
        in_channels=images.shape[1],
        widths=tuple(options.widths),
        convs_per_stage=options.convs_per_stage,
        num_classes=len(names),
        class_names=tuple(names),
    )
    torch.manual_seed(options.seed)  # initial weights
    net = FeatureNet(config)
    start = time.perf_counter()
    _fit(net, from_uint8(images[train_idx]), labels[train_idx], options, log)
    train_acc = accuracies(predict(net, images[train_idx]), labels[train_idx])
    held_acc = accuracies(predict(net, images[heldout_idx]), labels[heldout_idx])
    info = {
        "name": os.path.splitext(os.path.basename(os.fspath(out)))[0] if out else options.data,
        "data": options.data,
        "n_train": len(train_idx),
        "n_heldout": len(heldout_idx),
        "train_accuracy": train_acc["accuracy"],
        "heldout_accuracy": held_acc["accuracy"],
        "heldout_balanced_accuracy": held_acc["balanced_accuracy"],
        "majority_fraction": float(torch.bincount(labels).max() / len(labels)),
        "options": {k: v for k, v in options.__dict__.items() if k != "threads"},
        "train_seconds": round(time.perf_counter() - start, 1),
        "weights_sha256": feature_network_hash(net),
    }
    if out is not None:
        save_feature_network(net, out, info)
    return info


def _fit(
    net: FeatureNet, x: torch.Tensor, y: torch.Tensor, options: TrainOptions, log=None
) -> None:
    """Class-weighted cross-entropy, AdamW, cosine learning rate, one generator for all draws."""
    g = torch.Generator().manual_seed(options.seed + 1)
    counts = torch.bincount(y, minlength=net.config.num_classes).clamp(min=1).float()
    class_weight = counts ** (-options.balance)
    class_weight = class_weight * counts.sum() / (class_weight * counts).sum()  # mean 1 per image
    opt = torch.optim.AdamW(net.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    steps_per_epoch = math.ceil(len(x) / options.batch_size)
    total = options.epochs * steps_per_epoch
    net.train()
    running = 0.0
    for step in range(total):
        if step % steps_per_epoch == 0:
            if step and log:
                log(f"epoch {step // steps_per_epoch}/{options.epochs} loss {running:.3f}")
            order, running = torch.randperm(len(x), generator=g), 0.0
        batch = order[(step % steps_per_epoch) * options.batch_size :][: options.batch_size]
        for group in opt.param_groups:
            group["lr"] = options.lr * 0.5 * (1 + math.cos(math.pi * step / total))
        logits = net.logits(augment(x[batch], options.shift, g))
        loss = F.cross_entropy(logits, y[batch], weight=class_weight, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running += loss.item() / steps_per_epoch
    if log:
        log(f"epoch {options.epochs}/{options.epochs} loss {running:.3f}")
