"""Tower shapes, normalisation, history pooling through the shared item embedding, and parameter groups."""

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from tt_helpers.examples import TrainingData
from tt_helpers.features import OOV, FeatureSpec, History, encode_table
from tt_helpers.frequency import item_probabilities
from tt_helpers.sampling import PositiveSet
from tt_helpers.towers import TowerConfig, TwoTowerModel, mlp
from tt_helpers.training import TrainConfig, make_optimizers, train_epochs

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


N_USERS, N_ITEMS = 5, 7

USER_SPECS = (
    FeatureSpec("user_id", "user_id", "id"),
    FeatureSpec("age", "age", "buckets", boundaries=(18, 30)),
    FeatureSpec("gender", "gender", "categorical"),
)
ITEM_SPECS = (
    FeatureSpec("item_id", "item_id", "id"),
    FeatureSpec("genres", "genres", "bag"),
    FeatureSpec("title", "title", "tokens", buckets=30),
)


def tables():
    users = pd.DataFrame(
        {"user_id": [1, 2, 3, 4, 5], "age": [17, 22, 35, None, 40], "gender": ["F", "M", "F", None, "M"]}
    )
    items = pd.DataFrame(
        {
            "item_id": [9, 10, 11, 12, 13, 14, 15],  # sorted by text: "10" < ... < "15" < "9": vocab ids != indices
            "genres": [["A"], ["A", "B"], [], ["C"], ["B"], ["A"], ["C", "A"]],
            "title": ["one", "two words", "three", None, "five", "six", "seven"],
        }
    )
    item_seen = np.array([True, True, True, True, True, False, True])  # item index 5 is cold
    user_table = encode_table(users, USER_SPECS, np.ones(N_USERS, dtype=bool))
    item_table = encode_table(items, ITEM_SPECS, item_seen)
    return user_table, item_table


def history():
    frame = pd.DataFrame(
        {
            "user_idx": [0, 0, 0, 1, 2, 2, 4],
            "item_idx": [0, 3, 6, 1, 2, 0, 4],
            "timestamp": [1, 2, 3, 1, 5, 6, 2],
        }
    )
    return History(frame, N_USERS, max_length=10)


def make_model(seed=0, sparse_embeddings=False, **config):
    torch.manual_seed(seed)
    user_table, item_table = tables()
    cfg = TowerConfig(**{"embedding_dim": 8, "feature_dim": 4, **config})
    return TwoTowerModel(
        user_table, item_table, cfg, history() if cfg.use_history else None, sparse_embeddings=sparse_embeddings
    )


CONFIGS = {
    "id-only": {},
    "features": {"user_features": ("user_id", "age", "gender"), "item_features": ("item_id", "genres", "title")},
    "history": {"user_features": ("user_id",), "use_history": True},
    "history-only": {"user_features": (), "use_history": True, "item_features": ("item_id", "genres")},
    "one-hidden": {"item_features": ("item_id", "genres"), "hidden_layers": (16,)},
    "two-hidden": {"user_features": ("user_id", "age"), "use_history": True, "hidden_layers": (16, 12)},
    "unnormalised": {"normalize": False, "hidden_layers": (6,)},
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_output_shapes_and_norms(name):
    model = make_model(**CONFIGS[name])
    users = model.user_embeddings(torch.tensor([0, 3, 4, 1]))
    items = model.item_embeddings(torch.tensor([6, 5, 0]))
    assert users.shape == (4, 8) and items.shape == (3, 8)
    assert torch.isfinite(users).all() and torch.isfinite(items).all()
    if model.config.normalize:
        # a history-only user tower without hidden layers maps an empty history (user 3) to the zero vector
        rows = [0, 2, 3] if name == "history-only" else [0, 1, 2, 3]
        assert torch.allclose(users[rows].norm(dim=1), torch.ones(len(rows)), atol=1e-6)
        assert torch.allclose(items.norm(dim=1), torch.ones(3), atol=1e-6)
        if name == "history-only":
            assert torch.equal(users[1], torch.zeros(8))
    else:
        assert not torch.allclose(items.norm(dim=1), torch.ones(3), atol=1e-3)
    assert model.logits(users, items).shape == (4, 3)


def test_hidden_layers_build_the_stated_mlp():
    assert isinstance(mlp(8, (), 8), nn.Identity)  # id-only, no hidden layer: matrix factorisation
    one = mlp(12, (), 8)
    assert [type(m) for m in one] == [nn.Linear] and one[0].in_features == 12
    two = mlp(12, (16, 10), 8)
    assert [type(m) for m in two] == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    assert [m.out_features for m in two if isinstance(m, nn.Linear)] == [16, 10, 8]
    model = make_model(**CONFIGS["features"])
    assert model.user_tower.mlp[0].in_features == 8 + 4 + 4  # user_id (embedding_dim) + two side features
    assert model.item_tower.mlp[0].in_features == 8 + 4 + 4


def test_id_only_unnormalised_tower_is_the_embedding_row_of_the_vocabulary_id():
    model = make_model(normalize=False)
    _, item_table = tables()
    vocab = item_table.columns["item_id"].ids
    got = model.item_embeddings(torch.arange(N_ITEMS))
    assert torch.equal(got, model.item_tower.embeddings["item_id"].weight[vocab])
    assert vocab[5] == 0  # the cold item uses the OOV row


def test_history_is_pooled_through_the_item_towers_id_embedding():
    model = make_model(user_features=(), use_history=True, normalize=False)
    _, item_table = tables()
    vocab = item_table.columns["item_id"].ids
    table = model.item_tower.embeddings["item_id"].weight
    # default window = everything the user did in training; user 0 rated items 0, 3, 6
    got = model.user_embeddings(torch.tensor([0, 3]))
    assert torch.allclose(got[0], table[vocab[[0, 3, 6]]].mean(0))
    assert torch.equal(got[1], torch.zeros(8))  # no history: empty bag
    # an explicit window (start, end) restricts the bag
    h = model.history
    start, end = h.before(np.array([0]), np.array([3]))
    got = model.user_embeddings(torch.tensor([0]), (start, end))
    assert torch.allclose(got[0], table[vocab[[0, 3]]].mean(0))


def test_history_needs_item_id_and_a_history():
    with pytest.raises(ValueError, match="item_id"):
        make_model(use_history=True, item_features=("genres",))
    user_table, item_table = tables()
    with pytest.raises(ValueError, match="History"):
        TwoTowerModel(user_table, item_table, TowerConfig(use_history=True), None)
    model = make_model(use_history=True)
    with pytest.raises(ValueError, match="history"):
        model.user_tower(torch.tensor([0]), None)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -0.5}, "temperature"),
        ({"item_features": ()}, "item tower"),
        ({"user_features": ()}, "user tower"),
        ({"item_id_dropout": 1.0}, "item_id_dropout"),
        ({"item_id_dropout": -0.1}, "item_id_dropout"),
    ],
)
def test_tower_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TowerConfig(**kwargs)


