"""A trained model opened once, and the one way to draw from it for every kind of data.

    run = rediffuse.load("runs/digits")
    x = run.sample(16, cond=3, steps=18, seed=0)          # what `rediffuse sample` writes, as numbers
    for step in run.sample_steps(4, cond=3, steps=18):    # the reverse process as it runs
        print(step.index, step.level, step.x.shape)

`Run.sample` gives the numbers `rediffuse sample RUN` writes with the same settings and seed: images and clips
clamped to [-1, 1] (a log-mel audio run's clips decoded by Griffin-Lim), points as drawn, texts as token ids
(`Run.texts` decodes them).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Generator, Sequence

import torch
from torch import Tensor, nn

from rediffuse import modalities, samplers
from rediffuse.core import schedules
from rediffuse.data.text import Vocabulary
from rediffuse.core.denoisers import Denoiser
from rediffuse.distributed import pick_device
from rediffuse.errors import UsageError
from rediffuse.modalities import Drawn, Modality
from rediffuse.objectives.consistency import run_grid
from rediffuse.runs import OpenRun, open as open_run
from rediffuse.samplers import generation
from rediffuse.samplers.inversion import SOLVERS, invert
from rediffuse.samplers.request import EDIT_METHODS, EditRequest, Grid, OnStep, SamplingRequest, Step
from rediffuse.recommended import Choice, choose
from rediffuse.sampling.stream import stream
from rediffuse.tuning.grids import load_plan

DEFAULT_STEPS = 20  # a Gaussian run's steps when neither the caller nor the run says
API_FLAGS = ("cond", "guidance", "fit with conditional=True")  # how labels errors name the API's arguments


class Run:
    """A trained model (a run, checkpoint or pretrained folder): its spec, config and modality, the model built
    on first use, and draws from it."""

    def __init__(self, opened: OpenRun, device: torch.device | str = "cpu") -> None:
        self.opened = opened
        self.device = torch.device(device)

    @property
    def path(self) -> Path:
        """The folder this run was opened from."""
        return self.opened.path

    @property
    def spec(self) -> dict[str, Any]:
        """The model spec (network, schedule, data shape, classes, ...)."""
        return self.opened.spec

    @property
    def config(self) -> Any:
        """The training config."""
        return self.opened.config

    @property
    def modality(self) -> Modality:
        """The kind of data this model draws."""
        return modalities.of(self.spec)

    @property
    def num_classes(self) -> int | None:
        """The number of classes of a conditional model (None for an unconditional one)."""
        return self.spec.data.num_classes

    @property
    def model(self) -> nn.Module:
        """The objective's model on this run's device (built and loaded once)."""
        return self.opened.model(self.device)

    @property
    def denoiser(self) -> Denoiser | None:
        """The denoiser D(x, sigma[, class]) of a Gaussian run (None for a text run)."""
        model = self.model
        return model if isinstance(model, Denoiser) else None

    @property
    def schedule(self) -> schedules.Schedule | None:
        """The noise schedule of a Gaussian run (None for a text run)."""
        return getattr(self.denoiser, "schedule", None)

    def choice(self, sampler: str | None = None, steps: int | None = None, spacing: str | None = None,
               guidance: float | None = None, eta: float | None = None) -> Choice:
        """A Gaussian draw's settings: those given, then the run's recommended sampling, then its default."""
        return choose(self.spec, getattr(self.config, "sampling", None), sampler, steps, spacing, guidance,
                      DEFAULT_STEPS, eta)

    def request(self, n: int | None = None, cond: int | Sequence[int] | Tensor | None = None,
                sampler: str | None = None, steps: int | None = None, guidance: float | None = None, seed: int = 0,
                spacing: str | None = None, batch_size: int = 1000, device: str | torch.device | None = None,
                flags: tuple[str, str, str] = API_FLAGS, eta: float | None = None, **text: Any) -> SamplingRequest:
        """A checked request with the run's defaults filled in: n (the modality's count), the labels (every
        class in turn for a conditional model when cond is None), sampler, steps, spacing, guidance and eta (`choice`);
        `text` holds order, prompt, infill, blank and length."""
        n = self.modality.default_n if n is None else n
        if n < 1 or batch_size < 1 or (steps is not None and steps < 1):
            raise UsageError(f"the number of samples, --steps and --batch-size must be >= 1, got {n}, {steps} "
                             f"and {batch_size}")
        if self.modality.gaussian:
            chosen = self.choice(sampler, steps, spacing, guidance, eta)
            sampler, steps, spacing, guidance, eta = (chosen.sampler, chosen.steps, chosen.spacing, chosen.guidance,
                                                      chosen.eta)
            labels = labels_for(n, cond, self.num_classes, guidance, flags)
        else:  # labels a text run cannot take are refused by its check_request
            labels = None if cond is None else torch.as_tensor(cond)
            spacing, guidance = spacing or "default", 1.0 if guidance is None else guidance
        where = self.device if device is None else pick_device(str(device))
        return SamplingRequest(n=n, sampler=sampler, steps=steps, spacing=spacing, seed=seed, batch_size=batch_size,
                               labels=labels, guidance=guidance, device=where, eta=eta, **text)

    def grid(self, request: SamplingRequest) -> Grid:
        """The levels of a Gaussian draw: the tuned plan of `spacing='tuned'`, a student's few-step grid, or
        the schedule's (empty Grid)."""
        if request.spacing == "tuned":
            return Grid(plan=load_plan(self.path, request.sampler, request.steps))
        return run_grid(self.spec, request.sampler, request.steps)

    def draw(self, request: SamplingRequest, on_step: OnStep | None = None,
             progress: Callable[[int], None] | None = None, world: generation.Ranks | None = None) -> Drawn:
        """The request's samples as delivered, with their labels and how they were drawn."""
        model = self.opened.model(request.device)
        drawn = self.modality.draw(model, self.spec, request, self.grid(request), on_step, progress, world)
        if drawn.settings or request.sampler is None:
            return drawn
        return dataclasses.replace(drawn, settings={"sampler": request.sampler, "steps": request.steps})

    def sample(self, n: int | None = None, cond: int | Sequence[int] | Tensor | None = None,
               sampler: str | None = None, steps: int | None = None, guidance: float | None = None, seed: int = 0,
               spacing: str | None = None, batch_size: int = 1000, device: str | torch.device = "auto",
               **text: Any) -> Tensor:
        """n samples [n, ...] on the CPU: labels `cond` (one class for all, one per sample, or every class in
        turn when None for a conditional model), `guidance` > 1 for classifier-free guidance; a text run's
        token ids [n, L] (text options: order, prompt, infill, blank, length)."""
        request = self.request(n, cond, sampler, steps, guidance, seed, spacing, batch_size, device, **text)
        self.modality.check_request(self.spec, request, None)
        return self.draw(request).samples

    def sample_steps(self, n: int | None = None, cond: int | Sequence[int] | Tensor | None = None,
                     sampler: str | None = None, steps: int | None = None, guidance: float | None = None, seed: int = 0,
                     spacing: str | None = None, batch_size: int = 1000, device: str | torch.device = "auto",
                     **text: Any) -> Generator[Step, None, Drawn]:
        """`sample`'s reverse process as it runs: a Step per sampler step and batch (its level, the current
        samples and the model's estimate of the clean data); the generator returns the Drawn samples, and
        closing it stops the draw."""
        request = self.request(n, cond, sampler, steps, guidance, seed, spacing, batch_size, device, **text)
        self.modality.check_request(self.spec, request, None)
        return stream(lambda on_step: self.draw(request, on_step))

    def edit(self, x: Tensor, missing: Tensor | None = None, method: str = "smc", *, strength: float = 1.0,
             cond: int | Sequence[int] | Tensor | None = None, sampler: str | None = None, steps: int | None = None,
             guidance: float = 1.0, seed: int = 0, particles: int | None = None, jump: int = 10, resample: int = 10,
             batch_size: int = 1000, device: str | torch.device = "auto") -> Tensor:
        """Inputs x [N, ...] (as `sample` returns them) edited on the CPU: the `missing` part (True where to
        draw) redrawn from the model's conditional by `method` (smc, replace, reconstruct, repaint) and the rest
        kept bit for bit; or, method 'sdedit', all of x redrawn from the noise level of `strength` in (0, 1].
        Labels and guidance as in `sample`: a conditional model without `cond` edits with its null class, but for
        smc with its `particles` (default 4, or one per class) spread over the classes."""
        request, edit = self.edit_requests(x, missing, method, strength, cond, sampler, steps, guidance, seed,
                                           particles, jump, resample, batch_size, device)
        return self.modality.edit(self.opened.model(request.device), self.spec, request, edit).samples

    def edit_steps(self, x: Tensor, missing: Tensor | None = None, method: str = "smc", *, strength: float = 1.0,
                   cond: int | Sequence[int] | Tensor | None = None, sampler: str | None = None,
                   steps: int | None = None, guidance: float = 1.0, seed: int = 0, particles: int | None = None,
                   jump: int = 10, resample: int = 10, batch_size: int = 1000,
                   device: str | torch.device = "auto") -> Generator[Step, None, Drawn]:
        """`edit`'s reverse process as it runs, a Step per step and batch (SMC's states hold every particle);
        the generator returns the edited Drawn, and closing it stops the edit."""
        request, edit = self.edit_requests(x, missing, method, strength, cond, sampler, steps, guidance, seed,
                                           particles, jump, resample, batch_size, device)
        model = self.opened.model(request.device)
        return stream(lambda on_step: self.modality.edit(model, self.spec, request, edit, on_step=on_step))

    def edit_requests(self, x: Tensor, missing: Tensor | None, method: str, strength: float, cond: Any,
                      sampler: str | None, steps: int | None, guidance: float, seed: int, particles: int | None,
                      jump: int, resample: int, batch_size: int, device: str | torch.device
                      ) -> tuple[SamplingRequest, EditRequest]:
        """The checked requests of an edit, as `edit` makes them (a conditional model without `cond` gets its null
        class, which SMC replaces by particles over the classes unless the EditRequest says otherwise)."""
        if not self.modality.gaussian:
            raise UsageError(f"{self.modality.a_run} has no Gaussian route to edit; fill a template with "
                             "`rediffuse edit RUN --infill TEMPLATE` or `sample(infill=...)`")
        edit = edit_request(x, missing, method, strength, particles, jump, resample)
        null = None if self.num_classes is None or cond is not None else self.num_classes
        request = self.request(len(x), cond if null is None else None, sampler, steps, guidance, seed,
                               "default", batch_size, device)
        if null is not None:
            request = dataclasses.replace(request, labels=torch.full((len(x),), null, dtype=torch.long))
        return request, edit

    def invert(self, x: Tensor, steps: int | None = None, solver: str = "euler",
               cond: int | Sequence[int] | Tensor | None = None, device: str | torch.device = "auto") -> Tensor:
        """The noise [N, ...] at the schedule's top level that `from_noise` with Euler (DDIM) or Heun over `steps`
        levels maps back to x, found by running the probability-flow ODE upward (a conditional model without
        `cond` inverts with its null class)."""
        model, labels, sigmas, where = self._ode(len(x), steps, solver, cond, device)
        with torch.no_grad():
            return invert(model, x.to(where, torch.float32), sigmas, solver=solver, cond=labels).cpu()

    def from_noise(self, noise: Tensor, steps: int | None = None, solver: str = "euler",
                   cond: int | Sequence[int] | Tensor | None = None, device: str | torch.device = "auto") -> Tensor:
        """The ODE's way back from `invert`'s noise to the data (not clamped: the round trip's other half)."""
        model, labels, sigmas, where = self._ode(len(noise), steps, solver, cond, device)
        with torch.no_grad():
            return samplers.sample(model, noise.to(where), sigmas[:-1], solver, cond=labels).cpu()

    def _ode(self, n: int, steps: int | None, solver: str, cond: Any, device: str | torch.device
             ) -> tuple[nn.Module, Tensor | None, Tensor, torch.device]:
        """(model, labels, grid, device) of an inversion or its way back."""
        if solver not in SOLVERS:
            raise UsageError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
        where = self.device if device == "auto" else pick_device(str(device))
        model = self.opened.model(where)
        if not isinstance(model, Denoiser):
            raise UsageError(f"{self.modality.a_run} has no ODE to invert")
        labels = labels_for(n, cond, self.num_classes, 1.0) if cond is not None else \
            None if self.num_classes is None else torch.full((n,), self.num_classes, dtype=torch.long)
        return model, None if labels is None else labels.to(where), model.schedule.sigmas(steps or DEFAULT_STEPS), \
            where

    def texts(self, ids: Tensor) -> list[str]:
        """Token ids [n, L] of a text run decoded to strings."""
        return [Vocabulary.from_dict(self.spec.vocab).decode(row) for row in ids]


