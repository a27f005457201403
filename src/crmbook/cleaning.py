"""02 cleaning: small rules, applied in order to every canonical table, each counted.

Every rule takes a table and returns the rows it keeps, the rows it removes (each with a
reason) and how many kept rows it rewrote. `clean_table` chains the rules and records, per
rule, rows_in = rows_out + rows_quarantined; removed rows go to the quarantine with the
rule's name, so no row is ever lost silently. Every rule is set in `cleaning:` of the params
(`crmbook.config.CleaningSection`).

Rules, in order (columns by their kind in `crmbook.schema`):
exact_duplicate · missing_<required id or category> · rekey_customer_id (single customer view) ·
parse_<date column> (canonical format, or quarantine when required) · timezone_<timestamp> ·
future_<required timestamp> · past_<required timestamp> · parse_<number column> ·
range_<required number> · normalise_categories (trim, collapse spaces, one spelling per
case-insensitive value) · normalise_country · normalise_contacts
(customers: e-mails and phones, normalised at ingestion before hashing) · duplicate_key (tables
with a key) · merge_customers (customers) · convert_currency, net_refunds, match_cancellations,
cancelled_order and outliers_amount (transactions).

A transactions, touchpoints or campaign-members table larger than `cleaning.part_rows` is cleaned
in parts on disk with the same rules and results (`clean_run`, `clean_in_parts`).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from crmbook import schema
from crmbook.config import CleaningSection, Config
from crmbook.errors import InputError

_log = logging.getLogger(__name__)  # progress lines (crmbook.progress)

STAGE = "02_cleaning"


@dataclass(frozen=True)
class Step:
    """What one rule did: rows kept, rows removed (with a `reason` column), kept rows rewritten."""

    kept: pd.DataFrame
    removed: pd.DataFrame
    changed: int = 0


@dataclass(frozen=True)
class OnDisk:
    """A table cleaned in parts (`clean_in_parts`): its outputs are files; the report reads these."""

    reasons: pd.DataFrame  # rule, reason, rows: quarantined rows per reason, in quarantine order
    sample: pd.DataFrame  # the first `SAMPLE_ROWS` quarantined rows of each rule and reason


@dataclass
class Cleaned:
    """Clean tables, their quarantined rows, and the data-quality ledger. Tables cleaned in parts
    are not in `tables` and `quarantine` but in `on_disk`."""

    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    quarantine: dict[str, pd.DataFrame] = field(default_factory=dict)
    quality: pd.DataFrame = field(default_factory=pd.DataFrame)
    id_map: pd.DataFrame | None = None  # single customer view (`match_customers`); None without customers
    details: dict = field(default_factory=dict)  # outlier_limit, unrecognised_countries, rates: for the report
    on_disk: dict[str, OnDisk] = field(default_factory=dict)
    orders: dict | None = None  # `order_facts` of the clean transactions; None without transactions
    contacts: pd.DataFrame | None = None  # `contact_table` of the canonical tables


SAMPLE_ROWS = 3  # quarantined rows per rule and reason shown in the report


def _split(frame: pd.DataFrame, remove: pd.Series, reason: str | pd.Series, changed: int = 0,
           original: pd.DataFrame | None = None) -> Step:
    """Keep `frame[~remove]`; quarantine the same rows as they were before this rule (`original`).
    When nothing is removed, `frame` itself is kept: no copy of a large table."""
    removed = (frame if original is None else original)[remove].copy()
    removed["reason"] = reason if isinstance(reason, str) else reason[remove]
    return Step(frame[~remove] if remove.any() else frame, removed, changed)


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


def missing_category(frame: pd.DataFrame, column: str) -> Step:
    """Rows whose required category (a touch's channel, a member's group) is empty; the others are
    left for `normalise_categories` to trim and respell."""
    return _split(frame, _blank(frame[column]), f"{column} is empty")


def parse_dates(frame: pd.DataFrame, column: str, formats: list[str], required: bool, kind: str,
                tally: dict | None = None) -> Step:
    """Parse text dates with `formats`, tried in order. The format most rows match is the column's
    own; rows written in another format are counted as changed. Unparseable values quarantine the
    row when the column is required, else become empty (counted as changed). `tally` adds up the
    rows per format and the emptied values, so a table cleaned in parts counts against the format
    of the whole table (`changed_in_parts`)."""
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
    if tally is not None:
        tally["formats"] = tally.get("formats", 0) + np.bincount(matched[matched >= 0], minlength=len(formats))
        tally["emptied"] = tally.get("emptied", 0) + (0 if required else int(bad.sum()))
    converted = frame.assign(**{column: parsed})
    if required:
        # the reason is written on the removed rows only: a text per row of a large table costs GBs
        remove = bad | empty
        step = _split(converted, remove, f"{column} is not a date in any format of cleaning.date_formats", rewritten,
                      original=frame)
        reason = step.removed["reason"].where(~empty[remove].to_numpy(), f"{column} is empty")
        return Step(step.kept, step.removed.assign(reason=reason), rewritten)
    return Step(converted, frame.iloc[0:0].assign(reason=""), rewritten + int(bad.sum()))


def changed_in_parts(tally: dict) -> int:
    """`parse_dates`' count of rewritten rows for a whole table from the `tally` of its parts: rows
    in a format other than the one most rows of the table match (ties: the earlier format), plus
    optional values emptied."""
    formats = np.asarray(tally.get("formats", [0]))
    return int(formats.sum() - formats[int(np.argmax(formats))]) + int(tally.get("emptied", 0))


def future_dates(frame: pd.DataFrame, column: str, cutoff: dt.date) -> Step:
    """Rows dated after the cutoff day (the analysis date, else today)."""
    limit = pd.Timestamp(cutoff) + pd.Timedelta(days=1)
    return _split(frame, frame[column] >= limit, f"{column} is after {cutoff.isoformat()}")


def past_dates(frame: pd.DataFrame, column: str, cutoff: dt.date) -> Step:
    """Rows dated before the cutoff day (`cleaning.past_cutoff`: a mistyped year)."""
    return _split(frame, frame[column] < pd.Timestamp(cutoff), f"{column} is before {cutoff.isoformat()}")


def out_of_range(frame: pd.DataFrame, column: str, limit: float) -> Step:
    """Rows whose number is larger than `limit` in absolute value (`cleaning.max_abs_amount`):
    a mistyped value that would swamp every total, or overflow an exact sum."""
    return _split(frame, frame[column].abs() > limit, f"{column} is beyond ±{limit:g}")


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


def parse_flags(frame: pd.DataFrame, column: str, required: bool) -> Step:
    """Parse 0/1 flags as numbers (see `parse_numbers`); another number (2, -1) is not a flag and
    becomes empty, counted as changed."""
    step = parse_numbers(frame, column, required, integer=True)
    values = step.kept[column]
    other = values.notna() & ~values.isin([0, 1])
    if not other.any():
        return step
    return Step(step.kept.assign(**{column: values.mask(other)}), step.removed, step.changed + int(other.sum()))


def spelling_map(counts: pd.Series, case: str = "most_common") -> pd.Series:
    """Each raw value (the index of `counts`, rows per value) to its one spelling: trimmed, inner
    spaces collapsed, and case-insensitive variants joined under the most frequent (ties: the
    alphabetically first), so 'Email ' and 'EMAIL' join 'email'; or, with `case` 'lower', 'upper'
    or 'title', that case."""
    variants = pd.DataFrame({"raw": counts.index.astype("str"), "n": counts.to_numpy()})
    variants["spelling"] = variants["raw"].str.strip().str.replace(r"\s+", " ", regex=True)
    variants["key"] = variants["spelling"].str.casefold()
    if case in ("lower", "upper", "title"):
        variants["canonical"] = getattr(variants["spelling"].str, case)()
    else:
        totals = variants.groupby(["key", "spelling"], as_index=False)["n"].sum()
        best = totals.sort_values(["key", "n", "spelling"], ascending=[True, False, True]).drop_duplicates("key")
        variants["canonical"] = variants["key"].map(best.set_index("key")["spelling"])
    return variants.set_index("raw")["canonical"]


def canonical_spelling(values: pd.Series, case: str = "most_common", spellings: pd.Series | None = None) -> pd.Series:
    """`values` in their one spelling (see `spelling_map`; from these values' own counts unless
    `spellings` is given). Works on the distinct values only, then maps them back onto the rows."""
    if spellings is None:
        counts = values.value_counts(dropna=True)
        spellings = spelling_map(counts, case) if len(counts) else None
    if spellings is None or spellings.empty:
        return values.astype("str").where(values.notna())
    return values.astype("str").map(spellings).where(values.notna())


def category_text(frame: pd.DataFrame, column: str) -> pd.Series:
    """A category column as text, empty values kept empty (what `normalise_categories` counts)."""
    return frame[column].astype("str").where(frame[column].notna())


def normalise_categories(frame: pd.DataFrame, columns: list[str], case: str = "most_common",
                         spellings: dict[str, pd.Series] | None = None) -> Step:
    """Category columns to one spelling per value (see `canonical_spelling`); rows changed are
    counted. `spellings` (column -> `spelling_map`) gives a table cleaned in parts the spellings
    of the whole table."""
    out = frame.copy()
    changed = pd.Series(False, index=frame.index)
    for column in columns:
        before = category_text(frame, column)
        given = spellings.get(column) if spellings is not None else None
        out[column] = canonical_spelling(before, case, given).replace("", pd.NA).astype("str")
        changed |= before.fillna("") != out[column].fillna("")
    return Step(out, frame.iloc[0:0].assign(reason=""), int(changed.sum()))


def duplicate_key(frame: pd.DataFrame, key: tuple[str, ...]) -> Step:
    """A second row with the same key as an earlier one (rows are not exact copies)."""
    return _split(frame, frame.duplicated(subset=list(key), keep="first"), f"{' + '.join(key)} repeats an earlier row")


# --- E-mail and phone: normalised at ingestion, before the values are hashed -----------------

EMAIL_PATTERN = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
CONTACT_STATUSES = ("", "kept", "normalised", "no_country_code", "invalid")


def normalise_email(values: pd.Series) -> pd.Series:
    """E-mail addresses trimmed, lower-cased and without a 'mailto:' prefix; missing (NA) when
    empty or not of the form local@domain.tld. The local part is lower-cased too: mail systems
    treat it case-insensitively in practice, and a match on the single customer view needs one form."""
    text = values.astype("string").str.strip().str.lower().str.removeprefix("mailto:")
    valid = text.map(lambda v: bool(EMAIL_PATTERN.fullmatch(v)), na_action="ignore").astype("boolean").fillna(False)
    return text.where(valid)


def _e164(raw: str, region: str | None) -> tuple[str | None, str]:
    import phonenumbers

    try:
        number = phonenumbers.parse(raw, region, keep_raw_input=True)
    except phonenumbers.NumberParseException:
        digits = re.sub(r"\D", "", raw)
        if region is None and 6 <= len(digits) <= 15 and not raw.lstrip().startswith("+"):
            return digits, "no_country_code"
        return None, "invalid"
    if not phonenumbers.is_possible_number(number):
        return None, "invalid"
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    from_region = number.country_code_source == phonenumbers.CountryCodeSource.FROM_DEFAULT_COUNTRY
    return e164, "normalised" if from_region else "kept"


def normalise_phone(values: pd.Series, region: str | None = None) -> pd.Series:
    """Phone numbers in E.164 ('+8613800138000') with Google's libphonenumber (`phonenumbers`);
    a number written without a country code takes `region` (ISO 3166 alpha-2, cleaning.phone_region).
    Missing (NA) when empty or not a possible number (wrong length, letters); without a region, a
    number with no country code is kept as its digits (it cannot be put in E.164)."""
    return _phone_table(values, region)[0]


def _phone_table(values: pd.Series, region: str | None) -> tuple[pd.Series, pd.Series]:
    text = values.astype("string").str.strip()
    distinct = text[text.notna() & text.ne("")].unique()
    parsed = {raw: _e164(str(raw), region) for raw in distinct}
    number = text.map({raw: value for raw, (value, _) in parsed.items()}).astype("string")
    status = text.map({raw: state for raw, (_, state) in parsed.items()}).astype("string").fillna("")
    return number.where(number.notna() & number.ne(""), pd.NA), status


def contact_status(raw: pd.Series, normalised: pd.Series) -> pd.Series:
    """What normalisation did to each e-mail: '' (empty), 'kept' (already in normal form),
    'normalised' (rewritten) or 'invalid' (not usable: set empty)."""
    text = raw.astype("string").str.strip().fillna("")
    status = pd.Series("normalised", index=raw.index, dtype="string")
    status[normalised.fillna("").eq(text)] = "kept"
    status[normalised.isna() & text.ne("")] = "invalid"
    status[text.eq("")] = ""
    return status


def normalise_contacts(frame: pd.DataFrame, rules: CleaningSection | None = None) -> pd.DataFrame:
    """The `email` and `phone` columns normalised (`normalise_email`, `normalise_phone` with
    cleaning.phone_region), with `email_status` / `phone_status` saying what was done to each value
    (see `CONTACT_STATUSES`), so the 02 ledger can count it after the values were hashed. An e-mail
    is 'normalised' when its text changed (case, spaces); a phone when its country code had to come
    from cleaning.phone_region (spacing alone is not a change: '+86 138 0013 8000' is 'kept').
    Ingestion calls this on every table before `pseudonymise`: hashes are of the normal form."""
    rules = rules or CleaningSection()
    out = frame.copy()
    if "email" in frame:
        out["email"] = normalise_email(frame["email"])
        out["email_status"] = contact_status(frame["email"], out["email"])
    if "phone" in frame:
        out["phone"], out["phone_status"] = _phone_table(frame["phone"], rules.phone_region)
    return out


def contacts_counted(frame: pd.DataFrame) -> Step:
    """Count the e-mails and phones ingestion rewrote or emptied (their `<kind>_status` columns, which
    this rule then drops): rows with any value normalised, left without a country code, or invalid."""
    columns = [c for c in ("email_status", "phone_status") if c in frame]
    status = frame[columns].astype("string").fillna("")
    changed = status.isin(["normalised", "invalid", "no_country_code"]).any(axis=1)
    return Step(frame.drop(columns=columns), frame.iloc[0:0].assign(reason=""), int(changed.sum()))


def contact_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """E-mails and phones per status (from ingestion's `<kind>_status` columns), for the report."""
    rows = [{"field": kind, "status": state or "empty", "rows": int(n)}
            for kind in ("email", "phone") if f"{kind}_status" in frame
            for state, n in frame[f"{kind}_status"].astype("string").fillna("").value_counts().sort_index().items()]
    return pd.DataFrame(rows, columns=["field", "status", "rows"])


# --- Countries: one ISO 3166 code or name per country ---------------------------------------

#: Spellings found in real exports that ISO 3166 (pycountry) does not list; extend in cleaning.country_aliases.
COUNTRY_ALIASES: dict[str, str] = {
    "eire": "IE", "rsa": "ZA", "uk": "GB", "u.k.": "GB", "great britain": "GB", "britain": "GB", "england": "GB",
    "scotland": "GB", "wales": "GB", "northern ireland": "GB", "usa": "US", "u.s.": "US", "u.s.a.": "US", "us": "US",
    "america": "US", "united states of america": "US", "korea": "KR", "south korea": "KR", "north korea": "KP",
    "turkey": "TR", "russia": "RU", "macau": "MO", "macao": "MO", "cape verde": "CV", "ivory coast": "CI",
    "swaziland": "SZ", "burma": "MM", "holland": "NL", "the netherlands": "NL", "czech republic": "CZ",
    "vatican": "VA", "vietnam": "VN", "uae": "AE", "china": "CN", "prc": "CN", "中国": "CN", "中国大陆": "CN",
    "香港": "HK", "台湾": "TW", "deutschland": "DE", "españa": "ES", "brasil": "BR", "schweiz": "CH",
}
#: Values that mean "no country": set empty.
COUNTRY_PLACEHOLDERS = frozenset({"unspecified", "unknown", "n/a", "none", "null", "-", "?", "other"})  # not "NA": Namibia


def country_codes(values: pd.Series, fmt: str = "alpha2", aliases: dict[str, str] | None = None) -> tuple[pd.Series, list[str]]:
    """Country names and codes to one form: ISO 3166 alpha-2 ('GB'), alpha-3 ('GBR') or the ISO
    short name ('United Kingdom'), looked up in pycountry (names, official and common names, codes),
    then in `COUNTRY_ALIASES` and `aliases` (spelling: ISO code). Placeholders ('Unspecified')
    become empty; a value that is not recognised is kept as written (trimmed). Returns the new
    values and the unrecognised spellings."""
    import pycountry

    table = {**COUNTRY_ALIASES, **{k.strip().casefold(): v for k, v in (aliases or {}).items()}}
    text = values.astype("string").str.strip().str.replace(r"\s+", " ", regex=True)
    mapping: dict[str, object] = {}
    unknown: list[str] = []
    for raw in text.dropna().unique():
        key = str(raw).casefold()
        if key in COUNTRY_PLACEHOLDERS or key == "":
            mapping[raw] = pd.NA
            continue
        try:
            country = pycountry.countries.lookup(table.get(key, raw))
        except LookupError:
            mapping[raw] = raw
            unknown.append(str(raw))
            continue
        mapping[raw] = {"alpha2": country.alpha_2, "alpha3": country.alpha_3}.get(
            fmt, getattr(country, "common_name", None) or country.name)
    return text.map(mapping).astype("string"), sorted(unknown)


def normalise_country(frame: pd.DataFrame, column: str, fmt: str, aliases: dict[str, str]) -> Step:
    """The country column to one ISO form (see `country_codes`); rows rewritten are counted."""
    before = frame[column].astype("string")
    after, _ = country_codes(before, fmt, aliases)
    changed = int((before.fillna("\0") != after.fillna("\0")).sum())
    return Step(frame.assign(**{column: after.astype("str").where(after.notna())}), frame.iloc[0:0].assign(reason=""), changed)


# --- Time zones --------------------------------------------------------------------------------

def convert_timezone(frame: pd.DataFrame, column: str, zones: str | dict[str, str], target: str) -> Step:
    """Timestamps written in a source time zone (one zone, or a zone per `source` file) to the
    canonical zone `target` (run.timezone), kept as naive wall-clock times of that zone. A time in
    the autumn hour that repeats is read as its first occurrence (summer time); a time in the spring
    hour that does not exist is moved forward to the first valid time. Rows of a source file not in
    `zones` are taken to be in `target` already. Rows converted are counted."""
    zone_of = pd.Series(zones, index=frame.index) if isinstance(zones, str) else frame["source"].map(zones)
    values = frame[column]
    out = values.copy()
    converted = 0
    for zone in sorted(set(zone_of.dropna()) - {target}):
        rows = zone_of.eq(zone) & values.notna()
        if not rows.any():
            continue
        local = values[rows].dt.tz_localize(zone, ambiguous=np.ones(int(rows.sum()), dtype=bool), nonexistent="shift_forward")
        out[rows] = local.dt.tz_convert(target).dt.tz_localize(None).astype(values.dtype)
        converted += int(rows.sum())
    return Step(frame.assign(**{column: out}), frame.iloc[0:0].assign(reason=""), converted)


# --- Currency ---------------------------------------------------------------------------------

def load_rates(path: Path) -> pd.DataFrame:
    """A rate table: CSV with columns date (YYYY-MM-DD), currency (ISO 4217) and rate (units of
    run.currency for one unit of currency, > 0). Raises `InputError` naming the file, column and row."""
    if not path.is_file():
        raise InputError(path, "rate table not found (cleaning.currency.rates)")
    rates = pd.read_csv(path, dtype=str, keep_default_na=False)
    rates.columns = [str(c).strip().lower() for c in rates.columns]
    for column in ("date", "currency", "rate"):
        if column not in rates:
            raise InputError(path, f"the rate table needs columns date, currency, rate (it has: {', '.join(rates.columns)})",
                             column=column, row=1)
    day = pd.to_datetime(rates["date"].str.strip(), format="%Y-%m-%d", errors="coerce")
    rate = pd.to_numeric(rates["rate"].str.strip(), errors="coerce")
    currency = rates["currency"].str.strip().str.upper()
    for column, bad in (("date", day.isna()), ("rate", ~(rate > 0) | ~np.isfinite(rate.fillna(0))),
                        ("currency", ~currency.str.fullmatch(r"[A-Z]{3}"))):
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0]) + 2
            raise InputError(path, f"not a valid {column}: {rates[column].iloc[row - 2]!r}", column=column, row=row)
    return (pd.DataFrame({"date": day.astype("datetime64[us]"), "currency": currency.astype("str"), "rate": rate.astype("float64")})
            .drop_duplicates(["date", "currency"], keep="last").sort_values(["date", "currency"]).reset_index(drop=True))


