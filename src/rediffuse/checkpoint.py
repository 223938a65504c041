"""Checkpoints as folders of safetensors files plus a JSON manifest, written atomically; loading runs no code.

A checkpoint `<run>/ckpt-<step>/` holds one `<part>.safetensors` file per tensor group (model, ema,
optimizer, rng, ...) and `manifest.json`, written last, with the step, the caller's metadata (how to rebuild
the model, the schedule, the training config, ...) and the size and sha256 of every tensor file. Each file
is written to a temporary file in the same folder, flushed, fsynced and renamed into place, and the folder
is fsynced after each rename, so a crash (even a power cut) leaves either the old state or a folder without
a manifest, which `latest` skips and `load` refuses. A checkpoint is complete only when its manifest is valid
and every file's size and sha256 match it; selection (`latest`), resume and pruning all use that definition.
Tensors holding NaN or infinity are refused at save.

Loading never runs code: safetensors and JSON only; pickled files (.pt, .pkl, ...) are refused.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import Tensor

from rediffuse.errors import CheckpointError
from rediffuse.io import TEMP_SUFFIX, atomic_write, fsync_dir

FORMAT = "rediffuse-checkpoint"
VERSION = 1
MANIFEST = "manifest.json"
PREFIX = "ckpt-"
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin")
_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\.safetensors")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass
class Checkpoint:
    """A loaded checkpoint: its folder, step, metadata and tensor groups by part name."""

    path: Path
    step: int
    meta: dict[str, Any]
    tensors: dict[str, dict[str, Tensor]]


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    """The folder of the checkpoint at a step: `<run>/ckpt-<step, 8 digits>`."""
    return Path(run_dir) / f"{PREFIX}{step:08d}"


def _step_of(path: Path) -> int | None:
    """The step in a `ckpt-<step>` folder name, or None for other names."""
    suffix = path.name[len(PREFIX):]
    return int(suffix) if path.name.startswith(PREFIX) and suffix.isdigit() else None


def _contiguous(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Detached, contiguous, unshared CPU copies (what safetensors can store)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}


def nonfinite(tensors: dict[str, dict[str, Tensor]]) -> str | None:
    """The name `part.key` of the first floating-point tensor holding NaN or infinity, or None."""
    for part, group in tensors.items():
        for key, value in group.items():
            if (value.is_floating_point() or value.is_complex()) and not bool(torch.isfinite(value).all()):
                return f"{part}.{key}"
    return None


def save(run_dir: str | Path, step: int, tensors: dict[str, dict[str, Tensor]], meta: dict[str, Any],
         keep: int | None = None, allow_nonfinite: bool = False) -> Path:
    """Write `<run>/ckpt-<step>/` (tensor files, then the manifest) and keep only the newest `keep` ones.

    Raises CheckpointError, writing nothing, if a floating-point tensor holds NaN or infinity (unless
    allow_nonfinite), so a diverged state never replaces a good checkpoint.
    """
    bad = None if allow_nonfinite else nonfinite(tensors)
    if bad is not None:
        raise CheckpointError(f"refusing to save the checkpoint of step {step}: {bad} holds NaN or infinite "
                              "values; the earlier checkpoints are kept")
    folder = checkpoint_dir(run_dir, step)
    try:
        _write(folder, step, tensors, meta)
    except OSError as err:  # a full disk, a quota, a vanished mount: leave no partial folder behind
        shutil.rmtree(folder, ignore_errors=True)
        last = latest(run_dir)
        kept = f"the last good checkpoint is {last}" if last is not None else "there is no earlier checkpoint"
        raise CheckpointError(f"could not write the checkpoint of step {step} ({err.strerror or err}): no checkpoint "
                              f"was written at that step and its partial folder was removed; {kept}") from None
    if keep is not None:
        prune(run_dir, keep, protect=folder)
    return folder


def _write(folder: Path, step: int, tensors: dict[str, dict[str, Tensor]], meta: dict[str, Any]) -> None:
    """Write a checkpoint folder's tensor files, then its manifest, each atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    fsync_dir(folder.parent)  # the new folder's entry survives a power cut
    (folder / MANIFEST).unlink(missing_ok=True)  # rewriting a step: incomplete until the new manifest lands
    files = {}
    for part, group in tensors.items():
        data = save_safetensors(_contiguous(group))
        name = f"{part}.safetensors"
        atomic_write(folder / name, data)
        files[name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    manifest = {"format": FORMAT, "version": VERSION, "step": step, "files": files, "meta": meta}
    atomic_write(folder / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())


def not_a_folder(path: str | Path) -> str:
    """The message for a file given where a checkpoint folder belongs (pickles are refused outright)."""
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return (f"{str(path)!r} looks like a pickled PyTorch file; rediffuse never unpickles files (that can run "
                "code). Give a run folder or a ckpt-<step> folder written by `rediffuse train` (safetensors + "
                "manifest.json)")
    return (f"{str(path)!r} is a file; give a run folder or a ckpt-<step> folder written by `rediffuse train` "
            "(safetensors + manifest.json)")


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The validated manifest of a checkpoint folder (raises CheckpointError if missing or malformed)."""
    path = Path(path)
    if path.is_file():
        raise CheckpointError(not_a_folder(path))
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    file = path / MANIFEST
    if not file.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} is incomplete (no {MANIFEST}); "
                              "it was interrupted while saving: use an earlier checkpoint")
    try:
        manifest = json.loads(file.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{file}: corrupt manifest ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{file}: not a rediffuse checkpoint manifest")
    if manifest.get("version") != VERSION:
        raise CheckpointError(f"{file}: checkpoint format version {manifest.get('version')!r} is not "
                              f"supported (this rediffuse reads version {VERSION})")
    if not isinstance(manifest.get("files"), dict) or not isinstance(manifest.get("step"), int):
        raise CheckpointError(f"{file}: manifest lacks 'files' or 'step'")
    if not isinstance(manifest.setdefault("meta", {}), dict):
        raise CheckpointError(f"{file}: manifest 'meta' is not a JSON object")
    for name, info in manifest["files"].items():
        problem = _entry_problem(name, info)
        if problem:
            raise CheckpointError(f"{file}: bad entry {name[:60]!r} ({problem}); the manifest is corrupt")
    return manifest


def _entry_problem(name: str, info: Any) -> str | None:
    """What is wrong with one manifest file entry (a plain `<part>.safetensors` name, its size and sha256)."""
    if not _FILE_NAME.fullmatch(name):
        return "only plain <part>.safetensors names are allowed"
    if not isinstance(info, dict) or not isinstance(info.get("bytes"), int) or isinstance(info.get("bytes"), bool):
        return "no integer 'bytes'"
    if not isinstance(info.get("sha256"), str) or not _SHA256.fullmatch(info["sha256"]):
        return "no hex 'sha256'"
    return None


def problem(path: str | Path) -> str | None:
    """Why a checkpoint folder is not complete (no valid manifest, a file missing, or a size or sha256 that
    differs from the manifest), or None when it is."""
    try:
        manifest = read_manifest(path)
    except CheckpointError as err:
        return str(err)
    return _files_problem(Path(path), manifest)


def _files_problem(path: Path, manifest: dict[str, Any]) -> str | None:
    """The first manifest-listed file that is missing or differs in size or sha256, described; or None."""
    for name, info in manifest["files"].items():
        file = path / name
        if not file.is_file():
            return f"checkpoint file {str(file)!r} is missing; the checkpoint is incomplete"
        data = file.read_bytes()
        if len(data) != info["bytes"] or hashlib.sha256(data).hexdigest() != info["sha256"]:
            return f"checkpoint file {str(file)!r} is corrupt or truncated (size or sha256 differs from the manifest)"
    return None


def check(path: str | Path) -> None:
    """Raise CheckpointError unless the folder is complete: a valid manifest and every file's size and sha256."""
    found = _files_problem(Path(path), read_manifest(path))
    if found is not None:
        raise CheckpointError(f"{found}; use an earlier checkpoint")


def is_complete(path: str | Path) -> bool:
    """Whether a checkpoint folder passes `check` (manifest present, every file's size and sha256 verified)."""
    return problem(path) is None


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """All `ckpt-<step>` folders of a run, complete or not, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [(step, p) for p in run_dir.iterdir() if p.is_dir() and (step := _step_of(p)) is not None]
    return [p for _, p in sorted(found)]


def warn(message: str) -> None:
    """Print a one-line warning on stderr."""
    print(f"rediffuse: warning: {' '.join(message.split())}", file=sys.stderr)


_WARNED: set[str] = set()


def warn_once(message: str) -> None:
    """`warn`, but each message only once per process (several lookups of one run name one skip once)."""
    if message not in _WARNED:
        _WARNED.add(message)
        warn(message)


def written(run_dir: str | Path) -> list[Path]:
    """The checkpoint folders of a run that hold a manifest (verified or not), oldest first."""
    return [p for p in list_checkpoints(run_dir) if (p / MANIFEST).is_file()]


def latest(run_dir: str | Path, warn: Callable[[str], None] | None = None) -> Path | None:
    """The newest complete (hash-verified) checkpoint folder of a run, or None if there is none.

    With `warn`, each newer checkpoint passed over is named in one line with the reason.
    """
    for path in reversed(list_checkpoints(run_dir)):
        found = problem(path)
        if found is None:
            return path
        if warn is not None:
            warn(f"skipping checkpoint {path.name}: {found}")
    return None


def load_latest(run_dir: str | Path, parts: Iterable[str] | None = None, device: torch.device | str = "cpu",
                warn: Callable[[str], None] | None = warn) -> Checkpoint | None:
    """The newest checkpoint that loads with every hash verified; newer corrupt ones are skipped with a warning."""
    path = latest(run_dir, warn)
    return None if path is None else load(path, parts, device)


def remove_stale_temp(run_dir: str | Path) -> list[Path]:
    """Delete temporary files left by an interrupted `atomic_write` in a run folder and its checkpoints.

    Call it only while no other process writes to the run. Returns the deleted paths.
    """
    run_dir = Path(run_dir)
    folders = [run_dir, *list_checkpoints(run_dir)] if run_dir.is_dir() else []
    stale = [p for folder in folders for p in folder.glob(f".*{TEMP_SUFFIX}") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def prune(run_dir: str | Path, keep: int, protect: Path | None = None) -> None:
    """Delete all but the newest `keep` complete checkpoints, and incomplete ones older than the newest.

    Complete means hash-verified, so a corrupt checkpoint never takes a good one's place; `protect` (the one
    just written) is never deleted.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    paths = list_checkpoints(run_dir)
    complete = [p for p in paths if is_complete(p)]
    if not complete:
        return
    newest = _step_of(complete[-1])
    doomed = complete[:-keep] + [p for p in paths if p not in complete and _step_of(p) < newest]
    for path in doomed:
        if protect is None or path.resolve() != Path(protect).resolve():
            shutil.rmtree(path, ignore_errors=True)


