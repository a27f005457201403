"""Exports for BI tools and Excel: the data dictionary of a run's CSV tables (tables/README.md)
and one Excel workbook with a formatted sheet per key table (crmbook_<run_id>.xlsx).

Every column of every tables/**/*.csv has a type (read from the file), a unit (`UNITS`) and a
meaning (text/tables.yaml, in English and Chinese). The dictionary is written in the report
language and depends only on the tables, so identical inputs still give identical files under tables/.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from crmbook.report import TEXT, say, t

#: Unit of each column: `column` for every file, `file.column` where one file differs. Keys of
#: the unit words in text/tables.yaml are `unit_<unit>`.
UNITS: dict[str, str] = {
    # shared
    "customer_id": "none", "customers": "count", "customer_share": "share", "revenue": "currency", "revenue_share": "share",
    "channel": "none", "conversions": "count", "model": "none", "segment": "none", "campaign_id": "none", "orders": "count",
    "recency_days": "days", "table": "none", "ci_low": "share", "ci_high": "share", "median_orders": "count",
    "median_revenue": "currency", "median_recency_days": "days",
    # attribution
    "order": "none", "value": "currency", "share": "share", "misallocation": "share", "recommended": "none",
    "path": "none", "touches": "count", "journeys": "count", "nulls": "count", "conversion_rate": "share",
    # segmentation and audiences
    "r_score": "score", "f_score": "score", "m_score": "score", "recency": "days", "frequency": "count",
    "monetary": "currency", "lifecycle_stage": "none", "value_tier": "none", "cluster_name": "none", "segment_slug": "none",
    "mean_clv": "currency", "action": "none", "cluster": "none", "median_aov": "currency", "median_tenure_days": "days",
    "z_frequency": "sd", "z_aov": "sd", "z_tenure": "sd", "share_lapsed": "share", "share_new": "share",
    "stability_jaccard": "share",
    # campaigns and experiments
    "variant": "none", "control": "none", "n_variant": "count", "n_control": "count", "conversion_rate_control": "share",
    "conversion_rate_variant": "share", "incremental_conversions": "count", "incremental_conversions_ci_low": "count",
    "incremental_conversions_ci_high": "count", "revenue_per_member_control": "currency",
    "revenue_per_member_variant": "currency", "incremental_revenue": "currency", "incremental_revenue_ci_low": "currency",
    "incremental_revenue_ci_high": "currency", "cost": "currency", "roi": "ratio", "cost_per_incremental_conversion": "currency",
    "experiment": "none", "metric": "none", "n": "count", "experiments.value": "metric", "lift_abs": "metric",
    "lift_abs_ci_low": "metric", "lift_abs_ci_high": "metric", "lift_rel": "share", "lift_rel_ci_low": "share",
    "lift_rel_ci_high": "share", "p_value": "probability", "p_adj_holm": "probability", "p_adj_bh": "probability",
    "srm_p": "probability", "chance_to_win": "probability", "expected_loss": "metric", "mde": "metric", "verdict": "none",
    "verdict_reason": "none", "group": "none", "stage_order": "rank", "stage": "none", "pct_of_first": "share",
    "pct_of_previous": "share",
    # channels
    "roas_rank": "rank", "spend": "currency", "cac": "currency", "roas": "ratio", "new_customers": "count",
    "clv_per_customer": "currency", "clv_cac": "ratio", "spend_share": "share", "conversion_share": "share",
    # CLV
    "clv_by_frequency.frequency": "count", "actual": "count", "clv_by_frequency.actual": "purchases",
    "predicted_bgnbd": "count", "predicted_pareto": "count", "predicted_mbgnbd": "count",
    "clv_by_frequency.predicted_bgnbd": "purchases", "clv_by_frequency.predicted_pareto": "purchases",
    "clv_by_frequency.predicted_mbgnbd": "purchases", "p_alive": "probability", "clv": "currency",
    "converged": "none", "log_likelihood": "none", "n_params": "count", "aic": "none", "bic": "none",
    "holdout_customers": "count", "holdout_actual": "count", "holdout_predicted": "count", "holdout_error": "share",
    "mae": "purchases", "rmse": "purchases", "correlation": "none", "selected": "none", "message": "none",
    "param": "none", "estimate": "none", "std_err": "none", "period": "date", "clv_tracking.period": "weeks",
    "days": "days", "period_end": "date", "in_holdout": "none", "actual_cumulative": "count",
    "predicted_bgnbd_cumulative": "count", "predicted_pareto_cumulative": "count", "predicted_mbgnbd_cumulative": "count",
    # performance
    "cohort": "date", "months_since": "months", "cohort_size": "count", "retention": "share",
    "revenue_per_customer": "currency", "kpi": "none", "kpis.value": "kpi", "previous": "kpi", "change_abs": "kpi",
    "change_rel": "share",
    # ingestion and cleaning
    "source": "none", "format": "none", "encoding": "none", "delimiter": "none", "rows": "count", "file_columns": "count",
    "mapped_columns": "none", "ignored_columns": "none", "sha256": "none", "rule": "none", "rows_in": "count",
    "rows_out": "count", "rows_quarantined": "count", "rows_changed": "count", "transforms": "none",
    "source_customer_id": "none", "matched_on": "none", "group_id": "none", "group_size": "count", "ambiguous": "none",
}

#: The tables that get a sheet in the Excel workbook, in this order (those the run wrote).
KEY_TABLES = ("kpis", "cohort_retention", "funnels", "experiments", "campaign_roi", "segment_profiles", "cluster_profiles",
              "rfm_grid", "clv_holdout_metrics", "clv_model_params", "clv_churn_risk", "attribution", "channel_economics",
              "data_quality", "ingestion_summary")
DICTIONARY_SHEET = "dictionary"
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class TableFile:
    """A CSV of the run (`name` as in the dictionary, e.g. 'kpis' or 'audiences/*') and its files."""

    name: str
    paths: tuple[Path, ...]


def csv_tables(tables_dir: Path) -> list[TableFile]:
    """The CSVs under `tables_dir`; the files of a sub-folder that share one header (audiences/*.csv)
    are one entry."""
    tables_dir = Path(tables_dir)
    top = [TableFile(p.stem, (p,)) for p in sorted(tables_dir.glob("*.csv"))]
    grouped: dict[str, list[Path]] = {}
    for path in sorted(tables_dir.glob("*/**/*.csv")):
        grouped.setdefault(path.parent.relative_to(tables_dir).as_posix(), []).append(path)
    return top + [TableFile(f"{folder}/*", tuple(paths)) for folder, paths in sorted(grouped.items())]


def column_type(values: pd.Series) -> str:
    """'integer', 'number', 'boolean', 'date' (every value YYYY-MM-DD) or 'text'."""
    present = values.dropna()
    if present.empty:
        return "text"
    if pd.api.types.is_bool_dtype(values):
        return "boolean"
    if pd.api.types.is_integer_dtype(values):
        return "integer"
    if pd.api.types.is_float_dtype(values):
        return "number"
    if pd.api.types.is_datetime64_any_dtype(values) or present.astype(str).str.match(_DATE).all():
        return "date"
    return "text"


def _key(table: str) -> str:
    return table.split("/")[0]


def meaning_key(table: str, column: str) -> str | None:
    """The text key of a column's meaning: `col_<file>__<column>`, else `col_<column>` (None: undocumented)."""
    for key in (f"col_{_key(table)}__{column}", f"col_{column}"):
        if key in TEXT:
            return key
    return None


def unit_of(table: str, column: str) -> str | None:
    """The unit code of a column (`UNITS`), None when undocumented."""
    return UNITS.get(f"{_key(table)}.{column}", UNITS.get(column))


def read_csv(path: Path) -> pd.DataFrame:
    """A run's CSV as pandas reads it by default (the same typing the workbook and its test use)."""
    return pd.read_csv(path, encoding="utf-8", low_memory=False)


def dictionary(tables_dir: Path, language: str = "en", currency: str = "") -> pd.DataFrame:
    """file, column, type, unit, meaning of every column of every CSV under `tables_dir`, in the
    report language; an undocumented column says so (the tests require none)."""
    rows = []
    for table in csv_tables(tables_dir):
        frame = pd.concat([read_csv(p) for p in table.paths], ignore_index=True)
        file = f"{table.name}.csv"
        for column in frame.columns:
            unit, meaning = unit_of(table.name, column), meaning_key(table.name, column)
            rows.append({
                "file": file, "column": column, "type": t(f"type_{column_type(frame[column])}", language),
                "unit": say(f"unit_{unit}", language, currency=currency) if unit else t("dict_undocumented", language),
                "meaning": t(meaning, language) if meaning else t("dict_undocumented", language)})
    return pd.DataFrame(rows, columns=["file", "column", "type", "unit", "meaning"])


def undocumented(tables_dir: Path) -> list[str]:
    """'file: column' for every CSV column without a unit or a meaning."""
    return [f"{table.name}.csv: {column}" for table in csv_tables(tables_dir)
            for column in read_csv(table.paths[0]).columns
            if unit_of(table.name, column) is None or meaning_key(table.name, column) is None]


def _md(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def data_dictionary_markdown(tables_dir: Path, language: str = "en", currency: str = "") -> str:
    """tables/README.md: how to load the CSVs, then a section per file with its columns."""
    entries = dictionary(tables_dir, language, currency)
    head = [t(k, language) for k in ("dict_column", "dict_type", "dict_unit", "dict_meaning")]
    out = [f"# {t('dict_title', language)}", "", say("dict_intro", language, currency=currency), "",
           t("dict_parquet", language), ""]
    for table in csv_tables(tables_dir):
        file = f"{table.name}.csv"
        out += [f"## {file}", ""]
        described = f"tbl_{_key(table.name)}"
        if described in TEXT:
            out += [t(described, language), ""]
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in entries[entries["file"] == file].itertuples():
            out.append(f"| `{_md(row.column)}` | {_md(row.type)} | {_md(row.unit)} | {_md(row.meaning)} |")
        out.append("")
    return "\n".join(out)


def write_data_dictionary(tables_dir: Path, language: str = "en", currency: str = "") -> Path:
    """Write tables/README.md (see `data_dictionary_markdown`)."""
    path = Path(tables_dir) / "README.md"
    path.write_text(data_dictionary_markdown(tables_dir, language, currency), encoding="utf-8")
    return path


def _cell_value(value):
    """A pandas value as an openpyxl cell value (missing -> empty, numpy scalars -> Python)."""
    if value is None or (isinstance(value, float) and value != value) or value is pd.NA:
        return None
    return value.item() if hasattr(value, "item") else value


def _write_sheet(sheet, frame: pd.DataFrame, types: dict[str, str]) -> None:
    from openpyxl.styles import Alignment, Font, PatternFill
    from openpyxl.utils import get_column_letter

    header_font, header_fill = Font(bold=True, color="FFFFFF"), PatternFill("solid", fgColor="0B3C5D")
    sheet.append(list(frame.columns))
    for cell in sheet[1]:
        cell.font, cell.fill = header_font, header_fill
        cell.alignment = Alignment(vertical="center", wrap_text=False)
    for record in frame.itertuples(index=False):
        sheet.append([_cell_value(v) for v in record])
    for i, column in enumerate(frame.columns, start=1):
        letter, kind = get_column_letter(i), types.get(column, "text")
        if kind == "date":
            fmt = "yyyy-mm-dd"
        elif kind == "integer":
            fmt = "#,##0"
        elif kind == "number":
            fmt = "#,##0.00##"
        else:
            fmt = None
        if fmt:
            for (cell,) in sheet.iter_rows(min_row=2, min_col=i, max_col=i):
                cell.number_format = fmt
        longest = max([len(str(column))] + [len(str(v)) for v in frame[column].head(500).dropna()])
        sheet.column_dimensions[letter].width = min(max(longest + 2, 8), 60)
    sheet.freeze_panes = "A2"
    if len(frame.columns):
        sheet.auto_filter.ref = f"A1:{get_column_letter(len(frame.columns))}{max(len(frame) + 1, 1)}"


def workbook_frames(tables_dir: Path) -> dict[str, pd.DataFrame]:
    """Sheet name -> the key table as written (dates as datetime), in `KEY_TABLES` order."""
    out = {}
    for name in KEY_TABLES:
        path = Path(tables_dir) / f"{name}.csv"
        if path.is_file():
            frame = read_csv(path)
            for column in frame.columns:
                if column_type(frame[column]) == "date":
                    frame[column] = pd.to_datetime(frame[column], format="%Y-%m-%d")
            out[name] = frame
    return out


def write_workbook(tables_dir: Path, path: Path, language: str = "en", currency: str = "") -> Path | None:
    """crmbook_<run_id>.xlsx: a formatted sheet per key table the run wrote (bold header on a
    dark fill, header row frozen, filters, column widths from the content, number formats) and
    a last sheet with the data dictionary. None when the run wrote no key table."""
    from openpyxl import Workbook

    frames = workbook_frames(tables_dir)
    if not frames:
        return None
    book = Workbook()
    book.remove(book.active)
    for name, frame in frames.items():
        _write_sheet(book.create_sheet(name[:31]), frame, {c: column_type(frame[c]) for c in frame.columns})
    entries = dictionary(tables_dir, language, currency)
    _write_sheet(book.create_sheet(DICTIONARY_SHEET), entries, {})
    book.save(path)
    return Path(path)
