"""MNIST and CIFAR-10 on disk: cached, checksummed downloads and the two file formats' parsers.

Files live in a cache directory: the `data_dir` argument, else `$LODO_DATA_DIR`, else
`~/.cache/lodo-tune`. A missing file is fetched from the first mirror that answers (urllib),
written to a temporary file, verified against the md5 torchvision publishes, and only then
renamed into place, so an interrupted or corrupt download never leaves a file behind.
Offline (`download=False` or `LODO_OFFLINE=1`) or when every mirror fails, a one-line
`DatasetUnavailableError` names the files needed and the directory to put them in.

Formats:
- IDX (MNIST): big-endian header ``0 0 <type> <ndim>`` then ndim uint32 sizes, then the data;
  images have magic 2051 (ubyte, 3-d), labels 2049 (ubyte, 1-d).
- CIFAR-10 python: ``cifar-10-python.tar.gz`` holding pickled dicts ``cifar-10-batches-py/
  data_batch_1..5`` and ``test_batch`` with ``b"data"`` (N×3072 uint8, channel-major) and
  ``b"labels"``.
"""
from __future__ import annotations

import gzip
import hashlib
import logging
import os
import pickle
import tarfile
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)

MNIST_MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
]
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
CIFAR10_MIRRORS = ["https://www.cs.toronto.edu/~kriz/"]
CIFAR10_MD5 = {"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"}
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR10_TEST_BATCH = "test_batch"

IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049
_TIMEOUT_S = 60
_CHUNK = 1 << 20


class DatasetUnavailableError(FileNotFoundError):
    """A dataset file is missing (or corrupt) and cannot be downloaded."""


class ChecksumError(ValueError):
    """A file's md5 does not match the published checksum."""


def cache_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The cache directory: `data_dir`, else $LODO_DATA_DIR, else ~/.cache/lodo-tune."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get("LODO_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "lodo-tune"


def offline() -> bool:
    """True when $LODO_OFFLINE asks for no network access."""
    return os.environ.get("LODO_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def md5sum(path: str | os.PathLike) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, dest: str | os.PathLike, md5: str) -> Path:
    """Fetch `url` to `dest` atomically: temp file in the same directory, verify md5, rename.

    On a checksum mismatch (or any error) the temp file is removed and nothing is left at `dest`.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        digest = hashlib.md5()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != md5:
            raise ChecksumError(f"Checksum mismatch for {url}: md5 {digest.hexdigest()} (expected {md5})")
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def fetch(filenames: dict[str, str], mirrors: list[str], data_dir=None, download_ok: bool = True) -> dict[str, Path]:
    """Paths of verified copies of `filenames` ({name: md5}) in the cache, downloading what is missing."""
    root = cache_dir(data_dir)
    paths, missing, errors = {}, [], []
    for name, md5 in filenames.items():
        path = root / name
        if path.is_file() and md5sum(path) == md5:
            paths[name] = path
            continue
        if download_ok and not offline():
            for mirror in mirrors:
                try:
                    logger.info("downloading %s to %s", mirror + name, path)
                    paths[name] = download(mirror + name, path, md5)
                    break
                except (OSError, ChecksumError) as error:  # URLError is an OSError
                    logger.info("download of %s failed: %s", mirror + name, error)
                    errors.append(f"{mirror + name}: {error}")
        if name not in paths:
            missing.append(name)
    if missing:
        why = "offline" if not download_ok or offline() else "download failed (" + "; ".join(errors) + ")"
        raise DatasetUnavailableError(
            f"Dataset files missing or corrupt ({why}): put {', '.join(missing)} (from {mirrors[0]}, md5 as "
            f"published by torchvision) in {root} or set LODO_DATA_DIR"
        )
    return paths


def read_idx(path: str | os.PathLike, magic: int | None = None) -> np.ndarray:
    """Parse an IDX file (gzip-compressed or raw) of unsigned bytes into a uint8 array."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"Invalid IDX file {path}: bad magic number")
    found = int.from_bytes(raw[:4], "big")
    if raw[2] != 0x08:
        raise ValueError(f"Invalid IDX file {path}: data type 0x{raw[2]:02x} (only unsigned byte 0x08 is supported)")
    if magic is not None and found != magic:
        raise ValueError(f"Invalid IDX file {path}: magic number {found} (expected {magic})")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    if len(raw) - offset != int(np.prod(shape)):
        raise ValueError(f"Invalid IDX file {path}: {len(raw) - offset} data bytes for shape {shape}")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(shape)


def load_mnist(data_dir=None, download: bool = True) -> dict[str, torch.Tensor]:
    """MNIST as uint8 tensors: train_images (60000, 28, 28), train_labels, test_images, test_labels."""
    paths = fetch(MNIST_MD5, MNIST_MIRRORS, data_dir, download)
    parts = {
        "train_images": ("train-images-idx3-ubyte.gz", IDX_IMAGES_MAGIC),
        "train_labels": ("train-labels-idx1-ubyte.gz", IDX_LABELS_MAGIC),
        "test_images": ("t10k-images-idx3-ubyte.gz", IDX_IMAGES_MAGIC),
        "test_labels": ("t10k-labels-idx1-ubyte.gz", IDX_LABELS_MAGIC),
    }
    return {key: torch.from_numpy(read_idx(paths[name], magic).copy()) for key, (name, magic) in parts.items()}


def read_cifar10_archive(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Parse cifar-10-python.tar.gz: train_images (N, 3, 32, 32) uint8, train_labels int64, test_*."""

    def batch(archive: tarfile.TarFile, name: str) -> tuple[np.ndarray, np.ndarray]:
        member = archive.extractfile(f"{CIFAR10_FOLDER}/{name}")
        if member is None:
            raise ValueError(f"Invalid CIFAR-10 archive {path}: {name} is not a file")
        # The archive's md5 was verified against the published one before we unpickle it.
        entry = pickle.load(member, encoding="bytes")
        data = np.asarray(entry[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        return data, np.asarray(entry[b"labels"], dtype=np.int64)

    with tarfile.open(path, "r:gz") as archive:
        train = [batch(archive, name) for name in CIFAR10_TRAIN_BATCHES]
        test = batch(archive, CIFAR10_TEST_BATCH)
    return {
        "train_images": torch.from_numpy(np.concatenate([d for d, _ in train])),
        "train_labels": torch.from_numpy(np.concatenate([l for _, l in train])),
        "test_images": torch.from_numpy(test[0].copy()),
        "test_labels": torch.from_numpy(test[1]),
    }


def load_cifar10(data_dir=None, download: bool = True) -> dict[str, torch.Tensor]:
    """CIFAR-10 as tensors: train_images (50000, 3, 32, 32) uint8, train_labels int64, test_*."""
    paths = fetch(CIFAR10_MD5, CIFAR10_MIRRORS, data_dir, download)
    return read_cifar10_archive(paths["cifar-10-python.tar.gz"])
