"""03 segmentation: RFM scores, the naming grid, lifecycle stages, value tiers, clusters, outputs.

The tie and row-order properties follow REFERENCE.md § Segmentation: scores rank with
method "min", so tied customers share a score and shuffling rows changes nothing."""
import datetime as dt
import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crmbook import cleaning, config, engine, segmentation
from crmbook.config import SegmentationSection
from crmbook.errors import ConfigError
from tests.conftest import write_params

SEG = SegmentationSection()


def features(recency, orders, revenue, tenure=None, gap=None, ids=None) -> pd.DataFrame:
    """A customer feature table as `segmentation.customer_features` returns it."""
    n = len(recency)
    orders = np.asarray(orders, dtype="int64")
    tenure = np.asarray(tenure if tenure is not None else np.maximum(np.asarray(recency) + 10, 40), dtype="float64")
    frame = pd.DataFrame({
        "customer_id": ids if ids is not None else [f"C{i:05d}" for i in range(n)],
        "recency_days": np.asarray(recency, dtype="int64"), "orders": orders, "purchase_days": orders,
        "revenue": np.asarray(revenue, dtype="float64"), "tenure_days": tenure,
    })
    frame["aov"] = frame["revenue"] / frame["orders"]
    frame["mean_interpurchase_days"] = (np.asarray(gap, dtype="float64") if gap is not None
                                        else np.where(orders > 1, 30.0, np.nan))
    return frame


customer_rows = st.lists(
    st.tuples(st.integers(0, 400), st.integers(1, 12), st.sampled_from([5.0, 10.0, 10.0, 25.5, 100.0, 250.0, 999.99])),
    min_size=1, max_size=300)


# ---------------------------------------------------------------------------------------------
# RFM scores


@settings(max_examples=60, deadline=None)
@given(rows=customer_rows, seed=st.integers(0, 2**32 - 1))
def test_shuffling_the_rows_changes_no_score(rows, seed):
    recency, orders, revenue = zip(*rows)
    frame = features(recency, orders, revenue)
    shuffled = frame.sample(frac=1.0, random_state=np.random.RandomState(seed % 2**32))
    a = segmentation.rfm_scores(frame, SEG.rfm).set_index(frame["customer_id"]).sort_index()
    b = segmentation.rfm_scores(shuffled, SEG.rfm).set_index(shuffled["customer_id"]).sort_index()
    pd.testing.assert_frame_equal(a, b)
    stages_a = segmentation.lifecycle_stages(frame, SEG.lifecycle).set_axis(frame["customer_id"]).sort_index()
    stages_b = segmentation.lifecycle_stages(shuffled, SEG.lifecycle).set_axis(shuffled["customer_id"]).sort_index()
    pd.testing.assert_series_equal(stages_a, stages_b)


@settings(max_examples=60, deadline=None)
@given(rows=customer_rows)
def test_scores_are_in_range_and_tied_customers_share_a_score(rows):
    recency, orders, revenue = zip(*rows)
    frame = features(recency, orders, revenue)
    scores = segmentation.rfm_scores(frame, SEG.rfm)
    assert scores.isin(range(1, 6)).all().all()
    for column, score in (("recency_days", "r_score"), ("orders", "f_score"), ("revenue", "m_score")):
        assert scores.groupby(frame[column])[score].nunique().max() == 1
    # better values never score lower (recency reversed)
    for column, score, sign in (("recency_days", "r_score", -1), ("orders", "f_score", 1), ("revenue", "m_score", 1)):
        order = np.argsort(sign * frame[column].to_numpy(), kind="stable")
        assert (np.diff(scores[score].to_numpy()[order]) >= 0).all()


def test_600_identical_one_time_buyers_get_the_same_scores():
    rng = np.random.default_rng(3)
    repeat = features(rng.integers(0, 300, 400), rng.integers(2, 20, 400), rng.uniform(10, 500, 400).round(2))
    one_time = features([120] * 600, [1] * 600, [35.0] * 600, ids=[f"X{i:04d}" for i in range(600)])
    frame = pd.concat([repeat, one_time], ignore_index=True)
    scores = segmentation.rfm_scores(frame, SEG.rfm)
    tied = scores[frame["customer_id"].str.startswith("X")]
    assert tied.nunique().tolist() == [1, 1, 1]
    assert tied["f_score"].iloc[0] == 1  # the lowest value scores 1
    named = segmentation.name_segments(scores, segmentation.segment_grid(SEG.rfm))
    assert named[tied.index].nunique() == 1


