"""Training reaches the Bayes-optimal loss, plus the MLP and EMA it relies on."""

import time

import pytest
import torch

from rediffuse.truth import analytic
from rediffuse.core import losses
from rediffuse.core import schedules
from rediffuse.core.ema import EMA
from rediffuse.nets.mlp import MLP
from rediffuse.config import TrainConfig
from rediffuse.runs import load_run
from rediffuse.train import train


BAYES = dict(data="8gaussians", steps=1000, batch_size=512, lr=3e-3, warmup_steps=50, ema_decay=0.99,
             schedule="edm", parameterization="edm", weighting="edm", sigma_data="auto", log_every=250,
             checkpoint_every=1000, progress=False, net="mlp", net_kwargs={"hidden": 128, "depth": 3, "emb_dim": 64})


def test_mlp_reaches_bayes_optimal_loss(tmp_path):
    start = time.process_time()
    train(TrainConfig(out=str(tmp_path), **BAYES))
    cpu = time.process_time() - start
    denoiser, schedule, config = load_run(tmp_path)  # the EMA weights
    mixture = analytic.preset("8gaussians")
    assert denoiser.sigma_data == pytest.approx(float(mixture.sample(100_000).std()), rel=0.02)
    g = torch.Generator().manual_seed(1234)
    x0 = mixture.sample(20_000, g).float()
    sigma = schedule.sample_sigmas(20_000, g)
    noise = torch.randn(x0.shape, generator=g)
    with torch.no_grad():
        model = losses.denoising_loss(denoiser, x0, sigma, noise, "edm", sigma_data=denoiser.sigma_data).item()
        bayes = losses.denoising_loss(mixture.denoiser(), x0, sigma, noise, "edm",
                                      sigma_data=denoiser.sigma_data).item()
    print(f"\nEMA model loss {model:.4f}, Bayes-optimal {bayes:.4f}, gap {model / bayes - 1:+.2%}, "
          f"training {cpu:.1f} s CPU")
    assert bayes <= model * 1.001  # the exact denoiser is optimal (up to sampling noise)
    assert model <= 1.10 * bayes


@pytest.mark.parametrize("c_noise", [torch.arange(0, 1000, 125.0), 1000 * torch.linspace(0.001, 0.999, 8),
                                     torch.log(torch.logspace(-3, 2, 8)) / 4])
def test_mlp_shapes_zero_init_and_noise_ranges(c_noise):
    net = MLP(3, hidden=32, depth=2, emb_dim=16)
    x = torch.randn(8, 3)
    out = net(x, c_noise)
    assert out.shape == (8, 3) and torch.equal(out, torch.zeros(8, 3))  # zero-initialised output layer
    with torch.no_grad():  # move the zero-initialised layers too
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    out = net(x, c_noise)
    assert torch.isfinite(out).all()
    assert not torch.allclose(out[0], net(x[:1], c_noise[1:2])[0])  # the noise input matters
    assert torch.equal(net(x, c_noise[0].item()), net(x, c_noise[0].expand(8)))  # scalar c_noise


def test_mlp_config_round_trip_and_null_class():
    net = MLP(2, hidden=16, depth=2, emb_dim=8, num_classes=4, dropout=0.1).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    twin = MLP.from_config(net.config())
    twin.load_state_dict(net.state_dict())
    x, c = torch.randn(5, 2), torch.randn(5)
    labels = torch.tensor([0, 1, 2, 3, 3])
    assert torch.equal(net(x, c, labels), twin.eval()(x, c, labels))
    null = net(x, c)
    assert torch.equal(null, net(x, c, torch.full((5,), -1)))
    assert torch.equal(null, net(x, c, torch.full((5,), 4)))
    assert not torch.allclose(null, net(x, c, labels))
    with pytest.raises(ValueError, match="no num_classes"):
        MLP(2)(x, c, labels)
    with pytest.raises(ValueError, match=r"\[B, 2\]"):
        net(torch.randn(5, 3), c)


def test_ema_warmup_and_update():
    net = torch.nn.Linear(2, 1)
    ema = EMA(net, decay=0.99)
    assert [ema.decay_at(s) for s in (0, 1, 10_000)] == [0.1, 2 / 11, 0.99]
    assert EMA(net, decay=0.99, warmup=False).decay_at(0) == 0.99
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(net, step=0)
    torch.testing.assert_close(ema.module.weight, before["weight"] + 0.9)  # p_ema + (1 - 0.1) (p - p_ema)
    torch.testing.assert_close(ema.module.bias, before["bias"])
    assert not ema.module.weight.requires_grad and not ema.module.training
    restored = EMA(torch.nn.Linear(2, 1))
    restored.load_state_dict(ema.state_dict())
    assert torch.equal(restored.module.weight, ema.module.weight)


def test_schedule_sigmas_are_cpu_float64():
    # the training loop moves them to the device itself
    s = schedules.get("edm").sample_sigmas(4, torch.Generator().manual_seed(0))
    assert s.dtype == torch.float64 and s.device.type == "cpu"
