"""A/B experiment statistics: pure functions, no plotting, no I/O.

What is here, and where each method comes from
----------------------------------------------
``srm_test``                 Pearson chi-square goodness of fit on arm sizes (sample-ratio
                             mismatch; Fabijan et al. 2019, KDD); p < 0.001 raises the alarm.
``compare_means``            Welch t-test with Welch-Satterthwaite df for the absolute lift and
``compare_means_arrays``     the delta method for the relative lift (Deng, Knoblich & Lu 2018,
                             KDD), the way GrowthBook's gbstats ``TwoSidedTTest`` does it.
``compare_proportions``      The same outputs for rates, with a Wald z-test (unpooled variance)
                             or, as gbstats does, Welch's t on the 0/1 values.
``welch_t``                  scipy's Welch t-test returning (t, p, df).
``chi2_proportions``         Chi-square test that k proportions are equal, as R ``prop.test``
                             (no continuity correction; R only applies Yates when k = 2).
``chance_to_win_gaussian``   gbstats-style Bayesian result: Gaussian posterior on the (relative)
                             effect under the flat, improper prior.
``beta_binomial``            Beta-binomial posterior for two rates: P(B > A) exactly (Evan Miller's
                             closed-form sum, or quadrature for non-integer parameters) or by
                             seeded Monte Carlo, and the expected loss of choosing each arm
                             (Stucchio 2015).
``power_proportions``        Power, sample size and minimum detectable effect for a difference of
``sample_size_proportions``  two proportions: Cohen's arcsine effect size h with statsmodels
``minimum_detectable_effect``  ``NormalIndPower`` by default (reproduces G*Power), or the normal
                             approximation with pooled (H0) / unpooled (H1) variances (Fleiss).
``adjust_pvalues``           Holm (1979) and Benjamini-Hochberg (1995), equal to statsmodels'
                             ``multipletests``.
``cuped``                    CUPED variance reduction (Deng, Xu, Kohavi & Walker 2013, WSDM).
``analyse_experiment``       A tidy per-arm, per-metric table with plain-words verdicts.

Conventions: arm A is the control, arm B the variant; lifts are B - A (absolute) and B / A - 1
(relative). Every function raises ``ValueError`` with a sentence that says what to fix.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import pandas as pd
from scipy import integrate, optimize, special, stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_effectsize

__all__ = [
    "SRM_ALPHA",
    "Comparison",
    "WelchT",
    "Chi2Result",
    "GaussianBayesResult",
    "BetaBinomialResult",
    "CupedResult",
    "srm_test",
    "compare_means",
    "compare_means_arrays",
    "compare_proportions",
    "welch_t",
    "chi2_proportions",
    "chance_to_win_gaussian",
    "beta_binomial",
    "power_proportions",
    "sample_size_proportions",
    "minimum_detectable_effect",
    "adjust_pvalues",
    "cuped",
    "analyse_experiment",
    "RESULT_COLUMNS",
]

#: p-value below which a sample-ratio mismatch is declared (a deliberately strict threshold: the
#: check runs on every experiment, and a real SRM gives far smaller p-values).
SRM_ALPHA = 0.001

PowerMethod = Literal["arcsine", "pooled", "unpooled"]


# --------------------------------------------------------------------------------------------
# result types
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Comparison:
    """Variant (B) against control (A) for one metric.

    ``lift_abs = mean_b - mean_a`` with its confidence interval and two-sided p-value;
    ``lift_rel = mean_b / mean_a - 1`` with a delta-method interval and p-value (NaN when the
    control mean is 0). ``df`` is the Welch-Satterthwaite degrees of freedom (``inf`` for a
    z-test). ``statistic`` is the t or z statistic of the absolute lift.
    """

    method: str
    level: float
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    lift_abs: float
    lift_abs_ci_low: float
    lift_abs_ci_high: float
    p_value: float
    lift_rel: float
    lift_rel_ci_low: float
    lift_rel_ci_high: float
    p_value_rel: float
    se_abs: float
    se_rel: float
    df: float
    statistic: float


class WelchT(NamedTuple):
    """(t, p, df) of Welch's unequal-variance t-test."""

    t: float
    p: float
    df: float


@dataclass(frozen=True)
class Chi2Result:
    """Chi-square statistic, degrees of freedom and p-value."""

    statistic: float
    df: int
    p_value: float


@dataclass(frozen=True)
class GaussianBayesResult:
    """Gaussian posterior N(effect_mean, effect_sd^2) of the effect of B over A.

    ``chance_to_win`` = P(effect > 0); ``ci_low``/``ci_high`` the equal-tailed credible
    interval; ``expected_loss_a`` = E[max(effect, 0)] (what keeping A costs if B is better),
    ``expected_loss_b`` = E[max(-effect, 0)] (what shipping B costs if A is better), in the
    units of the effect (relative or absolute).
    """

    chance_to_win: float
    effect_mean: float
    effect_sd: float
    ci_low: float
    ci_high: float
    expected_loss_a: float
    expected_loss_b: float
    relative: bool


@dataclass(frozen=True)
class BetaBinomialResult:
    """Beta posteriors of two rates.

    ``prob_b_beats_a`` = P(p_B > p_A); ``difference`` = E[p_B - p_A];
    ``expected_loss_a`` = E[max(p_B - p_A, 0)] (the cost of choosing A),
    ``expected_loss_b`` = E[max(p_A - p_B, 0)] (the cost of choosing B);
    ``method`` is "exact" or "monte carlo".
    """

    prob_b_beats_a: float
    difference: float
    expected_loss_a: float
    expected_loss_b: float
    method: str


