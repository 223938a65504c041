"""Tests for the noise embedding and the 2-D UNet."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from rediffuse.nets import blocks
from rediffuse.nets import NoiseEmbedding, UNet2D, sinusoidal_embedding
from rediffuse.nets.unet2d import Conv3x3, Upsample, narrow_conv3x3, nearest2x_conv3x3, tiny_conv3x3

SMALL = dict(channels=16, channel_mults=(1, 2), num_res_blocks=1, image_size=8)


def _perturb(model: torch.nn.Module, scale: float = 0.05, seed: int = 0) -> None:
    """Move every parameter (zero-initialised ones included) off its initial value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("values", [torch.arange(1000.0), torch.linspace(0.0, 1000.0, 50),
                                    torch.log(torch.logspace(-3, 2.2, 50)) / 4])
def test_sinusoidal_embedding_separates_each_noise_range(values):
    emb = sinusoidal_embedding(values, 64)
    assert emb.shape == (len(values), 64) and emb.dtype == torch.float32
    assert torch.isfinite(emb).all() and emb.abs().max() <= 1.0
    assert torch.cdist(emb, emb).add(torch.eye(len(values)) * 10).min() > 1e-3  # all distinct


def test_sinusoidal_embedding_values_scalar_and_odd_dim():
    emb = sinusoidal_embedding(torch.tensor(2.0), 7, max_period=100.0)
    assert emb.shape == (1, 7) and emb[0, -1] == 0
    freqs = torch.tensor([1.0, 100.0 ** (-1 / 3), 100.0 ** (-2 / 3)])
    torch.testing.assert_close(emb[0, :3], torch.cos(2 * freqs))
    torch.testing.assert_close(emb[0, 3:6], torch.sin(2 * freqs))
    assert math.isclose(sinusoidal_embedding(torch.tensor([0.0]), 4)[0, 0].item(), 1.0)


def test_noise_embedding_shape_and_dtype():
    emb = NoiseEmbedding(24, freq_dim=8)
    assert emb(torch.tensor([1, 500, 999])).shape == (3, 24)  # integer DDPM indices accepted
    assert emb(torch.tensor(0.3)).shape == (1, 24)


@pytest.mark.parametrize(
    "kwargs,shape",
    [
        (dict(channels=16, channel_mults=(1, 2, 2), attn_resolutions=(4,), image_size=8), (2, 1, 8, 8)),
        (dict(channels=16, channel_mults=(1, 2, 2), attn_resolutions=(7,), image_size=28), (2, 1, 28, 28)),
        (dict(in_channels=3, channels=16, channel_mults=(1, 2, 2, 2), image_size=32), (2, 3, 32, 32)),
        (dict(channels=8, channel_mults=(1, 1, 2, 2), attn_resolutions=(16, 8), image_size=64), (1, 1, 64, 64)),
        (dict(in_channels=3, channels=8, channel_mults=(1, 1, 2, 2, 2), num_res_blocks=1, attn_resolutions=(16,),
              image_size=256), (1, 3, 256, 256)),
    ],
)
def test_output_shapes(kwargs, shape):
    model = UNet2D(**kwargs)
    x = torch.randn(shape)
    out = model(x, torch.rand(shape[0]))
    assert out.shape == shape
    assert torch.count_nonzero(out) == 0  # zero-initialised output conv


