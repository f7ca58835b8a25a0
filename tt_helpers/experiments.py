"""Experiments: fit models on one split the honest way, keep every user's result, compare them in pairs.

:func:`fit_on_split` early-stops a two-tower model on the validation split carved from training (never on
test) and refits it on the whole training split for the best number of epochs. :func:`run_variants` does that
for a grid of variants over several seeds and collects the results in :class:`Runs`, which also holds the
baselines, picks settings by their *validation* metric (:meth:`Runs.best_on_validation`) and compares any
two models with the book's one rule, :func:`tt_helpers.comparison.compare` (a paired bootstrap over users).

The number of epochs is a hyper-parameter like the others: by default :func:`run_variants` chooses it once per
variant, on the first seed's validation run, and trains every seed on the whole training split for that many
epochs; the seeds then measure what training noise does to one configuration. (``epochs_per_seed=True``
early-stops each seed on its own validation run instead, at twice the cost of the seeds after the first.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from .comparison import Comparison, compare, comparison_table, paired_bootstrap
from .evaluation import DEFAULT_KS, Recommender, evaluate_detailed
from .recipe import TwoTowerRecommender
from .splits import Split
from .towers import TowerConfig
from .training import TrainConfig
from .workers import map_then_in_workers

Variant = tuple[TowerConfig, "TrainConfig | tuple[TrainConfig, TrainConfig]"]  # one phase, or two (staged)
DEFAULT_SEEDS = (0, 1, 2)


@dataclass
class FitResult:
    recommender: TwoTowerRecommender  # refit on split.train for best_epoch epochs
    best_epoch: int
    history: pd.DataFrame  # the validation run: one row per epoch
    validation: dict[str, float]  # the validation run's metrics at its best epoch ("val_Recall@100", ...)
    second_phase_epochs: int | None = None  # staged fits: epochs of the second phase kept (0: none helped)


def fit_on_split(
    split: Split,
    tower: TowerConfig = TowerConfig(),
    training: TrainConfig = TrainConfig(),
    users: pd.DataFrame | None = None,
    items: pd.DataFrame | None = None,
    refit: bool = True,
    epochs: int | None = None,
    **kwargs,
) -> FitResult:
    """Early-stop on ``split.validation()`` (never on test), then refit on ``split.train`` for the best
    number of epochs with the same seed.

    ``epochs``: a number of epochs chosen on validation earlier (e.g. by another seed's run of the same
    variant): skip the validation run and train on ``split.train`` for that many epochs (``history`` and
    ``validation`` of the result are then empty).

    ``refit=False`` keeps the early-stopped run's best checkpoint instead (half the cost): its weights never
    trained on the last part of each user's training interactions, which it only reads as history at
    serving time (:meth:`TwoTowerRecommender.serve_history_from`). Compare the two with :func:`run_variants`
    (``refit=False``)."""
    if epochs is not None:
        if not refit:
            raise ValueError("epochs= refits for a number of epochs chosen earlier; refit=False keeps a validation "
                             "run's checkpoint instead: pass one or the other")
        final = TwoTowerRecommender(tower, training, users, items, **kwargs).fit(split.train, epochs=epochs)
        return FitResult(final, epochs, pd.DataFrame(), {})
    validation = split.validation()
    probe = TwoTowerRecommender(tower, training, users, items, **kwargs).fit(validation.train, validation)
    best = probe.best_epoch
    if refit:
        final = TwoTowerRecommender(tower, training, users, items, **kwargs).fit(split.train, epochs=best)
    else:
        final = probe.serve_history_from(split.train)
    row = probe.history_.loc[best]
    return FitResult(final, best, probe.history_, {k: float(v) for k, v in row.items() if k.startswith("val_")})


def fit_staged(
    split: Split,
    tower: TowerConfig,
    first: TrainConfig,
    second: TrainConfig,
    users: pd.DataFrame | None = None,
    items: pd.DataFrame | None = None,
    epochs: tuple[int, int] | None = None,
    **kwargs,
) -> FitResult:
    """A two-phase schedule chosen on validation only: train with ``first`` to its validation plateau (early
    stopping), then go on from that best state with ``second`` (e.g. other negatives), early-stopping the
    second phase alone against the first phase's best (epoch 0 of the second phase). Then refit on
    ``split.train``: ``first`` for the first phase's best epoch count, ``second`` for the second's (none if
    no second-phase epoch beat the first phase on validation). ``epochs``: both phases' epoch counts, chosen on
    validation earlier (another seed's run): skip the validation runs and refit with them."""
    if epochs is not None:
        first_epochs, second_epochs = epochs
        final = TwoTowerRecommender(tower, first, users, items, **kwargs).fit(split.train, epochs=first_epochs)
        if second_epochs:
            final.continue_training(split.train, second, epochs=second_epochs)
        return FitResult(final, first_epochs + second_epochs, pd.DataFrame(), {}, second_epochs)
    validation = split.validation()
    probe = TwoTowerRecommender(tower, first, users, items, **kwargs).fit(validation.train, validation)
    first_epochs, first_history = probe.best_epoch, probe.history_
    probe.continue_training(validation.train, second, validation)
    second_epochs = probe.best_epoch
    final = TwoTowerRecommender(tower, first, users, items, **kwargs).fit(split.train, epochs=first_epochs)
    if second_epochs:
        final.continue_training(split.train, second, epochs=second_epochs)
    second_history = probe.history_.rename(index=lambda e: e + first_epochs)
    history = pd.concat([first_history.loc[:first_epochs], second_history.drop(index=first_epochs)])
    row = probe.history_.loc[second_epochs]
    return FitResult(final, first_epochs + second_epochs, history,
                     {k: float(v) for k, v in row.items() if k.startswith("val_")}, second_epochs)


@dataclass(frozen=True)
class ValidationRun:
    """One validation run of :func:`run_variants`: the variant, the split and the other fitting arguments it
    ran with (``kwargs``), and what it chose (:func:`choose_epochs`' dict: ``best_epoch``, ``val_...``)."""

    variant: Variant
    split: Split
    kwargs: Mapping
    chosen: dict
    model: TwoTowerRecommender | None = None  # its early-stopped model (run_variants(keep_models=True))

    def matches(self, variant: Variant, split: Split, kwargs: Mapping) -> bool:
        """Would this run be the validation run of ``variant`` on ``split`` with these arguments? The split and
        the arguments must be the very same objects (no copy, no look-alike), the configs equal."""
        same_kwargs = self.kwargs.keys() == kwargs.keys() and all(self.kwargs[k] is kwargs[k] for k in kwargs)
        return self.split is split and same_kwargs and self.variant == variant


class Runs:
    """Every model's per-user test results on one split (variants x seeds, and baselines).

    ``table`` summarises (means over seeds, the validation metric, the best epochs), ``compare`` applies the
    book's paired rule to any two names, ``best_on_validation`` selects among variants without looking at test.
    """

    def __init__(self, protocol: str):
        self.protocol = protocol
        self.records: list[dict] = []
        self.per_user: dict[str, list[pd.DataFrame]] = {}
        self.models: dict[str, list[tuple[int | None, Recommender]]] = {}  # (seed, model), with keep_models
        # (name, seed) -> the validation run run_variants made: what it was fitted on, and what it chose
        self.validation_runs: dict[tuple[str, int], ValidationRun] = {}

    @property
    def names(self) -> list[str]:
        return list(self.per_user)

    def add(self, name: str, summary: Mapping[str, float], per_user: pd.DataFrame, seed: int | None = None,
            **info) -> None:
        """Record one fitted model's results (``evaluate_detailed``'s two outputs) under ``name``."""
        if self.per_user.get(name) and seed is None:
            raise ValueError(f"{name!r} is already recorded; give each run of a model its own seed")
        if any(r["model"] == name and r["seed"] == seed for r in self.records):
            raise ValueError(f"{name!r} with seed {seed} is already recorded: each (model, seed) run counts once")
        self.records.append({"model": name, "seed": seed, **info, **summary})
        self.per_user.setdefault(name, []).append(per_user)

    def add_baselines(self, models: Mapping[str, Recommender], split: Split, ks: Iterable[int] = DEFAULT_KS,
                      relevant_items: np.ndarray | None = None) -> Runs:
        """Evaluate fitted, deterministic baselines (one run each) on ``split``."""
        for name, model in models.items():
            self.add(name, *evaluate_detailed(model, split, ks, relevant_items))
            self.models[name] = [(None, model)]
        return self

    def reevaluate(self, split: Split, names: Sequence[str] | None = None, ks: Iterable[int] = DEFAULT_KS,
                   relevant_items: np.ndarray | None = None, protocol: str | None = None) -> Runs:
        """A new :class:`Runs` with the kept models (``keep_models=True``) evaluated again on ``split``, e.g.
        with relevance restricted to tail items; validation metrics and best epochs are carried over."""
        names = list(names) if names is not None else list(self.models)
        missing = [n for n in names if n not in self.models]
        if missing:
            raise KeyError(f"no kept models for {missing}: run run_variants(..., keep_models=True)")
        out = Runs(protocol or split.protocol)
        for name in names:
            for seed, model in self.models[name]:
                info = next(r for r in self.records if r["model"] == name and r["seed"] == seed)
                carried = {k: v for k, v in info.items() if k == "best_epoch" or k.startswith("val_")}
                out.add(name, *evaluate_detailed(model, split, ks, relevant_items), seed=seed, **carried)
                out.models.setdefault(name, []).append((seed, model))
        return out

    def frame(self) -> pd.DataFrame:
        """One row per recorded run (model, seed, best epoch, validation and test metrics)."""
        return pd.DataFrame(self.records)

    def table(self, metrics: Sequence[str], names: Sequence[str] | None = None, digits: int = 4,
              validation_metric: str | None = "Recall@100") -> pd.DataFrame:
        """Means over seeds per model (rows in the order given or recorded), with ``seeds`` and, for trained
        models, the validation metric at the best epoch (mean over the runs that have a validation run) and
        the epochs trained (one number when every seed trained as many, else one per seed). Rounded."""
        runs = self.frame()
        names = list(names) if names is not None else self.names
        unknown = [n for n in names if n not in self.per_user]
        if unknown:
            raise KeyError(f"no runs recorded for {unknown}; recorded: {self.names}")
        grouped = runs.groupby("model", sort=False)
        out = grouped[list(metrics)].mean().loc[names].round(digits)
        out.insert(0, "seeds", grouped.size().loc[names])
        val = f"val_{validation_metric}"
        if validation_metric and val in runs:
            out[f"validation {validation_metric}"] = grouped[val].mean().loc[names].round(digits)
        if "best_epoch" in runs:
            epochs = grouped["best_epoch"].agg(_epochs_label)
            out["best epochs"] = epochs.loc[names].replace("", "-")
        out.index.name = self.protocol if len(self.protocol) <= 40 else "model"
        return out

    def intervals(self, metric: str = "Recall@100", names: Sequence[str] | None = None, seed: int = 0) -> pd.DataFrame:
        """Per model: the mean ``metric`` (per-user values averaged over seeds) and its 95% percentile
        bootstrap interval over users (columns ``mean``, ``low``, ``high``), for plots with error bars."""
        names = list(names) if names is not None else self.names
        rows = {}
        for name in names:
            per_user = pd.concat([f[metric] for f in self.per_user[name]], axis=1).mean(axis=1).to_numpy()
            mean, low, high = paired_bootstrap(per_user, np.zeros_like(per_user), seed=seed)
            rows[name] = {"mean": mean, "low": low, "high": high}
        return pd.DataFrame(rows).T

    def compare(self, a: str, b: str, metric: str = "Recall@100", **kwargs) -> Comparison:
        """``a`` against ``b`` with :func:`tt_helpers.comparison.compare` (seeds averaged per user)."""
        for name in (a, b):
            if name not in self.per_user:
                raise KeyError(f"no runs recorded for {name!r}; recorded: {self.names}")
        return compare(self.per_user[a], self.per_user[b], metric, names=(a, b), **kwargs)

    def comparisons(self, pairs: Iterable[tuple[str, str]], metric: str = "Recall@100",
                    digits: int = 4) -> pd.DataFrame:
        """A table of :meth:`compare` for each ``(a, b)`` pair."""
        return comparison_table([self.compare(a, b, metric) for a, b in pairs], digits)

    def best_on_validation(self, names: Sequence[str], metric: str = "Recall@100") -> str:
        """The name among ``names`` with the highest mean validation ``metric``: selection never sees test."""
        runs = self.frame()
        column = f"val_{metric}"
        if column not in runs:
            raise KeyError(f"no validation {metric} recorded (only trained variants have one)")
        means = runs[runs["model"].isin(names)].groupby("model")[column].mean()
        return str(means.idxmax())


def _epochs_label(epochs: pd.Series) -> str:
    """"5" when every seed trained 5 epochs, "5, 3, 7" when they differ, "" for baselines."""
    values = [str(int(e)) for e in epochs if pd.notna(e)]
    return values[0] if values and len(set(values)) == 1 else ", ".join(values)


CHOOSE = "choose"  # a job of run_variants that only runs the validation run


def choose_epochs(split: Split, tower: TowerConfig, training: TrainConfig | tuple[TrainConfig, TrainConfig],
                  seed: int, users: pd.DataFrame | None = None, items: pd.DataFrame | None = None,
                  keep_model: bool = False, **kwargs) -> dict:
    """The validation run of :func:`fit_on_split` (or of :func:`fit_staged` for a pair of configs) without
    the refit: ``{"best_epoch": ..., ["second_phase_epochs": ...,] "val_...": ...}``, the information
    :func:`run_variants` records for the first seed. Its refit, for ``best_epoch`` epochs with the same seed,
    is the one ``fit_on_split(..., epochs=best_epoch)`` trains: the same model as ``fit_on_split``'s own.
    ``keep_model=True`` (one phase) adds the early-stopped model as ``"model"``: ``fit_on_split(...,
    refit=False)``'s."""
    validation = split.validation()
    if isinstance(training, tuple):
        first, second = (replace(t, seed=seed) for t in training)
        probe = TwoTowerRecommender(tower, first, users, items, **kwargs).fit(validation.train, validation)
        first_epochs = probe.best_epoch
        probe.continue_training(validation.train, second, validation)
        row = probe.history_.loc[probe.best_epoch]
        chosen = {"best_epoch": first_epochs + probe.best_epoch, "second_phase_epochs": probe.best_epoch}
    else:
        probe = TwoTowerRecommender(tower, replace(training, seed=seed), users, items, **kwargs)
        probe.fit(validation.train, validation)
        row = probe.history_.loc[probe.best_epoch]
        chosen = {"best_epoch": probe.best_epoch}
    chosen |= {k: float(v) for k, v in row.items() if k.startswith("val_")}
    if keep_model and not isinstance(training, tuple):
        chosen["model"] = probe.serve_history_from(split.train)  # what refit=False keeps
    return chosen


def run_variants(
    split: Split,
    variants: Mapping[str, Variant],
    seeds: Sequence[int] = DEFAULT_SEEDS,
    users: pd.DataFrame | None = None,
    items: pd.DataFrame | None = None,
    ks: Iterable[int] = DEFAULT_KS,
    relevant_items: np.ndarray | None = None,
    runs: Runs | None = None,
    refit: bool = True,
    keep_models: bool = False,
    workers: int | None = None,
    epochs_per_seed: bool = False,
    reuse: Runs | None = None,
    **recommender_kwargs,
) -> Runs:
    """Fit each variant once per seed with :func:`fit_on_split` (or :func:`fit_staged` when its training is
    a pair of configs) and record its per-user test results.

    The first seed's fit early-stops on the validation split and refits; the other seeds are trained on
    ``split.train`` for the number of epochs it chose (one hyper-parameter choice per variant, made on validation;
    the seeds measure training noise around it). The validation run is a job of its own (:func:`choose_epochs`), and
    the first seed's refit runs beside the other seeds' (the same model as :func:`fit_on_split` would refit, sooner:
    a slow variant's refits no longer wait for each other). ``epochs_per_seed=True`` gives every seed its own
    validation run, and ``refit=False`` (see :func:`fit_on_split`) needs one per seed: each keeps its validation
    run's checkpoint. Validation metrics are recorded for the runs that have one.

    ``reuse``: runs recorded earlier on this split (e.g. a screen of settings with ``refit=False`` on the first
    seed): a variant whose first-seed validation run is recorded there, under any name, with the same towers,
    training and other arguments, takes the epochs it chose instead of running it again; with ``refit=False``
    it takes that run's early-stopped model as its first seed's (kept when the earlier call had
    ``keep_models=True``). The results are the same bits.

    ``keep_models=True`` keeps each fitted recommender in ``runs.models[name]`` (one per seed), to evaluate
    them again later (:meth:`Runs.reevaluate`) without refitting. The fits run side by side in ``workers``
    processes (:func:`tt_helpers.workers.map_then_in_workers`; default one per core): each fit seeds itself,
    so the results, and the order they are recorded in, are those of fitting one after another."""
    runs = runs if runs is not None else Runs(split.protocol)
    ks = tuple(ks)
    seeds = tuple(seeds)
    if not seeds:
        raise ValueError("seeds is empty: give at least one seed")

    choose_first = refit and not epochs_per_seed  # a validation run alone, then every seed as a refit

    def fit_and_evaluate(job: tuple) -> tuple | dict:  # (summary, per_user, info, recommender or None)
        name, seed, epochs = job  # None (early-stop on validation), the count(s) chosen earlier, or CHOOSE
        tower, training = variants[name]
        if isinstance(epochs, str) and epochs == CHOOSE:  # the validation run only (the refits need its epochs)
            chosen = choose_epochs(split, tower, training, seed, users, items, keep_model=keep_models,
                                   **recommender_kwargs)
            if "model" in chosen:
                chosen["model"].extras = {}  # shared by every fit: attached again below
            return chosen
        if isinstance(training, tuple):  # staged: two phases
            first, second = (replace(t, seed=seed) for t in training)
            fit = fit_staged(split, tower, first, second, users, items, epochs=epochs, **recommender_kwargs)
            info = {"second_phase_epochs": fit.second_phase_epochs}
        else:
            fit = fit_on_split(split, tower, replace(training, seed=seed), users, items, refit=refit,
                               epochs=epochs, **recommender_kwargs)
            info = {}
        summary, per_user = evaluate_detailed(fit.recommender, split, ks, relevant_items)
        info = {"best_epoch": fit.best_epoch, **info, **fit.validation}
        if not keep_models:
            return summary, per_user, info, None
        fit.recommender.extras = {}  # shared by every fit (e.g. an impression log): attached again below
        return summary, per_user, info, fit.recommender

    def other_seeds(job: tuple, result: tuple | dict) -> list[tuple]:
        name, _, _ = job
        if not choose_first:
            return [(name, seed, None) for seed in seeds[1:]]
        staged = isinstance(variants[name][1], tuple)
        second = result.get("second_phase_epochs") or 0
        chosen = (result["best_epoch"] - second, second) if staged else result["best_epoch"]
        return [(name, seed, chosen) for seed in seeds]  # the first seed's refit too: side by side

    def recorded(name: str) -> ValidationRun | None:  # the first seed's validation run, made earlier
        if reuse is None or (refit and epochs_per_seed):  # a validation run and a refit per seed: none taken
            return None
        found = (run for (_, seed), run in reuse.validation_runs.items()
                 if seed == seeds[0] and run.matches(variants[name], split, recommender_kwargs)
                 and (choose_first or run.model is not None))  # refit=False: its model is the result
        return next(found, None)

    def validation_run(name: str, info: dict, model: TwoTowerRecommender | None = None) -> ValidationRun:
        chosen = {k: v for k, v in info.items() if k in ("best_epoch", "second_phase_epochs") or k.startswith("val_")}
        return ValidationRun(variants[name], split, dict(recommender_kwargs), chosen, model)

    def attach(model: TwoTowerRecommender | None) -> TwoTowerRecommender | None:
        if model is not None:
            model.extras = recommender_kwargs.get("extras") or {}  # the caller's object, not a copy
        return model

    known = {name: found for name in variants if (found := recorded(name)) is not None}
    first_jobs = [(name, seeds[0], CHOOSE if choose_first else None) for name in variants if name not in known]
    if choose_first:  # known: their refits at once
        later = {name: other_seeds((name, seeds[0], CHOOSE), found.chosen) for name, found in known.items()}
    else:  # refit=False: the first seed's result is the known run's model; the other seeds at once
        later = {name: [(name, seed, None) for seed in seeds[1:]] for name in known}
    jobs = first_jobs + [job for name_jobs in later.values() for job in name_jobs]
    unlocking = set(first_jobs)  # the jobs whose results start others (not the known variants' later seeds)
    results, more = map_then_in_workers(
        fit_and_evaluate, jobs, lambda job, result: other_seeds(job, result) if job in unlocking else [], workers
    )
    by_name = {job[0]: (result, rest) for job, result, rest in zip(first_jobs, results, more)}
    done = iter(results[len(first_jobs):])
    for name, found in known.items():
        rest = [next(done) for _ in later[name]]
        if choose_first:
            by_name[name] = (dict(found.chosen, model=found.model), rest)
        else:
            model = attach(found.model)
            summary, per_user = evaluate_detailed(model, split, ks, relevant_items)
            by_name[name] = ((summary, per_user, dict(found.chosen), model if keep_models else None), rest)
    for name in variants:
        first, rest = by_name[name]
        if choose_first:  # the first seed's refit, recorded with its validation run's metrics
            model = attach(first.pop("model", None))
            runs.validation_runs[name, seeds[0]] = validation_run(name, first, model)
            summary, per_user, _, recommender = rest[0]
            first, rest = (summary, per_user, first, recommender), rest[1:]
        for seed, (summary, per_user, info, recommender) in zip(seeds, [first, *rest]):
            if not choose_first and "best_epoch" in info and any(k.startswith("val_") for k in info):
                kept = attach(recommender) if not refit else None  # refit=False: the result is that run's model
                runs.validation_runs[name, seed] = validation_run(name, info, kept)
            runs.add(name, summary, per_user, seed=seed, **info)
            if keep_models:
                runs.models.setdefault(name, []).append((seed, attach(recommender)))
    return runs
