"""The params schema and its loading: one validated `Config` object per run.

A params file is YAML with one section per stage (GUIDE §4). Unknown keys and wrong types
are `ConfigError`s naming the file and the key path, raised before any notebook starts.
Relative paths in a params file are resolved against the folder that holds the params
file, so a run does not depend on the directory it was started from.
"""
from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from crmbook.errors import ConfigError

TABLE_NAMES = ("transactions", "customers", "touchpoints", "campaigns", "campaign_members", "channel_spend")
FORMATS = ("csv", "excel", "parquet", "jsonl", "sql")
# spark_conf keys and values that hold credentials (S3/Azure/GCS keys, SAS tokens, passwords in URLs)
SECRET_KEY = r"secret|password|passwd|token|credential|access\.?key|api\.?key|private|(^|[._])key([._]|$)|(^|[._])sas([._]|$)"
SECRET_VALUE = r"[?&;](password|passwd|pwd)=|//[^/@:]+:[^/@]+@"


class Section(BaseModel):
    """A params section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class RunSection(Section):
    analysis_date: dt.date | None = Field(None, description='"today" for recency; default: the day after the last order')
    currency: str = "USD"
    timezone: str = "UTC"
    engine: Literal["duckdb", "pyspark"] = Field("duckdb", description="where the transaction-level queries run: duckdb (in "
                                                                    "process, out of core) or pyspark (a Spark cluster; "
                                                                    "pip install 'crmbook[spark]')")
    memory_limit: str = Field("4GB", pattern=r"^\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$",
                              description="DuckDB's memory limit per stage process (e.g. 4GB); bigger work spills "
                                          "to temp_directory")
    threads: int | None = Field(None, ge=1, le=1024, description="DuckDB threads (default: every core)")
    temp_directory: Path | None = Field(None, description="where DuckDB spills (default: a folder per process in the "
                                                          "system's temporary directory)")
    spark_master: str = Field("local[*]", min_length=1, description="engine: pyspark: the Spark master (local[*], "
                                                                   "spark://host:7077, yarn, k8s://...)")
    spark_conf: dict[str, str] = Field(default_factory=dict, description="engine: pyspark: extra Spark settings "
                                                                         "(e.g. spark.executor.memory: 8g)")

    @field_validator("spark_conf", mode="before")
    @classmethod
    def _spark_values_as_text(cls, value: Any) -> Any:
        """Spark settings are text: `spark.executor.cores: 4` and `...enabled: true` as YAML wrote them."""
        if not isinstance(value, dict):
            return value
        return {key: str(v).lower() if isinstance(v, bool) else str(v) if isinstance(v, (int, float)) else v
                for key, v in value.items()}

    @field_validator("engine")
    @classmethod
    def _spark_installed(cls, value: str) -> str:
        import importlib.util

        if value == "pyspark" and importlib.util.find_spec("pyspark") is None:
            raise ValueError("pyspark is not installed: pip install 'crmbook[spark]' (it needs Java 17 or newer)")
        return value

    @field_validator("spark_conf")
    @classmethod
    def _no_secrets(cls, value: dict[str, str]) -> dict[str, str]:
        """Credentials stay out of params (they are copied into every run folder): Spark and Hadoop
        read them from the environment (AWS_ACCESS_KEY_ID, ...) or spark-defaults.conf."""
        for key, setting in value.items():
            if re.search(SECRET_KEY, key, re.IGNORECASE) or re.search(SECRET_VALUE, setting, re.IGNORECASE):
                raise ValueError(f"{key} looks like a credential: set it in the environment or spark-defaults.conf, "
                                 "not in params")
        return value


class ReportSection(Section):
    language: Literal["en", "zh"] = "en"
    title: str = "Customer analytics"


class ValueTransform(Section):
    """How the values of one canonical column are rewritten as they are read (see crmbook.ingestion),
    in this order: replace, fill_down, values / patterns / default, date_format, the number
    options (decimal, cents, negate, negate_when, multiply_by), pseudonymise. A value a transform
    cannot parse is kept as it was, so 02 cleaning counts it (and quarantines it when required)."""

    replace: dict[str, str] = Field(default_factory=dict, description="regular expression: replacement (e.g. {'^zcrm_': ''})")
    fill_down: bool = Field(False, description="an empty cell takes the value above it within the same order (rows sharing "
                                               "the order_id source column): exports that print order fields on the first line only")
    values: dict[str, str] = Field(default_factory=dict, description="source value: canonical value, case-insensitive "
                                                                     "(status codes: {'1': completed, '9': cancelled})")
    patterns: dict[str, str] = Field(default_factory=dict, description="regular expression: canonical value, for values not "
                                                                       "in `values`; the first match wins (e.g. {'^C': cancelled})")
    default: str | None = Field(None, description="value of anything `values` and `patterns` do not match (None: kept as read)")
    date_format: list[str] = Field(default_factory=list, description="strptime formats of this column, tried in order "
                                                                     "(e.g. '%d.%m.%Y'); parsed values are rewritten as %Y-%m-%d %H:%M:%S")
    decimal: Literal[".", ","] | None = Field(None, description='parse as a number with this decimal mark: "," reads 1.234,56 '
                                                              'as 1234.56, "." reads 1,234.56 (the other mark separates thousands)')
    cents: bool = Field(False, description="the numbers are in cents (minor units): divided by 100")
    negate: bool = Field(False, description="flip the sign of every number (exports that write refunds as positive "
                                            "and sales as negative)")
    negate_when: dict[str, list[str]] = Field(default_factory=dict, description="source column: values that make this "
                                                                                "row's number negative (e.g. {Type: [Refund]})")
    multiply_by: str | None = Field(None, description="source column to multiply by (line amount = quantity × unit price)")
    pseudonymise: Literal["email", "phone", "text"] | None = Field(
        None, description="replace the value by its salted hash, as for e-mails and phones (a customer id that is an e-mail)")

    @field_validator("replace", "patterns")
    @classmethod
    def _regexes(cls, value):
        import re

        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"{pattern!r} is not a regular expression ({error})") from None
        return value

    @field_validator("date_format", mode="before")
    @classmethod
    def _formats(cls, value):
        return [value] if isinstance(value, str) else value

    @property
    def numeric(self) -> bool:
        """Whether the column is parsed as a number."""
        return self.decimal is not None or self.cents or self.negate or bool(self.negate_when) or self.multiply_by is not None


class SqlSource(Section):
    """A table or a read-only query of a database, through a SQLAlchemy URL. The password is never
    written in params: it is read from the environment variable named in `password_env`."""

    url: str = Field(description="SQLAlchemy URL without a password, e.g. postgresql+psycopg://crm@db.example.com:5432/shop "
                                 "or sqlite:///data/shop.db (relative to the params file)")
    password_env: str | None = Field(None, description="environment variable that holds the password")
    table: str | None = Field(None, description="a table (or schema.table) read whole")
    query: str | None = Field(None, description="one read-only SELECT (or WITH ... SELECT) statement")

    @model_validator(mode="before")
    @classmethod
    def _redact(cls, data: Any) -> Any:
        """A password written in the URL (`user:secret@host`, or `?password=secret`, which drivers
        also accept) is masked before anything can echo it (errors print their input)."""
        if isinstance(data, dict) and isinstance(data.get("url"), str):
            import re

            url = re.sub(r"^([^:/]+://[^:/@]+):[^@]*@", r"\1:***@", data["url"])
            data = {**data, "url": re.sub(r"([?&](?:password|passwd)=)[^&]*", r"\1***", url, flags=re.IGNORECASE)}
        return data

    @field_validator("url")
    @classmethod
    def _no_password(cls, value: str) -> str:
        import re

        if ":***@" in value or re.search(r"[?&](?:password|passwd)=", value, re.IGNORECASE):
            raise ValueError("the URL contains a password: remove it and name an environment variable in password_env")
        if "://" not in value:
            raise ValueError("a SQLAlchemy URL looks like dialect+driver://user@host:port/database")
        return value

    @field_validator("password_env")
    @classmethod
    def _env_name(cls, value):
        import re

        if value is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError("the name of an environment variable (letters, digits, _), not the password itself")
        return value

    @field_validator("table")
    @classmethod
    def _table_name(cls, value):
        import re

        if value is not None and not re.fullmatch(r"[^\W\d]\w*(\.[^\W\d]\w*)?", value):
            raise ValueError("a table name, or schema.table (letters, digits, _)")
        return value

    @field_validator("query")
    @classmethod
    def _read_only(cls, value):
        if value is None:
            return value
        body = value.strip().rstrip(";").strip()
        if ";" in body:
            raise ValueError("one statement only")
        if body.split(None, 1)[0].lower() not in ("select", "with"):
            raise ValueError("a read-only query starts with SELECT or WITH")
        return body

    @model_validator(mode="after")
    def _one_of(self):
        if (self.table is None) == (self.query is None):
            raise ValueError("give either `table` or `query`")
        return self


class Source(Section):
    """One input (a file, or a database table or query) and how its columns map onto a canonical table."""

    path: Path = Field(description="the file (relative to the params file); for a sql source, a label for the source column")
    format: Literal["csv", "excel", "parquet", "jsonl", "sql"] | None = None
    encoding: str = Field("auto", description="auto (detected: UTF-8 with or without BOM, GBK/GB18030, Latin-1, ...) or a codec name")
    delimiter: str | None = Field(None, description='"," ";" "\\t" "|", or "whitespace"; detected when absent')
    header: bool = Field(True, description="false: the file has no header row; name its columns in `names`")
    names: list[str] | None = None
    sheet: str | int = Field(0, description="Excel: the sheet's name, or its position (0 = the first)")
    preset: str | None = Field(None, description="defaults for a known export (see crmbook.ingestion.PRESETS)")
    columns: dict[str, str] = Field(default_factory=dict, description="canonical name: source column")
    constants: dict[str, str] = Field(default_factory=dict, description="canonical name: a value for every row of this file")
    row_id: str | None = Field(None, description="a canonical id column filled with the row number, for files without ids")
    transforms: dict[str, ValueTransform] = Field(default_factory=dict, description="canonical name: how its values are rewritten")
    sql: SqlSource | None = Field(None, description="read a database table or query instead of a file")

    @model_validator(mode="before")
    @classmethod
    def _sql_label(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("sql"), dict) and "path" not in data:
            data = {**data, "path": f"sql:{data['sql'].get('table') or 'query'}"}
        return data

    @field_validator("encoding")
    @classmethod
    def _codec(cls, value: str) -> str:
        import codecs

        if value != "auto":
            try:
                codecs.lookup(value)
            except LookupError:
                raise ValueError("not a known encoding: use auto, or a name such as utf-8, gbk, gb18030, latin-1, cp1252") from None
        return value

    @model_validator(mode="after")
    def _sql_format(self):
        if self.format == "sql" and self.sql is None:
            raise ValueError("format: sql needs a `sql:` block (url, password_env, table or query)")
        if self.sql is not None and self.format not in (None, "sql"):
            raise ValueError(f"a source with a `sql:` block is read from the database, not as {self.format}")
        return self

    @property
    def file_format(self) -> str:
        """The declared format, else the one the file suffix implies."""
        if self.sql is not None:
            return "sql"
        if self.format:
            return self.format
        suffix = self.path.suffix.lower()
        return {".xlsx": "excel", ".xlsm": "excel", ".xls": "excel", ".parquet": "parquet", ".pq": "parquet",
                ".jsonl": "jsonl", ".ndjson": "jsonl"}.get(suffix, "csv")


class Sources(Section):
    transactions: list[Source] = Field(default_factory=list)
    customers: list[Source] = Field(default_factory=list)
    touchpoints: list[Source] = Field(default_factory=list)
    campaigns: list[Source] = Field(default_factory=list)
    campaign_members: list[Source] = Field(default_factory=list)
    channel_spend: list[Source] = Field(default_factory=list)

    def items(self) -> list[tuple[str, list[Source]]]:
        """(table, sources) for every table that has at least one source."""
        return [(name, getattr(self, name)) for name in TABLE_NAMES if getattr(self, name)]


class DemoSection(Section):
    """Generate the synthetic demo data into `dir` when it is missing (see crmbook.synth)."""

    dir: Path
    customers: int = Field(5000, gt=0)
    seed: int = 42
    messy: bool = True


class DataSection(Section):
    demo: DemoSection | None = None
    sources: Sources = Field(default_factory=Sources)


class CleaningSection(Section):
    """02 cleaning settings (see crmbook.cleaning). Every key has a default: `cleaning: {}` works."""

    class Identity(Section):
        """Single customer view: customer ids that share a normalised e-mail or phone are one customer."""

        match_on: list[Literal["email", "phone"]] = Field(
            default_factory=lambda: ["email", "phone"], description="identifiers that link two customer ids (empty: no matching)")
        ambiguous: Literal["keep_apart", "merge"] = Field(
            "keep_apart", description="a group with conflicting identifiers (one e-mail, two different phones) or a chain "
                                      "(a~b, b~c, a and c share nothing): listed and kept apart, or merged anyway")
        max_group_size: int = Field(10, ge=2, description="a larger group is ambiguous (likely a placeholder e-mail or phone)")

    class Outliers(Section):
        """Order lines whose amount is far above the usual: robust modified z-score of log amount."""

        action: Literal["flag", "cap", "quarantine", "off"] = Field(
            "flag", description="flag: amount_outlier = 1; cap: also lower the amount to the threshold; quarantine: remove")
        threshold: float = Field(3.5, gt=0, description="0.6745 (log amount - median) / MAD above this is an outlier "
                                                        "(Iglewicz & Hoaglin 1993)")

    class Currency(Section):
        """Amounts to run.currency with a rate table."""

        rates: Path | None = Field(None, description="CSV with columns date, currency, rate: units of run.currency "
                                                     "for one unit of currency on that date")
        source: str | None = Field(None, description="currency of transactions without a currency value; default: run.currency")
        max_rate_age_days: int = Field(7, ge=0, description="a rate at most this many days older than the order is used")
        missing_rate: Literal["quarantine", "error"] = Field("quarantine", description="a row with no usable rate")

        @field_validator("source")
        @classmethod
        def _code(cls, value):
            if value is not None and not (len(value.strip()) == 3 and value.strip().isalpha()):
                raise ValueError("a three-letter ISO 4217 code, e.g. EUR")
            return value.strip().upper() if value else value

    date_formats: list[str] = Field(
        default_factory=lambda: ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d", "%Y/%m/%d", "%d/%m/%Y %H:%M", "%d/%m/%Y", "%Y%m%d"],
        description="tried in order; the first is the canonical one, other matches are counted as rewritten",
    )
    refund_statuses: list[str] = Field(default_factory=lambda: ["refund", "refunded", "return", "returned"])
    cancel_statuses: list[str] = Field(default_factory=lambda: ["cancelled", "canceled", "void", "voided"])
    future_cutoff: dt.date | None = Field(None, description="rows dated after this are future-dated; default: run.analysis_date, else today")
    past_cutoff: dt.date = Field(dt.date(1970, 1, 1), description="rows with a required time stamp before this day are "
                                                                  "quarantined (a mistyped year: 1900, 0201)")
    max_abs_amount: float = Field(1e12, gt=0, description="a required amount (an order line, a spend) larger than this in "
                                                          "absolute value quarantines its row (a mistyped or overflowed value)")
    free_orders: Literal["quarantine", "keep"] = Field(
        "quarantine", description="orders worth zero with no refund or cancellation: quarantined as not a purchase, "
                                  "or kept as a purchase occasion (CDNOW's free CDs; Fader-Hardie summaries count them)")
    exact_duplicates: Literal["quarantine", "keep"] = Field("quarantine", description="rows identical to an earlier row")
    part_rows: int = Field(2_000_000, ge=1_000, description="a transactions, touchpoints or campaign_members table with "
                                                             "more rows is cleaned in parts of about this many rows, "
                                                             "on disk (same results; bounds 02's memory)")
    key_duplicates: Literal["quarantine", "keep"] = Field("quarantine", description="a second row with the same key (customer_id, ...)")
    category_case: Literal["most_common", "lower", "upper", "title"] = Field(
        "most_common", description="categories are trimmed; case variants take the most common spelling, or this case")
    phone_region: str | None = Field(None, description="ISO 3166 alpha-2 country of phones written without a country "
                                                       "code (e.g. CN, GB); phones become E.164")
    country_format: Literal["alpha2", "alpha3", "name", "keep"] = Field(
        "alpha2", description="country column: ISO 3166 alpha-2 / alpha-3 code, or the ISO short name")
    country_aliases: dict[str, str] = Field(default_factory=dict, description="spelling: ISO code, for names not "
                                                                               "recognised (e.g. {EIRE: IE})")
    cancellation_matching: Literal["product", "off"] = Field(
        "product", description="a refund or cancellation with no sale in its own order is netted into the same customer's "
                               "earlier sales of the same product_id, latest first (UCI's C invoices); off: quarantined")
    source_timezone: str | dict[str, str] | None = Field(
        None, description="time zone the timestamps are written in (one zone, or source file: zone); converted to "
                          "run.timezone; default: already in run.timezone")
    identity: Identity = Field(default_factory=Identity)
    outliers: Outliers = Field(default_factory=Outliers)
    currency: Currency = Field(default_factory=Currency)

    @field_validator("source_timezone")
    @classmethod
    def _zones(cls, value):
        import zoneinfo

        for zone in ([value] if isinstance(value, str) else list((value or {}).values())):
            try:
                zoneinfo.ZoneInfo(zone)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {zone!r} (an IANA name, e.g. Europe/London)") from None
        return value

    @field_validator("phone_region")
    @classmethod
    def _region(cls, value):
        if value is not None and not (len(value) == 2 and value.isalpha()):
            raise ValueError("an ISO 3166 alpha-2 country code, e.g. CN or GB")
        return value.upper() if value else value


class SegmentationSection(Section):
    """03 segmentation settings (see crmbook.segmentation). Every key has a default: `segmentation: {}` works."""

    class Rfm(Section):
        """RFM scores: R = days since the last purchase, F = orders, M = net revenue (all history)."""

        bins: int = Field(5, ge=2, le=10, description="scores 1..bins; quantile bins unless thresholds are given")
        thresholds: dict[Literal["recency_days", "frequency", "monetary"], list[float]] = Field(
            default_factory=dict,
            description="business edges instead of quantiles, ascending, bins - 1 per score: recency in days "
                        "(<= first edge scores highest), frequency in orders and monetary in currency (>= last edge scores highest)")
        grid: dict[int, list[str]] | None = Field(
            None, description="R score -> segment name for F = 1..bins; default: the R x F grid of REFERENCE.md")

        @field_validator("thresholds")
        @classmethod
        def _edges(cls, value, info):
            bins = info.data.get("bins", 5)
            for name, edges in value.items():
                if len(edges) != bins - 1:
                    raise ValueError(f"{name}: give {bins - 1} edges for {bins} scores, not {len(edges)}")
                if any(b <= a for a, b in zip(edges, edges[1:])):
                    raise ValueError(f"{name}: edges must be strictly ascending")
            return value

        @field_validator("grid")
        @classmethod
        def _grid(cls, value, info):
            bins = info.data.get("bins", 5)
            if value is not None:
                if sorted(value) != list(range(1, bins + 1)):
                    raise ValueError(f"grid needs one row for every R score 1..{bins}")
                if any(len(row) != bins or not all(str(n).strip() for n in row) for row in value.values()):
                    raise ValueError(f"every grid row names a segment for each F score 1..{bins}")
            return value

    class Clusters(Section):
        """Behavioural clusters on log-transformed, standardised customer features."""

        method: Literal["kmeans", "gmm", "hdbscan"] = "kmeans"
        features: list[Literal["frequency", "aov", "revenue", "tenure", "recency", "interpurchase"]] = Field(
            default_factory=lambda: ["frequency", "aov", "tenure"],
            description="log orders, log average order value, log revenue, tenure days, days since last purchase, "
                        "log mean days between purchases")
        k_range: tuple[int, int] = Field((2, 8), description="smallest and largest k tried")
        k: int | None = Field(None, ge=2, description="fix k instead of choosing it")
        gmm_criterion: Literal["bic", "icl"] = Field("icl", description="GMM k: ICL = BIC + 2 x assignment entropy")
        gmm_reg_covar: float = Field(0.05, gt=0, description="variance floor (standardised units) for discrete features")
        hdbscan_min_cluster_size: int | None = Field(None, ge=2, description="default: 1% of customers, at least 10")
        fit_sample: int = Field(50_000, ge=100, description="fit on a seeded sample of this many customers, predict the rest")
        silhouette_sample: int = Field(3_000, ge=100, description="customers the silhouette is computed on (O(n^2) memory)")
        bootstrap: int = Field(20, ge=0, description="bootstrap refits for the stability check (0: skip)")
        seed: int = 0

        @field_validator("k_range")
        @classmethod
        def _range(cls, value):
            if not 2 <= value[0] <= value[1]:
                raise ValueError("k_range is [smallest, largest] with 2 <= smallest <= largest")
            return value

    class Lifecycle(Section):
        """Stages judged against each customer's own rhythm: days since the last purchase / usual gap."""

        new_days: int = Field(30, ge=0, description="first purchase within this many days: new")
        active_ratio: float = Field(1.5, gt=0, description="silent for at most this many usual gaps: active")
        at_risk_ratio: float = Field(3.0, gt=0, description="... at most this many: at risk")
        lapsed_ratio: float = Field(6.0, gt=0, validate_default=True,
                                    description="... at most this many: lapsed; beyond: lost")
        own_rhythm_min_repeats: int = Field(1, ge=1, description="repeat purchases needed to use a customer's own gap")
        default_gap_days: float = Field(90.0, gt=0, description="usual gap when no customer has bought twice")

        @field_validator("lapsed_ratio")
        @classmethod
        def _ordered(cls, value, info):
            if not info.data.get("active_ratio", 0) < info.data.get("at_risk_ratio", 0) < value:
                raise ValueError("active_ratio < at_risk_ratio < lapsed_ratio")
            return value

    class ValueTiers(Section):
        """high value: the top share by net revenue; potential: not high value, in a potential stage,
        average order value at or above the given quantile; ordinary: everyone else."""

        high_value_share: float = Field(0.2, gt=0, lt=1)
        potential_min_aov_quantile: float = Field(0.5, ge=0, le=1)
        potential_stages: list[Literal["new", "active", "at_risk", "lapsed", "lost"]] = Field(
            default_factory=lambda: ["new", "active"])

    class Attributes(Section):
        """Attribute segments from the clean customers table, and the tree that separates high value."""

        columns: list[str] = Field(default_factory=lambda: ["age_band", "gender", "region", "acquisition_channel"],
                                   description="customer columns (age_band is derived from age or birth_date)")
        age_bands: list[int] = Field(default_factory=lambda: [25, 35, 45, 55, 65], description="band edges in years")
        tree_depth: int = Field(3, ge=1, le=6)
        max_levels: int = Field(12, ge=2, description="a column with more values keeps its most common ones")

    rfm: Rfm = Field(default_factory=Rfm)
    clusters: Clusters = Field(default_factory=Clusters)
    lifecycle: Lifecycle = Field(default_factory=Lifecycle)
    value_tiers: ValueTiers = Field(default_factory=ValueTiers)
    attributes: Attributes = Field(default_factory=Attributes)
    actions: dict[str, str] = Field(default_factory=dict,
                                    description="segment name -> recommended action (default: text/03_segmentation.yaml)")


