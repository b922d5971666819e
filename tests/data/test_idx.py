import gzip
import hashlib
import io
import os
import shutil
import tracemalloc
import warnings
from pathlib import Path

import pytest
import torch

from stnkit.data import idx
from stnkit.data.idx import DataError, cache_dir, download_mnist, find_mnist, load_mnist, read_idx
from tests.data.conftest import idx_bytes, write_fake_mnist, write_idx


@pytest.fixture
def fresh_env(tmp_path, monkeypatch):
    """Isolated cache (XDG_CACHE_HOME) and no STNKIT_DATA."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("STNKIT_DATA", raising=False)
    return tmp_path


class TestReadIdx:
    def test_real_labels(self, real_mnist_dir):
        labels = read_idx(real_mnist_dir / "train-labels-idx1-ubyte.gz")
        assert labels.shape == (60000,)
        assert labels.dtype == torch.uint8
        assert labels[:5].tolist() == [5, 0, 4, 1, 9]  # MNIST's first training labels

    def test_raw_equals_gzip(self, mnist_dir, tmp_path):
        raw = tmp_path / "t10k-labels-idx1-ubyte"
        raw.write_bytes(gzip.decompress((mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()))
        assert torch.equal(read_idx(raw), read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz"))

    @pytest.mark.parametrize("dtype", [torch.uint8, torch.int32, torch.float32])
    def test_dtypes(self, tmp_path, dtype):
        codes = {torch.uint8: (8, ">u1"), torch.int32: (0x0C, ">i4"), torch.float32: (0x0D, ">f4")}
        code, np_dtype = codes[dtype]
        t = torch.arange(6, dtype=dtype).view(2, 3)
        data = bytes([0, 0, code, 2]) + (2).to_bytes(4, "big") + (3).to_bytes(4, "big")
        data += t.numpy().astype(np_dtype).tobytes()
        (tmp_path / "x").write_bytes(data)
        out = read_idx(tmp_path / "x")
        assert out.dtype == dtype
        assert torch.equal(out, t)

    def test_errors(self, tmp_path):
        good = idx_bytes(torch.zeros(3, 4, 4, dtype=torch.uint8))
        cases = {
            "missing": (None, "no such file"),
            "magic": (b"\x12\x34" + good[2:], "bad magic"),
            "dtype": (good[:2] + b"\x07" + good[3:], "bad magic"),
            "empty": (b"", "bad magic"),
            "header": (good[:9], "truncated: its 3-D header"),
            "truncated": (good[:-5], "truncated"),
            "trailing": (good + b"\x00", "trailing bytes"),
            "badgzip": (gzip.compress(good)[:-30], "cannot read or decompress"),
        }
        for name, (content, match) in cases.items():
            path = tmp_path / name
            if content is not None:
                path.write_bytes(content)
            with pytest.raises(DataError, match=match) as err:
                read_idx(path)
            assert str(path) in str(err.value)  # every message names the file
        assert issubclass(DataError, ValueError)


def _gzip_bomb(path, header, zeros):
    """A gzip file: ``header`` then ``zeros`` zero bytes, compressed chunk by chunk (a few hundred KB on disk)."""
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(header)
        block = bytes(1 << 20)
        for _ in range(zeros >> 20):
            f.write(block)


class TestBoundedReading:
    def test_gzip_bomb_is_refused_without_decompressing_it(self, tmp_path):
        path = tmp_path / "bomb-idx3-ubyte.gz"
        header = bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (10, 28, 28))
        _gzip_bomb(path, header, 256 << 20)  # 10 images declared, 256 MiB of data inside
        assert path.stat().st_size < 2 << 20
        tracemalloc.start()
        try:
            with pytest.raises(DataError, match="trailing bytes") as err:
                read_idx(path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert str(path) in str(err.value)
        assert peak < 16 << 20  # the old reader decompressed everything: 256 MiB

    def test_declared_size_over_the_limit_refused_before_reading(self, tmp_path):
        path = tmp_path / "huge-idx3-ubyte"
        path.write_bytes(bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (10**6, 100, 100)))
        with pytest.raises(DataError, match=r"declares shape \(1000000, 100, 100\).*limit") as err:
            read_idx(path)
        assert str(path) in str(err.value)
        small = tmp_path / "small-idx1-ubyte"
        small.write_bytes(idx_bytes(torch.zeros(100, dtype=torch.uint8)))
        assert read_idx(small, max_bytes=100).shape == (100,)
        with pytest.raises(DataError, match="limit of 99 bytes"):
            read_idx(small, max_bytes=99)

    def test_sizes_that_overflow_int64_name_the_file(self, tmp_path):
        path = tmp_path / "overflow-idx4-ubyte"
        path.write_bytes(bytes([0, 0, 0x0E, 4]) + (2**32 - 1).to_bytes(4, "big") * 4)  # 2^128 float64s
        with pytest.raises(DataError, match="more than the limit") as err:
            read_idx(path)
        assert str(path) in str(err.value)

    def test_download_checksum_streams(self, fresh_env):
        """A mirror serving a bomb under MNIST's name is refused after at most MAX_IDX_BYTES of output."""
        mirror = fresh_env / "mirror"
        mirror.mkdir()
        _gzip_bomb(mirror / "train-images-idx3-ubyte.gz", b"", 64 << 20)
        tracemalloc.start()
        try:
            with pytest.raises(DataError, match="checksum mismatch"):
                download_mnist(fresh_env / "out", mirrors=(mirror.as_uri(),))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 16 << 20  # the old download decompressed the whole file in memory to check it
        assert list((fresh_env / "out").iterdir()) == []


