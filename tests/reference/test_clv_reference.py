"""crmbook.clv against published CLV results on the CDNOW sample (see shared REFERENCE.md, § CLV).

Data: tests/data/cdnow/ (Fader & Hardie's CDNOW 1/10 sample, 2,357 customers, calibration weeks
1-39, time unit = weeks; see the README there). Published estimates are rounded to 3 decimals
(Gamma-Gamma: 2), so "within 0.5 %" compares our estimate with the rounded value, and
log-likelihoods must agree within 0.1.

Sources:
- BG/NBD and its Pareto/NBD comparison: Fader, Hardie & Lee (2005), "'Counting Your Customers'
  the Easy Way: An Alternative to the Pareto/NBD Model", Marketing Science 24(2), 275-284.
- MBG/NBD: Batislam, Denizel & Filiztekin (2007), IJRM 24(3); values as reproduced by the R
  package BTYDplus.
- Gamma-Gamma: Fader, Hardie & Lee (2005), "RFM and CLV: Using Iso-Value Curves for Customer Base
  Analysis", Journal of Marketing Research 42(4), 415-430.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crmbook import clv

DATA = Path(__file__).resolve().parents[1] / "data" / "cdnow"
CALIBRATION_END = pd.Timestamp("1997-09-30")  # end of week 39
HOLDOUT_END = pd.Timestamp("1998-06-30")  # end of week 78
WEEK = pd.Timedelta(days=7)


@pytest.fixture(scope="module")
def summary() -> pd.DataFrame:
    return pd.read_csv(DATA / "cdnow_customers_summary.csv")


@pytest.fixture(scope="module")
def spend() -> pd.DataFrame:
    return pd.read_csv(DATA / "cdnow_customers_summary_with_transactions.csv")


@pytest.fixture(scope="module")
def bgnbd(summary) -> clv.BetaGeo:
    return clv.BetaGeo().fit(summary["frequency"], summary["recency"], summary["T"])


def assert_estimates(model, published: dict[str, float], log_likelihood: float) -> None:
    assert model.converged_, model.message_
    for name, value in published.items():
        estimate = model.params_[name]
        assert abs(estimate / value - 1) <= 0.005, f"{name}: {estimate:.5f} vs published {value}"
    assert abs(model.log_likelihood_ - log_likelihood) <= 0.1, f"LL {model.log_likelihood_:.3f} vs {log_likelihood}"


def test_bgnbd_estimates(bgnbd):
    """BG/NBD on the CDNOW calibration data: r 0.243, alpha 4.414, a 0.793, b 2.426, LL -9582.4
    (Fader, Hardie & Lee 2005, Marketing Science 24(2), section 4)."""
    assert_estimates(bgnbd, {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}, -9582.4)
    table = bgnbd.summary()
    assert list(table.columns) == ["model", "param", "estimate", "std_err"]
    assert np.all(np.isfinite(table["std_err"])) and np.all(table["std_err"] > 0)


def test_pareto_nbd_estimates(summary):
    """Pareto/NBD on the CDNOW calibration data: r 0.553, alpha 10.578, s 0.606, beta 11.669,
    LL -9595.0 (Fader, Hardie & Lee 2005, Marketing Science 24(2), the Pareto/NBD comparison)."""
    model = clv.ParetoNBD().fit(summary["frequency"], summary["recency"], summary["T"])
    assert_estimates(model, {"r": 0.553, "alpha": 10.578, "s": 0.606, "beta": 11.669}, -9595.0)


def test_mbgnbd_estimates(summary):
    """MBG/NBD on the CDNOW calibration data: r 0.525, alpha 6.183, a 0.891, b 1.614, LL -9582.1
    (Batislam, Denizel & Filiztekin 2007; values as reproduced by the R package BTYDplus)."""
    model = clv.ModifiedBetaGeo().fit(summary["frequency"], summary["recency"], summary["T"])
    assert_estimates(model, {"r": 0.525, "alpha": 6.183, "a": 0.891, "b": 1.614}, -9582.1)


def test_gamma_gamma_estimates(spend):
    """Gamma-Gamma on the 946 repeat buyers' x and zbar: p 6.25, q 3.74, gamma 15.44, LL -4055.9
    (Fader, Hardie & Lee 2005, "RFM and CLV: Using Iso-Value Curves", JMR 42(4))."""
    buyers = spend[spend["x"] > 0]
    assert len(buyers) == 946
    model = clv.GammaGamma().fit(buyers["x"], buyers["zbar"])
    assert_estimates(model, {"p": 6.25, "q": 3.74, "gamma": 15.44}, -4055.9)


def test_bgnbd_example_customer(bgnbd):
    """Customer x = 2, t_x = 30.43, T = 38.86 expects 1.226 purchases in the next 39 weeks
    (Fader, Hardie & Lee 2005, Marketing Science 24(2), section 4)."""
    expected = bgnbd.expected_purchases(39, 2, 30.43, 38.86)
    assert expected.shape == (1,)
    assert abs(expected[0] - 1.226) <= 0.001


def test_penalty_off_by_default_and_applied_when_asked(summary, bgnbd):
    """REFERENCE.md: an L2 penalty of 0.001 (lifetimes' `penalizer_coef` convention) moves a, b to
    about 0.50 / 1.32, while the published (unpenalised) fit is the default."""
    assert clv.BetaGeo().penalizer == 0.0
    assert abs(bgnbd.params_["a"] - 0.793) < 0.004 and abs(bgnbd.params_["b"] - 2.426) < 0.012
    penalised = clv.BetaGeo(penalizer=0.001).fit(summary["frequency"], summary["recency"], summary["T"])
    assert penalised.converged_, penalised.message_
    assert abs(penalised.params_["a"] - 0.50) < 0.01
    assert abs(penalised.params_["b"] - 1.32) < 0.01
    # lifetimes 0.11.3 itself (BetaGeoFitter(penalizer_coef=0.001) on this summary, run 2026-11-24
    # in a separate venv with pandas 2.3.3): the same penalty, so the same optimum
    lifetimes = {"r": 0.24277626788, "alpha": 4.40527805581, "a": 0.49844648747, "b": 1.32324422570}
    for name, value in lifetimes.items():
        assert penalised.params_[name] == pytest.approx(value, rel=1e-4), name
    assert penalised.log_likelihood_ < bgnbd.log_likelihood_  # the penalty costs likelihood


def test_bgnbd_p_alive_is_one_without_repeat_purchase(bgnbd, summary):
    """BG/NBD P(alive | x = 0) = 1 exactly: drop-out happens only after a repeat purchase
    (Fader, Hardie & Lee 2005, eq. 11 with the x = 0 indicator)."""
    none = summary[summary["frequency"] == 0]
    assert (bgnbd.p_alive(none["frequency"], none["recency"], none["T"]) == 1.0).all()
    some = summary[summary["frequency"] > 0]
    alive = bgnbd.p_alive(some["frequency"], some["recency"], some["T"])
    assert ((alive > 0) & (alive < 1)).all()


def test_bgnbd_expected_purchases_new_matches_simulation(bgnbd):
    """E[X(t)] (Fader, Hardie & Lee 2005, eq. 9) against a seeded Monte Carlo simulation of the
    BG/NBD story with the fitted parameters: lambda ~ Gamma(r, alpha), p ~ Beta(a, b), X(t) =
    min(Poisson(lambda t), number of purchases until the first drop-out coin)."""
    p = bgnbd.params_
    rng = np.random.default_rng(2005)
    n = 400_000
    lam = rng.gamma(p["r"], 1.0 / p["alpha"], n)
    drop = rng.beta(p["a"], p["b"], n)
    purchases_until_dropout = rng.geometric(drop)
    for t in (10.0, 39.0, 78.0):
        simulated = np.minimum(rng.poisson(lam * t), purchases_until_dropout)
        std_error = simulated.std() / np.sqrt(n)
        expected = bgnbd.expected_purchases_new(t)
        assert abs(simulated.mean() - expected) < 4 * std_error, (t, simulated.mean(), expected)
        share = np.bincount(simulated, minlength=3)[:3] / n
        assert np.allclose(bgnbd.prob_n_purchases(np.arange(3), t), share, atol=0.004)


def summary_from_transactions(path: Path) -> tuple[pd.DataFrame, pd.Series]:
    """Calibration summary (weeks) and holdout repeat purchases from CDNOW_sample.txt.

    Repeat purchases are counted per purchase day (same-day rows are one purchase), as in the
    published summary; calibration ends 1997-09-30, the holdout 1998-06-30.
    """
    rows = pd.read_csv(
        path, sep=r"\s+", header=None, names=["master_id", "customer", "date", "cds", "dollars"], dtype={"date": str}
    )
    days = rows.assign(date=pd.to_datetime(rows["date"], format="%Y%m%d"))[["customer", "date"]].drop_duplicates()
    first = days.groupby("customer")["date"].min()
    calibration = days[days["date"] <= CALIBRATION_END].groupby("customer")["date"]
    table = pd.DataFrame(
        {
            "frequency": calibration.count() - 1,
            "recency": (calibration.max() - first) / WEEK,
            "T": (CALIBRATION_END - first) / WEEK,
        }
    )
    in_holdout = (days["date"] > CALIBRATION_END) & (days["date"] <= HOLDOUT_END)
    holdout = days[in_holdout].groupby("customer").size().reindex(table.index, fill_value=0)
    return table, holdout


def test_cumulative_repeat_transactions_at_week_78(bgnbd, summary):
    """Calibration/holdout tracking (REFERENCE.md; Fader, Hardie & Lee 2005, the figure of
    cumulative repeat transactions, actual vs predicted, weeks 1-78): at the end of week 78 the
    BG/NBD prediction sum_i E[X(T_i + 39)] is within 5 % of the actual count."""
    table, holdout = summary_from_transactions(DATA / "CDNOW_sample.txt")
    published = summary.set_index("ID")
    assert len(table) == 2357 and (table.index == published.index).all()
    assert (table["frequency"] == published["frequency"]).all()  # the summary is rebuilt exactly
    assert np.allclose(table["recency"], published["recency"], atol=0.005)
    assert np.allclose(table["T"], published["T"], atol=0.005)
    holdout_weeks = (HOLDOUT_END - CALIBRATION_END) / WEEK  # 39 weeks
    predicted = bgnbd.expected_purchases_new(table["T"].to_numpy() + holdout_weeks).sum()
    actual = table["frequency"].sum() + holdout.sum()
    assert actual == 4339
    assert abs(predicted / actual - 1) < 0.05, (predicted, actual)
