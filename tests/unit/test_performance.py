"""crmbook.performance: KPI definitions on a hand-made table, cohort and funnel shapes, ROI
arithmetic, monitoring across runs, and runs with only one kind of table."""
from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crmbook import config, experiments, performance


def orders() -> pd.DataFrame:
    """Jan 2024: c1 orders o1 (two lines, 10 + 20) and o2 (30), c2 orders o3 (50).
    Feb: c1 o4 (40), c3 o5 (60). Mar: nothing. Apr: c2 o6 (100)."""
    rows = [("o1", "c1", "2024-01-05 10:00", 10.0), ("o1", "c1", "2024-01-05 10:00", 20.0), ("o2", "c1", "2024-01-20", 30.0),
            ("o3", "c2", "2024-01-31 23:59", 50.0), ("o4", "c1", "2024-02-01", 40.0), ("o5", "c3", "2024-02-29", 60.0),
            ("o6", "c2", "2024-04-10", 100.0)]
    frame = pd.DataFrame(rows, columns=["order_id", "customer_id", "order_ts", "amount"])
    return frame.assign(order_ts=pd.to_datetime(frame["order_ts"], format="ISO8601"))


def spend() -> pd.DataFrame:
    return pd.DataFrame({"period": pd.to_datetime(["2024-01-01", "2024-01-01", "2024-02-01"]),
                         "channel": ["email", "search", "email"], "spend": [60.0, 40.0, 50.0]})


def members() -> pd.DataFrame:
    """Campaign K: control 100 members (5 convert, revenue 10 each), treatment 200 (20 convert,
    revenue 10 each); funnel flags on the treatment only. Campaign S: one group."""
    def arm(group, n, converted, delivered, opened, clicked):
        return pd.DataFrame({"campaign_id": "K", "customer_id": [f"{group}{i}" for i in range(n)], "group": group,
                             "delivered": [1 if i < delivered else 0 for i in range(n)],
                             "opened": [1 if i < opened else 0 for i in range(n)],
                             "clicked": [1 if i < clicked else 0 for i in range(n)],
                             "converted": [1 if i < converted else 0 for i in range(n)],
                             "revenue": [10.0 if i < converted else 0.0 for i in range(n)]})
    single = pd.DataFrame({"campaign_id": "S", "customer_id": ["s1", "s2"], "group": "all", "delivered": 1, "opened": [1, 0],
                           "clicked": 0, "converted": [1, 0], "revenue": [5.0, 0.0]})
    frame = pd.concat([arm("control", 100, 5, 0, 0, 0), arm("treatment", 200, 20, 180, 90, 30), single], ignore_index=True)
    for col in ("delivered", "opened", "clicked", "converted"):
        frame[col] = frame[col].astype("Int64")
    return frame


# ------------------------------------------------------------------------------------------
# KPIs
# ------------------------------------------------------------------------------------------
def test_monthly_kpis_follow_their_definitions():
    kpis = performance.kpis_by_period(orders(), "month", spend(), as_of=dt.date(2024, 4, 30)).set_index("period")
    assert [str(p) for p in kpis.index] == ["2024-01-01", "2024-02-01", "2024-03-01", "2024-04-01"]
    jan, feb, mar, apr = (kpis.iloc[i] for i in range(4))
    assert (jan["revenue"], jan["orders"], jan["active_customers"], jan["new_customers"], jan["returning_customers"]) == (110, 3, 2, 2, 0)
    assert jan["aov"] == pytest.approx(110 / 3, abs=1e-6)
    assert jan["purchase_frequency"] == pytest.approx(1.5)
    assert jan["repeat_purchase_rate"] == pytest.approx(0.5)  # c1 ordered twice, c2 once
    assert math.isnan(jan["retention_rate"]) and math.isnan(jan["churn_rate"])  # no previous period
    assert jan["marketing_spend"] == 100 and jan["cac"] == pytest.approx(50)
    assert (feb["revenue"], feb["orders"], feb["active_customers"], feb["new_customers"], feb["returning_customers"]) == (100, 2, 2, 1, 1)
    assert feb["aov"] == pytest.approx(50) and feb["repeat_purchase_rate"] == 0
    assert feb["retention_rate"] == pytest.approx(0.5) and feb["churn_rate"] == pytest.approx(0.5)  # c1 of {c1, c2}
    assert feb["cac"] == pytest.approx(50)
    assert (mar["revenue"], mar["orders"], mar["active_customers"]) == (0, 0, 0)
    assert math.isnan(mar["aov"]) and mar["retention_rate"] == 0 and mar["churn_rate"] == 1
    assert math.isnan(mar["marketing_spend"]) and math.isnan(mar["cac"])
    assert (apr["revenue"], apr["active_customers"], apr["new_customers"], apr["returning_customers"]) == (100, 1, 0, 1)
    assert math.isnan(apr["retention_rate"])  # nobody was active in March


