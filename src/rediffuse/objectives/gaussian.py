"""Gaussian denoising: sigma ~ the schedule's p_train, x = x0 + sigma * eps, loss lambda(sigma) |D(x) - x0|^2.

A conditional model sees the null label (index num_classes) with probability `label_dropout`, for
classifier-free guidance. The model is a `Denoiser` D(x, sigma, cond) around an MLP (points) or a UNet2D
(images); the preview is a grid of Heun samples, one row per class.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rediffuse import losses, schedules, viz, viz_audio
from rediffuse.audio_codec import to_waveforms
from rediffuse.config import need
from rediffuse.data.dataset import Data
from rediffuse.denoisers import PARAMETERIZATIONS, Denoiser, wrap
from rediffuse.errors import ConfigError
from rediffuse.nets import NETS
from rediffuse.objectives.base import Batch, Configured, Draws, StepGenerators
from rediffuse.samplers import generation


class Gaussian(Configured):
    """Denoising diffusion of one tensor per example (points or images), as docs/architecture.md states it."""

    name = "gaussian"

    def check(self) -> None:
        """Raise ConfigError naming the first invalid value of the keys this objective reads."""
        c = self.config
        need(not c.data.startswith("text:"), f"text data {c.data!r} trains with --objective masked (masked token "
                                             "diffusion) or autoregressive, not Gaussian denoising")
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

    def spec(self, data: Data) -> dict[str, Any]:
        """The JSON description of the denoiser to train on data: net, schedule, parameterization, sigma_data."""
        c = self.config
        kind = c.net if c.net != "auto" else {"points": "mlp", "audio": "unet1d"}.get(data.kind, "unet")
        if c.net == "auto" and data.codec:
            kind = "unet"  # audio as log-mel images
        num_classes = data.num_classes if c.conditional else None
        if c.conditional and num_classes is None:
            raise ConfigError(f"data {c.data!r} has no labels, so it cannot train a conditional model; "
                              "drop --conditional")
        if kind == "mlp":
            if len(data.shape) != 1:
                raise ConfigError(f"net 'mlp' needs points [N, d], but the examples have shape "
                                  f"{list(data.shape)}; use --net unet for images")
            net_config = {**c.net_kwargs, "dim": data.shape[0], "num_classes": num_classes}
        elif kind == "unet1d":
            if len(data.shape) != 2:
                raise ConfigError(f"net 'unet1d' needs waveforms [N, C, L], got examples of shape "
                                  f"{list(data.shape)}; use audio data (audio:PATH, fsdd:PATH)")
            net_config = {**c.net_kwargs, "in_channels": data.shape[0], "length": data.shape[1],
                          "num_classes": num_classes}
        else:
            if len(data.shape) != 3:
                raise ConfigError(f"net 'unet' needs images [N, C, H, W], got examples of shape {list(data.shape)}; "
                                  "use --net mlp for points or --net unet1d for waveforms")
            net_config = {**c.net_kwargs, "in_channels": data.shape[0], "image_size": data.shape[1],
                          "num_classes": num_classes,
                          **({"image_width": data.shape[2]} if data.shape[2] != data.shape[1] else {})}
        sigma_data = data.std() if c.sigma_data == "auto" else float(c.sigma_data)
        if not (math.isfinite(sigma_data) and sigma_data > 0):
            raise ConfigError(f"the training data {c.data!r} is constant or not finite (standard deviation "
                              f"{sigma_data}); check the data, or give --sigma-data to train on it anyway")
        try:
            schedule_config = schedules.get(c.schedule, **c.schedule_kwargs).config()
        except (TypeError, ValueError) as err:
            raise ConfigError(f"bad schedule_kwargs for {c.schedule!r}: {err}") from None
        info = {"kind": data.kind, "shape": list(data.shape), "num_classes": num_classes, "spec": c.data,
                **({"rate": data.rate} if data.rate else {}), **({"codec": data.codec} if data.codec else {})}
        return {"net": kind, "net_config": net_config, "schedule": schedule_config,
                "parameterization": c.parameterization, "sigma_data": sigma_data, "data": info}

    def build(self, spec: dict[str, Any]) -> nn.Module:
        """The raw network F of a spec ('mlp' or 'unet' with its config)."""
        return build_net(spec["net"], spec["net_config"])

    def model(self, spec: dict[str, Any], net: nn.Module) -> Denoiser:
        """The denoiser D(x, sigma, cond) around net, with the spec's parameterization and schedule."""
        return wrap(net, spec["parameterization"], schedules.from_config(spec["schedule"]), spec["sigma_data"])

    def draw(self, model: Denoiser, batch: Batch, generators: StepGenerators) -> Draws:
        """sigma [B] (float64, the schedule's p_train), noise eps like x, and the label-dropout mask."""
        x = batch.x
        sigma = model.schedule.sample_sigmas(len(x), generator=generators.cpu("sigma"))
        if x.device.type == "cuda":
            sigma = sigma.pin_memory()
        noise_gen = generators.device("noise")
        draws = {"sigma": sigma.to(x.device, non_blocking=True),
                 "noise": torch.randn(x.shape, generator=noise_gen, device=x.device, dtype=x.dtype)}
        if null_label(model) is not None and batch.labels is not None and self.config.label_dropout > 0:
            draws["drop"] = torch.rand(batch.labels.shape, generator=noise_gen, device=x.device) \
                < self.config.label_dropout
        return draws

    def loss(self, model: Denoiser, batch: Batch, draws: Draws) -> Tensor:
        """lambda(sigma) * |D(x0 + sigma eps, sigma, cond) - x0|^2 per sample (`losses.denoising_loss`)."""
        null = null_label(model)
        cond = None if null is None else batch.labels
        if cond is not None and "drop" in draws:
            cond = torch.where(draws["drop"], null, cond)
        return losses.denoising_loss(model, batch.x, draws["sigma"], draws["noise"], self.config.weighting, cond,
                                     model.sigma_data, self.config.min_snr_gamma, reduction="none")

    @torch.no_grad()
    def preview(self, model: Denoiser, spec: dict[str, Any], path: Path, device: torch.device,
                per_class: int = 8, steps: int = 18) -> Path | None:
        """A grid of samples, or for audio of their spectrograms (one row per class for conditional models);
        None for points."""
        kind = spec["data"]["kind"]
        if kind not in ("images", "audio"):
            return None
        num_classes = spec["data"]["num_classes"]
        per_class = per_class if kind == "images" else per_class // 2
        n = per_class * num_classes if num_classes else 8 * per_class
        cond = None if not num_classes else torch.arange(n) % num_classes
        x = generation.generate(model, model.schedule, spec["data"]["shape"], n=n, seed=0, cond=cond,
                                device=device, **self.preview_sampling(model, steps))
        if kind == "audio":
            clips = to_waveforms(spec["data"], x.cpu()).clamp(-1, 1)
            return viz_audio.spectrogram_grid_png(path, clips, labels=cond, nrow=per_class)
        return viz.image_grid_png(path, x.cpu(), labels=cond, nrow=8)


    def preview_sampling(self, model: Denoiser, steps: int) -> dict[str, Any]:
        """The sampler options of the preview: Heun on the schedule's grid."""
        return {"sampler": "heun", "steps": steps}


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
