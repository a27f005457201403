"""06 performance: KPIs by period, cohort retention, campaign funnels, experiments (A/B), campaign
ROI and incrementality, and monitoring of the KPIs across runs.

Definitions (period = one `performance.grain`: week Monday-Sunday, calendar month or quarter;
money in `run.currency`, net of refunds as cleaned in 02):

- revenue: sum of the net order-line amounts dated in the period.
- orders: distinct order ids in the period.
- active customers: distinct customers with at least one order in the period.
- new customers: active customers whose first order in the data falls in the period;
  returning customers: the other active customers.
- AOV (average order value): revenue / orders.
- purchase frequency: orders / active customers (orders per active customer).
- repeat-purchase rate: share of active customers with two or more orders in the period.
- retention rate: share of the customers active in the previous period who are active again in
  this one; churn rate = 1 - retention rate (empty for the first period).
- marketing spend: channel_spend summed over the months of the period (month and quarter grains).
- CAC (customer acquisition cost): marketing spend / new customers in the period.

Experiments are analysed with `crmbook.experiments.analyse_experiment` (one per campaign with two
or more groups); incrementality is (variant rate - control rate) x variant members; ROI is
(incremental revenue x gross margin - cost) / cost. Monitoring compares this run's latest-period
KPIs with the previous successful run in the same reports folder.

Every function is pure except `save`, `earlier_runs` and `evaluate` (which read and write the run
folder); every table they return is sorted so the same inputs give byte-identical files.
"""
from __future__ import annotations

import datetime as dt
import html
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from crmbook import experiments

_log = logging.getLogger(__name__)  # progress lines (crmbook.progress)

STAGE = "06_performance"

#: KPI name -> unit ("money", "count", "ratio": a number, "share": 0..1).
KPI_UNITS: dict[str, str] = {
    "revenue": "money", "orders": "count", "active_customers": "count", "new_customers": "count",
    "returning_customers": "count", "aov": "money", "purchase_frequency": "ratio",
    "repeat_purchase_rate": "share", "retention_rate": "share", "churn_rate": "share",
    "marketing_spend": "money", "cac": "money",
}
KPIS = tuple(KPI_UNITS)
#: KPIs shown as cards (when present), in this order.
CARD_KPIS = ("revenue", "active_customers", "new_customers", "aov", "retention_rate", "cac")
FREQ = {"week": "W-SUN", "month": "M", "quarter": "Q"}
#: Funnel stages in order; `members` (every row) is always the first.
FUNNEL_STAGES = ("members", "delivered", "opened", "clicked", "visited", "converted")
CONTROL_WORDS = ("control", "no", "none", "holdout", "hold-out")
KPI_COLUMNS = ["period", "kpi", "value", "previous", "change_abs", "change_rel"]
COHORT_COLUMNS = ["cohort", "months_since", "customers", "cohort_size", "retention", "revenue", "revenue_per_customer"]
FUNNEL_COLUMNS = ["campaign_id", "group", "stage_order", "stage", "customers", "pct_of_first", "pct_of_previous"]
ROI_COLUMNS = ["campaign_id", "variant", "control", "n_variant", "n_control", "conversion_rate_control",
               "conversion_rate_variant", "incremental_conversions", "incremental_conversions_ci_low",
               "incremental_conversions_ci_high", "revenue_per_member_control", "revenue_per_member_variant",
               "incremental_revenue", "incremental_revenue_ci_low", "incremental_revenue_ci_high", "cost",
               "roi", "cost_per_incremental_conversion"]
HISTORY_COLUMNS = ["run_id", "period", "kpi", "value", "change_rel", "alert"]
#: Where the cross-run history goes: outside tables/, whose files must be identical for identical
#: inputs (the history depends on the earlier runs in the folder, not on the inputs).
HISTORY_FILE = Path("monitoring") / "kpi_history.csv"
ALL_VARIANTS = "(all variants)"


# ------------------------------------------------------------------------------------------
# KPIs by period
# ------------------------------------------------------------------------------------------
def periods(timestamps: pd.Series, grain: str) -> pd.PeriodIndex:
    """The period (week Mon-Sun, month or quarter) of each timestamp."""
    if grain not in FREQ:
        raise ValueError(f"grain must be one of {sorted(FREQ)}, not {grain!r}")
    return pd.PeriodIndex(pd.to_datetime(timestamps), freq=FREQ[grain])


def kpis_by_period(transactions: pd.DataFrame | str | Path, grain: str = "month", spend: pd.DataFrame | None = None,
                   as_of: dt.date | None = None, drop_incomplete: bool = True, con=None) -> pd.DataFrame:
    """One row per period from the first to the last order (periods without orders included):
    `period` (first day, a date) and the KPIs of `KPI_UNITS` (see the module docstring).
    `transactions`: the clean transactions, as a Parquet file or a frame (order times as wall-clock
    times; rows without a time or a customer are left out), aggregated by
    `crmbook.engine.period_activity` (on `con` when given: a DuckDB connection or a Spark backend).
    `spend` (channel_spend: period, spend) adds marketing_spend and cac for month and quarter
    grains. With `drop_incomplete`, a last period ending after `as_of` (the last day the data
    covers; default the last order's day) is left out."""
    from crmbook import engine

    columns = ["period", *KPIS]
    if grain not in FREQ:
        raise ValueError(f"grain must be one of {sorted(FREQ)}, not {grain!r}")
    if isinstance(transactions, pd.DataFrame):
        transactions = _wall_clock(transactions)
    if transactions is None or (isinstance(transactions, pd.DataFrame) and transactions.empty):
        return pd.DataFrame(columns=columns)
    own = con is None
    con = engine.connect() if own else con
    try:
        activity = engine.period_activity(con, transactions, grain)
        if isinstance(transactions, pd.DataFrame):
            last_order = transactions["order_ts"].max()
        else:
            last_order = engine.last_order(con, transactions)
    finally:
        if own:
            con.close()
    if activity.empty:
        return pd.DataFrame(columns=columns)
    first, last = (pd.Period(activity["period"].iloc[i], freq=FREQ[grain]) for i in (0, -1))
    index = pd.period_range(first, last, freq=FREQ[grain])
    span = index.asi8
    agg = activity.set_index(pd.PeriodIndex(activity["period"], freq=FREQ[grain]).asi8).drop(columns="period") \
        .reindex(span, fill_value=0)
    out = pd.DataFrame(index=span)
    out["revenue"] = agg["revenue"].round(2)
    for col in ("orders", "active_customers", "new_customers"):
        out[col] = agg[col].astype("int64")
    out["returning_customers"] = out["active_customers"] - out["new_customers"]
    out["aov"] = _ratio(agg["revenue"], agg["orders"])
    out["purchase_frequency"] = _ratio(agg["orders"], agg["active_customers"])
    out["repeat_purchase_rate"] = _ratio(agg["repeaters"], agg["active_customers"])
    previous_active = agg["active_customers"].shift(1)
    out["retention_rate"] = _ratio(agg["retained"], previous_active)
    out["churn_rate"] = 1.0 - out["retention_rate"]
    out["marketing_spend"], out["cac"] = np.nan, np.nan
    if spend is not None and len(spend) and grain in ("month", "quarter"):
        spent = pd.Series(spend["spend"].astype("float64").to_numpy(),
                          index=periods(spend["period"], grain).asi8).groupby(level=0).sum()
        out["marketing_spend"] = spent.reindex(span).round(2)
        out["cac"] = _ratio(out["marketing_spend"], out["new_customers"])
    out.insert(0, "period", index.start_time.date)
    out = out.reset_index(drop=True)
    if drop_incomplete and len(out):
        last_day = as_of or pd.Timestamp(last_order).date()
        ends = index.end_time.date
        out = out[[end <= last_day for end in ends]].reset_index(drop=True)
    for col in ("aov", "purchase_frequency", "repeat_purchase_rate", "retention_rate", "churn_rate", "cac"):
        out[col] = out[col].astype("float64").round(6)
    if out["marketing_spend"].isna().all():
        out = out.drop(columns=["marketing_spend", "cac"])
    return out


