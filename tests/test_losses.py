"""Losses against hand computations and against the textbook in-batch softmax."""

import math

import pytest
import torch
import torch.nn.functional as F

from tt_helpers import losses


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_negative_logits_shared_and_per_example():
    users = torch.randn(3, 4, generator=gen())
    shared = torch.randn(5, 4, generator=gen(1))
    per_example = torch.randn(3, 5, 4, generator=gen(2))
    assert torch.allclose(losses.negative_logits(users, shared, 2.0), 2.0 * users @ shared.T)
    expected = torch.stack([per_example[b] @ users[b] for b in range(3)]) * 0.5
    assert torch.allclose(losses.negative_logits(users, per_example, 0.5), expected, atol=1e-6)


def test_logq_correction_subtracts_log_q():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 5.0]])
    log_q = torch.log(torch.tensor([0.5, 0.1, 1.0]))
    out = losses.logq_correction(logits, log_q)  # [M] broadcasts over the batch
    assert torch.allclose(out, logits - log_q)
    assert out[0, 1] == pytest.approx(2.0 + math.log(10.0), abs=1e-6)  # rare candidates are boosted
    per_example = torch.log(torch.tensor([[0.5, 0.5, 0.5], [1.0, 0.25, 2.0]]))
    assert torch.allclose(losses.logq_correction(logits, per_example), logits - per_example)


def test_remove_accidental_hits_masks_to_minus_inf_only_the_hits():
    logits = torch.arange(6.0).reshape(2, 3)
    hit = torch.tensor([[False, True, False], [True, False, True]])
    out = losses.remove_accidental_hits(logits, hit)
    assert torch.isneginf(out[hit]).all()
    assert torch.equal(out[~hit], logits[~hit])


def test_sampled_softmax_equals_a_hand_computation():
    pos = torch.tensor([2.0, -1.0])
    neg = torch.tensor([[1.0, 0.0, -3.0], [0.5, 0.5, 2.0]])
    by_hand = []
    for p, ns in zip(pos.tolist(), neg.tolist()):
        by_hand.append(-math.log(math.exp(p) / (math.exp(p) + sum(math.exp(n) for n in ns))))
    assert losses.sampled_softmax_loss(pos, neg).item() == pytest.approx(sum(by_hand) / 2, rel=1e-6)


def test_sampled_softmax_equals_cross_entropy_of_column_zero():
    pos = torch.randn(16, generator=gen(3)) * 3
    neg = torch.randn(16, 40, generator=gen(4)) * 3
    expected = F.cross_entropy(torch.cat([pos[:, None], neg], 1), torch.zeros(16, dtype=torch.long))
    assert torch.allclose(losses.sampled_softmax_loss(pos, neg), expected, atol=1e-6)


def test_masked_negatives_contribute_nothing_to_softmax_or_its_gradient():
    pos = torch.tensor([1.0, 0.3, -2.0], requires_grad=True)
    neg = torch.tensor([[0.5, 9.0, -1.0], [4.0, 4.0, 4.0], [0.0, 1.0, 2.0]], requires_grad=True)
    hit = torch.tensor([[False, True, False], [True, True, True], [False, False, False]])
    loss = losses.sampled_softmax_loss(pos, losses.remove_accidental_hits(neg, hit))
    # the same examples with the masked columns simply left out
    rows = [
        losses.sampled_softmax_loss(pos[0:1], neg[0:1, [0, 2]]),
        losses.sampled_softmax_loss(pos[1:2], neg[1:2, :0]),  # every negative masked: loss 0
        losses.sampled_softmax_loss(pos[2:3], neg[2:3]),
    ]
    assert rows[1].item() == 0.0
    assert loss.item() == pytest.approx(sum(r.item() for r in rows) / 3, rel=1e-6)
    loss.backward()
    assert torch.isfinite(pos.grad).all() and torch.isfinite(neg.grad).all()
    assert (neg.grad[hit] == 0).all()


def test_in_batch_negatives_equal_the_standard_in_batch_softmax():
    """Positive in column 0 + all batch positives as negatives with the diagonal masked == CE over B x B."""
    b, d = 6, 5
    users, items = torch.randn(b, d, generator=gen(5)), torch.randn(b, d, generator=gen(6))
    scale = 1 / 0.2
    matrix = users @ items.T * scale  # [B, B]: row = user, column = candidate
    standard = F.cross_entropy(matrix, torch.arange(b))
    pos = (users * items).sum(1) * scale
    neg = losses.negative_logits(users, items, scale)
    neg = losses.remove_accidental_hits(neg, torch.eye(b, dtype=torch.bool))
    assert torch.allclose(losses.sampled_softmax_loss(pos, neg), standard, atol=1e-5)
    # and with a logQ correction applied to every column, it equals CE over the corrected matrix
    log_q = torch.log(torch.tensor([0.1, 0.2, 0.05, 0.3, 0.15, 0.2]) * b)
    corrected = F.cross_entropy(matrix - log_q, torch.arange(b))
    ours = losses.sampled_softmax_loss(
        losses.logq_correction(pos, log_q), losses.remove_accidental_hits(losses.logq_correction(neg, log_q), torch.eye(b, dtype=torch.bool))
    )
    assert torch.allclose(ours, corrected, atol=1e-5)
    assert not torch.allclose(ours, standard, atol=1e-3)


def test_weighted_mean():
    pos = torch.tensor([1.0, 0.0, -1.0])
    neg = torch.tensor([[0.0], [0.0], [0.0]])
    per_example = torch.stack([losses.sampled_softmax_loss(pos[i : i + 1], neg[i : i + 1]) for i in range(3)])
    w = torch.tensor([1.0, 3.0, 0.0])
    expected = (per_example * w).sum() / w.sum()
    assert torch.allclose(losses.sampled_softmax_loss(pos, neg, w), expected)
    assert torch.allclose(losses.sampled_softmax_loss(pos, neg, torch.ones(3)), per_example.mean())
    # scaling all weights changes nothing
    assert torch.allclose(losses.sampled_softmax_loss(pos, neg, 10 * w), expected)
    bce = torch.stack([losses.binary_cross_entropy_loss(pos[i : i + 1], None) for i in range(3)])
    assert torch.allclose(losses.binary_cross_entropy_loss(pos, None, w), (bce * w).sum() / w.sum())


def test_bce_without_negatives():
    pos = torch.tensor([2.0, -1.0, 0.0])
    expected = -torch.log(torch.sigmoid(pos)).mean()
    assert torch.allclose(losses.binary_cross_entropy_loss(pos, None), expected)


def test_bce_with_negatives_and_masked_negatives():
    pos = torch.tensor([2.0, -1.0])
    neg = torch.tensor([[1.0, -0.5, 3.0], [0.0, 2.0, -2.0]])
    by_hand = []
    for p, ns in zip(pos.tolist(), neg.tolist()):
        by_hand.append(-math.log(1 / (1 + math.exp(-p))) - sum(math.log(1 - 1 / (1 + math.exp(-n))) for n in ns))
    assert losses.binary_cross_entropy_loss(pos, neg).item() == pytest.approx(sum(by_hand) / 2, rel=1e-6)

    neg = neg.clone().requires_grad_(True)
    hit = torch.tensor([[False, False, True], [True, True, True]])
    masked = losses.remove_accidental_hits(neg, hit)
    loss = losses.binary_cross_entropy_loss(pos, masked)
    expected = (F.softplus(-pos).sum() + F.softplus(neg[0, :2]).sum()) / 2
    assert torch.allclose(loss, expected)
    loss.backward()
    assert torch.isfinite(neg.grad).all() and (neg.grad[hit] == 0).all()