def test_quarter_and_week_grains():
    q = performance.kpis_by_period(orders(), "quarter", spend(), as_of=dt.date(2024, 6, 30)).set_index("period")
    q1, q2 = q.iloc[0], q.iloc[1]
    assert (q1["revenue"], q1["orders"], q1["active_customers"], q1["new_customers"]) == (210, 5, 3, 3)
    assert q1["repeat_purchase_rate"] == pytest.approx(1 / 3)  # c1 placed three orders
    assert q1["cac"] == pytest.approx(150 / 3)
    assert q2["retention_rate"] == pytest.approx(1 / 3)  # c2 of {c1, c2, c3}
    weeks = performance.kpis_by_period(orders(), "week", spend(), as_of=dt.date(2024, 4, 30))
    assert "cac" not in weeks.columns  # spend is monthly: no CAC per week
    assert weeks["period"].map(lambda d: d.weekday()).eq(0).all()  # weeks start on Monday
    assert weeks["revenue"].sum() == pytest.approx(310)
    assert weeks["orders"].sum() == 6
    with pytest.raises(ValueError, match="grain"):
        performance.kpis_by_period(orders(), "day")


def test_an_incomplete_last_period_is_left_out():
    kpis = performance.kpis_by_period(orders(), "month", as_of=dt.date(2024, 4, 15))
    assert str(kpis["period"].iloc[-1]) == "2024-03-01"
    kept = performance.kpis_by_period(orders(), "month", as_of=dt.date(2024, 4, 15), drop_incomplete=False)
    assert str(kept["period"].iloc[-1]) == "2024-04-01"


def test_kpis_long_has_changes_against_the_previous_period():
    wide = performance.kpis_by_period(orders(), "month", spend(), as_of=dt.date(2024, 4, 30))
    long = performance.kpis_long(wide)
    assert list(long.columns) == performance.KPI_COLUMNS
    feb = long[(long["period"] == "2024-02-01")].set_index("kpi")
    assert feb.loc["revenue", "previous"] == 110 and feb.loc["revenue", "change_abs"] == -10
    assert feb.loc["revenue", "change_rel"] == pytest.approx(-10 / 110, abs=1e-6)
    assert list(long["period"]) == sorted(long["period"])
    latest = performance.latest_kpis(long)
    assert set(latest["period"]) == {"2024-04-01"}


# ------------------------------------------------------------------------------------------
# cohorts and funnels
# ------------------------------------------------------------------------------------------
def test_cohort_retention_shape(tmp_path):
    path = tmp_path / "clean_transactions.parquet"
    orders().to_parquet(path, index=False)
    cohorts = performance.cohort_retention(path)
    assert list(cohorts.columns) == performance.COHORT_COLUMNS
    cells = {(c, m): (n, size) for c, m, n, size in cohorts[["cohort", "months_since", "customers", "cohort_size"]].itertuples(index=False)}
    assert cells == {("2024-01-01", 0): (2, 2), ("2024-01-01", 1): (1, 2), ("2024-01-01", 3): (1, 2), ("2024-02-01", 0): (1, 1)}
    jan = cohorts.set_index(["cohort", "months_since"])
    assert jan.loc[("2024-01-01", 1), "retention"] == 0.5
    assert jan.loc[("2024-01-01", 0), "revenue"] == 110 and jan.loc[("2024-01-01", 0), "revenue_per_customer"] == 55
    matrix = performance.cohort_matrix(cohorts, "retention", max_months=12)
    assert matrix.shape == (2, 4) and matrix.loc["2024-01-01", 0] == 1.0 and math.isnan(matrix.loc["2024-01-01", 2])