def _wall_clock(transactions: pd.DataFrame) -> pd.DataFrame:
    """order_id, customer_id, order_ts (naive: a time zone's wall-clock time, as pandas' periods
    count it) and amount of the rows with a time and a customer."""
    tx = transactions[["order_id", "customer_id", "order_ts", "amount"]].copy()
    tx["order_ts"] = pd.to_datetime(tx["order_ts"], errors="coerce")
    if isinstance(tx["order_ts"].dtype, pd.DatetimeTZDtype):
        tx["order_ts"] = tx["order_ts"].dt.tz_localize(None)
    return tx.dropna(subset=["order_ts", "customer_id"])


def _ratio(numerator: pd.Series, denominator: pd.Series) -> pd.Series:
    num, den = numerator.astype("float64"), denominator.astype("float64")
    return (num / den.where(den > 0)).astype("float64")


def kpis_long(wide: pd.DataFrame) -> pd.DataFrame:
    """The tidy KPI table (`tables/kpis.csv`): period, kpi, value, previous (the previous period's
    value), change_abs = value - previous, change_rel = change_abs / |previous|. Sorted by period,
    then KPI in the order of `KPI_UNITS`."""
    if wide is None or wide.empty:
        return pd.DataFrame(columns=KPI_COLUMNS)
    parts = []
    for order, kpi in enumerate(k for k in KPIS if k in wide.columns):
        values = wide[kpi].astype("float64")
        previous = values.shift(1)
        change = values - previous
        parts.append(pd.DataFrame({"period": wide["period"].astype("str"), "kpi": kpi, "order": order,
                                   "value": values, "previous": previous, "change_abs": change.round(6),
                                   "change_rel": _ratio(change, previous.abs()).round(6)}))
    out = pd.concat(parts, ignore_index=True).sort_values(["period", "order"], kind="stable")
    return out.drop(columns="order").reset_index(drop=True)


def latest_kpis(long: pd.DataFrame) -> pd.DataFrame:
    """The last period's row of every KPI (kpi, period, value, previous, change_abs, change_rel)."""
    if long is None or long.empty:
        return pd.DataFrame(columns=KPI_COLUMNS)
    latest = long[long["period"] == long["period"].max()]
    return latest.reset_index(drop=True)


# ------------------------------------------------------------------------------------------
# cohorts
# ------------------------------------------------------------------------------------------
def cohort_retention(transactions_path: str | Path, cfg=None) -> pd.DataFrame:
    """Acquisition month x months since acquisition, from `crmbook.engine.cohort_activity` (the
    params' engine): customers active, cohort_size, retention = customers / cohort_size, net revenue
    and revenue_per_customer = revenue / cohort_size (per customer acquired, in currency).
    The params' (`cfg`) memory limit and spill folder; sums are exact, so files are byte-identical
    whatever the threads."""
    from crmbook import engine

    con = engine.from_params(cfg) if cfg is not None else engine.connect()
    try:
        cells = engine.cohort_activity(engine.queries_on(cfg, con), transactions_path)
    finally:
        con.close()
    if cells.empty:
        return pd.DataFrame(columns=COHORT_COLUMNS)
    out = pd.DataFrame({
        "cohort": pd.to_datetime(cells["cohort"]).dt.strftime("%Y-%m-%d"),
        "months_since": cells["months_since"].astype("int64"),
        "customers": cells["customers"].astype("int64"),
        "cohort_size": cells["cohort_size"].astype("int64"),
    })
    out["retention"] = (out["customers"] / out["cohort_size"]).round(6)
    out["revenue"] = cells["revenue"].astype("float64").round(2)
    out["revenue_per_customer"] = (out["revenue"] / out["cohort_size"]).round(4)
    return out.sort_values(["cohort", "months_since"]).reset_index(drop=True)


def cohort_matrix(cohorts: pd.DataFrame, value: str = "retention", max_months: int = 12) -> pd.DataFrame:
    """Cohorts as rows, months since acquisition (0..max_months) as columns, for a heatmap."""
    if cohorts.empty:
        return pd.DataFrame()
    shown = cohorts[cohorts["months_since"] <= max_months]
    matrix = shown.pivot(index="cohort", columns="months_since", values=value).sort_index()
    return matrix.reindex(columns=range(0, int(shown["months_since"].max()) + 1))


# ------------------------------------------------------------------------------------------
# funnels
# ------------------------------------------------------------------------------------------
def funnel_stages(members: pd.DataFrame) -> list[str]:
    """The funnel stages a campaign_members table can show: members, then each flag present
    (delivered, opened, clicked, visited, converted) with at least one value."""
    return ["members"] + [s for s in FUNNEL_STAGES[1:] if s in members.columns and members[s].notna().any()]


def funnels(members: pd.DataFrame) -> pd.DataFrame:
    """Customers reaching each stage per campaign and group: pct_of_first = customers / members,
    pct_of_previous = customers / the previous stage's customers (empty when that is 0).
    A flag counts members with value 1. Conversion can be recorded for members who never opened
    (intention to treat), so pct_of_previous may exceed 100% for `converted`."""
    if members is None or members.empty:
        return pd.DataFrame(columns=FUNNEL_COLUMNS)
    stages = funnel_stages(members)
    frame = members.assign(members=1)
    flags = {s: pd.to_numeric(frame[s], errors="coerce").eq(1).fillna(False).astype("int64") for s in stages}  # empty: not 1
    counts = pd.DataFrame(flags).assign(campaign_id=frame["campaign_id"].astype("str"), group=frame["group"].astype("str"))
    totals = counts.groupby(["campaign_id", "group"], sort=True)[stages].sum()
    present = members.assign(campaign_id=members["campaign_id"].astype("str"), group=members["group"].astype("str"))
    has_values = present.groupby(["campaign_id", "group"], sort=True)[stages[1:]].count() if len(stages) > 1 else None
    rows = []
    for (campaign, group), row in totals.iterrows():
        kept = ["members"] + [s for s in stages[1:] if has_values.loc[(campaign, group), s] > 0]
        previous = None
        for order, stage in enumerate(kept):
            n = int(row[stage])
            rows.append({"campaign_id": campaign, "group": group, "stage_order": order, "stage": stage, "customers": n,
                         "pct_of_first": round(n / row["members"], 6) if row["members"] else math.nan,
                         "pct_of_previous": math.nan if previous is None else (round(n / previous, 6) if previous else math.nan)})
            previous = n
    return pd.DataFrame(rows, columns=FUNNEL_COLUMNS)


