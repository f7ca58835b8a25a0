"""Samplers draw from the distribution they claim, and log_q is the log of each candidate's expected count.

All draws use fixed generator seeds, so these tests are deterministic; the chi-square bounds are the 99.9%
quantiles, so a sampler with the wrong distribution fails them by a wide margin at these sample sizes.
"""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from tt_helpers.features import FeatureSpec, encode_table
from tt_helpers.sampling import (
    Batch,
    FullCatalogueSampler,
    HardNegativeSampler,
    InBatchSampler,
    MixedSampler,
    Negatives,
    NegativeSampler,
    PopularitySampler,
    PositiveSet,
    ScheduledSampler,
    UniformSampler,
    WithPerExampleNegatives,
)
from tt_helpers.towers import TowerConfig, TwoTowerModel

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def batch_of(items, users=None):
    items = torch.as_tensor(items, dtype=torch.long)
    users = torch.zeros_like(items) if users is None else torch.as_tensor(users, dtype=torch.long)
    return Batch(users, items, torch.ones(len(items)))


def chi2_critical(df, z=3.090):
    """99.9% quantile of chi-square(df), Wilson-Hilferty approximation (accurate to ~1% for df >= 3)."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def chi2(ids, probabilities):
    """Pearson statistic of the draws ``ids`` against ``probabilities`` (over items with p > 0)."""
    counts = torch.bincount(ids.reshape(-1), minlength=len(probabilities)).double()
    p = torch.as_tensor(probabilities, dtype=torch.float64)
    keep = p > 0
    expected = counts.sum() * p[keep]
    return float(((counts[keep] - expected) ** 2 / expected).sum()), int(keep.sum()) - 1


def test_chi2_helper_rejects_a_wrong_distribution():
    ids = torch.randint(10, (20_000,), generator=gen())
    stat, df = chi2(ids, torch.full((10,), 0.1))
    assert stat < chi2_critical(df)
    skewed = torch.linspace(1, 2, 10)
    stat, df = chi2(ids, skewed / skewed.sum())
    assert stat > 10 * chi2_critical(df)


# --------------------------------------------------------------------------- distributions


def test_uniform_sampler_frequencies():
    sampler = UniformSampler(n_items=12, num_negatives=24_000)
    neg = sampler.sample(batch_of([0, 1, 2]), gen(1))
    assert neg.ids.shape == (24_000,) and neg.log_q.shape == (24_000,) and neg.n_from_batch == 0
    assert neg.ids.min() >= 0 and neg.ids.max() < 12
    stat, df = chi2(neg.ids, sampler.probabilities())
    assert df == 11 and stat < chi2_critical(df)
    assert torch.allclose(sampler.probabilities(), torch.full((12,), 1 / 12))


COUNTS = np.array([0, 1, 4, 9, 16, 0, 30, 2])


@pytest.mark.parametrize("alpha", [0.75, 1.0])
def test_popularity_sampler_matches_counts_to_the_alpha(alpha):
    sampler = PopularitySampler(COUNTS, alpha=alpha, num_negatives=30_000)
    expected = COUNTS.astype(float) ** alpha
    expected /= expected.sum()
    assert np.allclose(sampler.probabilities().numpy(), expected, atol=1e-7)
    neg = sampler.sample(batch_of([1, 2]), gen(2))
    drawn = torch.bincount(neg.ids, minlength=len(COUNTS))
    assert drawn[COUNTS == 0].sum() == 0  # zero-count items are never drawn
    stat, df = chi2(neg.ids, expected)
    assert df == 5 and stat < chi2_critical(df)


def test_popularity_alpha_zero_is_uniform_over_seen_items_and_all_zero_counts_fail():
    sampler = PopularitySampler(COUNTS, alpha=0.0)
    seen = COUNTS > 0
    assert np.allclose(sampler.probabilities().numpy(), seen / seen.sum())
    with pytest.raises(ValueError, match="zero"):
        PopularitySampler(np.zeros(5), alpha=0.75)


def test_popularity_alphas_differ():
    # alpha < 1 flattens the distribution: the most popular item loses share, the rarest gains
    q75 = PopularitySampler(COUNTS, alpha=0.75).probabilities()
    q1 = PopularitySampler(COUNTS, alpha=1.0).probabilities()
    assert q75[6] < q1[6] and q75[1] > q1[1]


P = torch.tensor([0.0, 0.1, 0.05, 0.3, 0.2, 0.05, 0.25, 0.05])  # share of training positives per item


def test_mixed_sampler_batch_positives_first_then_uniform():
    sampler = MixedSampler(P, num_uniform=16_000)
    batch = batch_of([3, 6, 3, 1, 4])
    neg = sampler.sample(batch, gen(3))
    assert neg.n_from_batch == 5
    assert torch.equal(neg.ids[:5], batch.item_idx)
    assert neg.ids.shape == (5 + 16_000,)
    stat, df = chi2(neg.ids[5:], torch.full((8,), 1 / 8))
    assert df == 7 and stat < chi2_critical(df)
    # item 0 has no positive: only the uniform part can draw it
    assert (neg.ids[5:] == 0).any()
    assert torch.allclose(neg.log_q, sampler.log_q_of(neg.ids, 5))
    mix = sampler.probabilities(5)
    assert torch.allclose(mix, (5 * P + 16_000 / 8) / (5 * P + 16_000 / 8).sum())


def test_in_batch_sampler_reuses_the_batch():
    sampler = InBatchSampler(P)
    batch = batch_of([3, 6, 3])
    neg = sampler.sample(batch, gen())
    assert torch.equal(neg.ids, batch.item_idx) and neg.n_from_batch == 3
    assert torch.allclose(neg.log_q, torch.log(3 * P[[3, 6, 3]]))
    assert torch.equal(sampler.probabilities(), P)


# --------------------------------------------------------------------------- log_q = log expected count


def test_log_q_formulas():
    items = torch.arange(8)
    b, m, n = 4, 20, 8
    assert torch.allclose(UniformSampler(n, m).log_q_of(items, b), torch.full((8,), math.log(m / n)))
    q = COUNTS**0.75 / (COUNTS**0.75).sum()
    pop = PopularitySampler(COUNTS, 0.75, m).log_q_of(items, b)
    assert torch.allclose(pop[COUNTS > 0], torch.log(torch.tensor(m * q[COUNTS > 0], dtype=torch.float32)), atol=1e-5)
    assert (pop[COUNTS == 0] < -60).all()  # log(0) clamped to a very negative number, not -inf or nan
    nonzero = P > 0
    assert torch.allclose(InBatchSampler(P).log_q_of(items, b)[nonzero], torch.log(b * P[nonzero]))
    assert torch.allclose(MixedSampler(P, m).log_q_of(items, b), torch.log(b * P + m / n))
    # per-example [B, M] ids keep their shape
    assert InBatchSampler(P).log_q_of(torch.tensor([[1, 2], [3, 4]]), b).shape == (2, 2)


def mean_candidate_counts(draw, n_items, repeats):
    total = torch.zeros(n_items, dtype=torch.float64)
    for _ in range(repeats):
        total += torch.bincount(draw().reshape(-1), minlength=n_items)
    return total / repeats


@pytest.mark.parametrize("kind", ["uniform", "popularity", "in-batch", "mixed"])
def test_log_q_is_the_log_of_the_empirical_expected_count(kind):
    """Simulate training: batches of B examples drawn from the positives, then the sampler's candidates."""
    n, b, m, repeats = 8, 6, 10, 3000
    g = gen(11)
    counts = torch.tensor([0, 2, 1, 6, 4, 1, 5, 1])  # positives per item
    p = counts / counts.sum()
    samplers = {
        "uniform": UniformSampler(n, m),
        "popularity": PopularitySampler(counts.numpy(), 0.75, m),
        "in-batch": InBatchSampler(p),
        "mixed": MixedSampler(p, m),
    }
    sampler = samplers[kind]

    def draw():
        batch = batch_of(torch.multinomial(p, b, replacement=True, generator=g))
        return sampler.sample(batch, g).ids

    empirical = mean_candidate_counts(draw, n, repeats)
    predicted = torch.exp(sampler.log_q_of(torch.arange(n), b)).double()
    assert torch.allclose(empirical, predicted, atol=0.1, rtol=0.05), (empirical, predicted)


