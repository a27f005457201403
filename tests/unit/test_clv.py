"""Unit tests for crmbook.clv: input checks, compression and weights, numerical robustness, CLV."""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import integrate
from scipy.special import betaln, gammaln, gammasgn

from crmbook import clv

DATA = Path(__file__).resolve().parents[1] / "data" / "cdnow"


@pytest.fixture(scope="module")
def cdnow() -> pd.DataFrame:
    return pd.read_csv(DATA / "cdnow_customers_summary_with_transactions.csv")


@pytest.fixture(scope="module")
def bgnbd(cdnow) -> clv.BetaGeo:
    return clv.BetaGeo().fit(cdnow["x"], cdnow["t_x"], cdnow["T"])


@pytest.fixture(scope="module")
def pareto(cdnow) -> clv.ParetoNBD:
    return clv.ParetoNBD().fit(cdnow["x"], cdnow["t_x"], cdnow["T"])


@pytest.fixture(scope="module")
def gamma_gamma(cdnow) -> clv.GammaGamma:
    buyers = cdnow[cdnow["x"] > 0]
    return clv.GammaGamma().fit(buyers["x"], buyers["zbar"])


def simulate_bgnbd(n, r, alpha, a, b, rng, holdout=0.0):
    """Seeded BG/NBD customers (weeks): T ~ U(1, 52), then `holdout` weeks of future purchases.

    lambda ~ Gamma(r, alpha), p ~ Beta(a, b); the customer makes J ~ Geometric(p) repeat purchases
    before dropping out. Of the N Poisson events in (0, T + holdout], the first min(N, J) happen.
    Returns x, t_x, T, the holdout purchases and whether the customer is still active at T (x < J).
    """
    T = rng.uniform(1.0, 52.0, n)
    lam = rng.gamma(r, 1.0 / alpha, n)
    J = rng.geometric(rng.beta(a, b, n))
    N = rng.poisson(lam * (T + holdout))
    kept = np.minimum(N, J)
    x = np.zeros(n)
    tx = np.zeros(n)
    future = np.zeros(n)
    for i in np.flatnonzero(kept):  # a few thousand customers with purchases
        times = np.sort(rng.uniform(0.0, T[i] + holdout, N[i]))[: kept[i]]
        past = times[times <= T[i]]
        x[i] = past.size
        tx[i] = past.max() if past.size else 0.0
        future[i] = kept[i] - past.size
    return x, tx, T, future, x < J


# ------------------------------------------------------------------------------ input validation


@pytest.mark.parametrize(
    ("frequency", "recency", "T", "message"),
    [
        ([1, -1], [1.0, 0.0], [5.0, 5.0], "frequency must be >= 0"),
        ([1, 2], [-1.0, 1.0], [5.0, 5.0], "recency must be >= 0"),
        ([1, 2], [1.0, 6.0], [5.0, 5.0], "recency must be <= T"),
        ([0, 2], [1.0, 2.0], [5.0, 5.0], "recency must be 0 when frequency is 0"),
        ([1.5, 2], [1.0, 2.0], [5.0, 5.0], "whole number"),
        ([1, 2], [1.0, np.nan], [5.0, 5.0], "recency must be finite"),
        ([1, 2], [1.0, 2.0], [5.0, -5.0], "T must be >= 0"),
        ([1, 2], [1.0], [5.0, 5.0], "same length"),
        ([], [], [], "no customers"),
        (["a", "b"], [1.0, 2.0], [5.0, 5.0], "frequency must be numeric"),
    ],
)
def test_invalid_summary_is_rejected_with_a_clear_message(frequency, recency, T, message):
    for call in (
        lambda: clv.BetaGeo().fit(frequency, recency, T),
        lambda: clv.ParetoNBD().fit(frequency, recency, T),
        lambda: clv.compress(frequency, recency, T),
    ):
        with pytest.raises(ValueError, match=message):
            call()


def test_error_names_the_first_bad_row():
    with pytest.raises(ValueError, match=r"first at row 2 \(recency 7\.0 > T 5\.0\)"):
        clv.BetaGeo().fit([1, 1, 1], [1.0, 2.0, 7.0], [5.0, 5.0, 5.0])


