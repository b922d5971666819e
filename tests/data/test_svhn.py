"""SVHN readers on files written in the real layouts, the crop boxes, and the format-1 dataset."""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from stnkit.data.idx import DataError
from stnkit.data.svhn import (
    SVHNSequences,
    crop_box,
    download_svhn,
    encode_digits,
    fetch_verified,
    read_cropped,
    read_digit_struct,
    union_box,
)

MATLAB_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
FIELDS = ("height", "label", "left", "top", "width")  # MATLAB writes struct fields in alphabetical order


def _double(group: h5py.Group, name: str, value: float) -> h5py.Dataset:
    ds = group.create_dataset(name, data=np.array([[value]], dtype=np.float64))  # MATLAB scalars are (1, 1)
    ds.attrs["MATLAB_class"] = np.bytes_("double")
    return ds


def write_digit_struct(path: Path, records: list[tuple[str, list[tuple[int, float, float, float, float]]]],
                       fields: tuple[str, ...] = FIELDS) -> Path:
    """Write ``digitStruct.mat`` as MATLAB v7.3 does: a 512-byte userblock header, a ``#refs#`` group holding the
    referenced data, ``/digitStruct/name`` and ``/digitStruct/bbox`` (N, 1) object references; a name is a uint16
    (len, 1) char array; a bbox field is a (1, 1) double for one digit, (K, 1) references to (1, 1) doubles for K.

    ``records``: (name, [(label, left, top, width, height), ...]) with SVHN's labels (10 for the digit 0).
    """
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        ds = f.create_group("digitStruct")
        ds.attrs["MATLAB_class"] = np.bytes_("struct")
        counter = iter(range(10**6))
        name_refs, bbox_refs = [], []
        for name, digits in records:
            chars = refs.create_dataset(f"n{next(counter)}", data=np.array([[ord(c)] for c in name], dtype=np.uint16))
            chars.attrs["MATLAB_class"] = np.bytes_("char")
            chars.attrs["MATLAB_int_decode"] = np.int32(2)
            name_refs.append(chars.ref)
            box = refs.create_group(f"b{next(counter)}")
            box.attrs["MATLAB_class"] = np.bytes_("struct")
            for field in fields:
                col = {"label": 0, "left": 1, "top": 2, "width": 3, "height": 4}[field]
                if len(digits) == 1:
                    _double(box, field, digits[0][col])
                else:
                    cells = [_double(refs, f"v{next(counter)}", d[col]).ref for d in digits]
                    cell = box.create_dataset(field, data=np.array(cells, dtype=h5py.ref_dtype).reshape(-1, 1))
                    cell.attrs["MATLAB_class"] = np.bytes_("cell")
            bbox_refs.append(box.ref)
        for key, values in (("name", name_refs), ("bbox", bbox_refs)):
            d = ds.create_dataset(key, data=np.array(values, dtype=h5py.ref_dtype).reshape(-1, 1))
            d.attrs["MATLAB_class"] = np.bytes_("cell")
    with open(path, "r+b") as raw:
        raw.write(MATLAB_HEADER.ljust(116) + b"\0" * 8 + b"\x00\x02IM")
    return path


RECORDS = [
    ("1.png", [(1, 246, 77, 81, 219), (9, 323, 81, 96, 219)]),  # SVHN train 1.png: "19"
    ("2.png", [(10, 77, 29, 23, 32)]),  # one digit: the scalar form; 10 is the digit 0
    ("3.png", [(2, 17, 5, 8, 15), (10, 25, 5, 9, 15), (3, 34, 6, 8, 14)]),
]


