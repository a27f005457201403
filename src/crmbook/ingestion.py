"""01 ingestion: read every source as text and map its columns onto the canonical tables.

Every source (CSV/TSV, Excel, Parquet, JSON lines, or a database table or query through
SQLAlchemy) becomes a DuckDB view; one SQL projection per source maps its columns onto the
canonical names, rewrites values as params ask (`Source.transforms`: date formats, decimal
commas, cents, signs, status codes, ...) and writes `tables/canonical_<table>.parquet` with
DuckDB streaming Arrow batches into pyarrow's Parquet writer, so a large CSV or Parquet file never
passes through pandas (and memory stays at one batch). Several sources of
one table are unioned; every row keeps its `source` and `source_row` (the header is row 1).

Values stay text here; typing happens in `crmbook.cleaning`, where a value that does not parse
is counted and quarantined instead of failing the read. A value a transform cannot parse is
kept as it was for the same reason. Personal data is pseudonymised on the way in: names are
dropped, e-mails and phones are normalised (`cleaning.normalise_contacts`) and replaced by
salted SHA-256 digests (`email_hash`, `phone_hash`), so no later table, report or log shows them.
"""
from __future__ import annotations

import codecs
import contextlib
import csv
import hashlib
import io
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import charset_normalizer
import duckdb
import pandas as pd
import pyarrow as pa

from crmbook import schema
from crmbook.config import Config, Source, ValueTransform
from crmbook.errors import InputError

_log = logging.getLogger(__name__)  # progress lines (crmbook.progress)

SAMPLE_BYTES = 1 << 20
FULL_CHECK_BYTES = 64 << 20  # larger CSV files: only the first megabyte is checked in Python (detect_encoding_fast)
DELIMITERS = ",;\t|"
DEFAULT_SALT = "crmbook-default-salt"  # set CRMBOOK_PII_SALT in production: see README § Privacy
ROW = "__crmbook_row"  # the record number column of every raw view (the header is record 1)
TIMESTAMP_TEXT = "%Y-%m-%d %H:%M:%S"
_CHINESE_ENCODINGS = {"gb2312", "gbk", "gb18030", "hz", "big5", "cp936"}
_UTF8 = {"utf-8", "utf8", "utf-8-sig", "utf_8", "utf_8_sig", "ascii", "us-ascii"}


@dataclass(frozen=True)
class SourceRead:
    """What reading one source found (one row of ingestion_summary.csv)."""

    table: str
    source: str
    format: str
    encoding: str
    delimiter: str
    rows: int
    file_columns: int
    mapped_columns: str
    ignored_columns: str
    transforms: str
    sha256: str


# --- Bytes: checksums, encodings, delimiters ---------------------------------------------------