# --------------------------------------------------------------------------- hard negatives


def tiny_model(n_users=4, n_items=30, seed=0):
    torch.manual_seed(seed)
    users = encode_table(
        pd.DataFrame({"user_id": range(n_users)}), [FeatureSpec("user_id", "user_id", "id")], np.ones(n_users, bool)
    )
    items = encode_table(
        pd.DataFrame({"item_id": range(n_items)}), [FeatureSpec("item_id", "item_id", "id")], np.ones(n_items, bool)
    )
    return TwoTowerModel(users, items, TowerConfig(embedding_dim=8, temperature=0.5))


def test_hard_negatives_come_from_the_models_top_and_never_are_positives():
    model = tiny_model()
    n_items, top = 30, 5
    pos_users = np.array([0, 0, 0, 1, 2, 2, 3])
    pos_items = np.array([4, 7, 11, 4, 0, 29, 13])
    positives = PositiveSet(pos_users, pos_items, n_items, 4)
    # make the known positives the model's favourites, so that excluding them matters
    with torch.no_grad():
        users_all = model.user_embeddings(torch.arange(4))
        table = model.item_tower.embeddings["item_id"].weight
        vocab = model.item_tower.table.columns["item_id"].ids
        for u, i in zip(pos_users, pos_items):
            table[vocab[i]] = users_all[u] * 5
    sampler = HardNegativeSampler(positives, num_negatives=200, top=top)
    batch = batch_of([4, 4, 0, 13, 7], users=[0, 1, 2, 3, 0])
    users = model.user_embeddings(batch.user_idx)
    neg = sampler.sample(batch, gen(5), model, users)
    assert neg.ids.shape == (5, 200) and neg.n_from_batch == 0
    assert torch.equal(neg.log_q, torch.zeros(5, 200))
    with torch.no_grad():
        scores = model.logits(users, model.embed_items())
    for row, u in enumerate(batch.user_idx.tolist()):
        mine = set(pos_items[pos_users == u].tolist())
        allowed = [i for i in torch.argsort(scores[row], descending=True).tolist() if i not in mine]
        drawn = set(neg.ids[row].tolist())
        assert not drawn & mine
        assert drawn == set(allowed[:top])  # uniform over the top: 200 draws reach all five
        assert torch.argmax(scores[row]).item() in mine  # the unmasked top-1 is a positive


