"""Engine aggregations checked against a direct pandas computation on a hand-made table."""
import datetime as dt

import pandas as pd
import pytest

from crmbook import engine
from crmbook.errors import InputError


@pytest.fixture
def orders(tmp_path):
    frame = pd.DataFrame({
        "order_id": ["1", "2", "3", "4", "5", "6", "7"],
        "customer_id": ["a", "a", "a", "a", "b", "c", "c"],
        "order_ts": pd.to_datetime(["2024-01-01 09:00", "2024-01-01 18:00", "2024-01-15 10:00", "2024-03-01 10:00",
                                    "2024-02-10 10:00", "2024-01-20 10:00", "2024-04-20 10:00"]),
        "amount": [10.0, 5.0, 30.0, 50.0, 20.0, 7.0, 9.0],
    })
    path = tmp_path / "t.parquet"
    frame.to_parquet(path)
    return path


def test_customer_summary_counts_purchase_days(orders):
    con = engine.connect(memory_limit="1GB", threads=1)
    s = engine.customer_summary(con, orders, dt.date(2024, 3, 31)).set_index("customer_id")
    # a: purchase days Jan 1 (15), Jan 15 (30), Mar 1 (50) -> x=2, t_x=60, T=90, z̄=40
    assert s.loc["a", ["frequency", "recency", "T", "monetary", "orders", "revenue"]].tolist() == [2, 60, 90, 40, 4, 95]
    assert s.loc["a", "recency_days"] == 30 and s.loc["a", "mean_interpurchase_days"] == 30
    # b: one purchase: x=0, t_x=0, z̄=0; c's April order is after the analysis date
    assert s.loc["b", ["frequency", "recency", "T", "monetary"]].tolist() == [0, 0, 50, 0]
    assert s.loc["c", ["frequency", "revenue"]].tolist() == [0, 7]
    weeks = engine.customer_summary(con, orders, dt.date(2024, 3, 31), "weeks").set_index("customer_id")
    assert weeks.loc["a", "T"] == pytest.approx(90 / 7)


def test_holdout_and_tracking(orders):
    con = engine.connect(memory_limit="1GB", threads=1)
    h = engine.holdout_purchases(con, orders, dt.date(2024, 1, 31), dt.date(2024, 12, 31)).set_index("customer_id")
    assert h["holdout_purchases"].to_dict() == {"a": 1, "c": 1}  # b first bought after calibration
    track = engine.repeat_purchases_by_period(con, orders, dt.date(2024, 1, 1), dt.date(2024, 12, 31), "weeks")
    assert track["repeat_purchases"].sum() == 3 and track["period"].tolist() == [3, 9, 16]


def test_cohorts(orders):
    con = engine.connect(memory_limit="1GB", threads=1)
    c = engine.cohort_activity(con, orders)
    jan = c[c["cohort"] == pd.Timestamp("2024-01-01")].set_index("months_since")
    assert jan["customers"].to_dict() == {0: 2, 2: 1, 3: 1} and (jan["cohort_size"] == 2).all()
    with pytest.raises(ValueError, match="time_unit"):
        engine.customer_summary(con, "x", dt.date(2024, 1, 1), "months")


def test_sums_do_not_depend_on_row_order(tmp_path):
    """Amounts are summed exactly, so shuffled rows and many threads give the same bytes."""
    import numpy as np

    rng = np.random.default_rng(0)
    n = 200_000
    frame = pd.DataFrame({"order_id": np.arange(n).astype(str), "customer_id": (np.arange(n) % 7).astype(str),
                          "order_ts": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 300, n), unit="D"),
                          "amount": rng.gamma(2.0, 37.3, n).round(2)})
    results = []
    for seed in (1, 2):
        path = tmp_path / f"t{seed}.parquet"
        frame.sample(frac=1, random_state=seed).to_parquet(path)
        results.append(engine.customer_summary(engine.connect(threads=4), path, dt.date(2024, 12, 31)))
    pd.testing.assert_frame_equal(results[0], results[1], check_exact=True)


def test_order_lines_are_summed_per_order_and_day(tmp_path):
    """Lines of one order count as one order; two orders on one day are one purchase day with two
    orders; monetary leaves out the whole first day."""
    frame = pd.DataFrame({
        "order_id": ["1", "1", "1", "2", "2", "3", "4", "4"],
        "customer_id": ["a"] * 8,
        "order_ts": pd.to_datetime(["2024-01-01 09:00"] * 3 + ["2024-01-01 17:00"] * 2 + ["2024-01-08 10:00"]
                                   + ["2024-01-22 10:00"] * 2),
        "amount": [1.25, 2.50, 3.00, 10.0, -2.0, 7.5, 4.0, 6.0],
    })
    path = tmp_path / "lines.parquet"
    frame.sample(frac=1, random_state=1).to_parquet(path)
    s = engine.customer_summary(engine.connect(threads=2), path, dt.date(2024, 1, 31)).iloc[0]
    # days: Jan 1 (orders 1, 2: 6.75 + 8.00), Jan 8 (order 3: 7.5), Jan 22 (order 4: 10.0)
    assert (s["orders"], s["purchase_days"], s["frequency"]) == (4, 3, 2)
    assert s["revenue"] == pytest.approx(32.25) and s["aov"] == pytest.approx(32.25 / 4)
    assert s["monetary"] == pytest.approx((7.5 + 10.0) / 2)
    assert (s["recency"], s["T"], s["recency_days"], s["mean_interpurchase_days"]) == (21, 30, 9, 10.5)