def test_funnel_counts_and_shares():
    f = performance.funnels(members())
    assert list(f.columns) == performance.FUNNEL_COLUMNS
    treat = f[(f["campaign_id"] == "K") & (f["group"] == "treatment")].set_index("stage")
    assert list(treat.index) == ["members", "delivered", "opened", "clicked", "converted"]  # no visited column
    assert list(treat["customers"]) == [200, 180, 90, 30, 20]
    assert treat.loc["opened", "pct_of_first"] == pytest.approx(0.45)
    assert treat.loc["opened", "pct_of_previous"] == pytest.approx(0.5)
    assert math.isnan(treat.loc["members", "pct_of_previous"])
    control = f[(f["campaign_id"] == "K") & (f["group"] == "control")].set_index("stage")
    assert control.loc["delivered", "customers"] == 0 and math.isnan(control.loc["opened", "pct_of_previous"])
    with_visits = members().assign(visited=pd.array([1, 0] * 151, dtype="Int64"))
    assert "visited" in performance.funnel_stages(with_visits)
    assert performance.funnel_stages(with_visits)[-2:] == ["visited", "converted"]


# ------------------------------------------------------------------------------------------
# experiments and ROI
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("sizes", "control"), [
    ({"Mens E-Mail": 10, "No E-Mail": 9, "Womens E-Mail": 11}, "No E-Mail"),
    ({"treatment": 10, "control": 10}, "control"),
    ({"A": 5, "B": 7, "C": 6}, "B"),
    ({"Nordic": 3, "Alpine": 9}, "Alpine"),  # "no" must be a whole word
    ({"Holdout": 2, "Offer": 9}, "Holdout"),
])
def test_default_control_group(sizes, control):
    assert performance.default_control(sizes) == control


def test_plans_use_params_and_skip_single_group_campaigns():
    plans, skipped = performance.plan_experiments(members(), ["converted", "revenue", "visited"])
    assert [p.campaign_id for p in plans] == ["K"] and skipped == [("S", "one_group")]
    plan = plans[0]
    assert plan.control == "control" and plan.variants == ("treatment",)
    assert plan.metrics == ("converted", "revenue") and plan.rates == ("converted",) and plan.pre_col is None
    with pytest.raises(ValueError, match="not a group of campaign K"):
        performance.plan_experiments(members(), ["converted"], control_groups={"K": "nobody"})
    plans, _ = performance.plan_experiments(members(), ["converted"], control_groups={"K": "treatment"})
    assert plans[0].control == "treatment"


def test_equal_split_expected_by_default_so_a_100_200_split_is_a_sample_ratio_mismatch():
    cfg = config.Config()
    result = performance.evaluate({"campaign_members": members()}, cfg, Path("/nonexistent/run"))
    assert result.experiments["srm_p"].iloc[0] < experiments.SRM_ALPHA
    assert performance.experiment_verdicts(result, cfg)[0].startswith("K: do not trust these results")
    planned = config.Config(performance={"expected_shares": {"K": {"control": 1 / 3, "treatment": 2 / 3}}})
    result = performance.evaluate({"campaign_members": members()}, planned, Path("/nonexistent/run"))
    assert result.experiments["srm_p"].iloc[0] == pytest.approx(1.0)
    assert performance.experiment_verdicts(result, planned)[0].startswith("K · treatment vs control: conversion rate 10.00% vs 5.00%")


def test_analyse_campaigns_keeps_analyse_experiment_columns():
    plans, _ = performance.plan_experiments(members(), ["converted", "revenue"])
    table, failed = performance.analyse_campaigns(members(), plans, level=0.9)
    assert failed == [] and list(table.columns) == experiments.RESULT_COLUMNS
    row = table[(table["variant"] == "treatment") & (table["metric"] == "converted")].iloc[0]
    assert row["experiment"] == "K" and row["lift_abs"] == pytest.approx(0.05)
    assert row["lift_abs_ci_low"] < 0.05 < row["lift_abs_ci_high"]