def test_hard_negatives_with_a_base_sampler():
    """With a base, the draw is the base's shared candidates plus per-example hard negatives as ``extra``."""
    model = tiny_model()
    p = torch.full((30,), 1 / 30)
    positives = PositiveSet(np.array([0, 1]), np.array([3, 5]), 30, 4)
    sampler = HardNegativeSampler(positives, base=InBatchSampler(p), num_negatives=4, top=10)
    batch = batch_of([3, 5, 8], users=[0, 1, 2])
    neg = sampler.sample(batch, gen(), model, model.user_embeddings(batch.user_idx))
    # the base's in-batch candidates, shared by the batch ([M], not expanded to [B, M])
    assert neg.ids.shape == (3,) and neg.n_from_batch == 3
    assert torch.equal(neg.ids, batch.item_idx)
    assert torch.allclose(neg.log_q, torch.log(3 * p[batch.item_idx]))
    # then the hard negatives, per example, with log_q 0
    assert neg.extra is not None and neg.extra.extra is None
    assert neg.extra.ids.shape == (3, 4) and neg.extra.n_from_batch == 0
    assert torch.equal(neg.extra.log_q, torch.zeros(3, 4))
    assert not positives.contains(batch.user_idx, neg.extra.ids).any()  # hard negatives are never positives
    blocks = neg.blocks()
    assert [b.ids.shape for b in blocks] == [(3,), (3, 4)]
    assert [b.n_from_batch for b in blocks] == [3, 0]
    assert torch.equal(blocks[1].ids, neg.extra.ids) and all(b.extra is None for b in blocks)
    assert torch.allclose(sampler.log_q_of(batch.item_idx, 3), torch.log(3 * p[batch.item_idx]))
    assert torch.equal(HardNegativeSampler(positives).log_q_of(batch.item_idx, 3), torch.zeros(3))
    with pytest.raises(ValueError, match="model"):
        sampler.sample(batch, gen())


