"""Property tests (hypothesis) on messy inputs: ingestion, cleaning and every stage's helpers.

Generated canonical-shaped CSV files hold missing values, duplicates, negative, zero and huge
amounts, dates in 1900 and 2200, unicode and Chinese text in ids and categories, a single
customer, a single day, or nothing valid at all. Whatever comes in, each step either accounts
for every row or stops with a one-line `CrmbookError` (an `InputError` naming the file): never a
traceback, never a row dropped silently, never NaN or infinity in a published table (except the
cells a table documents as empty, listed in `DOCUMENTED_EMPTY`).

Settings: derandomised (the same examples on every run), no shrinking, and few examples per test,
so CI stays fast and deterministic; set CRMBOOK_PROPERTY_EXAMPLES (default 30) for a deeper search.
"""
from __future__ import annotations

import contextlib
import csv
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, event, example, given, settings
from hypothesis import strategies as st

from crmbook import attribution, cleaning, clv, config, ingestion, performance, schema, segmentation, store
from crmbook.errors import CrmbookError, InputError

EXAMPLES = int(os.environ.get("CRMBOOK_PROPERTY_EXAMPLES", "30"))  # more for a deeper local search
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, print_blob=True,
                    phases=[Phase.explicit, Phase.generate],  # no shrinking: minutes on these inputs
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
ANALYSIS_DATE = "2025-01-01"

# --------------------------------------------------------------------------------------------
# Values: mostly valid, some messy (one in four)
# --------------------------------------------------------------------------------------------
UNICODE = st.characters(blacklist_categories=("Cs",))  # any character UTF-8 can write
PRINTABLE = st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"))


def mostly(valid: st.SearchStrategy, messy: st.SearchStrategy) -> st.SearchStrategy:
    """`valid` five times in six, else `messy`."""
    return st.integers(0, 5).flatmap(lambda i: messy if i == 0 else valid)


IDS = st.one_of(st.sampled_from(["C1", "C2", "c1", "0012", "客户一", "王伟", "Zoë", "Ω-7", "😀", "a,b", 'say "hi"',
                                 "1e3"]), st.text(PRINTABLE, min_size=1, max_size=5))
MESSY_IDS = st.sampled_from(["", " ", "\u3000", "  C1  ", "nan", "NULL", "line\nbreak", "tab\there"])
CATEGORIES = st.one_of(st.sampled_from(["书籍", "Books", "books ", "BOOKS", "电子 产品", "Café", "", "  ", "Ωmega"]),
                       st.text(UNICODE, max_size=6))
DAYS = st.dates(min_value=pd.Timestamp("2023-01-01").date(), max_value=pd.Timestamp("2024-12-31").date())
MESSY_DATES = st.sampled_from(["", "n/a", "1900-01-01", "2200-12-31", "2024-02-30", "0001-01-01", "9999-12-31 23:59:59",
                               "1677-09-21", "2262-04-12", "31/12/2024", "2024-13-01", "2024-06-01T10:00:00Z",
                               "2024-06-01 10:00:00+08:00", "二〇二四年六月一日"])
