"""Few-step generation on MNIST: the teacher at 35 NFE and at 1-4 NFE, the ECT student, and more teacher training.

In one process, alone on the machine: the teacher is `mnist-fast` trained on `mnist:PATH@train` for
`--teacher-minutes` (reused from OUT/teacher when a finished one is there). Then:

- the teacher at its preset sampler (euler-ancestral, 35 NFE);
- the teacher at 1, 2 and 4 NFE with each training-free candidate (Euler/DDIM, DPM-Solver++ 2M and 3M,
  UniPC-bh2, iPNDM and Euler-ancestral, on the schedule's default (Karras) and log-SNR grids and on the
  student's few-step grid (`few_step_grid`: at 2 NFE [sigma_max, 0.821 in data units, 0]); with `--tune`,
  also DPM-Solver++ 2M on a grid tuned by `tune-grid`), the best by FD per NFE (the floor a student must beat);
- the student: `rediffuse distill` (ECT) of the teacher for `--distill-minutes`, scored at each checkpoint
  minute in `--at` with the consistency sampler at 1, 2 and 4 NFE (the last one also guided, `--guidance`);
- with `--cd W,...`: students by consistency distillation (`distill --method cd --teacher-guidance W`, the
  pair's second point from the guided teacher's ODE step) for `--distill-minutes`, unguided at 1, 2 and 4 NFE;
- the teacher trained for the same extra minutes instead (its run resumed with a budget of teacher + distill
  minutes, so its cosine learning rate restarts from where the longer budget puts it), at 35 NFE.

Scores (`benchmarks/time_to_quality.py`'s Scorer; floor: 1,000 real training images): class accuracy, FD and
precision/recall (k = 5) against the 2,000 held-out images on the project's MNIST classifier features, the same
on a second opinion of another family (nearest neighbours in the principal components of the clean training
images, `rediffuse.evaluation.features.pixels`), each FD as a multiple of the teacher's, and samples/s.
Writes OUT/results.md, results.json and OUT/same_noise.png (the same noise through the teacher at 35 NFE and
the student at 1 and 2).

    python benchmarks/few_step.py [--data /work/shared/data/mnist] [--teacher-minutes 15] [--distill-minutes 10]
        [--at 5,10] [--n 1000] [--out .bench/few_step] [--tune] [--guidance 1.5,2]
    python benchmarks/few_step.py --teacher-minutes 0.3 --distill-minutes 0.3 --at 0.3 --n 100   # smoke run
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rediffuse import checkpoint, runs, viz
from rediffuse.core import consistency_models as consistency
from rediffuse.cli.app import main as cli
from rediffuse.core.guidance import cfg_denoiser
from rediffuse.objectives.consistency import run_sampling
from rediffuse.presets import SAMPLING, preset
from rediffuse.config import TrainConfig
from rediffuse.runs import load_run, run_info
from rediffuse.samplers import generation as sampling
from rediffuse.train import train
from rediffuse.tuning.grids import load_plan, steps_for_nfe

sys.path.insert(0, str(Path(__file__).resolve().parent))
from time_to_quality import Scorer, class_labels  # noqa: E402  (a sibling benchmark script)

CANDIDATES = ("euler", "dpmpp-2m", "dpmpp-3m", "unipc-bh2", "ipndm", "euler-ancestral")
SPACINGS = ("default", "logsnr", "few-step")  # the EDM schedule's default grid is Karras et al.'s (rho = 7)
NFES = (1, 2, 4)


def train_teacher(data: str, out: Path, minutes: float) -> Path:
    """The mnist-fast teacher (reused when OUT holds a finished one); its newest checkpoint."""
    values = {**preset("mnist-fast"), "data": f"mnist:{data}@train", "out": str(out), "minutes": minutes,
              "progress": False}
    found = checkpoint.latest(out) if out.exists() else None
    if found is not None and checkpoint.read_manifest(found)["meta"]["train_config"]["minutes"] == minutes:
        return found
    shutil.rmtree(out, ignore_errors=True)
    train(TrainConfig.from_dict(values))
    return checkpoint.latest(out)


def few_step_grid(ck: Path, steps: int) -> Tensor:
    """The student's grid for a teacher: sigma_max, then Karras levels down to ECT's middle level (0.821 in data
    units), then 0; at 2 steps [sigma_max, mid, 0], unlike the schedule's own 2-level grid [sigma_max, sigma_min]."""
    spec = run_info(ck)
    return consistency.sampling_sigmas(load_run(ck)[1].sigma_max,
                                       consistency.MID_SIGMA * consistency.unit(spec["sigma_data"]), steps)


