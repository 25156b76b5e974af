"""Classification data: embedded digits, CIFAR-10 batches, image folders, synthetic; batches and augmentation."""

import pickle

import numpy as np
import pytest
import torch

from archc.data.batches import Augment, Batches, pixel_mean, ten_crop
from archc.data.classify import TensorImageSet, open_classify_data
from archc.errors import DataError

SHAPE = (3, 32, 32)


def test_digits_default_split_is_fixed_and_stratified():
    d = open_classify_data(None, input_shape=SHAPE, num_classes=10)
    assert d.name == "digits" and d.classes == [str(i) for i in range(10)]
    assert (len(d.train), len(d.test)) == (1438, 359)
    assert d.train.images.shape[1:] == SHAPE and d.train.images.dtype == torch.uint8
    counts = torch.bincount(d.test.labels, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # 20% of each class (174..183 images per class)
    again = open_classify_data("digits", input_shape=SHAPE, num_classes=10)
    assert torch.equal(again.test.images, d.test.images) and torch.equal(again.train.labels, d.train.labels)
    # greyscale replicated to three channels, the full 0..255 range used
    assert torch.equal(d.train.images[:, 0], d.train.images[:, 2]) and d.train.images.max() == 255


def test_class_count_must_fit_the_head():
    with pytest.raises(DataError, match="num_classes=10"):
        open_classify_data(None, input_shape=SHAPE, num_classes=100)
    with pytest.raises(DataError, match="unknown data set"):
        open_classify_data("mnist", input_shape=SHAPE, num_classes=10)


def _write_cifar(root, n_per_batch=4, seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir()
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n_per_batch)]
        obj = {
            b"batch_label": name.encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [f"{name}_{i}.png".encode() for i in range(n_per_batch)],
        }
        (root / name).write_bytes(pickle.dumps(obj, protocol=2))
        batches[name] = obj
    meta = {
        b"label_names": [n.encode() for n in "airplane automobile bird cat deer dog frog horse ship truck".split()],
        b"num_vis": 3072,
        b"num_cases_per_batch": n_per_batch,
    }
    (root / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return batches


def test_cifar10_reads_the_python_batches(tmp_path):
    batches = _write_cifar(tmp_path / "cifar")
    d = open_classify_data(f"cifar10:{tmp_path / 'cifar'}", input_shape=SHAPE, num_classes=10)
    assert (len(d.train), len(d.test)) == (20, 4) and d.classes[0] == "airplane"
    row = batches["data_batch_2"][b"data"][1]
    img = d.train.images[4 + 1]  # second image of the second batch
    # the row holds 1024 red, then green, then blue values, each 32x32 row-major
    assert img[0, 0, 0] == row[0] and img[0, 0, 1] == row[1] and img[0, 1, 0] == row[32]
    assert img[1, 0, 0] == row[1024] and img[2, 31, 31] == row[3071]
    assert d.train.labels[5] == batches["data_batch_2"][b"labels"][1]


def test_cifar10_errors_name_the_file(tmp_path):
    root = tmp_path / "cifar"
    _write_cifar(root)
    (root / "data_batch_3").write_bytes((root / "data_batch_3").read_bytes()[:100])
    with pytest.raises(DataError, match="data_batch_3"):
        open_classify_data(f"cifar10:{root}", input_shape=SHAPE, num_classes=10)
    (root / "data_batch_3").unlink()
    with pytest.raises(DataError, match="missing: .*data_batch_3"):
        open_classify_data(f"cifar10:{root}", input_shape=SHAPE, num_classes=10)
    with pytest.raises(DataError, match="not found"):
        open_classify_data(f"cifar10:{tmp_path / 'nowhere'}", input_shape=SHAPE, num_classes=10)


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED",))


def test_cifar10_never_unpickles_arbitrary_objects(tmp_path, monkeypatch):
    root = tmp_path / "cifar"
    _write_cifar(root)
    (root / "test_batch").write_bytes(pickle.dumps({b"data": _Evil(), b"labels": []}, protocol=2))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="refusing to load .*system"):
        open_classify_data(f"cifar10:{root}", input_shape=SHAPE, num_classes=10)
    assert not (tmp_path / "PWNED").exists()