class ClvSection(Section):
    """04 customer-lifetime-value settings (see crmbook.clv). Every key has a default: `clv: {}` works.

    The purchase models are fitted on the calibration period (purchases up to and including
    calibration_end) and judged on the holdout (calibration_end, holdout_end]. Without dates, the
    last `holdout_weeks` weeks of the data (to the last day with purchases, at most the analysis
    date) are the holdout when the data span at least three times that (so the calibration period
    is at least twice the holdout); otherwise the whole history is the calibration period and
    models are compared by BIC. Customers are scored on their whole history to the analysis date."""

    time_unit: Literal["days", "weeks"] = Field("weeks", description="unit of recency, T and the rate parameters (alpha, beta)")
    calibration_end: dt.date | None = Field(None, description="last day of the calibration period; default: holdout_end - holdout_weeks")
    holdout_end: dt.date | None = Field(None, description="last day of the holdout period; default: the last day with purchases")
    holdout_weeks: int = Field(26, ge=0, description="default holdout length when calibration_end is not given (0: no holdout)")
    horizon_years: float = Field(1.0, gt=0, le=10, description="CLV and expected purchases over this many years after the analysis date")
    discount_rate: float = Field(0.10, ge=0, lt=1, description="annual discount rate (0.10 = 10% a year)")
    discounting: Literal["discrete", "continuous"] = Field(
        "discrete", description="discrete: each month's purchases discounted at the month's end; continuous: exp(-ln(1 + rate) t)")
    models: list[Literal["bgnbd", "pareto", "mbgnbd"]] = Field(
        default_factory=lambda: ["bgnbd", "pareto", "mbgnbd"], min_length=1, description="purchase models fitted and compared")
    model: Literal["auto", "bgnbd", "pareto", "mbgnbd"] = Field(
        "auto", description="model used for CLV; auto: the converged fit with the lowest holdout MAE per customer (no holdout: lowest BIC)")
    refit: bool = Field(True, description="after the holdout check, refit the chosen model and Gamma-Gamma on the whole history")
    penalizer: float = Field(0.0, ge=0, description="L2 penalty (lifetimes' penalizer_coef convention); 0 reproduces published fits")
    churn_p_alive_below: float = Field(0.5, gt=0, lt=1, description="churn risk: P(alive) below this ...")
    churn_top_value_share: float = Field(0.2, gt=0, le=1, description="... among the top share of customers by net revenue to date")

    @field_validator("holdout_end")
    @classmethod
    def _after_calibration(cls, value, info):
        start = info.data.get("calibration_end")
        if value is not None and start is not None and value <= start:
            raise ValueError(f"holdout_end must be after calibration_end ({start})")
        return value

    @field_validator("model")
    @classmethod
    def _fitted(cls, value, info):
        if value != "auto" and value not in info.data.get("models", [value]):
            raise ValueError(f"model {value!r} is not in clv.models")
        return value


