"""tt_helpers.scoring_cost: analytic FLOPs by hand for a tiny configuration, and the shape of the timing table."""

import numpy as np
import pytest
import torch

from tt_helpers import scoring_cost as sc

# Tiny ranker: dim 2, 1 pair feature, one hidden layer of 3 -> widths [5, 3, 1].
TINY = dict(dim=2, n_pair_features=1, hidden=(3,))


def test_tiny_config_flops_by_hand():
    assert sc.layer_widths(**TINY) == [5, 3, 1]
    assert sc.ranker_flops_per_pair(**TINY) == 2 * (5 * 3 + 3 * 1) == 36
    assert sc.dot_flops_per_item(2) == 4


def test_default_config_flops_by_hand():
    # [64 user, 64 item, 16 pair] = 144 -> 256 -> 256 -> 1
    assert sc.ranker_flops_per_pair() == 2 * (144 * 256 + 256 * 256 + 256 * 1) == 205_312
    assert sc.dot_flops_per_item() == 128


def test_flops_match_the_ranker_weights():
    model = sc.make_ranker(**TINY)
    weights = sum(m.weight.numel() for m in model if isinstance(m, torch.nn.Linear))
    assert sc.ranker_flops_per_pair(**TINY) == 2 * weights
    assert model(torch.zeros(7, 5)).shape == (7, 1)


def test_scoring_flops_table_by_hand():
    table = sc.scoring_flops([2, 10, 100], n_candidates=5, **TINY)
    assert list(table.columns) == [
        "catalogue_size",
        "ranker_flops_per_user",
        "dot_product_flops_per_user",
        "ranker_vs_dot_product",
        "two_stage_flops_per_user",
        "full_ranking_vs_two_stage",
    ]
    assert table["ranker_flops_per_user"].tolist() == [72, 360, 3600]
    assert table["dot_product_flops_per_user"].tolist() == [8, 40, 400]
    assert table["ranker_vs_dot_product"].tolist() == [9.0, 9.0, 9.0]  # per-item ratio: constant
    # retrieval over N, then the ranker on min(5, N) candidates
    assert table["two_stage_flops_per_user"].tolist() == [8 + 2 * 36, 40 + 5 * 36, 400 + 5 * 36]
    # N <= candidates: retrieval is pure overhead
    assert table["full_ranking_vs_two_stage"].tolist() == pytest.approx([72 / 80, 360 / 220, 3600 / 580])


def test_full_ranking_vs_two_stage_grows_and_levels_off():
    ratio = sc.scoring_flops([10**p for p in range(2, 9)])["full_ranking_vs_two_stage"].to_numpy()
    assert (np.diff(ratio) > 0).all()
    assert ratio[-1] < sc.ranker_flops_per_pair() / sc.dot_flops_per_item()


def test_bad_arguments():
    with pytest.raises(ValueError):
        sc.scoring_flops([0])
    with pytest.raises(ValueError):
        sc.layer_widths(dim=0)


def test_retrieve_and_rank_all_items_return_the_true_top_k():
    g = torch.Generator().manual_seed(0)
    items, user = torch.randn(50, 2, generator=g), torch.randn(2, generator=g)
    assert sc.retrieve(user, items, 5).tolist() == torch.argsort(items @ user, descending=True)[:5].tolist()
    ranker = sc.make_ranker(**TINY).eval()
    features = torch.randn(50, 1, generator=g)
    with torch.inference_mode():
        top = sc.rank_all_items(ranker, user, items, features, k=5, chunk_size=7)  # several chunks
        full = ranker(torch.cat([user.expand(50, -1), items, features], 1)).squeeze(1)
    assert top.tolist() == torch.argsort(full, descending=True)[:5].tolist()
    assert len(sc.retrieve(user, items[:3], 5)) == 3


def test_measure_scoring_cost_table_shape():
    table = sc.measure_scoring_cost([20, 200], k=5, repeats=1, max_ranker_size=50, **TINY)
    assert table["catalogue_size"].tolist() == [20, 200]
    for column in ["ranker_flops_per_user", "dot_product_flops_per_user", "ranker_ms_per_user",
                   "dot_product_ms_per_user", "measured_ratio", "ranker_gflop_per_s"]:  # fmt: skip
        assert column in table.columns
    assert table["ranker_flops_per_user"].tolist() == [720, 7200]
    assert np.isfinite(table["ranker_ms_per_user"].iloc[0]) and table["ranker_ms_per_user"].iloc[0] > 0
    assert np.isnan(table["ranker_ms_per_user"].iloc[1])  # above max_ranker_size: not measured
    assert (table["dot_product_ms_per_user"] > 0).all()


def test_extrapolate_ms_by_hand():
    import pandas as pd

    cost = pd.DataFrame(
        {
            "catalogue_size": [10, 100, 1000],
            "ranker_flops_per_user": [360, 3600, 36000],  # 36 FLOPs per pair
            "dot_product_ms_per_user": [0.1, 0.5, 2.0],
            "ranker_ms_per_user": [1.0, 2.0, np.nan],
            "ranker_gflop_per_s": [3.6e-4, 1.8e-3, np.nan],  # 1.8e-3 GFLOP/s = 1,800 FLOPs per ms
        }
    )
    est = sc.extrapolate_ms(cost, 10_000, n_candidates=5)
    assert est["ranker_ms"] == pytest.approx(10_000 * 36 / 1800)  # throughput of the largest ranker timing
    assert est["dot_product_ms"] == pytest.approx(2.0 * 10)  # linear from the largest dot-product timing
    assert est["candidate_ranking_ms"] == pytest.approx(5 * 36 / 1800)
    assert est["two_stage_ms"] == pytest.approx(20 + 0.1)