def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(SAMPLE_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def detect_encoding(path: Path) -> str:
    """UTF-8 (with or without BOM) when the whole file decodes as UTF-8, else charset-normalizer's
    best guess on the first megabyte and the bytes around the first one that is not UTF-8; Chinese
    encodings are widened to GB18030 (a superset of GBK)."""
    with path.open("rb") as handle:
        head = handle.read(SAMPLE_BYTES)
        if head.startswith(codecs.BOM_UTF8):
            return "utf-8-sig"
        decoder = codecs.getincrementaldecoder("utf-8")()
        chunk = head
        try:
            while chunk:
                decoder.decode(chunk)
                chunk = handle.read(16 * SAMPLE_BYTES)
            decoder.decode(b"", final=True)
            return "utf-8"
        except UnicodeDecodeError as error:
            around = b"" if chunk is head else chunk[max(0, error.start - SAMPLE_BYTES // 2):error.start + SAMPLE_BYTES // 2]
    return _guess_encoding(path, head + b"\n" + around if around else head)


def _guess_encoding(path: Path, sample: bytes) -> str:
    """charset-normalizer's best guess for `sample`, Chinese encodings widened to GB18030."""
    guess = charset_normalizer.from_bytes(sample).best()
    if guess is None or b"\x00" in sample:
        raise InputError(path, "cannot detect the text encoding (is it a text file?); set `encoding:` for this source "
                               "in params (e.g. gbk, latin-1)")
    encoding = guess.encoding.lower().replace("_", "")
    return "gb18030" if encoding in _CHINESE_ENCODINGS else guess.encoding


def detect_encoding_fast(path: Path) -> tuple[str, bool]:
    """(encoding, provisional): as `detect_encoding`, but a file larger than FULL_CHECK_BYTES whose
    first megabyte is UTF-8 is taken as UTF-8 without decoding the rest in Python (`provisional`):
    DuckDB validates every byte as it reads, and `_write_source` detects again from the whole file
    when it meets one that is not UTF-8. Saves a second pass over large files (1 s per 700 MB)."""
    if path.stat().st_size <= FULL_CHECK_BYTES:
        return detect_encoding(path), False
    with path.open("rb") as handle:
        head = handle.read(SAMPLE_BYTES)
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig", False
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head)  # not final: the last character may be cut
    except UnicodeDecodeError:
        return _guess_encoding(path, head), False
    return "utf-8", True


def sniff_delimiter(path: Path, encoding: str) -> str:
    """The delimiter among , ; tab | that splits the first lines most consistently."""
    with path.open(encoding=encoding, errors="replace", newline="") as handle:
        sample = handle.read(64 * 1024)
    if not sample.strip():
        raise InputError(path, "the file is empty")
    try:
        return csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        header = sample.splitlines()[0]
        return max(DELIMITERS, key=header.count) if any(d in header for d in DELIMITERS) else ","


def _transcode(path: Path, encoding: str, folder: Path) -> Path:
    """A UTF-8 copy of a text file in another encoding (DuckDB reads UTF-8), streamed in 16 MB
    chunks. A byte that does not decode is an `InputError` naming the line."""
    target = folder / f"{path.stem}.utf8{path.suffix}"
    decoder = codecs.getincrementaldecoder(encoding)()
    done, lines = 0, 1
    with path.open("rb") as raw, target.open("w", encoding="utf-8", newline="") as out:
        for chunk in iter(lambda: raw.read(16 * SAMPLE_BYTES), b""):
            try:
                out.write(decoder.decode(chunk))
            except UnicodeDecodeError as error:
                line = lines + chunk[:error.start].count(b"\n")
                raise InputError(path, f"not readable as {encoding} ({error.reason} at byte {done + error.start}); "
                                       "set `encoding:` in params", row=line) from None
            done += len(chunk)
            lines += chunk.count(b"\n")
        out.write(decoder.decode(b"", final=True))
    return target


def _first_record(path: Path, delimiter: str) -> list[str]:
    """The first record of a UTF-8 CSV file (the header), parsed with the csv module."""
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as handle:  # DuckDB reports bad bytes by row
        sample = handle.read(SAMPLE_BYTES)
    for record in csv.reader(io.StringIO(sample), delimiter=delimiter):
        if record:
            return [c.strip() for c in record]
    return []


# --- Raw views: every reader ends as a DuckDB view of the source's records --------------------

@dataclass
class RawSource:
    """A source opened as the DuckDB view `view`: record number `ROW` (header = 1), and one SQL
    expression and DuckDB type per source column, by the column's name in the source. Record
    numbers count as in a spreadsheet of the source with a header row: the first data row is 2
    (1 for a CSV without a header)."""

    view: str
    names: list[str]
    exprs: dict[str, str]
    types: dict[str, str]
    encoding: str = "binary"
    delimiter: str = ""
    first_row: int = 2
    checks: list[str] = field(default_factory=list)  # SQL returning the first bad record number, or NULL
    provisional: bool = False  # UTF-8 assumed from the first megabyte (see detect_encoding_fast)


def _q(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + str(name).replace('"', '""') + '"'


def _lit(value: str) -> str:
    """A SQL string literal (params text only: no value of the data is ever written into SQL)."""
    return "'" + str(value).replace("'", "''") + "'"


def _names_for(path: Path, source: Source, fields: list[str]) -> list[str]:
    if source.header:
        names = [f or f"column_{i + 1}" for i, f in enumerate(fields)]
        duplicated = [n for i, n in enumerate(names) if n in names[:i]]
        if duplicated:
            raise InputError(path, "the header repeats a column name", column=duplicated[0], row=1)
        return names
    names = source.names or [f"column_{i + 1}" for i in range(len(fields))]
    if len(names) != len(fields):
        raise InputError(path, f"`names` lists {len(names)} columns but the file has {len(fields)}", row=1)
    return names


def _open_csv(con: duckdb.DuckDBPyConnection, view: str, path: Path, source: Source, folder: Path) -> RawSource:
    if path.stat().st_size == 0:
        raise InputError(path, "the file is empty")
    encoding, provisional = detect_encoding_fast(path) if source.encoding == "auto" else (source.encoding, False)
    delimiter = source.delimiter or sniff_delimiter(path, encoding)
    text_path = path if codecs.lookup(encoding).name in {codecs.lookup(e).name for e in _UTF8} else _transcode(path, encoding, folder)
    if delimiter == "whitespace":
        lines = (f"read_csv({_lit(text_path.as_posix())}, columns={{'line': 'VARCHAR'}}, delim='\x01\x02\x03\x04', "
                 "quote='', escape='', header=false, auto_detect=false)")
        con.execute(f"CREATE OR REPLACE TEMP VIEW {view}_lines AS SELECT row_number() OVER () AS {ROW}, "
                    f"regexp_split_to_array(trim(line), '\\s+') AS fields FROM {lines} WHERE trim(line) <> ''")
        first = con.execute(f"SELECT fields FROM {view}_lines ORDER BY {ROW} LIMIT 1").fetchone()
        if first is None:
            raise InputError(path, "the file is empty")
        fields = list(first[0])
        columns = ", ".join(f"fields[{i + 1}] AS c{i}" for i in range(len(fields)))
        con.execute(f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT {ROW}, {columns} FROM {view}_lines "
                    f"WHERE {ROW} >= {2 if source.header else 1}")
        checks = [f"SELECT min({ROW}), any_value(len(fields)) FROM {view}_lines WHERE len(fields) <> {len(fields)}"]
    else:
        fields = _first_record(text_path, delimiter)
        if not fields:
            raise InputError(path, "the file is empty")
        columns = "{" + ", ".join(f"'c{i}': 'VARCHAR'" for i in range(len(fields))) + "}"
        reader = (f"read_csv({_lit(text_path.as_posix())}, columns={columns}, delim={_lit(delimiter)}, quote='\"', "
                  "escape='\"', header=false, auto_detect=false, strict_mode=true, null_padding=false, "
                  "encoding='utf-8')")
        con.execute(f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT * FROM (SELECT row_number() OVER () AS {ROW}, * "
                    f"FROM {reader}) WHERE {ROW} >= {2 if source.header else 1}")
        checks = []
    names = _names_for(path, source, fields)
    return RawSource(view, names, {n: f"c{i}" for i, n in enumerate(names)}, dict.fromkeys(names, "VARCHAR"),
                     encoding, delimiter, 2 if source.header else 1, checks, provisional)


def _register_frame(con: duckdb.DuckDBPyConnection, view: str, frame: pd.DataFrame, first_row: int) -> None:
    frame = frame.reset_index(drop=True)
    frame.insert(0, ROW, pd.RangeIndex(first_row, first_row + len(frame), dtype="int64"))
    con.register(view, frame)


def _open_excel(con: duckdb.DuckDBPyConnection, view: str, path: Path, source: Source) -> RawSource:
    import openpyxl

    try:
        sheets = openpyxl.load_workbook(path, read_only=True).sheetnames
    except Exception as error:  # noqa: BLE001 - openpyxl raises many kinds for a file that is not a workbook
        raise InputError(path, f"not an Excel .xlsx workbook ({type(error).__name__}); is the format right?") from None
    sheet = source.sheet
    if (isinstance(sheet, int) and not 0 <= sheet < len(sheets)) or (isinstance(sheet, str) and sheet not in sheets):
        raise InputError(path, f"there is no sheet {sheet!r}; the workbook's sheets are {', '.join(map(repr, sheets))} "
                               "(set `sheet:` to a name, or a position from 0)")
    frame = pd.read_excel(path, sheet_name=sheet, header=None, dtype=str).fillna("")
    name = sheet if isinstance(sheet, str) else sheets[sheet]
    if frame.empty:
        others = [s for s in sheets if s != name]
        hint = f"; the data may be on another sheet: {', '.join(map(repr, others))} (set `sheet:`)" if others else ""
        raise InputError(path, f"sheet {name!r} is empty{hint}")
    fields = [str(v).strip() for v in frame.iloc[0]] if source.header else [""] * frame.shape[1]
    names = _names_for(path, source, fields)
    body = frame.iloc[1:] if source.header else frame
    body.columns = [f"c{i}" for i in range(frame.shape[1])]
    first_row = 2 if source.header else 1
    _register_frame(con, view, body, first_row)
    return RawSource(view, names, {n: f"c{i}" for i, n in enumerate(names)}, dict.fromkeys(names, "VARCHAR"),
                     "binary", "", first_row)


def _typed_view(con: duckdb.DuckDBPyConnection, view: str, relation: str, path: Path, first_row: int) -> RawSource:
    """A raw view over a typed relation (Parquet, JSON lines, a database result)."""
    try:
        described = con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()
    except duckdb.Error as error:
        raise _duckdb_error(path, error) from None
    names = [row[0] for row in described if row[0] != ROW]
    return RawSource(view, names, {n: _q(n) for n in names}, {row[0]: str(row[1]) for row in described},
                     "binary", "", first_row)


def _open_parquet(con: duckdb.DuckDBPyConnection, view: str, path: Path) -> RawSource:
    relation = f"read_parquet({_lit(path.as_posix())}, file_row_number=true)"
    raw = _typed_view(con, view, relation, path, 2)
    raw.names.remove("file_row_number")
    con.execute(f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT file_row_number + 2 AS {ROW}, * EXCLUDE (file_row_number) "
                f"FROM {relation}")
    return raw


def _open_jsonl(con: duckdb.DuckDBPyConnection, view: str, path: Path) -> RawSource:
    if path.stat().st_size == 0:
        raise InputError(path, "the file is empty")
    sampled = f"read_json({_lit(path.as_posix())}, format='newline_delimited', sample_size=-1)"
    raw = _typed_view(con, view, sampled, path, 2)
    columns = "{" + ", ".join(f"{_lit(n)}: 'VARCHAR'" for n in raw.names) + "}"
    con.execute(f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT row_number() OVER () + 1 AS {ROW}, * FROM "
                f"read_json({_lit(path.as_posix())}, format='newline_delimited', columns={columns})")
    raw.types = dict.fromkeys(raw.names, "VARCHAR")
    return raw


# --- SQL sources --------------------------------------------------------------------------------

@contextlib.contextmanager
def _database(source: Source, cfg: Config | None) -> Iterator[tuple[object, str]]:
    """A read-only SQLAlchemy connection to the source's database, and the password (to scrub it
    from error messages). The password comes from the environment variable `sql.password_env`."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    sql = source.sql
    label = str(source.path)
    password = ""
    if sql.password_env:
        password = os.environ.get(sql.password_env, "")
        if not password:
            raise InputError(label, f"the environment variable {sql.password_env} (sql.password_env) is not set: "
                                    "export it with the database password before the run")
    try:
        url = make_url(sql.url)
        if url.drivername.startswith("sqlite") and url.database and url.database != ":memory:" and cfg is not None:
            url = url.set(database=str(cfg.resolve(Path(url.database))))
        if password:
            url = url.set(password=password)
        engine = sa.create_engine(url, hide_parameters=True, poolclass=sa.pool.NullPool)
    except Exception as error:  # noqa: BLE001 - a bad URL or a missing driver
        raise InputError(label, f"cannot use the database URL: {_scrub(error, password)}") from None
    try:
        with engine.connect() as connection:
            if engine.dialect.name == "postgresql":
                connection.exec_driver_sql("SET TRANSACTION READ ONLY")
            elif engine.dialect.name == "sqlite":
                connection.exec_driver_sql("PRAGMA query_only = ON")
            try:
                yield connection, password
            finally:
                connection.rollback()
    except InputError:
        raise
    except Exception as error:  # noqa: BLE001 - every driver has its own exceptions
        raise InputError(label, f"database error: {_scrub(error, password)}") from None
    finally:
        engine.dispose()


def _scrub(error: BaseException, password: str) -> str:
    """The first line of an error, with the password masked wherever a driver echoed it."""
    text = str(getattr(error, "orig", None) or error).strip().splitlines()
    line = text[0] if text else type(error).__name__
    return line.replace(password, "***") if password else line


def _sql_statement(connection, source: Source):
    """A SQLAlchemy SELECT of the source's table (quoted by SQLAlchemy, reflected to check it
    exists) or its read-only query. No SQL is ever built from values of the data."""
    import sqlalchemy as sa

    sql = source.sql
    if sql.query is not None:
        return sa.text(sql.query)
    schema_name, _, name = sql.table.rpartition(".")
    try:
        table = sa.Table(name, sa.MetaData(), schema=schema_name or None, autoload_with=connection)
    except sa.exc.NoSuchTableError:
        tables = sa.inspect(connection).get_table_names(schema=schema_name or None)
        raise InputError(source.path, f"there is no table {sql.table!r} in the database (it has: {', '.join(tables) or 'none'})") from None
    return sa.select(table)


def read_sql(source: Source, cfg: Config | None = None, limit: int | None = None) -> pd.DataFrame:
    """The rows of a SQL source (at most `limit`) as a DataFrame with Arrow-backed nullable types
    (integers with gaps stay integers: no float ids)."""
    import sqlalchemy as sa

    with _database(source, cfg) as (connection, _):
        statement = _sql_statement(connection, source)
        if limit is not None:
            statement = (statement.limit(limit) if isinstance(statement, sa.Select)
                         else sa.text(f"SELECT * FROM ({source.sql.query}) AS crmbook_query LIMIT {int(limit)}"))
        return pd.read_sql(statement, connection, dtype_backend="pyarrow")


def _open_sql(con: duckdb.DuckDBPyConnection, view: str, source: Source, cfg: Config | None) -> RawSource:
    frame = read_sql(source, cfg)
    names = [str(c) for c in frame.columns]
    duplicated = [n for i, n in enumerate(names) if n in names[:i]]
    if duplicated:
        raise InputError(source.path, "the query returns a column name twice", column=duplicated[0])
    _register_frame(con, view, frame, 2)
    return _typed_view(con, view, view, source.path, 2)


def open_source(con: duckdb.DuckDBPyConnection, view: str, source: Source, path: Path, folder: Path,
                cfg: Config | None = None) -> RawSource:
    """Open one source as a DuckDB view (see `RawSource`). `folder` holds temporary files."""
    kind = source.file_format
    if kind == "sql":
        return _open_sql(con, view, source, cfg)
    if not path.is_file():
        raise InputError(path, "file not found")
    if kind == "csv":
        return _open_csv(con, view, path, source, folder)
    if kind == "excel":
        return _open_excel(con, view, path, source)
    if kind == "parquet":
        return _open_parquet(con, view, path)
    return _open_jsonl(con, view, path)


# --- Presets: the mappings of known exports -----------------------------------------------------

@dataclass(frozen=True)
class Preset:
    """Source options of a known export (columns, transforms, ...) and where its layout comes from."""

    options: dict
    origin: str = ""


PRESETS: dict[str, Preset] = {
    "uci_online_retail": Preset(
        {"columns": {"order_id": "Invoice", "customer_id": "Customer ID", "order_ts": "InvoiceDate", "amount": "Quantity",
                     "quantity": "Quantity", "product_id": "StockCode", "status": "Invoice", "country": "Country"},
         "transforms": {"amount": {"multiply_by": "Price"},
                        "status": {"patterns": {"^[Cc]": "cancelled"}, "default": "completed"},
                        "order_ts": {"date_format": ["%Y-%m-%d %H:%M:%S", "%m/%d/%Y %H:%M", "%d/%m/%Y %H:%M"]}}},
        "UCI Online Retail II (Chen 2019): Invoice, StockCode, Description, Quantity, InvoiceDate, Price, Customer ID, "
        "Country; line amount = Quantity × Price; invoices starting with C are cancellations"),
    "cdnow": Preset(
        {"delimiter": "whitespace", "header": False, "names": ["customer_id", "sample_id", "date", "cds", "dollars"],
         "columns": {"customer_id": "customer_id", "order_ts": "date", "amount": "dollars", "quantity": "cds"}, "row_id": "order_id"},
        "CDNOW sample (Fader & Hardie): master id, sample id, date YYYYMMDD, CDs, dollars; whitespace-separated, no header"),
    "hillstrom": Preset(
        {"columns": {"group": "segment", "visited": "visit", "converted": "conversion", "revenue": "spend", "pre_period_value": "history"},
         "constants": {"campaign_id": "hillstrom_2008"}, "row_id": "customer_id"},
        "MineThatData e-mail test (Hillstrom 2008): recency, history_segment, history, mens, womens, zip_code, newbie, channel, segment, visit, conversion, spend"),
    "shopify_orders": Preset(
        {"columns": {"order_id": "Name", "customer_id": "Email", "order_ts": "Created at", "amount": "Lineitem quantity",
                     "quantity": "Lineitem quantity", "product_id": "Lineitem sku", "status": "Financial Status",
                     "channel": "Source", "currency": "Currency"},
         "transforms": {"customer_id": {"fill_down": True, "pseudonymise": "email"},
                        "order_ts": {"replace": {r"\s*[+-]\d{2}:?\d{2}$": ""}, "date_format": ["%Y-%m-%d %H:%M:%S"]},
                        "amount": {"multiply_by": "Lineitem price"},
                        "status": {"fill_down": True, "values": {
                            "paid": "completed", "partially_paid": "completed", "partially_refunded": "completed",
                            "authorized": "pending", "pending": "pending", "refunded": "refunded", "voided": "voided"}},
                        "channel": {"fill_down": True}, "currency": {"fill_down": True}}},
        "Shopify admin Orders export (orders_export.csv): one row per line item, order fields (Email, Financial Status, "
        "Source, ...) on the first line of each order only; Created at as 2024-03-01 10:15:00 +0100"),
    "zoho_crm_deals": Preset(
        {"columns": {"order_id": "Record Id", "customer_id": "Account Name", "order_ts": "Closing Date", "amount": "Amount",
                     "status": "Stage", "channel": "Lead Source", "category": "Type", "currency": "Currency"},
         "transforms": {"order_id": {"replace": {"^zcrm_": ""}},
                        "order_ts": {"date_format": ["%Y-%m-%d", "%m/%d/%Y", "%b %d, %Y"]},
                        "status": {"values": {"closed won": "completed", "closed lost": "cancelled",
                                              "closed-lost to competition": "cancelled", "closed lost to competition": "cancelled"},
                                   "default": "open"}}},
        "Zoho CRM Deals module export (CSV, field labels as headers): Record Id (zcrm_...), Deal Owner, Deal Name, Amount, "
        "Closing Date, Account Name, Stage, Type, Lead Source, Contact Name, Probability (%), Created Time, ...; "
        "a deal is a purchase when its stage is Closed Won"),
    "fxiaoke_orders": Preset(
        {"columns": {"order_id": "销售订单编号", "customer_id": "客户名称", "order_ts": "下单日期", "amount": "销售订单金额(元)",
                     "status": "生命状态", "category": "业务类型"},
         "transforms": {"order_ts": {"date_format": ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d", "%Y/%m/%d",
                                                     "%Y年%m月%d日"]},
                        "amount": {"decimal": "."},
                        "status": {"values": {"正常": "completed", "作废": "cancelled", "已作废": "cancelled",
                                              "审核中": "pending", "未生效": "pending", "变更中": "completed"}}}},
        "纷享销客 (Fxiaoke) CRM 销售订单 (SalesOrderObj) list export: 销售订单编号, 客户名称, 下单日期, 销售订单金额(元), "
        "生命状态, 负责人, 业务类型, ...; .xlsx or a GBK CSV"),
}


def with_preset(source: Source) -> Source:
    """The source with its preset's defaults filled in (anything set in params wins; `columns`,
    `constants` and `transforms` are merged key by key). Preset columns the table does not have
    (or an export leaves out, when optional) are skipped by `column_mapping`."""
    if source.preset is None:
        return source
    if source.preset not in PRESETS:
        raise InputError(source.path, f"unknown preset {source.preset!r}; presets: {', '.join(sorted(PRESETS))}")
    options = dict(PRESETS[source.preset].options)
    explicit = source.model_dump(exclude_unset=True)
    merged = {}
    for key in ("columns", "constants", "transforms"):
        merged[key] = {**options.get(key, {}), **explicit.get(key, {})}
    merged["transforms"] = {k: ValueTransform.model_validate(v) if isinstance(v, dict) else v
                            for k, v in merged["transforms"].items()}
    update = {k: v for k, v in options.items() if k not in explicit and k not in merged}
    return source.model_copy(update={**update, **merged})


# --- Mapping --------------------------------------------------------------------------------------

def column_mapping(table: str, source: Source, file_columns: list[str], path: Path) -> dict[str, str]:
    """canonical -> source column, from params, else a source column with the canonical name.
    Raises `InputError` when a required canonical column has no source."""
    mapping: dict[str, str] = {}
    generated = set(source.constants) | ({source.row_id} if source.row_id else set())
    canonical = {c.name for c in schema.columns(table)}
    preset = PRESETS[source.preset].options if source.preset in PRESETS else {}
    preset_columns = preset.get("columns", {})
    preset_keys = set(preset_columns) | set(preset.get("transforms", {})) | set(preset.get("constants", {}))
    for col in schema.columns(table):
        if col.name in generated:
            continue
        wanted = source.columns.get(col.name, col.name if col.name in file_columns else None)
        if wanted is None:
            if col.required:
                hint = ""
                if len(file_columns) == 1 and any(d in file_columns[0] for d in DELIMITERS):
                    hint = "; the header is one column: is `delimiter:` right?"
                raise InputError(path, f"the {table} table needs column {col.name!r}: map it under "
                                 f"data.sources.{table}[..].columns.{col.name} (the file has: {', '.join(file_columns)}){hint}",
                                 column=col.name)
            continue
        if wanted not in file_columns:
            if not col.required and preset_columns.get(col.name) == wanted:
                continue  # an optional column of the preset's layout that this export leaves out
            raise InputError(path, f"params map {col.name!r} to {wanted!r}, which is not in the header "
                             f"(the file has: {', '.join(file_columns)})", column=wanted, row=1)
        mapping[col.name] = wanted
    unknown = (set(source.columns) | generated | set(source.transforms)) - canonical - preset_keys
    if unknown:
        raise InputError(path, f"params map unknown canonical column(s) {sorted(unknown)} for table {table}")
    for name, transform in source.transforms.items():
        if name not in mapping:
            continue
        for other in [transform.multiply_by, *transform.negate_when]:
            if other is not None and other not in file_columns:
                raise InputError(path, f"transforms.{name} uses column {other!r}, which is not in the header "
                                       f"(the file has: {', '.join(file_columns)})", column=other, row=1)
    return mapping


def _as_text(expr: str, kind: str) -> str:
    """A raw column of DuckDB type `kind` as canonical text: timestamps as %Y-%m-%d %H:%M:%S (UTC
    for zoned ones), dates as %Y-%m-%d, booleans as 1/0, whole floats without '.0' (ids read
    from floats), anything else as DuckDB writes it."""
    kind = kind.upper()
    if kind.startswith(("VARCHAR", "TEXT", "STRING")):
        return expr
    if kind.startswith("TIMESTAMP WITH TIME ZONE"):
        return f"strftime(timezone('UTC', {expr}), '{TIMESTAMP_TEXT}')"
    if kind.startswith(("TIMESTAMP", "DATETIME")):
        return f"strftime({expr}, '{TIMESTAMP_TEXT}')"
    if kind == "DATE":
        return f"strftime({expr}, '%Y-%m-%d')"
    if kind == "BOOLEAN":
        return f"CASE WHEN {expr} THEN '1' WHEN NOT {expr} THEN '0' END"
    if kind.startswith("DECIMAL") and not kind.endswith(",0)"):  # 19.50 -> 19.5, 20.00 -> 20 (as floats print)
        return f"regexp_replace(regexp_replace(CAST({expr} AS VARCHAR), '(\\.[0-9]*?)0+$', '\\1'), '\\.$', '')"
    if kind in ("DOUBLE", "FLOAT", "REAL"):
        return (f"CASE WHEN isfinite({expr}) AND {expr} = trunc({expr}) AND abs({expr}) < 1e15 "
                f"THEN CAST(CAST({expr} AS BIGINT) AS VARCHAR) ELSE CAST({expr} AS VARCHAR) END")
    return f"CAST({expr} AS VARCHAR)"


_NUMERIC_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT",
                  "DOUBLE", "FLOAT", "REAL", "DECIMAL")


def _number(text: str, raw: str | None, raw_type: str, decimal: str) -> str:
    """SQL for a number from text: spaces, apostrophes and currency signs dropped, the thousands
    mark removed and the decimal mark made '.', '(12.50)' and '12.50-' read as negative. A
    column DuckDB already reads as a number is taken as it is."""
    if raw is not None and raw_type.upper().startswith(_NUMERIC_TYPES):
        return f"CAST({raw} AS DOUBLE)"
    core = f"regexp_replace(trim({text}), '[\\s\\x{{00a0}}\\x{{202f}}''()€$£¥￥]|-$', '', 'g')"
    core = f"replace(replace({core}, '.', ''), ',', '.')" if decimal == "," else f"replace({core}, ',', '')"
    negative = f"(trim({text}) LIKE '(%)' OR trim({text}) LIKE '%_-')"
    return f"(try_cast({core} AS DOUBLE) * CASE WHEN {negative} THEN -1 ELSE 1 END)"


def _transform(expr: str, t: ValueTransform, raw: RawSource, column: str, partition: str | None) -> str:
    """SQL applying one column's `ValueTransform` to its text `expr` (see the class for the order)."""
    for pattern, replacement in t.replace.items():
        expr = f"regexp_replace({expr}, {_lit(pattern)}, {_lit(replacement)}, 'g')"
    if t.fill_down:
        over = f"PARTITION BY {partition} " if partition else ""
        expr = (f"COALESCE(NULLIF({expr}, ''), last_value(NULLIF({expr}, '') IGNORE NULLS) OVER ({over}ORDER BY {ROW} "
                f"ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW), '')")
    if t.values or t.patterns or t.default is not None:
        key = f"lower(trim({expr}))"
        cases = [f"WHEN {key} = {_lit(k.strip().lower())} THEN {_lit(v)}" for k, v in t.values.items()]
        cases += [f"WHEN regexp_matches({expr}, {_lit(p)}) THEN {_lit(v)}" for p, v in t.patterns.items()]
        otherwise = f"CASE WHEN trim({expr}) = '' THEN '' ELSE {_lit(t.default)} END" if t.default is not None else expr
        expr = f"CASE {' '.join(cases)} ELSE {otherwise} END" if cases else otherwise
    if t.date_format and not raw.types.get(column, "VARCHAR").upper().startswith(("TIMESTAMP", "DATE")):
        formats = "[" + ", ".join(_lit(f) for f in t.date_format) + "]"
        expr = f"COALESCE(strftime(try_strptime(trim({expr}), {formats}), '{TIMESTAMP_TEXT}'), {expr})"
    if t.numeric:
        untouched = not (t.replace or t.fill_down or t.values or t.patterns or t.default is not None or t.date_format)
        raw_expr = raw.exprs[column] if untouched else None
        number = _number(expr, raw_expr, raw.types.get(column, "VARCHAR"), t.decimal or ".")
        if t.multiply_by:
            other = raw.exprs[t.multiply_by]
            number += f" * {_number(_as_text(other, raw.types[t.multiply_by]), other, raw.types[t.multiply_by], t.decimal or '.')}"
        if t.cents:
            number = f"({number}) / 100.0"
        if t.negate:
            number = f"-({number})"
        for other, values in t.negate_when.items():
            test = f"lower(trim({_as_text(raw.exprs[other], raw.types[other])})) IN ({', '.join(_lit(v.strip().lower()) for v in values)})"
            number = f"CASE WHEN {test} THEN -abs({number}) ELSE {number} END"
        expr = f"COALESCE(CAST(round(CAST({number} AS DOUBLE), 6) AS VARCHAR), {expr})"
    return expr


@dataclass(frozen=True)
class Projection:
    """The SQL that maps one raw view onto a canonical table, before pseudonymisation."""

    sql: str
    mapping: dict[str, str]
    columns: list[str]
    pii: dict[str, str]  # canonical column -> kind (email, phone, text) hashed after the projection


def canonical_select(table: str, source: Source, raw: RawSource, label: str, stem: str, path: Path) -> Projection:
    """SELECT of the canonical columns (text, '' when empty), constants, row ids and lineage
    from one raw view. `label` is the `source` value, `stem` prefixes generated row ids. Names
    are dropped here; e-mails, phones and `pseudonymise` columns are hashed afterwards."""
    mapping = column_mapping(table, source, raw.names, path)
    kinds = {c.name: c.kind for c in schema.columns(table)}
    order_key = next((c.name for c in schema.columns(table) if c.required and c.kind == "id"), None)
    partition = raw.exprs[mapping[order_key]] if order_key in mapping else None
    select, names, pii = [], [], {}
    for name, column in mapping.items():
        if name == "name":
            continue
        expr = f"COALESCE({_as_text(raw.exprs[column], raw.types[column])}, '')"
        transform = source.transforms.get(name)
        if transform is not None:
            expr = _transform(expr, transform, raw, column, partition)
        select.append(f"COALESCE({expr}, '') AS {_q(name)}")
        names.append(name)
        if kinds[name] == "pii":
            pii[name] = name
        elif transform is not None and transform.pseudonymise:
            pii[name] = transform.pseudonymise
    for name, value in source.constants.items():
        select.append(f"{_lit(value)} AS {_q(name)}")
        names.append(name)
    if source.row_id:
        select.append(f"{_lit(stem + '-')} || CAST({ROW} - {raw.first_row - 1} AS VARCHAR) AS {_q(source.row_id)}")
        names.append(source.row_id)
    select += [f"{_lit(label)} AS source", f"CAST({ROW} AS BIGINT) AS source_row"]
    return Projection(f"SELECT {', '.join(select)} FROM {raw.view}", mapping, [*names, *schema.LINEAGE], pii)


# --- Pseudonymisation -------------------------------------------------------------------------

def pii_hash(values: pd.Series, kind: str) -> pd.Series:
    """Salted SHA-256 (first 16 hex digits) of a normalised e-mail (trimmed, lower case), phone
    (digits only) or other text (trimmed); empty values stay empty. The salt is CRMBOOK_PII_SALT."""
    salt = os.environ.get("CRMBOOK_PII_SALT", DEFAULT_SALT)
    text = values.fillna("").astype(str)
    norm = (text.str.strip().str.lower() if kind == "email" else
            text.str.replace(r"\D", "", regex=True) if kind == "phone" else text.str.strip())
    return norm.map(lambda v: hashlib.sha256(f"{salt}|{v}".encode()).hexdigest()[:16] if v else "")


def pseudonymise(frame: pd.DataFrame) -> pd.DataFrame:
    """Drop names; replace e-mail and phone by their salted hashes (email_hash, phone_hash)."""
    out = frame.drop(columns=[c for c in schema.PII_COLUMNS if c in frame.columns])
    for kind in ("email", "phone"):
        if kind in frame.columns:
            out[f"{kind}_hash"] = pii_hash(frame[kind], kind)
    return out


def _pii_lookup(values: pd.Series, column: str, kind: str, cfg: Config | None) -> pd.DataFrame:
    """raw value -> hash (and, for the email and phone columns, the normalisation status that
    02 cleaning counts), computed once per distinct value."""
    from crmbook import cleaning

    raw = values.astype("str")
    lookup = pd.DataFrame({"raw": raw})
    if column in ("email", "phone") and hasattr(cleaning, "normalise_contacts"):
        normal = cleaning.normalise_contacts(pd.DataFrame({column: raw}), cfg.cleaning if cfg else None)
        lookup["hash"] = pii_hash(normal[column].astype("object").where(normal[column].notna(), ""), kind).to_numpy()
        lookup["status"] = normal[f"{column}_status"].astype("str").to_numpy()
    else:
        lookup["hash"] = pii_hash(raw, kind).to_numpy()
    return lookup


def _pseudonymise(batch: pa.RecordBatch, projection: Projection, cfg: Config | None) -> pa.RecordBatch:
    """A batch of the projection with every PII column replaced by its hash (email -> email_hash and
    email_status, phone likewise; statuses before the lineage columns). Hashes are computed once per
    distinct value of the batch (`_pii_lookup`); batch by batch, so a table of any size is hashed in
    bounded memory."""
    columns: dict[str, pa.Array] = {}
    statuses: dict[str, pa.Array] = {}
    for name in batch.schema.names:
        if name not in projection.pii:
            columns[name] = batch.column(name)
            continue
        values = batch.column(name).to_pandas()
        lookup = _pii_lookup(pd.Series(values.dropna().unique()), name, projection.pii[name], cfg).set_index("raw")
        text = values.astype("str").where(values.notna())
        out = f"{name}_hash" if name in ("email", "phone") else name
        columns[out] = pa.array(text.map(lookup["hash"]).fillna("").astype("object"), type=pa.string())
        if "status" in lookup:
            statuses[f"{name}_status"] = pa.array(text.map(lookup["status"]).fillna("").astype("object"), type=pa.string())
    names = list(columns)
    order = names[:-len(schema.LINEAGE)] + list(statuses) + names[-len(schema.LINEAGE):]
    arrays = columns | statuses
    return pa.RecordBatch.from_arrays([arrays[n] for n in order], names=order)


# --- Reading a whole run's sources ----------------------------------------------------------------

def connect(folder: Path | None = None, cfg: Config | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection for ingestion with the params' engine settings (`engine.from_params`):
    insertion order kept (row numbers follow the file), big work spills into `folder` unless the
    params name a run.temp_directory."""
    from crmbook import engine

    con = engine.from_params(cfg, spill=folder) if cfg is not None else engine.connect(temp_directory=folder)
    con.execute("SET preserve_insertion_order = true")
    return con


def _duckdb_error(path: Path | str, error: duckdb.Error, names: list[str] | None = None) -> InputError:
    """DuckDB's message as one line naming the file and, when DuckDB says it, the row (and, for a
    row with too few or too many fields, the first missing or the last column)."""
    text = str(error)
    line = re.search(r"(?:CSV Error on Line|in line):? (\d+)", text)
    row = int(line.group(1)) if line else None
    expected = re.search(r"Expected Number of Columns: (\d+) Found: (\d+)", text)
    if expected:
        want, found = int(expected.group(1)), int(expected.group(2))
        column = None if not names else names[min(found, want) - 1 if found > want else min(found, len(names) - 1)]
        what = (f"this row has {found} fields, the header has {want} (a truncated row?)" if found < want else
                f"this row has more fields than the header's {want} (a delimiter inside an unquoted value?)")
        return InputError(path, f"malformed CSV: {what}", column=column, row=row)
    if "unterminated quote" in text:
        return InputError(path, "malformed CSV: a quoted value is never closed (a truncated file?)", row=row)
    if "Invalid unicode" in text or "invalid unicode" in text:
        return InputError(path, "not valid UTF-8; set `encoding:` for this source in params (e.g. gbk, latin-1)", row=row)
    if "No magic bytes" in text or "not a parquet file" in text.lower():
        return InputError(path, "not a Parquet file; is the format right?")
    if "Malformed JSON" in text:
        detail = re.search(r"Malformed JSON[^:]*: ([^\n]+)", text)
        if "unexpected end of data" in text and Path(path).is_file():  # the last record is cut: name its line
            with Path(path).open("rb") as handle:
                row = sum(1 for _ in handle)
        return InputError(path, f"malformed JSON line ({detail.group(1).strip() if detail else 'cannot parse'})", row=row)
    first = next((s.strip() for s in text.splitlines() if s.strip()), type(error).__name__)
    return InputError(path, first, row=row)


BATCH_ROWS = 1 << 20
_DICTIONARY_KINDS = ("category", "flag")


def write_parquet(con: duckdb.DuckDBPyConnection, query: str, out: Path,
                  transform: Callable[[pa.RecordBatch], pa.RecordBatch] | None = None) -> int:
    """Stream the result of `query` into a zstd Parquet file (reading ahead while writing), one row group per batch of
    BATCH_ROWS rows (pyarrow's writer: several times cheaper than DuckDB's COPY for text columns), each
    batch passed through `transform` first when given; category-like columns are dictionary-encoded.
    Deterministic: the same rows give the same bytes. Returns the number of rows."""
    import pyarrow.parquet as pq

    reader = con.sql(query).to_arrow_reader(BATCH_ROWS)
    transform = transform or (lambda batch: batch)
    out_schema = transform(pa.RecordBatch.from_pylist([], schema=reader.schema)).schema
    categories = {c.name for table in schema.TABLES.values() for c in table if c.kind in _DICTIONARY_KINDS}
    dictionary = [n for n in out_schema.names if n in categories or n == "source" or n.endswith("_status")]
    rows = 0
    with pq.ParquetWriter(out, out_schema, compression="zstd", use_dictionary=dictionary) as writer:
        for batch in _read_ahead(reader):
            writer.write_batch(transform(batch))
            rows += batch.num_rows
    return rows


def _read_ahead(reader) -> Iterator:
    """The batches of a pyarrow RecordBatchReader, in order; the next one is read (DuckDB runs the
    query) in a thread while the caller writes this one, so reading and writing overlap: a third
    less wall time on a 10M-row CSV. Both release the GIL."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="crmbook-read") as pool:
        pending = pool.submit(reader.read_next_batch)
        while True:
            try:
                batch = pending.result()
            except StopIteration:
                return
            pending = pool.submit(reader.read_next_batch)
            yield batch


def _label(source: Source) -> str:
    return str(source.path)


def _write_source(con: duckdb.DuckDBPyConnection, i: int, table: str, source: Source, path: Path,
                  cfg: Config | None, folder: Path, out: Path) -> SourceRead:
    """One source (the file at `path`, or its database) to a canonical Parquet file `out`; what was read."""
    source = with_preset(source)
    view = f"raw_{i}"
    raw = open_source(con, view, source, path, folder, cfg)
    projection = canonical_select(table, source, raw, _label(source), Path(source.path).stem, path)
    try:
        for check in raw.checks:
            bad = con.execute(check).fetchone()
            if bad and bad[0] is not None:
                raise InputError(path, f"malformed file: this row has {bad[1]} fields, the first has {len(raw.names)}", row=int(bad[0]))
        con.execute(f"CREATE OR REPLACE TEMP VIEW mapped_{i} AS {projection.sql}")
        hashed = (lambda batch: _pseudonymise(batch, projection, cfg)) if projection.pii else None
        rows = write_parquet(con, f"SELECT * FROM mapped_{i}" + (" ORDER BY source_row" if projection.pii else ""), out, hashed)
    except (duckdb.Error, OSError) as error:
        if isinstance(error, OSError) and error.errno is not None:  # a real I/O error (a full disk): not the input's fault
            raise
        # DuckDB's errors after the first batch reach us through pyarrow's reader as OSError without errno
        if raw.provisional and "nvalid unicode" in str(error):  # not UTF-8 after all: detect from the whole file
            forced = source.model_copy(update={"encoding": detect_encoding(path)})
            return _write_source(con, i, table, forced, path, cfg, folder, out)
        raise _duckdb_error(path, error, raw.names) from None
    if rows == 0:
        raise InputError(path, "no data rows: the source has a header but nothing under it", row=raw.first_row)
    ignored = [c for c in raw.names if c not in projection.mapping.values()
               and not any(c in (t.multiply_by, *t.negate_when) for t in source.transforms.values())]
    return SourceRead(
        table=table, source=_label(source), format=source.file_format, encoding=raw.encoding,
        delimiter={"\t": "tab"}.get(raw.delimiter, raw.delimiter), rows=int(rows), file_columns=len(raw.names),
        mapped_columns=";".join(f"{k}<-{v}" for k, v in projection.mapping.items()),
        ignored_columns=";".join(ignored),
        transforms=";".join(f"{k}:{_describe_transform(t)}" for k, t in source.transforms.items() if k in projection.mapping),
        sha256=file_sha256(path) if source.sql is None else "")


def _describe_transform(t: ValueTransform) -> str:
    """A short description of a transform for the summary table (no values of the data)."""
    parts = []
    if t.replace:
        parts.append("replace")
    if t.fill_down:
        parts.append("fill down")
    if t.values or t.patterns:
        parts.append(f"{len(t.values) + len(t.patterns)} value rule(s)")
    if t.date_format:
        parts.append(f"dates ({len(t.date_format)} format{'s' if len(t.date_format) > 1 else ''})")
    if t.decimal is not None:
        parts.append("decimal comma" if t.decimal == "," else "number")
    if t.multiply_by:
        parts.append(f"× {t.multiply_by}")
    if t.cents:
        parts.append("cents")
    if t.negate or t.negate_when:
        parts.append("sign")
    if t.pseudonymise:
        parts.append("hashed")
    return ", ".join(parts)


def ingest_to(cfg: Config, out_dir: str | Path) -> pd.DataFrame:
    """Every source of the params into `out_dir/canonical_<table>.parquet` (several sources of a
    table are unioned in params order, columns by name) without passing rows through pandas
    (Excel and SQL results excepted); returns the ingestion summary, one row per source."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    reads: list[SourceRead] = []
    with tempfile.TemporaryDirectory(prefix="crmbook-ingest-") as tmp:
        folder = Path(tmp)
        con = connect(folder, cfg)
        try:
            counter = 0
            for table, sources in cfg.data.sources.items():
                parts = []
                for source in sources:
                    counter += 1
                    part = folder / f"{table}-{counter}.parquet" if len(sources) > 1 else out_dir / f"canonical_{table}.parquet"
                    path = source.path if source.sql is not None else cfg.resolve(source.path)
                    reads.append(_write_source(con, counter, table, source, path, cfg, folder, part))
                    _log.info("read %s into %s: %s rows", reads[-1].source, table, f"{reads[-1].rows:,}")
                    parts.append(part)
                if len(parts) > 1:
                    _union(con, parts, out_dir / f"canonical_{table}.parquet")
        finally:
            con.close()
    return pd.DataFrame([vars(r) for r in reads])


def _union(con: duckdb.DuckDBPyConnection, parts: list[Path], out: Path) -> None:
    """The parts of one table as one Parquet file, in order, columns by name (lineage last)."""
    files = "[" + ", ".join(_lit(p.as_posix()) for p in parts) + "]"
    names: list[str] = []
    import pyarrow.parquet as pq

    for part in parts:
        for name in pq.read_schema(part).names:
            if name not in names and name not in schema.LINEAGE:
                names.append(name)
    columns = ", ".join(_q(n) for n in [*names, *schema.LINEAGE])
    write_parquet(con, f"SELECT {columns} FROM read_parquet({files}, union_by_name=true)", out)


def ingest(cfg: Config) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """All sources → canonical text tables as DataFrames (read back from the Parquet files
    `ingest_to` writes, so they equal what 02 reads), and the ingestion summary."""
    with tempfile.TemporaryDirectory(prefix="crmbook-tables-") as tmp:
        reads = ingest_to(cfg, tmp)
        tables = {table: pd.read_parquet(Path(tmp) / f"canonical_{table}.parquet") for table, _ in cfg.data.sources.items()}
    return tables, reads


def ingest_source(table: str, source: Source, path: Path, cfg: Config | None = None) -> tuple[pd.DataFrame, SourceRead]:
    """One source as a canonical (text) DataFrame with lineage columns, and what was read."""
    with tempfile.TemporaryDirectory(prefix="crmbook-ingest-") as tmp:
        folder = Path(tmp)
        con = connect(folder, cfg)
        try:
            read = _write_source(con, 1, table, source, Path(path), cfg, folder, folder / "out.parquet")
        finally:
            con.close()
        return pd.read_parquet(folder / "out.parquet"), read


def read_source(path: Path, source: Source) -> tuple[pd.DataFrame, str, str]:
    """One file's records as text columns by their source names (no mapping). Returns (frame,
    encoding, delimiter). For looking at a file; the pipeline uses `ingest_to`."""
    source = with_preset(source)
    with tempfile.TemporaryDirectory(prefix="crmbook-read-") as tmp:
        con = connect(Path(tmp))
        try:
            raw = open_source(con, "raw", source, path, Path(tmp))
            select = ", ".join(f"COALESCE({_as_text(raw.exprs[n], raw.types[n])}, '') AS {_q('c' + str(i))}"
                               for i, n in enumerate(raw.names))
            for check in raw.checks:
                bad = con.execute(check).fetchone()
                if bad and bad[0] is not None:
                    raise InputError(path, f"malformed file: this row has {bad[1]} fields, the first has {len(raw.names)}", row=int(bad[0]))
            frame = con.execute(f"SELECT {select} FROM raw ORDER BY {ROW}").df()
        except duckdb.Error as error:
            raise _duckdb_error(path, error, raw.names) from None
        finally:
            con.close()
    frame.columns = raw.names
    return frame, raw.encoding, raw.delimiter


def save(run_dir: str | Path, tables: dict[str, pd.DataFrame], reads: pd.DataFrame) -> None:
    """Write tables/canonical_<table>.parquet and tables/ingestion_summary.csv from DataFrames."""
    from crmbook import store

    for name, frame in tables.items():
        store.write_table(run_dir, f"canonical_{name}", frame)
    store.write_table(run_dir, "ingestion_summary", reads, fmt="csv")


def run(cfg: Config, run_dir: str | Path) -> pd.DataFrame:
    """01's work: canonical tables into `run_dir/tables/` (DuckDB, out of core) and
    `tables/ingestion_summary.csv`; returns the summary."""
    from crmbook import store

    reads = ingest_to(cfg, store.tables_dir(run_dir))
    store.write_table(run_dir, "ingestion_summary", reads, fmt="csv")
    return reads


def canonical_paths(cfg: Config, run_dir: str | Path) -> dict[str, Path]:
    """The canonical table files of this run (01's outputs), by table; ingested afresh when 01 has
    not run in `run_dir`, so 02 can be opened and run on its own."""
    from crmbook import store

    names = [table for table, _ in cfg.data.sources.items()]
    if not all(store.has_table(run_dir, f"canonical_{n}") for n in names):
        ensure_demo(cfg)
        run(cfg, run_dir)
    return {n: store.tables_dir(run_dir) / f"canonical_{n}.parquet" for n in names}


def load_canonical(cfg: Config, run_dir: str | Path) -> dict[str, pd.DataFrame]:
    """The canonical tables of this run (see `canonical_paths`), in memory."""
    return {n: pd.read_parquet(path) for n, path in canonical_paths(cfg, run_dir).items()}


def ensure_demo(cfg: Config) -> None:
    """Generate the synthetic demo data when params ask for it and it is not there yet. It is
    written into a temporary sibling folder and renamed into place, so two runs starting at once
    never read or write a half-made demo: the second rename finds the folder there and is dropped."""
    demo = cfg.data.demo
    if demo is None:
        return
    out_dir = cfg.resolve(demo.dir)
    if (out_dir / "truth.json").is_file():
        return
    from crmbook import synth  # imported lazily: only demo runs need the generator

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out_dir.name}-", dir=out_dir.parent) as tmp:
        made = synth.generate(Path(tmp) / out_dir.name, customers=demo.customers, seed=demo.seed, messy=demo.messy)
        with contextlib.suppress(OSError):  # another run put the same demo there first
            if out_dir.is_dir() and not any(out_dir.iterdir()):
                out_dir.rmdir()  # an empty folder (made by hand, say) is replaced
            made.rename(out_dir)
    if not (out_dir / "truth.json").is_file():
        raise InputError(out_dir, "the demo data folder exists but holds no complete demo (no truth.json): "
                                  "remove it and run again")


def source_columns(source: Source, path: Path, cfg: Config | None = None) -> list[str]:
    """The column names of a source, read cheaply (a header, a schema, one empty query)."""
    kind = source.file_format
    if kind == "sql":
        return [str(c) for c in read_sql(source, cfg, limit=0).columns]
    if not path.is_file():
        raise InputError(path, "file not found")
    if kind == "csv" and source.header and source.delimiter != "whitespace":
        if path.stat().st_size == 0:
            raise InputError(path, "the file is empty")
        encoding = detect_encoding(path) if source.encoding == "auto" else source.encoding
        delimiter = source.delimiter or sniff_delimiter(path, encoding)
        with path.open(encoding=encoding, errors="replace", newline="") as handle:
            first = next(csv.reader(io.StringIO(handle.read(SAMPLE_BYTES).lstrip("\ufeff")), delimiter=delimiter), [])
        return _names_for(path, source, [c.strip() for c in first])
    with tempfile.TemporaryDirectory(prefix="crmbook-check-") as tmp:
        con = connect(Path(tmp), cfg)
        try:
            return open_source(con, "raw", source, path, Path(tmp), cfg).names
        finally:
            con.close()


def check_sources(cfg: Config) -> None:
    """Fail fast, before any notebook runs: every source exists (a database answers) and maps its
    required columns. Reads only headers and schemas."""
    if not cfg.data.sources.items() and cfg.attribution.paths_file is None:
        raise InputError(cfg.params_file, "no data sources: add at least one under data.sources "
                                          "(or an attribution.paths_file)")
    for table, sources in cfg.data.sources.items():
        for source in sources:
            path = source.path if source.sql is not None else cfg.resolve(source.path)
            if source.sql is None and not path.is_file():
                raise InputError(path, f"file not found (data.sources.{table} in {cfg.params_file.name})")
            source = with_preset(source)
            column_mapping(table, source, source_columns(source, path, cfg), path)


# --- The 01 report: what each source holds ------------------------------------------------------

def profile(run_dir: str | Path, cfg: Config, top: int = 5) -> dict[str, pd.DataFrame]:
    """Per source and canonical column, computed in DuckDB over tables/canonical_*.parquet (one
    scan per table, plus one per category column): `columns` (missing share, inferred type, share
    parsing as that type), `dates` (first and last date of the table's date columns, parsed with
    cleaning.date_formats) and `top_values` (the most common values of category columns). Hashes
    and lineage are never listed as values: no personal data reaches the report."""
    from crmbook import store

    formats = "[" + ", ".join(_lit(f) for f in dict.fromkeys([*cfg.cleaning.date_formats, "%Y-%m"])) + "]"
    columns, dates, tops = [], [], []
    con = connect(cfg=cfg)
    try:
        for table, _ in cfg.data.sources.items():
            path = Path(store.tables_dir(run_dir)) / f"canonical_{table}.parquet"
            rel = f"read_parquet({_lit(path.as_posix())}, file_row_number=true)"
            names = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {rel}").fetchall()
                     if r[0] not in (*schema.LINEAGE, "file_row_number")]
            kinds = {c.name: c.kind for c in schema.columns(table)}
            is_date = {n: kinds.get(n) in ("timestamp", "date", "month") for n in names}
            parts = []
            for i, name in enumerate(names):
                filled = f"NULLIF(trim(CAST({_q(name)} AS VARCHAR)), '')"
                parts += [f"count({filled}) AS f{i}", f"count(*) FILTER (WHERE regexp_full_match({filled}, '[+-]?[0-9]+')) AS i{i}",
                          f"count(try_cast(replace({filled}, ',', '') AS DOUBLE)) AS n{i}"]
                if is_date[name]:
                    parsed = f"try_strptime({filled}, {formats})"
                    parts += [f"count({parsed}) AS d{i}", f"min({parsed}) AS lo{i}", f"max({parsed}) AS hi{i}"]
            result = con.execute(f"SELECT source, count(*) AS rows, {', '.join(parts)} FROM {rel} GROUP BY source "
                                 "ORDER BY min(file_row_number)").df()
            for row in result.to_dict("records"):
                for i, name in enumerate(names):
                    filled_n = int(row[f"f{i}"])
                    kind, share = _inferred(name, kinds.get(name, ""), filled_n, int(row[f"i{i}"]), int(row[f"n{i}"]),
                                            int(row.get(f"d{i}", 0) or 0))
                    columns.append({"table": table, "source": row["source"], "column": name, "rows": int(row["rows"]),
                                    "missing_share": 1 - filled_n / row["rows"] if row["rows"] else 0.0,
                                    "inferred_type": kind, "parsed_share": share})
                    if is_date[name]:
                        dates.append({"table": table, "source": row["source"], "column": name,
                                      "first": row[f"lo{i}"], "last": row[f"hi{i}"]})
            for name in names:
                if kinds.get(name) != "category":
                    continue
                v = f"trim(CAST({_q(name)} AS VARCHAR))"
                tops += [{"table": table, "source": src, "column": name, "value": value, "rows": n, "share": n / total}
                         for src, value, n, total in con.execute(
                             f"SELECT source, value, n, total FROM (SELECT source, {v} AS value, count(*) AS n, "
                             f"sum(count(*)) OVER (PARTITION BY source) AS total, row_number() OVER (PARTITION BY source "
                             f"ORDER BY count(*) DESC, {v}) AS rank, min(min(file_row_number)) OVER (PARTITION BY source) AS first "
                             f"FROM {rel} GROUP BY source, {v}) WHERE rank <= {int(top)} ORDER BY first, rank").fetchall()]
    finally:
        con.close()
    return {"columns": pd.DataFrame(columns, columns=["table", "source", "column", "rows", "missing_share", "inferred_type",
                                                      "parsed_share"]),
            "dates": pd.DataFrame(dates, columns=["table", "source", "column", "first", "last"]),
            "top_values": pd.DataFrame(tops, columns=["table", "source", "column", "value", "rows", "share"])}


def _inferred(name: str, kind: str, filled: int, ints: int, nums: int, stamps: int, cut: float = 0.95) -> tuple[str, float]:
    """The type most non-empty values of a column parse as (integer, number, date/time, text),
    with the share that does; hashed columns are 'hash'."""
    if name.endswith("_hash") or kind == "pii":
        return "hash", 1.0
    if filled == 0:
        return "empty", 0.0
    for label, n in (("integer", ints), ("number", nums), ("date/time", stamps)):
        if n / filled >= cut:
            return label, n / filled
    return "text", 1.0


def missing_matrix(columns: pd.DataFrame) -> pd.DataFrame:
    """Share of empty values, sources as rows (table: file) and canonical columns as columns."""
    frame = columns.assign(row=columns["table"] + ": " + columns["source"].map(lambda s: Path(str(s)).name))
    order = list(dict.fromkeys(columns["column"]))
    return frame.pivot_table(index="row", columns="column", values="missing_share", sort=False).reindex(columns=order)


def summarise(reads: pd.DataFrame, profiles: dict[str, pd.DataFrame], cfg: Config):
    """KPI cards and findings for the 01 report, on the data as read (before cleaning)."""
    from crmbook import report

    lang = cfg.report.language
    tables = reads["table"].nunique()
    cards = [report.Card(report.t("rows_read", lang), report.number(reads["rows"].sum())),
             report.Card(report.t("sources", lang), str(len(reads))),
             report.Card(report.t("tables", lang), str(tables))]
    findings = [report.say("f_read", lang, rows=report.number(reads["rows"].sum()), files=len(reads), tables=tables)]
    dates = profiles["dates"]
    orders = dates[(dates["table"] == "transactions") & (dates["column"] == "order_ts")].dropna(subset=["first"])
    if len(orders):
        first, last = f"{orders['first'].min():%Y-%m-%d}", f"{orders['last'].max():%Y-%m-%d}"
        cards.append(report.Card(report.t("date_range", lang), f"{first} – {last}"))
        findings.append(report.say("in_f_span_sources", lang, first=first, last=last, sources=len(orders)))
    columns = profiles["columns"]
    required = {(table, name) for table in schema.TABLES for name in schema.required(table)}
    is_required = pd.Series([(t, c) in required for t, c in zip(columns["table"], columns["column"])], index=columns.index)
    gaps = columns[(columns["missing_share"] > 0) & is_required]
    if len(gaps):
        worst = gaps.sort_values("missing_share", ascending=False).iloc[0]
        findings.append(report.say("in_f_missing_required", lang, column=worst["column"], share=f"{worst['missing_share']:.1%}",
                                   file=Path(str(worst["source"])).name))
    else:
        findings.append(report.t("in_f_no_missing_required", lang))
    recoded = [r for r in reads.itertuples() if r.encoding not in ("utf-8", "utf-8-sig", "binary")]
    for read in recoded[:2]:
        findings.append(report.say("f_encoding", lang, file=Path(read.source).name, encoding=read.encoding.upper()))
    if (reads["transforms"].fillna("") != "").any():
        findings.append(report.say("in_f_transforms", lang, n=int((reads["transforms"].fillna("") != "").sum())))
    mapped = [part.split("<-")[0] for m in reads["mapped_columns"].fillna("") for part in m.split(";")]
    if set(mapped) & set(schema.PII_COLUMNS) or reads["transforms"].fillna("").str.contains("hashed").any():
        findings.append(report.t("f_pii", lang))
    return report.StageSummary(cards, findings[:5])


def _headers(frame: pd.DataFrame, lang: str, names: dict[str, str]) -> pd.DataFrame:
    from crmbook import report

    return frame.rename(columns={c: report.t(k, lang) for c, k in names.items()})


def sources_table(reads: pd.DataFrame, lang: str = "en") -> pd.DataFrame:
    """The ingestion summary for the report (file names only, mappings readable)."""
    shown = reads.assign(source=reads["source"].map(lambda s: Path(str(s)).name),
                         mapped_columns=reads["mapped_columns"].str.replace(";", ", ").str.replace("<-", " ← "),
                         ignored_columns=reads["ignored_columns"].fillna("").str.replace(";", ", "),
                         transforms=reads["transforms"].fillna("").str.replace(";", "; "),
                         rows=reads["rows"].map(lambda n: f"{n:,}"))
    names = {"table": "in_col_table", "source": "in_col_source", "format": "in_col_format", "encoding": "in_col_encoding",
             "delimiter": "in_col_delimiter", "rows": "in_col_rows", "file_columns": "in_col_file_columns",
             "mapped_columns": "in_col_mapped", "transforms": "in_col_transforms", "ignored_columns": "in_col_ignored"}
    return _headers(shown[list(names)], lang, names)


def columns_table(columns: pd.DataFrame, lang: str = "en") -> pd.DataFrame:
    """Per source and canonical column: inferred type, share that parses as it, share empty."""
    shown = columns.assign(source=columns["source"].map(lambda s: Path(str(s)).name),
                           parsed_share=columns["parsed_share"].map(lambda v: f"{v:.1%}"),
                           missing_share=columns["missing_share"].map(lambda v: f"{v:.1%}"))
    names = {"table": "in_col_table", "source": "in_col_source", "column": "in_col_column", "inferred_type": "in_col_type",
             "parsed_share": "in_col_parsed", "missing_share": "in_col_missing"}
    return _headers(shown[list(names)], lang, names)


def dates_table(dates: pd.DataFrame, lang: str = "en") -> pd.DataFrame:
    """First and last date per source and date column."""
    def day(value) -> str:
        return "" if pd.isna(value) else f"{pd.Timestamp(value):%Y-%m-%d}"

    shown = dates.assign(source=dates["source"].map(lambda s: Path(str(s)).name),
                         first=dates["first"].map(day), last=dates["last"].map(day))
    names = {"table": "in_col_table", "source": "in_col_source", "column": "in_col_column", "first": "in_col_first",
             "last": "in_col_last"}
    return _headers(shown[list(names)], lang, names)


def top_values_table(top_values: pd.DataFrame, lang: str = "en") -> pd.DataFrame:
    """One row per source and category column: its most common values with their share."""
    names = {"table": "in_col_table", "source": "in_col_source", "column": "in_col_column", "values": "in_col_values"}
    if top_values.empty:
        return _headers(pd.DataFrame(columns=list(names)), lang, names)
    labelled = top_values.assign(label=top_values["value"].map(lambda v: v if str(v).strip() else "–")
                                 + " (" + top_values["share"].map(lambda v: f"{v:.0%}") + ")")
    grouped = (labelled.groupby(["table", "source", "column"], sort=False)["label"].agg(", ".join).reset_index()
               .rename(columns={"label": "values"}))
    grouped["source"] = grouped["source"].map(lambda s: Path(str(s)).name)
    return _headers(grouped[list(names)], lang, names)