def edit_request(x: Tensor, missing: Tensor | None, method: str, strength: float, particles: int | None, jump: int,
                 resample: int) -> EditRequest:
    """A checked EditRequest (UsageError naming the problem and the fix)."""
    if method not in EDIT_METHODS:
        raise UsageError(f"unknown edit method {method!r}; choose one of {', '.join(EDIT_METHODS)}")
    if method == "sdedit":
        if missing is not None:
            raise UsageError("sdedit redraws the whole input from the level of --strength; drop the mask, or "
                             "pick an inpainting method (smc, replace, reconstruct, repaint)")
        if not 0 < strength <= 1:
            raise UsageError(f"--strength must be in (0, 1], got {strength}")
    elif missing is None:
        raise UsageError(f"method {method} redraws a masked part: give a mask (or a box), or use sdedit")
    else:
        missing = torch.as_tensor(missing).bool()
        if not bool(missing.any()):
            raise UsageError("the mask marks nothing to redraw (all known): white (True) is what is redrawn")
        if bool(missing.all()):
            raise UsageError("the mask marks everything to redraw: that is sampling; use `sample`, or sdedit")
    if min(particles or 1, jump, resample) < 1:
        raise UsageError("--particles, --jump and --resample must be >= 1")
    return EditRequest(torch.as_tensor(x), missing, method, strength, particles, jump, resample)