class TestReadDigitStruct:
    def test_both_forms_in_file_order(self, tmp_path):
        out = read_digit_struct(write_digit_struct(tmp_path / "digitStruct.mat", RECORDS))
        assert [name for name, _ in out] == ["1.png", "2.png", "3.png"]
        np.testing.assert_array_equal(out[0][1], [[1, 246, 77, 81, 219], [9, 323, 81, 96, 219]])
        np.testing.assert_array_equal(out[1][1], [[0, 77, 29, 23, 32]])
        assert out[2][1].shape == (3, 5)
        assert out[2][1][:, 0].tolist() == [2, 0, 3]

    def test_is_a_matlab_file(self, tmp_path):
        path = write_digit_struct(tmp_path / "digitStruct.mat", RECORDS[:1])
        assert path.read_bytes().startswith(b"MATLAB 7.3 MAT-file")
        assert len(read_digit_struct(path)) == 1

    def test_errors(self, tmp_path):
        with pytest.raises(DataError, match="nope.mat: no such file"):
            read_digit_struct(tmp_path / "nope.mat")
        bad = tmp_path / "bad.mat"
        bad.write_bytes(b"not hdf5 at all")
        with pytest.raises(DataError, match="bad.mat: not an HDF5 file"):
            read_digit_struct(bad)
        with h5py.File(tmp_path / "empty.mat", "w") as f:
            f.create_group("digitStruct")
        with pytest.raises(DataError, match="empty.mat: lacks /digitStruct/name or /digitStruct/bbox"):
            read_digit_struct(tmp_path / "empty.mat")
        path = write_digit_struct(tmp_path / "nowidth.mat", RECORDS, fields=("height", "label", "left", "top"))
        with pytest.raises(DataError, match="nowidth.mat: digitStruct/bbox entry 0 has no field 'width'"):
            read_digit_struct(path)
        path = write_digit_struct(tmp_path / "label.mat", [("a.png", [(11, 1, 1, 1, 1)])])
        with pytest.raises(DataError, match=r"label.mat: digitStruct/bbox entry 0 has labels \[11.0\]; expected 1-10"):
            read_digit_struct(path)

    def test_unequal_fields(self, tmp_path):
        path = write_digit_struct(tmp_path / "d.mat", RECORDS[:1])
        with h5py.File(path, "r+") as f:
            box = f[f["digitStruct/bbox"][0, 0]]
            del box["top"]
            _double(box, "top", 3.0)  # one value for two digits
        with pytest.raises(DataError, match=r"d.mat: digitStruct/bbox entry 0 has fields of lengths \[2, 2, 1, 2, 2\]"):
            read_digit_struct(path)


class TestReadCropped:
    def test_layout(self, tmp_path):
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (32, 32, 3, 4), dtype=np.uint8)
        y = np.array([[1], [10], [5], [9]], dtype=np.uint8)
        scipy.io.savemat(tmp_path / "train_32x32.mat", {"X": x, "y": y})
        images, labels = read_cropped(tmp_path / "train_32x32.mat")
        assert images.shape == (4, 3, 32, 32)
        assert images.dtype == torch.uint8
        assert labels.tolist() == [1, 0, 5, 9]
        assert labels.dtype == torch.int64
        for i in range(4):
            for c in range(3):
                np.testing.assert_array_equal(images[i, c].numpy(), x[:, :, c, i])  # row = y, column = x

    def test_errors(self, tmp_path):
        with pytest.raises(DataError, match="test_32x32.mat: no such file"):
            read_cropped(tmp_path / "test_32x32.mat")
        (tmp_path / "junk.mat").write_bytes(b"\0" * 200)
        with pytest.raises(DataError, match="junk.mat: not a MATLAB v5 file"):
            read_cropped(tmp_path / "junk.mat")
        v73 = write_digit_struct(tmp_path / "v73_32x32.mat", RECORDS[:1])
        with pytest.raises(DataError, match="v73_32x32.mat: not a MATLAB v5 file"):
            read_cropped(v73)
        scipy.io.savemat(tmp_path / "nox.mat", {"y": np.ones((2, 1))})
        with pytest.raises(DataError, match="nox.mat: lacks X or y"):
            read_cropped(tmp_path / "nox.mat")
        scipy.io.savemat(tmp_path / "shape.mat", {"X": np.zeros((28, 28, 3, 2), np.uint8), "y": np.ones((2, 1))})
        with pytest.raises(DataError, match=r"shape.mat: X is uint8 \(28, 28, 3, 2\); expected uint8 \(32, 32, 3, N\)"):
            read_cropped(tmp_path / "shape.mat")
        scipy.io.savemat(tmp_path / "count.mat", {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.ones((3, 1))})
        with pytest.raises(DataError, match=r"count.mat: y has shape \(3, 1\) for 2 images"):
            read_cropped(tmp_path / "count.mat")
        scipy.io.savemat(tmp_path / "label.mat", {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.zeros((2, 1))})
        with pytest.raises(DataError, match="label.mat: y holds labels 0..0; expected 1-10"):
            read_cropped(tmp_path / "label.mat")


