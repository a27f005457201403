"""Customer-lifetime-value models: BG/NBD, MBG/NBD, Pareto/NBD and Gamma-Gamma, written on scipy.

Why hand-written
----------------
The usual Python packages do not fit this workbook. `lifetimes` (the reference implementation of
these fitters) is archived and no longer runs on pandas 3; `pymc-marketing` compiles a PyTensor
graph on first use, which takes 10-90 s per model and is far heavier than a maximum-likelihood
fit needs; `btyd` is an unmaintained fork of `lifetimes`. The models are short closed-form
likelihoods, so they are written here directly on numpy/scipy, with every formula cited below.

Time unit
---------
The time unit is the caller's: recency `t_x`, age `T` and forecast horizons `t` are in whatever
unit the summary was built in (days, weeks, ...), and the rate parameters (alpha, beta, and
Gamma-Gamma's gamma, which is in money) are per that unit. Refit when you change the unit;
the shape parameters (r, a, b, s, p, q) do not depend on it.

Notation: x = frequency (number of *repeat* purchases), t_x = recency (time of the last
purchase, measured from the first one), T = age (time from the first purchase to the end of
the calibration period); 0 <= t_x <= T, and t_x = 0 when x = 0.

Sources of the formulas
-----------------------
- BG/NBD: Fader, Hardie & Lee (2005), "'Counting Your Customers' the Easy Way: An Alternative
  to the Pareto/NBD Model", Marketing Science 24(2), 275-284: likelihood eq. (6),
  P(X(t)=x) eq. (8), E[X(t)] eq. (9), conditional expectation eq. (10); P(alive) as in Fader,
  Hardie & Lee (2008), "Computing P(alive) Using the BG/NBD Model" (brucehardie.com note 021).
- MBG/NBD: Batislam, Denizel & Filiztekin (2007), "Empirical validation and comparison of
  models for customer base analysis", International Journal of Research in Marketing 24(3),
  201-209 (the BG/NBD with a possible drop-out straight after the first purchase).
- Pareto/NBD: Schmittlein, Morrison & Colombo (1987), "Counting Your Customers: Who Are They
  and What Will They Do Next?", Management Science 33(1), 1-24; in the form of Fader, Hardie &
  Lee (2005), "A Note on Deriving the Pareto/NBD Model and Related Expressions"
  (http://brucehardie.com/notes/009/): the likelihood with its alpha >= beta / alpha < beta
  switch, P(alive), E[X(t)], P(X(t)=x) and the conditional expectation as derived there.
- Gamma-Gamma spend model: Fader, Hardie & Lee (2005), "RFM and CLV: Using Iso-Value Curves
  for Customer Base Analysis", Journal of Marketing Research 42(4), 415-430 (and the
  companion note "The Gamma-Gamma Model of Monetary Value", http://brucehardie.com/notes/025/):
  the marginal density of the mean spend zbar and the conditional expectation E[M | x, zbar].

Numerics
--------
- Log-likelihoods are vectorised and computed in log space (gammaln, betaln, logaddexp,
  log1p/expm1); fitting runs on the unique (x, t_x, T) rows with their counts as weights
  (`compress`, a hash of each column and of the combined codes: linear time): a million
  customers summarised in whole days over a year compress to under 200,000 rows. The BG/NBD and
  MBG/NBD fits sum their likelihood and gradient directly (`_bg_weighted_loglik`): terms in x
  alone once per distinct x, logs of alpha + T and alpha + t_x once per distinct time, and no
  BLAS (whose idle threads, on busy cores, cost more than the sums); a 1M-customer BG/NBD fit
  takes about 0.3 s of CPU. The Pareto/NBD likelihood evaluates its hypergeometric term G(t) once
  per distinct (x, t) pair among the rows' (x, t_x) and (x, T) (some 12,000 pairs for 3 million
  customers over two years, against 640,000 distinct rows) and its terms in x alone once per x;
  Gamma-Gamma takes its Gamma and digamma terms once per distinct x. Every one of these steps is
  elementwise, so the values are bit for bit those of the row-by-row formulas; what changes is
  that the cost of a fit grows with the distinct rows, not with every term of every row (a
  Pareto/NBD fit on 3 million customers: about 15 s instead of several minutes).
- Parameters are optimised on the log scale with L-BFGS-B (one BLAS thread) from deterministic
  starting values; BG/NBD, MBG/NBD and Gamma-Gamma use analytic gradients, Pareto/NBD central
  differences on its (accurate) log-likelihood. A fit that does not converge (gradient not
  small, with the optimiser's reason when it stopped early; parameter at its bound; Hessian not
  positive definite) has `converged_ = False`, says why in `message_`, and warns
  (ConvergenceWarning). A line search that fails where the gradient is already small is rounding
  at the optimum, not a failure.
- Standard errors are the square roots of the diagonal of the inverse Hessian of the total
  negative log-likelihood (plus the penalty, if any) in the natural parameter space, by central
  differences (of the analytic gradient where there is one).
- Pareto/NBD: the Gauss hypergeometric term is rewritten with Euler's transformation as
  2F1(1, B; C; z) with 0 <= z < 1 and C > B > 0 (its series has positive terms, so it cannot
  cancel) and evaluated in log space by Gauss's continued fraction; the difference of the two
  antiderivative terms is taken with log1mexp. Nothing overflows for any x or T. Where z is
  within 1e-4 of 1 (extreme alpha/beta ratios, met mostly by the optimiser's trial steps) the
  fraction would be slow, and the underlying integral is computed by quadrature instead.
- BG/NBD and MBG/NBD conditional expectations use the Euler-transformed 2F1 of the paper's
  eq. (10), summed by a guarded series; where it cannot be summed accurately (argument very
  close to 1, or cancellation) the same expectation is integrated numerically over the
  posterior of p (scipy.integrate.quad with the Beta weight), so the result is never silently
  wrong.
"""
from __future__ import annotations

import datetime as dt
import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Self

import numpy as np
import pandas as pd
from scipy import integrate, optimize, special
from scipy.special import betaln, gammaln, psi
from threadpoolctl import threadpool_limits

_log = logging.getLogger(__name__)  # progress lines (crmbook.progress)

__all__ = [
    "BetaGeo",
    "ModifiedBetaGeo",
    "ParetoNBD",
    "GammaGamma",
    "NotFittedError",
    "ConvergenceWarning",
    "compress",
    "customer_lifetime_value",
    "discounted_purchases",
]

_LOG_BOUND = 30.0  # parameters are searched in [e^-30, e^30]
_GRAD_TOL = 1e-5  # max |d mean-NLL / d log(param)| accepted as converged
_GTOL = 1e-8  # the optimiser stops below this max |gradient| (1e-9 is below rounding on large data: it then
# spends a dozen evaluations in failed line searches at the same point)
_SERIES_MAX_TERMS = 20_000
_CF_MAX_ITER = 20_000
_BETA_TIGHT = 50.0  # Beta(a, b+x) this concentrated: vectorised quadrature (see _future_purchases_tight)
_CF_Z_MAX = 1.0 - 1e-4  # beyond this the continued fraction is slow (~1/sqrt(1-z) steps): quadrature


class NotFittedError(ValueError, AttributeError):
    """A model was used before `fit`."""


class ConvergenceWarning(RuntimeWarning):
    """A fit stopped without converging; the model has `converged_ = False` and a `message_`."""


# --------------------------------------------------------------------------- input checks


def _as_float(name: str, values) -> np.ndarray:
    """1-D float array of finite values, or ValueError naming the argument and the first bad row."""
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from None
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name} must be finite: {int(bad.sum())} missing or infinite value(s), first at row {i}")
    return arr


def _first_bad(name: str, bad: np.ndarray, what: str, shown: np.ndarray) -> None:
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name} {what}: {int(bad.sum())} row(s), first at row {i} (value {float(shown[i])!r})")


def _check_rft(frequency, recency, T) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate a (frequency, recency, T) summary; returns float arrays of equal length."""
    x = _as_float("frequency", frequency)
    tx = _as_float("recency", recency)
    age = _as_float("T", T)
    if not (x.size == tx.size == age.size):
        raise ValueError(f"frequency, recency and T must have the same length, got {x.size}, {tx.size}, {age.size}")
    if x.size == 0:
        raise ValueError("no customers: frequency, recency and T are empty")
    _first_bad("frequency", x < 0, "must be >= 0", x)
    _first_bad("frequency", x != np.round(x), "must be a whole number of repeat purchases", x)
    _first_bad("recency", tx < 0, "must be >= 0", tx)
    _first_bad("T", age < 0, "must be >= 0", age)
    over = tx > age
    if over.any():
        i = int(np.flatnonzero(over)[0])
        raise ValueError(
            f"recency must be <= T: {int(over.sum())} row(s), first at row {i} (recency {float(tx[i])!r} > T {float(age[i])!r})"
        )
    zero_rec = (x == 0) & (tx > 0)
    if zero_rec.any():
        i = int(np.flatnonzero(zero_rec)[0])
        raise ValueError(
            "recency must be 0 when frequency is 0 (no repeat purchase, so the last purchase is the first): "
            f"{int(zero_rec.sum())} row(s), first at row {i} (recency {float(tx[i])!r})"
        )
    return x, tx, age


def _check_weights(weights, n: int) -> np.ndarray:
    if weights is None:
        return np.ones(n)
    w = _as_float("weights", weights)
    if w.size != n:
        raise ValueError(f"weights must have one value per customer: got {w.size}, expected {n}")
    _first_bad("weights", w < 0, "must be >= 0", w)
    if not w.sum() > 0:
        raise ValueError("weights must not all be 0")
    return w


def _check_t(name: str, t) -> np.ndarray:
    arr = np.asarray(t, dtype=float)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    if np.any(arr < 0):
        raise ValueError(f"{name} must be >= 0")
    return arr


def _unique_rows(*columns: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Unique rows of equal-length 1-D arrays, sorted lexicographically, and the inverse index.

    Each column is factorised by hashing (`pandas.factorize`, codes in sorted order) and the codes
    are combined into one int64 key. When the key's range is small (summaries in whole days or
    weeks), the unique keys are marked in a dense table; else the key is factorised again. Linear
    time either way: about ten times faster than a lexsort on a million rows. Falls back to the
    lexsort when the key would not fit in 63 bits.
    """
    n = columns[0].size
    coded = [pd.factorize(c, sort=True) for c in columns]
    sizes = [u.size for _, u in coded]
    key_range = math.prod(sizes)
    if key_range < 2**62:
        key = coded[0][0].astype(np.int64)
        for (codes, _), size in zip(coded[1:], sizes[1:]):
            key *= size
            key += codes
        if key_range <= max(16 * n, 2**20):  # a bool and an int32 per possible key: <= 80 bytes per row
            seen = np.zeros(key_range, dtype=bool)
            seen[key] = True
            ukey = np.flatnonzero(seen)
            lookup = np.empty(key_range, dtype=np.int64 if ukey.size >= 2**31 else np.int32)
            lookup[ukey] = np.arange(ukey.size)
            inverse = lookup[key].astype(np.int64)
        else:
            inverse, ukey = pd.factorize(key, sort=True)
            inverse = inverse.astype(np.int64)
        out = []
        for (_, uniques), size in zip(coded[::-1], sizes[::-1]):
            ukey, code = np.divmod(ukey, size)
            out.append(np.asarray(uniques)[code])
        return out[::-1], inverse
    order = np.lexsort(columns[::-1])
    ordered = [c[order] for c in columns]
    new = np.ones(order.size, dtype=bool)
    if order.size > 1:
        new[1:] = np.logical_or.reduce([c[1:] != c[:-1] for c in ordered])
    group = np.cumsum(new) - 1
    inverse = np.empty(order.size, dtype=np.int64)
    inverse[order] = group
    return [c[new] for c in ordered], inverse


def compress(frequency, recency, T) -> tuple[pd.DataFrame, np.ndarray]:
    """Unique (frequency, recency, T) rows with their counts.

    Returns `(rows, inverse)`: `rows` has columns frequency, recency, T, weight (the number of
    customers with that row) sorted by (frequency, recency, T), and `rows.iloc[inverse]`
    gives back the input order. Fitting on `rows` with `weights=rows["weight"]` gives the same
    estimates as fitting on every customer (the fitters do this internally).
    """
    x, tx, age = _check_rft(frequency, recency, T)
    (ux, utx, uage), inverse = _unique_rows(x, tx, age)
    counts = np.bincount(inverse, minlength=ux.size)
    rows = pd.DataFrame({"frequency": ux, "recency": utx, "T": uage, "weight": counts})
    return rows, inverse


def _compress_weighted(x, tx, age, w) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    (ux, utx, uage), inverse = _unique_rows(x, tx, age)
    wsum = np.bincount(inverse, weights=w, minlength=ux.size)
    keep = wsum > 0
    return ux[keep], utx[keep], uage[keep], wsum[keep]


# --------------------------------------------------------------------------- numerical helpers


def _log1mexp(d: np.ndarray) -> np.ndarray:
    """log(1 - exp(d)) for d <= 0, accurate on both sides of -log 2 (Maechler 2012); -inf at d = 0.
    Each side's formula is evaluated on its own values only (not both on every value)."""
    d = np.minimum(d, 0.0)
    near = d > -math.log(2.0)
    if np.ndim(d) == 0:
        with np.errstate(divide="ignore"):
            return np.log(-np.expm1(d)) if near else np.log1p(-np.exp(d))
    out = np.empty(d.shape)
    far = ~near
    with np.errstate(divide="ignore"):
        out[near] = np.log(-np.expm1(d[near]))
        out[far] = np.log1p(-np.exp(d[far]))
    return out


def _expm1_ratio(c, u):
    """(1 - exp(-c u)) / c, continuous at c = 0 (where it is u); c may be negative."""
    c, u = np.broadcast_arrays(np.asarray(c, float), np.asarray(u, float))
    cu = c * u
    small = np.abs(cu) < 1e-8
    safe_c = np.where(small, 1.0, c)
    return np.where(small, u * (1.0 - 0.5 * cu), -np.expm1(-cu) / safe_c)


def _log_hyp2f1_unit(b, c, z, *, tol: float = 1e-15, max_iter: int = _CF_MAX_ITER) -> np.ndarray:
    """log 2F1(1, b; c; z) for c > b > 0 and 0 <= z < 1, by Gauss's continued fraction.

    2F1(1, b; c; z) = 1 / (1 - k1 z / (1 - k2 z / (1 - ...))) with
    k_{2i+1} = (b+i)(c-1+i) / ((c-1+2i)(c+2i)),  k_{2i} = i(c-1-b+i) / ((c-2+2i)(c-1+2i)),
    all positive when c > b > 0 (Gauss's fraction for 2F1(b, 1; c; z) / 2F1(b, 0; c-1; z), with
    2F1(b, 0; c-1; z) = 1; DLMF section 15.7), evaluated by the modified Lentz method. The
    function is >= 1, so its log is finite; the fraction converges for every z < 1, in
    O((1 - z)^-1/2) steps near z = 1 (about 10 steps at z = 0.1, 1,500 at z = 1 - 1e-4, the
    largest z it is used for).
    """
    b, c, z = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (b, c, z)))
    shape = b.shape
    b, c, z = b.ravel(), c.ravel(), z.ravel()
    out = np.zeros(b.size)  # log F; stays 0 where z == 0
    idx = np.flatnonzero(z > 0)
    tiny = 1e-300
    # g = 1 + a_1/(1 + a_2/(1 + ...)), a_j = -k_j z, F = 1/g; Lentz: f_0 = 1, C_0 = 1, D_0 = 0.
    g = np.ones(idx.size)
    cc = np.ones(idx.size)
    dd = np.zeros(idx.size)
    j = 1
    while idx.size and j <= max_iter:
        bb, ca, zz = b[idx], c[idx], z[idx]
        if j % 2:
            i = (j - 1) // 2
            k = (bb + i) * (ca - 1 + i) / ((ca - 1 + 2 * i) * (ca + 2 * i))
        else:
            i = j // 2
            k = i * (ca - 1 - bb + i) / ((ca - 2 + 2 * i) * (ca - 1 + 2 * i))
        a_j = -k * zz
        dd = 1.0 + a_j * dd
        dd = np.where(np.abs(dd) < tiny, tiny, dd)
        dd = 1.0 / dd
        cc = 1.0 + a_j / cc
        cc = np.where(np.abs(cc) < tiny, tiny, cc)
        delta = cc * dd
        g = g * delta
        done = np.abs(delta - 1.0) <= tol
        if done.any():
            out[idx[done]] = -np.log(g[done])
            keep = ~done
            idx, g, cc, dd = idx[keep], g[keep], cc[keep], dd[keep]
        j += 1
    if idx.size:
        warnings.warn(
            f"2F1 continued fraction stopped after {max_iter} steps for {idx.size} value(s) with z within "
            f"{1 - z[idx].max():.1e} of 1; those values are approximate",
            RuntimeWarning,
            stacklevel=3,
        )
        out[idx] = -np.log(g)
    return out.reshape(shape)


