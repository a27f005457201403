"""Seeded, deterministic synthetic CRM data with a recorded ground truth (`truth.json`).

`generate(out_dir, customers, seed, messy)` writes six CSV files and `truth.json`. The same
arguments give byte-identical files: every random draw comes from `numpy.random.default_rng(seed)`
(split into independent child streams with `Generator.spawn`, so switching `messy` on or off
leaves the genuine rows unchanged), money is kept in integer cents and written with two
decimals, rows are in a fixed order, and nothing depends on the clock. Everything is vectorised
(loops run over purchase rounds, channels or output chunks, never over customers).

Model (time unit: days; the window is [start 00:00, end + 1 day 00:00)):

* Customers belong to three latent segments (`loyal`, `regular`, `occasional`). Each has
  BG/NBD purchase parameters (r, alpha, a, b), Gamma-Gamma spend parameters (p, q, gamma) and
  a sign-up-time distribution: sign-up = first purchase, at W * Beta(signup_a, signup_b) days
  with W = 70% of the window. Early cohorts are mostly loyal and late ones mostly occasional;
  without this cohort effect tenure carries no segment information and the standardised
  [frequency, monetary, recency, tenure] features cannot separate the segments (see
  tests/unit/test_synth.py for the clustering check).
* Purchases follow BG/NBD (Fader, Hardie & Lee 2005, "Counting your customers the easy way:
  an alternative to the Pareto/NBD model", Marketing Science 24(2)): lambda ~ Gamma(r, scale
  1/alpha) purchases per day, p ~ Beta(a, b); repeat purchases form a Poisson process with rate
  lambda; after each *repeat* purchase the customer drops out for good with probability p;
  nothing is observed after `end`.
* Order values follow the Gamma-Gamma model (Fader, Hardie & Lee 2005, "RFM and CLV: using
  iso-value curves for customer base analysis", JMR 42(4)): nu ~ Gamma(q, scale 1/gamma) per
  customer and each order z ~ Gamma(p, scale 1/nu), so E[z] = p * gamma / (q - 1).
* Touchpoints come from journeys. A journey's channel set S holds each channel c independently
  with probability pi_c (empty sets are redrawn) and converts with the noisy-OR probability
  P(conv | S) = 1 - (1 - b0) * prod_{c in S} (1 - e_c). Every genuine order is a converting
  journey whose set is drawn exactly from P(S | conv) (enumerating the 63 non-empty sets);
  round(n_orders * (1 - P_bar) / P_bar) non-converting journeys, with sets from P(S | no conv),
  are added at random times after the customer's sign-up. Touches fall uniformly in the 14 days
  before the journey's end (clipped to the window). The causal channel shares are mean Shapley
  values of v(T) = P(conv|T) - P(conv|{}) over converting journeys (`shapley_noisy_or`).
* Two e-mail experiments: C01 (control/treatment, true lift +1.5 points) and C02 (three subject
  lines, assignment .38/.33/.29 instead of equal: an injected sample-ratio mismatch).
* `messy=True` adds counted defects to orders.csv and touchpoints.csv and writes customers.csv
  in GBK. Every removable defect is an extra row and no row carries two defects, so cleaning can
  recover the genuine rows exactly. The counts are in truth.json under `defects`.
* `touchpoints=False` leaves out touchpoints.csv and the attribution truth (`channel_true_share`);
  the journeys are still drawn and counted, so every other file is byte for byte the same.

Size: about 6.6 order lines and 56 touchpoints per customer. The CSV text is assembled by a small
numpy writer (`_render`) rather than pandas, so 1,000,000 customers (6.6M order lines, 56M
touchpoints, 3.6 GB) take about half a minute of CPU and 2.4 GB of memory. Without touchpoints,
memory is about 0.5 KB per customer (columns are kept in narrow integer types and large draws
are made in chunks): 7.6M customers give 50M order lines (4.0 GB) in about 3.8 GB and two
minutes of CPU.
"""
from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["generate", "SEGMENTS", "CHANNELS", "Segment", "shapley_noisy_or", "journey_model"]

Touches = tuple[np.ndarray, np.ndarray, np.ndarray]  # (customer, channel, days since start)

SECONDS_PER_DAY = 86_400
SIGNUP_FRACTION = 0.70  # sign-ups fall in the first 70% of the window
JOURNEY_WINDOW_DAYS = 14.0  # touches fall in the 14 days before a journey's end
PRE_PERIOD_DAYS = 90  # PrePeriodValue window before a campaign's start
CHUNK_ROWS = 1 << 20  # rows rendered per CSV write
JOURNEY_CHUNK = 1 << 20  # journeys expanded at a time


@dataclass(frozen=True)
class Segment:
    """A latent segment: BG/NBD (lambda per day), Gamma-Gamma and sign-up Beta parameters."""

    name: str
    share: float
    r: float
    alpha: float
    a: float
    b: float
    p: float
    q: float
    gamma: float
    signup_a: float
    signup_b: float

    @property
    def mean_spend(self) -> float:
        """E[order value] = p * gamma / (q - 1), currency units."""
        return self.p * self.gamma / (self.q - 1.0)


# Tight spend (p = 40, q = 120: about 19% variation per order) and tight purchase rates (large
# r) keep the segments apart. Mean purchase rates are 0.030 / 0.010 / 0.00032 per day (about
# 11, 3.7 and 0.12 a year: occasional customers are mostly one-off buyers) and mean order values
# 200 / 50 / 12.
SEGMENTS: tuple[Segment, ...] = (
    Segment("loyal", 0.20, r=16.0, alpha=530.0, a=1.0, b=200.0,
            p=40.0, q=120.0, gamma=595.0, signup_a=1.0, signup_b=6.0),
    Segment("regular", 0.35, r=12.0, alpha=1200.0, a=1.0, b=100.0,
            p=40.0, q=120.0, gamma=148.75, signup_a=3.0, signup_b=3.0),
    Segment("occasional", 0.45, r=8.0, alpha=25000.0, a=3.0, b=3.0,
            p=40.0, q=120.0, gamma=35.7, signup_a=6.0, signup_b=1.0),
)

CHANNELS: tuple[str, ...] = ("email", "paid_search", "social", "display", "affiliate", "direct")
CHANNEL_PI = np.array([0.5, 0.3, 0.4, 0.5, 0.1, 0.3])
CHANNEL_EFFECT = np.array([0.10, 0.25, 0.05, 0.02, 0.15, 0.30])
CHANNEL_COST_CENTS = np.array([1, 80, 5, 2, 50, 0], dtype=np.int64)  # per touch
CHANNEL_EVENT = ("open", "click", "impression", "impression", "click", "visit")
BASE_CONVERSION = 0.01
EMAIL_NEWSLETTER_SHARE = 0.7  # share of e-mail touches tagged with the newsletter C03

CATEGORIES = ("Electronics", "Apparel", "Home", "Beauty", "Books", "Grocery")
CATEGORY_CODES = ("ELE", "APP", "HOM", "BEA", "BOO", "GRO")
CATEGORY_WEIGHTS = np.array([0.15, 0.22, 0.18, 0.15, 0.10, 0.20])
SALES_CHANNELS = ("online", "app", "store")
SALES_CHANNEL_WEIGHTS = np.array([0.5, 0.3, 0.2])
SKUS_PER_CATEGORY = 250
STATUSES = ("completed", "refund", "cancelled")

# (CampaignID, name, channel). C01 and C02 are the experiments; C03-C07 are always-on and are
# the CampaignID of touchpoints (C03 for part of the e-mail touches, direct has none).
CAMPAIGNS: tuple[tuple[str, str, str], ...] = (
    ("C01", "Win-back e-mail", "email"),
    ("C02", "Subject-line test", "email"),
    ("C03", "Newsletter", "email"),
    ("C04", "Brand search", "paid_search"),
    ("C05", "Social always-on", "social"),
    ("C06", "Display retargeting", "display"),
    ("C07", "Affiliate programme", "affiliate"),
)
TOUCH_CAMPAIGN = ("C03", "C04", "C05", "C06", "C07", "")  # index 5 = blank

C01_SHARE = 0.40
C01_RATES = {"control": 0.05, "treatment": 0.065}
C02_SIZE = 4000
C02_ASSIGN = {"A": 0.38, "B": 0.33, "C": 0.29}
C02_RATES = {"A": 0.04, "B": 0.045, "C": 0.05}
C02_OPEN = {"A": 0.30, "B": 0.35, "C": 0.40}
DELIVER_RATE, OPEN_RATE, CLICK_RATE = 0.97, 0.35, 0.25

# Defect sizes as a share of genuine order rows (touch channel: of touchpoint rows).
DEFECT_RATES = {
    "exact_duplicate": 0.005,
    "missing_customer_id": 0.003,
    "unparseable_order_ts": 0.003,
    "refund_netted": 0.006,
    "cancelled_order": 0.003,
    "mixed_date_format": 0.010,
    "category_whitespace_case": 0.008,
    "touch_channel_whitespace_case": 0.005,
}
# None of these parses as a date (pandas format="mixed", with and without dayfirst, and
# dateutil). "2024-13-01" is not used: pandas reads it as 13 January when dayfirst=True.
JUNK_DATES = ("N/A", "unknown", "31/02/2024 10:00", "30/02/2023 09:15", "2023-00-10 12:00:00",
              "#VALUE!", "not a date", "TBD", "2023-06-31 10:00:00", "32/01/2024 08:00")
