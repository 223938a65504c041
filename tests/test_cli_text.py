"""Text runs through the command line: train, sample (.jsonl, .txt, prompt, infill, per-sample seeds), eval,
and the one-line errors."""

from __future__ import annotations

import json

import pytest

from rediffuse.cli import main
from helpers import assert_one_line_error

TEXT = "abcd" * 300 + "dcba" * 200  # 2000 characters: train 1800, held out 200


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("text")
    (folder / "t.txt").write_text(TEXT)
    out = folder / "run"
    code = main(["train", "--objective", "masked", "--data", f"text:{folder / 't.txt'}@train", "--out", str(out),
                 "--block-length", "16", "--batch-size", "16", "--steps", "20", "--no-progress",
                 "--net-kwargs", '{"dim": 16, "depth": 1, "heads": 2}', "--log-every", "10"])
    assert code == 0
    return out


def test_train_saves_the_vocabulary_with_the_run(run):
    manifest = json.loads((run / "ckpt-00000020" / "manifest.json").read_text())
    assert manifest["meta"]["model"]["vocab"]["chars"] == "abcd"


def test_sample_jsonl_txt_and_per_sample_seeds(run, tmp_path, capsys):
    out5, out2 = tmp_path / "five.jsonl", tmp_path / "two.jsonl"
    assert main(["sample", str(run), "-n", "5", "--seed", "3", "--out", str(out5), "--batch-size", "2"]) == 0
    assert main(["sample", str(run), "-n", "2", "--seed", "3", "--out", str(out2)]) == 0
    five = [json.loads(line) for line in out5.read_text().splitlines()]
    two = [json.loads(line) for line in out2.read_text().splitlines()]
    assert len(five) == 5 and all(len(r["text"]) == 16 and set(r["text"]) <= set("abcd") for r in five)
    assert [r["text"] for r in five[:2]] == [r["text"] for r in two]  # sample i depends on (seed, i) only
    txt = tmp_path / "s.txt"
    assert main(["sample", str(run), "-n", "3", "--length", "12", "--prompt", "dcb", "--out", str(txt)]) == 0
    texts = txt.read_text().rstrip("\n").split("\n=====\n")
    assert len(texts) == 3 and all(len(t) == 12 and t.startswith("dcb") for t in texts)


def test_trajectory_shows_sample_zero_emerging_from_masks(run, tmp_path):
    out, traj = tmp_path / "s.jsonl", tmp_path / "traj.txt"
    assert main(["sample", str(run), "-n", "2", "--out", str(out), "--trajectory", str(traj)]) == 0
    states = traj.read_text().split("--- t = ")[1:]
    assert 2 <= len(states) <= 16 and states[0] == "1.0000\n" + "_" * 16 + "\n"
    assert states[-1].split("\n", 1)[1].rstrip("\n") == json.loads(out.read_text().splitlines()[0])["text"]


def test_trajectory_pictures_png_strip_and_gif_of_every_step(run, tmp_path):
    from PIL import Image
    out, png, gif = tmp_path / "s.jsonl", tmp_path / "traj.png", tmp_path / "traj.gif"
    assert main(["sample", str(run), "-n", "1", "--steps", "8", "--out", str(out), "--trajectory", str(png)]) == 0
    assert main(["sample", str(run), "-n", "1", "--steps", "8", "--out", str(out), "--trajectory", str(gif),
                 "--overwrite"]) == 0
    with Image.open(gif) as animation:
        assert animation.n_frames == 9  # the all-mask template and the state after each of the 8 steps
        frame = animation.size
    with Image.open(png) as strip:
        assert strip.size == (frame[0], 6 * frame[1])  # six states stacked


def test_infill_keeps_the_template(run, tmp_path):
    out = tmp_path / "infill.jsonl"
    template = "ab__abcd_bcd__cd"
    assert main(["sample", str(run), "-n", "4", "--infill", template, "--out", str(out)]) == 0
    for line in out.read_text().splitlines():
        text = json.loads(line)["text"]
        assert len(text) == len(template) and "_" not in text
        assert all(t == c for t, c in zip(text, template) if c != "_")


@pytest.mark.parametrize("flags, code, fragment", [
    (["--prompt", "abz"], 2, "character 'z'"),
    (["--infill", "a_Q"], 2, "character 'Q'"),
    (["--prompt", "abcd", "--length", "3"], 2, "shorter than the 4 tokens of the prompt"),
    (["--length", "99"], 2, "exceeds the network's max_len 16"),
    (["--class", "1"], 2, "a text run has no classes"),
    (["--guidance", "2"], 2, "a text run has no classes"),
    (["--out", "x.png"], 2, "must end in .jsonl or .txt"),
    (["--trajectory", "t.mp4"], 2, "must end in .txt, .png or .gif"),
    (["--sampler", "euler"], 2, "--sampler euler is for points and image runs"),
    (["--infill", "ab", "--blank", "xy"], 2, "--blank must be one character"),
    (["--prompt", "ab", "--infill", "a_"], 2, "exclude each other"),
])
def test_sample_errors_are_one_line(run, capsys, flags, code, fragment):
    assert_one_line_error(capsys, main(["sample", str(run), *flags]), code, fragment)


def test_eval_writes_the_heldout_nelbo(run, capsys):
    assert main(["eval", str(run), "--metrics", "nelbo", "--draws", "2"]) == 0
    report = json.loads((run / "eval" / "eval.json").read_text())
    assert report["tokens"] == 12 * 16 and report["windows"] == 12 and report["draws_per_window"] == 2
    assert report["nelbo_bits_per_char"] > 0 and report["nelbo_bits_per_char_stderr"] > 0
    assert "bits/char" in (run / "eval" / "eval.md").read_text()
    capsys.readouterr()
    assert_one_line_error(capsys, main(["eval", str(run), "--metrics", "fd"]), 2, "from nelbo")


def test_bad_text_data_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "latin.txt").write_bytes(b"caf\xe9 au lait")
    (tmp_path / "empty.txt").write_bytes(b"")
    for name, fragment in [("latin.txt", "is not UTF-8"), ("empty.txt", "is empty")]:
        code = main(["train", "--objective", "masked", "--data", f"text:{tmp_path / name}", "--out",
                     str(tmp_path / "r"), "--steps", "1", "--no-progress"])
        assert_one_line_error(capsys, code, 1, fragment)