def test_prediction_inputs_are_checked_too(bgnbd):
    with pytest.raises(ValueError, match="recency must be <= T"):
        bgnbd.expected_purchases(10, [1], [9.0], [5.0])
    with pytest.raises(ValueError, match="t must be >= 0"):
        bgnbd.expected_purchases(-1, [1], [1.0], [5.0])
    with pytest.raises(ValueError, match="n must be whole numbers"):
        bgnbd.prob_n_purchases([0.5], 10)


def test_weights_and_penalizer_are_checked():
    with pytest.raises(ValueError, match="weights must be >= 0"):
        clv.BetaGeo().fit([1, 0], [1.0, 0.0], [5.0, 5.0], weights=[1, -1])
    with pytest.raises(ValueError, match="one value per customer"):
        clv.BetaGeo().fit([1, 0], [1.0, 0.0], [5.0, 5.0], weights=[1])
    with pytest.raises(ValueError, match="penalizer"):
        clv.BetaGeo(penalizer=-0.1)


def test_gamma_gamma_rejects_non_repeat_buyers():
    with pytest.raises(ValueError, match="repeat buyers only"):
        clv.GammaGamma().fit([2, 0, 1], [10.0, 0.0, 5.0])
    with pytest.raises(ValueError, match="monetary_value must be > 0"):
        clv.GammaGamma().fit([2, 1], [10.0, -5.0])


def test_models_must_be_fitted_first():
    with pytest.raises(clv.NotFittedError, match="call fit"):
        clv.BetaGeo().p_alive([1], [1.0], [2.0])
    with pytest.raises(clv.NotFittedError):
        clv.GammaGamma().summary()


# ------------------------------------------------------------------------- compression, weights


def test_compress_round_trips(cdnow):
    rows, inverse = clv.compress(cdnow["x"], cdnow["t_x"], cdnow["T"])
    assert list(rows.columns) == ["frequency", "recency", "T", "weight"]
    assert rows["weight"].sum() == len(cdnow) and len(rows) < len(cdnow)
    back = rows.iloc[inverse]
    assert np.array_equal(back["frequency"].to_numpy(), cdnow["x"].to_numpy(float))
    assert np.array_equal(back["recency"].to_numpy(), cdnow["t_x"].to_numpy(float))
    assert np.array_equal(back["T"].to_numpy(), cdnow["T"].to_numpy(float))


@pytest.mark.parametrize(
    "columns",
    [
        # times in whole days / 7 (a summary in weeks): the codes' range is small, a dense table marks them
        lambda rng, n: (rng.integers(0, 8, n).astype(float), rng.integers(0, 60, n) / 7, rng.integers(0, 60, n) / 7),
        # continuous times: a wide range, the combined key is hashed
        lambda rng, n: (rng.integers(0, 3, n).astype(float), rng.random(n), np.round(rng.random(n), 3)),
        # five columns of nearly unique values: the key would overflow 63 bits, the lexsort is used
        lambda rng, n: tuple(rng.random(n) for _ in range(5)),
    ],
    ids=["dense", "hashed", "lexsort"],
)
def test_unique_rows_match_numpy(columns):
    """Unique rows in lexicographic order and the inverse index, as numpy's np.unique(axis=0) gives them."""
    rng = np.random.default_rng(3)
    data = columns(rng, 20_000)
    data = tuple(np.r_[c, c[:500]] for c in data)  # some rows certainly repeat
    uniques, inverse = clv._unique_rows(*data)
    expected, expected_inverse = np.unique(np.column_stack(data), axis=0, return_inverse=True)
    assert np.array_equal(np.column_stack(uniques), expected)
    assert np.array_equal(inverse, expected_inverse.ravel())