@dataclass(frozen=True)
class CupedResult:
    """CUPED-adjusted metric ``y - theta * (x - mean(x))``, the ``theta`` used, and the share of
    variance removed (``1 - var(adjusted) / var(y)``)."""

    adjusted: np.ndarray
    theta: float
    variance_reduction: float


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------
def _check_level(level: float) -> float:
    level = float(level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be between 0 and 1 (e.g. 0.95), got {level!r}")
    return level


def _check_prob(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be strictly between 0 and 1, got {value!r}")
    return value


def _check_count(name: str, value: float, minimum: int = 0) -> int:
    if isinstance(value, (bool, np.bool_)) or not float(value).is_integer():
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return value


def _as_1d_float(name: str, values: object) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty: each arm needs at least one observation")
    if np.isnan(arr).any():
        raise ValueError(
            f"{name} contains {int(np.isnan(arr).sum())} missing values; drop or impute them first"
        )
    return arr


# --------------------------------------------------------------------------------------------
# sample-ratio mismatch
# --------------------------------------------------------------------------------------------
def srm_test(observed_counts: Sequence[int], expected_shares: Sequence[float]) -> float:
    """P-value of Pearson's chi-square goodness-of-fit test of arm sizes against planned shares.

    A sample-ratio mismatch (SRM; Fabijan et al. 2019, "Diagnosing Sample Ratio Mismatch in
    Online Controlled Experiments", KDD) means assignment or logging is broken; p < 0.001
    (``SRM_ALPHA``) is the usual alarm. ``expected_shares`` are normalised to sum to 1, so
    ``(1, 1)`` means 50/50. Computed with ``scipy.stats.chisquare``; this is the test gbstats'
    ``check_srm`` and spotify-confidence run.
    """
    observed = np.asarray(observed_counts, dtype=float)
    shares = np.asarray(expected_shares, dtype=float)
    if observed.ndim != 1 or shares.ndim != 1 or observed.size != shares.size:
        raise ValueError(
            "observed_counts and expected_shares must be flat and equally long, "
            f"got {observed.size} and {shares.size}"
        )
    if observed.size < 2:
        raise ValueError("an SRM test needs at least two arms")
    if (observed < 0).any() or not np.all(np.mod(observed, 1) == 0):
        raise ValueError(f"observed_counts must be non-negative whole numbers, got {observed.tolist()}")
    if not np.all(np.isfinite(shares)) or (shares <= 0).any():
        raise ValueError(f"expected_shares must all be positive, got {shares.tolist()}")
    total = observed.sum()
    if total <= 0:
        raise ValueError("observed_counts are all zero: there is nothing to test")
    expected = total * shares / shares.sum()
    return float(stats.chisquare(observed, expected).pvalue)


# --------------------------------------------------------------------------------------------
# frequentist two-arm comparisons
# --------------------------------------------------------------------------------------------
def _welch_df(var_a: float, n_a: int, var_b: float, n_b: int) -> float:
    """Welch-Satterthwaite degrees of freedom (Welch 1947; Satterthwaite 1946)."""
    sa, sb = var_a / n_a, var_b / n_b
    denom = sa * sa / (n_a - 1) + sb * sb / (n_b - 1)
    return float((sa + sb) ** 2 / denom) if denom > 0 else math.nan


def _two_arm(
    mean_a: float,
    var_a: float,
    n_a: int,
    mean_b: float,
    var_b: float,
    n_b: int,
    level: float,
    dist: Literal["t", "z"],
    method: str,
) -> Comparison:
    """Absolute and relative (delta-method) lift from per-observation means and variances."""
    var_a, var_b = max(float(var_a), 0.0), max(float(var_b), 0.0)
    sa, sb = var_a / n_a, var_b / n_b
    df = _welch_df(var_a, n_a, var_b, n_b) if dist == "t" else math.inf
    if dist == "t" and math.isnan(df):
        crit_fn = None
    elif dist == "t":
        crit_fn = stats.t(df)
    else:
        crit_fn = stats.norm()

    def interval(estimate: float, se: float) -> tuple[float, float, float, float]:
        if crit_fn is None or not math.isfinite(estimate) or not math.isfinite(se) or se <= 0:
            return math.nan, math.nan, math.nan, math.nan
        crit = float(crit_fn.ppf(0.5 + level / 2))
        stat = estimate / se
        p = float(2 * crit_fn.sf(abs(stat)))
        return estimate - crit * se, estimate + crit * se, p, stat

    lift_abs = mean_b - mean_a
    se_abs = math.sqrt(sa + sb)
    lo, hi, p, stat = interval(lift_abs, se_abs)
    if mean_a != 0:
        lift_rel = mean_b / mean_a - 1
        # delta method: Var(B/A) ~ Var(B)/A^2 + B^2 Var(A)/A^4 (arms independent)
        se_rel = math.sqrt(sb / mean_a**2 + sa * mean_b**2 / mean_a**4)
        rlo, rhi, rp, _ = interval(lift_rel, se_rel)
    else:
        lift_rel = se_rel = rlo = rhi = rp = math.nan
    return Comparison(
        method=method,
        level=level,
        n_a=int(n_a),
        n_b=int(n_b),
        mean_a=float(mean_a),
        mean_b=float(mean_b),
        lift_abs=float(lift_abs),
        lift_abs_ci_low=lo,
        lift_abs_ci_high=hi,
        p_value=p,
        lift_rel=float(lift_rel),
        lift_rel_ci_low=rlo,
        lift_rel_ci_high=rhi,
        p_value_rel=rp,
        se_abs=se_abs,
        se_rel=float(se_rel),
        df=df,
        statistic=stat,
    )


def compare_means(
    sum_a: float,
    sum_sq_a: float,
    n_a: int,
    sum_b: float,
    sum_sq_b: float,
    n_b: int,
    level: float = 0.95,
) -> Comparison:
    """Compare two means from sufficient statistics (sum, sum of squares, count per arm).

    Absolute lift ``mean_b - mean_a``: Welch's t-test, interval ``lift +/- t(df) * se`` with the
    Welch-Satterthwaite df. Relative lift ``mean_b / mean_a - 1``: delta-method standard error
    ``sqrt(Var_b/(n_b A^2) + B^2 Var_a/(n_a A^4))`` (Deng, Knoblich & Lu 2018, "Applying the
    Delta Method in Metric Analytics"), with the same t(df) reference distribution, exactly as
    GrowthBook gbstats' frequentist ``TwoSidedTTest``. Variances use the n - 1 denominator.
    """
    level = _check_level(level)
    n_a, n_b = _check_count("n_a", n_a, 2), _check_count("n_b", n_b, 2)
    mean_a, mean_b = float(sum_a) / n_a, float(sum_b) / n_b
    var_a = (float(sum_sq_a) - float(sum_a) * mean_a) / (n_a - 1)
    var_b = (float(sum_sq_b) - float(sum_b) * mean_b) / (n_b - 1)
    return _two_arm(mean_a, var_a, n_a, mean_b, var_b, n_b, level, "t", "welch-t")


def compare_means_arrays(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Comparison:
    """``compare_means`` on raw observations ``a`` (control) and ``b`` (variant).

    Means and variances are computed directly (``ddof=1``), avoiding the cancellation of the
    sum-of-squares form. See ``compare_means`` for the method.
    """
    level = _check_level(level)
    xa, xb = _as_1d_float("a (control values)", a), _as_1d_float("b (variant values)", b)
    if xa.size < 2 or xb.size < 2:
        raise ValueError(f"each arm needs at least 2 observations for a t-test, got {xa.size} and {xb.size}")
    return _two_arm(
        float(xa.mean()),
        float(xa.var(ddof=1)),
        xa.size,
        float(xb.mean()),
        float(xb.var(ddof=1)),
        xb.size,
        level,
        "t",
        "welch-t",
    )


def compare_proportions(
    successes_a: int,
    n_a: int,
    successes_b: int,
    n_b: int,
    level: float = 0.95,
    method: Literal["z", "welch"] = "z",
) -> Comparison:
    """Compare two rates: absolute lift (percentage points / 100) and relative lift.

    ``method="z"`` (default): Wald z-test with unpooled variance ``p(1-p)/n`` per arm (the test
    statsmodels calls ``test_proportions_2indep(method="wald")``), so the interval and the
    p-value always agree. ``method="welch"``: the same variances with Student's t on the
    Welch-Satterthwaite df, which is what gbstats does for proportions (identical to z once
    n is in the hundreds). The relative lift uses the delta method as in ``compare_means``.
    """
    level = _check_level(level)
    if method not in ("z", "welch"):
        raise ValueError(f"method must be 'z' or 'welch', got {method!r}")
    minimum = 2 if method == "welch" else 1
    n_a, n_b = _check_count("n_a", n_a, minimum), _check_count("n_b", n_b, minimum)
    successes_a, successes_b = _check_count("successes_a", successes_a), _check_count(
        "successes_b", successes_b
    )
    if successes_a > n_a or successes_b > n_b:
        raise ValueError(f"successes cannot exceed trials: got {successes_a}/{n_a} and {successes_b}/{n_b}")
    pa, pb = successes_a / n_a, successes_b / n_b
    dist: Literal["t", "z"] = "t" if method == "welch" else "z"
    return _two_arm(
        pa,
        pa * (1 - pa),
        n_a,
        pb,
        pb * (1 - pb),
        n_b,
        level,
        dist,
        "welch-t (proportions)" if method == "welch" else "z (proportions)",
    )


def welch_t(a: Sequence[float], b: Sequence[float]) -> WelchT:
    """Welch's unequal-variance t-test of mean(a) - mean(b): returns ``(t, p, df)``.

    Delegates to ``scipy.stats.ttest_ind(equal_var=False)``; df is Welch-Satterthwaite. Note the
    sign convention follows scipy (a minus b), unlike the B - A lifts elsewhere in this module.
    """
    xa, xb = _as_1d_float("a", a), _as_1d_float("b", b)
    if xa.size < 2 or xb.size < 2:
        raise ValueError(f"each sample needs at least 2 observations, got {xa.size} and {xb.size}")
    res = stats.ttest_ind(xa, xb, equal_var=False)
    return WelchT(float(res.statistic), float(res.pvalue), float(res.df))


def chi2_proportions(successes: Sequence[int], totals: Sequence[int], correction: bool = False) -> Chi2Result:
    """Pearson chi-square test that k >= 2 proportions are equal (R ``prop.test(x, n)``).

    R applies Yates' continuity correction only when k = 2 (and ``correct = TRUE``); for k > 2
    it never does. Here ``correction=True`` reproduces R's default for k = 2 and is ignored for
    k > 2, exactly as R. Computed with ``scipy.stats.chi2_contingency`` on the k x 2 table of
    successes and failures.
    """
    s = np.asarray(successes, dtype=float)
    n = np.asarray(totals, dtype=float)
    if s.ndim != 1 or n.ndim != 1 or s.size != n.size:
        raise ValueError(f"successes and totals must be flat and equally long, got {s.size} and {n.size}")
    if s.size < 2:
        raise ValueError("comparing proportions needs at least two groups")
    if (n <= 0).any() or (s < 0).any() or (s > n).any():
        raise ValueError(f"need 0 <= successes <= totals and totals > 0, got {s.tolist()} of {n.tolist()}")
    table = np.column_stack([s, n - s])
    if (table.sum(axis=0) == 0).any():
        raise ValueError("all groups have the same outcome (all successes or all failures): nothing to test")
    stat, p, dof, _ = stats.chi2_contingency(table, correction=bool(correction) and s.size == 2)
    return Chi2Result(float(stat), int(dof), float(p))


# --------------------------------------------------------------------------------------------
# Bayesian
# --------------------------------------------------------------------------------------------
def _normal_losses(mu: float, sd: float) -> tuple[float, float]:
    """(E[max(D,0)], E[max(-D,0)]) for D ~ N(mu, sd^2)."""
    if sd <= 0:
        return max(mu, 0.0), max(-mu, 0.0)
    z = mu / sd
    pdf = float(stats.norm.pdf(z))
    gain = sd * pdf + mu * float(stats.norm.cdf(z))
    loss = sd * pdf - mu * float(stats.norm.cdf(-z))
    return gain, loss


def chance_to_win_gaussian(
    mean_a: float,
    var_a: float,
    n_a: int,
    mean_b: float,
    var_b: float,
    n_b: int,
    *,
    relative: bool = True,
    level: float = 0.95,
) -> GaussianBayesResult:
    """Bayesian chance that B beats A from a Gaussian posterior on the effect (gbstats style).

    ``var_a``/``var_b`` are per-observation variances (for a rate pass ``p * (1 - p)``). With
    GrowthBook gbstats' default flat, improper prior the posterior of the effect is the
    sampling distribution: relative effect ``B/A - 1`` with delta-method variance (or, with
    ``relative=False``, ``B - A`` with variance ``var_a/n_a + var_b/n_b``). Chance to win is
    ``P(effect > 0)``; expected losses are ``E[max(+-effect, 0)]`` in the effect's units.
    """
    level = _check_level(level)
    n_a, n_b = _check_count("n_a", n_a, 1), _check_count("n_b", n_b, 1)
    var_a, var_b = max(float(var_a), 0.0), max(float(var_b), 0.0)
    sa, sb = var_a / n_a, var_b / n_b
    if relative:
        if mean_a == 0:
            raise ValueError(
                "the relative effect is undefined when the control mean is 0; use relative=False"
            )
        mu = mean_b / mean_a - 1
        sd = math.sqrt(sb / mean_a**2 + sa * mean_b**2 / mean_a**4)
    else:
        mu = mean_b - mean_a
        sd = math.sqrt(sa + sb)
    if sd > 0:
        ctw = float(stats.norm.sf(0.0, loc=mu, scale=sd))
        crit = float(stats.norm.ppf(0.5 + level / 2))
        lo, hi = mu - crit * sd, mu + crit * sd
    else:
        ctw = 0.5 if mu == 0 else float(mu > 0)
        lo = hi = mu
    gain, loss = _normal_losses(mu, sd)
    return GaussianBayesResult(ctw, float(mu), float(sd), lo, hi, gain, loss, relative)


def _evan_miller(a1: float, b1: float, a2: float, b2: float) -> float:
    """P(X > Y), X ~ Beta(a1, b1), Y ~ Beta(a2, b2), a1 a positive integer (Evan Miller 2015)."""
    i = np.arange(int(round(a1)), dtype=float)
    log_terms = (
        special.betaln(a2 + i, b1 + b2) - np.log(b1 + i) - special.betaln(1 + i, b1) - special.betaln(a2, b2)
    )
    return float(np.exp(special.logsumexp(log_terms)))


def _is_whole(x: float) -> bool:
    return float(x).is_integer() and x >= 1


def _prob_x_greater(a1: float, b1: float, a2: float, b2: float) -> float:
    """Exact P(X > Y) for independent X ~ Beta(a1, b1), Y ~ Beta(a2, b2).

    Uses Evan Miller's closed-form sum when any parameter is a whole number (through the
    symmetries P(X>Y) = 1 - P(Y>X) = P(1-Y > 1-X)), choosing the shortest sum; otherwise the
    one-dimensional integral  int_0^1 F_Y(Q_X(u)) du  by adaptive quadrature.
    """
    options = []
    if _is_whole(a1):
        options.append((a1, lambda: _evan_miller(a1, b1, a2, b2)))
    if _is_whole(a2):
        options.append((a2, lambda: 1.0 - _evan_miller(a2, b2, a1, b1)))
    if _is_whole(b2):
        options.append((b2, lambda: _evan_miller(b2, a2, b1, a1)))
    if _is_whole(b1):
        options.append((b1, lambda: 1.0 - _evan_miller(b1, a1, b2, a2)))
    if options and min(o[0] for o in options) <= 200_000:
        value = min(options, key=lambda o: o[0])[1]()
    else:
        x, y = stats.beta(a1, b1), stats.beta(a2, b2)
        value, _ = integrate.quad(lambda u: y.cdf(x.ppf(u)), 0.0, 1.0, epsabs=1e-12, epsrel=1e-10, limit=500)
    return float(min(max(value, 0.0), 1.0))


def beta_binomial(
    successes_a: int,
    n_a: int,
    successes_b: int,
    n_b: int,
    prior: tuple[float, float] = (1.0, 1.0),
    draws: int | None = None,
    seed: int | None = None,
) -> BetaBinomialResult:
    """Beta-binomial comparison of two rates: P(B > A) and the expected loss of each choice.

    Each arm's rate gets the posterior Beta(prior_alpha + successes, prior_beta + failures).
    With ``draws=None`` (default) everything is exact: P(p_B > p_A) by Evan Miller's closed form
    ("Formulas for Bayesian A/B Testing", 2015) or quadrature, and the expected losses
    E[max(p_A - p_B, 0)] = E[p_A] P(B < A') - E[p_B] P(B' < A) with A', B' the posteriors with
    alpha + 1 (Stucchio 2015, "Bayesian A/B Testing at VWO"). With ``draws=N`` the same
    quantities are estimated from N seeded Monte Carlo draws, as spotify-confidence does.
    """
    n_a, n_b = _check_count("n_a", n_a, 1), _check_count("n_b", n_b, 1)
    successes_a, successes_b = _check_count("successes_a", successes_a), _check_count(
        "successes_b", successes_b
    )
    if successes_a > n_a or successes_b > n_b:
        raise ValueError(f"successes cannot exceed trials: got {successes_a}/{n_a} and {successes_b}/{n_b}")
    if len(prior) != 2 or min(prior) <= 0:
        raise ValueError(f"prior must be two positive numbers (alpha, beta), got {prior!r}")
    pa0, pb0 = float(prior[0]), float(prior[1])
    a_a, b_a = pa0 + successes_a, pb0 + n_a - successes_a
    a_b, b_b = pa0 + successes_b, pb0 + n_b - successes_b
    mean_a, mean_b = a_a / (a_a + b_a), a_b / (a_b + b_b)
    if draws is None:
        prob = _prob_x_greater(a_b, b_b, a_a, b_a)
        # E[max(pA - pB, 0)] = E[pA 1{pA > pB}] - E[pB 1{pA > pB}]
        loss_b = mean_a * _prob_x_greater(a_a + 1, b_a, a_b, b_b) - mean_b * _prob_x_greater(
            a_a, b_a, a_b + 1, b_b
        )
        loss_a = mean_b * _prob_x_greater(a_b + 1, b_b, a_a, b_a) - mean_a * _prob_x_greater(
            a_b, b_b, a_a + 1, b_a
        )
        return BetaBinomialResult(prob, mean_b - mean_a, max(loss_a, 0.0), max(loss_b, 0.0), "exact")
    draws = _check_count("draws", draws, 1)
    rng = np.random.default_rng(seed)
    xa = rng.beta(a_a, b_a, size=draws)
    xb = rng.beta(a_b, b_b, size=draws)
    d = xb - xa
    return BetaBinomialResult(
        float((d > 0).mean()),
        float(d.mean()),
        float(np.maximum(d, 0).mean()),
        float(np.maximum(-d, 0).mean()),
        "monte carlo",
    )


# --------------------------------------------------------------------------------------------
# power, sample size, minimum detectable effect
# --------------------------------------------------------------------------------------------
def _check_design(baseline: float, mde_abs: float, alpha: float) -> tuple[float, float, float]:
    baseline = float(baseline)
    if not 0.0 <= baseline < 1.0:
        raise ValueError(f"baseline must be a rate in [0, 1), got {baseline!r}")
    mde_abs = float(mde_abs)
    if mde_abs == 0 or not math.isfinite(mde_abs):
        raise ValueError(
            "mde_abs must be a non-zero absolute difference in rates (e.g. 0.003 for 0.3 points)"
        )
    if not 0.0 < baseline + mde_abs < 1.0:
        raise ValueError(
            f"baseline + mde_abs must be a rate strictly between 0 and 1, got {baseline + mde_abs!r}"
        )
    return baseline, mde_abs, _check_prob("alpha", alpha)


def _check_method(method: str) -> None:
    if method not in ("arcsine", "pooled", "unpooled"):
        raise ValueError(f"method must be 'arcsine', 'pooled' or 'unpooled', got {method!r}")


def power_proportions(
    baseline: float,
    mde_abs: float,
    n_a: float,
    n_b: float | None = None,
    alpha: float = 0.05,
    two_sided: bool = True,
    method: PowerMethod = "arcsine",
) -> float:
    """Power to detect a change of rate from ``baseline`` to ``baseline + mde_abs``.

    ``n_a``/``n_b`` are the arm sizes (``n_b`` defaults to ``n_a``). Methods:

    * ``"arcsine"`` (default): Cohen's h = 2 asin(sqrt(p2)) - 2 asin(sqrt(p1)) with
      ``statsmodels`` ``NormalIndPower``; this is the formula that reproduces the G*Power totals
      used in spotify-confidence's tests (897,348 for 0.34 -> 0.343, alpha 0.05, power 0.85).
    * ``"pooled"``: normal approximation with the pooled variance under H0 and the unpooled one
      under H1 (Fleiss, Levin & Paik 2003, ch. 4, without continuity correction).
    * ``"unpooled"``: Wald test, unpooled variance under both hypotheses.

    The two-sided power includes the (tiny) probability of rejecting in the wrong direction.
    """
    baseline, mde_abs, alpha = _check_design(baseline, mde_abs, alpha)
    _check_method(method)
    n_a = float(n_a)
    n_b = n_a if n_b is None else float(n_b)
    if n_a <= 0 or n_b <= 0:
        raise ValueError(f"arm sizes must be positive, got {n_a} and {n_b}")
    p1, p2 = baseline, baseline + mde_abs
    if method == "arcsine":
        h = abs(float(proportion_effectsize(p2, p1)))
        return float(
            NormalIndPower().power(
                effect_size=h,
                nobs1=n_a,
                alpha=alpha,
                ratio=n_b / n_a,
                alternative="two-sided" if two_sided else "larger",
            )
        )
    z = float(stats.norm.ppf(1 - alpha / 2 if two_sided else 1 - alpha))
    se1 = math.sqrt(p1 * (1 - p1) / n_a + p2 * (1 - p2) / n_b)
    if method == "pooled":
        pbar = (n_a * p1 + n_b * p2) / (n_a + n_b)
        se0 = math.sqrt(pbar * (1 - pbar) * (1 / n_a + 1 / n_b))
    else:
        se0 = se1
    d = abs(mde_abs)
    power = float(stats.norm.cdf((d - z * se0) / se1))
    if two_sided:
        power += float(stats.norm.cdf((-d - z * se0) / se1))
    return power


def sample_size_proportions(
    baseline: float,
    mde_abs: float,
    alpha: float = 0.05,
    power: float = 0.8,
    two_sided: bool = True,
    method: PowerMethod = "arcsine",
    ratio: float = 1.0,
) -> int:
    """Total sample size (both arms) to detect a rate change ``baseline -> baseline + mde_abs``.

    ``ratio`` = n_b / n_a. Each arm is rounded up separately, as G*Power does. The default
    ``method="arcsine"`` (Cohen's h, statsmodels ``NormalIndPower.solve_power``) reproduces
    G*Power exactly: baseline 0.34, MDE +0.003, alpha 0.05 two-sided, power 0.85 -> 448,674 per
    arm, 897,348 in total. ``"pooled"`` (closed form: ``[z_a sqrt(pbar qbar (1 + 1/k)) + z_b
    sqrt(p1 q1 + p2 q2 / k)]^2 / d^2``) gives 897,350 and ``"unpooled"`` 897,344 on that case;
    using the baseline variance for both arms (spotify-confidence's own formula) gives 895,446.
    """
    baseline, mde_abs, alpha = _check_design(baseline, mde_abs, alpha)
    power = _check_prob("power", power)
    _check_method(method)
    ratio = float(ratio)
    if not ratio > 0:
        raise ValueError(f"ratio (n_b / n_a) must be positive, got {ratio!r}")
    if power <= (alpha / 2 if two_sided else alpha):
        raise ValueError(f"power ({power}) must exceed the significance level ({alpha})")
    p1, p2 = baseline, baseline + mde_abs
    if method == "arcsine":
        h = abs(float(proportion_effectsize(p2, p1)))
        n_a = float(
            NormalIndPower().solve_power(
                effect_size=h,
                nobs1=None,
                alpha=alpha,
                power=power,
                ratio=ratio,
                alternative="two-sided" if two_sided else "larger",
            )
        )
    else:
        z_a = float(stats.norm.ppf(1 - alpha / 2 if two_sided else 1 - alpha))
        z_b = float(stats.norm.ppf(power))
        h1 = math.sqrt(p1 * (1 - p1) + p2 * (1 - p2) / ratio)
        if method == "pooled":
            pbar = (p1 + ratio * p2) / (1 + ratio)
            h0 = math.sqrt(pbar * (1 - pbar) * (1 + 1 / ratio))
        else:
            h0 = h1
        n_a = (z_a * h0 + z_b * h1) ** 2 / mde_abs**2
    return int(math.ceil(n_a - 1e-9) + math.ceil(ratio * n_a - 1e-9))


def minimum_detectable_effect(
    n_a: float,
    n_b: float | None = None,
    *,
    baseline: float | None = None,
    sd: float | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
    two_sided: bool = True,
    method: PowerMethod = "arcsine",
) -> float:
    """Smallest absolute lift detectable with the given power at arm sizes ``n_a``/``n_b``.

    Give exactly one of

    * ``baseline`` (a rate): the upward change ``d`` solving ``power_proportions(baseline, d,
      n_a, n_b) = power`` (same ``method`` choices); NaN when even a rate of 1 is not enough;
    * ``sd`` (per-observation standard deviation of a continuous metric):
      ``(z_{1-alpha/2} + z_{power}) * sd * sqrt(1/n_a + 1/n_b)`` (normal approximation).
    """
    if (baseline is None) == (sd is None):
        raise ValueError("give exactly one of baseline= (for a rate) or sd= (for a mean)")
    alpha, power = _check_prob("alpha", alpha), _check_prob("power", power)
    n_a = float(n_a)
    n_b = n_a if n_b is None else float(n_b)
    if n_a <= 0 or n_b <= 0:
        raise ValueError(f"arm sizes must be positive, got {n_a} and {n_b}")
    if sd is not None:
        sd = float(sd)
        if sd < 0 or not math.isfinite(sd):
            raise ValueError(f"sd must be a non-negative number, got {sd!r}")
        z = float(stats.norm.ppf(1 - alpha / 2 if two_sided else 1 - alpha) + stats.norm.ppf(power))
        return z * sd * math.sqrt(1 / n_a + 1 / n_b)
    _check_method(method)
    baseline = float(baseline)  # type: ignore[arg-type]
    if not 0.0 <= baseline < 1.0:
        raise ValueError(f"baseline must be a rate in [0, 1), got {baseline!r}")
    hi = (1.0 - baseline) * (1 - 1e-12)
    lo = hi * 1e-9

    def gap(d: float) -> float:
        return power_proportions(baseline, d, n_a, n_b, alpha, two_sided, method) - power

    if gap(hi) < 0:
        return math.nan
    if gap(lo) >= 0:
        return lo
    return float(optimize.brentq(gap, lo, hi, xtol=1e-12, rtol=1e-10))


# --------------------------------------------------------------------------------------------
# multiple testing, CUPED
# --------------------------------------------------------------------------------------------
def adjust_pvalues(p: Sequence[float], method: Literal["holm", "fdr_bh"] = "holm") -> np.ndarray:
    """Adjusted p-values: Holm (1979) step-down FWER or Benjamini-Hochberg (1995) FDR.

    Benjamini-Hochberg delegates to ``statsmodels.stats.multitest.multipletests``. Holm is the
    same three-line step-down computation statsmodels does (``min(1, cummax((m - i) p_(i)))``),
    written out because statsmodels' Holm branch runs a full ``gc.collect()`` on every call
    (about 0.1 s in a busy process); the tests check both against ``multipletests``. NaN
    entries stay NaN and are left out of the family.
    """
    if method not in ("holm", "fdr_bh"):
        raise ValueError(f"method must be 'holm' or 'fdr_bh', got {method!r}")
    arr = np.asarray(p, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"p must be one-dimensional, got shape {arr.shape}")
    ok = ~np.isnan(arr)
    if ((arr[ok] < 0) | (arr[ok] > 1)).any():
        raise ValueError("p-values must lie between 0 and 1")
    out = np.full(arr.shape, np.nan)
    if not ok.any():
        return out
    if method == "fdr_bh":
        out[ok] = multipletests(arr[ok], method="fdr_bh")[1]
        return out
    valid = arr[ok]
    order = np.argsort(valid, kind="mergesort")
    m = valid.size
    stepped = np.minimum(np.maximum.accumulate(valid[order] * np.arange(m, 0, -1)), 1.0)
    holm = np.empty(m)
    holm[order] = stepped
    out[ok] = holm
    return out


def cuped(y: Sequence[float], x_pre: Sequence[float], groups: Sequence[object] | None = None) -> CupedResult:
    """CUPED: ``y_cv = y - theta * (x_pre - mean(x_pre))`` (Deng, Xu, Kohavi & Walker 2013).

    ``theta = cov(y, x) / var(x)``. With ``groups`` (the arm of each unit), theta is the pooled
    within-arm slope, so a treatment effect on ``y`` does not leak into it; ``x`` is always
    centred on its overall mean, which keeps every arm's adjusted mean an unbiased estimate
    of its mean (``x_pre`` must be measured before assignment). Analyse ``adjusted`` with
    ``compare_means_arrays``.
    """
    yv, xv = _as_1d_float("y", y), _as_1d_float("x_pre", x_pre)
    if yv.size != xv.size:
        raise ValueError(f"y and x_pre must be equally long, got {yv.size} and {xv.size}")
    if yv.size < 2:
        raise ValueError("CUPED needs at least two observations")
    if groups is None:
        xc, yc = xv - xv.mean(), yv - yv.mean()
    else:
        g = pd.Series(np.asarray(groups, dtype=object))
        if len(g) != yv.size:
            raise ValueError(f"groups must be as long as y, got {len(g)} and {yv.size}")
        if g.isna().any():
            raise ValueError("groups has missing values")
        frame = pd.DataFrame({"g": g, "x": xv, "y": yv})
        xc = (frame["x"] - frame.groupby("g")["x"].transform("mean")).to_numpy()
        yc = (frame["y"] - frame.groupby("g")["y"].transform("mean")).to_numpy()
    sxx = float(np.dot(xc, xc))
    theta = float(np.dot(xc, yc) / sxx) if sxx > 0 else 0.0
    adjusted = yv - theta * (xv - xv.mean())
    var_y = float(yv.var())
    reduction = 1.0 - float(adjusted.var()) / var_y if var_y > 0 else 0.0
    return CupedResult(adjusted, theta, reduction)


# --------------------------------------------------------------------------------------------
# the experiment table
# --------------------------------------------------------------------------------------------
RESULT_COLUMNS = [
    "experiment",
    "variant",
    "metric",
    "n",
    "value",
    "lift_abs",
    "lift_abs_ci_low",
    "lift_abs_ci_high",
    "lift_rel",
    "lift_rel_ci_low",
    "lift_rel_ci_high",
    "p_value",
    "p_adj_holm",
    "p_adj_bh",
    "srm_p",
    "chance_to_win",
    "expected_loss",
    "mde",
    "verdict",
    "verdict_reason",
]


def _fmt(x: float, pct: bool = False) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:+.2%}" if pct else f"{x:+.4g}"


def analyse_experiment(
    members: pd.DataFrame,
    group_col: str,
    control: object,
    metrics: Sequence[str],
    pre_col: str | None = None,
    level: float = 0.95,
    expected_shares: Mapping[object, float] | None = None,
    *,
    power: float = 0.8,
    experiment: str | None = None,
) -> pd.DataFrame:
    """One row per arm and metric: estimate, lifts with intervals, p-values, Bayesian chance
    to win, MDE and a verdict in plain words.

    ``members`` has one row per randomised unit; ``group_col`` names its arm; ``control`` is
    the control arm's value. Metrics whose non-missing values are all 0/1 are rates, compared
    with ``compare_proportions`` (z) and ``beta_binomial`` (exact, uniform prior); others are
    means, compared with ``compare_means_arrays`` (Welch) and ``chance_to_win_gaussian`` on the
    absolute effect. With ``pre_col`` every metric is first CUPED-adjusted with that
    pre-period covariate (pooled within-arm theta) and compared as a mean; ``value`` stays
    the raw arm mean. Missing metric values are left out of that metric.

    Columns (``RESULT_COLUMNS``): ``value`` is the arm's mean or rate; lifts are vs control
    (NaN on control rows) at confidence ``level``; ``p_value`` is the two-sided p of the
    absolute lift; ``p_adj_holm``/``p_adj_bh`` adjust it over all variant x metric rows of the
    experiment; ``srm_p`` is ``srm_test`` on arm sizes against ``expected_shares`` (a mapping
    arm -> share; equal shares by default); ``expected_loss`` is E[max(control - variant, 0)]
    per member, the cost of shipping the variant if it is worse; ``mde`` is the absolute
    minimum detectable effect at the observed arm sizes, alpha = 1 - level and ``power``.

    Verdicts, with alpha = 1 - level: "do not ship" with the reason "do not trust:
    sample-ratio mismatch ..." when srm_p < 0.001 (``SRM_ALPHA``), whatever the lift; "ship"
    when the Holm-adjusted p < alpha and the lift is positive; "do not ship" when it is
    significant and negative; otherwise "inconclusive", saying whether the test was
    underpowered (|lift| below the MDE) or just not significant. Control rows get "control".
    Verdicts assume higher is better for every metric. ``experiment`` fills the experiment
    column (default: ``group_col``).
    """
    level = _check_level(level)
    power = _check_prob("power", power)
    alpha = 1.0 - level
    if not isinstance(members, pd.DataFrame):
        raise ValueError(f"members must be a pandas DataFrame, got {type(members).__name__}")
    if members.empty:
        raise ValueError("members is empty: there is no experiment to analyse")
    if group_col not in members.columns:
        raise ValueError(f"group column {group_col!r} is not in members; columns are {list(members.columns)}")
    if isinstance(metrics, str):
        metrics = [metrics]
    metrics = list(metrics)
    if not metrics:
        raise ValueError("metrics is empty: name at least one metric column")
    missing = [m for m in metrics + ([pre_col] if pre_col else []) if m not in members.columns]
    if missing:
        raise ValueError(f"column(s) {missing} not in members; columns are {list(members.columns)}")
    groups = members[group_col]
    if groups.isna().any():
        raise ValueError(
            f"group column {group_col!r} has {int(groups.isna().sum())} missing values; "
            "every member needs an arm"
        )
    counts = groups.value_counts(sort=False, dropna=False)  # categoricals keep their unused categories
    arms = list(counts.index)
    if control not in arms:
        raise ValueError(
            f"control arm {control!r} is not a value of {group_col!r}; arms are {sorted(map(str, arms))}"
        )
    empty = [a for a in arms if counts[a] == 0]
    if empty:
        raise ValueError(f"arm(s) {empty} of {group_col!r} have no members (empty group)")
    variants = sorted((a for a in arms if a != control), key=str)
    if not variants:
        raise ValueError(f"only the control arm {control!r} is present: need at least one variant to compare")
    ordered = [control, *variants]
    if expected_shares is None:
        shares = [1.0] * len(ordered)
    else:
        if not isinstance(expected_shares, Mapping):
            raise ValueError(
                "expected_shares must be a mapping arm -> planned share, e.g. {'A': 0.5, 'B': 0.5}"
            )
        unknown = [k for k in expected_shares if k not in arms]
        if unknown:
            raise ValueError(
                f"expected_shares names arm(s) {unknown} with no members (empty group) in {group_col!r}"
            )
        absent = [a for a in ordered if a not in expected_shares]
        if absent:
            raise ValueError(f"expected_shares has no share for arm(s) {absent}")
        shares = [float(expected_shares[a]) for a in ordered]
    srm_p = srm_test([int(counts[a]) for a in ordered], shares)
    name = experiment if experiment is not None else str(group_col)
    x_pre = None
    if pre_col is not None:
        x_pre = pd.to_numeric(members[pre_col], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        if np.isnan(x_pre).any():
            raise ValueError(
                f"pre-period column {pre_col!r} has missing or non-numeric values; "
                "CUPED needs it for every member"
            )

    group_values = groups.to_numpy(dtype=object)
    arm_masks = {arm: group_values == arm for arm in ordered}
    rows: list[dict[str, object]] = []
    for metric in metrics:
        col = members[metric]
        if not (pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)):
            raise ValueError(f"metric {metric!r} is not numeric (dtype {col.dtype})")
        y = col.to_numpy(dtype=float, na_value=np.nan)
        keep = ~np.isnan(y)
        masks = {arm: mask & keep for arm, mask in arm_masks.items()}
        for arm in ordered:
            if not masks[arm].any():
                raise ValueError(f"arm {arm!r} has no non-missing values of metric {metric!r} (empty group)")
        binary = bool(np.isin(y[keep], (0.0, 1.0)).all())
        if x_pre is not None:
            adj = np.full(y.shape, np.nan)
            adj[keep] = cuped(y[keep], x_pre[keep], group_values[keep]).adjusted
        else:
            adj = y
        raw_c, yc = y[masks[control]], adj[masks[control]]
        n_c = raw_c.size
        rows.append(
            dict(
                experiment=name,
                variant=control,
                metric=metric,
                n=n_c,
                value=float(raw_c.mean()),
                srm_p=srm_p,
                verdict="control",
                verdict_reason="baseline arm",
            )
        )
        for arm in variants:
            raw_v, yv = y[masks[arm]], adj[masks[arm]]
            n_v = raw_v.size
            if binary and x_pre is None:
                s_c, s_v = int(raw_c.sum()), int(raw_v.sum())
                cmp_ = compare_proportions(s_c, n_c, s_v, n_v, level=level)
                bb = beta_binomial(s_c, n_c, s_v, n_v)
                ctw, loss = bb.prob_b_beats_a, bb.expected_loss_b
                base = s_c / n_c
                mde = (
                    minimum_detectable_effect(n_c, n_v, baseline=base, alpha=alpha, power=power)
                    if 0.0 < base < 1.0
                    else math.nan
                )
            else:
                if n_c < 2 or n_v < 2:
                    raise ValueError(
                        f"metric {metric!r}: arms need at least 2 members for a t-test, got {n_c} and {n_v}"
                    )
                cmp_ = compare_means_arrays(yc, yv, level=level)
                var_c, var_v = float(yc.var(ddof=1)), float(yv.var(ddof=1))
                gb = chance_to_win_gaussian(
                    float(yc.mean()), var_c, n_c, float(yv.mean()), var_v, n_v, relative=False, level=level
                )
                ctw, loss = gb.chance_to_win, gb.expected_loss_b
                mde = minimum_detectable_effect(n_c, n_v, sd=math.sqrt(var_c), alpha=alpha, power=power)
            rows.append(
                dict(
                    experiment=name,
                    variant=arm,
                    metric=metric,
                    n=n_v,
                    value=float(raw_v.mean()),
                    lift_abs=cmp_.lift_abs,
                    lift_abs_ci_low=cmp_.lift_abs_ci_low,
                    lift_abs_ci_high=cmp_.lift_abs_ci_high,
                    lift_rel=cmp_.lift_rel,
                    lift_rel_ci_low=cmp_.lift_rel_ci_low,
                    lift_rel_ci_high=cmp_.lift_rel_ci_high,
                    p_value=cmp_.p_value,
                    srm_p=srm_p,
                    chance_to_win=ctw,
                    expected_loss=loss,
                    mde=mde,
                )
            )
    variant_rows = [r for r in rows if r.get("verdict") != "control"]
    p_raw = np.array([r["p_value"] for r in variant_rows], dtype=float)
    for r, holm, bh in zip(variant_rows, adjust_pvalues(p_raw, "holm"), adjust_pvalues(p_raw, "fdr_bh")):
        r["p_adj_holm"], r["p_adj_bh"] = float(holm), float(bh)
        r["verdict"], r["verdict_reason"] = _verdict(r, alpha, level, power, len(variant_rows), str(control))
    out = pd.DataFrame(rows).reindex(columns=RESULT_COLUMNS)
    out["n"] = out["n"].astype("int64")
    return out


def _verdict(
    row: Mapping[str, object], alpha: float, level: float, power: float, n_tests: int, control: str
) -> tuple[str, str]:
    metric, lift, p, p_adj = row["metric"], row["lift_abs"], row["p_value"], row["p_adj_holm"]
    ci = f"{level:.0%} CI {_fmt(row['lift_abs_ci_low'])} to {_fmt(row['lift_abs_ci_high'])}"
    rel = f" ({_fmt(row['lift_rel'], pct=True)})" if math.isfinite(row["lift_rel"]) else ""
    if row["srm_p"] < SRM_ALPHA:
        return "do not ship", (
            f"do not trust: sample-ratio mismatch (SRM p = {row['srm_p']:.2g} < {SRM_ALPHA:g}); "
            "the arms are not in the planned ratio, so assignment or logging is broken "
            "and no lift can be trusted"
        )
    if not math.isfinite(p):
        return "inconclusive", f"{metric} does not vary within the arms, so no test is possible"
    if p_adj < alpha:
        direction = "up" if lift > 0 else "down"
        reason = (
            f"{metric} {direction} {_fmt(lift)}{rel} vs {control}, {ci}; "
            f"Holm-adjusted p = {p_adj:.3g} < {alpha:.2g}"
        )
        return ("ship" if lift > 0 else "do not ship"), reason
    if math.isfinite(row["mde"]) and abs(lift) < row["mde"]:
        return "inconclusive", (
            f"underpowered: the observed lift {_fmt(lift)}{rel} is smaller than the minimum "
            f"detectable effect {row['mde']:.4g} at {power:.0%} power with these sample sizes; {ci}"
        )
    if p < alpha:
        return "inconclusive", (
            f"not significant after adjusting for {n_tests} comparisons: p = {p:.3g}, "
            f"Holm-adjusted p = {p_adj:.3g} >= {alpha:.2g}; {ci}"
        )
    return (
        "inconclusive",
        f"not significant: Holm-adjusted p = {p_adj:.3g} >= {alpha:.2g}; {ci} includes zero",
    )