class AttributionSection(Section):
    """05 channel-attribution settings (see crmbook.attribution). Every key has a default: `attribution: {}` works."""

    lookback_days: int | Literal["auto"] = Field(
        "auto", description="days before a conversion in which a touch still counts; auto: where touches stop being "
                            "more frequent before a conversion than at random times (see the 05 report)")
    lookback_max_days: int = Field(90, ge=14, le=730, description="auto: the longest window considered")
    lookback_fallback_days: int = Field(30, ge=1, description="auto: the window used when the data cannot tell")
    drop_direct: bool = Field(False, description="remove `direct_channel` touches from every journey")
    direct_channel: str = Field("direct", description="the channel name of direct visits (last non-direct model, drop_direct)")
    markov_orders: list[int] = Field(default_factory=lambda: [1], description="Markov chain orders fitted, each 1, 2 or 3")
    half_life: float = Field(1.0, gt=0, description="time decay: credit halves every this many touches back from the conversion")
    position_first: float = Field(0.4, ge=0, le=1, description="position based: share of the first touch")
    position_last: float = Field(0.4, ge=0, le=1, description="position based: share of the last touch")
    logistic_c: float = Field(1.0, gt=0, description="inverse L2 strength of the logistic models (scikit-learn's C)")
    n_boot: int = Field(100, ge=0, description="bootstrap replicates over journeys for the share intervals (0: none)")
    interval_level: float = Field(0.9, gt=0.5, lt=1.0, description="coverage of the share intervals")
    seed: int = 0
    paths_file: Path | None = Field(None, description="pre-aggregated paths instead of the touch log (one row per path)")
    paths_format: Literal["channelattribution"] = Field(
        "channelattribution", description="path ('a > b'), total_conversions, total_conversion_value, total_null")
    paths_delimiter: str | None = Field(None, description="column delimiter of paths_file; detected when absent")
    truth_file: Path | None = Field(None, description="known channel shares (JSON with channel_true_share), for simulated "
                                                      "data; default: a truth.json next to the touchpoints file")
    reallocation_share: float = Field(0.1, gt=0, le=0.5, description="share of the lowest-ROAS channel's spend to move")
    top_paths: int = Field(20, ge=1, description="paths shown in the report")

    @field_validator("lookback_days")
    @classmethod
    def _lookback(cls, value):
        if value != "auto" and not 1 <= value <= 730:
            raise ValueError("lookback_days is a number of days from 1 to 730, or auto")
        return value

    @field_validator("markov_orders")
    @classmethod
    def _orders(cls, value):
        if not value or any(k not in (1, 2, 3) for k in value) or len(set(value)) != len(value):
            raise ValueError("markov_orders lists distinct orders from 1, 2, 3, e.g. [1] or [1, 2]")
        return sorted(value)

    @field_validator("position_last")
    @classmethod
    def _positions(cls, value, info):
        first = info.data.get("position_first", 0.4)
        if not 0 < first + value <= 1:
            raise ValueError("position_first + position_last must be above 0 and at most 1")
        return value