def test_tower_config_accepts_history_only_user_tower():
    assert TowerConfig(user_features=(), use_history=True).use_history


@pytest.mark.parametrize("name", ["id-only", "features", "two-hidden"])
def test_embed_items_is_the_whole_catalogue(name):
    model = make_model(**CONFIGS[name])
    model.train()
    all_items = model.embed_items(batch_size=3)  # several batches, the last one partial
    assert all_items.shape == (N_ITEMS, 8)
    assert not all_items.requires_grad
    assert model.training  # mode restored
    with torch.no_grad():
        assert torch.allclose(all_items, model.item_embeddings(torch.arange(N_ITEMS)), atol=1e-6)


@pytest.mark.parametrize("sparse", [True, False], ids=["sparse", "dense"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_parameter_groups_cover_every_parameter_exactly_once(name, sparse):
    model = make_model(sparse_embeddings=sparse, **CONFIGS[name])
    assert model.sparse_embeddings is sparse
    tables_, dense = model.parameter_groups()  # (embedding tables, other parameters), sparse or not
    ids_tables, ids_dense = [id(p) for p in tables_], [id(p) for p in dense]
    assert len(set(ids_tables)) == len(ids_tables) and len(set(ids_dense)) == len(ids_dense)
    assert not set(ids_tables) & set(ids_dense)
    assert set(ids_tables) | set(ids_dense) == {id(p) for p in model.parameters()}
    embeddings = [m for m in model.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag))]
    assert {id(m.weight) for m in embeddings} == set(ids_tables)
    assert all(m.sparse is sparse for m in embeddings)  # sparse gradients only when asked for
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert {id(p) for m in linears for p in m.parameters()} == set(ids_dense)
    if model.config.use_history:
        shared = model.item_tower.embeddings["item_id"].weight
        assert model.user_tower.history_embedding.weight is shared
        assert ids_tables.count(id(shared)) == 1


@pytest.mark.parametrize("sparse", [True, False], ids=["sparse", "dense"])
def test_optimizers_step_through_the_shared_history_embedding(sparse):
    model = make_model(sparse_embeddings=sparse, **CONFIGS["two-hidden"])
    tables_, dense = model.parameter_groups()
    if sparse:
        opts = [torch.optim.SparseAdam(tables_, lr=0.1), torch.optim.Adam(dense, lr=0.1)]  # raises if a param repeats
    else:
        opts = [torch.optim.Adam([{"params": tables_}, {"params": dense}], lr=0.1)]  # raises if a param repeats
    # the training loop builds the same kinds of optimizers from the model's flag
    built = make_optimizers(model, TrainConfig(learning_rate=0.1, dense_learning_rate=0.1))
    assert [type(o) for o in built] == [type(o) for o in opts]
    shared = model.item_tower.embeddings["item_id"].weight
    before = shared.detach().clone()
    users = model.user_embeddings(torch.tensor([0, 2]))  # histories touch items 0, 3, 6 and 2, 0
    loss = model.logits(users, model.item_embeddings(torch.tensor([1]))).sum()
    loss.backward()
    assert all(p.grad is None or p.grad.is_sparse is sparse for p in tables_)
    assert shared.grad.is_sparse is sparse  # the history pooling follows the flag too
    for opt in opts:
        opt.step()
    _, item_table = tables()
    vocab = item_table.columns["item_id"].ids
    changed = (shared.detach() != before).any(1)
    assert changed[vocab[[0, 2, 3, 6, 1]]].all()  # history items and the scored item
    assert not changed[vocab[4]]  # untouched rows stay put (sparse update; dense Adam's first step on a zero gradient)