def test_quantile_scores_match_ceil_of_percentile_rank():
    values = pd.Series([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5])
    pct = values.rank(method="min", pct=True)
    expected = np.ceil(np.round(pct * 5, 9)).astype("int64")
    assert segmentation.quantile_scores(values, 5).tolist() == expected.tolist()
    assert segmentation.quantile_scores(pd.Series(range(10)), 5).tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert segmentation.quantile_scores(pd.Series([7.0] * 5), 5).tolist() == [1] * 5
    assert segmentation.quantile_scores(pd.Series(range(10)), 5, higher_is_better=False).tolist() == [5, 5, 4, 4, 3, 3, 2, 2, 1, 1]


def test_business_thresholds_replace_quantiles():
    recency = pd.Series([0, 30, 31, 90, 91, 365, 366])
    assert segmentation.threshold_scores(recency, [30, 90, 180, 365], higher_is_better=False).tolist() == [5, 5, 4, 4, 3, 2, 1]
    orders = pd.Series([1, 2, 4, 5, 9, 10, 50])
    assert segmentation.threshold_scores(orders, [2, 3, 5, 10]).tolist() == [1, 2, 3, 4, 4, 5, 5]
    rfm = SegmentationSection.Rfm(thresholds={"recency_days": [30, 90, 180, 365], "monetary": [50, 100, 500, 1000]})
    frame = features([10, 100, 400], [1, 2, 3], [20.0, 600.0, 5000.0])
    scores = segmentation.rfm_scores(frame, rfm)
    assert scores["r_score"].tolist() == [5, 3, 1]
    assert scores["m_score"].tolist() == [1, 4, 5]
    assert scores["f_score"].tolist() == segmentation.quantile_scores(frame["orders"], 5).tolist()  # no edges: quantiles


def test_thresholds_and_grid_are_validated_in_params(tmp_path):
    bad = [("segmentation:\n  rfm: {thresholds: {frequency: [1, 2]}}\n", "segmentation.rfm.thresholds"),
           ("segmentation:\n  rfm: {thresholds: {monetary: [10, 5, 20, 30]}}\n", "segmentation.rfm.thresholds"),
           ("segmentation:\n  rfm: {bins: 3, grid: {1: [a, b, c]}}\n", "segmentation.rfm.grid"),
           ("segmentation:\n  lifecycle: {active_ratio: 4}\n", "segmentation.lifecycle.lapsed_ratio"),
           ("segmentation:\n  clusters: {method: dbscan}\n", "segmentation.clusters.method")]
    for text, where in bad:
        path = tmp_path / "p.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
            config.load(path)
    path.write_text("segmentation: {}\n")
    assert config.load(path).segmentation == SegmentationSection()


# ---------------------------------------------------------------------------------------------
# The R x F naming grid


def test_the_grid_covers_all_25_cells_exactly_once():
    grid = segmentation.segment_grid(SEG.rfm)
    cells = list(zip(grid["r_score"], grid["f_score"]))
    assert len(cells) == 25 and set(cells) == set(itertools.product(range(1, 6), range(1, 6)))
    assert grid["segment"].notna().all()
    lookup = grid.set_index(["r_score", "f_score"])["segment"]
    # REFERENCE.md § Segmentation, row by row
    assert [lookup[(5, f)] for f in range(1, 6)] == ["New Customers", "Potential Loyalists", "Potential Loyalists", "Champions", "Champions"]
    assert [lookup[(3, f)] for f in range(1, 6)] == ["About to Sleep", "About to Sleep", "Need Attention", "Loyal Customers", "Loyal Customers"]
    assert [lookup[(1, f)] for f in range(1, 6)] == ["Hibernating", "Hibernating", "At Risk", "At Risk", "Can't Lose Them"]
    assert set(grid["segment"]) == set(segmentation.SEGMENT_ORDER)


@pytest.mark.parametrize("bins", [2, 3, 4, 7, 10])
def test_other_bin_counts_map_onto_the_grid_and_cover_every_cell(bins):
    grid = segmentation.segment_grid(SegmentationSection.Rfm(bins=bins))
    assert len(grid) == bins * bins
    assert set(zip(grid["r_score"], grid["f_score"])) == set(itertools.product(range(1, bins + 1), repeat=2))
    lookup = grid.set_index(["r_score", "f_score"])["segment"]
    assert lookup[(bins, bins)] == "Champions" and lookup[(1, 1)] == "Hibernating" and lookup[(bins, 1)] == "New Customers"


