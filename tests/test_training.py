"""The training loop: which positives, accidental hits, logQ, determinism, early stopping."""

import math
import re

import numpy as np
import pandas as pd
import pytest
import torch

from tt_helpers import evaluation, losses, splits
from tt_helpers.catalog import Catalog
from tt_helpers.features import FeatureSpec, encode_table
from tt_helpers.frequency import item_probabilities
from tt_helpers.recipe import TwoTowerRecommender
from tt_helpers.sampling import (
    Batch,
    FullCatalogueSampler,
    InBatchSampler,
    Negatives,
    NegativeSampler,
    PositiveSet,
    ScheduledSampler,
    UniformSampler,
)
from tt_helpers.towers import TowerConfig, TwoTowerModel
from tt_helpers.training import (
    TrainConfig,
    TrainingData,
    accidental_hit_offsets,
    accidental_hits,
    batch_loss,
    batches,
    candidate_log_q,
    candidate_offsets,
    distinct_ids,
    make_sampler,
    positive_examples,
    train_epochs,
    training_data,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def synthetic_ratings(n_users=16, n_items=24, per_user=10, seed=0):
    """Two taste groups: users like (5 stars) items of their own parity, rate the others 1-3. Ties in time."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        for k, i in enumerate(rng.choice(n_items, per_user, replace=False)):
            rating = 5.0 if i % 2 == u % 2 else float(rng.integers(1, 4))
            rows.append((100 + u, 1000 + int(i), rating, 50 + k // 2))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])


def synthetic_split(**kwargs):
    ratings = synthetic_ratings(**kwargs)
    return splits.temporal_user_split(ratings, Catalog.from_frames(ratings))


def quiet(**kwargs):
    return TrainConfig(**{"progress": False, "batch_size": 16, "max_epochs": 3, **kwargs})


# --------------------------------------------------------------------------- positives


def test_positive_examples_rules():
    train = synthetic_split().train
    frame = train.frame
    liked = positive_examples(train, "liked")
    assert list(liked.columns) == ["user_idx", "item_idx", "timestamp", "weight"]
    assert len(liked) == int((frame["rating"] >= 4).sum()) > 0
    assert (liked["weight"] == 1.0).all()
    assert set(zip(liked.user_idx, liked.item_idx)) == set(
        zip(*frame[frame.rating >= 4][["user_idx", "item_idx"]].to_numpy().T)
    )
    everything = positive_examples(train, "any")
    assert len(everything) == len(frame) > len(liked)
    assert (everything["weight"] == 1.0).all()
    weighted = positive_examples(train, "weighted")
    assert len(weighted) == len(frame)
    assert np.allclose(weighted["weight"].to_numpy(), frame["rating"].to_numpy() / 5.0)
    assert weighted["weight"].dtype == np.float32
    with pytest.raises(ValueError, match="positive rule"):
        positive_examples(train, "loved")


def test_training_data_counts_only_the_chosen_positives():
    train = synthetic_split().train
    data = training_data(train, None, "liked")
    counts = np.bincount(data.examples.item_idx, minlength=train.n_items)
    assert torch.allclose(data.item_probabilities, torch.tensor(counts / counts.sum(), dtype=torch.float32))
    disliked = train.frame[train.frame.rating < 4].iloc[0]
    user, item = torch.tensor([int(disliked.user_idx)]), torch.tensor([int(disliked.item_idx)])
    assert not data.positives.contains(user, item).item()
    with pytest.raises(ValueError, match="no positive"):
        training_data(splits.temporal_user_split(synthetic_ratings().assign(rating=1.0)).train, None, "liked")


# --------------------------------------------------------------------------- a hand-built batch


POSITIVES = {0: {1, 2}, 1: {1, 3}, 2: {2, 4}, 3: {5}}  # user -> items liked in training
N_ITEMS = 7


def hand_built(temperature=0.5, seed=0):
    torch.manual_seed(seed)
    users = encode_table(
        pd.DataFrame({"user_id": range(4)}), [FeatureSpec("user_id", "user_id", "id")], np.ones(4, bool)
    )
    items = encode_table(
        pd.DataFrame({"item_id": range(N_ITEMS)}), [FeatureSpec("item_id", "item_id", "id")], np.ones(N_ITEMS, bool)
    )
    model = TwoTowerModel(users, items, TowerConfig(embedding_dim=6, temperature=temperature))
    pairs = [(u, i) for u, its in POSITIVES.items() for i in sorted(its)]
    examples = pd.DataFrame(pairs, columns=["user_idx", "item_idx"]).assign(timestamp=0, weight=np.float32(1.0))
    data = TrainingData(
        examples=examples,
        n_items=N_ITEMS,
        item_probabilities=item_probabilities(examples.item_idx.to_numpy(), N_ITEMS),
        positives=PositiveSet(examples.user_idx.to_numpy(), examples.item_idx.to_numpy(), N_ITEMS, 4),
        history=None,
    )
    return model, data


def manual_softmax(model, batch, candidates, log_q_pos=None, log_q_neg=None, remove_hits=True, only_diagonal=False):
    """The loss written out row by row. Left out of row b's denominator: candidates equal to b's positive,
    and (``remove_hits``) the user's other training positives. ``only_diagonal`` (in-batch candidates):
    leave out column b only, keeping duplicates of the positive as negatives (what *not* masking would give)."""
    with torch.no_grad():
        u = model.user_embeddings(batch.user_idx)
        scores = model.logits(u, model.embed_items())  # [B, n_items]
    total, weights = 0.0, 0.0
    for b, (user, item, w) in enumerate(zip(batch.user_idx.tolist(), batch.item_idx.tolist(), batch.weight.tolist())):
        pos = scores[b, item].item() - (log_q_pos[b] if log_q_pos is not None else 0.0)
        terms = [pos]
        for c, cand in enumerate(candidates):
            if (c == b) if only_diagonal else (cand == item or (remove_hits and cand in POSITIVES[user])):
                continue
            terms.append(scores[b, cand].item() - (log_q_neg[b][c] if log_q_neg is not None else 0.0))
        m = max(terms)
        total += w * (m + math.log(sum(math.exp(t - m) for t in terms)) - pos)
        weights += w
    return total / weights


class FixedSampler(NegativeSampler):
    """Always the same shared candidates, with a chosen log_q per item."""

    def __init__(self, ids, log_q_per_item):
        self.ids, self.table = torch.tensor(ids), torch.tensor(log_q_per_item)

    def sample(self, batch, generator, model=None, users=None):
        return Negatives(self.ids, self.table[self.ids])

    def log_q_of(self, item_idx, batch_size):
        return self.table[item_idx]


# Users 0 and 1 share positive item 1 (a duplicate in the batch); item 2 is user 2's positive and also a
# training positive of user 0; item 5 is nobody else's.
BATCH = Batch(torch.tensor([0, 1, 2, 0, 3]), torch.tensor([1, 1, 2, 2, 5]), torch.tensor([1.0, 1.0, 2.0, 1.0, 0.5]))


@pytest.mark.parametrize("remove", [True, False])
def test_in_batch_accidental_hits_are_left_out(remove):
    model, data = hand_built()
    config = quiet(logq_correction=False, remove_accidental_hits=remove)
    sampler = InBatchSampler(data.item_probabilities)
    loss = batch_loss(model, BATCH, sampler, config, data, torch.Generator()).item()
    candidates = BATCH.item_idx.tolist()
    assert loss == pytest.approx(manual_softmax(model, BATCH, candidates, remove_hits=remove), rel=1e-5)
    # this batch really has hits: the other choices give other numbers
    assert loss != pytest.approx(manual_softmax(model, BATCH, candidates, remove_hits=not remove), rel=1e-4)
    assert loss != pytest.approx(manual_softmax(model, BATCH, candidates, only_diagonal=True), rel=1e-4)


def test_accidental_hit_offsets_are_the_accidental_hits_as_minus_inf():
    _, data = hand_built()
    in_batch = InBatchSampler(data.item_probabilities).sample(BATCH, torch.Generator()).blocks()
    shared = FixedSampler([1, 2, 3, 5, 0, 6], [0.0] * 7).sample(BATCH, torch.Generator()).blocks()
    per_example = [Negatives(torch.tensor([[2, 0], [1, 4], [2, 2], [6, 1], [5, 3]]), torch.zeros(5, 2))]
    for blocks in (in_batch, shared, per_example, in_batch + per_example):
        for positives in (data.positives, None):
            is_hit = accidental_hits(BATCH, blocks, positives)
            offsets = accidental_hit_offsets(BATCH, blocks, positives)
            assert offsets.shape == is_hit.shape and offsets.is_floating_point()
            assert torch.equal(torch.isneginf(offsets), is_hit) and (offsets[~is_hit] == 0).all()
    assert accidental_hits(BATCH, in_batch, data.positives)[:, 1:].any()  # the batch has hits to find


def test_candidate_offsets_are_log_q_and_hits_combined_bit_for_bit():
    """The training loop's one-buffer offsets are exactly ``logit_offsets(candidate_log_q, hit offsets)``."""
    _, data = hand_built()
    in_batch_sampler = InBatchSampler(data.item_probabilities)
    in_batch = in_batch_sampler.sample(BATCH, torch.Generator()).blocks()
    fixed = FixedSampler([1, 2, 3, 5, 0, 6], [0.1 * (i + 1) for i in range(7)])
    shared = fixed.sample(BATCH, torch.Generator()).blocks()
    per_example = [Negatives(torch.tensor([[2, 0], [1, 4], [2, 2], [6, 1], [5, 3]]), torch.rand(5, 2))]
    catalogue = FullCatalogueSampler(7)
    full = catalogue.sample(BATCH, torch.Generator()).blocks()
    cases = [(in_batch_sampler, in_batch), (fixed, shared), (in_batch_sampler, in_batch + per_example),
             (in_batch_sampler, in_batch + shared), (catalogue, full)]
    for sampler, blocks in cases:
        for positives in (data.positives, None):
            hits = accidental_hit_offsets(BATCH, blocks, positives)
            for with_log_q in (True, False):
                log_q = candidate_log_q(BATCH, sampler, blocks) if with_log_q else None
                expected = losses.logit_offsets(log_q, hits, hits.shape)
                got = candidate_offsets(BATCH, blocks, sampler if with_log_q else None, positives)
                assert got.shape == hits.shape and torch.equal(got, expected)
    assert torch.isneginf(candidate_offsets(BATCH, in_batch, in_batch_sampler, data.positives)[:, 1:]).any()


def test_in_batch_with_distinct_items_equals_the_b_by_b_softmax():
    model, data = hand_built()
    batch = Batch(torch.tensor([0, 1, 2, 3]), torch.tensor([1, 3, 4, 5]), torch.ones(4))  # distinct items
    config = quiet(logq_correction=False, remove_accidental_hits=False)
    loss = batch_loss(model, batch, InBatchSampler(data.item_probabilities), config, data, torch.Generator())
    with torch.no_grad():
        matrix = model.logits(model.user_embeddings(batch.user_idx), model.item_embeddings(batch.item_idx))
    assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(matrix, torch.arange(4)).item(), rel=1e-5)


