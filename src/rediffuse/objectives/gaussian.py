"""Gaussian denoising: sigma ~ the schedule's p_train, x = x0 + sigma * eps, loss lambda(sigma) |D(x) - x0|^2.

A conditional model sees the null label (index num_classes) with probability `label_dropout`, for
classifier-free guidance. The model is a `Denoiser` D(x, sigma, cond) around an MLP (points) or a UNet2D
(images); the preview is a grid of Heun samples, one row per class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rediffuse import modalities
from rediffuse.core import losses
from rediffuse.core import schedules
from rediffuse.data.dataset import Data
from rediffuse.core.denoisers import PARAMETERIZATIONS, Denoiser, wrap
from rediffuse.keys import need, opt
from rediffuse.errors import ConfigError
from rediffuse.nets import NETS
from rediffuse.core.spec import DataInfo, ModelSpec
from rediffuse.objectives.base import Batch, Configured, StepDraws, StepGenerators
from rediffuse.samplers.request import Grid, SamplingRequest


@dataclass
class GaussianKeys:
    """The keys of Gaussian denoising (and of the consistency tuning that starts from it)."""

    schedule: str = opt("edm", f"noise schedule: {', '.join(schedules.SCHEDULES)}")
    schedule_kwargs: dict = opt({}, "extra schedule arguments (TOML table or JSON)")
    parameterization: str = opt("edm", f"network target: {', '.join(PARAMETERIZATIONS)}")
    weighting: str = opt("edm", f"loss weighting: {', '.join(losses.WEIGHTINGS)}")
    min_snr_gamma: float = opt(5.0, "gamma of the min-snr weighting")
    sigma_data: float | str = opt("auto", "data standard deviation for EDM, or 'auto' (measured once)")
    label_dropout: float = opt(0.1, "probability of the null label during training (classifier-free guidance)")


class Gaussian(Configured):
    """Denoising diffusion of one tensor per example (points or images), as docs/architecture.md states it."""

    name = "gaussian"

    def check(self) -> None:
        """Raise ConfigError naming the first invalid value of the keys this objective reads."""
        c = self.config
        need(not c.data.startswith("text:"), f"text data {c.data!r} trains with --objective masked (masked token "
                                             "diffusion) or autoregressive, not Gaussian denoising")
        need(not c.data.startswith("table:"), f"table data {c.data!r} trains with --objective table (numbers "
                                              "and categories together), not Gaussian denoising")
        need(c.net in ("auto", *NETS), f"unknown net {c.net!r}; choose auto, {', '.join(NETS)}")
        need(c.schedule in schedules.SCHEDULES,
             f"unknown schedule {c.schedule!r}; choose one of {', '.join(schedules.SCHEDULES)}")
        need(c.parameterization in PARAMETERIZATIONS,
             f"unknown parameterization {c.parameterization!r}; choose one of {', '.join(PARAMETERIZATIONS)}")
        need(c.weighting in losses.WEIGHTINGS,
             f"unknown weighting {c.weighting!r}; choose one of {', '.join(losses.WEIGHTINGS)}")
        need(c.sigma_data == "auto" or (isinstance(c.sigma_data, (int, float)) and 0 < c.sigma_data < math.inf),
             f"sigma_data must be 'auto' or a positive number, got {c.sigma_data!r}")
        for name in ("min_snr_gamma", "label_dropout"):
            need(math.isfinite(getattr(c, name)), f"{name} must be a finite number, got {getattr(c, name)}")
        need(c.min_snr_gamma > 0, f"min_snr_gamma must be positive, got {c.min_snr_gamma}")
        need(0 <= c.label_dropout < 1, f"label_dropout must be in [0, 1), got {c.label_dropout}")
        need(isinstance(c.schedule_kwargs, dict), "schedule_kwargs must be a table (dict)")

    def spec(self, data: Data) -> ModelSpec:
        """The denoiser to train on data: net, schedule, parameterization, sigma_data and the data."""
        c = self.config
        net = c.net if c.net != "auto" else modalities.get(data.kind).default_net(data.shape, data.codec)
        num_classes = data.num_classes if c.conditional else None
        if c.conditional and num_classes is None:
            raise ConfigError(f"data {c.data!r} has no labels, so it cannot train a conditional model; "
                              "drop --conditional")
        if not hasattr(NETS[net], "data_config"):
            raise ConfigError(f"net {net!r} is not a denoiser network; choose one of "
                              f"{', '.join(n for n in NETS if hasattr(NETS[n], 'data_config'))}")
        try:
            net_config = NETS[net].data_config(data.shape, num_classes, c.net_kwargs)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        sigma_data = data.std() if c.sigma_data == "auto" else float(c.sigma_data)
        if not (math.isfinite(sigma_data) and sigma_data > 0):
            raise ConfigError(f"the training data {c.data!r} is constant or not finite (standard deviation "
                              f"{sigma_data}); check the data, or give --sigma-data to train on it anyway")
        try:
            schedule_config = schedules.get(c.schedule, **c.schedule_kwargs).config()
        except (TypeError, ValueError) as err:
            raise ConfigError(f"bad schedule_kwargs for {c.schedule!r}: {err}") from None
        info = DataInfo(data.kind, tuple(data.shape), num_classes, c.data, data.rate or None, data.codec or None)
        return ModelSpec(net, net_config, info, schedule_config, c.parameterization, sigma_data)

    def build(self, spec: ModelSpec) -> nn.Module:
        """The raw network F of a spec ('mlp' or 'unet' with its config)."""
        return build_net(spec.net, spec.net_config)

    def model(self, spec: ModelSpec, net: nn.Module) -> Denoiser:
        """The denoiser D(x, sigma, cond) around net, with the spec's parameterization and schedule."""
        return wrap(net, spec.parameterization, schedules.from_config(spec.schedule), spec.sigma_data)

    def draw(self, model: Denoiser, batch: Batch, generators: StepGenerators) -> GaussianDraws:
        """sigma [B] (float64, the schedule's p_train), noise eps like x, and the label-dropout mask."""
        x = batch.x
        sigma = model.schedule.sample_sigmas(len(x), generator=generators.cpu("sigma"))
        if x.device.type == "cuda":
            sigma = sigma.pin_memory()
        noise_gen = generators.device("noise")
        noise = torch.randn(x.shape, generator=noise_gen, device=x.device, dtype=x.dtype)
        drop = None
        if null_label(model) is not None and batch.labels is not None and self.config.label_dropout > 0:
            drop = torch.rand(batch.labels.shape, generator=noise_gen, device=x.device) < self.config.label_dropout
        return GaussianDraws(sigma.to(x.device, non_blocking=True), noise, drop)

    def loss(self, model: Denoiser, batch: Batch, draws: GaussianDraws) -> Tensor:
        """lambda(sigma) * |D(x0 + sigma eps, sigma, cond) - x0|^2 per sample (`losses.denoising_loss`)."""
        cond = dropped_labels(model, batch, draws.drop)
        return losses.denoising_loss(model, batch.x, draws.sigma, draws.noise, self.config.weighting, cond,
                                     model.sigma_data, self.config.min_snr_gamma, reduction="none")

    @torch.no_grad()
    def preview(self, model: Denoiser, spec: ModelSpec, path: Path, device: torch.device,
                steps: int = 18) -> Path | None:
        """The modality's picture of samples (one row per class for conditional models); None where it has
        none (points)."""
        modality = modalities.of(spec)
        if not modality.preview_per_class:
            return None
        num_classes = spec.data.num_classes
        n = modality.preview_per_class * (num_classes or 8)
        cond = None if not num_classes else torch.arange(n) % num_classes
        sampler, steps, grid = self.preview_sampling(model, steps)
        request = SamplingRequest(n=n, sampler=sampler, steps=steps, labels=cond, device=device, batch_size=n)
        return modality.preview(path, modality.draw(model, spec, request, grid).samples, cond)

    def preview_sampling(self, model: Denoiser, steps: int) -> tuple[str, int, Grid]:
        """The preview's sampler, steps and levels: Heun on the schedule's grid."""
        return "heun", steps, Grid()


@dataclass(frozen=True, eq=False)
class GaussianDraws(StepDraws):
    """One step's randomness: noise levels sigma [B] (float64), noise eps like x, the label-dropout mask [B]."""

    sigma: Tensor
    noise: Tensor
    drop: Tensor | None = None


def dropped_labels(model: nn.Module, batch: Batch, drop: Tensor | None) -> Tensor | None:
    """The labels a conditional model trains on: the null label where `drop` says (None: unconditional)."""
    null = null_label(model)
    cond = None if null is None else batch.labels
    return cond if cond is None or drop is None else torch.where(drop, null, cond)


def null_label(model: Denoiser) -> int | None:
    """The null label of a conditional denoiser (its number of classes), None for an unconditional one."""
    return getattr(_unwrapped(model.net), "num_classes", None)


def _unwrapped(net: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel wrapper (or net itself)."""
    return getattr(net, "module", net)


def build_net(kind: str, net_config: dict[str, Any]) -> nn.Module:
    """A network by kind ('mlp' or 'unet') from its config dict."""
    try:
        return NETS[kind].from_config(net_config)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ConfigError(f"bad net_kwargs for {kind!r}: {' '.join(str(err).split())}") from None