def test_a_custom_grid_is_used_as_written():
    rfm = SegmentationSection.Rfm(bins=2, grid={2: ["Fresh", "Stars"], 1: ["Gone", "Slipping"]})
    grid = segmentation.segment_grid(rfm)
    assert grid.to_dict("records") == [{"r_score": 2, "f_score": 1, "segment": "Fresh"}, {"r_score": 2, "f_score": 2, "segment": "Stars"},
                                       {"r_score": 1, "f_score": 1, "segment": "Gone"}, {"r_score": 1, "f_score": 2, "segment": "Slipping"}]
    assert segmentation.segment_label("Stars", "zh") == "Stars"
    assert segmentation.segment_action("Stars", SegmentationSection(actions={"Stars": "VIP call"}), "en") == "VIP call"
    assert "segmentation.actions" in segmentation.segment_action("Stars", SEG, "en")


@settings(max_examples=60, deadline=None)
@given(rows=customer_rows)
def test_every_customer_has_exactly_one_segment_stage_and_tier(rows):
    recency, orders, revenue = zip(*rows)
    frame = features(recency, orders, revenue)
    scores = segmentation.rfm_scores(frame, SEG.rfm)
    named = segmentation.name_segments(scores, segmentation.segment_grid(SEG.rfm))
    stages = segmentation.lifecycle_stages(frame, SEG.lifecycle)
    tiers = segmentation.value_tiers(frame, stages, SEG.value_tiers)
    assert len(named) == len(stages) == len(tiers) == len(frame)
    assert named.isin(segmentation.SEGMENT_ORDER).all()
    assert stages.isin(segmentation.LIFECYCLE_STAGES).all() and tiers.isin(segmentation.VALUE_TIERS).all()


def test_segment_names_and_actions_exist_in_english_and_chinese():
    for name in segmentation.SEGMENT_ORDER:
        assert segmentation.segment_label(name, "en") == name
        assert segmentation.segment_label(name, "zh") != name
        assert segmentation.segment_action(name, SEG, "zh") != segmentation.segment_action(name, SEG, "en")
    assert segmentation.slug("Can't Lose Them") == "cant_lose_them"


# ---------------------------------------------------------------------------------------------
# Lifecycle stages and value tiers


def test_lifecycle_stages_follow_each_customers_own_rhythm():
    # gap 30 days for repeat buyers; one-time buyers get the median gap of repeat buyers
    frame = features(recency=[5, 40, 45, 60, 150, 200, 100, 20, 80],
                     orders=[1, 3, 3, 3, 3, 3, 1, 5, 5],
                     revenue=[10.0] * 9,
                     tenure=[10, 400, 400, 400, 400, 400, 100, 400, 400],
                     gap=[np.nan, 30, 30, 30, 30, 30, np.nan, 10, 60])
    stages = segmentation.lifecycle_stages(frame, SEG.lifecycle).tolist()
    assert stages == ["new", "active", "active", "at_risk", "lapsed", "lost", "lapsed", "at_risk", "active"]
    # one-time buyer: 100 days silent / median gap 30 = 3.3 -> lapsed; 20 / 10 = 2 -> at risk; 80 / 60 -> active
    assert segmentation.population_gap_days(frame, SEG.lifecycle) == 30.0


def test_lifecycle_thresholds_and_rhythm_settings_are_used():
    frame = features(recency=[50, 50, 50], orders=[2, 4, 1], revenue=[1.0] * 3, tenure=[300] * 3, gap=[10, 40, np.nan])
    strict = SegmentationSection.Lifecycle(own_rhythm_min_repeats=2)  # one repeat: not enough for an own rhythm
    gaps = segmentation.usual_gap(frame, strict).tolist()
    assert gaps == [25.0, 40.0, 25.0]  # median of the two repeat buyers' gaps (10, 40)
    assert segmentation.lifecycle_stages(frame, strict).tolist() == ["at_risk", "active", "at_risk"]
    nobody_repeats = features(recency=[100, 400], orders=[1, 1], revenue=[1.0, 1.0], tenure=[500, 500])
    assert segmentation.usual_gap(nobody_repeats, SEG.lifecycle).tolist() == [90.0, 90.0]
    assert segmentation.lifecycle_stages(nobody_repeats, SEG.lifecycle).tolist() == ["active", "lapsed"]
    new_off = SegmentationSection.Lifecycle(new_days=0)
    assert segmentation.lifecycle_stages(features([3], [1], [1.0], tenure=[3]), new_off).tolist() == ["active"]