def test_sampled_negatives_that_are_positives_of_the_user_are_left_out():
    model, data = hand_built()
    log_q = [-1.0, -2.0, -0.5, -3.0, -1.5, -0.7, -2.5]
    candidates = [1, 2, 3, 5, 0, 6]  # shared by the batch; several are some user's positive
    sampler = FixedSampler(candidates, log_q)
    for logq in (False, True):
        loss = batch_loss(model, BATCH, sampler, quiet(logq_correction=logq), data, torch.Generator())
        lp = [log_q[i] for i in BATCH.item_idx.tolist()] if logq else None
        ln = [[log_q[c] for c in candidates]] * 5 if logq else None
        assert loss.item() == pytest.approx(manual_softmax(model, BATCH, candidates, lp, ln), rel=1e-5)
        assert loss.item() != pytest.approx(
            manual_softmax(model, BATCH, candidates, lp, ln, remove_hits=False), rel=1e-4
        )


def test_logq_correction_changes_the_loss_by_the_expected_amount():
    """Two examples, distinct items a and b, no hits: row 0's loss is log(1 + exp(s01 - s00 + log q_a - log q_b))."""
    model, data = hand_built()
    batch = Batch(torch.tensor([0, 3]), torch.tensor([1, 5]), torch.ones(2))
    sampler = InBatchSampler(data.item_probabilities)
    off = batch_loss(model, batch, sampler, quiet(logq_correction=False), data, torch.Generator()).item()
    on = batch_loss(model, batch, sampler, quiet(logq_correction=True), data, torch.Generator()).item()
    with torch.no_grad():
        s = model.logits(model.user_embeddings(batch.user_idx), model.item_embeddings(batch.item_idx)).double()
    p = data.item_probabilities.double()
    shift = math.log(p[1] / p[5])  # q_a / q_b; log(B) cancels
    assert shift != 0
    expected_off = (math.log1p(math.exp(s[0, 1] - s[0, 0])) + math.log1p(math.exp(s[1, 0] - s[1, 1]))) / 2
    expected_on = (
        math.log1p(math.exp(s[0, 1] - s[0, 0] + shift)) + math.log1p(math.exp(s[1, 0] - s[1, 1] - shift))
    ) / 2
    assert off == pytest.approx(expected_off, rel=1e-5)
    assert on - off == pytest.approx(expected_on - expected_off, rel=1e-4, abs=1e-6)


