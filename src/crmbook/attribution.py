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
"data-driven" model, bootstrap intervals for any model, and ``misallocation`` for simulations.
W-shaped attribution is not provided: it needs the index of the lead-creating touch, which the
path-only representation does not carry.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.linalg import spsolve

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

    base = len(names) + 1
    fit = max(1, int(62 // math.log2(base + 1)))  # base**fit < 2**62: no int64 overflow
    short = lengths <= fit
    groups: list[tuple[np.ndarray, np.ndarray]] = []  # (journey of each key, key codes)
    if short.any():
        if short.all():
            s_starts, s_len, idx = starts, lengths, None
        else:
            s_starts, s_len = starts[short], lengths[short]
            idx = _key_ranges(s_starts, s_len)
        pos = np.arange(len(cc) if idx is None else len(idx))
        pos -= np.repeat(np.concatenate(([0], np.cumsum(s_len)[:-1])), s_len)
        digits = base ** np.arange(fit, dtype=np.int64)
        digits = digits[pos]
        del pos
        digits *= cc if idx is None else cc[idx]
        keys = np.add.reduceat(digits, np.concatenate(([0], np.cumsum(s_len)[:-1])))
        del digits, idx
        inv, _ = pd.factorize(keys)
        groups.append((np.flatnonzero(short), inv))
    if not short.all():
        long_idx = np.flatnonzero(~short)
        buf = cc.astype(np.uint32).tobytes()
        keys_b = [buf[4 * s:4 * (s + k)] for s, k in zip(starts[long_idx], lengths[long_idx])]
        inv, _ = pd.factorize(pd.Series(keys_b, dtype=object))
        groups.append((long_idx, inv))

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
    if not all(type(p) is tuple for p in path_list):
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
    ukeys, state = np.unique(key, return_inverse=True)
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
    enc = _encode(paths)
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
    pair = np.unique(enc.path_id * enc.n_channels + enc.codes)
    pid, ch = pair // enc.n_channels, pair % enc.n_channels
    k = np.bincount(pid, minlength=len(enc.length))
    w = 1.0 / k[pid]
    return (np.bincount(ch, weights=w * enc.conv[pid], minlength=enc.n_channels),
            np.bincount(ch, weights=w * enc.value[pid], minlength=enc.n_channels))


# --------------------------------------------------------------------------------------------
# Data-driven: logistic regression on channel presence
# --------------------------------------------------------------------------------------------
def logistic_attribution(paths: pd.DataFrame, *, C: float = 1.0, max_iter: int = 1000) -> pd.DataFrame:
    """Logistic-regression ("data-driven") attribution on channel presence.

    Fit P(convert | channels present) = sigmoid(b0 + sum_c beta_c x_c) with scikit-learn
    (L2, inverse strength ``C``), one row per path and outcome weighted by its conversions /
    nulls, so the fit equals the per-journey fit. A converting journey's credit is split among
    its present channels in proportion to max(beta_c, 0): each channel's share of the journey's
    incremental log-odds over the no-channel baseline. Chosen over counterfactual removal
    because log-odds are additive in the model, so the split is exact and needs no
    renormalisation or ordering; channels with a negative coefficient get no credit, and a
    journey whose channels all have beta <= 0 is split equally. Data without any null journey
    cannot contrast presence against absence: no model is fitted, all coefficients are set to 1
    and credit is split equally over each journey's distinct channels. Adds column
    ``coefficient``.
    """
    from sklearn.linear_model import LogisticRegression

    enc = _encode(paths)
    n_paths = len(enc.length)
    pair = np.unique(enc.path_id * enc.n_channels + enc.codes)
    pid, ch = pair // enc.n_channels, pair % enc.n_channels
    x = sp.csr_matrix((np.ones(len(pid)), (pid, ch)), shape=(n_paths, enc.n_channels))
    y = np.concatenate([np.ones(n_paths), np.zeros(n_paths)])
    sw = np.concatenate([enc.conv, enc.nulls])
    rows = np.flatnonzero(sw > 0)
    x2 = sp.vstack([x, x]).tocsr()[rows]
    y2, sw2 = y[rows], sw[rows]
    if len(np.unique(y2)) < 2:  # no null journeys: presence cannot be contrasted
        beta = np.ones(enc.n_channels)
    else:
        model = LogisticRegression(C=C, max_iter=max_iter)
        model.fit(x2, y2, sample_weight=sw2)
        beta = model.coef_[0].copy()
    pos_beta = np.maximum(beta, 0.0)[ch]
    tot = np.bincount(pid, weights=pos_beta, minlength=n_paths)
    k = np.bincount(pid, minlength=n_paths)
    w = np.where(tot[pid] > 0, pos_beta / np.where(tot[pid] > 0, tot[pid], 1.0), 1.0 / k[pid])
    conv = np.bincount(ch, weights=w * enc.conv[pid], minlength=enc.n_channels)
    value = np.bincount(ch, weights=w * enc.value[pid], minlength=enc.n_channels)
    return _frame("logistic", enc, conv, value, coefficient=beta)


# --------------------------------------------------------------------------------------------
# Bootstrap and misallocation
# --------------------------------------------------------------------------------------------
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
    conv = paths["conversions"].to_numpy(dtype=float)
    nulls = paths["nulls"].to_numpy(dtype=float)
    value = paths["value"].to_numpy(dtype=float)
    per_conv = np.divide(value, conv, out=np.zeros_like(value), where=conv > 0)
    counts = np.concatenate([conv, nulls])
    n_total = int(round(counts.sum()))
    prob = counts / counts.sum()
    rng = np.random.default_rng(seed)
    shares = np.full((n_boot, len(index)), np.nan)
    failed = 0
    m = len(conv)
    for b in range(n_boot):
        draw = rng.multinomial(n_total, prob).astype(float)
        c_b, n_b = draw[:m], draw[m:]
        if c_b.sum() == 0:
            failed += 1
            continue
        keep = (c_b + n_b) > 0
        rep = pd.DataFrame({"path": paths["path"].to_numpy(dtype=object)[keep],
                            "conversions": c_b[keep], "value": (per_conv * c_b)[keep],
                            "nulls": n_b[keep]})
        res = model_fn(rep)
        s = res.set_index(keys)["share"] if len(keys) > 1 else res.set_index("channel")["share"]
        shares[b] = s.reindex(index).fillna(0.0).to_numpy()
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
