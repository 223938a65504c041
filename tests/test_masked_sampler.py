"""The masked ancestral sampler on the exact Markov-chain denoiser: chi-square tests against the source and
against the T-step sampler's exact law, prompts and infill, float64 categorical draws, model-output reuse."""

import math

import pytest
import torch
from scipy.stats import chi2

from rediffuse.truth.markov import MarkovChain
from rediffuse.core.masking import COSINE, LOG_LINEAR
from rediffuse.samplers.masked import categorical, masked_template, sample_masked

f64 = torch.float64
LEVEL = 1e-3  # a right sampler passes at p > LEVEL with the fixed seeds below; a wrong one fails at p < 1e-9


@pytest.fixture(scope="module")
def chain():
    return MarkovChain.random(3, 4, seed=1)  # 81 sequences, probabilities from 9e-6 to 0.2


def chi_square_p(x, probs, vocab):
    """The p-value of Pearson's chi-square test of samples x [N, L] against probs [V^L].

    Cells expected fewer than 5 times are pooled into one; a sample in a cell of probability 0 gives p = 0.
    """
    index = (x * vocab ** torch.arange(x.shape[1] - 1, -1, -1)).sum(1)
    counts = torch.bincount(index, minlength=probs.numel()).double()
    if bool((counts[probs == 0] > 0).any()):
        return 0.0
    expected = x.shape[0] * probs
    small = (expected < 5) & (probs > 0)
    big = expected >= 5
    counts = torch.cat([counts[big], counts[small].sum().reshape(1)])
    expected = torch.cat([expected[big], expected[small].sum().reshape(1)])
    if float(expected[-1]) == 0:
        counts, expected = counts[:-1], expected[:-1]
    return float(chi2.sf(float(((counts - expected) ** 2 / expected).sum()), expected.numel() - 1))


def source(chain):
    return chain.log_prob(chain.all_sequences()).exp()


def draw(chain, n, steps, seed, **options):
    z = masked_template(n, chain.length, chain.mask_id)
    return sample_masked(chain, z, steps, mask_id=chain.mask_id, generator=torch.Generator().manual_seed(seed),
                         **options)


def test_the_sampler_law_is_a_distribution_that_converges_to_the_source(chain):
    p = source(chain)
    product = chain.marginals()[torch.arange(4), chain.all_sequences()].prod(1)
    assert torch.allclose(chain.sampler_law(1), product, atol=1e-15)  # one step: every token from its marginal
    tv = [float((chain.sampler_law(steps) - p).abs().sum() / 2) for steps in (1, 8, 64, 512)]
    assert all(a > b for a, b in zip(tv, tv[1:])) and tv[0] > 0.3 and tv[-1] < 1e-3
    for steps, schedule in ((7, LOG_LINEAR), (7, COSINE)):
        assert float(chain.sampler_law(steps, schedule).sum()) == pytest.approx(1.0, abs=1e-12)


def test_random_order_matches_its_exact_law_and_the_test_has_power(chain):
    x = draw(chain, 20000, 8, seed=0)
    assert chi_square_p(x, chain.sampler_law(8), 3) > LEVEL
    assert chi_square_p(x, source(chain), 3) < 1e-9  # 8 steps are visibly off the source (TV 0.05)


def test_cosine_random_order_matches_its_exact_law(chain):
    x = draw(chain, 20000, 6, seed=1, schedule=COSINE)
    assert chi_square_p(x, chain.sampler_law(6, COSINE), 3) > LEVEL


def test_many_steps_reproduce_the_source(chain):
    # 256 steps: TV(p_T, p) = 0.0017, noncentrality N sum (p_T - p)^2 / p = 0.5 at N = 5000 (no power to see it)
    x = draw(chain, 5000, 256, seed=2)
    assert chi_square_p(x, source(chain), 3) > LEVEL


def test_one_step_from_the_marginals_is_rejected(chain):
    x = draw(chain, 20000, 1, seed=3)
    assert chi_square_p(x, source(chain), 3) < 1e-9


def test_confidence_order_one_token_per_step_is_exact(chain):
    calls = []
    x = draw(chain, 20000, chain.length, seed=4, order="confidence", callback=lambda info: calls.append(
        (info["revealed"].sum(1) == 1).all()))
    assert len(calls) == chain.length and all(calls)
    assert chi_square_p(x, source(chain), 3) > LEVEL


def conditional(chain, template):
    """p(x | the given tokens of template) over all sequences."""
    xs = chain.all_sequences()
    given = template != chain.mask_id
    joint = source(chain) * (xs[:, given] == template[given]).all(1)
    return joint / joint.sum()


@pytest.mark.parametrize("order, steps", [("confidence", 2), ("random", 4)])
def test_infill_keeps_the_given_tokens_and_samples_the_conditional(chain, order, steps):
    template = torch.tensor([2, 3, 0, 3])  # 3 = the mask; x_1 and x_3 are independent given x_0, x_2, so both
    # orders are exact whatever the steps
    z = template.repeat(6000, 1)
    x = sample_masked(chain, z, steps, mask_id=3, order=order, generator=torch.Generator().manual_seed(5))
    assert bool((x[:, [0, 2]] == torch.tensor([2, 0])).all()) and bool((x != 3).all())
    assert chi_square_p(x, conditional(chain, template), 3) > LEVEL