class TestLoadMnist:
    def test_real(self, real_mnist_dir):
        images, labels = load_mnist(real_mnist_dir, split="test")
        assert images.shape == (10000, 28, 28)
        assert images.dtype == torch.uint8
        assert labels.shape == (10000,)
        assert labels.dtype == torch.int64
        assert labels[:3].tolist() == [7, 2, 1]
        assert int(images.max()) == 255
        assert torch.bincount(labels).tolist()[:2] == [980, 1135]

    def test_embedded_sums_match_shared_sums(self, real_mnist_dir):
        sums = dict(line.split()[::-1] for line in (real_mnist_dir / "SHA256SUMS").read_text().splitlines())
        assert sums == idx.MNIST_SHA256

    def test_bad_split(self, mnist_dir):
        with pytest.raises(ValueError, match="split"):
            load_mnist(mnist_dir, split="val")

    def test_missing(self, tmp_path):
        with pytest.raises(DataError, match="t10k-images-idx3-ubyte"):
            load_mnist(tmp_path, split="test")

    def test_count_mismatch(self, tmp_path):
        write_fake_mnist(tmp_path)
        write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", torch.zeros(3, dtype=torch.uint8))
        with pytest.raises(DataError, match="4 images but .* 3 labels"):
            load_mnist(tmp_path, split="test", verify=False)

    def test_wrong_rank(self, tmp_path):
        write_fake_mnist(tmp_path)
        write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", torch.zeros(4, 784, dtype=torch.uint8))
        with pytest.raises(DataError, match="expected 3-D uint8 images"):
            load_mnist(tmp_path, split="test", verify=False)

    def test_non_mnist_sums_warn_once(self, tmp_path):
        write_fake_mnist(tmp_path)  # e.g. Fashion-MNIST under MNIST's names
        with pytest.warns(UserWarning, match="t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz not MNIST's"
                          ) as record:
            images, labels = load_mnist(tmp_path, split="test")
        assert len(record) == 1  # one line for the split
        assert "\n" not in str(record[0].message)
        assert images.shape == (4, 28, 28)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            load_mnist(tmp_path, split="test")  # verified once per file per process: no second notice

    def test_real_files_do_not_warn(self, real_mnist_dir):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            load_mnist(real_mnist_dir, split="test")


