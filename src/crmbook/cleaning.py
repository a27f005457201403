"""02 cleaning: small rules, applied in order to every canonical table, each counted.

Every rule takes a table and returns the rows it keeps, the rows it removes (each with a
reason) and how many kept rows it rewrote. `clean_table` chains the rules and records, per
rule, rows_in = rows_out + rows_quarantined; removed rows go to the quarantine with the
rule's name, so no row is ever lost silently.

Rules, in order (columns by their kind in `crmbook.schema`):
exact_duplicate · missing_<required id> · parse_<date column> (canonical format, or
quarantine when required) · future_<required timestamp> · parse_<number column> ·
normalise_categories (trim, collapse spaces, one spelling per case-insensitive value) ·
duplicate_key (tables with a key) · net_refunds and cancelled_order (transactions).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from crmbook import schema
from crmbook.config import CleaningSection, Config

STAGE = "02_cleaning"


@dataclass(frozen=True)
class Step:
    """What one rule did: rows kept, rows removed (with a `reason` column), kept rows rewritten."""

    kept: pd.DataFrame
    removed: pd.DataFrame
    changed: int = 0


@dataclass
class Cleaned:
    """Clean tables, their quarantined rows, and the data-quality ledger."""

    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    quarantine: dict[str, pd.DataFrame] = field(default_factory=dict)
    quality: pd.DataFrame = field(default_factory=pd.DataFrame)


def _split(frame: pd.DataFrame, remove: pd.Series, reason: str | pd.Series, changed: int = 0,
           original: pd.DataFrame | None = None) -> Step:
    """Keep `frame[~remove]`; quarantine the same rows as they were before this rule (`original`)."""
    removed = (frame if original is None else original)[remove].copy()
    removed["reason"] = reason if isinstance(reason, str) else reason[remove]
    return Step(frame[~remove], removed, changed)


def _blank(values: pd.Series) -> pd.Series:
    return values.isna() | values.astype("str").str.strip().eq("")


def exact_duplicate(frame: pd.DataFrame) -> Step:
    """Rows identical to an earlier row in every data column (lineage ignored); the first is kept."""
    data_cols = [c for c in frame.columns if c not in schema.LINEAGE]
    return _split(frame, frame.duplicated(subset=data_cols, keep="first"), "exact copy of an earlier row")


def missing_id(frame: pd.DataFrame, column: str) -> Step:
    """Rows whose required identifier is empty; other identifiers are trimmed (counted as changed)."""
    missing = _blank(frame[column])
    step = _split(frame, missing, f"{column} is empty")
    text = step.kept[column].astype("str")
    trimmed = text.str.strip()
    kept = step.kept.assign(**{column: trimmed})
    return Step(kept, step.removed, int((text != trimmed).sum()))


def parse_dates(frame: pd.DataFrame, column: str, formats: list[str], required: bool, kind: str) -> Step:
    """Parse text dates with `formats`, tried in order. The format most rows match is the column's
    own; rows written in another format are counted as changed. Unparseable values quarantine the
    row when the column is required, else become empty (counted as changed)."""
    values = frame[column]
    if pd.api.types.is_datetime64_any_dtype(values):
        return Step(frame, frame.iloc[0:0].assign(reason=""), 0)
    text = values.astype("str").str.strip()
    if kind == "month":
        text = text.where(~text.str.fullmatch(r"\d{4}-\d{1,2}"), text + "-01")
    parsed = pd.Series(pd.NaT, index=frame.index, dtype="datetime64[us]")
    matched = pd.Series(-1, index=frame.index)
    for position, fmt in enumerate(formats):
        todo = parsed.isna() & text.ne("")
        if not todo.any():
            break
        attempt = pd.to_datetime(text[todo], format=fmt, errors="coerce").astype("datetime64[us]")
        parsed.loc[attempt.index] = attempt
        matched.loc[attempt.index[attempt.notna()]] = position
    empty, bad = text.eq(""), parsed.isna() & text.ne("")
    main_format = matched[matched >= 0].mode().min() if (matched >= 0).any() else 0
    rewritten = int(((matched >= 0) & (matched != main_format)).sum())
    converted = frame.assign(**{column: parsed})
    if required:
        reason = np.where(empty, f"{column} is empty", f"{column} is not a date in any format of cleaning.date_formats")
        return _split(converted, bad | empty, pd.Series(reason, index=frame.index), rewritten, original=frame)
    return Step(converted, frame.iloc[0:0].assign(reason=""), rewritten + int(bad.sum()))


def future_dates(frame: pd.DataFrame, column: str, cutoff: dt.date) -> Step:
    """Rows dated after the cutoff day (the analysis date, else today)."""
    limit = pd.Timestamp(cutoff) + pd.Timedelta(days=1)
    return _split(frame, frame[column] >= limit, f"{column} is after {cutoff.isoformat()}")


def parse_numbers(frame: pd.DataFrame, column: str, required: bool, integer: bool = False) -> Step:
    """Parse numbers (spaces and thousands separators ',' removed). Non-numbers quarantine the
    row when the column is required, else become empty; both are counted."""
    values = frame[column]
    if pd.api.types.is_numeric_dtype(values):
        numbers = values.astype("float64")
        bad = pd.Series(False, index=frame.index)
    else:
        text = values.astype("str").str.strip().str.replace(r"[\s,]", "", regex=True)
        numbers = pd.to_numeric(text, errors="coerce").astype("float64")
        bad = (numbers.isna() & text.ne("")) | ~np.isfinite(numbers.fillna(0))
        numbers = numbers.where(~bad)
    converted = frame.assign(**{column: numbers.round().astype("Int64") if integer else numbers})
    if required:
        missing = numbers.isna()
        return _split(converted, missing, f"{column} is not a number", 0, original=frame)
    return Step(converted, frame.iloc[0:0].assign(reason=""), int(bad.sum()))


def canonical_spelling(values: pd.Series) -> pd.Series:
    """Trim, collapse inner spaces, and give case-insensitive variants one spelling: the most
    frequent one (ties: the alphabetically first), so 'Email ' and 'EMAIL' join 'email'.
    Works on the distinct values only, then maps them back onto the rows."""
    counts = values.value_counts(dropna=True)
    if counts.empty:
        return values.astype("str").where(values.notna())
    variants = pd.DataFrame({"raw": counts.index.astype("str"), "n": counts.to_numpy()})
    variants["spelling"] = variants["raw"].str.strip().str.replace(r"\s+", " ", regex=True)
    variants["key"] = variants["spelling"].str.casefold()
    totals = variants.groupby(["key", "spelling"], as_index=False)["n"].sum()
    best = totals.sort_values(["key", "n", "spelling"], ascending=[True, False, True]).drop_duplicates("key")
    variants["canonical"] = variants["key"].map(best.set_index("key")["spelling"])
    return values.astype("str").map(variants.set_index("raw")["canonical"]).where(values.notna())


def normalise_categories(frame: pd.DataFrame, columns: list[str]) -> Step:
    """Category columns to one spelling per value (see `canonical_spelling`); rows changed are counted."""
    out = frame.copy()
    changed = pd.Series(False, index=frame.index)
    for column in columns:
        before = frame[column].astype("str").where(frame[column].notna())
        out[column] = canonical_spelling(before).replace("", pd.NA).astype("str")
        changed |= before.fillna("") != out[column].fillna("")
    return Step(out, frame.iloc[0:0].assign(reason=""), int(changed.sum()))


def duplicate_key(frame: pd.DataFrame, key: tuple[str, ...]) -> Step:
    """A second row with the same key as an earlier one (rows are not exact copies)."""
    return _split(frame, frame.duplicated(subset=list(key), keep="first"), f"{' + '.join(key)} repeats an earlier row")


def _reversal_kind(frame: pd.DataFrame, rules: CleaningSection) -> pd.Series:
    status = frame["status"].astype("str").str.casefold() if "status" in frame else pd.Series("", index=frame.index)
    kind = pd.Series("", index=frame.index)
    kind[frame["amount"] < 0] = "refund"
    kind[status.isin([s.casefold() for s in rules.refund_statuses])] = "refund"
    kind[status.isin([s.casefold() for s in rules.cancel_statuses])] = "cancellation"
    return kind


def net_refunds(frame: pd.DataFrame, rules: CleaningSection) -> Step:
    """Refund and cancellation rows (negative amount, or a refund/cancel status) are netted into the
    order with the same order_id: the order's lines are scaled by net/gross, and the reversal row goes
    to the quarantine as its audit trail. A reversal with no order to net into is quarantined too."""
    kind = _reversal_kind(frame, rules)
    is_reversal = kind.ne("")
    if not is_reversal.any():
        return Step(frame, frame.iloc[0:0].assign(reason=""), 0)
    sales = frame[~is_reversal]
    gross = sales.groupby("order_id")["amount"].sum()
    reversals = frame[is_reversal]
    # Index lookups, not Series.isin: pandas' Arrow-string isin builds a scalar per looked-up value.
    linked = pd.Series(False, index=frame.index)
    linked[reversals.index] = gross.index.get_indexer(reversals["order_id"]) >= 0
    reason = pd.Series("", index=frame.index)
    reason[linked] = kind[linked] + " netted into its order"
    reason[is_reversal & ~linked] = "refund with no order to net into (" + kind[is_reversal & ~linked] + ")"
    netted = reversals[linked[reversals.index]]
    reversal_total = -netted["amount"].abs().groupby(netted["order_id"]).sum()
    factor = ((gross.loc[reversal_total.index] + reversal_total) / gross.loc[reversal_total.index]).clip(lower=0)
    scale = sales["order_id"].map(factor).astype("float64").fillna(1.0)
    kept = sales.assign(amount=sales["amount"] * scale)
    step = _split(frame, is_reversal, reason)
    return Step(kept, step.removed, int((scale != 1.0).sum()))


def cancelled_order(frame: pd.DataFrame, keep_free: bool = False, reversed_orders: frozenset[str] = frozenset()) -> Step:
    """Lines of orders whose net amount, after refunds are netted, is zero or less: fully cancelled
    or refunded orders are not purchases. Free orders (worth zero with no refund or cancellation,
    e.g. CDNOW's promotional CDs) are removed too, unless `keep_free`; `reversed_orders` are the
    order ids net_refunds netted something into."""
    net = frame.groupby("order_id")["amount"].transform("sum")
    free = net.eq(0) & ~frame["order_id"].isin(list(reversed_orders))
    return _split(frame, (net <= 0) & ~(free & keep_free), "order nets to zero or less after refunds (cancelled)")


def rules_for(table: str, cfg: Config) -> list[tuple[str, callable]]:
    """The ordered (rule name, function) list for one table."""
    rules = cfg.cleaning
    cutoff = rules.future_cutoff or cfg.run.analysis_date or dt.date.today()
    cols = schema.columns(table)
    plan: list[tuple[str, callable]] = [("exact_duplicate", exact_duplicate)]
    for col in cols:
        if col.kind == "id" and col.required:
            plan.append((f"missing_{col.name}", lambda f, c=col.name: missing_id(f, c)))
    for col in cols:
        if col.kind in ("timestamp", "date", "month"):
            plan.append((f"parse_{col.name}", lambda f, c=col: parse_dates(f, c.name, rules.date_formats, c.required, c.kind)))
            if col.required and col.kind == "timestamp":
                plan.append((f"future_{col.name}", lambda f, c=col.name: future_dates(f, c, cutoff)))
        if col.kind in ("number", "integer", "flag"):
            plan.append((f"parse_{col.name}", lambda f, c=col: parse_numbers(f, c.name, c.required, c.kind != "number")))
    categories = [c.name for c in cols if c.kind == "category"]
    plan.append(("normalise_categories", lambda f: normalise_categories(f, [c for c in categories if c in f])))
    if table in schema.KEYS:
        plan.append(("duplicate_key", lambda f: duplicate_key(f, schema.KEYS[table])))
    if table == "transactions":
        netted: set[str] = set()  # order ids net_refunds netted a reversal into, for cancelled_order

        def _net(frame: pd.DataFrame) -> Step:
            step = net_refunds(frame, rules)
            netted.update(step.removed["order_id"].dropna())
            return step

        keep_free = rules.free_orders == "keep"
        plan += [("net_refunds", _net), ("cancelled_order", lambda f: cancelled_order(f, keep_free, frozenset(netted)))]
    return plan


def clean_table(table: str, frame: pd.DataFrame, cfg: Config) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Apply the table's rules in order. Returns (clean, quarantine, ledger rows)."""
    ledger, removed = [], []
    current = frame
    for rule, apply in rules_for(table, cfg):
        if rule.startswith(("parse_", "missing_")) and rule.split("_", 1)[1] not in current:
            continue  # optional column absent from this table
        step = apply(current)
        ledger.append({"stage": STAGE, "table": table, "rule": rule, "rows_in": len(current),
                       "rows_out": len(step.kept), "rows_quarantined": len(step.removed), "rows_changed": step.changed})
        if len(step.removed):
            removed.append(step.removed.astype("str").assign(rule=rule))
        current = step.kept
    quarantine = pd.concat(removed, ignore_index=True) if removed else pd.DataFrame(columns=["rule", "reason"])
    clean = current.reset_index(drop=True)
    schema.clean_schema(table).validate(clean)
    return clean, quarantine, pd.DataFrame(ledger)


def clean(tables: dict[str, pd.DataFrame], cfg: Config) -> Cleaned:
    """Clean every canonical table; see `clean_table`."""
    out = Cleaned()
    ledgers = []
    for table, frame in tables.items():
        out.tables[table], out.quarantine[table], ledger = clean_table(table, frame, cfg)
        ledgers.append(ledger)
    out.quality = pd.concat(ledgers, ignore_index=True)
    return out


def save(run_dir, cleaned: Cleaned) -> None:
    """Write tables/clean_<table>.parquet, tables/quarantine/<table>.parquet, tables/data_quality.csv."""
    from crmbook import store

    for name, frame in cleaned.tables.items():
        store.write_table(run_dir, f"clean_{name}", frame)
        store.write_table(run_dir, f"quarantine/{name}", cleaned.quarantine[name])
    store.write_table(run_dir, "data_quality", cleaned.quality, fmt="csv")


def load_clean(cfg: Config, run_dir) -> dict[str, pd.DataFrame]:
    """The clean tables of this run (02's outputs); built afresh (01 and 02) when 02 has not run
    in `run_dir`, so a later stage's notebook can be opened and run on its own."""
    from crmbook import ingestion, store

    names = [table for table, _ in cfg.data.sources.items()]
    if not all(store.has_table(run_dir, f"clean_{n}") for n in names):
        save(run_dir, clean(ingestion.load_canonical(cfg, run_dir), cfg))
    return {n: store.read_table(run_dir, f"clean_{n}") for n in names}


def removed_by_reason(cleaned: Cleaned) -> pd.Series:
    """Rows quarantined per table and rule, largest first (label 'table: rule')."""
    q = cleaned.quality[cleaned.quality["rows_quarantined"] > 0]
    return q.set_index(q["table"] + ": " + q["rule"])["rows_quarantined"].sort_values(ascending=False)


def monthly_revenue(transactions: pd.DataFrame) -> pd.DataFrame:
    """Net revenue and orders per calendar month of the clean transactions."""
    month = transactions["order_ts"].dt.to_period("M").dt.to_timestamp()
    return (transactions.assign(month=month).groupby("month", as_index=False)
            .agg(revenue=("amount", "sum"), orders=("order_id", "nunique")))


def summarise(cleaned: Cleaned, cfg: Config):
    """KPI cards and findings for the 02 report."""
    from crmbook import report

    lang, q = cfg.report.language, cleaned.quality
    cards = [report.Card(report.t("rows_read", lang), report.number(q.groupby("table")["rows_in"].first().sum())),
             report.Card(report.t("rows_kept", lang), report.number(sum(len(f) for f in cleaned.tables.values()))),
             report.Card(report.t("rows_quarantined", lang), report.number(q["rows_quarantined"].sum()))]
    findings: list[str] = []
    orders = cleaned.tables.get("transactions")
    if orders is not None:
        tq = q[q["table"] == "transactions"]
        rows_in, kept = int(tq["rows_in"].iloc[0]), len(orders)
        findings.append(report.say("f_kept", lang, kept=report.number(kept), rows=report.number(rows_in),
                                   share=f"{kept / max(rows_in, 1):.1%}", removed=report.number(rows_in - kept)))
        if len(orders):
            revenue = report.money(orders["amount"].sum(), cfg.run.currency)
            first, last = f"{orders['order_ts'].min():%Y-%m-%d}", f"{orders['order_ts'].max():%Y-%m-%d}"
            cards += [report.Card(report.t("customers", lang), report.number(orders["customer_id"].nunique())),
                      report.Card(report.t("orders", lang), report.number(orders["order_id"].nunique())),
                      report.Card(report.t("revenue", lang), revenue),
                      report.Card(report.t("date_range", lang), f"{first} – {last}")]
            findings.append(report.say("f_clean_span", lang, customers=report.number(orders["customer_id"].nunique()),
                                       orders=report.number(orders["order_id"].nunique()), revenue=revenue, first=first, last=last))
        netted = tq.loc[tq["rule"] == "net_refunds", "rows_quarantined"].sum()
        cancelled = tq.loc[tq["rule"] == "cancelled_order", "rows_quarantined"].sum()
        if netted:
            findings.append(report.say("f_refunds", lang, n=report.number(netted), cancelled=report.number(cancelled)))
    top = removed_by_reason(cleaned)
    if len(top):
        findings.append(report.say("f_top_rule", lang, rule=top.index[0], n=report.number(top.iloc[0])))
    rewritten = q.loc[q["rule"].str.startswith(("parse_", "normalise_")), "rows_changed"].sum()
    if rewritten:
        findings.append(report.say("f_rewritten", lang, n=report.number(rewritten)))
    return report.StageSummary(cards, findings[:5])


def quarantine_sample(quarantine: pd.DataFrame, per_rule: int = 3) -> pd.DataFrame:
    """A few quarantined rows per rule, reason and lineage first (for the report)."""
    first = ["rule", "reason", "source", "source_row"]
    sample = quarantine.groupby("rule", sort=False).head(per_rule)
    return sample[first + [c for c in sample.columns if c not in first]]


def rules_that_acted(quality: pd.DataFrame) -> pd.DataFrame:
    """The ledger rows of rules that removed or rewrote something (for the report)."""
    acted = (quality["rows_quarantined"] > 0) | (quality["rows_changed"] > 0)
    return quality[acted].drop(columns=["stage"])
