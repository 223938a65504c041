"""Parity with diffusers where the algorithms coincide: same random UNet, timesteps and noise."""

import types

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from rediffuse import samplers  # noqa: E402
from rediffuse.foreign import from_diffusers  # noqa: E402

STEPS = 10


class NearOptimal(torch.nn.Module):
    """A random diffusers UNet plus the optimal eps of N(0, I) data, so samples stay O(1) as real ones do."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet
        self.register_buffer("abar", diffusers.DDPMScheduler().alphas_cumprod)

    def forward(self, sample, timestep):
        t = torch.as_tensor(timestep).round().long().clamp(0, 999)
        optimal = (1 - self.abar[t]).sqrt().reshape(-1, 1, 1, 1) * sample
        return types.SimpleNamespace(sample=optimal + 0.1 * self.unet(sample, timestep).sample)


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    model = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                                  block_out_channels=(16, 32), down_block_types=("DownBlock2D", "DownBlock2D"),
                                  up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=8)
    return NearOptimal(model).eval()


def run_diffusers(unet, scheduler, x_T):
    scheduler.set_timesteps(STEPS)
    x = x_T * scheduler.init_noise_sigma
    with torch.no_grad():
        for t in scheduler.timesteps:
            eps = unet(scheduler.scale_model_input(x, t), t).sample
            x = scheduler.step(eps, t, x).prev_sample
    return x


def run_ours(unet, config, x_T, name, schedule_steps=None, **options):
    denoiser = from_diffusers(unet, config)
    sch = denoiser.schedule
    grid = sch.sigmas(STEPS)  # the schedule's own trailing timesteps, then 0
    x = x_T * sch.prior_std(float(grid[0]))
    with torch.no_grad():
        return samplers.sample(denoiser, x, grid, name, **options)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_ddim_eta0_matches(unet, prediction):
    sched = diffusers.DDIMScheduler(timestep_spacing="trailing", prediction_type=prediction, clip_sample=False,
                                    set_alpha_to_one=True)
    x_T = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    want = run_diffusers(unet, sched, x_T)
    got = run_ours(unet, sched.config, x_T, "ddim")
    assert (got - want).abs().max() < 1e-4


def test_euler_matches(unet):
    sched = diffusers.EulerDiscreteScheduler(timestep_spacing="trailing")
    x_T = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    want = run_diffusers(unet, sched, x_T)
    got = run_ours(unet, sched.config, x_T, "euler")
    assert want.abs().max() < 10
    assert (got - want).abs().max() < 1e-4


def test_schedule_from_config_matches_betas():
    for kind in ("linear", "scaled_linear", "squaredcos_cap_v2"):
        sched = diffusers.DDPMScheduler(beta_schedule=kind, beta_start=0.00085, beta_end=0.012)
        ours = from_diffusers(torch.nn.Identity(), sched.config).schedule
        assert torch.allclose(ours.alphas_cumprod, sched.alphas_cumprod.double(), rtol=1e-5)
