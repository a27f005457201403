"""The 05 attribution stage: journeys from a touch log on DuckDB (equal to the pandas
aggregation), paths files, the model line-up and its intervals, outputs, economics."""
from __future__ import annotations

import filecmp
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crmbook import attribution as A
from crmbook import cleaning, config, engine
from crmbook.errors import InputError
from tests.conftest import ROOT, write_params

CA_SAMPLE = ROOT / "tests" / "data" / "attribution" / "channelattribution_Data.csv"
DAY = pd.Timedelta(days=1)


# --------------------------------------------------------------------------------------------
# A pandas reference for the journey rules, written independently of the SQL
# --------------------------------------------------------------------------------------------
def reference_journeys(touch: pd.DataFrame, orders: pd.DataFrame, lookback_days: int) -> pd.DataFrame:
    """One row per touch with journey_id, ts, channel, converted, value (aggregate_journeys' input)."""
    conv = (orders.groupby(["customer_id", "order_id"], as_index=False)
            .agg(conv_ts=("order_ts", "min"), value=("amount", "sum"))
            .sort_values(["customer_id", "conv_ts", "order_id"])
            .drop_duplicates(["customer_id", "conv_ts"], keep="first")
            .sort_values("conv_ts"))
    t = touch.dropna(subset=["customer_id", "ts", "channel"])[["customer_id", "ts", "channel"]].sort_values("ts")
    m = pd.merge_asof(t, conv, left_on="ts", right_on="conv_ts", by="customer_id", direction="forward")
    claimed = m["conv_ts"].notna() & ((m["conv_ts"] - m["ts"]) <= lookback_days * DAY)
    gap = m["customer_id"].astype(str) + "|" + m["conv_ts"].astype(str).fillna("after the last order")
    anchor = m["ts"].where(~claimed).groupby(gap.where(~claimed)).transform("min")
    tile = ((m["ts"] - anchor) // (lookback_days * DAY)).where(~claimed)
    return pd.DataFrame({
        "journey_id": np.where(claimed, "c|" + gap, "n|" + gap + "|" + tile.astype(str)),
        "ts": m["ts"], "channel": m["channel"], "converted": claimed,
        "value": np.where(claimed, m["value"], 0.0),
    }).sort_values(["ts", "channel"], kind="stable")


def by_path(paths: pd.DataFrame) -> pd.DataFrame:
    out = paths.assign(key=paths["path"].map(" > ".join)).sort_values("key")
    return out.drop(columns="key").reset_index(drop=True)


def assert_same_paths(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    got, expected = by_path(got), by_path(expected)
    assert got["path"].tolist() == expected["path"].tolist()
    for col in ("conversions", "nulls"):
        assert got[col].tolist() == expected[col].tolist(), col
    np.testing.assert_allclose(got["value"], expected["value"], rtol=1e-12, atol=1e-6)


def duckdb_paths(touch_file: Path, orders_file: Path, lookback_days: int, drop=()) -> tuple[pd.DataFrame, A.JourneyStats]:
    con = engine.connect(memory_limit="1GB")
    try:
        A._load_touch_log(con, touch_file, orders_file)
        return A.journey_paths(con, lookback_days, drop)
    finally:
        con.close()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny messy demo (300 customers), ingested and cleaned into a run folder."""
    from crmbook import synth

    folder = tmp_path_factory.mktemp("stage")
    data = synth.generate(folder / "tiny", customers=300, seed=42, messy=True)
    cfg = config.load(write_params(folder, data))
    run_dir = folder / "run"
    tables = cleaning.load_clean(cfg, run_dir)
    return {"cfg": cfg, "run_dir": run_dir, "tables": tables, "data": data, "folder": folder}


# --------------------------------------------------------------------------------------------
# Journeys: DuckDB == pandas
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("lookback", [3, 14, 30])
@pytest.mark.parametrize("drop_direct", [False, True])
def test_duckdb_journeys_equal_the_pandas_aggregation(tiny, lookback, drop_direct):
    tables, tdir = tiny["tables"], tiny["run_dir"] / "tables"
    drop = ("direct",) if drop_direct else ()
    got, stats = duckdb_paths(tdir / "clean_touchpoints.parquet", tdir / "clean_transactions.parquet", lookback, drop)
    journeys = reference_journeys(tables["touchpoints"], tables["transactions"], lookback)
    expected = A.aggregate_journeys(journeys, drop_channels=drop)
    assert_same_paths(got, expected)
    assert stats.converting == expected["conversions"].sum()
    assert stats.journeys == (expected["conversions"] + expected["nulls"]).sum()
    assert stats.orders == tables["transactions"]["order_id"].nunique()


def write_log(folder: Path, touches: list[tuple], orders: list[tuple]) -> tuple[Path, Path]:
    t0 = pd.Timestamp("2024-01-01")
    touch = pd.DataFrame(touches, columns=["customer_id", "day", "channel"])
    touch["ts"] = t0 + pd.to_timedelta(touch.pop("day"), unit="D")
    tx = pd.DataFrame(orders, columns=["order_id", "customer_id", "day", "amount"])
    tx["order_ts"] = t0 + pd.to_timedelta(tx.pop("day"), unit="D")
    touch.to_parquet(folder / "touch.parquet")
    tx.to_parquet(folder / "orders.parquet")
    return folder / "touch.parquet", folder / "orders.parquet"


def test_journey_rules_on_a_hand_made_log(tmp_path):
    touches = [
        ("a", 0, "email"), ("a", 5, "search"), ("a", 10, "direct"),   # order a1 on day 10: touch at the same instant counts
        ("a", 11, "social"), ("a", 50, "email"),                      # a2 on day 60: day 11 is 49 days before (outside 30)
        ("a", 70, "display"), ("a", 71, "email"), ("a", 105, "display"),  # after the last order: windows of 30 days
        ("b", 1, "direct"),                                           # b1 on day 2: only direct
        ("c", 3, "email"),                                            # c never orders
        ("d", 40, "search"), ("d", 40, "email"),                      # same instant: ties by channel name
    ]
    orders = [("a1", "a", 10, 20.0), ("a1", "a", 10, 5.0), ("a2", "a", 60, 30.0), ("a3", "a", 60, 99.0),
              ("b1", "b", 2, 7.0), ("d1", "d", 41, 1.5), ("e1", "e", 5, 3.0)]
    files = write_log(tmp_path, touches, orders)
    got, stats = duckdb_paths(*files, 30)
    expected = A.parse_paths(pd.DataFrame([
        ("email > search > direct", 1, 25.0, 0),   # a1 (two lines netted into one order value)
        ("email", 1, 30.0, 1),                     # a2 (a3 at the same instant has no journey); c's touch
        ("social", 0, 0.0, 1),                     # a: day 11, older than 30 days before a2
        ("display > email", 0, 0.0, 1),            # a: days 70 and 71
        ("display", 0, 0.0, 1),                    # a: day 105, the next 30-day window
        ("direct", 1, 7.0, 0),                     # b1
        ("email > search", 1, 1.5, 0),             # d1, tie at day 40 ordered by name
    ], columns=["path", "total_conversions", "total_conversion_value", "total_null"]))
    expected = expected.groupby("path", as_index=False).sum()
    assert_same_paths(got, expected)
    assert (stats.orders, stats.converting, stats.unattributed) == (6, 4, 2)  # a3 and e1 are not reached
    dropped, _ = duckdb_paths(*files, 30, ("direct",))
    assert ("direct",) not in set(dropped["path"]) and dropped["conversions"].sum() == 3  # b1 is lost
    assert ("email", "search") in set(dropped["path"])


def test_the_lookback_window_bounds_a_journey(tmp_path):
    files = write_log(tmp_path, [("a", 0, "email"), ("a", 7, "search")], [("a1", "a", 7, 1.0)])
    for days, expected in ((7, {("email", "search"): (1, 0)}), (6, {("search",): (1, 0), ("email",): (0, 1)})):
        got, _ = duckdb_paths(*files, days)
        assert {p: (c, n) for p, c, n in zip(got["path"], got["conversions"], got["nulls"])} == expected


# --------------------------------------------------------------------------------------------
# Raw touch log, its aggregated paths and the paths file give the same results
# --------------------------------------------------------------------------------------------
def test_raw_log_and_its_aggregated_paths_give_identical_markov_results(tiny, tmp_path):
    tables, tdir = tiny["tables"], tiny["run_dir"] / "tables"
    from_sql, _ = duckdb_paths(tdir / "clean_touchpoints.parquet", tdir / "clean_transactions.parquet", 14)
    from_pandas = A.aggregate_journeys(reference_journeys(tables["touchpoints"], tables["transactions"], 14))
    A.paths_to_channelattribution(from_sql).to_csv(tmp_path / "paths.csv", sep=";", index=False)
    from_file = A.read_paths_file(tmp_path / "paths.csv")
    results = [A.markov_removal_effects(p, 1) for p in (from_sql, from_pandas, from_file)]
    for res in results[1:]:
        assert res.p_conversion == pytest.approx(results[0].p_conversion, rel=1e-12)
        pd.testing.assert_series_equal(res.removal_effects, results[0].removal_effects, rtol=1e-12)
    frames = [A.markov_attribution(p, 1).set_index("channel")["conversions"] for p in (from_sql, from_pandas, from_file)]
    for frame in frames[1:]:
        pd.testing.assert_series_equal(frame, frames[0], rtol=1e-12)


def test_the_channelattribution_sample_reads_as_a_paths_file():
    paths = A.read_paths_file(CA_SAMPLE)
    assert paths["conversions"].sum() == 19_785 and paths["nulls"].sum() == 68_602
    assert paths["value"].sum() == pytest.approx(74_802.97, abs=0.01)
    dropped = A.read_paths_file(CA_SAMPLE, drop_channels=["alpha"])
    assert not any("alpha" in p for p in dropped["path"])


def test_paths_file_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match="paths file not found"):
        A.read_paths_file(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("route;n\na > b;1\n")
    with pytest.raises(InputError, match="bad.csv.*total_conversions"):
        A.read_paths_file(bad)


# --------------------------------------------------------------------------------------------
# Lookback from the data
# --------------------------------------------------------------------------------------------
def curve(rate: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"days_before": np.arange(len(rate)), "touches": 0, "at_risk": 100, "rate": rate})


def test_auto_lookback_finds_a_step_and_scales_with_a_decay():
    step = np.where(np.arange(90) < 14, 0.30, 0.05)
    assert A.choose_lookback(curve(step), 30)[:2] == (14, "auto")
    decay = 0.05 + 0.4 * np.exp(-np.arange(90) / 6.0)  # excess below 10% of its peak after 6 ln 10 = 13.8 days
    assert A.choose_lookback(curve(decay), 30)[:2] == (14, "auto")


def test_auto_lookback_falls_back_when_the_data_cannot_tell():
    assert A.choose_lookback(curve(np.full(90, 0.05)), 30)[:2] == (30, "fallback")
    thin = np.full(90, np.nan)
    thin[:10] = 0.3
    assert A.choose_lookback(curve(thin), 21)[:2] == (21, "fallback")


def test_touch_rate_curve_counts_touches_per_conversion_with_that_much_history(tmp_path):
    touches = [("a", 0, "email"), ("a", 9, "search"), ("a", 9.5, "direct"), ("b", 1, "email")]
    orders = [("a1", "a", 10, 1.0), ("a2", "a", 10, 3.0), ("b1", "b", 3, 1.0)]   # a's two orders: one conversion
    files = write_log(tmp_path, touches, orders)
    con = engine.connect(memory_limit="1GB")
    try:
        A._load_touch_log(con, *files)
        c = A.touch_rate_curve(con, 14).set_index("days_before")
    finally:
        con.close()
    # a: touches 10, 1 and 0.5 days before its order; b: 2 days before
    assert c["touches"].to_dict() == {d: int(d in (0, 1, 2, 10)) for d in range(14)}
    # conversions with more than d whole days of history (since the log starts): a 10 days, b 3 days
    assert c["at_risk"].to_dict() == {d: 2 if d < 3 else 1 if d < 10 else 0 for d in range(14)}
    assert c["rate"].isna().all()  # fewer than 30 conversions: no rate


# --------------------------------------------------------------------------------------------
# Models and intervals
# --------------------------------------------------------------------------------------------
def test_the_lineup_bootstrap_equals_bootstrap_shares(tiny):
    paths = A.read_paths_file(CA_SAMPLE)
    settings = tiny["cfg"].attribution.model_copy(update={"n_boot": 4, "markov_orders": [1, 2]})
    fast, failed = A.attribute(paths, settings)
    slow = A.bootstrap_shares(paths, lambda p: A.lineup(p, settings), n_boot=4, seed=settings.seed, level=0.9)
    merged = fast.merge(slow, left_on=["key", "channel"], right_on=["model", "channel"], suffixes=("", "_slow"))
    assert len(merged) == len(fast) == len(slow) and failed == 0
    for col in ("share", "ci_low", "ci_high"):
        np.testing.assert_allclose(merged[col], merged[f"{col}_slow"], rtol=1e-9, atol=1e-12)


def test_logistic_shapley_credits_lift_not_presence():
    # 'a' lifts conversion from 10% to 50%; 'b' is everywhere and changes nothing
    paths = A.parse_paths(pd.DataFrame({"path": ["a > b", "b", "a"], "total_conversions": [500, 100, 500],
                                        "total_null": [500, 900, 500], "total_conversion_value": [5000, 1000, 5000]}))
    res = A.logistic_shapley_attribution(paths, C=1e6).set_index("channel")
    assert res["conversions"].sum() == pytest.approx(1100)
    assert res.loc["a", "share"] > 0.99 and res.loc["b", "share"] < 0.01
    assert res["value"].sum() == pytest.approx(11_000)
    linear = A.linear(paths).set_index("channel")
    assert linear.loc["b", "share"] > 0.3


def test_logistic_shapley_without_nulls_splits_equally():
    paths = A.parse_paths(pd.DataFrame({"path": ["a > b", "a"], "total_conversions": [2, 1]}))
    res = A.logistic_shapley_attribution(paths).set_index("channel")
    assert res.loc["a", "conversions"] == pytest.approx(2) and res.loc["b", "conversions"] == pytest.approx(1)
    assert A.recommend(paths) == ("shapley", "attr_why_no_nulls")


def test_logistic_shapley_beyond_exact_size_uses_seeded_permutations():
    paths = A.parse_paths(pd.DataFrame({"path": ["a > b > c", "a", "b", "c", "a > b"], "total_conversions": [30, 10, 5, 2, 12],
                                        "total_null": [20, 40, 45, 48, 30]}))
    exact = A.logistic_shapley_attribution(paths)
    approx = A.logistic_shapley_attribution(paths, max_exact=2, n_permutations=4000, seed=1)
    np.testing.assert_allclose(approx["share"], exact["share"], atol=0.01)
    pd.testing.assert_frame_equal(approx, A.logistic_shapley_attribution(paths, max_exact=2, n_permutations=4000, seed=1))


# --------------------------------------------------------------------------------------------
# The stage's outputs
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stage_run(tiny):
    cfg = tiny["cfg"].model_copy(update={"attribution": tiny["cfg"].attribution.model_copy(update={"n_boot": 20})})
    result = A.evaluate(cfg, tiny["run_dir"], tiny["tables"])
    A.save(tiny["run_dir"], result)
    return result, cfg


def test_outputs_follow_the_contract(tiny, stage_run):
    result, cfg = stage_run
    tdir = tiny["run_dir"] / "tables"
    attribution = pd.read_csv(tdir / "attribution.csv")
    assert list(attribution.columns) == ["model", "order", "channel", "conversions", "value", "share", "ci_low", "ci_high"]
    assert attribution.loc[attribution["model"] == "markov", "order"].eq(1).all()
    assert attribution.loc[attribution["model"] != "markov", "order"].isna().all()
    assert set(attribution["model"]) == {*A.HEURISTICS, "markov", "shapley", "logistic", "logistic_shapley"}
    per_model = attribution.groupby(["model", "order"], dropna=False)
    np.testing.assert_allclose(per_model["share"].sum(), 1.0, atol=1e-5)
    np.testing.assert_allclose(per_model["conversions"].sum(), result.paths["conversions"].sum(), rtol=1e-6)
    assert (attribution["ci_low"] <= attribution["ci_high"]).all()
    assert attribution[["ci_low", "ci_high"]].stack().between(0, 1).all()
    economics = pd.read_csv(tdir / "channel_economics.csv")
    assert {"channel", "spend", "conversions", "revenue", "cac", "roas"} <= set(economics.columns)
    top = pd.read_csv(tdir / "attribution_paths_top.csv")
    assert list(top.columns) == ["path", "touches", "journeys", "conversions", "nulls", "conversion_rate", "value"]
    assert len(top) == min(cfg.attribution.top_paths, len(result.paths))
    mis = pd.read_csv(tdir / "attribution_misallocation.csv")  # the generated demo has a truth.json
    assert list(mis.columns) == ["model", "order", "misallocation", "recommended"] and mis["recommended"].sum() == 1
    paths = A.parse_paths(pd.read_parquet(tdir / "attribution_paths.parquet"))  # every path, ChannelAttribution layout
    assert paths["conversions"].sum() == result.paths["conversions"].sum()


def test_outputs_are_byte_identical_across_runs(tiny, stage_run, tmp_path):
    result, cfg = stage_run
    again = tmp_path / "again"
    (again / "tables").mkdir(parents=True)
    for name in ("clean_touchpoints", "clean_transactions"):
        (again / "tables" / f"{name}.parquet").write_bytes((tiny["run_dir"] / "tables" / f"{name}.parquet").read_bytes())
    A.save(again, A.evaluate(cfg, again, tiny["tables"]))
    for name in ("attribution.csv", "channel_economics.csv", "attribution_paths_top.csv",
                 "attribution_misallocation.csv", "attribution_paths.parquet"):
        assert filecmp.cmp(tiny["run_dir"] / "tables" / name, again / "tables" / name, shallow=False), name


def test_summary_and_report_helpers_render(stage_run):
    result, cfg = stage_run
    summary = A.summarise(result, cfg)
    assert 3 <= len(summary.findings) <= 5 and summary.cards
    assert not any("attr_" in f for f in summary.findings)
    for make in (A.shares_chart, A.comparison_chart, A.misallocation_chart, A.transition_chart, A.lookback_chart,
                 A.economics_chart):
        assert make(result, cfg).axes
    for table in (A.comparison_table, A.paths_table, A.economics_table):
        assert len(table(result, cfg))
    assert "attr_" not in A.method_notes(result, cfg).data


def test_no_truth_file_means_no_misallocation(tiny, tmp_path):
    cfg = tiny["cfg"]
    assert A.find_truth(cfg) == tiny["data"] / "truth.json"
    other = tmp_path / "truth.json"
    other.write_text(json.dumps({"something": 1}))
    cfg2 = cfg.model_copy(update={"attribution": cfg.attribution.model_copy(update={"truth_file": other, "n_boot": 0})})
    assert A.find_truth(cfg2) == other and A.read_truth(other) is None
    result = A.evaluate(cfg2, tiny["run_dir"], tiny["tables"])
    assert result.misallocation is None and result.truth is None
    cfg3 = cfg.model_copy(update={"attribution": cfg.attribution.model_copy(update={"truth_file": tmp_path / "no.json"})})
    with pytest.raises(InputError, match="truth file not found"):
        A.evaluate(cfg3, tiny["run_dir"], tiny["tables"])


def test_the_stage_runs_on_a_paths_file_alone(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text(f"attribution: {{paths_file: {CA_SAMPLE}, n_boot: 3, top_paths: 5}}\n")
    cfg = config.load(params)
    result = A.evaluate(cfg, tmp_path / "run", cleaning.load_clean(cfg, tmp_path / "run"))
    assert result.stats is None and result.lookback is None and result.economics is None
    assert result.recommended == "logistic_shapley" and len(result.top_paths) == 5
    assert result.paths["conversions"].sum() == 19_785


def test_missing_orders_is_a_clear_error(tiny, tmp_path):
    run = tmp_path / "run"
    (run / "tables").mkdir(parents=True)
    source = tiny["run_dir"] / "tables" / "clean_touchpoints.parquet"
    (run / "tables" / "clean_touchpoints.parquet").write_bytes(source.read_bytes())
    with pytest.raises(InputError, match="needs conversions"):
        A.evaluate(tiny["cfg"], run, {})


# --------------------------------------------------------------------------------------------
# Economics arithmetic
# --------------------------------------------------------------------------------------------
def test_channel_economics_arithmetic():
    credited = pd.DataFrame({"channel": ["search", "email", "direct"], "conversions": [40.0, 10.0, 50.0],
                             "value": [4000.0, 1500.0, 5000.0]})
    spend = pd.Series({"search": 2000.0, "email": 100.0, "tv": 500.0})
    e = A.channel_economics(credited, spend).set_index("channel")
    assert e.loc["search", "cac"] == pytest.approx(50.0) and e.loc["search", "roas"] == pytest.approx(2.0)
    assert e.loc["email", "cac"] == pytest.approx(10.0) and e.loc["email", "roas"] == pytest.approx(15.0)
    assert np.isnan(e.loc["direct", "cac"]) and np.isnan(e.loc["direct", "roas"])       # no spend
    assert np.isnan(e.loc["tv", "cac"]) and e.loc["tv", "roas"] == 0.0                  # spend, no credit
    assert list(e.index) == ["email", "search", "tv", "direct"]                        # best ROAS first
    assert e["roas_rank"].tolist()[:3] == [1, 2, 3] and pd.isna(e["roas_rank"].iloc[3])
    assert e["spend_share"].sum() == pytest.approx(1.0)
    r = A.reallocation(A.channel_economics(credited, spend), 0.1)
    assert (r["from"], r["to"]) == ("tv", "email")
    assert r["amount"] == pytest.approx(50.0) and r["revenue_change"] == pytest.approx(50.0 * 15.0)


def test_clv_to_cac_uses_the_acquired_customers_value():
    credited = pd.DataFrame({"channel": ["a", "b"], "conversions": [10.0, 10.0], "value": [100.0, 100.0]})
    acquisition = pd.DataFrame({"channel": ["a", "b"], "conversions": [4.0, 1.0], "value": [400.0, 50.0]})
    e = A.channel_economics(credited, pd.Series({"a": 100.0, "b": 10.0}), acquisition).set_index("channel")
    assert e.loc["a", "clv_per_customer"] == pytest.approx(100.0) and e.loc["a", "clv_cac"] == pytest.approx(4.0)
    assert e.loc["b", "clv_cac"] == pytest.approx(5.0)


def test_no_reallocation_without_two_paid_channels():
    credited = pd.DataFrame({"channel": ["a", "b"], "conversions": [1.0, 1.0], "value": [1.0, 1.0]})
    assert A.reallocation(A.channel_economics(credited, pd.Series({"a": 1.0})), 0.1) is None


def test_clv_from_04_is_used_when_present(tiny, tmp_path):
    run = tmp_path / "run"
    (run / "tables").mkdir(parents=True)
    for name in ("clean_touchpoints", "clean_transactions"):
        (run / "tables" / f"{name}.parquet").write_bytes((tiny["run_dir"] / "tables" / f"{name}.parquet").read_bytes())
    customers = tiny["tables"]["transactions"]["customer_id"].drop_duplicates().sort_values()
    pd.DataFrame({"customer_id": customers, "clv": 100.0}).to_parquet(run / "tables" / "clv_customers.parquet")
    cfg = tiny["cfg"].model_copy(update={"attribution": tiny["cfg"].attribution.model_copy(update={"n_boot": 0})})
    result = A.evaluate(cfg, run, tiny["tables"])
    e = result.economics
    assert result.clv_used and {"new_customers", "clv_per_customer", "clv_cac"} <= set(e.columns)
    assert e["new_customers"].sum() == pytest.approx(e["new_customers"].sum())
    np.testing.assert_allclose(e.loc[e["new_customers"] > 0, "clv_per_customer"], 100.0)


@pytest.mark.parametrize("batch_rows", [1, 7, 1_000])
def test_batches_that_cut_customers_give_the_same_paths(tiny, monkeypatch, batch_rows):
    tdir = tiny["run_dir"] / "tables"
    files = (tdir / "clean_touchpoints.parquet", tdir / "clean_transactions.parquet")
    whole, stats = duckdb_paths(*files, 14, ("direct",))
    monkeypatch.setattr(A, "LOG_BATCH_ROWS", batch_rows)
    parts, stats_parts = duckdb_paths(*files, 14, ("direct",))
    assert_same_paths(parts, whole)
    assert stats_parts == stats


# --------------------------------------------------------------------------------------------
# Customer keys: a shared hash falls back to exact keys
# --------------------------------------------------------------------------------------------
def test_customers_whose_keys_collide_are_keyed_exactly(tiny, monkeypatch):
    tables, tdir = tiny["tables"], tiny["run_dir"] / "tables"
    files = (tdir / "clean_touchpoints.parquet", tdir / "clean_transactions.parquet")
    expected = A.aggregate_journeys(reference_journeys(tables["touchpoints"], tables["transactions"], 14))
    monkeypatch.setattr(A, "CUSTOMER_KEY", "hash({}) % 3")   # 300 customers on 3 keys
    con = engine.connect(memory_limit="1GB")
    try:
        A._load_touch_log(con, *files)
        got, stats = A.journey_paths(con, 14)
        assert con.execute("SELECT exact_keys, keys_checked FROM crm_log").fetchall() == [(True, True)]
    finally:
        con.close()
    assert_same_paths(got, expected)
    assert stats.customers == tables["touchpoints"].dropna(subset=["customer_id", "ts", "channel"])["customer_id"].nunique()
    # without the check the colliding keys merge customers' journeys: the check is what keeps them apart
    monkeypatch.setattr(A, "_read_log", lambda con, consume: consume(A._sorted_log(con)))
    merged, merged_stats = duckdb_paths(*files, 14)
    assert merged_stats.customers == 3
    assert by_path(merged)["path"].tolist() != by_path(expected)["path"].tolist()


def test_distinct_ids_keep_their_hash_and_are_counted_once(tiny, monkeypatch):
    tdir = tiny["run_dir"] / "tables"
    counted = []
    count_ids = A._count_ids
    monkeypatch.setattr(A, "_count_ids", lambda *args: counted.append(1) or count_ids(*args))
    con = engine.connect(memory_limit="1GB")
    try:
        A._load_touch_log(con, tdir / "clean_touchpoints.parquet", tdir / "clean_transactions.parquet")
        A.touch_rate_curve(con, 30)
        A.journey_paths(con, 14)
        assert con.execute("SELECT exact_keys, keys_checked FROM crm_log").fetchall() == [(False, True)]
        assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'crm_customer'").fetchall() == [(0,)]
    finally:
        con.close()
    assert counted == [1]


# --------------------------------------------------------------------------------------------
# An adversarial log: many orders per customer, ties, long journeys, many channels
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def busy_log(tmp_path_factory):
    rng = np.random.default_rng(5)
    channels = [f"ch{i:02d}" for i in range(30)]          # base 31: paths over 12 touches need byte keys
    t0 = pd.Timestamp("2024-01-01")
    n_touch, n_lines = 20_000, 3_000
    minutes = rng.integers(0, 200 * 24 * 60, n_touch)
    touch = pd.DataFrame({
        "customer_id": np.char.add("c", rng.integers(0, 150, n_touch).astype(str)),
        "ts": t0 + pd.to_timedelta(minutes - minutes % 60 * (rng.random(n_touch) < 0.5), unit="min"),  # many ties
        "channel": rng.choice(channels, n_touch, p=np.r_[0.3, np.full(29, 0.7 / 29)]),
    })
    order_minutes = rng.integers(0, 210 * 24 * 60, n_lines)
    orders = pd.DataFrame({
        "order_id": np.char.add("o", rng.integers(0, 2_000, n_lines).astype(str)),  # several lines per order
        "customer_id": np.char.add("c", rng.integers(0, 170, n_lines).astype(str)),  # some customers never touched
        "order_ts": t0 + pd.to_timedelta(order_minutes - order_minutes % 60, unit="min"),
        "amount": np.round(rng.normal(40, 30, n_lines), 2),                          # refunds too
    })
    orders = orders.groupby("order_id", as_index=False).agg(
        customer_id=("customer_id", "first"), order_ts=("order_ts", "first"), amount=("amount", list)).explode("amount")
    orders["amount"] = orders["amount"].astype(float)
    folder = tmp_path_factory.mktemp("busy")
    touch.to_parquet(folder / "touch.parquet")
    orders.to_parquet(folder / "orders.parquet")
    return touch, orders, folder / "touch.parquet", folder / "orders.parquet"


@pytest.mark.parametrize("lookback, drop, list_channels", [(2, (), 32), (9, ("ch00", "ch07"), 32), (45, (), 32),
                                                          (9, ("ch00",), 0)])   # 0: channel codes by the enum cast
def test_a_busy_log_gives_the_reference_journeys(busy_log, monkeypatch, lookback, drop, list_channels):
    touch, orders, touch_file, orders_file = busy_log
    monkeypatch.setattr(A, "LIST_CHANNELS", list_channels)
    got, stats = duckdb_paths(touch_file, orders_file, lookback, drop)
    expected = A.aggregate_journeys(reference_journeys(touch, orders, lookback), drop_channels=drop)
    if lookback == 45:
        assert expected["path"].map(len).max() > 12   # paths that need byte keys are among them
    assert_same_paths(got, expected)
    assert stats.converting == expected["conversions"].sum()
    assert stats.customers == touch["customer_id"].nunique()


def test_path_values_are_exact_decimal_sums(tmp_path):
    # three conversions of 0.1 on one path: 0.3, where floating-point sums give 0.30000000000000004
    files = write_log(tmp_path, [("a", 0, "email"), ("b", 0, "email"), ("c", 0, "email")],
                      [("a1", "a", 1, 0.1), ("b1", "b", 1, 0.1), ("c1", "c", 1, 0.1)])
    got, _ = duckdb_paths(*files, 30)
    assert got["value"].tolist() == [0.3] and 0.1 + 0.1 + 0.1 != 0.3


def test_path_values_beyond_integer_millionths_are_summed_as_floats(tmp_path):
    # 5e12 in millionths does not fit 62 bits: floats, still close to the exact sum
    files = write_log(tmp_path, [("a", 0, "email"), ("b", 0, "email")],
                      [("a1", "a", 1, 3e12 + 0.25), ("b1", "b", 1, 2e12 + 0.5)])
    got, _ = duckdb_paths(*files, 30)
    assert got["value"].tolist() == [pytest.approx(5e12 + 0.75, rel=1e-15)]


def test_a_log_spanning_centuries_is_refused(tmp_path):
    files = write_log(tmp_path, [("a", -365 * 174, "email"), ("a", 0, "email")], [("a1", "a", 1, 1.0)])
    con = engine.connect(memory_limit="1GB")
    try:
        with pytest.raises(ValueError, match="span 174 years; at most 143"):
            A._load_touch_log(con, *files)
    finally:
        con.close()


def test_acquisition_paths_credit_first_conversions_with_the_customers_clv(busy_log):
    touch, orders, touch_file, orders_file = busy_log
    customers = sorted(set(orders["customer_id"]))
    clv = pd.DataFrame({"customer_id": customers[::2] + ["never seen"], "clv": np.arange(len(customers[::2]) + 1.0)})
    con = engine.connect(memory_limit="1GB")
    try:
        channels = A._load_touch_log(con, touch_file, orders_file)
        got = A.acquisition_paths(con, 9, (), clv, channels)
    finally:
        con.close()
    journeys = reference_journeys(touch, orders, 9)
    first_ts = orders.groupby("customer_id")["order_ts"].min()
    jid = journeys["journey_id"].str.split("|")
    customer, conv_ts = jid.str[1], pd.to_datetime(jid.str[2], errors="coerce")
    first = journeys["converted"] & (conv_ts.to_numpy() == customer.map(first_ts).to_numpy())
    value = customer.map(clv.set_index("customer_id")["clv"])
    expected = A.aggregate_journeys(journeys[first & value.notna()].assign(value=value))
    expected = expected.assign(nulls=0.0)
    assert_same_paths(got, expected)