def draw(ck: Path, n: int, sampler: str, steps: int, spacing: str = "default", plan: Any = None,
         guidance: float = 1.0) -> tuple[Tensor, float]:
    """n class-balanced samples of a checkpoint (classifier-free guided unless guidance is 1), and samples/s;
    spacing 'few-step' is `few_step_grid`."""
    model, schedule, _ = load_run(ck)
    model = model if guidance == 1.0 else cfg_denoiser(model, guidance)
    options = {k: v for k, v in run_sampling(runs.open(ck).spec, sampler, steps).items() if k != "sampler"}
    if spacing == "few-step":
        options["sigmas"], spacing = few_step_grid(ck, steps), "default"
    started = time.perf_counter()
    x = sampling.generate(model, schedule, (1, 28, 28), n=n, sampler=sampler, steps=steps, spacing=spacing,
                          cond=class_labels(n), batch_size=500, seed=0, plan=plan, **options)
    return x.clamp(-1, 1), n / (time.perf_counter() - started)


def nfe_of(sampler: str, steps: int) -> int:
    """Network evaluations of `steps` levels (Heun-like samplers spend two per step but one on the last)."""
    return 2 * steps - 1 if sampler in ("heun", "dpmpp-2s") else steps


def measure(scorer: Scorer, name: str, ck: Path, n: int, sampler: str, steps: int, spacing: str = "default",
            plan: Any = None, guidance: float = 1.0, **extra: Any) -> dict[str, Any]:
    """One row: the scores of n samples drawn one way (NFE counts both halves of a guided call)."""
    x, rate = draw(ck, n, sampler, steps, spacing, plan, guidance)
    row = {"model": name if guidance == 1.0 else f"{name}, guidance {guidance:g}", "sampler": sampler,
           "spacing": spacing if plan is None else "tuned", "nfe": nfe_of(sampler, steps) * (1 if guidance == 1.0
                                                                                             else 2),
           "samples_per_s": rate, **scorer.score(x, class_labels(n)), **extra}
    print(_line(row), flush=True)
    return row


def teacher_floor(scorer: Scorer, ck: Path, n: int, tune: bool) -> list[dict[str, Any]]:
    """The best training-free candidate per NFE (by FD) and every candidate's row."""
    rows = []
    for nfe in NFES:
        for sampler in CANDIDATES if nfe > 1 else ("euler",):  # at one step every candidate is DDIM
            steps = steps_for_nfe(sampler, nfe)
            for spacing in SPACINGS if nfe > 1 else ("default",):
                rows.append(measure(scorer, "teacher", ck, n, sampler, steps, spacing))
        if tune and nfe > 1:
            run = ck.parent
            assert cli(["tune-grid", str(run), "--sampler", "dpmpp-2m", "--steps", str(nfe), "-n", "32",
                        "--evals", "60"]) == 0
            rows.append(measure(scorer, "teacher", ck, n, "dpmpp-2m", nfe,
                                plan=load_plan(run, "dpmpp-2m", nfe)))
    return rows


def distill(teacher: Path, out: Path, minutes: float, at: list[float], flags: tuple[str, ...] = ()) -> list[Path]:
    """The student (ECT unless `flags` say otherwise), with a checkpoint at each minute in `at`; those
    checkpoints."""
    shutil.rmtree(out, ignore_errors=True)
    every = min(at) if len(at) == 1 else min(b - a for a, b in zip([0.0, *at], at))
    assert cli(["distill", str(teacher), "--out", str(out), "--minutes", str(minutes), "--checkpoint-minutes",
                str(every), "--keep-last", "1000", "--no-progress", *flags]) == 0
    return checkpoint.written(out)


def _line(r: dict[str, Any], teacher: dict[str, Any] | None = None) -> str:
    """One Markdown row; with `teacher`, FD on each opinion as a multiple of the teacher's."""
    minutes = f"{r['minutes']:g}" if "minutes" in r else "-"
    versus = "- | - |" if teacher is None else \
        f"{r['fd'] / teacher['fd']:.2f} | {r['fd2'] / teacher['fd2']:.2f} |"
    return (f"| {r['model']} | {minutes} | {r['sampler']} ({r['spacing']}) | {r['nfe']} | {r['accuracy']:.3f} | "
            f"{r['fd']:.3f} | {r['fd_ratio']:.2f} | {r['precision']:.3f} | {r['recall']:.3f} | "
            f"{r['accuracy2']:.3f} | {r['fd2']:.2f} | {r['fd2_ratio']:.2f} | {r['precision2']:.3f} | "
            f"{r['recall2']:.3f} | {versus} {r['samples_per_s']:.0f} |")


