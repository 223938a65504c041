"""Tests for text data: the vocabulary, the 90/10 split, the one-line errors and random windows."""

import json
from pathlib import Path

import pytest
import torch

from rediffuse.data.text import TextSet, Vocabulary, load_text, random_windows, split_point
from rediffuse.errors import ConfigError

SHAKESPEARE = Path("/work/shared/data/tinyshakespeare/input.txt")
SAMPLE = "To be, or not to be: that is the question.\nWhether 'tis nobler in the mind to suffer\n"


def _write(tmp_path: Path, text: str, name: str = "t.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and message
    return message


def test_vocabulary_sorted_round_trip_and_mask():
    vocab = Vocabulary.from_text(SAMPLE)
    assert list(vocab.chars) == sorted(set(SAMPLE)) and vocab.size == len(set(SAMPLE)) == vocab.mask_id
    ids = vocab.encode(SAMPLE)
    assert ids.dtype == torch.long and ids.shape == (len(SAMPLE),)
    assert ids.min() >= 0 and ids.max() < vocab.size
    assert [vocab.chars[i] for i in ids.tolist()] == list(SAMPLE)  # id = rank of the code point
    assert vocab.decode(ids) == SAMPLE
    masked = ids.clone()
    masked[::3] = vocab.mask_id
    shown = vocab.decode(masked, mask="_")
    assert len(shown) == len(SAMPLE) and shown[::3] == "_" * len(shown[::3]) and shown[1::3] == SAMPLE[1::3]
    with pytest.raises(ValueError, match="mask") as err:
        vocab.decode(masked)
    _one_line(err)
    with pytest.raises(ValueError, match="outside"):
        vocab.decode(torch.tensor([vocab.size + 1]))


def test_vocabulary_json_round_trip_and_damage():
    for vocab in (Vocabulary.from_text("zé\n a\t\"\\"), Vocabulary.from_text("anything", "bytes")):
        data = json.loads(json.dumps(vocab.to_dict()))
        again = Vocabulary.from_dict(data)
        assert again == vocab and again.size == vocab.size
    assert Vocabulary("bytes").size == 256 and Vocabulary("bytes").mask_id == 256
    with pytest.raises(ValueError, match="damaged"):
        Vocabulary.from_dict({"kind": "char", "chars": "abc", "size": 4})
    with pytest.raises(ValueError, match="sorted"):
        Vocabulary.from_dict({"kind": "char", "chars": "ba"})


def test_unseen_character_error_names_it():
    vocab = Vocabulary.from_text("abc")
    with pytest.raises(ValueError) as err:
        vocab.encode("abzc")
    message = _one_line(err)
    assert "'z'" in message and "U+007A" in message and "tokens='bytes'" in message
    with pytest.raises(ValueError, match=r"'\\n'"):
        vocab.encode("a\nb")


def test_bytes_tokens_utf8_round_trip():
    text = "héllo wörld ☃\n"
    vocab = Vocabulary("bytes")
    ids = vocab.encode(text)
    assert ids.tolist() == list(text.encode("utf-8")) and len(ids) == len(text) + 4  # é, ö: 2 bytes; ☃: 3
    assert vocab.decode(ids) == text
    masked = torch.cat([ids[:2], torch.tensor([256]), ids[3:]])  # masks the second byte of 'é'
    assert vocab.decode(masked, mask="#").startswith("h\ufffd#")


@pytest.mark.parametrize("n", [1000, 1234, 57])
def test_split_sizes_and_heldout_vocabulary(tmp_path, n):
    base = "abcdefghij\n"
    text = "QRS" + (base * (n // len(base) + 1))[:n - 3]  # Q, R, S only in the first characters
    path = _write(tmp_path, text)
    whole, train, held = (load_text(f"text:{path}{s}") for s in ("", "@train", "@heldout"))
    assert isinstance(train, TextSet) and train.spec == f"text:{path}@train"
    assert len(whole.tokens) == n and len(train.tokens) == n * 9 // 10 and len(held.tokens) == n - n * 9 // 10
    assert train.num_chars == len(train.tokens)
    assert train.vocab.decode(train.tokens) + train.vocab.decode(held.tokens) == text
    assert held.vocab == train.vocab and "Q" in held.vocab.chars  # held-out ids are the training ones
    assert "Q" not in held.vocab.decode(held.tokens)
    assert whole.vocab.chars == "".join(sorted(set(text)))


def test_heldout_with_unseen_characters_names_them(tmp_path):
    path = _write(tmp_path, "ab" * 45 + "abababab!?")  # 100 characters: '!' and '?' only held out
    with pytest.raises(ValueError, match="'!'") as err:
        load_text(f"text:{path}@heldout")
    _one_line(err)
    assert len(load_text(f"text:{path}@heldout", tokens="bytes").tokens) == 10


def test_bytes_mode_splits_by_characters(tmp_path):
    text = "é" * 50 + "a" * 50  # 100 characters, 150 bytes
    path = _write(tmp_path, text)
    train, held = (load_text(f"text:{path}{s}", tokens="bytes") for s in ("@train", "@heldout"))
    assert train.num_chars == 90 and len(train.tokens) == 50 * 2 + 40 and train.vocab.kind == "bytes"
    assert held.num_chars == 10 and held.tokens.tolist() == [ord("a")] * 10
    with pytest.raises(ValueError, match="contradicts"):
        load_text(f"text:{path}", tokens="char", vocab=train.vocab)
    assert torch.equal(load_text(f"text:{path}@train", vocab=train.vocab).tokens, train.tokens)


@pytest.mark.skipif(not SHAKESPEARE.is_file(), reason="Tiny Shakespeare is not on this machine")
def test_tiny_shakespeare_split_is_nanogpts():
    train = load_text(f"text:{SHAKESPEARE}@train")
    held = load_text(f"text:{SHAKESPEARE}@heldout")
    assert len(train.tokens) == 1_003_854 and len(held.tokens) == 111_540 and split_point(1_115_394) == 1_003_854
    assert train.vocab.size == 65 and held.vocab == train.vocab
    assert train.vocab.chars[:3] == "\n !" and train.vocab.chars[-1] == "z"
    assert train.vocab.decode(held.tokens[:6]) == SHAKESPEARE.read_text()[1_003_854:1_003_860]


def test_bad_input_one_line_errors(tmp_path):
    cases = {
        f"text:{tmp_path / 'missing.txt'}": (ConfigError, "does not exist"),
        f"text:{tmp_path}": (ConfigError, "is a directory"),
        f"text:{_write(tmp_path, '', 'empty.txt')}": (ValueError, "is empty"),
        f"text:{_write(tmp_path, 'a', 'one.txt')}@train": (ValueError, "@train gets the first 0"),
        str(tmp_path / "t.txt"): (ConfigError, "text:PATH"),
    }
    for spec, (kind, phrase) in cases.items():
        with pytest.raises(kind, match=phrase) as err:
            load_text(spec)
        _one_line(err)
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf".encode() + "é".encode("latin-1") + b" ok")
    with pytest.raises(ValueError, match="not UTF-8: byte 0xe9 at offset 3") as err:
        load_text(f"text:{bad}")
    assert "iconv" in _one_line(err)


def test_random_windows_reproducible_substrings():
    text = "".join(chr(ord("a") + (i * 7) % 26) for i in range(500))
    vocab = Vocabulary.from_text(text)
    tokens = vocab.encode(text)
    first = random_windows(tokens, 32, 64, torch.Generator().manual_seed(3))
    again = random_windows(tokens, 32, 64, torch.Generator().manual_seed(3))
    other = random_windows(tokens, 32, 64, torch.Generator().manual_seed(4))
    assert first.shape == (64, 32) and first.dtype == torch.long
    assert torch.equal(first, again) and not torch.equal(first, other)
    starts = set()
    for row in first:
        window = vocab.decode(row)
        assert window in text
        starts.add(text.index(window))  # the sequence has period 26 so index() finds the offset mod 26
    assert len(starts) > 10  # offsets spread out
    exact = random_windows(tokens, len(tokens), 2, torch.Generator().manual_seed(0))
    assert torch.equal(exact, tokens.expand(2, -1))  # a block of the whole text has one offset
    with pytest.raises(ValueError, match="fewer than the block length 501") as err:
        random_windows(tokens, 501, 1, torch.Generator())
    _one_line(err)


def test_random_windows_cover_every_offset():
    tokens = torch.arange(10)
    rows = random_windows(tokens, 4, 2000, torch.Generator().manual_seed(0))
    assert torch.equal(rows - rows[:, :1], torch.arange(4).expand(2000, -1))
    counts = torch.bincount(rows[:, 0], minlength=7)
    assert counts[7:].sum() == 0 and counts.min() > 200  # offsets 0..6, each about 2000 / 7 = 286 times


def test_random_windows_resume_from_generator_state():
    tokens = torch.arange(1000)
    g = torch.Generator().manual_seed(11)
    random_windows(tokens, 16, 8, g)
    state = g.get_state()
    later = [random_windows(tokens, 16, 8, g) for _ in range(2)]
    g.set_state(state)
    assert all(torch.equal(random_windows(tokens, 16, 8, g), batch) for batch in later)
