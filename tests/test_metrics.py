"""Ranking metrics, checked against hand-computed values."""

import math

import numpy as np
import pytest
import torch

from tt_helpers import metrics

# Two users, six items.
#
# user 0: item 0 was seen in training (excluded). Items 2 and 3 tie at 0.8 -> lower index (2) first.
#         ranking: 2 (0.8), 3 (0.8), 5 (0.5), 4 (0.3), 1 (0.1) | then excluded 0
#         relevant {1, 3}: hits at 0-based positions 1 and 4.
# user 1: nothing excluded; items 1 and 2 tie at 0.7 -> 1 first.
#         ranking: 3 (0.9), 1 (0.7), 2 (0.7), 5 (0.4), 0 (0.2), 4 (-0.5)
#         relevant {4}: its only relevant item ranks last (position 5, rank 6).
SCORES = torch.tensor(
    [
        [0.9, 0.1, 0.8, 0.8, 0.3, 0.5],
        [0.2, 0.7, 0.7, 0.9, -0.5, 0.4],
    ]
)
EXCLUDE = torch.tensor(
    [
        [True, False, False, False, False, False],
        [False, False, False, False, False, False],
    ]
)
RELEVANT = torch.tensor(
    [
        [False, True, False, True, False, False],
        [False, False, False, False, True, False],
    ]
)
EXPECTED_RANKING = [[2, 3, 5, 4, 1, 0], [3, 1, 2, 5, 0, 4]]


@pytest.fixture
def ranked():
    return metrics.exclude_and_rank(SCORES, EXCLUDE)


@pytest.fixture
def hits(ranked):
    return metrics.hit_matrix(ranked, RELEVANT)


N_REL = RELEVANT.sum(1)


def test_ranking_excludes_and_breaks_ties_by_lower_index(ranked):
    assert ranked.tolist() == EXPECTED_RANKING


def test_hit_matrix(hits):
    assert hits.dtype == torch.bool
    assert hits.tolist() == [
        [False, True, False, False, True, False],
        [False, False, False, False, False, True],
    ]


def test_recall_hand_computed(hits):
    assert metrics.recall_at_k(hits, N_REL, 1).tolist() == [0.0, 0.0]
    assert metrics.recall_at_k(hits, N_REL, 2).tolist() == [0.5, 0.0]
    assert metrics.recall_at_k(hits, N_REL, 4).tolist() == [0.5, 0.0]
    assert metrics.recall_at_k(hits, N_REL, 5).tolist() == [1.0, 0.0]
    assert metrics.recall_at_k(hits, N_REL, 6).tolist() == [1.0, 1.0]
    # k beyond the catalogue is the whole ranking
    assert metrics.recall_at_k(hits, N_REL, 100).tolist() == [1.0, 1.0]


def test_hit_rate_hand_computed(hits):
    assert metrics.hit_rate_at_k(hits, 1).tolist() == [0.0, 0.0]
    assert metrics.hit_rate_at_k(hits, 2).tolist() == [1.0, 0.0]
    assert metrics.hit_rate_at_k(hits, 5).tolist() == [1.0, 0.0]
    assert metrics.hit_rate_at_k(hits, 6).tolist() == [1.0, 1.0]


def test_ndcg_hand_computed(hits):
    # discount at 0-based position r is 1 / log2(r + 2)
    d = [1.0 / math.log2(r + 2) for r in range(6)]

    # user 0 at k=3: one hit at position 1; ideal puts min(2, 3) = 2 hits at positions 0 and 1
    u0_k3 = d[1] / (d[0] + d[1])
    # user 0 at k=5: hits at 1 and 4
    u0_k5 = (d[1] + d[4]) / (d[0] + d[1])
    # user 1 at k=5: no hit in the top 5; at k=6 one hit at position 5, ideal one hit at position 0
    u1_k6 = d[5] / d[0]
    assert u1_k6 == pytest.approx(1.0 / math.log2(7))

    assert metrics.ndcg_at_k(hits, N_REL, 1).tolist() == [0.0, 0.0]
    assert metrics.ndcg_at_k(hits, N_REL, 3).tolist() == pytest.approx([u0_k3, 0.0], abs=1e-6)
    assert metrics.ndcg_at_k(hits, N_REL, 5).tolist() == pytest.approx([u0_k5, 0.0], abs=1e-6)
    assert metrics.ndcg_at_k(hits, N_REL, 6).tolist() == pytest.approx([u0_k5, u1_k6], abs=1e-6)
    # k beyond the catalogue behaves like k = number of items
    assert metrics.ndcg_at_k(hits, N_REL, 50).tolist() == pytest.approx([u0_k5, u1_k6], abs=1e-6)
    # numbers, spelled out: 0.6309 / 1.6309 = 0.3869
    assert u0_k3 == pytest.approx(0.386853, abs=1e-6)


