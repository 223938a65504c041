"""The `edit` and `invert` verbs: redraw part of an input (inpainting: a mask PNG or a box for images, coordinates
for points), redraw all of it from a noise level (SDEdit), or map it to noise (inversion), through `Run.edit` and
`Run.invert`.

`--input` is a PNG (an image run), a WAV (an audio run: mono, at the run's rate, centre-cropped or padded to its
clip length) or an .npy/.npz of inputs [N, ...] or one input, in the range `sample` writes. A mask's white pixels
are redrawn, as in diffusers; `--box x0,y0,x1,y1` is the region to redraw, in pixels, end exclusive; `--region
A:B` the seconds of a clip. `edit` writes OUT/edits.npz (inputs, mask, results) and what the modality adds: for
images OUT/edits.png (a row per input: the input, the mask and its results), for audio a WAV per result and the
spectrograms before and after.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from rediffuse import runs, samplers
from rediffuse.cli.common import device_name, finite_float
from rediffuse.cli.outputs import refuse_overwrite
from rediffuse.config import resolve_device
from rediffuse.distributed import DEVICE_HELP
from rediffuse.data.table_types import Schema
from rediffuse.data.tables import read_for_schema, write_csv
from rediffuse.errors import ConfigError, UsageError
from rediffuse.modalities import Extras
from rediffuse.data.audio import fit_length, read_wav
from rediffuse.io import atomic_write
from rediffuse.samplers.inversion import SOLVERS
from rediffuse.samplers.request import EDIT_METHODS
from rediffuse.sampling.run import Run


def add_parsers(verbs: Any, common: argparse.ArgumentParser) -> None:
    """Register `edit` and `invert` on the `rediffuse` sub-command parser."""
    p = verbs.add_parser("edit", parents=[common],
                         help="inpaint or redraw inputs with a trained run (points, images, audio; text: --infill)",
                         description="Redraw the masked part of inputs (inpainting) or all of them from a noise "
                                     "level (--method sdedit --strength S); the known part comes back bit for bit.")
    p.add_argument("run", type=Path, metavar="RUN", help="run folder")
    p.add_argument("--input", type=Path, default=None, help="a PNG or WAV, or an .npy/.npz of inputs [N, ...]")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--mask", type=Path, default=None, help="a PNG whose white pixels are redrawn")
    where.add_argument("--box", default=None, metavar="x0,y0,x1,y1", help="the pixels to redraw, end exclusive")
    where.add_argument("--missing", default=None, metavar="i,j,...", help="points runs: the coordinates to redraw")
    where.add_argument("--region", default=None, metavar="A:B", help="audio runs: the seconds to redraw, A to B")
    where.add_argument("--infill", default=None, metavar="TEMPLATE",
                       help="text runs: a template whose blank characters are filled (OUT/edits.jsonl)")
    p.add_argument("--blank", default="_", help="text runs: the blank character of --infill (default: _)")
    p.add_argument("--method", default="smc", choices=EDIT_METHODS, help="smc (default), replace, reconstruct, "
                   "repaint, or sdedit (redraw everything from --strength)")
    p.add_argument("--strength", type=finite_float, default=0.5, help="sdedit: the noise level in (0, 1] (0.5)")
    p.add_argument("--particles", type=int, default=None,
                   help="smc: draws per sample (4; for a conditional run given no --class, one per class)")
    p.add_argument("--jump", type=int, default=10, help="repaint: levels per return (10)")
    p.add_argument("--resample", type=int, default=10, help="repaint: passes over each stretch (10)")
    p.add_argument("-n", type=int, default=1, help="results per input (1)")
    _draw_flags(p)
    p.add_argument("--class", type=int, dest="label", default=None,
                   help="class label (conditional runs; default: the null class)")
    p.add_argument("--guidance", type=finite_float, default=1.0, help="classifier-free guidance scale (1 = none)")
    p.add_argument("--sampler", default=None, choices=sorted(samplers.SAMPLERS), help="sampler (default: heun)")
    p.add_argument("--out", type=Path, required=True, help="output folder (edits.npz, edits.png)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=cmd_edit)
    q = verbs.add_parser("invert", parents=[common],
                         help="map inputs to noise along the ODE (points, images, waveform audio)",
                         description="DDIM (Euler) or Heun inversion: the noise that sampling with the same "
                                     "solver and steps maps back to the input; prints the round trip's error.")
    q.add_argument("run", type=Path, metavar="RUN", help="run folder")
    q.add_argument("--input", type=Path, required=True, help="a PNG, or an .npy/.npz of inputs [N, ...]")
    q.add_argument("--solver", default="euler", choices=SOLVERS, help="euler (DDIM, default) or heun")
    q.add_argument("--out", type=Path, required=True, help="the noise, .npy")
    q.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    _draw_flags(q)
    q.set_defaults(func=cmd_invert)


def _draw_flags(p: argparse.ArgumentParser) -> None:
    """The flags both verbs share."""
    p.add_argument("--steps", type=int, default=None, help="noise levels (default: 20)")
    p.add_argument("--seed", type=int, default=0, help="seed; result i depends only on (seed, i)")
    p.add_argument("--batch-size", type=int, default=256, help="inputs per batch (256)")
    p.add_argument("--device", type=device_name, default="auto", help=DEVICE_HELP)


def read_inputs(path: Path, shape: tuple[int, ...], rate: int | None = None) -> Tensor:
    """Inputs [N, *shape] (as `sample` delivers them) from a PNG, a WAV or an .npy/.npz (UsageError naming what
    does not fit)."""
    if not path.is_file():
        raise UsageError(f"--input {str(path)!r} does not exist; give a PNG, a WAV or an .npy/.npz of inputs")
    if path.suffix.lower() == ".wav":
        if rate is None:
            raise UsageError("a WAV --input needs an audio run; give a PNG or an .npy/.npz")
        try:
            clip = read_wav(path, rate, resample=False, mixdown=False)
        except ValueError as err:
            raise UsageError(f"--input: {err}") from None
        x = torch.from_numpy(fit_length(clip, shape[-1]))[None, None]
    elif path.suffix.lower() == ".png":
        x = _png(path, shape[0], "--input")[None] * 2 - 1
    elif path.suffix.lower() in (".npy", ".npz"):
        x = torch.from_numpy(_array(path))
        x = x[None] if tuple(x.shape) == tuple(shape) else x
    else:
        raise UsageError(f"--input must be a .png, .wav, .npy or .npz, got {str(path)!r}")
    if tuple(x.shape[1:]) != tuple(shape):
        raise UsageError(f"--input {str(path)!r} holds shape {list(x.shape[1:])}, the run draws {list(shape)}; "
                         "give inputs of the run's shape (channels first)")
    return x


def _array(path: Path) -> np.ndarray:
    """The inputs of an .npy, or of an .npz (its "samples", "results" or first array), as float32."""
    try:
        if path.suffix.lower() == ".npy":
            return np.asarray(np.load(path, allow_pickle=False), dtype=np.float32)
        with np.load(path, allow_pickle=False) as arrays:
            name = next((k for k in ("samples", "results") if k in arrays), None) or list(arrays)[0]
            return np.asarray(arrays[name], dtype=np.float32)
    except (OSError, ValueError, IndexError) as err:
        raise UsageError(f"--input {str(path)!r} is not a readable array file ({err})") from None


def _png(path: Path, channels: int, flag: str) -> Tensor:
    """A PNG as [channels, H, W] in [0, 1]."""
    try:
        with Image.open(path) as img:
            array = np.asarray(img.convert("L" if channels == 1 else "RGB"), dtype=np.float32) / 255.0
    except OSError as err:
        raise UsageError(f"{flag} {str(path)!r} is not a readable image ({err})") from None
    if channels not in (1, 3):
        raise UsageError(f"{flag}: the run's images have {channels} channels; give an .npy instead of a PNG")
    return torch.from_numpy(array)[None] if channels == 1 else torch.from_numpy(array).permute(2, 0, 1)


def read_mask(args: argparse.Namespace, shape: tuple[int, ...], rate: int | None = None) -> Tensor | None:
    """The redraw mask, broadcastable to [N, *shape] (None for sdedit)."""
    if args.mask is not None:
        if not args.mask.is_file():
            raise UsageError(f"--mask {str(args.mask)!r} does not exist; give a PNG whose white pixels are redrawn")
        mask = _png(args.mask, 1, "--mask")[0] > 0.5
        if len(shape) != 3 or tuple(mask.shape) != tuple(shape[1:]):
            raise UsageError(f"--mask is {list(mask.shape)} pixels, the run's images are {list(shape[1:])}; give a "
                             "mask of the images' size")
        return mask.expand(shape)
    if args.box is not None:
        return _box(args.box, shape)
    if args.region is not None:
        return _region(args.region, shape, rate)
    if args.missing is not None:
        if len(shape) != 1:
            raise UsageError("--missing is for points runs; give --box or --mask for images")
        try:
            picked = [int(i) for i in args.missing.split(",")]
        except ValueError:
            raise UsageError(f"--missing takes coordinate indices like 1,3, got {args.missing!r}") from None
        if any(not 0 <= i < shape[0] for i in picked):
            raise UsageError(f"--missing indices must be in 0..{shape[0] - 1}, got {args.missing!r}")
        return torch.isin(torch.arange(shape[0]), torch.tensor(picked))
    return None


def _region(text: str, shape: tuple[int, ...], rate: int | None) -> Tensor:
    """The mask of `--region A:B` seconds of an audio run's clips [1, L]."""
    if rate is None:
        raise UsageError("--region is for audio runs; give --box or --mask for images, --missing for points")
    try:
        start, end = (float(v) for v in text.split(":"))
    except ValueError:
        raise UsageError(f"--region takes seconds as A:B, e.g. 0.30:0.55, got {text!r}") from None
    seconds = shape[-1] / rate
    if not 0 <= start < end <= seconds:
        raise UsageError(f"--region {text} lies outside the {seconds:.3f} s clips; give 0 <= A < B <= {seconds:.3f}")
    mask = torch.zeros(shape, dtype=torch.bool)
    mask[..., round(start * rate): round(end * rate)] = True
    return mask


