import pytest
import torch

from stnkit.data.mnist3d import MNIST3D, extrude, render_volumes, rotation_matrix, sample_poses, slab_theta


class TestExtrude:
    def test_shapes(self):
        d = torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8)
        v = extrude(d, 5)
        assert v.shape == (3, 1, 5, 28, 28)
        assert v.dtype == torch.float32
        assert torch.equal(v[:, 0, 2], d.float() / 255)
        assert torch.equal(v[:, 0, 0], v[:, 0, 4])

    def test_errors(self):
        with pytest.raises(ValueError, match="thickness"):
            extrude(torch.zeros(1, 4, 4), 0)


class TestRotationMatrix:
    def test_orthonormal(self):
        r = rotation_matrix(torch.tensor([[10.0, -70.0, 33.0], [90.0, 0.0, 0.0]]))
        assert torch.allclose(r @ r.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(2, 3, 3))
        assert torch.allclose(torch.linalg.det(r), torch.ones(2, dtype=torch.float64))
        # 90 degrees about x takes y to z
        assert torch.allclose(r[1] @ torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64),
                              torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), atol=1e-12)


class TestRenderVolumes:
    def test_identity_pose_is_exact(self):
        digits = torch.randint(0, 256, (2, 28, 28), dtype=torch.uint8)
        poses = {"angles": torch.zeros(2, 3), "translation": torch.zeros(2, 3)}
        vol = render_volumes(digits, poses, volume_size=28, thickness=4)  # slab fills depths 12..15
        assert vol.shape == (2, 1, 28, 28, 28)
        for z in range(12, 16):
            assert torch.allclose(vol[:, 0, z], digits.float() / 255, atol=1e-5)
        assert vol[:, :, :12].abs().max() < 1e-6
        assert vol[:, :, 16:].abs().max() < 1e-6

    def test_pose_matches_geometry(self):
        # a uniform slab: its centroid is the slab centre and its thinnest principal axis the rotated z axis
        digits = torch.full((3, 28, 28), 255, dtype=torch.uint8)
        poses = {"angles": torch.tensor([[30.0, -45.0, 20.0], [0.0, 60.0, 0.0], [-50.0, 10.0, 40.0]]),
                 "translation": torch.tensor([[5.0, -3.0, 8.0], [0.0, 0.0, 0.0], [-10.0, 6.0, -4.0]])}
        vol = render_volumes(digits, poses, volume_size=60, thickness=4)[:, 0].double()  # (N, D, H, W)
        grid = torch.stack(torch.meshgrid(*(torch.arange(60, dtype=torch.float64) - 29.5,) * 3, indexing="ij"))
        xyz = grid.flip(0).reshape(3, -1)  # (3, V^3) as (x, y, z), centred voxels
        for i in range(3):
            w = vol[i].reshape(-1)
            assert w.sum() == pytest.approx(28 * 28 * 4, rel=0.02)  # rotations keep the volume
            centre = (xyz * w).sum(1) / w.sum()
            assert torch.allclose(centre, poses["translation"][i].double(), atol=0.05)
            d = xyz - centre[:, None]
            cov = (d * w) @ d.T / w.sum()
            normal = torch.linalg.eigh(cov).eigenvectors[:, 0]  # smallest spread: the slab's normal
            expected = rotation_matrix(poses["angles"][i:i + 1])[0, :, 2]
            assert abs(float(normal @ expected)) > 0.999

    def test_theta_maps_slab_centre(self):
        poses = {"angles": torch.tensor([[20.0, 30.0, 40.0]]), "translation": torch.tensor([[6.0, -6.0, 3.0]])}
        theta = slab_theta(poses, (4, 28, 28), 60).view(1, 3, 4).double()
        centre_norm = poses["translation"].double()[0] * 2 / 60  # the slab centre, normalised volume frame
        assert torch.allclose(theta[0, :, :3] @ centre_norm + theta[0, :, 3], torch.zeros(3, dtype=torch.float64),
                              atol=1e-6)


class TestSamplePoses:
    def test_ranges_and_inside(self):
        p = sample_poses(123, torch.arange(2000), (4, 28, 28), 60, rotation=(60.0, 60.0, 45.0))
        a = p["angles"]
        assert a[:, :2].abs().max() <= 60
        assert a[:, 2].abs().max() <= 45
        assert a[:, :2].abs().max() > 55
        # every slab corner inside the volume
        signs = torch.tensor([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=torch.float64)
        corners = signs * torch.tensor([14.0, 14.0, 2.0], dtype=torch.float64)
        placed = corners @ rotation_matrix(a).transpose(1, 2) + p["translation"].double()[:, None]
        assert placed.abs().max() <= 30 + 1e-4
        assert p["translation"].abs().max() > 8  # positions spread, not all centred

    def test_determinism(self):
        a = sample_poses(7, torch.tensor([3, 9, 11]), (4, 28, 28), 60)
        b = sample_poses(7, torch.tensor([11]), (4, 28, 28), 60)
        assert torch.equal(a["angles"][2:], b["angles"])
        assert torch.equal(a["translation"][2:], b["translation"])


class TestMNIST3D:
    def test_dataset(self, mnist_test):
        images, labels = mnist_test
        ds = MNIST3D(images[:50], labels[:50], seed=2, split="train", fresh=True)
        x, y = ds.get_batch([0, 7, 31])
        assert x.shape == (3, 1, 60, 60, 60)
        assert torch.equal(y, labels[torch.tensor([0, 7, 31])])
        assert ds.image_size == 60
        assert ds.in_channels == 1
        assert ds.num_classes == 10
        xi, yi = ds[7]
        assert torch.equal(xi, x[1])
        assert yi == y[1]
        mass = x.sum(dim=(1, 2, 3, 4))
        expected = images[torch.tensor([0, 7, 31])].float().sum(dim=(1, 2)) / 255 * 4
        assert torch.allclose(mass, expected, rtol=0.05)
        ds.set_epoch(1)
        assert not torch.equal(ds.get_batch([0])[0], x[:1])  # fresh poses per epoch

    def test_errors(self, mnist_test):
        images, labels = mnist_test
        with pytest.raises(ValueError, match="volume_size"):
            MNIST3D(images[:4], labels[:4], thickness=0)
