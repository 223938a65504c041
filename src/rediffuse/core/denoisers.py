"""Preconditioning: any raw network F becomes a denoiser D(x, sigma) ~ E[x0 | x] (Karras et al. 2022, Table 1).

`D(x, sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma), cond)`.
The coefficients of each parameterisation:

| name | c_skip            | c_out                       | c_in               | c_noise          |
|------|-------------------|-----------------------------|--------------------|------------------|
| eps  | 1                 | -sigma                      | 1/sqrt(1+sigma^2)  | schedule's time  |
| x0   | 0                 | 1                           | 1/sqrt(1+sigma^2)  | schedule's time  |
| v    | 1/(1+sigma^2)     | -sigma/sqrt(1+sigma^2)      | 1/sqrt(1+sigma^2)  | schedule's time  |
| edm  | sd^2/(sigma^2+sd^2)| sigma sd/sqrt(sigma^2+sd^2)| 1/sqrt(sigma^2+sd^2)| ln(sigma)/4     |
| flow | 1-t               | -t                          | 1-t                | 1000 t           |

with t = sigma/(1+sigma) for flow, where F predicts the velocity u = eps - x0 of x_t = (1-t) x0 + t eps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import save as safetensors_bytes
from torch import Tensor, nn

from rediffuse.io import atomic_write, atomic_write_json
from rediffuse.core.schedules import Schedule

PARAMETERIZATIONS = ("eps", "x0", "v", "edm", "flow")
PRETRAINED_FORMAT = "rediffuse-pretrained"  # config.json's "format" in a `save_pretrained` folder

Coefficients = tuple[Tensor, Tensor, Tensor]


def _eps_like(sigma: Tensor, sigma_data: float) -> Coefficients:
    return torch.ones_like(sigma), -sigma, 1 / (1 + sigma**2).sqrt()


def _x0(sigma: Tensor, sigma_data: float) -> Coefficients:
    return torch.zeros_like(sigma), torch.ones_like(sigma), 1 / (1 + sigma**2).sqrt()


def _v(sigma: Tensor, sigma_data: float) -> Coefficients:
    root = (1 + sigma**2).sqrt()
    return 1 / (1 + sigma**2), -sigma / root, 1 / root


def _edm(sigma: Tensor, sigma_data: float) -> Coefficients:
    sd2 = sigma_data**2
    root = (sigma**2 + sd2).sqrt()
    return sd2 / (sigma**2 + sd2), sigma * sigma_data / root, 1 / root


def _flow(sigma: Tensor, sigma_data: float) -> Coefficients:
    t = sigma / (1 + sigma)
    return 1 - t, -t, 1 - t


COEFFICIENTS: dict[str, Callable[[Tensor, float], Coefficients]] = {
    "eps": _eps_like, "x0": _x0, "v": _v, "edm": _edm, "flow": _flow,
}


def coefficients(parameterization: str, sigma: Tensor, sigma_data: float = 0.5) -> Coefficients:
    """(c_skip, c_out, c_in) of a parameterisation at noise levels sigma."""
    if parameterization not in COEFFICIENTS:
        raise ValueError(f"unknown parameterization {parameterization!r}; choose one of "
                         f"{', '.join(PARAMETERIZATIONS)}")
    return COEFFICIENTS[parameterization](sigma, sigma_data)


def noise_input(parameterization: str, sigma: Tensor, schedule: Schedule) -> Tensor:
    """c_noise: the network's noise input for this parameterisation and schedule."""
    if parameterization == "edm":
        return sigma.log() / 4
    if parameterization == "flow":
        return 1000 * sigma / (1 + sigma)
    return schedule.c_noise(sigma)


def sigma_batch(sigma: float | Tensor, x: Tensor) -> Tensor:
    """sigma as a float64 per-sample vector of length x.shape[0] on x's device."""
    if not isinstance(sigma, Tensor):
        return torch.full((x.shape[0],), float(sigma), dtype=torch.float64, device=x.device)
    sigma = sigma.to(device=x.device, dtype=torch.float64)
    if sigma.ndim == 0:
        return sigma.expand(x.shape[0])
    return sigma.reshape(x.shape[0])


def expand_as(v: Tensor, x: Tensor) -> Tensor:
    """A per-sample vector reshaped to broadcast against x, in x's dtype."""
    return v.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))