AMOUNTS = st.integers(1, 500_000).map(lambda cents: f"{cents / 100:.2f}")
MESSY_AMOUNTS = st.one_of(
    st.sampled_from(["", "abc", "nan", "NaN", "inf", "-inf", "1e400", "-1e400", "1e308", "1e15", "-1e15", "0", "-0",
                     "1,234.50", " 12 ", "-5", "(3.50)", "12.50-", "¥88", "１２３"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-10**18, 10**18).map(str))
FLAGS = mostly(st.sampled_from(["0", "1"]), st.sampled_from(["", "yes", "2", "-1", "是", "1.0"]))
GROUPS = mostly(st.sampled_from(["control", "treatment"]), st.sampled_from(["", "变体", "Control ", "B"]))


@st.composite
def datasets(draw, min_rows: int = 0) -> dict[str, list[dict[str, str]]]:
    """Canonical-named tables as rows of text: transactions always (at least `min_rows`), the others sometimes."""
    single_customer, single_day = draw(st.booleans()), draw(st.booleans())
    all_invalid = draw(st.integers(0, 4)) == 0  # every customer id missing: nothing survives cleaning
    customers = draw(st.lists(IDS, min_size=1, max_size=1 if single_customer else 8, unique=True))
    days = [draw(DAYS)] if single_day else draw(st.lists(DAYS, min_size=1, max_size=12, unique=True))
    day = st.sampled_from(days).flatmap(lambda d: st.sampled_from([d.isoformat(), f"{d} 10:30:00", f"{d} 23:59:59"]))
    customer = mostly(st.sampled_from(customers), MESSY_IDS)
    orders = st.sampled_from([f"O{i}" for i in range(12)] + ["订单-1", "O 1"])
    transaction = st.fixed_dictionaries({
        "order_id": mostly(orders, MESSY_IDS),
        "customer_id": MESSY_IDS if all_invalid else customer,
        "order_ts": mostly(day, MESSY_DATES),
        "amount": mostly(AMOUNTS, MESSY_AMOUNTS),
        "quantity": mostly(st.integers(1, 5).map(str), MESSY_AMOUNTS),
        "product_id": mostly(st.sampled_from(["P1", "P2", "商品3"]), MESSY_IDS),
        "category": CATEGORIES,
        "channel": mostly(st.sampled_from(["web", "store", "微信"]), CATEGORIES),
        "status": mostly(st.sampled_from(["", "paid", "shipped"]), st.sampled_from(["refund", "cancelled", "RETURNED", "void"])),
    })
    tables = {"transactions": draw(st.lists(transaction, min_size=min_rows, max_size=25))}
    if draw(st.booleans()):
        tables["customers"] = draw(st.lists(st.fixed_dictionaries({
            "customer_id": customer,
            "signup_ts": mostly(day, MESSY_DATES),
            "email": mostly(st.sampled_from(["ann@example.com", "Ann@Example.com ", "王@例子.中国", "bob@x.org"]),
                            st.sampled_from(["", "not-an-email", "@", "a@b"])),
            "phone": mostly(st.sampled_from(["+86 138 0013 8000", "+44 20 7946 0958"]), st.sampled_from(["", "12", "abc"])),
            "gender": CATEGORIES, "age": mostly(st.integers(18, 90).map(str), MESSY_AMOUNTS),
            "region": CATEGORIES, "acquisition_channel": CATEGORIES,
        }), min_size=0, max_size=10))
    if draw(st.integers(0, 3)) > 0:  # most runs have touches, so 05 gets to attribute
        tables["touchpoints"] = draw(st.lists(st.fixed_dictionaries({
            "customer_id": customer, "ts": mostly(day, MESSY_DATES),
            "channel": mostly(st.sampled_from(["email", "搜索", "social", "direct"]), CATEGORIES),
            "event": st.sampled_from(["click", "open", "", "访问"]), "cost": mostly(AMOUNTS, MESSY_AMOUNTS),
        }), min_size=0, max_size=25))
    if draw(st.booleans()):
        tables["campaign_members"] = draw(st.lists(st.fixed_dictionaries({
            "campaign_id": mostly(st.sampled_from(["spring", "春季"]), MESSY_IDS), "customer_id": customer, "group": GROUPS,
            "delivered": FLAGS, "opened": FLAGS, "converted": FLAGS, "revenue": mostly(AMOUNTS, MESSY_AMOUNTS),
        }), min_size=0, max_size=25))
    # duplicates: some rows repeated as they are
    for name, rows in tables.items():
        if rows and draw(st.booleans()):
            rows.extend(draw(st.lists(st.sampled_from(rows), max_size=4)))
    return tables


# --------------------------------------------------------------------------------------------
# Hand-written edge cases, always tried first (hypothesis' explicit phase)
# --------------------------------------------------------------------------------------------
def tx(order_id: str, customer_id: str, order_ts: str, amount: str, status: str = "", category: str = "书籍") -> dict[str, str]:
    return {"order_id": order_id, "customer_id": customer_id, "order_ts": order_ts, "amount": amount, "quantity": "1",
            "product_id": "P1", "category": category, "channel": "web", "status": status}


def touch(customer_id: str, ts: str, channel: str) -> dict[str, str]:
    return {"customer_id": customer_id, "ts": ts, "channel": channel, "event": "click", "cost": "0.5"}


def member(i: int, group: str, converted: str, revenue: str) -> dict[str, str]:
    return {"campaign_id": "春季", "customer_id": f"C{i}", "group": group, "delivered": "1", "opened": converted,
            "converted": converted, "revenue": revenue}


EDGES = {
    "single customer, single day": {
        "transactions": [tx(f"O{i}", "客户一", "2024-06-01 10:00:00", "19.90") for i in range(3)],
        "touchpoints": [touch("客户一", "2024-06-01 09:00:00", c) for c in ("搜索", "email")]},
    "huge and overflowing amounts": {
        "transactions": [tx("O1", "C1", "2024-01-05", "1e15"), tx("O2", "C1", "2024-03-05", "9e12"),
                         tx("O3", "C2", "2024-02-05", "1e308"), tx("O4", "C2", "2024-04-05", "1e308"),
                         tx("O5", "C3", "2024-02-07", "25.00"), tx("O6", "C3", "2024-05-07", "-1e15")]},
    "dates in 1900 and 2200": {
        "transactions": [tx("O1", "C1", "1900-01-01", "10"), tx("O2", "C1", "2024-05-01", "20"),
                         tx("O3", "C2", "2200-12-31", "30"), tx("O4", "C2", "2024-06-01", "40")],
        "touchpoints": [touch("C1", "1900-01-01", "email"), touch("C2", "2024-05-30", "social")],
        "customers": [{"customer_id": "C1", "signup_ts": "1900-01-01", "email": "a@b.org", "age": "-5"}]},
    "nothing valid after cleaning": {
        "transactions": [tx("O1", "", "2024-01-01", "10"), tx("O2", "C1", "not a date", "10"),
                         tx("O3", "C2", "2024-01-01", "abc"), tx("O4", "C3", "2024-01-01", "-10", "refund")],
        "touchpoints": [touch("", "2024-01-01", "email")]},
    "refunds and duplicates only": {
        "transactions": [tx("O1", "C1", "2024-01-01", "10"), tx("O1", "C1", "2024-01-02", "-10", "refund"),
                         tx("O1", "C1", "2024-01-01", "10"), tx("O2", "C2", "2024-01-03", "0")]},
    "touches without a channel, flags that are not 0/1": {
        "transactions": [tx(f"O{i}", f"C{i % 3}", f"2024-0{1 + i % 6}-1{i % 9}", "12.5") for i in range(9)],
        "touchpoints": [touch(f"C{i % 3}", f"2024-0{1 + i % 6}-10", ("", "\u3000", "email")[i % 3]) for i in range(9)],
        "campaign_members": [member(i, ("control", "B")[i % 2], ("-1", "2", "", "1", "0")[i % 5], "3") for i in range(10)]},
    "an experiment with unicode groups": {
        "transactions": [tx(f"O{i}", f"C{i % 7}", f"2024-{1 + i % 12:02d}-{1 + i % 27:02d}", f"{10 + i}.5") for i in range(30)],
        "touchpoints": [touch(f"C{i % 7}", f"2024-{1 + i % 12:02d}-01", ("email", "搜索", "direct")[i % 3]) for i in range(20)],
        "campaign_members": [member(i, ("control", "变体")[i % 2], "1" if i % 3 == 0 else "0", str(i % 5)) for i in range(24)]},
}


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def write_tables(folder: Path, tables: dict[str, list[dict[str, str]]], delimiter: str | None = ",",
                 analysis_date: str | None = ANALYSIS_DATE) -> config.Config:
    """The tables as CSV files (columns named as in the canonical tables) and their params."""
    lines = ["run:", f"  analysis_date: {analysis_date}" if analysis_date else "  currency: USD", "data:", "  sources:"]
    for name, rows in tables.items():
        header = list(rows[0]) if rows else [c.name for c in schema.columns(name) if c.required]
        with (folder / f"{name}.csv").open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, header)  # "\r\n": fields holding \r or \n are quoted
            writer.writeheader()
            writer.writerows(rows)
        lines.append(f"    {name}:")
        lines.append(f"      - path: {name}.csv" + (f"\n        delimiter: '{delimiter}'" if delimiter else ""))
    lines += ["attribution: {n_boot: 5, markov_orders: [1, 2]}", "segmentation: {clusters: {bootstrap: 2, k_range: [2, 3]}}"]
    params = folder / "params.yaml"
    params.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config.load(params)


