"""What latent diffusion's settings record about their stage-1 model file.

``LDMSettings(autoencoder=PATH)`` fills in the file's sha256 and its network arguments
here, once, when the config is made; a saved config already carries them, so loading a
trained LDM never needs the autoencoder file again (its weights are in the LDM's own file).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from udpm.errors import UDPMError


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def autoencoder_file(path) -> tuple[Path, dict]:
    """The model file of ``path`` (a file or a run directory) and its metadata.

    Raises a one-line error unless it is a checkpoint of ``--method autoencoder``.
    """
    from udpm.checkpoint import read_meta, resolve_model_file

    file = resolve_model_file(Path(path))
    meta = read_meta(file)
    method = meta.get("config", {}).get("method")
    if method != "autoencoder":
        raise UDPMError(
            f"--autoencoder {path}: expected a checkpoint of --method autoencoder, got {method}"
        )
    return file, meta


def describe_autoencoder(path) -> dict:
    """``autoencoder`` (the model file), ``autoencoder_sha256`` and ``autoencoder_network``."""
    file, meta = autoencoder_file(path)
    return {
        "autoencoder": str(file),
        "autoencoder_sha256": sha256_file(file),
        "autoencoder_network": dict(meta["config"]["network"]),
    }