def test_out_channels_and_scalar_noise_and_channels_last():
    model = UNet2D(in_channels=3, out_channels=6, channels=12, channel_mults=(1, 2), attn_resolutions=(4,),
                   image_size=8)
    _perturb(model)
    x = torch.randn(3, 3, 8, 8)
    out = model(x, 0.5)
    assert out.shape == (3, 6, 8, 8)
    torch.testing.assert_close(out, model(x, torch.full((3,), 0.5)))
    model_cl = model.to(memory_format=torch.channels_last)
    out_cl = model_cl(x.contiguous(memory_format=torch.channels_last), 0.5)
    torch.testing.assert_close(out_cl, out, atol=1e-5, rtol=1e-4)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = UNet2D(num_classes=3, attn_resolutions=(4,), mid_attention=True, dropout=0.1, **SMALL)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x, t, y = torch.randn(4, 1, 8, 8), torch.rand(4) * 999, torch.tensor([0, 1, 2, -1])

    def loss_and_grads():
        opt.zero_grad()
        (model(x, t, y) - x).square().mean().backward()
        return {n: p.grad for n, p in model.named_parameters()}

    grads = loss_and_grads()
    assert grads["conv_out.weight"].abs().sum() > 0  # at init only the zero-initialised output learns
    for _ in range(3):  # each step un-zeroes one more layer of zero-initialised convolutions
        opt.step()
        grads = loss_and_grads()
    dead = [n for n, g in grads.items() if g is None or not torch.isfinite(g).all() or g.abs().sum() == 0]
    assert not dead


def test_class_conditioning_and_null_class():
    torch.manual_seed(0)
    model = UNet2D(num_classes=10, **SMALL)
    _perturb(model)
    x, t = torch.randn(4, 1, 8, 8), torch.rand(4)
    out_a = model(x, t, torch.tensor([0, 1, 2, 3]))
    out_b = model(x, t, torch.tensor([4, 5, 6, 7]))
    assert (out_a - out_b).abs().max() > 1e-4
    null = model(x, t, None)
    torch.testing.assert_close(null, model(x, t, torch.full((4,), 10)))
    torch.testing.assert_close(null, model(x, t, torch.full((4,), -1)))
    with pytest.raises(ValueError, match="num_classes"):
        UNet2D(**SMALL)(x, t, torch.zeros(4, dtype=torch.long))


def test_config_round_trip_rebuilds_identical_model():
    model = UNet2D(in_channels=3, channels=12, channel_mults=(1, 2, 3), attn_resolutions=(8,), num_classes=5,
                   dropout=0.1, image_size=16)
    _perturb(model)
    config = json.loads(json.dumps(model.config()))
    clone = UNet2D.from_config(config)
    assert clone.config() == model.config()
    state = model.state_dict()
    assert {k: v.shape for k, v in clone.state_dict().items()} == {k: v.shape for k, v in state.items()}
    clone.load_state_dict(state)
    model.eval(), clone.eval()
    x, t, y = torch.randn(2, 3, 16, 16), torch.rand(2), torch.tensor([1, 4])
    torch.testing.assert_close(clone(x, t, y), model(x, t, y), rtol=0, atol=0)


def test_clear_errors_for_bad_sizes():
    model = UNet2D(channels=8, channel_mults=(1, 2, 2, 2), image_size=32)
    with pytest.raises(ValueError, match=r"multiples of 8; got 28x28.*32x32"):
        model(torch.randn(1, 1, 28, 28), torch.zeros(1))
    with pytest.raises(ValueError, match="image_size 28"):
        UNet2D(channels=8, channel_mults=(1, 2, 2, 2), image_size=28)
    with pytest.raises(ValueError, match=r"attn_resolutions \[5\]"):
        UNet2D(channels=8, channel_mults=(1, 2), image_size=8, attn_resolutions=(5,))
    with pytest.raises(ValueError, match="c_noise"):
        model(torch.randn(2, 1, 32, 32), torch.zeros(3))


