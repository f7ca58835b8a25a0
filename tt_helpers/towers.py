"""The two towers: each maps its side's features to one vector; they meet only in a dot product.

Keeping the towers separate until the final dot product is what makes retrieval cheap: item vectors do
not depend on the user, so the whole catalogue is embedded once, offline, and a request costs one user-tower
pass plus a (approximate) maximum-inner-product search (Covington et al. 2016; Yi et al. 2019).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .features import OOV, BagColumn, FeatureTable, History


@dataclass(frozen=True)
class TowerConfig:
    """Architecture of both towers.

    ``embedding_dim`` is the size of the id embeddings and of the towers' output; side features get
    ``feature_dim``. ``hidden_layers=()`` with id features only is matrix factorisation. With
    ``normalize=True`` outputs are L2-normalised and scores are cosines divided by ``temperature``.
    ``item_id_dropout``: during training, each item's id is replaced by the out-of-vocabulary id with this
    probability, so that the OOV row is trained and the rest of the item tower learns to place an item
    without its id: the fix for cold-start items of DropoutNet (Volkovs, Yu and Poutanen, NeurIPS 2017).
    """

    user_features: tuple[str, ...] = ("user_id",)
    item_features: tuple[str, ...] = ("item_id",)
    use_history: bool = False
    history_length: int = 50
    embedding_dim: int = 64
    feature_dim: int = 16
    hidden_layers: tuple[int, ...] = ()
    normalize: bool = True
    temperature: float = 0.1
    item_id_dropout: float = 0.0  # training only: share of examples whose item id is replaced by OOV

    def __post_init__(self):
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if not 0.0 <= self.item_id_dropout < 1.0:
            raise ValueError(f"item_id_dropout must be in [0, 1), got {self.item_id_dropout}")
        if not self.item_features:
            raise ValueError("the item tower needs at least one feature")
        if not self.user_features and not self.use_history:
            raise ValueError("the user tower needs at least one feature or use_history=True")


def mlp(input_dim: int, hidden: Sequence[int], output_dim: int) -> nn.Module:
    """``Linear -> ReLU`` per hidden layer, then a linear output layer; identity when nothing to do."""
    if not hidden and input_dim == output_dim:
        return nn.Identity()
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(input_dim, width), nn.ReLU()]
        input_dim = width
    layers.append(nn.Linear(input_dim, output_dim))
    return nn.Sequential(*layers)


class Tower(nn.Module):
    """features -> one embedding per feature -> concatenation -> MLP -> (L2-normalised) vector ``[B, d]``."""

    def __init__(
        self,
        table: FeatureTable,
        id_feature: str | None,
        embedding_dim: int,
        feature_dim: int,
        hidden: Sequence[int],
        normalize: bool,
        history_embedding: nn.Embedding | None = None,
        sparse: bool = False,
        id_dropout: float = 0.0,
    ):
        super().__init__()
        self.table = table
        self.normalize = normalize
        self.sparse = sparse
        self.id_feature, self.id_dropout = id_feature, id_dropout
        # the item tower's id table, also registered here (parameters() lists it once)
        self.history_embedding = history_embedding
        self.embeddings = nn.ModuleDict()
        width = 0
        for name, column in table.columns.items():
            dim = embedding_dim if name == id_feature else feature_dim
            if isinstance(column, BagColumn):
                self.embeddings[name] = nn.EmbeddingBag(column.cardinality, dim, mode="mean", sparse=sparse)
            else:
                self.embeddings[name] = nn.Embedding(column.cardinality, dim, sparse=sparse)
            nn.init.normal_(self.embeddings[name].weight, std=0.1)
            width += dim
        if history_embedding is not None:
            width += history_embedding.embedding_dim
        self.mlp = mlp(width, hidden, embedding_dim)

    def forward(self, rows: torch.Tensor, history: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``rows``: ``[B]`` catalogue indices; ``history``: ``(flat ids, offsets)`` of B bags, or None."""
        parts = []
        for name, column in self.table.columns.items():
            if isinstance(column, BagColumn):
                values, offsets = column.lookup(rows)
                parts.append(self.embeddings[name](values, offsets))
            else:
                ids = column.lookup(rows)
                if name == self.id_feature and self.training and self.id_dropout > 0:
                    ids = ids.masked_fill(torch.rand(ids.shape) < self.id_dropout, OOV)
                parts.append(self.embeddings[name](ids))
        if self.history_embedding is not None:
            if history is None:
                raise ValueError("this tower pools the user's history: pass history=(ids, offsets)")
            values, offsets = history
            parts.append(
                F.embedding_bag(values, self.history_embedding.weight, offsets, mode="mean", sparse=self.sparse)
            )
        out = self.mlp(torch.cat(parts, dim=1))
        return F.normalize(out, dim=1) if self.normalize else out