def assert_one_line(error: CrmbookError, folder: Path | None = None) -> None:
    """A message a user can read: one line; an InputError names a file (of this run when given)."""
    message = str(error)
    assert message and "\n" not in message, message
    if isinstance(error, InputError):
        assert error.file and message.startswith(error.file), message
        if folder is not None:
            assert error.file.startswith(str(folder)) or error.file.endswith(".yaml"), message


PII = {"email", "phone", "name"}


def expected_frame(rows: list[dict[str, str]]) -> pd.DataFrame:
    """What ingestion should keep of the rows: every value as written (PII aside)."""
    return pd.DataFrame(rows).drop(columns=[c for c in PII if rows and c in rows[0]])


#: Published cells a table documents as possibly empty (NaN) and why; anything else must be finite.
DOCUMENTED_EMPTY = {
    "attribution": {"order", "ci_low", "ci_high"},  # order: Markov models only; intervals: when bootstrapped
    "attribution_paths_top": set(),
    "channel_economics": {"spend", "cpa", "roas", "cac"},
    "cluster_profiles": {"stability_jaccard"},  # a cluster bootstrap refits never reproduce
    "clv_holdout_metrics": {"holdout_customers", "holdout_actual", "holdout_predicted", "holdout_error", "mae", "rmse",
                            "correlation", "log_likelihood", "n_params", "aic", "bic"},  # no holdout; a fit that
    # raised has no parameters (converged False, `message` says why: clv.compare_models)
    "clv_model_params": {"std_err", "estimate"},  # "a fit without standard errors (not converged) has an empty std_err"
    "segment_profiles": {"mean_clv"},  # "empty until [04] has run"
    "kpis": {"value", "previous", "change_abs", "change_rel"},  # retention/churn/CAC of a first period, no spend
    "cohort_retention": set(),
    "experiments": None,  # statistics undefined for an arm without variance: documented per column in experiments.py
    "campaign_roi": None,
    "funnels": {"pct_of_first", "pct_of_previous"},  # "empty when that is 0"
    "clv_tracking": set(), "clv_by_frequency": set(), "clv_churn_risk": set(), "customer_segments": set(),
    "clv_customers": set(), "data_quality": set(), "rfm_grid": set(),
    # clean tables: an optional value that does not parse becomes empty (cleaning.parse_numbers / parse_dates)
    **{f"clean_{t}": {c.name for c in schema.columns(t) if not c.required} for t in schema.TABLES},
}