class PerformanceSection(Section):
    """06 performance-evaluation settings (every default works on the demo with `performance: {}`)."""

    grain: Literal["week", "month", "quarter"] = Field("month", description="KPI period: week (Mon-Sun), month or quarter")
    drop_incomplete_period: bool = Field(True, description="leave out a last period that ends after the data does")
    metrics: list[str] = Field(default_factory=lambda: ["converted", "revenue", "visited"],
                               description="campaign_members columns compared between arms (those present are used)")
    cuped: bool = Field(True, description="CUPED-adjust every metric with pre_period_value when all members have one")
    control_groups: dict[str, str] = Field(default_factory=dict, description="campaign_id: control group name; default: "
                                           "a group named like control / no / holdout, else the largest group")
    expected_shares: dict[str, dict[str, float]] = Field(default_factory=dict, description="campaign_id: {group: planned "
                                                         "share} for the sample-ratio check; default: equal shares")
    confidence_level: float = Field(0.95, gt=0.5, lt=1.0, description="for intervals; 1 - level is the significance level")
    power: float = Field(0.8, gt=0.0, lt=1.0, description="for the minimum detectable effect")
    gross_margin: float = Field(1.0, gt=0.0, le=1.0, description="share of incremental revenue that is profit, for ROI")
    alert_threshold: float = Field(0.2, gt=0.0, description="alert when a KPI moves more than this (relative) since the last run")
    monitor_kpis: list[str] = Field(default_factory=list, description="KPIs watched across runs; empty: all")
    cohort_months: int = Field(12, ge=1, description="months since acquisition shown in the cohort charts")


