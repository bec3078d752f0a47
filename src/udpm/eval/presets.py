"""A preset's sampling pipeline with random weights, for measuring cost without training.

Network calls, FLOPs and wall time do not depend on the weights, so ``udpm bench --preset``
and the benchmarks measure the paper-sized architectures (``cifar10``, ``ffhq64``, ...)
without a checkpoint.
"""

from __future__ import annotations


def preset_pipeline(name: str, device):
    """A `udpm.pipeline.Pipeline` with preset ``name``'s architecture and random weights.

    The weights are drawn after ``torch.manual_seed(0)``, so two calls give the same
    network; ``meta["preset"]`` records the preset.
    """
    import torch

    from udpm.config import preset_config
    from udpm.pipeline import Pipeline, build_network, build_process_for

    config = preset_config(name)
    num_classes = config.network.get("num_classes", 0) if config.class_conditional else 0
    torch.manual_seed(0)
    network = build_network(config, num_classes=num_classes)
    meta = {"num_classes": num_classes, "preset": name}
    return Pipeline(network.to(device), build_process_for(config), config, meta)
