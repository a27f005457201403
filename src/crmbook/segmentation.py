"""03 segmentation: RFM scores and named segments, behavioural clusters, lifecycle stages,
value tiers, attribute segments, recommended actions and audience exports.

Customer features come from the clean transactions through `engine.customer_summary` (DuckDB,
or Spark with `run.engine: pyspark`; one row per customer); everything after that works on the customer-level table in pandas and
scikit-learn. Every output is sorted by customer_id and every random step is seeded, so the
same inputs give byte-identical tables.

* RFM (Hughes 1994, "Strategic Database Marketing"): R = days since the last purchase day,
  F = orders (distinct order ids), M = net revenue over the whole history (refunds netted).
  Scores 1..bins by quantile with `rank(method="min")`: tied customers share a score and no
  score depends on row order (`rank(method="first")` does; `pd.qcut` fails on tied edges).
  Recency is reversed: the most recent customers score highest. Business thresholds can
  replace quantiles. Named segments come from the R x F grid of REFERENCE.md § Segmentation.
* Behavioural clusters: log orders, log average order value and tenure (days since the first
  purchase) by default, standardised; K-means with k chosen by silhouette, a Gaussian mixture
  with k chosen by ICL (Biernacki, Celeux & Govaert 2000: BIC plus twice the assignment
  entropy, which penalises components that split one group into overlapping parts) or BIC,
  HDBSCAN as an option. Stability: ARI and per-cluster Jaccard (Hennig 2007, "Cluster-wise
  assessment of cluster stability") between the fit and refits on bootstrap resamples.
* Lifecycle stages judge days since the last purchase against the customer's own usual gap
  between purchases (the population median gap for one-time buyers).
"""
from __future__ import annotations

import datetime as dt
import html
import logging
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from crmbook import engine, report, store
from crmbook.config import Config, SegmentationSection
from crmbook.errors import InputError

_log = logging.getLogger(__name__)  # progress lines (crmbook.progress)

STAGE = "03_segmentation"

#: The named-segment grid (REFERENCE.md § Segmentation): R score -> segment for F = 1..5.
DEFAULT_GRID: dict[int, tuple[str, ...]] = {
    5: ("New Customers", "Potential Loyalists", "Potential Loyalists", "Champions", "Champions"),
    4: ("Promising", "Potential Loyalists", "Potential Loyalists", "Loyal Customers", "Loyal Customers"),
    3: ("About to Sleep", "About to Sleep", "Need Attention", "Loyal Customers", "Loyal Customers"),
    2: ("Hibernating", "Hibernating", "At Risk", "At Risk", "Can't Lose Them"),
    1: ("Hibernating", "Hibernating", "At Risk", "At Risk", "Can't Lose Them"),
}
#: Display order of the default segments (best first).
SEGMENT_ORDER = ("Champions", "Loyal Customers", "Potential Loyalists", "New Customers", "Promising",
                 "Need Attention", "About to Sleep", "At Risk", "Can't Lose Them", "Hibernating")
LIFECYCLE_STAGES = ("new", "active", "at_risk", "lapsed", "lost")
VALUE_TIERS = ("high_value", "potential", "ordinary")
#: Columns of tables/customer_segments.parquet, in order.
SEGMENT_COLUMNS = ("customer_id", "recency", "frequency", "monetary", "r_score", "f_score", "m_score",
                   "rfm_segment", "cluster", "cluster_name", "lifecycle_stage", "value_tier", "aov", "tenure_days")
#: Columns of an audience file: ids and scores, never personal data.
AUDIENCE_COLUMNS = ("customer_id", "segment", "r_score", "f_score", "m_score", "recency", "frequency",
                    "monetary", "lifecycle_stage", "value_tier", "cluster_name")


# ---------------------------------------------------------------------------------------------
# Customer features (crmbook.engine; the analysis date and the category mix on local DuckDB)


def analysis_date(cfg: Config, con, transactions: str | Path) -> dt.date:
    """`run.analysis_date`, else the day after the last order in the clean transactions."""
    if cfg.run.analysis_date:
        return cfg.run.analysis_date
    last = con.execute("SELECT MAX(CAST(order_ts AS DATE)) FROM read_parquet(?)", [str(transactions)]).fetchone()[0]
    return (last or dt.date.today()) + dt.timedelta(days=1)


def customer_features(con, transactions: str | Path, as_of: dt.date) -> pd.DataFrame:
    """One row per customer (sorted by customer_id) from `engine.customer_summary` in days, plus
    tenure_days (= T). Revenue is rounded to cents, and AOV derived from it, so that scores use the
    amounts the report shows (468.47 / 2 sits on a half cent)."""
    summary = engine.customer_summary(con, transactions, as_of, "days")
    summary["customer_id"] = summary["customer_id"].astype("str")
    summary["revenue"] = summary["revenue"].astype("float64").round(2)
    summary["aov"] = summary["revenue"] / summary["orders"]  # from the rounded revenue: 468.47 / 2 sits on a half cent
    summary["tenure_days"] = summary["T"].astype("float64")
    # BG/NBD's columns are not used here (frequency = repeat days, recency = t_x, monetary = z-bar)
    summary = summary.drop(columns=["frequency", "recency", "T", "monetary"])
    summary["recency_days"] = summary["recency_days"].astype("int64")
    summary["orders"] = summary["orders"].astype("int64")
    return summary.sort_values("customer_id", kind="stable").reset_index(drop=True)


def has_column(con, transactions: str | Path, column: str) -> bool:
    names = con.execute("SELECT * FROM read_parquet(?) LIMIT 0", [str(transactions)]).df().columns
    return column in names


def category_mix(con, transactions: str | Path, as_of: dt.date, groups: pd.DataFrame, by: str,
                 top: int = 6) -> pd.DataFrame | None:
    """Share of each group's net revenue by product category (DuckDB join of the transactions
    with a customer_id -> group table): rows = groups, columns = the `top` categories by revenue
    plus 'other'. None when the transactions have no category column."""
    if not has_column(con, transactions, "category"):
        return None
    con.register("crm_groups", groups[["customer_id", by]])
    try:
        mix = con.execute(
            f"""
            SELECT g."{by}" AS grp, COALESCE(t.category, '?') AS category, SUM(t.amount) AS revenue
            FROM read_parquet(?) t JOIN crm_groups g ON CAST(t.customer_id AS VARCHAR) = g.customer_id
            WHERE CAST(t.order_ts AS DATE) <= ? GROUP BY 1, 2
            """, [str(transactions), as_of]).df()
    finally:
        con.unregister("crm_groups")
    if mix.empty:
        return None
    totals = mix.groupby("category")["revenue"].sum().sort_values(ascending=False, kind="stable")
    keep = set(sorted(totals.index[:top], key=lambda c: (-totals[c], c)))
    mix["category"] = mix["category"].where(mix["category"].isin(keep), "other")
    table = mix.pivot_table(index="grp", columns="category", values="revenue", aggfunc="sum", fill_value=0.0)
    table = table.div(table.sum(axis=1), axis=0)
    order = [c for c in totals.index if c in keep] + (["other"] if "other" in table.columns else [])
    return table[order]


# ---------------------------------------------------------------------------------------------
# RFM