def test_roi_arithmetic():
    plans, _ = performance.plan_experiments(members(), ["converted", "revenue"])
    campaigns = pd.DataFrame({"campaign_id": ["K"], "cost": [100.0]})
    roi = performance.campaign_roi(members(), plans, campaigns).iloc[0]
    assert roi["conversion_rate_control"] == 0.05 and roi["conversion_rate_variant"] == 0.10
    assert roi["incremental_conversions"] == pytest.approx((0.10 - 0.05) * 200)
    assert roi["incremental_revenue"] == pytest.approx((1.0 - 0.5) * 200)
    assert roi["cost"] == 100  # the control got no message: all deliveries, all cost, are the treatment's
    assert roi["roi"] == pytest.approx(0.0)  # (100 - 100) / 100
    assert roi["cost_per_incremental_conversion"] == pytest.approx(10.0)
    assert roi["incremental_conversions_ci_low"] < 10 < roi["incremental_conversions_ci_high"]
    half = performance.campaign_roi(members(), plans, campaigns, gross_margin=0.5).iloc[0]
    assert half["roi"] == pytest.approx(-0.5)
    no_cost = performance.campaign_roi(members(), plans, None).iloc[0]
    assert math.isnan(no_cost["cost"]) and math.isnan(no_cost["roi"])


def test_roi_splits_cost_by_deliveries_and_adds_a_total_row():
    three = members()
    extra = three[three["group"] == "treatment"].assign(group="second", customer_id=lambda f: "x" + f["customer_id"])
    three = pd.concat([three, extra], ignore_index=True)
    plans, _ = performance.plan_experiments(three, ["converted", "revenue"])
    roi = performance.campaign_roi(three, plans, pd.DataFrame({"campaign_id": ["K"], "cost": [90.0]})).set_index("variant")
    assert roi.loc["second", "cost"] == pytest.approx(45) and roi.loc["treatment", "cost"] == pytest.approx(45)
    total = roi.loc[performance.ALL_VARIANTS]
    assert total["cost"] == 90 and total["incremental_revenue"] == pytest.approx(200)
    assert total["roi"] == pytest.approx((200 - 90) / 90, abs=1e-6)


# ------------------------------------------------------------------------------------------
# monitoring
# ------------------------------------------------------------------------------------------
def write_run(reports: Path, name: str, revenue: float, orders_: float, period: str = "2024-03-01") -> Path:
    folder = reports / name / "tables"
    folder.mkdir(parents=True)
    pd.DataFrame({"period": ["2024-02-01", "2024-02-01", period, period], "kpi": ["revenue", "orders", "revenue", "orders"],
                  "value": [1.0, 1.0, revenue, orders_]}).to_csv(folder / "kpis.csv", index=False)
    return folder.parent


def current_kpis(revenue: float, orders_: float) -> pd.DataFrame:
    return pd.DataFrame({"period": ["2024-03-01", "2024-03-01"], "kpi": ["revenue", "orders"], "value": [revenue, orders_],
                         "previous": float("nan"), "change_abs": float("nan"), "change_rel": float("nan")})


def test_earlier_runs_ignore_failed_partial_latest_and_empty_folders(tmp_path):
    reports = tmp_path / "reports"
    write_run(reports, "20240101-000000-demo", 100, 10)
    write_run(reports, "20240102-000000-demo", 100, 10)
    write_run(reports, "20240103-000000-demo.failed", 5, 5)
    write_run(reports, ".20240103-000001-demo.partial", 5, 5)
    (reports / "20240103-000002-demo" / "tables").mkdir(parents=True)  # no kpis.csv (e.g. an experiment-only run)
    (reports / "latest").symlink_to("20240102-000000-demo")
    write_run(reports, "20240105-000000-demo", 5, 5)  # later than this run
    write_run(reports, "20240102-000000-shop", 5, 5)  # another params file: other KPIs
    write_run(reports, "20240102-000000-demo-2", 100, 10)  # a second run started in the same second
    current = reports / ".20240104-000000-demo.partial"
    current.mkdir()
    assert performance.run_id_of(current) == "20240104-000000-demo"
    assert [rid for rid, _ in performance.earlier_runs(current)] == [
        "20240101-000000-demo", "20240102-000000-demo", "20240102-000000-demo-2"]
    lab = reports / "_lab"  # a notebook opened in JupyterLab compares with every run
    lab.mkdir()
    assert len(performance.earlier_runs(lab)) == 5


