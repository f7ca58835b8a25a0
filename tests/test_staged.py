"""Staged schedules: a second training phase early-stopped on its own, and the refit that follows it."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from test_recipe import synthetic_ratings

from tt_helpers import evaluation, splits
from tt_helpers.baselines import PopularRecommender
from tt_helpers.experiments import fit_on_split, fit_staged, run_variants
from tt_helpers.recipe import TwoTowerRecommender
from tt_helpers.towers import TowerConfig
from tt_helpers.training import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

TOWER = TowerConfig(embedding_dim=8, temperature=0.1)
FIRST = TrainConfig(max_epochs=6, patience=2, batch_size=16, early_stopping_metric="Recall@5", progress=False)
FROZEN = replace(FIRST, learning_rate=1e-12, dense_learning_rate=1e-12)  # a second phase that cannot move


def split():
    return splits.temporal_user_split(synthetic_ratings(seed=3, per_user=14))


def test_a_second_phase_that_cannot_help_keeps_no_epoch_and_the_first_phase_model():
    s = split()
    staged = fit_staged(s, TOWER, FIRST, FROZEN)
    plain = fit_on_split(s, TOWER, FIRST)
    assert staged.second_phase_epochs == 0
    assert staged.best_epoch == plain.best_epoch
    users = torch.arange(s.catalog.n_users)
    assert torch.allclose(staged.recommender.score(users), plain.recommender.score(users))


def test_continue_training_restores_the_starting_weights_when_no_epoch_beats_them():
    s = split()
    validation = s.validation()
    model = TwoTowerRecommender(TOWER, FIRST).fit(validation.train, validation)
    before = {k: v.clone() for k, v in model.model.state_dict().items()}
    worse = replace(FIRST, learning_rate=5.0, max_epochs=2)  # a step size that wrecks the embeddings
    model.continue_training(validation.train, worse, validation)
    if model.best_epoch == 0:
        assert all(torch.equal(before[k], v) for k, v in model.model.state_dict().items())
    assert model.history_.index[0] == 0 and np.isnan(model.history_.loc[0, "train_loss"])


def test_a_first_phase_stopped_short_is_continued_by_the_second():
    s = split()
    short = replace(FIRST, max_epochs=1)
    staged = fit_staged(s, TOWER, short, replace(FIRST, max_epochs=8))
    assert staged.second_phase_epochs >= 1  # one epoch is far from the plateau: the second phase improves on it
    assert staged.best_epoch == 1 + staged.second_phase_epochs
    first_phase_best = staged.history.loc[1, "val_Recall@5"]  # validation, after the first phase's one epoch
    assert staged.validation["val_Recall@5"] > first_phase_best  # kept only because it beat the first phase
    assert list(staged.history.index) == list(range(1, len(staged.history) + 1))


def test_run_variants_runs_staged_variants_and_records_the_second_phase():
    s = split()
    runs = run_variants(s, {"staged": (TOWER, (replace(FIRST, max_epochs=1), FIRST))}, seeds=(0, 1))
    frame = runs.frame()
    assert list(frame["seed"]) == [0, 1] and (frame["second_phase_epochs"] >= 0).all()
    assert (frame["best_epoch"] == 1 + frame["second_phase_epochs"]).all()
    # seed 1 has no validation run of its own: both phases' epoch counts are seed 0's
    assert frame["second_phase_epochs"].nunique() == 1 and frame["val_Recall@5"].notna().tolist() == [True, False]


def test_top_k_overlap_is_one_with_itself_and_lower_with_another_model():
    s = split()
    popular = PopularRecommender().fit(s.train)
    model = fit_on_split(s, TOWER, FIRST).recommender
    assert evaluation.top_k_overlap(popular, popular, s, k=5) == pytest.approx(1.0)
    overlap = evaluation.top_k_overlap(model, popular, s, k=5)
    assert 0.0 <= overlap < 1.0


@pytest.mark.parametrize("workers", [1, 2])
def test_run_variants_first_seed_is_fit_on_split_and_fit_staged_exactly(workers):
    """The first seed's validation run is a job of its own and its refit runs beside the other seeds': the
    record (test metrics, epochs, validation metrics) is the one fit_on_split / fit_staged give."""
    s = split()
    second = replace(FIRST, negatives="uniform", num_negatives=8)
    variants = {"plain": (TOWER, FIRST), "staged": (TOWER, (replace(FIRST, max_epochs=2), second))}
    runs = run_variants(s, variants, seeds=(0, 1), ks=(5,), workers=workers)
    frame = runs.frame().set_index(["model", "seed"])
    fits = {"plain": fit_on_split(s, TOWER, FIRST),
            "staged": fit_staged(s, TOWER, replace(FIRST, max_epochs=2), second)}
    for name, fit in fits.items():
        row = frame.loc[(name, 0)]
        summary = evaluation.evaluate(fit.recommender, s, ks=(5,))
        assert row["Recall@5"] == summary["Recall@5"] and row["best_epoch"] == fit.best_epoch
        for key, value in fit.validation.items():
            assert row[key] == value
    assert frame.loc[("staged", 0), "second_phase_epochs"] == fits["staged"].second_phase_epochs