def test_full_catalogue_sampler_is_every_item_once_with_log_q_zero():
    sampler = FullCatalogueSampler(9)
    neg = sampler.sample(batch_of([3, 5]), gen())
    assert torch.equal(neg.ids, torch.arange(9)) and neg.n_from_batch == 0 and neg.extra is None
    assert torch.equal(neg.log_q, torch.zeros(9))
    assert torch.equal(sampler.log_q_of(torch.tensor([[1, 2], [3, 8]]), 2), torch.zeros(2, 2))
    assert isinstance(sampler, NegativeSampler)


# --------------------------------------------------------------------------- positive set


def positive_pairs(seed=0, n_users=7, n_items=13, n=40):
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_users, n), rng.integers(0, n_items, n)  # duplicates included on purpose


@pytest.mark.parametrize("dense", [True, False])
def test_positive_set_contains(dense, monkeypatch):
    if not dense:
        monkeypatch.setattr(PositiveSet, "DENSE_LIMIT", 0)
    users, items = positive_pairs()
    ps = PositiveSet(users, items, n_items=13, n_users=7)
    assert (ps.dense is not None) == dense
    truth = set(zip(users.tolist(), items.tolist()))
    query_users = torch.tensor([0, 3, 6, 3, 1])
    shared = torch.arange(13)
    got = ps.contains(query_users, shared)
    assert got.shape == (5, 13)
    assert got.tolist() == [[(u, i) in truth for i in range(13)] for u in query_users.tolist()]
    per_example = torch.randint(13, (5, 9), generator=gen(4))
    got = ps.contains(query_users, per_example)
    assert got.shape == (5, 9)
    assert got.tolist() == [
        [(u, i) in truth for i in row] for u, row in zip(query_users.tolist(), per_example.tolist())
    ]
    assert torch.equal(ps.mask(query_users, 13), ps.contains(query_users, shared))


def test_positive_set_dense_and_sparse_paths_agree(monkeypatch):
    users, items = positive_pairs(seed=1, n_users=20, n_items=50, n=300)
    dense = PositiveSet(users, items, 50, 20)
    monkeypatch.setattr(PositiveSet, "DENSE_LIMIT", 10)
    sparse = PositiveSet(users, items, 50, 20)
    assert dense.dense is not None and sparse.dense is None
    q_users = torch.arange(20).repeat(3)
    q_items = torch.randint(50, (60, 25), generator=gen(2))
    assert torch.equal(dense.contains(q_users, q_items), sparse.contains(q_users, q_items))
    assert torch.equal(dense.mask(q_users, 50), sparse.mask(q_users, 50))
    assert dense.mask(q_users, 50).sum() == 3 * len(set(zip(users.tolist(), items.tolist())))


HIT_OFFSET_PATHS = ["offset table", "dense without the table", "sparse"]


def positive_set_on(path: str, monkeypatch, seed: int) -> PositiveSet:
    """20 users x 50 items, stored the way ``path`` names (the limits lowered to force it)."""
    if path != "offset table":
        monkeypatch.setattr(PositiveSet, "OFFSET_LIMIT", 0)
    if path == "sparse":
        monkeypatch.setattr(PositiveSet, "DENSE_LIMIT", 0)
    users, items = positive_pairs(seed=seed, n_users=20, n_items=50, n=300)
    return PositiveSet(users, items, 50, 20)


@pytest.mark.parametrize("path", HIT_OFFSET_PATHS)
def test_positive_set_hit_offsets_are_minus_inf_exactly_where_contains_is_true(path, monkeypatch):
    ps = positive_set_on(path, monkeypatch, seed=3)
    q_users = torch.arange(20).repeat(3)
    for q_items in (torch.randint(50, (60, 25), generator=gen(5)), torch.arange(50), torch.tensor([4, 0, 9])):
        hit = ps.contains(q_users, q_items)
        offsets = ps.hit_offsets(q_users, q_items)
        assert offsets.dtype == torch.float32 and offsets.shape == hit.shape and hit.any()
        assert torch.isneginf(offsets[hit]).all() and (offsets[~hit] == 0).all()
    unknown = torch.tensor([3, 25])  # a user past the table: no hits, as contains says
    everything = torch.arange(50)
    assert torch.equal(torch.isneginf(ps.hit_offsets(unknown, everything)), ps.contains(unknown, everything))