# ------------------------------------------------------------------------------------------
# experiments
# ------------------------------------------------------------------------------------------
def default_control(group_sizes: Mapping[str, int]) -> str:
    """The control arm when params name none: a group whose name has the word control, no, none
    or holdout (case-insensitive: 'control', 'No E-Mail', 'Holdout'), else the largest group
    (ties: the alphabetically first). Whole words, so 'Nordic' is not a control."""
    words = {name: set(re.split(r"[^a-z0-9-]+", str(name).casefold())) | set(re.split(r"[^a-z0-9]+", str(name).casefold()))
             for name in group_sizes}
    named = sorted(name for name, parts in words.items() if parts & set(CONTROL_WORDS))
    if named:
        return min(named, key=lambda n: (0 if "control" in words[n] else 1, -group_sizes[n], str(n)))
    return sorted(group_sizes, key=lambda n: (-group_sizes[n], str(n)))[0]


@dataclass(frozen=True)
class ExperimentPlan:
    """What will be compared in one campaign: arms, control, metrics and the CUPED covariate."""

    campaign_id: str
    control: str
    variants: tuple[str, ...]
    metrics: tuple[str, ...]
    pre_col: str | None
    expected_shares: Mapping[str, float] | None
    rates: tuple[str, ...] = ()


def plan_experiments(members: pd.DataFrame, metrics: Sequence[str], control_groups: Mapping[str, str] | None = None,
                     expected_shares: Mapping[str, Mapping[str, float]] | None = None, cuped: bool = True
                     ) -> tuple[list[ExperimentPlan], list[tuple[str, str]]]:
    """One plan per campaign with two or more groups, and (campaign, reason) for campaigns that
    cannot be analysed. Metrics are the wanted columns the campaign has values for; CUPED uses
    `pre_period_value` when every member of the campaign has one. A control group named in
    params that is not a group of the campaign is an error."""
    control_groups, expected_shares = control_groups or {}, expected_shares or {}
    plans, skipped = [], []
    if members is None or members.empty:
        return plans, skipped
    for campaign, rows in members.groupby(members["campaign_id"].astype("str"), sort=True):
        sizes = rows["group"].astype("str").value_counts()
        sizes = {str(k): int(v) for k, v in sizes.items()}
        if len(sizes) < 2:
            skipped.append((campaign, "one_group"))
            continue
        control = control_groups.get(campaign)
        if control is not None and control not in sizes:
            raise ValueError(f"performance.control_groups.{campaign} is {control!r}, which is not a group of campaign "
                             f"{campaign}; its groups are {sorted(sizes)}")
        control = control or default_control(sizes)
        wanted = [m for m in metrics if m in rows.columns and rows[m].notna().any()]
        if not wanted:
            skipped.append((campaign, "no_metric"))
            continue
        pre = "pre_period_value" if cuped and "pre_period_value" in rows.columns and rows["pre_period_value"].notna().all() else None
        plans.append(ExperimentPlan(campaign, control, tuple(sorted(g for g in sizes if g != control)), tuple(wanted), pre,
                                    expected_shares.get(campaign), tuple(m for m in wanted if is_rate(rows[m]))))
    return plans, skipped


def analyse_campaigns(members: pd.DataFrame, plans: Sequence[ExperimentPlan], level: float = 0.95,
                      power: float = 0.8) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """`experiments.analyse_experiment` for every plan (experiment = campaign id), stacked in
    campaign order (`tables/experiments.csv`), and (campaign, error) for plans it refused."""
    parts, failed = [], []
    for plan in plans:
        rows = members[members["campaign_id"].astype("str") == plan.campaign_id].copy()
        rows["group"] = rows["group"].astype("str")
        for metric in plan.metrics:
            rows[metric] = pd.to_numeric(rows[metric], errors="coerce").astype("float64")
        if plan.pre_col:
            rows[plan.pre_col] = pd.to_numeric(rows[plan.pre_col], errors="coerce").astype("float64")
        try:
            parts.append(experiments.analyse_experiment(
                rows, "group", plan.control, list(plan.metrics), pre_col=plan.pre_col, level=level,
                expected_shares=dict(plan.expected_shares) if plan.expected_shares else None, power=power,
                experiment=plan.campaign_id))
        except ValueError as error:
            failed.append((plan.campaign_id, str(error)))
    if not parts:
        return pd.DataFrame(columns=experiments.RESULT_COLUMNS), failed
    return pd.concat(parts, ignore_index=True), failed


def is_rate(values: pd.Series) -> bool:
    """True when every non-missing value is 0 or 1 (a conversion-style flag)."""
    v = pd.to_numeric(values, errors="coerce").dropna()
    return bool(len(v)) and bool(v.isin([0, 1]).all())


# ------------------------------------------------------------------------------------------
# ROI and incrementality
# ------------------------------------------------------------------------------------------
def campaign_roi(members: pd.DataFrame, plans: Sequence[ExperimentPlan], campaigns: pd.DataFrame | None = None,
                 level: float = 0.95, gross_margin: float = 1.0) -> pd.DataFrame:
    """Incrementality of each variant against its campaign's control, and ROI.

    incremental_conversions = (conversion rate of the variant - of the control) x variant members
    (rates of `converted`); incremental_revenue = (revenue per member of the variant - of the
    control) x variant members; intervals are the unadjusted difference's interval (Wald for rates,
    Welch for revenue) x variant members. cost: the campaign's cost (campaigns table) split over
    the arms by their delivered messages (by members when there is no delivered flag); a row
    `(all variants)` sums the variants and carries the whole cost. roi = (incremental revenue x
    gross_margin - cost) / cost; cost_per_incremental_conversion = cost / incremental conversions
    (empty when there is no gain)."""
    rows: list[dict] = []
    costs = {}
    if campaigns is not None and len(campaigns) and "cost" in campaigns.columns:
        costs = {str(k): float(v) for k, v in campaigns.set_index(campaigns["campaign_id"].astype("str"))["cost"].items()
                 if pd.notna(v)}
    for plan in plans:
        arms = members[members["campaign_id"].astype("str") == plan.campaign_id]
        group = arms["group"].astype("str")
        control = arms[group == plan.control]
        weights = (pd.to_numeric(arms["delivered"], errors="coerce").fillna(0).groupby(group).sum()
                   if "delivered" in arms.columns and pd.to_numeric(arms["delivered"], errors="coerce").fillna(0).sum() > 0
                   else group.value_counts())
        total_cost = costs.get(plan.campaign_id, math.nan)
        campaign_rows = []
        for variant in plan.variants:
            treated = arms[group == variant]
            n_v, n_c = len(treated), len(control)
            row = {"campaign_id": plan.campaign_id, "variant": variant, "control": plan.control,
                   "n_variant": n_v, "n_control": n_c}
            row.update(_increment(control, treated, "converted", "conversion_rate", "incremental_conversions", level, True))
            row.update(_increment(control, treated, "revenue", "revenue_per_member", "incremental_revenue", level, False))
            row["cost"] = total_cost * float(weights.get(variant, 0)) / float(weights.sum()) if weights.sum() else math.nan
            campaign_rows.append(row)
        if len(campaign_rows) > 1:
            total = {"campaign_id": plan.campaign_id, "variant": ALL_VARIANTS, "control": plan.control,
                     "n_variant": sum(r["n_variant"] for r in campaign_rows), "n_control": campaign_rows[0]["n_control"],
                     "cost": total_cost}
            for key in ("incremental_conversions", "incremental_revenue"):
                total[key] = sum(r[key] for r in campaign_rows)
            campaign_rows.append(total)
        elif campaign_rows:
            campaign_rows[0]["cost"] = total_cost if math.isfinite(total_cost) else campaign_rows[0]["cost"]
        for row in campaign_rows:
            cost, gain = row.get("cost", math.nan), row.get("incremental_revenue", math.nan)
            row["roi"] = (gain * gross_margin - cost) / cost if cost and math.isfinite(cost) and math.isfinite(gain) else math.nan
            conv = row.get("incremental_conversions", math.nan)
            row["cost_per_incremental_conversion"] = cost / conv if math.isfinite(conv) and conv > 0 and math.isfinite(cost) else math.nan
        rows += campaign_rows
    out = pd.DataFrame(rows, columns=ROI_COLUMNS)
    money = ["incremental_revenue", "incremental_revenue_ci_low", "incremental_revenue_ci_high", "cost",
             "cost_per_incremental_conversion", "revenue_per_member_control", "revenue_per_member_variant"]
    out[money] = out[money].astype("float64").round(4)
    rest = ["conversion_rate_control", "conversion_rate_variant", "incremental_conversions",
            "incremental_conversions_ci_low", "incremental_conversions_ci_high", "roi"]
    out[rest] = out[rest].astype("float64").round(6)
    return out


