"""Behaviour of crmbook.experiments: ground-truth simulations, cross-checks against scipy and
statsmodels, the verdicts, and every error a user can meet."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats import proportion as sm_proportion

from crmbook.experiments import (
    RESULT_COLUMNS,
    SRM_ALPHA,
    adjust_pvalues,
    analyse_experiment,
    beta_binomial,
    chance_to_win_gaussian,
    chi2_proportions,
    compare_means,
    compare_means_arrays,
    compare_proportions,
    cuped,
    minimum_detectable_effect,
    power_proportions,
    sample_size_proportions,
    srm_test,
    welch_t,
)


def _experiment(
    rng: np.random.Generator,
    n: int,
    rate: float,
    rate_lift: float,
    mean: float,
    mean_lift: float,
    arms: tuple[str, str] = ("control", "treatment"),
) -> pd.DataFrame:
    """n members per arm; a 0/1 metric and a normal metric with known population lifts."""
    frames = []
    for arm, on in zip(arms, (0.0, 1.0)):
        frames.append(
            pd.DataFrame(
                {
                    "group": arm,
                    "converted": (rng.random(n) < rate + on * rate_lift).astype(int),
                    "revenue": rng.normal(mean + on * mean_lift, 3.0, n),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


# ------------------------------------------------------------------------------------------
# ground truth by simulation
# ------------------------------------------------------------------------------------------
def test_simulated_ci_coverage_and_false_positive_rate():
    """200 seeded experiments (100 A/A, 100 A/B with known lifts): the 90% interval covers the
    true absolute lift in 84%-96% of them, for a rate and for a mean; A/A tests rarely ship."""
    rng = np.random.default_rng(20240601)
    covered = {"converted": 0, "revenue": 0}
    aa_rejections = 0
    n_sims = 200
    for i in range(n_sims):
        is_ab = i % 2 == 1
        true = {"converted": 0.03 if is_ab else 0.0, "revenue": 0.5 if is_ab else 0.0}
        members = _experiment(rng, 1000, 0.20, true["converted"], 10.0, true["revenue"])
        table = analyse_experiment(members, "group", "control", ["converted", "revenue"], level=0.90)
        rows = table[table["variant"] == "treatment"].set_index("metric")
        for metric, lift in true.items():
            lo, hi = rows.loc[metric, "lift_abs_ci_low"], rows.loc[metric, "lift_abs_ci_high"]
            covered[metric] += lo <= lift <= hi
        if not is_ab:
            aa_rejections += int((rows["verdict"] == "ship").any())
    for metric, count in covered.items():
        assert 0.84 <= count / n_sims <= 0.96, (metric, count / n_sims)
    assert aa_rejections <= 15  # 100 A/A tests, 2 metrics, Holm at 10%: expect about 10


def test_simulated_ab_lift_is_found():
    """A large true lift with 5,000 per arm is shipped, with the relative lift near the truth."""
    rng = np.random.default_rng(7)
    members = _experiment(rng, 5000, 0.10, 0.03, 10.0, 0.5)
    table = analyse_experiment(members, "group", "control", ["converted", "revenue"])
    rows = table[table["variant"] == "treatment"].set_index("metric")
    assert (rows["verdict"] == "ship").all()
    assert rows.loc["converted", "lift_rel_ci_low"] < 0.3 < rows.loc["converted", "lift_rel_ci_high"]
    assert rows.loc["revenue", "lift_rel_ci_low"] < 0.05 < rows.loc["revenue", "lift_rel_ci_high"]


# ------------------------------------------------------------------------------------------
# sample-ratio mismatch
# ------------------------------------------------------------------------------------------
def test_srm_detects_38_33_29_split():
    """A .38/.33/.29 split of 4,000 planned as thirds is a mismatch at p < 0.001."""
    counts = [1520, 1320, 1160]
    assert srm_test(counts, [1 / 3] * 3) < SRM_ALPHA
    assert srm_test([1340, 1330, 1330], [1 / 3] * 3) > 0.5


def test_srm_in_analyse_experiment_blocks_shipping():
    """With a broken 38/33/29 split the verdict is 'do not ship' because of the SRM, even where
    the lift is significant and positive; planning that split removes the alarm."""
    rng = np.random.default_rng(3)
    arms = np.repeat(["A", "B", "C"], [1520, 1320, 1160])
    members = pd.DataFrame({"arm": arms, "y": rng.normal(0, 1, 4000) + (arms != "A") * 1.0})
    table = analyse_experiment(members, "arm", "A", ["y"])
    variants = table[table["variant"] != "A"]
    assert (variants["srm_p"] < SRM_ALPHA).all()
    assert (variants["verdict"] == "do not ship").all()
    assert variants["verdict_reason"].str.startswith("do not trust: sample-ratio mismatch").all()
    assert (variants["lift_abs_ci_low"] > 0).all()  # the lift itself is still reported
    planned = analyse_experiment(
        members, "arm", "A", ["y"], expected_shares={"A": 0.38, "B": 0.33, "C": 0.29}
    )
    assert (planned.loc[planned["variant"] != "A", "verdict"] == "ship").all()


# ------------------------------------------------------------------------------------------
# multiple testing
# ------------------------------------------------------------------------------------------
def test_holm_and_bh_match_statsmodels():
    p = np.array([0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.5, 0.9])
    np.testing.assert_allclose(adjust_pvalues(p, "holm"), multipletests(p, method="holm")[1])
    np.testing.assert_allclose(adjust_pvalues(p, "fdr_bh"), multipletests(p, method="fdr_bh")[1])
    with_nan = adjust_pvalues([0.01, np.nan, 0.04], "holm")
    assert math.isnan(with_nan[1])
    np.testing.assert_allclose(with_nan[[0, 2]], multipletests([0.01, 0.04], method="holm")[1])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=20))
def test_adjusted_pvalues_never_below_raw(p):
    holm, bh = adjust_pvalues(p, "holm"), adjust_pvalues(p, "fdr_bh")
    raw = np.asarray(p)
    assert (holm >= raw - 1e-12).all() and (bh >= raw - 1e-12).all()
    assert (holm >= bh - 1e-12).all() and (holm <= 1).all()


def test_analyse_experiment_adjusts_over_all_comparisons():
    rng = np.random.default_rng(11)
    members = pd.concat(
        [
            _experiment(rng, 400, 0.2, 0.0, 10, 0.0, ("ctl", "v1")),
            _experiment(rng, 400, 0.2, 0.0, 10, 0.0, ("ctl", "v2")).query("group == 'v2'"),
        ]
    )
    table = analyse_experiment(members, "group", "ctl", ["converted", "revenue"])
    variants = table[table["variant"] != "ctl"]
    assert len(variants) == 4
    np.testing.assert_allclose(variants["p_adj_holm"], multipletests(variants["p_value"], method="holm")[1])
    np.testing.assert_allclose(variants["p_adj_bh"], multipletests(variants["p_value"], method="fdr_bh")[1])


# ------------------------------------------------------------------------------------------
# CUPED
# ------------------------------------------------------------------------------------------
def test_cuped_reduces_variance_and_is_unbiased():
    """Deng et al. (2013): with a pre-period covariate correlated 0.8 with the metric, CUPED
    removes about 64% of the variance; over 200 seeded experiments its lift estimates stay
    centred on the truth and vary much less than the raw ones."""
    rng = np.random.default_rng(2013)
    true_lift, n = 0.3, 500
    raw_est, cuped_est = [], []
    for _ in range(200):
        treat = np.repeat([0, 1], n)
        x = rng.normal(10, 2, 2 * n)
        y = 5 + 0.8 * (x - 10) + rng.normal(0, 1.2, 2 * n) + true_lift * treat
        res = cuped(y, x, treat)
        raw_est.append(y[treat == 1].mean() - y[treat == 0].mean())
        cuped_est.append(res.adjusted[treat == 1].mean() - res.adjusted[treat == 0].mean())
    raw_est, cuped_est = np.array(raw_est), np.array(cuped_est)
    assert res.theta == pytest.approx(0.8, abs=0.05)
    assert res.variance_reduction > 0.3
    assert cuped_est.std() < 0.7 * raw_est.std()
    se = cuped_est.std(ddof=1) / math.sqrt(len(cuped_est))
    assert abs(cuped_est.mean() - true_lift) < 3 * se


def test_cuped_theta_matches_regression_and_ignores_treatment_shift():
    rng = np.random.default_rng(5)
    x = rng.normal(0, 1, 1000)
    groups = np.repeat(["a", "b"], 500)
    y = 2.0 * x + rng.normal(0, 0.5, 1000) + (groups == "b") * 5.0
    pooled = cuped(y, x)  # overall theta: the shift between arms barely matters when x is balanced
    within = cuped(y, x, groups)
    slope = np.polyfit(
        x - np.where(groups == "b", x[500:].mean(), x[:500].mean()),
        y - np.where(groups == "b", y[500:].mean(), y[:500].mean()),
        1,
    )[0]
    assert within.theta == pytest.approx(slope, rel=1e-9)
    assert pooled.theta == pytest.approx(2.0, abs=0.15)
    # the adjusted arm means differ from the raw ones only by theta * (arm mean of x - overall mean)
    adj_diff = within.adjusted[500:].mean() - within.adjusted[:500].mean()
    raw_diff = y[500:].mean() - y[:500].mean()
    assert adj_diff == pytest.approx(raw_diff - within.theta * (x[500:].mean() - x[:500].mean()), rel=1e-9)
    assert cuped([1.0, 2.0, 3.0], [4.0, 4.0, 4.0]).theta == 0.0  # constant covariate: no adjustment


def test_analyse_experiment_with_pre_col_narrows_intervals():
    rng = np.random.default_rng(99)
    n = 2000
    group = np.repeat(["control", "variant"], n)
    pre = rng.gamma(2.0, 20.0, 2 * n)
    spend = 0.9 * pre + rng.normal(0, 10, 2 * n) + (group == "variant") * 2.0
    members = pd.DataFrame({"group": group, "pre": pre, "spend": spend})
    plain = analyse_experiment(members, "group", "control", ["spend"]).iloc[1]
    adjusted = analyse_experiment(members, "group", "control", ["spend"], pre_col="pre").iloc[1]
    width = lambda r: r["lift_abs_ci_high"] - r["lift_abs_ci_low"]  # noqa: E731
    assert width(adjusted) < 0.5 * width(plain)
    assert adjusted["value"] == plain["value"]  # value stays the raw arm mean
    assert adjusted["lift_abs_ci_low"] < 2.0 < adjusted["lift_abs_ci_high"]
    assert adjusted["mde"] < plain["mde"]


# ------------------------------------------------------------------------------------------
# cross-checks against scipy / statsmodels
# ------------------------------------------------------------------------------------------
def test_compare_means_matches_scipy_and_sums_match_arrays():
    rng = np.random.default_rng(1)
    a, b = rng.normal(5, 2, 300), rng.normal(5.4, 3, 250)
    res = compare_means_arrays(a, b, level=0.9)
    ref = stats.ttest_ind(b, a, equal_var=False)
    assert res.statistic == pytest.approx(ref.statistic, rel=1e-10)
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-10)
    assert res.df == pytest.approx(ref.df, rel=1e-10)
    ci = ref.confidence_interval(0.9)
    assert (res.lift_abs_ci_low, res.lift_abs_ci_high) == pytest.approx((ci.low, ci.high), rel=1e-10)
    from_sums = compare_means(a.sum(), (a**2).sum(), a.size, b.sum(), (b**2).sum(), b.size, level=0.9)
    assert from_sums.lift_rel_ci_low == pytest.approx(res.lift_rel_ci_low, rel=1e-8)
    assert from_sums.p_value == pytest.approx(res.p_value, rel=1e-8)
    t, p, df = welch_t(b, a)
    assert (t, p, df) == pytest.approx((ref.statistic, ref.pvalue, ref.df))


def test_compare_proportions_matches_statsmodels_wald():
    res = compare_proportions(120, 1000, 150, 1010, level=0.95)
    sm = sm_proportion.test_proportions_2indep(150, 1010, 120, 1000, method="wald", compare="diff")
    lo, hi = sm_proportion.confint_proportions_2indep(150, 1010, 120, 1000, method="wald", compare="diff")
    assert res.p_value == pytest.approx(sm.pvalue, rel=1e-10)
    assert (res.lift_abs_ci_low, res.lift_abs_ci_high) == pytest.approx((lo, hi), rel=1e-10)
    assert res.df == math.inf and res.method == "z (proportions)"


def test_chi2_proportions_matches_statsmodels_and_r_yates():
    res = chi2_proportions([15, 25, 40], [50, 50, 90])
    stat, p, _ = sm_proportion.proportions_chisquare(np.array([15, 25, 40]), np.array([50, 50, 90]))
    assert (res.statistic, res.p_value) == pytest.approx((stat, p), rel=1e-12)
    # k = 2 with R's default Yates correction, by hand: (|15-20| - .5)^2 * (2/20 + 2/30) = 3.375
    yates = chi2_proportions([15, 25], [50, 50], correction=True)
    assert yates.statistic == pytest.approx(3.375, rel=1e-12)
    assert yates.p_value == pytest.approx(stats.chi2.sf(3.375, 1), rel=1e-12)
    assert chi2_proportions([15, 25], [50, 50]).statistic == pytest.approx(4.1666666, rel=1e-6)


def test_beta_binomial_exact_quadrature_and_monte_carlo_agree():
    closed = beta_binomial(30, 250, 42, 260)  # uniform prior: Evan Miller's closed form
    quad = beta_binomial(30, 250, 42, 260, prior=(1 + 1e-9, 1 + 1e-9))  # non-integer: quadrature
    mc = beta_binomial(30, 250, 42, 260, draws=400_000, seed=42)
    assert quad.prob_b_beats_a == pytest.approx(closed.prob_b_beats_a, abs=1e-7)
    assert quad.expected_loss_b == pytest.approx(closed.expected_loss_b, abs=1e-8)
    assert mc.prob_b_beats_a == pytest.approx(closed.prob_b_beats_a, abs=3e-3)
    assert mc.expected_loss_a == pytest.approx(closed.expected_loss_a, abs=3e-4)
    assert mc.expected_loss_b == pytest.approx(closed.expected_loss_b, abs=3e-4)
    # expected gain minus expected loss is the mean difference
    assert closed.expected_loss_a - closed.expected_loss_b == pytest.approx(closed.difference, abs=1e-10)
    assert beta_binomial(30, 250, 42, 260, draws=1000, seed=1) == beta_binomial(
        30, 250, 42, 260, draws=1000, seed=1
    )
    swapped = beta_binomial(42, 260, 30, 250)
    assert swapped.prob_b_beats_a == pytest.approx(1 - closed.prob_b_beats_a, abs=1e-12)


def test_chance_to_win_gaussian_absolute_and_losses():
    res = chance_to_win_gaussian(10.0, 9.0, 400, 10.5, 9.0, 400, relative=False)
    sd = math.sqrt(9 / 400 * 2)
    assert res.chance_to_win == pytest.approx(stats.norm.sf(0, 0.5, sd))
    assert res.expected_loss_a - res.expected_loss_b == pytest.approx(0.5)
    equal = chance_to_win_gaussian(1.0, 1.0, 10, 1.0, 1.0, 10)
    assert equal.chance_to_win == pytest.approx(0.5)


def test_sample_size_power_and_mde_are_consistent():
    for method in ("arcsine", "pooled", "unpooled"):
        total = sample_size_proportions(0.10, 0.02, alpha=0.05, power=0.8, method=method)
        per_arm = total // 2
        assert power_proportions(0.10, 0.02, per_arm, method=method) >= 0.8 - 1e-6
        assert power_proportions(0.10, 0.02, per_arm - 50, method=method) < 0.8
        mde = minimum_detectable_effect(per_arm, per_arm, baseline=0.10, power=0.8, method=method)
        assert mde == pytest.approx(0.02, abs=2e-5)
    one_sided = sample_size_proportions(0.10, 0.02, two_sided=False)
    assert one_sided < sample_size_proportions(0.10, 0.02)
    unequal = sample_size_proportions(0.10, 0.02, ratio=2.0)
    assert unequal > sample_size_proportions(0.10, 0.02)
    sd_mde = minimum_detectable_effect(1000, 1000, sd=2.0)
    assert sd_mde == pytest.approx((stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) * 2.0 * math.sqrt(2 / 1000))
    assert math.isnan(minimum_detectable_effect(3, 3, baseline=0.5, power=0.99))


# ------------------------------------------------------------------------------------------
# verdicts and the table
# ------------------------------------------------------------------------------------------
def _fixed(values: dict[str, list[float]]) -> pd.DataFrame:
    return pd.concat([pd.DataFrame({"group": g, "y": v}) for g, v in values.items()], ignore_index=True)


def test_verdicts_in_plain_words():
    rng = np.random.default_rng(0)
    n = 3000
    members = pd.DataFrame(
        {
            "group": np.repeat(["ctl", "better", "worse", "same"], n),
            "y": np.concatenate(
                [rng.normal(10, 2, n), rng.normal(10.5, 2, n), rng.normal(9.5, 2, n), rng.normal(10, 2, n)]
            ),
        }
    )
    table = analyse_experiment(members, "group", "ctl", ["y"]).set_index("variant")
    assert table.loc["ctl", "verdict"] == "control" and math.isnan(table.loc["ctl", "lift_abs"])
    assert table.loc["better", "verdict"] == "ship"
    assert "Holm-adjusted p" in table.loc["better", "verdict_reason"]
    assert table.loc["worse", "verdict"] == "do not ship"
    assert table.loc["worse", "verdict_reason"].startswith("y down")
    assert table.loc["same", "verdict"] == "inconclusive"
    assert (
        "underpowered" in table.loc["same", "verdict_reason"]
        or "not significant" in table.loc["same", "verdict_reason"]
    )


def test_underpowered_reason_names_the_mde():
    """6/60 vs 7/60 conversions and a 0.05 shift of a mean with sd 3: far below what 60 per arm
    can detect, so the reason says "underpowered" and quotes the MDE."""
    spread = 3.0 * stats.norm.ppf((np.arange(60) + 0.5) / 60)
    members = pd.DataFrame(
        {
            "group": np.repeat(["control", "treatment"], 60),
            "converted": np.r_[np.ones(6), np.zeros(54), np.ones(7), np.zeros(53)].astype(int),
            "revenue": np.r_[10 + spread, 10.05 + spread[::-1]],
        }
    )
    table = analyse_experiment(members, "group", "control", ["converted", "revenue"])
    rows = table[table["variant"] == "treatment"].set_index("metric")
    for metric in ("converted", "revenue"):
        row = rows.loc[metric]
        assert row["verdict"] == "inconclusive"
        assert abs(row["lift_abs"]) < row["mde"]
        assert row["verdict_reason"].startswith("underpowered")
        assert f"{row['mde']:.4g}" in row["verdict_reason"]


def test_table_shape_binary_detection_and_missing_values():
    members = pd.DataFrame(
        {
            "group": ["a"] * 6 + ["b"] * 6,
            "flag": [True, False, False, True, False, False, True, True, False, True, True, False],
            "amount": [1.0, 2.0, np.nan, 4.0, 5.0, 6.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
        }
    )
    table = analyse_experiment(members, "group", "a", ["flag", "amount"], level=0.9, experiment="exp-1")
    assert list(table.columns) == RESULT_COLUMNS
    assert table["experiment"].eq("exp-1").all()
    assert table["n"].tolist() == [6, 6, 5, 6]  # the missing amount is left out
    flag = table[(table["metric"] == "flag") & (table["variant"] == "b")].iloc[0]
    direct = compare_proportions(2, 6, 4, 6, level=0.9)
    assert flag["lift_abs_ci_low"] == pytest.approx(direct.lift_abs_ci_low)  # treated as a rate
    assert flag["chance_to_win"] == pytest.approx(beta_binomial(2, 6, 4, 6).prob_b_beats_a)
    amount = table[(table["metric"] == "amount") & (table["variant"] == "b")].iloc[0]
    assert amount["value"] == pytest.approx(4.5)
    assert amount["lift_abs"] == pytest.approx(4.5 - 3.6)


def test_metric_without_variation_is_inconclusive():
    members = _fixed({"a": [0, 0, 0, 0], "b": [0, 0, 0, 0]})
    row = analyse_experiment(members, "group", "a", ["y"]).iloc[1]
    assert row["verdict"] == "inconclusive" and "does not vary" in row["verdict_reason"]


# ------------------------------------------------------------------------------------------
# errors a user can meet
# ------------------------------------------------------------------------------------------
def test_unknown_control_is_a_clear_error():
    members = _fixed({"a": [1.0, 2.0], "b": [2.0, 3.0]})
    with pytest.raises(
        ValueError, match=r"control arm 'ctrl' is not a value of 'group'; arms are \['a', 'b'\]"
    ):
        analyse_experiment(members, "group", "ctrl", ["y"])


def test_empty_group_is_a_clear_error():
    members = _fixed({"a": [1.0, 2.0], "b": [2.0, 3.0]})
    members["group"] = pd.Categorical(members["group"], categories=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"arm\(s\) \['c'\] of 'group' have no members \(empty group\)"):
        analyse_experiment(members, "group", "a", ["y"])
    plain = _fixed({"a": [1.0, 2.0], "b": [2.0, 3.0]})
    with pytest.raises(
        ValueError, match=r"expected_shares names arm\(s\) \['c'\] with no members \(empty group\)"
    ):
        analyse_experiment(plain, "group", "a", ["y"], expected_shares={"a": 1, "b": 1, "c": 1})
    with pytest.raises(ValueError, match=r"arm 'b' has no non-missing values of metric 'y' \(empty group\)"):
        analyse_experiment(_fixed({"a": [1.0, 2.0], "b": [np.nan, np.nan]}), "group", "a", ["y"])
    with pytest.raises(ValueError, match="a \\(control values\\) is empty"):
        compare_means_arrays([], [1.0, 2.0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(group_col="arm"), "group column 'arm' is not in members"),
        (dict(metrics=["nope"]), r"column\(s\) \['nope'\] not in members"),
        (dict(metrics=[]), "metrics is empty"),
        (dict(level=95), "level must be between 0 and 1"),
        (dict(pre_col="missing"), r"column\(s\) \['missing'\] not in members"),
        (dict(expected_shares={"a": 1}), r"expected_shares has no share for arm\(s\) \['b'\]"),
        (dict(expected_shares=[0.5, 0.5]), "expected_shares must be a mapping"),
        (dict(metrics=["label"]), "metric 'label' is not numeric"),
    ],
)
def test_analyse_experiment_argument_errors(kwargs, message):
    members = _fixed({"a": [1.0, 2.0, 3.0], "b": [2.0, 3.0, 4.0]})
    members["label"] = "x"
    args = dict(members=members, group_col="group", control="a", metrics=["y"]) | kwargs
    with pytest.raises(ValueError, match=message):
        analyse_experiment(**args)


def test_more_analyse_experiment_errors():
    with pytest.raises(ValueError, match="members is empty"):
        analyse_experiment(pd.DataFrame({"group": [], "y": []}), "group", "a", ["y"])
    with pytest.raises(ValueError, match="only the control arm 'a' is present"):
        analyse_experiment(_fixed({"a": [1.0, 2.0]}), "group", "a", ["y"])
    missing_arm = _fixed({"a": [1.0, 2.0], "b": [2.0, 3.0]})
    missing_arm.loc[0, "group"] = None
    with pytest.raises(ValueError, match="group column 'group' has 1 missing values"):
        analyse_experiment(missing_arm, "group", "a", ["y"])
    with_pre = _fixed({"a": [1.0, 2.0], "b": [2.0, 3.0]}).assign(pre=[1.0, np.nan, 2.0, 3.0])
    with pytest.raises(ValueError, match="pre-period column 'pre' has missing"):
        analyse_experiment(with_pre, "group", "a", ["y"], pre_col="pre")
    with pytest.raises(ValueError, match="arms need at least 2 members"):
        analyse_experiment(_fixed({"a": [1.5], "b": [2.5, 3.5]}), "group", "a", ["y"])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: srm_test([10, 20], [1.0]), "equally long"),
        (lambda: srm_test([10], [1.0]), "at least two arms"),
        (lambda: srm_test([10, -1], [1, 1]), "non-negative whole numbers"),
        (lambda: srm_test([10, 10], [1, 0]), "expected_shares must all be positive"),
        (lambda: srm_test([0, 0], [1, 1]), "all zero"),
        (lambda: compare_means(1, 1, 1, 2, 4, 3), "n_a must be at least 2"),
        (lambda: compare_means(1, 1, 2.5, 2, 4, 3), "n_a must be a whole number"),
        (lambda: compare_means_arrays([1.0, np.nan], [1.0, 2.0]), "contains 1 missing values"),
        (lambda: compare_means_arrays([1.0], [1.0, 2.0]), "at least 2 observations"),
        (lambda: compare_proportions(11, 10, 5, 10), "successes cannot exceed trials"),
        (lambda: compare_proportions(1, 10, 5, 10, method="t"), "method must be 'z' or 'welch'"),
        (lambda: compare_proportions(1, 0, 5, 10), "n_a must be at least 1"),
        (lambda: welch_t([1.0], [1.0, 2.0]), "at least 2 observations"),
        (lambda: chi2_proportions([1, 2], [10]), "equally long"),
        (lambda: chi2_proportions([11, 2], [10, 10]), "0 <= successes <= totals"),
        (lambda: chi2_proportions([0, 0], [10, 10]), "same outcome"),
        (lambda: chance_to_win_gaussian(0.0, 1.0, 10, 1.0, 1.0, 10), "control mean is 0"),
        (lambda: beta_binomial(1, 10, 2, 10, prior=(0, 1)), "prior must be two positive numbers"),
        (lambda: beta_binomial(1, 10, 12, 10), "successes cannot exceed trials"),
        (lambda: sample_size_proportions(1.2, 0.01), r"baseline must be a rate in \[0, 1\)"),
        (lambda: sample_size_proportions(0.3, 0.0), "mde_abs must be a non-zero"),
        (lambda: sample_size_proportions(0.95, 0.1), "baseline \\+ mde_abs must be a rate"),
        (lambda: sample_size_proportions(0.3, 0.01, power=1.5), "power must be strictly between 0 and 1"),
        (
            lambda: sample_size_proportions(0.3, 0.01, method="exact"),
            "method must be 'arcsine', 'pooled' or 'unpooled'",
        ),
        (lambda: sample_size_proportions(0.3, 0.01, ratio=0), "ratio"),
        (lambda: power_proportions(0.3, 0.01, 0), "arm sizes must be positive"),
        (lambda: minimum_detectable_effect(100), "give exactly one of baseline= .* or sd="),
        (lambda: minimum_detectable_effect(100, baseline=0.1, sd=1.0), "give exactly one of"),
        (lambda: minimum_detectable_effect(100, sd=-1.0), "sd must be a non-negative number"),
        (lambda: adjust_pvalues([0.1], method="bonferroni"), "method must be 'holm' or 'fdr_bh'"),
        (lambda: adjust_pvalues([1.5]), "between 0 and 1"),
        (lambda: cuped([1.0, 2.0], [1.0]), "equally long"),
        (lambda: cuped([1.0, 2.0], [1.0, 2.0], ["a"]), "groups must be as long as y"),
        (lambda: compare_means_arrays([1, 2], [3, 4], level=1.0), "level must be between 0 and 1"),
    ],
)
def test_function_argument_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
