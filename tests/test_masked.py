"""Masked diffusion's math against exact truth: schedules, the forward process, SUBS, the exact Markov-chain
denoiser (against brute-force enumeration) and the NELBO (closed form, quadrature, Monte Carlo, entropy)."""

import itertools
import math

import numpy as np
import pytest
import torch

from rediffuse.core import masking as masked
from rediffuse.truth.markov import MarkovChain

f64 = torch.float64
SCHEDULES = [masked.LOG_LINEAR, masked.COSINE]


@pytest.fixture(scope="module")
def chain():
    return MarkovChain.random(4, 6, seed=1)


@pytest.fixture(scope="module")
def factorised():
    return MarkovChain.factorised(torch.tensor([0.1, 0.2, 0.3, 0.4]), 6)


@pytest.mark.parametrize("schedule", SCHEDULES + [masked.MaskSchedule("log-linear", eps=1e-3)])
def test_schedule_endpoints_derivative_and_weight(schedule):
    assert float(schedule.alpha(0.0)) == pytest.approx(1.0, abs=1e-15)
    assert float(schedule.alpha(1.0)) == pytest.approx(schedule.eps, abs=1e-15)
    t = torch.linspace(0.01, 0.99, 50, dtype=f64).requires_grad_(True)
    (grad,) = torch.autograd.grad(schedule.alpha(t).sum(), t)
    t = t.detach()
    assert torch.allclose(schedule.alpha_prime(t), grad, rtol=1e-12, atol=1e-14)
    assert torch.allclose(schedule.weight(t), -grad / (1 - schedule.alpha(t)), rtol=1e-10)
    h = 1e-6  # central differences as a second, autograd-free check of alpha'
    assert torch.allclose((schedule.alpha(t + h) - schedule.alpha(t - h)) / (2 * h), grad, atol=1e-8)
    assert schedule.reveal_probability(0.5, 0.25) == pytest.approx(
        float((schedule.alpha(0.25) - schedule.alpha(0.5)) / (1 - schedule.alpha(0.5))), rel=1e-14)
    assert schedule.reveal_probability(0.3, 0.0) == 1.0


def test_log_linear_weight_is_one_over_t():
    t = torch.tensor([0.1, 0.5, 1.0], dtype=f64)
    for eps in (0.0, 1e-3):
        assert torch.allclose(masked.MaskSchedule("log-linear", eps).weight(t), 1 / t, rtol=1e-14)


@pytest.mark.parametrize("kind, eps", [("linear", 0.0), ("log-linear", 1.0), ("cosine", 1e-3)])
def test_bad_schedules_are_one_line_errors(kind, eps):
    with pytest.raises(ValueError, match="choose one of|eps must be"):
        masked.MaskSchedule(kind, eps)


def test_stratified_times_put_one_point_in_each_bin():
    for seed in range(5):
        t = masked.stratified_times(16, torch.Generator().manual_seed(seed))
        assert t.dtype == f64 and bool(((t >= 0) & (t < 1)).all())
        assert sorted((t * 16).floor().long().tolist()) == list(range(16))
    a, b = (masked.stratified_times(8, torch.Generator().manual_seed(s)) for s in (0, 1))
    assert not torch.equal(a, b)
    with pytest.raises(ValueError, match="batch must be >= 1"):
        masked.stratified_times(0)


def test_mask_draws_at_rate_one_minus_alpha():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 5, (400, 100), generator=g)
    for schedule, t in itertools.product(SCHEDULES, (0.2, 0.7)):
        z = masked.mask(x, t, schedule, 5, g)
        rate, p = float((z == 5).double().mean()), 1 - float(schedule.alpha(t))
        assert abs(rate - p) < 4 * math.sqrt(p * (1 - p) / x.numel())
        assert torch.equal(z[z != 5], x[z != 5])
    t = torch.tensor([0.0, 1.0]).repeat(200)
    z = masked.mask(x, t, masked.LOG_LINEAR, 5, g)
    assert bool((z[0::2] == x[0::2]).all()) and bool((z[1::2] == 5).all())