class TwoTowerModel(nn.Module):
    """A user tower and an item tower; ``score = <u, v>`` (``/ temperature`` when normalised).

    With ``use_history``, the user tower mean-pools the ids of the user's past items through the *item
    tower's* id embedding, so what the model learns about an item is shared by both sides.
    """

    def __init__(
        self,
        user_table: FeatureTable,
        item_table: FeatureTable,
        config: TowerConfig,
        history: History | None = None,
        sparse_embeddings: bool = False,
    ):
        super().__init__()
        self.config = config
        self.sparse_embeddings = sparse_embeddings
        self.history = history if config.use_history else None
        if config.use_history and history is None:
            raise ValueError("config.use_history=True needs a History built from the training interactions")
        item_features = item_table.select(config.item_features)
        self.item_tower = Tower(
            item_features, "item_id", config.embedding_dim, config.feature_dim, config.hidden_layers, config.normalize,
            sparse=sparse_embeddings, id_dropout=config.item_id_dropout,
        )
        shared = None
        if config.use_history:
            if "item_id" not in item_features.columns:
                raise ValueError(
                    "history pooling shares the item tower's 'item_id' embedding: add 'item_id' to item_features"
                )
            shared = self.item_tower.embeddings["item_id"]
            self._item_vocab_ids = item_table.columns["item_id"].ids  # catalogue index -> item-id vocabulary id
        self.user_tower = Tower(
            user_table.select(config.user_features), "user_id", config.embedding_dim, config.feature_dim,
            config.hidden_layers, config.normalize, history_embedding=shared, sparse=sparse_embeddings,
        )
        self.n_items = item_table.n_rows
        self.n_users = user_table.n_rows

    @property
    def temperature(self) -> float:
        """The softmax temperature: ``config.temperature`` for normalised towers, else 1 (raw dot products)."""
        return self.config.temperature if self.config.normalize else 1.0

    @property
    def scale(self) -> float:
        """``1 / temperature``: what :meth:`logits` multiplies dot products by."""
        return 1.0 / self.temperature

    def _history_bags(self, window: tuple[torch.Tensor, torch.Tensor] | None, user_idx: torch.Tensor):
        if self.history is None:
            return None
        start, end = window if window is not None else self.history.latest(user_idx.numpy())
        items, offsets = self.history.gather(start, end)
        return self._item_vocab_ids[items], offsets

    def user_embeddings(
        self, user_idx: torch.Tensor, history_window: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """``[B]`` user indices -> ``[B, d]``. ``history_window`` = ``(start, end)`` from :class:`History`;
        None means "everything the user did in training" (serving time)."""
        return self.user_tower(user_idx, self._history_bags(history_window, user_idx))

    def item_embeddings(self, item_idx: torch.Tensor) -> torch.Tensor:
        """``[B]`` item indices -> ``[B, d]``."""
        return self.item_tower(item_idx)

    def logits(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """All pairs: ``[B, d] x [M, d] -> [B, M]`` scaled by ``1 / temperature`` (normalised towers)."""
        return users @ items.T * self.scale

    @torch.no_grad()
    def embed_items(self, batch_size: int = 4096) -> torch.Tensor:
        """The whole catalogue, ``[n_items, d]``: what an ANN index is built from."""
        was_training = self.training
        self.eval()
        out = torch.cat(
            [
                self.item_embeddings(torch.arange(s, min(s + batch_size, self.n_items)))
                for s in range(0, self.n_items, batch_size)
            ]
        )
        self.train(was_training)
        return out

    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(embedding tables, other parameters), each parameter once. With ``sparse_embeddings`` the tables
        get sparse gradients and SparseAdam updates only the rows a batch touched, so a step costs the same
        whatever the catalogue size; on small tables dense Adam is faster."""
        sparse, dense = [], []
        for module in self.modules():
            if isinstance(module, (nn.Embedding, nn.EmbeddingBag)) and not any(module.weight is p for p in sparse):
                sparse.append(module.weight)
        sparse_ids = {id(p) for p in sparse}
        dense = [p for p in self.parameters() if id(p) not in sparse_ids]
        return sparse, dense