@pytest.mark.parametrize("shift", [0, 1])
@pytest.mark.parametrize("times", ["weeks", "continuous"])
def test_weighted_likelihood_sums_the_per_customer_one(cdnow, shift, times):
    """The fitting path's summed log-likelihood equals the per-customer one (FHL eq. 6, Batislam et al.)
    times the weights, and its gradient equals central differences of that sum."""
    rng = np.random.default_rng(5)
    x, tx, age = (cdnow[c].to_numpy(float) for c in ("x", "t_x", "T"))
    if times == "weeks":  # whole days in weeks: few distinct times, the logs are taken once per time
        tx, age = np.round(tx * 7) / 7, np.round(age * 7) / 7
    w = rng.integers(1, 5, x.size).astype(float)
    order = np.lexsort((age, tx, x))
    x, tx, age, w = x[order], tx[order], age[order], w[order]
    total = clv._bg_weighted_loglik(x, tx, age, w, shift=shift)
    for params in ([0.243, 4.414, 0.793, 2.426], [2.0, 0.5, 3.0, 0.2], [0.525, 6.183, 0.891, 1.614]):
        p = np.array(params)
        ll, grad = total(p, True)
        per_customer, _ = clv._bg_loglik(p, x, tx, age, shift=shift, grad=False)
        assert ll == pytest.approx(float(np.sum(w * per_customer)), rel=1e-12)
        assert total(p, False)[0] == ll
        for j in range(4):
            h = 1e-6 * p[j]
            up, down = p.copy(), p.copy()
            up[j] += h
            down[j] -= h
            numeric = (np.sum(w * clv._bg_loglik(up, x, tx, age, shift=shift, grad=False)[0])
                       - np.sum(w * clv._bg_loglik(down, x, tx, age, shift=shift, grad=False)[0])) / (2 * h)
            assert grad[j] == pytest.approx(numeric, rel=1e-6, abs=1e-4)


@pytest.mark.parametrize("model", [clv.BetaGeo, clv.ModifiedBetaGeo, clv.ParetoNBD])
def test_compressed_weighted_fit_equals_unweighted_fit(cdnow, model):
    full = model().fit(cdnow["x"], cdnow["t_x"], cdnow["T"])
    rows, _ = clv.compress(cdnow["x"], cdnow["t_x"], cdnow["T"])
    weighted = model().fit(rows["frequency"], rows["recency"], rows["T"], weights=rows["weight"])
    for name in full.params_:
        assert weighted.params_[name] == pytest.approx(full.params_[name], rel=1e-8)
        assert weighted.std_errors_[name] == pytest.approx(full.std_errors_[name], rel=1e-6)
    assert weighted.log_likelihood_ == pytest.approx(full.log_likelihood_, abs=1e-8)


def test_integer_weights_equal_repeated_rows(cdnow):
    sub = cdnow.iloc[:600]
    counts = np.arange(600) % 3 + 1
    weighted = clv.BetaGeo().fit(sub["x"], sub["t_x"], sub["T"], weights=counts)
    repeated = sub.loc[sub.index.repeat(counts)]
    plain = clv.BetaGeo().fit(repeated["x"], repeated["t_x"], repeated["T"])
    for name in plain.params_:
        assert weighted.params_[name] == pytest.approx(plain.params_[name], rel=1e-8)
    assert weighted.log_likelihood_ == pytest.approx(plain.log_likelihood_, rel=1e-12)


def test_gamma_gamma_weights(cdnow):
    buyers = cdnow[cdnow["x"] > 0]
    plain = clv.GammaGamma().fit(buyers["x"], buyers["zbar"])
    doubled = clv.GammaGamma().fit(buyers["x"], buyers["zbar"], weights=np.full(len(buyers), 2.0))
    for name in plain.params_:
        assert doubled.params_[name] == pytest.approx(plain.params_[name], rel=1e-8)
    assert doubled.log_likelihood_ == pytest.approx(2 * plain.log_likelihood_, rel=1e-12)


def test_fits_are_deterministic(cdnow):
    one = clv.ParetoNBD().fit(cdnow["x"], cdnow["t_x"], cdnow["T"])
    two = clv.ParetoNBD().fit(cdnow["x"], cdnow["t_x"], cdnow["T"])
    assert one.params_ == two.params_ and one.std_errors_ == two.std_errors_


def test_time_unit_is_the_callers(cdnow, bgnbd):
    """Fitting in days instead of weeks scales alpha by 7 and leaves the shapes alone; the penalty
    is defined on rescaled time, so it does not depend on the unit either."""
    days = clv.BetaGeo().fit(cdnow["x"], cdnow["t_x"] * 7, cdnow["T"] * 7)
    assert days.params_["alpha"] == pytest.approx(7 * bgnbd.params_["alpha"], rel=1e-6)
    for name in ("r", "a", "b"):
        assert days.params_[name] == pytest.approx(bgnbd.params_[name], rel=1e-6)
    weeks_pen = clv.BetaGeo(penalizer=0.01).fit(cdnow["x"], cdnow["t_x"], cdnow["T"])
    days_pen = clv.BetaGeo(penalizer=0.01).fit(cdnow["x"], cdnow["t_x"] * 7, cdnow["T"] * 7)
    assert days_pen.params_["a"] == pytest.approx(weeks_pen.params_["a"], rel=1e-6)
    assert days.expected_purchases(7 * 39, 2, 7 * 30.43, 7 * 38.86) == pytest.approx(
        bgnbd.expected_purchases(39, 2, 30.43, 38.86), rel=1e-6
    )