def test_logq_correction_is_a_no_op_for_uniform_negatives():
    model, data = hand_built()
    sampler = UniformSampler(N_ITEMS, num_negatives=5)
    on = batch_loss(model, BATCH, sampler, quiet(logq_correction=True), data, torch.Generator().manual_seed(1))
    off = batch_loss(model, BATCH, sampler, quiet(logq_correction=False), data, torch.Generator().manual_seed(1))
    assert on.item() == pytest.approx(off.item(), rel=1e-6)


def test_bce_and_positive_only_losses():
    model, data = hand_built()
    # a softmax without negatives is refused: when the config is built, and by the loss itself
    with pytest.raises(ValueError, match="softmax"):
        quiet(loss="softmax", negatives="none")
    with pytest.raises(ValueError, match="softmax"):
        batch_loss(model, BATCH, None, quiet(loss="softmax"), data, torch.Generator())
    assert make_sampler(quiet(loss="bce", negatives="none"), data) is None
    bce = batch_loss(model, BATCH, None, quiet(loss="bce", negatives="none"), data, torch.Generator())
    with torch.no_grad():
        pos = (model.user_embeddings(BATCH.user_idx) * model.item_embeddings(BATCH.item_idx)).sum(1) * model.scale
    expected = (torch.nn.functional.softplus(-pos) * BATCH.weight).sum() / BATCH.weight.sum()
    assert bce.item() == pytest.approx(expected.item(), rel=1e-5)
    # the loop runs without a sampler
    history, _ = train_epochs(model, data, quiet(loss="bce", negatives="none"), epochs=1)
    assert np.isfinite(history["train_loss"]).all()
    with pytest.raises(ValueError, match="negatives"):
        quiet(negatives="nearest")


