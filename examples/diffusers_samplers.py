"""Run rediffuse's samplers on a diffusers model: any UNet2DModel with its scheduler's config.

    python examples/diffusers_samplers.py [MODEL_FOLDER] [--steps 10]

MODEL_FOLDER is a diffusers pipeline folder on disk (unet/ and scheduler/, e.g. a DDPM pipeline you saved
with `save_pretrained`); nothing is downloaded. Without one, a small random UNet stands in, which shows the
calls but draws noise. Needs the optional `bench` extra (diffusers).
"""

from __future__ import annotations

import argparse

import torch

from rediffuse import foreign
from rediffuse.samplers.generation import generate


def load(folder: str | None):
    """(unet, scheduler config) from a saved pipeline folder, or a tiny random UNet with DDPM's defaults."""
    from diffusers import DDPMScheduler, UNet2DModel

    if folder:
        return UNet2DModel.from_pretrained(folder, subfolder="unet"), \
            DDPMScheduler.from_pretrained(folder, subfolder="scheduler").config
    unet = UNet2DModel(sample_size=16, in_channels=1, out_channels=1, block_out_channels=(16, 32),
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       layers_per_block=1, norm_num_groups=8)
    return unet, DDPMScheduler().config


def main(argv: list[str] | None = None) -> dict[str, torch.Tensor]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", nargs="?", default=None)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("-n", type=int, default=4)
    args = p.parse_args(argv)
    unet, scheduler_config = load(args.folder)
    denoiser = foreign.from_diffusers(unet.eval(), scheduler_config)  # D(x, sigma) of the diffusers model
    size = unet.config.sample_size
    shape = (unet.config.in_channels, size, size)
    out = {}
    with torch.no_grad():
        for sampler in ("dpmpp-2m", "unipc-bh2", "heun"):
            out[sampler] = generate(denoiser, denoiser.schedule, shape, n=args.n, sampler=sampler, steps=args.steps)
            print(f"{sampler}: {args.steps} steps -> samples {tuple(out[sampler].shape)}")
    return out


if __name__ == "__main__":
    main()
