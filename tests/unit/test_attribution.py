"""Unit tests for crmbook.attribution (behaviour, invariances, input errors)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crmbook import attribution as A

DATA = Path(__file__).resolve().parents[1] / "data" / "attribution" / "channelattribution_Data.csv"


def _paths(rows: list[tuple[str, float, float]], value_per_conv: float = 10.0) -> pd.DataFrame:
    raw = pd.DataFrame(rows, columns=["path", "total_conversions", "total_null"])
    raw["total_conversion_value"] = value_per_conv * raw["total_conversions"]
    return A.parse_paths(raw)


def _explode(paths: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """One row per touch per journey; rows shuffled, value on every row of a converting journey."""
    rows = []
    jid = 0
    for path, conv, value, nulls in paths[["path", "conversions", "value", "nulls"]].itertuples(index=False):
        for k in range(int(conv) + int(nulls)):
            converted = k < conv
            v = value / conv if converted else 0.0
            for t, ch in enumerate(path):
                rows.append((f"j{jid}", t, ch, converted, v))
            jid += 1
    df = pd.DataFrame(rows, columns=["journey_id", "ts", "channel", "converted", "value"])
    return df.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def _sorted(paths: pd.DataFrame) -> pd.DataFrame:
    out = paths.assign(key=paths["path"].map(" > ".join)).sort_values("key")
    return out.drop(columns="key").reset_index(drop=True)


SMALL = [("search > social > email", 3, 5), ("social", 1, 9), ("email > email > search", 2, 1),
         ("direct > search", 2, 2), ("direct", 1, 3), ("social > direct", 0, 4),
         ("search > search", 1, 0)]


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    return A.parse_paths(pd.read_csv(DATA, sep=";"))


@pytest.fixture(scope="module")
def small() -> pd.DataFrame:
    return _paths(SMALL)


def _all_models(paths: pd.DataFrame) -> pd.DataFrame:
    frames = [A.heuristic_attribution(paths), A.shapley_attribution(paths),
              A.logistic_attribution(paths)]
    frames += [A.markov_attribution(paths, order=k) for k in (1, 2, 3)]
    return pd.concat(frames, ignore_index=True)


# ------------------------------------------------------------------------------------------
# Input
# ------------------------------------------------------------------------------------------
def test_parse_paths_layout():
    raw = pd.DataFrame({"path": ["a > b", " a>b ", "c"], "total_conversions": [1, 2, 0],
                        "total_conversion_value": [3.0, 4.0, 0.0], "total_null": [0, 1, 5]})
    p = A.parse_paths(raw, sep=">")
    assert list(p.columns) == ["path", "conversions", "value", "nulls"]
    assert p["path"].tolist() == [("a", "b"), ("a", "b"), ("c",)]
    p = A.parse_paths(raw[["path", "total_conversions"]])
    assert (p["nulls"] == 0).all() and (p["value"] == 0).all()


def test_raw_journeys_and_aggregated_paths_identical(sample):
    """Exploding the sample into ~88k journeys (530k touch rows) and aggregating them back
    gives the same paths, hence identical Markov results."""
    sub = sample.iloc[:1500].reset_index(drop=True)
    journeys = _explode(sub)
    agg = A.aggregate_journeys(journeys)
    a, b = _sorted(agg), _sorted(sub.groupby("path", as_index=False, sort=False).sum())
    assert a["path"].tolist() == b["path"].tolist()
    np.testing.assert_allclose(a[["conversions", "nulls"]], b[["conversions", "nulls"]], rtol=0)
    np.testing.assert_allclose(a["value"], b["value"], rtol=1e-12)
    for order in (1, 2, 3):
        ra, rb = A.markov_attribution(agg, order), A.markov_attribution(sub, order)
        np.testing.assert_allclose(ra["removal_effect"], rb["removal_effect"], rtol=1e-12)
        np.testing.assert_allclose(ra["conversions"], rb["conversions"], rtol=1e-12)
        # per-journey values (value / conversions) re-summed differ in the last bits only
        np.testing.assert_allclose(ra["value"], rb["value"], rtol=1e-10)


def test_one_row_per_journey_equals_aggregated(small):
    """Models work off counts only: unaggregated rows (one per journey) give the same result."""
    rows = []
    for path, conv, value, nulls in small.itertuples(index=False):
        rows += [(path, 1.0, value / max(conv, 1), 0.0)] * int(conv)
        rows += [(path, 0.0, 0.0, 1.0)] * int(nulls)
    per_journey = pd.DataFrame(rows, columns=["path", "conversions", "value", "nulls"])
    a, b = _all_models(small), _all_models(per_journey)
    np.testing.assert_allclose(a["conversions"], b["conversions"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(a["value"], b["value"], rtol=1e-9, atol=1e-12)


def test_aggregate_journeys_orders_by_ts_and_reads_journey_attributes():
    j = pd.DataFrame({"journey_id": [1, 1, 1, 2, 2, 3],
                      "ts": pd.to_datetime(["2024-01-03", "2024-01-01", "2024-01-02",
                                            "2024-01-05", "2024-01-04", "2024-01-01"]),
                      "channel": ["c", "a", "b", "b", "a", "a"],
                      "converted": [True, False, False, False, False, False],
                      "value": [0.0, 0.0, 12.5, 0.0, 0.0, 0.0]})
    p = _sorted(A.aggregate_journeys(j))
    assert p["path"].tolist() == [("a",), ("a", "b"), ("a", "b", "c")]
    assert p["conversions"].tolist() == [0, 0, 1]
    assert p["nulls"].tolist() == [1, 1, 0]
    assert p["value"].tolist() == [0, 0, 12.5]


def test_aggregate_journeys_long_paths_use_fallback_key():
    """Paths longer than the integer key allows are grouped exactly by their byte key."""
    rng = np.random.default_rng(3)
    rows = []
    for jid in range(400):
        n = int(rng.integers(1, 40))
        chans = rng.choice(list("abcdefghijklmnopqrst"), size=n) if jid % 4 else ["a"] * n
        rows += [(jid, t, c, jid % 3 == 0, 2.0) for t, c in enumerate(chans)]
    j = pd.DataFrame(rows, columns=["journey_id", "ts", "channel", "converted", "value"])
    agg = A.aggregate_journeys(j)
    expected = (j.sort_values(["journey_id", "ts"]).groupby("journey_id")
                .agg(path=("channel", tuple), conv=("converted", "max")))
    counts = expected.groupby("path")["conv"].agg(["sum", "size"])
    got = agg.set_index("path")
    assert len(got) == len(counts) and got.index.is_unique
    for path, row in counts.iterrows():
        assert got.loc[[path], "conversions"].item() == row["sum"]
        assert got.loc[[path], "nulls"].item() == row["size"] - row["sum"]


def _reference_aggregate(j: pd.DataFrame, drop=(), dedupe=False) -> pd.DataFrame:
    """Slow, obvious pandas version of aggregate_journeys, for comparison."""
    j = j.sort_values(["journey_id", "ts"], kind="stable")
    attrs = j.groupby("journey_id").agg(conv=("converted", "max"), value=("value", "max"))
    touches = j[~j["channel"].isin(list(drop))]
    rows = []
    for jid, g in touches.groupby("journey_id", sort=False):
        path = tuple(g["channel"])
        if dedupe:
            path = tuple(c for i, c in enumerate(path) if i == 0 or c != path[i - 1])
        conv = bool(attrs.loc[jid, "conv"])
        rows.append((path, float(conv), attrs.loc[jid, "value"] if conv else 0.0, float(not conv)))
    df = pd.DataFrame(rows, columns=["path", "conversions", "value", "nulls"])
    return df.groupby("path", as_index=False, sort=False).sum()


@pytest.mark.parametrize("ids", ["strings", "dense_ints", "sparse_ints", "sorted"])
@pytest.mark.parametrize("options", [{}, {"drop_channels": ["d"], "dedupe_consecutive": True}])
def test_aggregate_journeys_matches_reference(ids, options):
    rng = np.random.default_rng(11)
    n = 3000
    jid = rng.integers(0, 700, size=n)
    j = pd.DataFrame({"journey_id": jid, "ts": rng.integers(0, 5, size=n),  # many ts ties
                      "channel": rng.choice(list("abcd"), size=n),
                      "converted": rng.random(n) < 0.1, "value": rng.gamma(2.0, 5.0, size=n)})
    if ids == "strings":
        j["journey_id"] = "u" + j["journey_id"].astype(str)
    elif ids == "sparse_ints":
        j["journey_id"] = j["journey_id"] * 1_000_003
    elif ids == "sorted":
        j = j.sort_values(["journey_id", "ts"], kind="stable").reset_index(drop=True)
    got = _sorted(A.aggregate_journeys(j, **options))
    ref = _sorted(_reference_aggregate(j, options.get("drop_channels", ()),
                                       options.get("dedupe_consecutive", False)))
    assert got["path"].tolist() == ref["path"].tolist()
    np.testing.assert_allclose(got[["conversions", "nulls"]], ref[["conversions", "nulls"]])
    np.testing.assert_allclose(got["value"], ref["value"], rtol=1e-12)


def test_drop_direct():
    raw = pd.DataFrame(SMALL, columns=["path", "total_conversions", "total_null"])
    p = A.parse_paths(raw, drop_channels=["direct"])
    assert all("direct" not in path for path in p["path"])
    # 'direct' alone (1 conv, 3 null) cannot be credited and is dropped;
    # 'direct > search' merges into 'search'
    assert p["conversions"].sum() == sum(r[1] for r in SMALL) - 1
    assert p.set_index("path").loc[[("search",)], "conversions"].item() == 2
    j = _explode(_paths(SMALL))
    q = A.aggregate_journeys(j, drop_channels=["direct"])
    pd.testing.assert_frame_equal(_sorted(q)[["path", "conversions", "nulls"]],
                                  _sorted(p)[["path", "conversions", "nulls"]])
    att = A.markov_attribution(p)
    assert "direct" not in att["channel"].tolist()


def test_last_non_direct(small):
    lnd = A.last_non_direct(small).set_index("channel")["conversions"]
    lt = A.last_touch(small).set_index("channel")["conversions"]
    # 'direct > search' already ends on search; 'direct' alone keeps direct's credit (1)
    assert lnd["direct"] == 1 and lt["direct"] == 1
    paths = _paths([("search > direct", 2, 0), ("direct", 1, 0)])
    lnd = A.last_non_direct(paths).set_index("channel")["conversions"]
    assert lnd["search"] == 2 and lnd["direct"] == 1
    lnd = A.last_non_direct(paths, direct_channel="(none)").set_index("channel")["conversions"]
    assert lnd["direct"] == 3


# ------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------
def test_every_model_sums_to_total_conversions(small, sample):
    for paths in (small, sample.iloc[:800]):
        res = _all_models(paths)
        for model, g in res.groupby("model"):
            assert g["conversions"].sum() == pytest.approx(paths["conversions"].sum(), rel=1e-12), model
            assert g["value"].sum() == pytest.approx(paths["value"].sum(), rel=1e-12), model
            assert g["share"].sum() == pytest.approx(1.0, abs=1e-12), model
            assert g["channel"].is_unique


def test_single_channel_data():
    paths = _paths([("tv", 3, 4), ("tv > tv", 2, 1)])
    res = _all_models(paths)
    assert set(res["channel"]) == {"tv"}
    np.testing.assert_allclose(res["share"], 1.0)
    np.testing.assert_allclose(res["conversions"], 5.0)
    r = A.markov_removal_effects(paths)
    assert r.removal_effects["tv"] == pytest.approx(1.0)
    assert r.p_conversion == pytest.approx(5 / 10)


def test_repeated_channels():
    paths = _paths([("a > a > b", 1, 0), ("b > a", 0, 1), ("a", 1, 1)])
    lin = A.linear(paths).set_index("channel")["conversions"]
    assert lin["a"] == pytest.approx(2 / 3 + 1) and lin["b"] == pytest.approx(1 / 3)
    shap = A.shapley_attribution(paths).set_index("channel")["conversions"]
    assert shap["a"] == pytest.approx(1.5) and shap["b"] == pytest.approx(0.5)  # set, not touches
    deduped = A.parse_paths(pd.DataFrame({"path": ["a > a > b", "b > a", "a"],
                                          "total_conversions": [1, 0, 1],
                                          "total_null": [0, 1, 1]}), dedupe_consecutive=True)
    assert deduped["path"].tolist() == [("a", "b"), ("b", "a"), ("a",)]
    m1, m1d = A.markov_attribution(paths), A.markov_attribution(deduped)
    np.testing.assert_allclose(m1["conversions"], m1d["conversions"], rtol=1e-12)
    tm = A.transition_matrix(paths)
    assert tm.loc["a", "a"] > 0 and A.transition_matrix(deduped).loc["a", "a"] == 0


def test_markov_order1_invariant_to_dedupe_on_sample(sample):
    deduped = A.parse_paths(pd.read_csv(DATA, sep=";"), dedupe_consecutive=True)
    assert len(deduped) < len(sample)
    np.testing.assert_allclose(A.markov_attribution(deduped)["conversions"],
                               A.markov_attribution(sample)["conversions"], rtol=1e-9)


def test_position_based_and_time_decay_weights():
    paths = _paths([("a", 1, 0), ("a > b", 1, 0), ("a > b > c > d", 1, 0)])
    pb = A.position_based(paths).set_index("channel")["conversions"]
    assert pb["a"] == pytest.approx(1 + 0.5 + 0.4)
    assert pb["b"] == pytest.approx(0.5 + 0.1)
    assert pb["c"] == pytest.approx(0.1) and pb["d"] == pytest.approx(0.4)
    pb2 = A.position_based(_paths([("a > b", 1, 0)]), first=0.3, last=0.5).set_index("channel")
    assert pb2.loc["a", "conversions"] == pytest.approx(0.375)
    td = A.time_decay(_paths([("a > b > c", 7, 0)]), half_life=1.0).set_index("channel")
    np.testing.assert_allclose(td.loc[["a", "b", "c"], "conversions"], [1, 2, 4])
    with pytest.raises(ValueError, match="half_life"):
        A.time_decay(paths, half_life=0)
    with pytest.raises(ValueError, match="position_based"):
        A.position_based(paths, first=0.7, last=0.7)


@pytest.mark.parametrize("order", [2, 3])
def test_higher_orders_run(sample, order):
    res = A.markov_attribution(sample.iloc[:2000], order=order)
    assert res["conversions"].sum() == pytest.approx(sample.iloc[:2000]["conversions"].sum())
    tm = A.transition_matrix(sample.iloc[:300], order=order)
    np.testing.assert_allclose(tm.sum(axis=1), 1.0)
    assert tm.columns[-2:].tolist() == ["(conversion)", "(null)"]


def test_markov_value_uses_value_weighted_chain():
    """Value credit follows the chain whose conversion edges carry the path value: moving all
    value onto the 'b'-only path moves value credit (not conversion credit) towards b."""
    base = pd.DataFrame({"path": [("a",), ("b",), ("a", "b")], "conversions": [1.0, 1.0, 1.0],
                         "value": [1.0, 1.0, 1.0], "nulls": [1.0, 1.0, 0.0]})
    skew = base.assign(value=[0.0, 10.0, 0.0])
    r0 = A.markov_attribution(base).set_index("channel")
    r1 = A.markov_attribution(skew).set_index("channel")
    np.testing.assert_allclose(r0["conversions"], r1["conversions"])
    assert r1.loc["b", "value"] / 10 > r0.loc["b", "value"] / 3
    res = A.markov_removal_effects(skew)
    assert res.expected_value == pytest.approx(10 / 5)


def test_logistic_attribution_credits_positive_coefficients():
    # 'good' raises conversion odds, 'bad' lowers them
    paths = _paths([("good", 8, 2), ("bad", 1, 9), ("good > bad", 5, 5), ("bad > good", 5, 5)])
    res = A.logistic_attribution(paths, C=1e6).set_index("channel")
    assert res.loc["good", "coefficient"] > 0 > res.loc["bad", "coefficient"]
    assert res.loc["bad", "conversions"] == pytest.approx(1.0)  # its own path only
    assert res.loc["good", "conversions"] == pytest.approx(18.0)


def test_shapley_values_monte_carlo_beyond_15_players():
    players = [f"p{i}" for i in range(17)]
    weights = {p: i + 1.0 for i, p in enumerate(players)}
    additive = A.shapley_values(lambda s: sum(weights[p] for p in s), players, n_permutations=20)
    assert additive == pytest.approx(weights)  # every ordering gives the same contribution

    def game(s: frozenset) -> float:
        return len(s) ** 1.5 + 3.0 * ("p0" in s and "p1" in s)

    mc1 = A.shapley_values(game, players, n_permutations=300, seed=7)
    mc2 = A.shapley_values(game, players, n_permutations=300, seed=7)
    assert mc1 == mc2
    assert sum(mc1.values()) == pytest.approx(game(frozenset(players)))
    exact = A.shapley_values(game, players, max_exact=17)
    assert mc1["p0"] == pytest.approx(exact["p0"], abs=0.15)


def test_shapley_values_dict_needs_every_coalition():
    with pytest.raises(ValueError, match="no worth given"):
        A.shapley_values({frozenset("a"): 1.0, frozenset("ab"): 2.0}, ["a", "b"])


# ------------------------------------------------------------------------------------------
# Bootstrap, misallocation
# ------------------------------------------------------------------------------------------
def test_bootstrap_deterministic_and_contains_point(sample):
    sub = sample.iloc[:3000]
    b1 = A.bootstrap_shares(sub, A.markov_attribution, n_boot=40, seed=5)
    b2 = A.bootstrap_shares(sub, A.markov_attribution, n_boot=40, seed=5)
    pd.testing.assert_frame_equal(b1, b2)
    b3 = A.bootstrap_shares(sub, A.markov_attribution, n_boot=40, seed=6)
    assert not np.allclose(b1["ci_low"], b3["ci_low"])
    assert ((b1["ci_low"] <= b1["share"]) & (b1["share"] <= b1["ci_high"])).all()
    assert (b1["ci_high"] - b1["ci_low"] > 0).all()


def test_bootstrap_multi_model_function(small):
    b = A.bootstrap_shares(small, A.heuristic_attribution, n_boot=30, seed=0, level=0.8)
    assert b.groupby("model").size().nunique() == 1
    assert ((b["ci_low"] <= b["ci_high"]) & b["ci_low"].between(0, 1)).all()
    assert b.attrs["n_boot"] == 30


def test_misallocation():
    true = pd.Series({"a": 0.5, "b": 0.5})
    assert A.misallocation(true, true) == 0
    assert A.misallocation(pd.Series({"a": 1.0}), true) == pytest.approx(0.5)
    assert A.misallocation(pd.Series({"c": 1.0}), true) == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------
EMPTY = pd.DataFrame({"path": pd.Series([], dtype=object), "conversions": [], "value": [], "nulls": []})


@pytest.mark.parametrize("fn", [A.first_touch, A.linear, A.heuristic_attribution, A.markov_attribution,
                                A.shapley_attribution, A.logistic_attribution, A.transition_matrix])
def test_errors_empty_and_no_conversions(fn):
    with pytest.raises(ValueError, match="paths is empty"):
        fn(EMPTY)
    with pytest.raises(ValueError, match="no conversions"):
        fn(_paths([("a > b", 0, 3), ("b", 0, 1)]))


def test_errors_bad_input():
    with pytest.raises(ValueError, match="missing column"):
        A.markov_attribution(pd.DataFrame({"path": [("a",)], "conversions": [1.0]}))
    with pytest.raises(ValueError, match="tuples of channel names"):
        A.linear(pd.DataFrame({"path": ["a > b"], "conversions": [1.0], "value": [0.0], "nulls": [0.0]}))
    with pytest.raises(ValueError, match="empty path"):
        A.linear(pd.DataFrame({"path": [(), ("a",)], "conversions": [1.0, 1.0],
                               "value": [0.0, 0.0], "nulls": [0.0, 0.0]}))
    with pytest.raises(ValueError, match="negative"):
        A.linear(pd.DataFrame({"path": [("a",)], "conversions": [1.0], "value": [0.0], "nulls": [-1.0]}))
    with pytest.raises(ValueError, match="order"):
        A.markov_attribution(_paths([("a", 1, 0)]), order=0)
    with pytest.raises(ValueError, match="no rows"):
        A.parse_paths(pd.DataFrame({"path": [], "total_conversions": []}))
    with pytest.raises(ValueError, match="no rows"):
        A.aggregate_journeys(pd.DataFrame(columns=["journey_id", "ts", "channel", "converted", "value"]))
    with pytest.raises(ValueError, match="missing column"):
        A.aggregate_journeys(pd.DataFrame({"journey_id": [1]}))
    with pytest.raises(ValueError, match="level"):
        A.bootstrap_shares(_paths([("a", 1, 0)]), A.linear, level=1.5)