def _box(text: str, shape: tuple[int, ...]) -> Tensor:
    """The mask of `--box x0,y0,x1,y1` (pixels, end exclusive)."""
    try:
        x0, y0, x1, y1 = (int(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"--box takes four pixel numbers x0,y0,x1,y1, got {text!r}") from None
    if len(shape) != 3:
        raise UsageError("--box is for image runs; give --missing for points")
    height, width = shape[1:]
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise UsageError(f"--box {text} does not lie in the {width} x {height} images (0 <= x0 < x1 <= {width}, "
                         f"0 <= y0 < y1 <= {height})")
    mask = torch.zeros(shape[1:], dtype=torch.bool)
    mask[y0:y1, x0:x1] = True
    return mask.expand(shape)


def cmd_edit(args: argparse.Namespace) -> int:
    if args.n < 1 or args.batch_size < 1 or (args.steps is not None and args.steps < 1):
        raise UsageError("-n, --steps and --batch-size must be >= 1")
    run = Run(runs.open(args.run), resolve_device(args.device))
    if run.modality.edit_route == "template":
        return edit_text(run, args)
    if run.modality.edit_route == "cells":
        return edit_table(run, args)
    if args.input is None or args.infill is not None:
        raise UsageError("give --input FILE to edit (--infill is for text runs)")
    rate, shape = run.spec.data.rate, run.modality.delivered_shape(run.spec.data)
    x = read_inputs(args.input, shape, rate)
    given = any(v is not None for v in (args.mask, args.box, args.missing, args.region))
    mask = read_mask(args, shape, rate) if args.method != "sdedit" or given else None
    files = run.modality.edit_outputs(args.out, len(x) * args.n)
    refuse_overwrite(files, args.overwrite)
    inputs = x.repeat_interleave(args.n, 0)
    edited = run.edit(inputs, mask, args.method, strength=args.strength, cond=args.label, sampler=args.sampler,
                      steps=args.steps, guidance=args.guidance, seed=args.seed, particles=args.particles,
                      jump=args.jump, resample=args.resample, batch_size=args.batch_size)
    args.out.mkdir(parents=True, exist_ok=True)
    full_mask = torch.zeros(shape, dtype=torch.bool) if mask is None else mask.expand(shape)
    for path in run.modality.write_edits(args.out, x, full_mask, edited, args.n, run.spec):
        print(path)
    return 0


def edit_table(run: Run, args: argparse.Namespace) -> int:
    """A table run's edit: the empty cells of --input's rows filled, -n times per row, into OUT/imputed.csv."""
    if args.input is None or args.input.suffix.lower() != ".csv":
        raise UsageError(f"{run.modality.a_run} is edited by filling the empty cells of a CSV: give --input ROWS.csv "
                         "with the run's columns")
    if any(v is not None for v in (args.mask, args.box, args.missing, args.region, args.infill, args.label)):
        raise UsageError("a table run fills the empty cells of --input (its target is a column there); drop --mask, "
                         "--box, --missing, --region, --infill and --class")
    schema = Schema.from_dict(run.spec.table["schema"])
    try:
        rows, empty = read_for_schema(args.input, schema)
    except ConfigError as err:
        raise UsageError(str(err)) from None
    out = args.out / "imputed.csv"
    refuse_overwrite([out], args.overwrite)
    request = run.request(args.n, None, None, args.steps, args.guidance, args.seed, "default", args.batch_size)
    run.modality.check_request(run.spec, request, None)
    filled = run.modality.impute(run.opened.model(request.device), run.spec, rows, empty, request)
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(filled, out)
    print(out)
    return 0


def edit_text(run: Run, args: argparse.Namespace) -> int:
    """A text run's edit: the --infill template's blanks filled, -n times, into OUT/edits.jsonl."""
    if args.infill is None or args.input is not None:
        raise UsageError(f"{run.modality.a_run} is edited by filling a template: give --infill TEMPLATE (blanks "
                         "_ are filled), not --input")
    request = run.request(args.n, None, None, args.steps, 1.0, args.seed, "default", args.batch_size,
                          infill=args.infill, blank=args.blank)
    run.modality.check_request(run.spec, request, None)
    out = args.out / "edits.jsonl"
    refuse_overwrite([out], args.overwrite)
    drawn = run.draw(request)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in run.modality.write(out, drawn, run.spec, Extras(blank=args.blank)):
        print(path)
    return 0


def cmd_invert(args: argparse.Namespace) -> int:
    if args.out.suffix.lower() != ".npy":
        raise UsageError(f"--out for invert must end in .npy, got {str(args.out)!r}")
    refuse_overwrite([args.out], args.overwrite)
    run = Run(runs.open(args.run), resolve_device(args.device))
    if run.spec.data.codec:
        raise UsageError("invert maps a run's own data space; a log-mel audio run's inputs are waveforms: invert "
                         "its encoded images in Python (run.invert(run.modality.encode(run.spec.data, x)))")
    x = read_inputs(args.input, tuple(run.spec.data.shape), run.spec.data.rate)
    noise = run.invert(x, steps=args.steps, solver=args.solver)
    again = run.from_noise(noise, steps=args.steps, solver=args.solver)
    buffer = io.BytesIO()
    np.save(buffer, noise.numpy())
    atomic_write(args.out, buffer.getvalue())
    error = float((again - x).pow(2).mean().sqrt())
    print(f"{args.out}\nround trip ({args.solver}, {args.steps or 20} steps): RMS error {error:.4g}")
    return 0
