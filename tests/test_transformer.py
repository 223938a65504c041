"""Tests for the token transformer: shapes, causality, rotary positions, adaLN, the config round trip, learning."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from rediffuse.nets import NETS, Transformer
from rediffuse.nets.rotary import apply_rotary, rotary_tables

TINY = dict(vocab_size=11, dim=16, depth=2, heads=2, max_len=24)


def _perturb(model: torch.nn.Module, scale: float = 0.1, seed: int = 0) -> None:
    """Move every parameter (zero-initialised ones included) off its initial value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("kwargs,out", [
    (dict(), 11),
    (dict(causal=True, mask_token=False), 11),
    (dict(positions="learned", norm="rms"), 11),
    (dict(tie_weights=False, out_size=5), 5),
    (dict(out_size=12), 12),  # the mask logit too (tied: the 12 input rows)
    (dict(time_conditioning=True, mlp_ratio=2.5, dropout=0.1), 11),
])
def test_output_shapes_and_dtype(kwargs, out):
    model = Transformer(**{**TINY, **kwargs}).eval()
    tokens = torch.randint(0, model.in_size, (3, 24))
    logits = model(tokens, torch.rand(3))
    assert logits.shape == (3, 24, out) and logits.dtype == torch.float32 and torch.isfinite(logits).all()
    assert model(tokens[:, :5], torch.tensor(0.5)).shape == (3, 5, out)  # shorter than max_len, scalar noise
    assert model.in_size == 11 + kwargs.get("mask_token", True) and Transformer.num_classes is None


def test_registered_and_mask_id():
    assert NETS["transformer"] is Transformer
    assert Transformer(**TINY).mask_id == 11 and Transformer(**TINY, mask_token=False).mask_id is None


@pytest.mark.parametrize("positions", ["rotary", "learned"])
def test_causal_output_ignores_the_future_and_bidirectional_does_not(positions):
    torch.manual_seed(0)
    tokens = torch.randint(0, 11, (2, 16))
    for causal in (True, False):
        model = Transformer(**TINY, causal=causal, positions=positions).eval()
        base = model(tokens)
        for i in (0, 5, 14):
            changed = tokens.clone()
            changed[:, i + 1:] = (changed[:, i + 1:] + 1 + torch.randint(0, 9, changed[:, i + 1:].shape)) % 11
            out = model(changed)
            past = (out[:, : i + 1] - base[:, : i + 1]).abs().max().item()
            if causal:
                assert past < 1e-6, (i, past)
            else:
                assert past > 1e-4, (i, past)  # position i sees the changed future


def test_rotary_scores_depend_only_on_relative_position():
    cos, sin = rotary_tables(32, 8)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(8, generator=g), torch.randn(8, generator=g)
    rq = apply_rotary(q.expand(32, 8), cos, sin)  # R(m) q for m = 0..31
    rk = apply_rotary(k.expand(32, 8), cos, sin)
    scores = rq @ rk.T  # scores[m, n] = <R(m) q, R(n) k>
    for shift in (1, 7, 20):
        torch.testing.assert_close(scores[shift:, shift:], scores[:-shift, :-shift], atol=1e-5, rtol=0)
    assert (scores[0, 1:] - scores[0, 0]).abs().max() > 0.1  # but it does depend on m - n
    torch.testing.assert_close(rq.norm(dim=1), q.norm().expand(32))  # rotations keep the norm
    torch.testing.assert_close(scores[0, 0], q @ k)  # position 0 is the identity


def test_rotary_matches_complex_rotation():
    cos, sin = rotary_tables(10, 6, base=100.0)
    x = torch.randn(2, 10, 6, dtype=torch.float64)
    theta = 100.0 ** (-torch.arange(3, dtype=torch.float64) * 2 / 6)
    z = torch.complex(x[..., :3], x[..., 3:]) * torch.exp(1j * torch.arange(10.0, dtype=torch.float64)[:, None]
                                                          * theta)
    torch.testing.assert_close(apply_rotary(x, cos.double(), sin.double()), torch.cat([z.real, z.imag], -1),
                               atol=1e-6, rtol=0)  # float32 tables
    with pytest.raises(ValueError, match="even head dimension"):
        rotary_tables(4, 5)


def test_positions_are_used():
    tokens = torch.randint(0, 11, (2, 12), generator=torch.Generator().manual_seed(1))
    for positions in ("rotary", "learned"):
        model = Transformer(**TINY, positions=positions).eval()
        _perturb(model)
        flipped = model(tokens.flip(1)).flip(1)
        assert (flipped - model(tokens)).abs().max() > 1e-3  # not permutation-equivariant


