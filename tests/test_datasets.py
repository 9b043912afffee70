"""The loaders read real MNIST / Fashion-MNIST and fail clearly when files are missing or corrupt."""

import os
import shutil
from pathlib import Path

import pytest
import torch

import fedlab_widgets.datasets as ds
from fedlab_widgets import tensor_cache
from fedlab_widgets import DatasetNotFoundError, load_fashion_mnist, load_mnist


def test_mnist_shapes_types_and_normalisation(mnist):
    train, test = mnist
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.images.dtype == torch.float32 and train.labels.dtype == torch.int64
    assert len(train.classes) == 10 and train.num_classes == 10
    # normalised with the training mean/std (the well-known 0.1307 / 0.3081)
    assert train.mean == pytest.approx(0.1307, abs=1e-4) and train.std == pytest.approx(0.3081, abs=1e-4)
    assert float(train.images.mean()) == pytest.approx(0.0, abs=1e-4)
    assert float(train.images.std()) == pytest.approx(1.0, abs=1e-3)
    assert float(test.images.mean()) == pytest.approx(0.0, abs=0.02)
    assert torch.bincount(train.labels).tolist()[:2] == [5923, 6742]


def test_loaded_once_per_process(mnist):
    assert load_mnist() is mnist


def test_root_resolution_order(monkeypatch, tmp_path):
    monkeypatch.setenv("FEDLAB_DATA_DIR", str(tmp_path / "env"))
    assert ds.data_root(tmp_path / "explicit") == tmp_path / "explicit"
    assert ds.data_root() == tmp_path / "env"
    monkeypatch.delenv("FEDLAB_DATA_DIR")
    assert ds.data_root() == Path(ds.__file__).resolve().parent.parent / "data"


def _raw(root):
    return Path(root) / "MNIST" / "raw"


def test_missing_files_offline_names_files_and_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("FEDLAB_OFFLINE", "1")
    with pytest.raises(DatasetNotFoundError) as e:
        load_mnist(tmp_path)
    msg = str(e.value)
    assert "train-images-idx3-ubyte" in msg and "t10k-labels-idx1-ubyte" in msg
    assert str(_raw(tmp_path)) in msg and "FEDLAB_DATA_DIR" in msg


def test_missing_files_download_fails_cleanly_without_network(monkeypatch, tmp_path):
    """No network here: the download is tried, fails, and the same clear error results."""
    monkeypatch.delenv("FEDLAB_OFFLINE", raising=False)
    with pytest.raises(DatasetNotFoundError, match="download failed"):
        load_mnist(tmp_path)


def test_one_missing_file_is_named(monkeypatch, tmp_path, mnist):
    monkeypatch.setenv("FEDLAB_OFFLINE", "1")
    src = _raw(ds.data_root())
    (_raw(tmp_path)).mkdir(parents=True)
    for f in ds._RAW_FILES[:3]:
        os.symlink(src / f, _raw(tmp_path) / f)
    with pytest.raises(DatasetNotFoundError) as e:
        load_mnist(tmp_path)
    assert "t10k-labels-idx1-ubyte missing" in str(e.value)
    assert "train-images-idx3-ubyte," not in str(e.value).split("missing")[0]


def test_truncated_file_gives_clear_error(monkeypatch, tmp_path, mnist):
    monkeypatch.setenv("FEDLAB_OFFLINE", "1")
    src = _raw(ds.data_root())
    _raw(tmp_path).mkdir(parents=True)
    for f in ds._RAW_FILES:
        if f == "train-images-idx3-ubyte":
            data = (src / f).read_bytes()
            (_raw(tmp_path) / f).write_bytes(data[: len(data) // 3])
        else:
            os.symlink(src / f, _raw(tmp_path) / f)
    with pytest.raises(DatasetNotFoundError, match="truncated or corrupt"):
        load_mnist(tmp_path)


def test_fashion_mnist_from_debian_package(tmp_path, monkeypatch):
    """Debian's dataset-fashion-mnist (a README prerequisite) is found and unpacked."""
    monkeypatch.setenv("FEDLAB_OFFLINE", "1")
    assert ds.DEBIAN_FASHION_MNIST.is_dir(), (
        "Fashion-MNIST is missing: install it with `apt-get install dataset-fashion-mnist`")
    train, test = load_fashion_mnist(tmp_path)
    assert train.images.shape == (60000, 1, 28, 28) and len(test) == 10000
    assert train.classes[0] == "T-shirt/top" and train.name == "FashionMNIST"
    assert float(train.images.mean()) == pytest.approx(0.0, abs=1e-4)
    assert (tmp_path / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").is_file()
    shutil.rmtree(tmp_path / "FashionMNIST")


def test_parsed_copy_is_cached_and_refreshed_when_the_files_change(mnist, monkeypatch, tmp_path):
    """After the first parse, MNIST loads from a tensor file in the user's cache folder."""
    src = ds.data_root() / "MNIST" / "raw"
    raw = _raw(tmp_path / "data")
    raw.mkdir(parents=True)
    for f in ds._RAW_FILES:
        shutil.copy(src / f, raw / f)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    base = tmp_path / "data"
    first = ds._read("MNIST", base)
    files = list((tmp_path / "cache" / "fedlab-widgets").glob("MNIST-*.pt"))
    assert len(files) == 1 and not tensor_cache.paths("MNIST", base)[1].exists()
    assert tensor_cache.read("MNIST", base, ds._RAW_FILES) is not None
    second = ds._read("MNIST", base)
    # loaded memory-mapped: processes reading the same data share one copy in memory
    assert str(files[0]) in Path("/proc/self/maps").read_text()
    for a, b in zip(first, second):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert torch.equal(first[0].images, mnist[0].images)
    os.utime(raw / "t10k-labels-idx1-ubyte", ns=(1, 1))        # a replaced file: stale cache
    assert tensor_cache.read("MNIST", base, ds._RAW_FILES) is None
    ds._read("MNIST", base)
    assert tensor_cache.read("MNIST", base, ds._RAW_FILES) is not None


def test_unwritable_cache_still_loads(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))          # mkdir under a file fails
    src = ds.data_root()
    base = tmp_path / "ro"
    (base / "MNIST").mkdir(parents=True)
    os.symlink(src / "MNIST" / "raw", base / "MNIST" / "raw")
    (base / "MNIST").chmod(0o555)
    try:
        train, test = ds._read("MNIST", base)
    finally:
        (base / "MNIST").chmod(0o755)
    assert train.images.shape == (60000, 1, 28, 28)
