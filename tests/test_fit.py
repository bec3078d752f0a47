"""Settings follow the data: a survey of the SOURCE's headers, and the config fitted to it."""

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from udpm.config import preset_config
from udpm.config.fit import allowed_resolution, fit_config, summary
from udpm.data.survey import survey


@pytest.fixture
def digits(tmp_path):
    """Grey 28-px images in 3 class folders, one RGBA and one JPEG among them, and a README."""
    rng = np.random.default_rng(0)
    root = tmp_path / "digits"
    for i in range(9):
        (root / str(i % 3)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(
            root / f"{i % 3}/{i}.png"
        )
    Image.fromarray(rng.integers(0, 255, (28, 28, 4), dtype=np.uint8), "RGBA").save(
        root / "0/a.png"
    )
    Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(root / "1/b.jpg")
    (root / "README.txt").write_text("my digits")
    return root


def test_survey_reads_sizes_modes_classes_and_skips(digits):
    s = survey(digits)
    assert s.n == 11 and s.class_names == ["0", "1", "2"] and s.skipped == ["README.txt"]
    assert s.sizes[(28, 28)] == 10 and s.sizes[(40, 30)] == 1 and s.side == 28
    assert not s.grey  # one RGBA and one colour JPEG
    said = "\n".join(s.conversions(32, 1))
    for words in ("README.txt", "1 image(s) with transparency", "2 colour image(s)", "11 image(s)"):
        assert words in said


def test_grey_npz_fits_grey_without_flips_at_the_next_allowed_size(tmp_path):
    path = tmp_path / "g.npz"
    np.savez(path, images=np.zeros((5, 28, 28), np.uint8), labels=np.arange(5) % 2)
    s = survey(path)
    assert s.grey and s.side == 28 and len(s.class_names) == 2
    config, notes = fit_config(preset_config("emoji32-cpu"), s, given=set())
    assert (config.channels, config.resolution, config.hflip) == (1, 32, False)
    assert config.network["image_channels"] == 1  # the networks follow (one setting, not three)
    line = summary(config, s, notes)
    assert "28x28 grey" in line and "-> 32x32 grey" in line and "rounded up from 28" in line
    # What the user gave stays, whatever the data says.
    config, _ = fit_config(preset_config("emoji32-cpu"), s, given={"channels", "hflip"})
    assert (config.channels, config.hflip) == (3, True)


def test_64px_zip_trains_at_64_with_flips(tmp_path):
    path = tmp_path / "e.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(3):
            buf = io.BytesIO()
            Image.fromarray(np.full((64, 64, 3), 40 * i, np.uint8)).save(buf, "PNG")
            archive.writestr(f"emoji/{i}.png", buf.getvalue())
    config, _ = fit_config(preset_config("emoji32-cpu"), survey(path), given=set())
    assert (config.channels, config.resolution, config.hflip) == (3, 64, True)
    assert config.discriminator["resolution"] == 64 and config.network["resolution"] == 32


def test_allowed_resolution_is_what_the_method_accepts():
    udpm, ddpm = preset_config("emoji32-cpu"), preset_config("emoji32-cpu-ddpm")
    assert [allowed_resolution(udpm, s) for s in (28, 32, 33, 60)] == [32, 32, 40, 64]
    assert allowed_resolution(ddpm, 28) == 28  # the U-Net halves twice: a multiple of 4
    assert allowed_resolution(ddpm, 30) == 32


def test_embedded_data_keeps_the_presets_settings():
    config, _ = fit_config(preset_config("emoji32-cpu"), survey("emoji32"), given=set())
    assert config == preset_config("emoji32-cpu")


def test_a_few_colour_files_make_the_set_rgb_and_say_so(digits):
    s = survey(digits)
    config, notes = fit_config(preset_config("emoji32-cpu"), s, given=set())
    assert config.channels == 3 and config.hflip is True
    assert any("2 of 11 images in colour; --set channels=1" in note for note in notes)
    assert any("9 grey image(s) repeated to RGB" in line for line in s.conversions(32, 3))
