"""Shared test settings: one intra-op thread.

The tests make many small tensor calls; on a shared 2-core machine two OpenMP threads stall 10-100x under
load, and one thread also makes timings and float reductions repeatable.

Also the fixtures more than one test module uses; the shared plain helpers are in helpers.py.
"""

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def one_thread():
    """Every test starts on one thread, whatever an earlier one left (`--threads auto` then looks at no load)."""
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="module", params=["ring8", "mix16d"])
def problem(request):
    """(mixture, 24 samples at SIGMA_MAX, their DOP853 endpoints at SIGMA_END) on the ring8 and mix16d presets."""
    from helpers import SIGMA_END, SIGMA_MAX, f64, reference_ode
    from rediffuse.truth import analytic

    m = analytic.preset(request.param)
    x = SIGMA_MAX * torch.randn(24, m.dim, generator=torch.Generator().manual_seed(0), dtype=f64)
    return m, x, reference_ode(m, x, SIGMA_MAX, SIGMA_END)


TEACHER = dict(data="digits", net="unet", conditional=True, batch_size=32, warmup_steps=5, log_every=4,
               checkpoint_every=1000, ema_decay=0.9, progress=False,
               net_kwargs={"channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1, "attn_resolutions": [],
                           "dropout": 0.1})


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A conditional digits UNet trained 30 steps: the teacher of the `distill` tests."""
    from rediffuse.config import TrainConfig
    from rediffuse.train import train

    run = tmp_path_factory.mktemp("teacher") / "run"
    train(TrainConfig(out=str(run), steps=30, **TEACHER))
    return run