def test_bce_with_sampled_negatives_equals_a_hand_computation():
    model, data = hand_built()
    candidates = [1, 2, 3, 5, 0, 6]
    sampler = FixedSampler(candidates, [0.0] * N_ITEMS)
    loss = batch_loss(model, BATCH, sampler, quiet(loss="bce", logq_correction=False), data, torch.Generator())
    with torch.no_grad():
        scores = model.logits(model.user_embeddings(BATCH.user_idx), model.embed_items())
    softplus = lambda x: math.log1p(math.exp(x))  # noqa: E731
    total = 0.0
    for b, (user, item, w) in enumerate(zip(BATCH.user_idx.tolist(), BATCH.item_idx.tolist(), BATCH.weight.tolist())):
        kept = [c for c in candidates if c != item and c not in POSITIVES[user]]
        total += w * (softplus(-scores[b, item].item()) + sum(softplus(scores[b, c].item()) for c in kept))
    assert loss.item() == pytest.approx(total / BATCH.weight.sum().item(), rel=1e-5)


def test_full_catalogue_negatives_are_the_full_softmax_with_the_users_positives_masked():
    model, data = hand_built()
    config = quiet(negatives="full")
    sampler = make_sampler(config, data)
    assert isinstance(sampler, FullCatalogueSampler) and sampler.n_items == N_ITEMS
    loss = batch_loss(model, BATCH, sampler, config, data, torch.Generator())
    # by hand: row b's softmax over its positive and every item that is not one of the user's positives
    with torch.no_grad():
        scores = model.logits(model.user_embeddings(BATCH.user_idx), model.embed_items()).double()
    total = 0.0
    for b, (user, item, w) in enumerate(zip(BATCH.user_idx.tolist(), BATCH.item_idx.tolist(), BATCH.weight.tolist())):
        others = [j for j in range(N_ITEMS) if j not in POSITIVES[user]]
        assert item not in others
        denominator = torch.logsumexp(scores[b, [item] + others], 0).item()
        total += w * (denominator - scores[b, item].item())
    expected = total / BATCH.weight.sum().item()
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert loss.item() == pytest.approx(manual_softmax(model, BATCH, list(range(N_ITEMS))), rel=1e-5)
    # log q = 0: the correction changes nothing; without masking, the user's positives are negatives again
    assert batch_loss(
        model, BATCH, sampler, quiet(negatives="full", logq_correction=False), data, torch.Generator()
    ).item() == pytest.approx(loss.item(), rel=1e-6)
    unmasked = batch_loss(
        model, BATCH, sampler, quiet(negatives="full", remove_accidental_hits=False), data, torch.Generator()
    )
    assert unmasked.item() > loss.item() + 1e-3