def _hyp2f1_tail(a, b, c, z, *, max_terms: int = _SERIES_MAX_TERMS):
    """(2F1(a, b; c; z) - 1) / b by its series, for real a, b, c and 0 <= z < 1; finite at b = 0.

    sum_{n>=1} (a)_n (b+1)_{n-1} / ((c)_n n!) z^n, i.e. the Gauss series without its leading 1
    and with the factor b taken out of every term. Returns (value, biggest, ok): `biggest` is the
    largest |term| (the rounding error is about 1e-16 times it) and ok is False where the series
    did not converge within max_terms or was not finite (c at or near a pole, 0, -1, ...).
    """
    a, b, c, z = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (a, b, c, z)))
    shape = a.shape
    a, b, c, z = a.ravel(), b.ravel(), c.ravel(), z.ravel()
    total = np.zeros(a.size)
    biggest_out = np.zeros(a.size)
    ok = np.zeros(a.size, dtype=bool)
    idx = np.arange(a.size)
    term = a / c * z  # n = 1
    tot = term.copy()
    biggest = np.abs(term)
    n = 1
    while idx.size:
        aa, bb, ca, zz = a[idx], b[idx], c[idx], z[idx]
        finite = np.isfinite(tot)
        ratio = (aa + n) * (bb + n) / ((ca + n) * (n + 1.0)) * zz
        rho = np.maximum(np.abs(ratio), zz)  # bound on the later ratios (they tend to z)
        done = ~finite | (term == 0) | ((rho < 1) & (np.abs(term) * rho <= 1e-17 * (1 - rho) * np.abs(tot)))
        if n >= max_terms:
            done[:] = True
        if done.any():
            total[idx[done]] = tot[done]
            biggest_out[idx[done]] = biggest[done]
            ok[idx[done]] = (n < max_terms) & finite[done]
            keep = ~done
            idx, term, tot, biggest, ratio = idx[keep], term[keep], tot[keep], biggest[keep], ratio[keep]
        term = term * ratio
        tot = tot + term
        biggest = np.maximum(biggest, np.abs(term))
        n += 1
    return total.reshape(shape), biggest_out.reshape(shape), ok.reshape(shape)


def _future_purchases_quad(a: float, bp: float, k: float, u: float) -> float:
    """E_p[(1 - (1 + p u)^-k) / p], p ~ Beta(a, bp): the integral behind FHL (2005) eq. (10).

    Integrated over y = -log p, where the integrand e^(-(a-1) y) (1 - e^-y)^(bp-1) / B(a, bp) *
    (1 - (1 + u e^-y)^-k) is smooth (a log-Beta density shape times a step); the integral is
    split near the density's bulk, log((a+bp-1)/a), at the step, log(k u), and at the mean of y
    (psi(a+bp) - psi(a)) plus and minus 1, 3, 10 and 30 of its standard deviations (the variance is
    trigamma(a) - trigamma(a+bp)): when a >> b the bulk sits at y ~ b/a with a width ~ sqrt(b)/a,
    and without these points the adaptive rule can miss most of it (it returned about half the
    value for a ~ 1e5).
    """
    log_b = betaln(a, bp)

    def f(y: float) -> float:
        if y <= 0.0:
            return 0.0 if bp > 1 else (math.inf if bp < 1 else math.exp(-log_b) * -math.expm1(-k * math.log1p(u)))
        log_p = -y
        step = -math.expm1(-k * math.log1p(u * math.exp(log_p)))
        if step <= 0.0:
            return 0.0
        return math.exp((a - 1.0) * log_p + (bp - 1.0) * math.log(-math.expm1(log_p)) - log_b + math.log(step))

    mean_y = float(psi(a + bp) - psi(a))
    sd_y = math.sqrt(max(float(special.polygamma(1, a) - special.polygamma(1, a + bp)), 0.0))
    bulk = [mean_y + c * sd_y for c in (-30.0, -10.0, -3.0, -1.0, 0.0, 1.0, 3.0, 10.0, 30.0)]
    cuts = sorted({c for c in (math.log((a + bp - 1.0) / a) if a + bp > 1 else 0.0, math.log(k * u) if k * u > 0 else 0.0, *bulk)
                   if c > 0 and math.isfinite(c)})
    edges = [0.0, *cuts, math.inf]
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        val, _ = integrate.quad(f, lo, hi, epsabs=0.0, epsrel=1e-12, limit=400)
        total += val
    return total


def _future_purchases(t, a: float, bp, k, scale) -> np.ndarray:
    """Expected purchases in the next t for a customer alive now, BG-type drop-out.

    The customer is alive now, with posterior purchase rate lambda ~ Gamma(k, scale) and
    drop-out probability p ~ Beta(a, bp); after every purchase they leave with probability p.
    FHL (2005) eq. (10) without its P(alive) factor, with C = a + bp - 1 and z = t/(scale + t):
        C/(a-1) * [1 - (1-z)^k 2F1(k, bp; C; z)]
      = C/(a-1) * [1 - (1-z)^(a-1) 2F1(C-k, a-1; C; z)]            (Euler's transformation)
      = C * [(1 - (1-z)^(a-1))/(a-1) - (1-z)^(a-1) S],   S = (2F1(C-k, a-1; C; z) - 1)/(a-1)
    The last form has no 0/0 at a = 1 (S is summed with a-1 factored out, `_hyp2f1_tail`).
    For BG/NBD bp = b + x; for MBG/NBD (Batislam et al. 2007) bp = b + x + 1. Where the series
    does not converge or its rounding error could exceed 1e-10 relative, the expectation is
    integrated numerically instead (`_future_purchases_quad`).
    """
    t, bp, k, scale = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (t, bp, k, scale)))
    eps = a - 1.0
    cc = eps + bp  # may be <= 0 when a + b < 1 and x = 0: the series still works unless cc ~ 0, -1, ...
    z = t / (scale + t)
    log1mz = np.log1p(-z)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        tail, biggest, ok = _hyp2f1_tail(cc - k, eps, cc, z)
        pow_ = np.exp(eps * log1mz)
        out = np.array(cc * (_expm1_ratio(eps, -log1mz) - pow_ * tail), dtype=float)
        ok &= np.isfinite(out) & (np.abs(cc) * pow_ * biggest * 1e-16 <= 1e-10 * np.abs(out))
    out[t == 0] = 0.0
    ok |= t == 0
    flat = out.reshape(-1)  # a view: replace the values the series could not sum
    bad = np.flatnonzero(~ok.reshape(-1))
    if bad.size:
        bp_bad, k_bad, u_bad = bp.reshape(-1)[bad], k.reshape(-1)[bad], (t / scale).reshape(-1)[bad]
        tight = (a >= _BETA_TIGHT) & (bp_bad >= _BETA_TIGHT)
        if tight.any():
            flat[bad[tight]] = _future_purchases_tight(a, bp_bad[tight], k_bad[tight], u_bad[tight])
        for i, bpi, ki, ui in zip(bad[~tight], bp_bad[~tight], k_bad[~tight], u_bad[~tight]):
            flat[i] = _future_purchases_quad(a, float(bpi), float(ki), float(ui))
    return out


def _future_purchases_tight(a: float, bp: np.ndarray, k: np.ndarray, u: np.ndarray) -> np.ndarray:
    """E_p[(1 - (1 + p u)^-k) / p], p ~ Beta(a, bp), for a concentrated Beta (a, bp >= _BETA_TIGHT).

    The same integral as `_future_purchases_quad`, vectorised over rows: where a and b + x are both
    large (a fit at the "everyone has the same drop-out probability" edge, a, b -> infinity) the
    hypergeometric series overflows, and a quadrature per row takes seconds for a few thousand
    customers. The Beta density is then a narrow, nearly normal bump: it is integrated with
    composite Gauss-Legendre (4 panels x 32 nodes) over mean +/- 12 standard deviations (clipped to
    (0, 1)), outside which it has no mass that counts (a Gamma(50) tail beyond 12 sd is < 1e-20).
    """
    mean = a / (a + bp)
    sd = np.sqrt(mean * (1.0 - mean) / (a + bp + 1.0))
    lo = np.maximum(mean - 12.0 * sd, 0.0)
    hi = np.minimum(mean + 12.0 * sd, 1.0)
    nodes, weights = np.polynomial.legendre.leggauss(32)
    panels = 4
    width = (hi - lo) / panels
    total = np.zeros(bp.size)
    log_b = betaln(a, bp)
    for j in range(panels):
        left = lo + j * width
        p = left[:, None] + 0.5 * width[:, None] * (nodes[None, :] + 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_density = (a - 1.0) * np.log(p) + (bp[:, None] - 1.0) * np.log1p(-p) - log_b[:, None]
            step = -np.expm1(-k[:, None] * np.log1p(p * u[:, None])) / p
            values = np.where(p > 0, np.exp(log_density) * step, 0.0)
        total += 0.5 * width * (values @ weights)
    return total


def _unique_apply(func: Callable[..., np.ndarray], *arrays) -> np.ndarray:
    """Apply func to the unique rows of the broadcast arrays (large inputs repeat a lot)."""
    arrays = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in arrays))
    shape = arrays[0].shape
    if arrays[0].size <= 2048:
        return np.asarray(func(*arrays), dtype=float).reshape(shape)
    uniq, inverse = _unique_rows(*(v.ravel() for v in arrays))
    vals = np.asarray(func(*uniq), dtype=float)
    return vals[inverse].reshape(shape)


def _nb_log_pmf(n, r, alpha, t):
    """log P(N(t) = n) for a Poisson count with Gamma(r, alpha) rate: the NBD (as in FHL 2005 eq. 8)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return (
            gammaln(r + n) - gammaln(r) - gammaln(n + 1.0)
            + r * (np.log(alpha) - np.log(alpha + t))
            + special.xlogy(n, t) - n * np.log(alpha + t)
        )


def _nb_sf(n, r, alpha, t):
    """P(N(t) >= n) for the NBD: the regularised incomplete beta I_{t/(alpha+t)}(n, r), 1 for n = 0."""
    n = np.asarray(n, dtype=float)
    safe_n = np.where(n > 0, n, 1.0)
    return np.where(n > 0, special.betainc(safe_n, r, t / (alpha + t)), 1.0)


# --------------------------------------------------------------------------- likelihoods


def _by_frequency(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of x and the index that maps them back. Repeat-purchase counts take few
    distinct values, so terms that depend on x only (log-gamma, digamma) are computed once per value.
    Fitting data are sorted by x (`compress`): then this is a linear pass, not a sort."""
    if x.size > 1 and np.all(x[1:] >= x[:-1]):
        new = np.empty(x.size, dtype=bool)
        new[0] = True
        np.not_equal(x[1:], x[:-1], out=new[1:])
        return x[new], np.cumsum(new) - 1
    return np.unique(x, return_inverse=True)


def _bg_loglik(params, x, tx, age, *, shift: int, grad: bool):
    """Per-customer log-likelihood of the BG/NBD (shift=0) or MBG/NBD (shift=1), and its gradient.

    FHL (2005) eq. (6), in the form
        LL = A + D + log( (alpha+T)^-(r+x) + [x>0] a/(b+x-1) (alpha+t_x)^-(r+x) )
        A  = log Gamma(r+x) - log Gamma(r) + r log alpha,   D = log B(a, b+x) - log B(a, b)
    (B(a+1, b+x-1)/B(a, b+x) = a/(b+x-1)). Batislam et al. (2007) MBG/NBD: b+x -> b+x+1
    in D and in the ratio, and the second term applies for every x (drop-out at time 0).
    The gradient is with respect to (r, alpha, a, b), shape (n, 4). Terms in x alone (A, D, the
    ratio's log and the digamma terms) are computed once per distinct x (`_by_frequency`).
    """
    r, alpha, a, b = params
    ux, inv = _by_frequency(x)
    k = r + x
    uk = r + ux
    ubx = b + ux + shift
    usecond = (ux > 0) if shift == 0 else np.ones(ux.shape, dtype=bool)
    udenom = np.where(usecond, ubx - 1.0, 1.0)
    with np.errstate(divide="ignore"):
        ulog_ratio = np.where(usecond, math.log(a) - np.log(udenom), -np.inf)  # log of a/(b+x-1), or 0 weight
    uconst = gammaln(uk) - gammaln(r) + r * math.log(alpha) + betaln(a, ubx) - betaln(a, b)
    log_age, log_tx = np.log(alpha + age), np.log(alpha + tx)
    l1 = -k * log_age
    l2 = ulog_ratio[inv] - k * log_tx
    lse = np.logaddexp(l1, l2)
    ll = uconst[inv] + lse
    if not grad:
        return ll, None
    w2 = np.exp(l2 - lse)  # posterior weight of "dropped out after the last purchase"
    w1 = 1.0 - w2
    g = np.empty((x.size, 4))
    g[:, 0] = (psi(uk) - psi(r) + math.log(alpha))[inv] - w1 * log_age - w2 * log_tx
    g[:, 1] = r / alpha - k * (w1 / (alpha + age) + w2 / (alpha + tx))
    g[:, 2] = (psi(a + b) - psi(a + ubx))[inv] + w2 / a
    g[:, 3] = (psi(ubx) - psi(a + ubx) - psi(b) + psi(a + b))[inv] - w2 / udenom[inv]
    return ll, g