def test_alert_fires_beyond_the_threshold_and_not_below(tmp_path):
    earlier = [("r1", current_kpis(80, 10)), ("r2", current_kpis(100, 10))]
    history = performance.kpi_history(current_kpis(125, 11.9), "r3", earlier, threshold=0.2)
    assert list(history.columns) == performance.HISTORY_COLUMNS
    assert list(history["run_id"].unique()) == ["r1", "r2", "r3"]
    now = history[history["run_id"] == "r3"].set_index("kpi")
    assert now.loc["revenue", "change_rel"] == pytest.approx(0.25) and bool(now.loc["revenue", "alert"])
    assert now.loc["orders", "change_rel"] == pytest.approx(0.19) and not bool(now.loc["orders", "alert"])
    assert list(performance.alerts(history, "r3")["kpi"]) == ["revenue"]
    r2 = history[history["run_id"] == "r2"].set_index("kpi")
    assert r2.loc["revenue", "change_rel"] == pytest.approx(0.25) and bool(r2.loc["revenue", "alert"])
    calm = performance.kpi_history(current_kpis(110, 10), "r3", earlier, threshold=0.2)
    assert performance.alerts(calm, "r3").empty
    watched = performance.kpi_history(current_kpis(125, 11.9), "r3", earlier, threshold=0.2, watched=["orders"])
    assert set(watched["kpi"]) == {"orders"}


def test_monitoring_through_evaluate_reads_earlier_runs_and_reports_the_alert(tmp_path):
    reports = tmp_path / "reports"
    write_run(reports, "20240101-000000-demo", 100, 10, period="2024-04-01")
    write_run(reports, "20240102-000000-demo", 400, 6, period="2024-04-01")
    run_dir = reports / ".20240103-000000-demo.partial"
    run_dir.mkdir()
    cfg = config.Config(run={"analysis_date": "2024-04-30"}, performance={"alert_threshold": 0.2})
    result = performance.evaluate({"transactions": orders()}, cfg, run_dir)
    assert result.earlier_run_ids == ["20240101-000000-demo", "20240102-000000-demo"]
    found = result.alerts.set_index("kpi")
    assert set(found.index) == {"revenue", "orders"}  # 400 -> 100 and 6 -> 1
    assert found.loc["revenue", "change_rel"] == pytest.approx(-0.75)
    line = performance.monitoring_line(result, cfg)
    assert "2 KPI alert(s)" in line and "20240102-000000-demo" in line and "Net revenue -75%" in line
    summary = performance.summarise(result, cfg)
    assert summary.findings[-1] == line
    assert dict((c.label, c.value) for c in summary.cards)["Monitoring"].startswith("⚠ 2 alert(s)")
    performance.save(run_dir, result)
    history = pd.read_csv(run_dir / performance.HISTORY_FILE)
    assert list(history["run_id"].unique()) == ["20240101-000000-demo", "20240102-000000-demo", "20240103-000000-demo"]


def test_first_run_has_nothing_to_compare(tmp_path):
    run_dir = tmp_path / "reports" / "20240102-000000-demo"
    run_dir.mkdir(parents=True)
    empty = tmp_path / "reports" / "20240101-000000-demo" / "tables"  # an earlier run without KPIs
    empty.mkdir(parents=True)
    pd.DataFrame(columns=performance.KPI_COLUMNS).to_csv(empty / "kpis.csv", index=False)
    cfg = config.Config(run={"analysis_date": "2024-04-30"})
    result = performance.evaluate({"transactions": orders()}, cfg, run_dir)
    assert result.earlier_run_ids == [] and result.alerts.empty
    assert "first run" in performance.monitoring_line(result, cfg)