def numeric_problems(name: str, frame: pd.DataFrame) -> list[str]:
    """Columns of a published table holding infinity, or NaN where the table does not document it."""
    allowed = DOCUMENTED_EMPTY.get(name, set())
    problems = []
    for column in frame.columns:
        values = frame[column]
        if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            continue
        numbers = values.astype("float64")
        if np.isinf(numbers).any():
            problems.append(f"{name}.{column}: infinity")
        if numbers.isna().any() and allowed is not None and column not in allowed:
            problems.append(f"{name}.{column}: NaN in {int(numbers.isna().sum())} rows")
    return problems


@contextlib.contextmanager
def recording_tables() -> Iterator[dict[str, pd.DataFrame]]:
    """Every table the stages publish through `store.write_table`, by name, as written (so a
    column's type is the writer's, not a CSV reader's guess)."""
    written: dict[str, pd.DataFrame] = {}
    write = store.write_table

    def record(run_dir, name, frame, fmt="parquet"):
        written[name] = frame.copy()
        return write(run_dir, name, frame, fmt)

    with mock.patch.object(store, "write_table", record):
        yield written


# --------------------------------------------------------------------------------------------
# 01 ingestion
# --------------------------------------------------------------------------------------------
def check_ingested(tables: dict[str, list[dict[str, str]]], out_dir: Path) -> None:
    for name, rows in tables.items():
        got = pd.read_parquet(out_dir / f"canonical_{name}.parquet")
        assert len(got) == len(rows), f"{name}: {len(rows)} rows written, {len(got)} ingested"
        assert got["source_row"].tolist() == list(range(2, len(rows) + 2))
        expected = expected_frame(rows)
        pd.testing.assert_frame_equal(got[list(expected.columns)].reset_index(drop=True), expected,
                                      check_dtype=False, obj=name)


