import numpy as np
import pytest
import torch

from stnkit._checks import (
    MAX_SIZE_NUMEL,
    check_batch,
    check_choice,
    check_float,
    check_ndim,
    check_same_device,
    check_tensor,
    normalize_size,
    shape_str,
)


class TestNormalizeSize:
    @pytest.mark.parametrize(
        ("size", "ndim", "expected"),
        [(4, 2, (4, 4)), (3, 3, (3, 3, 3)), ((2, 5), 2, (2, 5)), (torch.Size([2, 3, 4]), 3, (2, 3, 4)),
         ((np.int64(7), 8), 2, (7, 8)), ([1, 1], 2, (1, 1))],
    )
    def test_valid(self, size, ndim, expected):
        out = normalize_size(size, ndim)
        assert out == expected
        assert all(type(s) is int for s in out)

    @pytest.mark.parametrize(
        ("size", "exc", "match"),
        [
            ((0, 5), ValueError, r"output_size entries must be positive; got \(0, 5\)"),
            ((-1, 5), ValueError, "must be positive"),
            ((4, 4, 4), ValueError, r"output_size must have 2 entries \(H_out, W_out\); got \(4, 4, 4\) \(3 entries\)"),
            ((4.0, 4), TypeError, "entries must be integers"),
            ((True, 4), TypeError, "entries must be integers"),
            ("44", TypeError, "must be an int or a sequence of 2 ints"),
            (4.0, TypeError, "must be an int or a sequence"),
            ((50000, 50000), ValueError, r"\(50000, 50000\) has 2,500,000,000 points, more than the limit of "
                                         r"2,147,483,647 \(2\*\*31 - 1\) per sample"),
        ],
    )
    def test_errors(self, size, exc, match):
        with pytest.raises(exc, match=match):
            normalize_size(size, 2)

    def test_limit_is_inclusive(self):
        assert normalize_size((1, MAX_SIZE_NUMEL), 2) == (1, MAX_SIZE_NUMEL)
        with pytest.raises(ValueError, match="more than the limit"):
            normalize_size((2, 2**30), 2)
        with pytest.raises(ValueError, match=r"map_size \(2048, 1024, 1024\)"):
            normalize_size((2048, 1024, 1024), 3, "map_size")


class TestTensorChecks:
    def test_shape_str(self):
        assert shape_str(torch.zeros(2, 3, 4)) == "(2, 3, 4)"
        assert shape_str(torch.zeros(())) == "()"

    def test_checks(self):
        x = torch.zeros(2, 3)
        assert check_tensor(x, "x") is x
        with pytest.raises(TypeError, match=r"x must be a torch.Tensor; got list"):
            check_tensor([1], "x")
        with pytest.raises(TypeError, match="x must have a floating-point dtype.*got torch.int64"):
            check_float(torch.zeros(2, dtype=torch.long), "x")
        with pytest.raises(ValueError, match=r"x must have shape \(N, C\); got \(2, 3\)"):
            check_ndim(x, (3,), "x", "(N, C)")
        with pytest.raises(ValueError, match=r"a has batch 2 \(2, 3\) but b has batch 1 \(1, 3\)"):
            check_batch(x, torch.zeros(1, 3), "a", "b")
        with pytest.raises(ValueError, match="a and b must be on the same device; got cpu and meta"):
            check_same_device(x, torch.zeros(2, device="meta"), "a", "b")
        with pytest.raises(ValueError, match=r"unknown mode 'x'; expected one of 'a', 'b'"):
            check_choice("x", ("a", "b"), "mode")