@pytest.mark.parametrize("path", HIT_OFFSET_PATHS)
def test_positive_set_hit_offsets_with_a_leading_zero_column(path, monkeypatch):
    """``leading_zero=True`` is a zero column, then exactly the offsets without it, on every path."""
    ps = positive_set_on(path, monkeypatch, seed=4)
    q_users = torch.arange(20).repeat(3)
    queries = (torch.randint(50, (60, 25), generator=gen(6)), torch.arange(50), torch.tensor([4, 0, 9]),
               torch.zeros(0, dtype=torch.long))
    for q_items in queries:
        for who in (q_users, torch.tensor([3, 25]).repeat(30)):  # 25: a user past the table
            plain = ps.hit_offsets(who, q_items)
            padded = ps.hit_offsets(who, q_items, leading_zero=True)
            assert padded.shape == (len(who), 1 + plain.shape[1])
            assert torch.equal(padded, torch.cat([torch.zeros(len(who), 1), plain], dim=1))


def test_positive_set_users_without_positives():
    ps = PositiveSet(np.array([0, 2]), np.array([1, 1]), n_items=3)  # n_users inferred: 3
    assert ps.contains(torch.tensor([1, 2]), torch.tensor([0, 1, 2])).tolist() == [[False] * 3, [False, True, False]]


# --------------------------------------------------------------------------- schedules


class Recorder(NegativeSampler):
    def __init__(self, name, log_q=0.0):
        self.name, self.calls, self.value = name, 0, log_q
        self.epochs = []

    def start_epoch(self, epoch):
        self.epochs.append(epoch)

    def sample(self, batch, generator, model=None, users=None):
        self.calls += 1
        return Negatives(torch.tensor([0]), torch.tensor([self.value]))

    def log_q_of(self, item_idx, batch_size):
        return torch.full(item_idx.shape, self.value)


def test_scheduled_sampler_switches_at_the_stated_epochs():
    a, b, c = Recorder("a", 1.0), Recorder("b", 2.0), Recorder("c", 3.0)
    sched = ScheduledSampler([(1, a), (3, b), (6, c)])
    assert sched.current is a
    expected = {1: a, 2: a, 3: b, 4: b, 5: b, 6: c, 7: c, 20: c}
    for epoch, sampler in expected.items():
        sched.start_epoch(epoch)
        assert sched.current is sampler, epoch
        calls = sampler.calls
        assert sched.sample(batch_of([1]), gen()).log_q.item() == sampler.value
        assert sampler.calls == calls + 1
        assert sched.log_q_of(torch.tensor([1, 2]), 2).tolist() == [sampler.value] * 2
    # the hook reaches the stage in use, and only it
    assert (a.epochs, b.epochs, c.epochs) == ([1, 2], [3, 4, 5], [6, 7, 20])


def test_scheduled_sampler_stage_order_and_validation():
    a, b = Recorder("a"), Recorder("b")
    sched = ScheduledSampler([(4, b), (1, a)])  # given out of order
    sched.start_epoch(3)
    assert sched.current is a
    sched.start_epoch(4)
    assert sched.current is b
    with pytest.raises(ValueError, match="epoch 1"):
        ScheduledSampler([(2, a), (4, b)])
    with pytest.raises(ValueError, match="epoch 1"):
        ScheduledSampler([])
    with pytest.raises(ValueError, match="epoch 1"):
        ScheduledSampler([(1, a), (0, b)])  # a stage before epoch 1 would silently be the first one


class PerExample(Recorder):
    def sample(self, batch, generator, model=None, users=None):
        self.calls += 1
        return Negatives(torch.tensor([[0, 1]] * len(batch.item_idx)), torch.full((len(batch.item_idx), 2), self.value))


def test_with_per_example_negatives_forwards_the_hook_and_keeps_both_blocks():
    base, extra = Recorder("base", 1.0), PerExample("extra", 2.0)
    sampler = WithPerExampleNegatives(base, extra)
    sampler.start_epoch(1)
    sampler.start_epoch(2)
    assert base.epochs == [1, 2] and extra.epochs == [1, 2]
    neg = sampler.sample(batch_of([4, 5, 6]), gen())
    assert [b.ids.shape for b in neg.blocks()] == [(1,), (3, 2)]
    assert neg.log_q.tolist() == [1.0] and (neg.extra.log_q == 2.0).all()
    assert (WithPerExampleNegatives(base, extra, "base").sample(batch_of([4, 5, 6]), gen()).extra.log_q == 1.0).all()
