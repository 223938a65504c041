"""Fuzzing the command line's numeric flags: finite and non-finite values, extreme ranges.

Never a traceback (every outcome is an exit code with at most a one-line error) and never exit 0 with non-finite
output. REDIFFUSE_FUZZ_EXAMPLES=N runs longer (default 40 examples per verb here: each may train a step).
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rediffuse.cli import main

SETTINGS = settings(max_examples=int(os.environ.get("REDIFFUSE_FUZZ_EXAMPLES", "40")), deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture], database=None)
TINY = ["--data", "moons", "--num-points", "128", "--batch-size", "16", "--no-progress",
        "--net-kwargs", '{"hidden": 8, "depth": 1, "emb_dim": 8}']

odd = st.sampled_from(["nan", "inf", "-inf", "1e309", "-0", "0x10", "1e3", "", " 3", "-1"])
number = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6), odd)
count = st.one_of(st.integers(-3, 5), st.floats(allow_nan=True, allow_infinity=True), odd)  # -n, --steps: small
TRAIN_FLOATS = ["--lr", "--ema-decay", "--label-dropout", "--grad-clip", "--weight-decay", "--sigma-data",
                "--minutes", "--min-snr-gamma"]
TRAIN_INTS = ["--steps", "--warmup-steps", "--log-every", "--keep-last"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fuzz") / "run"
    assert main(["train", "--data", "digits", "--conditional", "--batch-size", "16", "--steps", "2", "--no-progress",
                 "--out", str(out), "--net-kwargs",
                 '{"channels": 8, "channel_mults": [1], "num_res_blocks": 1, "attn_resolutions": []}']) == 0
    return out


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and err.count("\n") <= 1, err  # a warning line and an error line at most
    return err


@SETTINGS
@given(flag=st.sampled_from(TRAIN_FLOATS + TRAIN_INTS), value=st.one_of(number, count))
def test_train_numeric_flags(tmp_path_factory, capsys, flag, value):
    out = tmp_path_factory.mktemp("t") / "run"
    steps = [] if flag == "--steps" else ["--steps", "1"]
    if flag in ("--steps", "--warmup-steps") and isinstance(value, int) and value > 3:
        value = 3  # a valid count: keep the example short
    code = main(["train", *TINY, "--out", str(out), *steps, flag, str(value)])
    err = _one_line(capsys)
    assert code in (0, 1, 2), code
    if code == 0:
        assert not err.startswith("rediffuse: error")


@SETTINGS
@given(guidance=number, steps=count, n=count)
def test_sample_numeric_flags(run, tmp_path_factory, capsys, guidance, steps, n):
    out = tmp_path_factory.mktemp("s") / "x.png"
    code = main(["sample", str(run), "--guidance", str(guidance), "--steps", str(steps), "-n", str(n),
                 "--out", str(out)])
    _one_line(capsys)
    assert code in (0, 1, 2), code
    if code == 0:
        assert math.isfinite(float(guidance)) and np.isfinite(np.load(out.with_suffix(".npz"))["samples"]).all()
    else:
        assert not out.exists()