FUTURE_DATE = "2031-06-15"

CN_SURNAMES = ("王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周", "徐", "孙", "马", "朱",
               "胡", "郭", "何", "林", "高", "罗")
CN_SURNAMES_PY = ("wang", "li", "zhang", "liu", "chen", "yang", "huang", "zhao", "wu", "zhou",
                  "xu", "sun", "ma", "zhu", "hu", "guo", "he", "lin", "gao", "luo")
CN_GIVEN = ("伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛",
            "明", "超", "秀英", "霞", "平", "刚", "桂英", "建华", "晓东", "文静", "海燕", "志强", "欣怡")
CN_GIVEN_PY = ("wei", "fang", "na", "min", "jing", "li", "qiang", "lei", "jun", "yang", "yong",
               "yan", "jie", "juan", "tao", "ming", "chao", "xiuying", "xia", "ping", "gang",
               "guiying", "jianhua", "xiaodong", "wenjing", "haiyan", "zhiqiang", "xinyi")
EN_FIRST = ("Emma", "Olivia", "Liam", "Noah", "Ava", "Sophia", "James", "Lucas", "Mia", "Ethan",
            "Grace", "Henry", "Chloe", "Jack", "Lily", "Oscar", "Ruby", "Leo", "Zoe", "Adam")
EN_LAST = ("Clarke", "Smith", "Brown", "Wilson", "Taylor", "Johnson", "Walker", "Wright", "Green",
           "Hall", "Wood", "Turner", "Hughes", "Evans", "Lewis", "Baker", "Cooper", "Reed")
CN_NAME_SHARE = 0.7
REGION_CITIES = (("华东", "上海"), ("华东", "杭州"), ("华东", "南京"), ("华东", "苏州"),
                 ("华北", "北京"), ("华北", "天津"), ("华北", "石家庄"), ("华南", "广州"),
                 ("华南", "深圳"), ("华南", "厦门"), ("西南", "成都"), ("西南", "重庆"),
                 ("西南", "昆明"), ("华中", "武汉"), ("华中", "长沙"), ("华中", "郑州"),
                 ("东北", "沈阳"), ("东北", "哈尔滨"), ("西北", "西安"))
CITY_WEIGHTS = np.array([12, 5, 4, 4, 11, 4, 2, 8, 8, 3, 6, 5, 3, 5, 3, 3, 4, 3, 3], dtype=float)
MOBILE_PREFIXES = np.array([130, 131, 132, 133, 135, 136, 137, 138, 139, 150, 151, 152, 155, 157,
                            158, 159, 166, 176, 177, 180, 181, 186, 187, 188, 189, 199])

SHAPLEY_DEFINITION = (
    "v(T) = P(conv|T) - P(conv|{}) with the noisy-OR P(conv|T) = 1-(1-b0)*prod_{c in T}(1-e_c). "
    "For a converting journey with channel set S, phi_c(S) is the exact Shapley value of c in "
    "the game v restricted to the subsets of S (so sum_c phi_c(S) = v(S)). channel_true_share "
    "is the mean of phi(S) over the generated converting journeys (one per genuine order), "
    "normalised to sum to 1 over channels; channel_true_share_expected is the same mean under "
    "P(S|conv) instead of over the generated journeys.")


# ----------------------------------------------------------------------------------------------
# A small, fast CSV writer. Every cell is built from fixed-width byte pieces plus a mask of the
# bytes to keep, so a chunk of rows becomes text in one numpy compaction (no per-row Python).
# Output is plain bytes from integers and look-up tables, so it is identical on every run.


@dataclass(frozen=True)
class Piece:
    """Part of a CSV cell, `width` bytes wide. `fill(lo, hi, out, keep)` writes the bytes of rows
    lo..hi-1 into `out` (rows, width) and clears `keep` (pre-set True) where bytes are unused."""

    width: int
    fill: Callable[[int, int, np.ndarray, np.ndarray], None]


