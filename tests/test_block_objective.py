"""Block diffusion end to end: the block sampler driven by the exact Markov-chain conditionals reproduces the
source (also past the context, where the cache is rebuilt); the cached autoregressive sampler equals the uncached
one; a tiny block run learns below the unigram entropy, resumes exactly, samples past its context with a prompt,
and reports its bound; bad keys are one-line errors."""

from __future__ import annotations

import json

import pytest
import torch
from scipy import stats

from helpers import markov_text, tiny
from rediffuse import checkpoint, runs
from rediffuse.cli import main
from rediffuse.core.masking import LOG_LINEAR
from rediffuse.errors import ConfigError
from rediffuse.evaluation.text import evaluate_text
from rediffuse.nets import Transformer
from rediffuse.core.kv_cache import KVCache
from rediffuse.objectives import BlockLM, CausalLM
from rediffuse.data.text import Vocabulary
from rediffuse.samplers.autoregressive import sample_autoregressive
from rediffuse.samplers.block import restart_point, sample_blocks
from rediffuse.samplers.generation import sample_generators
from rediffuse.train import train
from rediffuse.truth.markov import MarkovChain


class ExactBlocks:
    """The chain's exact conditionals as a block model; the cache stores the finished tokens themselves. The chain
    is stationary, so a prefix cut by a cache rebuild still gives the exact conditional (the Markov property)."""

    schedule = LOG_LINEAR
    time_agnostic = True

    def __init__(self, chain: MarkovChain, block: int) -> None:
        self.chain, self.block, self.mask_id = chain, block, chain.mask_id

    def commit(self, x, cache: KVCache) -> None:
        cache.add(0, x[:, None, :, None].double(), x[:, None, :, None].double())

    def denoise(self, z, cache: KVCache):
        prefix = cache.keys[0][:, 0, :, 0].long() if len(cache) else z[:, :0]
        rest = self.chain.length - prefix.shape[1] - z.shape[1]
        seq = torch.cat([prefix, z, torch.full((len(z), rest), self.mask_id, dtype=z.dtype)], 1)
        return self.chain.posterior(seq)[:, prefix.shape[1]:prefix.shape[1] + z.shape[1]]

    def denoise_after(self, done, z, cache: KVCache):
        self.commit(done, cache)
        return self.denoise(z, cache)


@pytest.mark.parametrize("context", [6, 4])
def test_the_block_sampler_with_exact_conditionals_reproduces_the_source(context):
    chain = MarkovChain.random(3, 6, seed=2)
    n = 30000
    z = torch.full((n, 6), chain.mask_id, dtype=torch.long)
    x = sample_blocks(ExactBlocks(chain, 2), z, context=context, order="confidence",
                      generator=torch.Generator().manual_seed(context))
    index = (x * 3 ** torch.arange(5, -1, -1)).sum(1)
    counts = torch.bincount(index, minlength=3 ** 6).double()
    want = chain.log_prob(chain.all_sequences()).exp() * n
    keep = want >= 5
    chi2 = float(((counts[keep] - want[keep]) ** 2 / want[keep]).sum())
    assert stats.chi2.sf(chi2, int(keep.sum()) - 1) > 1e-3


