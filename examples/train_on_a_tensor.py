"""Train on your own tensor, sample it, save a self-contained model and load it back.

    python examples/train_on_a_tensor.py [--steps 2000] [--out runs/tensor]

The data here is a stand-in: 512 random 16 x 16 "images" of four classes (a bright square in one of four
corners). Put your own tensor [N, C, H, W] in [-1, 1] (and integer labels) in its place.
"""

from __future__ import annotations

import argparse

import torch

import rediffuse


def corner_squares(n: int, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n grey images [n, 1, size, size] in [-1, 1]: a bright square in corner `label` (0-3) of a dark field."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    x = torch.full((n, 1, size, size), -1.0) + 0.1 * torch.randn(n, 1, size, size, generator=g)
    half = size // 2
    for i, c in enumerate(labels.tolist()):
        r, k = divmod(c, 2)
        x[i, :, r * half:(r + 1) * half, k * half:(k + 1) * half] += 1.8
    return x.clamp(-1, 1), labels


def main(argv: list[str] | None = None) -> torch.Tensor:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--out", default="runs/tensor")
    args = p.parse_args(argv)
    images, labels = corner_squares(512)
    run = rediffuse.fit((images, labels), out=args.out, conditional=True, steps=args.steps, batch_size=32,
                        net_kwargs={"channels": 16, "channel_mults": [1, 2], "num_res_blocks": 1},
                        callbacks=[lambda record: print("step", record["step"], "loss", record.get("loss"))])
    x = run.sample(8, cond=3, steps=18, seed=0)  # eight images of class 3
    folder = run.denoiser.save_pretrained(f"{args.out}-model")
    again = rediffuse.from_pretrained(folder).sample(8, cond=3, steps=18, seed=0)
    assert torch.equal(x, again)
    print(f"samples {tuple(x.shape)}; the model is in {folder} (config.json + model.safetensors)")
    return x


if __name__ == "__main__":
    main()
