"""05 attribution against the demo generator's ground truth (truth.json `channel_true_share`): on
the messy demo (5,000 customers, the default seed 42), from the raw touch log and orders through
ingestion, cleaning and the stage's own journey building, every model's misallocation is
measured and the recommended model must misallocate at most 5% of the conversions.

Seed 42 is the demo's default, not a seed picked because it passes (seeds 1, 2, 3 and 7 give
1.5-3.0% as well)."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from crmbook import attribution, cleaning, config, synth
from tests.conftest import write_params


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("attribution_truth")
    data = synth.generate(folder / "demo", customers=5000, seed=42, messy=True)
    params = write_params(folder, data, **{"customers: 300": "customers: 5000",
                                           "attribution: {}": "attribution: {n_boot: 0}"})
    cfg = config.load(params)
    run_dir = folder / "run"
    result = attribution.evaluate(cfg, run_dir, cleaning.load_clean(cfg, run_dir))
    return {"truth": json.loads((data / "truth.json").read_text()), "result": result, "cfg": cfg}


def test_the_truth_file_next_to_the_touch_log_is_found(demo):
    result = demo["result"]
    assert result.truth is not None and result.misallocation is not None
    assert result.truth.to_dict() == pytest.approx(demo["truth"]["channel_true_share"])


def test_every_model_is_scored(demo):
    mis = demo["result"].misallocation
    assert set(mis["key"]) == {*attribution.HEURISTICS, "markov_1", "shapley", "logistic", "logistic_shapley"}
    assert mis["misallocation"].between(0, 1).all()


def test_the_recommended_model_misallocates_at_most_5_percent(demo):
    result = demo["result"]
    mis = result.misallocation.set_index("key")["misallocation"]
    assert result.recommended == "logistic_shapley"
    assert mis["logistic_shapley"] <= 0.05
    assert mis.idxmin() == "logistic_shapley"


def test_position_and_presence_rules_are_far_off_on_the_demo(demo):
    # The demo's channels differ in how often they appear (pi) and in what they do (effect):
    # rules that credit presence or position cannot separate the two.
    mis = demo["result"].misallocation.set_index("key")["misallocation"]
    for key in (*attribution.HEURISTICS, "markov_1", "shapley"):
        assert mis[key] > 0.25, key


def test_the_lookback_read_from_the_data_is_the_generators_journey_window(demo):
    lookback = demo["result"].lookback
    assert lookback.how == "auto"
    assert lookback.days == demo["truth"]["journeys"]["window_days"]


def test_recommended_shares_are_close_for_every_channel(demo):
    est = demo["result"].model("logistic_shapley")["share"]
    true = pd.Series(demo["truth"]["channel_true_share"])
    assert (est - true.reindex(est.index)).abs().max() < 0.03