@SETTINGS
@example(EDGES['single customer, single day'])
@example(EDGES['huge and overflowing amounts'])
@example(EDGES['dates in 1900 and 2200'])
@example(EDGES['nothing valid after cleaning'])
@example(EDGES['refunds and duplicates only'])
@example(EDGES['touches without a channel, flags that are not 0/1'])
@example(EDGES['an experiment with unicode groups'])
@given(datasets())
def test_ingestion_keeps_every_row_or_says_why(tables):
    """Sniffed delimiters: every row reaches the canonical Parquet as written, or a one-line InputError."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cfg = write_tables(folder, tables, delimiter=None)
        try:
            ingestion.ingest_to(cfg, folder / "out")
        except InputError as error:
            assert_one_line(error, folder)
            event(f"01: InputError: {error.problem}"[:90])
            return
        check_ingested(tables, folder / "out")


@SETTINGS
@example(EDGES['single customer, single day'])
@example(EDGES['huge and overflowing amounts'])
@example(EDGES['dates in 1900 and 2200'])
@example(EDGES['nothing valid after cleaning'])
@example(EDGES['refunds and duplicates only'])
@example(EDGES['touches without a channel, flags that are not 0/1'])
@example(EDGES['an experiment with unicode groups'])
@given(datasets())
def test_ingestion_of_well_formed_csv_never_fails(tables):
    """With the delimiter given, a well-formed CSV is always read whole; only a file without rows stops."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cfg = write_tables(folder, tables)
        empty = [name for name, rows in tables.items() if not rows]
        if empty:
            with pytest.raises(InputError, match="no data rows") as caught:
                ingestion.ingest_to(cfg, folder / "out")
            assert_one_line(caught.value, folder)
            return
        ingestion.ingest_to(cfg, folder / "out")
        check_ingested(tables, folder / "out")


# --------------------------------------------------------------------------------------------
# 02 cleaning
# --------------------------------------------------------------------------------------------
def non_empty(tables: dict[str, list[dict[str, str]]]) -> dict[str, list[dict[str, str]]]:
    return {name: rows for name, rows in tables.items() if rows}


def check_cleaned(canonical: dict[str, pd.DataFrame], cleaned: cleaning.Cleaned) -> None:
    quality = cleaned.quality
    assert (quality["rows_in"] == quality["rows_out"] + quality["rows_quarantined"]).all()
    for name, frame in canonical.items():
        ledger = quality[quality["table"] == name]
        assert ledger["rows_in"].iloc[0] == len(frame)
        assert (ledger["rows_out"].iloc[:-1].to_numpy() == ledger["rows_in"].iloc[1:].to_numpy()).all()
        clean, quarantine = cleaned.tables[name], cleaned.quarantine[name]
        assert ledger["rows_out"].iloc[-1] == len(clean)
        assert ledger["rows_quarantined"].sum() == len(quarantine)
        # every input row is in the clean table or the quarantine, exactly once
        seen = Counter(clean["source_row"].astype("int64").tolist())
        seen.update(quarantine["source_row"].astype("int64").tolist() if len(quarantine) else [])
        assert seen == Counter(frame["source_row"].tolist()), name
        assert (quarantine["reason"].astype("str").str.strip() != "").all() if len(quarantine) else True
        for column in clean.columns:
            if pd.api.types.is_numeric_dtype(clean[column]) and not pd.api.types.is_bool_dtype(clean[column]):
                numbers = clean[column].astype("float64")
                assert not np.isinf(numbers).any(), f"clean {name}.{column} has infinity"
                required = column in {c.name for c in schema.columns(name) if c.required}
                assert not (required and numbers.isna().any()), f"clean {name}.{column} has NaN"


