import math

import pytest
import torch

from stnkit.data import rng


class TestMix64:
    def test_matches_reference(self):
        values = [0, 1, 2, 12345678901234567, 2**63 - 1, 2**63, 2**63 + 5, 2**64 - 1]
        values += torch.randint(-(2**62), 2**62, (100,)).tolist()
        got = rng._mix64(torch.tensor([rng._signed(v) for v in values]))
        assert [g & rng._MASK64 for g in got.tolist()] == [rng.mix64(v) for v in values]

    def test_known_value(self):
        # splitmix64's first output for seed 0 (state = 0x9E3779B97F4A7C15), as in Vigna's reference C code
        assert rng.mix64(0x9E3779B97F4A7C15) == 0xE220A8397B1DCDAF


class TestDeriveKey:
    def test_distinct_and_stable(self):
        keys = {rng.derive_key(s, split, e) for s in range(3) for split in ("train", "val", "test") for e in range(3)}
        assert len(keys) == 27
        assert rng.derive_key(7, "train", 2) == rng.derive_key(7, "train", 2)


class TestUniform:
    def test_moments(self):
        u = rng.uniform(rng.derive_key(3), torch.arange(50000), 4, dtype=torch.float64)
        assert u.shape == (50000, 4)
        assert float(u.min()) >= 0
        assert float(u.max()) < 1
        assert torch.allclose(u.mean(0), torch.full((4,), 0.5, dtype=torch.float64), atol=0.006)
        assert torch.allclose(u.var(0), torch.full((4,), 1 / 12, dtype=torch.float64), rtol=0.03)
        corr = torch.corrcoef(u.T)
        assert float((corr - torch.eye(4, dtype=torch.float64)).abs().max()) < 0.02

    def test_consecutive_ids_uncorrelated(self):
        u = rng.uniform(rng.derive_key(0), torch.arange(20001), 1, dtype=torch.float64)[:, 0]
        assert abs(float(torch.corrcoef(torch.stack([u[:-1], u[1:]]))[0, 1])) < 0.03

    def test_per_id_and_stream(self):
        key = rng.derive_key(1)
        batch = rng.uniform(key, torch.tensor([5, 9, 2]), 3)
        assert torch.equal(batch[1], rng.uniform(key, torch.tensor([9]), 3)[0])
        assert torch.equal(batch[:, :2], rng.uniform(key, torch.tensor([5, 9, 2]), 2))  # prefix-stable
        assert not torch.equal(batch, rng.uniform(key, torch.tensor([5, 9, 2]), 3, stream=1))
        assert not torch.equal(batch, rng.uniform(rng.derive_key(2), torch.tensor([5, 9, 2]), 3))


class TestNormal:
    def test_moments(self):
        z = rng.normal(rng.derive_key(4), torch.arange(40000), 2, dtype=torch.float64).reshape(-1)
        assert abs(float(z.mean())) < 0.015
        assert float(z.std()) == pytest.approx(1.0, abs=0.015)
        assert float((z**4).mean()) == pytest.approx(3.0, abs=0.1)  # Gaussian kurtosis
        assert float((z.abs() < 1).double().mean()) == pytest.approx(math.erf(1 / math.sqrt(2)), abs=0.01)
        assert torch.isfinite(z).all()
