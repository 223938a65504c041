"""The 1-D UNet: patch folding, exact level lengths, conditioning, config round trips, and the shared blocks."""

from __future__ import annotations

import pytest
import torch

from rediffuse.nets import NETS, UNet1D
from rediffuse.nets.unet1d import Downsample1D, Upsample1D, fold_patches, unfold_patches

SMALL = dict(length=256, channels=8, channel_mults=(1, 2, 2), factors=(2, 4), num_res_blocks=1, patch_size=4,
             kernel_size=3, attn_lengths=(8,), attn_head_channels=8)


def perturbed(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """The net with every parameter moved off its (partly zero) initial value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return net


def test_fold_and_unfold_are_inverse_and_keep_samples_in_order():
    x = torch.arange(2 * 3 * 12, dtype=torch.float64).view(2, 3, 12)
    h = fold_patches(x, 4)
    assert h.shape == (2, 12, 3) and torch.equal(unfold_patches(h, 4), x)
    assert h[0, 1 * 4 + 2, 1].item() == x[0, 1, 1 * 4 + 2].item()  # channel c * p + k, position j


@pytest.mark.parametrize("factor", [2, 3, 4, 5])
def test_resamplers_give_exact_lengths(factor):
    x = torch.randn(2, 6, 60)
    assert Downsample1D(6, factor)(x).shape == (2, 6, 60 // factor)
    assert Upsample1D(6, factor, 3)(x).shape == (2, 6, 60 * factor)


def test_a_fresh_net_outputs_zero_and_every_parameter_gets_a_gradient():
    net = UNet1D(**SMALL, num_classes=3)
    x = torch.randn(2, 1, 256)
    assert torch.equal(net(x, torch.zeros(2)), torch.zeros(2, 1, 256))  # the last layer starts at zero
    perturbed(net)
    net(x, torch.tensor([0.1, -0.3]), torch.tensor([0, 2])).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_labels_condition_the_output_and_minus_one_is_the_null_class():
    net = perturbed(UNet1D(**SMALL, num_classes=3)).double()
    x, c = torch.randn(3, 1, 256, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    a, b = net(x, c, torch.tensor([0, 0, 0])), net(x, c, torch.tensor([1, 1, 1]))
    assert not torch.allclose(a, b)
    assert torch.equal(net(x, c, torch.tensor([-1, -1, -1])), net(x, c, torch.tensor([3, 3, 3])))
    assert torch.equal(net(x, c, None), net(x, c, torch.tensor([3, 3, 3])))


def test_each_position_sees_the_whole_clip():
    net = perturbed(UNet1D(**SMALL)).double()
    x = torch.randn(1, 1, 256, dtype=torch.float64, requires_grad=True)
    net(x, torch.zeros(1, dtype=torch.float64))[0, 0, 0].backward()
    assert (x.grad[0, 0, -16:] != 0).any()  # the first sample depends on the last ones (attention, depth)


def test_config_round_trip_and_registry():
    net = UNet1D(**SMALL, num_classes=10)
    again = NETS["unet1d"].from_config(net.config())
    assert again.config() == net.config()
    again.load_state_dict(net.state_dict())


@pytest.mark.parametrize("kwargs, message", [
    (dict(length=250), "use a multiple of 32"),
    (dict(factors=(2,)), "give one down-sampling factor"),
    (dict(factors=(1, 4)), "give one down-sampling factor"),
    (dict(kernel_size=4), "kernel_size must be odd"),
    (dict(attn_lengths=(7,)), "match no level"),
])
def test_bad_configs_name_the_problem(kwargs, message):
    with pytest.raises(ValueError, match=message):
        UNet1D(**{**SMALL, **kwargs})


def test_a_length_that_does_not_divide_is_a_clear_error():
    with pytest.raises(ValueError, match="multiple of 32"):
        UNet1D(**SMALL)(torch.randn(1, 1, 100), torch.zeros(1))
