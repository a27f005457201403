"""Multi-channel attribution on aggregated customer paths, written by hand.

Why hand-written
----------------
* ChannelAttribution (R/Python) is GPL-3, which cannot be bundled with this MIT project, and
  its default ``markov_model`` estimates removal effects by *simulating* journeys: on its own
  white-paper example it returns 2.10 / 0.90 where the exact answer is 2 / 1 (its step limit
  truncates about 12% of the simulated paths). Here the Markov chain is solved exactly as an
  absorbing chain, one sparse linear solve per channel, so results are deterministic.
* marketing-attribution-models is not used either: the few formulas needed are short enough to
  own, test against published numbers and keep free of extra dependencies.
* Every model works off aggregated path counts only, so raw journeys and their aggregated
  paths give identical results, and 10M journeys reduce to a small table first.

Representation
--------------
A *paths* frame has one row per path (rows need not be unique; they are only ever summed):

``path``         tuple of channel names in time order (non-empty)
``conversions``  number of journeys on this path that converted (float, >= 0)
``value``        total conversion value of those journeys (float, currency units)
``nulls``        number of journeys on this path that did not convert (float, >= 0)

Every model returns a tidy frame with columns ``model, channel, conversions, value, share``
(``share`` = channel conversions / total conversions), one row per channel seen in the data,
channels sorted; some models add diagnostic columns. Credited conversions always sum to the
total conversions of the input.

Models: heuristics (first / last / last non-direct / linear / time decay / position based),
Markov removal effect of order 1..3 (exact), Shapley (exact up to 15 channels), a logistic
model (coefficient split), the data-driven model (Shapley values of the fitted logistic
conversion probability, :func:`logistic_shapley_attribution`), bootstrap intervals for any
model, and ``misallocation`` for simulations.

The 05 stage (end of the module): journeys from a touch log and the clean orders (DuckDB sorts the
log by customer and time, numpy cuts it into journeys and counts them by path: :func:`journey_paths`,
with the lookback window read from the data by :func:`choose_lookback`),
the model line-up with intervals (:func:`attribute`), the check against a known truth, channel
economics, and the report's helpers; :func:`evaluate` runs it all.
W-shaped attribution is not provided: it needs the index of the lead-creating touch, which the
path-only representation does not carry.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp
from scipy.sparse.linalg import spsolve

_log = logging.getLogger(__name__)  # progress lines (crmbook.progress)

__all__ = [
    "MarkovResult",
    "aggregate_journeys",
    "bootstrap_shares",
    "first_touch",
    "heuristic_attribution",
    "last_non_direct",
    "last_touch",
    "linear",
    "logistic_attribution",
    "logistic_shapley_attribution",
    "markov_attribution",
    "markov_removal_effects",
    "misallocation",
    "parse_paths",
    "position_based",
    "shapley_attribution",
    "shapley_values",
    "time_decay",
    "transition_matrix",
]

PATH_COLUMNS = ("path", "conversions", "value", "nulls")
JOURNEY_COLUMNS = ("journey_id", "ts", "channel", "converted", "value")
START, CONVERSION, NULL = "(start)", "(conversion)", "(null)"
MAX_EXACT_SHAPLEY = 15
T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# Input: ChannelAttribution layout and raw journeys -> paths
# --------------------------------------------------------------------------------------------
def _clean_path(path: tuple, drop: frozenset, dedupe: bool) -> tuple:
    if drop:
        path = tuple(c for c in path if c not in drop)
    if dedupe and len(path) > 1:
        path = tuple(c for i, c in enumerate(path) if i == 0 or c != path[i - 1])
    return path


def _finish_paths(paths: pd.Series, conv: np.ndarray, value: np.ndarray, nulls: np.ndarray,
                  drop_channels: Iterable[str], dedupe_consecutive: bool) -> pd.DataFrame:
    drop = frozenset(drop_channels)
    if drop or dedupe_consecutive:
        paths = pd.Series([_clean_path(p, drop, dedupe_consecutive) for p in paths], dtype=object)
    out = pd.DataFrame({"path": paths.to_numpy(dtype=object), "conversions": conv,
                        "value": value, "nulls": nulls})
    out = out[out["path"].map(len) > 0]
    if drop or dedupe_consecutive:  # cleaning can make two paths equal: merge them
        out = out.groupby("path", sort=False, as_index=False)[["conversions", "value", "nulls"]].sum()
    return out.reset_index(drop=True)[list(PATH_COLUMNS)]


def parse_paths(df: pd.DataFrame, sep: str = " > ", *, drop_channels: Iterable[str] = (),
                dedupe_consecutive: bool = False) -> pd.DataFrame:
    """Turn ChannelAttribution's layout into a paths frame.

    ``df`` has ``path`` ('a > b > c'), ``total_conversions`` and optionally
    ``total_conversion_value`` and ``total_null`` (missing ones count as 0). Channel names are
    stripped of surrounding blanks. ``drop_channels`` removes those channels from every path
    (e.g. ``["direct"]``); journeys left with no touch are dropped, because no channel can be
    credited for them. ``dedupe_consecutive`` collapses repeated consecutive touches of one
    channel ('a > a > b' -> 'a > b'). Default False: the data are kept as observed. For the
    order-1 Markov model the choice does not matter (it only changes self-loops, and the absorbing
    probabilities do not depend on them); it does change touch-counting heuristics and Markov
    models of order >= 2. Paths that become equal are merged.
    """
    if "path" not in df.columns or "total_conversions" not in df.columns:
        raise ValueError("parse_paths needs columns 'path' and 'total_conversions' "
                         f"(ChannelAttribution layout); got {list(df.columns)}")
    if len(df) == 0:
        raise ValueError("parse_paths: the input has no rows")
    n = len(df)
    conv = pd.to_numeric(df["total_conversions"]).to_numpy(dtype=float)
    value = (pd.to_numeric(df["total_conversion_value"]).to_numpy(dtype=float)
             if "total_conversion_value" in df.columns else np.zeros(n))
    nulls = (pd.to_numeric(df["total_null"]).to_numpy(dtype=float)
             if "total_null" in df.columns else np.zeros(n))
    paths = pd.Series([tuple(c.strip() for c in str(s).split(sep) if c.strip()) for s in df["path"]],
                      dtype=object)
    return _finish_paths(paths, conv, value, nulls, drop_channels, dedupe_consecutive)


def _key_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated index ranges [s, s+len) for every (s, len)."""
    total = int(lengths.sum())
    offsets = np.repeat(starts - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
    return offsets + np.arange(total)


def _journey_codes(jid: pd.Series) -> np.ndarray:
    """Dense integer codes for journey ids, cheapest way first (sorted, small-range ints, hash)."""
    n = len(jid)
    ids = jid.to_numpy()
    if jid.is_monotonic_increasing:
        new = np.empty(n, dtype=bool)
        new[0] = True
        np.not_equal(ids[1:], ids[:-1], out=new[1:])
        return np.cumsum(new) - 1
    if np.issubdtype(ids.dtype, np.integer):
        lo, hi = int(ids.min()), int(ids.max())
        if hi - lo < 4 * n:
            present = np.zeros(hi - lo + 1, dtype=bool)
            present[ids - lo] = True
            return (np.cumsum(present) - 1)[ids - lo]
    return pd.factorize(jid, sort=False)[0].astype(np.int64)


def _stable_argsort_codes(codes: np.ndarray) -> np.ndarray:
    """Stable argsort of non-negative integer codes: LSD radix sort over 16-bit digits."""
    c = codes.astype(np.uint64)
    n_bits = max(int(c.max()).bit_length(), 1) if len(c) else 1
    order = None
    for shift in range(0, n_bits, 16):
        digit = ((c if order is None else c[order]) >> np.uint64(shift)) & np.uint64(0xFFFF)
        o = np.argsort(digit.astype(np.uint16), kind="stable")
        order = o if order is None else order[o]
    return order


def _path_keys(digits: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
               base: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact keys of the paths of journeys stored one after the other: ``digits`` (channel code + 1,
    in 1..base-1) of every touch, each journey ``lengths`` touches from ``starts``.
    Returns (short, keys, long_keys): ``short`` per journey, whether its path fits one integer
    (at most 62 / log2(base + 1) touches); ``keys`` of the short ones, sum of digit x base**position;
    ``long_keys`` of the others, the bytes of their digits (object array)."""
    fit = max(1, int(62 // math.log2(base + 1)))  # base**fit < 2**62: no int64 overflow
    short = lengths <= fit
    keys = np.empty(0, dtype=np.int64)
    if short.any():
        if short.all():
            s_starts, s_len, idx = starts, lengths, None
        else:
            s_starts, s_len = starts[short], lengths[short]
            idx = _key_ranges(s_starts, s_len)
        offsets = np.concatenate(([0], np.cumsum(s_len)[:-1]))
        pos = np.arange(len(digits) if idx is None else len(idx))
        pos -= np.repeat(offsets, s_len)
        weights = (base ** np.arange(fit, dtype=np.int64))[pos]
        del pos
        weights *= digits if idx is None else digits[idx]
        keys = np.add.reduceat(weights, offsets) if len(offsets) else keys
    long_keys = np.empty(int((~short).sum()), dtype=object)
    if len(long_keys):
        buf = digits.astype(np.uint32).tobytes()
        long_keys[:] = [buf[4 * s:4 * (s + k)] for s, k in zip(starts[~short], lengths[~short])]
    return short, keys, long_keys


def _decode_short_keys(keys: np.ndarray, base: int, names: Sequence) -> list[tuple]:
    """The paths (tuples of ``names``) of integer path keys of :func:`_path_keys`."""
    fit = max(1, int(62 // math.log2(base + 1)))
    digits = np.empty((len(keys), fit), dtype=np.int64)
    rest = np.asarray(keys, dtype=np.int64).copy()
    for j in range(fit):
        digits[:, j] = rest % base
        rest //= base
    present = digits > 0                     # the digits of a path are its first positions
    flat = np.asarray(names, dtype=object)[digits[present] - 1].tolist()
    bounds = np.concatenate(([0], np.cumsum(present.sum(axis=1)))).tolist()
    return [tuple(flat[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def _decode_long_keys(keys: np.ndarray, names: Sequence) -> list[tuple]:
    """The paths (tuples of ``names``) of byte path keys of :func:`_path_keys`."""
    return [tuple(names[d - 1] for d in np.frombuffer(k, dtype=np.uint32).tolist()) for k in keys]


def aggregate_journeys(journeys: pd.DataFrame, *, drop_channels: Iterable[str] = (),
                       dedupe_consecutive: bool = False) -> pd.DataFrame:
    """Aggregate raw touch rows into a paths frame.

    ``journeys`` has one row per touch: ``journey_id``, ``ts`` (anything sortable), ``channel``,
    ``converted`` and ``value``. ``converted`` and ``value`` are journey attributes: a journey
    converted if any of its rows says so, and its value is the largest ``value`` on its rows
    (so the value may be repeated on every row or given on one row only); non-converting
    journeys carry no value. Touches are ordered by ``ts`` within a journey (ties keep row
    order); rows already sorted by (journey_id, ts) skip the sort. Rows with a missing channel
    are ignored. ``drop_channels`` and ``dedupe_consecutive`` as in :func:`parse_paths`; the
    conversion status is taken before channels are dropped, and journeys left with no touch are
    dropped. Vectorised: a path of up to 62 / log2(n_channels + 2) touches is keyed by one
    integer, longer ones by their bytes.
    """
    missing = [c for c in JOURNEY_COLUMNS if c not in journeys.columns]
    if missing:
        raise ValueError(f"aggregate_journeys: missing column(s) {missing}; "
                         f"need {list(JOURNEY_COLUMNS)}")
    n_rows = len(journeys)
    if n_rows == 0:
        raise ValueError("aggregate_journeys: the journeys frame has no rows")
    jid = journeys["journey_id"]
    if jid.isna().any():
        raise ValueError("aggregate_journeys: column 'journey_id' has missing values")

    jcode = _journey_codes(jid)
    ts = journeys["ts"].to_numpy()
    same = jcode[1:] == jcode[:-1]
    in_order = bool(np.all(jcode[1:] >= jcode[:-1])) and not np.any(same & (ts[1:] < ts[:-1]))
    del same
    conv_raw = journeys["converted"].to_numpy(dtype=float, na_value=0.0)
    value_raw = journeys["value"].to_numpy(dtype=float, na_value=np.nan)
    channel = journeys["channel"]
    if isinstance(channel.dtype, pd.CategoricalDtype):
        ccode = channel.cat.codes.to_numpy()
        names = np.asarray(channel.cat.categories, dtype=object)
    else:
        ccode, names = pd.factorize(channel, sort=False)
        names = np.asarray(names, dtype=object)
    usable = np.ones(len(names) + 1, dtype=bool)
    usable[-1] = False  # code -1 = missing channel
    drop = list(drop_channels)
    if drop:
        usable[:-1] = ~pd.Index(names).isin(drop)
    if not in_order:
        # sort by ts, then stably by journey (radix): = lexsort((ts, jcode)), ties keep row order
        order = np.argsort(ts, kind="stable")
        order = order[_stable_argsort_codes(jcode[order])]
        jcode, ccode = jcode[order], ccode[order]
        conv_raw, value_raw = conv_raw[order], value_raw[order]
        del order
    del ts
    # journey attributes, from every row (before channels are dropped)
    first_rows = np.flatnonzero(np.concatenate(([True], jcode[1:] != jcode[:-1])))
    converted = np.maximum.reduceat(conv_raw, first_rows) > 0
    jvalue = np.fmax.reduceat(value_raw, first_rows)
    jvalue = np.where(converted & np.isfinite(jvalue), jvalue, 0.0)
    del conv_raw, value_raw, first_rows
    jcode = np.cumsum(np.concatenate(([False], jcode[1:] != jcode[:-1])))  # 0..n_journeys-1

    keep = usable[ccode]
    if not keep.all():
        jcode, ccode = jcode[keep], ccode[keep]
    del keep
    if len(ccode) == 0:
        raise ValueError("aggregate_journeys: no touches left after dropping channels")
    if dedupe_consecutive and len(ccode) > 1:
        dup = np.concatenate(([False], (jcode[1:] == jcode[:-1]) & (ccode[1:] == ccode[:-1])))
        jcode, ccode = jcode[~dup], ccode[~dup]
        del dup
    n = len(ccode)
    starts = np.flatnonzero(np.concatenate(([True], jcode[1:] != jcode[:-1])))
    lengths = np.diff(np.append(starts, n))
    jids = jcode[starts]
    del jcode
    conv_j = converted[jids].astype(float)
    value_j = jvalue[jids]
    cc = ccode.astype(np.int64) + 1  # digits 1..n_channels

    short, keys, long_keys = _path_keys(cc, starts, lengths, len(names) + 1)
    groups: list[tuple[np.ndarray, np.ndarray]] = []  # (journey of each key, key codes)
    if short.any():
        groups.append((np.flatnonzero(short), pd.factorize(keys)[0]))
    if not short.all():
        groups.append((np.flatnonzero(~short), pd.factorize(long_keys)[0]))

    frames = []
    for members, inv in groups:
        k = int(inv.max()) + 1
        rep = np.empty(k, dtype=np.int64)
        rep[inv] = members  # any journey with that path
        conv = np.bincount(inv, weights=conv_j[members], minlength=k)
        total = np.bincount(inv, minlength=k).astype(float)
        value = np.bincount(inv, weights=value_j[members], minlength=k)
        r_len = lengths[rep]
        flat = names[cc[_key_ranges(starts[rep], r_len)] - 1].tolist()
        bounds = np.concatenate(([0], np.cumsum(r_len))).tolist()
        paths = [tuple(flat[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        frames.append(pd.DataFrame({"path": pd.Series(paths, dtype=object), "conversions": conv,
                                    "value": value, "nulls": total - conv}))
    return pd.concat(frames, ignore_index=True)[list(PATH_COLUMNS)]


# --------------------------------------------------------------------------------------------
# Validation and integer encoding of a paths frame
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Encoded:
    channels: list            # sorted channel names
    codes: np.ndarray         # channel code of every touch, paths concatenated
    path_id: np.ndarray       # path row of every touch
    pos: np.ndarray           # position of every touch in its path, 0-based
    length: np.ndarray        # touches per path
    start: np.ndarray         # index of each path's first touch in ``codes``
    conv: np.ndarray          # converting journeys per path
    nulls: np.ndarray         # non-converting journeys per path
    value: np.ndarray         # conversion value per path

    @property
    def n_channels(self) -> int:
        return len(self.channels)

    @property
    def total_conversions(self) -> float:
        return float(self.conv.sum())

    @property
    def total_value(self) -> float:
        return float(self.value.sum())

    def credit(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel conversions and value, given per-touch weights summing to 1 per path."""
        c = np.bincount(self.codes, weights=weights * self.conv[self.path_id],
                        minlength=self.n_channels)
        v = np.bincount(self.codes, weights=weights * self.value[self.path_id],
                        minlength=self.n_channels)
        return c, v


def _encode(paths: pd.DataFrame) -> _Encoded:
    """Validate a paths frame and flatten it into integer arrays (zero-journey rows dropped)."""
    if not isinstance(paths, pd.DataFrame):
        raise ValueError(f"paths must be a pandas DataFrame, got {type(paths).__name__}")
    missing = [c for c in PATH_COLUMNS if c not in paths.columns]
    if missing:
        raise ValueError(f"paths: missing column(s) {missing}; need {list(PATH_COLUMNS)} "
                         "(use parse_paths or aggregate_journeys to build them)")
    if len(paths) == 0:
        raise ValueError("paths is empty: there is nothing to attribute")
    conv = pd.to_numeric(paths["conversions"]).to_numpy(dtype=float)
    nulls = pd.to_numeric(paths["nulls"]).to_numpy(dtype=float)
    value = pd.to_numeric(paths["value"]).to_numpy(dtype=float)
    for name, arr in (("conversions", conv), ("nulls", nulls), ("value", value)):
        if not np.isfinite(arr).all():
            raise ValueError(f"paths: column {name!r} has missing or infinite values")
    for name, arr in (("conversions", conv), ("nulls", nulls)):
        if (arr < 0).any():
            raise ValueError(f"paths: column {name!r} has negative counts "
                             f"(row {int(np.argmax(arr < 0))})")
    if ((conv == 0) & (value != 0)).any():
        raise ValueError("paths: a path with 0 conversions has a non-zero value "
                         f"(row {int(np.argmax((conv == 0) & (value != 0)))})")
    keep = (conv + nulls) > 0
    if not keep.any():
        raise ValueError("paths: every path has 0 conversions and 0 nulls")
    path_list = paths["path"].tolist()
    if not keep.all():
        idx = np.flatnonzero(keep)
        path_list = [path_list[i] for i in idx]
        conv, nulls, value = conv[keep], nulls[keep], value[keep]
    if set(map(type, path_list)) != {tuple}:
        for i, p in enumerate(path_list):
            if isinstance(p, str) or not isinstance(p, (tuple, list)):
                raise ValueError(f"paths: 'path' must hold tuples of channel names, row {i} "
                                 f"holds {p!r} (use parse_paths to split 'a > b' strings)")
    length = np.fromiter(map(len, path_list), dtype=np.int64, count=len(path_list))
    if (length == 0).any():
        raise ValueError(f"paths: row {int(np.argmax(length == 0))} has an empty path; "
                         "journeys without touches cannot be attributed")
    if conv.sum() <= 0:
        raise ValueError("paths have no conversions: attribution needs at least one "
                         "converting journey")
    names = set(chain.from_iterable(path_list))
    if any(c is None or (isinstance(c, float) and math.isnan(c)) for c in names):
        raise ValueError("paths: a path contains a missing channel name")
    try:
        channels = sorted(names)
    except TypeError:
        channels = sorted(names, key=str)
    lookup = {c: i for i, c in enumerate(channels)}
    codes = np.fromiter(map(lookup.__getitem__, chain.from_iterable(path_list)), dtype=np.int64,
                        count=int(length.sum()))
    start = np.concatenate(([0], np.cumsum(length)[:-1]))
    path_id = np.repeat(np.arange(len(length)), length)
    pos = np.arange(len(codes)) - start[path_id]
    return _Encoded(channels, codes, path_id, pos, length, start, conv, nulls, value)


def _distinct_pairs(enc: _Encoded) -> tuple[np.ndarray, np.ndarray]:
    """(path, channel) code pairs of the distinct channels of every path, sorted by path then
    channel. A presence matrix when it is small (``np.unique`` hashes, which is far slower)."""
    n_paths, n = len(enc.length), enc.n_channels
    if n_paths * n <= 50_000_000:
        present = np.zeros((n_paths, n), dtype=bool)
        present[enc.path_id, enc.codes] = True
        pid, ch = np.nonzero(present)
        return pid.astype(np.int64), ch.astype(np.int64)
    pair = np.sort(enc.path_id * n + enc.codes)
    pair = pair[np.concatenate(([True], pair[1:] != pair[:-1]))]
    return pair // n, pair % n


def _frame(model: str, enc: _Encoded, conv: np.ndarray, value: np.ndarray,
           **extra: np.ndarray) -> pd.DataFrame:
    out = pd.DataFrame({"model": model, "channel": enc.channels, "conversions": conv,
                        "value": value, "share": conv / enc.total_conversions})
    for k, v in extra.items():
        out[k] = v
    return out


# --------------------------------------------------------------------------------------------
# Heuristics
# --------------------------------------------------------------------------------------------
def _w_first(enc: _Encoded) -> np.ndarray:
    return (enc.pos == 0).astype(float)


def _w_last(enc: _Encoded) -> np.ndarray:
    return (enc.pos == enc.length[enc.path_id] - 1).astype(float)


def _w_last_non_direct(enc: _Encoded, direct_channel: str) -> np.ndarray:
    if direct_channel not in enc.channels:
        return _w_last(enc)
    d = enc.channels.index(direct_channel)
    key = np.where(enc.codes != d, enc.pos, -1)
    last_nd = np.maximum.reduceat(key, enc.start)
    chosen = np.where(last_nd >= 0, last_nd, enc.length - 1)
    return (enc.pos == chosen[enc.path_id]).astype(float)


def _w_linear(enc: _Encoded) -> np.ndarray:
    return 1.0 / enc.length[enc.path_id]


def _w_time_decay(enc: _Encoded, half_life: float) -> np.ndarray:
    if not half_life > 0:
        raise ValueError(f"time_decay: half_life must be > 0 touches, got {half_life}")
    age = enc.length[enc.path_id] - 1 - enc.pos          # touches before the conversion
    w = np.exp2(-age / half_life)
    return w / np.bincount(enc.path_id, weights=w)[enc.path_id]


def _w_position(enc: _Encoded, first: float, last: float) -> np.ndarray:
    if first < 0 or last < 0 or first + last > 1 or first + last == 0:
        raise ValueError(f"position_based: need first, last >= 0, 0 < first + last <= 1; "
                         f"got first={first}, last={last}")
    n = enc.length[enc.path_id]
    is_first, is_last = enc.pos == 0, enc.pos == n - 1
    w = np.where(is_first, first, np.where(is_last, last, (1 - first - last) / np.maximum(n - 2, 1)))
    w = np.where(n == 2, np.where(is_first, first, last) / (first + last), w)
    return np.where(n == 1, 1.0, w)


def _heuristic(name: str, paths: pd.DataFrame, weights: Callable[[_Encoded], np.ndarray]) -> pd.DataFrame:
    enc = _encode(paths)
    return _frame(name, enc, *enc.credit(weights(enc)))


def first_touch(paths: pd.DataFrame) -> pd.DataFrame:
    """All credit of a journey to its first touch."""
    return _heuristic("first_touch", paths, _w_first)


def last_touch(paths: pd.DataFrame) -> pd.DataFrame:
    """All credit of a journey to its last touch."""
    return _heuristic("last_touch", paths, _w_last)


def last_non_direct(paths: pd.DataFrame, direct_channel: str = "direct") -> pd.DataFrame:
    """All credit to the last touch that is not ``direct_channel`` (Google Analytics' default
    model); a journey made of direct touches only credits direct."""
    return _heuristic("last_non_direct", paths, lambda e: _w_last_non_direct(e, direct_channel))


def linear(paths: pd.DataFrame) -> pd.DataFrame:
    """Equal credit to every touch (a channel touched twice gets two shares)."""
    return _heuristic("linear", paths, _w_linear)


def time_decay(paths: pd.DataFrame, half_life: float = 1.0) -> pd.DataFrame:
    """Credit halves every ``half_life`` touches back from the conversion.

    Paths carry no timestamps, so the age of a touch is its position counted from the end of
    the path (last touch = 0), in touches: weight = 2**(-age / half_life), normalised per path.
    With the default half-life of 1 touch the weights are 1, 1/2, 1/4, ... (GA4's time decay
    uses a 7-day half-life on clock time, which needs touch timestamps).
    """
    return _heuristic("time_decay", paths, lambda e: _w_time_decay(e, half_life))


def position_based(paths: pd.DataFrame, first: float = 0.4, last: float = 0.4) -> pd.DataFrame:
    """U-shaped: ``first`` to the first touch, ``last`` to the last, the rest split evenly over
    the middle touches. One touch gets all the credit; two touches split in the proportion
    first : last (0.5 / 0.5 by default)."""
    return _heuristic("position_based", paths, lambda e: _w_position(e, first, last))


def heuristic_attribution(paths: pd.DataFrame, *, direct_channel: str = "direct",
                          half_life: float = 1.0, first: float = 0.4,
                          last: float = 0.4) -> pd.DataFrame:
    """All six heuristic models in one tidy frame (the paths are encoded once)."""
    enc = _encode(paths)
    weights = {
        "first_touch": _w_first(enc),
        "last_touch": _w_last(enc),
        "last_non_direct": _w_last_non_direct(enc, direct_channel),
        "linear": _w_linear(enc),
        "time_decay": _w_time_decay(enc, half_life),
        "position_based": _w_position(enc, first, last),
    }
    return pd.concat([_frame(k, enc, *enc.credit(w)) for k, w in weights.items()],
                     ignore_index=True)


# --------------------------------------------------------------------------------------------
# Markov removal effect, solved exactly
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Chain:
    labels: list              # state labels (tuples of channels), index i -> node i + 1
    contains: np.ndarray      # (n_states, n_channels) bool: state i contains channel c
    q: sp.csr_matrix          # transient -> transient probabilities; node 0 = (start)
    b_conv: np.ndarray        # transient -> conversion probabilities
    b_null: np.ndarray        # transient -> null probabilities
    r_value: np.ndarray       # expected conversion value collected when leaving a node


def _build_chain(enc: _Encoded, order: int) -> _Chain:
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < 1:
        raise ValueError(f"Markov order must be a positive integer, got {order!r}")
    base = enc.n_channels + 1
    if order * math.log2(base) >= 62:
        raise ValueError(f"Markov order {order} with {enc.n_channels} channels is too large")
    # state of each touch = tuple of the last `order` channels (shorter at the path start),
    # encoded as sum_j (code[t-j] + 1) * base**j
    key = enc.codes + 1
    for j in range(1, order):
        prev = np.zeros_like(key)
        prev[j:] = enc.codes[:-j] + 1
        key = key + np.where(enc.pos >= j, prev, 0) * base ** j
    state, ukeys = pd.factorize(key, sort=True)
    n_states = len(ukeys)
    digits = np.stack([(ukeys // base ** j) % base for j in range(order)], axis=1)  # latest first
    contains = np.zeros((n_states, enc.n_channels), dtype=bool)
    for j in range(order):
        rows = np.flatnonzero(digits[:, j] > 0)
        contains[rows, digits[rows, j] - 1] = True
    labels = [tuple(enc.channels[d - 1] for d in row[::-1] if d > 0) for row in digits]

    node = state + 1
    n_path = enc.conv + enc.nulls
    w = n_path[enc.path_id]
    prev_node = np.empty_like(node)
    prev_node[0] = 0
    prev_node[1:] = node[:-1]
    frm = np.where(enc.pos == 0, 0, prev_node)
    last = enc.start + enc.length - 1
    n_nodes = n_states + 1
    exit_conv = np.bincount(node[last], weights=enc.conv, minlength=n_nodes)
    exit_null = np.bincount(node[last], weights=enc.nulls, minlength=n_nodes)
    exit_value = np.bincount(node[last], weights=enc.value, minlength=n_nodes)
    out_total = np.bincount(frm, weights=w, minlength=n_nodes) + exit_conv + exit_null
    q = sp.csr_matrix((w / out_total[frm], (frm, node)), shape=(n_nodes, n_nodes))
    q.sum_duplicates()
    return _Chain(labels, contains, q, exit_conv / out_total, exit_null / out_total,
                  exit_value / out_total)


def _absorb(q: sp.csr_matrix, rhs: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """Expected absorbed reward from (start) for each rhs column: solve (I - Q) x = rhs."""
    if keep is not None:
        idx = np.flatnonzero(keep)
        q, rhs = q[idx][:, idx], rhs[idx]
    a = (sp.identity(q.shape[0], format="csc") - q).tocsc()
    x = spsolve(a, rhs)
    x = np.asarray(x).reshape(q.shape[0], -1)
    return x[0]


@dataclass(frozen=True)
class MarkovResult:
    """Exact absorbing-chain solution of the order-``order`` Markov model.

    ``p_conversion``: P(conversion) per journey from (start); ``expected_value``: expected
    conversion value per journey; ``removal_effects``: 1 - P(conversion without c) / P(conversion)
    per channel; ``value_removal_effects``: the same for expected value; ``n_states``: number of
    transient channel states.
    """

    order: int
    p_conversion: float
    expected_value: float
    removal_effects: pd.Series
    value_removal_effects: pd.Series
    n_states: int


def _markov(enc: _Encoded, order: int) -> MarkovResult:
    ch = _build_chain(enc, order)
    rhs = np.column_stack([ch.b_conv, ch.r_value])
    p, ev = _absorb(ch.q, rhs)
    re = np.empty(enc.n_channels)
    re_v = np.empty(enc.n_channels)
    for c in range(enc.n_channels):
        keep = np.concatenate(([True], ~ch.contains[:, c]))
        p_c, ev_c = _absorb(ch.q, rhs, keep)
        re[c] = 1.0 - p_c / p
        re_v[c] = 1.0 - ev_c / ev if ev != 0 else np.nan
    idx = pd.Index(enc.channels, name="channel")
    return MarkovResult(order, float(p), float(ev), pd.Series(re, idx, name="removal_effect"),
                        pd.Series(re_v, idx, name="value_removal_effect"), len(ch.labels))


def markov_removal_effects(paths: pd.DataFrame, order: int = 1) -> MarkovResult:
    """Removal effects of the order-``order`` Markov chain, solved exactly.

    States are tuples of the last ``order`` channels (shorter tuples at the start of a path).
    Transition probabilities are journey-weighted counts (start -> first state -> ... ->
    conversion / null). P(conversion from start) solves (I - Q) x = b with ``spsolve``. Removing
    channel c redirects every transition into a state containing c to (null), i.e. those states
    are deleted from the system. Value uses the same chain with the conversion transition
    rewarded by the path's conversion value ("value-weighted paths"); its removal effect is
    1 - E[value without c] / E[value].
    """
    return _markov(_encode(paths), order)


def markov_attribution(paths: pd.DataFrame, order: int = 1) -> pd.DataFrame:
    """Markov removal-effect attribution (exact; see :func:`markov_removal_effects`).

    Conversions: total conversions x removal_effect_c / sum of removal effects. Value: total
    value x value_removal_effect_c / sum of value removal effects (value-weighted chain). Adds
    columns ``removal_effect`` and ``value_removal_effect``. Model name ``markov_<order>``.
    """
    enc = _encode(paths)
    res = _markov(enc, order)
    re = res.removal_effects.to_numpy()
    conv = enc.total_conversions * re / re.sum()
    re_v = res.value_removal_effects.to_numpy()
    s_v = np.nansum(re_v)
    value = enc.total_value * re_v / s_v if s_v != 0 else np.zeros_like(re_v)
    return _frame(f"markov_{order}", enc, conv, value, removal_effect=re, value_removal_effect=re_v)


def transition_matrix(paths: pd.DataFrame, order: int = 1) -> pd.DataFrame:
    """Transition probabilities of the order-``order`` chain, for a heatmap (dense).

    Rows: '(start)' and the channel states; columns: the channel states, '(conversion)',
    '(null)'. Higher-order states are labelled 'a > b'. Rows sum to 1.
    """
    enc = _encode(paths)
    ch = _build_chain(enc, order)
    names = [" > ".join(map(str, s)) for s in ch.labels]
    dense = ch.q.toarray()[:, 1:]
    data = np.column_stack([dense, ch.b_conv, ch.b_null])
    return pd.DataFrame(data, index=pd.Index([START] + names, name="from"),
                        columns=pd.Index(names + [CONVERSION, NULL], name="to"))


# --------------------------------------------------------------------------------------------
# Shapley
# --------------------------------------------------------------------------------------------
def _popcount(masks: np.ndarray) -> np.ndarray:
    return np.unpackbits(masks.astype(">u4").view(np.uint8).reshape(-1, 4), axis=1).sum(axis=1)


def _shapley_from_table(v: np.ndarray, n: int) -> np.ndarray:
    """Exact Shapley values from worths v[mask] over all 2**n coalitions (bit i = player i)."""
    masks = np.arange(1 << n, dtype=np.int64)
    size = _popcount(masks)
    fact = [math.factorial(k) for k in range(n + 1)]
    weight = np.array([fact[s] * fact[n - s - 1] / fact[n] if s < n else 0.0
                       for s in range(n + 1)])
    phi = np.empty(n)
    for i in range(n):
        without = masks[(masks >> i) & 1 == 0]
        phi[i] = np.sum(weight[size[without]] * (v[without | (1 << i)] - v[without]))
    return phi


def shapley_values(worth: Callable[[frozenset], float] | Mapping[frozenset, float],
                   players: Sequence[Hashable], *, max_exact: int = MAX_EXACT_SHAPLEY,
                   n_permutations: int = 2000, seed: int = 0) -> dict:
    """Shapley values of a cooperative game, from the definition.

    phi_i = sum over S not containing i of |S|! (n-|S|-1)! / n! * (v(S + i) - v(S)).
    ``worth`` is a function of a frozenset of players or a dict keyed by frozensets (every
    non-empty coalition must be present; v(empty) defaults to 0). Exact for up to ``max_exact``
    players (2**n worth evaluations); beyond that a Monte Carlo estimate averaging marginal
    contributions over ``n_permutations`` random orderings drawn with ``seed`` (unbiased,
    deterministic for a given seed, standard error ~ 1/sqrt(n_permutations)).
    """
    players = list(players)
    n = len(players)
    if n == 0:
        raise ValueError("shapley_values: no players")
    if len(set(players)) != n:
        raise ValueError("shapley_values: players must be distinct")
    if isinstance(worth, Mapping):
        table = dict(worth)

        def v(s: frozenset) -> float:
            if s in table:
                return float(table[s])
            if not s:
                return 0.0
            raise ValueError(f"shapley_values: no worth given for coalition {set(s)}")
    else:
        def v(s: frozenset) -> float:
            return float(worth(s))

    if n <= max_exact:
        vals = np.array([v(frozenset(p for i, p in enumerate(players) if m >> i & 1))
                         for m in range(1 << n)])
        return dict(zip(players, _shapley_from_table(vals, n).tolist()))
    rng = np.random.default_rng(seed)
    phi = np.zeros(n)
    cache: dict[frozenset, float] = {}

    def cv(s: frozenset) -> float:
        if s not in cache:
            cache[s] = v(s)
        return cache[s]

    for _ in range(n_permutations):
        coalition: frozenset = frozenset()
        prev = cv(coalition)
        for i in rng.permutation(n):
            coalition = coalition | {players[i]}
            cur = cv(coalition)
            phi[i] += cur - prev
            prev = cur
    return dict(zip(players, (phi / n_permutations).tolist()))


def shapley_attribution(paths: pd.DataFrame, *, max_exact: int = MAX_EXACT_SHAPLEY) -> pd.DataFrame:
    """Shapley attribution on path data (Zhao et al. 2018, "Shapley value methods for
    attribution modeling in online advertising").

    Coalition worth v(S) = conversions (resp. value) of the journeys whose channel *set* is a
    subset of S; order, repeats and non-converting journeys do not enter. Computed exactly from
    the definition with :func:`shapley_values`' machinery for up to ``max_exact`` channels. This
    worth is a sum of unanimity games, so its Shapley value has a closed form: every converting
    journey's credit is split equally among its distinct channels (Zhao et al.'s "simplified
    Shapley"); beyond ``max_exact`` channels that exact closed form is used instead of a Monte
    Carlo estimate.
    """
    return _shapley_enc(_encode(paths), max_exact)


def _shapley_enc(enc: _Encoded, max_exact: int = MAX_EXACT_SHAPLEY) -> pd.DataFrame:
    n = enc.n_channels
    if n <= max_exact:
        bits = np.left_shift(np.int64(1), enc.codes)
        masks = np.bitwise_or.reduceat(bits, enc.start)
        phis = []
        for weight in (enc.conv, enc.value):
            v = np.bincount(masks, weights=weight, minlength=1 << n)
            for i in range(n):  # zeta transform: v(S) = sum over T subset of S
                view = v.reshape(-1, 2, 1 << i)
                view[:, 1, :] += view[:, 0, :]
            phis.append(_shapley_from_table(v, n))
        return _frame("shapley", enc, phis[0], phis[1])
    return _frame("shapley", enc, *_equal_split_distinct(enc))


def _equal_split_distinct(enc: _Encoded) -> tuple[np.ndarray, np.ndarray]:
    pid, ch = _distinct_pairs(enc)
    k = np.bincount(pid, minlength=len(enc.length))
    w = 1.0 / k[pid]
    return (np.bincount(ch, weights=w * enc.conv[pid], minlength=enc.n_channels),
            np.bincount(ch, weights=w * enc.value[pid], minlength=enc.n_channels))


# --------------------------------------------------------------------------------------------
# Data-driven: logistic regression on channel presence
# --------------------------------------------------------------------------------------------
def logistic_attribution(paths: pd.DataFrame, *, C: float = 1.0, max_iter: int = 1000) -> pd.DataFrame:
    """Logistic-regression ("data-driven") attribution on channel presence.

    Fit P(convert | channels present) = sigmoid(b0 + sum_c beta_c x_c) with an L2 penalty of
    inverse strength ``C`` (scikit-learn's ``LogisticRegression`` objective, solved exactly by
    Newton's method in :func:`_logit_newton`), journeys weighted by their counts, so the fit
    equals the per-journey fit. A converting journey's credit is split among
    its present channels in proportion to max(beta_c, 0): each channel's share of the journey's
    incremental log-odds over the no-channel baseline. Chosen over counterfactual removal
    because log-odds are additive in the model, so the split is exact and needs no
    renormalisation or ordering; channels with a negative coefficient get no credit, and a
    journey whose channels all have beta <= 0 is split equally. Data without any null journey
    cannot contrast presence against absence: no model is fitted, all coefficients are set to 1
    and credit is split equally over each journey's distinct channels. Adds column
    ``coefficient``.
    """
    return _logistic_enc(_encode(paths), C, max_iter)


def _logit_newton(x: np.ndarray, y: np.ndarray, w: np.ndarray, C: float, max_iter: int) -> tuple[np.ndarray, float]:
    """L2-penalised weighted logistic regression by Newton's method with step halving.

    Minimises 0.5 * ||beta||^2 + C * sum_i w_i * logloss_i (intercept not penalised): the
    objective of scikit-learn's ``LogisticRegression(C=C)``, solved to machine precision. ``x``
    is dense (rows x features) and small (one row per channel set and outcome)."""
    n, k = x.shape
    xt = np.column_stack([np.ones(n), x])
    pen = np.ones(k + 1)
    pen[0] = 0.0

    def objective(theta: np.ndarray) -> float:
        z = xt @ theta
        return float(0.5 * (pen * theta * theta).sum() + C * (w * (np.logaddexp(0.0, z) - y * z)).sum())

    theta = np.zeros(k + 1)
    current = objective(theta)
    for _ in range(max_iter):
        mu = 1.0 / (1.0 + np.exp(-(xt @ theta)))
        grad = xt.T @ (C * w * (mu - y)) + pen * theta
        hess = (xt * (C * w * mu * (1.0 - mu))[:, None]).T @ xt + np.diag(pen)
        try:
            step = np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError:
            step = np.linalg.lstsq(hess, grad, rcond=None)[0]
        t = 1.0
        while t > 1e-10:
            candidate = theta - t * step
            value = objective(candidate)
            if value <= current:
                break
            t /= 2
        else:
            break
        theta, previous, current = candidate, current, value
        if np.max(np.abs(t * step)) < 1e-10 or previous - current <= 1e-14 * max(1.0, abs(current)):
            break
    return theta[1:], float(theta[0])


def _fit_presence_logit(enc: _Encoded, C: float, max_iter: int) -> tuple[np.ndarray, float, bool]:
    """(beta, intercept, fitted): the logistic fit of conversion on channel presence, with
    journeys weighted by their counts (:func:`_logit_newton`, scikit-learn's objective).
    Journeys with the same channel set share one row per outcome: the weighted likelihood is the
    same as the per-journey one, and far smaller. Without null journeys nothing can be
    contrasted: beta = 1, intercept 0, fitted False."""
    set_of_path, members = _channel_sets(enc)
    n_sets = len(members)
    conv = np.bincount(set_of_path, weights=enc.conv, minlength=n_sets)
    nulls = np.bincount(set_of_path, weights=enc.nulls, minlength=n_sets)
    if not (conv > 0).any() or not (nulls > 0).any():  # presence cannot be contrasted
        return np.ones(enc.n_channels), 0.0, False
    x = np.zeros((n_sets, enc.n_channels))
    x[np.repeat(np.arange(n_sets), [len(m) for m in members]), np.concatenate(members)] = 1.0
    y = np.concatenate([np.ones(n_sets), np.zeros(n_sets)])
    sw = np.concatenate([conv, nulls])
    keep = np.flatnonzero(sw > 0)
    beta, b0 = _logit_newton(np.vstack([x, x])[keep], y[keep], sw[keep], C, max_iter)
    return beta, b0, True


def _logistic_enc(enc: _Encoded, C: float = 1.0, max_iter: int = 1000,
                  fit: tuple[np.ndarray, float, bool] | None = None) -> pd.DataFrame:
    n_paths = len(enc.length)
    beta, _, _ = fit if fit is not None else _fit_presence_logit(enc, C, max_iter)
    pid, ch = _distinct_pairs(enc)
    pos_beta = np.maximum(beta, 0.0)[ch]
    tot = np.bincount(pid, weights=pos_beta, minlength=n_paths)
    k = np.bincount(pid, minlength=n_paths)
    w = np.where(tot[pid] > 0, pos_beta / np.where(tot[pid] > 0, tot[pid], 1.0), 1.0 / k[pid])
    conv = np.bincount(ch, weights=w * enc.conv[pid], minlength=enc.n_channels)
    value = np.bincount(ch, weights=w * enc.value[pid], minlength=enc.n_channels)
    return _frame("logistic", enc, conv, value, coefficient=beta)


def _channel_sets(enc: _Encoded) -> tuple[np.ndarray, list[np.ndarray]]:
    """(set_of_path, members): the distinct channel set of every path as an index into
    ``members`` (sorted channel codes of each distinct set)."""
    pid, ch = _distinct_pairs(enc)
    n_paths = len(enc.length)
    if enc.n_channels <= 62:
        masks = np.zeros(n_paths, dtype=np.int64)
        np.bitwise_or.at(masks, pid, np.left_shift(np.int64(1), ch))
        set_of_path, keys = pd.factorize(masks, sort=True)
        members = [np.flatnonzero((int(k) >> np.arange(enc.n_channels)) & 1) for k in keys]
        return set_of_path, members
    bounds = np.concatenate(([0], np.cumsum(np.bincount(pid, minlength=n_paths))))
    keys_b = [ch[a:b].astype(np.int32).tobytes() for a, b in zip(bounds[:-1], bounds[1:])]
    set_of_path, uniq = pd.factorize(pd.Series(keys_b, dtype=object), sort=True)
    return set_of_path, [np.frombuffer(k, dtype=np.int32).astype(np.int64) for k in uniq]


def _shapley_rows(v: np.ndarray, k: int) -> np.ndarray:
    """Exact Shapley values for many games at once: ``v`` is (games, 2**k) worths over the
    subsets of k players (bit i = player i); returns (games, k)."""
    masks = np.arange(1 << k)
    size = _popcount(masks)
    fact = [math.factorial(j) for j in range(k + 1)]
    weight = np.array([fact[s] * fact[k - s - 1] / fact[k] if s < k else 0.0 for s in range(k + 1)])
    phi = np.empty((v.shape[0], k))
    for i in range(k):
        without = masks[(masks >> i) & 1 == 0]
        phi[:, i] = (v[:, without | (1 << i)] - v[:, without]) @ weight[size[without]]
    return phi


def logistic_shapley_attribution(paths: pd.DataFrame, *, C: float = 1.0, max_iter: int = 1000,
                                 max_exact: int = 12, n_permutations: int = 500,
                                 seed: int = 0) -> pd.DataFrame:
    """Data-driven attribution: Shapley values of a fitted conversion-probability model.

    The counterfactual approach of Dalessandro et al. (2012, "Causally motivated attribution for
    online advertising", ADKDD) and of Google's data-driven attribution: (1) fit
    P(convert | channels present) = sigmoid(b0 + sum_c beta_c x_c) on converting *and*
    non-converting journeys (as :func:`logistic_attribution`; a negative coefficient is set to 0:
    a channel is not credited for lowering the chance to convert); (2) for every converting
    journey with distinct channel set S, the lift its channels bring is
    v(T) = P(convert | T) - P(convert | no channel) for the subsets T of S, and each channel's
    credit is its exact Shapley value in that game (sums to v(S)); (3) channel conversions =
    total conversions x sum of its Shapley values over the converting journeys / sum of v(S):
    every channel's share of the conversion lift the channels produced, scaled to the observed
    conversions (value: the same with each journey weighted by its conversion value).

    Unlike the coefficient split of :func:`logistic_attribution`, the credit depends on the
    lift in probability, so a channel that appears in many converting journeys but barely
    changes the chance to convert gets little, and journeys that would mostly have converted
    anyway count little. Exact Shapley values for sets of up to ``max_exact`` channels, a seeded
    Monte Carlo estimate over ``n_permutations`` orderings beyond. Without null journeys, or when
    no coefficient is positive, nothing can be contrasted: credit is split equally over each
    converting journey's distinct channels. Adds columns ``coefficient`` and ``lift`` (the
    channel's share of the lift before scaling: sum of Shapley values / number of journeys).
    """
    return _logistic_shapley_enc(_encode(paths), C, max_iter, max_exact, n_permutations, seed)


def _logistic_shapley_enc(enc: _Encoded, C: float = 1.0, max_iter: int = 1000, max_exact: int = 12,
                          n_permutations: int = 500, seed: int = 0,
                          fit: tuple[np.ndarray, float, bool] | None = None) -> pd.DataFrame:
    """As :func:`logistic_shapley_attribution`; ``fit`` = (beta, intercept, fitted) reuses a fit
    (e.g. the one on all journeys, to credit a subset of them such as first purchases). Channels
    of ``enc`` must then be in the same order as those of the fit."""
    beta, b0, fitted = fit if fit is not None else _fit_presence_logit(enc, C, max_iter)
    pos = np.maximum(beta, 0.0)
    if not fitted or not (pos > 0).any():
        conv, value = _equal_split_distinct(enc)
        return _frame("logistic_shapley", enc, conv, value, coefficient=beta,
                      lift=np.full(enc.n_channels, np.nan))
    set_of_path, members = _channel_sets(enc)
    n_sets = len(members)
    set_conv = np.bincount(set_of_path, weights=enc.conv, minlength=n_sets)
    set_value = np.bincount(set_of_path, weights=enc.value, minlength=n_sets)
    p0 = 1.0 / (1.0 + math.exp(-b0))
    phi_conv = np.zeros(enc.n_channels)
    phi_value = np.zeros(enc.n_channels)
    lift_conv = lift_value = 0.0
    sizes = np.array([len(m) for m in members])
    rng = np.random.default_rng(seed)
    for k in np.unique(sizes):
        idx = np.flatnonzero((sizes == k) & (set_conv > 0))
        if len(idx) == 0:
            continue
        players = np.stack([members[i] for i in idx])            # (sets, k)
        b = pos[players]                                          # (sets, k)
        if k <= max_exact:
            sub = ((np.arange(1 << k)[:, None] >> np.arange(k)) & 1).astype(float)   # (2**k, k)
            v = 1.0 / (1.0 + np.exp(-(b0 + b @ sub.T))) - p0    # (sets, 2**k)
            phi = _shapley_rows(v, k)
            total = v[:, -1]
        else:  # Monte Carlo over orderings (same orderings for every set of this size)
            phi = np.zeros((len(idx), k))
            for _ in range(n_permutations):
                order = rng.permutation(k)
                z = b0 + np.cumsum(b[:, order], axis=1)
                p = 1.0 / (1.0 + np.exp(-z))
                phi[:, order] += np.diff(np.concatenate([np.full((len(idx), 1), p0), p], axis=1), axis=1)
            phi /= n_permutations
            total = 1.0 / (1.0 + np.exp(-(b0 + b.sum(axis=1)))) - p0
        np.add.at(phi_conv, players.ravel(), (phi * set_conv[idx, None]).ravel())
        np.add.at(phi_value, players.ravel(), (phi * set_value[idx, None]).ravel())
        lift_conv += float(total @ set_conv[idx])
        lift_value += float(total @ set_value[idx])
    conv = enc.total_conversions * phi_conv / lift_conv if lift_conv > 0 else phi_conv
    value = enc.total_value * phi_value / lift_value if lift_value > 0 else np.zeros_like(phi_value)
    return _frame("logistic_shapley", enc, conv, value, coefficient=beta,
                  lift=phi_conv / enc.total_conversions)


# --------------------------------------------------------------------------------------------
# Bootstrap and misallocation
# --------------------------------------------------------------------------------------------
def _bootstrap_draws(conv: np.ndarray, nulls: np.ndarray, value: np.ndarray, n_boot: int, seed: int,
                     n_out: int, replicate: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]
                     ) -> tuple[np.ndarray, int]:
    """The replicates of :func:`bootstrap_shares`: (n_boot x n_out shares, replicates skipped).
    ``replicate(keep, conversions, nulls, value)`` gets the paths with at least one resampled
    journey and their resampled counts (value scaled with the conversions)."""
    per_conv = np.divide(value, conv, out=np.zeros_like(value), where=conv > 0)
    counts = np.concatenate([conv, nulls])
    n_total = int(round(counts.sum()))
    prob = counts / counts.sum()
    rng = np.random.default_rng(seed)
    shares = np.full((n_boot, n_out), np.nan)
    failed = 0
    m = len(conv)
    for b in range(n_boot):
        draw = rng.multinomial(n_total, prob).astype(float)
        c_b, n_b = draw[:m], draw[m:]
        if c_b.sum() == 0:
            failed += 1
            continue
        keep = (c_b + n_b) > 0
        shares[b] = replicate(keep, c_b[keep], n_b[keep], (per_conv * c_b)[keep])
    return shares, failed


def _subset(enc: _Encoded, keep: np.ndarray, conv: np.ndarray, nulls: np.ndarray, value: np.ndarray) -> _Encoded:
    """The encoding of the paths ``keep`` (bool per path) with new counts, without re-reading the
    path tuples; channels that no kept path contains are removed."""
    idx = np.flatnonzero(keep)
    length = enc.length[idx]
    codes = enc.codes[_key_ranges(enc.start[idx], length)]
    channels = enc.channels
    present = np.bincount(codes, minlength=enc.n_channels) > 0
    if not present.all():
        codes = (np.cumsum(present) - 1)[codes]
        channels = [c for c, p in zip(enc.channels, present) if p]
    start = np.concatenate(([0], np.cumsum(length)[:-1]))
    path_id = np.repeat(np.arange(len(idx)), length)
    pos = np.arange(len(codes)) - start[path_id]
    return _Encoded(channels, codes, path_id, pos, length, start, conv, nulls, value)


def bootstrap_shares(paths: pd.DataFrame, model_fn: Callable[[pd.DataFrame], pd.DataFrame],
                     n_boot: int = 200, seed: int = 0, level: float = 0.90) -> pd.DataFrame:
    """Percentile bootstrap intervals for the channel shares of ``model_fn``.

    Each replicate resamples the N journeys with replacement: one multinomial draw of N over
    the 2 x n_paths cells (converting and non-converting journeys of every path, in proportion
    to their counts; N = rounded total). A path's value scales with its resampled conversions
    (mean value per conversion kept). ``model_fn(paths) -> DataFrame`` with ``channel`` and
    ``share`` (and ``model`` if it returns several models). Returns the point estimate frame
    with ``ci_low`` / ``ci_high`` (quantiles (1 -/+ level) / 2 of the replicates; a channel absent
    from a replicate has share 0). Deterministic for a given ``seed``. Replicates without any
    conversion (tiny data only) are skipped; their number is in ``attrs['n_failed']``.
    Each draw is one vectorised multinomial over all paths; the model runs once per replicate.
    """
    if not 0 < level < 1:
        raise ValueError(f"bootstrap_shares: level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"bootstrap_shares: n_boot must be >= 1, got {n_boot}")
    _encode(paths)  # validates
    point = model_fn(paths).reset_index(drop=True)
    keys = ["model", "channel"] if "model" in point.columns else ["channel"]
    index = pd.MultiIndex.from_frame(point[keys]) if len(keys) > 1 else pd.Index(point["channel"])
    path_obj = paths["path"].to_numpy(dtype=object)

    def replicate(keep: np.ndarray, c_b: np.ndarray, n_b: np.ndarray, v_b: np.ndarray) -> np.ndarray:
        rep = pd.DataFrame({"path": path_obj[keep], "conversions": c_b, "value": v_b, "nulls": n_b})
        res = model_fn(rep)
        s = res.set_index(keys)["share"] if len(keys) > 1 else res.set_index("channel")["share"]
        return s.reindex(index).fillna(0.0).to_numpy()

    shares, failed = _bootstrap_draws(paths["conversions"].to_numpy(dtype=float),
                                      paths["nulls"].to_numpy(dtype=float),
                                      paths["value"].to_numpy(dtype=float), n_boot, seed, len(index), replicate)
    alpha = (1 - level) / 2
    lo, hi = np.nanquantile(shares, [alpha, 1 - alpha], axis=0)
    out = point.copy()
    out["ci_low"], out["ci_high"] = lo, hi
    out.attrs["n_failed"] = failed
    out.attrs["n_boot"] = n_boot
    out.attrs["level"] = level
    return out


def misallocation(estimated_share: pd.Series, true_share: pd.Series) -> float:
    """Share of conversions credited to the wrong channel: 0.5 * sum_c |est_c - true_c|.

    Both are shares indexed by channel (each summing to 1); a channel missing from one side
    counts as 0 there. 0 = perfect, 1 = everything misallocated (total-variation distance).
    """
    est, true = estimated_share.align(true_share, join="outer", fill_value=0.0)
    return float(0.5 * np.abs(est.to_numpy(dtype=float) - true.to_numpy(dtype=float)).sum())


# ============================================================================================
# Stage 05: journeys from a touch log (DuckDB), the model line-up with intervals, the check
# against a known truth, channel economics. The notebook calls evaluate -> save -> summarise and
# then the display helpers at the end of this module.
# ============================================================================================
STAGE = "05_attribution"
US_PER_DAY = 86_400_000_000
HEURISTICS = ("first_touch", "last_touch", "last_non_direct", "linear", "time_decay", "position_based")
RECOMMENDED = "logistic_shapley"
RECOMMENDED_WITHOUT_NULLS = "shapley"
ATTRIBUTION_COLUMNS = ["model", "order", "channel", "conversions", "value", "share", "ci_low", "ci_high"]
TRUTH_FILE = "truth.json"
TRUTH_KEY = "channel_true_share"
PACK_BITS = 11
PACK = 1 << PACK_BITS        # a row of the sorted log: (time - origin) x PACK + channel code
CONVERSION_CODE = PACK - 1   # a conversion's code: it follows every touch of the same instant
MAX_SQL_CHANNELS = 1024
MAX_LOG_SPAN_US = (2 ** 63 - 1) // PACK - 1   # about 143 years
CONVERSION_ORDER = "cust, ts_us, order_id"   # the order of crm_conv's rows in the sorted log
LOG_BATCH_ROWS = 1_000_000   # rows of the sorted log handled at a time (memory stays bounded)
LIST_CHANNELS = 32           # up to this many channels, codes by list position (faster than the enum cast)
CUSTOMER_KEY = "hash({}) >> 2"   # SQL of a customer's 62-bit key (exact keys replace it if two ids share one)
AUTO_MIN_AT_RISK = 30        # conversions with that many days of history, for a day of the curve to count
AUTO_THRESHOLD = 0.10        # the window ends where the excess touch rate falls below 10% of its peak
AUTO_CONFIRM_DAYS = 7        # ... on that day and in the median of the week from it


@dataclass(frozen=True)
class Lookback:
    """How many days before a conversion a touch still counts, and how that was decided.

    ``how``: 'fixed' (params), 'auto' (from the data) or 'fallback' (auto could not tell).
    ``curve`` (auto only): days_before, touches, at_risk, rate = touches per conversion that has
    that many days of history before it; ``background``: the rate far from any conversion."""

    days: int
    how: str
    curve: pd.DataFrame | None = None
    background: float = math.nan


@dataclass(frozen=True)
class JourneyStats:
    """Counts behind the paths: journeys and touches used, orders, and orders no journey reached."""

    customers: int
    touches: int
    journeys: int
    converting: int
    orders: int

    @property
    def unattributed(self) -> int:
        """Orders without any touch in their lookback window (or tied with an earlier order)."""
        return max(self.orders - self.converting, 0)


@dataclass
class AttributionResult:
    """Everything the 05 report shows and saves."""

    source: str                                  # 'touchpoints' or the paths file name
    paths: pd.DataFrame
    channels: list
    attribution: pd.DataFrame                    # ATTRIBUTION_COLUMNS + key (model key, e.g. markov_1)
    recommended: str                             # model key, e.g. 'logistic_shapley'
    recommended_reason: str                      # text key
    transitions: pd.DataFrame
    top_paths: pd.DataFrame
    lookback: Lookback | None = None
    stats: JourneyStats | None = None
    economics: pd.DataFrame | None = None
    reallocation: dict | None = None
    misallocation: pd.DataFrame | None = None
    truth: pd.Series | None = None
    truth_file: str | None = None
    clv_used: bool = False
    n_boot: int = 0
    n_failed_boot: int = 0
    drop_channels: tuple = ()

    def model(self, key: str) -> pd.DataFrame:
        """One model's rows, indexed by channel."""
        return self.attribution[self.attribution["key"] == key].set_index("channel")


# --------------------------------------------------------------------------------------------
# Journeys from the touch log: DuckDB sorts the log by customer and time (out of core), numpy
# cuts the sorted rows into journeys and counts them by path, a batch of whole customers at a time
# --------------------------------------------------------------------------------------------
def _sql_string(text: str | Path) -> str:
    """A SQL string literal."""
    return "'" + str(text).replace("'", "''") + "'"


def _sql_list(texts: Sequence[str]) -> str:
    """A SQL list literal of strings."""
    return "[" + ", ".join(map(_sql_string, texts)) + "]::VARCHAR[]"


def _load_touch_log(con, touchpoints: str | Path, transactions: str | Path) -> list[str]:
    """Prepare the touch log and the orders for :func:`journey_paths`, :func:`touch_rate_curve` and
    :func:`acquisition_paths`; returns the channel names, sorted.

    ``crm_conv`` (table): every order with its customer, time (of its first line) and value (its
    net amount, summed exactly as DECIMAL); a customer's orders at one instant are one conversion,
    valued as the order with the smallest id (in the sorted log the others follow it and claim no
    touch). ``crm_touch`` (view on the file): every touch with its channel code (position in the
    sorted channel names). Times are microseconds since the epoch. ``crm_log``: the two files, the
    earliest time and the span of the log, and how customers are keyed. Customers are keyed
    (``cust``) by DuckDB's hash of the id (CUSTOMER_KEY, 62 bits), so that the log sorts on one
    fixed-width key; :func:`_read_log` checks the keys against the distinct ids the first time the
    log is read, and keys every customer by the rank of its id instead if two ids share a key
    (chance about n^2 / 2^63, 1e-5 for 10 million customers): the journeys of two customers are
    never merged."""
    touch, orders = _sql_string(touchpoints), _sql_string(transactions)
    channels = [row[0] for row in con.execute(
        f"SELECT DISTINCT channel FROM read_parquet({touch}) WHERE channel IS NOT NULL ORDER BY channel").fetchall()]
    if len(channels) > MAX_SQL_CHANNELS:
        raise ValueError(f"the touch log has {len(channels)} channels; at most {MAX_SQL_CHANNELS} are supported")
    con.execute("DROP VIEW IF EXISTS crm_touch")
    con.execute("DROP TYPE IF EXISTS crm_channel")
    con.execute("CREATE TYPE crm_channel AS ENUM (SELECT unnest(?::VARCHAR[]))", [channels])
    con.execute(f"CREATE OR REPLACE TEMP TABLE crm_log AS SELECT {touch} AS touch_file, {orders} AS orders_file, "
                "0::BIGINT AS origin, 0::BIGINT AS span, false AS exact_keys, false AS keys_checked")
    _key_tables(con, exact=False)
    con.execute(f"""UPDATE crm_log SET origin = b.lo, span = b.hi - b.lo FROM (
                        SELECT min(lo) AS lo, max(hi) AS hi FROM (
                            SELECT epoch_us(min(ts)) AS lo, epoch_us(max(ts)) AS hi FROM read_parquet({touch})
                            UNION ALL SELECT min(ts_us), max(ts_us) FROM crm_conv)) b WHERE b.lo IS NOT NULL""")
    span = con.execute("SELECT span FROM crm_log").fetchall()[0][0]
    if span > MAX_LOG_SPAN_US:
        raise ValueError(f"the touch log and the orders span {span / US_PER_DAY / 365.25:.0f} years; "
                         f"at most {MAX_LOG_SPAN_US / US_PER_DAY / 365.25:.0f} are supported")
    return channels


def _log_ids_sql(touch: str, orders: str) -> str:
    """The customer ids of the rows that enter the log (touches with a time and a channel, orders with a time)."""
    return (f"SELECT customer_id FROM read_parquet({touch}) "
            "WHERE customer_id IS NOT NULL AND ts IS NOT NULL AND channel IS NOT NULL "
            f"UNION SELECT customer_id FROM read_parquet({orders}) "
            "WHERE customer_id IS NOT NULL AND order_ts IS NOT NULL")


def _key_tables(con, exact: bool) -> None:
    """``crm_conv`` and ``crm_touch`` with customers keyed by CUSTOMER_KEY, or (``exact``) by the
    rank of their id in ``crm_customer``."""
    touch, orders = con.execute("SELECT touch_file, orders_file FROM crm_log").fetchall()[0]
    touch, orders = _sql_string(touch), _sql_string(orders)
    con.execute("DROP VIEW IF EXISTS crm_touch")
    con.execute("DROP TABLE IF EXISTS crm_customer")
    if exact:
        con.execute(f"""CREATE TEMP TABLE crm_customer AS
                        SELECT customer_id, (row_number() OVER (ORDER BY customer_id))::UBIGINT AS cust
                        FROM ({_log_ids_sql(touch, orders)})""")
        key, join = "k.cust", "JOIN crm_customer k ON k.customer_id = s.customer_id"
    else:
        key, join = CUSTOMER_KEY.format("s.customer_id"), ""
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE crm_conv AS
        SELECT {key} AS cust, s.order_id, epoch_us(min(s.order_ts)) AS ts_us,
               sum(CAST(s.amount AS DECIMAL(38, 6))) AS value
        FROM read_parquet({orders}) s {join}
        WHERE s.customer_id IS NOT NULL AND s.order_ts IS NOT NULL
        GROUP BY 1, 2
        """)
    channels = _log_channels(con)
    if len(channels) <= LIST_CHANNELS:   # 5x cheaper than the enum cast on a dictionary-encoded column
        code = f"(list_position({_sql_list(channels)}, s.channel) - 1)::USMALLINT"
    else:
        code = "enum_code(CAST(s.channel AS crm_channel))::USMALLINT"
    con.execute(
        f"""
        CREATE TEMP VIEW crm_touch AS
        SELECT {key} AS cust, epoch_us(s.ts) AS ts_us, {code} AS code
        FROM read_parquet({touch}) s {join}
        WHERE s.customer_id IS NOT NULL AND s.ts IS NOT NULL AND s.channel IS NOT NULL
        """)
    con.execute(f"UPDATE crm_log SET exact_keys = {bool(exact)}, keys_checked = {bool(exact)}")


def _count_ids(con) -> int:
    """The number of distinct customer ids in the log."""
    touch, orders = con.execute("SELECT touch_file, orders_file FROM crm_log").fetchall()[0]
    ids = _log_ids_sql(_sql_string(touch), _sql_string(orders))
    return con.execute(f"SELECT count(*) FROM ({ids})").fetchall()[0][0]


def _read_log(con, consume: Callable[[Iterator[tuple[np.ndarray, np.ndarray]]], T]) -> T:
    """``consume(rows)``, one pass over the rows of :func:`_sorted_log`, with customer keys known to
    be exact. The first time, the distinct customer ids of the log are counted and compared with
    the customer keys the pass meets: fewer keys than ids means that two ids share a key, and the
    tables are rebuilt with exact keys before ``consume`` runs again."""
    if con.execute("SELECT keys_checked FROM crm_log").fetchall()[0][0]:
        return consume(_sorted_log(con))
    ids = _count_ids(con)
    keys = 0

    def rows() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        nonlocal keys
        for cust, packed in _sorted_log(con):
            keys += int(np.count_nonzero(cust[1:] != cust[:-1])) + 1   # a batch holds whole customers
            yield cust, packed

    result = consume(rows())
    if keys == ids:
        con.execute("UPDATE crm_log SET keys_checked = true")
        return result
    _key_tables(con, exact=True)
    return consume(_sorted_log(con))


def _log_channels(con) -> list[str]:
    return [row[0] for row in con.execute("SELECT unnest(enum_range(NULL::crm_channel))::VARCHAR").fetchall()]


def _sorted_log(con) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The touches and conversions loaded by :func:`_load_touch_log`, sorted by customer, time and
    channel code, as (cust, packed) arrays holding whole customers: packed = (time - origin) x PACK
    + code, where a conversion has code CONVERSION_CODE and so follows the touches of its instant.
    DuckDB sorts (spilling to disk when it must) on one 128-bit key, cust x 2**64 + packed (one
    wide key sorts faster than two), read back as two 64-bit words; the rows arrive in batches of
    at most LOG_BATCH_ROWS, and a customer cut by the end of a batch waits for the next one."""
    origin = con.execute("SELECT origin FROM crm_log").fetchall()[0][0]
    reader = con.sql(
        f"""SELECT k FROM (
                SELECT (cust::UHUGEINT << 64) + ((ts_us - {origin}) * {PACK} + code)::UHUGEINT AS k FROM crm_touch
                UNION ALL
                SELECT (cust::UHUGEINT << 64) + ((ts_us - {origin}) * {PACK} + {CONVERSION_CODE})::UHUGEINT
                FROM crm_conv)
            ORDER BY k""").to_arrow_reader(LOG_BATCH_ROWS)
    held_cust = held_packed = np.empty(0, dtype=np.int64)
    for batch in reader:
        keys = batch.column(0)
        if keys.type.byte_width != 16 or keys.null_count:
            raise RuntimeError(f"the sorted touch log came back as {keys.type}, not 128-bit integers")
        words = np.frombuffer(keys.buffers()[1], dtype=np.uint64, count=2 * len(keys), offset=16 * keys.offset)
        cust, packed = words[1::2], words[0::2].view(np.int64)   # little-endian: low word first
        if len(held_cust):
            cust, packed = np.concatenate([held_cust, cust]), np.concatenate([held_packed, packed])
        if len(cust) == 0:
            continue
        cut = int(np.searchsorted(cust, cust[-1]))   # where the last customer of the batch starts
        if cut:
            yield cust[:cut], packed[:cut]
        held_cust, held_packed = cust[cut:], packed[cut:]
    if len(held_cust):
        yield held_cust, held_packed


@dataclass(frozen=True)
class _Segments:
    """The touches of a run of whole customers of the sorted log and their segments: a segment is
    a customer's touches up to and including its next conversion (or up to its last touch)."""

    code: np.ndarray          # channel code of every touch
    ts: np.ndarray            # time of every touch, microseconds from the log's origin
    seg: np.ndarray           # segment of every touch (0, 1, ... in log order)
    first_ts: np.ndarray      # per segment: time of its first row (its earliest touch)
    conv: np.ndarray          # per segment: ordinal of its conversion among the run's, -1 if none
    conv_ts: np.ndarray       # per segment: time of its last row (its conversion when it has one)
    customers: int            # customers with at least one touch
    conversions: int          # conversions in the run


def _segments(cust: np.ndarray, packed: np.ndarray) -> _Segments:
    """Cut a run of whole customers of :func:`_sorted_log` into segments."""
    n = len(packed)
    is_conv = (packed & (PACK - 1)) == CONVERSION_CODE
    start = np.empty(n, dtype=bool)
    start[0] = True
    np.not_equal(cust[1:], cust[:-1], out=start[1:])
    start[1:] |= is_conv[:-1]                 # a conversion ends its segment
    first = np.flatnonzero(start)
    last = np.empty_like(first)
    last[:-1] = first[1:] - 1
    last[-1] = n - 1
    ends_in_conv = is_conv[last]
    conversions = int(np.count_nonzero(ends_in_conv))   # every conversion ends one segment
    conv = np.full(len(first), -1, dtype=np.int64)
    conv[ends_in_conv] = np.arange(conversions)
    touch = np.flatnonzero(~is_conv)
    touched = cust[touch]
    packed_touch = packed[touch]
    return _Segments(code=packed_touch & (PACK - 1), ts=packed_touch >> PACK_BITS,
                     seg=(np.cumsum(start, dtype=np.int64) - 1)[touch], first_ts=packed[first] >> PACK_BITS,
                     conv=conv, conv_ts=packed[last] >> PACK_BITS,
                     customers=int(np.count_nonzero(touched[1:] != touched[:-1])) + 1 if len(touch) else 0,
                     conversions=conversions)


def _journeys(s: _Segments, span: int) -> tuple[np.ndarray, np.ndarray]:
    """(first touch of every journey, in log order; per journey the ordinal of the conversion it
    leads to, -1 for a non-converting journey). Touches at most ``span`` microseconds before their
    segment's conversion are claimed by it and form its journey; the other touches of a segment
    are cut into windows of ``span`` from the first of them, each a non-converting journey."""
    conv = s.conv[s.seg]
    claimed = (conv >= 0) & (s.conv_ts[s.seg] - s.ts <= span)
    window = np.where(claimed, -1, (s.ts - s.first_ts[s.seg]) // span)
    new = np.empty(len(window), dtype=bool)
    new[:1] = True
    np.not_equal(s.seg[1:], s.seg[:-1], out=new[1:])
    new[1:] |= window[1:] != window[:-1]
    first = np.flatnonzero(new)
    return first, np.where(claimed[first], conv[first], -1)


def _sum_by_key(keys: np.ndarray, conversions: np.ndarray, value: np.ndarray, nulls: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(unique keys, and the conversions, value and nulls summed over each); the value exactly
    when it is an integer array."""
    inv, uniq = pd.factorize(keys)
    k = len(uniq)
    summed = np.zeros(k, dtype=value.dtype)
    np.add.at(summed, inv, value)
    return (np.asarray(uniq), np.bincount(inv, weights=conversions, minlength=k), summed,
            np.bincount(inv, weights=nulls, minlength=k))


def _order_values(con) -> tuple[np.ndarray, None]:
    """(the value of every conversion in the order of the sorted log, in millionths of the currency;
    None: every conversion counts). Integers (the DECIMAL's unscaled value), so that sums over
    paths are exact, when their total fits in 62 bits; else floats."""
    total = con.execute("SELECT coalesce(sum(abs(value)), 0) FROM crm_conv").fetchall()[0][0]
    if total * 10**6 >= 2**62:
        values = con.execute("SELECT CAST(value * 1000000 AS DOUBLE) AS v FROM crm_conv "
                             f"ORDER BY {CONVERSION_ORDER}").fetchnumpy()["v"]
        return np.asarray(values, dtype=float), None
    column = con.sql(f"SELECT value FROM crm_conv ORDER BY {CONVERSION_ORDER}").to_arrow_table().column(0)
    column = column.combine_chunks()
    if column.type != pa.decimal128(38, 6) or column.null_count:
        raise RuntimeError(f"order values came back as {column.type}, not DECIMAL(38, 6)")
    words = np.frombuffer(column.buffers()[1], dtype=np.int64, count=2 * len(column), offset=16 * column.offset)
    return words[0::2].copy(), None   # the low word of each little-endian 128-bit integer


def _log_paths(con, lookback_days: int, drop_channels: Sequence[str], channels: Sequence[str],
               conversions: Callable[[object], tuple[np.ndarray, np.ndarray | None]],
               nulls: bool = True) -> tuple[pd.DataFrame, int]:
    """(paths with conversions, value and nulls, not sorted; customers with a touch) of the
    journeys of the sorted log (:func:`_read_log`). ``conversions(con)``: (value, counted) per
    conversion in log order, counted (bool, or None for all) marks the conversions whose journeys
    count; a path's value is summed in the unit of the values. ``nulls`` False leaves
    non-converting journeys out. Channels in ``drop_channels`` are removed after the journeys are
    formed; a journey left without touches is dropped."""
    span = int(lookback_days) * US_PER_DAY
    drop = np.isin(np.asarray(channels, dtype=object), list(drop_channels))
    base = len(channels) + 1

    def consume(rows: Iterator[tuple[np.ndarray, np.ndarray]]) -> tuple[pd.DataFrame, int]:
        values, counted = conversions(con)   # before the rows: the connection then streams them
        parts: dict[bool, list] = {True: [], False: []}   # integer keys (short paths), byte keys
        customers = seen = 0
        for cust, packed in rows:
            s = _segments(cust, packed)
            starts, conv = _journeys(s, span)
            conv[conv >= 0] += seen
            seen += s.conversions
            customers += s.customers
            code = s.code
            if drop.any():
                kept = ~drop[code]
                new = np.zeros(len(code), dtype=bool)
                new[starts] = True
                journey = (np.cumsum(new) - 1)[kept]
                code = code[kept]
                if len(code) == 0:
                    continue
                starts = np.flatnonzero(np.concatenate(([True], journey[1:] != journey[:-1])))
                conv = conv[journey[starts]]
            lengths = np.diff(np.append(starts, len(code)))
            converted = conv >= 0
            if counted is not None:
                converted[converted] = counted[conv[converted]]
            value = np.zeros(len(conv), dtype=values.dtype)
            value[converted] = values[conv[converted]]
            null = (conv < 0) if nulls else np.zeros(len(conv), dtype=bool)
            short, path_keys, long_keys = _path_keys(code + 1, starts, lengths, base)
            for is_short, key in ((True, path_keys), (False, long_keys)):
                of_kind = short if is_short else ~short
                sel = (converted | null)[of_kind]
                if sel.any():
                    parts[is_short].append(_sum_by_key(key[sel], converted[of_kind][sel].astype(float),
                                                       value[of_kind][sel], null[of_kind][sel].astype(float)))
        frames = []
        for is_short, chunks in parts.items():
            if chunks:
                path_keys, conv_sum, value_sum, null_sum = _sum_by_key(*(np.concatenate(c) for c in zip(*chunks)))
                path = (_decode_short_keys(path_keys, base, channels) if is_short
                        else _decode_long_keys(path_keys, channels))
                frames.append(pd.DataFrame({"path": pd.Series(path, dtype=object), "conversions": conv_sum,
                                            "value": value_sum, "nulls": null_sum}))
        paths = (pd.concat(frames, ignore_index=True) if frames else
                 pd.DataFrame({"path": pd.Series([], dtype=object), "conversions": 0.0, "value": 0.0, "nulls": 0.0}))
        return paths, customers

    return _read_log(con, consume)


def _by_path(paths: pd.DataFrame) -> pd.DataFrame:
    return paths.sort_values("path", key=lambda s: s.map(" > ".join), ignore_index=True)


def touch_rate_curve(con, max_days: int) -> pd.DataFrame:
    """Touches per conversion by whole days before it (0 = the last 24 hours), counting only
    touches with no other conversion in between, divided by the conversions that have that many
    days of history (since the previous conversion and since the touch log starts). Needs
    :func:`_load_touch_log`. Columns: days_before, touches, at_risk, rate."""
    def consume(rows: Iterator[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, int | None]:
        n_touch = np.zeros(max_days)
        start = None
        for cust, packed in rows:
            s = _segments(cust, packed)
            if len(s.ts) == 0:
                continue
            has = s.conv[s.seg] >= 0
            days = (s.conv_ts[s.seg][has] - s.ts[has]) // US_PER_DAY
            n_touch += np.bincount(days[days < max_days], minlength=max_days)
            start = int(s.ts.min()) if start is None else min(start, int(s.ts.min()))
        return n_touch, start

    n_touch, start = _read_log(con, consume)
    avail = [] if start is None else con.execute(
        f"""WITH c AS (SELECT ts_us, lag(ts_us) OVER (PARTITION BY cust ORDER BY ts_us) AS prev
                       FROM (SELECT DISTINCT cust, ts_us FROM crm_conv)),
            s AS (SELECT origin + {start} AS s FROM crm_log)
            SELECT least((c.ts_us - greatest(coalesce(c.prev, s.s), s.s)) // {US_PER_DAY}, {int(max_days)}) AS a,
                   count(*) AS n
            FROM c, s WHERE c.ts_us >= s.s GROUP BY a""").fetchall()
    held = np.zeros(max_days + 1)
    for a, n in avail:
        held[int(a)] += n
    at_risk = held[::-1].cumsum()[::-1][1:]     # conversions with more than d whole days of history
    rate = np.divide(n_touch, at_risk, out=np.full(max_days, np.nan), where=at_risk >= AUTO_MIN_AT_RISK)
    return pd.DataFrame({"days_before": np.arange(max_days), "touches": n_touch.astype(np.int64),
                         "at_risk": at_risk.astype(np.int64), "rate": rate})


def choose_lookback(curve: pd.DataFrame, fallback: int) -> tuple[int, str, float]:
    """(days, how, background): the end of the window in which touches are more frequent before a
    conversion than at random times.

    background = median rate over the second half of the curve; excess = rate - background; the
    window ends at the first day whose excess, and the median excess of the week from it, are
    below 10% of the peak excess (a median, so that a noisy day or two do not stretch the window).
    A step in the touch rate at 14 days gives 14; an exponential decay with mean tau gives
    2.3 tau (90% of the excess touches). 'fallback' with ``fallback`` days when the second half
    has no data or no day stands out."""
    rate = curve["rate"].to_numpy(dtype=float)
    half = len(rate) // 2
    if half < AUTO_CONFIRM_DAYS or np.isnan(rate[half:]).all() or np.isnan(rate[:half]).all():
        return fallback, "fallback", math.nan
    background = float(np.nanmedian(rate[half:]))
    excess = np.nan_to_num(rate - background, nan=0.0)
    peak = float(excess[:half].max())
    if not peak > 0:
        return fallback, "fallback", background
    threshold = AUTO_THRESHOLD * peak
    for day in range(1, len(rate) - AUTO_CONFIRM_DAYS + 1):
        if excess[day] < threshold and np.median(excess[day:day + AUTO_CONFIRM_DAYS]) < threshold:
            return day, "auto", background
    return fallback, "fallback", background


def journey_paths(con, lookback_days: int, drop_channels: Sequence[str] = (),
                  channels: Sequence[str] | None = None) -> tuple[pd.DataFrame, JourneyStats]:
    """Paths (``path`` tuples, conversions, value, nulls; sorted by path) from the touch log
    loaded by :func:`_load_touch_log` (``channels``: what it returned), and the counts behind
    them. Claimed touches (at most ``lookback_days`` before the customer's next conversion) form
    the converting journey of that conversion; the other touches between two conversions (and
    after the last one) are cut into windows of ``lookback_days`` from the first of them, each a
    non-converting journey. Channels in ``drop_channels`` are removed after the journeys are
    formed (as :func:`aggregate_journeys` does); a journey left without touches is dropped and its
    conversion counts as unattributed. Equal to :func:`aggregate_journeys` on the same journeys
    (touches in time order, ties by channel name); values are summed exactly, as DECIMAL."""
    channels = list(channels) if channels is not None else _log_channels(con)
    paths, customers = _log_paths(con, lookback_days, drop_channels, channels, _order_values)
    paths["value"] = paths["value"].to_numpy(dtype=float) / 1e6
    paths = _by_path(paths)
    orders = con.execute("SELECT count(*) FROM crm_conv").fetchall()[0][0]
    journeys = paths["conversions"] + paths["nulls"]
    stats = JourneyStats(customers=customers, touches=int((paths["path"].map(len) * journeys).sum()),
                         journeys=int(journeys.sum()), converting=int(paths["conversions"].sum()),
                         orders=int(orders))
    return paths, stats


def acquisition_paths(con, lookback_days: int, drop_channels: Sequence[str], clv: pd.DataFrame,
                      channels: Sequence[str]) -> pd.DataFrame:
    """Paths of each customer's first conversion, with ``value`` = the customer's predicted CLV
    (``clv``: customer_id, clv) instead of the order value; customers without a CLV are left out.
    Ids are matched exactly: through ``crm_customer`` when customers are keyed by rank, else among
    the ids of the orders, whose keys are distinct (:func:`_read_log`)."""
    frame = clv[["customer_id", "clv"]].astype({"customer_id": str, "clv": float})

    def first_conversions(con) -> tuple[np.ndarray, np.ndarray]:
        exact, orders = con.execute("SELECT exact_keys, orders_file FROM crm_log").fetchall()[0]
        known = ("SELECT k.cust, v.clv FROM crm_clv_in v JOIN crm_customer k USING (customer_id)" if exact else
                 f"SELECT {CUSTOMER_KEY.format('customer_id')} AS cust, clv FROM crm_clv_in WHERE customer_id IN "
                 f"(SELECT customer_id FROM read_parquet({_sql_string(orders)}) WHERE order_ts IS NOT NULL)")
        first = con.execute(
            f"""WITH v AS (SELECT cust, any_value(clv) AS clv FROM ({known}) WHERE clv IS NOT NULL GROUP BY cust)
                SELECT coalesce(v.clv, 0)::DOUBLE AS clv,
                       v.clv IS NOT NULL AND c.ts_us = min(c.ts_us) OVER (PARTITION BY c.cust) AS counted
                FROM crm_conv c LEFT JOIN v USING (cust) ORDER BY {CONVERSION_ORDER}""").fetchnumpy()
        return np.asarray(first["clv"], dtype=float), np.asarray(first["counted"], dtype=bool)

    con.register("crm_clv_in", frame)
    try:
        paths, _ = _log_paths(con, lookback_days, drop_channels, channels, first_conversions, nulls=False)
    finally:
        con.unregister("crm_clv_in")
    return _by_path(paths[paths["conversions"] > 0].reset_index(drop=True))


def read_paths_file(path: str | Path, fmt: str = "channelattribution", delimiter: str | None = None,
                    drop_channels: Sequence[str] = ()) -> pd.DataFrame:
    """A pre-aggregated paths file. 'channelattribution': ChannelAttribution's layout, columns
    ``path`` ('a > b > c'), ``total_conversions`` and optional ``total_conversion_value`` and
    ``total_null`` (read with :func:`parse_paths`); the delimiter is detected when not given."""
    from crmbook.errors import InputError

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "paths file not found (attribution.paths_file)")
    if fmt != "channelattribution":
        raise InputError(path, f"unknown paths format {fmt!r}; supported: channelattribution")
    if delimiter is None:
        head = path.read_text(encoding="utf-8-sig", errors="replace").splitlines()[0]
        delimiter = max(";,\t|", key=head.count)
    raw = pd.read_csv(path, sep=delimiter, encoding="utf-8-sig", dtype={"path": str})
    raw.columns = [str(c).strip() for c in raw.columns]
    try:
        return parse_paths(raw, drop_channels=drop_channels).sort_values(
            "path", key=lambda s: s.map(" > ".join), ignore_index=True)
    except ValueError as exc:
        raise InputError(path, str(exc)) from None


def paths_to_channelattribution(paths: pd.DataFrame) -> pd.DataFrame:
    """The paths frame in ChannelAttribution's layout (path 'a > b > c', total_conversions,
    total_conversion_value, total_null)."""
    return pd.DataFrame({"path": paths["path"].map(" > ".join), "total_conversions": paths["conversions"],
                         "total_conversion_value": paths["value"], "total_null": paths["nulls"]})


# --------------------------------------------------------------------------------------------
# The model line-up
# --------------------------------------------------------------------------------------------
def model_keys(settings) -> list[str]:
    """Model keys in report order: heuristics, Markov orders, Shapley, logistic, data-driven."""
    return [*HEURISTICS, *(f"markov_{k}" for k in settings.markov_orders), "shapley", "logistic", RECOMMENDED]


def lineup(paths: pd.DataFrame, settings) -> pd.DataFrame:
    """Every model of the line-up on ``paths``, one tidy frame (model key in ``model``)."""
    return _lineup_enc(_encode(paths), settings)


def _lineup_enc(enc: _Encoded, settings) -> pd.DataFrame:
    """:func:`lineup` on encoded paths: encoded once, one logistic fit for both logistic models."""
    weights = {
        "first_touch": lambda: _w_first(enc), "last_touch": lambda: _w_last(enc),
        "last_non_direct": lambda: _w_last_non_direct(enc, settings.direct_channel),
        "linear": lambda: _w_linear(enc), "time_decay": lambda: _w_time_decay(enc, settings.half_life),
        "position_based": lambda: _w_position(enc, settings.position_first, settings.position_last),
    }
    keys, conv, value = [], [], []
    for k, w in weights.items():
        c, v = enc.credit(w())
        keys.append(k), conv.append(c), value.append(v)
    for order in settings.markov_orders:
        res = _markov(enc, order)
        re = res.removal_effects.to_numpy()
        re_v = res.value_removal_effects.to_numpy()
        s_v = np.nansum(re_v)
        keys.append(f"markov_{order}")
        conv.append(enc.total_conversions * re / re.sum())
        value.append(enc.total_value * re_v / s_v if s_v != 0 else np.zeros_like(re_v))
    fit = _fit_presence_logit(enc, settings.logistic_c, 1000)
    for k, frame in (("shapley", _shapley_enc(enc)), ("logistic", _logistic_enc(enc, fit=fit)),
                     (RECOMMENDED, _logistic_shapley_enc(enc, seed=settings.seed, fit=fit))):
        keys.append(k), conv.append(frame["conversions"].to_numpy()), value.append(frame["value"].to_numpy())
    n = enc.n_channels
    conv_all = np.concatenate(conv)
    return pd.DataFrame({"model": np.repeat(keys, n), "channel": np.tile(np.asarray(enc.channels, dtype=object), len(keys)),
                         "conversions": conv_all, "value": np.concatenate(value),
                         "share": conv_all / enc.total_conversions})


def recommend(paths: pd.DataFrame) -> tuple[str, str]:
    """(model key, reason text key): the data-driven model when there are non-converting
    journeys to learn from, else Shapley (the equal split over distinct channels)."""
    if float(paths["nulls"].sum()) > 0:
        return RECOMMENDED, "attr_why_data_driven"
    return RECOMMENDED_WITHOUT_NULLS, "attr_why_no_nulls"


def attribute(paths: pd.DataFrame, settings) -> tuple[pd.DataFrame, int]:
    """The line-up with seeded bootstrap intervals for every share (``settings.n_boot``
    replicates over journeys; 0 = no intervals). Returns (frame in ATTRIBUTION_COLUMNS order plus
    ``key``, failed replicates)."""
    enc = _encode(paths)
    res = _lineup_enc(enc, settings)
    failed = 0
    if settings.n_boot > 0:  # as bootstrap_shares(paths, lineup), without re-reading the paths
        index = pd.MultiIndex.from_frame(res[["model", "channel"]])

        def replicate(keep, c_b, n_b, v_b):
            rep = _lineup_enc(_subset(enc, keep, c_b, n_b, v_b), settings)
            return rep.set_index(["model", "channel"])["share"].reindex(index).fillna(0.0).to_numpy()

        shares, failed = _bootstrap_draws(enc.conv, enc.nulls, enc.value, settings.n_boot, settings.seed,
                                          len(index), replicate)
        alpha = (1 - settings.interval_level) / 2
        res["ci_low"], res["ci_high"] = np.nanquantile(shares, [alpha, 1 - alpha], axis=0)
    else:
        res["ci_low"], res["ci_high"] = np.nan, np.nan
    key = res["model"]
    markov = key.str.startswith("markov_")
    out = pd.DataFrame({
        "model": np.where(markov, "markov", key),
        "order": pd.array(np.where(markov, key.str.rsplit("_", n=1).str[-1], None), dtype="Int64"),
        "channel": res["channel"], "conversions": res["conversions"], "value": res["value"],
        "share": res["share"], "ci_low": res["ci_low"], "ci_high": res["ci_high"], "key": key,
    })
    rank = {k: i for i, k in enumerate(model_keys(settings))}
    out = out.sort_values(["key", "channel"], key=lambda s: s.map(rank) if s.name == "key" else s.astype(str))
    return out.reset_index(drop=True), failed


# --------------------------------------------------------------------------------------------
# Truth (simulations only), economics
# --------------------------------------------------------------------------------------------
def find_truth(cfg) -> Path | None:
    """The ground-truth file of a simulated dataset: ``attribution.truth_file``, else a
    ``truth.json`` next to the first touchpoints source (the generated demo has one) or next to
    the paths file. None when there is none: a user's own data has no known truth."""
    s = cfg.attribution
    if s.truth_file is not None:
        return cfg.resolve(s.truth_file)
    candidates = [cfg.resolve(src.path).parent / TRUTH_FILE for src in cfg.data.sources.touchpoints[:1]]
    if s.paths_file is not None:
        candidates.append(cfg.resolve(s.paths_file).parent / TRUTH_FILE)
    return next((c for c in candidates if c.is_file()), None)


def read_truth(path: Path) -> pd.Series | None:
    """``channel_true_share`` of a truth file (channel -> share), or None when it has none."""
    import json

    data = json.loads(Path(path).read_text(encoding="utf-8"))
    shares = data.get(TRUTH_KEY) if isinstance(data, dict) else None
    if not shares:
        return None
    return pd.Series({str(k): float(v) for k, v in shares.items()}, name="true_share").sort_index()


def misallocation_table(attribution: pd.DataFrame, truth: pd.Series, recommended: str) -> pd.DataFrame:
    """model, order, misallocation (0.5 x sum of |share - true share|: the share of conversions
    credited to the wrong channel), recommended; best first."""
    rows = []
    for key, grp in attribution.groupby("key", sort=False):
        rows.append({"model": grp["model"].iloc[0], "order": grp["order"].iloc[0],
                     "misallocation": misallocation(grp.set_index("channel")["share"], truth),
                     "recommended": key == recommended, "key": key})
    out = pd.DataFrame(rows)
    out["order"] = out["order"].astype("Int64")
    return out.sort_values(["misallocation", "key"], ignore_index=True)


def spend_by_channel(spend: pd.DataFrame | None) -> pd.Series | None:
    """Total spend per channel over all periods of the clean channel_spend table."""
    if spend is None or len(spend) == 0:
        return None
    return spend.groupby("channel")["spend"].sum().sort_index()


def read_clv(run_dir: str | Path) -> pd.DataFrame | None:
    """customer_id, clv from tables/clv_customers.parquet (column ``clv``, else the first numeric
    column whose name starts with clv), or None: 04 runs in parallel and has often not written it."""
    path = Path(run_dir) / "tables" / "clv_customers.parquet"
    if not path.is_file():
        return None
    try:
        frame = pd.read_parquet(path)
    except Exception:  # noqa: BLE001 - 04 may be writing it right now
        return None
    if "customer_id" not in frame.columns:
        return None
    for name in ["clv"] + [c for c in frame.columns if str(c).lower().startswith("clv")]:
        if name in frame.columns and pd.api.types.is_numeric_dtype(frame[name]) and frame[name].notna().any():
            return pd.DataFrame({"customer_id": frame["customer_id"].astype(str), "clv": frame[name].astype(float)})
    return None


def credit_with_fit(paths: pd.DataFrame, all_paths: pd.DataFrame, model: str, settings) -> pd.DataFrame:
    """Credit ``paths`` (e.g. first purchases) with ``model`` as fitted on ``all_paths``: the
    data-driven model reuses the coefficients fitted on every journey; other models run on
    ``paths`` as they are."""
    enc = _encode(paths)
    if model == RECOMMENDED:
        full = _encode(all_paths)
        beta, b0, fitted = _fit_presence_logit(full, settings.logistic_c, 1000)
        beta = pd.Series(beta, index=full.channels).reindex(enc.channels).fillna(0.0).to_numpy()
        return _logistic_shapley_enc(enc, seed=settings.seed, fit=(beta, b0, fitted))
    return lineup(paths, settings).query("model == @model")


def _ratio(num: pd.Series, den: pd.Series, also: pd.Series | bool = True) -> np.ndarray:
    """num / den where den > 0 (and ``also``), else NaN."""
    ok = (den > 0) & also
    return np.where(ok, num / den.where(ok, 1.0), np.nan)


def channel_economics(credited: pd.DataFrame, spend: pd.Series, acquisition: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per channel (those with spend or credit): spend, attributed conversions and revenue (from
    ``credited``: channel, conversions, value), CAC = spend / attributed conversions, ROAS =
    attributed revenue / spend; with ``acquisition`` (channel, conversions = attributed new
    customers, value = their attributed predicted CLV) also new_customers, clv_per_customer and
    CLV:CAC = CLV of the customers the channel acquired / spend. Ranked by ROAS (best first;
    channels without spend last)."""
    credit = credited.set_index("channel")[["conversions", "value"]]
    channels = sorted(set(credit.index) | set(spend.index), key=str)
    out = pd.DataFrame(index=pd.Index(channels, name="channel"))
    out["spend"] = spend.reindex(channels).fillna(0.0)
    out["conversions"] = credit["conversions"].reindex(channels).fillna(0.0)
    out["revenue"] = credit["value"].reindex(channels).fillna(0.0)
    out["cac"] = _ratio(out["spend"], out["conversions"], out["spend"] > 0)
    out["roas"] = _ratio(out["revenue"], out["spend"])
    if acquisition is not None:
        acq = acquisition.set_index("channel")
        out["new_customers"] = acq["conversions"].reindex(channels).fillna(0.0)
        clv_total = acq["value"].reindex(channels).fillna(0.0)
        out["clv_per_customer"] = _ratio(clv_total, out["new_customers"])
        out["clv_cac"] = _ratio(clv_total, out["spend"])
    out["spend_share"] = out["spend"] / out["spend"].sum() if out["spend"].sum() > 0 else np.nan
    out["conversion_share"] = out["conversions"] / out["conversions"].sum() if out["conversions"].sum() > 0 else np.nan
    out = out.reset_index()
    out["_r"] = out["roas"].fillna(-np.inf)
    out = out.sort_values(["_r", "channel"], ascending=[False, True], ignore_index=True).drop(columns="_r")
    out.insert(1, "roas_rank", pd.array(np.where(out["roas"].notna(), np.arange(1, len(out) + 1), None), dtype="Int64"))
    return out


def reallocation(economics: pd.DataFrame, share: float) -> dict | None:
    """Shift ``share`` of the lowest-ROAS channel's spend to the highest-ROAS one. Expected change
    in attributed revenue = shifted x (ROAS high - ROAS low): it assumes constant returns (the next
    unit of spend earns what the average one did), which rarely holds at scale, so it is a
    hypothesis to test (e.g. a geo or holdout experiment), not a forecast. None with fewer than two
    channels with spend, or when they all have the same ROAS."""
    paid = economics[economics["roas"].notna()]
    if len(paid) < 2:
        return None
    high, low = paid.iloc[0], paid.iloc[-1]
    if not high["roas"] > low["roas"]:
        return None
    shifted = share * float(low["spend"])
    return {"from": low["channel"], "to": high["channel"], "share": share, "amount": shifted,
            "roas_from": float(low["roas"]), "roas_to": float(high["roas"]),
            "revenue_change": shifted * (float(high["roas"]) - float(low["roas"]))}


def top_paths(paths: pd.DataFrame, n: int) -> pd.DataFrame:
    """The ``n`` paths with the most conversions (then journeys, then path): path 'a > b',
    touches, journeys, conversions, nulls, conversion_rate, value."""
    out = pd.DataFrame({"path": paths["path"].map(" > ".join), "touches": paths["path"].map(len),
                        "journeys": paths["conversions"] + paths["nulls"], "conversions": paths["conversions"],
                        "nulls": paths["nulls"], "value": paths["value"]})
    out["conversion_rate"] = out["conversions"] / out["journeys"]
    out = out.sort_values(["conversions", "journeys", "path"], ascending=[False, False, True])
    return out.head(n).reset_index(drop=True)[["path", "touches", "journeys", "conversions", "nulls",
                                                "conversion_rate", "value"]]


# --------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------
def evaluate(cfg, run_dir: str | Path, tables: dict[str, pd.DataFrame] | None = None) -> AttributionResult:
    """Run the 05 stage: paths (from the touch log and the clean orders on DuckDB, or from
    ``attribution.paths_file``), the model line-up with bootstrap intervals, the recommended
    model, the check against a ground truth when one is configured, channel economics when there
    is clean channel_spend. ``tables``: the clean tables (``cleaning.load_clean``), for spend."""
    import shutil
    import tempfile

    from crmbook import engine

    s = cfg.attribution
    tables = tables or {}
    drop = (s.direct_channel,) if s.drop_direct else ()
    tdir = Path(run_dir) / "tables"
    lookback = stats = None
    work = Path(tempfile.mkdtemp(prefix="crmbook-attribution-"))
    con = engine.from_params(cfg, spill=work)
    try:
        if s.paths_file is not None:
            source = cfg.resolve(s.paths_file).name
            paths = read_paths_file(cfg.resolve(s.paths_file), s.paths_format, s.paths_delimiter, drop)
        else:
            source = "touchpoints"
            touch, orders = tdir / "clean_touchpoints.parquet", tdir / "clean_transactions.parquet"
            if not touch.is_file() or not orders.is_file():
                raise _no_data(cfg, "attr_err_no_orders" if touch.is_file() else "attr_err_no_touches")
            import duckdb

            from crmbook.errors import InputError
            try:
                log_channels = _load_touch_log(con, touch, orders)
            except ValueError as error:  # too many channels, or centuries between the first and last date
                raise InputError(touch, f"{error}; check the touchpoint and order dates (a mistyped year?) and "
                                        "the channel column") from None
            except (duckdb.ConversionException, duckdb.OutOfRangeException) as error:  # beyond DECIMAL(38, 6)
                raise InputError(orders, "an order's amount is too large to sum exactly: check the amount column for "
                                         f"mistyped values ({str(error).splitlines()[0][:120]})", column="amount") from None
            if s.lookback_days == "auto":
                curve = touch_rate_curve(con, s.lookback_max_days)
                days, how, background = choose_lookback(curve, s.lookback_fallback_days)
                lookback = Lookback(days, how, curve, background)
            else:
                lookback = Lookback(int(s.lookback_days), "fixed")
            paths, stats = journey_paths(con, lookback.days, drop, log_channels)
            if paths.empty or paths["conversions"].sum() <= 0:
                raise _no_data(cfg, "attr_err_no_conversions")
        _log.info("journeys: %s distinct paths, %s conversions; fitting the models with %s bootstrap samples",
                  f"{len(paths):,}", f"{paths['conversions'].sum():,.0f}", s.n_boot)
        attribution, failed = attribute(paths, s)
        recommended, reason = recommend(paths)
        result = AttributionResult(
            source=source, paths=paths, channels=sorted(attribution["channel"].unique(), key=str),
            attribution=attribution, recommended=recommended, recommended_reason=reason,
            transitions=transition_matrix(paths, 1), top_paths=top_paths(paths, s.top_paths),
            lookback=lookback, stats=stats, n_boot=s.n_boot, n_failed_boot=failed, drop_channels=drop)
        truth_path = find_truth(cfg)
        if s.truth_file is not None and not truth_path.is_file():
            from crmbook.errors import InputError
            raise InputError(truth_path, "truth file not found (attribution.truth_file)")
        truth = read_truth(truth_path) if truth_path is not None else None
        if truth is not None:
            result.truth, result.truth_file = truth, str(truth_path)
            result.misallocation = misallocation_table(attribution, truth, recommended)
        spend = spend_by_channel(tables.get("channel_spend"))
        if spend is not None:
            credited = result.model(recommended).reset_index()
            acquisition = None
            clv = read_clv(run_dir) if s.paths_file is None else None
            if clv is not None:
                acq_paths = acquisition_paths(con, lookback.days, drop, clv, log_channels)
                if len(acq_paths) and acq_paths["conversions"].sum() > 0:
                    acquisition = credit_with_fit(acq_paths, paths, recommended, s)[["channel", "conversions", "value"]]
                    result.clv_used = True
            result.economics = channel_economics(credited, spend, acquisition)
            result.reallocation = reallocation(result.economics, s.reallocation_share)
        return result
    finally:
        con.close()
        shutil.rmtree(work, ignore_errors=True)


def _no_data(cfg, key: str):
    from crmbook import report
    from crmbook.errors import InputError

    return InputError(cfg.params_file, report.t(key, "en"))


def _rounded(frame: pd.DataFrame, digits: int = 6) -> pd.DataFrame:
    """Floats rounded, so that the last bits of a sum cannot change a file."""
    out = frame.copy()
    for col in out.columns:
        if pd.api.types.is_float_dtype(out[col]):
            out[col] = out[col].round(digits)
    return out


def save(run_dir: str | Path, result: AttributionResult) -> None:
    """tables/attribution.csv (model, order, channel, conversions, value, share, ci_low,
    ci_high), attribution_paths_top.csv, attribution_paths.parquet (every path, ChannelAttribution
    layout), channel_economics.csv (with spend), attribution_misallocation.csv (with a truth)."""
    from crmbook import store

    store.write_table(run_dir, "attribution", _rounded(result.attribution[ATTRIBUTION_COLUMNS]), fmt="csv")
    store.write_table(run_dir, "attribution_paths_top", _rounded(result.top_paths), fmt="csv")
    store.write_table(run_dir, "attribution_paths", paths_to_channelattribution(result.paths))
    if result.economics is not None:
        store.write_table(run_dir, "channel_economics", _rounded(result.economics), fmt="csv")
    if result.misallocation is not None:
        store.write_table(run_dir, "attribution_misallocation",
                          _rounded(result.misallocation.drop(columns="key")), fmt="csv")


# --------------------------------------------------------------------------------------------
# Summary and display (every word from text/05_attribution.yaml)
# --------------------------------------------------------------------------------------------
def model_label(key: str, lang: str = "en") -> str:
    """The report name of a model key ('markov_2' -> 'Markov, order 2')."""
    from crmbook import report

    if key.startswith("markov_"):
        return report.say("attr_model_markov", lang, order=key.rsplit("_", 1)[1])
    return report.t(f"attr_model_{key}", lang)


def _pct(x: float, digits: int = 1) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.{digits}%}"


def _interval(lo: float, hi: float) -> str:
    return "" if not (np.isfinite(lo) and np.isfinite(hi)) else f"{lo:.1%}–{hi:.1%}"


def summarise(result: AttributionResult, cfg):
    """KPI cards and three to five findings for the 05 report and the index page."""
    from crmbook import report

    lang, cur = cfg.report.language, cfg.run.currency
    rec = result.model(result.recommended).sort_values("share", ascending=False)
    paths = result.paths
    conversions = float(paths["conversions"].sum())
    journeys = float((paths["conversions"] + paths["nulls"]).sum())
    top = rec.index[0]
    cards = [
        report.Card(report.t("attr_card_conversions", lang), report.number(conversions),
                    report.say("attr_card_conversions_note", lang, orders=report.number(result.stats.orders))
                    if result.stats else ""),
        report.Card(report.t("attr_card_journeys", lang), report.number(journeys),
                    report.say("attr_card_journeys_note", lang, nulls=report.number(paths["nulls"].sum()))),
        report.Card(report.t("attr_card_channels", lang), str(len(result.channels))),
        report.Card(report.t("attr_card_top", lang), f"{top} {rec.loc[top, 'share']:.0%}",
                    report.say("attr_card_top_note", lang, model=model_label(result.recommended, lang),
                               interval=_interval(rec.loc[top, "ci_low"], rec.loc[top, "ci_high"]) or "–")),
    ]
    if result.lookback is not None:
        cards.append(report.Card(report.t("attr_card_lookback", lang),
                                 report.say("attr_days", lang, days=result.lookback.days),
                                 report.t(f"attr_lookback_{result.lookback.how}", lang)))
    if result.misallocation is not None:
        mis = result.misallocation.set_index("key")["misallocation"]
        cards.append(report.Card(report.t("attr_card_misallocation", lang), _pct(mis[result.recommended]),
                                 report.t("attr_card_misallocation_note", lang)))
    if result.economics is not None and result.economics["roas"].notna().any():
        best = result.economics.iloc[0]
        cards.append(report.Card(report.t("attr_card_best_roas", lang), f"{best['channel']} {best['roas']:.1f}×",
                                 report.t("attr_card_best_roas_note", lang)))

    findings = []
    if result.stats is not None:
        st = result.stats
        findings.append(report.say("attr_f_journeys", lang, converting=report.number(st.converting),
                                   orders=report.number(st.orders), days=result.lookback.days,
                                   unattributed=report.number(st.unattributed), journeys=report.number(st.journeys)))
    else:
        findings.append(report.say("attr_f_paths_file", lang, file=result.source, journeys=report.number(journeys),
                                   conversions=report.number(conversions), channels=len(result.channels)))
    parts = [report.say("attr_f_share_item", lang, channel=c, share=_pct(rec.loc[c, "share"]),
                        interval=_interval(rec.loc[c, "ci_low"], rec.loc[c, "ci_high"]) or "–") for c in rec.index[:3]]
    findings.append(report.say("attr_f_top", lang, model=model_label(result.recommended, lang),
                               channels=report.t("attr_list_sep", lang).join(parts)))
    wide = result.attribution.pivot(index="channel", columns="key", values="share")
    spread = (wide.max(axis=1) - wide.min(axis=1)).sort_values(ascending=False)
    if len(spread) and spread.iloc[0] > 0:
        c = spread.index[0]
        findings.append(report.say("attr_f_disagree", lang, channel=c,
                                   low_model=model_label(wide.loc[c].idxmin(), lang), low=_pct(wide.loc[c].min()),
                                   high_model=model_label(wide.loc[c].idxmax(), lang), high=_pct(wide.loc[c].max())))
    if result.misallocation is not None:
        mis = result.misallocation.set_index("key")["misallocation"]
        best = result.misallocation.iloc[0]
        findings.append(report.say("attr_f_truth", lang, model=model_label(result.recommended, lang),
                                   mis=_pct(mis[result.recommended]), last=_pct(mis.get("last_touch", np.nan)),
                                   best=model_label(best["key"], lang), best_mis=_pct(best["misallocation"])))
    if result.reallocation is not None:
        r = result.reallocation
        findings.append(report.say("attr_f_realloc", lang, to=r["to"], roas_to=f"{r['roas_to']:.2f}",
                                   frm=r["from"], roas_from=f"{r['roas_from']:.2f}", share=f"{r['share']:.0%}",
                                   amount=report.money(r["amount"], cur), gain=report.money(r["revenue_change"], cur),
                                   currency=cur))
    return report.StageSummary(cards, findings[:5])


def heading(key: str, lang: str, level: int = 2, **fields: object):
    """A section heading in the report language."""
    import html

    from IPython.display import HTML

    from crmbook import report

    return HTML(f"<h{level}>{html.escape(report.say(key, lang, **fields))}</h{level}>")


def note(key: str, lang: str, **fields: object):
    """A paragraph in the report language."""
    import html

    from IPython.display import HTML

    from crmbook import report

    return HTML(f"<p>{html.escape(report.say(key, lang, **fields))}</p>")


def intro(result: AttributionResult, cfg):
    """One paragraph under the title: where the paths come from and which model is recommended, and why."""
    from crmbook import report

    lang = cfg.report.language
    source = (report.say("attr_intro_touchpoints", lang, days=result.lookback.days) if result.stats is not None
              else report.say("attr_intro_paths_file", lang, file=result.source))
    return note("attr_intro", lang, source=source, model=model_label(result.recommended, lang),
                why=report.t(result.recommended_reason, lang))


def lookback_chart(result: AttributionResult, cfg):
    """Touches per conversion by days before it, the background rate and the chosen window."""
    from crmbook import report
    from crmbook.plots import attribution as charts

    lang = cfg.report.language
    lb = result.lookback
    return charts.touch_rate(lb.curve, lb.days, lb.background, report.t("attr_chart_lookback", lang),
                             report.t("attr_axis_days_before", lang), report.t("attr_axis_touch_rate", lang),
                             report.say("attr_legend_window", lang, days=lb.days), report.t("attr_legend_background", lang))


def shares_chart(result: AttributionResult, cfg):
    """The recommended model's shares with their intervals (and the true shares when known)."""
    from crmbook import report
    from crmbook.plots import attribution as charts

    lang = cfg.report.language
    rec = result.model(result.recommended)
    truth = result.truth.reindex(rec.index) if result.truth is not None else None
    level = f"{cfg.attribution.interval_level:.0%}"
    return charts.share_intervals(rec["share"], rec["ci_low"], rec["ci_high"], truth,
                                  report.say("attr_chart_shares", lang, model=model_label(result.recommended, lang)),
                                  report.t("attr_axis_share", lang), report.say("attr_legend_interval", lang, level=level),
                                  report.t("attr_legend_truth", lang))


def comparison_chart(result: AttributionResult, cfg):
    """Every model's channel shares as a heatmap (models x channels), truth as the last row."""
    from crmbook import report
    from crmbook.plots import attribution as charts

    lang = cfg.report.language
    wide = result.attribution.pivot(index="key", columns="channel", values="share")
    keys = [k for k in model_keys(cfg.attribution) if k in wide.index]
    wide = wide.loc[keys]
    wide.index = [model_label(k, lang) + (" ★" if k == result.recommended else "") for k in keys]
    if result.truth is not None:
        wide.loc[report.t("attr_truth_row", lang)] = result.truth.reindex(wide.columns).fillna(0.0)
    return charts.share_heatmap(wide, report.t("attr_chart_comparison", lang), report.t("attr_axis_channel", lang),
                                report.t("attr_axis_model", lang), report.t("attr_axis_share", lang),
                                highlight_last=result.truth is not None)


def comparison_table(result: AttributionResult, cfg) -> pd.DataFrame:
    """Channels x models, shares in percent; the recommended model with its interval."""
    from crmbook import report

    lang = cfg.report.language
    wide = result.attribution.pivot(index="channel", columns="key", values="share")
    keys = [k for k in model_keys(cfg.attribution) if k in wide.columns]
    out = pd.DataFrame({report.t("attr_axis_channel", lang): wide.index})
    rec = result.model(result.recommended)
    out[report.t("attr_col_interval", lang)] = [_interval(rec.loc[c, "ci_low"], rec.loc[c, "ci_high"]) for c in wide.index]
    for k in keys:
        out[model_label(k, lang)] = [_pct(v) for v in wide[k]]
    if result.truth is not None:
        out[report.t("attr_truth_row", lang)] = [_pct(result.truth.get(c, 0.0)) for c in wide.index]
    return out


def misallocation_chart(result: AttributionResult, cfg):
    """Misallocation of every model against the truth, with the 5% line."""
    from crmbook import report
    from crmbook.plots import attribution as charts

    lang = cfg.report.language
    mis = result.misallocation
    values = pd.Series(mis["misallocation"].to_numpy(), index=[model_label(k, lang) for k in mis["key"]])
    return charts.misallocation_bars(values, model_label(result.recommended, lang), 0.05,
                                     report.t("attr_chart_misallocation", lang), report.t("attr_axis_misallocation", lang),
                                     report.t("attr_legend_target", lang))


def transition_chart(result: AttributionResult, cfg):
    """The order-1 transition probabilities as a heatmap."""
    from crmbook import report
    from crmbook.plots import attribution as charts

    lang = cfg.report.language
    tm = result.transitions.rename(index={START: report.t("attr_state_start", lang)},
                                   columns={CONVERSION: report.t("attr_state_conversion", lang),
                                            NULL: report.t("attr_state_null", lang)})
    return charts.transition_heatmap(tm, report.t("attr_chart_transitions", lang), report.t("attr_axis_to", lang),
                                     report.t("attr_axis_from", lang), report.t("attr_axis_probability", lang))


def paths_table(result: AttributionResult, cfg) -> pd.DataFrame:
    """The top paths, formatted, with translated column names."""
    from crmbook import report

    lang, cur = cfg.report.language, cfg.run.currency
    tp = result.top_paths
    return pd.DataFrame({
        report.t("attr_col_path", lang): tp["path"],
        report.t("attr_col_touches", lang): tp["touches"],
        report.t("attr_col_journeys", lang): [report.number(v) for v in tp["journeys"]],
        report.t("attr_col_conversions", lang): [report.number(v) for v in tp["conversions"]],
        report.t("attr_col_conversion_rate", lang): [_pct(v) for v in tp["conversion_rate"]],
        f"{report.t('attr_col_value', lang)} ({cur})": [report.number(v) for v in tp["value"]],
    })


def economics_table(result: AttributionResult, cfg) -> pd.DataFrame:
    """Channel economics, formatted, best return first."""
    from crmbook import report

    lang, cur = cfg.report.language, cfg.run.currency
    e = result.economics

    def money(v: float) -> str:
        return "–" if not np.isfinite(v) else f"{v:,.2f}"

    out = pd.DataFrame({
        report.t("attr_axis_channel", lang): e["channel"],
        f"{report.t('attr_col_spend', lang)} ({cur})": [report.number(v) for v in e["spend"]],
        report.t("attr_col_conversions", lang): [report.number(v, 1) for v in e["conversions"]],
        f"{report.t('attr_col_revenue', lang)} ({cur})": [report.number(v) for v in e["revenue"]],
        report.say("attr_col_cac", lang, currency=cur): [money(v) for v in e["cac"]],
        report.t("attr_col_roas", lang): ["–" if not np.isfinite(v) else f"{v:.2f}×" for v in e["roas"]],
        report.t("attr_col_spend_share", lang): [_pct(v) for v in e["spend_share"]],
        report.t("attr_col_conversion_share", lang): [_pct(v) for v in e["conversion_share"]],
    })
    if "clv_cac" in e.columns:
        out[report.t("attr_col_new_customers", lang)] = [report.number(v, 1) for v in e["new_customers"]]
        out[report.t("attr_col_clv_cac", lang)] = ["–" if not np.isfinite(v) else f"{v:.1f}×" for v in e["clv_cac"]]
    return out


def economics_chart(result: AttributionResult, cfg):
    """ROAS per channel with spend (attributed revenue per unit of spend)."""
    from crmbook import report
    from crmbook.plots import attribution as charts

    lang, cur = cfg.report.language, cfg.run.currency
    e = result.economics[result.economics["roas"].notna()]
    return charts.roas_bars(e.set_index("channel")["roas"], report.t("attr_chart_roas", lang),
                            report.say("attr_axis_roas", lang, currency=cur))


def reallocation_note(result: AttributionResult, cfg):
    """The reallocation suggestion and its caveats, or why there is none."""
    from crmbook import report

    lang, cur = cfg.report.language, cfg.run.currency
    r = result.reallocation
    if r is None:
        return note("attr_realloc_none", lang)
    return note("attr_realloc", lang, to=r["to"], frm=r["from"], share=f"{r['share']:.0%}",
                amount=report.money(r["amount"], cur), roas_to=f"{r['roas_to']:.2f}", roas_from=f"{r['roas_from']:.2f}",
                gain=report.money(r["revenue_change"], cur))


def method_notes(result: AttributionResult, cfg):
    """Definitions and caveats, as a list in the report language."""
    import html

    from IPython.display import HTML

    from crmbook import report

    lang, s = cfg.report.language, cfg.attribution
    keys = ["attr_def_journey" if result.stats is not None else "attr_def_paths_file"]
    if result.lookback is not None:
        keys.append(f"attr_def_lookback_{result.lookback.how}")
    keys += ["attr_def_heuristics", "attr_def_markov", "attr_def_shapley", "attr_def_logistic", "attr_def_data_driven",
             "attr_def_bootstrap"]
    if result.truth is not None:
        keys.append("attr_def_truth")
    else:
        keys.append("attr_def_no_truth")
    if result.economics is not None:
        keys += ["attr_def_economics", "attr_def_reallocation"]
        keys.append("attr_def_clv" if result.clv_used else "attr_def_no_clv")
    if result.drop_channels:
        keys.append("attr_def_drop_direct")
    keys.append("attr_def_correlation")
    fields = {"days": result.lookback.days if result.lookback else "", "n_boot": s.n_boot,
              "level": f"{s.interval_level:.0%}", "half_life": f"{s.half_life:g}", "first": f"{s.position_first:.0%}",
              "last": f"{s.position_last:.0%}", "direct": s.direct_channel, "failed": result.n_failed_boot,
              "truth": Path(result.truth_file).name if result.truth_file else "", "max_days": s.lookback_max_days,
              "fallback": s.lookback_fallback_days}
    items = "".join(f"<li>{html.escape(report.say(k, lang, **fields))}</li>" for k in keys)
    return HTML(f"<ul>{items}</ul>")


def truth_caption(result: AttributionResult, cfg):
    """The caption of the truth check, naming the truth file."""
    from crmbook import report

    return report.caption(report.say("attr_cap_truth", cfg.report.language,
                                     truth=Path(result.truth_file).name if result.truth_file else ""))
