"""IS and modified IS against their closed forms and a brute-force double sum."""

from __future__ import annotations

import math

import pytest
import torch

from rediffuse.evaluation.metrics import inception_score, modified_inception_score


def test_certain_balanced_classes_score_the_class_count():
    probs = torch.eye(5).repeat(3, 1)
    assert inception_score(probs) == pytest.approx(5.0)
    # pairs of different classes have KL = inf in theory; the clamp keeps it finite but huge
    assert modified_inception_score(torch.full((4, 3), 1 / 3)) == pytest.approx(1.0)


def test_identical_predictions_score_one():
    probs = torch.tensor([[0.7, 0.2, 0.1]]).repeat(6, 1)
    assert inception_score(probs) == pytest.approx(1.0)
    assert modified_inception_score(probs) == pytest.approx(1.0)


def test_two_point_closed_form_and_brute_force():
    p, q = torch.tensor([0.9, 0.1], dtype=torch.float64), torch.tensor([0.2, 0.8], dtype=torch.float64)
    probs = torch.stack([p, q])
    m = (p + q) / 2
    kl = lambda a, b: float((a * (a / b).log()).sum())  # noqa: E731
    assert inception_score(probs) == pytest.approx(math.exp((kl(p, m) + kl(q, m)) / 2))
    g = torch.Generator().manual_seed(0)
    many = torch.rand(7, 4, generator=g, dtype=torch.float64).softmax(dim=1)
    brute = sum(kl(many[i], many[j]) for i in range(7) for j in range(7)) / 49
    assert modified_inception_score(many) == pytest.approx(math.exp(brute))
    assert modified_inception_score(probs) == pytest.approx(math.exp((kl(p, q) + kl(q, p)) / 4))


def test_rows_must_be_probabilities():
    with pytest.raises(ValueError, match="sum to 1"):
        inception_score(torch.tensor([[0.5, 0.6]]))
    with pytest.raises(ValueError, match="N >= 1"):
        modified_inception_score(torch.zeros(0, 3))
