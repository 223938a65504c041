"""The package as users get it: `python -m build` makes an sdist and a wheel, the wheel installs into a new
virtual environment, and its `rediffuse` command runs there."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import rediffuse

ROOT = Path(__file__).resolve().parents[1]


def run(*argv: str | Path, cwd: Path | None = None) -> str:
    """Run a command; its stdout, or a failure showing its output."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # a checkout on the path would hide the wheel
    done = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, env=env)
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    pytest.importorskip("build")
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--outdir", out, ROOT)
    return out


def test_sdist_and_wheel_carry_the_licence_version_and_type_marker(dist):
    version = rediffuse.__version__
    wheel = next(dist.glob(f"rediffuse-{version}-*.whl"))
    sdist = next(dist.glob(f"rediffuse-{version}.tar.gz"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "rediffuse/py.typed" in names and any(n.endswith("licenses/LICENSE") for n in names)
    metadata = zipfile.ZipFile(wheel).read(f"rediffuse-{version}.dist-info/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata and f"Version: {version}" in metadata
    assert "# rediffuse" in metadata  # the README is the long description
    with tarfile.open(sdist) as tar:
        assert f"rediffuse-{version}/LICENSE" in tar.getnames()


def test_the_wheel_installs_into_a_new_venv_and_runs(dist, tmp_path):
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    # the new environment reaches this one's dependencies (torch is a 5 GB download otherwise) but not this
    # checkout: a path a .pth file adds is no site folder, so the editable install's own .pth is not read there
    own = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    (own / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    wheel = next(dist.glob("rediffuse-*.whl"))
    run(python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--force-reinstall", wheel)
    where = run(python, "-c", "import rediffuse; print(rediffuse.__file__)", cwd=tmp_path)
    assert str(venv) in where  # the installed wheel, not the editable checkout
    assert "train" in run(venv / "bin" / "rediffuse", "--help", cwd=tmp_path)
    assert run(venv / "bin" / "rediffuse", "--version", cwd=tmp_path).strip() == f"rediffuse {rediffuse.__version__}"
