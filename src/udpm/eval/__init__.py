"""Measure generated images: Fréchet distance, KID, precision/recall and (optional) FID.

The distances are taken in the feature space of a small classifier trained by this project
on the embedded data set (`features`), so they need no download; standard Inception-v3 FID
is an optional extra (`inception`). Real-image statistics are cached on disk (`reference`)::

    from udpm.eval import compute_metrics
    compute_metrics(samples, "emoji32")  # samples: (N, 3, 32, 32) in [-1, 1]
    # {'fd': ..., 'kid_mean': ..., 'kid_std': ..., 'precision': ..., 'recall': ..., ...}

Modules: `features` (the feature network, its loader and hash; `udpm features` trains it),
`feature_training` (the training recipe), `metrics` (FD, KID, precision/recall on feature
tensors), `reference` (the on-disk cache), `inception` (standard FID), `compute`
(`compute_metrics`, the high-level entry point), `protocol` (`evaluate`: the sampling
protocol of ``udpm eval``), `speed` (the cost measurements of ``udpm bench``) and
`presets` (a preset's architecture with random weights, to measure its cost).
"""

from importlib import import_module

# Names are imported on first use (PEP 562), so `import udpm.eval` stays light.
_EXPORTS = {
    "compute_metrics": "compute",
    "extract_features": "compute",
    "FeatureNet": "features",
    "FeatureNetConfig": "features",
    "TorchmetricsFeature": "features",
    "feature_network_hash": "features",
    "load_feature_network": "features",
    "read_feature_metadata": "features",
    "frechet_distance": "metrics",
    "kernel_inception_distance": "metrics",
    "precision_recall": "metrics",
    "dataset_identity": "reference",
    "default_cache_dir": "reference",
    "InceptionFID": "inception",
    "evaluate": "protocol",
    "preset_pipeline": "presets",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'udpm.eval' has no attribute {name!r}")
    value = getattr(import_module(f"udpm.eval.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
