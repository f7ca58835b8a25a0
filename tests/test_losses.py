"""Losses against hand computations and against the textbook in-batch softmax."""

import math

import pytest
import torch
import torch.nn.functional as F

from tt_helpers import losses


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def with_positive(pos, neg):
    """``[B]`` positive logits and ``[B, M]`` negative logits -> the pipeline's ``[B, 1 + M]`` layout."""
    return torch.cat([pos[:, None], neg], dim=1)


def no_hit_column(hit):
    """``[B, M]`` hits on the negatives -> ``[B, 1 + M]``, column 0 (the positive) never a hit."""
    return torch.cat([torch.zeros(len(hit), 1, dtype=torch.bool), hit], dim=1)


def test_candidate_logits_shared_and_per_example():
    users = torch.randn(3, 4, generator=gen())
    shared = torch.randn(5, 4, generator=gen(1))
    per_example = torch.randn(3, 5, 4, generator=gen(2))
    scaled = losses.apply_temperature(users, 0.5)  # scaling the query scales every logit
    assert torch.allclose(losses.candidate_logits(scaled, shared), 2.0 * users @ shared.T, atol=1e-6)
    expected = torch.stack([per_example[b] @ users[b] for b in range(3)]) / 2.0
    assert torch.allclose(
        losses.candidate_logits(losses.apply_temperature(users, 2.0), per_example), expected, atol=1e-6
    )
    assert losses.apply_temperature(users, 1.0) is users
    with pytest.raises(ValueError, match="temperature"):
        losses.apply_temperature(users, 0.0)


def test_indexed_candidates_give_the_per_example_logits_and_gradients():
    users = torch.randn(4, 3, generator=gen(3)).requires_grad_()
    table = torch.randn(5, 3, generator=gen(4)).requires_grad_()
    index = torch.tensor([[0, 4, 4], [1, 1, 2], [3, 0, 1], [2, 2, 2]])
    indexed = losses.candidate_logits(users, losses.IndexedCandidates(table, index))
    gathered = losses.candidate_logits(users, table[index])  # the [B, M, d] form of the same candidates
    assert indexed.shape == (4, 3)
    assert torch.allclose(indexed, gathered, atol=1e-6)
    grads = [torch.autograd.grad(x.logsumexp(1).sum(), (users, table)) for x in (indexed, gathered)]
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-6)


def test_retrieval_logits_put_the_positive_in_column_zero_then_the_blocks_in_order():
    users = torch.randn(3, 4, generator=gen(7))
    positives = torch.randn(3, 4, generator=gen(8))
    shared = torch.randn(5, 4, generator=gen(9))
    per_example = torch.randn(3, 2, 4, generator=gen(10))
    logits = losses.retrieval_logits(users, positives, [shared, per_example])
    assert logits.shape == (3, 1 + 5 + 2)
    assert torch.allclose(logits[:, 0], (users * positives).sum(1))
    assert torch.allclose(logits[:, 1:6], users @ shared.T)
    assert torch.allclose(logits[:, 6:], torch.einsum("bd,bmd->bm", users, per_example))
    assert losses.retrieval_logits(users, positives, []).shape == (3, 1)


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
    assert losses.softmax_cross_entropy(with_positive(pos, neg)).item() == pytest.approx(sum(by_hand) / 2, rel=1e-6)


def test_sampled_softmax_equals_cross_entropy_of_column_zero():
    pos = torch.randn(16, generator=gen(3)) * 3
    neg = torch.randn(16, 40, generator=gen(4)) * 3
    expected = F.cross_entropy(torch.cat([pos[:, None], neg], 1), torch.zeros(16, dtype=torch.long))
    assert torch.allclose(losses.softmax_cross_entropy(with_positive(pos, neg)), expected, atol=1e-6)