def _increment(control: pd.DataFrame, treated: pd.DataFrame, column: str, rate_name: str, total_name: str,
               level: float, rate: bool) -> dict[str, float]:
    keys = [f"{rate_name}_control", f"{rate_name}_variant", total_name, f"{total_name}_ci_low", f"{total_name}_ci_high"]
    if column not in control.columns:
        return dict.fromkeys(keys, math.nan)
    a = pd.to_numeric(control[column], errors="coerce").dropna().to_numpy(dtype=float)
    b = pd.to_numeric(treated[column], errors="coerce").dropna().to_numpy(dtype=float)
    if len(a) < 2 or len(b) < 2:
        return dict.fromkeys(keys, math.nan)
    n = len(treated)
    if rate:
        cmp_ = experiments.compare_proportions(int(a.sum()), len(a), int(b.sum()), len(b), level=level)
    else:
        cmp_ = experiments.compare_means_arrays(a, b, level=level)
    return dict(zip(keys, (float(a.mean()), float(b.mean()), cmp_.lift_abs * n, cmp_.lift_abs_ci_low * n,
                           cmp_.lift_abs_ci_high * n)))


# ------------------------------------------------------------------------------------------
# monitoring across runs
# ------------------------------------------------------------------------------------------
def run_id_of(run_dir: str | Path) -> str:
    """The run id of a run folder (`.<id>.partial` while the run is in progress)."""
    name = Path(run_dir).resolve().name
    if name.startswith(".") and name.endswith(".partial"):
        return name[1:-len(".partial")]
    return name


_RUN_ID = re.compile(r"^\d{8}-\d{6}-(?P<scenario>.+?)(?:-\d+)?$")


def scenario_of(run_id: str) -> str | None:
    """The params-file stem in a run id `YYYYmmdd-HHMMSS-<stem>[-n]` (None for other names)."""
    match = _RUN_ID.match(run_id)
    return match.group("scenario") if match else None


def earlier_runs(run_dir: str | Path) -> list[tuple[str, Path]]:
    """(run id, kpis.csv) of the other successful runs in the run folder's parent (the reports
    folder) whose id sorts before this run's, in run-id order. Failed (`.failed`), hidden or
    partial folders, `latest` and folders without tables/kpis.csv are ignored; when this run's id
    names its params file, only runs of the same params file count (one reports folder may hold
    several scenarios, whose KPIs are not comparable)."""
    run_dir = Path(run_dir).resolve()
    current = run_id_of(run_dir)
    scenario = scenario_of(current)
    found = []
    parent = run_dir.parent
    if not parent.is_dir():
        return found
    for folder in sorted(parent.iterdir(), key=lambda p: p.name):
        name = folder.name
        if (folder == run_dir or name.startswith(".") or name.endswith(".failed") or name == "latest"
                or folder.is_symlink() or not folder.is_dir() or name >= current
                or (scenario is not None and scenario_of(name) != scenario)):
            continue
        kpis = folder / "tables" / "kpis.csv"
        if kpis.is_file():
            found.append((name, kpis))
    return found


def kpi_history(current: pd.DataFrame, run_id: str, earlier: Sequence[tuple[str, pd.DataFrame]],
                threshold: float = 0.2, watched: Sequence[str] = ()) -> pd.DataFrame:
    """Each run's latest-period value of every watched KPI (`run_id, period, kpi, value`), with
    change_rel against the same KPI in the run before it and `alert` = |change_rel| > threshold.
    A KPI that was 0 and is no longer 0 is an alert too. Earlier runs come in run-id order;
    `current` (this run's kpis.csv table) is last."""
    frames = []
    for rid, table in [*earlier, (run_id, current)]:
        if table is None or table.empty or not {"period", "kpi", "value"} <= set(table.columns):
            continue
        latest = latest_kpis(table.assign(period=table["period"].astype("str")))
        frames.append(latest[["period", "kpi", "value"]].assign(run_id=rid))
    if not frames:
        return pd.DataFrame(columns=HISTORY_COLUMNS)
    history = pd.concat(frames, ignore_index=True)
    if watched:
        history = history[history["kpi"].isin(list(watched))]
    order = {k: i for i, k in enumerate(KPIS)}
    history = history.assign(order=history["kpi"].map(order).fillna(len(order)), run_order=history["run_id"].map(
        {rid: i for i, (rid, _) in enumerate([*earlier, (run_id, current)])}))
    history = history.sort_values(["order", "kpi", "run_order"], kind="stable")
    previous = history.groupby("kpi", sort=False)["value"].shift(1).astype("float64")
    value = history["value"].astype("float64")
    history["change_rel"] = ((value - previous) / previous.abs().where(previous != 0)).round(6)
    history["alert"] = (history["change_rel"].abs() > threshold) | ((previous == 0) & (value != 0))
    history = history.sort_values(["run_order", "order", "kpi"], kind="stable")
    return history[HISTORY_COLUMNS].reset_index(drop=True)


def alerts(history: pd.DataFrame, run_id: str) -> pd.DataFrame:
    """The alert rows of this run (KPIs that moved beyond the threshold since the previous run)."""
    if history.empty:
        return history
    return history[(history["run_id"] == run_id) & history["alert"]].reset_index(drop=True)


# ------------------------------------------------------------------------------------------
# CLV : CAC (only when stage 04 has written its table in this run folder)
# ------------------------------------------------------------------------------------------
def mean_clv(run_dir: str | Path) -> float | None:
    """Mean predicted CLV per customer from tables/clv_customers.parquet (column `clv`, else the
    first column whose name starts with clv), or None when 04 has not written it (04 runs in
    parallel with 06, so the number is shown in the report but kept out of the tables)."""
    path = Path(run_dir) / "tables" / "clv_customers.parquet"
    if not path.is_file():
        return None
    try:
        frame = pd.read_parquet(path)
    except Exception:  # noqa: BLE001 - 04 may be writing it right now: leave CLV:CAC out
        return None
    names = ["clv"] + [c for c in frame.columns if str(c).lower().startswith("clv")]
    for name in names:
        if name in frame.columns and pd.api.types.is_numeric_dtype(frame[name]) and frame[name].notna().any():
            return float(frame[name].mean())
    return None


def blended_cac(wide: pd.DataFrame) -> float:
    """Total marketing spend / total new customers over the periods with spend."""
    if wide is None or "marketing_spend" not in wide.columns:
        return math.nan
    with_spend = wide[wide["marketing_spend"].notna()]
    new = with_spend["new_customers"].sum()
    return float(with_spend["marketing_spend"].sum() / new) if new else math.nan