class Config(Section):
    run: RunSection = Field(default_factory=RunSection)
    report: ReportSection = Field(default_factory=ReportSection)
    data: DataSection = Field(default_factory=DataSection)
    cleaning: CleaningSection = Field(default_factory=CleaningSection)
    segmentation: SegmentationSection = Field(default_factory=SegmentationSection)
    clv: ClvSection = Field(default_factory=ClvSection)
    attribution: AttributionSection = Field(default_factory=AttributionSection)
    performance: PerformanceSection = Field(default_factory=PerformanceSection)
    params_file: Path = Field(Path("params.yaml"), exclude=True)

    @field_validator("params_file")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.resolve()

    def resolve(self, path: Path) -> Path:
        """A path from the params file, made absolute against the params file's folder."""
        return path if path.is_absolute() else (self.params_file.parent / path).resolve()

    def missing_sources(self) -> list[tuple[str, Path]]:
        """(table, path) of every source file that does not exist (checked without reading anything)."""
        missing = [(table, self.resolve(src.path)) for table, sources in self.data.sources.items()
                   for src in sources if src.sql is None and not self.resolve(src.path).is_file()]
        for key, path in (("attribution.paths_file", self.attribution.paths_file),
                          ("cleaning.currency.rates", self.cleaning.currency.rates)):
            if path is not None and not self.resolve(path).is_file():
                missing.append((key, self.resolve(path)))
        return missing

    def public_dict(self) -> dict[str, Any]:
        """The resolved params as plain data, for the manifest (secrets are never in params)."""
        return self.model_dump(mode="json")


