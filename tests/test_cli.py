"""The `rediffuse` command line end to end (in-process), its one-line errors, point files and guidance."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from rediffuse.cli import main
from rediffuse.data.toy2d import load_points, points_dataset
from rediffuse.core.guidance import cfg_denoiser
from helpers import assert_one_line_error

SMALL = ["--net-kwargs", '{"hidden": 32, "depth": 2, "emb_dim": 16}', "--batch-size", "128", "--no-progress",
         "--log-every", "50", "--checkpoint-every", "100"]


def test_train_resume_sample_end_to_end(tmp_path, capsys):
    run = tmp_path / "moons"
    assert main(["train", "--data", "moons", "--out", str(run), "--steps", "200", *SMALL]) == 0
    assert "finished at step 200" in capsys.readouterr().out
    assert main(["train", "--out", str(run), "--resume", "--steps", "300", "--no-progress"]) == 0
    assert "finished at step 300" in capsys.readouterr().out
    assert json.loads((run / "config.json").read_text())["net_kwargs"] == {"hidden": 32, "depth": 2, "emb_dim": 16}
    assert [json.loads(r)["step"] for r in (run / "log.jsonl").read_text().splitlines()] == [50 * k for k in
                                                                                             range(1, 7)]
    Image.open(run / "loss.png").verify()

    out = tmp_path / "s.npy"
    assert main(["sample", str(run), "-n", "300", "--steps", "10", "--out", str(out),
                 "--trajectory", str(tmp_path / "t.gif")]) == 0
    printed = capsys.readouterr().out.split()
    samples = np.load(out)
    assert samples.shape == (300, 2) and samples.dtype == np.float32 and np.isfinite(samples).all()
    assert np.abs(samples).max() < 5  # landed near the moons, not at sigma_max = 80
    for name in ("s_scatter.png", "s_reverse.png", "t.gif"):
        assert str(tmp_path / name) in printed
        with Image.open(tmp_path / name) as im:
            im.verify()
    assert main(["sample", str(run), "-n", "300", "--steps", "10", "--out", str(tmp_path / "b.npy"),
                 "--batch-size", "64", "--sampler", "euler"]) == 0
    assert not np.allclose(np.load(tmp_path / "b.npy"), samples)  # another sampler, same noise
    assert main(["sample", str(run), "-n", "300", "--steps", "10", "--out", str(tmp_path / "c.npy"),
                 "--batch-size", "64"]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "c.npy"), samples, atol=1e-5)  # independent of batch size


def test_toml_config_with_flag_override(tmp_path, capsys):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text('data = "8gaussians"\nsteps = 5\nlr = 0.002\nprogress = false\n[net_kwargs]\nhidden = 16\n'
                   'depth = 1\n')
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--lr", "0.004"]) == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["data"] == "8gaussians" and saved["lr"] == 0.004 and saved["net_kwargs"]["hidden"] == 16


def test_points_demo_runs(tmp_path, capsys):
    assert main(["demo", "--data", "moons", "--out", str(tmp_path / "demo"), "--steps", "30"]) == 0
    out = capsys.readouterr().out
    for name in ("samples.npy", "samples_scatter.png", "samples_reverse.png", "loss.png"):
        assert str(tmp_path / "demo" / name) in out
        assert (tmp_path / "demo" / name).is_file()
    assert main(["demo", "--data", "moons", "--out", str(tmp_path / "demo"), "--steps", "30"]) == 0  # reuses the run


def test_digits_demo_writes_its_pictures(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--steps", "10"]) == 0
    out = capsys.readouterr().out
    for name in ("samples.png", "trajectory.gif", "loss.png"):
        assert str(tmp_path / "demo" / name) in out
    with Image.open(tmp_path / "demo" / "samples.png") as grid:
        assert grid.size[1] > grid.size[0] * 0.9  # ten rows (one per digit) of ten samples
    with Image.open(tmp_path / "demo" / "trajectory.gif") as gif:
        assert gif.n_frames > 5


def test_help_lists_verbs(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for verb in ("train", "sample", "demo"):
        assert verb in out
    assert main(["train", "--help"]) == 0
    assert "--resume" in capsys.readouterr().out


def test_version_flag_prints_the_package_version(capsys):
    import rediffuse

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"rediffuse {rediffuse.__version__}"


def test_every_verb_takes_threads_and_runs_on_that_many(monkeypatch, capsys):
    from rediffuse.cli import app, sample

    for verb, rest in [("train", ["--data", "moons", "--out", "X"]), ("sample", ["RUN"]), ("demo", []),
                       ("distill", ["RUN", "--out", "X"]), ("eval", ["RUN"]), ("bench-samplers", ["RUN"]),
                       ("tune-grid", ["RUN"])]:
        assert app.build_parser().parse_args([verb, *rest, "--threads", "3"]).threads == 3, verb
        assert app.build_parser().parse_args([verb, *rest]).threads is None, verb  # auto: torch's default
    seen = []
    monkeypatch.setattr(sample, "cmd_sample", lambda args: seen.append(torch.get_num_threads()) or 0)
    before = torch.get_num_threads()
    assert main(["sample", "RUN", "--threads", "3"]) == 0 and seen == [3]
    assert torch.get_num_threads() == before  # restored after the command
    for bad in ("0", "many"):
        assert_one_line_error(capsys, main(["sample", "RUN", "--threads", bad]), 2, "--threads",
                              "expected a whole number >= 1 or 'auto'")


@pytest.mark.parametrize("argv, code, fragments", [
    ([], 2, ["required"]),
    (["fly"], 2, ["invalid choice", "fly"]),
    (["train", "--data", "moons", "--out", "X", "--bogus"], 2, ["--bogus", "rediffuse train --help"]),
    (["train", "--data", "moons", "--out", "X", "--steps", "many"], 2, ["--steps", "many"]),
    (["train", "--data", "moons", "--out", "X", "--steps", "0"], 2, ["steps must be a positive integer"]),
    (["train", "--data", "moons", "--out", "X", "--schedule", "fancy"], 2, ["unknown schedule", "edm"]),
    (["train", "--data", "moons", "--out", "X", "--net-kwargs", "{bad"], 2, ["JSON object"]),
    (["train", "--data", "moons"], 2, ["--out is required"]),
    (["train", "--data", "moons", "--out", "X", "--config", "missing.toml"], 2, ["missing.toml", "does not exist"]),
    (["train", "--data", "nosuch", "--out", "X", "--steps", "1"], 2, ["unknown data 'nosuch'", "moons"]),
    (["train", "--data", "gone.csv", "--out", "X", "--steps", "1"], 2, ["gone.csv", "does not exist"]),
    (["sample", "nowhere"], 2, ["nowhere", "does not exist"]),
    (["sample"], 2, ["RUN"]),
    (["demo", "--steps", "lots"], 2, ["--steps", "lots"]),
])
def test_bad_input_gives_one_line_error(tmp_path, monkeypatch, capsys, argv, code, fragments):
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(capsys, main(argv), code, *fragments)


def test_bad_toml_and_unknown_key(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("steps = = 3\n")
    assert_one_line_error(capsys, main(["train", "--config", str(bad), "--out", str(tmp_path / "r")]), 2,
                          "bad TOML", "bad.toml")
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('data = "moons"\nstepz = 3\n')
    assert_one_line_error(capsys, main(["train", "--config", str(unknown), "--out", str(tmp_path / "r")]), 2,
                          "'stepz'", "unknown.toml")
    typed = tmp_path / "typed.toml"
    typed.write_text('lr = "fast"\n')
    assert_one_line_error(capsys, main(["train", "--config", str(typed), "--out", str(tmp_path / "r")]), 2,
                          "'lr'", "float")


def test_bad_data_file(tmp_path, capsys):
    csv = tmp_path / "pts.csv"
    csv.write_text("x,y\n1,2\n3,oops\n")
    code = main(["train", "--data", str(csv), "--out", str(tmp_path / "r"), "--steps", "1", "--no-progress"])
    assert_one_line_error(capsys, code, 1, "pts.csv", "row 2")


def test_corrupt_or_empty_run(tmp_path, capsys):
    assert_one_line_error(capsys, main(["sample", str(tmp_path)]), 1, "holds no checkpoint", "rediffuse train")
    run = tmp_path / "run"
    assert main(["train", "--data", "8gaussians", "--out", str(run), "--steps", "2", *SMALL]) == 0
    capsys.readouterr()
    assert_one_line_error(capsys, main(["sample", str(run), "--out", str(tmp_path / "s.png")]), 2, ".npy")
    assert_one_line_error(capsys, main(["sample", str(run), "--class", "3"]), 2, "class-conditional")
    with pytest.raises(Exception):
        main(["--debug", "sample", str(run), "--class", "3"])  # --debug shows the traceback instead
    weights = next(run.glob("ckpt-*")) / "ema.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4])
    assert_one_line_error(capsys, main(["sample", str(run), "--out", str(tmp_path / "s.npy")]), 1,
                          "no complete checkpoint", "ema.safetensors", "corrupt or truncated")


def test_train_refuses_existing_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", "8gaussians", "--out", str(run), "--steps", "2", *SMALL]) == 0
    capsys.readouterr()
    assert_one_line_error(capsys, main(["train", "--data", "8gaussians", "--out", str(run), "--steps", "4"]), 2,
                          "--resume")
    assert_one_line_error(capsys, main(["train", "--out", str(run), "--resume", "--data", "moons"]), 2,
                          "different data")


# ------------------------------------------------------------------------------------------ point files


def test_load_points_npy_and_csv(tmp_path):
    pts = np.random.default_rng(0).normal(size=(10, 3))
    np.save(tmp_path / "p.npy", pts)
    np.testing.assert_allclose(load_points(tmp_path / "p.npy").numpy(), pts, rtol=1e-6)
    (tmp_path / "p.csv").write_text("a,b,c\n" + "\n".join(",".join(map(str, row)) for row in pts) + "\n")
    torch.testing.assert_close(load_points(tmp_path / "p.csv"), torch.from_numpy(pts).float())
    assert points_dataset(str(tmp_path / "p.csv")).shape == (10, 3)
    assert points_dataset("moons", 50, torch.Generator().manual_seed(0)).shape == (50, 2)


@pytest.mark.parametrize("name, content, message", [
    ("missing.npy", None, "does not exist"),
    ("flat.npy", np.zeros(5), r"shape \[N, d\]"),
    ("cube.npy", np.zeros((4, 2, 2)), r"shape \[N, d\]"),
    ("nan.npy", np.array([[0.0, 1.0], [np.nan, 2.0]]), "NaN"),
    ("words.npy", np.array([["a", "b"], ["c", "d"]]), "numeric"),
    ("words.csv", "1,2\nx,y\n", "row 2"),
    ("ragged.csv", "1,2\n3\n", "columns"),
    ("nan.csv", "1,2\nnan,3\n", "NaN"),
    ("points.txt", "1 2\n", "unsupported"),
])
def test_load_points_errors(tmp_path, name, content, message):
    path = tmp_path / name
    if isinstance(content, np.ndarray):
        np.save(path, content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        load_points(path)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------------------------- guidance


class _ToyConditional(torch.nn.Module):
    """D(x, sigma, c) = x * (1 + c) for c >= 0 and x for the null label -1."""

    def forward(self, x, sigma, cond=None):
        if cond is None:
            return x
        scale = torch.where(cond < 0, 0, cond + 1).to(x.dtype)
        return x * (1 + scale[:, None])


def test_cfg_denoiser():
    d = _ToyConditional()
    x, c = torch.randn(4, 2), torch.tensor([0, 1, 2, -1])
    torch.testing.assert_close(cfg_denoiser(d, 1.0)(x, 0.5, c), d(x, 0.5, c))
    torch.testing.assert_close(cfg_denoiser(d, 0.0)(x, 0.5, c), x)
    torch.testing.assert_close(cfg_denoiser(d, 3.0)(x, torch.full((4,), 0.5), c), x + 3 * (d(x, 0.5, c) - x))
    torch.testing.assert_close(cfg_denoiser(d, 3.0)(x, 0.5), x)



def test_train_accepts_holdout_parts(tmp_path):
    from rediffuse.config import TrainConfig
    from rediffuse.data.dataset import build_data
    from rediffuse.runs import run_info

    run = tmp_path / "part"
    assert main(["train", "--data", "digits@train", "--out", str(run), "--steps", "2", "--batch-size", "8",
                 "--net-kwargs", '{"channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1}', "--no-progress"]) == 0
    assert list(run_info(run)["data"]["shape"]) == [1, 8, 8]
    assert len(build_data(TrainConfig(data="digits@train")).x) == 1437
    assert len(build_data(TrainConfig(data="digits@heldout")).x) == 360


def test_a_loader_warning_prints_as_one_line_and_the_api_keeps_real_warnings(tmp_path, capsys):
    import warnings

    from PIL import Image

    from rediffuse.data.images import load_images

    (tmp_path / "imgs" / "a").mkdir(parents=True)
    for i, where in enumerate(["imgs", "imgs", "imgs/a", "imgs/a"]):
        Image.fromarray(np.full((8, 8), 40 * i, dtype=np.uint8)).save(tmp_path / where / f"x{i}.png")
    net = '{"channels": 8, "channel_mults": [1], "num_res_blocks": 1, "attn_resolutions": []}'
    assert main(["train", "--data", f"folder:{tmp_path / 'imgs'}", "--steps", "1", "--batch-size", "2",
                 "--out", str(tmp_path / "run"), "--no-progress", "--threads", "1", "--net-kwargs", net]) == 0
    err = capsys.readouterr().err
    assert err.splitlines() == [f"rediffuse: warning: {tmp_path / 'imgs'} holds files both at its top level and in "
                                "sub-folders: all 4 load unlabelled; put every file in a class sub-folder for labels"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_images(f"folder:{tmp_path / 'imgs'}")
    assert [w.category for w in caught] == [UserWarning] and "sub-folders" in str(caught[0].message)