# ------------------------------------------------------------------------------------------
# the stage
# ------------------------------------------------------------------------------------------
@dataclass
class Performance:
    """Everything 06 computes for one run."""

    run_id: str
    kpis_wide: pd.DataFrame
    kpis: pd.DataFrame
    cohorts: pd.DataFrame
    funnels: pd.DataFrame
    experiments: pd.DataFrame
    roi: pd.DataFrame
    history: pd.DataFrame
    plans: list[ExperimentPlan] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    earlier_run_ids: list[str] = field(default_factory=list)
    clv: float | None = None
    has_transactions: bool = False
    has_members: bool = False
    level: float = 0.95

    @property
    def alerts(self) -> pd.DataFrame:
        return alerts(self.history, self.run_id)


def evaluate(tables: Mapping[str, pd.DataFrame], cfg, run_dir: str | Path) -> Performance:
    """Run every 06 analysis on the clean tables of a run (reads the run folder for the cohort
    query, stage 04's CLV and earlier runs' KPIs; writes nothing)."""
    p = cfg.performance
    run_dir = Path(run_dir)
    tx_path = run_dir / "tables" / "clean_transactions.parquet"
    transactions = tables.get("transactions")
    if transactions is None and cfg.data.sources.transactions and tx_path.is_file():  # left on disk by the notebook
        import pyarrow.parquet as pq

        transactions = tx_path if pq.read_metadata(tx_path).num_rows else None
    members = tables.get("campaign_members")
    has_tx = transactions is not None and (not isinstance(transactions, pd.DataFrame) or len(transactions) > 0)
    has_members = members is not None and len(members) > 0
    as_of = cfg.run.analysis_date
    if has_tx:
        from crmbook import engine

        with engine.from_params(cfg) as con:
            wide = kpis_by_period(transactions, p.grain, tables.get("channel_spend"), as_of, p.drop_incomplete_period,
                                  engine.queries_on(cfg, con))
    else:
        wide = pd.DataFrame(columns=["period", *KPIS])
    long = kpis_long(wide)
    cohorts = cohort_retention(tx_path, cfg) if has_tx and tx_path.is_file() else pd.DataFrame(columns=COHORT_COLUMNS)
    _log.info("KPIs over %s periods and the cohort table", len(wide))
    plans, skipped = plan_experiments(members, p.metrics, p.control_groups, p.expected_shares, p.cuped) if has_members else ([], [])
    results, failed = analyse_campaigns(members, plans, p.confidence_level, p.power) if plans else \
        (pd.DataFrame(columns=experiments.RESULT_COLUMNS), [])
    _log.info("experiments: %s campaign(s) analysed", len(plans))
    failed_ids = {c for c, _ in failed}
    roi = campaign_roi(members, [pl for pl in plans if pl.campaign_id not in failed_ids], tables.get("campaigns"),
                       p.confidence_level, p.gross_margin) if plans else pd.DataFrame(columns=ROI_COLUMNS)
    run_id = run_id_of(run_dir)
    earlier = []
    for rid, path in earlier_runs(run_dir):
        try:
            table = pd.read_csv(path, dtype={"period": str})
        except Exception:  # noqa: BLE001 - an unreadable old table is ignored, not fatal
            continue
        if len(table) and {"period", "kpi", "value"} <= set(table.columns):  # runs without KPIs have nothing to compare
            earlier.append((rid, table))
    history = kpi_history(long, run_id, earlier, p.alert_threshold, p.monitor_kpis) if not long.empty \
        else pd.DataFrame(columns=HISTORY_COLUMNS)
    return Performance(run_id=run_id, kpis_wide=wide, kpis=long, cohorts=cohorts,
                       funnels=funnels(members) if has_members else pd.DataFrame(columns=FUNNEL_COLUMNS),
                       experiments=results, roi=roi, history=history, plans=[pl for pl in plans if pl.campaign_id not in failed_ids],
                       skipped=skipped + [(c, f"error: {e}") for c, e in failed],
                       earlier_run_ids=[rid for rid, _ in earlier], clv=mean_clv(run_dir) if has_tx else None,
                       has_transactions=has_tx, has_members=has_members, level=p.confidence_level)


def save(run_dir: str | Path, result: Performance) -> None:
    """Write tables/kpis.csv, cohort_retention.csv, experiments.csv, funnels.csv, campaign_roi.csv
    (header only when there is nothing to report) and monitoring/kpi_history.csv."""
    from crmbook import store

    store.write_table(run_dir, "kpis", result.kpis, fmt="csv")
    store.write_table(run_dir, "cohort_retention", result.cohorts, fmt="csv")
    store.write_table(run_dir, "experiments", result.experiments, fmt="csv")
    store.write_table(run_dir, "funnels", result.funnels, fmt="csv")
    store.write_table(run_dir, "campaign_roi", result.roi, fmt="csv")
    path = Path(run_dir) / HISTORY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    result.history.to_csv(path, index=False, lineterminator="\n")


# ------------------------------------------------------------------------------------------
# words and numbers for the report
# ------------------------------------------------------------------------------------------
def format_value(value: float, unit: str, currency: str) -> str:
    """A KPI value as shown on a card."""
    if value is None or not math.isfinite(value):
        return "–"
    if unit == "money":
        return f"{currency} {value:,.2f}" if abs(value) < 1000 else f"{currency} {value:,.0f}"
    if unit == "count":
        return f"{value:,.0f}"
    if unit == "share":
        return f"{value:.1%}"
    return f"{value:,.2f}"


def format_change(row: pd.Series, unit: str, lang: str) -> str:
    """Change against the previous period: relative for amounts and counts, in points for shares."""
    from crmbook import report

    if unit == "share":
        if not math.isfinite(row.get("change_abs", math.nan)):
            return ""
        return report.say("perf_change_points", lang, change=f"{row['change_abs'] * 100:+.1f}")
    change = row.get("change_rel", math.nan)
    if change is None or not math.isfinite(change):
        return ""
    return report.say("perf_change_rel", lang, change=f"{change:+.1%}")


def _lift_text(value: float, rate: bool, currency: str, lang: str) -> str:
    from crmbook import report

    if not math.isfinite(value):
        return "–"
    return report.say("perf_points", lang, x=f"{value * 100:+.2f}") if rate else f"{value:+,.2f} {currency}"


def _metric_name(metric: str, lang: str) -> str:
    from crmbook import report

    key = f"perf_metric_{metric}"
    return report.t(key, lang) if key in report.TEXT else metric


def verdict_kind(row: Mapping[str, object], alpha: float) -> str:
    """srm · ship · harm · flat (no variation) · underpowered · not_significant, from a variant row
    of analyse_experiment's table."""
    if float(row["srm_p"]) < experiments.SRM_ALPHA:
        return "srm"
    if row["verdict"] == "ship":
        return "ship"
    if row["verdict"] == "do not ship":
        return "harm"
    if not math.isfinite(float(row["p_value"])):
        return "flat"
    return "underpowered" if str(row["verdict_reason"]).startswith("underpowered") else "not_significant"