@pytest.mark.parametrize("width, mask_id", [(6, 5), (5, 5), (6, 0)])
def test_subs_zeroes_the_mask_and_copies_unmasked_tokens(width, mask_id):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 7, width, generator=g, dtype=f64)
    tokens = [v for v in range(width) if v != mask_id]
    z = torch.tensor(tokens)[torch.randint(0, len(tokens), (3, 7), generator=g)]
    z[:, ::2] = mask_id
    lp = masked.subs_log_probs(logits, z, mask_id)
    is_masked = z == mask_id
    keep = [v for v in range(width) if v != mask_id]
    ref = torch.log_softmax(logits[..., keep], -1)
    assert torch.allclose(lp[is_masked][:, keep], ref[is_masked], atol=1e-14)
    if mask_id < width:
        assert bool((lp[..., mask_id] == -math.inf).all())
    onehot = torch.nn.functional.one_hot(z[~is_masked], width).bool()
    assert bool((lp[~is_masked][onehot] == 0).all()) and bool((lp[~is_masked][~onehot] == -math.inf).all())


def test_masked_nelbo_by_hand():
    lp = torch.log(torch.tensor([[[0.5, 0.5], [0.25, 0.75], [1.0, 0.0]]], dtype=f64))
    x, z = torch.tensor([[0, 1, 0]]), torch.tensor([[2, 2, 0]])
    want = (1 / 0.4) * (math.log(2) + math.log(4 / 3)) / 3  # log-linear: w = 1/t
    assert float(masked.masked_nelbo(lp, x, z, torch.tensor([0.4]), masked.LOG_LINEAR, 2)) == pytest.approx(want)
    assert masked.bits_per_token(math.log(2)) == pytest.approx(1.0)
    logits = torch.zeros(2, 3, 3, requires_grad=True)  # t = 0 (nothing masked): loss 0 and a finite gradient
    x, z = torch.zeros(2, 3, dtype=torch.long), torch.tensor([[0, 0, 0], [2, 0, 2]])
    loss = masked.masked_nelbo(masked.subs_log_probs(logits, z, 2), x, z, torch.tensor([0.0, 0.5]),
                               masked.LOG_LINEAR, 2)
    loss.sum().backward()
    loss = loss.detach()
    assert float(loss[0]) == 0 and float(loss[1]) == pytest.approx(2 * 2 * math.log(2) / 3)
    assert bool(torch.isfinite(logits.grad).all())


def brute_force_marginals(chain, z):
    """p(x_l | unmasked z) by summing p(x) over every completion consistent with z."""
    xs = chain.all_sequences()
    px = chain.log_prob(xs).exp()
    out = torch.zeros(z.shape[0], chain.length, chain.vocab, dtype=f64)
    for b in range(z.shape[0]):
        given = z[b] != chain.mask_id
        weight = px * (xs[:, given] == z[b, given]).all(1)
        for pos in range(chain.length):
            out[b, pos] = torch.zeros(chain.vocab, dtype=f64).index_add_(0, xs[:, pos], weight)
    return out / out.sum(-1, keepdim=True)


def test_exact_denoiser_equals_enumeration(chain):
    assert float(chain.log_prob(chain.all_sequences()).exp().sum()) == pytest.approx(1.0, abs=1e-12)
    g = torch.Generator().manual_seed(2)
    x = chain.sample(40, g)
    z = masked.mask(x, torch.rand(40, generator=g, dtype=f64), masked.LOG_LINEAR, chain.mask_id, g)
    z[0], z[1] = chain.mask_id, x[1]  # all masked, none masked
    post = chain(z, 0.5).exp()
    assert torch.allclose(post, brute_force_marginals(chain, z), atol=1e-12)
    given = z != chain.mask_id
    assert bool((post[given].argmax(-1) == z[given]).all()) and bool((post[given].max(-1).values == 1).all())
    assert torch.allclose(post[0], chain.marginals(), atol=1e-12)


def test_samples_log_prob_and_entropy(chain):
    xs = chain.all_sequences()
    logp = chain.log_prob(xs)
    assert chain.entropy() == pytest.approx(float(-(logp.exp() * logp).sum()), rel=1e-12)
    assert torch.allclose(chain.stationary() @ chain.transition, chain.stationary(), atol=1e-12)
    x = chain.sample(20000, torch.Generator().manual_seed(3))
    pair = torch.bincount(x[:, 2] * 4 + x[:, 3], minlength=16).double() / 20000
    want = (chain.marginals()[2, :, None] * chain.transition).reshape(-1)
    assert ((pair - want).abs() / (want * (1 - want) / 20000).sqrt()).max() < 4.5