def labels_for(n: int, cond: Any, num_classes: int | None, guidance: float,
               flags: tuple[str, str, str] = API_FLAGS) -> Tensor | None:
    """Labels [n]: one class for all, one per sample, or every class in turn when cond is None; UsageError (naming
    `flags`: the class and guidance names and how to get a conditional model) for labels a model cannot take."""
    name, scale, fix = flags
    if num_classes is None:
        if cond is not None or guidance != 1.0:
            raise UsageError(f"{name} and {scale} need a class-conditional model ({fix})")
        return None
    if cond is None:
        return torch.arange(n) % num_classes
    if isinstance(cond, int):
        if not 0 <= cond < num_classes:
            raise UsageError(f"{name} must be in 0..{num_classes - 1}, got {cond}")
        return torch.full((n,), cond, dtype=torch.long)
    labels = torch.as_tensor(cond).long().reshape(-1)
    if labels.shape != (n,) or int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise UsageError(f"{name} must be one class or {n} classes in 0..{num_classes - 1}, got {cond!r}")
    return labels


def load(path: str | Path, ema: bool = True, device: str | torch.device = "auto") -> Run:
    """A run folder (its newest complete checkpoint), a checkpoint folder or a pretrained folder as a Run, its
    model built and its weights loaded (so a damaged file is named now, not at the first draw)."""
    run = Run(open_run(path, ema), pick_device(str(device)))
    run.opened.model(run.device)
    return run