def _dot(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    """sum_i weights_i values_i (values may be a matrix: one sum per column), without BLAS: on a
    machine whose cores are busy, BLAS's threads can wait for each other for milliseconds per call,
    which is longer than the whole likelihood takes."""
    return np.einsum("i,i...->...", weights, values)


def _grouped(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values and the index that maps them back, when they repeat (times in whole days or
    weeks: a few hundred values); else the values themselves and None."""
    codes, uniques = pd.factorize(values)
    if uniques.size > values.size // 4:
        return values, None
    return np.asarray(uniques, dtype=float), codes


def _bg_weighted_loglik(x, tx, age, w, *, shift: int) -> Callable[[np.ndarray, bool], tuple[float, np.ndarray | None]]:
    """The total weighted log-likelihood of the BG/NBD (shift=0) or MBG/NBD (shift=1), and its
    gradient in (r, alpha, a, b), as a function of the parameters: `_bg_loglik` summed, for fitting.

    With d = log(a/(b+x-1)) + (r+x) (log(alpha+T) - log(alpha+t_x)) (the log-odds of "dropped out
    after the last purchase", -inf when x = 0 in the BG/NBD), each row's log-likelihood is
        A + D - (r+x) log(alpha+T) + log(1 + e^d),
    its terms in x alone are summed once per distinct x with the weights added up, and the logs of
    alpha + T and alpha + t_x are taken once per distinct time. Everything that does not depend on
    the parameters (groups, weighted counts) is computed here, once per fit.
    """
    if x.size > 1 and not np.all(x[1:] >= x[:-1]):
        order = np.argsort(x, kind="stable")
        x, tx, age, w = x[order], tx[order], age[order], w[order]
    ux, inv = _by_frequency(x)
    starts = np.flatnonzero(np.r_[True, x[1:] != x[:-1]]) if x.size else np.zeros(0, dtype=np.int64)
    wx_group = np.add.reduceat(w, starts)  # total weight per distinct x
    total_w = float(w.sum())
    wx = w * x
    age_values, age_index = _grouped(age)
    tx_values, tx_index = _grouped(tx)
    usecond = (ux > 0) if shift == 0 else np.ones(ux.shape, dtype=bool)

    def at(values, index, f):
        out = f(values)
        return out if index is None else out[index]

    def total(params: np.ndarray, grad: bool) -> tuple[float, np.ndarray | None]:
        r, alpha, a, b = (float(v) for v in params)
        ubx = b + ux + shift
        udenom = np.where(usecond, ubx - 1.0, 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            ulog_ratio = np.where(usecond, math.log(a) - np.log(udenom), -np.inf)
            uconst = gammaln(r + ux) - gammaln(r) + r * math.log(alpha) + betaln(a, ubx) - betaln(a, b)
            log_age = at(age_values, age_index, lambda v: np.log(alpha + v))
            log_tx = at(tx_values, tx_index, lambda v: np.log(alpha + v))
            gap = log_age - log_tx
            d = ulog_ratio[inv] + (r + x) * gap
            softplus = np.maximum(d, 0.0) + np.log1p(np.exp(-np.abs(d)))  # log(1 + e^d)
        ll = _dot(wx_group, uconst) - r * _dot(w, log_age) - _dot(wx, log_age) + _dot(w, softplus)
        if not grad:
            return float(ll), None
        ww2 = w * np.exp(d - softplus)  # weight x posterior probability of "dropped out after the last purchase"
        wk = w * r + wx
        inv_age = at(age_values, age_index, lambda v: 1.0 / (alpha + v))
        inv_tx = at(tx_values, tx_index, lambda v: 1.0 / (alpha + v))
        sum_w2 = ww2.sum()
        g = np.empty(4)
        g[0] = _dot(wx_group, psi(r + ux) - psi(r) + math.log(alpha)) - _dot(w, log_age) + _dot(ww2, gap)
        g[1] = r / alpha * total_w - _dot(wk, inv_age) - _dot(ww2 * (r + x), inv_tx - inv_age)
        g[2] = _dot(wx_group, psi(a + b) - psi(a + ubx)) + sum_w2 / a
        g[3] = _dot(wx_group, psi(ubx) - psi(a + ubx) - psi(b) + psi(a + b)) - _dot(np.add.reduceat(ww2, starts), 1.0 / udenom)
        return float(ll), g

    return total


def _log_hyp2f1_near_one(b, c, log_delta, *, max_terms: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """log 2F1(1, b; c; z) for z = 1 - delta close to 1, by the 1 - z transformation, and where it holds.

    DLMF 15.8.4 with a = 1 and g = c - 1 - b (the second series there, 2F1(c-1, g+1; g+1; delta),
    is z^(1-c)):
        2F1(1, b; c; z) = (c-1)/g * 2F1(1, b; 1-g; delta) + Gamma(c) Gamma(-g) / Gamma(b) * delta^g * z^(1-c),
    the first series having terms (b)_n / (1-g)_n * delta^n. Near z = 1 it needs a few terms where
    Gauss's continued fraction needs O(delta^-1/2) steps (thousands when one Pareto/NBD rate
    parameter is 1e4 times the other, which the optimiser visits when drop-out looks homogeneous).
    Both terms are taken in log space. Returns (log value, ok); ok is False, and the value is to be
    computed otherwise, where delta >= 0.1 or b * delta >= 0.5 (slow series), g is within 1e-3 of an
    integer (the terms have cancelling poles), the series did not converge or lost more than 4
    digits to its largest term, or the two terms cancel to fewer than 8 significant digits.
    """
    b, c, log_delta = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (b, c, log_delta)))
    shape = b.shape
    b, c, log_delta = b.ravel(), c.ravel(), log_delta.ravel()
    delta = np.exp(log_delta)
    g = c - 1.0 - b
    ok = (delta < 0.1) & (b * delta < 0.5) & (np.abs(g - np.round(g)) > 1e-3) & (g < max_terms - 50)
    series = np.ones(b.size)
    biggest = np.ones(b.size)
    active = ok.copy()
    # The terms of the rows still being summed, in compact arrays (idx: their rows): each row's
    # arithmetic is the same as summing it alone.
    idx = np.flatnonzero(active)
    b_a, delta_a, g_a = b[idx], delta[idx], g[idx]
    term_a, series_a, biggest_a = np.ones(idx.size), np.ones(idx.size), np.ones(idx.size)
    n = 0
    while idx.size and n < max_terms:
        term_a *= (b_a + n) * delta_a / (1.0 - g_a + n)
        series_a += term_a
        biggest_a = np.maximum(biggest_a, np.abs(term_a))
        n += 1
        # Once 1 - g + n > 0 the ratio of successive terms falls monotonically towards delta (< 1),
        # so the rest of the series is bounded by a geometric series: stop when that bound is negligible.
        denominator = 1.0 - g_a + n
        rho = (b_a + n) * delta_a / np.where(denominator > 0, denominator, 1.0)
        done = (denominator > 0) & (rho < 1.0) & (np.abs(term_a) * rho <= 1e-17 * (1.0 - rho) * np.abs(series_a))
        if done.any():
            rows = idx[done]
            series[rows], biggest[rows], active[rows] = series_a[done], biggest_a[done], False
            keep = ~done
            idx, b_a, delta_a, g_a = idx[keep], b_a[keep], delta_a[keep], g_a[keep]
            term_a, series_a, biggest_a = term_a[keep], series_a[keep], biggest_a[keep]
    series[idx], biggest[idx] = series_a, biggest_a  # not converged within max_terms: still active, not ok
    ok &= ~active & (series > 0) & (biggest * 1e-16 <= 1e-12 * np.abs(series))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_t1 = np.log(c - 1.0) - np.log(np.abs(g)) + np.log(np.abs(series))
        sign_t1 = np.sign(g)
        log_t2 = gammaln(c) + gammaln(-g) - gammaln(b) + g * log_delta + (1.0 - c) * np.log1p(-delta)
        sign_t2 = special.gammasgn(-g)
        hi, lo = np.maximum(log_t1, log_t2), np.minimum(log_t1, log_t2)
        sign_hi = np.where(log_t1 >= log_t2, sign_t1, sign_t2)
        same = sign_t1 == sign_t2
        ratio = lo - hi
        out = np.where(same, hi + np.log1p(np.exp(ratio)), hi + _log1mexp(np.minimum(ratio, 0.0)))
    ok &= np.isfinite(out) & (sign_hi > 0) & (same | (ratio < math.log1p(-1e-8)))
    return np.where(ok, out, np.nan).reshape(shape), ok.reshape(shape)


def _pnbd_log_g(alpha, s, beta, m, t, cf_limit: float = 1.0):
    """log G(t), where G(t_x) - G(T) = (r+s+x) * integral_{t_x}^T (alpha+u)^-(r+x) (beta+u)^-(s+1) du.

    The FHL (2005) note writes G(t) = 2F1(r+s+x, s+1; r+s+x+1; (alpha-beta)/(alpha+t)) /
    (alpha+t)^(r+s+x) when alpha >= beta, and 2F1(r+s+x, r+x; r+s+x+1; (beta-alpha)/(beta+t)) /
    (beta+t)^(r+s+x) otherwise. Euler's transformation turns these into
        alpha >= beta: (alpha+t)^-m (beta+t)^-s 2F1(1, m; m+s+1; (alpha-beta)/(alpha+t))
        alpha <  beta: (alpha+t)^(1-m) (beta+t)^-(s+1) 2F1(1, s+1; m+s+1; (beta-alpha)/(beta+t))
    with m = r + x (Euler's transformation, DLMF 15.8.1), computed in log space: by the 1 - z
    transformation where the argument z is close to 1 (`_log_hyp2f1_near_one`, with 1 - z computed
    as the ratio (min(alpha, beta) + t) / (max(alpha, beta) + t), not by subtraction), else by
    Gauss's continued fraction (`_log_hyp2f1_unit`) where z <= cf_limit; NaN elsewhere (the caller
    integrates those rows numerically).
    """
    m, t = np.broadcast_arrays(np.asarray(m, dtype=float), np.asarray(t, dtype=float))
    if alpha >= beta:
        z = (alpha - beta) / (alpha + t)
        log_delta = np.log(beta + t) - np.log(alpha + t)
        prefix, b = -m * np.log(alpha + t) - s * np.log(beta + t), m
    else:
        z = (beta - alpha) / (beta + t)
        log_delta = np.log(alpha + t) - np.log(beta + t)
        prefix, b = (1.0 - m) * np.log(alpha + t) - (s + 1.0) * np.log(beta + t), np.full(m.shape, s + 1.0)
    c = m + s + 1.0
    log_f, ok = _log_hyp2f1_near_one(b, c, log_delta)
    rest = ~ok & (z <= cf_limit)
    if rest.any():
        log_f[rest] = _log_hyp2f1_unit(b[rest], c[rest], z[rest])
    return prefix + log_f


def _logaddexp(a: float, b: float) -> float:
    hi, lo = max(a, b), min(a, b)
    return hi if lo == -math.inf else hi + math.log1p(math.exp(lo - hi))


def _pnbd_log_integral_quad(alpha: float, s: float, beta: float, m: float, t_lo: float, t_hi: float) -> float:
    """log int_{t_lo}^{t_hi} (alpha+u)^-m (beta+u)^-(s+1) du by adaptive quadrature.

    Used when (min(alpha, beta) + t_lo) / (max(alpha, beta) + t_lo) is tiny, where the 2F1 argument
    is within 1e-4 of 1. With c = min(alpha, beta) and c + u = (c + t_lo) e^v the integrand,
        (alpha - c + w)^-m (beta - c + w)^-(s+1) w,   w = (c + t_lo) e^v,
    is smooth in v, with one bend where w reaches |alpha - beta|.
    """
    if not t_hi > t_lo:
        return -math.inf
    n = s + 1.0
    c = min(alpha, beta)
    log_base = math.log(c + t_lo)
    log_da = math.log(alpha - c) if alpha > c else -math.inf
    log_db = math.log(beta - c) if beta > c else -math.inf

    def log_f(v: float) -> float:
        lw = log_base + v
        return -m * _logaddexp(log_da, lw) - n * _logaddexp(log_db, lw) + lw

    end = math.log(c + t_hi) - log_base
    bend = max(log_da, log_db) - log_base
    inner = [bend] if 0.0 < bend < end else []
    shift = max(log_f(v) for v in (0.0, *inner, end))
    with warnings.catch_warnings():  # only reached for extreme parameters; the value is still usable
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        val, _ = integrate.quad(
            lambda v: math.exp(log_f(v) - shift), 0.0, end, points=inner or None, epsabs=0.0, epsrel=1e-12, limit=400
        )
    return math.log(val) + shift


def _pnbd_time_pairs(x, tx, age) -> tuple[np.ndarray, ...]:
    """The distinct (x, t) pairs among the rows' (x, t_x) and (x, T), and the distinct x, with
    where each row's are: (ux, ut, at_tx, at_age, xs, at_x), where (ux[at_tx], ut[at_tx]) = (x, t_x),
    (ux[at_age], ut[at_age]) = (x, T) and xs[at_x] = x.

    G(t) of the Pareto/NBD likelihood depends on the row only through (x, t), and summaries in
    whole days or weeks have few of those: a few tens of x times a few hundred times (about 12,000
    pairs for three million customers over two years, whatever their number), where the rows
    (x, t_x, T) grow with the customers. G is computed once per pair and the terms in x alone once
    per x (`_pnbd_log_terms`)."""
    n = x.size
    (ux, ut), inverse = _unique_rows(np.concatenate([x, x]), np.concatenate([tx, age]))
    xs, at_x = np.unique(x, return_inverse=True)
    return ux, ut, inverse[:n], inverse[n:], xs, at_x.reshape(-1)


def _pnbd_log_terms(params, x, tx, age, pairs=None):
    """The two log terms of the Pareto/NBD likelihood: alive at T, and died in (t_x, T].

    FHL (2005) note, the Pareto/NBD likelihood: L = Gamma(r+x) alpha^r beta^s / Gamma(r) *
    [ (alpha+T)^-(r+x) (beta+T)^-s + s/(r+s+x) (G(t_x) - G(T)) ]. Returns (const, l_alive, l_dead)
    with LL = const + logaddexp(l_alive, l_dead). G(t_x) - G(T) is (r+s+x) times an integral; for
    the rare rows whose 2F1 argument is within 1e-4 of 1 (alpha/beta or beta/alpha above ~1e4 with
    a small t_x) and where the 1 - z transformation does not hold either, that integral is computed
    by quadrature instead.

    G is evaluated once per distinct (x, t) pair, and the terms in x alone once per distinct x
    (`pairs`: `_pnbd_time_pairs(x, tx, age)`, computed here when not given), then gathered back to
    the rows: every step is elementwise, so the values are those of evaluating them row by row, in
    a fraction of the time.
    """
    r, alpha, s, beta = params
    ux, ut, at_tx, at_age, xs, at_x = pairs if pairs is not None else _pnbd_time_pairs(x, tx, age)
    ms = r + xs
    const = (gammaln(ms) - gammaln(r) + r * math.log(alpha) + s * math.log(beta))[at_x]
    m = r + x
    l_alive = -m * np.log(alpha + age) - s * np.log(beta + age)
    g_pairs = _pnbd_log_g(alpha, s, beta, r + ux, ut, cf_limit=_CF_Z_MAX)
    g_tx, g_t = g_pairs[at_tx], g_pairs[at_age]
    far = ~(np.isfinite(g_tx) & np.isfinite(g_t))
    l_dead = np.empty(x.shape)
    with np.errstate(invalid="ignore"):
        l_dead[:] = (math.log(s) - np.log(ms + s))[at_x] + g_tx + _log1mexp(g_t - g_tx)
    for i in np.flatnonzero(far):
        l_dead[i] = math.log(s) + _pnbd_log_integral_quad(alpha, s, beta, float(m[i]), float(tx[i]), float(age[i]))
    return const, l_alive, l_dead


def _pnbd_loglik(params, x, tx, age, *, grad: bool = False, pairs=None):
    const, l_alive, l_dead = _pnbd_log_terms(params, x, tx, age, pairs)
    return const + np.logaddexp(l_alive, l_dead), None


def _gg_loglik(params, x, m, *, grad: bool):
    """Per-customer log density of the mean spend zbar = m of x transactions, and its gradient.

    FHL (2005, JMR) / Fader & Hardie note 025, the marginal density of zbar: with v = gamma,
        f(zbar | p, q, v, x) = Gamma(px+q) / (Gamma(px) Gamma(q)) * v^q zbar^(px-1) x^(px)
                               / (v + x zbar)^(px+q)
    Gradient with respect to (p, q, gamma), shape (n, 3).
    """
    p, q, v = params
    px = p * x
    log_den = np.log(v + x * m)
    ll = gammaln(px + q) - gammaln(px) - gammaln(q) + q * math.log(v) + (px - 1.0) * np.log(m) + px * np.log(x) - (px + q) * log_den
    if not grad:
        return ll, None
    g = np.empty((x.size, 3))
    g[:, 0] = x * (psi(px + q) - psi(px) + np.log(m) + np.log(x) - log_den)
    g[:, 1] = psi(px + q) - psi(q) + math.log(v) - log_den
    g[:, 2] = q / v - (px + q) / (v + x * m)
    return ll, g


def _gg_weighted_loglik(x, m, w) -> Callable[[np.ndarray, bool], tuple[float, np.ndarray | None]]:
    """`_gg_loglik` summed with weights `w`, as a function of the parameters, for fitting: the same
    per-customer values (each computed by the same operations in the same order), with log zbar
    and log x taken once per fit and the Gamma and digamma terms once per distinct x (repeat
    buyers have a few tens of distinct x) instead of once per customer."""
    xs, at_x = np.unique(x, return_inverse=True)
    at_x = at_x.reshape(-1)
    log_m, log_x = np.log(m), np.log(xs)[at_x]

    def total(params: np.ndarray, grad: bool) -> tuple[float, np.ndarray | None]:
        p, q, v = params
        pxs = p * xs
        px = pxs[at_x]
        spend = v + x * m
        log_den = np.log(spend)
        head = (gammaln(pxs + q) - gammaln(pxs) - gammaln(q) + q * math.log(v))[at_x]
        ll = head + (px - 1.0) * log_m + (pxs * np.log(xs))[at_x] - (px + q) * log_den
        if not grad:
            return float(_dot(w, ll)), None
        psi_pq = psi(pxs + q)
        g = np.empty((x.size, 3))
        g[:, 0] = x * ((psi_pq - psi(pxs))[at_x] + log_m + log_x - log_den)
        g[:, 1] = (psi_pq - psi(q) + math.log(v))[at_x] - log_den
        g[:, 2] = q / v - (px + q) / spend
        return float(_dot(w, ll)), _dot(w, g)

    return total


# --------------------------------------------------------------------------- fitting machinery


class _Fitted:
    """Shared fitting code: log-scale L-BFGS-B, convergence checks, Hessian standard errors."""

    _model_name = ""
    _param_names: tuple[str, ...] = ()
    _analytic_gradient = True

    def __init__(self, penalizer: float = 0.0):
        if not (isinstance(penalizer, (int, float, np.floating)) and math.isfinite(penalizer) and penalizer >= 0):
            raise ValueError(f"penalizer must be a finite number >= 0, got {penalizer!r}")
        self.penalizer = float(penalizer)

    def __repr__(self) -> str:
        if not hasattr(self, "params_"):
            return f"{type(self).__name__}(penalizer={self.penalizer})"
        shown = ", ".join(f"{k}={v:.4g}" for k, v in self.params_.items())
        return f"{type(self).__name__}({shown}, converged={self.converged_})"

    # subclasses: the per-row log-likelihood on the prepared data, and starting values
    def _loglik(self, params, *data, grad: bool):  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_fitted(self) -> np.ndarray:
        if not hasattr(self, "params_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit() first")
        return np.array([self.params_[k] for k in self._param_names])

    def _penalty_scale(self, data) -> np.ndarray:
        """Multipliers applied to the parameters inside the L2 penalty (1 = as estimated)."""
        return np.ones(len(self._param_names))

    def _weighted_loglik(self, data, w) -> Callable[[np.ndarray, bool], tuple[float, np.ndarray | None]]:
        """The total weighted log-likelihood (and its gradient in the natural parameters, when asked)
        as a function of the parameters; subclasses may precompute what does not depend on them."""

        def total(params: np.ndarray, grad: bool) -> tuple[float, np.ndarray | None]:
            ll, g = self._loglik(params, *data, grad=grad)
            return float(_dot(w, ll)), (_dot(w, g) if grad else None)

        return total

    def _objective(self, data, w, loglik):
        """Mean penalised negative log-likelihood over log-parameters, and its gradient."""
        total = w.sum()
        pen = self.penalizer
        scale2 = self._penalty_scale(data) ** 2

        def value(theta):
            params = np.exp(theta)
            ll, _ = loglik(params, False)
            f = -ll / total + pen * np.sum(scale2 * params**2)
            return f if np.isfinite(f) else np.inf

        def value_grad(theta):
            params = np.exp(theta)
            if self._analytic_gradient:
                ll, g = loglik(params, True)
                f = -ll / total + pen * np.sum(scale2 * params**2)
                grad = -g / total * params + 2.0 * pen * scale2 * params**2
            else:
                f = value(theta)
                grad = _central_gradient(value, theta, 1e-5)
            if not (np.isfinite(f) and np.all(np.isfinite(grad))):
                return np.inf, np.zeros_like(theta)
            return f, grad

        return value, value_grad

    def _run_fit(self, data, w, x0, n_customers: int) -> Self:
        # One BLAS thread: L-BFGS-B's BLAS calls are tiny, and on busy cores OpenBLAS's idle threads
        # spin for longer than the fit's own work (measured: half the CPU time of a 1M-customer fit).
        with threadpool_limits(limits=1, user_api="blas"):
            return self._run_fit_single_thread(data, w, x0, n_customers)

    def _run_fit_single_thread(self, data, w, x0, n_customers: int) -> Self:
        loglik = self._weighted_loglik(data, w)
        value, value_grad = self._objective(data, w, loglik)
        theta0 = np.log(np.asarray(x0, dtype=float))
        bounds = [(-_LOG_BOUND, _LOG_BOUND)] * theta0.size
        res = optimize.minimize(
            value_grad, theta0, jac=True, method="L-BFGS-B", bounds=bounds,
            options={"maxiter": 5000, "maxfun": 20000, "ftol": 1e-14, "gtol": _GTOL, "maxcor": 20},
        )
        theta, grad = res.x, res.jac  # the gradient at the optimum, as value_grad returned it
        params = np.exp(theta)
        ll, _ = loglik(params, False)
        problems = []
        gmax = float(np.max(np.abs(grad)))
        if not res.success and not gmax <= _GRAD_TOL:  # a failed line search at a flat point is rounding, not failure
            problems.append(f"optimiser: {res.message}")
        if not gmax <= _GRAD_TOL:
            problems.append(f"gradient not small (max |d mean NLL / d log param| = {gmax:.2e} > {_GRAD_TOL:g})")
        at_bound = [n for n, t in zip(self._param_names, theta) if abs(t) >= _LOG_BOUND - 1e-6]
        if at_bound:
            problems.append(f"parameter(s) {', '.join(at_bound)} at the search bound e^±{_LOG_BOUND:g}: the data do not identify them")
        self.params_ = {n: float(v) for n, v in zip(self._param_names, params)}
        self.log_likelihood_ = ll
        self.n_customers_ = int(n_customers)
        self.n_unique_ = int(w.size)
        self.n_iter_ = int(res.nit)
        self.gradient_max_ = gmax
        cov, se_note = self._covariance(data, w, params, loglik)
        if se_note:  # a flat or curved-the-wrong-way optimum: the parameters are not identified
            problems.append(se_note)
        self.converged_ = not problems
        self.covariance_ = cov
        self.std_errors_ = {n: float(math.sqrt(cov[i, i])) if cov[i, i] >= 0 else float("nan") for i, n in enumerate(self._param_names)}
        self.message_ = "converged" if not problems else "; ".join(problems)
        if not self.converged_:
            warnings.warn(f"{self._model_name} fit did not converge: {self.message_}", ConvergenceWarning, stacklevel=4)
        return self

    def _covariance(self, data, w, params, loglik) -> tuple[np.ndarray, str]:
        """Inverse Hessian of the total penalised NLL in natural parameters (central differences)."""
        total = w.sum()
        pen = self.penalizer
        scale2 = self._penalty_scale(data) ** 2

        def nll(p):
            ll, _ = loglik(p, False)
            return -ll + total * pen * np.sum(scale2 * p**2)

        if self._analytic_gradient:
            def grad(p):
                _, g = loglik(p, True)
                return -g + 2.0 * total * pen * scale2 * p
            hess = _hessian_from_gradient(grad, params)
        else:
            hess = _hessian_from_function(nll, params)
        unavailable = np.full_like(hess, np.nan)
        if not np.all(np.isfinite(hess)):
            return unavailable, "Hessian not finite: standard errors unavailable"
        try:
            if np.linalg.eigvalsh(hess).min() <= 0:
                return unavailable, "Hessian not positive definite (not a strict maximum): standard errors unavailable"
            return np.linalg.inv(hess), ""
        except np.linalg.LinAlgError:
            return unavailable, "Hessian singular: standard errors unavailable"

    def summary(self) -> pd.DataFrame:
        """Estimates and standard errors: columns model, param, estimate, std_err."""
        self._check_fitted()
        return pd.DataFrame(
            {
                "model": self._model_name,
                "param": list(self._param_names),
                "estimate": [self.params_[n] for n in self._param_names],
                "std_err": [self.std_errors_[n] for n in self._param_names],
            }
        )


def _central_gradient(f, theta, h):
    g = np.empty_like(theta)
    for i in range(theta.size):
        e = np.zeros_like(theta)
        e[i] = h
        g[i] = (f(theta + e) - f(theta - e)) / (2 * h)
    return g


def _hessian_from_gradient(grad, p, rel: float = 1e-5):
    k = p.size
    hess = np.empty((k, k))
    for j in range(k):
        h = rel * p[j]
        e = np.zeros(k)
        e[j] = h
        hess[:, j] = (grad(p + e) - grad(p - e)) / (2 * h)
    return 0.5 * (hess + hess.T)


def _hessian_from_function(f, p, rel: float = 1e-4):
    k = p.size
    hvec = rel * p
    hess = np.empty((k, k))
    f0 = f(p)
    for i in range(k):
        ei = np.zeros(k)
        ei[i] = hvec[i]
        hess[i, i] = (f(p + ei) - 2 * f0 + f(p - ei)) / hvec[i] ** 2
        for j in range(i):
            ej = np.zeros(k)
            ej[j] = hvec[j]
            val = (f(p + ei + ej) - f(p + ei - ej) - f(p - ei + ej) + f(p - ei - ej)) / (4 * hvec[i] * hvec[j])
            hess[i, j] = hess[j, i] = val
    return hess


class _PurchaseModel(_Fitted):
    """Shared by the three purchase-count models: fit on compressed rows, validated predictions."""

    def fit(self, frequency, recency, T, weights=None) -> Self:
        """Maximum-likelihood fit on a (frequency, recency, T) summary; time unit is the caller's.

        `weights` (optional, >= 0) multiply each customer's log-likelihood, e.g. counts of
        identical rows. The fit runs on the unique rows (see `compress`).

        Penalty (off by default): with `penalizer > 0`, `penalizer * sum(params**2)` is added to
        the *mean* negative log-likelihood, with the rate parameters (alpha, beta) expressed in
        units of max(T) -- the convention of lifetimes' `penalizer_coef` (0.11.3 rescales time so
        that max(T) = 1 before fitting). This makes the penalty independent of the caller's time unit.
        `log_likelihood_` is always the unpenalised total log-likelihood.
        """
        x, tx, age = _check_rft(frequency, recency, T)
        w = _check_weights(weights, x.size)
        ux, utx, uage, uw = _compress_weighted(x, tx, age, w)
        return self._run_fit((ux, utx, uage), uw, self._start(ux, uage, uw), x.size)

    _rate_params: tuple[int, ...] = (1,)

    def _penalty_scale(self, data) -> np.ndarray:
        age = data[2]
        unit = age.max() if age.max() > 0 else 1.0  # lifetimes 0.11.3's _scale_time: T -> T / max(T)
        scale = np.ones(len(self._param_names))
        scale[list(self._rate_params)] = 1.0 / unit
        return scale

    @staticmethod
    def _mean_age(age, w) -> float:
        mean_age = _dot(w, age) / w.sum()
        return float(mean_age) if mean_age > 0 else 1.0

    @classmethod
    def _rate_start(cls, x, age, w) -> float:
        """Deterministic start for alpha: the inverse of the pooled repeat-purchase rate."""
        total_age = _dot(w, age)
        rate = _dot(w, x) / total_age if total_age > 0 else 0.0
        return 1.0 / rate if rate > 0 else cls._mean_age(age, w)


class _BetaGeoBase(_PurchaseModel):
    _param_names = ("r", "alpha", "a", "b")
    _shift = 0

    def _loglik(self, params, x, tx, age, *, grad: bool):
        return _bg_loglik(params, x, tx, age, shift=self._shift, grad=grad)

    def _weighted_loglik(self, data, w):
        return _bg_weighted_loglik(*data, w, shift=self._shift)

    def _start(self, x, age, w):
        return [1.0, self._rate_start(x, age, w), 1.0, 1.0]

    def _log_odds_dead(self, params, x, tx, age):
        """log P(dead)/P(alive) after x purchases: FHL (2008) P(alive) note; Batislam et al. (2007)."""
        r, alpha, a, b = params
        k = r + x
        second = (x > 0) if self._shift == 0 else np.ones(np.shape(x), dtype=bool)
        denom = np.where(second, b + x + self._shift - 1.0, 1.0)
        eta = math.log(a) - np.log(denom) + k * (np.log(alpha + age) - np.log(alpha + tx))
        return np.where(second, eta, -np.inf)

    def p_alive(self, frequency, recency, T) -> np.ndarray:
        """P(still active at T | x, t_x, T). BG/NBD: 1 / (1 + [x>0] a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x))
        (Fader, Hardie & Lee 2008, "Computing P(alive) Using the BG/NBD Model"), exactly 1 when x = 0.
        MBG/NBD: 1 / (1 + a/(b+x) ((alpha+T)/(alpha+t_x))^(r+x)) (Batislam et al. 2007)."""
        params = self._check_fitted()
        x, tx, age = _check_rft(frequency, recency, T)
        return special.expit(-self._log_odds_dead(params, x, tx, age))

    def expected_purchases(self, t, frequency, recency, T) -> np.ndarray:
        """E[Y(t) | x, t_x, T]: expected repeat purchases in (T, T+t], t in the caller's unit.

        BG/NBD: FHL (2005) eq. (10); MBG/NBD: Batislam et al. (2007),
        (a+b+x)/(a-1) [1 - ((alpha+T)/(alpha+T+t))^(r+x) 2F1(r+x, b+x+1; a+b+x; t/(alpha+T+t))] * P(alive).
        """
        params = self._check_fitted()
        x, tx, age = _check_rft(frequency, recency, T)
        t = _check_t("t", t)
        r, alpha, a, b = params
        alive = special.expit(-self._log_odds_dead(params, x, tx, age))

        def fut(tt, xx, aa):
            return _future_purchases(tt, a, b + xx + self._shift, r + xx, alpha + aa)

        return _unique_apply(fut, t, x, age) * alive

    def expected_purchases_new(self, t) -> np.ndarray:
        """E[X(t)] for a customer who made their first purchase at time 0.

        BG/NBD: FHL (2005) eq. (9), (a+b-1)/(a-1) [1 - (alpha/(alpha+t))^r 2F1(r, b; a+b-1; t/(alpha+t))].
        MBG/NBD: Batislam et al. (2007), b/(a-1) [1 - (alpha/(alpha+t))^r 2F1(r, b+1; a+b; t/(alpha+t))].
        """
        params = self._check_fitted()
        t = _check_t("t", t)
        r, alpha, a, b = params
        alive = 1.0 if self._shift == 0 else b / (a + b)
        return np.asarray(_future_purchases(t, a, b + self._shift, r, alpha) * alive, dtype=float)

    def prob_n_purchases(self, n, t) -> np.ndarray:
        """P(X(t) = n) for a customer who made their first purchase at time 0 (n, t broadcast).

        BG/NBD, FHL (2005) eq. (8):
            B(a, b+n)/B(a, b) NBD(n; t) + [n>0] B(a+1, b+n-1)/B(a, b) P(NBD(t) >= n)
        MBG/NBD (Batislam et al. 2007; drop-out also possible at time 0):
            B(a, b+n+1)/B(a, b) NBD(n; t) + B(a+1, b+n)/B(a, b) P(NBD(t) >= n)
        with NBD the Poisson-Gamma(r, alpha) count; the tail uses the regularised incomplete beta.
        """
        params = self._check_fitted()
        n = np.asarray(n, dtype=float)
        if not np.all(np.isfinite(n)) or np.any(n < 0) or np.any(n != np.round(n)):
            raise ValueError("n must be whole numbers >= 0")
        t = _check_t("t", t)
        n, t = np.broadcast_arrays(n, t)
        r, alpha, a, b = params
        c = self._shift
        alive_term = np.exp(betaln(a, b + n + c) - betaln(a, b) + _nb_log_pmf(n, r, alpha, t))
        has_second = (n > 0) if c == 0 else np.ones(n.shape, dtype=bool)
        bsec = np.where(has_second, b + n + c - 1.0, 1.0)
        dead_term = np.where(has_second, np.exp(betaln(a + 1.0, bsec) - betaln(a, b)) * _nb_sf(n, r, alpha, t), 0.0)
        return alive_term + dead_term


class BetaGeo(_BetaGeoBase):
    """BG/NBD purchase model (Fader, Hardie & Lee 2005, Marketing Science 24(2)).

    While active, a customer buys as a Poisson process with rate lambda ~ Gamma(r, alpha);
    after each repeat purchase they become inactive with probability p ~ Beta(a, b). Time unit
    is the caller's (alpha is in that unit). Fitted attributes: params_ (r, alpha, a, b),
    std_errors_, covariance_, log_likelihood_, converged_, message_, n_customers_, n_unique_.
    """

    _model_name = "BG/NBD"
    _shift = 0


class ModifiedBetaGeo(_BetaGeoBase):
    """MBG/NBD purchase model (Batislam, Denizel & Filiztekin 2007, IJRM 24(3)).

    As BG/NBD, but a customer may also become inactive straight after the first purchase, so
    customers with no repeat purchase are not certainly alive. Time unit is the caller's.
    """

    _model_name = "MBG/NBD"
    _shift = 1


class ParetoNBD(_PurchaseModel):
    """Pareto/NBD purchase model (Schmittlein, Morrison & Colombo 1987; FHL 2005 note).

    While active, purchases are Poisson with rate lambda ~ Gamma(r, alpha); the lifetime is
    exponential with rate mu ~ Gamma(s, beta). Time unit is the caller's. The gradient for the
    fit is by central differences of the log-likelihood (no closed form is used);
    `prob_n_purchases` integrates the model numerically (see its docstring).
    """

    _model_name = "Pareto/NBD"
    _param_names = ("r", "alpha", "s", "beta")
    _rate_params = (1, 3)
    _analytic_gradient = False

    def _loglik(self, params, x, tx, age, *, grad: bool):
        return _pnbd_loglik(params, x, tx, age)

    def _weighted_loglik(self, data, w):
        pairs = _pnbd_time_pairs(*data)  # once per fit: the distinct (x, t) at which G is evaluated

        def total(params: np.ndarray, grad: bool) -> tuple[float, None]:
            ll, _ = _pnbd_loglik(params, *data, pairs=pairs)
            return float(_dot(w, ll)), None

        return total

    def _start(self, x, age, w):
        return [1.0, self._rate_start(x, age, w), 1.0, self._mean_age(age, w)]

    def p_alive(self, frequency, recency, T) -> np.ndarray:
        """P(alive at T | x, t_x, T): the share of the likelihood's "still alive at T" term
        (Schmittlein et al. 1987; FHL 2005 note)."""
        params = self._check_fitted()
        x, tx, age = _check_rft(frequency, recency, T)
        _, l_alive, l_dead = _pnbd_log_terms(params, x, tx, age)
        return np.exp(l_alive - np.logaddexp(l_alive, l_dead))

    def expected_purchases(self, t, frequency, recency, T) -> np.ndarray:
        """E[Y(t) | x, t_x, T] = (r+x)(beta+T) / ((alpha+T)(s-1)) [1 - ((beta+T)/(beta+T+t))^(s-1)] P(alive)
        (Schmittlein et al. 1987; FHL 2005 note); continuous at s = 1."""
        params = self._check_fitted()
        x, tx, age = _check_rft(frequency, recency, T)
        t = _check_t("t", t)
        r, alpha, s, beta = params
        alive = self.p_alive(x, tx, age)
        life = _expm1_ratio(s - 1.0, np.log1p(t / (beta + age)))
        return (r + x) / (alpha + age) * (beta + age) * life * alive

    def expected_purchases_new(self, t) -> np.ndarray:
        """E[X(t)] = r beta / (alpha (s-1)) [1 - (beta/(beta+t))^(s-1)] (Schmittlein et al. 1987;
        FHL 2005 note); continuous at s = 1."""
        r, alpha, s, beta = self._check_fitted()
        t = _check_t("t", t)
        return np.asarray(r / alpha * beta * _expm1_ratio(s - 1.0, np.log1p(t / beta)), dtype=float)

    def prob_n_purchases(self, n, t) -> np.ndarray:
        """P(X(t) = n) for a new customer, by numerical integration (not the closed form).

        The FHL (2005) note's closed form subtracts a finite sum of 2F1 terms from another 2F1
        and loses precision; instead the defining mixture is integrated:
            P(X(t)=n) = NBD(n; t) (beta/(beta+t))^s
                        + int_0^t s beta^s (beta+u)^-(s+1) NBD(n; u) du
        (alive at t with n purchases, or died at u < t after n purchases), with scipy's quad
        (relative accuracy ~1e-10). Slow for large arrays: meant for distributions of n.
        """
        r, alpha, s, beta = self._check_fitted()
        n = np.asarray(n, dtype=float)
        if not np.all(np.isfinite(n)) or np.any(n < 0) or np.any(n != np.round(n)):
            raise ValueError("n must be whole numbers >= 0")
        t = _check_t("t", t)
        n, t = np.broadcast_arrays(n, t)
        out = np.empty(n.shape)
        for i in np.ndindex(n.shape):
            out[i] = _pnbd_prob_n(r, alpha, s, beta, float(n[i]), float(t[i]))
        return out


def _pnbd_prob_n(r, alpha, s, beta, n, t) -> float:
    alive = math.exp(float(_nb_log_pmf(n, r, alpha, t)) + s * (math.log(beta) - math.log(beta + t)))
    if t == 0:
        return alive

    def died_at(u: float) -> float:
        log_nb = float(_nb_log_pmf(n, r, alpha, u)) if u > 0 else (0.0 if n == 0 else -np.inf)
        return math.exp(math.log(s) + s * math.log(beta) - (s + 1) * math.log(beta + u) + log_nb)

    peak = min(max(n / r * alpha, 0.0), t) if n > 0 else 0.0  # near the mode of the NBD term in u
    pts = [peak] if 0 < peak < t else None
    dead, _ = integrate.quad(died_at, 0.0, t, points=pts, epsabs=0.0, epsrel=1e-11, limit=400)
    return alive + dead


class GammaGamma(_Fitted):
    """Gamma-Gamma model of mean spend per transaction (Fader, Hardie & Lee 2005, JMR 42(4)).

    Transaction values are Gamma(p, nu) with nu ~ Gamma(q, gamma) across customers; it is fit on
    repeat buyers' number of repeat transactions x > 0 and their mean value zbar (money). It
    assumes spend is independent of the purchase process. Fitted attributes as for BetaGeo,
    with params_ (p, q, gamma).
    """

    _model_name = "Gamma-Gamma"
    _param_names = ("p", "q", "gamma")

    def _loglik(self, params, x, m, *, grad: bool):
        return _gg_loglik(params, x, m, grad=grad)

    def _weighted_loglik(self, data, w):
        return _gg_weighted_loglik(*data, w)

    def fit(self, frequency, monetary_value, weights=None) -> Self:
        """Fit on repeat buyers only: every frequency must be > 0 and every monetary_value > 0.

        The penalty convention is that of the purchase models (`penalizer * sum(params**2)` on
        the mean negative log-likelihood).
        """
        x = _as_float("frequency", frequency)
        m = _as_float("monetary_value", monetary_value)
        if x.size != m.size:
            raise ValueError(f"frequency and monetary_value must have the same length, got {x.size} and {m.size}")
        if x.size == 0:
            raise ValueError("no customers: frequency and monetary_value are empty")
        _first_bad(
            "frequency", x <= 0,
            "must be > 0: the Gamma-Gamma model is fit on repeat buyers only (filter frequency > 0 first)", x,
        )
        _first_bad("frequency", x != np.round(x), "must be a whole number of repeat purchases", x)
        _first_bad("monetary_value", m <= 0, "must be > 0 (mean value of the repeat transactions)", m)
        w = _check_weights(weights, x.size)
        keep = w > 0
        x, m, w = x[keep], m[keep], w[keep]
        mean_m = (w @ m) / w.sum()
        return self._run_fit((x, m), w, [1.0, 2.0, mean_m], keep.size)

    def expected_avg_spend(self, frequency, monetary_value) -> np.ndarray:
        """E[M | x, zbar] = (q-1)/(px+q-1) * p gamma/(q-1) + px/(px+q-1) * zbar (FHL 2005 JMR; note 025).

        Customers with x = 0 get the population mean p gamma / (q - 1) (defined only for q > 1).
        """
        p, q, v = self._check_fitted()
        x = _as_float("frequency", frequency)
        m = _as_float("monetary_value", monetary_value)
        if x.size != m.size:
            raise ValueError(f"frequency and monetary_value must have the same length, got {x.size} and {m.size}")
        _first_bad("frequency", x < 0, "must be >= 0", x)
        _first_bad("monetary_value", (x > 0) & (m <= 0), "must be > 0 for customers with frequency > 0", m)
        m = np.where(x > 0, m, 0.0)
        den = p * x + q - 1.0
        if np.any(den <= 0):
            raise ValueError(f"expected spend is undefined (q = {q:.4g} <= 1 makes the population mean infinite) for customers with frequency 0")
        return p * (v + x * m) / den


# --------------------------------------------------------------------------- CLV


def customer_lifetime_value(
    purchase_model,
    spend_model,
    frequency,
    recency,
    T,
    monetary_value,
    *,
    horizon: float,
    discount_rate: float,
    periods_per_year: float,
    discounting: str = "discrete",
) -> np.ndarray:
    """Discounted expected spend of each customer over the next `horizon` years.

    Units:
    - frequency, recency, T are in the purchase model's time unit (the caller's);
    - `periods_per_year` is how many of those units make a year (52.18 for weeks, 365.25 for
      days, 12 for months);
    - `horizon` is in years, `discount_rate` is an annual rate (0.10 = 10 % a year);
    - the result is in the unit of `monetary_value` (as estimated by `spend_model`).

    CLV = spend * sum of discounted expected purchases, with spend = E[M | x, zbar] from the
    Gamma-Gamma model (FHL 2005 JMR) and expected purchases from the purchase model's
    conditional expectation E[Y(t) | x, t_x, T] (see `discounted_purchases` for the two
    discounting conventions). With discount_rate = 0 it is E[Y(horizon)] * spend.
    """
    for name, fitted in (("purchase_model", purchase_model), ("spend_model", spend_model)):
        if not hasattr(fitted, "params_"):
            raise NotFittedError(f"{name} is not fitted yet: call fit() first")
    _check_discounting(horizon, discount_rate, periods_per_year, discounting)
    x, tx, age = _check_rft(frequency, recency, T)
    spend = spend_model.expected_avg_spend(x, monetary_value)
    return discounted_purchases(purchase_model, x, tx, age, horizon=horizon, discount_rate=discount_rate,
                                periods_per_year=periods_per_year, discounting=discounting) * spend


def _check_discounting(horizon: float, discount_rate: float, periods_per_year: float, discounting: str) -> None:
    if not (math.isfinite(horizon) and horizon > 0):
        raise ValueError(f"horizon must be > 0 years, got {horizon!r}")
    if not (math.isfinite(discount_rate) and discount_rate > -1):
        raise ValueError(f"discount_rate must be an annual rate > -1, got {discount_rate!r}")
    if not (math.isfinite(periods_per_year) and periods_per_year > 0):
        raise ValueError(f"periods_per_year must be > 0 (model time units per year), got {periods_per_year!r}")
    if discounting not in ("discrete", "continuous"):
        raise ValueError(f"discounting must be 'discrete' or 'continuous', got {discounting!r}")


def discounted_purchases(
    purchase_model,
    frequency,
    recency,
    T,
    *,
    horizon: float,
    discount_rate: float,
    periods_per_year: float,
    discounting: str = "discrete",
) -> np.ndarray:
    """Expected repeat purchases of each customer over the next `horizon` years, each discounted
    to today at the annual `discount_rate` (units as in `customer_lifetime_value`):

    - "discrete": monthly steps i = 1..ceil(12*horizon) ending at u_i = min(i/12, horizon) years,
      sum_i (E[Y(u_i)] - E[Y(u_{i-1})]) / (1 + discount_rate)^u_i  (each month's purchases
      discounted at the month's end; i.e. a monthly rate (1+d)^(1/12) - 1);
    - "continuous": integral_0^horizon exp(-delta u) dE[Y(u)] with delta = log(1 + discount_rate),
      computed as exp(-delta H) E[Y(H)] + delta int exp(-delta u) E[Y(u)] du by 48-point
      Gauss-Legendre quadrature.
    With discount_rate = 0 both equal E[Y(horizon)]. Multiply by the expected spend per purchase
    to get CLV.
    """
    if not hasattr(purchase_model, "params_"):
        raise NotFittedError("purchase_model is not fitted yet: call fit() first")
    _check_discounting(horizon, discount_rate, periods_per_year, discounting)
    x, tx, age = _check_rft(frequency, recency, T)
    rows, inverse = compress(x, tx, age)  # predictions on unique rows only
    ux, utx, uage = rows["frequency"].to_numpy(), rows["recency"].to_numpy(), rows["T"].to_numpy()

    def expected(years: float) -> np.ndarray:
        return purchase_model.expected_purchases(years * periods_per_year, ux, utx, uage)

    if discounting == "discrete":
        steps = max(1, math.ceil(12 * horizon - 1e-9))
        value = np.zeros(ux.size)
        previous = np.zeros(ux.size)
        for i in range(1, steps + 1):
            u = min(i / 12.0, horizon)
            current = expected(u)
            value += (current - previous) / (1.0 + discount_rate) ** u
            previous = current
    else:
        delta = math.log1p(discount_rate)
        value = math.exp(-delta * horizon) * expected(horizon)
        if delta != 0.0:
            nodes, weights = np.polynomial.legendre.leggauss(48)
            for node, wt in zip(0.5 * horizon * (nodes + 1.0), 0.5 * horizon * weights):
                value = value + delta * wt * math.exp(-delta * node) * expected(node)
    return value[inverse]


# =========================================================================== the 04 stage
#
# Everything below builds the 04 customer-lifetime-value report around the estimators above:
# the calibration / holdout summaries (`crmbook.engine`: DuckDB, or Spark), the fits and their comparison,
# predictions per customer, the tables of the run folder, and the report's cards, findings,
# charts and tables. Time is in `cfg.clv.time_unit` (days or weeks) unless a name says otherwise.

STAGE = "04_clv"
MODEL_CLASSES = {"bgnbd": BetaGeo, "pareto": ParetoNBD, "mbgnbd": ModifiedBetaGeo}
MODEL_LABELS = {"bgnbd": "BG/NBD", "pareto": "Pareto/NBD", "mbgnbd": "MBG/NBD", "gamma_gamma": "Gamma-Gamma"}
DAYS_PER_UNIT = {"days": 1.0, "weeks": 7.0}
#: Columns of tables/clv_customers.parquet, in order (recency and T in the time unit, money in run.currency).
CUSTOMER_COLUMNS = ("customer_id", "frequency", "recency", "T", "monetary", "p_alive", "expected_purchases",
                    "expected_avg_spend", "clv")
PARAM_COLUMNS = ("model", "param", "estimate", "std_err")
METRIC_COLUMNS = ("model", "converged", "log_likelihood", "n_params", "aic", "bic", "holdout_customers", "holdout_actual",
                  "holdout_predicted", "holdout_error", "mae", "rmse", "correlation", "selected", "message")
CHURN_COLUMNS = ("customer_id", "revenue", "orders", "recency_days", "p_alive", "clv")
MIN_REPEAT_BUYERS = 10  # fewer repeat buyers: no Gamma-Gamma fit (spend falls back to observed means)
FREQUENCY_CAP = 7  # calibration-vs-holdout chart groups frequencies 0..6 and 7+ (FHL 2005, Fig. 4)
TOP_SHARE = 0.10  # "share of value in the top decile"
FULL_HISTORY = " (full history)"  # suffix of the refitted models in clv_model_params.csv


@dataclass(frozen=True)
class FailedFit:
    """A model whose fit raised (for example too few repeat buyers): kept so that the report says so."""

    name: str
    message_: str
    converged_: bool = False


@dataclass(frozen=True)
class Split:
    """The calibration / holdout split: inclusive days, and the time unit of the summaries.

    origin: "params" (dates from params), "default" (the last holdout_weeks weeks), "none"
    (holdout_weeks = 0) or "short" (the data span less than 3 x holdout_weeks: no holdout)."""

    first_purchase: dt.date
    analysis_date: dt.date
    calibration_end: dt.date
    holdout_end: dt.date | None
    origin: str
    time_unit: str

    @property
    def has_holdout(self) -> bool:
        return self.holdout_end is not None

    @property
    def holdout_length(self) -> float:
        """Length of the holdout period in the time unit (0 without a holdout)."""
        if self.holdout_end is None:
            return 0.0
        return (self.holdout_end - self.calibration_end).days / DAYS_PER_UNIT[self.time_unit]

    @property
    def periods_per_year(self) -> float:
        """Time units per year: 365.25 days, or 52.18 weeks."""
        return 365.25 / DAYS_PER_UNIT[self.time_unit]


@dataclass
class CalibrationData:
    """The customer summaries the models are fitted on and judged by.

    calibration: one row per customer whose first purchase is on or before calibration_end, from
    the purchases up to calibration_end (plus holdout_purchases and holdout_value with a holdout);
    current: one row per customer from the whole history up to the analysis date (the rows that
    are scored); weekly_repeats: repeat purchase days per week since the first purchase day
    (`engine.repeat_purchases_by_period`), up to the holdout end (else the analysis date)."""

    split: Split
    calibration: pd.DataFrame
    current: pd.DataFrame
    weekly_repeats: pd.DataFrame


def _dates(values: pd.Series) -> pd.Series:
    """`pd.to_datetime(values).dt.date` (an object column of datetime.date), with one date object
    per distinct day shared by the rows that have it: a summary has a few hundred distinct days,
    and a date object per row would take 32 more bytes per row and column."""
    codes, days = pd.factorize(pd.to_datetime(values), use_na_sentinel=False)
    dates = pd.Series(days).dt.date.to_numpy(dtype=object)
    return pd.Series(dates[codes], index=values.index, dtype=object, name=values.name)


def _tidy_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """customer_id as text; money rounded to 1e-6 (the engine's sums are exact micro-units; the
    rounding also holds for summaries made elsewhere); sorted by customer_id (the engine's order:
    then the rows are not copied again)."""
    out = frame.copy(deep=False)  # columns are replaced, never written into: `frame` is unchanged
    out["customer_id"] = out["customer_id"].astype("str")
    for column in ("revenue", "monetary", "aov"):
        out[column] = out[column].astype("float64").round(6)
    for column in ("frequency", "orders", "purchase_days", "recency_days"):
        out[column] = out[column].astype("int64")
    for column in ("recency", "T"):
        out[column] = out[column].astype("float64")
    for column in ("first_purchase", "last_purchase"):
        out[column] = _dates(out[column])
    if out["customer_id"].is_monotonic_increasing:  # a stable sort would keep every row where it is
        return out.reset_index(drop=True)
    return out.sort_values("customer_id", kind="stable").reset_index(drop=True)


def transactions_path(run_dir) -> Path:
    """The clean transactions of this run (02's output)."""
    return Path(run_dir) / "tables" / "clean_transactions.parquet"


def split_dates(cfg, first_purchase: dt.date, analysis_date: dt.date, last_purchase: dt.date | None = None) -> Split:
    """The calibration / holdout split from `cfg.clv` (see `ClvSection`); ConfigError names the key
    when dates do not fit the data. The default holdout ends on the last day with purchases (at most
    the analysis date): when the analysis date is "the day after the last order", that day holds no
    purchases and would bias the holdout's actual counts down."""
    from crmbook.errors import ConfigError

    settings = cfg.clv
    unit = settings.time_unit
    end = settings.holdout_end or min(analysis_date, last_purchase or analysis_date)
    if settings.holdout_end is not None and settings.holdout_end > analysis_date:
        raise ConfigError(cfg.params_file, "clv.holdout_end", f"{settings.holdout_end} is after the analysis date "
                          f"{analysis_date} (later purchases are not in the clean data): set run.analysis_date")
    if settings.calibration_end is not None:
        calibration_end, origin = settings.calibration_end, "params"
    elif settings.holdout_end is not None:
        if settings.holdout_weeks == 0:
            raise ConfigError(cfg.params_file, "clv.calibration_end", "holdout_end is set: give calibration_end too "
                              "(or holdout_weeks > 0)")
        calibration_end, origin = end - dt.timedelta(weeks=settings.holdout_weeks), "params"
    elif settings.holdout_weeks == 0:
        return Split(first_purchase, analysis_date, analysis_date, None, "none", unit)
    elif (end - first_purchase).days >= 3 * 7 * settings.holdout_weeks:
        calibration_end, origin = end - dt.timedelta(weeks=settings.holdout_weeks), "default"
    else:
        return Split(first_purchase, analysis_date, analysis_date, None, "short", unit)
    if calibration_end < first_purchase:
        raise ConfigError(cfg.params_file, "clv.calibration_end", f"{calibration_end} is before the first purchase "
                          f"({first_purchase}): no customer would be in the calibration period")
    if calibration_end >= end:
        raise ConfigError(cfg.params_file, "clv.calibration_end", f"{calibration_end} is not before the holdout end {end}")
    return Split(first_purchase, analysis_date, calibration_end, end, origin, unit)


def summarise_calibration(cfg, run_dir, con=None) -> CalibrationData:
    """Customer summaries for the fits, from the clean transactions of `run_dir` (the params' engine):
    calibration period (with holdout purchases), whole history to the analysis date, and weekly
    repeat purchases. The analysis date is `run.analysis_date`, else the day after the last order.

    Without `con`, each query runs on a DuckDB connection of its own (`engine.from_params`), closed
    as soon as its result is in pandas: DuckDB keeps the memory of a large aggregation until its
    connection closes (about 1.2 GB after these queries on 3 million customers), and the fits and
    predictions that follow need it."""
    import contextlib

    from crmbook import engine
    from crmbook.errors import InputError

    path = transactions_path(run_dir)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: run 02 cleaning first (cleaning.load_clean)")

    def connection():
        return contextlib.nullcontext(con) if con is not None else contextlib.closing(engine.from_params(cfg))

    def query(function, *args):
        with connection() as c:
            return function(engine.queries_on(cfg, c), path, *args)

    with connection() as c:
        first, last = c.execute("SELECT MIN(CAST(order_ts AS DATE)), MAX(CAST(order_ts AS DATE)) FROM read_parquet(?)",
                                [str(path)]).fetchone()
    if first is None:
        raise InputError(path, "no transactions are left after cleaning: there is nothing to model")
    as_of = cfg.run.analysis_date or last + dt.timedelta(days=1)
    split = split_dates(cfg, first, as_of, last)
    unit = split.time_unit
    calibration = _tidy_summary(query(engine.customer_summary, split.calibration_end, unit))
    if split.has_holdout:
        holdout = query(engine.holdout_purchases, split.calibration_end, split.holdout_end)
        holdout["customer_id"] = holdout["customer_id"].astype("str")
        if holdout["customer_id"].equals(calibration["customer_id"]):  # the same customers in the same order:
            for column in holdout.columns.drop("customer_id"):            # what the merge gives, without its copy
                calibration[column] = holdout[column].to_numpy()
        else:
            calibration = calibration.merge(holdout, on="customer_id", how="left", validate="one_to_one")
        calibration["holdout_purchases"] = calibration["holdout_purchases"].fillna(0).astype("int64")
        calibration["holdout_value"] = calibration["holdout_value"].fillna(0.0).astype("float64").round(6)
        current = _tidy_summary(query(engine.customer_summary, split.analysis_date, unit))
    else:
        current = calibration
    weekly = query(engine.repeat_purchases_by_period, first, split.holdout_end or split.analysis_date, "weeks")
    return CalibrationData(split, calibration, current, weekly)


def _quietly(fit: Callable[[], object], name: str):
    """Run a fit with its warnings silenced (non-convergence is reported through `converged_` and
    `message_`); a fit that raises on the data becomes a FailedFit."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return fit()
        except (ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
            return FailedFit(name, f"could not be fitted: {exc}")


def fit_models(summary: pd.DataFrame, models=("bgnbd", "pareto", "mbgnbd"), penalizer: float = 0.0) -> dict[str, object]:
    """The purchase models fitted on a (frequency, recency, T) summary, in the order given; a fit
    that raises is a FailedFit (the stage carries on with the others)."""
    out = {}
    for key in models:
        model = MODEL_CLASSES[key]

        def fit(model=model):
            return model(penalizer=penalizer).fit(summary["frequency"], summary["recency"], summary["T"])

        out[key] = _quietly(fit, MODEL_LABELS[key])
    return out


def repeat_buyers(summary: pd.DataFrame) -> pd.DataFrame:
    """Customers with a repeat purchase and a positive mean repeat value: the Gamma-Gamma sample."""
    return summary[(summary["frequency"] > 0) & (summary["monetary"] > 0)]


def fit_spend(summary: pd.DataFrame, penalizer: float = 0.0):
    """Gamma-Gamma on the repeat buyers' (frequency, monetary); a FailedFit with fewer than
    MIN_REPEAT_BUYERS of them."""
    buyers = repeat_buyers(summary)
    if len(buyers) < MIN_REPEAT_BUYERS:
        return FailedFit(MODEL_LABELS["gamma_gamma"], f"could not be fitted: only {len(buyers)} repeat buyer(s), "
                         f"at least {MIN_REPEAT_BUYERS} are needed")
    return _quietly(lambda: GammaGamma(penalizer=penalizer).fit(buyers["frequency"], buyers["monetary"]),
                    MODEL_LABELS["gamma_gamma"])


def spend_usable(spend) -> bool:
    """A Gamma-Gamma fit can predict spend for everyone when it has finite parameters and q > 1
    (the population mean spend p gamma / (q - 1) exists)."""
    return hasattr(spend, "params_") and all(map(math.isfinite, spend.params_.values())) and spend.params_["q"] > 1


def expected_spend(spend, summary: pd.DataFrame) -> tuple[np.ndarray, str]:
    """Expected value per future purchase, and where it comes from ("gamma_gamma" or "observed").

    Gamma-Gamma's E[M | x, zbar] when the fit is usable (`spend_usable`); otherwise each repeat
    buyer's own mean repeat value, and for customers without one the mean of those (the mean
    order value when nobody bought twice)."""
    x = summary["frequency"].to_numpy(float)
    m = summary["monetary"].to_numpy(float)
    has_mean = (x > 0) & (m > 0)
    if spend_usable(spend):
        return spend.expected_avg_spend(np.where(has_mean, x, 0.0), np.where(has_mean, m, 0.0)), "gamma_gamma"
    fallback = m[has_mean].mean() if has_mean.any() else float(summary["aov"].mean())
    return np.where(has_mean, m, fallback), "observed"


def holdout_predictions(fits: dict[str, object], data: CalibrationData) -> dict[str, np.ndarray]:
    """Each fitted model's expected holdout purchases of every calibration customer (in the rows'
    order), by model key; empty without a holdout. `compare_models` and `conditional_by_frequency`
    compute them when not given; `evaluate` computes them once for both."""
    cal, split = data.calibration, data.split
    if not split.has_holdout:
        return {}
    x, tx, age = (cal[c].to_numpy(float) for c in ("frequency", "recency", "T"))
    out = {}
    for key, fit in fits.items():
        if hasattr(fit, "params_"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out[key] = fit.expected_purchases(split.holdout_length, x, tx, age)
    return out


def compare_models(fits: dict[str, object], data: CalibrationData,
                   predicted: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """One row per purchase model (METRIC_COLUMNS): convergence, log-likelihood, AIC, BIC and, with
    a holdout, predicted vs actual holdout purchases of the calibration customers: totals, relative
    error of the total, and per customer MAE, RMSE and Pearson correlation. `selected` is filled
    by `select_model`. `predicted`: `holdout_predictions(fits, data)`, computed here when not given."""
    cal, split = data.calibration, data.split
    if predicted is None:
        predicted = holdout_predictions(fits, data)
    rows = []
    for key, fit in fits.items():
        row = {"model": MODEL_LABELS[key], "converged": bool(fit.converged_), "message": fit.message_, "selected": False}
        if hasattr(fit, "params_"):
            k, ll = len(fit.params_), fit.log_likelihood_
            row.update(log_likelihood=ll, n_params=k, aic=2 * k - 2 * ll, bic=k * math.log(len(cal)) - 2 * ll)
            if split.has_holdout:
                actual = cal["holdout_purchases"].to_numpy(float)
                error = predicted[key] - actual
                both_vary = actual.std() > 0 and predicted[key].std() > 0
                row.update(holdout_customers=len(cal), holdout_actual=actual.sum(), holdout_predicted=predicted[key].sum(),
                           holdout_error=(predicted[key].sum() - actual.sum()) / actual.sum() if actual.sum() > 0 else np.nan,
                           mae=np.abs(error).mean(), rmse=math.sqrt((error**2).mean()),
                           correlation=float(np.corrcoef(actual, predicted[key])[0, 1]) if both_vary else np.nan)
        rows.append(row)
    table = pd.DataFrame(rows).reindex(columns=list(METRIC_COLUMNS))
    table.index = list(fits)
    return table


def select_model(comparison: pd.DataFrame, choice: str = "auto", has_holdout: bool = True) -> tuple[str, str]:
    """The purchase model used for CLV, and the rule that chose it (a text key).

    `choice` other than "auto" is taken as given. "auto": among the converged fits, the lowest
    holdout MAE per customer (without a holdout: the lowest BIC); if no fit converged, the same
    rule among all fits that produced parameters (and the report says so). Ties go to the first
    model in `clv.models`."""
    if choice != "auto":
        if choice not in comparison.index or pd.isna(comparison.loc[choice, "log_likelihood"]):
            raise RuntimeError(f"clv.model = {choice}: that model could not be fitted ({comparison.loc[choice, 'message']})"
                               if choice in comparison.index else f"clv.model = {choice}: that model was not fitted")
        return choice, "clv_sel_params"
    metric = "mae" if has_holdout else "bic"
    usable = comparison[comparison[metric].notna()]
    if usable.empty:
        raise RuntimeError("no purchase model could be fitted: " + "; ".join(
            f"{row.model}: {row.message}" for row in comparison.itertuples()))
    converged = usable[usable["converged"].astype(bool)]
    pool = converged if len(converged) else usable
    best = pool[metric].astype(float).idxmin()
    return best, f"clv_sel_{metric}" + ("" if len(converged) else "_unconverged")


@dataclass(frozen=True)
class FinalModels:
    """The models that score the customers. `purchase_refitted` / `spend_refitted`: refitted on the
    whole history; `refit_failures`: (label, message) of refits that did not converge or raised, and
    were therefore not used (the calibration fit scores the customers instead)."""

    purchase: object
    spend: object
    purchase_refitted: bool = False
    spend_refitted: bool = False
    refit_failures: tuple[tuple[str, str], ...] = ()


def final_models(key: str, fits: dict[str, object], spend, data: CalibrationData, settings) -> FinalModels:
    """The purchase and spend models that score customers: with a holdout and `settings.refit`, the
    chosen model and Gamma-Gamma refitted on the whole history to the analysis date (all customers,
    all information), each used only when its refit converged; otherwise the calibration fits."""
    if not (data.split.has_holdout and settings.refit):
        return FinalModels(fits[key], spend)
    purchase = fit_models(data.current, (key,), settings.penalizer)[key]
    new_spend = fit_spend(data.current, settings.penalizer)
    _log.info("refitted %s and Gamma-Gamma on the whole history", MODEL_LABELS[key])
    failures = tuple((MODEL_LABELS[k] + FULL_HISTORY, fit.message_) for k, fit in ((key, purchase), ("gamma_gamma", new_spend))
                     if not fit.converged_)
    use_purchase, use_spend = purchase.converged_, new_spend.converged_ and spend_usable(new_spend)
    return FinalModels(purchase if use_purchase else fits[key], new_spend if use_spend else spend,
                       use_purchase, use_spend, failures)


def predict_customers(model, spend, summary: pd.DataFrame, split: Split, settings) -> pd.DataFrame:
    """Per customer: P(alive) at the analysis date, expected repeat purchases over the horizon,
    expected spend per purchase and CLV (discounted expected purchases x expected spend), next to
    the summary columns. Columns: CUSTOMER_COLUMNS plus revenue, orders, recency_days, first_purchase
    (for the report); the spend source is in `attrs["spend_source"]`."""
    x, tx, age = (summary[c].to_numpy(float) for c in ("frequency", "recency", "T"))
    horizon = settings.horizon_years * split.periods_per_year
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p_alive = model.p_alive(x, tx, age)
        purchases = model.expected_purchases(horizon, x, tx, age)
        discounted = discounted_purchases(model, x, tx, age, horizon=settings.horizon_years, discount_rate=settings.discount_rate,
                                          periods_per_year=split.periods_per_year, discounting=settings.discounting)
        spend_per_purchase, source = expected_spend(spend, summary)
    out = summary[["customer_id", "frequency", "recency", "T", "monetary"]]  # a new frame (copy on write)
    out["p_alive"] = np.round(p_alive, 6)
    out["expected_purchases"] = np.round(purchases, 6)
    out["expected_avg_spend"] = np.round(spend_per_purchase, 6)
    out["clv"] = np.round(discounted * spend_per_purchase, 6)
    for column in ("revenue", "orders", "recency_days", "first_purchase"):
        out[column] = summary[column].to_numpy()
    out.attrs["spend_source"] = source
    return out


def conditional_by_frequency(fits: dict[str, object], data: CalibrationData, cap: int = FREQUENCY_CAP,
                             predicted: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """Mean holdout purchases per customer by calibration frequency (0 .. cap-1 and cap+), actual and
    predicted by each fitted model: the conditional-expectation check of FHL (2005), Fig. 4.
    Columns: frequency (label), customers, actual, predicted_<model key> ... Empty without a holdout.
    `predicted`: `holdout_predictions(fits, data)`, computed here when not given."""
    split, cal = data.split, data.calibration
    if not split.has_holdout:
        return pd.DataFrame(columns=["frequency", "customers", "actual"])
    if predicted is None:
        predicted = holdout_predictions(fits, data)
    group = np.minimum(cal["frequency"].to_numpy(), cap)
    frame = pd.DataFrame({"group": group, "actual": cal["holdout_purchases"].to_numpy(float)})
    for key, fit in fits.items():
        if hasattr(fit, "params_"):
            frame[f"predicted_{key}"] = predicted[key]
    out = frame.groupby("group").mean().round(6)
    out.insert(0, "customers", frame.groupby("group").size())
    out.insert(0, "frequency", [f"{g}+" if g == cap else str(g) for g in out.index])
    return out.reset_index(drop=True)


def tracking(fits: dict[str, object], data: CalibrationData) -> pd.DataFrame:
    """Weekly and cumulative repeat purchases, actual and predicted, from the first purchase day to
    the holdout end (else the analysis date): FHL (2005), Figs. 2-3.

    Actual: repeat purchase days per week (`engine.repeat_purchases_by_period`). Predicted: each
    model's unconditional expectation E[X(t)] (`expected_purchases_new`) at every customer's age
    t at the end of the week, summed over the customers who had made their first purchase by then
    (first purchase days taken as given). Columns: period (week, 1-based), days (7, fewer in a last
    partial week), period_end (last day), in_holdout, actual, actual_cumulative, predicted_<key>, predicted_<key>_cumulative."""
    split = data.split
    start, end = split.first_purchase, split.holdout_end or split.analysis_date
    span_days = (end - start).days + 1
    weeks = max(1, math.ceil(span_days / 7))
    periods = np.arange(1, weeks + 1)
    week_end_day = np.minimum(7 * periods, span_days)  # days since start at the end of each week
    out = pd.DataFrame({"period": periods, "days": np.diff(week_end_day, prepend=0).astype("int64"),
                        "period_end": [start + dt.timedelta(days=int(d) - 1) for d in week_end_day]})
    out["in_holdout"] = [split.has_holdout and d > split.calibration_end for d in out["period_end"]]
    weekly = data.weekly_repeats.set_index("period")["repeat_purchases"]
    out["actual"] = weekly.reindex(periods, fill_value=0).to_numpy().astype("int64")
    out["actual_cumulative"] = out["actual"].cumsum()
    codes, days = pd.factorize(data.current["first_purchase"], use_na_sentinel=False)  # a few hundred distinct days
    first_day = pd.Series(np.array([(d - start).days for d in days], dtype=np.int64)[codes])
    counts = first_day[first_day < span_days].value_counts().sort_index()
    offsets, n = counts.index.to_numpy(), counts.to_numpy(float)
    ages_days = np.maximum(week_end_day[:, None] - offsets[None, :], 0)  # weeks x first-purchase days
    unique_days, inverse = np.unique(ages_days, return_inverse=True)
    for key, fit in fits.items():
        if not hasattr(fit, "params_"):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = fit.expected_purchases_new(unique_days / DAYS_PER_UNIT[split.time_unit])
        cumulative = expected[inverse.reshape(ages_days.shape)] @ n
        out[f"predicted_{key}"] = np.round(np.diff(cumulative, prepend=0.0), 6)
        out[f"predicted_{key}_cumulative"] = np.round(cumulative, 6)
    return out


def _largest_first(scored: pd.DataFrame, column: str) -> np.ndarray:
    """Row positions of `scored` in the order of sort_values([column, "customer_id"], ascending=
    [False, True], kind="stable"), NaN last; when the rows are sorted by customer_id (as the stage's
    are), that is a stable sort of the one numeric column, which needs neither a comparison of ids
    nor a copy of every column."""
    if scored["customer_id"].is_monotonic_increasing:
        return np.argsort(-scored[column].to_numpy(float), kind="stable")
    ordered = scored.reset_index(drop=True).sort_values([column, "customer_id"], ascending=[False, True], kind="stable")
    return ordered.index.to_numpy()


def value_deciles(scored: pd.DataFrame) -> pd.DataFrame:
    """Customers in ten groups by CLV (1 = the top 10%; ties by customer_id): customers, CLV, share
    of the total and cumulative share."""
    ordered = pd.DataFrame({"clv": scored["clv"].to_numpy(float)[_largest_first(scored, "clv")]})
    decile = np.arange(len(ordered)) * 10 // max(len(ordered), 1) + 1
    out = ordered.assign(decile=decile).groupby("decile").agg(customers=("clv", "size"), clv=("clv", "sum"))
    total = out["clv"].sum()
    out["share"] = out["clv"] / total if total > 0 else 0.0
    out["cumulative_share"] = out["share"].cumsum()
    return out.reset_index()


def top_share(scored: pd.DataFrame, share: float = TOP_SHARE) -> float:
    """Share of the total CLV held by the top `share` of customers (at least one customer)."""
    values = np.sort(scored["clv"].to_numpy(float))[::-1]
    total = values.sum()
    return float(values[: max(1, math.ceil(share * len(values)))].sum() / total) if total > 0 else 0.0


def p_alive_grid(model, summary: pd.DataFrame, steps: int = 12) -> pd.DataFrame:
    """P(alive) over the frequency x recency grid for a customer of the largest age T in `summary`
    (the longest-known customers): rows frequency 0..x_max (the 99th percentile, 5 to 20), columns
    recency from 0 to T in `steps` steps (in the time unit). Empty cells (x = 0 needs recency 0)
    are NaN."""
    age = float(summary["T"].max())
    x_max = int(min(max(np.ceil(summary["frequency"].quantile(0.99)), 5), 20))
    recency = np.minimum(np.round(np.linspace(0.0, age, steps + 1), 6), age)
    xs, ts = np.meshgrid(np.arange(x_max + 1, dtype=float), recency, indexing="ij")
    valid = (xs > 0) | (ts == 0)
    values = np.full(xs.shape, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values[valid] = model.p_alive(xs[valid], ts[valid], np.full(valid.sum(), age))
    return pd.DataFrame(values, index=pd.Index(np.arange(x_max + 1), name="frequency"), columns=pd.Index(recency, name="recency"))


def churn_risk(scored: pd.DataFrame, settings) -> pd.DataFrame:
    """High-value customers who are probably gone: in the top `churn_top_value_share` by net revenue
    to date and with P(alive) below `churn_p_alive_below`. Ids and numbers only (CHURN_COLUMNS),
    largest revenue first."""
    top = scored.iloc[_largest_first(scored, "revenue")[: max(1, math.ceil(settings.churn_top_value_share * len(scored)))]]
    risky = top[top["p_alive"] < settings.churn_p_alive_below]
    return risky[list(CHURN_COLUMNS)].reset_index(drop=True)


def rfm_features(summary: pd.DataFrame) -> pd.DataFrame:
    """The columns of `segmentation.customer_features` that its RFM scores use (customer_id,
    recency_days, orders, revenue rounded to cents), from a customer summary to the same date made
    by `summarise_calibration` (`CalibrationData.current`): the same engine query (in whichever
    time unit: these columns do not depend on it), so the same values. Revenue there is the engine's
    exact micro-unit sum rounded to 1e-6, which leaves it unchanged, so rounding it to cents gives
    what 03 gets."""
    return pd.DataFrame({"customer_id": summary["customer_id"].astype("str"),
                         "recency_days": summary["recency_days"].astype("int64"),
                         "orders": summary["orders"].astype("int64"),
                         "revenue": summary["revenue"].astype("float64").round(2)})


def rfm_segments(cfg, run_dir, as_of: dt.date, con=None, summary: pd.DataFrame | None = None) -> tuple[pd.Series | None, str]:
    """customer_id -> RFM segment, and its source: "03" (tables/customer_segments.parquet, when 03
    has written it), "computed" (03 has not, e.g. it runs in parallel: the same RFM rules and
    params through `crmbook.segmentation`) or "none". `summary`: the customer summary to `as_of`
    (`CalibrationData.current`), whose RFM columns are then used (`rfm_features`) instead of
    aggregating the transactions once more."""
    from crmbook import store

    if store.has_table(run_dir, "customer_segments"):
        try:
            table = store.read_table(run_dir, "customer_segments")
            return pd.Series(table["rfm_segment"].to_numpy(), index=table["customer_id"].astype("str")), "03"
        except (OSError, ValueError, KeyError):  # being written by 03 right now, or another layout
            pass
    try:
        from crmbook import engine, segmentation

        if summary is not None:
            features = rfm_features(summary)
        else:
            con = con or engine.from_params(cfg)
            features = segmentation.customer_features(engine.queries_on(cfg, con), transactions_path(run_dir), as_of)
        scores = segmentation.rfm_scores(features, cfg.segmentation.rfm)
        names = segmentation.name_segments(scores, segmentation.segment_grid(cfg.segmentation.rfm))
        return pd.Series(names.to_numpy(), index=features["customer_id"].astype("str")), "computed"
    except (ImportError, AttributeError, KeyError, TypeError):
        return None, "none"


def acquisition_channels(customers: pd.DataFrame | None) -> pd.Series | None:
    """customer_id -> acquisition channel from the clean customers table (None without the column)."""
    if customers is None or "acquisition_channel" not in customers or customers["acquisition_channel"].isna().all():
        return None
    return pd.Series(customers["acquisition_channel"].array, index=customers["customer_id"].astype("str"))


def value_by_group(scored: pd.DataFrame, groups: pd.Series, unknown: str = "?") -> pd.DataFrame:
    """CLV per group (customer_id -> label; customers without one are `unknown`): customers, total,
    mean and share of CLV, mean P(alive); largest total first."""
    ids = scored["customer_id"]
    if groups.index.equals(pd.Index(ids)):  # same customers in the same order (RFM segments): no lookup
        label = pd.Series(groups.array, index=scored.index)
    else:
        label = ids.map(groups)
    label = label.fillna(unknown).astype("str")
    g = scored.assign(group=label).groupby("group")
    out = pd.DataFrame({"customers": g.size(), "clv_total": g["clv"].sum(), "clv_mean": g["clv"].mean(),
                        "p_alive_mean": g["p_alive"].mean()})
    total = out["clv_total"].sum()
    out.insert(2, "clv_share", out["clv_total"] / total if total > 0 else 0.0)
    out = out.reset_index().sort_values(["clv_total", "group"], ascending=[False, True], kind="stable")
    return out.reset_index(drop=True)


@dataclass
class ClvResult:
    """Everything the 04 report shows and saves (see `evaluate`)."""

    settings: object
    currency: str
    data: CalibrationData
    fits: dict[str, object]
    spend: object
    comparison: pd.DataFrame
    selected: str
    selection_rule: str
    model: object
    model_spend: object
    refitted: bool
    spend_refitted: bool
    refit_failures: tuple[tuple[str, str], ...]
    scored: pd.DataFrame
    conditional: pd.DataFrame
    tracking: pd.DataFrame
    deciles: pd.DataFrame
    p_alive: pd.DataFrame
    churn: pd.DataFrame
    by_segment: pd.DataFrame | None = None
    segment_source: str = "none"
    by_channel: pd.DataFrame | None = None

    @property
    def split(self) -> Split:
        return self.data.split

    def problems(self) -> list[tuple[str, str]]:
        """(model label, message) of every fit that did not converge or could not be fitted: the
        calibration fits, then the refits on the whole history (which are then not used)."""
        out = [(MODEL_LABELS[k], f.message_) for k, f in self.fits.items() if not f.converged_]
        if not self.spend.converged_:
            out.append((MODEL_LABELS["gamma_gamma"], self.spend.message_))
        return out + list(self.refit_failures)


def evaluate(cfg, run_dir, customers: pd.DataFrame | None = None, con=None) -> ClvResult:
    """The whole 04 stage on the clean tables of `run_dir`: summaries, fits of every model in
    `clv.models` and Gamma-Gamma on the calibration period, comparison and choice of model,
    refit on the whole history, predictions per customer and the report's tables."""

    settings = cfg.clv
    data = summarise_calibration(cfg, run_dir, con)  # without `con`: DuckDB connections that close after each query
    _log.info("customer summaries: %s customers in the calibration period", f"{len(data.calibration):,}")
    segments, segment_source = rfm_segments(cfg, run_dir, data.split.analysis_date, summary=data.current)
    fits = fit_models(data.calibration, settings.models, settings.penalizer)
    for key, fit in fits.items():
        _log.info("fitted %s on the calibration period%s", MODEL_LABELS[key], "" if fit.converged_ else ": did not converge")
    spend = fit_spend(data.calibration, settings.penalizer)
    predicted = holdout_predictions(fits, data)
    comparison = compare_models(fits, data, predicted)
    selected, rule = select_model(comparison, settings.model, data.split.has_holdout)
    comparison["selected"] = comparison.index == selected
    final = final_models(selected, fits, spend, data, settings)
    scored = predict_customers(final.purchase, final.spend, data.current, data.split, settings)
    channels = acquisition_channels(customers)
    return ClvResult(
        settings=settings, currency=cfg.run.currency, data=data, fits=fits, spend=spend, comparison=comparison,
        selected=selected, selection_rule=rule, model=final.purchase, model_spend=final.spend, refitted=final.purchase_refitted,
        spend_refitted=final.spend_refitted, refit_failures=final.refit_failures, scored=scored,
        conditional=conditional_by_frequency(fits, data, predicted=predicted), tracking=tracking(fits, data),
        deciles=value_deciles(scored),
        p_alive=p_alive_grid(final.purchase, data.current), churn=churn_risk(scored, settings),
        by_segment=value_by_group(scored, segments) if segments is not None else None, segment_source=segment_source,
        by_channel=value_by_group(scored, channels) if channels is not None else None,
    )


