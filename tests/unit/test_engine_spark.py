"""The engine's queries give identical results on DuckDB and on PySpark (local mode), on a 1M-line
sample with multi-line orders, several orders a day, refunds and amounts in cents. Needs the
`spark` extra (in requirements.lock) and Java 17+ (skipped without it, except in CI: `.ci/run`
installs it). The DuckDB side is checked against pandas and hand-made cases in test_engine.py."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from crmbook import config, engine
from crmbook.errors import InputError
from tests.conftest import require_java

ROWS = 1_000_000


def sample(rows: int, seed: int = 0) -> pd.DataFrame:
    """Order lines over two years: ~100k customers, 1-3 lines per order, 3% refund lines."""
    rng = np.random.default_rng(seed)
    orders = rows // 2
    customer = rng.integers(0, rows // 10, orders)
    seconds = rng.integers(0, 730 * 86_400, orders)
    lines = np.repeat(np.arange(orders), rng.integers(1, 4, orders))[:rows]
    sign = np.where(rng.random(len(lines)) < 0.03, -1.0, 1.0)
    return pd.DataFrame({
        "order_id": pd.Series(lines).astype("str").to_numpy(),
        "customer_id": ("c" + pd.Series(customer[lines]).astype("str")).to_numpy(),
        "order_ts": pd.Timestamp("2023-01-01") + pd.to_timedelta(seconds[lines], unit="s"),
        "amount": np.round(rng.gamma(2.0, 30.0, len(lines)), 2) * sign,
    })


@pytest.fixture(scope="module")
def spark():
    require_java()
    return engine.spark("local[2]")


@pytest.fixture(scope="module")
def transactions(tmp_path_factory):
    path = tmp_path_factory.mktemp("spark") / "transactions.parquet"
    sample(ROWS).to_parquet(path)
    return path


QUERIES = {
    "customer_summary days": lambda c, p: engine.customer_summary(c, p, dt.date(2024, 10, 1)),
    "customer_summary weeks": lambda c, p: engine.customer_summary(c, p, dt.date(2024, 6, 30), "weeks"),
    "holdout_purchases": lambda c, p: engine.holdout_purchases(c, p, dt.date(2024, 6, 1), dt.date(2025, 1, 1)),
    "repeat_purchases_by_period": lambda c, p: engine.repeat_purchases_by_period(c, p, dt.date(2023, 1, 1),
                                                                                 dt.date(2025, 1, 1)),
    "period_activity week": lambda c, p: engine.period_activity(c, p, "week"),
    "period_activity month": lambda c, p: engine.period_activity(c, p, "month"),
    "period_activity quarter": lambda c, p: engine.period_activity(c, p, "quarter"),
    "cohort_activity": lambda c, p: engine.cohort_activity(c, p),
    "last_order": lambda c, p: pd.DataFrame({"last": [engine.last_order(c, p)]}),
}


@pytest.mark.parametrize("name", QUERIES)
def test_duckdb_and_spark_give_identical_results(name, spark, transactions):
    query = QUERIES[name]
    on_duckdb = query(engine.connect(), transactions)
    on_spark = query(spark, transactions)
    assert len(on_duckdb) > 1 or name == "last_order"
    pd.testing.assert_frame_equal(on_duckdb, on_spark, check_exact=True)


def test_a_frame_of_transactions_gives_identical_results(spark, transactions):
    frame = pd.read_parquet(transactions).head(50_000)
    pd.testing.assert_frame_equal(engine.period_activity(engine.connect(), frame, "month"),
                                  engine.period_activity(spark, frame, "month"), check_exact=True)


def test_a_total_beyond_exact_range_is_an_input_error_on_spark(spark, tmp_path):
    """Spark refuses a micro-unit total beyond 2**63 (about 9.2e12 in currency): one line naming the file."""
    path = tmp_path / "big.parquet"
    pd.DataFrame({"order_id": ["1", "2"], "customer_id": ["a", "a"], "order_ts": pd.to_datetime(["2024-01-01", "2024-01-02"]),
                  "amount": [9e12, 9e12]}).to_parquet(path)
    with pytest.raises(InputError, match=r"big\.parquet, column 'amount': .*too large to sum exactly"):
        engine.customer_summary(spark, path, dt.date(2024, 2, 1))


def test_params_send_the_queries_to_spark(tmp_path, spark):
    path = tmp_path / "p.yaml"
    path.write_text("run:\n  engine: pyspark\n  spark_master: local[2]\n", encoding="utf-8")
    cfg = config.load(path)
    con = engine.connect()
    assert engine.queries_on(cfg, con) is spark  # one session per process
    path.write_text("run:\n  engine: duckdb\n", encoding="utf-8")
    assert engine.queries_on(config.load(path), con) is con