class TestFindMnist:
    def test_resolution_order(self, fresh_env, monkeypatch):
        arg, env, cache = fresh_env / "arg", fresh_env / "env", cache_dir()
        for folder in (arg, env, cache):
            write_fake_mnist(folder)
        assert cache == fresh_env / "xdg" / "stnkit" / "mnist"
        assert find_mnist(download=False) == cache
        monkeypatch.setenv("STNKIT_DATA", str(env))
        assert find_mnist(download=False) == env
        assert find_mnist(arg, download=False) == arg

    def test_home_cache_without_xdg(self, tmp_path, monkeypatch):
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
        monkeypatch.setenv("HOME", str(tmp_path))
        assert cache_dir() == tmp_path / ".cache" / "stnkit" / "mnist"

    @pytest.mark.parametrize("sub", ["mnist", "MNIST/raw"])
    def test_subfolders(self, fresh_env, sub):
        write_fake_mnist(fresh_env / "d" / sub)
        assert find_mnist(fresh_env / "d", download=False) == fresh_env / "d" / sub

    def test_real_folder(self, mnist_dir, fresh_env):
        assert find_mnist(str(mnist_dir), download=False) == mnist_dir

    def test_explicit_folder_lacking_files(self, fresh_env, monkeypatch):
        write_fake_mnist(fresh_env / "d")
        os.remove(fresh_env / "d" / "t10k-labels-idx1-ubyte.gz")
        with pytest.raises(DataError, match="data_dir=.* lacks MNIST files t10k-labels-idx1-ubyte"):
            find_mnist(fresh_env / "d")
        monkeypatch.setenv("STNKIT_DATA", str(fresh_env / "d"))
        with pytest.raises(DataError, match=r"\$STNKIT_DATA"):
            find_mnist()
        assert not cache_dir().exists()  # an explicit folder never triggers a download

    def test_no_download(self, fresh_env):
        with pytest.raises(DataError, match="not found"):
            find_mnist(download=False)


@pytest.fixture
def fake_mirror(fresh_env, monkeypatch):
    """A file:// mirror of four tiny IDX files whose sums are patched in as MNIST's."""
    content = write_fake_mnist(fresh_env / "mirror")
    monkeypatch.setattr(idx, "MNIST_SHA256", {k: hashlib.sha256(v).hexdigest() for k, v in content.items()})
    monkeypatch.setattr(idx, "MIRRORS", ((fresh_env / "mirror").as_uri() + "/",))
    return fresh_env / "mirror"


class TestDownload:
    def test_find_downloads_into_cache(self, fake_mirror):
        root = find_mnist()
        assert root == cache_dir()
        assert sorted(p.name for p in root.iterdir()) == sorted(f"{n}.gz" for n in idx.MNIST_SHA256)
        images, labels = load_mnist(root, split="train")  # sums patched as MNIST's: no notice
        assert images.shape == (6, 28, 28)
        assert torch.equal(images, read_idx(fake_mirror / "train-images-idx3-ubyte.gz"))

    def test_falls_back_to_next_mirror(self, fake_mirror, fresh_env):
        dead = (fresh_env / "nowhere").as_uri() + "/"
        download_mnist(fresh_env / "out", mirrors=(dead, fake_mirror.as_uri()))
        assert len(list((fresh_env / "out").iterdir())) == 4

    def test_checksum_mismatch(self, fake_mirror, fresh_env):
        write_idx(fake_mirror / "t10k-labels-idx1-ubyte.gz", torch.ones(4, dtype=torch.uint8))  # corrupted
        with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz.*checksum mismatch"):
            find_mnist()
        left = sorted(p.name for p in cache_dir().iterdir())
        assert "t10k-labels-idx1-ubyte.gz" not in left  # nothing under the real name ...
        assert not [n for n in left if n.endswith(".part")]  # ... and no temporary file left behind

    def test_interrupted_download_leaves_nothing(self, fake_mirror, fresh_env):
        class Broken(io.BytesIO):
            def read(self, *args):
                raise ConnectionResetError("connection reset")

        def opener(url, timeout=None):
            return Broken()

        with pytest.raises(DataError, match="(?s)connection reset.*by hand"):
            download_mnist(fresh_env / "out", opener=opener)
        assert list((fresh_env / "out").iterdir()) == []

    def test_existing_files_kept(self, fake_mirror, fresh_env):
        out = fresh_env / "out"
        shutil.copytree(fake_mirror, out)
        calls = []
        download_mnist(out, opener=lambda url, timeout=None: calls.append(url))
        assert calls == []
        assert isinstance(Path(out), Path)