# ------------------------------------------------------------------------------------------
# runs with one kind of table, determinism
# ------------------------------------------------------------------------------------------
def test_only_campaign_members(tmp_path):
    cfg = config.Config()
    result = performance.evaluate({"campaign_members": members()}, cfg, tmp_path / "run")
    assert not result.has_transactions and result.kpis.empty and result.cohorts.empty and result.history.empty
    assert [p.campaign_id for p in result.plans] == ["K"] and len(result.experiments) == 4
    summary = performance.summarise(result, cfg)
    assert 3 <= len(summary.findings) <= 5 and "no KPIs" in summary.findings[-1]
    assert performance.kpi_table(result, cfg).empty and performance.chart_history(result, cfg) is None
    performance.save(tmp_path / "run", result)
    kpis = pd.read_csv(tmp_path / "run" / "tables" / "kpis.csv")
    assert kpis.empty and list(kpis.columns) == performance.KPI_COLUMNS
    assert len(pd.read_csv(tmp_path / "run" / "tables" / "experiments.csv")) == 4


def test_only_transactions(tmp_path):
    cfg = config.Config(run={"analysis_date": "2024-04-30"})
    (tmp_path / "run" / "tables").mkdir(parents=True)
    orders().to_parquet(tmp_path / "run" / "tables" / "clean_transactions.parquet", index=False)
    result = performance.evaluate({"transactions": orders()}, cfg, tmp_path / "run")
    assert result.has_transactions and not result.has_members and len(result.cohorts) == 4
    assert result.experiments.empty and result.funnels.empty and result.roi.empty and result.plans == []
    summary = performance.summarise(result, cfg)
    assert summary.cards[0].label == "Net revenue" and summary.cards[0].value == "USD 100.00"
    assert 3 <= len(summary.findings) <= 5
    assert performance.experiment_table(result, cfg).empty and performance.roi_table(result, cfg).empty
    performance.save(tmp_path / "run", result)
    experiments_csv = pd.read_csv(tmp_path / "run" / "tables" / "experiments.csv")
    assert experiments_csv.empty and list(experiments_csv.columns) == experiments.RESULT_COLUMNS


def test_same_inputs_give_byte_identical_tables(tmp_path):
    cfg = config.Config(run={"analysis_date": "2024-04-30"})
    outputs = []
    for name in ("a", "b"):
        run = tmp_path / name / "run"
        (run / "tables").mkdir(parents=True)
        orders().to_parquet(run / "tables" / "clean_transactions.parquet", index=False)
        tables = {"transactions": orders().sample(frac=1, random_state=len(name) + ord(name)), "campaign_members": members(),
                  "channel_spend": spend(), "campaigns": pd.DataFrame({"campaign_id": ["K"], "cost": [100.0]})}
        performance.save(run, performance.evaluate(tables, cfg, run))
        outputs.append({p.name: p.read_bytes() for p in sorted((run / "tables").glob("*.csv"))})
    assert outputs[0] == outputs[1]
    assert set(outputs[0]) == {"kpis.csv", "cohort_retention.csv", "experiments.csv", "funnels.csv", "campaign_roi.csv"}


def test_zh_summary_and_sparkline():
    from crmbook.plots import performance as charts

    cfg = config.Config(run={"analysis_date": "2024-04-30"}, report={"language": "zh"},
                        performance={"expected_shares": {"K": {"control": 1, "treatment": 2}}})
    result = performance.evaluate({"transactions": orders(), "campaign_members": members()}, cfg, Path("/nonexistent/run"))
    summary = performance.summarise(result, cfg)
    assert summary.cards[0].label == "净收入" and any("K · treatment 对比 control" in f for f in summary.findings)
    svg = charts.sparkline_svg([1, 3, 2, float("nan"), 4], title="x")
    assert svg.startswith("<svg") and "<polyline" in svg and "script" not in svg
    assert charts.sparkline_svg([1.0]) == ""


