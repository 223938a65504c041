"""What `rediffuse eval` adds for spoken digits beside the project's classifier: a second classifier of another
family fitted on clean `@train` recordings (`features.cepstral`), and the level, silence and voicing of the clips."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

from rediffuse.audio.spectral import centre_fit
from rediffuse.audio.voicing import cpp
from rediffuse.data.audio import load_fsdd
from rediffuse.evaluation.features.cepstral import LENGTH, RATE, CepstralClassifier, train_cepstral
from rediffuse.evaluation.metrics import clip_peak, clip_rms, frechet_distance, level_match, levels, prdc

SECOND = "logistic regression on MFCC statistics"


def fsdd_clips(path: str | Path, part: str) -> tuple[Tensor, Tensor]:
    """(clips [N, 1, LENGTH] at 8 kHz, digit labels [N]) of one FSDD part."""
    data = load_fsdd(path, part, length=LENGTH, rate=RATE)
    assert data.labels is not None  # FSDD labels every recording
    return data.x, data.labels


def second_classifier(path: str | Path) -> tuple[CepstralClassifier, Tensor, tuple[Tensor, Tensor]]:
    """(the classifier fitted on `@train`, its features of the training clips, the held-out (clips, labels))."""
    train_x, train_y = fsdd_clips(path, "train")
    heldout = fsdd_clips(path, "heldout")
    model = train_cepstral(train_x, train_y, heldout)
    return model, model.features(train_x), heldout


def scores(model: CepstralClassifier, clips: Tensor, labels: Tensor | None, real: Tensor) -> dict[str, float]:
    """FD, precision/recall/density/coverage against the training features, and class accuracy."""
    feats = model.features(clips)
    out = {"n": float(len(clips)), "fd": frechet_distance(feats, real), **prdc(real, feats, k=5)}
    if labels is not None:
        out["class_accuracy"] = model.accuracy(clips, labels)
    return out


def audio_report(path: str | Path, clips: Tensor, labels: Tensor | None) -> dict[str, Any]:
    """The second opinion on 8 kHz sample clips [N, 1, L] (labels: the classes asked for) and the level and
    silence of the samples and of the held-out recordings (centre-fitted to the samples' length), as report
    entries."""
    model, real, (held_x, held_y) = second_classifier(path)
    n = len(held_x)
    second = {"kind": SECOND, "heldout_accuracy": model.heldout_accuracy,
              "samples": scores(model, clips, labels, real),
              "samples_at_heldout_n": scores(model, clips[:n], None if labels is None else labels[:n], real),
              "heldout_real": scores(model, held_x, held_y, real)}
    real = centre_fit(held_x, clips.shape[-1]).unsqueeze(1)  # the recordings at the samples' length
    return {"second": second, "levels": {"samples": figures(clips), "heldout_real": figures(real)},
            "level_match": level_matches(clips, real)}


def level_matches(clips: Tensor, real: Tensor) -> dict[str, dict[str, Any]]:
    """The per-clip RMS and peak distributions of clips against real clips (`metrics.level_match`), JSON-ready."""
    return {name: level_match(per_clip(clips), per_clip(real)).to_dict()
            for name, per_clip in (("rms", clip_rms), ("peak", clip_peak))}


def level_error(matches: dict[str, dict[str, Any]]) -> float:
    """The largest relative miss of the level distributions: |geometric-mean ratio - 1| or |spread ratio - 1|
    over RMS and peak (issue 41's "within 10%" read for the whole distribution, its location and its width)."""
    return max(max(abs(m["ratio"] - 1), abs((m["spread"] or 1.0) - 1)) for m in matches.values())


def figures(clips: Tensor) -> dict[str, float]:
    """The level and silence figures of 8 kHz clips and their median cepstral peak prominence (`cpp_db`)."""
    return {**levels(clips).to_dict(), "cpp_db": float(cpp(clips, RATE).median())}


def audio_markdown(report: dict[str, Any]) -> list[str]:
    """Markdown lines for the second opinion and the levels (nothing when the report has neither)."""
    lines: list[str] = []
    if "second" in report:
        s = report["second"]
        keys = ["n", "fd", "precision", "recall", "density", "coverage", "class_accuracy"]
        lines += ["", f"Second opinion: {s['kind']}, fitted on clean @train recordings (held-out accuracy "
                      f"{s['heldout_accuracy']:.3f}).", "",
                  "| set | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
        for key, label in (("samples", "model samples"), ("samples_at_heldout_n", "model samples, first N_heldout"),
                           ("heldout_real", "held-out real data (floor)")):
            lines.append(f"| {label} | " + " | ".join(f"{s[key][k]:.4g}" if k in s[key] else "-" for k in keys)
                         + " |")
    if "levels" in report:
        lv = report["levels"]
        lines += ["", "| clips | median RMS | median peak | quietest quarter of frames (dB below loudest) | "
                      "median CPP (dB; voicing, noise about 5.8) |", "|---|---|---|---|---|"]
        for key, label in (("samples", "model samples"), ("heldout_real", "held-out recordings")):
            cells = [f"{lv[key]['rms']:.4f}", f"{lv[key]['peak']:.3f}", f"{lv[key]['silence_db']:.1f}",
                     f"{lv[key]['cpp_db']:.2f}" if "cpp_db" in lv[key] else "-"]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if "level_match" in report:
        lines += match_markdown(report["level_match"])
    return lines


def match_markdown(matches: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown lines for the per-clip level distributions of samples against the held-out recordings."""
    names = list(next(iter(matches.values()))["quantiles"])
    lines = ["", "Per-clip levels, samples / held-out recordings (logs compared: a gain is a shift):", "",
             "| level | geometric-mean ratio (+- s.e.) | spread of logs | transport distance | "
             + " | ".join(f"{q} quantile" for q in names) + " |", "|---|---|---|---|" + "---|" * len(names)]
    for name, m in matches.items():
        spread = "-" if m["spread"] is None else f"{m['spread']:.3f}"
        cells = [f"{m['ratio']:.3f} +- {m['ratio'] * m['ratio_se']:.3f}", spread, f"{m['distance']:.3f}"]
        cells += [f"{m['quantiles'][q]:.3f}" for q in names]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines
