"""The one atomic writer: whole files or none, the permissions a plain open gives, no temporary files left."""

import os

import numpy as np
import pytest

from rediffuse.io import atomic_write, atomic_write_arrays, atomic_write_json


def test_atomic_writes_get_the_permissions_open_would_give(tmp_path):
    previous = os.umask(0o027)
    try:
        path = atomic_write(tmp_path / "a.json", b"{}")
        plain = tmp_path / "plain.json"
        plain.write_bytes(b"{}")
    finally:
        os.umask(previous)
    assert (path.stat().st_mode & 0o777) == (plain.stat().st_mode & 0o777) == 0o640
    assert path.read_bytes() == b"{}" and not list(tmp_path.glob(".*.tmp"))


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = atomic_write_json(tmp_path / "x.json", {"old": 1})
    with pytest.raises(TypeError):
        atomic_write(path, object())  # not bytes: fails while writing the temporary file
    assert path.read_text() == atomic_write_json(tmp_path / "y.json", {"old": 1}).read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json", "y.json"]


def test_arrays_round_trip_as_npz_and_npy(tmp_path):
    a, b = np.arange(6.0).reshape(2, 3), np.array([1, 2])
    with np.load(atomic_write_arrays(tmp_path / "s.npz", samples=a, labels=b)) as f:
        assert np.array_equal(f["samples"], a) and np.array_equal(f["labels"], b)
    assert np.array_equal(np.load(atomic_write_arrays(tmp_path / "s.npy", samples=a)), a)