def params_table(result: ClvResult) -> pd.DataFrame:
    """tables/clv_model_params.csv: model, param, estimate, std_err for every calibration fit (in
    `clv.models` order, then Gamma-Gamma), then the refits on the whole history that score the
    customers ("... (full history)").
    A fit without standard errors (not converged) has an empty std_err."""
    parts = [fit.summary() for fit in result.fits.values() if hasattr(fit, "params_")]
    if hasattr(result.spend, "params_"):
        parts.append(result.spend.summary())
    for refitted, fit in ((result.refitted, result.model), (result.spend_refitted, result.model_spend)):
        if refitted:
            parts.append(fit.summary().assign(model=lambda f: f["model"] + FULL_HISTORY))
    if not parts:
        return pd.DataFrame(columns=list(PARAM_COLUMNS))
    return pd.concat(parts, ignore_index=True)[list(PARAM_COLUMNS)]


def save(run_dir, result: ClvResult) -> None:
    """Write the stage's tables: clv_customers.parquet (CUSTOMER_COLUMNS), clv_model_params.csv,
    clv_holdout_metrics.csv (one row per purchase model), clv_tracking.csv (weekly),
    clv_by_frequency.csv (calibration vs holdout) and clv_churn_risk.csv (ids and numbers only).
    Rows are sorted, so the same inputs give byte-identical files."""
    from crmbook import store

    store.write_table(run_dir, "clv_customers", result.scored[list(CUSTOMER_COLUMNS)])
    store.write_table(run_dir, "clv_model_params", params_table(result), fmt="csv")
    store.write_table(run_dir, "clv_holdout_metrics", result.comparison.reset_index(drop=True), fmt="csv")
    store.write_table(run_dir, "clv_tracking", result.tracking, fmt="csv")
    store.write_table(run_dir, "clv_by_frequency", result.conditional, fmt="csv")
    store.write_table(run_dir, "clv_churn_risk", result.churn, fmt="csv")