def experiment_verdicts(result: Performance, cfg) -> list[str]:
    """One plain-words sentence per campaign variant on its primary metric (the first metric of
    the plan), or one per campaign when the sample-ratio check fails."""
    from crmbook import report

    lang, currency = cfg.report.language, cfg.run.currency
    alpha = 1.0 - result.level
    lines = []
    table = result.experiments
    for plan in result.plans:
        rows = table[(table["experiment"] == plan.campaign_id) & (table["verdict"] != "control")]
        if rows.empty:
            continue
        srm_p = float(rows["srm_p"].iloc[0])
        if srm_p < experiments.SRM_ALPHA:
            lines.append(report.say("perf_verdict_srm", lang, campaign=plan.campaign_id, p=f"{srm_p:.2g}"))
            continue
        metric = plan.metrics[0]
        rate = metric in plan.rates
        for _, row in rows[rows["metric"] == metric].iterrows():
            kind = verdict_kind(row, alpha)
            ctrl = table[(table["experiment"] == plan.campaign_id) & (table["metric"] == metric) & (table["verdict"] == "control")]
            fields = dict(campaign=plan.campaign_id, variant=row["variant"], control=plan.control,
                          metric=_metric_name(metric, lang),
                          a=(f"{ctrl['value'].iloc[0]:.2%}" if rate else f"{ctrl['value'].iloc[0]:,.2f}") if len(ctrl) else "–",
                          b=f"{row['value']:.2%}" if rate else f"{row['value']:,.2f}",
                          lift=_lift_text(row["lift_abs"], rate, currency, lang),
                          low=_lift_text(row["lift_abs_ci_low"], rate, currency, lang),
                          high=_lift_text(row["lift_abs_ci_high"], rate, currency, lang),
                          level=f"{result.level:.0%}", p=f"{row['p_adj_holm']:.2g}",
                          mde=_lift_text(row["mde"], rate, currency, lang).lstrip("+"),
                          cuped=report.t("perf_cuped_tag", lang) if plan.pre_col else "")
            lines.append(report.say(f"perf_verdict_{kind}", lang, **fields))
    return lines


def experiment_table(result: Performance, cfg) -> pd.DataFrame:
    """The experiments table as shown in the report: one row per variant and metric, labelled in
    the report language (the full table is tables/experiments.csv)."""
    from crmbook import report

    lang = cfg.report.language
    table = result.experiments
    if table.empty:
        return pd.DataFrame()
    alpha = 1.0 - result.level
    rows = table[table["verdict"] != "control"]
    rates = {(pl.campaign_id, m) for pl in result.plans for m in pl.rates}
    out = pd.DataFrame({
        report.t("perf_col_campaign", lang): rows["experiment"],
        report.t("perf_col_variant", lang): rows["variant"],
        report.t("perf_col_metric", lang): rows["metric"].map(lambda m: _metric_name(m, lang)),
        report.t("perf_col_n", lang): rows["n"].map(lambda v: f"{v:,}"),
        report.t("perf_col_value", lang): [f"{v:.2%}" if (e, m) in rates else f"{v:,.2f}"
                                           for e, m, v in zip(rows["experiment"], rows["metric"], rows["value"])],
        report.t("perf_col_lift", lang): rows["lift_rel"].map(lambda v: f"{v:+.1%}" if math.isfinite(v) else "–"),
        report.say("perf_col_ci", lang, level=f"{result.level:.0%}"): [
            f"{lo:+.1%} … {hi:+.1%}" if math.isfinite(lo) and math.isfinite(hi) else "–"
            for lo, hi in zip(rows["lift_rel_ci_low"], rows["lift_rel_ci_high"])],
        report.t("perf_col_p_holm", lang): rows["p_adj_holm"].map(lambda v: f"{v:.2g}"),
        report.t("perf_col_p_bh", lang): rows["p_adj_bh"].map(lambda v: f"{v:.2g}"),
        report.t("perf_col_srm", lang): rows["srm_p"].map(lambda v: f"{v:.2g}"),
        report.t("perf_col_ctw", lang): rows["chance_to_win"].map(lambda v: f"{v:.1%}" if math.isfinite(v) else "–"),
        report.t("perf_col_verdict", lang): [report.t(f"perf_kind_{verdict_kind(r, alpha)}", lang) for _, r in rows.iterrows()],
    })
    return out.reset_index(drop=True)


def roi_table(result: Performance, cfg) -> pd.DataFrame:
    """The ROI table as shown in the report (tables/campaign_roi.csv holds every column)."""
    from crmbook import report

    lang, cur = cfg.report.language, cfg.run.currency
    roi = result.roi
    if roi.empty:
        return pd.DataFrame()

    def fmt(v: float, pattern: str) -> str:
        return pattern.format(v) if v is not None and math.isfinite(v) else "–"

    out = pd.DataFrame({
        report.t("perf_col_campaign", lang): roi["campaign_id"],
        report.t("perf_col_variant", lang): roi["variant"].replace(ALL_VARIANTS, report.t("perf_all_variants", lang)),
        report.t("perf_col_control", lang): roi["control"],
        report.t("perf_col_inc_conv", lang): [
            fmt(v, "{:+,.1f}") + (f" ({lo:+,.1f} … {hi:+,.1f})" if math.isfinite(lo) else "")
            for v, lo, hi in zip(roi["incremental_conversions"], roi["incremental_conversions_ci_low"],
                                 roi["incremental_conversions_ci_high"])],
        report.say("perf_col_inc_rev", lang, currency=cur): [
            fmt(v, "{:+,.0f}") + (f" ({lo:+,.0f} … {hi:+,.0f})" if math.isfinite(lo) else "")
            for v, lo, hi in zip(roi["incremental_revenue"], roi["incremental_revenue_ci_low"], roi["incremental_revenue_ci_high"])],
        report.say("perf_col_cost", lang, currency=cur): roi["cost"].map(lambda v: fmt(v, "{:,.2f}")),
        report.t("perf_col_roi", lang): roi["roi"].map(lambda v: fmt(v, "{:+.0%}")),
        report.say("perf_col_cpic", lang, currency=cur): roi["cost_per_incremental_conversion"].map(lambda v: fmt(v, "{:,.2f}")),
    })
    if roi["cost"].isna().all():  # no campaigns table with costs: no ROI to show
        out = out.iloc[:, :5]
    return out


def funnel_table(result: Performance, cfg) -> pd.DataFrame:
    """Funnels as shown in the report: one row per campaign and group, a column per stage with
    customers and % of members (of the previous stage in brackets)."""
    from crmbook import report

    lang = cfg.report.language
    f = result.funnels
    if f.empty:
        return pd.DataFrame()
    cell = [f"{n:,} · {a:.1%}" + (f" ({b:.0%})" if math.isfinite(b) else "")
            for n, a, b in zip(f["customers"], f["pct_of_first"], f["pct_of_previous"])]
    wide = f.assign(cell=cell, stage_label=f["stage"].map(lambda s: report.t(f"perf_stage_{s}", lang)))
    order = [report.t(f"perf_stage_{s}", lang) for s in FUNNEL_STAGES if s in set(f["stage"])]
    out = wide.pivot(index=["campaign_id", "group"], columns="stage_label", values="cell").reindex(columns=order).fillna("–")
    out = out.reset_index().rename(columns={"campaign_id": report.t("perf_col_campaign", lang), "group": report.t("perf_col_group", lang)})
    out.columns.name = None
    return out


def monitoring_line(result: Performance, cfg) -> str:
    """The one-line monitoring summary for the summary and the index page."""
    from crmbook import report

    lang = cfg.report.language
    threshold = f"{cfg.performance.alert_threshold:.0%}"
    if result.kpis.empty:
        return report.t("perf_monitor_none", lang)
    if not result.earlier_run_ids:
        return report.t("perf_monitor_first", lang)
    previous = result.earlier_run_ids[-1]
    found = result.alerts
    if found.empty:
        return report.say("perf_monitor_ok", lang, threshold=threshold, run=previous)
    moves = ", ".join(f"{report.t(f'perf_kpi_{r.kpi}', lang)} {r.change_rel:+.0%}" if math.isfinite(r.change_rel)
                      else report.t(f"perf_kpi_{r.kpi}", lang) for r in found.itertuples())
    return report.say("perf_monitor_alert", lang, n=len(found), threshold=threshold, run=previous, moves=moves)