def test_masked_negatives_contribute_nothing_to_softmax_or_its_gradient():
    pos = torch.tensor([1.0, 0.3, -2.0], requires_grad=True)
    neg = torch.tensor([[0.5, 9.0, -1.0], [4.0, 4.0, 4.0], [0.0, 1.0, 2.0]], requires_grad=True)
    hit = torch.tensor([[False, True, False], [True, True, True], [False, False, False]])
    loss = losses.softmax_cross_entropy(losses.remove_accidental_hits(with_positive(pos, neg), no_hit_column(hit)))
    # the same examples with the masked columns simply left out
    rows = [
        losses.softmax_cross_entropy(with_positive(pos[0:1], neg[0:1, [0, 2]])),
        losses.softmax_cross_entropy(with_positive(pos[1:2], neg[1:2, :0])),  # every negative masked: loss 0
        losses.softmax_cross_entropy(with_positive(pos[2:3], neg[2:3])),
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
    tau = 0.2
    matrix = users @ items.T / tau  # [B, B]: row = user, column = candidate
    standard = F.cross_entropy(matrix, torch.arange(b))
    logits = losses.retrieval_logits(losses.apply_temperature(users, tau), items, [items])
    diagonal = no_hit_column(torch.eye(b, dtype=torch.bool))
    assert torch.allclose(
        losses.softmax_cross_entropy(losses.remove_accidental_hits(logits, diagonal)), standard, atol=1e-5
    )
    assert torch.allclose(losses.retrieval_loss(users, items, [items], tau, is_hit=diagonal), standard, atol=1e-5)
    # and with a logQ correction applied to every column, it equals CE over the corrected matrix
    log_q = torch.log(torch.tensor([0.1, 0.2, 0.05, 0.3, 0.15, 0.2]) * b)
    corrected = F.cross_entropy(matrix - log_q, torch.arange(b))
    full_log_q = torch.cat([log_q[:, None], log_q.expand(b, -1)], dim=1)  # the positive's own, then each candidate's
    ours = losses.softmax_cross_entropy(
        losses.remove_accidental_hits(losses.logq_correction(logits, full_log_q), diagonal)
    )
    assert torch.allclose(ours, corrected, atol=1e-5)
    assert torch.allclose(losses.retrieval_loss(users, items, [items], tau, full_log_q, diagonal), corrected, atol=1e-5)
    assert not torch.allclose(ours, standard, atol=1e-3)


def test_weighted_mean():
    pos = torch.tensor([1.0, 0.0, -1.0])
    neg = torch.tensor([[0.0], [0.0], [0.0]])
    logits = with_positive(pos, neg)
    per_example = torch.stack([losses.softmax_cross_entropy(logits[i : i + 1]) for i in range(3)])
    w = torch.tensor([1.0, 3.0, 0.0])
    expected = (per_example * w).sum() / w.sum()
    assert torch.allclose(losses.softmax_cross_entropy(logits, w), expected)
    assert torch.allclose(losses.softmax_cross_entropy(logits, torch.ones(3)), per_example.mean())
    # scaling all weights changes nothing
    assert torch.allclose(losses.softmax_cross_entropy(logits, 10 * w), expected)
    only_pos = pos[:, None]
    bce = torch.stack([losses.binary_cross_entropy(only_pos[i : i + 1]) for i in range(3)])
    assert torch.allclose(losses.binary_cross_entropy(only_pos, w), (bce * w).sum() / w.sum())


def test_bce_without_negatives():
    pos = torch.tensor([2.0, -1.0, 0.0])
    expected = -torch.log(torch.sigmoid(pos)).mean()
    assert torch.allclose(losses.binary_cross_entropy(pos[:, None]), expected)
    users, items = torch.randn(3, 4, generator=gen(11)), torch.randn(3, 4, generator=gen(12))
    expected = F.softplus(-(users * items).sum(1)).mean()
    assert torch.allclose(losses.retrieval_loss(users, items, loss="bce"), expected)


def test_bce_with_negatives_and_masked_negatives():
    pos = torch.tensor([2.0, -1.0])
    neg = torch.tensor([[1.0, -0.5, 3.0], [0.0, 2.0, -2.0]])
    by_hand = []
    for p, ns in zip(pos.tolist(), neg.tolist()):
        by_hand.append(-math.log(1 / (1 + math.exp(-p))) - sum(math.log(1 - 1 / (1 + math.exp(-n))) for n in ns))
    assert losses.binary_cross_entropy(with_positive(pos, neg)).item() == pytest.approx(sum(by_hand) / 2, rel=1e-6)

    neg = neg.clone().requires_grad_(True)
    hit = torch.tensor([[False, False, True], [True, True, True]])
    masked = losses.remove_accidental_hits(with_positive(pos, neg), no_hit_column(hit))
    loss = losses.binary_cross_entropy(masked)
    expected = (F.softplus(-pos).sum() + F.softplus(neg[0, :2]).sum()) / 2
    assert torch.allclose(loss, expected)
    loss.backward()
    assert torch.isfinite(neg.grad).all() and (neg.grad[hit] == 0).all()
    # in the pipeline the hits arrive as -inf offsets added to the logits: the same loss, finite gradients
    neg = neg.detach().requires_grad_(True)
    via_offsets = losses.binary_cross_entropy(
        with_positive(pos, neg) + losses.logit_offsets(None, no_hit_column(hit), torch.Size((2, 4)))
    )
    assert torch.allclose(via_offsets, expected)
    via_offsets.backward()
    assert torch.isfinite(neg.grad).all() and (neg.grad[hit] == 0).all() and (neg.grad[~hit] != 0).all()


def test_retrieval_loss_refuses_a_softmax_without_candidates_and_unknown_losses():
    users, items = torch.randn(2, 3, generator=gen(13)), torch.randn(2, 3, generator=gen(14))
    with pytest.raises(ValueError, match="bce"):
        losses.retrieval_loss(users, items)  # softmax over the positive alone
    with pytest.raises(ValueError, match="unknown loss"):
        losses.retrieval_loss(users, items, [items], loss="hinge")


# --------------------------------------------------------------------------- the whole pipeline


def pipeline_problem(seed=20, b=3, d=4, m_shared=4, m_each=2):
    g = gen(seed)
    users = torch.randn(b, d, generator=g, dtype=torch.float64)
    positives = torch.randn(b, d, generator=g, dtype=torch.float64)
    shared = torch.randn(m_shared, d, generator=g, dtype=torch.float64)
    per_example = torch.randn(b, m_each, d, generator=g, dtype=torch.float64)
    log_q = torch.randn(b, 1 + m_shared + m_each, generator=g, dtype=torch.float64)
    is_hit = torch.zeros(b, 1 + m_shared + m_each, dtype=torch.bool)
    is_hit[0, 2] = is_hit[1, 5] = is_hit[1, 6] = is_hit[2, 1] = True  # in both blocks; never column 0
    weights = torch.tensor([1.0, 2.5, 0.5], dtype=torch.float64)
    return users, positives, shared, per_example, log_q, is_hit, weights


def hand_corrected_logits(users, positives, shared, per_example, log_q, is_hit, tau):
    """Row by row: ``[(score, masked)]`` with score = <u, v> / tau - log q."""
    rows = []
    for b in range(len(users)):
        u = users[b].tolist()
        vectors = [positives[b]] + list(shared) + list(per_example[b])
        row = []
        for c, v in enumerate(vectors):
            dot = sum(x * y for x, y in zip(u, v.tolist()))
            row.append((dot / tau - log_q[b, c].item(), bool(is_hit[b, c])))
        rows.append(row)
    return rows


def test_pipeline_softmax_equals_a_hand_computation():
    users, positives, shared, per_example, log_q, is_hit, weights = pipeline_problem()
    tau = 0.3
    total = 0.0
    for row, w in zip(
        hand_corrected_logits(users, positives, shared, per_example, log_q, is_hit, tau), weights.tolist()
    ):
        kept = [s for s, masked in row if not masked]
        total += w * (-row[0][0] + math.log(sum(math.exp(s) for s in kept)))
    expected = total / weights.sum().item()
    got = losses.retrieval_loss(users, positives, [shared, per_example], tau, log_q, is_hit, "softmax", weights)
    assert got.item() == pytest.approx(expected, rel=1e-10)
    # each ingredient matters: dropping any one changes the number
    for kwargs in ({"temperature": 1.0}, {"log_q": None}, {"is_hit": None}, {"weights": None}):
        args = {"temperature": tau, "log_q": log_q, "is_hit": is_hit, "weights": weights, **kwargs}
        other = losses.retrieval_loss(users, positives, [shared, per_example], loss="softmax", **args)
        assert other.item() != pytest.approx(expected, rel=1e-4), kwargs


def test_pipeline_bce_equals_a_hand_computation():
    users, positives, shared, per_example, log_q, is_hit, weights = pipeline_problem(seed=21)
    tau = 0.7
    softplus = lambda x: math.log1p(math.exp(x))  # noqa: E731
    total = 0.0
    for row, w in zip(
        hand_corrected_logits(users, positives, shared, per_example, log_q, is_hit, tau), weights.tolist()
    ):
        total += w * (softplus(-row[0][0]) + sum(softplus(s) for s, masked in row[1:] if not masked))
    expected = total / weights.sum().item()
    got = losses.retrieval_loss(users, positives, [shared, per_example], tau, log_q, is_hit, "bce", weights)
    assert got.item() == pytest.approx(expected, rel=1e-10)
    assert (
        losses.retrieval_loss(users, positives, [shared, per_example], tau, log_q, None, "bce", weights).item()
        > expected
    )


@pytest.mark.parametrize("loss", ["softmax", "bce"])
def test_logit_offsets_give_the_same_loss_and_gradient_as_correcting_then_masking(loss):
    users, positives, shared, per_example, log_q, is_hit, weights = pipeline_problem(seed=22)
    tau = 0.25

    def leaves():
        return [t.clone().requires_grad_(True) for t in (users, positives, shared, per_example)]

    a = leaves()
    via_offsets = losses.retrieval_loss(a[0], a[1], a[2:], tau, log_q, is_hit, loss, weights)
    via_offsets.backward()

    b = leaves()
    logits = losses.retrieval_logits(losses.apply_temperature(b[0], tau), b[1], b[2:])
    logits = losses.remove_accidental_hits(losses.logq_correction(logits, log_q), is_hit)
    direct = (losses.softmax_cross_entropy if loss == "softmax" else losses.binary_cross_entropy)(logits, weights)
    direct.backward()

    assert via_offsets.item() == pytest.approx(direct.item(), rel=1e-12)
    for x, y in zip(a, b):
        assert torch.isfinite(x.grad).all()
        assert torch.allclose(x.grad, y.grad, rtol=1e-10, atol=1e-12)
    offsets = losses.logit_offsets(log_q, is_hit, logits.shape)
    assert torch.isneginf(offsets[is_hit]).all() and torch.equal(offsets[~is_hit], -log_q[~is_hit])
    assert losses.logit_offsets(None, None, logits.shape) is None


def test_logq_correction_lowers_a_popular_candidates_logit_and_its_push_down():
    """Two negatives with the same score: a popular one (expected count 4) and a rare one (0.05). The correction
    must lower the popular one's logit, so the gradient pushes its score down less than without correction
    (and the rare one's more). With the sign flipped (``s + log q``) both inequalities fail."""
    user = torch.tensor([[1.0, 0.0]])
    positive = torch.tensor([[0.5, 0.0]])
    candidates = torch.tensor([[0.2, 0.0], [0.2, 0.0]], requires_grad=True)  # popular, rare
    log_q = torch.log(torch.tensor([[1.0, 4.0, 0.05]]))  # the positive, the popular, the rare candidate

    def candidate_grads(log_q):
        candidates.grad = None
        losses.retrieval_loss(user, positive, [candidates], log_q=log_q).backward()
        return candidates.grad[:, 0].clone()  # d loss / d score of each candidate (the user is e_0)

    plain, corrected = candidate_grads(None), candidate_grads(log_q)
    assert plain[0] == pytest.approx(plain[1].item())  # same scores, same push without the correction
    assert (plain > 0).all() and (corrected > 0).all()  # gradient descent lowers both negatives' scores...
    assert corrected[0] < plain[0]  # ...the popular one less with the correction,
    assert corrected[1] > plain[1]  # the rare one more
    logits = losses.logq_correction(losses.retrieval_logits(user, positive, [candidates]), log_q)
    # the popular candidate's corrected logit is lowered, the rare one's raised
    assert logits[0, 1] < 0.2 < logits[0, 2]


# --------------------------------------------------------------------------- consistency of the sampled softmax


def test_corrected_sampled_softmax_gradient_converges_to_the_full_softmax_gradient():
    """One user, ``n`` items with one-hot embeddings (so the user's vector is the scores ``s``). The full
    softmax gradient is ``softmax(s) - e_y``. Draw ``M`` candidates from a skewed proposal ``q`` (the positive
    is among the possible draws, with column 0 corrected too) and average the sampled softmax's gradient over
    many draws: with ``log_q = log(M q)`` the error shrinks towards 0 as ``M`` grows (consistency; at finite M it
    is biased), while without the correction it converges to ``softmax(s + log q) - e_y`` and stays far off."""
    n, y = 20, 3
    g = gen(30)
    s = torch.randn(n, generator=g, dtype=torch.float64)
    q = 1.0 / torch.arange(1, n + 1, dtype=torch.float64) ** 1.5  # popular items first...
    q = q / q.sum()
    s = s.sort().values  # ...and the popular items score lowest: the proposal is far from softmax(s)
    eye = torch.eye(n, dtype=torch.float64)

    full_user = s.clone().requires_grad_(True)
    losses.retrieval_loss(full_user[None], eye[[y]], [eye], is_hit=(torch.arange(n + 1) == y + 1)[None]).backward()
    full_grad = full_user.grad.clone()
    assert torch.allclose(full_grad, torch.softmax(s, 0) - eye[y])

    def mean_sampled_grad(m, draws, correct):
        ids = torch.multinomial(q, m * draws, replacement=True, generator=g).reshape(draws, m)
        user = s.clone().requires_grad_(True)
        users = user.expand(draws, n)  # the mean loss over draws: its gradient is the mean gradient
        log_q = torch.log(m * q[torch.cat([torch.full((draws, 1), y), ids], 1)]) if correct else None
        losses.retrieval_loss(users, eye[[y] * draws], [eye[ids]], log_q=log_q).backward()
        return user.grad

    errors, uncorrected = {}, {}
    for m, draws in ((10, 4000), (100, 1000), (1000, 200)):
        errors[m] = (mean_sampled_grad(m, draws, True) - full_grad).abs().sum().item()
        uncorrected[m] = (mean_sampled_grad(m, draws, False) - full_grad).abs().sum().item()
    assert errors[10] > errors[100] > errors[1000]
    assert errors[1000] < 0.05 and errors[1000] < errors[10] / 5
    limit = (torch.softmax(s + torch.log(q), 0) - eye[y] - full_grad).abs().sum().item()
    assert limit > 0.5
    for m in (10, 100, 1000):
        assert uncorrected[m] > 0.5 and uncorrected[m] > 10 * errors[1000]
    assert uncorrected[1000] == pytest.approx(limit, rel=0.1)


def test_hits_given_as_float_offsets_give_the_same_offsets_as_the_bool_mask():
    _, _, _, _, log_q, is_hit, _ = pipeline_problem(seed=23)
    as_offsets = torch.zeros(is_hit.shape).masked_fill_(is_hit, float("-inf"))
    assert is_hit.any() and (~is_hit).any()
    for q in (log_q, None):
        assert torch.equal(
            losses.logit_offsets(q, as_offsets, is_hit.shape), losses.logit_offsets(q, is_hit, is_hit.shape)
        )


@pytest.mark.parametrize("loss", ["softmax", "bce"])
def test_precomputed_offsets_give_the_loss_and_gradient_of_log_q_and_is_hit(loss):
    users, positives, shared, per_example, log_q, is_hit, weights = pipeline_problem(seed=24)

    def run(**kw):
        leaves = [t.clone().requires_grad_(True) for t in (users, positives, shared, per_example)]
        value = losses.retrieval_loss(leaves[0], leaves[1], leaves[2:], 0.5, loss=loss, weights=weights, **kw)
        value.backward()
        return value, [x.grad for x in leaves]

    shape = is_hit.shape
    separate, separate_grads = run(log_q=log_q, is_hit=is_hit)
    combined, combined_grads = run(offsets=losses.logit_offsets(log_q, is_hit, shape))
    assert torch.equal(separate, combined)
    assert all(torch.equal(a, b) for a, b in zip(separate_grads, combined_grads))
    with pytest.raises(ValueError, match="not both"):
        losses.retrieval_loss(users, positives, [shared], 0.5, log_q, None, offsets=torch.zeros(shape))
