"""udpm.data: every SOURCE kind on tiny files made here, conversions, errors, PNG writers."""

import io
import json
import os
import pickle
import tarfile
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from udpm.data import (
    EMBEDDED_DATASETS,
    ImageDataset,
    ImageSet,
    check_divisible,
    load_source,
    save_image_grid,
    save_images,
    to_uint8,
)
from udpm.errors import UDPMError

RNG = np.random.default_rng(0)


def rgb(h=8, w=8):
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_png(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)
    return path


def png_bytes(array, mode=None):
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="PNG")
    return buf.getvalue()


# --- .npz ---------------------------------------------------------------------------------


def test_npz_grey_expands_to_rgb_or_stays_grey(tmp_path):
    grey = RNG.integers(0, 256, (5, 8, 8), dtype=np.uint8)
    labels = np.array([0, 1, 2, 1, 0])
    np.savez(tmp_path / "g.npz", images=grey, labels=labels, classes=np.array(["a", "b", "c"]))

    s = load_source(tmp_path / "g.npz")
    assert s.images.shape == (5, 3, 8, 8) and s.images.dtype == torch.uint8
    for c in range(3):
        assert torch.equal(s.images[:, c], torch.from_numpy(grey))
    assert s.labels.tolist() == labels.tolist() and s.labels.dtype == torch.int64
    assert s.class_names == ["a", "b", "c"] and s.num_classes == 3
    assert (len(s), s.resolution, s.channels) == (5, 8, 3)

    s1 = load_source(str(tmp_path / "g.npz"), channels=1, max_images=2)
    assert torch.equal(s1.images[:, 0], torch.from_numpy(grey[:2])) and s1.labels.tolist() == [0, 1]


def test_npz_rgb_unlabelled_and_to_grey_matches_pil(tmp_path):
    images = np.stack([rgb() for _ in range(3)])
    np.savez(tmp_path / "c.npz", images=images)
    s = load_source(tmp_path / "c.npz")
    assert torch.equal(s.images, torch.from_numpy(images).permute(0, 3, 1, 2))
    assert s.labels is None and s.class_names is None and s.num_classes == 0

    grey = load_source(tmp_path / "c.npz", channels=1).images[0, 0].numpy()
    assert np.array_equal(grey, np.asarray(Image.fromarray(images[0]).convert("L")))


def test_npz_rgba_is_composited_over_white(tmp_path):
    images = np.zeros((1, 2, 2, 4), np.uint8)
    images[0, 0, 0] = (10, 20, 30, 255)  # opaque
    images[0, 0, 1] = (0, 0, 0, 0)  # transparent black -> white
    images[0, 1, 0] = (0, 0, 0, 128)  # half-transparent black -> mid grey
    np.savez(tmp_path / "a.npz", images=images)
    out = load_source(tmp_path / "a.npz").images[0].permute(1, 2, 0)
    assert out[0, 0].tolist() == [10, 20, 30]
    assert out[0, 1].tolist() == [255, 255, 255]
    assert out[1, 0].tolist() == [127, 127, 127]


# --- folders ------------------------------------------------------------------------------


def test_folder_with_class_subfolders_and_mixed_modes(tmp_path):
    root = tmp_path / "imgs"
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:4, :, 3] = 255  # top half opaque red, bottom half transparent
    write_png(root / "cat" / "a_rgba.png", rgba, "RGBA")
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    palette.save(root / "cat" / "b_palette.png")
    grey = RNG.integers(0, 256, (8, 8), dtype=np.uint8)
    write_png(root / "dog" / "nested" / "c_grey.png", grey, "L")
    (root / "dog" / "notes.txt").write_text("not an image")
    write_png(root / ".hidden" / "x.png", rgb())  # hidden folders are skipped

    s = load_source(root)
    assert s.images.shape == (3, 3, 8, 8)
    assert s.class_names == ["cat", "dog"] and s.labels.tolist() == [0, 0, 1]
    px = s.images.permute(0, 2, 3, 1)
    assert px[0, 0, 0].tolist() == [200, 0, 0] and px[0, 7, 0].tolist() == [255, 255, 255]
    assert px[1, 3, 3].tolist() == [10, 200, 30]
    assert torch.equal(px[2, ..., 1], torch.from_numpy(grey))

    s1 = load_source(root, channels=1)
    assert s1.images.shape == (3, 1, 8, 8) and torch.equal(s1.images[2, 0], torch.from_numpy(grey))