def test_continuous_nelbo_equals_entropy_and_gauss_legendre(chain, factorised):
    nodes, weights = (torch.as_tensor(a, dtype=f64) for a in np.polynomial.legendre.leggauss(80))
    t = (nodes + 1) / 2
    for source in (chain, factorised):
        closed = source.nelbo()
        assert closed == pytest.approx(source.entropy(), abs=1e-10)  # the bound is tight in continuous time
        for schedule in SCHEDULES:
            quad = float((weights / 2 * schedule.weight(t) * source.masked_loss(schedule.alpha(t))).sum())
            assert quad == pytest.approx(closed, abs=1e-9), schedule.kind


def test_discrete_nelbo_exceeds_entropy_unless_factorised(chain, factorised):
    h = chain.entropy()
    one_step = float(sum(-(m * m.log()).sum() for m in chain.marginals()))  # T = 1: every token from its marginal
    assert chain.nelbo(1) == pytest.approx(one_step, rel=1e-12)
    bounds = [chain.nelbo(steps) for steps in (1, 4, 16, 256, 4096)]
    assert all(a > b for a, b in zip(bounds, bounds[1:])) and bounds[-1] > h
    assert bounds[0] - h > 0.3 and bounds[-1] - h < 1e-3
    for steps in (1, 3, 50):
        assert factorised.nelbo(steps) == pytest.approx(factorised.entropy(), abs=1e-10)
        assert factorised.nelbo(steps, masked.COSINE) == pytest.approx(factorised.entropy(), abs=1e-10)
    with pytest.raises(ValueError, match="alpha\\(1\\) = 0"):
        chain.nelbo(4, masked.MaskSchedule("log-linear", 1e-3))


def mc_nelbo(model, chain, schedule, n, seed):
    """Per-sequence NELBO estimates of `model` over n draws (x, t stratified, z_t)."""
    g = torch.Generator().manual_seed(seed)
    x = chain.sample(n, g)
    t = masked.stratified_times(n, g)
    z = masked.mask(x, t, schedule, chain.mask_id, g)
    return masked.masked_nelbo(model(z), x, z, t, schedule, chain.mask_id) * chain.length


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_monte_carlo_nelbo_is_unbiased(chain, schedule):
    est = mc_nelbo(chain, chain, schedule, 40000, seed=4)
    se = float(est.std()) / math.sqrt(est.numel())
    assert abs(float(est.mean()) - chain.nelbo()) < 4 * se
    marginal = chain.marginals().log()  # a context-blind model: its NELBO is sum_l H(X_l) = chain.nelbo(1)
    blind = mc_nelbo(lambda z: marginal.expand(z.shape[0], -1, -1), chain, schedule, 40000, seed=5)
    assert abs(float(blind.mean()) - chain.nelbo(1)) < 4 * float(blind.std()) / math.sqrt(blind.numel())
    assert float(blind.mean()) - float(est.mean()) > 10 * se


def test_masked_loss_at_fixed_alpha_matches_sampling(chain):
    g = torch.Generator().manual_seed(6)
    x = chain.sample(40000, g)
    z = masked.mask(x, 0.6, masked.LOG_LINEAR, chain.mask_id, g)
    nll = -chain(z).gather(-1, x.unsqueeze(-1)).squeeze(-1)
    per_seq = torch.where(z == chain.mask_id, nll, 0.0).sum(1)
    want = float(chain.masked_loss(masked.LOG_LINEAR.alpha(0.6)))
    assert abs(float(per_seq.mean()) - want) < 4 * float(per_seq.std()) / math.sqrt(per_seq.numel())


def test_bad_chains_are_one_line_errors(chain):
    with pytest.raises(ValueError, match="square transition matrix"):
        MarkovChain(torch.ones(2, 3), 4)
    with pytest.raises(ValueError, match="must be positive"):
        MarkovChain(torch.eye(3), 4)
    with pytest.raises(ValueError, match="initial distribution must be \\[3\\]"):
        MarkovChain(torch.ones(3, 3), 4, initial=torch.ones(2))
    with pytest.raises(ValueError, match="expected tokens \\[B, 6\\] in 0..4"):
        chain(torch.full((1, 6), 5))