def _key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _describe(error: dict[str, Any]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if tuple(error["loc"][:2]) == ("run", "spark_conf"):  # its values may be credentials: never echoed
        return error["msg"]
    return f"{error['msg']} (got {error.get('input')!r})"


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    model: Any = Config
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        annotation = getattr(field, "annotation", None)
        for candidate in (annotation, *getattr(annotation, "__args__", ())):
            candidate = getattr(candidate, "__args__", (candidate,))[0] if getattr(candidate, "__origin__", None) is list else candidate
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                model = candidate
                break
        else:
            return []
    return [name for name in model.model_fields if name != "params_file"]


def load(path: str | Path) -> Config:
    """Read and validate a params file; raise `ConfigError` with file and key path on any problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(path, "", "params file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else ""
        raise ConfigError(path, where, f"not valid YAML: {getattr(error, 'problem', error)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(path, "", "expected a mapping of sections (run, report, data, ...)")
    if "params_file" in raw:
        raise ConfigError(path, "params_file", "unknown key")
    try:
        return Config.model_validate({**raw, "params_file": path})
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        message = _describe(first)
        if first["type"] == "extra_forbidden":
            allowed = _allowed_keys(first["loc"])
            if allowed:
                message += f" (allowed: {', '.join(allowed)})"
        if len(errors) > 1:
            message += f"; and {len(errors) - 1} more problem(s)"
        raise ConfigError(path, _key_path(first["loc"]), message) from None