def load(path: str | Path, parts: Iterable[str] | None = None, device: torch.device | str = "cpu",
         verified: bool = False) -> Checkpoint:
    """Load a checkpoint folder (all parts, or only `parts`), verifying every file's size and sha256 (only its
    size when `verified` says the caller has just hashed the folder, as `latest` does)."""
    path = Path(path)
    manifest = read_manifest(path)
    files = manifest["files"]
    wanted = [f"{p}.safetensors" for p in parts] if parts is not None else list(files)
    tensors = {}
    for name in wanted:
        if name not in files:
            raise CheckpointError(f"checkpoint {str(path)!r} has no {name!r} (it holds {', '.join(files)})")
        tensors[name.removesuffix(".safetensors")] = _read_verified(path / name, files[name], device, verified)
    return Checkpoint(path, manifest["step"], manifest.get("meta", {}), tensors)


def _read_verified(file: Path, info: dict[str, Any], device: torch.device | str, hashed: bool = False
                   ) -> dict[str, Tensor]:
    """The tensors of one file, after checking it against its manifest entry (its size alone if `hashed`)."""
    if not file.is_file():
        raise CheckpointError(f"checkpoint file {str(file)!r} is missing; the checkpoint is incomplete")
    data = file.read_bytes()
    if len(data) != info.get("bytes") or (not hashed and hashlib.sha256(data).hexdigest() != info.get("sha256")):
        raise CheckpointError(f"checkpoint file {str(file)!r} is corrupt or truncated (size or sha256 differs "
                              "from the manifest); use an earlier checkpoint")
    try:
        tensors = load_safetensors(data)
    except (SafetensorError, ValueError) as err:
        raise CheckpointError(f"checkpoint file {str(file)!r} is not valid safetensors ({err})") from None
    return {k: v.to(device) for k, v in tensors.items()}


def tensor_shapes(file: str | Path) -> dict[str, tuple[int, ...]]:
    """{name: shape} from a safetensors file's JSON header alone (no tensor is read); CheckpointError if bad."""
    try:
        with open(file, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if not 0 < size <= 100_000_000:
                raise ValueError(f"header length {size}")
            header = json.loads(f.read(size))
        return {k: tuple(int(d) for d in v["shape"]) for k, v in header.items() if k != "__metadata__"}
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
        raise CheckpointError(f"{file}: not a valid safetensors file ({err})") from None


def flatten_optimizer(state_dict: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """An optimizer state_dict split into tensors (`state.<param>.<name>`) and a JSON-able rest."""
    tensors, scalars = {}, {}
    for index, entry in state_dict["state"].items():
        for name, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"state.{index}.{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    """The optimizer state_dict rebuilt from `flatten_optimizer` output (JSON lists back to tuples)."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    for index, entry in rest.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(entry)
    groups = [{k: (tuple(v) if isinstance(v, list) and k != "params" else v) for k, v in g.items()}
              for g in rest["param_groups"]]
    return {"state": state, "param_groups": groups}