def quantile_scores(values: pd.Series, bins: int = 5, higher_is_better: bool = True) -> pd.Series:
    """Scores 1..bins by quantile of `values`. Tied values share a score: the percentile rank is
    rank(method="min") / n, and score = ceil(bins x rank / n), computed in integers so that no
    floating-point error moves a customer across an edge. The lowest value always scores 1."""
    x = values.astype("float64") if higher_is_better else -values.astype("float64")
    n = int(x.notna().sum())
    if n == 0:
        return pd.Series(np.ones(len(x), dtype="int64"), index=values.index)
    rank = x.rank(method="min").fillna(1).to_numpy().astype("int64")
    return pd.Series((rank * bins + n - 1) // n, index=values.index, dtype="int64")  # = ceil(bins * rank / n)


def threshold_scores(values: pd.Series, edges: list[float], higher_is_better: bool = True) -> pd.Series:
    """Scores 1..len(edges)+1 from ascending business edges. Higher is better (frequency,
    monetary): score = 1 + the number of edges <= value. Lower is better (recency days):
    score = bins - the number of edges < value, so value <= edges[0] scores highest."""
    bins = len(edges) + 1
    x = values.astype("float64").to_numpy()
    if higher_is_better:
        score = 1 + np.searchsorted(np.asarray(edges, float), x, side="right")
    else:
        score = bins - np.searchsorted(np.asarray(edges, float), x, side="left")
    return pd.Series(score.astype("int64"), index=values.index)


def rfm_scores(features: pd.DataFrame, settings: SegmentationSection.Rfm) -> pd.DataFrame:
    """r_score, f_score, m_score per customer: R on recency_days (reversed), F on orders, M on
    net revenue; quantiles unless `settings.thresholds` gives business edges for a score."""
    spec = {"r_score": ("recency_days", "recency_days", False), "f_score": ("orders", "frequency", True),
            "m_score": ("revenue", "monetary", True)}
    out = {}
    for score, (column, key, higher) in spec.items():
        edges = settings.thresholds.get(key)
        out[score] = (threshold_scores(features[column], edges, higher) if edges
                      else quantile_scores(features[column], settings.bins, higher))
    return pd.DataFrame(out, index=features.index)


def _grid_score(score: int, bins: int) -> int:
    """A score on 1..bins mapped onto the default grid's 1..5."""
    return 1 + ((score - 1) * 4 + (bins - 1) // 2) // (bins - 1)


def segment_grid(settings: SegmentationSection.Rfm) -> pd.DataFrame:
    """The R x F naming grid: one row per cell (r_score, f_score, segment), bins x bins rows.
    The configured grid, else REFERENCE.md's 5 x 5 grid (other bin counts are mapped onto it)."""
    bins = settings.bins
    rows = []
    for r in range(bins, 0, -1):
        for f in range(1, bins + 1):
            if settings.grid is not None:
                name = str(settings.grid[r][f - 1]).strip()
            else:
                name = DEFAULT_GRID[_grid_score(r, bins)][_grid_score(f, bins) - 1]
            rows.append({"r_score": r, "f_score": f, "segment": name})
    return pd.DataFrame(rows)


def segment_order(grid: pd.DataFrame) -> list[str]:
    """Segments in display order: the default order, then custom names as they appear in the grid."""
    names = list(dict.fromkeys(grid["segment"]))
    return [s for s in SEGMENT_ORDER if s in names] + [s for s in names if s not in SEGMENT_ORDER]


def name_segments(scores: pd.DataFrame, grid: pd.DataFrame) -> pd.Series:
    """The named segment of every customer from its (r_score, f_score) cell."""
    lookup = grid.set_index(["r_score", "f_score"])["segment"]
    keys = pd.MultiIndex.from_arrays([scores["r_score"], scores["f_score"]])
    return pd.Series(lookup.reindex(keys).to_numpy(), index=scores.index, name="rfm_segment")


def slug(name: str) -> str:
    """A file- and key-safe name: "Can't Lose Them" -> "cant_lose_them"."""
    text = re.sub(r"['’]", "", str(name).casefold())
    return re.sub(r"[^0-9a-z\u4e00-\u9fff]+", "_", text).strip("_") or "segment"


def segment_label(name: str, language: str) -> str:
    """A segment's name in the report language (custom names are shown as written)."""
    key = f"seg_name_{slug(name)}"
    return report.t(key, language) if key in report.TEXT else str(name)


def segment_action(name: str, settings: SegmentationSection, language: str) -> str:
    """The recommended action: `segmentation.actions` (by name or slug), else the text default."""
    for key in (name, slug(name)):
        if key in settings.actions:
            return settings.actions[key]
    key = f"seg_act_{slug(name)}"
    return report.t(key if key in report.TEXT else "seg_act_default", language)


# ---------------------------------------------------------------------------------------------
# Lifecycle stages and value tiers


def population_gap_days(features: pd.DataFrame, settings: SegmentationSection.Lifecycle) -> float:
    """The median of the mean inter-purchase time over repeat buyers (days); `default_gap_days`
    when nobody bought twice."""
    repeaters = features["mean_interpurchase_days"][features["purchase_days"] > 1].dropna()
    return float(repeaters.median()) if len(repeaters) else float(settings.default_gap_days)


def usual_gap(features: pd.DataFrame, settings: SegmentationSection.Lifecycle) -> pd.Series:
    """Each customer's usual days between purchases: their own mean inter-purchase time when
    they have at least `own_rhythm_min_repeats` repeat purchases, else the median of that mean
    over all repeat buyers (`default_gap_days` when nobody bought twice). At least one day."""
    repeats = features["purchase_days"] - 1
    own = features["mean_interpurchase_days"].astype("float64")
    population = population_gap_days(features, settings)
    gap = own.where(repeats >= settings.own_rhythm_min_repeats, population).fillna(population)
    return gap.clip(lower=1.0).rename("usual_gap_days")


def lifecycle_stages(features: pd.DataFrame, settings: SegmentationSection.Lifecycle) -> pd.Series:
    """new (first purchase within `new_days`), else by silence = recency_days / usual gap:
    active (<= active_ratio), at_risk (<= at_risk_ratio), lapsed (<= lapsed_ratio), lost."""
    silence = features["recency_days"] / usual_gap(features, settings)
    stage = np.select(
        [features["tenure_days"] <= settings.new_days, silence <= settings.active_ratio,
         silence <= settings.at_risk_ratio, silence <= settings.lapsed_ratio],
        ["new", "active", "at_risk", "lapsed"], default="lost")
    return pd.Series(pd.Categorical(stage, categories=LIFECYCLE_STAGES, ordered=True), index=features.index,
                     name="lifecycle_stage")


def value_tiers(features: pd.DataFrame, stages: pd.Series, settings: SegmentationSection.ValueTiers) -> pd.Series:
    """high_value: the top `high_value_share` of customers by net revenue (customers tied at the
    edge all count when the first of them is inside); potential: not high value, in one of
    `potential_stages`, average order value at or above its `potential_min_aov_quantile`;
    ordinary: everyone else."""
    n = max(len(features), 1)
    above = features["revenue"].rank(method="min", ascending=False).to_numpy() - 1  # customers with more revenue
    high = above < settings.high_value_share * n
    aov_floor = features["aov"].quantile(settings.potential_min_aov_quantile) if len(features) else 0.0
    potential = ~high & stages.isin(settings.potential_stages).to_numpy() & (features["aov"] >= aov_floor).to_numpy()
    tier = np.select([high, potential], ["high_value", "potential"], default="ordinary")
    return pd.Series(pd.Categorical(tier, categories=VALUE_TIERS, ordered=True), index=features.index, name="value_tier")


# ---------------------------------------------------------------------------------------------
# Behavioural clusters


def cluster_matrix(features: pd.DataFrame, names: list[str], lifecycle: SegmentationSection.Lifecycle) -> pd.DataFrame:
    """The clustering features, log-transformed where skewed (not yet standardised)."""
    columns = {
        "frequency": lambda: np.log(features["orders"].clip(lower=1)),
        "aov": lambda: np.log(features["aov"].clip(lower=0.01)),
        "revenue": lambda: np.log(features["revenue"].clip(lower=0.01)),
        "tenure": lambda: features["tenure_days"].astype("float64"),
        "recency": lambda: features["recency_days"].astype("float64"),
        "interpurchase": lambda: np.log(usual_gap(features, lifecycle)),
    }
    return pd.DataFrame({name: columns[name]() for name in names}, index=features.index)


def standardise(matrix: pd.DataFrame) -> np.ndarray:
    """Zero mean, unit variance per column (constant columns stay at zero)."""
    x = matrix.to_numpy(dtype="float64")
    sd = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


@dataclass
class Clusters:
    """Cluster assignment and its evidence. `labels` are 1..k ordered by mean net revenue, best
    first (0 = HDBSCAN noise); `names` are English names from the profiles."""

    method: str
    k: int
    labels: pd.Series
    names: dict[int, str]
    features: list[str]
    selection: pd.DataFrame  # k, silhouette, inertia, bic, icl
    k_kmeans: int
    k_gmm: int
    alternative: str  # the other method compared with the chosen one
    agreement_ari: float  # ARI between the chosen method and the alternative
    stability_ari: list[float] = field(default_factory=list)
    jaccard: dict[int, float] = field(default_factory=dict)
    fit_size: int = 0
    profile: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def stability(self) -> float:
        return float(np.mean(self.stability_ari)) if self.stability_ari else float("nan")


def _kmeans(k: int, seed: int):
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=10, random_state=seed)


def _gmm(k: int, seed: int, reg_covar: float):
    from sklearn.mixture import GaussianMixture

    return GaussianMixture(n_components=k, covariance_type="full", n_init=2, reg_covar=reg_covar, random_state=seed)


def _icl(model, z: np.ndarray) -> float:
    """Integrated completed likelihood: BIC + 2 x entropy of the soft assignments."""
    p = model.predict_proba(z)
    entropy = -float(np.sum(p * np.log(np.clip(p, 1e-300, 1.0))))
    return float(model.bic(z)) + 2.0 * entropy


def choose_k(z: np.ndarray, settings: SegmentationSection.Clusters) -> pd.DataFrame:
    """For every k in the range: K-means silhouette (on a seeded sample) and inertia, GMM BIC and ICL."""
    from sklearn.metrics import silhouette_score

    from sklearn.metrics import pairwise_distances

    n_distinct = len(np.unique(z, axis=0))
    lo, hi = settings.k_range
    ks = [k for k in range(lo, hi + 1) if k < n_distinct] or [min(2, max(n_distinct, 1))]
    # One seeded sample and one distance matrix for every k: silhouette is O(n^2).
    rng = np.random.default_rng(settings.seed)
    sample = np.sort(rng.choice(len(z), size=min(len(z), settings.silhouette_sample), replace=False))
    distances = pairwise_distances(z[sample])
    rows = []
    for k in ks:
        km = _kmeans(k, settings.seed).fit(z)
        labels = km.labels_[sample]
        sil = (silhouette_score(distances, labels, metric="precomputed")
               if 1 < len(np.unique(labels)) < len(sample) else float("nan"))
        gmm = _gmm(k, settings.seed, settings.gmm_reg_covar).fit(z)
        rows.append({"k": k, "silhouette": float(sil), "inertia": float(km.inertia_),
                     "bic": float(gmm.bic(z)), "icl": _icl(gmm, z)})
    return pd.DataFrame(rows)


def _fit_predict(method: str, k: int, fit: np.ndarray, everyone: np.ndarray, settings: SegmentationSection.Clusters,
                 min_cluster_size: int) -> np.ndarray:
    """Fit on `fit`, label `everyone` (0-based; -1 = noise for HDBSCAN)."""
    if method == "kmeans":
        return _kmeans(k, settings.seed).fit(fit).predict(everyone)
    if method == "gmm":
        return _gmm(k, settings.seed, settings.gmm_reg_covar).fit(fit).predict(everyone)
    from sklearn.cluster import HDBSCAN
    from sklearn.neighbors import NearestNeighbors

    labels = HDBSCAN(min_cluster_size=min_cluster_size, copy=True).fit(fit).labels_
    nearest = NearestNeighbors(n_neighbors=1).fit(fit).kneighbors(everyone, return_distance=False)[:, 0]
    return labels[nearest]


def _relabel(raw: np.ndarray, revenue: np.ndarray) -> np.ndarray:
    """Cluster ids 1..k ordered by mean revenue (highest first), ties by size; noise (-1) -> 0."""
    ids = [c for c in np.unique(raw) if c >= 0]
    order = sorted(ids, key=lambda c: (-revenue[raw == c].mean(), -(raw == c).sum(), c))
    lookup = np.zeros(max(ids, default=-1) + 2, dtype="int64")  # position c + 1; noise (-1) -> 0
    for new_id, c in enumerate(order, start=1):
        lookup[c + 1] = new_id
    return lookup[np.asarray(raw, dtype="int64") + 1]


def _jaccard(reference: np.ndarray, other: np.ndarray) -> dict[int, float]:
    """Per reference cluster, the best Jaccard similarity with any cluster of `other` (same points)."""
    out = {}
    for c in np.unique(reference):
        a = reference == c
        out[int(c)] = max(((a & (other == d)).sum() / (a | (other == d)).sum() for d in np.unique(other)), default=0.0)
    return out


def cluster_customers(features: pd.DataFrame, settings: SegmentationSection.Clusters,
                      lifecycle: SegmentationSection.Lifecycle) -> Clusters:
    """Behavioural clusters (see the module docstring). Deterministic for a given seed: the fit
    sample is drawn from customers sorted by id, labels are ordered by revenue. Runs with one
    BLAS/OpenMP thread: on small matrices K-means' thread pool costs far more than it saves
    (60x slower measured with four kernels sharing two cores), and stages run in parallel."""
    import sklearn.cluster  # noqa: F401 - load the OpenMP runtime before limiting it
    import sklearn.mixture  # noqa: F401
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # tiny data and resamples repeat points
        return _cluster_customers(features, settings, lifecycle)


def _cluster_customers(features: pd.DataFrame, settings: SegmentationSection.Clusters,
                       lifecycle: SegmentationSection.Lifecycle) -> Clusters:
    from sklearn.metrics import adjusted_rand_score

    n = len(features)
    matrix = cluster_matrix(features, list(settings.features), lifecycle)
    z = standardise(matrix)
    revenue = features["revenue"].to_numpy(dtype="float64")
    rng = np.random.default_rng(settings.seed)
    fit_idx = np.sort(rng.choice(n, size=settings.fit_sample, replace=False)) if n > settings.fit_sample else np.arange(n)
    zf = z[fit_idx]
    min_size = settings.hdbscan_min_cluster_size or max(10, len(zf) // 100)
    n_distinct = len(np.unique(zf, axis=0)) if n else 0
    if n_distinct < 3:  # nothing to cluster: one group
        labels = pd.Series(np.ones(n, dtype="int64"), index=features.index, name="cluster")
        return Clusters(settings.method, 1, labels, {}, list(settings.features), pd.DataFrame(columns=["k", "silhouette", "inertia", "bic", "icl"]),
                        1, 1, "gmm", float("nan"), fit_size=len(zf))
    selection = choose_k(zf, settings)
    valid = selection.dropna(subset=["silhouette"])
    k_kmeans = settings.k or int((valid if len(valid) else selection).sort_values(["silhouette", "k"], ascending=[False, True])["k"].iloc[0])
    k_gmm = settings.k or int(selection.sort_values([settings.gmm_criterion, "k"])["k"].iloc[0])
    k_kmeans, k_gmm = min(k_kmeans, n_distinct - 1), min(k_gmm, n_distinct - 1)
    k = {"kmeans": k_kmeans, "gmm": k_gmm, "hdbscan": 0}[settings.method]
    raw = _fit_predict(settings.method, k, zf, z, settings, min_size)
    labels = _relabel(raw, revenue)
    alternative = "gmm" if settings.method != "gmm" else "kmeans"
    k_alt = k_gmm if alternative == "gmm" else k_kmeans
    other = _fit_predict(alternative, k_alt, zf, z, settings, min_size)
    agreement = float(adjusted_rand_score(labels, other))
    k = int(len(np.unique(labels[labels > 0])))
    # Stability: refit on bootstrap resamples (HDBSCAN: 80% subsamples, duplicates distort density).
    aris, jac = [], {int(c): [] for c in np.unique(labels)}
    stab_idx = np.sort(rng.choice(len(zf), size=min(len(zf), 10_000), replace=False))
    zs, ref = zf[stab_idx], labels[fit_idx][stab_idx]
    for _ in range(settings.bootstrap if k > 1 else 0):
        if settings.method == "hdbscan":
            pick = rng.choice(len(zs), size=int(0.8 * len(zs)), replace=False)
        else:
            pick = rng.choice(len(zs), size=len(zs), replace=True)
        boot = _fit_predict(settings.method, k, zs[pick], zs, settings, min_size)
        aris.append(float(adjusted_rand_score(ref, boot)))
        seen = np.unique(pick)
        for c, value in _jaccard(ref[seen], boot[seen]).items():
            jac[c].append(value)
    result = Clusters(settings.method, k, pd.Series(labels, index=features.index, name="cluster"), {},
                      list(settings.features), selection, k_kmeans, k_gmm, alternative, agreement,
                      aris, {c: float(np.mean(v)) for c, v in jac.items() if v}, len(zf))
    return result


def describe_clusters(features: pd.DataFrame, clusters: Clusters, stages: pd.Series) -> pd.DataFrame:
    """One row per cluster: size and revenue shares, medians in original units, centroid in
    standard units of log orders / log AOV / tenure, share lapsed or lost, share new, stability."""
    z = pd.DataFrame(standardise(pd.DataFrame({
        "frequency": np.log(features["orders"].clip(lower=1)), "aov": np.log(features["aov"].clip(lower=0.01)),
        "tenure": features["tenure_days"].astype("float64")})), columns=["z_frequency", "z_aov", "z_tenure"], index=features.index)
    frame = pd.concat([features[["orders", "aov", "revenue", "tenure_days", "recency_days"]], z], axis=1)
    frame["cluster"] = clusters.labels
    frame["lapsed"] = stages.isin(["lapsed", "lost"]).to_numpy()
    frame["new"] = (stages == "new").to_numpy()
    total_revenue = max(float(features["revenue"].sum()), 1e-9)
    g = frame.groupby("cluster", sort=True)
    profile = pd.DataFrame({
        "customers": g.size(), "customer_share": g.size() / max(len(frame), 1),
        "revenue_share": g["revenue"].sum() / total_revenue,
        "median_orders": g["orders"].median(), "median_aov": g["aov"].median(), "median_revenue": g["revenue"].median(),
        "median_tenure_days": g["tenure_days"].median(), "median_recency_days": g["recency_days"].median(),
        "z_frequency": g["z_frequency"].mean(), "z_aov": g["z_aov"].mean(), "z_tenure": g["z_tenure"].mean(),
        "share_lapsed": g["lapsed"].mean(), "share_new": g["new"].mean(),
    })
    profile["stability_jaccard"] = [clusters.jaccard.get(int(c), np.nan) for c in profile.index]
    return profile.reset_index()


def cluster_name(row: pd.Series, language: str, detail: bool = False) -> str:
    """A readable name from a cluster's profile, e.g. "Frequent high spenders", "Lapsed one-time low spenders"."""
    if row["cluster"] == 0:
        return report.t("seg_cl_noise", language)
    if row["median_orders"] <= 1:
        freq = "one_time"
    else:
        freq = "frequent" if row["z_frequency"] >= 0.5 else "occasional" if row["z_frequency"] <= -0.5 else "regular"
    spend = "high" if row["z_aov"] >= 0.5 else "low" if row["z_aov"] <= -0.5 else "mid"
    status = ("seg_cl_status_lapsed" if row["share_lapsed"] >= 0.5 else "seg_cl_status_new" if row["share_new"] >= 0.5 else None)
    name = report.say("seg_cl_name", language, status=report.t(status, language) if status else "",
                      frequency=report.t(f"seg_cl_freq_{freq}", language), spend=report.t(f"seg_cl_spend_{spend}", language))
    name = name[:1].upper() + name[1:]
    if detail:
        tenure = "long" if row["z_tenure"] >= 0.5 else "recent" if row["z_tenure"] <= -0.5 else "mid"
        name = report.say("seg_cl_detail", language, name=name, detail=report.t(f"seg_cl_tenure_{tenure}", language))
    return name


def name_clusters(profile: pd.DataFrame, language: str) -> dict[int, str]:
    """Unique names: clusters that share a name get their tenure added, then their number."""
    names = {int(r["cluster"]): cluster_name(r, language) for _, r in profile.iterrows()}
    counts = pd.Series(list(names.values())).value_counts()
    for _, r in profile.iterrows():
        if counts[names[int(r["cluster"])]] > 1:
            names[int(r["cluster"])] = cluster_name(r, language, detail=True)
    counts = pd.Series(list(names.values())).value_counts()
    return {c: (f"{n} #{c}" if counts[n] > 1 else n) for c, n in names.items()}


# ---------------------------------------------------------------------------------------------
# Attribute segments


def customer_attributes(customers: pd.DataFrame | None, settings: SegmentationSection.Attributes,
                        as_of: dt.date) -> pd.DataFrame:
    """customer_id plus the configured attribute columns that the customers table has;
    age_band from age (or birth_date at the analysis date) cut at `age_bands`."""
    if customers is None or "customer_id" not in customers:
        return pd.DataFrame(columns=["customer_id"])
    out = pd.DataFrame({"customer_id": customers["customer_id"].astype("str")})
    for column in settings.columns:
        if column == "age_band":
            age = None
            if "age" in customers and customers["age"].notna().any():
                age = pd.to_numeric(customers["age"], errors="coerce")
            elif "birth_date" in customers and customers["birth_date"].notna().any():
                age = (pd.Timestamp(as_of) - pd.to_datetime(customers["birth_date"])).dt.days / 365.25
            if age is not None:
                out["age"] = age.astype("float64").to_numpy()
                edges = [-np.inf, *settings.age_bands, np.inf]
                labels = [f"<{settings.age_bands[0]}"] + [f"{a}–{b - 1}" for a, b in zip(settings.age_bands, settings.age_bands[1:])] \
                    + [f"{settings.age_bands[-1]}+"]
                out["age_band"] = pd.cut(out["age"], edges, right=False, labels=labels).astype("str").where(out["age"].notna())
        elif column in customers and customers[column].notna().any() and column not in out:
            values = customers[column].astype("str").where(customers[column].notna())
            counts = values.value_counts()
            if len(counts) > settings.max_levels:
                keep = set(counts.index[: settings.max_levels - 1])
                values = values.where(values.isna() | values.isin(keep), "other")
            out[column] = values.array  # as text: to_numpy() would make a Python string per customer
    return out.drop_duplicates("customer_id").sort_values("customer_id", kind="stable").reset_index(drop=True)


def attribute_profiles(segments: pd.DataFrame, attributes: pd.DataFrame, language: str) -> dict[str, pd.DataFrame]:
    """Per attribute: customers, share, mean and median net revenue, share high value, by level."""
    joined = segments[["customer_id", "monetary", "value_tier"]].merge(attributes, on="customer_id", how="left")
    out = {}
    unknown = report.t("seg_unknown", language)
    for column in [c for c in attributes.columns if c not in ("customer_id", "age")]:
        level = joined[column].fillna(unknown)
        g = joined.assign(level=level, high=joined["value_tier"].eq("high_value")).groupby("level", sort=False)
        table = pd.DataFrame({"customers": g.size(), "mean_revenue": g["monetary"].mean(),
                              "median_revenue": g["monetary"].median(), "share_high_value": g["high"].mean()})
        table["customer_share"] = table["customers"] / max(len(joined), 1)
        table = table.sort_index(key=lambda idx: idx.map(_level_key)) if column == "age_band" else table.sort_values(
            ["customers"], ascending=False, kind="stable")
        out[column] = table.reset_index()
    return out


def _level_key(level: str) -> float:
    match = re.search(r"\d+", str(level))
    return (-1.0 if str(level).startswith("<") else float(match.group())) if match else float("inf")


@dataclass
class ValueTree:
    """A shallow decision tree separating high-value customers by their attributes."""

    model: object
    feature_names: list[str]
    accuracy: float  # cross-validated
    balanced_accuracy: float  # cross-validated; 0.5 = chance
    baseline: float  # accuracy of always answering the majority class
    top_feature: str | None
    n: int


def value_tree(segments: pd.DataFrame, attributes: pd.DataFrame, depth: int, seed: int = 0) -> ValueTree | None:
    """Fit DecisionTreeClassifier(max_depth=depth, class_weight='balanced') on the attributes
    (one-hot categories, age in years; missing age handled by the tree) to tell high-value
    customers from the rest; 5-fold stratified cross-validated accuracy. None when there are no
    attributes or too few customers in either class."""
    from sklearn.model_selection import StratifiedKFold, cross_validate
    from sklearn.tree import DecisionTreeClassifier

    columns = [c for c in attributes.columns if c not in ("customer_id", "age_band")]
    if not columns:
        return None
    joined = segments[["customer_id", "value_tier"]].merge(attributes, on="customer_id", how="inner")
    y = joined["value_tier"].eq("high_value").to_numpy()
    if len(joined) < 50 or min(y.sum(), (~y).sum()) < 10:
        return None
    x, names = _tree_matrix(joined, columns)
    min_leaf = max(5, len(joined) // 100)
    model = DecisionTreeClassifier(max_depth=depth, min_samples_leaf=min_leaf, class_weight="balanced", random_state=seed)
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    scores = cross_validate(model, x, y, cv=folds, scoring=("accuracy", "balanced_accuracy"))
    model.fit(x, y)
    importance = pd.Series(model.feature_importances_, index=names)
    top = str(importance.idxmax()) if importance.max() > 0 else None
    return ValueTree(model, names, float(scores["test_accuracy"].mean()),
                     float(scores["test_balanced_accuracy"].mean()), float(max(y.mean(), 1 - y.mean())), top, len(joined))


def _tree_matrix(joined: pd.DataFrame, columns: list[str]) -> tuple[np.ndarray, list[str]]:
    """The value tree's features: age in years and one-hot categories (`column=level`, missing
    levels as "?"), columns sorted by name; as the float32 matrix scikit-learn's trees work on
    (they convert any other input to it), filled column by column: no float64 copies of the
    one-hot frame, which on millions of customers would be several times the matrix's size."""
    sources: dict[str, np.ndarray] = {}
    if "age" in columns:
        sources["age"] = joined["age"].astype("float64").to_numpy()
    for column in (c for c in columns if c != "age"):
        dummies = pd.get_dummies(joined[column].fillna("?"), prefix=column, prefix_sep="=", dtype=bool)
        sources.update({name: dummies[name].to_numpy() for name in dummies.columns})
    names = sorted(sources)
    x = np.empty((len(joined), len(names)), dtype=np.float32, order="F")
    for j, name in enumerate(names):
        x[:, j] = sources.pop(name)
    return x, names


# ---------------------------------------------------------------------------------------------
# The whole stage


@dataclass
class Segmentation:
    as_of: dt.date
    customers: pd.DataFrame  # one row per customer: features, scores, segment, cluster, stage, tier
    grid: pd.DataFrame
    order: list[str]
    clusters: Clusters
    profiles: pd.DataFrame
    attributes: pd.DataFrame
    attribute_profiles: dict[str, pd.DataFrame]
    tree: ValueTree | None
    category_mix: pd.DataFrame | None
    clv_available: bool
    settings: SegmentationSection
    population_gap_days: float


def _clv_per_customer(run_dir) -> pd.Series | None:
    """Per-customer CLV from stage 04 (tables/clv_customers.parquet) when it has run: the `clv`
    column, else the first numeric column whose name contains 'clv'."""
    if not store.has_table(run_dir, "clv_customers"):
        return None
    table = store.read_table(run_dir, "clv_customers")
    candidates = ["clv"] + [c for c in table.columns if "clv" in c.lower() and c != "clv"]
    for column in candidates:
        if column in table and pd.api.types.is_numeric_dtype(table[column]) and "customer_id" in table:
            return table.set_index(table["customer_id"].astype("str"))[column]
    return None


def segment_profiles(customers: pd.DataFrame, order: list[str], settings: SegmentationSection, language: str,
                     clv: pd.Series | None = None) -> pd.DataFrame:
    """tables/segment_profiles.csv: per named segment, customers and revenue (with shares),
    median recency / orders / revenue, mean CLV from stage 04 (empty until it has run), action."""
    total_customers, total_revenue = max(len(customers), 1), max(float(customers["monetary"].sum()), 1e-9)
    g = customers.groupby("rfm_segment", sort=False)
    table = pd.DataFrame({"customers": g.size(), "revenue": g["monetary"].sum().round(2),
                          "median_recency_days": g["recency"].median(), "median_orders": g["frequency"].median(),
                          "median_revenue": g["monetary"].median().round(2)})
    table = table.reindex([s for s in order if s in table.index])
    table.insert(1, "customer_share", (table["customers"] / total_customers).round(6))
    table.insert(3, "revenue_share", (table["revenue"] / total_revenue).round(6))
    if clv is not None:
        ids = customers["customer_id"]
        # 04's table has the same customers in the same order (both sorted by id): no lookup by id then
        per_customer = clv.to_numpy() if clv.index.equals(pd.Index(ids)) else ids.map(clv)
        mean_clv = customers.assign(clv=per_customer).groupby("rfm_segment")["clv"].mean()
        table["mean_clv"] = mean_clv.reindex(table.index).round(2)
    else:
        table["mean_clv"] = np.nan
    table["action"] = [segment_action(s, settings, language) for s in table.index]
    table.index.name = "segment"
    table = table.reset_index()
    table.insert(1, "segment_slug", table["segment"].map(slug))
    return table


def segment(cfg: Config, run_dir, tables: dict[str, pd.DataFrame] | None = None) -> Segmentation:
    """Run the stage on this run's clean tables (`tables`: from `cleaning.load_clean`; the
    transactions are read from tables/clean_transactions.parquet on DuckDB, which spills to a
    temporary folder outside the run folder)."""
    import tempfile

    settings, language = cfg.segmentation, cfg.report.language
    transactions = Path(run_dir) / "tables" / "clean_transactions.parquet"
    with tempfile.TemporaryDirectory(prefix="crmbook-duckdb-") as spill:
        # One connection per query phase, closed straight after it: DuckDB keeps the memory of a
        # large aggregation until its connection closes, and the pandas work in between needs it.
        con = engine.from_params(cfg, spill=spill)
        try:
            as_of = analysis_date(cfg, con, transactions)
            features = customer_features(engine.queries_on(cfg, con), transactions, as_of)
        finally:
            con.close()
        if features.empty:
            raise InputError(transactions, f"no purchases up to {as_of}: nothing to segment (check run.analysis_date)")
        _log.info("RFM features of %s customers", f"{len(features):,}")
        scores = rfm_scores(features, settings.rfm)
        grid = segment_grid(settings.rfm)
        stages = lifecycle_stages(features, settings.lifecycle)
        tiers = value_tiers(features, stages, settings.value_tiers)
        clusters = cluster_customers(features, settings.clusters, settings.lifecycle)
        _log.info("clustered the customers")
        profile = describe_clusters(features, clusters, stages)
        clusters.names = name_clusters(profile, "en")
        profile.insert(1, "cluster_name", profile["cluster"].map(clusters.names))
        clusters.profile = profile
        customers = pd.DataFrame({
            "customer_id": features["customer_id"], "recency": features["recency_days"],
            "frequency": features["orders"], "monetary": features["revenue"], **{c: scores[c] for c in scores},
            "rfm_segment": name_segments(scores, grid), "cluster": clusters.labels,
            "cluster_name": clusters.labels.map(clusters.names).astype("str"),
            "lifecycle_stage": stages.astype("str"), "value_tier": tiers.astype("str"),
            "aov": features["aov"], "tenure_days": features["tenure_days"].astype("int64"),
        })
        con = engine.from_params(cfg, spill=spill)
        try:
            mix = category_mix(con, transactions, as_of, customers, "rfm_segment")
        finally:
            con.close()
    order = segment_order(grid)
    clv = _clv_per_customer(run_dir)
    attributes = customer_attributes((tables or {}).get("customers"), settings.attributes, as_of)
    return Segmentation(
        as_of=as_of, customers=customers, grid=grid, order=order, clusters=clusters,
        profiles=segment_profiles(customers, order, settings, language, clv), attributes=attributes,
        attribute_profiles=attribute_profiles(customers, attributes, language) if attributes.shape[1] > 1 else {},
        tree=value_tree(customers, attributes, settings.attributes.tree_depth, settings.clusters.seed),
        category_mix=mix, clv_available=clv is not None, settings=settings,
        population_gap_days=population_gap_days(features, settings.lifecycle))


def audience(customers: pd.DataFrame, name: str) -> pd.DataFrame:
    """One segment's audience: ids, segment and scores (no personal data), sorted by customer_id."""
    rows = customers[customers["rfm_segment"] == name].rename(columns={"rfm_segment": "segment"})
    return rows[list(AUDIENCE_COLUMNS)].sort_values("customer_id", kind="stable").reset_index(drop=True)


def save(run_dir, result: Segmentation) -> list[Path]:
    """Write tables/customer_segments.parquet, segment_profiles.csv, cluster_profiles.csv,
    rfm_grid.csv and tables/audiences/<segment>.csv (one per segment that has customers; files
    of earlier runs in the same folder are replaced)."""
    paths = [store.write_table(run_dir, "customer_segments", result.customers[list(SEGMENT_COLUMNS)]),
             store.write_table(run_dir, "segment_profiles", result.profiles, fmt="csv"),
             store.write_table(run_dir, "cluster_profiles", result.clusters.profile.round(6), fmt="csv"),
             store.write_table(run_dir, "rfm_grid", result.grid, fmt="csv")]
    folder = store.tables_dir(run_dir) / "audiences"
    if folder.is_dir():
        for old in folder.glob("*.csv"):
            old.unlink()
    for name in result.order:
        members = audience(result.customers, name)
        if len(members):
            paths.append(store.write_table(run_dir, f"audiences/{slug(name)}", members, fmt="csv"))
    return paths


# ---------------------------------------------------------------------------------------------
# Report helpers: summary, tables and charts in the report language


def _pct(value: float) -> str:
    return "–" if value != value else f"{value:.0%}" if abs(value) >= 0.095 or value == 0 else f"{value:.1%}"


def _share(result: Segmentation, names: list[str]) -> tuple[int, float, float]:
    c = result.customers
    members = c["rfm_segment"].isin(names)
    return int(members.sum()), members.mean() if len(c) else 0.0, c.loc[members, "monetary"].sum() / max(c["monetary"].sum(), 1e-9)


def summarise(result: Segmentation, cfg: Config) -> report.StageSummary:
    """KPI cards and three to five findings for the 03 report and the index page."""
    lang, c = cfg.report.language, result.customers
    best = [s for s in ("Champions", "Loyal Customers") if s in result.order]
    risk = [s for s in ("At Risk", "Can't Lose Them") if s in result.order]
    n_best, share_best, rev_best = _share(result, best)
    n_risk, share_risk, rev_risk = _share(result, risk)
    n_champ, share_champ, rev_champ = _share(result, ["Champions"])
    high = c["value_tier"].eq("high_value")
    rev_high = c.loc[high, "monetary"].sum() / max(c["monetary"].sum(), 1e-9)
    cl = result.clusters
    cards = [
        report.Card(report.t("customers", lang), report.number(len(c)), report.say("seg_card_as_of", lang, date=result.as_of.isoformat())),
        report.Card(segment_label("Champions", lang), _pct(share_champ), report.say("seg_card_revenue_share", lang, share=_pct(rev_champ))),
        report.Card(report.t("seg_card_at_risk", lang), report.number(n_risk), report.say("seg_card_revenue_share", lang, share=_pct(rev_risk))),
        report.Card(report.t("seg_card_high_value", lang), _pct(high.mean() if len(c) else 0), report.say("seg_card_revenue_share", lang, share=_pct(rev_high))),
        report.Card(report.t("seg_card_clusters", lang), str(cl.k),
                    report.say("seg_card_stability", lang, ari=f"{cl.stability:.2f}") if cl.stability_ari else ""),
    ]
    findings = []
    if best:
        findings.append(report.say("seg_f_best", lang, segments=" + ".join(segment_label(s, lang) for s in best),
                                   share=_pct(share_best), revenue=_pct(rev_best)))
    if risk and n_risk:
        findings.append(report.say("seg_f_risk", lang, n=report.number(n_risk), share=_pct(share_risk), revenue=_pct(rev_risk)))
    if cl.k > 1 and len(cl.profile):
        top = cl.profile[cl.profile["cluster"] > 0].sort_values("revenue_share", ascending=False).iloc[0]
        findings.append(report.say("seg_f_clusters", lang, k=cl.k, stability=f"{cl.stability:.2f}" if cl.stability_ari else "–",
                                   name=cluster_label(result, int(top["cluster"]), lang), share=_pct(top["customer_share"]),
                                   revenue=_pct(top["revenue_share"])))
    stages = c["lifecycle_stage"].value_counts(normalize=True)
    findings.append(report.say("seg_f_lifecycle", lang, active=_pct(stages.get("active", 0) + stages.get("new", 0)),
                               at_risk=_pct(stages.get("at_risk", 0)), gone=_pct(stages.get("lapsed", 0) + stages.get("lost", 0))))
    tree = result.tree
    if tree is not None:
        key = "seg_f_tree_weak" if tree.balanced_accuracy < 0.6 else "seg_f_tree"
        findings.append(report.say(key, lang, balanced=_pct(tree.balanced_accuracy),
                                   feature=feature_label(tree.top_feature, lang) if tree.top_feature else "–"))
    return report.StageSummary(cards, findings[:5])


def heading(key: str, language: str):
    """A section heading in the report language."""
    from IPython.display import Markdown

    return Markdown(f"## {report.t(key, language)}")


def note(text: str):
    """A short paragraph of generated text."""
    from IPython.display import HTML

    return HTML(f"<p>{html.escape(text)}</p>")


def cluster_label(result: Segmentation, cluster: int, language: str) -> str:
    """A cluster's name in the report language (profile-based, so the same rules as the English name)."""
    profile = result.clusters.profile
    if not len(profile):
        return report.t("seg_cl_all", language)
    if language == "en":
        return result.clusters.names.get(cluster, str(cluster))
    return name_clusters(profile.drop(columns=["cluster_name"]), language).get(cluster, str(cluster))


def feature_label(feature: str | None, language: str) -> str:
    """A tree feature ('region=North', 'age') in words."""
    if feature is None:
        return "–"
    column, _, value = feature.partition("=")
    label = report.t(f"seg_attr_{column}", language)
    return f"{label} = {value}" if value else label


def grid_table(result: Segmentation, language: str) -> pd.DataFrame:
    """The R x F naming grid as a table: R rows high to low, F columns low to high."""
    bins = result.settings.rfm.bins
    table = result.grid.assign(segment=result.grid["segment"].map(lambda s: segment_label(s, language)))
    wide = table.pivot(index="r_score", columns="f_score", values="segment").sort_index(ascending=False)
    wide.columns = [f"F{f}" for f in range(1, bins + 1)]
    wide.insert(0, "R", [f"R{r}" for r in wide.index])
    return wide.reset_index(drop=True)


def rf_matrix(result: Segmentation) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Customers and share of net revenue per R x F cell (R rows high to low, F columns low to high)."""
    bins = result.settings.rfm.bins
    c = result.customers
    index, columns = range(bins, 0, -1), range(1, bins + 1)
    counts = pd.crosstab(c["r_score"], c["f_score"]).reindex(index=index, columns=columns, fill_value=0)
    revenue = c.pivot_table(index="r_score", columns="f_score", values="monetary", aggfunc="sum", fill_value=0.0)
    revenue = revenue.reindex(index=index, columns=columns, fill_value=0.0) / max(c["monetary"].sum(), 1e-9)
    return counts, revenue


def profile_table(result: Segmentation, cfg: Config) -> pd.DataFrame:
    """Segment profiles for the report, columns in the report language."""
    lang, p = cfg.report.language, result.profiles
    out = pd.DataFrame({
        report.t("seg_col_segment", lang): p["segment"].map(lambda s: segment_label(s, lang)),
        report.t("customers", lang): p["customers"].map(report.number),
        report.t("seg_col_customer_share", lang): p["customer_share"].map(_pct),
        report.t("seg_col_revenue_share", lang): p["revenue_share"].map(_pct),
        report.t("seg_col_median_r", lang): p["median_recency_days"].map(lambda v: report.number(v)),
        report.t("seg_col_median_f", lang): p["median_orders"].map(lambda v: report.number(v, 1 if v % 1 else 0)),
        report.t("seg_col_median_m", lang): p["median_revenue"].map(lambda v: report.money(v, cfg.run.currency)),
    })
    if result.clv_available:
        out[report.t("seg_col_mean_clv", lang)] = p["mean_clv"].map(lambda v: report.money(v, cfg.run.currency) if v == v else "–")
    return out


def cluster_table(result: Segmentation, cfg: Config) -> pd.DataFrame:
    """Cluster profiles for the report: name, size, revenue, medians, stability."""
    lang, p = cfg.report.language, result.clusters.profile
    if not len(p):
        return pd.DataFrame()
    return pd.DataFrame({
        report.t("seg_col_cluster", lang): [cluster_label(result, int(c), lang) for c in p["cluster"]],
        report.t("customers", lang): p["customers"].map(report.number),
        report.t("seg_col_customer_share", lang): p["customer_share"].map(_pct),
        report.t("seg_col_revenue_share", lang): p["revenue_share"].map(_pct),
        report.t("seg_col_median_f", lang): p["median_orders"].map(lambda v: report.number(v, 1 if v % 1 else 0)),
        report.t("seg_col_median_aov", lang): p["median_aov"].map(lambda v: report.money(v, cfg.run.currency)),
        report.t("seg_col_median_tenure", lang): p["median_tenure_days"].map(report.number),
        report.t("seg_col_median_r", lang): p["median_recency_days"].map(report.number),
        report.t("seg_col_stability", lang): p["stability_jaccard"].map(lambda v: f"{v:.2f}" if v == v else "–"),
    })


def cluster_crosstab(result: Segmentation, language: str) -> pd.DataFrame:
    """Customers per cluster (rows) and named RFM segment (columns)."""
    c = result.customers
    table = pd.crosstab(c["cluster"], c["rfm_segment"]).reindex(columns=[s for s in result.order if s in set(c["rfm_segment"])])
    table.index = [cluster_label(result, int(k), language) for k in table.index]
    table.columns = [segment_label(s, language) for s in table.columns]
    return table


def stage_shares(result: Segmentation, column: str, levels: tuple[str, ...], prefix: str, language: str) -> pd.DataFrame:
    """Share of customers and of net revenue per lifecycle stage or value tier, in order."""
    c = result.customers
    g = c.groupby(column)
    out = pd.DataFrame({"customers": g.size(), "revenue": g["monetary"].sum()}).reindex(list(levels), fill_value=0)
    out["customer_share"] = out["customers"] / max(len(c), 1)
    out["revenue_share"] = out["revenue"] / max(c["monetary"].sum(), 1e-9)
    out.index = [report.t(f"{prefix}{level}", language) for level in out.index]
    return out


def tier_table(result: Segmentation, cfg: Config) -> pd.DataFrame:
    """Value tiers and lifecycle stages: definition, customers, shares."""
    lang, s = cfg.report.language, result.settings
    definitions = {
        "high_value": report.say("seg_def_high_value", lang, share=_pct(s.value_tiers.high_value_share)),
        "potential": report.say("seg_def_potential", lang, q=_pct(s.value_tiers.potential_min_aov_quantile),
                                stages=", ".join(report.t(f"seg_stage_{x}", lang) for x in s.value_tiers.potential_stages)),
        "ordinary": report.t("seg_def_ordinary", lang),
    }
    shares = stage_shares(result, "value_tier", VALUE_TIERS, "seg_tier_", lang)
    return pd.DataFrame({
        report.t("seg_col_tier", lang): shares.index, report.t("seg_col_definition", lang): [definitions[t] for t in VALUE_TIERS],
        report.t("customers", lang): shares["customers"].map(report.number).to_numpy(),
        report.t("seg_col_customer_share", lang): shares["customer_share"].map(_pct).to_numpy(),
        report.t("seg_col_revenue_share", lang): shares["revenue_share"].map(_pct).to_numpy()})


def stage_table(result: Segmentation, cfg: Config) -> pd.DataFrame:
    """Lifecycle stages: rule, customers, shares."""
    lang, life = cfg.report.language, result.settings.lifecycle
    rules = {"new": report.say("seg_rule_new", lang, days=life.new_days),
             "active": report.say("seg_rule_active", lang, x=life.active_ratio),
             "at_risk": report.say("seg_rule_at_risk", lang, lo=life.active_ratio, x=life.at_risk_ratio),
             "lapsed": report.say("seg_rule_lapsed", lang, lo=life.at_risk_ratio, x=life.lapsed_ratio),
             "lost": report.say("seg_rule_lost", lang, x=life.lapsed_ratio)}
    shares = stage_shares(result, "lifecycle_stage", LIFECYCLE_STAGES, "seg_stage_", lang)
    return pd.DataFrame({
        report.t("seg_col_stage", lang): shares.index, report.t("seg_col_rule", lang): [rules[s] for s in LIFECYCLE_STAGES],
        report.t("customers", lang): shares["customers"].map(report.number).to_numpy(),
        report.t("seg_col_customer_share", lang): shares["customer_share"].map(_pct).to_numpy(),
        report.t("seg_col_revenue_share", lang): shares["revenue_share"].map(_pct).to_numpy()})


def attribute_table(result: Segmentation, column: str, cfg: Config) -> pd.DataFrame:
    lang, table = cfg.report.language, result.attribute_profiles[column]
    return pd.DataFrame({
        report.t(f"seg_attr_{column}", lang): table["level"],
        report.t("customers", lang): table["customers"].map(report.number),
        report.t("seg_col_customer_share", lang): table["customer_share"].map(_pct),
        report.t("seg_col_mean_revenue", lang): table["mean_revenue"].map(lambda v: report.money(v, cfg.run.currency)),
        report.t("seg_col_median_m", lang): table["median_revenue"].map(lambda v: report.money(v, cfg.run.currency)),
        report.t("seg_col_share_high", lang): table["share_high_value"].map(_pct)})


def category_table(result: Segmentation, language: str) -> pd.DataFrame | None:
    mix = result.category_mix
    if mix is None:
        return None
    mix = mix.reindex([s for s in result.order if s in mix.index])
    out = mix.map(_pct)
    out.columns = [report.t("seg_other", language) if c == "other" else c for c in out.columns]
    out.insert(0, report.t("seg_col_segment", language), [segment_label(s, language) for s in mix.index])
    return out.reset_index(drop=True)


def actions_table(result: Segmentation, cfg: Config) -> pd.DataFrame:
    """Per segment: customers, recommended action, and the audience file to import."""
    lang, p = cfg.report.language, result.profiles
    return pd.DataFrame({
        report.t("seg_col_segment", lang): p["segment"].map(lambda s: segment_label(s, lang)),
        report.t("customers", lang): p["customers"].map(report.number),
        report.t("seg_col_action", lang): p["action"],
        report.t("seg_col_audience", lang): p["segment_slug"].map(lambda s: f"tables/audiences/{s}.csv"),
    })


def attr_label(column: str, language: str) -> str:
    """An attribute column's name in words (custom columns as written)."""
    key = f"seg_attr_{column}"
    return report.t(key, language) if key in report.TEXT else column


# ---------------------------------------------------------------------------------------------
# Charts (crmbook.plots.segmentation) with labels in the report language


def chart_rf(result: Segmentation, cfg: Config):
    from crmbook.plots import segmentation as charts

    lang = cfg.report.language
    counts, revenue = rf_matrix(result)
    return charts.rf_heatmap(counts, revenue, report.t("seg_chart_rf", lang), report.t("seg_axis_f", lang),
                             report.t("seg_axis_r", lang), report.t("seg_axis_customers", lang), report.t("seg_word_revenue", lang))


def chart_segments(result: Segmentation, cfg: Config):
    from crmbook.plots import segmentation as charts

    lang, p = cfg.report.language, result.profiles
    shares = p.set_index(p["segment"].map(lambda s: segment_label(s, lang)))[["customer_share", "revenue_share"]]
    return charts.share_bars(shares, report.t("seg_chart_segments", lang), report.t("seg_axis_share", lang),
                             report.t("seg_legend_customers", lang), report.t("seg_legend_revenue", lang))


def chart_k(result: Segmentation, cfg: Config):
    from crmbook.plots import segmentation as charts

    lang, cl = cfg.report.language, result.clusters
    if cl.selection.empty:
        return None
    return charts.k_selection(cl.selection, cl.k_kmeans, cl.k_gmm, result.settings.clusters.gmm_criterion,
                              (report.t("seg_chart_k_kmeans", lang), report.t("seg_chart_k_gmm", lang)),
                              report.t("seg_axis_k", lang), report.t("seg_axis_silhouette", lang),
                              report.t("seg_axis_criterion", lang), report.t("seg_chosen", lang))


def chart_scatter(result: Segmentation, cfg: Config):
    from crmbook.plots import segmentation as charts

    lang, c = cfg.report.language, result.customers
    names = {int(k): cluster_label(result, int(k), lang) for k in sorted(c["cluster"].unique())}
    return charts.cluster_scatter(c["frequency"], c["aov"].clip(lower=0.01), c["cluster"], names,
                                  report.t("seg_chart_scatter", lang), report.t("seg_axis_orders", lang),
                                  report.say("seg_axis_aov", lang, currency=cfg.run.currency), seed=result.settings.clusters.seed)


def chart_crosstab(result: Segmentation, cfg: Config):
    from crmbook.plots import segmentation as charts

    lang = cfg.report.language
    return charts.count_heatmap(cluster_crosstab(result, lang), report.t("seg_chart_crosstab", lang),
                                report.t("seg_col_segment", lang), report.t("seg_col_cluster", lang),
                                report.t("seg_axis_customers", lang))


def chart_stages(result: Segmentation, cfg: Config):
    from crmbook.plots import segmentation as charts

    lang = cfg.report.language
    shares = stage_shares(result, "lifecycle_stage", LIFECYCLE_STAGES, "seg_stage_", lang)
    return charts.share_bars(shares, report.t("seg_chart_stages", lang), report.t("seg_axis_share", lang),
                             report.t("seg_legend_customers", lang), report.t("seg_legend_revenue", lang))


def chart_attribute(result: Segmentation, column: str, cfg: Config):
    from crmbook.plots import segmentation as charts

    lang, table = cfg.report.language, result.attribute_profiles[column]
    label = attr_label(column, lang)
    return charts.level_bars(table.set_index("level")["mean_revenue"], report.say("seg_chart_attr", lang, attribute=label),
                             label, report.say("seg_axis_mean_revenue", lang, currency=cfg.run.currency))


def chart_tree(result: Segmentation, cfg: Config):
    from crmbook.plots import segmentation as charts

    lang, tree = cfg.report.language, result.tree
    if tree is None:
        return None
    return charts.decision_tree(tree.model, [feature_label(f, lang) for f in tree.feature_names],
                                [report.t("seg_tree_other", lang), report.t("seg_tree_high", lang)],
                                report.say("seg_chart_tree", lang, depth=result.settings.attributes.tree_depth))


# ---------------------------------------------------------------------------------------------
# Captions and method notes that carry numbers


def caption_k(result: Segmentation, cfg: Config):
    lang, cl = cfg.report.language, result.clusters
    return report.caption(report.say("seg_cap_k", lang, k_kmeans=cl.k_kmeans, k_gmm=cl.k_gmm,
                                     criterion=result.settings.clusters.gmm_criterion.upper(),
                                     method=report.t(f"seg_method_{cl.method}", lang)))


def caption_clusters(result: Segmentation, cfg: Config):
    lang, cl = cfg.report.language, result.clusters
    if not cl.stability_ari:
        return report.caption(report.t("seg_cap_cluster_no_stability", lang))
    return report.caption(report.say("seg_cap_cluster_profile", lang, b=len(cl.stability_ari), ari=f"{cl.stability:.2f}",
                                     alternative=report.t(f"seg_method_{cl.alternative}", lang),
                                     agreement=f"{cl.agreement_ari:.2f}"))


def caption_tree(result: Segmentation, cfg: Config):
    lang, tree = cfg.report.language, result.tree
    if tree is None:
        return report.caption(report.t("seg_cap_no_tree", lang))
    return report.caption(report.say("seg_cap_tree", lang, accuracy=_pct(tree.accuracy), baseline=_pct(tree.baseline),
                                     balanced=_pct(tree.balanced_accuracy)))


def method_notes(result: Segmentation, cfg: Config):
    """The method notes as paragraphs, numbers filled in from this run."""
    from IPython.display import HTML

    lang, s = cfg.report.language, result.settings
    given = [k for k in ("recency_days", "frequency", "monetary") if s.rfm.thresholds.get(k)]
    scoring = (report.say("seg_m_thresholds", lang, which=", ".join(given)) if given else report.t("seg_m_quantiles", lang))
    paragraphs = [
        report.say("seg_m_rfm", lang, as_of=result.as_of.isoformat(), bins=s.rfm.bins, scoring=scoring),
        report.say("seg_m_clusters", lang, features=", ".join(report.t(f"seg_feature_{f}", lang) for f in s.clusters.features),
                   criterion=s.clusters.gmm_criterion.upper(), k_lo=s.clusters.k_range[0], k_hi=s.clusters.k_range[1],
                   fit=report.number(result.clusters.fit_size), seed=s.clusters.seed, b=s.clusters.bootstrap),
        report.say("seg_m_lifecycle", lang, min_repeats=s.lifecycle.own_rhythm_min_repeats, gap=report.number(result.population_gap_days, 1)),
        report.t("seg_m_outputs", lang),
    ]
    return HTML("".join(f"<p>{html.escape(p)}</p>" for p in paragraphs))
