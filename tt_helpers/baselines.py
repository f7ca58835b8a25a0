"""Classical candidate generators with the same face as the two-tower models: ``fit`` then ``score``.

Any two-tower result in the book is printed next to these. EASE in particular is a strong, closed-form
linear item-item model; a neural retriever that does not beat it on the same split has not earned its cost.
"""

from __future__ import annotations

from typing import Literal

import torch

from .splits import Interactions


class NotFittedError(RuntimeError):
    pass


def _require_fitted(model, attribute: str) -> None:
    if getattr(model, attribute, None) is None:
        raise NotFittedError(f"{type(model).__name__} is not fitted: call .fit(split.train) first")


class RandomRecommender:
    """Uniformly random scores: the floor every model must clear. Seeded, so the same users get the same lists."""

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.n_items: int | None = None

    def fit(self, train: Interactions) -> RandomRecommender:
        self.n_items = train.n_items
        return self

    def score(self, user_idx: torch.Tensor) -> torch.Tensor:
        _require_fitted(self, "n_items")
        rows = []
        for u in torch.as_tensor(user_idx).tolist():
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(u))
            rows.append(torch.rand(self.n_items, generator=g))
        return torch.stack(rows)


Source = Literal["liked", "all"]


def _check_source(interactions: str) -> None:
    if interactions not in ("liked", "all"):
        raise ValueError(
            "interactions must be 'liked' (training positives) or 'all' (every training interaction), "
            f"got {interactions!r}"
        )


class PopularRecommender:
    """Scores every item by its number of training positives (``interactions="liked"``) or of all its training
    interactions (``"all"``): the same list for everybody. Give it what the model it is compared with sees."""

    def __init__(self, interactions: Source = "liked"):
        _check_source(interactions)
        self.interactions = interactions
        self.counts: torch.Tensor | None = None

    def fit(self, train: Interactions) -> PopularRecommender:
        counts = train.item_counts(positives_only=self.interactions == "liked")
        self.counts = torch.as_tensor(counts, dtype=torch.float32)
        return self

    def score(self, user_idx: torch.Tensor) -> torch.Tensor:
        _require_fitted(self, "counts")
        return self.counts.expand(len(user_idx), -1).clone()


class EASE:
    """Embarrassingly Shallow Autoencoder (Steck, WWW 2019): an item-item weight matrix in closed form.

    With ``X`` the binary user x item matrix of training positives (``interactions="liked"``) or of every
    training interaction (``"all"``: what a two-tower model whose history or positives use every rating
    sees), and ``P = (X^T X + lambda I)^-1``,
    ``B = I - P diag(1 / diag(P))``, i.e. ``B_ij = -P_ij / P_jj`` off the diagonal and ``B_jj = 0`` (the
    constraint that stops an item from predicting itself). Scores are ``X_u B``. Cost is one
    ``n_items x n_items`` inverse, fine up to tens of thousands of items.
    """

    def __init__(self, l2: float = 500.0, interactions: Source = "liked"):
        if l2 <= 0:
            raise ValueError(f"EASE needs a positive l2 regularisation, got {l2}")
        _check_source(interactions)
        self.l2, self.interactions = l2, interactions
        self.weights: torch.Tensor | None = None
        self.history: torch.Tensor | None = None

    def fit(self, train: Interactions) -> EASE:
        x = train.matrix(positives_only=self.interactions == "liked")
        self.weights = ease_item_weights(x, self.l2)
        self.history = x.float()
        return self

    def score(self, user_idx: torch.Tensor) -> torch.Tensor:
        _require_fitted(self, "weights")
        return self.history[torch.as_tensor(user_idx)] @ self.weights


def ease_item_weights(x: torch.Tensor, l2: float, fast: bool = False) -> torch.Tensor:
    """EASE's ``[n_items, n_items]`` weights ``B = I - P diag(1 / diag(P))`` (zero diagonal),
    ``P = (X^T X + l2 I)^-1``, from the binary user x item matrix ``x``. By default in double precision with
    a plain inverse (the baseline); ``fast=True`` in single precision with a Cholesky inverse (the Gram
    matrix is positive definite), several times faster, for a ranking that need not be exact to the last
    digit, such as the simulated logging policy of :mod:`tt_helpers.world`. Returned as float32."""
    x = x.float() if fast else x.double()
    gram = x.T @ x
    gram.diagonal().add_(l2)
    p = torch.cholesky_inverse(torch.linalg.cholesky(gram)) if fast else torch.linalg.inv(gram)
    b = -p / p.diagonal()
    b.diagonal().zero_()
    return b.float()