@pytest.mark.parametrize(
    ("loglik", "params", "data"),
    [
        (lambda p, d, g: clv._bg_loglik(p, *d, shift=0, grad=g), [0.243, 4.414, 0.793, 2.426], "rft"),
        (lambda p, d, g: clv._bg_loglik(p, *d, shift=1, grad=g), [0.525, 6.183, 0.891, 1.614], "rft"),
        (lambda p, d, g: clv._bg_loglik(p, *d, shift=0, grad=g), [2.0, 0.5, 3.0, 0.2], "rft"),
        (lambda p, d, g: clv._gg_loglik(p, *d, grad=g), [6.25, 3.74, 15.44], "spend"),
    ],
)
def test_analytic_gradient_matches_finite_differences(cdnow, loglik, params, data):
    if data == "rft":
        d = tuple(cdnow[c].to_numpy(float) for c in ("x", "t_x", "T"))
    else:
        buyers = cdnow[cdnow["x"] > 0]
        d = (buyers["x"].to_numpy(float), buyers["zbar"].to_numpy(float))
    p = np.array(params)
    _, grad = loglik(p, d, True)
    analytic = grad.sum(axis=0)
    for j in range(p.size):
        h = 1e-6 * p[j]
        up, down = p.copy(), p.copy()
        up[j] += h
        down[j] -= h
        numeric = (loglik(up, d, False)[0].sum() - loglik(down, d, False)[0].sum()) / (2 * h)
        assert analytic[j] == pytest.approx(numeric, rel=1e-6, abs=1e-4)


def test_unidentified_fit_is_flagged_not_silent():
    """With no repeat purchase at all, r -> 0 and alpha -> infinity: the fit must say so."""
    with pytest.warns(clv.ConvergenceWarning, match="did not converge"):
        model = clv.BetaGeo().fit(np.zeros(50), np.zeros(50), np.linspace(1, 40, 50))
    assert model.converged_ is False
    assert model.message_ != "converged"


def test_summary_layout(bgnbd, gamma_gamma):
    table = bgnbd.summary()
    assert list(table.columns) == ["model", "param", "estimate", "std_err"]
    assert table["param"].tolist() == ["r", "alpha", "a", "b"]
    assert (table["model"] == "BG/NBD").all()
    assert gamma_gamma.summary()["param"].tolist() == ["p", "q", "gamma"]


# ------------------------------------------------------------------------- numerical robustness


def pareto_integral_by_quadrature(r, alpha, s, beta, x, t_x, T):
    """log of int_{t_x}^T (alpha+u)^-(r+x) (beta+u)^-(s+1) du, on geometric sub-intervals."""
    m = r + x
    shift = -m * math.log(alpha + t_x) - (s + 1) * math.log(beta + t_x)

    def f(u):
        return math.exp(-m * math.log(alpha + u) - (s + 1) * math.log(beta + u) - shift)

    edges = [0.0, *np.geomspace(1e-9 * (T - t_x), T - t_x, 60)]
    total = sum(integrate.quad(f, t_x + lo, t_x + hi, epsabs=0, epsrel=1e-13, limit=200)[0] for lo, hi in zip(edges[:-1], edges[1:]))
    return math.log(total) + shift