def test_folder_with_one_subfolder_is_unlabelled_and_sorted(tmp_path):
    images = [rgb() for _ in range(3)]
    write_png(tmp_path / "b.png", images[1])
    write_png(tmp_path / "a.png", images[0])
    write_png(tmp_path / "sub" / "c.jpg", images[2])  # jpg: lossy, only its position is checked
    s = load_source(tmp_path)
    assert s.labels is None and len(s) == 3
    assert torch.equal(s.images[0], torch.from_numpy(images[0]).permute(2, 0, 1))
    assert torch.equal(s.images[1], torch.from_numpy(images[1]).permute(2, 0, 1))


def test_folder_mixing_class_folders_and_loose_images_is_refused(tmp_path):
    for name in ("cat/a.png", "dog/b.png", "loose.png"):
        write_png(tmp_path / name, rgb())
    with pytest.raises(UDPMError, match=r"mixes class folders .*'loose.png'"):
        load_source(tmp_path)


# --- zips ---------------------------------------------------------------------------------


def test_zip_labels_by_top_folder_through_a_wrapper(tmp_path):
    images = [rgb() for _ in range(3)]
    with zipfile.ZipFile(tmp_path / "afhq.zip", "w") as z:
        z.writestr("afhq/dog/1.png", png_bytes(images[2]))
        z.writestr("afhq/cat/2.png", png_bytes(images[1]))
        z.writestr("afhq/cat/1.png", png_bytes(images[0]))
        z.writestr("__MACOSX/afhq/cat/._1.png", b"resource fork junk")
        z.writestr("afhq/README.txt", "text")
    s = load_source(tmp_path / "afhq.zip", max_images=3)
    assert s.class_names == ["cat", "dog"] and s.labels.tolist() == [0, 0, 1]
    for i in range(3):
        assert torch.equal(s.images[i], torch.from_numpy(images[i]).permute(2, 0, 1))


def test_zip_flat_is_unlabelled(tmp_path):
    with zipfile.ZipFile(tmp_path / "flat.zip", "w") as z:
        for i in range(2):
            z.writestr(f"img{i}.png", png_bytes(rgb()))
    s = load_source(tmp_path / "flat.zip", channels=1)
    assert s.labels is None and s.images.shape == (2, 1, 8, 8)


@pytest.mark.parametrize("labels", [None, [["00000/a.png", 4], ["01000/b.png", 2]]])
def test_zip_dataset_json_overrides_folder_labels(tmp_path, labels):
    # The StyleGAN/EDM dataset zip (FFHQ-64, AFHQv2-64): chunk folders plus dataset.json.
    with zipfile.ZipFile(tmp_path / "edm.zip", "w") as z:
        z.writestr("00000/a.png", png_bytes(rgb()))
        z.writestr("01000/b.png", png_bytes(rgb()))
        z.writestr("dataset.json", json.dumps({"labels": labels}))
    s = load_source(tmp_path / "edm.zip")
    assert (s.labels is None) if labels is None else (s.labels.tolist() == [4, 2])


# --- CIFAR tarball ------------------------------------------------------------------------

CIFAR_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer"]
CIFAR_NAMES += [b"dog", b"frog", b"horse", b"ship", b"truck"]


def cifar_batch(n, first_label, title):
    """A batch dict with the real CIFAR-10 layout: bytes keys, rows of R, G, B planes."""
    data = RNG.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [(first_label + i) % 10 for i in range(n)]
    files = [b"img_%d.png" % i for i in range(n)]
    return {b"batch_label": title, b"labels": labels, b"data": data, b"filenames": files}