def test_caching_finished_blocks_with_the_next_blocks_first_step_changes_nothing():
    torch.manual_seed(0)
    net = Transformer(vocab_size=6, dim=16, depth=2, heads=2, max_len=16).eval()
    model = BlockLM(net, LOG_LINEAR, Vocabulary("char", "abcde"), block=4)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 5, (3, 16), generator=g)
    z = torch.where(torch.rand(3, 4, generator=g) < 0.5, model.mask_id, x[:, 12:])
    apart, fused = KVCache(), KVCache()
    with torch.no_grad():
        model.commit(x[:, :4], apart)
        model.commit(x[:, :4], fused)
        model.commit(x[:, 4:12], apart)  # two blocks at once, then the next block's first step
        want = model.denoise(z, apart)
        got = model.denoise_after(x[:, 4:12], z, fused)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert len(fused) == len(apart) == 12 and fused.next_position == apart.next_position == 12
    assert not fused.recording and fused.keep is None
    for i in range(2):
        torch.testing.assert_close(fused.keys[i], apart.keys[i], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(fused.values[i], apart.values[i], atol=1e-6, rtol=1e-6)


def test_restart_points_keep_about_half_a_context_of_whole_blocks():
    assert [restart_point(done, 4, 16) for done in (12, 16, 20)] == [4, 8, 12]
    assert restart_point(3, 1, 2) == 2
    with pytest.raises(ValueError, match="does not fit the context"):
        restart_point(8, 8, 4)


def test_the_cached_autoregressive_sampler_equals_the_uncached_one():
    torch.manual_seed(0)
    net = Transformer(vocab_size=4, dim=16, depth=2, heads=2, max_len=12, causal=True).eval()
    model = CausalLM(net, Vocabulary("char", "abcd"))
    z = torch.zeros(5, 12, dtype=torch.long)
    z[:, :3] = torch.tensor([0, 1, 2])
    plain = sample_autoregressive(model, z, 3, generator=sample_generators(1, range(5), "cpu"))
    cached = sample_autoregressive(model, z, 3, generator=sample_generators(1, range(5), "cpu"), context=12)
    assert torch.equal(plain, cached)
    long = torch.zeros(5, 40, dtype=torch.long)
    long[:, :3] = z[:, :3]
    longer = sample_autoregressive(model, long, 3, generator=sample_generators(1, range(5), "cpu"), context=12)
    assert torch.equal(longer[:, :12], plain)  # past the context the cache restarts from the latest 6 tokens


def test_a_tiny_block_run_learns_resumes_samples_and_reports_its_bound(tmp_path, capsys):
    config = tiny(tmp_path, objective="block", block_tokens=4, mask_rate_min=0.3, mask_rate_max=0.8)
    _, unigram_bits = markov_text(tmp_path / "m.txt")
    train(config)
    report = evaluate_text(config.out, draws=4)
    assert report["nelbo_bits_per_char"] + 3 * report["nelbo_bits_per_char_stderr"] < unigram_bits - 0.5
    model, spec, saved = runs.load_model(config.out)
    assert isinstance(model, BlockLM) and spec["block"] == 4 and saved.objective == "block"
    out = tmp_path / "s.jsonl"
    assert main(["sample", config.out, "-n", "3", "--length", "70", "--prompt", "abc", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(len(r["text"]) == 70 and r["text"].startswith("abc") and r["block"] == 4 for r in rows)
    follows = sum(a != b and "abcd".index(b) == ("abcd".index(a) + 1) % 4
                  for r in rows for a, b in zip(r["text"], r["text"][1:]))
    assert follows > 0.6 * 3 * 69  # the source moves on by one 89% of the time; chance is 25%


def test_block_resume_equals_uninterrupted(tmp_path):
    base = dict(objective="block", steps=6, log_every=2, checkpoint_every=3, warmup_steps=2,
                mask_rate_min=0.25, mask_rate_max=0.75, net_kwargs={"dim": 16, "depth": 1, "heads": 2})
    train(tiny(tmp_path, **base, out=str(tmp_path / "whole")))
    train(tiny(tmp_path, **{**base, "steps": 3}, out=str(tmp_path / "split")))
    train(tiny(tmp_path, **base, out=str(tmp_path / "split")), resume=True)
    a, b = (checkpoint.load(checkpoint.latest(tmp_path / name)) for name in ("whole", "split"))
    for part in ("model", "ema", "optimizer"):
        assert all(torch.equal(v, b.tensors[part][k]) for k, v in a.tensors[part].items()), part


@pytest.mark.parametrize("overrides,fragment", [
    ({"block_tokens": 5}, "--block-tokens 5 must be >= 1 and divide --block-length 32"),
    ({"mask_rate_min": 0.8, "mask_rate_max": 0.3}, "need 0 <= --mask-rate-min < --mask-rate-max <= 1"),
    ({"mask_schedule": "cosine"}, "drop --mask-schedule"),
    ({"net_kwargs": {"time_conditioning": True}}, "time-agnostic transformer"),
])
def test_bad_block_keys_are_one_line_errors(tmp_path, overrides, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")) as err:
        train(tiny(tmp_path, objective="block", steps=1, **overrides))
    assert "\n" not in str(err.value)