# --------------------------------------------------------------------------- the 04 report
# Cards, findings, headings, tables and charts in the report language (words: text/04_clv.yaml).


def _pct(value: float, signed: bool = False) -> str:
    return f"{value:+.1%}" if signed else f"{value:.0%}"


def _length(days: float, time_unit: str, lang: str) -> str:
    """A length of time in the stage's unit, e.g. '26 weeks'."""
    from crmbook import report

    return f"{days / DAYS_PER_UNIT[time_unit]:,.4g} {report.t(f'clv_unit_{time_unit}', lang)}"


def _years(years: float, lang: str) -> str:
    from crmbook import report

    return report.t("clv_year_one", lang) if years == 1 else report.say("clv_years", lang, years=f"{years:g}")


def summarise(result: ClvResult, cfg):
    """KPI cards and three to five findings for the 04 report (and the index page). A fit that did
    not converge always gets a finding."""
    from crmbook import report

    lang, s, split = cfg.report.language, result.settings, result.split
    scored, currency = result.scored, result.currency
    total, purchases = float(scored["clv"].sum()), float(scored["expected_purchases"].sum())
    horizon, rate = _years(s.horizon_years, lang), _pct(s.discount_rate)
    row = result.comparison.loc[result.selected]
    model = MODEL_LABELS[result.selected]
    if split.has_holdout and pd.notna(row["holdout_error"]):
        model_note = report.say("clv_card_model_note_holdout", lang, error=_pct(row["holdout_error"], signed=True))
    else:
        model_note = report.t("clv_card_model_note_bic" if result.selection_rule.startswith("clv_sel_bic") else "clv_sel_params_short", lang)
    share_top = top_share(scored)
    cards = [
        report.Card(report.t("clv_card_customers", lang), report.number(len(scored))),
        report.Card(report.t("clv_card_total", lang), report.money(total, currency),
                    report.say("clv_card_total_note", lang, horizon=horizon, rate=rate)),
        report.Card(report.t("clv_card_mean", lang), report.money(total / max(len(scored), 1), currency)),
        report.Card(report.t("clv_card_purchases", lang), report.number(purchases),
                    report.say("clv_card_purchases_note", lang, horizon=horizon)),
        report.Card(report.t("clv_card_top", lang), _pct(share_top)),
        report.Card(report.t("clv_card_model", lang), model, model_note),
    ]
    findings: list[str] = []
    problems = result.problems()
    if problems:
        names = ", ".join(dict.fromkeys(label for label, _ in problems))
        used = not result.model.converged_  # the fit that scores the customers
        findings.append(report.say("clv_f_unconverged_used" if used else "clv_f_unconverged", lang, models=names, model=model))
    findings.append(report.say("clv_f_value", lang, horizon=horizon, customers=report.number(len(scored)),
                               purchases=report.number(purchases), value=report.money(total, currency), rate=rate,
                               mean=report.money(total / max(len(scored), 1), currency)))
    bottom = float(result.deciles.loc[result.deciles["decile"] > 5, "share"].sum())
    findings.append(report.say("clv_f_top", lang, share=_pct(share_top), bottom=_pct(bottom)))
    choice = report.say(result.selection_rule, lang, model=model)
    if split.has_holdout and pd.notna(row["holdout_error"]):
        choice += " " + report.say("clv_f_holdout", lang, length=_length((split.holdout_end - split.calibration_end).days, split.time_unit, lang),
                                   predicted=report.number(row["holdout_predicted"]), actual=report.number(row["holdout_actual"]),
                                   error=_pct(row["holdout_error"], signed=True), mae=report.number(row["mae"], 2))
    gap = largest_gap(result)
    if gap is not None:
        choice += " " + report.say("clv_f_gap", lang, frequency=gap[0], predicted=report.number(gap[1], 2),
                                   actual=report.number(gap[2], 2))
    findings.append(choice)
    top_label = _pct(s.churn_top_value_share)
    if len(result.churn):
        revenue = float(result.churn["revenue"].sum())
        findings.append(report.say("clv_f_risk", lang, n=report.number(len(result.churn)), top=top_label,
                                   threshold=_pct(s.churn_p_alive_below), revenue=report.money(revenue, currency),
                                   share=_pct(revenue / max(float(scored["revenue"].sum()), 1e-9))))
    else:
        findings.append(report.say("clv_f_risk_none", lang, top=top_label, threshold=_pct(s.churn_p_alive_below)))
    return report.StageSummary(cards, findings[:5])