def write_tar(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def make_cifar(tmp_path, numpy1_names=False):
    batches = {
        "data_batch_1": cifar_batch(3, 0, b"training batch 1 of 5"),
        "data_batch_2": cifar_batch(2, 5, b"training batch 2 of 5"),
        "test_batch": cifar_batch(2, 7, b"testing batch 1 of 1"),
    }
    meta = {b"num_cases_per_batch": 3, b"label_names": CIFAR_NAMES, b"num_vis": 3072}
    members = {}
    for name, obj in [*batches.items(), ("batches.meta", meta)]:
        raw = pickle.dumps(obj, protocol=2)  # Python 2's cPickle wrote protocol 2
        if numpy1_names:  # as written by numpy 1.x, the form of the real download
            raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        members[name] = raw
    return write_tar(tmp_path / "cifar-10-python.tar.gz", members), batches


@pytest.mark.parametrize("numpy1_names", [False, True])
def test_cifar_tarball_train_and_test(tmp_path, numpy1_names):
    path, batches = make_cifar(tmp_path, numpy1_names)
    s = load_source(path)
    assert s.images.shape == (5, 3, 32, 32) and s.labels.tolist() == [0, 1, 2, 5, 6]
    assert s.class_names == [n.decode() for n in CIFAR_NAMES] and s.num_classes == 10
    expected = batches["data_batch_1"][b"data"][1].reshape(3, 32, 32)
    assert torch.equal(s.images[1], torch.from_numpy(expected))

    test = load_source(path, split="test", resolution=16, channels=1)
    assert test.images.shape == (2, 1, 16, 16) and test.labels.tolist() == [7, 8]
    assert load_source(path, max_images=4).labels.tolist() == [0, 1, 2, 5]


class Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifar_refuses_a_malicious_pickle_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    batch = {b"data": Exploit(marker), b"labels": [0]}
    path = write_tar(tmp_path / "cifar-10-python.tar.gz", {"data_batch_1": pickle.dumps(batch)})
    with pytest.raises(
        UDPMError, match=r"data_batch_1 .*refusing to load global '(posix|os|nt)\.system'"
    ):
        load_source(path)
    assert not marker.exists()


def test_cifar_errors(tmp_path):
    no_batches = write_tar(tmp_path / "other.tar.gz", {"readme.txt": b"hello"})
    with pytest.raises(UDPMError, match=r"no images found in .*other.tar.gz"):
        load_source(no_batches)
    (tmp_path / "broken.tar.gz").write_bytes(b"not a tarball")
    with pytest.raises(UDPMError, match=r"cannot read .*broken.tar.gz: not a tar archive"):
        load_source(tmp_path / "broken.tar.gz")
    path, _ = make_cifar(tmp_path)
    with pytest.raises(UDPMError, match="split must be 'train' or 'test', got 'val'"):
        load_source(path, split="val")


# --- embedded -----------------------------------------------------------------------------


def test_embedded_emoji32():
    assert "emoji32" in EMBEDDED_DATASETS
    s = load_source("emoji32")
    assert s.images.shape == (3781, 3, 32, 32) and s.images.dtype == torch.uint8
    assert s.num_classes == 9 and len(s.class_names) == 9 and s.source == "emoji32"
    assert s.labels.shape == (3781,) and 0 <= int(s.labels.min()) <= int(s.labels.max()) < 9


# --- resizing, dataset, divisibility ------------------------------------------------------


def test_resize_scales_shorter_side_and_crops_centre(tmp_path):
    wide = np.zeros((8, 24, 3), np.uint8)
    wide[:, 4:20] = 255  # black bars at the sides are cropped away
    write_png(tmp_path / "wide.png", wide)
    s = load_source(tmp_path, resolution=4)
    assert s.images.shape == (1, 3, 4, 4) and int(s.images.min()) >= 250

    square = rgb(4, 4)
    write_png(tmp_path / "sq" / "a.png", square)
    same = load_source(tmp_path / "sq", resolution=4)  # already the size: untouched
    assert torch.equal(same.images[0], torch.from_numpy(square).permute(2, 0, 1))
    assert load_source(tmp_path / "sq", resolution=12).images.shape == (1, 3, 12, 12)

    np.savez(tmp_path / "n.npz", images=np.stack([wide, wide]))
    assert load_source(tmp_path / "n.npz", resolution=4, channels=1).images.shape == (2, 1, 4, 4)


def test_image_dataset_range_labels_and_reproducible_flips():
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).reshape(2, 3, 4, 4)
    images[0, :, 0, 0], images[1, :, 0, 0] = 0, 255
    unlabelled = ImageDataset(ImageSet(images, source="t"), hflip=False)
    x, label = unlabelled[0]
    assert x.dtype == torch.float32 and x.shape == (3, 4, 4) and label == -1
    assert x[0, 0, 0] == -1.0 and unlabelled[1][0][0, 0, 0] == 1.0

    flipping = ImageDataset(ImageSet(images, torch.tensor([3, 1]), source="t"))
    torch.manual_seed(0)
    draws = [flipping[1][0] for _ in range(32)]
    torch.manual_seed(0)
    assert all(torch.equal(a, flipping[1][0]) for a in draws)
    plain = images[1].float() / 127.5 - 1
    flips = [torch.equal(d, plain.flip(-1)) for d in draws]
    assert any(flips) and not all(flips)
    assert all(f or torch.equal(d, plain) for f, d in zip(flips, draws))
    assert flipping[0][1] == 3
    assert all(torch.equal(unlabelled[1][0], plain) for _ in range(8))