def test_value_tiers_on_hand_made_customers():
    frame = features(recency=[1] * 10, orders=[1] * 10,
                     revenue=[100.0, 50.0, 50.0, 50.0, 45.0, 40.0, 30.0, 20.0, 10.0, 5.0], tenure=[400] * 10)
    stages = pd.Series(["active", "active", "lost", "active", "new", "lost", "new", "active", "new", "active"])
    tiers = segmentation.value_tiers(frame, stages, SEG.value_tiers).tolist()
    # top 20% = 2 customers, but the three tied at 50 all count (the first of them is inside the top 2)
    assert tiers[:4] == ["high_value"] * 4
    # potential: not high, stage new/active, AOV at or above the median AOV (42.5); 40 is lost and below it
    assert tiers[4:] == ["potential", "ordinary", "ordinary", "ordinary", "ordinary", "ordinary"]
    custom = SegmentationSection.ValueTiers(high_value_share=0.1, potential_min_aov_quantile=0.0, potential_stages=["lost"])
    assert segmentation.value_tiers(frame, stages, custom).tolist()[:3] == ["high_value", "ordinary", "potential"]


# ---------------------------------------------------------------------------------------------
# Clusters


def _blobs(n_per=120, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    parts = []
    for orders, aov, tenure, recency in ((20, 200.0, 600, 30), (5, 50.0, 400, 100), (1, 12.0, 150, 300)):
        o = np.maximum(1, np.round(orders * np.exp(rng.normal(0, 0.15, n_per)))).astype(int)
        a = aov * np.exp(rng.normal(0, 0.1, n_per))
        r = rng.integers(recency // 3, recency, n_per)
        parts.append(features(r, o, (o * a).round(2), tenure=tenure + rng.normal(0, 30, n_per)))
    frame = pd.concat(parts, ignore_index=True)
    frame["customer_id"] = [f"C{i:05d}" for i in range(len(frame))]
    return frame


def test_clusters_find_separated_groups_deterministically_and_name_them():
    from sklearn.metrics import adjusted_rand_score

    frame = _blobs()
    truth = np.repeat([1, 2, 3], 120)
    settings_ = SegmentationSection.Clusters(bootstrap=5)
    first = segmentation.cluster_customers(frame, settings_, SEG.lifecycle)
    again = segmentation.cluster_customers(frame.sample(frac=1.0, random_state=1).sort_values("customer_id").reset_index(drop=True),
                                           settings_, SEG.lifecycle)
    assert first.k == 3 and first.k_kmeans == 3
    assert adjusted_rand_score(truth, first.labels) == 1.0
    assert first.labels.tolist() == truth.tolist()  # numbered by mean revenue, highest first
    assert first.labels.tolist() == again.labels.tolist()
    assert first.stability > 0.95 and all(v > 0.9 for v in first.jaccard.values())
    stages = segmentation.lifecycle_stages(frame, SEG.lifecycle)
    profile = segmentation.describe_clusters(frame, first, stages)
    names = segmentation.name_clusters(profile, "en")
    assert names[1].startswith("Frequent high spenders") and "one-time low spenders" in names[3]
    assert len(set(names.values())) == 3
    assert all(len(n) for n in segmentation.name_clusters(profile, "zh").values())


@pytest.mark.parametrize("method", ["gmm", "hdbscan"])
def test_other_cluster_methods_run(method):
    frame = _blobs(n_per=80)
    result = segmentation.cluster_customers(frame, SegmentationSection.Clusters(method=method, bootstrap=3), SEG.lifecycle)
    assert result.labels.min() >= 0 and result.k >= 2
    assert result.alternative == ("kmeans" if method == "gmm" else "gmm")


def test_fit_on_a_sample_predicts_everyone():
    frame = _blobs(n_per=200)
    result = segmentation.cluster_customers(frame, SegmentationSection.Clusters(fit_sample=150, bootstrap=2), SEG.lifecycle)
    assert result.fit_size == 150 and result.labels.notna().all() and len(result.labels) == 600
    assert result.k == 3


@pytest.mark.parametrize("n", [1, 2, 4, 12])
def test_clustering_tiny_or_identical_data_does_not_crash(n):
    frame = features([10] * n, [1] * n, [5.0] * n)
    result = segmentation.cluster_customers(frame, SEG.clusters, SEG.lifecycle)
    assert len(result.labels) == n and result.labels.between(0, 8).all()
    varied = features(list(range(n)), [1 + i % 3 for i in range(n)], [5.0 + i for i in range(n)])
    result = segmentation.cluster_customers(varied, SEG.clusters, SEG.lifecycle)
    assert len(result.labels) == n


# ---------------------------------------------------------------------------------------------
# The whole stage on the tiny synthetic data: outputs, determinism, audiences


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, demo_dir):
    folder = tmp_path_factory.mktemp("seg")
    params = write_params(folder, demo_dir)
    cfg = config.load(params)
    run_dir = folder / "run"
    tables = cleaning.load_clean(cfg, run_dir)
    return cfg, run_dir, tables


def test_stage_outputs_are_complete_sorted_and_byte_identical(tiny_run, tmp_path):
    import shutil

    cfg, run_dir, tables = tiny_run
    other = tmp_path / "again"
    shutil.copytree(run_dir, other)
    result = segmentation.segment(cfg, run_dir, tables)
    segmentation.save(run_dir, result)
    segmentation.save(other, segmentation.segment(cfg, other, tables))
    seg = pd.read_parquet(run_dir / "tables" / "customer_segments.parquet")
    assert list(seg.columns) == list(segmentation.SEGMENT_COLUMNS)
    assert seg["customer_id"].is_unique and seg["customer_id"].is_monotonic_increasing
    assert seg[["rfm_segment", "lifecycle_stage", "value_tier", "cluster_name"]].notna().all().all()
    for name in ["customer_segments.parquet", "segment_profiles.csv", "cluster_profiles.csv", "rfm_grid.csv"]:
        assert (run_dir / "tables" / name).read_bytes() == (other / "tables" / name).read_bytes(), name
    files = sorted((run_dir / "tables" / "audiences").glob("*.csv"))
    assert {f.stem for f in files} == {segmentation.slug(s) for s in seg["rfm_segment"].unique()}
    for path in files:
        assert path.read_bytes() == (other / "tables" / "audiences" / path.name).read_bytes()
        audience = pd.read_csv(path)
        assert list(audience.columns) == list(segmentation.AUDIENCE_COLUMNS)
        assert not {"email", "phone", "name", "email_hash", "phone_hash"} & set(audience.columns)
        assert audience["customer_id"].is_monotonic_increasing and audience["segment"].nunique() == 1
    profiles = pd.read_csv(run_dir / "tables" / "segment_profiles.csv")
    assert profiles["customers"].sum() == len(seg)
    assert abs(profiles["revenue_share"].sum() - 1) < 1e-4


def test_scores_do_not_depend_on_the_order_of_transaction_rows(tiny_run, tmp_path):
    _, run_dir, _ = tiny_run
    source = run_dir / "tables" / "clean_transactions.parquet"
    shuffled = tmp_path / "shuffled.parquet"
    pd.read_parquet(source).sample(frac=1.0, random_state=7).to_parquet(shuffled, index=False)
    con = engine.connect(threads=2)
    as_of = dt.date(2025, 1, 1)
    a, b = segmentation.customer_features(con, source, as_of), segmentation.customer_features(con, shuffled, as_of)
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(segmentation.rfm_scores(a, SEG.rfm), segmentation.rfm_scores(b, SEG.rfm))


def test_summary_and_report_tables_in_both_languages(tiny_run):
    cfg, run_dir, tables = tiny_run
    result = segmentation.segment(cfg, run_dir, tables)
    for lang in ("en", "zh"):
        c = cfg.model_copy(update={"report": cfg.report.model_copy(update={"language": lang})})
        summary = segmentation.summarise(result, c)
        assert 3 <= len(summary.findings) <= 5 and len(summary.cards) == 5
        assert not any("{" in line for line in summary.findings)
        for table in (segmentation.profile_table(result, c), segmentation.cluster_table(result, c),
                      segmentation.stage_table(result, c), segmentation.tier_table(result, c),
                      segmentation.actions_table(result, c), segmentation.grid_table(result, lang)):
            assert len(table)


def test_missing_customer_attributes_are_skipped():
    attributes = segmentation.customer_attributes(None, SEG.attributes, dt.date(2025, 1, 1))
    assert list(attributes.columns) == ["customer_id"]
    customers = pd.DataFrame({"customer_id": ["a", "b", "c"], "age": [19.0, 40.0, None], "region": ["N", None, "S"]})
    attributes = segmentation.customer_attributes(customers, SEG.attributes, dt.date(2025, 1, 1))
    assert attributes["age_band"].tolist()[:2] == ["<25", "35–44"] and pd.isna(attributes["age_band"].iloc[2])
    assert "gender" not in attributes and attributes["region"].isna().tolist() == [False, True, False]


def test_no_purchases_before_the_analysis_date_is_a_clear_error(tiny_run):
    from crmbook.errors import InputError

    cfg, run_dir, tables = tiny_run
    early = cfg.model_copy(update={"run": cfg.run.model_copy(update={"analysis_date": dt.date(2000, 1, 1)})})
    with pytest.raises(InputError, match="no purchases up to 2000-01-01"):
        segmentation.segment(early, run_dir, tables)


def test_average_clv_appears_when_stage_04_has_written_it(tiny_run, tmp_path):
    import shutil

    cfg, run_dir, tables = tiny_run
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    before = segmentation.segment(cfg, run, tables)
    assert not before.clv_available and before.profiles["mean_clv"].isna().all()
    ids = before.customers["customer_id"]
    pd.DataFrame({"customer_id": ids, "clv_12m": np.arange(len(ids), dtype=float)}).to_parquet(run / "tables" / "clv_customers.parquet")
    after = segmentation.segment(cfg, run, tables)
    assert after.clv_available
    expected = before.customers.assign(clv=np.arange(len(ids), dtype=float)).groupby("rfm_segment")["clv"].mean().round(2)
    assert after.profiles.set_index("segment")["mean_clv"].to_dict() == expected.reindex(after.profiles["segment"]).to_dict()


def test_tree_matrix_is_what_the_tree_saw_from_the_one_hot_frame():
    """The float32 matrix built column by column equals scikit-learn's float32 conversion of the
    float64 one-hot frame (columns sorted by name), missing ages and levels included."""
    rng = np.random.default_rng(0)
    n = 500
    joined = pd.DataFrame({"age": np.where(rng.random(n) < 0.1, np.nan, rng.uniform(18, 80, n)),
                           "gender": rng.choice(["F", "M", None], n), "region": rng.choice(["北", "南", "东"], n)})
    columns = ["age", "gender", "region"]
    x, names = segmentation._tree_matrix(joined, columns)
    frame = pd.concat([joined[["age"]].astype("float64"),
                       pd.get_dummies(joined[["gender", "region"]].fillna("?"), prefix_sep="=", dtype="float64")], axis=1)
    frame = frame[sorted(frame.columns)]
    assert names == list(frame.columns)
    np.testing.assert_array_equal(x, np.asarray(frame, dtype=np.float32))
    assert x.dtype == np.float32


def test_mean_clv_per_segment_does_not_depend_on_the_order_of_04s_table():
    customers = pd.DataFrame({"customer_id": [f"c{i:03d}" for i in range(60)], "recency": np.arange(60),
                              "frequency": 1 + np.arange(60) % 4, "monetary": np.linspace(1.0, 60.0, 60),
                              "rfm_segment": np.where(np.arange(60) % 3, "Champions", "Hibernating")})
    clv = pd.Series(np.linspace(5.0, 500.0, 60), index=customers["customer_id"])
    order = list(segmentation.SEGMENT_ORDER)
    aligned = segmentation.segment_profiles(customers, order, SEG, "en", clv)  # same customers, same order
    shuffled = segmentation.segment_profiles(customers, order, SEG, "en", clv.sample(frac=1.0, random_state=0).iloc[3:])
    pd.testing.assert_frame_equal(segmentation.segment_profiles(customers, order, SEG, "en", clv.sample(frac=1.0, random_state=0)), aligned)
    assert aligned["mean_clv"].notna().all() and not shuffled["mean_clv"].equals(aligned["mean_clv"])