def largest_gap(result: ClvResult, minimum: float = 0.1) -> tuple[str, float, float] | None:
    """(calibration-frequency group, predicted, actual mean holdout purchases) where the chosen model
    misses most, when it misses by at least `minimum` purchases per customer."""
    column = f"predicted_{result.selected}"
    table = result.conditional
    if table.empty or column not in table:
        return None
    miss = (table[column] - table["actual"]).abs()
    row = table.loc[miss.idxmax()]
    return (str(row["frequency"]), float(row[column]), float(row["actual"])) if miss.max() >= minimum else None


def heading(key: str, lang: str, level: int = 2, **fields: object):
    """A section heading in the report language."""
    import html

    from IPython.display import HTML

    from crmbook import report

    return HTML(f"<h{level}>{html.escape(report.say(key, lang, **fields))}</h{level}>")


def note(key: str, lang: str, **fields: object):
    """A short paragraph in the report language."""
    import html

    from IPython.display import HTML

    from crmbook import report

    return HTML(f"<p>{html.escape(report.say(key, lang, **fields))}</p>")


def split_note(result: ClvResult, lang: str):
    """One sentence on the periods: calibration, holdout (or why there is none), analysis date."""
    split = result.split
    if split.has_holdout:
        return note("clv_n_split", lang, first=split.first_purchase, calibration_end=split.calibration_end,
                    holdout_start=split.calibration_end + dt.timedelta(days=1), holdout_end=split.holdout_end,
                    length=_length((split.holdout_end - split.calibration_end).days, split.time_unit, lang), as_of=split.analysis_date)
    return note(f"clv_n_no_holdout_{split.origin}", lang, first=split.first_purchase, as_of=split.analysis_date,
                weeks=result.settings.holdout_weeks)