def test_check_divisible():
    assert check_divisible(32, 2, 3) == 4
    assert check_divisible(64, 4, 2) == 4
    with pytest.raises(UDPMError, match=r"image size 30 is not divisible by 2\^3 = 8.*24 or 32"):
        check_divisible(30, 2, 3)


def test_image_set_checks():
    images = torch.zeros(2, 3, 4, 6, dtype=torch.uint8)
    s = ImageSet(images, source="x")
    assert "2 images, 3x4x6" in repr(s)
    with pytest.raises(UDPMError, match="are 6x4, not square"):
        _ = s.resolution
    with pytest.raises(UDPMError, match="must be a uint8"):
        ImageSet(images.float())
    with pytest.raises(UDPMError, match="labels in x go up to 2 but only 2 classes"):
        ImageSet(images, torch.tensor([0, 2]), ["a", "b"], "x")


# --- errors -------------------------------------------------------------------------------


def test_source_errors(tmp_path):
    with pytest.raises(UDPMError, match=r"no such file or folder: .*missing.npz"):
        load_source(tmp_path / "missing.npz")
    with pytest.raises(UDPMError, match="empty data source"):
        load_source("")
    with pytest.raises(UDPMError, match=r"unknown data set 'emoji99'.*: emoji32"):
        load_source("emoji99")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(UDPMError, match=r"unsupported data source .*notes.txt"):
        load_source(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UDPMError, match=r"no images found in .*empty"):
        load_source(tmp_path / "empty")
    with zipfile.ZipFile(tmp_path / "e.zip", "w") as z:
        z.writestr("a.txt", "x")
    with pytest.raises(UDPMError, match=r"no images found in .*e.zip"):
        load_source(tmp_path / "e.zip")
    (tmp_path / "bad.zip").write_bytes(b"nope")
    with pytest.raises(UDPMError, match=r"cannot read .*bad.zip: not a zip archive"):
        load_source(tmp_path / "bad.zip")
    for kwargs, message in [
        ({"channels": 2}, "channels must be 1 .* got 2"),
        ({"resolution": 0}, "resolution must be a positive integer, got 0"),
        ({"max_images": -1}, "max_images must be a positive integer, got -1"),
    ]:
        with pytest.raises(UDPMError, match=message):
            load_source("emoji32", **kwargs)


def test_corrupt_images_are_named(tmp_path):
    write_png(tmp_path / "d" / "ok.png", rgb())
    good = png_bytes(rgb())
    (tmp_path / "d" / "bad.png").write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(UDPMError, match=r"cannot read image 'bad.png' in .*d"):
        load_source(tmp_path / "d")
    with zipfile.ZipFile(tmp_path / "c.zip", "w") as z:
        z.writestr("x/ok.png", good)
        z.writestr("x/junk.jpg", b"definitely not a jpeg")
    with pytest.raises(UDPMError, match=r"cannot read image 'x/junk.jpg' in .*c.zip: not a rec"):
        load_source(tmp_path / "c.zip")


def test_differing_sizes_need_a_resolution(tmp_path):
    write_png(tmp_path / "a.png", rgb(8, 8))
    write_png(tmp_path / "b.png", rgb(6, 10))
    with pytest.raises(UDPMError, match=r"differ in size: 'a.png' is 8x8 but 'b.png' is 10x6"):
        load_source(tmp_path)
    assert load_source(tmp_path, resolution=8).images.shape == (2, 3, 8, 8)


