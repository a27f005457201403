"""01 ingestion: read every source file as text and map its columns onto the canonical tables.

Every value is kept as text here; typing happens in `crmbook.cleaning`, where a value that
does not parse is counted and quarantined instead of crashing the read. Personal data
(name, e-mail, phone) is pseudonymised on the way in: names are dropped, e-mails and phones
become salted SHA-256 digests of their normalised form (`email_hash`, `phone_hash`), so no
later table, report or log can show them.
"""
from __future__ import annotations

import codecs
import csv
import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import charset_normalizer
import pandas as pd

from crmbook import schema
from crmbook.config import Config, Source
from crmbook.errors import InputError

SAMPLE_BYTES = 1 << 20
DELIMITERS = ",;\t|"
DEFAULT_SALT = "crmbook-default-salt"  # set CRMBOOK_PII_SALT in production: see README § Privacy
_CHINESE_ENCODINGS = {"gb2312", "gbk", "gb18030", "hz", "big5", "cp936"}


@dataclass(frozen=True)
class SourceRead:
    """What reading one source file found (one row of ingestion_summary.csv)."""

    table: str
    source: str
    format: str
    encoding: str
    delimiter: str
    rows: int
    file_columns: int
    mapped_columns: str
    ignored_columns: str
    sha256: str


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(SAMPLE_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def detect_encoding(path: Path) -> str:
    """UTF-8 (with or without BOM) when the whole file decodes as UTF-8, else charset-normalizer's
    best guess on the first megabyte; Chinese encodings are widened to GB18030 (a superset of GBK)."""
    with path.open("rb") as handle:
        head = handle.read(SAMPLE_BYTES)
        if head.startswith(codecs.BOM_UTF8):
            return "utf-8-sig"
        decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            chunk = head
            while chunk:
                decoder.decode(chunk)
                chunk = handle.read(SAMPLE_BYTES)
            decoder.decode(b"", final=True)
            return "utf-8"
        except UnicodeDecodeError:
            pass
    guess = charset_normalizer.from_bytes(head).best()
    if guess is None:
        raise InputError(path, "cannot detect the text encoding; set `encoding:` for this source in params (e.g. gbk, latin-1)")
    encoding = guess.encoding.lower().replace("_", "")
    return "gb18030" if encoding in _CHINESE_ENCODINGS else guess.encoding


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


def _read_text_table(path: Path, source: Source) -> tuple[pd.DataFrame, str, str]:
    encoding = detect_encoding(path) if source.encoding == "auto" else source.encoding
    delimiter = source.delimiter or sniff_delimiter(path, encoding)
    sep = r"\s+" if delimiter == "whitespace" else delimiter
    try:
        frame = pd.read_csv(path, sep=sep, encoding=encoding, dtype=str, keep_default_na=False,
                            na_filter=False, header=None)  # header read as a row: pandas would rename a repeated name
        if source.header:
            frame = frame.iloc[1:].set_axis(frame.iloc[0].tolist(), axis=1).reset_index(drop=True)
        else:
            names = source.names or [f"column_{i + 1}" for i in range(frame.shape[1])]
            if len(names) != frame.shape[1]:
                raise InputError(path, f"`names` lists {len(names)} columns but the file has {frame.shape[1]}")
            frame = frame.set_axis(names, axis=1)
    except UnicodeDecodeError as error:
        raise InputError(path, f"not readable as {encoding} ({error.reason} at byte {error.start}); set `encoding:` in params") from None
    except pd.errors.EmptyDataError:
        raise InputError(path, "the file is empty") from None
    except pd.errors.ParserError as error:
        line = re.search(r"line (\d+)", str(error))
        raise InputError(path, f"malformed CSV: {str(error).splitlines()[-1].strip()}",
                         row=int(line.group(1)) if line else None) from None
    return frame, encoding, delimiter


@dataclass(frozen=True)
class Preset:
    """Defaults for a common export: Source options, plus columns derived from the raw ones."""

    options: dict
    derive: Callable[[pd.DataFrame], pd.DataFrame] | None = None
    origin: str = ""


def _uci_online_retail(raw: pd.DataFrame) -> pd.DataFrame:
    """Line amount = Quantity × Price; invoices starting with "C" are cancellations; customer ids
    arrive as floats ("13085.0") in the published files."""
    quantity = pd.to_numeric(raw["Quantity"], errors="coerce")
    price = pd.to_numeric(raw["Price"], errors="coerce")
    invoice = raw["Invoice"].astype("str")
    customer = raw["Customer ID"].astype("str").str.replace(r"\.0$", "", regex=True).replace({"nan": "", "<NA>": "", "None": ""})
    return raw.assign(**{"line_amount": quantity * price, "status": invoice.str.startswith("C").map({True: "cancelled", False: "completed"}),
                         "Customer ID": customer})


PRESETS: dict[str, Preset] = {
    "uci_online_retail": Preset(
        {"columns": {"order_id": "Invoice", "customer_id": "Customer ID", "order_ts": "InvoiceDate", "amount": "line_amount",
                     "quantity": "Quantity", "product_id": "StockCode", "status": "status"}},
        _uci_online_retail, "UCI Online Retail II (Chen 2019): Invoice, StockCode, Description, Quantity, InvoiceDate, Price, Customer ID, Country"),
    "cdnow": Preset(
        {"delimiter": "whitespace", "header": False, "names": ["customer_id", "sample_id", "date", "cds", "dollars"],
         "columns": {"customer_id": "customer_id", "order_ts": "date", "amount": "dollars", "quantity": "cds"}, "row_id": "order_id"},
        None, "CDNOW sample (Fader & Hardie): master id, sample id, date YYYYMMDD, CDs, dollars; whitespace-separated, no header"),
    "hillstrom": Preset(
        {"columns": {"group": "segment", "visited": "visit", "converted": "conversion", "revenue": "spend", "pre_period_value": "history"},
         "constants": {"campaign_id": "hillstrom_2008"}, "row_id": "customer_id"},
        None, "MineThatData e-mail test (Hillstrom 2008): recency, history_segment, history, mens, womens, zip_code, newbie, channel, segment, visit, conversion, spend"),
}


def with_preset(source: Source) -> Source:
    """The source with its preset's defaults filled in (anything set in params wins)."""
    if source.preset is None:
        return source
    if source.preset not in PRESETS:
        raise InputError(source.path, f"unknown preset {source.preset!r}; presets: {', '.join(sorted(PRESETS))}")
    options = dict(PRESETS[source.preset].options)
    explicit = source.model_dump(exclude_unset=True)
    for key in ("columns", "constants"):
        if key in explicit:
            options[key] = {**options.get(key, {}), **explicit[key]}
    return source.model_copy(update={**{k: v for k, v in options.items() if k not in explicit or k in ("columns", "constants")}})


def read_source(path: Path, source: Source) -> tuple[pd.DataFrame, str, str]:
    """Read one file as text columns. Returns (frame, encoding, delimiter)."""
    if not path.is_file():
        raise InputError(path, "file not found")
    kind = source.file_format
    if kind == "csv":
        frame, encoding, delimiter = _read_text_table(path, source)
    elif kind == "excel":
        frame, encoding, delimiter = pd.read_excel(path, sheet_name=source.sheet, dtype=str).fillna(""), "binary", ""
    elif kind == "parquet":
        frame, encoding, delimiter = pd.read_parquet(path), "binary", ""
    else:
        frame, encoding, delimiter = pd.read_json(path, lines=True, dtype=False), "utf-8", ""
    preset = PRESETS.get(source.preset or "")
    if preset and preset.derive:
        frame = preset.derive(frame)
    frame.columns = [str(c).strip() for c in frame.columns]
    duplicated = frame.columns[frame.columns.duplicated()].tolist()
    if duplicated:
        raise InputError(path, "the header repeats a column name", column=duplicated[0], row=1)
    return frame, encoding, delimiter


def column_mapping(table: str, source: Source, file_columns: list[str], path: Path) -> dict[str, str]:
    """canonical -> source column, from params, else a source column with the canonical name.
    Raises `InputError` when a required canonical column has no source."""
    mapping: dict[str, str] = {}
    generated = set(source.constants) | ({source.row_id} if source.row_id else set())
    for col in schema.columns(table):
        if col.name in generated:
            continue
        wanted = source.columns.get(col.name, col.name if col.name in file_columns else None)
        if wanted is None:
            if col.required:
                raise InputError(path, f"the {table} table needs column {col.name!r}: map it under "
                                 f"data.sources.{table}[..].columns.{col.name} (the file has: {', '.join(file_columns)})",
                                 column=col.name)
            continue
        if wanted not in file_columns:
            raise InputError(path, f"params map {col.name!r} to {wanted!r}, which is not in the header "
                             f"(the file has: {', '.join(file_columns)})", column=wanted, row=1)
        mapping[col.name] = wanted
    unknown = (set(source.columns) | generated) - {c.name for c in schema.columns(table)}
    if unknown:
        raise InputError(path, f"params map unknown canonical column(s) {sorted(unknown)} for table {table}")
    return mapping


def pii_hash(values: pd.Series, kind: str) -> pd.Series:
    """Salted SHA-256 (first 16 hex digits) of a normalised e-mail (trimmed, lower case) or phone
    (digits only); empty values stay empty. The salt comes from CRMBOOK_PII_SALT."""
    salt = os.environ.get("CRMBOOK_PII_SALT", DEFAULT_SALT)
    text = values.fillna("").astype(str)
    norm = text.str.strip().str.lower() if kind == "email" else text.str.replace(r"\D", "", regex=True)
    return norm.map(lambda v: hashlib.sha256(f"{salt}|{v}".encode()).hexdigest()[:16] if v else "")


def pseudonymise(frame: pd.DataFrame) -> pd.DataFrame:
    """Drop names; replace e-mail and phone by their salted hashes (email_hash, phone_hash)."""
    out = frame.drop(columns=[c for c in schema.PII_COLUMNS if c in frame.columns])
    for kind in ("email", "phone"):
        if kind in frame.columns:
            out[f"{kind}_hash"] = pii_hash(frame[kind], kind)
    return out


def ingest_source(table: str, source: Source, path: Path) -> tuple[pd.DataFrame, SourceRead]:
    """One file as a canonical (text) table with lineage columns, and what was read."""
    source = with_preset(source)
    frame, encoding, delimiter = read_source(path, source)
    file_columns = list(frame.columns)
    mapping = column_mapping(table, source, file_columns, path)
    canonical = pd.DataFrame({name: frame[col].astype("str") if frame[col].dtype == object else frame[col]
                              for name, col in mapping.items()})
    for name, value in source.constants.items():
        canonical[name] = value
    if source.row_id:
        canonical[source.row_id] = [f"{path.stem}-{i}" for i in range(1, len(frame) + 1)]
    canonical = pseudonymise(canonical)
    canonical["source"] = str(source.path)
    first_row = 2 if source.header or source.file_format != "csv" else 1  # spreadsheet numbering: the header is row 1
    canonical["source_row"] = pd.RangeIndex(first_row, len(frame) + first_row, dtype="int64")
    ignored = [c for c in file_columns if c not in mapping.values()]
    read = SourceRead(table=table, source=str(source.path), format=source.file_format, encoding=encoding,
                      delimiter={"\t": "tab"}.get(delimiter, delimiter), rows=len(frame), file_columns=len(file_columns),
                      mapped_columns=";".join(f"{k}<-{v}" for k, v in mapping.items()),
                      ignored_columns=";".join(ignored), sha256=file_sha256(path))
    return canonical, read


def summarise(tables: dict[str, pd.DataFrame], reads: pd.DataFrame, cfg: Config):
    """KPI cards and findings for the 01 report, on the data as read (before cleaning)."""
    from crmbook import cleaning, report

    lang = cfg.report.language
    cards = [report.Card(report.t("rows_read", lang), report.number(reads["rows"].sum())),
             report.Card(report.t("sources", lang), str(len(reads))),
             report.Card(report.t("tables", lang), str(len(tables)))]
    findings = [report.say("f_read", lang, rows=report.number(reads["rows"].sum()), files=len(reads), tables=len(tables))]
    for read in reads.itertuples():
        if read.encoding not in ("utf-8", "utf-8-sig", "binary"):
            findings.append(report.say("f_encoding", lang, file=Path(read.source).name, encoding=read.encoding.upper()))
    orders = tables.get("transactions")
    if orders is not None and len(orders):
        dates = cleaning.parse_dates(orders, "order_ts", cfg.cleaning.date_formats, False, "timestamp").kept["order_ts"]
        customers = orders["customer_id"].astype("str").str.strip().replace("", pd.NA).nunique()
        cards.append(report.Card(report.t("customers", lang), report.number(customers)))
        cards.append(report.Card(report.t("date_range", lang), f"{dates.min():%Y-%m-%d} – {dates.max():%Y-%m-%d}"))
        findings.append(report.say("f_span", lang, first=f"{dates.min():%Y-%m-%d}", last=f"{dates.max():%Y-%m-%d}",
                                   customers=report.number(customers)))
    if any(c in frame.columns for frame in tables.values() for c in ("email_hash", "phone_hash")):
        findings.append(report.t("f_pii", lang))
    return report.StageSummary(cards, findings)


def save(run_dir: str | Path, tables: dict[str, pd.DataFrame], reads: pd.DataFrame) -> None:
    """Write tables/canonical_<table>.parquet and tables/ingestion_summary.csv."""
    from crmbook import store

    for name, frame in tables.items():
        store.write_table(run_dir, f"canonical_{name}", frame)
    store.write_table(run_dir, "ingestion_summary", reads, fmt="csv")


def load_canonical(cfg: Config, run_dir: str | Path) -> dict[str, pd.DataFrame]:
    """The canonical tables of this run (01's outputs); ingested afresh when 01 has not run in
    `run_dir`, so 02 can be opened and run on its own."""
    from crmbook import store

    names = [table for table, _ in cfg.data.sources.items()]
    if all(store.has_table(run_dir, f"canonical_{n}") for n in names):
        return {n: store.read_table(run_dir, f"canonical_{n}") for n in names}
    ensure_demo(cfg)
    tables, reads = ingest(cfg)
    save(run_dir, tables, reads)
    return tables


def ensure_demo(cfg: Config) -> None:
    """Generate the synthetic demo data when params ask for it and it is not there yet."""
    demo = cfg.data.demo
    if demo is None:
        return
    out_dir = cfg.resolve(demo.dir)
    if (out_dir / "truth.json").is_file():
        return
    from crmbook import synth  # imported lazily: only demo runs need the generator

    synth.generate(out_dir, customers=demo.customers, seed=demo.seed, messy=demo.messy)


def check_sources(cfg: Config) -> None:
    """Fail fast, before any notebook runs: every source exists and maps its required columns.
    Reads only the header of text files."""
    if not cfg.data.sources.items() and cfg.attribution.paths_file is None:
        raise InputError(cfg.params_file, "no data sources: add at least one under data.sources "
                                          "(or an attribution.paths_file)")
    for table, sources in cfg.data.sources.items():
        for source in sources:
            path = cfg.resolve(source.path)
            if not path.is_file():
                raise InputError(path, f"file not found (data.sources.{table} in {cfg.params_file.name})")
            source = with_preset(source)
            if source.file_format == "csv" and source.header and source.delimiter != "whitespace":
                encoding = detect_encoding(path) if source.encoding == "auto" else source.encoding
                delimiter = source.delimiter or sniff_delimiter(path, encoding)
                header = pd.read_csv(path, sep=delimiter, encoding=encoding, nrows=0, dtype=str).columns
                column_mapping(table, source, [str(c).strip() for c in header], path)


def ingest(cfg: Config) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """All sources → canonical text tables (several sources of one table are unioned, each row
    keeping its `source`), and the ingestion summary (one row per source)."""
    tables: dict[str, pd.DataFrame] = {}
    reads: list[SourceRead] = []
    for table, sources in cfg.data.sources.items():
        parts = []
        for source in sources:
            frame, read = ingest_source(table, source, cfg.resolve(source.path))
            parts.append(frame)
            reads.append(read)
        tables[table] = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    return tables, pd.DataFrame([vars(r) for r in reads])
