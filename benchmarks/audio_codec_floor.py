"""The codec floor of the spectrogram route: held-out recordings -> image -> waveform, judged like samples.

A model can only be as good as the representation it learns and the inverse that turns it into sound. Each
variant encodes FSDD's 300 held-out recordings (`@heldout`, 8 kHz, 8192 samples) and decodes them again; the
clips are scored by the project's FSDD classifier and by the second classifier of another family
(`rediffuse.evaluation.features.cepstral`, fitted on clean `@train` clips), each as class accuracy and FD over
that classifier's real floor (the untouched held-out recordings), by their level and silence, and by their
voicing (the cepstral peak prominence, `rediffuse.audio.voicing`: how far the pitch harmonics stand out), with the
decoding cost per clip (alone on the machine, `--threads`). Variants (`--variants`):
- `mel-gN` / `linear-gN`: 64 log-mel bands (mel inverted by non-negative least squares) or the 128 STFT bins
  below Nyquist, phase by N iterations of fast Griffin-Lim (Perraudin et al. 2013) from zero phase;
- `mel-pN` / `linear-pN`: the same from the phase of gradient heap integration (Průša et al. 2017), N >= 0;
- `mel-phase` / `linear-phase`: the decoded magnitude with the recording's own phase: the ceiling of any
  phase-aware or learned inverse (what phase reconstruction costs, apart from the magnitude);
- with `--image-noise S`, every image also gets Gaussian noise of std S first: a model's error, which the
  inverse must not amplify.

    python benchmarks/audio_codec_floor.py --data fsdd:/work/shared/data/fsdd/recordings \\
        [--variants mel-g32 mel-g128 linear-g32 linear-g128 mel-phase linear-phase] [--image-noise 0.01]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from rediffuse.audio.codec import MelCodec
from rediffuse.evaluation.audio_opinion import figures, scores, second_classifier
from rediffuse.evaluation.evaluate import classifier_inputs, sample_metrics
from rediffuse.evaluation.features import extract_features, load_or_train_classifier, load_split
from rediffuse.io import atomic_write_json, atomic_write_text

VARIANTS = ("mel-g32", "mel-g128", "mel-p0", "mel-p32", "linear-g32", "linear-g128", "linear-p32", "mel-phase",
            "linear-phase")


def codec_of(variant: str) -> tuple[MelCodec, bool]:
    """(the codec a variant names, whether it keeps the recording's phase)."""
    frequency, _, inverse = variant.partition("-")
    known = inverse == "phase" or (inverse[:1] in ("g", "p") and inverse[1:].isdigit())
    if frequency not in ("mel", "linear") or not known:
        raise SystemExit(f"unknown variant {variant!r}; use mel-gN, mel-pN, linear-gN, linear-pN, mel-phase or "
                         "linear-phase")
    iters = 32 if inverse == "phase" else int(inverse[1:])
    phase = "pghi" if inverse[:1] == "p" and inverse[1:].isdigit() else "zero"
    return MelCodec(rate=8000, length=8192, frequency=frequency, iters=iters, phase=phase), inverse == "phase"


def with_true_phase(codec: MelCodec, images: torch.Tensor, clips: torch.Tensor) -> torch.Tensor:
    """Waveforms from the images' magnitude and the clips' own STFT phase."""
    x = clips.reshape(len(clips), -1)
    window = torch.hann_window(codec.n_fft)
    spec = torch.stft(x, codec.n_fft, codec.hop, window=window, center=True, pad_mode="reflect",
                      return_complex=True)
    magnitude = codec.power(images).sqrt()
    rebuilt = magnitude * torch.exp(1j * torch.angle(spec))
    out = torch.istft(rebuilt, codec.n_fft, codec.hop, window=window, center=True, length=codec.length)
    return out.clamp(-1, 1).unsqueeze(1)


def decode(variant: str, clips: torch.Tensor, noise: float) -> tuple[torch.Tensor, float]:
    """(the clips through one variant, decoding seconds per clip)."""
    codec, true_phase = codec_of(variant)
    images = codec.encode(clips)
    if noise:
        images = images + noise * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    started = time.perf_counter()
    out = with_true_phase(codec, images, clips) if true_phase else codec.decode(images)
    return out, (time.perf_counter() - started) / len(clips)


def row(name: str, clips: torch.Tensor, labels: torch.Tensor, judges: dict[str, Any], cost: float) -> dict[str, Any]:
    """One variant's scores by both classifiers, its level, silence and voicing, and its cost."""
    first = sample_metrics(judges["cnn"], classifier_inputs(clips, "fsdd", 8000), labels, judges["cnn_real"],
                           ("fd", "acc"))
    second = scores(judges["second"], clips, labels, judges["second_real"])
    return {"variant": name, "cnn": first, "second": second, "levels": figures(clips), "ms": 1e3 * cost}


def table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """The markdown table; FD columns over the untouched recordings' FD."""
    real = rows[0]
    noise = f", image noise {args.image_noise:g}" if args.image_noise else ""
    lines = [f"FSDD @heldout (300 clips) through each codec{noise}; {args.threads} thread(s), alone.", "",
             "| variant | acc. (CNN) | FD / floor (CNN) | acc. (2nd) | FD / floor (2nd) | RMS | peak | silence (dB) "
             "| CPP (dB) | decode ms/clip |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lv = r["levels"]
        lines.append(f"| {r['variant']} | {r['cnn']['class_accuracy']:.3f} | "
                     f"{r['cnn']['fd'] / real['cnn']['fd']:.2f} | "
                     f"{r['second']['class_accuracy']:.3f} | {r['second']['fd'] / real['second']['fd']:.2f} | "
                     f"{lv['rms']:.4f} | {lv['peak']:.3f} | {lv['silence_db']:.0f} | {lv['cpp_db']:.2f} | "
                     f"{r['ms']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Score every variant; print and write the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="See the module docstring.")
    p.add_argument("--data", required=True, metavar="fsdd:PATH", help="the FSDD recordings folder")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    p.add_argument("--image-noise", type=float, default=0.0, help="std of noise added to every image (default 0)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("runs/codec-floor"))
    args = p.parse_args(argv)
    for variant in args.variants:
        codec_of(variant)
    torch.set_num_threads(args.threads)
    path = args.data.partition(":")[2]
    cnn, _ = load_or_train_classifier("fsdd", path, device="cpu")
    second, second_real, (held_x, held_y) = second_classifier(path)
    judges = {"cnn": cnn, "cnn_real": extract_features(cnn, load_split("fsdd", path).train_x), "second": second,
              "second_real": second_real}
    rows = [row("recordings (floor)", held_x, held_y, judges, 0.0)]
    for variant in args.variants:
        clips, cost = decode(variant, held_x, args.image_noise)
        rows.append(row(variant, clips, held_y, judges, cost))
    text = table(rows, args)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "table.md", text)
    atomic_write_json(args.out / "results.json", {"rows": rows, "image_noise": args.image_noise})
    return rows


if __name__ == "__main__":
    main()
