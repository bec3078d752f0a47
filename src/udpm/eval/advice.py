"""What ``udpm eval`` says before it measures: whether the measurement can mean anything.

Two things make FD and precision/recall misleading without any error: a feature network
trained on other images (its features describe what it learnt to tell apart), and a small
n (FD's bias grows as n shrinks, Chong and Forsyth 2020). Each gives a one-line warning
that names the alternatives; the floor printed with every FD (`compute.fd_floor`) shows
the bias at the n used.
"""

from __future__ import annotations

import os

#: Below this many images FD is dominated by its bias; the README's comparisons use 2000.
SMALL_N = 500


def feature_alternatives(source: str) -> str:
    """The three ways to measure data the shipped feature network was not trained on."""
    return (
        f"train a feature network on it (udpm features --data {source} --out feat.safetensors, "
        "minutes on a CPU, needs class labels; then --feature-net feat.safetensors), use "
        "Inception FID (--metrics fid, with the 'udpm[fid]' extra and --inception-weights), "
        "or the network-free --feature-net pixels"
    )


def warnings_for(
    source: str, feature_net: str | os.PathLike, image_shape: tuple[int, int, int], n: int
) -> list[str]:
    """One-line warnings about measuring ``n`` images of ``image_shape`` against SOURCE."""
    from udpm.eval.features import feature_network_mismatch
    from udpm.eval.reference import dataset_identity

    out = []
    channels, resolution = image_shape[0], image_shape[-1]
    if not isinstance(feature_net, (str, os.PathLike)):
        feature_net = None
    if feature_net is not None:
        why = feature_network_mismatch(feature_net, dataset_identity(source), channels, resolution)
        if why:
            out.append(f"{why}; instead {feature_alternatives(source)}")
    if n < SMALL_N:
        out.append(
            f"n = {n} is small: FD is biased upwards at small n, so compare models only at the "
            f"same n (the floor shows the bias) and prefer n >= 2000"
        )
    return out
