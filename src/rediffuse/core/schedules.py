"""Noise schedules in the unified VE view `x = x0 + sigma * eps` (Karras et al. 2022, Table 1).

A schedule maps its own time `t` to a noise level `sigma`, gives the input scale `s(sigma)` that turns the
VE-form `x` into the schedule's native variable, draws training sigmas, and builds sampling grids.
Grids are descending float64 CPU tensors that end in a trailing 0.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

SPACINGS = ("default", "karras", "logsnr", "uniform")


def _as_f64(value: float | Tensor) -> Tensor:
    """A float64 tensor view of a float or tensor (kept on its device)."""
    if isinstance(value, Tensor):
        return value.to(torch.float64)
    return torch.tensor(float(value), dtype=torch.float64)


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    """Karras et al. (2022) eq. 5: sigmas evenly spaced in sigma^(1/rho), descending, no trailing 0."""
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def logsnr_sigmas(steps: int, sigma_min: float, sigma_max: float) -> Tensor:
    """Sigmas uniform in log(sigma) (that is, in log-SNR), descending, no trailing 0."""
    return torch.linspace(math.log(sigma_max), math.log(sigma_min), steps, dtype=torch.float64).exp()


def append_zero(sigmas: Tensor) -> Tensor:
    """The grid with a trailing 0 appended."""
    return torch.cat([sigmas, sigmas.new_zeros(1)])


class Schedule:
    """Base class: a map between the schedule's time t and the VE noise level sigma."""

    name: str = "base"
    sigma_min: float
    sigma_max: float

    def sigma(self, t: float | Tensor) -> Tensor:
        """Noise level sigma at schedule time t."""
        raise NotImplementedError

    def t(self, sigma: float | Tensor) -> Tensor:
        """Schedule time t at noise level sigma (inverse of `sigma`)."""
        raise NotImplementedError

    def scale(self, sigma: float | Tensor) -> Tensor:
        """Scale s(sigma) taking VE-form x to the schedule's native variable s * x."""
        return torch.ones_like(_as_f64(sigma))

    def c_noise(self, sigma: Tensor) -> Tensor:
        """The network's noise input for this schedule's native parameterisations."""
        return self.t(sigma)

    def prior_std(self, sigma: float) -> float:
        """Standard deviation of the prior x ~ N(0, std^2 I) at noise level sigma (VE form)."""
        return float(sigma)

    def sample_sigmas(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n training noise levels drawn from this schedule's own distribution (float64, CPU)."""
        raise NotImplementedError

    @property
    def t_min(self) -> float:
        return float(self.t(self.sigma_min))

    @property
    def t_max(self) -> float:
        return float(self.t(self.sigma_max))

    def default_sigmas(self, steps: int) -> Tensor:
        """The schedule's own time grid (no trailing 0)."""
        return self.uniform_sigmas(steps)

    def uniform_sigmas(self, steps: int) -> Tensor:
        """Sigmas at times uniform in t from t_max to t_min (no trailing 0)."""
        ts = torch.linspace(self.t_max, self.t_min, steps, dtype=torch.float64)
        return self.sigma(ts)

    def sigmas(self, steps: int, spacing: str = "default", rho: float = 7.0) -> Tensor:
        """A descending grid of `steps` noise levels plus a trailing 0 (float64, CPU)."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        makers: dict[str, Callable[[], Tensor]] = {
            "default": lambda: self.default_sigmas(steps),
            "karras": lambda: karras_sigmas(steps, self.sigma_min, self.sigma_max, rho),
            "logsnr": lambda: logsnr_sigmas(steps, self.sigma_min, self.sigma_max),
            "uniform": lambda: self.uniform_sigmas(steps),
        }
        if spacing not in makers:
            raise ValueError(f"unknown spacing {spacing!r}; choose one of {', '.join(SPACINGS)}")
        return append_zero(makers[spacing]().to(torch.float64))

    def config(self) -> dict:
        """JSON-serialisable constructor arguments, with the schedule name."""
        return {"name": self.name}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"


def discrete_betas(kind: str, num_steps: int, beta_start: float, beta_end: float) -> Tensor:
    """DDPM-style beta sequences by their diffusers names: linear, scaled_linear, squaredcos_cap_v2."""
    if kind == "linear":
        return torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
    if kind == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, num_steps, dtype=torch.float64) ** 2
    if kind == "squaredcos_cap_v2":
        t = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
        abar = torch.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        return (1 - abar[1:] / abar[:-1]).clamp(max=0.999)
    raise ValueError(f"unknown beta_schedule {kind!r}; choose linear, scaled_linear or squaredcos_cap_v2")


class VPLinear(Schedule):
    """DDPM's discrete schedule (Ho et al. 2020): betas linear in [beta_start, beta_end] over T steps.

    `beta_schedule` also takes diffusers' scaled_linear and squaredcos_cap_v2 (for wrapped foreign models).

    sigma_t = sqrt((1 - abar_t) / abar_t) at integer t in [0, T-1]; between integers, log(sigma) is
    interpolated linearly, so t(sigma) gives a fractional index. c_noise is the index t.
    """

    name = "vp-linear"

    def __init__(self, num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                 beta_schedule: str = "linear"):
        self.num_steps, self.beta_start, self.beta_end = num_steps, beta_start, beta_end
        self.beta_schedule = beta_schedule
        betas = discrete_betas(beta_schedule, num_steps, beta_start, beta_end)
        self.alphas_cumprod = torch.cumprod(1 - betas, dim=0)
        self.discrete_sigmas = ((1 - self.alphas_cumprod) / self.alphas_cumprod).sqrt()
        self.log_sigmas = self.discrete_sigmas.log()
        self.sigma_min = float(self.discrete_sigmas[0])
        self.sigma_max = float(self.discrete_sigmas[-1])

    def config(self) -> dict:
        return {"name": self.name, "num_steps": self.num_steps, "beta_start": self.beta_start,
                "beta_end": self.beta_end, "beta_schedule": self.beta_schedule}

    def sigma(self, t: float | Tensor) -> Tensor:
        t = _as_f64(t)
        log_sigmas = self.log_sigmas.to(t.device)
        t = t.clamp(0, self.num_steps - 1)
        lo = t.floor().long().clamp(max=self.num_steps - 2)
        frac = t - lo
        return ((1 - frac) * log_sigmas[lo] + frac * log_sigmas[lo + 1]).exp()

    def t(self, sigma: float | Tensor) -> Tensor:
        log_sigma = _as_f64(sigma).log()
        log_sigmas = self.log_sigmas.to(log_sigma.device)
        idx = torch.searchsorted(log_sigmas, log_sigma.contiguous()).clamp(1, self.num_steps - 1)
        lo, hi = log_sigmas[idx - 1], log_sigmas[idx]
        frac = ((log_sigma - lo) / (hi - lo)).clamp(0, 1)
        return idx - 1 + frac

    def scale(self, sigma: float | Tensor) -> Tensor:
        return 1 / (1 + _as_f64(sigma) ** 2).sqrt()

    def prior_std(self, sigma: float) -> float:
        return math.sqrt(1 + sigma**2)

    def sample_sigmas(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        t = torch.randint(0, self.num_steps, (n,), generator=generator)
        return self.discrete_sigmas[t]

    def timesteps(self, steps: int) -> Tensor:
        """The 'trailing' discrete timesteps round(T - i T/steps) - 1, descending (as in diffusers)."""
        ts = torch.arange(self.num_steps, 0, -self.num_steps / steps, dtype=torch.float64)
        return ts.round().long() - 1

    def default_sigmas(self, steps: int) -> Tensor:
        return self.discrete_sigmas[self.timesteps(steps)]


class VPCosine(Schedule):
    """Cosine schedule (Nichol & Dhariwal 2021): abar(t) = cos^2(pi/2 (t+s)/(1+s)) / cos^2(pi/2 s/(1+s)).

    Continuous t in [0, 1], truncated to [t(sigma_min), t(sigma_max)]; c_noise = 1000 t.
    """

    name = "vp-cosine"

    def __init__(self, s: float = 0.008, sigma_min: float = 0.002, sigma_max: float = 80.0):
        self.s, self.sigma_min, self.sigma_max = s, sigma_min, sigma_max
        self._c0 = math.cos(math.pi / 2 * s / (1 + s))

    def config(self) -> dict:
        return {"name": self.name, "s": self.s, "sigma_min": self.sigma_min, "sigma_max": self.sigma_max}

    def sigma(self, t: float | Tensor) -> Tensor:
        t = _as_f64(t)
        sqrt_abar = torch.cos(math.pi / 2 * (t + self.s) / (1 + self.s)) / self._c0
        return (1 / sqrt_abar**2 - 1).clamp(min=0).sqrt()

    def t(self, sigma: float | Tensor) -> Tensor:
        sqrt_abar = 1 / (1 + _as_f64(sigma) ** 2).sqrt()
        return (1 + self.s) * 2 / math.pi * torch.acos((sqrt_abar * self._c0).clamp(-1, 1)) - self.s

    def scale(self, sigma: float | Tensor) -> Tensor:
        return 1 / (1 + _as_f64(sigma) ** 2).sqrt()

    def c_noise(self, sigma: Tensor) -> Tensor:
        return 1000 * self.t(sigma)

    def prior_std(self, sigma: float) -> float:
        return math.sqrt(1 + sigma**2)

    def sample_sigmas(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        return self.sigma(self.t_min + u * (self.t_max - self.t_min))


class VE(Schedule):
    """Variance-exploding schedule (Song et al. 2021): sigma(t) = sigma_min (sigma_max/sigma_min)^t, t in [0,1].

    Training draws t uniformly (log-uniform sigma); c_noise = ln(sigma / 2) (Karras et al. 2022, Table 1).
    """

    name = "ve"

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        self.sigma_min, self.sigma_max = sigma_min, sigma_max

    def config(self) -> dict:
        return {"name": self.name, "sigma_min": self.sigma_min, "sigma_max": self.sigma_max}

    def sigma(self, t: float | Tensor) -> Tensor:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** _as_f64(t)

    def t(self, sigma: float | Tensor) -> Tensor:
        return (_as_f64(sigma) / self.sigma_min).log() / math.log(self.sigma_max / self.sigma_min)

    def c_noise(self, sigma: Tensor) -> Tensor:
        return (0.5 * _as_f64(sigma)).log()

    def sample_sigmas(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.sigma(torch.rand(n, generator=generator, dtype=torch.float64))


class EDM(Schedule):
    """EDM schedule (Karras et al. 2022): sigma(t) = t, log-normal training sigmas, Karras rho grid.

    c_noise = ln(sigma) / 4.
    """

    name = "edm"

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, p_mean: float = -1.2,
                 p_std: float = 1.2, rho: float = 7.0):
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self.p_mean, self.p_std, self.rho = p_mean, p_std, rho

    def config(self) -> dict:
        return {"name": self.name, "sigma_min": self.sigma_min, "sigma_max": self.sigma_max,
                "p_mean": self.p_mean, "p_std": self.p_std, "rho": self.rho}

    def sigma(self, t: float | Tensor) -> Tensor:
        return _as_f64(t).clone()

    def t(self, sigma: float | Tensor) -> Tensor:
        return _as_f64(sigma).clone()

    def c_noise(self, sigma: Tensor) -> Tensor:
        return _as_f64(sigma).log() / 4

    def sample_sigmas(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        z = torch.randn(n, generator=generator, dtype=torch.float64)
        return (self.p_mean + self.p_std * z).exp()

    def default_sigmas(self, steps: int) -> Tensor:
        return karras_sigmas(steps, self.sigma_min, self.sigma_max, self.rho)


class Flow(Schedule):
    """Rectified flow / flow matching (Liu et al. 2022; Lipman et al. 2022): x_t = (1-t) x0 + t eps.

    In VE form sigma = t / (1 - t) and s = 1 - t; training draws logit-normal t (Esser et al. 2024);
    c_noise = 1000 t. `shift` warps the sampling grid toward high noise, t -> shift t / (1 + (shift-1) t).
    """

    name = "flow"

    def __init__(self, t_min: float = 1e-3, t_max: float = 0.999, logit_mean: float = 0.0,
                 logit_std: float = 1.0, shift: float = 1.0):
        self._t_min, self._t_max = t_min, t_max
        self.logit_mean, self.logit_std, self.shift = logit_mean, logit_std, shift
        self.sigma_min, self.sigma_max = t_min / (1 - t_min), t_max / (1 - t_max)

    def config(self) -> dict:
        return {"name": self.name, "t_min": self._t_min, "t_max": self._t_max,
                "logit_mean": self.logit_mean, "logit_std": self.logit_std, "shift": self.shift}

    def sigma(self, t: float | Tensor) -> Tensor:
        t = _as_f64(t)
        return t / (1 - t)

    def t(self, sigma: float | Tensor) -> Tensor:
        sigma = _as_f64(sigma)
        return sigma / (1 + sigma)

    def scale(self, sigma: float | Tensor) -> Tensor:
        return 1 / (1 + _as_f64(sigma))

    def c_noise(self, sigma: Tensor) -> Tensor:
        return 1000 * self.t(sigma)

    def prior_std(self, sigma: float) -> float:
        return math.sqrt(1 + sigma**2)

    def sample_sigmas(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        z = torch.randn(n, generator=generator, dtype=torch.float64)
        t = torch.sigmoid(self.logit_mean + self.logit_std * z).clamp(self._t_min, self._t_max)
        return self.sigma(t)

    def uniform_sigmas(self, steps: int) -> Tensor:
        t = torch.linspace(self._t_max, self._t_min, steps, dtype=torch.float64)
        t = self.shift * t / (1 + (self.shift - 1) * t)
        return self.sigma(t)


SCHEDULES: dict[str, type[Schedule]] = {
    cls.name: cls for cls in (VPLinear, VPCosine, VE, EDM, Flow)
}


def get(name: str, **kwargs) -> Schedule:
    """A schedule by name: vp-linear, vp-cosine, ve, edm or flow (keyword arguments override defaults)."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    return SCHEDULES[name](**kwargs)


def from_config(config: dict) -> Schedule:
    """Rebuild a schedule from its `config()` dict."""
    config = dict(config)
    return get(config.pop("name"), **config)