def convert_currency(frame: pd.DataFrame, rates: pd.DataFrame | None, target: str, source: str | None,
                     max_age_days: int = 7, missing: str = "quarantine", rates_file: str = "cleaning.currency.rates") -> Step:
    """Amounts to `target` (run.currency): a row's currency is its `currency` value, else `source`,
    else `target`; amount × the rate of that currency on the order's day, or the latest one at most
    `max_age_days` before it. A row with no such rate is quarantined (or, with `missing='error'`, an
    `InputError`). Rows converted are counted; `currency` is set to `target` on every kept row."""
    default = (source or target).upper()
    currency = (frame["currency"].astype("string").str.strip().str.upper().replace("", pd.NA).fillna(default)
                if "currency" in frame else pd.Series(default, index=frame.index, dtype="string"))
    foreign = currency.ne(target.upper())
    day = frame["order_ts"].dt.normalize().astype("datetime64[us]")
    rate = pd.Series(np.nan, index=frame.index)
    if foreign.any() and rates is not None and len(rates):
        wanted = pd.DataFrame({"date": day[foreign], "currency": currency[foreign].astype("str")}).drop_duplicates()
        wanted = wanted.dropna().sort_values("date")
        found = pd.merge_asof(wanted, rates.sort_values("date"), on="date", by="currency", direction="backward",
                              tolerance=pd.Timedelta(days=max_age_days))
        lookup = found.set_index(["date", "currency"])["rate"]
        keys = pd.MultiIndex.from_arrays([day[foreign], currency[foreign].astype("str")])
        rate[foreign] = lookup.reindex(keys).to_numpy()
    no_rate = foreign & rate.isna()
    if no_rate.any() and missing == "error":
        first = frame.index[no_rate][0]
        raise InputError(rates_file, f"no {currency[first]} rate on or up to {max_age_days} days before "
                                     f"{day[first]:%Y-%m-%d} (transactions row {frame.at[first, 'source_row']})")
    amount = frame["amount"].where(~foreign, frame["amount"] * rate)
    converted = frame.assign(amount=amount, currency=target.upper())
    reason = ("no " + currency.astype("str") + f" rate on or up to {max_age_days} days before the order day in "
              + rates_file)
    step = _split(converted, no_rate, reason, original=frame)
    return Step(step.kept, step.removed, int((foreign & ~no_rate).sum()))


