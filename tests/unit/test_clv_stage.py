"""The 04 CLV stage functions (crmbook.clv, the part after the estimators) on small simulated data:
the output contract, the calibration / holdout split, the documented choice of model, fits that
do not converge or cannot be fitted, and 03's segment table being absent, present or half-written."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from crmbook import clv, config, report
from crmbook.errors import ConfigError

START = np.datetime64("2023-01-01")
AS_OF = dt.date(2024, 8, 23)  # day 600


def simulate(n=400, seed=0, days=600, signup_days=200, r=2.0, alpha=40.0, a=1.0, b=4.0, dropout=True) -> pd.DataFrame:
    """Clean transactions of a BG/NBD population (rates per day), one order per purchase."""
    rng = np.random.default_rng(seed)
    first = np.floor(rng.uniform(0, signup_days, n))
    lam = rng.gamma(r, 1 / alpha, n)
    p = rng.beta(a, b, n) if dropout else np.zeros(n)
    customers, times = [], []
    for i in range(n):
        t = first[i]
        customers.append(i)
        times.append(t)
        while True:
            t += rng.exponential(1 / lam[i])
            if t >= days:
                break
            customers.append(i)
            times.append(t)
            if rng.random() < p[i]:
                break
    times = np.array(times)
    return pd.DataFrame({
        "order_id": [f"O{j:06d}" for j in range(len(times))],
        "customer_id": [f"C{c:04d}" for c in customers],
        "order_ts": (START + (times * 86400).astype("timedelta64[s]")).astype("datetime64[us]"),
        "amount": np.round(rng.gamma(4.0, 10.0, len(times)), 2) + 1.0,
        "source": "sim.csv", "source_row": np.arange(len(times), dtype="int64") + 2,
    })


def make_run(tmp_path, transactions: pd.DataFrame, clv_section: str = "{}", extra: str = "") -> tuple[config.Config, object]:
    run_dir = tmp_path / "run"
    (run_dir / "tables").mkdir(parents=True)
    transactions.to_parquet(run_dir / "tables" / "clean_transactions.parquet", index=False)
    params = tmp_path / "params.yaml"
    params.write_text(f"run:\n  analysis_date: {AS_OF}\ndata:\n  sources:\n    transactions:\n      - path: sim.csv\n"
                      f"clv: {clv_section}\n{extra}", encoding="utf-8")
    return config.load(params), run_dir


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clv_stage")
    cfg, run_dir = make_run(tmp, simulate())
    result = clv.evaluate(cfg, run_dir)
    clv.save(run_dir, result)
    return cfg, run_dir, result


# ---------------------------------------------------------------------------- output contract


def test_tables_have_the_contract_columns(stage):
    cfg, run_dir, result = stage
    customers = pd.read_parquet(run_dir / "tables" / "clv_customers.parquet")
    assert tuple(customers.columns) == clv.CUSTOMER_COLUMNS
    assert customers["customer_id"].is_unique and customers["customer_id"].is_monotonic_increasing
    assert len(customers) == 400  # every customer of the whole history is scored
    assert customers["p_alive"].between(0, 1).all()
    assert (customers[["expected_purchases", "expected_avg_spend", "clv"]] >= 0).all().all()
    params = pd.read_csv(run_dir / "tables" / "clv_model_params.csv")
    assert list(params.columns) == ["model", "param", "estimate", "std_err"]
    assert params["model"].unique().tolist()[:4] == ["BG/NBD", "Pareto/NBD", "MBG/NBD", "Gamma-Gamma"]
    metrics = pd.read_csv(run_dir / "tables" / "clv_holdout_metrics.csv")
    assert tuple(metrics.columns) == clv.METRIC_COLUMNS
    assert metrics["selected"].sum() == 1
    tracking = pd.read_csv(run_dir / "tables" / "clv_tracking.csv")
    assert {"period", "period_end", "in_holdout", "actual", "actual_cumulative", "predicted_bgnbd_cumulative"} <= set(tracking)
    churn = pd.read_csv(run_dir / "tables" / "clv_churn_risk.csv", dtype={"customer_id": str})
    assert tuple(churn.columns) == clv.CHURN_COLUMNS  # ids and numbers only, no personal data


def test_two_runs_give_byte_identical_tables(stage, tmp_path):
    cfg, run_dir, _ = stage
    again, again_dir = make_run(tmp_path, pd.read_parquet(run_dir / "tables" / "clean_transactions.parquet"))
    clv.save(again_dir, clv.evaluate(again, again_dir))
    for name in ("clv_customers.parquet", "clv_model_params.csv", "clv_holdout_metrics.csv", "clv_tracking.csv",
                 "clv_by_frequency.csv", "clv_churn_risk.csv"):
        assert (run_dir / "tables" / name).read_bytes() == (again_dir / "tables" / name).read_bytes(), name


def test_tracking_adds_up(stage):
    _, _, result = stage
    data, track = result.data, result.tracking
    assert track["actual_cumulative"].iloc[-1] == data.current["frequency"].sum()  # every repeat purchase day once
    week = 30  # predicted: the new-customer expectation at each customer's age at the end of the week
    end_day = (result.split.first_purchase - dt.date(2023, 1, 1)).days + 7 * week
    ages = np.array([end_day - (d - dt.date(2023, 1, 1)).days for d in data.current["first_purchase"]], float)
    expected = result.fits["bgnbd"].expected_purchases_new(np.maximum(ages, 0) / 7).sum()
    assert track.loc[track["period"] == week, "predicted_bgnbd_cumulative"].item() == pytest.approx(expected, rel=1e-9)
    holdout = track[track["in_holdout"]]
    assert holdout["period_end"].iloc[0] > result.split.calibration_end


def test_summary_has_cards_and_three_to_five_findings_in_both_languages(stage):
    cfg, _, result = stage
    summary = clv.summarise(result, cfg)
    assert len(summary.cards) >= 4 and 3 <= len(summary.findings) <= 5
    zh = clv.summarise(result, cfg.model_copy(update={"report": cfg.report.model_copy(update={"language": "zh"})}))
    assert all(any("\u4e00" <= ch <= "\u9fff" for ch in line) for line in zh.findings)


# ---------------------------------------------------------------------------- the split


@pytest.mark.parametrize(("section", "origin", "calibration_end", "holdout_end"), [
    ("{}", "default", dt.date(2024, 2, 23), AS_OF),  # the last 26 weeks
    ("{holdout_weeks: 0}", "none", AS_OF, None),
    ("{holdout_weeks: 40}", "short", AS_OF, None),  # 600 days < 3 x 40 weeks
    ("{calibration_end: 2023-12-31, holdout_end: 2024-06-30}", "params", dt.date(2023, 12, 31), dt.date(2024, 6, 30)),
    ("{calibration_end: 2023-12-31}", "params", dt.date(2023, 12, 31), AS_OF),
])
def test_split_dates(tmp_path, section, origin, calibration_end, holdout_end):
    cfg, _ = make_run(tmp_path, simulate(n=5), section)
    split = clv.split_dates(cfg, dt.date(2023, 1, 1), AS_OF)
    assert (split.origin, split.calibration_end, split.holdout_end) == (origin, calibration_end, holdout_end)
    assert split.has_holdout == (holdout_end is not None)


def test_default_holdout_ends_on_the_last_day_with_purchases(tmp_path):
    cfg, _ = make_run(tmp_path, simulate(n=5))
    split = clv.split_dates(cfg, dt.date(2023, 1, 1), AS_OF, last_purchase=AS_OF - dt.timedelta(days=1))
    assert split.holdout_end == AS_OF - dt.timedelta(days=1)  # the analysis date itself holds no purchases
    assert split.holdout_end - split.calibration_end == dt.timedelta(weeks=26) and split.analysis_date == AS_OF


@pytest.mark.parametrize(("section", "key"), [
    ("{holdout_end: 2025-01-31, calibration_end: 2024-01-01}", "clv.holdout_end"),  # after the analysis date
    ("{calibration_end: 2022-06-30}", "clv.calibration_end"),  # before the first purchase
])
def test_split_dates_that_do_not_fit_the_data_name_the_key(tmp_path, section, key):
    cfg, _ = make_run(tmp_path, simulate(n=5), section)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        clv.split_dates(cfg, dt.date(2023, 1, 1), AS_OF)


@pytest.mark.parametrize(("section", "key"), [
    ("{calibration_end: 2024-01-01, holdout_end: 2023-12-01}", "clv.holdout_end"),
    ("{models: [bgnbd], model: pareto}", "clv.model"),
    ("{discounting: yearly}", "clv.discounting"),
    ("{horizon: 2}", "clv.horizon"),
])
def test_invalid_clv_params_are_config_errors(tmp_path, section, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        make_run(tmp_path, simulate(n=5), section)


def test_empty_section_works_and_documents_its_defaults():
    settings = config.ClvSection()
    assert (settings.time_unit, settings.holdout_weeks, settings.model, settings.penalizer) == ("weeks", 26, "auto", 0.0)


# ---------------------------------------------------------------------------- choice of model


def comparison(rows: dict[str, tuple[bool, float, float]]) -> pd.DataFrame:
    """key -> (converged, mae, bic)"""
    table = pd.DataFrame([{"model": clv.MODEL_LABELS[k], "converged": c, "mae": mae, "bic": bic, "log_likelihood": -bic / 2,
                           "message": "converged" if c else "gradient not small"} for k, (c, mae, bic) in rows.items()])
    table.index = list(rows)
    return table


def test_auto_picks_the_converged_fit_with_the_lowest_holdout_mae():
    table = comparison({"bgnbd": (False, 0.50, 90.0), "pareto": (True, 0.70, 100.0), "mbgnbd": (True, 0.60, 110.0)})
    assert clv.select_model(table, "auto", has_holdout=True) == ("mbgnbd", "clv_sel_mae")


def test_auto_without_a_holdout_picks_the_lowest_bic():
    table = comparison({"bgnbd": (True, np.nan, 105.0), "pareto": (True, np.nan, 100.0), "mbgnbd": (False, np.nan, 90.0)})
    assert clv.select_model(table, "auto", has_holdout=False) == ("pareto", "clv_sel_bic")


def test_auto_when_nothing_converged_uses_all_fits_and_says_so():
    table = comparison({"bgnbd": (False, 0.5, 90.0), "pareto": (False, 0.4, 100.0)})
    assert clv.select_model(table, "auto", has_holdout=True) == ("pareto", "clv_sel_mae_unconverged")


def test_ties_go_to_the_first_model_and_params_override():
    table = comparison({"bgnbd": (True, 0.5, 90.0), "pareto": (True, 0.5, 90.0)})
    assert clv.select_model(table, "auto", has_holdout=True)[0] == "bgnbd"
    assert clv.select_model(table, "pareto", has_holdout=True) == ("pareto", "clv_sel_params")


def test_choosing_a_model_that_could_not_be_fitted_is_an_error():
    table = comparison({"bgnbd": (True, 0.5, 90.0)})
    table.loc["pareto"] = ["Pareto/NBD", False, np.nan, np.nan, np.nan, "could not be fitted: boom"]
    with pytest.raises(RuntimeError, match="could not be fitted: boom"):
        clv.select_model(table, "pareto")


def test_the_stage_uses_the_rule(stage):
    _, _, result = stage
    converged = result.comparison[result.comparison["converged"]]
    assert result.selected == converged["mae"].astype(float).idxmin()
    assert result.comparison.loc[result.selected, "selected"]


# ---------------------------------------------------------------------------- fits that fail


@pytest.fixture(scope="module")
def unconverged(tmp_path_factory):
    """No drop-out and nearly equal purchase rates: every model's MLE runs to the edge of its
    parameter space (a, b or s, beta to a limit), so no fit converges."""
    cfg, run_dir = make_run(tmp_path_factory.mktemp("unconverged"), simulate(dropout=False, r=200, alpha=4000))
    return cfg, clv.evaluate(cfg, run_dir)


def test_unconverged_fits_are_reported_not_raised(unconverged):
    cfg, result = unconverged
    assert not any(fit.converged_ for fit in result.fits.values())
    assert result.selection_rule.endswith("_unconverged")
    summary = clv.summarise(result, cfg)
    first = summary.findings[0]
    assert first.startswith("Not converged") and all(name in first for name in ("BG/NBD", "Pareto/NBD", "MBG/NBD"))
    box = clv.convergence_note(result, "en").data
    assert "Hessian not positive definite" in box or "gradient not small" in box or "bound" in box
    table = clv.comparison_table(result, "en")
    assert (table[report.t("clv_col_converged")] == "no").all()
    params = clv.params_table(result)
    assert params.loc[params["model"] == "BG/NBD", "std_err"].isna().all()


def test_a_refit_that_does_not_converge_is_reported_and_not_used(stage, monkeypatch):
    cfg, _, result = stage
    stuck = clv.FailedFit("BG/NBD", "gradient not small")
    monkeypatch.setattr(clv, "fit_models", lambda summary, models, penalizer=0.0: {models[0]: stuck})
    final = clv.final_models(result.selected, result.fits, result.spend, result.data, cfg.clv)
    assert final.purchase is result.fits[result.selected] and not final.purchase_refitted
    spend_refit = clv.fit_spend(result.data.current)
    assert final.spend_refitted == spend_refit.converged_  # each refit is used only when it converged
    assert final.refit_failures[0] == (clv.MODEL_LABELS[result.selected] + " (full history)", "gradient not small")


def test_too_few_repeat_buyers_for_gamma_gamma_falls_back_to_observed_spend(tmp_path):
    sparse = simulate(n=60, alpha=4000.0)  # almost nobody buys twice
    cfg, run_dir = make_run(tmp_path, sparse, "{refit: false}")  # score with the calibration fits
    result = clv.evaluate(cfg, run_dir)
    assert isinstance(result.spend, clv.FailedFit) and "repeat buyer" in result.spend.message_
    assert ("Gamma-Gamma", result.spend.message_) in result.problems()
    assert result.scored.attrs["spend_source"] == "observed"
    assert np.isfinite(result.scored["clv"]).all()
    notes = clv.method_notes(result, cfg).data
    assert report.t("clv_m_spend_observed").split(" (")[0] in notes


# ---------------------------------------------------------------------------- 03's table


def test_without_03s_table_the_segments_are_computed_with_03s_rules(stage):
    cfg, run_dir, result = stage
    assert result.segment_source == "computed"
    assert result.by_segment["customers"].sum() == len(result.scored)


def test_03s_table_is_used_when_present_and_a_half_written_one_is_ignored(stage, tmp_path):
    cfg, run_dir, result = stage
    segments = pd.DataFrame({"customer_id": result.scored["customer_id"], "rfm_segment": "Champions"})
    segments.to_parquet(run_dir / "tables" / "customer_segments.parquet", index=False)
    try:
        labels, source = clv.rfm_segments(cfg, run_dir, result.split.analysis_date)
        assert source == "03" and set(labels) == {"Champions"}
        (run_dir / "tables" / "customer_segments.parquet").write_bytes(b"PAR1 half written")
        labels, source = clv.rfm_segments(cfg, run_dir, result.split.analysis_date)
        assert source == "computed" and len(labels) == len(result.scored)
    finally:
        (run_dir / "tables" / "customer_segments.parquet").unlink()


def test_acquisition_channel_when_the_customers_table_has_one(stage):
    _, _, result = stage
    customers = pd.DataFrame({"customer_id": result.scored["customer_id"],
                              "acquisition_channel": np.where(np.arange(len(result.scored)) % 2, "email", "search")})
    groups = clv.value_by_group(result.scored, clv.acquisition_channels(customers))
    assert set(groups["group"]) == {"email", "search"}
    assert groups["clv_share"].sum() == pytest.approx(1.0)
    assert clv.acquisition_channels(customers.drop(columns="acquisition_channel")) is None
    assert clv.acquisition_channels(None) is None


# ---------------------------------------------------------------------------- churn risk and value


def test_churn_risk_is_high_value_and_probably_gone():
    scored = pd.DataFrame({"customer_id": list("abcdefghij"), "revenue": [100, 90, 80, 70, 60, 50, 40, 30, 20, 10.0],
                           "orders": 1, "recency_days": 1, "p_alive": [0.9, 0.2, 0.4, 0.1, 0.9, 0.9, 0.9, 0.9, 0.9, 0.1],
                           "clv": 1.0})
    settings = config.ClvSection(churn_top_value_share=0.3, churn_p_alive_below=0.5)
    assert clv.churn_risk(scored, settings)["customer_id"].tolist() == ["b", "c"]  # j is gone but not high value


def test_top_share_and_deciles():
    scored = pd.DataFrame({"customer_id": [f"c{i:02d}" for i in range(20)], "clv": [100.0, 100.0] + [0.0] * 18})
    assert clv.top_share(scored) == 1.0
    deciles = clv.value_deciles(scored)
    assert deciles["customers"].tolist() == [2] * 10 and deciles["share"].iloc[0] == 1.0


# ---------------------------------------------------------------------------- the same results, cheaper


def test_tidy_summary_shares_one_date_object_per_day():
    days = pd.to_datetime(["2024-01-02", "2024-01-02", "2024-03-04", "2024-01-02"]).astype("datetime64[us]")
    frame = pd.DataFrame({"customer_id": ["b", "a", "d", "c"], "first_purchase": days, "last_purchase": days,
                          "revenue": 1.0, "monetary": 0.0, "aov": 1.0, "frequency": 0, "orders": 1, "purchase_days": 1,
                          "recency_days": 3, "recency": 0.0, "T": 2.0})
    tidy = clv._tidy_summary(frame)
    assert tidy["customer_id"].tolist() == ["a", "b", "c", "d"] and tidy["first_purchase"].dtype == object
    expected = pd.to_datetime(frame["first_purchase"]).dt.date.tolist()
    assert tidy["first_purchase"].tolist() == [expected[i] for i in (1, 0, 3, 2)]
    assert all(type(d) is dt.date for d in tidy["first_purchase"])
    assert len({id(d) for d in tidy["last_purchase"]}) == 2  # one object per distinct day
    assert frame["customer_id"].tolist() == ["b", "a", "d", "c"]  # the input is left as it was


def test_rfm_segments_from_the_summary_equal_the_ones_from_03s_features(stage):
    cfg, run_dir, result = stage
    queried, source = clv.rfm_segments(cfg, run_dir, result.split.analysis_date)
    from_summary, source_too = clv.rfm_segments(cfg, run_dir, result.split.analysis_date, summary=result.data.current)
    assert source == source_too == "computed"
    pd.testing.assert_series_equal(from_summary, queried)


def test_holdout_predictions_are_computed_once_for_the_same_tables(stage):
    _, _, result = stage
    predicted = clv.holdout_predictions(result.fits, result.data)
    assert set(predicted) == {k for k, f in result.fits.items() if hasattr(f, "params_")}
    alone = clv.compare_models(result.fits, result.data).drop(columns="selected")
    pd.testing.assert_frame_equal(clv.compare_models(result.fits, result.data, predicted).drop(columns="selected"), alone)
    pd.testing.assert_frame_equal(clv.conditional_by_frequency(result.fits, result.data, predicted=predicted), result.conditional)


def test_deciles_churn_and_groups_do_not_depend_on_the_row_order(stage):
    _, _, result = stage
    settings = config.ClvSection(churn_top_value_share=0.3, churn_p_alive_below=0.6)
    scored = result.scored.copy()
    scored.loc[scored.index[::7], "clv"] = scored["clv"].iloc[0]  # ties, broken by customer_id
    shuffled = scored.sample(frac=1.0, random_state=1)
    pd.testing.assert_frame_equal(clv.value_deciles(shuffled), clv.value_deciles(scored))
    pd.testing.assert_frame_equal(clv.churn_risk(shuffled, settings), clv.churn_risk(scored, settings))
    assert len(clv.churn_risk(scored, settings))
    groups = pd.Series(np.where(np.arange(len(scored)) % 3, "x", "y"), index=scored["customer_id"])
    aligned = clv.value_by_group(scored, groups)  # same customers, same order: no lookup
    pd.testing.assert_frame_equal(clv.value_by_group(scored, groups.sample(frac=1.0, random_state=2)), aligned)
    pd.testing.assert_frame_equal(clv.value_by_group(scored, groups.iloc[5:]), clv.value_by_group(scored, groups.iloc[5:].copy()))
    assert clv.value_by_group(scored, groups.iloc[5:])["group"].tolist().count("?") == 1
