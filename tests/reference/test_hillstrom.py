"""The Hillstrom example (params/examples/hillstrom.yaml, data/examples/hillstrom/) through
ingestion, cleaning and 06 performance, in process, against the published per-arm figures:

Kevin Hillstrom, MineThatData E-Mail Analytics And Data Mining Challenge (2008):
Mens E-Mail n 21,307, visit 18.28%, conversion 1.25%; Womens E-Mail n 21,387, visit 15.14%,
conversion 0.88%; No E-Mail n 21,306, visit 10.62%, conversion 0.57% (rates to two decimals
of a percent)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from crmbook import cleaning, config, experiments, ingestion, performance
from tests.conftest import ROOT

PARAMS = ROOT / "params" / "examples" / "hillstrom.yaml"
PUBLISHED = {  # arm: (n, visit rate %, conversion rate %)
    "Mens E-Mail": (21_307, 18.28, 1.25),
    "Womens E-Mail": (21_387, 15.14, 0.88),
    "No E-Mail": (21_306, 10.62, 0.57),
}
CAMPAIGN = "hillstrom_2008"


@pytest.fixture(scope="module")
def hillstrom(tmp_path_factory):
    cfg = config.load(PARAMS)
    tables = cleaning.clean(ingestion.ingest(cfg)[0], cfg).tables
    assert set(tables) == {"campaign_members"}
    result = performance.evaluate(tables, cfg, tmp_path_factory.mktemp("reports") / "run")
    return {"cfg": cfg, "members": tables["campaign_members"], "result": result}


def test_the_example_file_is_the_reference_copy():
    assert (ROOT / "data" / "examples" / "hillstrom" / "hillstrom.csv").read_bytes() == \
        (ROOT / "tests" / "data" / "hillstrom" / "hillstrom.csv").read_bytes()


def test_every_row_survives_ingestion_and_cleaning(hillstrom):
    members = hillstrom["members"]
    assert len(members) == 64_000 and members["customer_id"].is_unique
    assert set(members["campaign_id"]) == {CAMPAIGN}


@pytest.mark.parametrize("arm", sorted(PUBLISHED))
def test_funnel_reproduces_the_published_per_arm_rates(hillstrom, arm):
    n, visit, conversion = PUBLISHED[arm]
    funnel = hillstrom["result"].funnels.query("campaign_id == @CAMPAIGN and group == @arm").set_index("stage")
    assert list(funnel.index) == ["members", "visited", "converted"]
    assert funnel.loc["members", "customers"] == n
    assert round(funnel.loc["visited", "pct_of_first"] * 100, 2) == visit
    assert round(funnel.loc["converted", "pct_of_first"] * 100, 2) == conversion


@pytest.mark.parametrize("arm", sorted(PUBLISHED))
def test_experiment_table_reports_the_same_rates(hillstrom, arm):
    n, visit, conversion = PUBLISHED[arm]
    table = hillstrom["result"].experiments.query("experiment == @CAMPAIGN and variant == @arm").set_index("metric")
    assert (table["n"] == n).all()
    assert round(table.loc["visited", "value"] * 100, 2) == visit
    assert round(table.loc["converted", "value"] * 100, 2) == conversion


def test_control_is_no_email_and_both_email_arms_are_compared(hillstrom):
    (plan,) = hillstrom["result"].plans
    assert plan.control == "No E-Mail" and plan.variants == ("Mens E-Mail", "Womens E-Mail")
    assert plan.metrics == ("visited", "converted", "revenue") and plan.pre_col == "pre_period_value"
    # the default rule picks the same control without params
    assert performance.default_control({arm: n for arm, (n, _, _) in PUBLISHED.items()}) == "No E-Mail"


@pytest.mark.parametrize("arm", ["Mens E-Mail", "Womens E-Mail"])
@pytest.mark.parametrize("metric", ["visited", "converted", "revenue"])
def test_lifts_with_intervals_and_adjusted_p_values(hillstrom, arm, metric):
    """Both e-mails lift visits, conversions and spend: every interval excludes zero, the lift
    matches the raw difference of arm means (CUPED moves it by less than 5% of itself in a
    randomised test), and the adjusted p-values are ordered p <= BH <= Holm."""
    members = hillstrom["members"]
    row = hillstrom["result"].experiments.query("variant == @arm and metric == @metric").iloc[0]
    raw = members.loc[members["group"] == arm, metric].astype(float).mean() - \
        members.loc[members["group"] == "No E-Mail", metric].astype(float).mean()
    assert row["lift_abs"] == pytest.approx(raw, rel=0.05)
    assert 0 < row["lift_abs_ci_low"] < row["lift_abs"] < row["lift_abs_ci_high"]
    assert 0 < row["lift_rel_ci_low"] < row["lift_rel"] < row["lift_rel_ci_high"]
    assert row["p_value"] <= row["p_adj_bh"] <= row["p_adj_holm"] < 0.05
    assert row["verdict"] == "ship"


def test_sample_ratio_p_value_is_the_chi_square_on_the_arm_sizes(hillstrom):
    sizes = [n for n, _, _ in PUBLISHED.values()]
    expected = stats.chisquare(sizes).pvalue
    srm = hillstrom["result"].experiments["srm_p"].unique()
    assert len(srm) == 1 and srm[0] == pytest.approx(expected, rel=1e-12)
    assert srm[0] > experiments.SRM_ALPHA  # a clean one-third split


def test_incrementality_is_the_rate_difference_times_the_arm(hillstrom):
    roi = hillstrom["result"].roi.set_index("variant")
    mens = roi.loc["Mens E-Mail"]
    assert mens["incremental_conversions"] == pytest.approx((267 / 21_307 - 122 / 21_306) * 21_307, abs=1e-4)
    assert mens["incremental_conversions_ci_low"] > 0
    assert np.isnan(mens["cost"]) and np.isnan(mens["roi"])  # the dataset has no campaign costs
    total = roi.loc[performance.ALL_VARIANTS]
    assert total["incremental_revenue"] == pytest.approx(roi.loc["Mens E-Mail", "incremental_revenue"]
                                                         + roi.loc["Womens E-Mail", "incremental_revenue"], abs=1e-3)


def test_plain_words_verdicts_and_a_graceful_summary(hillstrom):
    cfg, result = hillstrom["cfg"], hillstrom["result"]
    lines = performance.experiment_verdicts(result, cfg)
    assert len(lines) == 2 and all("roll it out" in line for line in lines)
    assert lines[0].startswith("hillstrom_2008 · Mens E-Mail vs No E-Mail: visit rate 18.28% vs 10.62%")
    summary = performance.summarise(result, cfg)
    assert 3 <= len(summary.findings) <= 5 and result.kpis.empty