def test_customer_summary_agrees_with_pandas(tmp_path):
    """Random order lines (several lines per order, several orders on some days, refunds, lines after the
    analysis date): every column equals a direct pandas computation of the definitions."""
    import numpy as np

    rng = np.random.default_rng(7)
    orders = 3000
    order_customer = rng.integers(0, 400, orders)
    order_ts = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 200 * 24, orders), unit="h")
    line_order = rng.integers(0, orders, 8000)
    frame = pd.DataFrame({"order_id": line_order.astype(str), "customer_id": order_customer[line_order].astype(str),
                          "order_ts": order_ts[line_order], "amount": np.round(rng.normal(30, 20, line_order.size), 2)})
    path = tmp_path / "lines.parquet"
    frame.to_parquet(path)
    as_of = dt.date(2024, 6, 1)
    got = engine.customer_summary(engine.connect(threads=2), path, as_of, "weeks").set_index("customer_id")

    kept = frame[frame["order_ts"] < pd.Timestamp(as_of) + pd.Timedelta(days=1)].assign(day=lambda f: f["order_ts"].dt.floor("D"))
    days = kept.groupby(["customer_id", "day"]).agg(value=("amount", "sum"), orders=("order_id", "nunique")).reset_index()
    rows = []
    for customer, d in days.groupby("customer_id"):
        d = d.sort_values("day")
        span = (d["day"].iloc[-1] - d["day"].iloc[0]).days
        repeats = len(d) - 1
        rows.append({"customer_id": customer, "orders": d["orders"].sum(), "revenue": d["value"].sum(),
                     "purchase_days": len(d), "frequency": repeats, "recency": span / 7,
                     "T": (pd.Timestamp(as_of) - d["day"].iloc[0]).days / 7,
                     "recency_days": (pd.Timestamp(as_of) - d["day"].iloc[-1]).days,
                     "monetary": d["value"].iloc[1:].mean() if repeats else 0.0,
                     "aov": d["value"].sum() / d["orders"].sum(),
                     "mean_interpurchase_days": span / repeats if repeats else np.nan})
    expected = pd.DataFrame(rows).set_index("customer_id")
    assert got.index.tolist() == sorted(expected.index)
    for column in expected.columns:
        assert np.allclose(got[column].to_numpy(float), expected.loc[got.index, column].to_numpy(float),
                           rtol=1e-12, atol=1e-9, equal_nan=True), column


def test_engine_settings_come_from_params(tmp_path):
    """run.memory_limit, run.threads and run.temp_directory (relative to the params file) reach DuckDB."""
    from crmbook import config

    path = tmp_path / "p.yaml"
    path.write_text("run:\n  memory_limit: 300MB\n  threads: 1\n  temp_directory: spill\n")
    con = engine.from_params(config.load(path))
    limit, threads, temp = con.execute("SELECT current_setting('memory_limit'), current_setting('threads'), "
                                       "current_setting('temp_directory')").fetchone()
    assert (limit, threads, temp) == ("286.1 MiB", 1, str(tmp_path / "spill"))
    default = engine.from_params(config.load(_empty_params(tmp_path)), spill=tmp_path / "s2")
    assert default.execute("SELECT current_setting('memory_limit'), current_setting('temp_directory')").fetchone() == \
        ("3.7 GiB", str(tmp_path / "s2"))


def _empty_params(folder):
    path = folder / "empty.yaml"
    path.write_text("run: {}\n")
    return path


def test_customer_summary_completes_out_of_core(tmp_path):
    """Under a memory limit far below what the aggregation needs in memory, DuckDB spills to the
    temp directory and the summary equals the one computed with room to spare."""
    import numpy as np

    rng = np.random.default_rng(1)
    n = 1_000_000
    frame = pd.DataFrame({"order_id": np.arange(n).astype(str), "customer_id": rng.integers(0, 400_000, n).astype(str),
                          "order_ts": pd.Timestamp("2023-01-01") + pd.to_timedelta(rng.integers(0, 700, n), unit="D"),
                          "amount": rng.gamma(2.0, 20.0, n).round(2)})
    path = tmp_path / "t.parquet"
    frame.to_parquet(path)
    as_of = dt.date(2024, 12, 31)
    roomy = engine.customer_summary(engine.connect("2GB", 2), path, as_of).sort_values("customer_id", ignore_index=True)
    spill = tmp_path / "spill"
    tight = engine.connect("60MB", 2, spill)
    small = engine.customer_summary(tight, path, as_of).sort_values("customer_id", ignore_index=True)
    pd.testing.assert_frame_equal(small, roomy)
    assert len(small) == frame["customer_id"].nunique()


def test_an_amount_beyond_exact_range_is_an_input_error(tmp_path):
    """An amount whose micro-units do not fit 64 bits (a mistyped 1e300) is one line naming the file
    and column, not an engine traceback."""
    path = tmp_path / "huge.parquet"
    pd.DataFrame({"order_id": ["1"], "customer_id": ["a"], "order_ts": pd.to_datetime(["2024-01-01"]),
                  "amount": [1e300]}).to_parquet(path)
    with pytest.raises(InputError, match=r"huge\.parquet, column 'amount': .*too large to sum exactly"):
        engine.customer_summary(engine.connect(), path, dt.date(2024, 2, 1))