def test_prompt_is_a_fixed_prefix():
    chain = MarkovChain.random(5, 7, seed=2)
    z = masked_template(50, 7, chain.mask_id, prompt=[4, 0, 1])
    x = sample_masked(chain, z, 10, mask_id=chain.mask_id, generator=torch.Generator().manual_seed(6))
    assert bool((x[:, :3] == torch.tensor([4, 0, 1])).all()) and bool((x < 5).all())
    with pytest.raises(ValueError, match="the prompt has 3 tokens but the length is 2; give a length of at least 3"):
        masked_template(1, 2, chain.mask_id, prompt=[4, 0, 1])


def test_categorical_boundaries_are_exact_with_injected_uniforms():
    probs = torch.tensor([0.25, 1e-9, 0.0, 0.75 - 1e-9, 0.0], dtype=f64)
    cdf = probs.cumsum(0)
    lo, hi = float(cdf[0]), float(cdf[1])  # category 1 iff u in [lo, hi)
    u = torch.tensor([lo, math.nextafter(hi, 0), hi, math.nextafter(lo, 0), 0.0, 1 - 2.0**-53], dtype=f64)
    assert categorical(probs, uniform=u).tolist() == [1, 1, 3, 0, 0, 3]  # zero-probability classes never drawn
    assert hi - lo == pytest.approx(1e-9, rel=1e-6)
    rows = torch.stack([probs, torch.tensor([0.5, 0.5, 0.0, 0.0, 0.0], dtype=f64)])  # batched, unnormalised
    assert categorical(3 * rows, uniform=torch.tensor([lo, 1 - 2.0**-53])).tolist() == [1, 1]


def test_categorical_draws_probability_1e9_at_the_right_rate():
    rare = 10**6  # one bulk class of probability 1 - 1e-3 and a million classes of probability 1e-9 each
    probs = torch.cat([torch.tensor([1 - rare * 1e-9], dtype=f64), torch.full((rare,), 1e-9, dtype=f64)])
    n = 2 * 10**6
    hits = categorical(probs, uniform=torch.rand(n, generator=torch.Generator().manual_seed(7), dtype=f64))
    count = int((hits > 0).sum())  # Poisson(2000): float32 arithmetic would lose the 1e-9 steps entirely
    assert abs(count - 2000) < 4 * math.sqrt(2000)
    assert torch.unique(hits[hits > 0]).numel() > 0.99 * count  # spread over the rare classes, not a few
    float32 = probs.float().cumsum(0)
    assert int(torch.unique(float32[1:]).numel()) < rare // 10  # the failure this guards against


class Counting:
    """The exact denoiser, counting its calls."""

    def __init__(self, chain, time_agnostic=True):
        self.chain, self.calls, self.time_agnostic = chain, 0, time_agnostic

    def __call__(self, z, t):
        self.calls += 1
        return self.chain(z, t)


@pytest.mark.parametrize("order", ["random", "confidence"])
def test_a_time_agnostic_model_is_called_once_per_step_that_changed_z(chain, order):
    changed = []
    model = Counting(chain)
    kwargs = dict(mask_id=3, order=order)
    z = masked_template(4, 4, 3, prompt=[1])
    x = sample_masked(model, z, 50, generator=torch.Generator().manual_seed(8),
                      callback=lambda info: changed.append(bool(info["revealed"].any())), **kwargs)
    assert model.calls == sum(changed) and 1 < model.calls <= 3 * 4 < 50
    every = Counting(chain, time_agnostic=False)
    y = sample_masked(every, z, 50, generator=torch.Generator().manual_seed(8), **kwargs)
    assert torch.equal(x, y) and every.calls == len(changed)  # same draws; one call per step taken
    snapshots = []
    sample_masked(chain, z, 50, generator=torch.Generator().manual_seed(8),
                  callback=lambda info: snapshots.append(info["z"]), **kwargs)
    masks = [int((s == 3).sum()) for s in snapshots]  # snapshots, not one tensor changed in place
    assert masks[-1] == 0 and masks[0] > 0 and masks == sorted(masks, reverse=True)
    done = Counting(chain)
    assert torch.equal(sample_masked(done, x, 5, mask_id=3), x) and done.calls == 0


def test_per_sample_generators_make_rows_independent_of_the_batch(chain):
    z = masked_template(3, 4, 3)
    gens = [torch.Generator().manual_seed(100 + i) for i in range(3)]
    batch = sample_masked(chain, z, 16, mask_id=3, generator=gens)
    alone = sample_masked(chain, z[2:], 16, mask_id=3, generator=[torch.Generator().manual_seed(102)])
    assert torch.equal(batch[2:], alone)


@pytest.mark.parametrize("steps, options, message", [
    (0, {}, "steps must be a whole number >= 1"),
    (2.5, {}, "steps must be a whole number >= 1"),
    (4, {"order": "greedy"}, "unknown order 'greedy'; choose one of random, confidence"),
    (4, {"generator": [torch.Generator()]}, "got 1 generators for a batch of 2"),
])
def test_bad_input_is_a_one_line_error(chain, steps, options, message):
    with pytest.raises(ValueError, match=message):
        sample_masked(chain, masked_template(2, 4, 3), steps, mask_id=3, **options)
    with pytest.raises(ValueError, match="z must be integer tokens"):
        sample_masked(chain, torch.zeros(2, 4), 4, mask_id=3)
    with pytest.raises(ValueError, match="the model returned"):
        sample_masked(lambda z, t: torch.zeros(2, 4, 2), torch.tensor([[2, 3, 3, 3]] * 2), 4, mask_id=3)
