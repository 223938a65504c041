"""Foreign models as denoisers: a diffusers eps-, v- or sample-prediction UNet becomes D(x, sigma).

The scheduler config supplies the discrete VP schedule (betas) and the prediction type; the network then
runs under any rediffuse sampler. diffusers itself is never imported here: any module whose forward is
`unet(sample, timestep, class_labels=None)` returning `.sample` (or a tuple) works.
"""

from __future__ import annotations

from typing import Any, Mapping

from torch import Tensor, nn

from rediffuse.core.denoisers import Denoiser, wrap
from rediffuse.core.schedules import VPLinear

PREDICTION_TYPES = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}


class DiffusersNet(nn.Module):
    """Adapts a diffusers-style UNet to the raw-network signature F(x, c_noise, cond=None)."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, x: Tensor, c_noise: Tensor, cond: Tensor | None = None) -> Tensor:
        kwargs = {} if cond is None else {"class_labels": cond}
        out = self.unet(x, c_noise, **kwargs)
        out = out.sample if hasattr(out, "sample") else out[0] if isinstance(out, tuple) else out
        if out.shape[1] == 2 * x.shape[1]:  # learned-variance models: keep the mean prediction
            out = out[:, : x.shape[1]]
        return out


def schedule_from_diffusers(config: Mapping[str, Any]) -> VPLinear:
    """The discrete VP schedule of a diffusers scheduler config (num_train_timesteps, betas)."""
    if config.get("trained_betas") is not None:
        raise ValueError("scheduler configs with explicit trained_betas are not supported; use a beta_schedule")
    return VPLinear(num_steps=int(config.get("num_train_timesteps", 1000)),
                    beta_start=float(config.get("beta_start", 1e-4)), beta_end=float(config.get("beta_end", 0.02)),
                    beta_schedule=str(config.get("beta_schedule", "linear")))


def from_diffusers(unet: nn.Module, scheduler_config: Mapping[str, Any]) -> Denoiser:
    """A Denoiser around a diffusers UNet and its scheduler config (a dict or a scheduler's `.config`)."""
    config = dict(scheduler_config)
    prediction = config.get("prediction_type", "epsilon")
    if prediction not in PREDICTION_TYPES:
        raise ValueError(f"unsupported prediction_type {prediction!r}; supported: {', '.join(PREDICTION_TYPES)}")
    return wrap(DiffusersNet(unet), PREDICTION_TYPES[prediction], schedule_from_diffusers(config))