def convergence_note(result: ClvResult, lang: str):
    """A highlighted box listing every fit that did not converge, with the optimiser's reason (or nothing)."""
    import html

    from IPython.display import HTML

    from crmbook import report

    problems = result.problems()
    if not problems:
        return None
    items = "".join(f"<li><strong>{html.escape(label)}</strong>: {html.escape(message)}</li>" for label, message in problems)
    return HTML(f'<div class="crm-findings"><strong>{html.escape(report.t("clv_h_unconverged", lang))}</strong>'
                f"<ul>{items}</ul><p>{html.escape(report.t('clv_n_unconverged', lang))}</p></div>")


def _rename(frame: pd.DataFrame, lang: str, columns: dict[str, str]) -> pd.DataFrame:
    from crmbook import report

    return frame[list(columns)].rename(columns={c: report.t(k, lang) for c, k in columns.items()})


def comparison_table(result: ClvResult, lang: str) -> pd.DataFrame:
    """The model comparison for the report: fit and holdout accuracy, the chosen model marked."""
    from crmbook import report

    table = result.comparison.copy()
    yes, no = report.t("clv_yes", lang), report.t("clv_no", lang)
    for column in ("converged", "selected"):
        table[column] = table[column].map({True: yes, False: no})
    for column, decimals in (("log_likelihood", 1), ("aic", 1), ("bic", 1), ("holdout_actual", 0), ("holdout_predicted", 0),
                             ("mae", 3), ("rmse", 3), ("correlation", 3)):
        table[column] = table[column].map(lambda v, d=decimals: "" if pd.isna(v) else f"{v:,.{d}f}")
    table["holdout_error"] = table["holdout_error"].map(lambda v: "" if pd.isna(v) else _pct(v, signed=True))
    columns = {"model": "clv_col_model", "converged": "clv_col_converged", "log_likelihood": "clv_col_ll",
               "aic": "clv_col_aic", "bic": "clv_col_bic"}
    if result.split.has_holdout:
        columns |= {"holdout_actual": "clv_col_holdout_actual", "holdout_predicted": "clv_col_holdout_predicted",
                    "holdout_error": "clv_col_holdout_error", "mae": "clv_col_mae", "rmse": "clv_col_rmse",
                    "correlation": "clv_col_corr"}
    return _rename(table, lang, columns | {"selected": "clv_col_selected"})