def test_zero_adaln_equals_time_agnostic_then_learns_to_use_time():
    torch.manual_seed(0)
    plain = Transformer(**TINY)
    _perturb(plain)
    timed = Transformer(**TINY, time_conditioning=True)
    missing, unexpected = timed.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith(("time_embed", "ada_out")) or ".ada." in k
                                              for k in missing)
    tokens = torch.randint(0, 12, (4, 16))
    c_noise = torch.tensor([0.0, 1.0, 10.0, 500.0], requires_grad=True)
    torch.testing.assert_close(timed(tokens, c_noise), plain(tokens), atol=0, rtol=0)
    out = timed(tokens, c_noise)
    (grad,) = torch.autograd.grad(out.square().sum(), c_noise)
    assert grad.abs().max() == 0  # the zero adaLN layers block the time input at initialisation
    optimizer = torch.optim.SGD(timed.parameters(), lr=0.1)
    F.cross_entropy(timed(tokens, c_noise).flatten(0, 1), tokens.clamp(max=10).flatten()).backward()
    assert all(b.ada.weight.grad.abs().max() > 0 for b in timed.blocks)
    optimizer.step()
    (grad,) = torch.autograd.grad(timed(tokens, c_noise).square().sum(), c_noise)
    assert grad.abs().max() > 1e-6
    same = timed(tokens, torch.full((4,), 3.0))
    assert (timed(tokens, torch.full((4,), 300.0)) - same).abs().max() > 1e-5  # now depends on the time
    with pytest.raises(ValueError, match="pass c_noise"):
        timed(tokens)


def test_config_round_trip_rebuilds_identical_network():
    for kwargs in (dict(time_conditioning=True, positions="learned", norm="rms"),
                   dict(causal=True, tie_weights=False, mask_token=False, dropout=0.1, mlp_ratio=3.0)):
        model = Transformer(**TINY, **kwargs)
        _perturb(model)
        config = json.loads(json.dumps(model.config()))
        rebuilt = NETS["transformer"].from_config(config)
        assert rebuilt.config() == model.config()
        shapes = {k: v.shape for k, v in model.state_dict().items()}
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == shapes
        rebuilt.load_state_dict(model.state_dict())
        tokens = torch.randint(0, model.in_size, (2, 20))
        c = torch.tensor([0.1, 0.9])
        assert torch.equal(rebuilt.eval()(tokens, c), model.eval()(tokens, c))


def test_seeded_construction_is_deterministic_and_tied_head_has_no_copy():
    states = []
    for _ in range(2):
        torch.manual_seed(7)
        states.append(Transformer(**TINY).state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not any(k.startswith("head") for k in states[0])
    assert "head.weight" in Transformer(**TINY, tie_weights=False).state_dict()
    model = Transformer(**TINY).eval()
    rotary = (model.rope_cos[:1], model.rope_sin[:1])
    h = model.norm_out(model.blocks[1](model.blocks[0](model.embed(torch.tensor([[3]])), None, rotary)[0], None,
                                       rotary)[0])
    torch.testing.assert_close(model(torch.tensor([[3]])), h @ model.embed.weight[:11].T)


def test_dropout_only_in_training():
    model = Transformer(**TINY, dropout=0.3)
    tokens = torch.randint(0, 12, (2, 10))
    assert not torch.equal(model.train()(tokens), model(tokens))
    assert torch.equal(model.eval()(tokens), model(tokens))


def test_bad_sizes_and_inputs_one_line_errors():
    for kwargs, phrase in ((dict(heads=3), "divisible by heads"), (dict(dim=6, heads=2), "even head dimension"),
                           (dict(positions="alibi"), "unknown positions"), (dict(norm="batch"), "unknown norm"),
                           (dict(out_size=13), "tie_weights"), (dict(depth=0), "depth must be >= 1")):
        with pytest.raises(ValueError, match=phrase):
            Transformer(**{**TINY, **kwargs})
    model = Transformer(**TINY)
    for tokens, kwargs, phrase in ((torch.zeros(2, 25, dtype=torch.long), {}, "exceeds max_len 24"),
                                   (torch.zeros(2, 4), {}, "integer token ids"),
                                   (torch.zeros(2, 4, dtype=torch.long), dict(cond=torch.zeros(2)), "cond=None")):
        with pytest.raises(ValueError, match=phrase) as err:
            model(tokens, **kwargs)
        assert "\n" not in str(err.value)


def _unigram_entropy(tokens: torch.Tensor) -> float:
    """The entropy (nats) of the token frequencies."""
    p = torch.bincount(tokens).double()
    p = p[p > 0] / p.sum()
    return float(-(p * p.log()).sum())


@pytest.mark.parametrize("causal", [True, False])
def test_tiny_model_overfits_repeated_text(causal):
    """AR next-token loss, or masked-token reconstruction loss, far below the unigram entropy (3.05 nats)."""
    text = "the quick brown fox jumps over the lazy dog. "  # period 45
    vocab = sorted(set(text))
    stream = torch.tensor([vocab.index(c) for c in text * 8])
    entropy = _unigram_entropy(stream)
    torch.manual_seed(0)
    model = Transformer(vocab_size=len(vocab), dim=32, depth=2, heads=2, max_len=64, causal=causal,
                        mask_token=not causal)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(200 if causal else 400):
        offsets = torch.randint(0, len(stream) - 65, (16,), generator=g)
        window = stream[offsets[:, None] + torch.arange(65)]
        if causal:
            logits, target = model(window[:, :-1]), window[:, 1:]
            loss = F.cross_entropy(logits[:, 45:].flatten(0, 1), target[:, 45:].flatten())  # after one period
        else:
            window = window[:, :64]
            masked = torch.rand(window.shape, generator=g) < 0.3
            logits = model(torch.where(masked, model.mask_id, window))
            loss = F.cross_entropy(logits[masked], window[masked])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    final = sum(losses[-50:]) / 50  # the mean of the last 50 steps
    assert losses[0] > 0.9 * entropy and math.isfinite(final)  # starts near the unigram entropy ...
    assert final < 0.1 * entropy, (final, entropy)  # ... and learns the text