def monitoring_card(result: Performance, cfg) -> str:
    """The monitoring status in a few words, for the KPI card and the index page."""
    from crmbook import report

    lang = cfg.report.language
    threshold = f"{cfg.performance.alert_threshold:.0%}"
    if result.kpis.empty:
        return report.t("perf_monitor_card_none", lang)
    if not result.earlier_run_ids:
        return report.t("perf_monitor_card_first", lang)
    found = result.alerts
    if found.empty:
        return report.say("perf_monitor_card_ok", lang, threshold=threshold)
    moves = ", ".join(f"{report.t(f'perf_kpi_{r.kpi}', lang)} {r.change_rel:+.0%}" if math.isfinite(r.change_rel)
                      else report.t(f"perf_kpi_{r.kpi}", lang) for r in found.head(3).itertuples())
    return report.say("perf_monitor_card_alert", lang, n=len(found), moves=moves + (", …" if len(found) > 3 else ""))


def summarise(result: Performance, cfg):
    """KPI cards (latest period, change against the previous one) and three to five findings."""
    from crmbook import report

    lang, currency = cfg.report.language, cfg.run.currency
    cards: list[report.Card] = []
    findings: list[str] = []
    latest = latest_kpis(result.kpis).set_index("kpi") if not result.kpis.empty else pd.DataFrame()
    grain_word = report.t(f"perf_grain_{cfg.performance.grain}", lang)
    if len(latest):
        period = str(latest["period"].iloc[0])
        for kpi in CARD_KPIS:
            if kpi in latest.index and math.isfinite(latest.loc[kpi, "value"]):
                row = latest.loc[kpi]
                cards.append(report.Card(report.t(f"perf_kpi_{kpi}", lang), format_value(row["value"], KPI_UNITS[kpi], currency),
                                         format_change(row, KPI_UNITS[kpi], lang)))
        cac = blended_cac(result.kpis_wide)
        if result.clv is not None and math.isfinite(cac) and cac > 0:
            cards.append(report.Card(report.t("perf_kpi_clv_cac", lang), f"{result.clv / cac:.1f}×",
                                     report.say("perf_clv_cac_note", lang, clv=format_value(result.clv, "money", currency),
                                                cac=format_value(cac, "money", currency))))
        rev = latest.loc["revenue"]
        findings.append(report.say("perf_f_latest", lang, grain=grain_word, period=period,
                                   revenue=format_value(rev["value"], "money", currency),
                                   change=format_change(rev, "money", lang) or "–",
                                   active=format_value(latest.loc["active_customers", "value"], "count", currency),
                                   new=format_value(latest.loc["new_customers", "value"], "count", currency)))
        if math.isfinite(latest.loc["retention_rate", "value"]):
            avg = result.kpis_wide["retention_rate"].mean()
            findings.append(report.say("perf_f_retention", lang, grain=grain_word,
                                       rate=format_value(latest.loc["retention_rate", "value"], "share", currency),
                                       average=format_value(avg, "share", currency)))
    if not result.cohorts.empty:
        m3 = result.cohorts[result.cohorts["months_since"] == 3]
        if len(m3):
            findings.append(report.say("perf_f_cohort", lang, share=f"{(m3['customers'].sum() / m3['cohort_size'].sum()):.1%}",
                                       cohorts=len(m3)))
    verdicts = experiment_verdicts(result, cfg)
    if result.plans:
        table = result.experiments
        variants = table[table["verdict"] != "control"]
        n_srm = int((variants.groupby("experiment")["srm_p"].first() < experiments.SRM_ALPHA).sum())
        n_ship = variants[variants["verdict"] == "ship"].groupby("experiment").size().size
        cards.append(report.Card(report.t("perf_card_experiments", lang), str(len(result.plans)),
                                 report.say("perf_card_experiments_note", lang, ship=n_ship, srm=n_srm)))
        findings += verdicts[: max(1, 4 - len(findings))] if len(findings) < 4 else verdicts[:1]
        if not result.roi.empty:
            best = result.roi[result.roi["variant"] != ALL_VARIANTS].dropna(subset=["incremental_revenue"])
            if len(best):
                top = best.sort_values(["incremental_revenue", "campaign_id", "variant"], ascending=[False, True, True]).iloc[0]
                if len(findings) < 5:
                    findings.append(report.say("perf_f_roi" if math.isfinite(top["roi"]) else "perf_f_increment", lang,
                                               campaign=top["campaign_id"], variant=top["variant"],
                                               revenue=f"{top['incremental_revenue']:+,.0f} {currency}",
                                               roi=f"{top['roi']:+.0%}" if math.isfinite(top["roi"]) else ""))
    line = monitoring_line(result, cfg)
    cards.append(report.Card(report.t("perf_card_monitoring", lang), monitoring_card(result, cfg)))
    if len(findings) >= 5:
        findings = findings[:4]
    findings.append(line)
    return report.StageSummary(cards, findings)


def show_cards(summary, result: Performance, cfg, periods_shown: int = 12):
    """The summary cards as HTML, each KPI card with a sparkline of its last periods (inline SVG,
    no JavaScript)."""
    from IPython.display import HTML

    from crmbook import report
    from crmbook.plots import performance as charts

    lang = cfg.report.language
    series: dict[str, list[float]] = {}
    if not result.kpis_wide.empty:
        for kpi in CARD_KPIS:
            if kpi in result.kpis_wide.columns:
                series[report.t(f"perf_kpi_{kpi}", lang)] = result.kpis_wide[kpi].astype("float64").tail(periods_shown).tolist()
    items = []
    for card in summary.cards:
        spark = charts.sparkline_svg(series[card.label], title=report.say("perf_spark_title", lang, n=len(series[card.label]))) \
            if card.label in series else ""
        items.append(f'<div class="crm-card"><div class="label">{html.escape(card.label)}</div>'
                     f'<div class="value">{html.escape(card.value)}</div>'
                     + (f'<div class="note">{html.escape(card.note)}</div>' if card.note else "") + spark + "</div>")
    return HTML(f'<div class="crm-cards">{"".join(items)}</div>')


def heading(key: str, lang: str, level: int = 2, **fields: object):
    """A section heading in the report language."""
    from IPython.display import HTML

    from crmbook import report

    return HTML(f"<h{level}>{html.escape(report.say(key, lang, **fields))}</h{level}>")


def note(key: str, lang: str, **fields: object):
    """A short paragraph in the report language (used when a section has nothing to show)."""
    from IPython.display import HTML

    from crmbook import report

    return HTML(f"<p>{html.escape(report.say(key, lang, **fields))}</p>")