def _table(labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Labels -> padded UTF-8 bytes (k, w) and their mask (k, w)."""
    encoded = [s.encode("utf-8") for s in labels]
    width = max([1] + [len(b) for b in encoded])
    data = np.zeros((len(encoded), width), np.uint8)
    mask = np.zeros((len(encoded), width), bool)
    for i, b in enumerate(encoded):
        data[i, : len(b)] = np.frombuffer(b, np.uint8)
        mask[i, : len(b)] = True
    return data, mask


def _gather(codes: np.ndarray | _Mapped, data: np.ndarray, mask: np.ndarray | None = None) -> Piece:
    """Row i shows table row codes[i] (tables as from `_table`; mask None = all bytes used)."""
    width = data.shape[1]
    rows = np.ascontiguousarray(data).view(f"V{width}").ravel()
    used = None if mask is None or mask.all() else \
        np.ascontiguousarray(mask).view(np.uint8).view(f"V{width}").ravel()

    def fill(lo: int, hi: int, out: np.ndarray, keep: np.ndarray) -> None:
        c = codes[lo:hi]
        out[:] = rows[c].view(np.uint8).reshape(-1, width)
        if used is not None:
            keep[:] = used[c].view(np.uint8).reshape(-1, width).view(bool)

    return Piece(width, fill)


def _labels(codes: np.ndarray | _Mapped, labels: Sequence[str]) -> Piece:
    """Categorical cell: row i shows labels[codes[i]]."""
    return _gather(codes, *_table(labels))


def _literal(text: str) -> Piece:
    """The same (non-empty) text on every row."""
    data = np.frombuffer(text.encode("utf-8"), np.uint8)

    def fill(lo: int, hi: int, out: np.ndarray, keep: np.ndarray) -> None:
        out[:] = data

    return Piece(data.size, fill)


def _digit_matrix(values: np.ndarray, width: int) -> np.ndarray:
    """Non-negative integers -> zero-padded ASCII digits (rows, width)."""
    out = np.empty((values.size, width), np.uint8)
    _fill_digits(values, out)
    return out


def _fill_digits(values: np.ndarray, out: np.ndarray) -> None:
    """Write zero-padded ASCII digits of non-negative integers into out (rows, width)."""
    v = values.astype(np.int64)
    for j in range(out.shape[1] - 1, -1, -1):
        v, digit = np.divmod(v, 10)
        out[:, j] = digit
    out += 48


def _digits(values: np.ndarray | _Mapped, width: int, strip: bool = False) -> Piece:
    """Integers >= 0 as zero-padded digits or (strip=True) without leading zeros."""

    def fill(lo: int, hi: int, out: np.ndarray, keep: np.ndarray) -> None:
        v = values[lo:hi]
        _fill_digits(v, out)
        if strip:
            n_digits = np.ones(v.size, np.int64)
            for k in range(1, width):
                n_digits += v >= 10 ** k
            keep[:] = np.arange(width) >= (width - n_digits)[:, None]

    return Piece(width, fill)


class _Mapped:
    """A column computed a chunk at a time: m[lo:hi] is fn(source[lo:hi]). It stands in for the
    array of `_gather`, `_labels` and `_digits`, which only ever take slices of it."""

    def __init__(self, source: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> None:
        self.source, self.fn = source, fn

    def __getitem__(self, rows: slice) -> np.ndarray:
        return self.fn(self.source[rows])


def _money(cents: np.ndarray) -> list[Piece]:
    """Integer cents as '%.2f' text: '-12.30', '0.05', '1234.00'."""
    cents = np.asarray(cents)
    largest = max(-int(cents.min(initial=0)), int(cents.max(initial=0)))
    width = max(1, len(str(largest // 100)))
    return [_labels(_Mapped(cents, lambda c: (c < 0).astype(np.int8)), ("", "-")),
            _digits(_Mapped(cents, lambda c: np.abs(c.astype(np.int64)) // 100), width, True),
            _literal("."), _digits(_Mapped(cents, lambda c: np.abs(c.astype(np.int64)) % 100), 2)]


def _timestamp(sec: np.ndarray, t_start: np.datetime64, n_days: int,
               with_time: bool = True) -> Piece:
    """Seconds since start as 'YYYY-MM-DD HH:MM:SS' (or 'YYYY-MM-DD'), by table look-up."""
    days = t_start.astype("datetime64[D]") + np.arange(n_days)
    dates = np.frombuffer("".join(str(d) for d in days).encode("ascii"), np.uint8).view("V10")
    tod = np.arange(SECONDS_PER_DAY)
    clock = np.full((SECONDS_PER_DAY, 9), ord(":"), np.uint8)
    clock[:, 0] = ord(" ")
    for col, value in ((1, tod // 3600), (4, tod // 60 % 60), (7, tod % 60)):
        clock[:, col], clock[:, col + 1] = value // 10 + 48, value % 10 + 48
    clock_rows = clock.view("V9").ravel()

    def fill(lo: int, hi: int, out: np.ndarray, keep: np.ndarray) -> None:
        day, rest = np.divmod(sec[lo:hi], SECONDS_PER_DAY)
        out[:, :10] = dates[day].view(np.uint8).reshape(-1, 10)
        if with_time:
            out[:, 10:] = clock_rows[rest].view(np.uint8).reshape(-1, 9)

    return Piece(19 if with_time else 10, fill)


def _override(base: Piece, rows: np.ndarray, texts: Sequence[str]) -> Piece:
    """`base`, except that row rows[k] (rows sorted) shows texts[k] instead."""
    data, mask = _table(texts)
    width = max(base.width, data.shape[1])

    def fill(lo: int, hi: int, out: np.ndarray, keep: np.ndarray) -> None:
        keep[:, : base.width] = True
        keep[:, base.width:] = False
        base.fill(lo, hi, out[:, : base.width], keep[:, : base.width])
        a, b = np.searchsorted(rows, [lo, hi])
        if a < b:
            r = rows[a:b] - lo
            out[r] = 0
            keep[r] = False
            out[r, : data.shape[1]] = data[a:b]
            keep[r, : data.shape[1]] = mask[a:b]

    return Piece(width, fill)


def _render(cells: Sequence[Sequence[Piece]], n_rows: int,
            row_end: str = "\n") -> Iterator[np.ndarray]:
    """Yield the CSV text of rows as uint8 arrays, one chunk of rows at a time: cells joined by
    ',' and each row followed by `row_end`. No quoting: values never hold ',' '"' or a newline,
    except that one cell may deliberately render several columns."""
    layout, width = [], 0
    for k, pieces in enumerate(cells):
        for piece in pieces:
            layout.append((piece, width))
            width += piece.width
        ending = row_end.encode("utf-8") if k == len(cells) - 1 else b","
        layout.append((np.frombuffer(ending, np.uint8), width))
        width += len(ending)
    # Buffers are reused: a piece that leaves `keep` alone relies on it staying True.
    data_buffer = np.empty((min(n_rows, CHUNK_ROWS), width), np.uint8)
    keep_buffer = np.ones((min(n_rows, CHUNK_ROWS), width), bool)
    for lo in range(0, n_rows, CHUNK_ROWS):
        hi = min(n_rows, lo + CHUNK_ROWS)
        data, keep = data_buffer[: hi - lo], keep_buffer[: hi - lo]
        for item, at in layout:
            if isinstance(item, Piece):
                item.fill(lo, hi, data[:, at: at + item.width], keep[:, at: at + item.width])
            else:
                data[:, at: at + item.size] = item
        yield data[keep]


def _write_csv(path: Path, header: Sequence[str], cells: Sequence[Sequence[Piece]], n_rows: int,
               encoding: str = "utf-8") -> int:
    """Write a CSV with a header row and '\\n' line ends (see `_render`). Returns n_rows."""
    with open(path, "wb") as sink:
        sink.write((",".join(header) + "\n").encode(encoding))
        for text in _render(cells, n_rows):
            sink.write(text.tobytes().decode("utf-8").encode(encoding)
                       if encoding != "utf-8" else text)
    return n_rows


def _write_csv_with_tail(path: Path, header: Sequence[str], cells: Sequence[Sequence[Piece]],
                         tail_codes: np.ndarray, tail_labels: Sequence[str], n_rows: int) -> int:
    """Like `_write_csv` for rows made of fixed-width cells followed by one categorical cell
    (tail_labels[tail_codes[i]], which may hold several columns), without a byte mask.

    Rows are assembled in the output buffer by two non-overlapping block copies: first every
    tail at full padded width (its padding lands inside the next row's fixed part), then every
    fixed part, which overwrites that padding. Falls back to `_write_csv` when a tail's padding
    is longer than the fixed part.
    """
    tails, used = _table([label + "\n" for label in tail_labels])
    lengths = used.sum(axis=1)
    fixed = [piece for pieces in cells for piece in pieces]
    width = sum(piece.width for piece in fixed) + len(cells)  # with the commas after each cell
    if tails.shape[1] - lengths.min() > width:
        return _write_csv(path, header, [*cells, [_labels(tail_codes, tail_labels)]], n_rows)
    tail_rows = tails.view(f"V{tails.shape[1]}").ravel()
    data_buffer = np.empty((min(n_rows, CHUNK_ROWS), width), np.uint8)
    keep_buffer = np.ones((min(n_rows, CHUNK_ROWS), width), bool)
    out = np.empty(max(1, data_buffer.shape[0]) * (width + tails.shape[1]) + tails.shape[1], np.uint8)
    views = {block: np.ndarray(buffer=out, dtype=f"V{block}", shape=(out.size - block + 1,),
                               strides=(1,)) for block in (width, tails.shape[1])}
    with open(path, "wb") as sink:
        sink.write((",".join(header) + "\n").encode("utf-8"))
        for lo in range(0, n_rows, CHUNK_ROWS):
            hi = min(n_rows, lo + CHUNK_ROWS)
            data, keep = data_buffer[: hi - lo], keep_buffer[: hi - lo]
            at = 0
            for pieces in cells:
                for piece in pieces:
                    piece.fill(lo, hi, data[:, at: at + piece.width], keep[:, at: at + piece.width])
                    at += piece.width
                data[:, at] = ord(",")
                at += 1
            if not keep.all():
                raise ValueError("_write_csv_with_tail needs fixed-width cells")
            codes = tail_codes[lo:hi]
            ends = np.cumsum(width + lengths[codes])
            starts = ends - (width + lengths[codes])
            views[tails.shape[1]][starts + width] = tail_rows[codes]
            views[width][starts] = data.view(f"V{width}").ravel()
            sink.write(out[: int(ends[-1])])
    return n_rows


# ----------------------------------------------------------------------------------------------
# Small helpers


def _chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    """(lo, hi) bounds of consecutive chunks of at most `size` of range(n)."""
    return ((lo, min(n, lo + size)) for lo in range(0, n, size))


def _count(rate: float, n: int) -> int:
    """Defect rows for a rate and a base of n rows: at least 1 when n > 0."""
    return max(1, int(round(rate * n))) if n > 0 else 0


def _period(start: str, end: str) -> tuple[np.datetime64, int]:
    """Window start (datetime64[s]) and length in seconds; `end` is an inclusive date."""
    t_start = np.datetime64(start, "D").astype("datetime64[s]")
    t_end = (np.datetime64(end, "D") + np.timedelta64(1, "D")).astype("datetime64[s]")
    horizon = int((t_end - t_start) / np.timedelta64(1, "s"))
    if horizon < 120 * SECONDS_PER_DAY:
        raise ValueError(f"end ({end}) must be at least 120 days after start ({start})")
    if horizon >= 2**31:  # seconds are kept as int32
        raise ValueError(f"the window from {start} to {end} is longer than 68 years")
    return t_start, horizon


def _to_seconds(days: np.ndarray, horizon: int) -> np.ndarray:
    """Float days since start -> int64 whole seconds, clipped into [0, horizon)."""
    return np.clip(np.floor(days * SECONDS_PER_DAY), 0, horizon - 1).astype(np.int64)


def _time_order(sec: np.ndarray) -> np.ndarray:
    """Row order by time, ties by position (a unique key, so the sort is deterministic)."""
    n = sec.size
    bits = max(1, int(n).bit_length())
    key = sec.astype(np.int64)
    key <<= bits
    for lo, hi in _chunks(n, CHUNK_ROWS):
        key[lo:hi] |= np.arange(lo, hi, dtype=np.int64)
    key.sort()
    key &= (1 << bits) - 1
    return key


def _draw(draw: Callable[[int], np.ndarray], n: int, dtype: type) -> np.ndarray:
    """n values of draw(size) kept as `dtype` (narrower than numpy's int64 or float64), drawn
    CHUNK_ROWS at a time: chunked draws of one call continue the same stream, so the values are
    those of draw(n), without its full-size temporaries."""
    out = np.empty(n, dtype)
    for lo, hi in _chunks(n, CHUNK_ROWS):
        out[lo:hi] = draw(hi - lo)
    return out


def _day(t_start: np.datetime64, sec: int) -> str:
    """'YYYY-MM-DD' of a time given in seconds since start."""
    return str((t_start + np.timedelta64(int(sec), "s")).astype("datetime64[D]"))


# ----------------------------------------------------------------------------------------------
# Customers and purchases


@dataclass(frozen=True)
class Population:
    """Latent per-customer draws; customers are numbered in sign-up order (index 0 = C..01)."""

    segment: np.ndarray  # int8 index into SEGMENTS
    lam: np.ndarray  # purchase rate per day while alive
    dropout: np.ndarray  # P(drop out after a repeat purchase)
    nu: np.ndarray  # Gamma-Gamma scale parameter (1 / currency unit)
    signup_sec: np.ndarray  # first purchase, seconds since start


def draw_population(rng: np.random.Generator, n: int, horizon: int) -> Population:
    """Segments, sign-up times, BG/NBD lambda (per day) and p, Gamma-Gamma nu for n customers."""
    shares = np.array([s.share for s in SEGMENTS])
    segment = rng.choice(len(SEGMENTS), size=n, p=shares / shares.sum()).astype(np.int8)
    par = {k: np.array([getattr(s, k) for s in SEGMENTS])[segment]
           for k in ("r", "alpha", "a", "b", "q", "gamma", "signup_a", "signup_b")}
    window = SIGNUP_FRACTION * horizon / SECONDS_PER_DAY
    signup = window * rng.beta(par["signup_a"], par["signup_b"])
    lam = rng.gamma(par["r"], 1.0 / par["alpha"])
    dropout = rng.beta(par["a"], par["b"])
    nu = rng.gamma(par["q"], 1.0 / par["gamma"])
    order = np.argsort(signup, kind="stable")
    return Population(segment[order], lam[order], dropout[order], nu[order],
                      _to_seconds(signup[order], horizon))


def simulate_purchases(rng: np.random.Generator, pop: Population,
                       horizon: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BG/NBD purchase times (Fader, Hardie & Lee 2005), vectorised by purchase round.

    Returns (customer index, seconds since start, is sign-up purchase) of every purchase, the
    sign-up purchase included, sorted by time. Round k draws the k-th repeat purchase of every
    customer still alive (exponential gap with rate lambda per day); after it the customer drops
    out with probability p.
    """
    horizon_days = horizon / SECONDS_PER_DAY
    cust_parts = [np.arange(pop.lam.size, dtype=np.int32)]
    sec_parts = [pop.signup_sec.astype(np.int32)]
    t = pop.signup_sec / SECONDS_PER_DAY
    alive = cust_parts[0]
    while alive.size:
        t_next = t[alive] + rng.exponential(1.0, alive.size) / pop.lam[alive]
        inside = t_next < horizon_days
        alive, t_next = alive[inside], t_next[inside]
        t[alive] = t_next
        cust_parts.append(alive)
        sec_parts.append(_to_seconds(t_next, horizon).astype(np.int32))
        alive = alive[rng.random(alive.size) >= pop.dropout[alive]]
    del t, alive
    cust = np.concatenate(cust_parts)
    del cust_parts
    sec = np.concatenate(sec_parts)
    del sec_parts
    first = np.zeros(cust.size, dtype=bool)
    first[: pop.lam.size] = True
    order = _time_order(sec)
    return cust[order], sec[order], first[order]


def draw_spend_cents(rng: np.random.Generator, pop: Population, cust: np.ndarray) -> np.ndarray:
    """Gamma-Gamma order values z ~ Gamma(p, scale 1/nu) for customers `cust`, in cents (>= 1)."""
    p = np.array([s.p for s in SEGMENTS])
    cents = np.empty(cust.size, np.int64)
    for lo, hi in _chunks(cust.size, CHUNK_ROWS):  # chunked draws continue the same stream
        c = cust[lo:hi]
        z = rng.gamma(p[pop.segment[c]], 1.0 / pop.nu[c])
        cents[lo:hi] = np.maximum(1, np.rint(z * 100.0))
    return cents


# ----------------------------------------------------------------------------------------------
# Journeys and the channel truth


def _mask_bits(k: int) -> np.ndarray:
    """Bool matrix (2^k, k): bit c of mask m."""
    return ((np.arange(1 << k)[:, None] >> np.arange(k)) & 1).astype(bool)


def shapley_noisy_or(effect: np.ndarray, base: float) -> np.ndarray:
    """Exact Shapley values phi[S, c] of v(T) = P(conv|T) - P(conv|{}) in the game restricted
    to the subsets of S, for every channel set S (bitmask, bit c = channel c).

    P(conv|T) is noisy-OR with base rate `base`. Row S sums to v(S); channels outside S get 0.
    """
    k = effect.size
    bits = _mask_bits(k)
    v = (1.0 - base) * (1.0 - np.prod(np.where(bits, 1.0 - effect, 1.0), axis=1))
    size = bits.sum(axis=1)
    phi = np.zeros((1 << k, k))
    for s_mask in range(1, 1 << k):
        s = int(size[s_mask])
        for c in range(k):
            if not s_mask >> c & 1:
                continue
            rest = s_mask & ~(1 << c)
            sub, total = rest, 0.0
            while True:  # every subset T of S without c
                t = int(size[sub])
                weight = math.factorial(t) * math.factorial(s - t - 1) / math.factorial(s)
                total += weight * (v[sub | 1 << c] - v[sub])
                if sub == 0:
                    break
                sub = (sub - 1) & rest
            phi[s_mask, c] = total
    return phi


@dataclass(frozen=True)
class JourneyModel:
    """Distributions of a journey's channel set over the 2^k - 1 non-empty sets (index mask-1)."""

    prior: np.ndarray  # P(S)
    p_conv: np.ndarray  # P(conv | S)
    p_bar: float  # E_S[P(conv | S)]
    given_conv: np.ndarray  # P(S | conv)
    given_noconv: np.ndarray  # P(S | no conv)
    phi: np.ndarray  # Shapley values, (sets, channels)


def journey_model(pi: np.ndarray = CHANNEL_PI, effect: np.ndarray = CHANNEL_EFFECT,
                  base: float = BASE_CONVERSION) -> JourneyModel:
    """Exact set distributions by enumerating the non-empty channel sets."""
    bits = _mask_bits(pi.size)[1:]
    prior = np.prod(np.where(bits, pi, 1.0 - pi), axis=1)
    prior = prior / prior.sum()
    p_conv = 1.0 - (1.0 - base) * np.prod(np.where(bits, 1.0 - effect, 1.0), axis=1)
    p_bar = float(prior @ p_conv)
    return JourneyModel(prior, p_conv, p_bar, prior * p_conv / p_bar,
                        prior * (1.0 - p_conv) / (1.0 - p_bar), shapley_noisy_or(effect, base)[1:])


def expand_journeys(rng: np.random.Generator, set_idx: np.ndarray, end_days: np.ndarray,
                    lo_days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One touch per channel of each journey, uniform in [max(lo, end - 14), end] days.

    `set_idx` is mask - 1. Returns (journey index, channel index, time in days), grouped by
    channel, journeys ascending within a channel.
    """
    has = _mask_bits(len(CHANNELS))[1:].T  # (channels, sets)
    per_channel = [np.flatnonzero(has[c][set_idx]) for c in range(len(CHANNELS))]
    journey = np.concatenate(per_channel)
    channel = np.repeat(np.arange(len(CHANNELS), dtype=np.int8), [j.size for j in per_channel])
    del per_channel
    width = np.minimum(JOURNEY_WINDOW_DAYS, end_days - lo_days)
    t = rng.random(journey.size)
    buffer = np.take(width, journey)
    t *= buffer
    np.take(end_days, journey, out=buffer)
    np.subtract(buffer, t, out=t)  # end - u * width
    return journey, channel, t


def _pack_touch_keys(out: np.ndarray, days: np.ndarray, cust: np.ndarray, channel: np.ndarray,
                     horizon: int, cust_bits: int) -> None:
    """Pack (whole second, customer, channel) into int64 sort keys; overwrites `days`."""
    np.multiply(days, SECONDS_PER_DAY, out=days)
    np.floor(days, out=days)
    np.clip(days, 0, horizon - 1, out=days)
    out[:] = days  # whole numbers below 2^53: the float -> int64 cast is exact
    out <<= cust_bits
    out |= cust
    out <<= 3
    out |= channel


def simulate_journeys(rng: np.random.Generator, jm: JourneyModel, pop: Population,
                      cust: np.ndarray, sec: np.ndarray, horizon: int, last_channel: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, Iterator[Touches]]:
    """The journeys: one converting journey per genuine order (cust, sec), ending at the order,
    and round(n_orders * (1 - P_bar) / P_bar) non-converting ones of random customers, ending at
    random times after sign-up.

    Returns (conv_set, nc_set, touches): the channel set indices (mask - 1, int8) of both kinds,
    and an iterator over their touches (`expand_journeys`) as (customer, channel, days) arrays,
    JOURNEY_CHUNK journeys at a time, converting journeys first. While it runs, last_channel[j]
    gets the channel of the last touch of order j's journey.

    The draws are those of drawing every set, then every non-converting customer and end time
    in full, then expanding the journeys: chunked draws of one call continue the same stream, so
    copies of `rng` taken where the customer and end-time draws start replay them chunk by chunk.
    Memory therefore stays small, and the touches can be counted without being kept.
    """
    n_orders, n_cust, day = cust.size, pop.lam.size, SECONDS_PER_DAY
    n_nc = int(round(n_orders * (1.0 - jm.p_bar) / jm.p_bar))
    conv_set, nc_set = np.empty(n_orders, np.int8), np.empty(n_nc, np.int8)
    for out, p in ((conv_set, jm.given_conv), (nc_set, jm.given_noconv)):
        for lo, hi in _chunks(out.size, CHUNK_ROWS):
            out[lo:hi] = rng.choice(jm.prior.size, hi - lo, p=p)
    cust_rng = copy.deepcopy(rng)
    for lo, hi in _chunks(n_nc, CHUNK_ROWS):
        rng.integers(0, n_cust, hi - lo)
    end_rng = copy.deepcopy(rng)
    for lo, hi in _chunks(n_nc, CHUNK_ROWS):
        rng.random(hi - lo)

    def touches() -> Iterator[Touches]:
        for lo, hi in _chunks(n_orders, JOURNEY_CHUNK):
            journey, channel, days = expand_journeys(rng, conv_set[lo:hi], sec[lo:hi] / day,
                                                     np.zeros(hi - lo))
            latest = np.full((hi - lo, len(CHANNELS)), -np.inf)
            latest[journey, channel] = days
            last_channel[lo:hi] = latest.argmax(axis=1)
            yield cust[lo:hi][journey], channel, days
        for lo, hi in _chunks(n_nc, JOURNEY_CHUNK):
            nc_cust = cust_rng.integers(0, n_cust, hi - lo)
            first = pop.signup_sec[nc_cust] / day
            end = first + end_rng.random(hi - lo) * (horizon / day - first)
            journey, channel, days = expand_journeys(rng, nc_set[lo:hi], end, first)
            yield nc_cust[journey], channel, days

    return conv_set, nc_set, touches()


def _month_channel_counts(sec: np.ndarray, channel: np.ndarray,
                          month_start: np.ndarray) -> np.ndarray:
    """Touches per (month, channel); month m holds month_start[m] <= sec < month_start[m + 1]."""
    cell = np.searchsorted(month_start, sec, side="right") - 1
    cell *= len(CHANNELS)
    cell += channel
    n_cells = (month_start.size - 1) * len(CHANNELS)
    return np.bincount(cell, minlength=n_cells).reshape(-1, len(CHANNELS))


def _unpack_touch_keys(key: np.ndarray,
                       cust_bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted keys -> (seconds, customer, channel); the seconds reuse the key array."""
    channel = np.empty(key.size, np.int8)
    cust = np.empty(key.size, np.int32)
    for lo in range(0, key.size, CHUNK_ROWS):
        part = key[lo: lo + CHUNK_ROWS]
        channel[lo: lo + part.size] = part & 7
        cust[lo: lo + part.size] = (part >> 3) & ((1 << cust_bits) - 1)
    return np.right_shift(key, 3 + cust_bits, out=key), cust, channel


# ----------------------------------------------------------------------------------------------
# Messy orders


@dataclass
class OrderRows:
    """Order rows before writing; in clean form the rows are the genuine orders by time."""

    order_no: np.ndarray
    cust: np.ndarray  # customer index; n_customers / n_customers + 1 = "" / "  "
    sec: np.ndarray  # seconds since start
    cents: np.ndarray
    qty: np.ndarray
    sku: np.ndarray  # canonical category * 10_000 + SKU number
    cat: np.ndarray  # index into cat_labels
    channel: np.ndarray
    status: np.ndarray  # index into STATUSES
    cat_labels: list[str]  # CATEGORIES, then the defect variants
    date_rows: np.ndarray  # sorted rows whose OrderDate is written as date_texts instead
    date_texts: list[str]


_ORDER_FIELDS = ("order_no", "cust", "sec", "cents", "qty", "sku", "cat", "channel", "status")


def _take(rows: OrderRows, idx: np.ndarray) -> dict[str, np.ndarray]:
    return {f: getattr(rows, f)[idx].copy() for f in _ORDER_FIELDS}


def _category_variants(rng: np.random.Generator, cat: np.ndarray) -> list[str]:
    """Stray whitespace and/or odd case (' electronics', 'APPAREL ', ' Home '), never canonical."""
    styles = (lambda s: " " + s.lower(), lambda s: s.upper() + " ", lambda s: " " + s + " ",
              lambda s: s.lower() + "  ", lambda s: "  " + s.upper(), lambda s: s.swapcase())
    pick = rng.integers(0, len(styles), cat.size)
    return [styles[j](CATEGORIES[c]) for c, j in zip(cat.tolist(), pick.tolist())]


def _channel_variants(rng: np.random.Generator, channel: np.ndarray) -> list[str]:
    """Stray whitespace and/or case ('Email ', ' PAID_SEARCH', 'Social'), never canonical."""
    styles = (lambda s: s.title() + " ", lambda s: " " + s.upper(), lambda s: s.title(),
              lambda s: s.upper() + " ", lambda s: " " + s + " ", lambda s: s + "  ")
    pick = rng.integers(0, len(styles), channel.size)
    return [styles[j](CHANNELS[c]) for c, j in zip(channel.tolist(), pick.tolist())]


def inject_order_defects(rng: np.random.Generator, rows: OrderRows, signup_sec: np.ndarray,
                         t_start: np.datetime64, horizon: int) -> tuple[OrderRows, dict, dict]:
    """Add the counted order defects; returns (rows in final order, removals, normalisations).

    Removable defects are extra rows placed among the genuine ones (by their time, or at random
    positions for duplicates and rows without a usable date). In-place defects (date format,
    category text) hit disjoint genuine rows that are not the source of a duplicate or refund.
    """
    n, n_cust, day = rows.order_no.size, signup_sec.size, SECONDS_PER_DAY
    k = {name: _count(rate, n) for name, rate in DEFECT_RATES.items()}
    perm = rng.permutation(n)
    cut = np.cumsum([k["mixed_date_format"], k["category_whitespace_case"], k["exact_duplicate"]])
    mixed_src, cat_src, dup_src = np.split(perm[: cut[-1]].copy(), cut[:-1])
    rest = perm[cut[-1]:]
    refund_src = rest[rows.sec[rest] < horizon - 14 * day][: k["refund_netted"]].copy()
    del perm, rest

    texts: dict[int, str] = {}  # pre-placement row -> OrderDate text
    n_dmy = (mixed_src.size + 1) // 2
    stamps = (t_start + rows.sec[mixed_src].astype("timedelta64[s]")).astype(object)
    for j, (row, ts) in enumerate(zip(mixed_src.tolist(), stamps)):
        texts[row] = ts.strftime("%d/%m/%Y %H:%M") if j < n_dmy else ts.strftime("%Y/%m/%d")
    cat = rows.cat.copy()
    variants = _category_variants(rng, rows.cat[cat_src])
    cat_labels = list(CATEGORIES) + sorted(set(variants))
    position = {label: i for i, label in enumerate(cat_labels)}
    cat[cat_src] = [position[v] for v in variants]

    def template(m: int) -> dict[str, np.ndarray]:
        return _take(rows, rng.integers(0, n, m))

    dup = _take(rows, dup_src)
    miss = template(k["missing_customer_id"])
    miss["cust"] = n_cust + rng.integers(0, 2, miss["cust"].size)  # "" or "  "
    miss["sec"] = rng.integers(0, horizon, miss["sec"].size)
    unp = template(k["unparseable_order_ts"])
    unp["cust"] = rng.integers(0, n_cust, unp["cust"].size)
    fut = template(1)
    fut["cust"] = rng.integers(0, n_cust, 1)
    ref = _take(rows, refund_src)
    ref["status"][:] = 1
    ref["cents"] = -np.maximum(1, np.rint(ref["cents"] * rng.uniform(0.1, 0.5, refund_src.size))
                               ).astype(np.int64)
    ref["sec"] = ref["sec"] + rng.integers(day, 7 * day, refund_src.size)
    fake = template(k["cancelled_order"])
    fake["cust"] = rng.integers(0, n_cust, fake["cust"].size)
    lo = signup_sec[fake["cust"]]
    fake["sec"] = lo + (rng.random(lo.size) * (horizon - 14 * day - lo)).astype(np.int64)
    cancel = {f: v.copy() for f, v in fake.items()}
    cancel["status"][:] = 2
    cancel["cents"] = -fake["cents"]
    cancel["sec"] = fake["sec"] + rng.integers(1800, 3 * day, lo.size)
    numbers = n + 1 + rng.permutation(sum(part["sec"].size for part in (miss, unp, fut, fake)))
    offset = 0
    for part in (miss, unp, fut, fake):
        part["order_no"] = numbers[offset: offset + part["sec"].size]
        offset += part["sec"].size
    cancel["order_no"] = fake["order_no"].copy()

    # Placement keys: genuine row i sits at i; extras go at random places or by their time.
    def by_time(s: np.ndarray) -> np.ndarray:
        return np.searchsorted(rows.sec, s, side="right") - 0.5

    parts = [dup, miss, unp, fut, ref, fake, cancel]
    keys = [rng.uniform(0, n, dup_src.size), by_time(miss["sec"]),
            rng.uniform(0, n, unp["sec"].size), rng.uniform(0, n, 1), by_time(ref["sec"]),
            by_time(fake["sec"]), by_time(cancel["sec"])]
    first = n + np.cumsum([0] + [part["sec"].size for part in parts])
    unp_rows = np.arange(first[2], first[3])
    for row, junk in zip(unp_rows.tolist(), rng.choice(len(JUNK_DATES), unp_rows.size).tolist()):
        texts[row] = JUNK_DATES[junk]
    hms = int(rng.integers(0, day))
    texts[int(first[3])] = f"{FUTURE_DATE} {hms // 3600:02d}:{hms // 60 % 60:02d}:{hms % 60:02d}"

    # The rows in the order of a stable sort of all keys (genuine row i has key i): the extras,
    # sorted by key, are merged in after the genuine rows whose key is not larger than theirs.
    extra_keys = np.concatenate(keys)
    extra_order = np.argsort(extra_keys, kind="stable")
    extra_at = np.arange(extra_keys.size) + np.clip(
        np.floor(extra_keys[extra_order]).astype(np.int64) + 1, 0, n)  # final row of each extra
    genuine = np.ones(n + extra_keys.size, bool)
    genuine[extra_at] = False
    base = {f: getattr(rows, f) for f in _ORDER_FIELDS}
    base["cat"] = cat
    columns = {}
    for f in _ORDER_FIELDS:
        columns[f] = np.empty(genuine.size, base[f].dtype)
        columns[f][genuine] = base[f]
        columns[f][extra_at] = np.concatenate([part[f] for part in parts])[extra_order]
    del genuine
    # Final rows of the OrderDate texts: genuine row r moves down by the extras placed before it.
    where = np.empty(extra_keys.size, dtype=np.int64)  # final row of extra j (row n + j before)
    where[extra_order] = extra_at
    src = np.fromiter(texts, np.int64, len(texts))
    dest = np.where(src < n, src + np.searchsorted(extra_keys[extra_order], src),
                    where[np.maximum(src - n, 0)])
    by_row = np.argsort(dest)
    text_list = list(texts.values())
    final = OrderRows(**columns, cat_labels=cat_labels, date_rows=dest[by_row],
                      date_texts=[text_list[i] for i in by_row.tolist()])
    removed = {
        "exact_duplicate": int(dup_src.size),
        "missing_customer_id": int(miss["sec"].size),
        "unparseable_order_ts": int(unp_rows.size),
        "future_order_ts": 1,
        "refund_netted": int(refund_src.size),
        "cancellation_netted": int(fake["sec"].size),
        "cancelled_order": int(fake["sec"].size),
    }
    normalised = {
        "mixed_date_format": int(mixed_src.size),
        "mixed_date_format_dmy_hm": int(n_dmy),
        "mixed_date_format_ymd_slash": int(mixed_src.size - n_dmy),
        "category_whitespace_case": int(cat_src.size),
    }
    return final, removed, normalised


# ----------------------------------------------------------------------------------------------
# Experiments


def _flags(rng: np.random.Generator, rate: np.ndarray | float, given: np.ndarray) -> np.ndarray:
    """Bernoulli(rate) 0/1 flags, forced to 0 where `given` is 0."""
    return ((rng.random(given.size) < rate) & (given == 1)).astype(np.int8)


def simulate_experiments(rng: np.random.Generator, pop: Population, cust: np.ndarray,
                         sec: np.ndarray, cents: np.ndarray, horizon: int
                         ) -> tuple[dict[str, np.ndarray], dict]:
    """C01 (win-back, 40% of customers, 50/50) and C02 (4000 customers, SRM injected).

    Returns member columns and per-campaign facts (start/end as day offsets). Conversions are
    intention-to-treat Bernoulli draws, independent of the funnel flags; a conversion's revenue
    is one Gamma-Gamma draw of the customer's own spend. PrePeriodValue is the customer's genuine
    order revenue in the 90 days before the campaign's start.
    """
    n = pop.lam.size
    day = SECONDS_PER_DAY
    horizon_days = horizon // day
    facts: dict = {}
    parts = []
    plans = (("C01", int(0.80 * horizon_days), 30), ("C02", int(0.74 * horizon_days), 14))
    for code, (cid, start_day, length) in enumerate(plans):
        start_day = max(start_day, PRE_PERIOD_DAYS)
        if cid == "C01":
            members = np.sort(rng.choice(n, int(round(C01_SHARE * n)), replace=False))
            groups = ("control", "treatment")
            split = np.zeros(members.size, dtype=np.int8)
            split[rng.permutation(members.size)[: (members.size + 1) // 2]] = 1
            assign = intended = {"control": 0.5, "treatment": 0.5}
            rates = C01_RATES
            deliver = {"control": 0.0, "treatment": DELIVER_RATE}
            opens = {"control": 0.0, "treatment": OPEN_RATE}
            group_code = split
        else:
            members = np.sort(rng.choice(n, min(C02_SIZE, n), replace=False))
            groups = tuple(C02_ASSIGN)
            split = rng.choice(len(groups), members.size, p=list(C02_ASSIGN.values()))
            split = split.astype(np.int8)
            assign, rates, opens = C02_ASSIGN, C02_RATES, C02_OPEN
            intended = {g: round(1 / len(groups), 10) for g in groups}
            deliver = {g: DELIVER_RATE for g in groups}
            group_code = split + 2
        every = np.ones(members.size, dtype=np.int8)
        delivered = _flags(rng, np.array([deliver[g] for g in groups])[split], every)
        opened = _flags(rng, np.array([opens[g] for g in groups])[split], delivered)
        clicked = _flags(rng, CLICK_RATE, opened)
        converted = _flags(rng, np.array([rates[g] for g in groups])[split], every)
        revenue = np.where(converted == 1, draw_spend_cents(rng, pop, members), 0)
        window = (sec >= (start_day - PRE_PERIOD_DAYS) * day) & (sec < start_day * day)
        pre = np.bincount(cust[window], weights=cents[window], minlength=n).astype(np.int64)
        parts.append({"cid": np.full(members.size, code, dtype=np.int8), "cust": members,
                      "group": group_code, "delivered": delivered, "opened": opened,
                      "clicked": clicked, "converted": converted, "revenue": revenue,
                      "pre": pre[members]})
        counts = {g: int((split == i).sum()) for i, g in enumerate(groups)}
        ref = groups[0]
        abs_lift = {g: round(rates[g] - rates[ref], 10) for g in groups[1:]}
        rel_lift = {g: round((rates[g] - rates[ref]) / rates[ref], 10) for g in groups[1:]}
        facts[cid] = {
            "start_day": start_day, "end_day": start_day + length - 1,
            "n_members": int(members.size), "groups": list(groups),
            "intended_split": dict(intended), "assignment_probabilities": dict(assign),
            "actual_counts": counts, "srm_injected": cid == "C02",
            "true_conversion_rate": dict(rates),
            "observed_conversion_rate": {g: round(float(converted[split == i].mean()), 6)
                                         if counts[g] else None for i, g in enumerate(groups)},
            "true_abs_lift": abs_lift["treatment"] if cid == "C01" else
            {f"{g}_vs_{ref}": v for g, v in abs_lift.items()},
            "true_rel_lift": rel_lift["treatment"] if cid == "C01" else
            {f"{g}_vs_{ref}": v for g, v in rel_lift.items()},
            "funnel": {"delivered": deliver, "opened_of_delivered": opens,
                       "clicked_of_opened": CLICK_RATE},
            "delivered": int(delivered.sum()),
            "pre_period_days": PRE_PERIOD_DAYS,
            "conversion": "intention-to-treat Bernoulli, independent of the funnel flags",
        }
    members = {f: np.concatenate([p[f] for p in parts]) for f in parts[0]}
    return members, facts


# ----------------------------------------------------------------------------------------------
# The generator


def generate(out_dir: str | Path, customers: int = 5000, seed: int = 42, messy: bool = True,
             start: str = "2023-01-01", end: str = "2024-12-31", *,
             touchpoints: bool = True) -> Path:
    """Write the demo files + truth.json into out_dir (created), return out_dir.

    touchpoints=False leaves out touchpoints.csv (about 56 rows per customer) and the attribution
    truth; every other file is the same as with touchpoints=True (the journeys are still drawn,
    only counted), so large data sets for the other stages stay small in memory.
    """
    if int(customers) < 1:
        raise ValueError(f"customers must be at least 1, got {customers}")
    n_cust = int(customers)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start, horizon = _period(start, end)
    day = SECONDS_PER_DAY
    n_days = horizon // day
    rng_pop, rng_buy, rng_attr, rng_touch, rng_camp, rng_people, rng_messy = \
        np.random.default_rng(seed).spawn(7)

    # Purchases (genuine orders, sorted by time) -------------------------------------------------
    pop = draw_population(rng_pop, n_cust, horizon)
    cust, sec, is_first = simulate_purchases(rng_buy, pop, horizon)
    cents = draw_spend_cents(rng_buy, pop, cust)
    n_orders = cust.size
    if n_orders > 2**30:  # order numbers, customer indices and seconds are int32
        raise ValueError(f"{n_cust:,} customers make too many orders ({n_orders:,})")
    cat = _draw(lambda k: rng_attr.choice(len(CATEGORIES), k, p=CATEGORY_WEIGHTS), n_orders,
                np.int8)
    qty = _draw(lambda k: 1 + rng_attr.poisson(0.4, k), n_orders, np.int16)
    sku = _draw(lambda k: rng_attr.integers(1, SKUS_PER_CATEGORY + 1, k), n_orders, np.int32)
    sku += cat.astype(np.int32) * 10_000
    rows = OrderRows(
        order_no=np.arange(1, n_orders + 1, dtype=np.int32), cust=cust, sec=sec, cents=cents,
        qty=qty, sku=sku, cat=cat,
        channel=_draw(lambda k: rng_attr.choice(len(SALES_CHANNELS), k, p=SALES_CHANNEL_WEIGHTS),
                      n_orders, np.int8),
        status=np.zeros(n_orders, dtype=np.int8), cat_labels=list(CATEGORIES),
        date_rows=np.zeros(0, dtype=np.int64), date_texts=[])
    del qty, sku, cat

    # Touchpoints ------------------------------------------------------------------------------
    jm = journey_model()
    last_channel = np.empty(n_orders, np.int8)  # channel of the last touch before each order
    conv_set, nc_set, touches = simulate_journeys(rng_touch, jm, pop, cust, sec, horizon,
                                                  last_channel)
    n_nc = nc_set.size
    set_sizes = _mask_bits(len(CHANNELS))[1:].sum(axis=1)
    n_touch = int(sum(np.bincount(s, minlength=set_sizes.size) @ set_sizes
                      for s in (conv_set, nc_set)))
    month0 = t_start.astype("datetime64[M]")
    n_months = int((np.datetime64(end, "D").astype("datetime64[M]") - month0).astype(np.int64)) + 1
    month_start = np.array([int(((month0 + np.timedelta64(m, "M")).astype("datetime64[s]")
                                 - t_start) / np.timedelta64(1, "s")) for m in range(n_months + 1)])
    zero_counts = np.zeros((n_months, len(CHANNELS)), np.int64)
    if touchpoints:
        # Touches are sorted by (time, customer, channel) through one packed integer key.
        cust_bits = max(1, int(n_cust - 1).bit_length())
        if horizon.bit_length() + cust_bits + 3 > 63:
            raise ValueError("too many customers or too long a window for the touch sort key")
        key = np.empty(n_touch, np.int64)
        at = 0
        for t_cust, t_channel, t_days in touches:
            _pack_touch_keys(key[at: at + t_days.size], t_days, t_cust, t_channel, horizon,
                             cust_bits)
            at += t_days.size
        if at != n_touch:
            raise AssertionError("touch count mismatch")
        key.sort()
        touch_sec, touch_cust, touch_ch = _unpack_touch_keys(key, cust_bits)
        del key
        touch_camp = touch_ch.copy()  # index into TOUCH_CAMPAIGN
        email_rows = np.flatnonzero(touch_ch == 0)
        touch_camp[email_rows[rng_touch.random(email_rows.size) >= EMAIL_NEWSLETTER_SHARE]] = 5
        del email_rows
        n_newsletter = int((touch_camp == 0).sum())
        counts = sum((_month_channel_counts(touch_sec[lo:hi], touch_ch[lo:hi], month_start)
                      for lo, hi in _chunks(n_touch, CHUNK_ROWS)), zero_counts)
    else:
        # The same touches and draws, counted per month and channel instead of kept.
        counts = sum((_month_channel_counts(_to_seconds(t_days, horizon), t_channel, month_start)
                      for _, t_channel, t_days in touches), zero_counts)
        n_newsletter = sum(int((rng_touch.random(hi - lo) < EMAIL_NEWSLETTER_SHARE).sum())
                           for lo, hi in _chunks(int(counts[:, 0].sum()), CHUNK_ROWS))
    # Acquisition channel: the last touch of the journey behind each customer's first order.
    acq_channel = np.empty(n_cust, np.int8)
    acq_channel[cust[is_first]] = last_channel[is_first]
    del last_channel, is_first

    # Experiments ------------------------------------------------------------------------------
    members, experiments = simulate_experiments(rng_camp, pop, cust, sec, cents, horizon)
    for facts in experiments.values():
        facts["start"] = _day(t_start, facts.pop("start_day") * day)
        facts["end"] = _day(t_start, facts.pop("end_day") * day)
    genuine_revenue = int(cents.sum())
    del cust, sec, cents  # `rows` holds the genuine orders now

    # Defects ----------------------------------------------------------------------------------
    removed = dict.fromkeys(("exact_duplicate", "missing_customer_id", "unparseable_order_ts",
                             "future_order_ts", "refund_netted", "cancellation_netted",
                             "cancelled_order"), 0)
    normalised = dict.fromkeys(("mixed_date_format", "mixed_date_format_dmy_hm",
                                "mixed_date_format_ymd_slash", "category_whitespace_case",
                                "touch_channel_whitespace_case"), 0)
    touch_labels = list(CHANNELS)
    if touchpoints:
        touch_text = touch_ch.astype(np.int16)  # index into touch_labels (variants after CHANNELS)
    phone_dashed = np.zeros(n_cust, dtype=bool)
    if messy:
        rows, removed, orders_normalised = inject_order_defects(rng_messy, rows, pop.signup_sec,
                                                                t_start, horizon)
        normalised.update(orders_normalised)
        bad = np.sort(rng_messy.choice(n_touch, _count(
            DEFECT_RATES["touch_channel_whitespace_case"], n_touch), replace=False))
        # Without touchpoints the draws are made all the same (the phone formats stay the same).
        variants = _channel_variants(rng_messy, touch_ch[bad] if touchpoints
                                     else np.zeros(bad.size, np.int8))
        if touchpoints:
            extra = sorted(set(variants))
            touch_labels += extra
            position = {v: len(CHANNELS) + i for i, v in enumerate(extra)}
            touch_text[bad] = [position[v] for v in variants]
            normalised["touch_channel_whitespace_case"] = int(bad.size)
        del bad, variants
        phone_dashed = rng_messy.random(n_cust) < 0.5

    # Files ------------------------------------------------------------------------------------
    width = max(6, len(str(n_cust)))
    id_table = np.hstack([np.full((n_cust, 1), ord("C"), np.uint8),
                          _digit_matrix(np.arange(1, n_cust + 1), width)])
    cust_ids = _gather(np.arange(n_cust), id_table)
    n_rows: dict[str, int] = {}
    n_rows["customers.csv"] = _write_customers(
        out / "customers.csv", rng_people, pop, cust_ids, acq_channel, phone_dashed, t_start,
        n_days, "gbk" if messy else "utf-8")
    n_rows["orders.csv"] = _write_orders(out / "orders.csv", rows, id_table, t_start, n_days)
    del rows
    if touchpoints:
        # Channel, CampaignID, Event and Cost depend only on (channel text, campaign): one lookup.
        canonical = [CHANNELS.index(v.strip().lower()) for v in touch_labels]
        tails = [f"{text},{camp},{CHANNEL_EVENT[c]},{CHANNEL_COST_CENTS[c] / 100:.2f}"
                 for text, c in zip(touch_labels, canonical) for camp in TOUCH_CAMPAIGN]
        touch_text *= len(TOUCH_CAMPAIGN)
        touch_text += touch_camp  # now the index into tails
        n_rows["touchpoints.csv"] = _write_csv_with_tail(
            out / "touchpoints.csv",
            ("CustID", "TouchTime", "Channel", "CampaignID", "Event", "Cost"),
            [[_gather(touch_cust, id_table)], [_timestamp(touch_sec, t_start, n_days)]],
            touch_text, tails, n_touch)
        del touch_text, touch_cust, touch_camp, touch_sec, touch_ch

    # Spend per month and channel, and the touch cost of each always-on campaign (index into
    # TOUCH_CAMPAIGN; e-mail touches outside the newsletter and direct ones have no campaign).
    spend = counts * CHANNEL_COST_CENTS
    n_rows["channel_spend.csv"] = _write_csv(
        out / "channel_spend.csv", ("Month", "Channel", "Spend"),
        [[_labels(np.repeat(np.arange(n_months), len(CHANNELS)),
                  [str(month0 + np.timedelta64(m, "M")) for m in range(n_months)])],
         [_labels(np.tile(np.arange(len(CHANNELS)), n_months), CHANNELS)],
         _money(spend.ravel())], n_months * len(CHANNELS))
    campaign_cost = spend.sum(axis=0)
    campaign_cost[0] = n_newsletter * CHANNEL_COST_CENTS[0]
    for cid, name, channel in CAMPAIGNS:
        if cid in experiments:
            experiments[cid]["name"], experiments[cid]["channel"] = name, channel
    n_rows["campaigns.csv"] = _write_campaigns(out / "campaigns.csv", experiments, campaign_cost,
                                               _day(t_start, 0), _day(t_start, horizon - 1))
    flags = ("0", "1")
    n_rows["campaign_members.csv"] = _write_csv(
        out / "campaign_members.csv",
        ("CampaignID", "CustID", "Group", "Delivered", "Opened", "Clicked", "Converted",
         "Revenue", "PrePeriodValue"),
        [[_labels(members["cid"], ("C01", "C02"))], [_gather(members["cust"], id_table)],
         [_labels(members["group"], ("control", "treatment", "A", "B", "C"))],
         [_labels(members["delivered"], flags)], [_labels(members["opened"], flags)],
         [_labels(members["clicked"], flags)], [_labels(members["converted"], flags)],
         _money(members["revenue"]), _money(members["pre"])], members["cust"].size)

    # Truth ------------------------------------------------------------------------------------
    share_sample = np.bincount(conv_set, minlength=jm.prior.size) @ jm.phi
    share_expected = jm.given_conv @ jm.phi
    seg_counts = np.bincount(pop.segment, minlength=len(SEGMENTS))
    truth = {
        "generator": "crmbook.synth",
        "seed": int(seed), "customers": n_cust, "messy": bool(messy),
        "time_unit": "days", "start": _day(t_start, 0), "end": _day(t_start, horizon - 1),
        "observation_days": n_days,
        "signup_window_days": round(SIGNUP_FRACTION * horizon / day, 6),
        "model": "BG/NBD purchases (Fader, Hardie & Lee 2005) with Gamma-Gamma spend (Fader, "
                 "Hardie & Lee 2005, RFM and CLV). The first purchase is the sign-up at "
                 "signup_window_days * Beta(signup.a, signup.b); lambda is in purchases per day; "
                 "dropout happens only after repeat purchases.",
        "segments": {s.name: {
            "share": s.share, "n_customers": int(seg_counts[i]),
            "bgnbd": {"r": s.r, "alpha": s.alpha, "a": s.a, "b": s.b},
            "gamma_gamma": {"p": s.p, "q": s.q, "gamma": s.gamma},
            "signup": {"distribution": "beta", "a": s.signup_a, "b": s.signup_b},
            "mean_rate_per_day": round(s.r / s.alpha, 10),
            "mean_dropout": round(s.a / (s.a + s.b), 10),
            "mean_order_value": round(s.mean_spend, 6),
        } for i, s in enumerate(SEGMENTS)},
        "customer_segment": "__CUSTOMER_SEGMENT__",
        "channels": {c: {"pi": float(CHANNEL_PI[i]), "effect": float(CHANNEL_EFFECT[i]),
                         "cost_per_touch": float(CHANNEL_COST_CENTS[i]) / 100,
                         "event": CHANNEL_EVENT[i], "campaign_id": TOUCH_CAMPAIGN[i] or None}
                     for i, c in enumerate(CHANNELS)},
        "base_conversion": BASE_CONVERSION,
        "mean_conversion_probability": round(jm.p_bar, 10),
        "journeys": {"converting": int(n_orders), "non_converting": n_nc,
                     "window_days": JOURNEY_WINDOW_DAYS,
                     "acq_channel": "last touch of the journey behind the customer's first order"},
        "channel_true_share": {c: round(float(share_sample[i] / share_sample.sum()), 10)
                               for i, c in enumerate(CHANNELS)},
        "channel_true_share_expected": {
            c: round(float(share_expected[i] / share_expected.sum()), 10)
            for i, c in enumerate(CHANNELS)},
        "channel_true_share_definition": SHAPLEY_DEFINITION,
        "experiments": experiments,
        "defects": {
            "transactions": removed,
            "normalised": normalised,
            "customers": {"phone_dashed_format": int(phone_dashed.sum())},
            "encoding": {"customers.csv": "gbk"} if messy else {},
        },
        "encodings": {f: "gbk" if messy and f == "customers.csv" else "utf-8" for f in n_rows},
        "rows": n_rows,
        "genuine_orders": int(n_orders),
        "genuine_revenue": round(genuine_revenue / 100, 2),
    }
    if not touchpoints:  # no touch log: nothing to attribute, so no attribution truth
        for key in ("channel_true_share", "channel_true_share_expected",
                    "channel_true_share_definition"):
            del truth[key]
        truth["touchpoints_written"] = False
        truth["journeys"]["touchpoints"] = ("not written; the journeys were drawn all the same, "
                                            "for AcqChannel, channel_spend.csv and campaign costs")
    # customer_segment is rendered like json.dumps(indent=2) would, but vectorised.
    head, tail = json.dumps(truth, indent=2, sort_keys=True, ensure_ascii=False).split(
        '"__CUSTOMER_SEGMENT__"')
    lines = [[_literal('    "'), cust_ids, _literal('": "'),
              _labels(pop.segment, [s.name for s in SEGMENTS]), _literal('"')]]
    with open(out / "truth.json", "wb") as sink:
        sink.write((head + "{\n").encode("utf-8"))
        for chunk in _render(lines, n_cust, row_end=",\n"):
            sink.write(chunk)
        sink.seek(-2, os.SEEK_CUR)  # the tail overwrites the ",\n" after the last entry
        sink.write(("\n  }" + tail + "\n").encode("utf-8"))
    return out


def _write_customers(path: Path, rng: np.random.Generator, pop: Population, cust_ids: Piece,
                     acq_channel: np.ndarray, phone_dashed: np.ndarray, t_start: np.datetime64,
                     n_days: int, encoding: str) -> int:
    """customers.csv: fake names, unique e-mails, Chinese mobiles, demographics, sign-up."""
    n = pop.lam.size
    chinese = rng.random(n) < CN_NAME_SHARE
    sur, given = rng.integers(0, len(CN_SURNAMES), n), rng.integers(0, len(CN_GIVEN), n)
    first, last = rng.integers(0, len(EN_FIRST), n), rng.integers(0, len(EN_LAST), n)
    n_cn = len(CN_SURNAMES) * len(CN_GIVEN)
    name_code = np.where(chinese, sur * len(CN_GIVEN) + given, n_cn + first * len(EN_LAST) + last)
    names = [s + g for s in CN_SURNAMES for g in CN_GIVEN] + \
            [f + " " + la for f in EN_FIRST for la in EN_LAST]
    mails = [g + "." + s for s in CN_SURNAMES_PY for g in CN_GIVEN_PY] + \
            [(f + "." + la).lower() for f in EN_FIRST for la in EN_LAST]
    tag = rng.permutation(n) + 1  # makes every e-mail unique
    mobile = rng.choice(MOBILE_PREFIXES, n)
    local = rng.integers(0, 100_000_000, n)
    style = phone_dashed.astype(np.int8)
    age = rng.integers(18, 76, n)
    city = rng.choice(len(REGION_CITIES), n, p=CITY_WEIGHTS / CITY_WEIGHTS.sum())
    return _write_csv(path, ("CustID", "Name", "Email", "Phone", "Gender", "Age", "Region", "City",
                             "SignupDate", "AcqChannel"), [
        [cust_ids],
        [_labels(name_code, names)],
        [_labels(name_code, mails), _digits(tag, len(str(n)), strip=True),
         _labels(chinese.astype(np.int8), ("@example.com", "@example.cn"))],
        [_labels(style, ("+86 ", "")), _digits(mobile, 3), _labels(style, (" ", "-")),
         _digits(local // 10_000, 4), _labels(style, (" ", "-")), _digits(local % 10_000, 4)],
        [_labels(rng.integers(0, 2, n), ("F", "M"))],
        [_digits(age, 2)],
        [_labels(city, [r for r, _ in REGION_CITIES])],
        [_labels(city, [c for _, c in REGION_CITIES])],
        [_timestamp(pop.signup_sec, t_start, n_days, with_time=False)],
        [_labels(acq_channel, CHANNELS)],
    ], n, encoding)


def _write_orders(path: Path, rows: OrderRows, id_table: np.ndarray, t_start: np.datetime64,
                  n_days: int) -> int:
    """orders.csv from OrderRows (blank customer ids are the two rows after the id table)."""
    blanks, blank_mask = _table(["", "  "])
    table = np.zeros((id_table.shape[0] + 2, max(id_table.shape[1], blanks.shape[1])), np.uint8)
    keep = np.zeros(table.shape, bool)
    table[:-2, : id_table.shape[1]], keep[:-2, : id_table.shape[1]] = id_table, True
    table[-2:, : blanks.shape[1]], keep[-2:, : blanks.shape[1]] = blanks, blank_mask
    n = rows.order_no.size
    width = max(7, len(str(int(rows.order_no.max(initial=0)))))
    return _write_csv(path, ("OrderNo", "CustID", "OrderDate", "Total", "Qty", "SKU", "Category",
                             "Channel", "Status"), [
        [_literal("O"), _digits(rows.order_no, width)],
        [_gather(rows.cust, table, keep)],
        [_override(_timestamp(rows.sec, t_start, n_days), rows.date_rows, rows.date_texts)],
        _money(rows.cents),
        [_digits(rows.qty, 3, strip=True)],
        [_labels(_Mapped(rows.sku, lambda v: v // 10_000), CATEGORY_CODES), _literal("-"),
         _digits(_Mapped(rows.sku, lambda v: v % 10_000), 4)],
        [_labels(rows.cat, rows.cat_labels)],
        [_labels(rows.channel, SALES_CHANNELS)],
        [_labels(rows.status, STATUSES)],
    ], n)


def _write_campaigns(path: Path, experiments: dict, touch_cost_cents: np.ndarray, first: str,
                     last: str) -> int:
    """campaigns.csv: experiments cost deliveries x e-mail cost; always-on campaigns cost the
    sum of their touchpoints' cost."""
    starts, ends, cost = [], [], []
    for cid, _, _ in CAMPAIGNS:
        if cid in experiments:
            starts.append(experiments[cid]["start"])
            ends.append(experiments[cid]["end"])
            cost.append(experiments[cid]["delivered"] * int(CHANNEL_COST_CENTS[0]))
        else:
            starts.append(first)
            ends.append(last)
            cost.append(int(touch_cost_cents[TOUCH_CAMPAIGN.index(cid)]))
    k = np.arange(len(CAMPAIGNS))
    return _write_csv(path, ("CampaignID", "Name", "Channel", "StartDate", "EndDate", "Cost"), [
        [_labels(k, [c[0] for c in CAMPAIGNS])], [_labels(k, [c[1] for c in CAMPAIGNS])],
        [_labels(k, [c[2] for c in CAMPAIGNS])], [_labels(k, starts)], [_labels(k, ends)],
        _money(np.array(cost))], len(CAMPAIGNS))