def _check_against_direct(fast, direct, shape: tuple, out_ch: int) -> None:
    """fast(x, w, b) equals direct(x, w, b) in float64, in value and in every gradient, also for channels_last x."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(out_ch, shape[1], 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(out_ch, generator=g, dtype=torch.float64, requires_grad=True)
    want, got = direct(x, w, b), fast(x, w, b)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    grad = torch.randn(want.shape, generator=g, dtype=torch.float64)
    for a, c in zip(torch.autograd.grad(got, (x, w, b), grad), torch.autograd.grad(want, (x, w, b), grad)):
        torch.testing.assert_close(a, c, rtol=0, atol=1e-11)
    cl = fast(x.detach().contiguous(memory_format=torch.channels_last), w.detach(), b.detach())
    torch.testing.assert_close(cl, want.detach())


@pytest.mark.parametrize("shape", [(2, 5, 4, 4), (3, 4, 5, 9), (1, 3, 1, 1), (2, 6, 7, 7)])
def test_low_resolution_upsample_conv_is_the_direct_form(shape):
    def direct(x, w, b):
        return F.conv2d(F.interpolate(x, scale_factor=2.0, mode="nearest"), w, b, padding=1)

    _check_against_direct(nearest2x_conv3x3, direct, shape, 7)


def test_unet_output_does_not_depend_on_the_upsample_path(monkeypatch):
    model = UNet2D(channels=8, channel_mults=(1, 2, 2), attn_resolutions=(7,), image_size=28).double()
    _perturb(model)
    x, t = torch.randn(2, 1, 28, 28, dtype=torch.float64), torch.rand(2, dtype=torch.float64)
    fast = model(x, t)
    monkeypatch.setattr(Upsample, "PHASE_MIN_SIZE", 10**6)  # the direct nearest-upsample-then-conv form
    torch.testing.assert_close(fast, model(x, t), rtol=0, atol=1e-12)


@pytest.mark.parametrize("form", [tiny_conv3x3, narrow_conv3x3])
@pytest.mark.parametrize("shape", [(2, 5, 1, 1), (2, 5, 2, 1), (3, 4, 2, 2), (2, 3, 3, 3), (2, 6, 5, 7)])
def test_fast_conv3x3_forms_are_the_direct_convolution(form, shape):
    _check_against_direct(form, lambda x, w, b: F.conv2d(x, w, b, padding=1), shape, 3)


def test_unet_fast_paths_match_the_plain_layers(monkeypatch):
    model = UNet2D(channels=8, channel_mults=(1, 2, 2), image_size=8).double()  # levels 8, 4, 2
    _perturb(model)
    x, t = torch.randn(3, 1, 8, 8, dtype=torch.float64), torch.rand(3, dtype=torch.float64)
    fast = model(x, t)
    grads = torch.autograd.grad(fast.square().sum(), list(model.parameters()))
    monkeypatch.setattr(Conv3x3, "TINY_MAX_PIXELS", 0)
    monkeypatch.setattr(Conv3x3, "NARROW_MAX_OUT", 0)
    monkeypatch.setattr(Upsample, "PHASE_MIN_SIZE", 10**6)
    monkeypatch.setattr(blocks, "stacked_scale_shifts", lambda bs, emb: iter([None] * 64))  # a Linear per block
    plain = model(x, t)
    torch.testing.assert_close(fast, plain, rtol=0, atol=1e-12)
    for a, c in zip(grads, torch.autograd.grad(plain.square().sum(), list(model.parameters()))):
        torch.testing.assert_close(a, c, rtol=0, atol=1e-10)


def test_patch_size_is_the_plain_unet_on_folded_patches():
    kwargs = dict(channels=12, channel_mults=(1, 2), attn_resolutions=(4,), num_classes=3)
    patched = UNet2D(in_channels=2, patch_size=2, image_size=16, **kwargs)
    _perturb(patched)
    plain = UNet2D(in_channels=8, image_size=8, **kwargs)  # 2 channels x 2 x 2 patch pixels
    plain.load_state_dict(patched.state_dict())
    x, t, y = torch.randn(3, 2, 16, 16), torch.rand(3), torch.tensor([0, 2, -1])
    expected = torch.nn.functional.pixel_shuffle(plain(torch.nn.functional.pixel_unshuffle(x, 2), t, y), 2)
    torch.testing.assert_close(patched(x, t, y), expected, rtol=0, atol=0)
    assert patched(x, t, y).shape == x.shape
    assert UNet2D.from_config(json.loads(json.dumps(patched.config()))).config()["patch_size"] == 2
    with pytest.raises(ValueError, match=r"2x2 patches and halves it 1 times.*multiples of 4; got 18x18.*20x20"):
        patched(torch.randn(1, 2, 18, 18), torch.zeros(1))
    with pytest.raises(ValueError, match="image_size 14 cannot be cut into 4x4 patches"):
        UNet2D(patch_size=4, image_size=14, channel_mults=(1,))
