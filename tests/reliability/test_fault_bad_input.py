"""Bad input everywhere: random config dicts, TOML files and data files give one clean, one-line error
(ConfigError / UsageError / ValueError), never another exception; bad flags exit 2, runtime faults exit 1.

REDIFFUSE_FUZZ_EXAMPLES=5000 runs the property tests longer (default 150 examples each).
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import string

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rediffuse.cli import app, main
from rediffuse.cli import train as cli_train
from rediffuse.cli.train import config_from_args
from rediffuse.errors import UsageError
from rediffuse.config import TrainConfig
from rediffuse.data.dataset import build_data
from rediffuse.errors import ConfigError
from rediffuse.objectives import validate

FIELDS = [f.name for f in dataclasses.fields(TrainConfig)]
SETTINGS = settings(max_examples=int(os.environ.get("REDIFFUSE_FUZZ_EXAMPLES", "150")), deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture], database=None)

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                    st.text(max_size=20), st.sampled_from(["auto", "cpu", "cuda:7", "edm", "moons", "nan", ""]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)
keys = st.one_of(st.sampled_from(FIELDS), st.text(max_size=12))


def assert_one_line(err: BaseException) -> None:
    text = str(err)
    assert text and "\n" not in text and len(text) < 600, text


@SETTINGS
@given(st.dictionaries(keys, values, max_size=6))
def test_random_config_dicts_give_config_errors(raw):
    try:
        validate(TrainConfig.from_dict(raw))
    except ConfigError as err:
        assert_one_line(err)


def _toml_literal(value) -> str:
    """A TOML literal for a scalar hypothesis value (None has none: an empty inline table instead)."""
    if value is None:
        return "{}"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').encode("unicode_escape").decode() + '"'


toml_lines = st.one_of(
    st.tuples(keys.filter(lambda k: k and all(c in string.ascii_letters + "_-" for c in k)), scalars).map(
        lambda kv: f"{kv[0]} = {_toml_literal(kv[1])}"),
    st.text(max_size=30))


def _parse_config(tmp_path, text_or_bytes) -> None:
    """What `rediffuse train --config FILE --out X` does before training: parse, merge, validate."""
    path = tmp_path / "config.toml"
    path.write_bytes(text_or_bytes if isinstance(text_or_bytes, bytes) else text_or_bytes.encode())
    args = app.build_parser().parse_args(["train", "--config", str(path), "--out", str(tmp_path / "run")])
    validate(config_from_args(args))


@SETTINGS
@given(st.one_of(st.lists(toml_lines, max_size=6).map("\n".join), st.binary(max_size=200)))
def test_random_toml_files_give_usage_errors(tmp_path, content):
    try:
        _parse_config(tmp_path, content)
    except (UsageError, ConfigError) as err:
        assert_one_line(err)


def _valid_bytes(suffix: str) -> bytes:
    """A small valid file of a kind (for mutation)."""
    buf = io.BytesIO()
    if suffix == ".npy":
        np.save(buf, np.arange(8.0).reshape(4, 2))
    elif suffix == ".npz":
        np.savez(buf, images=np.zeros((4, 8, 8), np.uint8), labels=np.arange(4))
    else:
        buf.write(b"x,y\n0,1\n2,3\n4,5\n")
    return buf.getvalue()


@st.composite
def damaged_files(draw):
    """(suffix, bytes): random bytes, or a valid file truncated / with bytes flipped."""
    suffix = draw(st.sampled_from([".npy", ".npz", ".csv"]))
    if draw(st.booleans()):
        return suffix, draw(st.binary(max_size=300))
    data = bytearray(_valid_bytes(suffix))
    for _ in range(draw(st.integers(0, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return suffix, bytes(data[:draw(st.integers(0, len(data)))])


@SETTINGS
@given(damaged_files())
def test_random_data_files_give_value_errors(tmp_path, damaged):
    suffix, data = damaged
    path = tmp_path / f"data{suffix}"
    path.write_bytes(data)
    try:
        build_data(TrainConfig(data=str(path), num_points=16))
    except ConfigError:
        raise  # a data file that exists is never a usage error
    except ValueError as err:
        assert_one_line(err)


@pytest.mark.parametrize("argv, fragment", [
    (["--max-bad-steps", "0"], "max_bad_steps must be a positive integer"),
    (["--lr", "inf"], "--lr: expected a finite number"),
    (["--lr", "nan"], "--lr: expected a finite number"),
    (["--grad-clip", "-1"], "grad_clip must be >= 0"),
    (["--sigma-data", "-2"], "sigma_data must be 'auto' or a positive number"),
    (["--device", "quantum"], "unknown device 'quantum'"),
    (["--batch-size", "-4"], "batch_size must be a positive integer"),
    (["--net-kwargs", '{"hidden": -3}'], "bad net_kwargs for 'mlp'"),
    (["--schedule-kwargs", '{"bogus": 1}'], "bad schedule_kwargs for 'edm'"),
    (["--ema-decay", "1.5"], "ema_decay must be in [0, 1)"),
])
def test_bad_flags_exit_2(tmp_path, capsys, argv, fragment):
    code = main(["train", "--data", "moons", "--out", str(tmp_path / "run"), "--steps", "2", "--no-progress",
                     *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and fragment in err and "Traceback" not in err, err


@pytest.mark.parametrize("content, fragment", [
    (b"", "cannot read data"),
    (b"PK\x03\x04garbage", "cannot read data"),
    (b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (4, 2), }", "data.npy"),
])
def test_unreadable_data_exits_1(tmp_path, capsys, content, fragment):
    path = tmp_path / "data.npy"
    path.write_bytes(content)
    code = main(["train", "--data", str(path), "--out", str(tmp_path / "run"), "--steps", "2", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and fragment in err and "Traceback" not in err, err


def test_unexpected_exception_is_one_line_unless_debug(tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise KeyError("surprise")

    monkeypatch.setattr(cli_train, "train", broken)
    argv = ["train", "--data", "moons", "--out", str(tmp_path / "run"), "--steps", "2"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unexpected KeyError" in err and "--debug" in err, err
    with pytest.raises(KeyError):
        main(["--debug", *argv])