def test_sparse_adam_refuses_the_default_dense_tables():
    """The flag is what makes SparseAdam usable: on the default dense tables it fails at the first step."""
    model = make_model(**CONFIGS["id-only"])
    tables_, _ = model.parameter_groups()
    opt = torch.optim.SparseAdam(tables_, lr=0.1)
    model.logits(model.user_embeddings(torch.tensor([0])), model.item_embeddings(torch.tensor([1]))).sum().backward()
    with pytest.raises(RuntimeError, match="(?i)sparse"):
        opt.step()


def test_logits_scale_by_inverse_temperature_when_normalised():
    model = make_model(temperature=0.25)
    assert model.temperature == 0.25
    assert model.scale == pytest.approx(4.0)
    u = model.user_embeddings(torch.tensor([0, 1]))
    v = model.item_embeddings(torch.tensor([2, 3, 4]))
    assert torch.allclose(model.logits(u, v), (u @ v.T) / 0.25)
    assert model.logits(u, v).abs().max() <= 4.0 + 1e-5  # |cosine| <= 1
    raw = make_model(temperature=0.25, normalize=False)
    assert raw.temperature == 1.0  # raw dot products: the config's temperature is not used
    assert raw.scale == 1.0
    u, v = raw.user_embeddings(torch.tensor([0])), raw.item_embeddings(torch.tensor([1]))
    assert torch.allclose(raw.logits(u, v), u @ v.T)


# --------------------------------------------------------------------------- item id dropout


def test_item_id_dropout_maps_about_p_of_the_ids_to_oov_in_training_only():
    model = make_model(normalize=False, item_id_dropout=0.3)
    _, item_table = tables()
    vocab = item_table.columns["item_id"].ids
    warm = torch.tensor([i for i in range(N_ITEMS) if vocab[i] != OOV])
    rows = warm.repeat(10_000 // len(warm) + 1)[:10_000]
    table = model.item_tower.embeddings["item_id"].weight.detach()
    own = table[vocab[rows]]
    assert not (own == table[OOV]).all(1).any()  # no warm item shares the OOV row

    def oov_share(out):
        is_oov = (out == table[OOV]).all(1)
        assert ((out == own).all(1) | is_oov).all()  # every row is its own id's or the OOV one
        return is_oov.float().mean().item()

    model.train()
    with torch.no_grad():
        share = oov_share(model.item_embeddings(rows))
    assert share == pytest.approx(0.3, abs=0.02)
    model.eval()
    with torch.no_grad():
        assert oov_share(model.item_embeddings(rows)) == 0.0
        assert torch.equal(model.item_embeddings(rows), own)
    assert model.user_tower.id_dropout == 0.0  # the user tower keeps its ids


def tiny_training_data():
    """Every (user, warm item) pair of a few users: the cold item 5 (OOV) is never a positive."""
    pairs = [(0, 0), (0, 3), (1, 1), (1, 6), (2, 2), (2, 4), (3, 0), (3, 6), (4, 1), (4, 4), (0, 2), (2, 6)]
    examples = pd.DataFrame(pairs, columns=["user_idx", "item_idx"]).assign(timestamp=0, weight=np.float32(1.0))
    users, items = examples.user_idx.to_numpy(), examples.item_idx.to_numpy()
    return TrainingData(
        examples, N_ITEMS, item_probabilities(items, N_ITEMS), PositiveSet(users, items, N_ITEMS, N_USERS), None
    )


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_item_id_dropout_trains_the_oov_row(dropout):
    model = make_model(item_id_dropout=dropout)
    oov = model.item_tower.embeddings["item_id"].weight[OOV].detach().clone()
    data = tiny_training_data()
    history, _ = train_epochs(model, data, TrainConfig(progress=False, batch_size=4, learning_rate=0.05), epochs=3)
    assert len(history) == 3
    after = model.item_tower.embeddings["item_id"].weight[OOV].detach()
    if dropout:
        assert not torch.allclose(after, oov, atol=1e-4)  # trained through the dropped ids
    else:
        assert torch.equal(after, oov)  # no example reaches the OOV row: it stays at its init