def test_mrr_hand_computed_including_relevant_item_ranked_last(hits):
    # user 0: first hit at rank 2; user 1: only relevant item ranked last of 6
    assert metrics.reciprocal_rank(hits).tolist() == pytest.approx([1 / 2, 1 / 6])


def test_mrr_zero_without_any_hit():
    hits = torch.zeros(2, 4, dtype=torch.bool)
    hits[1, 0] = True
    assert metrics.reciprocal_rank(hits).tolist() == [0.0, 1.0]


def test_coverage_hand_computed(ranked):
    # top-1: {2, 3}; top-2: {2, 3} U {3, 1} = {1, 2, 3}; top-6: everything
    assert metrics.catalogue_coverage(ranked[:, :1], 6) == pytest.approx(2 / 6)
    assert metrics.catalogue_coverage(ranked[:, :2], 6) == pytest.approx(3 / 6)
    assert metrics.catalogue_coverage(ranked, 6) == 1.0


def test_ndcg_is_one_for_a_perfect_ranking():
    # 3 relevant items ranked first, for several k (fewer and more than the number relevant)
    scores = torch.tensor([[0.1, 0.9, 0.2, 0.8, 0.7, 0.0]])
    relevant = torch.tensor([[False, True, False, True, True, False]])
    hits = metrics.hit_matrix(metrics.exclude_and_rank(scores, torch.zeros_like(relevant)), relevant)
    n_rel = relevant.sum(1)
    for k in (1, 2, 3, 4, 6, 20):
        assert metrics.ndcg_at_k(hits, n_rel, k).item() == pytest.approx(1.0)
    assert metrics.reciprocal_rank(hits).item() == 1.0
    # ... and strictly below one once a relevant item is pushed down
    scores[0, 4] = -1.0
    hits = metrics.hit_matrix(metrics.exclude_and_rank(scores, torch.zeros_like(relevant)), relevant)
    assert metrics.ndcg_at_k(hits, n_rel, 3).item() < 0.99


def test_recall_denominator_is_number_relevant_even_when_larger_than_k():
    # 3 relevant items, the top 2 are both relevant: recall@2 = 2/3 (not capped at k), NDCG@2 = 1
    hits = torch.tensor([[True, True, False, True, False]])
    n_rel = torch.tensor([3])
    assert metrics.recall_at_k(hits, n_rel, 2).item() == pytest.approx(2 / 3)
    assert metrics.recall_at_k(hits, n_rel, 4).item() == pytest.approx(1.0)
    assert metrics.ndcg_at_k(hits, n_rel, 2).item() == pytest.approx(1.0)
    # NDCG@4: hits at 0, 1, 3 over ideal hits at 0, 1, 2
    dcg = 1 + 1 / math.log2(3) + 1 / math.log2(5)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert metrics.ndcg_at_k(hits, n_rel, 4).item() == pytest.approx(dcg / idcg, abs=1e-6)


def test_all_ties_rank_by_item_index():
    scores = torch.zeros(3, 7)
    ranked = metrics.exclude_and_rank(scores, torch.zeros(3, 7, dtype=torch.bool))
    assert ranked.tolist() == [list(range(7))] * 3


def test_excluded_items_never_rank_before_allowed_ones_even_at_minus_infinity():
    # allowed items 2 and 3 scored -inf by the model, excluded item 1 also -inf (and 0 very high):
    # excluded items must still come after every allowed item.
    scores = torch.tensor([[5.0, float("-inf"), float("-inf"), float("-inf"), 0.5]])
    exclude = torch.tensor([[True, True, False, False, False]])
    ranked = metrics.exclude_and_rank(scores, exclude)
    assert ranked[0, :3].tolist() == [4, 2, 3]
    assert set(ranked[0, 3:].tolist()) == {0, 1}


def test_ranking_matches_reference_lexicographic_order_on_random_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(20, 30)).astype(np.float32)  # many ties
    scores[rng.random(scores.shape) < 0.1] = -np.inf
    exclude = rng.random(scores.shape) < 0.3
    ranked = metrics.exclude_and_rank(torch.from_numpy(scores), torch.from_numpy(exclude))
    for u in range(scores.shape[0]):
        allowed = [i for i in range(30) if not exclude[u, i]]
        expected = sorted(allowed, key=lambda i: (-scores[u, i], i))
        got = ranked[u].tolist()
        assert got[: len(allowed)] == expected
        assert sorted(got[len(allowed) :]) == [i for i in range(30) if exclude[u, i]]
        assert sorted(got) == list(range(30))  # a permutation


def test_ranking_does_not_modify_inputs():
    scores = SCORES.clone()
    exclude = EXCLUDE.clone()
    metrics.exclude_and_rank(scores, exclude)
    assert torch.equal(scores, SCORES)
    assert torch.equal(exclude, EXCLUDE)


