"""bench-samplers and tune-grid end to end, on a built-in mixture and on a small trained run."""

import json
import subprocess
import sys

import numpy as np

from PIL import Image

from rediffuse.cli import main
from rediffuse.tuning.teleport import GaussianFlow


def test_bench_samplers_on_an_analytic_mixture(tmp_path, capsys):
    out = tmp_path / "bench"
    code = main(["bench-samplers", "--analytic", "ring8", "-n", "32", "--nfe", "5", "10",
                 "--samplers", "euler", "heun", "dpmpp-2m", "ddpm", "--out", str(out)])
    assert code == 0
    report = json.loads((out / "bench.json").read_text())
    cells = {(e["sampler"], e["spacing"], e["nfe_budget"]): e for e in report["entries"]}
    assert cells[("euler", "karras", 10)]["nfe"] == 10 and cells[("heun", "karras", 10)]["nfe"] == 9
    assert cells[("ddpm", "default", 10)]["metric"] == "sliced-W2"
    # more NFE, less error, for a deterministic sampler on a fixed grid family
    assert cells[("dpmpp-2m", "logsnr", 10)]["error"] < cells[("dpmpp-2m", "logsnr", 5)]["error"]
    assert set(report["recommended"]) == {"5", "10"}
    assert "Recommended" in (out / "bench.md").read_text()
    Image.open(out / "bench.png").verify()
    assert "NFE 10:" in capsys.readouterr().out


def test_bench_samplers_leaves_a_notebooks_matplotlib_backend_alone(tmp_path):
    script = (f"import matplotlib, sys; matplotlib.use('svg'); from rediffuse.cli import main; "
              f"code = main(['bench-samplers', '--analytic', 'ring8', '-n', '8', '--nfe', '4', '--samplers', 'euler', "
              f"'--out', {str(tmp_path / 'b')!r}]); "
              f"print(code, matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.stdout.split()[-3:] == ["0", "svg", "False"], done.stderr  # the picture written, pyplot never loaded
    assert (tmp_path / "b" / "bench.png").is_file()


def test_tune_grid_then_sample_with_it(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", "8gaussians", "--out", str(run), "--steps", "60", "--batch-size", "256",
                 "--net-kwargs", '{"hidden": 32, "depth": 2, "emb_dim": 16}', "--no-progress"]) == 0
    assert main(["tune-grid", str(run), "--sampler", "euler", "--steps", "6", "-n", "16", "--evals", "20"]) == 0
    grids = json.loads((run / "grids.json").read_text())
    assert len(grids["euler"]["6"]["sigmas"]) == 7
    out = tmp_path / "s.npy"
    assert main(["sample", str(run), "--sampler", "euler", "--steps", "6", "--spacing", "tuned", "-n", "50",
                 "--out", str(out)]) == 0
    assert out.is_file()
    capsys.readouterr()
    assert main(["sample", str(run), "--sampler", "heun", "--steps", "6", "--spacing", "tuned", "-n", "5",
                 "--out", str(tmp_path / "t.npy")]) == 1
    err = capsys.readouterr().err.strip()
    assert "tune-grid" in err and "\n" not in err


def test_teleported_grid_is_tuned_saved_benchmarked_and_sampled(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", "8gaussians", "--out", str(run), "--steps", "60", "--batch-size", "256",
                 "--net-kwargs", '{"hidden": 32, "depth": 2, "emb_dim": 16}', "--no-progress"]) == 0
    assert main(["tune-grid", str(run), "--sampler", "dpmpp-2m", "--steps", "4", "-n", "16", "--evals", "15",
                 "--starts", "karras", "logsnr", "--teleport", "--warm-start", "--fit-jump"]) == 0
    assert "fitted jump: RMS error on the 16 held-out draws" in capsys.readouterr().out
    entry = json.loads((run / "grids.json").read_text())["dpmpp-2m"]["4"]
    jump_kept = entry["held_out_rms_fitted_jump"] < entry["held_out_rms_gaussian_jump"]
    assert (GaussianFlow.load(run / entry["teleport"]).jump is not None) == jump_kept
    assert len(entry["sigmas"]) == 6 and entry["sigmas"][0] > entry["sigmas"][1]  # sigma_max, landing, 3, 0
    assert entry["warm_start"] is True
    assert (run / entry["teleport"]).is_file()
    bench = tmp_path / "bench"
    assert main(["bench-samplers", str(run), "-n", "16", "--nfe", "4", "--samplers", "dpmpp-2m",
                 "--out", str(bench)]) == 0
    rows = json.loads((bench / "bench.json").read_text())["entries"]
    tuned = [r for r in rows if r["spacing"] == "tuned"]
    assert len(tuned) == 1 and tuned[0]["nfe"] == 4
    out = tmp_path / "s.npy"
    assert main(["sample", str(run), "--sampler", "dpmpp-2m", "--steps", "4", "--spacing", "tuned", "-n", "20",
                 "--out", str(out)]) == 0
    assert np.isfinite(np.load(out)).all()


def test_learned_coefficients_are_tuned_saved_benchmarked_and_sampled(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", "8gaussians", "--out", str(run), "--steps", "60", "--batch-size", "256",
                 "--net-kwargs", '{"hidden": 32, "depth": 2, "emb_dim": 16}', "--no-progress"]) == 0
    assert main(["tune-grid", str(run), "--sampler", "ipndm", "--steps", "4", "-n", "16", "--evals", "10",
                 "--starts", "karras", "--learn-coefficients", "10"]) == 0
    assert "learned coefficients: RMS error on the 16 held-out draws" in capsys.readouterr().out
    entry = json.loads((run / "grids.json").read_text())["ipndm"]["4"]
    table = np.array(entry["coefficients"])
    assert table.shape == (4, 4) and np.allclose(table.sum(1), 1.0)  # one row per step, each summing to one
    # measured 0.312 -> 0.262
    assert entry["held_out_rms_learned_coefficients"] < 0.95 * entry["held_out_rms_fixed_coefficients"]
    bench = tmp_path / "bench"
    assert main(["bench-samplers", str(run), "-n", "16", "--nfe", "4", "--samplers", "ipndm", "--out", str(bench)]) == 0
    rows = json.loads((bench / "bench.json").read_text())["entries"]
    assert [r["nfe"] for r in rows if r["spacing"] == "tuned"] == [4]
    out = tmp_path / "s.npy"
    assert main(["sample", str(run), "--sampler", "ipndm", "--steps", "4", "--spacing", "tuned", "-n", "20",
                 "--out", str(out)]) == 0
    assert np.isfinite(np.load(out)).all()
    capsys.readouterr()
    assert main(["tune-grid", str(run), "--sampler", "dpmpp-2m", "--learn-coefficients", "10"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--sampler ipndm" in err and "\n" not in err


def test_bench_samplers_bad_input(tmp_path, capsys):
    assert main(["bench-samplers"]) == 2
    assert "--analytic" in capsys.readouterr().err
    assert main(["bench-samplers", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_tune_grid_bad_options(tmp_path, capsys):
    assert main(["tune-grid", str(tmp_path), "-n", "16", "--pool", "8"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--pool" in err and "-n" in err and "\n" not in err
    for extra in ([], ["--teleport", "--sampler", "heun"]):
        assert main(["tune-grid", str(tmp_path), "--warm-start", *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert "--warm-start needs --teleport and a multistep sampler" in err and "\n" not in err
    assert main(["tune-grid", str(tmp_path), "--fit-jump"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--fit-jump" in err and "--teleport" in err and "\n" not in err