# --------------------------------------------------------------------------- config validation


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"loss": "hinge"}, "loss"),
        ({"negatives": "nearest"}, "negatives"),
        ({"positives": "loved"}, "positives"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 8.5}, "batch_size"),
        ({"num_negatives": 0}, "num_negatives"),
        ({"num_negatives": -3}, "num_negatives"),
        ({"max_epochs": 0}, "max_epochs"),
        ({"patience": 0}, "patience"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"learning_rate": -0.01}, "learning_rate"),
        ({"dense_learning_rate": 0.0}, "dense_learning_rate"),
        ({"early_stopping_metric": "Recall"}, "early_stopping_metric"),
        ({"early_stopping_metric": "Precision@10"}, "early_stopping_metric"),
        ({"early_stopping_metric": "Recall@0"}, "early_stopping_metric"),
        ({"loss": "bce", "logq_correction": True}, "logq_correction"),
        ({"loss": "softmax", "negatives": "none"}, "negatives='none'"),
        ({"embedding_optimizer": "sgd"}, "embedding_optimizer"),
    ],
)
def test_train_config_refuses_bad_fields_and_names_them(kwargs, field):
    with pytest.raises(ValueError, match=re.escape(field)):
        TrainConfig(**kwargs)


def test_train_config_names_every_problem_and_accepts_the_valid_ones():
    with pytest.raises(ValueError) as error:
        TrainConfig(loss="hinge", batch_size=0, embedding_optimizer="sgd")
    assert all(name in str(error.value) for name in ("loss", "batch_size", "embedding_optimizer"))
    for kwargs in (
        {},
        {"loss": "bce", "negatives": "none"},
        {"loss": "bce", "logq_correction": False},
        {"negatives": "full", "embedding_optimizer": "sparse_adam"},
        {"negatives": lambda data: None},
        {"early_stopping_metric": "MRR"},
        {"early_stopping_metric": "NDCG@10"},
        {"early_stopping_metric": "HitRate@5"},
    ):
        TrainConfig(**kwargs)


# --------------------------------------------------------------------------- the loop


def test_batches_cover_every_example_once_with_leak_free_histories():
    split = synthetic_split()
    rec = TwoTowerRecommender(TowerConfig(embedding_dim=8, use_history=True), quiet())
    model, data = rec.build(split.train)
    seen = []
    for batch in batches(data, 7, torch.Generator().manual_seed(0), with_history=True):
        assert len(batch.user_idx) <= 7
        start, end = batch.history
        for u, i, s, e in zip(batch.user_idx.tolist(), batch.item_idx.tolist(), start.tolist(), end.tolist()):
            t = data.examples[(data.examples.user_idx == u) & (data.examples.item_idx == i)].timestamp.item()
            assert (data.history.timestamps[s:e] < t).all()
            seen.append((u, i))
    assert sorted(seen) == sorted(zip(data.examples.user_idx, data.examples.item_idx))
    # shuffled, reproducibly: the order is a function of the generator's seed
    order = lambda seed: torch.cat([b.item_idx for b in batches(data, 7, torch.Generator().manual_seed(seed), False)])  # noqa: E731
    assert torch.equal(order(0), order(0))
    assert not torch.equal(order(0), order(1))
    assert not torch.equal(order(0), torch.tensor(data.examples.item_idx.to_numpy()))