class TestCropBox:
    def test_hand_computed(self):
        boxes = np.array([[1, 246, 77, 81, 219], [9, 323, 81, 96, 219]], dtype=np.float64)
        assert union_box(boxes) == (246, 77, 419, 300)
        # width 173, height 223: 15 % of each on each side -> 25.95 and 33.45 px
        assert crop_box(boxes, (350, 741)) == (220, 43, 445, 334)  # floor 220.05, 43.55; ceil 444.95, 333.45
        assert crop_box(boxes, (350, 741), expand=0.0) == (246, 77, 419, 300)

    def test_clipped_to_the_photo(self):
        boxes = np.array([[3, 2, 1, 10, 20]], dtype=np.float64)
        assert crop_box(boxes, (18, 11)) == (0, 0, 11, 18)

    def test_encode(self):
        length, digits = encode_digits([0, 5, 5])
        assert length.item() == 3
        assert digits.tolist() == [0, 5, 5, 10, 10]
        with pytest.raises(ValueError, match="6 digits does not fit 5"):
            encode_digits([1] * 6)


def _write_folder(root: Path) -> Path:
    """train/ with three photos: 1.png's expanded union box painted white on black with a red ring just outside it,
    a 2-digit noise photo 2.png, and a 6-digit 3.png (dropped)."""
    folder = root / "train"
    folder.mkdir()
    photo = np.zeros((60, 80, 3), np.uint8)
    x0, y0, x1, y1 = 17, 6, 42, 39  # crop_box of the digits below: union (20, 10)-(39, 35), 19 x 25 px
    photo[y0 - 1:y1 + 1, x0 - 1:x1 + 1] = (255, 0, 0)
    photo[y0:y1, x0:x1] = 255
    Image.fromarray(photo).save(folder / "1.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(folder / "2.png")
    Image.fromarray(np.zeros((30, 90, 3), np.uint8)).save(folder / "3.png")
    records = [("1.png", [(4, 20, 10, 9, 25), (2, 30, 12, 9, 23)]), ("3.png", [(1, 2 + 10 * i, 2, 8, 20)
               for i in range(6)]), ("2.png", [(7, 5, 5, 10, 15), (10, 15, 5, 10, 15)])]
    write_digit_struct(folder / "digitStruct.mat", records)
    return root


class TestSVHNSequences:
    def test_items_and_dropped(self, tmp_path):
        ds = SVHNSequences(_write_folder(tmp_path), "train")
        assert len(ds) == 2
        assert ds.num_dropped == 1
        assert "dropped=1" in repr(ds)
        image, length, digits = ds[0]
        assert image.shape == (3, 64, 64)
        assert image.dtype == torch.float32
        assert length.item() == 2
        assert digits.tolist() == [4, 2, 10, 10, 10]
        assert ds[1][2].tolist() == [7, 0, 10, 10, 10]

    def test_crop_is_the_expanded_union_box(self, tmp_path):
        boxes = np.array([[4, 20, 10, 9, 25], [2, 30, 12, 9, 23]], dtype=np.float64)
        assert crop_box(boxes, (60, 80)) == (17, 6, 42, 39)  # 2.85 and 3.75 px margins
        image = SVHNSequences(_write_folder(tmp_path), "train", image_size=128)[0][0]
        assert image.shape == (3, 128, 128)
        assert torch.all(image == 1.0)  # all white: nothing of the red ring just outside the box

    def test_random_crops(self, tmp_path):
        root = _write_folder(tmp_path)
        ds = SVHNSequences(root, "train", image_size=64, crop_size=54, random_crop=True, seed=3)
        full = SVHNSequences(root, "train", image_size=64)
        crops = []
        for epoch in range(6):
            ds.set_epoch(epoch)
            a = ds[1][0]
            assert a.shape == (3, 54, 54)
            assert torch.equal(a, ds[1][0])
            crops.append(a)
        assert any(not torch.equal(crops[0], c) for c in crops[1:])
        centre = SVHNSequences(root, "train", image_size=64, crop_size=54)[1][0]
        assert torch.equal(centre, full[1][0][:, 5:59, 5:59])

    def test_errors(self, tmp_path):
        with pytest.raises(ValueError, match="split must be"):
            SVHNSequences(tmp_path, "val")
        with pytest.raises(DataError, match="digitStruct.mat: no such file"):
            SVHNSequences(tmp_path, "test")
        root = _write_folder(tmp_path)
        with pytest.raises(ValueError, match="crop_size must be in"):
            SVHNSequences(root, "train", crop_size=65)
        (root / "train" / "2.png").write_bytes(b"not a png")
        with pytest.raises(DataError, match="2.png: cannot read the image"):
            SVHNSequences(root, "train")[1]


class TestDownload:
    def test_fetch_verified(self, tmp_path):
        src = tmp_path / "src.bin"
        src.write_bytes(b"house numbers" * 1000)
        digest = hashlib.sha256(src.read_bytes()).hexdigest()
        out = fetch_verified(src.as_uri(), tmp_path / "out" / "f.bin", "sha256", digest)
        assert out.read_bytes() == src.read_bytes()
        with pytest.raises(DataError, match="checksum mismatch"):
            fetch_verified(src.as_uri(), tmp_path / "bad" / "f.bin", "sha256", "0" * 64)
        assert list((tmp_path / "bad").iterdir()) == []  # neither the file nor its .part
        with pytest.raises(DataError, match="download failed"):
            fetch_verified((tmp_path / "missing").as_uri(), tmp_path / "x.bin", "md5", None)

    def _archive(self, tmp_path, split):
        staging = tmp_path / "staging"
        staging.mkdir(parents=True)
        _write_folder(staging)
        (staging / "train").rename(staging / split)
        served = tmp_path / "served"
        served.mkdir()
        with tarfile.open(served / f"{split}.tar.gz", "w:gz") as tar:
            tar.add(staging / split, arcname=split)
        return served

    def test_archive_is_verified_then_unpacked(self, tmp_path):
        served = self._archive(tmp_path, "train")  # not SVHN's train.tar.gz: its SHA-256 differs
        root = tmp_path / "root"
        with pytest.raises(DataError, match="train.tar.gz: checksum mismatch"):
            download_svhn(root, ["train.tar.gz"], base_url=served.as_uri())
        assert list(root.iterdir()) == []
        served = self._archive(tmp_path / "b", "extra")  # extra.tar.gz has no published digest
        download_svhn(root, ["extra.tar.gz"], base_url=served.as_uri())
        assert not (root / "extra.tar.gz").exists()
        assert len(SVHNSequences(root, "extra")) == 2

    def test_present_files_are_kept(self, tmp_path):
        _write_folder(tmp_path)

        def no_network(url, timeout):
            raise AssertionError(f"fetched {url}")

        assert download_svhn(tmp_path, ["train.tar.gz"], opener=no_network) == tmp_path
        with pytest.raises(DataError, match="unknown SVHN file 'val.tar.gz'"):
            download_svhn(tmp_path, ["val.tar.gz"])