# --- Single customer view -----------------------------------------------------------------------

def _codes(values: pd.Series) -> np.ndarray:
    """Integer code per distinct non-empty value; -1 for empty."""
    text = values.astype("string").fillna("").str.strip()
    return pd.factorize(text.where(text.ne(""), None), use_na_sentinel=True)[0]


def match_customers(customers: pd.DataFrame, settings: CleaningSection.Identity | None = None,
                    source_order: list[str] | None = None) -> pd.DataFrame:
    """The customer id map of the single customer view, one row per customer id: source,
    source_customer_id, customer_id (the surviving id), matched_on (email, phone, email+phone: what it
    shares with another id; empty: nothing), group_id (the group's first id), group_size, ambiguous (why).

    Two ids match when they share a normalised e-mail or phone (`email_hash` / `phone_hash`, for the
    kinds in `settings.match_on`); matches chain into groups (connected components). A group is
    ambiguous when two of its ids that match disagree on another identifier both have (one e-mail,
    two different phones), when two of its ids share nothing and are linked only through others (a
    chain a~b~c), or when it is larger than `max_group_size`. Unambiguous groups (and, with
    `ambiguous='merge'`, every group) take the id of their first source in `source_order` (the
    params order), then the smallest id; the other ids are re-keyed to it."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    settings = settings or CleaningSection.Identity()
    nodes = customers.drop_duplicates("customer_id").reset_index(drop=True)
    n = len(nodes)
    codes = {kind: _codes(nodes[f"{kind}_hash"]) if f"{kind}_hash" in nodes else np.full(n, -1)
             for kind in ("email", "phone")}
    left, right = [], []
    for kind in settings.match_on:
        code = codes[kind]
        present = np.flatnonzero(code >= 0)
        order = present[np.argsort(code[present], kind="stable")]
        same = code[order][1:] == code[order][:-1]
        left.append(order[:-1][same])
        right.append(order[1:][same])
    left_all, right_all = (np.concatenate(left), np.concatenate(right)) if left else (np.array([], int), np.array([], int))
    graph = coo_matrix((np.ones(left_all.size), (left_all, right_all)), shape=(n, n))
    _, group = connected_components(graph, directed=False) if n else (0, np.array([], int))
    size = np.bincount(group)[group] if n else np.array([], int)
    shared = {}
    for kind in ("email", "phone"):
        code = codes[kind]
        counts = pd.Series(code[code >= 0]).value_counts()
        shared[kind] = (code >= 0) & (pd.Series(code).map(counts).fillna(0).to_numpy() > 1) & (kind in settings.match_on)
    matched_on = np.select([shared["email"] & shared["phone"], shared["email"], shared["phone"]],
                           ["email+phone", "email", "phone"], "")
    rank = {str(s): i for i, s in enumerate(source_order or [])}
    source_rank = nodes["source"].astype("str").map(rank).fillna(len(rank)).to_numpy() if "source" in nodes else np.zeros(n)
    ids = nodes["customer_id"].astype("str").to_numpy()
    survivor, group_id = ids.copy(), ids.copy()
    ambiguous = np.full(n, "", dtype=object)
    for members in pd.Series(np.arange(n))[size > 1].groupby(group[size > 1]).groups.values():
        m = np.asarray(members)
        first = ids[m[np.lexsort((ids[m], source_rank[m]))[0]]]
        group_id[m] = first
        reason = _ambiguity(codes["email"][m], codes["phone"][m], settings)
        ambiguous[m] = reason
        if not (reason and settings.ambiguous == "keep_apart"):
            survivor[m] = first
    return (pd.DataFrame({"source": nodes["source"].astype("str") if "source" in nodes else "",
                          "source_customer_id": ids, "customer_id": survivor, "matched_on": matched_on,
                          "group_id": group_id, "group_size": size.astype("int64"), "ambiguous": ambiguous.astype("str")})
            .sort_values(["source", "source_customer_id"]).reset_index(drop=True))


def _ambiguity(email: np.ndarray, phone: np.ndarray, settings: CleaningSection.Identity) -> str:
    """Why a group of matched ids is ambiguous ('' when it is not)."""
    n = email.size
    if n > settings.max_group_size:
        return f"{n} ids linked: more than identity.max_group_size ({settings.max_group_size}), a shared placeholder?"
    same = {k: (c[:, None] == c[None, :]) & (c[:, None] >= 0) for k, c in (("email", email), ("phone", phone))}
    differ = {k: (c[:, None] != c[None, :]) & (c[:, None] >= 0) & (c[None, :] >= 0) for k, c in (("email", email), ("phone", phone))}
    linked = np.zeros((n, n), dtype=bool)
    for kind in settings.match_on:
        linked |= same[kind]
    reasons = []
    for kind, other in (("email", "phone"), ("phone", "email")):
        if kind in settings.match_on and (same[kind] & differ[other]).any():
            reasons.append(f"same {_label(kind)}, different {_label(other)}")
    off_diagonal = ~np.eye(n, dtype=bool)
    if (~linked & off_diagonal).any():
        reasons.append(f"chain of {n} ids (two share no identifier)")
    return "; ".join(reasons)


def _label(kind: str) -> str:
    return {"email": "e-mail", "phone": "phone"}[kind]


def merge_customers(frame: pd.DataFrame, id_map: pd.DataFrame) -> Step:
    """Customers merged into their surviving id (see `match_customers`): the other ids' rows go to
    the quarantine ('merged into customer <id> ...'); the surviving row takes any value it lacks from
    them (from the smallest id that has one), counted as changed."""
    moved = id_map[id_map["customer_id"] != id_map["source_customer_id"]]
    if moved.empty:
        return Step(frame, frame.iloc[0:0].assign(reason=""), 0)
    target = frame["customer_id"].astype("str").map(moved.set_index("source_customer_id")["customer_id"])
    how = frame["customer_id"].astype("str").map(moved.set_index("source_customer_id")["matched_on"])
    reason = "merged into customer " + target.fillna("") + " (matched on " + how.fillna("") + ")"
    step = _split(frame, target.notna(), reason)
    kept = step.kept.copy()
    groups = set(moved["customer_id"])
    is_survivor = kept["customer_id"].astype("str").isin(list(groups))
    donors = frame[target.notna()].assign(_into=target[target.notna()]).sort_values(["_into", "customer_id"])
    data_cols = [c for c in frame.columns if c not in (*schema.LINEAGE, "customer_id")]
    changed = pd.Series(False, index=kept.index)
    survivors = kept.index[is_survivor]
    for column in data_cols:
        current = kept.loc[survivors, column]
        empty = current.isna() | current.astype("str").str.strip().eq("")
        usable = donors[column].notna() & ~donors[column].astype("str").str.strip().eq("")
        first = donors.loc[usable, column].groupby(donors.loc[usable, "_into"]).first()
        fill = kept.loc[survivors, "customer_id"].astype("str").map(first)
        use = empty & fill.notna()
        if use.any():
            kept.loc[use[use].index, column] = fill[use]
            changed[use[use].index] = True
    return Step(kept, step.removed, int(changed.sum()))


def rekey_customer_id(frame: pd.DataFrame, id_map: pd.DataFrame) -> Step:
    """Rows of merged customer ids re-keyed to the surviving id (single customer view); counted."""
    moved = id_map[id_map["customer_id"] != id_map["source_customer_id"]]
    if moved.empty:
        return Step(frame, frame.iloc[0:0].assign(reason=""), 0)
    new = frame["customer_id"].astype("str").map(moved.set_index("source_customer_id")["customer_id"])
    return Step(frame.assign(customer_id=new.fillna(frame["customer_id"])), frame.iloc[0:0].assign(reason=""),
                int(new.notna().sum()))


def _reversal_kind(frame: pd.DataFrame, rules: CleaningSection) -> pd.Series:
    status = frame["status"].astype("str").str.casefold() if "status" in frame else pd.Series("", index=frame.index)
    kind = pd.Series("", index=frame.index)
    kind[frame["amount"] < 0] = "refund"
    kind[status.isin([s.casefold() for s in rules.refund_statuses])] = "refund"
    kind[status.isin([s.casefold() for s in rules.cancel_statuses])] = "cancellation"
    return kind


def net_refunds(frame: pd.DataFrame, rules: CleaningSection, unlinked: str = "quarantine") -> Step:
    """Refund and cancellation rows (negative amount, or a refund/cancel status) are netted into the
    order with the same order_id: the order's lines are scaled by net/gross, and the reversal row goes
    to the quarantine as its audit trail. A reversal with no order to net into is quarantined too, or,
    with `unlinked='keep'`, left for `match_cancellations`."""
    kind = _reversal_kind(frame, rules)
    is_reversal = kind.ne("")
    if not is_reversal.any():
        return Step(frame, frame.iloc[0:0].assign(reason=""), 0)
    is_sale = ~is_reversal
    # Index lookups, not Series.isin: pandas' Arrow-string isin builds a scalar per looked-up value.
    sale_orders = pd.Index(frame.loc[is_sale, "order_id"].unique())
    linked = pd.Series(False, index=frame.index)
    linked[is_reversal] = sale_orders.get_indexer(frame.loc[is_reversal, "order_id"]) >= 0
    reason = pd.Series("", index=frame.index)
    reason[linked] = kind[linked] + " netted into its order"
    reason[is_reversal & ~linked] = "refund with no order to net into (" + kind[is_reversal & ~linked] + ")"
    remove = is_reversal if unlinked == "quarantine" else linked
    kept = frame[~remove]
    changed = 0
    if linked.any():
        netted = frame[linked]
        orders = pd.Index(netted["order_id"].unique())
        touched = frame.index[is_sale & (orders.get_indexer(frame["order_id"]) >= 0)]
        gross = frame.loc[touched].groupby("order_id")["amount"].sum()
        reversal_total = -netted["amount"].abs().groupby(netted["order_id"]).sum()
        factor = ((gross.loc[reversal_total.index] + reversal_total) / gross.loc[reversal_total.index]).clip(lower=0)
        scale = frame.loc[touched, "order_id"].map(factor).astype("float64").fillna(1.0)
        kept = kept.copy()
        kept.loc[touched, "amount"] = frame.loc[touched, "amount"] * scale
        changed = int((scale != 1.0).sum())
    step = _split(frame, remove, reason)
    return Step(kept, step.removed, changed)


def match_cancellations(frame: pd.DataFrame, rules: CleaningSection) -> Step:
    """Refunds and cancellations with no sale in their own order (UCI Online Retail's "C" invoices)
    matched to the same customer's earlier sales of the same product_id.

    Rule: reversals are taken oldest first; each nets its amount (absolute value) out of the
    customer's sale lines of that product dated at or before it, latest first, until the amount is
    used up (a sale line's amount never goes below zero; its quantity loses the reversal's units,
    shared out by amount, as UCI cancels units at the price of the day). The
    reversal row goes to the quarantine as matched, partly matched (some of its amount found no sale)
    or unmatched; sale lines netted to zero go to the quarantine as fully cancelled; lines netted in
    part are kept and counted as changed. With cleaning.cancellation_matching 'off' or no product_id,
    every such reversal is quarantined unmatched."""
    kind = _reversal_kind(frame, rules)
    is_reversal = kind.ne("")
    if not is_reversal.any():
        return Step(frame, frame.iloc[0:0].assign(reason=""), 0)
    reason = pd.Series("", index=frame.index)
    if rules.cancellation_matching == "off" or "product_id" not in frame:
        reason[is_reversal] = "refund with no order to net into (" + kind[is_reversal] + ")"
        return _split(frame, is_reversal, reason)
    product = frame["product_id"].astype("string").str.strip().fillna("")
    customer_code = pd.factorize(frame["customer_id"].astype("str"))[0].astype("int64")
    product_code, products = pd.factorize(product)
    key = customer_code * (len(products) + 1) + product_code  # one integer per (customer, product)
    at = np.arange(len(frame))
    by_time = np.lexsort((frame["source_row"].to_numpy(), frame["source"].astype("str").to_numpy(),
                          frame["order_id"].astype("str").to_numpy(), frame["order_ts"].to_numpy()))
    rank = np.empty(len(frame), dtype="int64")
    rank[by_time] = at  # position of each row in time order (ties: order_id, source, source_row)
    ts = frame["order_ts"].to_numpy().astype("datetime64[us]").astype("int64")
    reversal = is_reversal.to_numpy() & product.ne("").to_numpy()
    wanted = np.isin(key, np.unique(key[reversal]))
    amount = frame["amount"].to_numpy(dtype="float64", copy=True)
    has_quantity = "quantity" in frame and pd.api.types.is_numeric_dtype(frame["quantity"])
    quantity = frame["quantity"].to_numpy(dtype="float64", copy=True) if has_quantity else np.full(len(frame), np.nan)
    units_out = np.zeros(len(frame))  # units netted out of each sale line
    sale = ~is_reversal.to_numpy() & (amount > 0) & wanted
    sale_at = at[sale][np.argsort(rank[sale], kind="stable")]
    sales_of = pd.Series(sale_at).groupby(key[sale_at], sort=False).agg(list).to_dict()
    reversals = at[reversal][np.argsort(rank[reversal], kind="stable")]
    result = np.full(len(frame), "", dtype=object)
    result[is_reversal.to_numpy()] = "unmatched"
    for rev in reversals:
        need, found = abs(amount[rev]), False
        total = need
        for i in reversed(sales_of.get(key[rev], ())):
            if ts[i] > ts[rev] or amount[i] <= 0:
                continue
            found = True
            take = min(need, amount[i])
            # units: the reversal's own quantity, shared out by amount; else in proportion to the line
            units_out[i] += (abs(quantity[rev]) * take / total if np.isfinite(quantity[rev]) and total > 0
                             else quantity[i] * take / amount[i])
            amount[i] -= take
            need -= take
            if need <= 1e-9:
                break
        result[rev] = ("partly" if need > 1e-6 else "matched") if found else "unmatched"
    outcome = pd.Series(result, index=frame.index)[is_reversal]
    new_amount = pd.Series(amount, index=frame.index)
    original = frame["amount"]
    netted = ~is_reversal & (new_amount < original - 1e-9)
    emptied = netted & (new_amount <= 1e-6 * original.abs().clip(lower=1.0))
    words = {"matched": " matched to the customer's earlier sales of the same product",
             "partly": " partly matched to the customer's earlier sales of the same product (the rest found no sale)",
             "unmatched": " with no order or earlier sale of the same product by the customer to net into"}
    reason[outcome.index] = kind[outcome.index] + outcome.map(words)
    reason[emptied] = "order line fully cancelled by a later refund or cancellation of the same product"
    adjusted = frame.assign(amount=new_amount.where(~emptied, 0.0))
    if has_quantity:
        adjusted["quantity"] = np.where(netted, np.clip(quantity - units_out, 0, None), quantity)
    step = _split(adjusted, is_reversal | emptied, reason, original=frame)
    return Step(step.kept, step.removed, int((netted & ~emptied).sum()))


def cancelled_order(frame: pd.DataFrame, keep_free: bool = False, reversed_orders: frozenset[str] = frozenset()) -> Step:
    """Lines of orders whose net amount, after refunds are netted, is zero or less: fully cancelled
    or refunded orders are not purchases. Free orders (worth zero with no refund or cancellation,
    e.g. CDNOW's promotional CDs) are removed too, unless `keep_free`; `reversed_orders` are the
    order ids net_refunds netted something into."""
    net = frame.groupby("order_id")["amount"].transform("sum")
    free = net.eq(0) & ~frame["order_id"].isin(list(reversed_orders))
    return _split(frame, (net <= 0) & ~(free & keep_free), "order nets to zero or less after refunds (cancelled)")


MAD_SCALE = 0.6745  # Iglewicz & Hoaglin (1993): modified z = 0.6745 (x - median) / MAD


def outlier_limit(amounts: pd.Series, threshold: float = 3.5) -> float | None:
    """The amount above which a line is an outlier: exp(median + threshold × MAD / 0.6745) of the log
    of the positive amounts, i.e. a modified z-score of log amount above `threshold` (Iglewicz &
    Hoaglin 1993; on the log scale because order values are skewed). None when fewer than 10 positive
    amounts or no spread (MAD = 0)."""
    logs = np.log(amounts[amounts > 0].astype("float64"))
    if len(logs) < 10:
        return None
    median = float(np.median(logs))
    mad = float(np.median(np.abs(logs - median)))
    return float(np.exp(median + threshold * mad / MAD_SCALE)) if mad > 0 else None


def flag_outliers(frame: pd.DataFrame, action: str, limit: float | None, column: str = "amount") -> Step:
    """Lines whose `column` is above `limit` (see `outlier_limit`): flagged in `<column>_outlier`
    (1/0), and with action 'cap' also lowered to the limit, or with 'quarantine' removed. Flagged
    or removed rows are counted."""
    above = frame[column] > limit if limit is not None else pd.Series(False, index=frame.index)
    flag = f"{column}_outlier"
    if action == "quarantine":
        return _split(frame, above, f"{column} above the outlier limit {limit:,.2f}" if limit is not None else "")
    out = frame.assign(**{flag: above.astype("Int64")})
    if action == "cap" and limit is not None:
        out[column] = out[column].where(~above, limit)
    return Step(out, frame.iloc[0:0].assign(reason=""), int(above.sum()))


def _zone_differs(rules: CleaningSection, target: str) -> bool:
    zones = rules.source_timezone
    return bool(zones) and ({zones} if isinstance(zones, str) else set(zones.values())) != {target}


def _converts_currency(rules: CleaningSection, target: str) -> bool:
    return rules.currency.rates is not None or (rules.currency.source or target).upper() != target.upper()


def category_columns(table: str, cfg: Config) -> list[str]:
    """The columns `normalise_categories` respells (country has its own rule unless kept as written)."""
    own_country_rule = cfg.cleaning.country_format != "keep"
    return [c.name for c in schema.columns(table) if c.kind == "category" and not (own_country_rule and c.name == "country")]


def rules_for(table: str, cfg: Config, id_map: pd.DataFrame | None = None,
              details: dict | None = None, shared: dict | None = None) -> list[tuple]:
    """The ordered rules for one table: (rule name, function of the table -> Step[, columns]). A rule
    with columns runs only when the table has at least one of them. `id_map` (from
    `match_customers`) adds the single-customer-view rules; `details` collects what the report
    shows besides counts (the outlier limit, unrecognised countries, the rate table). `shared` holds
    what the rules of a table cleaned in parts learn from the whole table (`clean_in_parts`): the
    date formats' tallies, and, when set, the category spellings and the outlier limit."""
    rules = cfg.cleaning
    details = {} if details is None else details
    shared = {} if shared is None else shared
    cutoff = rules.future_cutoff or cfg.run.analysis_date or dt.date.today()
    target_zone = cfg.run.timezone
    cols = schema.columns(table)
    names = {c.name for c in cols}
    plan: list[tuple] = []
    if rules.exact_duplicates == "quarantine":
        plan.append(("exact_duplicate", exact_duplicate))
    for col in cols:
        if col.kind == "id" and col.required:
            plan.append((f"missing_{col.name}", lambda f, c=col.name: missing_id(f, c), (col.name,)))
        if col.kind == "category" and col.required:
            plan.append((f"missing_{col.name}", lambda f, c=col.name: missing_category(f, c), (col.name,)))
    if id_map is not None and table != "customers" and "customer_id" in names:
        plan.append(("rekey_customer_id", lambda f: rekey_customer_id(f, id_map), ("customer_id",)))
    for col in cols:
        if col.kind in ("timestamp", "date", "month"):
            plan.append((f"parse_{col.name}", lambda f, c=col: parse_dates(
                f, c.name, rules.date_formats, c.required, c.kind, shared.setdefault("dates", {}).setdefault(c.name, {})),
                (col.name,)))
            if col.kind == "timestamp" and _zone_differs(rules, target_zone):
                plan.append((f"timezone_{col.name}", lambda f, c=col.name: convert_timezone(f, c, rules.source_timezone, target_zone),
                             (col.name,)))
            if col.required and col.kind == "timestamp":
                plan.append((f"future_{col.name}", lambda f, c=col.name: future_dates(f, c, cutoff), (col.name,)))
                plan.append((f"past_{col.name}", lambda f, c=col.name: past_dates(f, c, rules.past_cutoff), (col.name,)))
        if col.kind in ("number", "integer"):
            plan.append((f"parse_{col.name}", lambda f, c=col: parse_numbers(f, c.name, c.required, c.kind != "number"),
                         (col.name,)))
            if col.required and col.kind == "number":
                plan.append((f"range_{col.name}", lambda f, c=col.name: out_of_range(f, c, rules.max_abs_amount), (col.name,)))
        if col.kind == "flag":
            plan.append((f"parse_{col.name}", lambda f, c=col: parse_flags(f, c.name, c.required), (col.name,)))
    categories = category_columns(table, cfg)
    plan.append(("normalise_categories", lambda f: normalise_categories(f, [c for c in categories if c in f], rules.category_case,
                                                                        shared.get("spellings"))))
    if rules.country_format != "keep":
        def _country(frame: pd.DataFrame) -> Step:
            unknown = details.setdefault("unrecognised_countries", {}).setdefault(table, [])
            unknown[:] = sorted(set(unknown) | set(country_codes(frame["country"], rules.country_format,
                                                                 rules.country_aliases)[1]))
            return normalise_country(frame, "country", rules.country_format, rules.country_aliases)

        plan.append(("normalise_country", _country, ("country",)))
    plan.append(("normalise_contacts", contacts_counted, ("email_status", "phone_status")))
    if table in schema.KEYS and rules.key_duplicates == "quarantine":
        plan.append(("duplicate_key", lambda f: duplicate_key(f, schema.KEYS[table])))
    if table == "customers":
        source_order = [str(source.path) for source in cfg.data.sources.customers]

        def _merge(frame: pd.DataFrame) -> Step:
            details["id_map"] = matched = match_customers(frame, rules.identity, source_order)
            return merge_customers(frame, matched)

        plan.append(("merge_customers", _merge, ("customer_id",)))
    if table == "transactions":
        netted: set[str] = set()  # order ids net_refunds netted a reversal into, for cancelled_order

        def _convert(frame: pd.DataFrame) -> Step:
            path = cfg.resolve(rules.currency.rates) if rules.currency.rates is not None else None
            rates = load_rates(path) if path is not None else None
            details["rates"] = str(rules.currency.rates) if path is not None else ""
            return convert_currency(frame, rates, cfg.run.currency, rules.currency.source, rules.currency.max_rate_age_days,
                                    rules.currency.missing_rate, str(path) if path else "cleaning.currency.rates")

        def _net(frame: pd.DataFrame) -> Step:
            step = net_refunds(frame, rules, unlinked="keep")
            netted.update(step.removed["order_id"].dropna())
            return step

        def _outliers(frame: pd.DataFrame) -> Step:
            limit = shared["outlier_limit"] if "outlier_limit" in shared else outlier_limit(frame["amount"], rules.outliers.threshold)
            details["outlier_limit"] = limit
            return flag_outliers(frame, rules.outliers.action, limit)

        # with a rate table or a source currency: always; else only when rows carry a currency
        plan.append(("convert_currency", _convert) if _converts_currency(rules, cfg.run.currency)
                    else ("convert_currency", _convert, ("currency",)))
        keep_free = rules.free_orders == "keep"
        plan += [("net_refunds", _net), ("match_cancellations", lambda f: match_cancellations(f, rules)),
                 ("cancelled_order", lambda f: cancelled_order(f, keep_free, frozenset(netted)))]
        if rules.outliers.action != "off":
            plan.append(("outliers_amount", _outliers))
    return plan


def _apply(plan: list[tuple], frame: pd.DataFrame, table: str, first: int = 0) -> tuple[pd.DataFrame, list[dict], list[pd.DataFrame]]:
    """Run `plan`'s rules on `frame` in order: the rows kept, a ledger row per rule that ran, and the
    removed rows as text with their `rule` (and `_rule`, the rule's place in the table's plan,
    counted from `first`)."""
    ledger, removed = [], []
    current = frame
    for place, (rule, apply, *needs) in enumerate(plan, start=first):
        if needs and not any(c in current for c in needs[0]):
            continue  # optional column absent from this table
        step = apply(current)
        ledger.append({"stage": STAGE, "table": table, "rule": rule, "rows_in": len(current),
                       "rows_out": len(step.kept), "rows_quarantined": len(step.removed), "rows_changed": step.changed})
        if len(step.removed):
            removed.append(step.removed.astype("str").assign(rule=rule, _rule=place))
        current = step.kept
    return current, ledger, removed


def clean_table(table: str, frame: pd.DataFrame, cfg: Config, id_map: pd.DataFrame | None = None,
                details: dict | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Apply the table's rules in order. Returns (clean, quarantine, ledger rows)."""
    current, ledger, removed = _apply(rules_for(table, cfg, id_map, details), frame, table)
    quarantine = (pd.concat(removed, ignore_index=True).drop(columns="_rule") if removed
                  else pd.DataFrame(columns=["rule", "reason"]))
    clean = current.reset_index(drop=True)
    schema.clean_schema(table).validate(clean)
    return clean, quarantine, pd.DataFrame(ledger)


def clean(tables: dict[str, pd.DataFrame], cfg: Config) -> Cleaned:
    """Clean every canonical table (see `clean_table`). Customers go first: their clean rows give the
    single customer view (`match_customers`), whose merged ids the other tables are re-keyed to."""
    out = Cleaned(contacts=contact_table(tables))
    ledgers = {}
    for table in sorted(tables, key=lambda name: name != "customers"):
        out.tables[table], out.quarantine[table], ledgers[table] = clean_table(
            table, tables[table], cfg, out.details.get("id_map"), out.details)
        _log.info("cleaned %s: %s rows kept, %s quarantined", table, f"{len(out.tables[table]):,}",
                  f"{len(out.quarantine[table]):,}")
    out.id_map = out.details.pop("id_map", None)
    out.quality = pd.concat([ledgers[t] for t in tables], ignore_index=True) if tables else pd.DataFrame()
    if "transactions" in out.tables:
        out.orders = order_facts(out.tables["transactions"])
    return out


# --- Large tables: cleaned in parts, on disk ---------------------------------------------------------

#: Tables that may be cleaned in parts: every rule that compares rows of these tables compares rows
#: of one customer (duplicates, a member's key) or of one order (refunds netted, cancelled orders).
IN_PARTS = ("transactions", "touchpoints", "campaign_members")

#: Rules that need the whole table: before each, the parts so far are read once to learn it.
WHOLE_TABLE_RULES = ("normalise_categories", "outliers_amount")


def _learn(rule: str, frames, table: str, cfg: Config, shared: dict) -> None:
    """What `rule` needs from the whole table, learnt from its parts (`frames`, an iterable): the
    category spellings from every part's value counts, or the outlier limit from every positive
    amount. Both give what `rules_for` would compute on the table in one piece."""
    if rule == "normalise_categories":
        counts: dict[str, list[pd.Series]] = {}
        for frame in frames:
            for column in (c for c in category_columns(table, cfg) if c in frame):
                counts.setdefault(column, []).append(category_text(frame, column).value_counts(dropna=True))
        totals = {column: pd.concat(parts).groupby(level=0, sort=False).sum() for column, parts in counts.items()}
        shared["spellings"] = {column: spelling_map(n, cfg.cleaning.category_case) if len(n) else None
                               for column, n in totals.items()}
    elif rule == "outliers_amount":
        amounts = pd.concat([frame["amount"][frame["amount"] > 0] for frame in frames] or [pd.Series([], dtype="float64")])
        shared["outlier_limit"] = outlier_limit(amounts, cfg.cleaning.outliers.threshold)


def _partition(con, table: str, path: Path, id_map: pd.DataFrame | None, parts: int, out: Path) -> None:
    """Write `path` (a canonical table) as `parts` Parquet folders `out/_part=<n>`, every row with
    `_pos`, its place in the table. Rows of one customer (after the single customer view's re-keying
    and trimming, as the rules see it) share a part; the lines of an order naming two customers go
    with the least of its customer ids, so an order's lines stay together too."""
    ids = id_map[["source_customer_id", "customer_id"]] if id_map is not None else pd.DataFrame(
        {"source_customer_id": pd.Series([], dtype="str"), "customer_id": pd.Series([], dtype="str")})
    con.register("id_map", ids)
    trim = "nullif(trim(CAST({} AS VARCHAR), ' ' || chr(9) || chr(10) || chr(11) || chr(12) || chr(13)), '')"
    order = trim.format("t.order_id") if table == "transactions" else "NULL"
    con.execute(f"""
        COPY (
          WITH rows AS NOT MATERIALIZED (
            SELECT t.*, coalesce(m.customer_id, {trim.format('t.customer_id')}) AS _key, {order} AS _order
            FROM read_parquet('{_sql_path(path)}', file_row_number = true) t
            LEFT JOIN (SELECT source_customer_id, min(customer_id) AS customer_id FROM id_map GROUP BY 1) m
              ON m.source_customer_id = {trim.format('t.customer_id')}),
          owners AS (SELECT _order, min(_key) AS _owner FROM rows WHERE _order IS NOT NULL GROUP BY _order
                     HAVING min(_key) <> max(_key))  -- orders naming two customers: few, so the join is cheap
          SELECT rows.* EXCLUDE (_key, _order, file_row_number), rows.file_row_number AS _pos,
                 hash(coalesce(owners._owner, rows._key, '')) % {parts} AS _part
          FROM rows LEFT JOIN owners ON owners._order = rows._order)
        TO '{_sql_path(out)}' (FORMAT parquet, PARTITION_BY (_part))""")
    con.unregister("id_map")


def _sql_path(path: Path) -> str:
    return Path(path).as_posix().replace("'", "''")


def _read_part(files: list[Path]) -> pd.DataFrame:
    """One part as the rules see it: its rows in table order, indexed by their place in the table."""
    frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if len(files) != 1 else pd.read_parquet(files[0])
    if "_pos" in frame:
        frame = frame.sort_values("_pos", kind="stable").set_index("_pos")
    return frame


def _write_part(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.rename_axis("_pos").to_parquet(path, index=True, compression="lz4")


def clean_in_parts(table: str, path: Path, cfg: Config, run_dir: str | Path, id_map: pd.DataFrame | None = None,
                   details: dict | None = None) -> tuple[pd.DataFrame, OnDisk]:
    """Clean a canonical table too large for memory in parts of about `cleaning.part_rows` rows,
    writing `tables/clean_<table>.parquet` and `tables/quarantine/<table>.parquet` directly.

    The rules and the results are those of `clean_table` on the whole table: `_partition` keeps the
    rows each rule compares in one part; the two rules that need the whole table (category spellings,
    the outlier limit) learn it from every part first (`_learn`); the date rules count rewritten
    rows against the whole table's format (`changed_in_parts`); the outputs are in table order. The
    one difference: an order whose lines name two customers is kept in its first customer's part,
    so the other customer's cancellations are not matched to that order's lines (that customer's
    cancellations go to the quarantine as unmatched instead). Written by hand: DuckDB runs the
    partitioning and the final sort out of core, pandas the rules, one part at a time.
    Returns the table's ledger and what the report needs from its quarantine."""
    import pyarrow.parquet as pq

    from crmbook import engine, store

    shared: dict = {}
    plan = rules_for(table, cfg, id_map, details, shared)
    n_rows = pq.ParquetFile(path).metadata.num_rows
    parts = max(1, -(-n_rows // cfg.cleaning.part_rows))
    tables = store.tables_dir(run_dir)
    with tempfile.TemporaryDirectory(prefix=f".{table}-parts-", dir=tables) as tmp:
        work = Path(tmp)
        con = engine.from_params(cfg, spill=work / "spill")
        _log.info("cleaning %s in %d parts of about %s rows (%s rows)", table, parts, f"{cfg.cleaning.part_rows:,}", f"{n_rows:,}")
        _partition(con, table, path, id_map, parts, work / "in")
        inputs = {n: sorted((work / "in" / f"_part={n}").glob("*.parquet")) for n in range(parts)}
        inputs = {n: files for n, files in inputs.items() if files}
        # phases: runs of rules that start at a rule needing the whole table
        cuts = sorted({0, len(plan)} | {i for i, entry in enumerate(plan) if entry[0] in WHOLE_TABLE_RULES})
        ledger: dict[str, dict] = {}
        columns: dict[int, list[str]] = {}  # quarantine columns of each rule, as it removed them
        for phase, (start, cut) in enumerate(zip(cuts, cuts[1:])):
            if plan[start][0] in WHOLE_TABLE_RULES:
                _learn(plan[start][0], (_read_part(files) for files in inputs.values()), table, cfg, shared)
            outputs = {}
            for done, (n, files) in enumerate(inputs.items(), start=1):
                kept, rows, removed = _apply(plan[start:cut], _read_part(files), table, first=start)
                for row in rows:
                    entry = ledger.setdefault(row["rule"], dict(row, rows_in=0, rows_out=0, rows_quarantined=0, rows_changed=0))
                    for key in ("rows_in", "rows_out", "rows_quarantined", "rows_changed"):
                        entry[key] += row[key]
                for frame in removed:
                    columns.setdefault(int(frame["_rule"].iloc[0]), [c for c in frame.columns if c != "_rule"])
                    _write_part(frame, work / "quarantine" / f"{phase}-{n}-{frame['_rule'].iloc[0]}.parquet")
                outputs[n] = [work / f"phase{phase}" / f"{n}.parquet"]
                if cut == len(plan):
                    schema.clean_schema(table).validate(kept.reset_index(drop=True))
                _write_part(kept, outputs[n][0])
                for f in files:
                    f.unlink()
                _log.info("cleaning %s: rules %d-%d of %d, part %d of %d", table, start + 1, cut, len(plan), done, len(inputs))
            inputs = outputs
        for rule, tally in shared.get("dates", {}).items():
            if f"parse_{rule}" in ledger:
                ledger[f"parse_{rule}"]["rows_changed"] = changed_in_parts(tally)
        # ORDER BY holds in what DuckDB 2.0 streams out only with insertion order preserved (else: sorted runs)
        con.execute("SET preserve_insertion_order = true")
        _write_in_order(con, [f for files in inputs.values() for f in files], tables / f"clean_{table}.parquet")
        on_disk = _save_quarantine(con, table, work / "quarantine", columns, run_dir)
        con.close()
    return pd.DataFrame(list(ledger.values())), on_disk


def _write_in_order(con, files: list[Path], out: Path) -> None:
    """The parts' rows in table order (DuckDB sorts out of core) as one Parquet file with the pandas
    types of the parts (`store.write_table` gives the same types to a table cleaned in one piece)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    first = pq.read_schema(files[0])
    empty = pd.read_parquet(files[0]).iloc[0:0].reset_index(drop=True)
    schema = first.remove(first.get_field_index("_pos")).with_metadata(
        pa.Schema.from_pandas(empty, preserve_index=False).metadata)
    names = ", ".join('"' + c.replace('"', '""') + '"' for c in schema.names)
    reader = con.sql(f"SELECT {names} FROM read_parquet({[f.as_posix() for f in files]!r}) ORDER BY _pos").to_arrow_reader(500_000)
    with pq.ParquetWriter(out, schema, compression="zstd") as writer:
        for batch in reader:
            writer.write_table(pa.Table.from_batches([batch]).cast(schema))


def _save_quarantine(con, table: str, folder: Path, columns: dict[int, list[str]], run_dir: str | Path) -> OnDisk:
    """Write the parts' quarantined rows as `tables/quarantine/<table>.parquet`, in the order and
    with the columns `clean_table` gives (by rule, then table order); return its reason counts and
    sample for the report."""
    from crmbook import store

    if not columns:
        empty = pd.DataFrame(columns=["rule", "reason"])
        store.write_table(run_dir, f"quarantine/{table}", empty)
        return OnDisk(reasons=pd.DataFrame(columns=["rule", "reason", "rows"]), sample=empty)
    ordered = list(dict.fromkeys(c for rule in sorted(columns) for c in columns[rule]))
    cols = ", ".join('"' + c.replace('"', '""') + '"' for c in ordered)
    source = f"read_parquet('{_sql_path(folder)}/*.parquet', union_by_name = true)"
    out = store.tables_dir(run_dir) / "quarantine" / f"{table}.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    con.execute(f"COPY (SELECT {cols} FROM {source} ORDER BY _rule, _pos) TO '{_sql_path(out)}' (FORMAT parquet, COMPRESSION zstd)")
    reasons = con.execute(f"SELECT rule, reason, count(*) AS rows FROM {source} GROUP BY rule, reason "
                          "ORDER BY min(_rule), min(_pos)").df()
    sample = con.execute(f"SELECT {cols} FROM {source} QUALIFY row_number() OVER (PARTITION BY rule, reason "
                         f"ORDER BY _rule, _pos) <= {SAMPLE_ROWS} ORDER BY _rule, _pos").df()
    return OnDisk(reasons=reasons, sample=sample)


def clean_run(cfg: Config, run_dir: str | Path) -> Cleaned:
    """02 on a run folder: every canonical table of the params cleaned (`clean`); transactions,
    touchpoints and campaign members with more than `cleaning.part_rows` rows are cleaned in parts
    on disk (`clean_in_parts`) and written as they are. With such a table, the other clean tables are
    written first and not kept (`tables` is then empty: nothing large stays in memory); else `save`
    writes them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from crmbook import engine, ingestion, store

    names = [table for table, _ in cfg.data.sources.items()]
    paths = ingestion.canonical_paths(cfg, run_dir)
    large = [n for n in names if n in IN_PARTS and pq.ParquetFile(paths[n]).metadata.num_rows > cfg.cleaning.part_rows]
    out = clean({n: store.read_table(run_dir, f"canonical_{n}") for n in names if n not in large}, cfg)
    ledgers = {t: part for t, part in out.quality.groupby("table", sort=False)} if len(out.quality) else {}
    if large:
        save(run_dir, out)
        out.tables = {}
        pa.default_memory_pool().release_unused()
    for table in large:
        ledgers[table], out.on_disk[table] = clean_in_parts(table, paths[table], cfg, run_dir, out.id_map, out.details)
        kept = int(ledgers[table]["rows_out"].iloc[-1])
        _log.info("cleaned %s: %s rows kept, %s quarantined", table, f"{kept:,}",
                  f"{int(ledgers[table]['rows_quarantined'].sum()):,}")
        if table == "transactions":  # counted on DuckDB within the params' memory limit
            with contextlib.closing(engine.from_params(cfg)) as con:
                out.orders = order_facts(store.tables_dir(run_dir) / "clean_transactions.parquet", con)
    out.quality = pd.concat([ledgers[t] for t in names if t in ledgers], ignore_index=True)
    return out


def save(run_dir, cleaned: Cleaned) -> None:
    """Write tables/clean_<table>.parquet, tables/quarantine/<table>.parquet, tables/data_quality.csv,
    and with customers, tables/customer_id_map.csv (the single customer view). Tables cleaned in
    parts (`clean_in_parts`) are written already."""
    from crmbook import store

    for name, frame in cleaned.tables.items():
        store.write_table(run_dir, f"clean_{name}", frame)
        store.write_table(run_dir, f"quarantine/{name}", cleaned.quarantine[name])
    store.write_table(run_dir, "data_quality", cleaned.quality, fmt="csv")
    if cleaned.id_map is not None:
        store.write_table(run_dir, "customer_id_map", cleaned.id_map, fmt="csv")


def load_clean(cfg: Config, run_dir, only: tuple[str, ...] | None = None) -> dict[str, pd.DataFrame]:
    """The clean tables of this run (02's outputs), or `only` those of them the params have (a
    stage that reads the transactions on DuckDB leaves them out, so they are never all in
    memory); built afresh (01 and 02) when 02 has not run in `run_dir`, so a later stage's
    notebook can be opened and run on its own."""
    from crmbook import store

    names = [table for table, _ in cfg.data.sources.items()]
    if not all(store.has_table(run_dir, f"clean_{n}") for n in names):
        save(run_dir, clean_run(cfg, run_dir))
    return {n: store.read_table(run_dir, f"clean_{n}") for n in names if only is None or n in only}


def order_facts(transactions: pd.DataFrame | str | Path, con=None) -> dict:
    """Rows, customers, orders, revenue, first and last order time, and revenue and orders per
    calendar month of the clean transactions (a frame, or a Parquet file read out of core), on the
    DuckDB connection `con` (its own when not given, closed after)."""
    import duckdb

    own = con is None
    con = duckdb.connect() if own else con
    if isinstance(transactions, pd.DataFrame):
        con.register("t", transactions)
    else:
        con.execute(f"CREATE OR REPLACE TEMP VIEW t AS SELECT * FROM read_parquet('{_sql_path(Path(transactions))}')")
    rows, customers, orders, revenue, first, last = con.execute(
        "SELECT count(*), count(DISTINCT customer_id), count(DISTINCT order_id), coalesce(sum(amount), 0), "
        "min(order_ts), max(order_ts) FROM t").fetchone()
    monthly = con.execute("SELECT date_trunc('month', order_ts) AS month, sum(amount) AS revenue, "
                          "count(DISTINCT order_id) AS orders FROM t WHERE order_ts IS NOT NULL GROUP BY 1 ORDER BY 1").df()
    if own:
        con.close()
    return {"rows": int(rows), "customers": int(customers), "orders": int(orders), "revenue": float(revenue),
            "first": first, "last": last, "monthly": monthly.astype({"month": "datetime64[us]"})}


def removed_by_reason(cleaned: Cleaned) -> pd.Series:
    """Rows quarantined per table and rule, largest first (label 'table: rule')."""
    q = cleaned.quality[cleaned.quality["rows_quarantined"] > 0]
    return q.set_index(q["table"] + ": " + q["rule"])["rows_quarantined"].sort_values(ascending=False)


#: Rules whose removals, and whose rewrites, are defects of the data: they lower the quality score.
#: The others record business events or conversions (refunds and cancellations netted, customers
#: merged, time zones and currencies converted, outliers flagged) and do not.
DEFECT_REMOVALS = ("exact_duplicate", "missing_", "parse_", "future_", "past_", "range_", "duplicate_key", "convert_currency")
DEFECT_REWRITES = ("missing_", "parse_", "normalise_")


def quality_scores(quality: pd.DataFrame) -> pd.DataFrame:
    """Data-quality score per table = 1 − (rows removed for a defect + rows a rule had to rewrite)
    / rows read, at least 0. Defects: exact and key duplicates, missing or invalid required fields,
    future dates and rows with no exchange rate (removed); dates in another format, unparseable
    optional values, untrimmed ids and categories, e-mails, phones and countries not in their normal
    form (rewritten; a row rewritten by two rules counts twice). Refunds, cancellations, merged
    customers and outlier flags are not defects. One row per table, in ledger order."""
    rows = []
    for table, ledger in quality.groupby("table", sort=False):
        read = int(ledger["rows_in"].iloc[0])
        removed = int(ledger.loc[ledger["rule"].str.startswith(DEFECT_REMOVALS), "rows_quarantined"].sum())
        rewritten = int(ledger.loc[ledger["rule"].str.startswith(DEFECT_REWRITES), "rows_changed"].sum())
        rows.append({"table": table, "rows_read": read, "defect_rows_removed": removed, "rows_rewritten": rewritten,
                     "other_rows_removed": int(ledger["rows_quarantined"].sum()) - removed,
                     "rows_kept": int(ledger["rows_out"].iloc[-1]),
                     "score": max(0.0, 1 - (removed + rewritten) / read) if read else float("nan")})
    return pd.DataFrame(rows, columns=["table", "rows_read", "defect_rows_removed", "rows_rewritten",
                                       "other_rows_removed", "rows_kept", "score"])


def overall_score(scores: pd.DataFrame) -> float:
    """The tables' scores weighted by rows read."""
    read = scores["rows_read"].sum()
    return float((scores["score"] * scores["rows_read"]).sum() / read) if read else float("nan")


def score_table(cleaned: Cleaned) -> pd.DataFrame:
    """`quality_scores` with the score as a percentage (for the report)."""
    scores = quality_scores(cleaned.quality)
    return scores.assign(score=scores["score"].map(lambda s: f"{s:.1%}"))


def reason_counts(cleaned: Cleaned) -> pd.DataFrame:
    """Quarantined rows per table, rule and reason, in ledger order (matched and unmatched
    cancellations, merged customers ... each on its own line)."""
    counts = {table: q.groupby(["rule", "reason"], sort=False).size().rename("rows").reset_index()
              for table, q in cleaned.quarantine.items() if len(q)}
    counts |= {table: part.reasons for table, part in cleaned.on_disk.items() if len(part.reasons)}
    parts = [counts[table].assign(table=table) for table in _cleaning_order(cleaned) if table in counts]
    if not parts:
        return pd.DataFrame(columns=["table", "rule", "reason", "rows"])
    return pd.concat(parts, ignore_index=True)[["table", "rule", "reason", "rows"]]


def identity_counts(id_map: pd.DataFrame | None) -> dict[str, int]:
    """The single customer view in numbers: customer ids, ids matched to another, groups, ids re-keyed
    to a surviving id, ambiguous groups and their ids (kept apart unless identity.ambiguous is merge)."""
    if id_map is None or id_map.empty:
        return {"ids": 0, "matched_ids": 0, "groups": 0, "rekeyed_ids": 0, "ambiguous_groups": 0, "ambiguous_ids": 0}
    grouped = id_map[id_map["group_size"] > 1]
    ambiguous = grouped[grouped["ambiguous"].ne("")]
    return {"ids": len(id_map), "matched_ids": len(grouped), "groups": int(grouped["group_id"].nunique()),
            "rekeyed_ids": int((id_map["customer_id"] != id_map["source_customer_id"]).sum()),
            "ambiguous_groups": int(ambiguous["group_id"].nunique()), "ambiguous_ids": len(ambiguous)}


def identity_table(id_map: pd.DataFrame | None, ambiguous_only: bool = False) -> pd.DataFrame:
    """The matched ids of the single customer view (ids only, no e-mails or phones), by group."""
    if id_map is None:
        return pd.DataFrame(columns=["group_id", "source", "source_customer_id", "customer_id", "matched_on", "ambiguous"])
    rows = id_map[(id_map["group_size"] > 1) & (id_map["ambiguous"].ne("") if ambiguous_only else True)]
    return rows.sort_values(["group_id", "source", "source_customer_id"])[
        ["group_id", "source", "source_customer_id", "customer_id", "matched_on", "ambiguous"]]


MASK = "•••"


def mask_pii(frame: pd.DataFrame) -> pd.DataFrame:
    """Names, e-mails and phones, and their hashes, replaced by a mask where not empty (for reports)."""
    columns = [c for c in frame.columns if c in schema.PII_COLUMNS or str(c).endswith("_hash")]
    out = frame.copy()
    for column in columns:
        text = out[column].astype("string").fillna("")
        out[column] = text.where(text.isin(["", "nan", "None", "<NA>"]), MASK)
    return out


def summarise(cleaned: Cleaned, cfg: Config):
    """KPI cards and findings for the 02 report."""
    from crmbook import report

    lang, q = cfg.report.language, cleaned.quality
    scores = quality_scores(q)
    cards = [report.Card(report.t("rows_read", lang), report.number(q.groupby("table")["rows_in"].first().sum())),
             report.Card(report.t("rows_kept", lang), report.number(q.groupby("table")["rows_out"].last().sum())),
             report.Card(report.t("rows_quarantined", lang), report.number(q["rows_quarantined"].sum())),
             report.Card(report.t("cl_quality_score", lang), f"{overall_score(scores):.1%}", report.t("cl_quality_score_note", lang))]
    findings: list[str] = []
    orders = cleaned.orders
    if orders is not None:
        tq = q[q["table"] == "transactions"]
        rows_in, kept = int(tq["rows_in"].iloc[0]), orders["rows"]
        findings.append(report.say("f_kept", lang, kept=report.number(kept), rows=report.number(rows_in),
                                   share=f"{kept / max(rows_in, 1):.1%}", removed=report.number(rows_in - kept)))
        if kept:
            revenue = report.money(orders["revenue"], cfg.run.currency)
            first, last = f"{orders['first']:%Y-%m-%d}", f"{orders['last']:%Y-%m-%d}"
            cards += [report.Card(report.t("customers", lang), report.number(orders["customers"])),
                      report.Card(report.t("orders", lang), report.number(orders["orders"])),
                      report.Card(report.t("revenue", lang), revenue),
                      report.Card(report.t("date_range", lang), f"{first} – {last}")]
            findings.append(report.say("f_clean_span", lang, customers=report.number(orders["customers"]),
                                       orders=report.number(orders["orders"]), revenue=revenue, first=first, last=last))
        netted = tq.loc[tq["rule"] == "net_refunds", "rows_quarantined"].sum()
        cancelled = tq.loc[tq["rule"] == "cancelled_order", "rows_quarantined"].sum()
        if netted:
            findings.append(report.say("f_refunds", lang, n=report.number(netted), cancelled=report.number(cancelled)))
        matched = cancellation_counts(cleaned)
        if sum(matched.values()):
            findings.append(report.say("cl_f_cancel_match", lang, **{k: report.number(v) for k, v in matched.items()}))
    ids = identity_counts(cleaned.id_map)
    if ids["matched_ids"]:
        findings.append(report.say("cl_f_identity", lang, **{k: report.number(v) for k, v in ids.items()}))
    top = removed_by_reason(cleaned)
    if len(top):
        findings.append(report.say("f_top_rule", lang, rule=top.index[0], n=report.number(top.iloc[0])))
    rewritten = q.loc[q["rule"].str.startswith(("parse_", "normalise_")), "rows_changed"].sum()
    if rewritten:
        findings.append(report.say("f_rewritten", lang, n=report.number(rewritten)))
    findings.append(report.say("cl_f_quality", lang, score=f"{overall_score(scores):.1%}",
                               tables=", ".join(f"{r.table} {r.score:.1%}" for r in scores.itertuples())))
    return report.StageSummary(cards, findings[:5])


def cancellation_counts(cleaned: Cleaned) -> dict[str, int]:
    """Refunds and cancellations with no sale in their own order: matched to the customer's earlier
    sales of the product, partly matched, unmatched; and the sale lines they fully cancelled."""
    counts = reason_counts(cleaned)
    counts = counts[(counts["table"] == "transactions") & (counts["rule"] == "match_cancellations")]
    reason, rows = counts["reason"].astype("str"), counts["rows"].astype("int64")
    partly = int(rows[reason.str.contains("partly matched")].sum())
    return {"matched": int(rows[reason.str.contains(" matched to the customer")].sum()) - partly,
            "partly": partly,
            "unmatched": int(rows[reason.str.contains(" with no order")].sum() + rows[reason.str.startswith("refund with no order")].sum()),
            "lines": int(rows[reason.str.startswith("order line fully cancelled")].sum())}


def outlier_note(cleaned: Cleaned, cfg: Config) -> str:
    """One sentence on the outlier rule: limit, lines flagged and what was done (for the report);
    empty without transactions."""
    from crmbook import report

    lang, ledger = cfg.report.language, cleaned.quality
    if cleaned.orders is None:
        return ""
    rows = ledger[(ledger["table"] == "transactions") & (ledger["rule"] == "outliers_amount")]
    limit = cleaned.details.get("outlier_limit")
    if rows.empty:
        return report.t("cl_outliers_off", lang)
    if limit is None:
        return report.t("cl_outliers_none", lang)
    n = int(rows["rows_quarantined"].iloc[0] + rows["rows_changed"].iloc[0])
    return report.say(f"cl_outliers_{cfg.cleaning.outliers.action}", lang, n=report.number(n),
                      limit=report.money(limit, cfg.run.currency), z=cfg.cleaning.outliers.threshold)


def identity_note(cleaned: Cleaned, cfg: Config) -> str:
    """The single-customer-view rule and its counts in one paragraph (for the report)."""
    from crmbook import report

    lang = cfg.report.language
    if cleaned.id_map is None:
        return report.t("cl_identity_none", lang)
    on = " / ".join(report.t(f"cl_id_{kind}", lang) for kind in cfg.cleaning.identity.match_on) or "-"
    counts = {k: report.number(v) for k, v in identity_counts(cleaned.id_map).items()}
    return report.say(f"cl_identity_rule_{cfg.cleaning.identity.ambiguous}", lang, on=on,
                      max=cfg.cleaning.identity.max_group_size, **counts)


def quarantine_sample(quarantine: pd.DataFrame, per_rule: int = SAMPLE_ROWS) -> pd.DataFrame:
    """A few quarantined rows per rule and reason, reason and lineage first, personal data masked
    (`mask_pii`), for the report."""
    first = ["rule", "reason", "source", "source_row"]
    sample = mask_pii(quarantine.groupby(["rule", "reason"], sort=False).head(per_rule))
    return sample[first + [c for c in sample.columns if c not in first]]


def quarantine_samples(cleaned: Cleaned) -> dict[str, pd.DataFrame]:
    """`quarantine_sample` of every table with quarantined rows, in ledger order (for the report)."""
    frames = cleaned.quarantine | {table: part.sample for table, part in cleaned.on_disk.items()}
    return {table: quarantine_sample(frames[table]) for table in _cleaning_order(cleaned)
            if table in frames and len(frames[table])}


def _cleaning_order(cleaned: Cleaned) -> list[str]:
    """The tables in the order `clean` takes them: customers first, then as in the params."""
    return sorted(dict.fromkeys(cleaned.quality.get("table", [])), key=lambda name: name != "customers")


def rules_that_acted(quality: pd.DataFrame) -> pd.DataFrame:
    """The ledger rows of rules that removed or rewrote something (for the report)."""
    acted = (quality["rows_quarantined"] > 0) | (quality["rows_changed"] > 0)
    return quality[acted].drop(columns=["stage"])


def country_note(cleaned: Cleaned, cfg: Config) -> str | None:
    """The country spellings no rule recognised, per table (for the report); None when all were."""
    from crmbook import report

    unknown = {t: v for t, v in cleaned.details.get("unrecognised_countries", {}).items() if v}
    if not unknown:
        return None
    values = "; ".join(f"{table}: {', '.join(names[:20])}" for table, names in unknown.items())
    return report.say("cl_cap_countries", cfg.report.language, values=values)


def contact_table(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """E-mails and phones per normalisation status, from the canonical tables (for the report)."""
    parts = [contact_counts(frame).assign(table=name) for name, frame in tables.items()
             if {"email_status", "phone_status"} & set(frame.columns)]
    if not parts:
        return pd.DataFrame(columns=["table", "field", "status", "rows"])
    return pd.concat(parts, ignore_index=True)[["table", "field", "status", "rows"]]


def heading(key: str, language: str):
    """A section heading in the report language."""
    from IPython.display import Markdown

    from crmbook import report

    return Markdown(f"## {report.t(key, language)}")


def note(text: str):
    """A paragraph of generated text."""
    import html

    from IPython.display import HTML

    return HTML(f"<p>{html.escape(text)}</p>")