def test_allowed_minus_inf_items_rank_before_every_excluded_item_whatever_its_score():
    inf = float("inf")
    # row 0: the excluded items score highest (+inf, 9); the allowed ones include -inf and a NaN
    # row 1: everything allowed is -inf, the excluded item of lowest index scores -inf too
    scores = torch.tensor(
        [
            [inf, -inf, 9.0, 0.5, -inf, float("nan"), 0.5],
            [-inf, -inf, 3.0, -inf, -inf, 3.0, -inf],
        ]
    )
    exclude = torch.tensor(
        [
            [True, False, True, False, False, False, False],
            [True, False, True, False, True, True, False],
        ]
    )
    ranked = metrics.exclude_and_rank(scores, exclude)
    # allowed first (ties in index order: 3 before 6; the -inf and NaN ones last among the allowed, by index),
    # then the excluded ones, also in index order whatever their scores
    assert ranked[0].tolist() == [3, 6, 1, 4, 5, 0, 2]
    assert ranked[1].tolist() == [1, 3, 6, 0, 2, 4, 5]


def test_ties_keep_index_order_on_long_rows():
    """Long rows (the sort may switch kernels with the size): equal keys stay in index order."""
    g = torch.Generator().manual_seed(0)
    n = 20_000
    scores = torch.randint(0, 3, (2, n), generator=g).float()
    scores[torch.rand(2, n, generator=g) < 0.05] = float("-inf")
    exclude = torch.rand(2, n, generator=g) < 0.2
    ranked = metrics.exclude_and_rank(scores, exclude)
    for u in range(2):
        s, e, r = scores[u], exclude[u], ranked[u]
        allowed = int((~e).sum())
        assert not e[r[:allowed]].any() and e[r[allowed:]].all()
        key = torch.where(e, torch.full_like(s, -2.0), torch.where(torch.isinf(s), torch.full_like(s, -1.0), s))[r]
        assert (key[1:] <= key[:-1]).all()  # best first
        same = key[1:] == key[:-1]
        assert (r[1:][same] > r[:-1][same]).all()  # ties: lower item index first


def test_top_k_ranking_and_first_relevant_rank_equal_the_full_stable_sort_with_many_ties():
    g = torch.Generator().manual_seed(0)
    for trial in range(20):
        scores = torch.randint(0, 6, (40, 57), generator=g).float()  # heavy ties
        scores[torch.rand(scores.shape, generator=g) < 0.05] = float("-inf")
        exclude = torch.rand(scores.shape, generator=g) < 0.3
        relevant = (torch.rand(scores.shape, generator=g) < 0.1) & ~exclude
        relevant[~relevant.any(1), 0] = True
        exclude &= ~relevant
        full = metrics.exclude_and_rank(scores, exclude)
        key = metrics.ranking_key(scores, exclude)
        for k in (1, 5, 20, 57, 80):
            assert torch.equal(metrics.top_k_ranking(key, k), full[:, :k]), (trial, k)
        expected = metrics.hit_matrix(full, relevant).float().argmax(1) + 1
        assert torch.equal(metrics.first_relevant_rank(key, relevant), expected)


def test_top_k_ranking_takes_topk_order_only_where_no_keys_tie_and_sorts_the_rows_that_tie():
    g = torch.Generator().manual_seed(1)
    key = torch.randn(6, 300, generator=g)  # distinct keys: row 0 and 5 stay so
    key[1, 10:40] = key[1].max() + 1.0  # a tie inside the top 20 and at its cut (30 equal best keys)
    key[2, [3, 7]] = key[2].max() + 1.0  # a tie inside the top 20, not at the cut
    twentieth = key[3].topk(20).values[-1]
    key[3, [0, 299]] = twentieth  # two more items equal to the 20th key: a tie at the cut only
    key[4, 5:] = float("-inf")  # fewer allowed items than k: the rest tie at -inf
    for k in (1, 20, 299):
        full = torch.sort(key, dim=1, descending=True, stable=True).indices[:, :k]
        assert torch.equal(metrics.top_k_ranking(key, k), full), k
    # row 3: the full sort keeps the lower indices among the tied 20th keys
    assert 0 in metrics.top_k_ranking(key, 20)[3] and 299 not in metrics.top_k_ranking(key, 20)[3]


def test_first_relevant_rank_from_the_top_hits_equals_the_scan():
    g = torch.Generator().manual_seed(2)
    key = torch.randint(0, 40, (50, 120), generator=g).float()  # ties everywhere
    relevant = torch.rand(key.shape, generator=g) < 0.03
    relevant[~relevant.any(1), -1] = True
    for k in (1, 10, 119):
        hits = metrics.hit_matrix(metrics.top_k_ranking(key, k), relevant)
        assert not hits.any(1).all() or k == 119  # some rows find no hit in the top k: they are scanned
        assert torch.equal(metrics.first_relevant_rank(key, relevant, hits), metrics.first_relevant_rank(key, relevant))