class Denoiser(nn.Module):
    """D(x, sigma, cond) -> estimate of E[x0 | x], wrapping a raw network F(x, c_noise, cond=None)."""

    def __init__(self, net: nn.Module, parameterization: str, schedule: Schedule, sigma_data: float = 0.5):
        super().__init__()
        coefficients(parameterization, torch.ones(1), sigma_data)  # validates the name
        self.net, self.parameterization = net, parameterization
        self.schedule, self.sigma_data = schedule, sigma_data

    def coefficients(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(c_skip, c_out, c_in, c_noise) for float64 per-sample sigmas."""
        c_skip, c_out, c_in = coefficients(self.parameterization, sigma, self.sigma_data)
        return c_skip, c_out, c_in, noise_input(self.parameterization, sigma, self.schedule)

    def raw(self, x: Tensor, sigma: float | Tensor, cond: Tensor | None = None) -> Tensor:
        """The raw network output F(c_in x, c_noise, cond) (what the classic losses compare)."""
        sig = sigma_batch(sigma, x)
        _, _, c_in, c_noise = self.coefficients(sig)
        return self._call_net(expand_as(c_in, x) * x, c_noise.to(x.dtype), cond)

    def _call_net(self, x: Tensor, c_noise: Tensor, cond: Tensor | None) -> Tensor:
        return self.net(x, c_noise) if cond is None else self.net(x, c_noise, cond)

    def scalar_coefficients(self, sigma: float) -> tuple[float, float, float, float]:
        """(c_skip, c_out, c_in, c_noise) at one noise level as Python floats, cached (samplers reuse grids)."""
        cache = self.__dict__.setdefault("_scalar_cache", {})
        if sigma not in cache:
            if len(cache) > 4096:
                cache.clear()
            cache[sigma] = tuple(float(c) for c in self.coefficients(torch.tensor([sigma], dtype=torch.float64)))
        return cache[sigma]

    def _noise_input(self, c_noise: float, x: Tensor) -> Tensor:
        """The per-sample noise input for one level, cached per (level, batch, dtype, device)."""
        cache = self.__dict__.setdefault("_noise_cache", {})
        key = (c_noise, x.shape[0], x.dtype, x.device)
        if key not in cache:
            if len(cache) > 4096:
                cache.clear()
            cache[key] = torch.full((x.shape[0],), c_noise, dtype=x.dtype, device=x.device)
        return cache[key]

    def pretrained_spec(self, data: dict[str, Any] | None = None) -> dict[str, Any]:
        """What `save_pretrained` writes to config.json: the network by registry name and config, the
        preconditioning, the schedule and the data's shape (given, from a loaded run, or read off the network)."""
        name = getattr(type(self.net), "registry_name", None)
        if name is None or not hasattr(self.net, "config"):
            raise ValueError(f"save_pretrained needs one of rediffuse's networks (mlp, unet, unet1d), got "
                             f"{type(self.net).__name__}; save its state_dict yourself")
        net_config = self.net.config()
        info = data or getattr(self, "data_info", None) or _data_of(name, net_config)
        return {"format": PRETRAINED_FORMAT, "format_version": 1, "net": name, "net_config": net_config,
                "parameterization": self.parameterization, "schedule": self.schedule.config(),
                "sigma_data": float(self.sigma_data), "data": info}

    def save_pretrained(self, folder: str | Path, data: dict[str, Any] | None = None) -> Path:
        """Write a self-contained model folder: config.json (everything to rebuild this denoiser) and
        model.safetensors (its weights); `rediffuse.from_pretrained` and `rediffuse sample` read it."""
        folder = Path(folder)
        if folder.is_file():
            raise ValueError(f"save_pretrained needs a folder, and {str(folder)!r} is a file; give another path")
        spec = self.pretrained_spec(data)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        atomic_write(folder / "model.safetensors", safetensors_bytes(state))
        atomic_write_json(folder / "config.json", spec)  # last: a folder with a config is complete
        return folder

    def forward(self, x: Tensor, sigma: float | Tensor, cond: Tensor | None = None) -> Tensor:
        if not isinstance(sigma, Tensor):  # one noise level for the batch: scalar arithmetic, no tiny tensors
            c_skip, c_out, c_in, c_noise = self.scalar_coefficients(float(sigma))
            noise_in = self._noise_input(c_noise, x)
            f = self._call_net(x * c_in, noise_in, cond).to(x.dtype)
            return torch.add(x if c_skip == 1 else x * c_skip, f, alpha=c_out)
        sig = sigma_batch(sigma, x)
        c_skip, c_out, c_in, c_noise = self.coefficients(sig)
        f = self._call_net(expand_as(c_in, x) * x, c_noise.to(x.dtype), cond)
        return expand_as(c_skip, x) * x + expand_as(c_out, x) * f.to(x.dtype)


def wrap(net: nn.Module, parameterization: str, schedule: Schedule, sigma_data: float = 0.5) -> Denoiser:
    """Wrap a raw network F(x, c_noise, cond=None) as a Denoiser with the given parameterisation."""
    return Denoiser(net, parameterization, schedule, sigma_data)


def _data_of(net: str, config: dict[str, Any]) -> dict[str, Any]:
    """The data description a network's config implies (shape, classes): images, clips at 8 kHz or points."""
    classes = config.get("num_classes")
    if net == "unet":
        side = config["image_size"]
        shape = [config["in_channels"], side, config.get("image_width") or side]
        return {"kind": "images", "shape": shape, "num_classes": classes}
    if net == "unet1d":
        return {"kind": "audio", "shape": [config["in_channels"], config["length"]], "num_classes": classes,
                "rate": 8000}
    if net == "mlp":
        return {"kind": "points", "shape": [config["dim"]], "num_classes": classes}
    raise ValueError(f"save_pretrained cannot tell the data shape of a {net!r} network; pass data={{'kind': ..., "
                     "'shape': [...], 'num_classes': ...}")
