"""Engine aggregations checked against a direct pandas computation on a hand-made table."""
import datetime as dt

import pandas as pd
import pytest

from crmbook import engine


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
