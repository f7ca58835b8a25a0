"""The book's two-tower recommender, with the same ``fit``/``score`` face as the baselines.

:class:`TwoTowerRecommender` builds features from the training interactions, trains with the one loop of
:mod:`tt_helpers.training` and scores the full catalogue, so the evaluation code cannot tell it from EASE.
:func:`tt_helpers.experiments.fit_on_split` chooses its number of epochs on a validation split carved from
training, exactly as EASE's regularisation is tuned.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch

from .datasets.movielens import MOVIELENS_ITEM_FEATURES, MOVIELENS_USER_FEATURES
from .evaluation import evaluate
from .features import FeatureSpec, FeatureTable, History, align_to_catalog, encode_table
from .splits import Interactions, Split
from .towers import TowerConfig, TwoTowerModel
from .training import TrainConfig, TrainingData, train_epochs, training_data


class TwoTowerRecommender:
    """Builds features from the training interactions, trains, and scores the full catalogue.

    ``users``/``items``: side tables keyed by ``user_id``/``item_id`` (``None`` for id-only models).
    """

    def __init__(
        self,
        tower: TowerConfig = TowerConfig(),
        training: TrainConfig = TrainConfig(),
        users: pd.DataFrame | None = None,
        items: pd.DataFrame | None = None,
        user_specs: tuple[FeatureSpec, ...] = MOVIELENS_USER_FEATURES,
        item_specs: tuple[FeatureSpec, ...] = MOVIELENS_ITEM_FEATURES,
        extras: dict | None = None,
    ):
        self.tower, self.training = tower, training
        self.users, self.items = users, items
        self.user_specs = tuple(s for s in user_specs if s.name in tower.user_features)
        self.item_specs = tuple(s for s in item_specs if s.name in tower.item_features)
        self.extras = extras or {}
        self.model: TwoTowerModel | None = None
        self.history_: pd.DataFrame | None = None
        self._item_cache: torch.Tensor | None = None

    def _tables(self, train: Interactions) -> tuple[FeatureTable, FeatureTable]:
        cat = train.catalog
        seen_users = np.bincount(train.frame["user_idx"], minlength=cat.n_users) > 0
        seen_items = train.item_counts(positives_only=False) > 0
        user_frame = align_to_catalog(self.users, "user_id", cat.user_ids)
        item_frame = align_to_catalog(self.items, "item_id", cat.item_ids)
        return encode_table(user_frame, self.user_specs, seen_users), encode_table(
            item_frame, self.item_specs, seen_items
        )

    def build(self, train: Interactions) -> tuple[TwoTowerModel, TrainingData]:
        """A freshly initialised model (seeded by ``training.seed``) and its training data."""
        torch.manual_seed(self.training.seed)
        user_table, item_table = self._tables(train)
        history = History(train.frame, train.n_users, self.tower.history_length) if self.tower.use_history else None
        sparse = self.training.embedding_optimizer == "sparse_adam"
        model = TwoTowerModel(user_table, item_table, self.tower, history, sparse_embeddings=sparse)
        data = training_data(train, history, self.training.positives)
        data.extras.update(self.extras)
        return model, data

    def fit(
        self,
        train: Interactions,
        validation: Split | None = None,
        epochs: int | None = None,
        after_epoch: Callable[[int], None] | None = None,
    ) -> TwoTowerRecommender:
        """Train on ``train``. With ``validation`` (a split whose train part is ``train``), stop early on its
        test part and keep the best epoch; otherwise train ``epochs`` (default ``max_epochs``) epochs.

        ``after_epoch(epoch)``: called after every epoch, to measure this recommender mid-run (e.g. its
        scores after 1, 3 and 10 epochs in one 10-epoch run, the models 1-, 3- and 10-epoch fits end with;
        see :func:`tt_helpers.training.train_epochs`). It must not change the model."""
        self.model, data = self.build(train)
        self._train(data, validation, epochs, evaluate_start=False, after_epoch=after_epoch)
        return self

    def continue_training(
        self, train: Interactions, training: TrainConfig, validation: Split | None = None, epochs: int | None = None
    ) -> TwoTowerRecommender:
        """Go on training the fitted model on ``train`` with another ``training`` config (a second phase of a
        staged schedule: e.g. other negatives). With ``validation``, the weights before this phase are
        epoch 0 of the new history: the phase keeps its best epoch, or none (``best_epoch == 0``)."""
        if self.model is None:
            raise RuntimeError("continue_training needs a fitted model: call .fit first")
        if (training.embedding_optimizer == "sparse_adam") != self.model.sparse_embeddings:
            raise ValueError("the second phase must use the same embedding_optimizer as the first")
        self.training = training
        data = training_data(train, self.model.history, training.positives)
        data.extras.update(self.extras)
        self._train(data, validation, epochs, evaluate_start=True)
        return self

    def _train(self, data: TrainingData, validation: Split | None, epochs: int | None, evaluate_start: bool,
               after_epoch: Callable[[int], None] | None = None) -> None:
        self._item_cache = None
        measure = None
        if after_epoch is not None:

            def measure(epoch: int) -> None:
                self._item_cache = None  # the item tower changed during the epoch
                after_epoch(epoch)
        evaluate_epoch = None
        if validation is not None:
            metric = self.training.early_stopping_metric
            ks = (10, int(metric.split("@")[1])) if "@" in metric else (10,)

            def evaluate_epoch() -> dict[str, float]:
                self._item_cache = None  # the item tower changed during the epoch
                scores = evaluate(self, validation, ks=ks)
                return {f"val_{m}": v for m, v in scores.items() if not m.startswith("Coverage")}

        self.history_, _ = train_epochs(
            self.model,
            data,
            self.training,
            epochs or self.training.max_epochs,
            evaluate_epoch,
            evaluate_start=evaluate_start,
            after_epoch=measure,
        )
        self._item_cache = None

    def serve_history_from(self, train: Interactions) -> TwoTowerRecommender:
        """Read users' histories from ``train`` at serving time, without retraining: for a model trained on a
        part of ``train`` (the early-stopped run on ``split.validation().train``) that is asked to serve
        users whose later interactions it never trained on. A no-op for towers without history."""
        if self.model is None:
            raise RuntimeError("serve_history_from needs a fitted model: call .fit first")
        if self.model.history is not None:
            self.model.history = History(train.frame, train.n_users, self.tower.history_length)
        self._item_cache = None
        return self

    @property
    def best_epoch(self) -> int:
        metric = f"val_{self.training.early_stopping_metric}"
        if self.history_ is None or metric not in self.history_:
            raise RuntimeError("no validation history: fit with a validation split first")
        return int(self.history_[metric].idxmax())

    def score(self, user_idx: torch.Tensor) -> torch.Tensor:
        """``[B]`` user indices -> ``[B, n_items]`` scores; user history = everything seen in training."""
        if self.model is None:
            raise RuntimeError("TwoTowerRecommender is not fitted: call .fit(split.train) first")
        if self._item_cache is None:
            self._item_cache = self.model.embed_items()
        with torch.no_grad():
            users = self.model.user_embeddings(torch.as_tensor(user_idx))
        return self.model.logits(users, self._item_cache)