def _pandas_period_activity(tx: pd.DataFrame, grain: str) -> pd.DataFrame:
    """The per-period counts straight from their definitions, in pandas (the reference)."""
    lines = tx.assign(ordinal=performance.periods(tx["order_ts"], grain).asi8)
    cust = lines.groupby(["customer_id", "ordinal"]).agg(orders=("order_id", "nunique"), revenue=("amount", "sum")).reset_index()
    cust["new"] = cust["ordinal"].eq(cust.groupby("customer_id")["ordinal"].transform("min"))
    keys = set(zip(cust["customer_id"], cust["ordinal"]))
    cust["retained"] = [(c, o - 1) in keys for c, o in zip(cust["customer_id"], cust["ordinal"])]
    cust["repeaters"] = cust["orders"] >= 2
    out = cust.groupby("ordinal").agg(revenue=("revenue", "sum"), orders=("orders", "sum"), active_customers=("customer_id", "size"),
                                      new_customers=("new", "sum"), repeaters=("repeaters", "sum"), retained=("retained", "sum"))
    out.index = pd.PeriodIndex.from_ordinals(out.index, freq=performance.FREQ[grain]).start_time.date
    return out


@pytest.mark.parametrize("grain", ["week", "month", "quarter"])
def test_period_activity_on_duckdb_equals_pandas_from_a_frame_and_a_file(tmp_path, grain):
    from crmbook import engine

    rng = np.random.default_rng(3)
    n = 20_000
    tx = pd.DataFrame({"order_id": (np.arange(n) // 2).astype(str), "customer_id": rng.integers(0, 900, n).astype(str),
                       "order_ts": pd.Timestamp("2023-01-01") + pd.to_timedelta(rng.integers(0, 600 * 24, n), unit="h"),
                       "amount": rng.gamma(2.0, 30.0, n).round(2)})
    expected = _pandas_period_activity(tx, grain)
    path = tmp_path / "clean_transactions.parquet"
    tx.to_parquet(path)
    for source in (tx, path):
        got = engine.period_activity(engine.connect(threads=2), source, grain).set_index("period")
        assert [pd.Timestamp(d).date() for d in got.index] == list(expected.index)
        for col in ("orders", "active_customers", "new_customers", "repeaters", "retained"):
            assert got[col].tolist() == expected[col].astype("int64").tolist(), col
        np.testing.assert_allclose(got["revenue"], expected["revenue"], rtol=0, atol=1e-6)
    pd.testing.assert_frame_equal(performance.kpis_by_period(path, grain), performance.kpis_by_period(tx, grain))


def test_kpis_from_a_frame_use_wall_clock_times_and_skip_rows_without_time_or_customer():
    """A frame's time-zone-aware times count in their own zone's calendar (as pandas periods do),
    whatever the machine's zone; rows without a time or a customer are not activity."""
    tx = pd.DataFrame({"order_id": ["1", "2", "3", "4"], "customer_id": ["a", "b", None, "c"],
                       "order_ts": pd.to_datetime(["2024-01-31 23:30", "2024-02-01 00:30", "2024-02-02 00:00", None])
                       .tz_localize("Asia/Shanghai"), "amount": [10.0, 20.0, 30.0, 40.0]})
    kpis = performance.kpis_by_period(tx, "month", drop_incomplete=False).set_index("period")
    assert [str(p) for p in kpis.index] == ["2024-01-01", "2024-02-01"]
    assert kpis["revenue"].tolist() == [10.0, 20.0] and kpis["active_customers"].tolist() == [1, 1]


def test_06_ignores_a_transactions_file_its_params_do_not_list(tmp_path):
    """An experiments-only scenario (no transactions source) in a folder with an earlier run's
    clean transactions reports no KPIs from them."""
    run = tmp_path / "run"
    (run / "tables").mkdir(parents=True)
    orders().to_parquet(run / "tables" / "clean_transactions.parquet")
    result = performance.evaluate({"campaign_members": members()}, config.Config(), run)
    assert result.kpis.empty and not result.has_transactions
