"""Dataset files: IDX and CIFAR-10 parsers on tiny files in the real formats, cache lookup,
checksummed atomic downloads (from file:// URLs; this machine has no internet)."""
import gzip
import hashlib
import io
import pickle
import struct
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from tasks import datasets
from conftest import md5_of, write_idx_gz, write_tiny_cifar10, write_tiny_mnist


@pytest.fixture
def tiny_mnist(tmp_path, monkeypatch):
    """Tiny MNIST files in a 'mirror' folder, with the module's checksums pointed at them."""
    mirror = tmp_path / "mirror"
    arrays = write_tiny_mnist(mirror, np.random.default_rng(0))
    monkeypatch.setattr(datasets, "MNIST_MD5", {name: md5_of(mirror / name) for name in arrays})
    monkeypatch.setattr(datasets, "MNIST_MIRRORS", [mirror.as_uri() + "/"])
    monkeypatch.delenv("LODO_OFFLINE", raising=False)
    return mirror, arrays


def test_read_idx_parses_big_endian_header_and_pixels(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (4, 28, 28))
    path = tmp_path / "x.gz"
    write_idx_gz(path, images, 2051)
    parsed = datasets.read_idx(path, magic=2051)
    assert parsed.dtype == np.uint8 and parsed.shape == (4, 28, 28)
    np.testing.assert_array_equal(parsed, images)


def test_read_idx_refuses_wrong_magic_and_truncated_data(tmp_path):
    labels = np.arange(10)
    write_idx_gz(tmp_path / "labels.gz", labels, 2049)
    with pytest.raises(ValueError, match="magic number 2049"):
        datasets.read_idx(tmp_path / "labels.gz", magic=2051)
    with gzip.open(tmp_path / "short.gz", "wb") as f:
        f.write(struct.pack(">II", 2049, 10) + bytes(7))
    with pytest.raises(ValueError, match="7 data bytes"):
        datasets.read_idx(tmp_path / "short.gz")


def test_load_mnist_downloads_from_mirror_and_parses(tiny_mnist, tmp_path):
    mirror, arrays = tiny_mnist
    cache = tmp_path / "cache"
    data = datasets.load_mnist(cache)
    np.testing.assert_array_equal(data["train_images"].numpy(), arrays["train-images-idx3-ubyte.gz"])
    np.testing.assert_array_equal(data["test_labels"].numpy(), arrays["t10k-labels-idx1-ubyte.gz"])
    assert data["train_images"].dtype == torch.uint8
    assert sorted(p.name for p in cache.iterdir()) == sorted(arrays)  # no temp files left


def test_cached_files_are_used_offline(tiny_mnist, monkeypatch):
    mirror, arrays = tiny_mnist
    monkeypatch.setenv("LODO_OFFLINE", "1")
    data = datasets.load_mnist(mirror, download=True)  # the mirror folder doubles as a filled cache
    np.testing.assert_array_equal(data["train_labels"].numpy(), arrays["train-labels-idx1-ubyte.gz"])


def test_cache_dir_prefers_argument_then_env_then_home(tmp_path, monkeypatch):
    monkeypatch.setenv("LODO_DATA_DIR", str(tmp_path / "env"))
    assert datasets.cache_dir(tmp_path / "arg") == tmp_path / "arg"
    assert datasets.cache_dir() == tmp_path / "env"
    monkeypatch.delenv("LODO_DATA_DIR")
    assert datasets.cache_dir() == Path.home() / ".cache" / "lodo-tune"


@pytest.mark.parametrize("how", ["download_false", "env_offline"])
def test_offline_missing_files_raise_one_line_error_naming_files_and_folder(tiny_mnist, tmp_path, monkeypatch, how):
    if how == "env_offline":
        monkeypatch.setenv("LODO_OFFLINE", "1")
    with pytest.raises(datasets.DatasetUnavailableError) as error:
        datasets.load_mnist(tmp_path / "empty", download=how != "download_false")
    message = str(error.value)
    assert "\n" not in message and "offline" in message
    assert "train-images-idx3-ubyte.gz" in message and str(tmp_path / "empty") in message
    assert not (tmp_path / "empty").exists() or not any((tmp_path / "empty").iterdir())


def test_checksum_mismatch_is_refused_and_leaves_no_file(tiny_mnist, tmp_path, monkeypatch):
    mirror, _ = tiny_mnist
    cache = tmp_path / "cache"
    name = "train-images-idx3-ubyte.gz"
    with pytest.raises(datasets.ChecksumError, match="Checksum mismatch"):
        datasets.download((mirror / name).as_uri(), cache / name, md5="0" * 32)
    assert list(cache.iterdir()) == []
    monkeypatch.setitem(datasets.MNIST_MD5, name, "0" * 32)
    with pytest.raises(datasets.DatasetUnavailableError, match="Checksum mismatch"):
        datasets.load_mnist(cache)
    assert name not in [p.name for p in cache.iterdir()]
    assert not [p for p in cache.iterdir() if p.suffix == ".part"]


def test_corrupt_cached_file_is_not_used(tiny_mnist, tmp_path):
    mirror, _ = tiny_mnist
    (mirror / "t10k-labels-idx1-ubyte.gz").write_bytes(b"corrupt")
    with pytest.raises(datasets.DatasetUnavailableError, match="t10k-labels-idx1-ubyte.gz"):
        datasets.load_mnist(mirror, download=False)


def test_failed_download_falls_back_to_next_mirror_then_raises(tiny_mnist, tmp_path, monkeypatch):
    mirror, arrays = tiny_mnist
    monkeypatch.setattr(datasets, "MNIST_MIRRORS", [(tmp_path / "nowhere").as_uri() + "/", mirror.as_uri() + "/"])
    assert datasets.load_mnist(tmp_path / "a")["train_images"].shape == (70, 28, 28)

    def unreachable(url, timeout=None):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(datasets.urllib.request, "urlopen", unreachable)
    with pytest.raises(datasets.DatasetUnavailableError, match="download failed.*no route to host"):
        datasets.load_mnist(tmp_path / "b")


def test_cifar10_archive_parses_channel_major_batches(tmp_path, monkeypatch):
    archive = tmp_path / "mirror" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    batches = write_tiny_cifar10(archive, np.random.default_rng(2))
    monkeypatch.setattr(datasets, "CIFAR10_MD5", {archive.name: md5_of(archive)})
    monkeypatch.setattr(datasets, "CIFAR10_MIRRORS", [archive.parent.as_uri() + "/"])
    monkeypatch.delenv("LODO_OFFLINE", raising=False)
    data = datasets.load_cifar10(tmp_path / "cache")
    assert data["train_images"].shape == (15, 3, 32, 32) and data["train_images"].dtype == torch.uint8
    assert data["test_images"].shape == (3, 3, 32, 32)
    # Image 4 is data_batch_2's second row; pixel (c, i, j) sits at c·1024 + i·32 + j.
    row = batches["data_batch_2"][b"data"][1]
    for c, i, j in [(0, 0, 0), (1, 5, 7), (2, 31, 31)]:
        assert data["train_images"][4, c, i, j] == row[c * 1024 + i * 32 + j]
    assert data["train_labels"].tolist() == sum((batches[f"data_batch_{k}"][b"labels"] for k in range(1, 6)), [])
    assert data["test_labels"].tolist() == batches["test_batch"][b"labels"]