def params_display(result: ClvResult, lang: str) -> pd.DataFrame:
    table = params_table(result)
    table["estimate"] = table["estimate"].map(lambda v: f"{v:.4g}")
    table["std_err"] = table["std_err"].map(lambda v: "" if pd.isna(v) else f"{v:.3g}")
    return _rename(table, lang, {"model": "clv_col_model", "param": "clv_col_param", "estimate": "clv_col_estimate",
                                 "std_err": "clv_col_std_err"})


def churn_display(result: ClvResult, lang: str, rows: int = 15) -> pd.DataFrame:
    """The first `rows` customers of the churn-risk list: ids and numbers only, never personal data."""
    table = result.churn.head(rows).copy()
    table["revenue"] = table["revenue"].map(lambda v: f"{v:,.0f}")
    table["clv"] = table["clv"].map(lambda v: f"{v:,.0f}")
    table["p_alive"] = table["p_alive"].map(lambda v: f"{v:.0%}")
    return _rename(table, lang, {"customer_id": "clv_col_customer", "revenue": "clv_col_revenue", "orders": "clv_col_orders",
                                 "recency_days": "clv_col_recency_days", "p_alive": "clv_col_p_alive", "clv": "clv_col_clv"})


def _segment_label(name: str, lang: str) -> str:
    """A named RFM segment in the report language (03's words, when that module provides them)."""
    try:
        from crmbook import segmentation

        return segmentation.segment_label(name, lang)
    except (ImportError, AttributeError):
        return name


def group_display(frame: pd.DataFrame, lang: str, segments: bool = False) -> pd.DataFrame:
    table = frame.copy()
    if segments:
        table["group"] = table["group"].map(lambda g: _segment_label(g, lang))
    for column in ("clv_total", "clv_mean"):
        table[column] = table[column].map(lambda v: f"{v:,.0f}")
    for column in ("clv_share", "p_alive_mean"):
        table[column] = table[column].map(lambda v: f"{v:.0%}")
    return _rename(table, lang, {"group": "clv_col_group", "customers": "clv_col_customers", "clv_total": "clv_col_clv_total",
                                 "clv_share": "clv_col_clv_share", "clv_mean": "clv_col_clv_mean", "p_alive_mean": "clv_col_p_alive_mean"})


def _series(result: ClvResult, columns) -> dict[str, str]:
    """Column stem -> legend label of the fitted models (the chosen one marked with *)."""
    return {f"predicted_{k}": MODEL_LABELS[k] + (" *" if k == result.selected else "") for k in result.fits
            if f"predicted_{k}" in columns}


def chart_tracking(result: ClvResult, lang: str, cumulative: bool = True):
    from crmbook import report
    from crmbook.plots import clv as charts

    split = result.split
    end_week = (split.calibration_end - split.first_purchase).days / 7 + 1 if split.has_holdout else None
    frame = result.tracking if cumulative else result.tracking[result.tracking["days"] == 7]  # a partial last week would dip
    return charts.tracking(frame, _series(result, result.tracking.columns), report.t("clv_actual", lang),
                           report.t("clv_t_tracking_cum" if cumulative else "clv_t_tracking_week", lang),
                           report.say("clv_x_week", lang, start=split.first_purchase),
                           report.t("clv_y_tracking_cum" if cumulative else "clv_y_tracking_week", lang),
                           cumulative, end_week, report.t("clv_calibration_end", lang))


def chart_conditional(result: ClvResult, lang: str):
    from crmbook import report
    from crmbook.plots import clv as charts

    return charts.conditional(result.conditional, _series(result, result.conditional.columns), report.t("clv_actual", lang),
                              report.t("clv_t_conditional", lang), report.t("clv_x_conditional", lang),
                              report.t("clv_y_conditional", lang))


def chart_deciles(result: ClvResult, lang: str):
    from crmbook import report
    from crmbook.plots import clv as charts

    return charts.deciles(result.deciles, report.t("clv_t_deciles", lang), report.t("clv_x_deciles", lang),
                          report.t("clv_y_deciles", lang), report.t("clv_cumulative_share", lang))


def chart_p_alive(result: ClvResult, lang: str):
    from crmbook import report
    from crmbook.plots import clv as charts

    unit = report.t(f"clv_unit_{result.split.time_unit}", lang)
    return charts.p_alive_heatmap(result.p_alive, report.t("clv_t_alive", lang), report.say("clv_x_alive", lang, unit=unit),
                                  report.t("clv_y_alive", lang), report.t("clv_col_p_alive", lang))


def chart_groups(result: ClvResult, lang: str, which: str):
    """CLV by RFM segment ("segment") or acquisition channel ("channel")."""
    from crmbook import report
    from crmbook.plots import clv as charts

    frame = result.by_segment if which == "segment" else result.by_channel
    if which == "segment":
        frame = frame.assign(group=frame["group"].map(lambda g: _segment_label(g, lang)))
    return charts.group_value(frame, report.t(f"clv_t_{which}", lang), report.say("clv_x_group", lang, currency=result.currency),
                              report.t("clv_of_clv", lang), report.t("clv_of_customers", lang))


def caption(key: str, lang: str, **fields: object):
    """A caption in the report language (crmbook.report.caption)."""
    from crmbook import report

    return report.caption(report.say(key, lang, **fields))


def alive_caption(result: ClvResult, lang: str):
    split = result.split
    age = float(result.p_alive.columns.max()) * DAYS_PER_UNIT[split.time_unit]
    return caption("clv_cap_alive", lang, age=_length(age, split.time_unit, lang))


def churn_caption(result: ClvResult, lang: str, rows: int = 15):
    """The caption under the churn-risk table, or a note that there is nobody on the list."""
    s = result.settings
    if not len(result.churn):
        return note("clv_f_risk_none", lang, top=_pct(s.churn_top_value_share), threshold=_pct(s.churn_p_alive_below))
    return caption("clv_cap_risk", lang, shown=min(rows, len(result.churn)), n=len(result.churn),
                   top=_pct(s.churn_top_value_share), threshold=_pct(s.churn_p_alive_below))


def method_notes(result: ClvResult, cfg):
    """Models, references, units, validation, discounting and caveats, as a list in the report language."""
    import html

    from IPython.display import HTML

    from crmbook import report

    lang, s, split = cfg.report.language, result.settings, result.split
    unit = report.t(f"clv_unit_{split.time_unit}", lang)
    buyers = repeat_buyers(result.data.current)
    corr = buyers["frequency"].corr(buyers["monetary"]) if len(buyers) > 2 else float("nan")
    items = [report.say("clv_m_data", lang, unit=unit, currency=result.currency),
             report.say("clv_m_models", lang, corr="–" if pd.isna(corr) else f"{corr:.2f}")]
    if s.penalizer > 0:
        items.append(report.say("clv_m_penalty", lang, penalizer=f"{s.penalizer:g}"))
    if split.has_holdout:
        items.append(report.say("clv_m_validation", lang, calibration_end=split.calibration_end, holdout_end=split.holdout_end))
    items.append(report.t("clv_m_rule", lang))
    if result.refitted or result.spend_refitted:
        items.append(report.say("clv_m_refit", lang, as_of=split.analysis_date))
    if result.refit_failures:
        items.append(report.t("clv_m_refit_failed", lang))
    if result.scored.attrs.get("spend_source") == "observed":
        items.append(report.t("clv_m_spend_observed", lang))
    items += [report.say("clv_m_clv", lang, horizon=_years(s.horizon_years, lang), rate=_pct(s.discount_rate),
                         discounting=report.t(f"clv_m_{s.discounting}", lang)),
              report.t("clv_m_alive", lang), report.t("clv_m_tracking", lang), report.t("clv_m_unconverged", lang),
              report.say("clv_m_churn", lang, top=_pct(s.churn_top_value_share), threshold=_pct(s.churn_p_alive_below))]
    body = "".join(f"<li>{html.escape(item)}</li>" for item in items)
    return HTML(f"<ul>{body}</ul>")
