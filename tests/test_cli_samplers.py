"""bench-samplers and tune-grid end to end, on a built-in mixture and on a small trained run."""

import json

from PIL import Image

from rediffuse.cli import main


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
                 "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert "tune-grid" in err and "\n" not in err


def test_bench_samplers_bad_input(tmp_path, capsys):
    assert main(["bench-samplers"]) == 2
    assert "--analytic" in capsys.readouterr().err
    assert main(["bench-samplers", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
