import pytest
import torch

from stnkit.models import count_params, create
from stnkit.models.addition import ParallelSTClassifier

BUDGET = 400_000
KW = {"input_size": 42, "in_channels": 2, "num_classes": 19, "param_budget": BUDGET}


class TestSTFCNx2:
    @pytest.mark.parametrize("transform", ["affine", "projective", "tps"])
    @pytest.mark.parametrize("downsample", [None, "output_size", "avgpool"])
    def test_forward_backward(self, transform, downsample):
        model = create("st-fcn-x2", transform=transform, st_downsample=downsample, **KW)
        assert isinstance(model, ParallelSTClassifier)
        x = torch.rand(3, 2, 42, 42)
        logits = model(x)
        assert logits.shape == (3, 19)
        logits.sum().backward()
        assert all(p.grad is not None for p in model.parameters())

    def test_each_branch_sees_and_warps_both_channels(self):
        model = create("st-fcn-x2", **KW)  # no downsampling: identity warps reproduce the input
        branches = model.transformers.branches
        assert len(branches) == 2
        assert all(b.localization[1].in_features == 2 * 42 * 42 for b in branches)
        x = torch.rand(2, 2, 42, 42)
        out, params = model.transform(x)
        assert out.shape == (2, 4, 42, 42)
        assert len(params) == 2
        assert torch.allclose(out, torch.cat([x, x], dim=1), atol=1e-5)  # identity at initialisation
        assert model.classifier.input_shape == (4, 42, 42)
        # the branches are independent: moving one branch's head changes only its two output channels
        with torch.no_grad():
            branches[1].head.bias.copy_(torch.tensor([0.5, 0.0, 0.2, 0.0, 0.5, -0.1]))
        moved, _ = model.transform(x)
        assert torch.allclose(moved[:, :2], out[:, :2])
        assert not torch.allclose(moved[:, 2:], out[:, 2:])

    def test_parameter_parity_with_the_other_rows(self):
        counts = {name: count_params(create(name, **KW, **({"st_downsample": "output_size"}
                                                            if name.startswith("st-") else {})))
                  for name in ("fcn", "cnn", "st-fcn", "st-fcn-x2")}
        assert max(counts.values()) / min(counts.values()) < 1.05, counts
        assert all(abs(n - BUDGET) / BUDGET < 0.05 for n in counts.values()), counts

    def test_errors(self):
        with pytest.raises(ValueError, match="branches"):
            create("st-fcn-x2", branches=0)
        with pytest.raises(ValueError, match="not a 2-D transform"):
            create("st-fcn-x2", transform="affine3d")