def test_npz_errors(tmp_path):
    images = np.zeros((99, 4, 4, 3), np.uint8)
    cases = {
        "X.npz": (
            {"images": images, "labels": np.zeros(100, np.int64)},
            r"^mismatched labels: 100 labels for 99 images in .*X\.npz$",
        ),
        "nolabel.npz": ({"pixels": images}, r"has no 'images' array \(it holds: pixels\)"),
        "float.npz": ({"images": images.astype(np.float32)}, "must be uint8, got float32"),
        "ndim.npz": ({"images": images[0, 0]}, r"must be NxHxW or NxHxWxC .*got shape \(4, 3\)"),
        "none.npz": ({"images": images[:0]}, "no images found in .*none.npz"),
        "neg.npz": ({"images": images[:1], "labels": np.array([-1])}, "must be non-negative"),
    }
    for name, (arrays, message) in cases.items():
        np.savez(tmp_path / name, **arrays)
        with pytest.raises(UDPMError, match=message):
            load_source(tmp_path / name)
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(UDPMError, match=r"cannot read .*junk.npz: not an .npz"):
        load_source(tmp_path / "junk.npz")


# --- writing PNGs -------------------------------------------------------------------------


def test_to_uint8():
    x = torch.tensor([-1.0, 0.0, 1.0, 3.0, -7.0, float("nan")])
    assert to_uint8(x).tolist() == [0, 128, 255, 255, 0, 128]


def test_save_image_grid_size_and_content(tmp_path):
    images = torch.rand(5, 3, 4, 6) * 2 - 1
    path = save_image_grid(images, tmp_path / "out" / "grid.png")
    with Image.open(path) as im:  # 3 columns x 2 rows, 2 px padding
        assert im.size == (3 * (6 + 2) + 2, 2 * (4 + 2) + 2) and im.mode == "RGB"
        grid = np.asarray(im)
    assert np.array_equal(grid[2:6, 2:8], to_uint8(images[0]).permute(1, 2, 0).numpy())
    assert grid[0].max() == 0
    with Image.open(save_image_grid(images[:, :1], tmp_path / "g.png", nrow=5)) as im:
        assert im.size == (5 * 8 + 2, 4 + 4) and im.mode == "L"


def test_save_images_round_trip(tmp_path):
    images = torch.rand(3, 3, 4, 4) * 2 - 1
    paths = save_images(images, tmp_path / "s", prefix="x", start=10)
    assert [p.name for p in paths] == ["x000010.png", "x000011.png", "x000012.png"]
    back = load_source(tmp_path / "s")
    assert torch.equal(back.images, to_uint8(images))
    with pytest.raises(UDPMError, match="C = 1 or 3"):
        save_images(torch.zeros(1, 2, 4, 4), tmp_path / "s")


def test_symlink_loops_are_walked_once(tmp_path):
    folder = tmp_path / "imgs"
    (folder / "a").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 50 * i, np.uint8)).save(folder / "a" / f"{i}.png")
    (folder / "a" / "loop").symlink_to(folder)  # a → loop → imgs → a → ...
    (folder / "again").symlink_to(folder / "a")  # the same folder under a second name
    outside = tmp_path / "outside"
    outside.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(outside / "x.png")
    (folder / "a" / "linked").symlink_to(outside)  # a real folder elsewhere is followed
    data = load_source(folder)
    assert len(data) == 4


def test_images_above_the_pixel_cap_are_refused_before_decoding(tmp_path, monkeypatch):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "small.png")
    Image.fromarray(np.zeros((300, 200, 3), np.uint8)).save(folder / "big.png")
    decoded = []
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(self.size))
    with pytest.raises(UDPMError, match=r"'big.png' .* is 200x300 = 0.1 megapixels, above"):
        load_source(folder, resolution=8, max_pixels=100 * 100)
    assert (200, 300) not in decoded
    monkeypatch.undo()
    assert len(load_source(folder, resolution=8, max_pixels=None)) == 2
    with zipfile.ZipFile(tmp_path / "imgs.zip", "w") as zf:
        zf.write(folder / "big.png", "big.png")
    with pytest.raises(UDPMError, match="above the cap"):
        load_source(tmp_path / "imgs.zip", resolution=8, max_pixels=100 * 100)