def test_scheduled_sampler_inside_the_training_loop():
    split = synthetic_split()
    rec = TwoTowerRecommender(TowerConfig(embedding_dim=8), quiet())
    model, data = rec.build(split.train)
    calls = {"first": 0, "second": 0}

    class Counting(UniformSampler):
        def __init__(self, name):
            super().__init__(data.n_items, 4)
            self.name = name

        def sample(self, batch, generator, model=None, users=None):
            calls[self.name] += 1
            return super().sample(batch, generator, model, users)

    config = quiet(negatives=lambda d: ScheduledSampler([(1, Counting("first")), (3, Counting("second"))]))
    history, _ = train_epochs(model, data, config, epochs=4)
    n_batches = -(-len(data.examples) // config.batch_size)
    assert list(history.index) == [1, 2, 3, 4]
    assert calls == {"first": 2 * n_batches, "second": 2 * n_batches}


def fit_items(seed, **tower):
    split = synthetic_split()
    rec = TwoTowerRecommender(
        TowerConfig(**{"embedding_dim": 8, "feature_dim": 4, "hidden_layers": (8,), "use_history": True, **tower}),
        quiet(seed=seed, max_epochs=2, negatives="mixed", num_negatives=8),
    )
    rec.fit(split.train)
    return rec.model.embed_items(), rec.history_


def test_same_seed_same_model_different_seed_different_model():
    a, history_a = fit_items(seed=3)
    b, history_b = fit_items(seed=3)
    c, history_c = fit_items(seed=4)
    assert torch.equal(a, b)
    pd.testing.assert_frame_equal(history_a, history_b)
    assert len(history_a) == 2
    assert not torch.allclose(a, c)
    assert not history_a.equals(history_c)


def test_early_stopping_restores_the_best_epoch_scripted():
    split = synthetic_split()
    rec = TwoTowerRecommender(TowerConfig(embedding_dim=8), quiet(patience=2, learning_rate=0.05))
    model, data = rec.build(split.train)
    script = iter([0.1, 0.3, 0.2, 0.3, 0.9, 0.95])  # epoch 4 ties the best: not an improvement
    snapshots = []

    def evaluate_epoch():
        snapshots.append(model.embed_items())
        return {"val_Recall@100": next(script), "val_other": 0.0}

    history, best_state = train_epochs(model, data, rec.training, epochs=10, evaluate_epoch=evaluate_epoch)
    assert list(history.index) == [1, 2, 3, 4]  # two epochs without improvement after epoch 2
    assert history["val_Recall@100"].tolist() == [0.1, 0.3, 0.2, 0.3]
    assert best_state is not None
    assert torch.equal(model.embed_items(), snapshots[1])  # epoch 2's weights
    assert not torch.equal(snapshots[1], snapshots[3])
    assert not model.training


def test_early_stopping_on_real_validation_recall():
    split = synthetic_split(n_users=24, per_user=12)
    validation = split.validation()
    training = quiet(max_epochs=12, patience=2, learning_rate=0.2, early_stopping_metric="NDCG@5")
    rec = TwoTowerRecommender(TowerConfig(embedding_dim=8, temperature=0.05), training).fit(
        validation.train, validation
    )
    h = rec.history_["val_NDCG@5"]
    best = rec.best_epoch
    assert best == int(h.idxmax())
    # stopped exactly `patience` epochs after the best one (or ran out of epochs)
    assert len(h) == min(best + training.patience, training.max_epochs)
    assert (h.loc[best + 1 :] <= h.loc[best]).all()
    # the restored model is the best epoch's: evaluating it again reproduces the recorded best value
    again = evaluation.evaluate(rec, validation, ks=(5, 10))["NDCG@5"]
    assert again == pytest.approx(h.max(), abs=1e-7)
    assert best < len(h)  # with this seed and learning rate the model peaks early, so a restore was needed


def test_logq_defaults_to_the_loss_and_refuses_bce():
    from tt_helpers.training import TrainConfig, use_logq

    assert use_logq(TrainConfig(loss="softmax")) is True
    assert use_logq(TrainConfig(loss="bce")) is False
    assert use_logq(TrainConfig(loss="softmax", logq_correction=False)) is False
    with pytest.raises(ValueError, match="logq_correction=False"):
        use_logq(TrainConfig(loss="bce", logq_correction=True))


def test_per_example_candidates_are_embedded_once_and_in_place():
    from tt_helpers.sampling import Negatives
    from tt_helpers.training import candidate_embeddings

    model, _ = hand_built()
    ids = torch.tensor([[1, 2, 1], [2, 2, 5]])
    positives = model.item_embeddings(torch.tensor([0, 3]))
    expected = model.item_embeddings(ids.reshape(-1)).reshape(2, 3, -1)
    indexed = candidate_embeddings(model, Negatives(ids, torch.zeros(ids.shape)), positives)
    assert isinstance(indexed, losses.IndexedCandidates)  # 3 distinct items for 3 columns: a table
    assert indexed.table.shape == (3, model.config.embedding_dim) and indexed.index.shape == ids.shape
    assert torch.allclose(indexed.table[indexed.index], expected)


def test_per_example_candidates_with_many_distinct_items_stay_per_example(monkeypatch):
    from tt_helpers import training
    from tt_helpers.sampling import Negatives

    model, _ = hand_built()
    ids = torch.tensor([[1, 2, 1], [2, 2, 5]])
    monkeypatch.setattr(training, "INDEXED_ROWS_PER_COLUMN", 0)  # every table counts as too large
    emb = training.candidate_embeddings(
        model, Negatives(ids, torch.zeros(ids.shape)), model.item_embeddings(torch.tensor([0, 3]))
    )
    assert emb.shape == (2, 3, model.config.embedding_dim)
    assert torch.allclose(emb, model.item_embeddings(ids.reshape(-1)).reshape(2, 3, -1))


# --------------------------------------------------------------------------- the sampler hook


def test_the_loop_calls_start_epoch_before_each_epoch():
    split = synthetic_split()
    rec = TwoTowerRecommender(TowerConfig(embedding_dim=8), quiet())
    model, data = rec.build(split.train)
    events = []

    class Recording(NegativeSampler):
        def __init__(self, d):
            self.inner = UniformSampler(d.n_items, 4)

        def start_epoch(self, epoch):
            events.append(("start", epoch))

        def sample(self, batch, generator, model=None, users=None):
            events.append(("sample", None))
            return self.inner.sample(batch, generator, model, users)

        def log_q_of(self, item_idx, batch_size):
            return self.inner.log_q_of(item_idx, batch_size)

    config = quiet(negatives=Recording)
    train_epochs(model, data, config, epochs=3)
    assert [e for kind, e in events if kind == "start"] == [1, 2, 3]
    n_batches = -(-len(data.examples) // config.batch_size)
    assert events[0] == ("start", 1)  # before the first draw
    starts = [i for i, (kind, _) in enumerate(events) if kind == "start"]
    # one epoch's draws after each
    assert [b - a - 1 for a, b in zip(starts, starts[1:] + [len(events)])] == [n_batches] * 3
    # with early stopping, the hook follows the epochs actually run
    events.clear()
    script = iter([0.5, 0.4, 0.3, 0.2])
    history, _ = train_epochs(
        model,
        data,
        quiet(negatives=Recording, patience=2),
        epochs=10,
        evaluate_epoch=lambda: {"val_Recall@100": next(script)},
    )
    assert [e for kind, e in events if kind == "start"] == list(history.index) == [1, 2, 3]


# --------------------------------------------------------------------------- dense and sparse embedding tables


def test_dense_and_sparse_embedding_paths_both_reduce_the_training_loss():
    split = synthetic_split(n_users=24, per_user=12)
    losses_by_path = {}
    for optimizer in ("adam", "sparse_adam"):
        rec = TwoTowerRecommender(
            TowerConfig(embedding_dim=8), quiet(embedding_optimizer=optimizer, max_epochs=8, learning_rate=0.05)
        )
        rec.fit(split.train)
        assert rec.model.sparse_embeddings is (optimizer == "sparse_adam")
        loss = rec.history_["train_loss"]
        assert loss.iloc[-1] < 0.1 * loss.iloc[0], (optimizer, loss.tolist())
        losses_by_path[optimizer] = loss
    dense, sparse = losses_by_path["adam"], losses_by_path["sparse_adam"]
    # same init and data: the first epochs agree closely
    assert dense.iloc[0] == pytest.approx(sparse.iloc[0], rel=0.05)
    ratio = dense / sparse
    assert ((ratio > 0.5) & (ratio < 2.0)).all(), ratio.tolist()  # the same course, within a factor 2 at every epoch


# --------------------------------------------------------------------------- learning-rate schedule


def test_learning_rate_schedule_warms_up_then_decays_per_epoch():
    from tt_helpers.training import learning_rate_factor

    config = quiet(warmup_steps=4, lr_decay=0.5)
    assert [learning_rate_factor(config, s, 1) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert learning_rate_factor(config, 100, 3) == 0.25  # two decays after the first epoch
    assert learning_rate_factor(quiet(), 0, 7) == 1.0  # the defaults keep the rates constant


def test_the_loop_applies_the_schedule_and_records_it_in_the_history():
    split = synthetic_split()
    config = quiet(max_epochs=3, lr_decay=0.5, learning_rate=0.04)
    rec = TwoTowerRecommender(TowerConfig(embedding_dim=8), config)
    model, data = rec.build(split.train)
    history, _ = train_epochs(model, data, config, epochs=3)
    assert history["learning_rate"].tolist() == pytest.approx([0.04, 0.02, 0.01])
    # the optimiser really ran at the decayed rate: a decayed run ends elsewhere than a constant one
    constant = TwoTowerRecommender(TowerConfig(embedding_dim=8), quiet(max_epochs=3, learning_rate=0.04))
    model_c, data_c = constant.build(split.train)
    train_epochs(model_c, data_c, constant.training, epochs=3)
    assert not torch.allclose(model.embed_items(), model_c.embed_items())


@pytest.mark.parametrize("kwargs, field", [({"lr_decay": 0.0}, "lr_decay"), ({"lr_decay": 1.5}, "lr_decay"),
                                           ({"warmup_steps": -1}, "warmup_steps")])
def test_train_config_refuses_a_bad_schedule(kwargs, field):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**kwargs)


@pytest.mark.parametrize("n_ids", [0, 5, 100, 5000])
def test_distinct_ids_equal_torch_unique_on_both_paths(n_ids):
    ids = torch.randint(0, 300, (n_ids,), generator=torch.Generator().manual_seed(n_ids))
    unique, inverse = distinct_ids(ids, 300)  # 0 and 5 ids: unique's sort; 100, 5000: presence table
    expected_unique, expected_inverse = torch.unique(ids, return_inverse=True)
    assert torch.equal(unique, expected_unique) and torch.equal(inverse, expected_inverse)
    assert torch.equal(unique[inverse], ids)


@pytest.mark.parametrize("schedule", [{}, {"warmup_steps": 3, "lr_decay": 0.7}])
def test_after_epoch_sees_the_models_shorter_runs_end_with(schedule):
    # fit(epochs=5, after_epoch=...) measured after epoch 2 is the model fit(epochs=2) ends with, so one run
    # gives a whole curve (chapter 3's positives-only scores after 1, 3, 10 and 30 epochs)
    split = synthetic_split()
    config = quiet(loss="bce", negatives="none", max_epochs=5, **schedule)
    tower = TowerConfig(embedding_dim=8)
    seen = {}

    def measure(epoch: int) -> None:
        assert not rec.model.training  # measured in eval mode
        seen[epoch] = (rec.score(torch.arange(4)).clone(), rec.model.embed_items().detach().clone())

    rec = TwoTowerRecommender(tower, config)
    rec.fit(split.train, epochs=5, after_epoch=measure)
    assert sorted(seen) == [1, 2, 3, 4, 5]
    for epochs in (2, 5):
        short = TwoTowerRecommender(tower, config).fit(split.train, epochs=epochs)
        scores, items = seen[epochs]
        assert torch.equal(scores, short.score(torch.arange(4)))  # the scores of that epoch, not stale ones
        assert torch.equal(items, short.model.embed_items().detach())
    assert not torch.equal(seen[2][0], seen[5][0])  # the model did move between the two