HEADER = ("| model | minutes | sampler (grid) | NFE | accuracy | FD | FD / floor | precision | recall | accuracy 2 | "
          "FD 2 | FD 2 / floor | precision 2 | recall 2 | FD / teacher | FD 2 / teacher | samples/s |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def real_row(scorer: Scorer) -> dict[str, Any]:
    """The real training images' figures as a row (the floor of every column)."""
    return {"model": "real @train images (floor)", "sampler": "-", "spacing": "-", "nfe": 0, "samples_per_s": 0,
            **scorer.real, "fd_ratio": 1.0, "fd2_ratio": 1.0}


def same_noise_picture(path: Path, teacher: Path, student: Path, k: int = 10) -> Path:
    """One row per model on the same starting noise and labels: teacher 35 NFE, student 1 and 2 NFE."""
    rows = [draw(teacher, k, SAMPLING["mnist-fast"]["sampler"], SAMPLING["mnist-fast"]["steps"])[0],
            draw(student, k, "consistency", 1)[0], draw(student, k, "consistency", 2)[0]]
    return viz.image_grid_png(path, torch.cat(rows), nrow=k)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="/work/shared/data/mnist", help="folder with the MNIST IDX files")
    p.add_argument("--teacher-minutes", type=float, default=15.0)
    p.add_argument("--distill-minutes", type=float, default=10.0)
    p.add_argument("--at", default="5,10", help="student minutes to score (checkpoints), comma list")
    p.add_argument("--n", type=int, default=1000, help="samples per row (class-balanced)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tune", action="store_true", help="also score the teacher on tuned grids (tune-grid)")
    p.add_argument("--guidance", default="", help="also score the student with these guidance scales (comma list; "
                                                  "each guided evaluation costs 2 NFE)")
    p.add_argument("--cd", default="", help="also distill by consistency distillation (--method cd) with these "
                                            "teacher guidance scales, guidance baked in (comma list)")
    p.add_argument("--skip-extra", action="store_true", help="do not train the teacher for the extra minutes")
    p.add_argument("--out", type=Path, default=Path(".bench/few_step"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    at = [float(m) for m in args.at.split(",")]
    guidance = [float(w) for w in args.guidance.split(",") if w.strip()]
    baked = [float(w) for w in args.cd.split(",") if w.strip()]
    args.out.mkdir(parents=True, exist_ok=True)
    scorer = Scorer(args.data, args.n)
    teacher = train_teacher(args.data, args.out / "teacher", args.teacher_minutes)
    default = SAMPLING["mnist-fast"]
    rows = [measure(scorer, "teacher", teacher, args.n, default["sampler"], default["steps"],
                    minutes=args.teacher_minutes)]
    floor_rows = teacher_floor(scorer, teacher, args.n, args.tune)
    student_ckpts = distill(teacher.parent, args.out / "student", args.distill_minutes, at)
    for ck in student_ckpts:
        minutes = checkpoint.read_manifest(ck)["meta"]["elapsed"] / 60
        for nfe in NFES:
            rows.append(measure(scorer, "student (ECT)", ck, args.n, "consistency", nfe, minutes=round(minutes, 2),
                                step=checkpoint.read_manifest(ck)["step"]))
        for w in guidance if ck == student_ckpts[-1] else ():
            rows += [measure(scorer, "student (ECT)", ck, args.n, "consistency", steps, guidance=w,
                             minutes=round(minutes, 2)) for steps in (1, 2)]
    for w in baked:
        ck = distill(teacher.parent, args.out / f"student_cd_w{w:g}", args.distill_minutes, [args.distill_minutes],
                     ("--method", "cd", "--teacher-guidance", str(w)))[-1]
        minutes = checkpoint.read_manifest(ck)["meta"]["elapsed"] / 60
        rows += [measure(scorer, f"student (CD, teacher guidance {w:g} baked in)", ck, args.n, "consistency", nfe,
                         minutes=round(minutes, 2), step=checkpoint.read_manifest(ck)["step"]) for nfe in NFES]
    if not args.skip_extra:
        extra = args.out / "teacher_more"
        shutil.rmtree(extra, ignore_errors=True)
        shutil.copytree(teacher.parent, extra)
        total = args.teacher_minutes + args.distill_minutes
        train(TrainConfig.from_dict({**checkpoint.read_manifest(teacher)["meta"]["train_config"], "out": str(extra),
                                     "minutes": total}), resume=True)
        rows.append(measure(scorer, "teacher, trained on", checkpoint.latest(extra), args.n, default["sampler"],
                            default["steps"], minutes=total))
    same_noise_picture(args.out / "same_noise.png", teacher, student_ckpts[-1])
    best = [min((r for r in floor_rows if r["nfe"] == nfe), key=lambda r: r["fd"]) for nfe in NFES]
    text = "\n".join([f"FD floor (1,000 real training images vs the 2,000 held-out): {scorer.floor:.3f} on the "
                      f"project's classifier, {scorer.floor2:.3f} on the second opinion (held-out accuracy "
                      f"{scorer.second.heldout_accuracy:.3f}).", "", HEADER, _line(real_row(scorer)),
                      *[_line(r, rows[0]) for r in rows[:1] + best + rows[1:]], "",
                      "Every training-free candidate of the teacher:", "", HEADER,
                      *[_line(r) for r in floor_rows]]) + "\n"
    print(text)
    (args.out / "results.md").write_text(text)
    (args.out / "results.json").write_text(json.dumps({"floor": scorer.floor, "rows": rows,
                                                       "teacher_floor": floor_rows}, indent=1))


if __name__ == "__main__":
    main()
