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
  (`compress`): a million customers with daily timestamps over a year compress to under
  200,000 rows, and the BG/NBD fit takes a few seconds.
- Parameters are optimised on the log scale with L-BFGS-B from deterministic starting
  values; BG/NBD, MBG/NBD and Gamma-Gamma use analytic gradients, Pareto/NBD central
  differences on its (accurate) log-likelihood. A fit that does not converge (optimiser
  failure, gradient not small, parameter at its bound, Hessian not positive definite) has
  `converged_ = False`, says why in `message_`, and warns (ConvergenceWarning).
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

import math
import warnings
from typing import Callable, Self

import numpy as np
import pandas as pd
from scipy import integrate, optimize, special
from scipy.special import betaln, gammaln, psi

__all__ = [
    "BetaGeo",
    "ModifiedBetaGeo",
    "ParetoNBD",
    "GammaGamma",
    "NotFittedError",
    "ConvergenceWarning",
    "compress",
    "customer_lifetime_value",
]

_LOG_BOUND = 30.0  # parameters are searched in [e^-30, e^30]
_GRAD_TOL = 1e-5  # max |d mean-NLL / d log(param)| accepted as converged
_SERIES_MAX_TERMS = 20_000
_CF_MAX_ITER = 20_000
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

    A lexsort and one pass over the sorted rows: several times faster than np.unique(axis=0).
    """
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
    """log(1 - exp(d)) for d <= 0, accurate on both sides of -log 2 (Maechler 2012); -inf at d = 0."""
    d = np.minimum(d, 0.0)
    with np.errstate(divide="ignore"):
        return np.where(d > -math.log(2.0), np.log(-np.expm1(d)), np.log1p(-np.exp(d)))


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
    split near the density's bulk, log((a+bp-1)/a), and at the step, log(k u).
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

    cuts = sorted({c for c in (math.log((a + bp - 1.0) / a) if a + bp > 1 else 0.0, math.log(k * u) if k * u > 0 else 0.0) if c > 0})
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
    for i in np.flatnonzero(~ok.reshape(-1)):
        flat[i] = _future_purchases_quad(a, bp.flat[i], k.flat[i], t.flat[i] / scale.flat[i])
    return out


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


def _bg_loglik(params, x, tx, age, *, shift: int, grad: bool):
    """Per-customer log-likelihood of the BG/NBD (shift=0) or MBG/NBD (shift=1), and its gradient.

    FHL (2005) eq. (6), in the form
        LL = A + D + log( (alpha+T)^-(r+x) + [x>0] a/(b+x-1) (alpha+t_x)^-(r+x) )
        A  = log Gamma(r+x) - log Gamma(r) + r log alpha,   D = log B(a, b+x) - log B(a, b)
    (B(a+1, b+x-1)/B(a, b+x) = a/(b+x-1)). Batislam et al. (2007) MBG/NBD: b+x -> b+x+1
    in D and in the ratio, and the second term applies for every x (drop-out at time 0).
    The gradient is with respect to (r, alpha, a, b), shape (n, 4).
    """
    r, alpha, a, b = params
    k = r + x
    bx = b + x + shift
    A = gammaln(k) - gammaln(r) + r * math.log(alpha)
    D = betaln(a, bx) - betaln(a, b)
    l1 = -k * np.log(alpha + age)
    second = (x > 0) if shift == 0 else np.ones(x.shape, dtype=bool)
    denom = np.where(second, bx - 1.0, 1.0)
    with np.errstate(divide="ignore"):
        l2 = np.where(second, math.log(a) - np.log(denom) - k * np.log(alpha + tx), -np.inf)
    lse = np.logaddexp(l1, l2)
    ll = A + D + lse
    if not grad:
        return ll, None
    w2 = np.exp(l2 - lse)  # posterior weight of "dropped out after the last purchase"
    w1 = 1.0 - w2
    g = np.empty((x.size, 4))
    g[:, 0] = psi(k) - psi(r) + math.log(alpha) - w1 * np.log(alpha + age) - w2 * np.log(alpha + tx)
    g[:, 1] = r / alpha - k * (w1 / (alpha + age) + w2 / (alpha + tx))
    dd_a = psi(a + b) - psi(a + bx)
    dd_b = psi(bx) - psi(a + bx) - psi(b) + psi(a + b)
    g[:, 2] = dd_a + w2 / a
    g[:, 3] = dd_b - w2 / denom
    return ll, g


def _pnbd_log_g(alpha, s, beta, m, t):
    """log G(t), where G(t_x) - G(T) = (r+s+x) * integral_{t_x}^T (alpha+u)^-(r+x) (beta+u)^-(s+1) du.

    The FHL (2005) note writes G(t) = 2F1(r+s+x, s+1; r+s+x+1; (alpha-beta)/(alpha+t)) /
    (alpha+t)^(r+s+x) when alpha >= beta, and 2F1(r+s+x, r+x; r+s+x+1; (beta-alpha)/(beta+t)) /
    (beta+t)^(r+s+x) otherwise. Euler's transformation turns these into
        alpha >= beta: (alpha+t)^-m (beta+t)^-s 2F1(1, m; m+s+1; (alpha-beta)/(alpha+t))
        alpha <  beta: (alpha+t)^(1-m) (beta+t)^-(s+1) 2F1(1, s+1; m+s+1; (beta-alpha)/(beta+t))
    with m = r + x (Euler's transformation, DLMF 15.8.1), computed in log space (`_log_hyp2f1_unit`).
    """
    if alpha >= beta:
        z = (alpha - beta) / (alpha + t)
        return -m * np.log(alpha + t) - s * np.log(beta + t) + _log_hyp2f1_unit(m, m + s + 1.0, z)
    z = (beta - alpha) / (beta + t)
    return (1.0 - m) * np.log(alpha + t) - (s + 1.0) * np.log(beta + t) + _log_hyp2f1_unit(s + 1.0, m + s + 1.0, z)


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


def _pnbd_log_terms(params, x, tx, age):
    """The two log terms of the Pareto/NBD likelihood: alive at T, and died in (t_x, T].

    FHL (2005) note, the Pareto/NBD likelihood: L = Gamma(r+x) alpha^r beta^s / Gamma(r) *
    [ (alpha+T)^-(r+x) (beta+T)^-s + s/(r+s+x) (G(t_x) - G(T)) ]. Returns (const, l_alive, l_dead)
    with LL = const + logaddexp(l_alive, l_dead). G(t_x) - G(T) is (r+s+x) times an integral; for
    the rare rows whose 2F1 argument at t_x is within 1e-4 of 1 (alpha/beta or beta/alpha above
    ~1e4 with a small t_x), that integral is computed by quadrature instead.
    """
    r, alpha, s, beta = params
    m = r + x
    const = gammaln(m) - gammaln(r) + r * math.log(alpha) + s * math.log(beta)
    l_alive = -m * np.log(alpha + age) - s * np.log(beta + age)
    z_tx = abs(alpha - beta) / (max(alpha, beta) + tx)
    far = z_tx > _CF_Z_MAX
    l_dead = np.empty(x.shape)
    near = ~far
    g_tx = _pnbd_log_g(alpha, s, beta, m[near], tx[near])
    g_t = _pnbd_log_g(alpha, s, beta, m[near], age[near])
    l_dead[near] = math.log(s) - np.log(m[near] + s) + g_tx + _log1mexp(g_t - g_tx)
    for i in np.flatnonzero(far):
        l_dead[i] = math.log(s) + _pnbd_log_integral_quad(alpha, s, beta, float(m[i]), float(tx[i]), float(age[i]))
    return const, l_alive, l_dead


def _pnbd_loglik(params, x, tx, age, *, grad: bool = False):
    const, l_alive, l_dead = _pnbd_log_terms(params, x, tx, age)
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

    def _objective(self, data, w):
        """Mean penalised negative log-likelihood over log-parameters, and its gradient."""
        total = w.sum()
        pen = self.penalizer
        scale2 = self._penalty_scale(data) ** 2

        def value(theta):
            params = np.exp(theta)
            ll, _ = self._loglik(params, *data, grad=False)
            f = -(w @ ll) / total + pen * np.sum(scale2 * params**2)
            return f if np.isfinite(f) else np.inf

        def value_grad(theta):
            params = np.exp(theta)
            if self._analytic_gradient:
                ll, g = self._loglik(params, *data, grad=True)
                f = -(w @ ll) / total + pen * np.sum(scale2 * params**2)
                grad = -(w @ g) / total * params + 2.0 * pen * scale2 * params**2
            else:
                f = value(theta)
                grad = _central_gradient(value, theta, 1e-5)
            if not (np.isfinite(f) and np.all(np.isfinite(grad))):
                return np.inf, np.zeros_like(theta)
            return f, grad

        return value, value_grad

    def _run_fit(self, data, w, x0, n_customers: int) -> Self:
        value, value_grad = self._objective(data, w)
        theta0 = np.log(np.asarray(x0, dtype=float))
        bounds = [(-_LOG_BOUND, _LOG_BOUND)] * theta0.size
        res = optimize.minimize(
            value_grad, theta0, jac=True, method="L-BFGS-B", bounds=bounds,
            options={"maxiter": 5000, "maxfun": 20000, "ftol": 1e-14, "gtol": 1e-9, "maxcor": 20},
        )
        theta = res.x
        _, grad = value_grad(theta)
        params = np.exp(theta)
        ll, _ = self._loglik(params, *data, grad=False)
        problems = []
        if not res.success:
            problems.append(f"optimiser: {res.message}")
        gmax = float(np.max(np.abs(grad)))
        if not gmax <= _GRAD_TOL:
            problems.append(f"gradient not small (max |d mean NLL / d log param| = {gmax:.2e} > {_GRAD_TOL:g})")
        at_bound = [n for n, t in zip(self._param_names, theta) if abs(t) >= _LOG_BOUND - 1e-6]
        if at_bound:
            problems.append(f"parameter(s) {', '.join(at_bound)} at the search bound e^±{_LOG_BOUND:g}: the data do not identify them")
        self.params_ = {n: float(v) for n, v in zip(self._param_names, params)}
        self.log_likelihood_ = float(w @ ll)
        self.n_customers_ = int(n_customers)
        self.n_unique_ = int(w.size)
        self.n_iter_ = int(res.nit)
        self.gradient_max_ = gmax
        cov, se_note = self._covariance(data, w, params)
        if se_note:  # a flat or curved-the-wrong-way optimum: the parameters are not identified
            problems.append(se_note)
        self.converged_ = not problems
        self.covariance_ = cov
        self.std_errors_ = {n: float(math.sqrt(cov[i, i])) if cov[i, i] >= 0 else float("nan") for i, n in enumerate(self._param_names)}
        self.message_ = "converged" if not problems else "; ".join(problems)
        if not self.converged_:
            warnings.warn(f"{self._model_name} fit did not converge: {self.message_}", ConvergenceWarning, stacklevel=3)
        return self

    def _covariance(self, data, w, params) -> tuple[np.ndarray, str]:
        """Inverse Hessian of the total penalised NLL in natural parameters (central differences)."""
        total = w.sum()
        pen = self.penalizer
        scale2 = self._penalty_scale(data) ** 2

        def nll(p):
            ll, _ = self._loglik(p, *data, grad=False)
            return -(w @ ll) + total * pen * np.sum(scale2 * p**2)

        if self._analytic_gradient:
            def grad(p):
                ll, g = self._loglik(p, *data, grad=True)
                return -(w @ g) + 2.0 * total * pen * scale2 * p
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
        units of max(T)/10 -- the convention of lifetimes' `penalizer_coef`, which rescales time
        that way before fitting. This makes the penalty independent of the caller's time unit.
        `log_likelihood_` is always the unpenalised total log-likelihood.
        """
        x, tx, age = _check_rft(frequency, recency, T)
        w = _check_weights(weights, x.size)
        ux, utx, uage, uw = _compress_weighted(x, tx, age, w)
        return self._run_fit((ux, utx, uage), uw, self._start(ux, uage, uw), x.size)

    _rate_params: tuple[int, ...] = (1,)

    def _penalty_scale(self, data) -> np.ndarray:
        age = data[2]
        unit = age.max() / 10.0 if age.max() > 0 else 1.0  # lifetimes' _scale_time: T -> 10 T / max(T)
        scale = np.ones(len(self._param_names))
        scale[list(self._rate_params)] = 1.0 / unit
        return scale

    @staticmethod
    def _mean_age(age, w) -> float:
        mean_age = (w @ age) / w.sum()
        return float(mean_age) if mean_age > 0 else 1.0

    @classmethod
    def _rate_start(cls, x, age, w) -> float:
        """Deterministic start for alpha: the inverse of the pooled repeat-purchase rate."""
        total_age = w @ age
        rate = (w @ x) / total_age if total_age > 0 else 0.0
        return 1.0 / rate if rate > 0 else cls._mean_age(age, w)


class _BetaGeoBase(_PurchaseModel):
    _param_names = ("r", "alpha", "a", "b")
    _shift = 0

    def _loglik(self, params, x, tx, age, *, grad: bool):
        return _bg_loglik(params, x, tx, age, shift=self._shift, grad=grad)

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
    conditional expectation E[Y(t) | x, t_x, T]:
    - "discrete": monthly steps i = 1..ceil(12*horizon) ending at u_i = min(i/12, horizon) years,
      sum_i (E[Y(u_i)] - E[Y(u_{i-1})]) * spend / (1 + discount_rate)^u_i  (each month's
      purchases discounted at the month's end; i.e. a monthly rate (1+d)^(1/12) - 1);
    - "continuous": integral_0^horizon exp(-delta u) dE[Y(u)] * spend with
      delta = log(1 + discount_rate), computed as exp(-delta H) E[Y(H)] + delta int exp(-delta u)
      E[Y(u)] du by 48-point Gauss-Legendre quadrature.
    With discount_rate = 0 both equal E[Y(horizon)] * spend.
    """
    for name, fitted in (("purchase_model", purchase_model), ("spend_model", spend_model)):
        if not hasattr(fitted, "params_"):
            raise NotFittedError(f"{name} is not fitted yet: call fit() first")
    if not (math.isfinite(horizon) and horizon > 0):
        raise ValueError(f"horizon must be > 0 years, got {horizon!r}")
    if not (math.isfinite(discount_rate) and discount_rate > -1):
        raise ValueError(f"discount_rate must be an annual rate > -1, got {discount_rate!r}")
    if not (math.isfinite(periods_per_year) and periods_per_year > 0):
        raise ValueError(f"periods_per_year must be > 0 (model time units per year), got {periods_per_year!r}")
    if discounting not in ("discrete", "continuous"):
        raise ValueError(f"discounting must be 'discrete' or 'continuous', got {discounting!r}")
    x, tx, age = _check_rft(frequency, recency, T)
    spend = spend_model.expected_avg_spend(x, monetary_value)
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
    return value[inverse] * spend
