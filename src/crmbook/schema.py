"""The canonical tables (GUIDE §5): column names, kinds, which are required, and their
pandera schemas after cleaning.

Ingestion maps any export onto these names as text; cleaning parses each column by its
kind and validates the result with `clean_schema(table)`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pandera.pandas as pa

Kind = Literal["id", "timestamp", "date", "month", "number", "integer", "flag", "category", "text", "pii"]


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind
    required: bool = False


def _cols(*specs: tuple[str, Kind] | tuple[str, Kind, bool]) -> tuple[Column, ...]:
    return tuple(Column(*spec) for spec in specs)


TABLES: dict[str, tuple[Column, ...]] = {
    "transactions": _cols(
        ("order_id", "id", True), ("customer_id", "id", True), ("order_ts", "timestamp", True),
        ("amount", "number", True), ("quantity", "number"), ("product_id", "id"),
        ("category", "category"), ("channel", "category"), ("status", "category"),
        ("currency", "category"), ("country", "category"),
        ("amount_outlier", "flag"),  # set by 02 cleaning's outlier rule (flag mode)
    ),
    "customers": _cols(
        ("customer_id", "id", True), ("signup_ts", "timestamp"), ("name", "pii"), ("email", "pii"),
        ("phone", "pii"), ("gender", "category"), ("birth_date", "date"), ("age", "number"),
        ("region", "category"), ("city", "category"), ("country", "category"),
        ("acquisition_channel", "category"),
    ),
    "touchpoints": _cols(
        ("customer_id", "id", True), ("ts", "timestamp", True), ("channel", "category", True),
        ("campaign_id", "id"), ("event", "category"), ("cost", "number"),
    ),
    "campaigns": _cols(
        ("campaign_id", "id", True), ("name", "text"), ("channel", "category"),
        ("start_date", "date"), ("end_date", "date"), ("cost", "number"),
    ),
    "campaign_members": _cols(
        ("campaign_id", "id", True), ("customer_id", "id", True), ("group", "category", True),
        ("delivered", "flag"), ("opened", "flag"), ("clicked", "flag"), ("visited", "flag"), ("converted", "flag"),
        ("revenue", "number"), ("pre_period_value", "number"),
    ),
    "channel_spend": _cols(("period", "month", True), ("channel", "category", True), ("spend", "number", True)),
}

#: Columns that identify one row: a second row with the same key is a key duplicate.
#: Transactions have none: several order lines share an order_id.
KEYS: dict[str, tuple[str, ...]] = {
    "customers": ("customer_id",),
    "campaigns": ("campaign_id",),
    "campaign_members": ("campaign_id", "customer_id"),
    "channel_spend": ("period", "channel"),
}

#: Columns every ingested table carries: where each row came from (file as written in params,
#: and its spreadsheet row number: the header is row 1, the first data row is row 2).
LINEAGE = ("source", "source_row")

PII_COLUMNS = ("name", "email", "phone")

_DTYPES: dict[Kind, object] = {
    "id": str, "category": str, "text": str, "pii": str,
    "timestamp": pa.DateTime, "date": pa.DateTime, "month": pa.DateTime,
    "number": float, "integer": "Int64", "flag": "Int64",
}


def columns(table: str) -> tuple[Column, ...]:
    return TABLES[table]


def required(table: str) -> list[str]:
    return [c.name for c in TABLES[table] if c.required]


def clean_schema(table: str) -> pa.DataFrameSchema:
    """The pandera schema a clean table satisfies: types, required columns non-null, amounts finite."""
    checks: dict[str, pa.Column] = {}
    for col in TABLES[table]:
        if col.kind == "pii":
            continue  # pseudonymised at ingestion (see crmbook.ingestion)
        col_checks = [pa.Check(lambda s: s.abs() < float("inf"), element_wise=False, name="finite")] if col.kind == "number" else []
        checks[col.name] = pa.Column(_DTYPES[col.kind], nullable=not col.required, required=col.required, checks=col_checks)
    checks["source"] = pa.Column(str, nullable=False)
    checks["source_row"] = pa.Column("int64", nullable=False)
    return pa.DataFrameSchema(checks, strict=False, name=f"clean {table}")