def method_notes(cfg, result: Performance | None = None):
    """The definitions and caveats, as a list, in the report language (those of the sections
    this run shows, when `result` is given)."""
    from IPython.display import HTML

    from crmbook import report

    lang, p = cfg.report.language, cfg.performance
    kpi_keys = ["perf_def_period", "perf_def_revenue", "perf_def_active", "perf_def_new", "perf_def_aov", "perf_def_frequency",
                "perf_def_repeat", "perf_def_retention", "perf_def_cac", "perf_def_clv_cac", "perf_def_cohort"]
    campaign_keys = ["perf_def_funnel", "perf_def_experiment", "perf_def_cuped", "perf_def_control", "perf_def_incremental",
                     "perf_def_roi"]
    keys = ((kpi_keys if result is None or result.has_transactions else [])
            + (campaign_keys if result is None or result.has_members else []) + ["perf_def_monitoring"])
    fields = dict(grain=report.t(f"perf_grain_{p.grain}", lang), level=f"{p.confidence_level:.0%}",
                  alpha=f"{1 - p.confidence_level:.2g}", power=f"{p.power:.0%}", margin=f"{p.gross_margin:.0%}",
                  threshold=f"{p.alert_threshold:.0%}", file=HISTORY_FILE.as_posix())
    items = "".join(f"<li>{html.escape(report.say(k, lang, **fields))}</li>" for k in keys)
    return HTML(f"<ul>{items}</ul>")


# ------------------------------------------------------------------------------------------
# report pieces: tables and charts in the report language (the charts are in crmbook.plots.performance)
# ------------------------------------------------------------------------------------------
def kpi_table(result: Performance, cfg, last: int = 6) -> pd.DataFrame:
    """The KPIs of the last `last` periods, one row per KPI, formatted for reading."""
    from crmbook import report

    lang, currency = cfg.report.language, cfg.run.currency
    wide = result.kpis_wide.tail(last)
    if wide.empty:
        return pd.DataFrame()
    out = {report.t("perf_col_kpi", lang): [report.t(f"perf_kpi_{k}", lang) for k in KPIS if k in wide.columns]}
    for _, row in wide.iterrows():
        out[str(row["period"])] = [format_value(float(row[k]), KPI_UNITS[k], currency) for k in KPIS if k in wide.columns]
    return pd.DataFrame(out)


def history_table(result: Performance, cfg) -> pd.DataFrame:
    """This run's watched KPIs against the previous run: values, relative change and alert."""
    from crmbook import report

    lang, currency = cfg.report.language, cfg.run.currency
    h = result.history
    if h.empty or not result.earlier_run_ids:
        return pd.DataFrame()
    previous_id = result.earlier_run_ids[-1]
    now = h[h["run_id"] == result.run_id].set_index("kpi")
    before = h[h["run_id"] == previous_id].set_index("kpi")
    rows = []
    for kpi, row in now.iterrows():
        unit = KPI_UNITS.get(kpi, "ratio")
        prev = before["value"].get(kpi, math.nan)
        rows.append({report.t("perf_col_kpi", lang): report.t(f"perf_kpi_{kpi}", lang) if kpi in KPI_UNITS else kpi,
                     report.say("perf_col_previous_run", lang, run=previous_id): format_value(float(prev), unit, currency)
                     + (f" ({before['period'].get(kpi)})" if kpi in before.index else ""),
                     report.t("perf_col_this_run", lang): f"{format_value(float(row['value']), unit, currency)} ({row['period']})",
                     report.t("perf_col_change", lang): f"{row['change_rel']:+.1%}" if math.isfinite(row["change_rel"]) else "–",
                     report.t("perf_col_alert", lang): "⚠" if row["alert"] else ""})
    return pd.DataFrame(rows)


def verdict_list(result: Performance, cfg):
    """The plain-words verdict of every experiment, as a list."""
    from IPython.display import HTML

    lines = experiment_verdicts(result, cfg)
    return HTML("<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul>") if lines else None


def chart_kpi_trends(result: Performance, cfg):
    """Revenue, active customers, AOV and retention per period."""
    from crmbook import report
    from crmbook.plots import performance as charts

    lang, cur = cfg.report.language, cfg.run.currency
    unit = {"money": cur, "count": report.t("perf_unit_customers", lang), "share": "%"}
    panels = [(k, report.t(f"perf_kpi_{k}", lang), unit[KPI_UNITS[k]])
              for k in ("revenue", "active_customers", "aov", "retention_rate")]
    title = report.say("perf_chart_trends", lang, grain=report.t(f"perf_grain_{cfg.performance.grain}", lang))
    return charts.kpi_trends(result.kpis_wide, panels, title, report.t("perf_axis_period", lang))


def chart_new_returning(result: Performance, cfg):
    """New and returning active customers per period."""
    from crmbook import report
    from crmbook.plots import performance as charts

    lang = cfg.report.language
    labels = (report.t("perf_kpi_new_customers", lang), report.t("perf_kpi_returning_customers", lang))
    return charts.new_vs_returning(result.kpis_wide, labels, report.t("perf_chart_new_returning", lang),
                                   report.t("perf_axis_period", lang), report.t("perf_unit_customers", lang))


def chart_cohorts(result: Performance, cfg, value: str = "retention"):
    """The cohort heatmap in % of the cohort's customers (`retention`) or in revenue per customer
    acquired (`revenue_per_customer`)."""
    from crmbook import report
    from crmbook.plots import performance as charts

    lang = cfg.report.language
    matrix = cohort_matrix(result.cohorts, value, cfg.performance.cohort_months)
    percent = value == "retention"
    title = report.t("perf_chart_cohort_share" if percent else "perf_chart_cohort_revenue", lang)
    bar = "%" if percent else report.say("perf_axis_revenue_per_customer", lang, currency=cfg.run.currency)
    return charts.cohort_heatmap(matrix, title, report.t("perf_axis_months_since", lang), report.t("perf_axis_cohort", lang),
                                 bar, percent)


def chart_funnels(result: Performance, cfg):
    """Share of members reaching each funnel stage, per campaign and group."""
    from crmbook import report
    from crmbook.plots import performance as charts

    lang = cfg.report.language
    labels = {s: report.t(f"perf_stage_{s}", lang) for s in FUNNEL_STAGES}
    return charts.funnel_chart(result.funnels, labels, report.t("perf_chart_funnels", lang), report.t("perf_axis_stage", lang),
                               report.t("perf_axis_share_of_members", lang), report.t("perf_col_campaign", lang))


def chart_lifts(result: Performance, cfg):
    """Relative lift of each variant with its interval."""
    from crmbook import report
    from crmbook.plots import performance as charts

    lang = cfg.report.language
    metrics = {m: _metric_name(m, lang) for m in result.experiments["metric"].unique()}
    return charts.lift_chart(result.experiments, metrics, report.say("perf_chart_lifts", lang, level=f"{result.level:.0%}"),
                             report.t("perf_axis_lift", lang), alpha=1.0 - result.level)


def chart_history(result: Performance, cfg):
    """Watched KPIs across runs (first run = 100), alerts ringed; None with fewer than two runs."""
    from crmbook import report
    from crmbook.plots import performance as charts

    lang = cfg.report.language
    if result.history.empty or not result.earlier_run_ids:
        return None
    kpis = [k for k in ("revenue", "orders", "active_customers", "aov", "retention_rate") if k in set(result.history["kpi"])]
    return charts.history_chart(result.history, kpis, {k: report.t(f"perf_kpi_{k}", lang) for k in kpis},
                                report.t("perf_chart_history", lang), report.t("perf_axis_run", lang), report.t("perf_axis_index", lang))


def monitoring_note(result: Performance, cfg):
    """The monitoring line as a paragraph (alerts in bold)."""
    from IPython.display import HTML

    line = html.escape(monitoring_line(result, cfg))
    return HTML(f"<p><strong>{line}</strong></p>" if not result.alerts.empty else f"<p>{line}</p>")
