"""The 04 CLV stage on the CDNOW sample reproduces Fader, Hardie & Lee (2005), "'Counting Your
Customers' the Easy Way", Marketing Science 24(2), 275-284 (see shared REFERENCE.md, § CLV).

Unlike tests/reference/test_clv_reference.py, which fits the published customer summary, these
tests start from the transaction file (tests/data/cdnow/CDNOW_sample.txt, 6,919 purchases) and go
through the stage's own path: ingestion with the `cdnow` preset -> 02 cleaning -> the engine's
day-level summary (`clv.summarise_calibration`: calibration to 1997-09-30 = week 39, holdout to
1998-06-30 = week 78, weeks) -> the fits.

8 of the 2,357 customers' only purchase is worth $0.00. 02's `cancelled_order` rule drops such
free orders by default ("not a purchase"); the paper counts them, so these params (like
params/examples/cdnow.yaml) set `cleaning.free_orders: keep`, and the stage's summary is then the
published one for every customer. The default's effect is tested too.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crmbook import cleaning, clv, config, engine, ingestion

DATA = Path(__file__).resolve().parents[1] / "data" / "cdnow"
BGNBD = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}  # FHL (2005), section 4
PUBLISHED = {"bgnbd": BGNBD,
             "pareto": {"r": 0.553, "alpha": 10.578, "s": 0.606, "beta": 11.669},  # FHL (2005), Pareto/NBD
             "mbgnbd": {"r": 0.525, "alpha": 6.183, "a": 0.891, "b": 1.614}}  # Batislam et al. (2007) via BTYDplus
GAMMA_GAMMA = {"p": 6.25, "q": 3.74, "gamma": 15.44}  # FHL (2005), JMR 42(4)


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cdnow")
    params = folder / "cdnow.yaml"
    params.write_text(
        "run:\n  analysis_date: 1998-06-30\n"
        f"data:\n  sources:\n    transactions:\n      - path: {DATA / 'CDNOW_sample.txt'}\n        preset: cdnow\n"
        "cleaning:\n  free_orders: keep\n"
        "clv:\n  time_unit: weeks\n  calibration_end: 1997-09-30\n  holdout_end: 1998-06-30\n", encoding="utf-8")
    cfg = config.load(params)
    run_dir = folder / "run"
    tables, _ = ingestion.ingest(cfg)
    cleaned = cleaning.clean(tables, cfg)
    cleaning.save(run_dir, cleaned)
    data = clv.summarise_calibration(cfg, run_dir)
    fits = clv.fit_models(data.calibration, ("bgnbd", "pareto", "mbgnbd"))
    return cfg, cleaned, data, fits


@pytest.fixture(scope="module")
def published() -> pd.DataFrame:
    """The published calibration summary, indexed by master customer id (the file's ID is the sample id)."""
    raw = pd.read_csv(DATA / "CDNOW_sample.txt", sep=r"\s+", header=None, names=["master", "sample", "date", "cds", "dollars"],
                      dtype={"master": str, "sample": int})
    ids = raw.drop_duplicates("sample").set_index("sample")["master"]
    summary = pd.read_csv(DATA / "cdnow_customers_summary.csv")
    return summary.assign(customer_id=summary["ID"].map(ids)).set_index("customer_id")


def test_the_split_is_the_papers(stage):
    _, _, data, _ = stage
    split = data.split
    assert (split.first_purchase, split.calibration_end, split.holdout_end) == (
        dt.date(1997, 1, 1), dt.date(1997, 9, 30), dt.date(1998, 6, 30))
    assert split.holdout_length == pytest.approx(39.0)  # weeks 40-78


@pytest.mark.parametrize("key", ["bgnbd", "pareto", "mbgnbd"])
def test_each_model_through_the_stage_reproduces_the_published_estimates(stage, key):
    _, _, data, fits = stage
    model = fits[key]
    assert model.converged_, model.message_
    for name, value in PUBLISHED[key].items():
        assert abs(model.params_[name] / value - 1) <= 0.005, f"{name}: {model.params_[name]:.5f} vs published {value}"


def test_gamma_gamma_through_the_stage_reproduces_the_published_estimates(stage):
    _, _, data, _ = stage
    assert len(clv.repeat_buyers(data.calibration)) == 946
    model = clv.fit_spend(data.calibration)
    assert model.converged_, model.message_
    for name, value in GAMMA_GAMMA.items():
        assert abs(model.params_[name] / value - 1) <= 0.005, f"{name}: {model.params_[name]:.4f} vs published {value}"


def test_the_day_level_summary_is_the_published_one(stage, published):
    """Every customer has the published x, t_x and T (2 decimals); nothing is quarantined."""
    _, cleaned, data, _ = stage
    ours = data.calibration.set_index("customer_id")
    assert len(published) == 2357 and len(ours) == 2357
    both = published.loc[ours.index]
    assert (ours["frequency"] == both["frequency"]).all()
    assert np.allclose(ours["recency"], both["recency"], atol=0.006) and np.allclose(ours["T"], both["T"], atol=0.006)
    assert cleaned.quarantine["transactions"].empty


def test_by_default_cleaning_drops_the_8_free_first_purchases(stage, published):
    cfg, _, _, _ = stage
    default = cfg.model_copy(update={"cleaning": cfg.cleaning.model_copy(update={"free_orders": "quarantine"})})
    quarantined = cleaning.clean(ingestion.ingest(default)[0], default).quarantine["transactions"]
    assert len(quarantined) == 8 and (quarantined["amount"].astype(float) == 0).all()
    assert (quarantined["rule"] == "cancelled_order").all()
    assert (published.loc[quarantined["customer_id"], "frequency"] == 0).all()  # none of them bought again


def test_the_engine_on_every_row_reproduces_the_published_summary_exactly(published, tmp_path):
    raw = pd.read_csv(DATA / "CDNOW_sample.txt", sep=r"\s+", header=None, names=["customer_id", "sample", "date", "cds", "dollars"],
                      dtype={"customer_id": str, "date": str})
    lines = pd.DataFrame({"order_id": np.arange(len(raw)).astype(str), "customer_id": raw["customer_id"],
                          "order_ts": pd.to_datetime(raw["date"], format="%Y%m%d"), "amount": raw["dollars"]})
    lines.to_parquet(tmp_path / "all.parquet", index=False)
    summary = engine.customer_summary(engine.connect(), tmp_path / "all.parquet", dt.date(1997, 9, 30), "weeks")
    summary = summary.set_index("customer_id").loc[published.index]
    assert (summary["frequency"].to_numpy() == published["frequency"].to_numpy()).all()
    assert np.allclose(summary["recency"].round(2), published["recency"], atol=1e-9)
    assert np.allclose(summary["T"].round(2), published["T"], atol=1e-9)


def test_cumulative_repeat_purchases_at_week_78(stage, record_property):
    """FHL (2005), Fig. 2: cumulative repeat transactions, actual vs predicted, weeks 1-78. Actual:
    4,339 repeat purchase days (6,919 purchases, 223 of them a second one on the same day, by 2,357
    customers). The models' forecasts (unconditional E[X(t)] summed over the cohort) are reported."""
    _, _, data, fits = stage
    track = clv.tracking(fits, data)
    week78 = track[track["period"] == 78].iloc[0]
    assert week78["period_end"] == dt.date(1998, 6, 30) and week78["days"] == 7
    assert week78["actual_cumulative"] == 6919 - 223 - 2357
    predicted = {key: float(week78[f"predicted_{key}_cumulative"]) for key in fits}
    for key, value in predicted.items():
        record_property(f"week78_predicted_{key}", round(value, 1))
    record_property("week78_actual", int(week78["actual_cumulative"]))
    print(f"\nweek 78 cumulative repeat purchases: actual {week78['actual_cumulative']:,}; "
          + "; ".join(f"{clv.MODEL_LABELS[k]} {v:,.0f} ({v / week78['actual_cumulative'] - 1:+.1%})" for k, v in predicted.items()))
    assert abs(predicted["bgnbd"] / week78["actual_cumulative"] - 1) < 0.05
    holdout = track[track["in_holdout"]]
    assert holdout["period"].min() == 40 and len(holdout) == 39
