"""A newcomer's own images through the CLI with no overrides: train, sample, eval.

Two collections a researcher might have: grey 28-px digits in class folders (with a
README.txt beside them), and flat 64-px RGB emoji in a zip. Each command must say in its
first lines what it found and what it does with it.
"""

import io
import json
import zipfile

import numpy as np
import pytest
import yaml
from PIL import Image

from udpm.cli import main


def _digits(root, n=40):
    rng = np.random.default_rng(0)
    for i in range(n):
        (root / str(i % 4)).mkdir(parents=True, exist_ok=True)
        image = rng.integers(0, 60, (28, 28), dtype=np.uint8)
        image[3 + 6 * (i % 4) : 7 + 6 * (i % 4), 4:24] = 255
        Image.fromarray(image).save(root / str(i % 4) / f"{i}.png")
    (root / "README.txt").write_text("my digits")
    return root


def _emoji_zip(path, n=40):
    rng = np.random.default_rng(1)
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(n):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
            archive.writestr(f"{i:03d}.png", buf.getvalue())
    return path


def _run(capsys, argv):
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out.splitlines(), captured.err


@pytest.mark.parametrize("kind", ["grey-folder", "rgb-zip"])
def test_own_images_train_sample_eval(tmp_path, capsys, kind):
    if kind == "grey-folder":
        data, shape, native = _digits(tmp_path / "digits"), (1, 32), "28x28 grey, 4 classes"
    else:
        data, shape, native = _emoji_zip(tmp_path / "emoji.zip"), (3, 64), "64x64 colour"
    channels, side = shape
    run = tmp_path / "run"
    out, err = _run(capsys, ["train", "--data", str(data), "--out", str(run), "--steps", "1",
                             "--no-progress"])  # fmt: skip
    first = out[0]
    assert first.startswith(f"data: {data}: 40 images, {native}")
    assert f"-> {side}x{side} {'grey' if channels == 1 else 'RGB'}" in first
    assert ("no flips" in first) == (channels == 1)
    if kind == "grey-folder":
        assert "skipped 1 file(s) that are not images: README.txt" in out[1] + err
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert (config["channels"], config["resolution"]) == shape
    assert config["network"]["image_channels"] == channels

    out, _ = _run(capsys, ["sample", "--checkpoint", str(run), "--out", str(tmp_path / "s"),
                           "--n", "3", "--no-progress"])  # fmt: skip
    assert out[0].startswith("sampling 3 images from a udpm model")
    image = Image.open(tmp_path / "s" / "seed000000.png")
    assert image.size == (side, side) and image.mode == ("L" if channels == 1 else "RGB")

    result = tmp_path / "eval.json"
    argv = ["eval", "--checkpoint", str(run), "--data", str(data), "--n", "6", "--metrics", "fd"]
    out, err = _run(capsys, [*argv, "--no-progress", "--json", str(result)])
    assert out[0].startswith(f"reference: {data}: 40 images, {native}")
    assert "measured as" in out[0] and "udpm features --data" in err
    record = json.loads(result.read_text())
    assert record["n_reference"] == 40 and record["fd"] >= 0 and "fd_floor" in record