@pytest.mark.parametrize(
    ("r", "alpha", "s", "beta", "x", "t_x", "T"),
    [
        (0.55, 10.6, 0.61, 11.7, 2, 30.43, 38.86),  # CDNOW-like, alpha < beta
        (0.5, 1000.0, 0.6, 0.001, 0, 0.0, 39.0),  # alpha >> beta, z = 1 - 1e-6
        (0.5, 0.001, 0.6, 1000.0, 0, 0.0, 39.0),  # beta >> alpha
        (5.0, 10.0, 5.0, 0.1, 3000, 5.0, 1000.0),  # many purchases
        (0.05, 0.1, 0.05, 11.0, 300, 30.0, 39.0),
        (2.0, 3.0, 0.3, 3.0, 10, 5.0, 100_000.0),  # alpha == beta, very long T
    ],
)
def test_pareto_hypergeometric_term_matches_quadrature(r, alpha, s, beta, x, t_x, T):
    m = np.array([r + x])
    g_tx = clv._pnbd_log_g(alpha, s, beta, m, np.array([t_x]))
    g_T = clv._pnbd_log_g(alpha, s, beta, m, np.array([T]))
    ours = (g_tx + clv._log1mexp(g_T - g_tx) - np.log(r + x + s))[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        truth = pareto_integral_by_quadrature(r, alpha, s, beta, x, t_x, T)
    assert ours == pytest.approx(truth, abs=1e-8)


def test_pareto_is_finite_on_extreme_inputs(pareto):
    x = np.array([0, 1, 50, 1_000, 10_000, 100_000, 5, 5])
    T = np.array([1e-6, 1e5, 1e5, 1e5, 2e5, 1e6, 1e-3, 1e7])
    t_x = np.array([0.0, 1.0, 1e5, 5.0, 2e5, 9e5, 1e-3, 1e-3])
    params = np.array([pareto.params_[k] for k in ("r", "alpha", "s", "beta")])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow or invalid-value warnings either
        ll, _ = clv._pnbd_loglik(params, x.astype(float), t_x, T)
        alive = pareto.p_alive(x, t_x, T)
        expected = pareto.expected_purchases(52.0, x, t_x, T)
    assert np.all(np.isfinite(ll))  # a density in the purchase times: may exceed 1 for heavy buyers
    assert np.all((alive >= 0) & (alive <= 1))
    assert np.all(np.isfinite(expected)) and np.all(expected >= 0)
    for extreme in ((0.5, 1e4, 0.6, 1e-3), (0.5, 1e-3, 0.6, 1e4), (50.0, 1.0, 50.0, 1.0)):
        ll, _ = clv._pnbd_loglik(np.array(extreme), x.astype(float), t_x, T)
        assert np.all(np.isfinite(ll))


def test_pareto_fit_on_heavy_buyers_converges():
    rng = np.random.default_rng(3)
    n = 3_000
    T = rng.uniform(50, 5_000, n)
    lam = rng.gamma(4.0, 1.0 / 2.0, n)  # ~2 purchases per unit: thousands per customer
    life = np.minimum(rng.exponential(1.0 / rng.gamma(2.0, 1.0 / 500.0, n)), T)
    x = rng.poisson(lam * life).astype(float)
    t_x = np.where(x > 0, life * rng.beta(np.maximum(x, 1), 1), 0.0)
    model = clv.ParetoNBD().fit(x, t_x, T)
    assert model.converged_, model.message_
    assert x.max() > 2_000
    assert model.params_["r"] == pytest.approx(4.0, rel=0.1)
    assert model.params_["alpha"] == pytest.approx(2.0, rel=0.1)


def bg_future_by_quadrature(t, a, bp, k, scale):
    """E_p[(1 - (1 + p t/scale)^-k) / p], p ~ Beta(a, bp), on geometric sub-intervals of (0, 1/2]
    from each end (the upper half in q = 1 - p, so that (1-p)^(bp-1) is exact near p = 1)."""
    u = t / scale
    log_b = betaln(a, bp)

    def g(p, q):  # q = 1 - p, both passed exactly
        return math.exp((a - 1) * math.log(p) + (bp - 1) * math.log(q) - log_b) * -math.expm1(-k * math.log1p(p * u)) / p

    edges = [0.0, *np.geomspace(1e-300, 0.5, 80)]
    low = sum(integrate.quad(lambda p: g(p, 1 - p), lo, hi, epsabs=0, epsrel=1e-12, limit=200)[0] for lo, hi in zip(edges[:-1], edges[1:]))
    high = sum(integrate.quad(lambda q: g(1 - q, q), lo, hi, epsabs=0, epsrel=1e-12, limit=200)[0] for lo, hi in zip(edges[:-1], edges[1:]))
    return low + high


@pytest.mark.parametrize(
    ("t", "a", "bp", "k", "scale"),
    [
        (39.0, 0.793, 4.426, 2.243, 43.27),  # CDNOW customer x = 2
        (39.0, 1.0, 2.5, 0.3, 10.0),  # a = 1 exactly (removable 0/0 in the paper's formula)
        (1_000.0, 5.0, 300.1, 303.0, 40.0),  # heavy buyer, long horizon
        (1e5, 20.0, 50.1, 3.0, 0.1),  # argument of 2F1 within 1e-6 of 1: quadrature fallback
        (1e5, 0.79, 2.4, 0.24, 4.4),
        (0.01, 0.1, 0.1, 0.05, 100.0),
        (39.0, 0.3, 0.5, 0.2, 4.0),  # a + b < 1, x = 0: the 2F1's c = a + b - 1 is negative
        (39.0, 0.3, 0.7, 0.2, 4.0),  # c = 0 exactly: the series has a pole, quadrature takes over
    ],
)
def test_bg_expectation_matches_quadrature(t, a, bp, k, scale):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = clv._future_purchases(t, a, bp, k, scale)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        truth = bg_future_by_quadrature(t, a, bp, k, scale)
    assert float(ours) == pytest.approx(truth, rel=1e-9)


@pytest.mark.parametrize("model", [clv.BetaGeo, clv.ModifiedBetaGeo, clv.ParetoNBD])
def test_prob_n_purchases_is_a_distribution_with_the_right_mean(cdnow, model):
    fitted = model().fit(cdnow["x"], cdnow["t_x"], cdnow["T"])
    n = np.arange(400)
    for t in (5.0, 39.0):
        probs = fitted.prob_n_purchases(n, t)
        assert np.all(probs >= 0)
        assert probs.sum() == pytest.approx(1.0, abs=1e-9)
        assert (n * probs).sum() == pytest.approx(float(fitted.expected_purchases_new(t)), rel=1e-8)


@pytest.mark.parametrize("model", [clv.BetaGeo, clv.ModifiedBetaGeo])
def test_new_customer_is_the_x0_T0_case(cdnow, model):
    fitted = model().fit(cdnow["x"], cdnow["t_x"], cdnow["T"])
    t = np.array([1.0, 10.0, 100.0])
    assert fitted.expected_purchases(t, 0, 0.0, 0.0) == pytest.approx(fitted.expected_purchases_new(t), rel=1e-12)


def test_conditional_expectation_matches_simulated_holdout():
    """Ground truth from simulation: summed over customers, E[Y(t) | x, t_x, T] must match the
    purchases the simulated customers actually make in the next t weeks, and mean P(alive)
    the share still active (law of total expectation; true parameters, seeded)."""
    rng = np.random.default_rng(2024)
    r, alpha, a, b = 0.243, 4.414, 0.793, 2.426
    x, t_x, T, future, active = simulate_bgnbd(40_000, r, alpha, a, b, rng, holdout=39.0)
    model = clv.BetaGeo()
    model.params_ = {"r": r, "alpha": alpha, "a": a, "b": b}
    predicted = model.expected_purchases(39.0, x, t_x, T).sum()
    assert predicted == pytest.approx(future.sum(), rel=0.04)
    buyers = x > 0  # P(alive) = 1 for x = 0 by construction; check the others
    alive = model.p_alive(x[buyers], t_x[buyers], T[buyers])
    assert alive.mean() == pytest.approx(active[buyers].mean(), abs=0.01)


# --------------------------------------------------------------------------------------- CLV


def test_clv_without_discount_is_expected_purchases_times_spend(cdnow, bgnbd, gamma_gamma):
    sample = cdnow.iloc[:300]
    spend = gamma_gamma.expected_avg_spend(sample["x"], sample["zbar"])
    purchases = bgnbd.expected_purchases(2 * 52.0, sample["x"], sample["t_x"], sample["T"])
    for discounting in ("discrete", "continuous"):
        value = clv.customer_lifetime_value(
            bgnbd, gamma_gamma, sample["x"], sample["t_x"], sample["T"], sample["zbar"],
            horizon=2.0, discount_rate=0.0, periods_per_year=52.0, discounting=discounting,
        )
        assert value == pytest.approx(purchases * spend, rel=1e-12)


def test_clv_continuous_close_to_discrete_for_a_small_rate(cdnow, bgnbd, gamma_gamma):
    kwargs = dict(horizon=3.0, discount_rate=0.01, periods_per_year=52.18)
    args = (bgnbd, gamma_gamma, cdnow["x"], cdnow["t_x"], cdnow["T"], cdnow["zbar"])
    discrete = clv.customer_lifetime_value(*args, **kwargs)
    continuous = clv.customer_lifetime_value(*args, **kwargs, discounting="continuous")
    undiscounted = clv.customer_lifetime_value(*args, **{**kwargs, "discount_rate": 0.0})
    assert continuous == pytest.approx(discrete, rel=1e-3)
    assert np.all(discrete < undiscounted) and np.all(continuous < undiscounted)
    # continuous discounting counts each purchase when it happens, not at the month's end
    assert np.all(continuous >= discrete)


def test_clv_checks_its_arguments(cdnow, bgnbd, gamma_gamma):
    args = (bgnbd, gamma_gamma, cdnow["x"], cdnow["t_x"], cdnow["T"], cdnow["zbar"])
    with pytest.raises(ValueError, match="discounting"):
        clv.customer_lifetime_value(*args, horizon=1.0, discount_rate=0.1, periods_per_year=52, discounting="annual")
    with pytest.raises(ValueError, match="horizon"):
        clv.customer_lifetime_value(*args, horizon=0.0, discount_rate=0.1, periods_per_year=52)
    with pytest.raises(clv.NotFittedError):
        clv.customer_lifetime_value(clv.BetaGeo(), *args[1:], horizon=1.0, discount_rate=0.1, periods_per_year=52)


def test_expected_avg_spend_shrinks_towards_the_population_mean(gamma_gamma):
    p, q, gamma = (gamma_gamma.params_[k] for k in ("p", "q", "gamma"))
    population = p * gamma / (q - 1)
    spend = gamma_gamma.expected_avg_spend([0, 1, 100], [0.0, 100.0, 100.0])
    assert spend[0] == pytest.approx(population)
    assert population < spend[1] < spend[2] < 100.0


# ------------------------------------------------- shortcuts at scale give the row-by-row values


def _summary_rows(n=600, seed=3):
    """(x, t_x, T) in whole weeks, as customer summaries have them: many repeats of few values."""
    rng = np.random.default_rng(seed)
    T = rng.integers(1, 80, n).astype(float)
    x = rng.poisson(2.0, n).astype(float)
    t_x = np.where(x > 0, np.floor(rng.uniform(0, 1, n) * (T + 1)), 0.0)
    return x, np.minimum(t_x, T), T


@pytest.mark.parametrize("params", [(0.55, 10.6, 0.61, 11.7), (0.89, 11.3, 384.0, 1.08e6), (0.5, 1e4, 0.6, 1e-3),
                                    (0.5, 1e-3, 0.6, 1e4), (2.0, 3.0, 0.3, 3.0)])
def test_pareto_terms_on_distinct_pairs_equal_the_row_by_row_values(params):
    """G is computed once per distinct (x, t) and the x-only terms once per x: bit for bit what
    each row gives on its own, including rows that fall back to quadrature."""
    x, t_x, T = _summary_rows()
    params = np.array(params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        together = clv._pnbd_log_terms(params, x, t_x, T)
        alone = [clv._pnbd_log_terms(params, x[i:i + 1], t_x[i:i + 1], T[i:i + 1]) for i in range(x.size)]
    for k in range(3):
        np.testing.assert_array_equal(together[k], np.concatenate([a[k] for a in alone]))


def test_pareto_fit_uses_the_same_likelihood_as_the_rows(cdnow):
    model = clv.ParetoNBD()
    x, t_x, T = (cdnow[c].to_numpy(float) for c in ("x", "t_x", "T"))
    params = np.array([0.55, 10.6, 0.61, 11.7])
    w = np.arange(1, x.size + 1, dtype=float)
    total, _ = model._weighted_loglik((x, t_x, T), w)(params, False)
    ll, _ = clv._pnbd_loglik(params, x, t_x, T)
    assert total == float(clv._dot(w, ll))


def test_gamma_gamma_weighted_loglik_equals_the_sum_of_the_rows(cdnow):
    buyers = cdnow[cdnow["x"] > 0]
    x, m = buyers["x"].to_numpy(float), buyers["zbar"].to_numpy(float)
    w = np.linspace(0.5, 3.0, x.size)
    total = clv._gg_weighted_loglik(x, m, w)
    for params in (np.array([6.25, 3.74, 15.44]), np.array([0.3, 1.2, 500.0])):
        ll, g = clv._gg_loglik(params, x, m, grad=True)
        value, grad = total(params, True)
        assert value == float(clv._dot(w, ll)) and total(params, False)[0] == value
        np.testing.assert_array_equal(grad, clv._dot(w, g))


def test_log1mexp_evaluates_each_side_as_before():
    d = np.concatenate([-np.geomspace(1e-300, 800, 2001), [0.0, -0.0, -math.log(2.0), -np.inf, np.nan, 1.0]])
    with np.errstate(divide="ignore", invalid="ignore"):
        clipped = np.minimum(d, 0.0)
        reference = np.where(clipped > -math.log(2.0), np.log(-np.expm1(clipped)), np.log1p(-np.exp(clipped)))
        np.testing.assert_array_equal(clv._log1mexp(d), reference)
        for value in (-1e-3, -0.5, -math.log(2.0), -3.0, 0.0):  # scalars take the same sides
            assert clv._log1mexp(np.float64(value)) == np.log(-np.expm1(value)) if value > -math.log(2.0) \
                else clv._log1mexp(np.float64(value)) == np.log1p(-np.exp(value))


def _near_one_reference(b, c, log_delta, max_terms=400):
    """`_log_hyp2f1_near_one` in its earlier form, which summed the series over the full arrays at
    every step; the compact loop must give the same values and the same verdicts."""
    delta = np.exp(log_delta)
    g = c - 1.0 - b
    ok = (delta < 0.1) & (b * delta < 0.5) & (np.abs(g - np.round(g)) > 1e-3) & (g < max_terms - 50)
    series, term, biggest, active = np.ones(b.size), np.ones(b.size), np.ones(b.size), ok.copy()
    n = 0
    while active.any() and n < max_terms:
        idx = np.flatnonzero(active)
        term[idx] *= (b[idx] + n) * delta[idx] / (1.0 - g[idx] + n)
        series[idx] += term[idx]
        biggest[idx] = np.maximum(biggest[idx], np.abs(term[idx]))
        n += 1
        denominator = 1.0 - g[idx] + n
        rho = (b[idx] + n) * delta[idx] / np.where(denominator > 0, denominator, 1.0)
        done = (denominator > 0) & (rho < 1.0) & (np.abs(term[idx]) * rho <= 1e-17 * (1.0 - rho) * np.abs(series[idx]))
        active[idx[done]] = False
    ok &= ~active & (series > 0) & (biggest * 1e-16 <= 1e-12 * np.abs(series))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_t1 = np.log(c - 1.0) - np.log(np.abs(g)) + np.log(np.abs(series))
        sign_t1 = np.sign(g)
        log_t2 = gammaln(c) + gammaln(-g) - gammaln(b) + g * log_delta + (1.0 - c) * np.log1p(-delta)
        sign_t2 = gammasgn(-g)
        hi, lo = np.maximum(log_t1, log_t2), np.minimum(log_t1, log_t2)
        sign_hi = np.where(log_t1 >= log_t2, sign_t1, sign_t2)
        same = sign_t1 == sign_t2
        ratio = lo - hi
        clipped = np.minimum(np.minimum(ratio, 0.0), 0.0)
        log1mexp = np.where(clipped > -math.log(2.0), np.log(-np.expm1(clipped)), np.log1p(-np.exp(clipped)))
        out = np.where(same, hi + np.log1p(np.exp(ratio)), hi + log1mexp)
    ok &= np.isfinite(out) & (sign_hi > 0) & (same | (ratio < math.log1p(-1e-8)))
    return np.where(ok, out, np.nan), ok


def test_near_one_series_compact_loop_gives_the_same_values():
    rng = np.random.default_rng(5)
    b = np.concatenate([rng.uniform(0.1, 400, 3000), rng.uniform(0.5, 3, 500)])
    c = b + 1.0 + np.concatenate([rng.uniform(0.01, 60, 3000), rng.uniform(-0.99, 3, 500)])
    log_delta = np.log(np.concatenate([rng.uniform(1e-7, 2e-3, 3000), rng.uniform(1e-4, 0.2, 500)]))
    value, ok = clv._log_hyp2f1_near_one(b, c, log_delta)
    ref_value, ref_ok = _near_one_reference(b, c, log_delta)
    assert ok.sum() > 2000 and (~ok).sum() > 100  # both outcomes are exercised
    np.testing.assert_array_equal(ok, ref_ok)
    np.testing.assert_array_equal(value, ref_value)