@SETTINGS
@example(EDGES['single customer, single day'])
@example(EDGES['huge and overflowing amounts'])
@example(EDGES['dates in 1900 and 2200'])
@example(EDGES['nothing valid after cleaning'])
@example(EDGES['refunds and duplicates only'])
@example(EDGES['touches without a channel, flags that are not 0/1'])
@example(EDGES['an experiment with unicode groups'])
@given(datasets())
def test_cleaning_accounts_for_every_row(tables):
    """rows_in = rows_out + rows_quarantined for every rule; each input row is kept or quarantined once."""
    tables = non_empty(tables)
    if not tables:
        return
    with tempfile.TemporaryDirectory() as tmp:
        cfg = write_tables(Path(tmp), tables)
        canonical, _ = ingestion.ingest(cfg)
        try:
            cleaned = cleaning.clean(canonical, cfg)
        except CrmbookError as error:
            assert_one_line(error)
            return
        check_cleaned(canonical, cleaned)


# --------------------------------------------------------------------------------------------
# 03-06: every stage's published tables
# --------------------------------------------------------------------------------------------
def run_stage(stage: str, build, save, run_dir: Path, errors: list[str]):
    """Build and save one stage's tables; a CrmbookError (one line) is a clear stop."""
    try:
        result = build()
    except CrmbookError as error:
        assert_one_line(error)
        errors.append(str(error))
        event(f"{stage}: {type(error).__name__}: {error.problem if isinstance(error, InputError) else error}"[:90])
        return None
    save(run_dir, result)
    event(f"{stage}: published")
    return result


@settings(SETTINGS, max_examples=max(EXAMPLES // 2, 1))  # a whole run per example: about 3 s
@example(EDGES['single customer, single day'], True)
@example(EDGES['huge and overflowing amounts'], True)
@example(EDGES['dates in 1900 and 2200'], True)
@example(EDGES['nothing valid after cleaning'], True)
@example(EDGES['refunds and duplicates only'], True)
@example(EDGES['touches without a channel, flags that are not 0/1'], True)
@example(EDGES['an experiment with unicode groups'], True)
@given(datasets(min_rows=3), st.booleans())
def test_stages_publish_finite_tables_for_every_customer(tables, given_date):
    """03-06 on the clean tables: a clear CrmbookError, or tables with every customer, no NaN/inf."""
    tables = non_empty(tables)
    if "transactions" not in tables:
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cfg = write_tables(folder, tables, analysis_date=ANALYSIS_DATE if given_date else None)
        run_dir = folder / "run"
        errors: list[str] = []
        with recording_tables() as out:
            ingestion.run(cfg, run_dir)
            clean_tables = cleaning.load_clean(cfg, run_dir)
            seg = run_stage("03", lambda: segmentation.segment(cfg, run_dir, clean_tables), segmentation.save, run_dir, errors)
            value = run_stage("04", lambda: clv.evaluate(cfg, run_dir, customers=clean_tables.get("customers")), clv.save,
                              run_dir, errors)
            run_stage("05", lambda: attribution.evaluate(cfg, run_dir, clean_tables), attribution.save, run_dir, errors)
            run_stage("06", lambda: performance.evaluate(clean_tables, cfg, run_dir), performance.save, run_dir, errors)
        problems = [p for name, frame in out.items() for p in numeric_problems(name, frame)]
        assert not problems, problems
        tx = clean_tables["transactions"]

        def buyers(as_of) -> list[str]:  # every customer with a clean order up to the analysis date
            up_to = tx["order_ts"] < pd.Timestamp(as_of) + pd.Timedelta(days=1)
            return sorted(tx.loc[up_to, "customer_id"].astype("str").unique())

        if seg is not None:
            assert out["customer_segments"]["customer_id"].astype("str").tolist() == buyers(seg.as_of)
        if value is not None:
            assert sorted(out["clv_customers"]["customer_id"].astype("str")) == buyers(value.data.split.analysis_date)
        if len(tx) == 0:
            assert errors, "a run with no clean transactions must say so"