def _write_folder(root, classes=("cat", "dog"), per=3, size=(40, 30)):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per):
                arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(arr).save(root / split / c / f"{i}.png")


def test_imagefolder_lazy_crops_and_errors(tmp_path):
    _write_folder(tmp_path / "imgs")
    d = open_classify_data(f"imagefolder:{tmp_path / 'imgs'}", input_shape=(3, 24, 24), num_classes=2)
    assert d.classes == ["cat", "dog"] and len(d.train) == 6 and d.train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert d.train.load(torch.tensor([0, 4])).shape == (2, 3, 30, 40)  # decoded at their stored size
    aug = Augment(flip=True, scale=(26, 34), test_crop="ten", resize_to=28)
    b = Batches(d.train, batch_size=4, input_shape=(3, 24, 24), train=True, augment=aug, mean=None, seed=1)
    x, y = b.batch(0)
    assert x.shape == (4, 3, 24, 24) and y.shape == (4,)
    assert torch.equal(b.batch(0)[0], x)
    t = Batches(d.test, batch_size=4, input_shape=(3, 24, 24), train=False, augment=aug, mean=None, seed=0)
    xs = [xb for xb, _ in t]
    assert sum(len(xb) for xb in xs) == 60  # 6 images x 10 crops
    (tmp_path / "imgs/val/cat/0.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="0.png"):
        list(t)
    (tmp_path / "imgs/val/bird").mkdir()
    with pytest.raises(DataError, match="other classes"):
        open_classify_data(f"imagefolder:{tmp_path / 'imgs'}", input_shape=(3, 24, 24), num_classes=2)


def _set(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorImageSet(torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8), torch.arange(n) % 5)


def test_batches_are_pure_functions_of_seed_and_index():
    data = _set()
    aug = Augment(pad_crop=2, flip=True, pca_std=0.1)
    a = Batches(data, batch_size=8, input_shape=(3, 8, 8), train=True, augment=aug, mean=None, seed=3)
    b = Batches(data, batch_size=8, input_shape=(3, 8, 8), train=True, augment=aug, mean=None, seed=3)
    x7 = a.batch(7)
    for _ in range(2):
        assert torch.equal(b.batch(7)[0], x7[0]) and torch.equal(b.batch(7)[1], x7[1])
    assert not torch.equal(a.batch(6)[0], x7[0])
    # one epoch (5 batches) covers every image exactly once; the next epoch is another order
    first = torch.cat([a.batch(i)[1] for i in range(5)])
    assert sorted(first.tolist()) == sorted(data.labels.tolist())
    assert [a.batch(i)[1].tolist() for i in range(5)] != [a.batch(i)[1].tolist() for i in range(5, 10)]
    c = Batches(data, batch_size=8, input_shape=(3, 8, 8), train=True, augment=aug, mean=None, seed=4)
    assert not torch.equal(c.batch(7)[0], x7[0])
    pre = a.prefetch(3)
    assert all(torch.equal(next(pre)[0], a.batch(i)[0]) for i in range(3, 8))
    w = Batches(data, batch_size=8, input_shape=(3, 8, 8), train=True, augment=aug, mean=None, seed=3, workers=2)
    pre = w.prefetch(0)
    assert all(torch.equal(next(pre)[0], a.batch(i)[0]) for i in range(4))


def test_shards_of_two_ranks_make_the_global_batch():
    data = _set()
    aug = Augment(pad_crop=2, flip=True, pca_std=0.1)
    one = Batches(data, batch_size=8, input_shape=(3, 8, 8), train=True, augment=aug, mean=None, seed=1)
    ranks = [
        Batches(data, batch_size=8, input_shape=(3, 8, 8), train=True, augment=aug, mean=None, seed=1, rank=r, world=2)
        for r in range(2)
    ]
    for i in (0, 4, 9):
        xs, ys = zip(*(r.batch(i) for r in ranks), strict=True)
        assert torch.equal(torch.cat(xs), one.batch(i)[0]) and torch.equal(torch.cat(ys), one.batch(i)[1])
    with pytest.raises(DataError, match="does not split"):
        Batches(data, batch_size=9, input_shape=(3, 8, 8), train=True, augment=aug, mean=None, seed=1, world=2)
    tests = [
        Batches(data, batch_size=7, input_shape=(3, 8, 8), train=False, augment=aug, mean=None, seed=0, rank=r, world=3)
        for r in range(3)
    ]
    seen = torch.cat([yb for t in tests for _, yb in t])
    assert torch.equal(seen, data.labels)


def test_pad_crop_flip_and_mean():
    img = torch.arange(64, dtype=torch.uint8).reshape(1, 1, 8, 8).expand(1, 3, 8, 8).contiguous()
    data = TensorImageSet(img.repeat(64, 1, 1, 1), torch.zeros(64, dtype=torch.long))
    aug = Augment(pad_crop=2, flip=True)
    b = Batches(data, batch_size=64, input_shape=(3, 8, 8), train=True, augment=aug, mean=None, seed=0)
    x, _ = b.batch(0)
    src = img[0, 0].float() / 255
    found_flip = found_shift = False
    for k in range(64):
        crop = x[k, 0]
        ok = False
        for flip in (False, True):
            s = src.flip(-1) if flip else src
            padded = torch.nn.functional.pad(s, (2, 2, 2, 2))
            for oy in range(5):
                for ox in range(5):
                    if torch.equal(padded[oy : oy + 8, ox : ox + 8], crop):
                        ok = True
                        found_flip |= flip
                        found_shift |= (oy, ox) != (2, 2)
        assert ok, k  # every crop is a <= 2 px shift of the (possibly mirrored) image
    assert found_flip and found_shift
    mean = pixel_mean(data, (3, 8, 8))
    torch.testing.assert_close(mean[0], src)
    m = Batches(data, batch_size=8, input_shape=(3, 8, 8), train=False, augment=Augment(), mean=mean, seed=0)
    xb, _ = next(iter(m))
    assert xb.abs().max() == 0


def test_pca_colour_noise_is_small_and_zero_mean():
    data = _set(400)
    aug = Augment(pca_std=0.1)
    plain = Batches(data, batch_size=200, input_shape=(3, 8, 8), train=True, augment=Augment(), mean=None, seed=0)
    col = Batches(data, batch_size=200, input_shape=(3, 8, 8), train=True, augment=aug, mean=None, seed=0)
    d = col.batch(0)[0] - plain.batch(0)[0]
    per_image = d.mean(dim=(2, 3))
    # one RGB shift per image, constant over its pixels
    assert torch.allclose(d, per_image[:, :, None, None].expand_as(d), atol=1e-6)
    assert per_image.abs().mean() < 0.1 and per_image.abs().max() > 1e-4
    assert per_image.mean(0).abs().max() < 0.02


def test_ten_crop_order():
    img = torch.arange(36, dtype=torch.float32).reshape(1, 1, 6, 6)
    crops = ten_crop(img, 4, 4)
    assert crops.shape == (10, 1, 4, 4)
    assert crops[0, 0, 0, 0] == 0 and crops[1, 0, 0, -1] == 5 and crops[3, 0, -1, -1] == 35
    assert torch.equal(crops[4], img[0, :, 1:5, 1:5]) and torch.equal(crops[9], crops[4].flip(-1))


def test_synthetic_data():
    d = open_classify_data("synthetic:64", input_shape=SHAPE, num_classes=7)
    assert (len(d.train), len(d.test)) == (64, 16) and d.train.labels.max() < 7
    with pytest.raises(DataError):
        open_classify_data("synthetic:many", input_shape=SHAPE, num_classes=7)
