"""Inpainting with any sampler: the known part of x kept exactly, the missing part drawn from the model's
conditional. `missing` is True where a value is to be drawn (a mask's white pixels, as in diffusers).

- Replacement (Song et al. 2021, section 5; the "replacement" baseline of Ho et al. 2022): the denoiser sees the
  known part on its own noising path, known + sigma * e with e fixed per sample (the exact probability-flow path
  of a point mass), and returns the known part as it is. It works with every sampler, and ignores how
  likely the known part is under each mode until the noise is low: its known bias.
- Reconstruction guidance (Ho et al. 2022, eq. 7; the weight from a Gaussian approximation of p(known | x), as in
  pseudoinverse-guided diffusion, Song et al. 2023): replacement plus sigma^2 times the gradient of
  log N(known; D(x)_known, r^2), r^2 = sigma^2 s^2 / (sigma^2 + s^2) with s the data scale, added to the missing
  part of D. One network evaluation and one backward pass per call.
- RePaint (Lugmayr et al. 2022): ancestral steps with the known part re-drawn from q(x_sigma | known) at each
  level, and every `jump` levels a return of `jump` levels up by fresh noise, `resample` times in all.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn

from .common import Denoiser, Generator, call, noise_like


def _level(sigma: float | Tensor, x: Tensor) -> float | Tensor:
    """sigma as a float, or a per-sample tensor shaped to broadcast against x."""
    if isinstance(sigma, Tensor) and sigma.ndim > 0:
        return sigma.to(x.dtype).reshape(-1, *[1] * (x.ndim - 1))
    return float(sigma)


class Replacement(nn.Module):
    """D'(x, sigma[, cond]): D with the known part of its input on the known part's noising path and of its
    output equal to the known values."""

    def __init__(self, denoiser: Denoiser, known: Tensor, missing: Tensor, path_noise: Tensor) -> None:
        super().__init__()
        self.denoiser, self.known, self.missing, self.path_noise = denoiser, known, missing.bool(), path_noise

    def noisy_input(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """x with its known part replaced by known + sigma * e."""
        return torch.where(self.missing, x, self.known + _level(sigma, x) * self.path_noise)

    def forward(self, x: Tensor, sigma: float | Tensor, cond: Tensor | None = None) -> Tensor:
        out = call(self.denoiser, self.noisy_input(x, sigma), sigma, cond)
        return torch.where(self.missing, out, self.known)


class Reconstruction(Replacement):
    """Replacement plus reconstruction guidance on the missing part (module docstring); `scale` is the data's
    standard deviation s of the Gaussian approximation."""

    def __init__(self, denoiser: Denoiser, known: Tensor, missing: Tensor, path_noise: Tensor,
                 scale: float) -> None:
        super().__init__(denoiser, known, missing, path_noise)
        self.scale = scale

    def forward(self, x: Tensor, sigma: float | Tensor, cond: Tensor | None = None) -> Tensor:
        with torch.enable_grad():
            x_in = self.noisy_input(x, sigma).detach().requires_grad_(True)
            out = call(self.denoiser, x_in, sigma, cond)
            error = torch.where(self.missing, torch.zeros_like(out), out - self.known).square().sum()
            grad, = torch.autograd.grad(error, x_in)
        level = _level(sigma, x)
        weight = 0.5 * (1 + level**2 / self.scale**2)  # sigma^2 / (2 r^2)
        return torch.where(self.missing, out.detach() - weight * grad, self.known)


def repaint(denoiser: Denoiser, x: Tensor, known: Tensor, missing: Tensor, sigmas: Tensor, *, jump: int = 10,
            resample: int = 10, generator: Generator = None, cond: Tensor | None = None,
            callback: Callable | None = None) -> Tensor:
    """RePaint from noise x at sigmas[0] down the grid (ending in 0); the known part kept at every level."""
    levels = sigmas.tolist()
    steps = len(levels) - 1
    missing = missing.bool()
    for count, (i, j) in enumerate(repaint_path(steps, jump, resample)):
        sigma, target = levels[i], levels[j]
        if j > i:  # down one level: an ancestral (DDPM posterior) step, then the known part redrawn there
            x0 = call(denoiser, x, sigma, cond)
            if callback is not None:
                callback({"i": count, "x": x, "sigma": sigma, "sigma_next": target, "denoised": x0})
            ratio = (target / sigma) ** 2
            x = x0 + ratio * (x - x0) + target * math.sqrt(max(1 - ratio, 0.0)) * noise_like(x, generator)
            x = torch.where(missing, x, known + target * noise_like(x, generator))
        else:  # back up one level: forward noise
            x = x + math.sqrt(target**2 - sigma**2) * noise_like(x, generator)
    return torch.where(missing, x, known)


def repaint_path(steps: int, jump: int, resample: int) -> list[tuple[int, int]]:
    """(from, to) grid indices of RePaint's walk over `steps` levels (index 0 the noisiest): down one level at a
    time, and after every `jump` levels (but the last stretch) back up `jump` levels, resample - 1 times."""
    if jump < 1 or resample < 1:
        raise ValueError(f"jump and resample must be >= 1, got {jump} and {resample}")
    returns = {k: resample - 1 for k in range(jump, steps, jump)}
    path, i = [], 0
    while i < steps:
        path.append((i, i + 1))
        i += 1
        if returns.get(i, 0) > 0:
            returns[i] -= 1
            for _ in range(jump):
                path.append((i, i - 1))
                i -= 1
    return path


def repaint_evaluations(steps: int, jump: int, resample: int) -> int:
    """Network evaluations of one RePaint draw (one per step down)."""
    return sum(1 for i, j in repaint_path(steps, jump, resample) if j > i)


def smc(denoiser: Denoiser, x: Tensor, known: Tensor, missing: Tensor, sigmas: Tensor, *, particles: int = 4,
        generator: Generator = None, cond: Tensor | None = None, callback: Callable | None = None,
        twist: float | None = None) -> Tensor:
    """Sequential Monte Carlo inpainting (SMCDiff, Trippe et al. 2022): `particles` draws per sample share one
    forward-noised path of the known part; each moves its missing part by an ancestral step and is weighted by
    the density its step gives the known part's next value; a group is resampled when its effective size falls
    below half. Exact as the particles grow, for an exact denoiser and fine steps. x: noise at sigmas[0], [N, ...].

    With `twist` = s (the data scale), resampling also weighs each particle by the twisting function of TDS (Wu et
    al. 2023), log N(known; D(x)_known, r^2) with r^2 = sigma^2 s^2 / (sigma^2 + s^2): how well its denoised
    guess agrees with the known values. The twists telescope out of the final weights, so the target is unchanged;
    only the choice of which particles survive is made earlier and better."""
    levels, n, k = sigmas.tolist(), x.shape[0], particles
    missing = missing.bool()
    per = _PerSample(generator, n, k)
    path = _known_path(known, levels, per)  # the known part at every level, [len(levels), N, ...]
    xs = torch.where(missing, x, path[0]).repeat_interleave(k, 0)
    grouped = lambda t: t.repeat_interleave(k, 0)  # noqa: E731 (per-particle copies of per-sample tensors)
    mask_k = grouped(missing.expand_as(x))
    cond_k = None if cond is None else cond.reshape(n * k) if cond.shape[:2] == (n, k) else grouped(cond)
    known_k = grouped(known.expand_as(x))
    log_w = torch.zeros(n, k, dtype=torch.float64, device=x.device)
    log_twist = torch.zeros_like(log_w)
    for i, (sigma, target) in enumerate(zip(levels, levels[1:])):
        x0 = call(denoiser, xs, sigma, cond_k)
        if twist is not None:  # swap the last level's twist for this one's
            r2 = sigma**2 * twist**2 / (sigma**2 + twist**2)
            error = torch.where(mask_k, torch.zeros_like(x0), (x0 - known_k) ** 2).reshape(n, k, -1).sum(-1)
            now = -error.to(torch.float64) / (2 * r2)
            log_w, log_twist = log_w + now - log_twist, now
            flat, log_w = _resample_when_degenerate(log_w, per)
            if flat is not None:
                xs, log_twist = xs[flat], log_twist.reshape(-1)[flat].reshape(n, k)
                cond_k = None if cond_k is None else cond_k[flat]
        if callback is not None:
            callback({"i": i, "x": xs, "sigma": sigma, "sigma_next": target, "denoised": x0})
        ratio = (target / sigma) ** 2
        mean = x0 + ratio * (xs - x0)
        var = target**2 * max(1 - ratio, 0.0)
        if var > 0:
            y = grouped(path[i + 1])
            sq = torch.where(mask_k, torch.zeros_like(mean), (y - mean) ** 2).reshape(n, k, -1).sum(-1)
            log_w = log_w - sq.to(torch.float64) / (2 * var)
        xs = mean + math.sqrt(var) * per.noise(xs)
        xs = torch.where(mask_k, xs, grouped(path[i + 1]))
        if twist is None and var > 0 and i < len(levels) - 2:
            flat, log_w = _resample_when_degenerate(log_w, per)
            if flat is not None:
                xs, cond_k = xs[flat], None if cond_k is None else cond_k[flat]
    pick = per.choose(log_w - log_twist)
    return torch.where(missing, xs.reshape(n, k, *x.shape[1:])[torch.arange(n), pick], known)


class _PerSample:
    """Random draws for N samples of `k` particles each, from one generator per sample when given a list."""

    def __init__(self, generator: Generator, n: int, k: int) -> None:
        self.gens = list(generator) if isinstance(generator, (list, tuple)) else None
        self.generator = None if self.gens is not None else generator
        self.n, self.k = n, k

    def noise(self, like: Tensor) -> Tensor:
        """Standard normal noise shaped like `like` ([N * k, ...])."""
        if self.gens is None:
            return noise_like(like, self.generator)
        shape = (self.k, *like.shape[1:])
        return torch.cat([torch.randn(shape, generator=g, dtype=like.dtype, device=like.device) for g in self.gens])

    def uniform(self, device: torch.device) -> Tensor:
        """One U(0, 1) per sample, [N] (float64)."""
        if self.gens is None:
            return torch.rand(self.n, generator=self.generator, dtype=torch.float64, device=device)
        return torch.stack([torch.rand((), generator=g, dtype=torch.float64, device=device) for g in self.gens])

    def choose(self, log_w: Tensor) -> Tensor:
        """One particle index per sample, drawn by its weight."""
        cdf = torch.softmax(log_w, 1).cumsum(1)
        return torch.searchsorted(cdf, self.uniform(log_w.device)[:, None] * cdf[:, -1:]).clamp(max=self.k - 1)[:, 0]


def _known_path(known: Tensor, levels: list[float], per: _PerSample) -> Tensor:
    """The known values noised up the grid from the clean end (each level's noise adds to the one below)."""
    out = [known]
    for lower, upper in zip(levels[::-1], levels[-2::-1]):
        step = math.sqrt(max(upper**2 - lower**2, 0.0))
        draw = per.noise(known.repeat_interleave(per.k, 0))[:: per.k]  # one path per sample
        out.append(out[-1] + step * draw)
    return torch.stack(out[::-1])


def _resample_when_degenerate(log_w: Tensor, per: _PerSample) -> tuple[Tensor | None, Tensor]:
    """Systematic resampling of each sample's particles whose effective size fell below half: (the surviving
    particles' flat indices [N * k], or None where none fell; the weights, reset where resampled)."""
    w = torch.softmax(log_w, 1)
    ess = 1.0 / w.square().sum(1)
    low = ess < per.k / 2
    if not bool(low.any()):
        return None, log_w
    u = (per.uniform(log_w.device)[:, None] + torch.arange(per.k, device=log_w.device)) / per.k  # [N, k]
    idx = torch.searchsorted(w.cumsum(1), u * w.sum(1, keepdim=True)).clamp(max=per.k - 1)
    idx = torch.where(low[:, None], idx, torch.arange(per.k, device=log_w.device))
    flat = (idx + per.k * torch.arange(per.n, device=log_w.device)[:, None]).reshape(-1)
    return flat, torch.where(low[:, None], torch.zeros_like(log_w), log_w)
