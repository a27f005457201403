"""Tests for crmbook.synth: determinism, encodings, defect counts recounted independently from
the written files, recoverable segments, plausible BG/NBD / Gamma-Gamma truth, the injected
sample-ratio mismatch, channel truth and clean mode."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score
from sklearn.preprocessing import StandardScaler

from crmbook.synth import CATEGORIES, CHANNELS, SEGMENTS, generate, journey_model, shapley_noisy_or

FILES = ("customers.csv", "orders.csv", "touchpoints.csv", "campaigns.csv",
         "campaign_members.csv", "channel_spend.csv", "truth.json")
HEADERS = {
    "customers.csv": "CustID,Name,Email,Phone,Gender,Age,Region,City,SignupDate,AcqChannel",
    "orders.csv": "OrderNo,CustID,OrderDate,Total,Qty,SKU,Category,Channel,Status",
    "touchpoints.csv": "CustID,TouchTime,Channel,CampaignID,Event,Cost",
    "campaigns.csv": "CampaignID,Name,Channel,StartDate,EndDate,Cost",
    "campaign_members.csv": "CampaignID,CustID,Group,Delivered,Opened,Clicked,Converted,Revenue,"
                            "PrePeriodValue",
    "channel_spend.csv": "Month,Channel,Spend",
}
SMALL = 800
DATE_FORMATS = {  # the formats orders.csv may use, with the regex that selects each one
    "iso": (r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$", "%Y-%m-%d %H:%M:%S"),
    "dmy_hm": (r"^\d{2}/\d{2}/\d{4} \d{2}:\d{2}$", "%d/%m/%Y %H:%M"),
    "ymd_slash": (r"^\d{4}/\d{2}/\d{2}$", "%Y/%m/%d"),
}


# ---------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture(scope="module")
def messy_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("messy"), customers=SMALL, seed=7, messy=True)


@pytest.fixture(scope="module")
def clean_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("clean"), customers=SMALL, seed=7, messy=False)


@pytest.fixture(scope="module")
def default_clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default run (5000 customers, seed 42) without defects: same genuine data."""
    return generate(tmp_path_factory.mktemp("default"), messy=False)


def truth(out: Path) -> dict:
    return json.loads((out / "truth.json").read_text(encoding="utf-8"))


def read(out: Path, name: str) -> pd.DataFrame:
    """A CSV as strings, exactly as written (no NA conversion, no stripping)."""
    encoding = truth(out)["encodings"][name]
    return pd.read_csv(out / name, dtype=str, keep_default_na=False, encoding=encoding)


def parse_order_dates(dates: pd.Series) -> tuple[pd.Series, dict[str, pd.Series]]:
    """Parse OrderDate with the three allowed formats; returns (timestamps, format masks)."""
    parsed = pd.Series(pd.NaT, index=dates.index, dtype="datetime64[ns]")
    masks = {}
    for name, (pattern, fmt) in DATE_FORMATS.items():
        looks = dates.str.match(pattern)
        values = pd.to_datetime(dates.where(looks), format=fmt, errors="coerce")
        masks[name] = looks & values.notna()
        parsed = parsed.where(~masks[name], values)
    return parsed, masks


def recount_defects(out: Path) -> dict[str, int]:
    """Count every defect from the files alone (no use of truth.json)."""
    orders = read(out, "orders.csv")
    touch = read(out, "touchpoints.csv")
    parsed, masks = parse_order_dates(orders["OrderDate"])
    end = pd.Timestamp(truth(out)["end"]) + pd.Timedelta(days=1)
    cancelled = set(orders.loc[orders["Status"] == "cancelled", "OrderNo"])
    return {
        "exact_duplicate": int(orders.duplicated().sum()),
        "missing_customer_id": int((orders["CustID"].str.strip() == "").sum()),
        "unparseable_order_ts": int(parsed.isna().sum()),
        "future_order_ts": int((parsed >= end).sum()),
        "refund_netted": int((orders["Status"] == "refund").sum()),
        "cancellation_netted": len(cancelled),
        "cancelled_order": int(((orders["Status"] == "completed")
                                & orders["OrderNo"].isin(cancelled)).sum()),
        "mixed_date_format": int(masks["dmy_hm"].sum() + masks["ymd_slash"].sum()),
        "mixed_date_format_dmy_hm": int(masks["dmy_hm"].sum()),
        "mixed_date_format_ymd_slash": int(masks["ymd_slash"].sum()),
        "category_whitespace_case": int((~orders["Category"].isin(CATEGORIES)).sum()),
        "touch_channel_whitespace_case": int((~touch["Channel"].isin(CHANNELS)).sum()),
    }


def reference_clean(orders: pd.DataFrame, end: str) -> pd.DataFrame:
    """A straightforward cleaning of a messy orders.csv (no refund netting)."""
    df = orders.drop_duplicates()
    df = df[df["CustID"].str.strip() != ""].copy()
    parsed, _ = parse_order_dates(df["OrderDate"])
    df = df[parsed.notna() & (parsed < pd.Timestamp(end) + pd.Timedelta(days=1))]
    cancelled = set(df.loc[df["Status"] == "cancelled", "OrderNo"])
    df = df[(df["Status"] == "completed") & ~df["OrderNo"].isin(cancelled)].copy()
    canonical = {c.lower(): c for c in CATEGORIES}
    df["Category"] = df["Category"].str.strip().str.lower().map(canonical)
    return df


def rfm_features(orders: pd.DataFrame, end: str, recency: str) -> pd.DataFrame:
    """[log1p(repeat purchase days), log(mean order value), recency days, log1p(tenure days)]."""
    t_end = pd.Timestamp(end) + pd.Timedelta(days=1)
    df = orders.assign(ts=pd.to_datetime(orders["OrderDate"]), value=orders["Total"].astype(float))
    g = df.assign(day=df["ts"].dt.normalize()).groupby("CustID")
    first, last = g["ts"].min(), g["ts"].max()
    days = pd.Timedelta(days=1)
    return pd.DataFrame({
        "frequency": np.log1p(g["day"].nunique() - 1),
        "monetary": np.log(g["value"].mean()),
        "recency": ((t_end - last) if recency == "since_last" else (last - first)) / days,
        "tenure": np.log1p((t_end - first) / days),
    })


# ---------------------------------------------------------------------------------------------
# Determinism, layout, encodings


def test_same_arguments_give_byte_identical_files(tmp_path: Path, messy_small: Path) -> None:
    again = generate(tmp_path / "again", customers=SMALL, seed=7, messy=True)
    for name in FILES:
        assert (again / name).read_bytes() == (messy_small / name).read_bytes(), name
    other = generate(tmp_path / "other", customers=SMALL, seed=8, messy=True)
    assert (other / "orders.csv").read_bytes() != (messy_small / "orders.csv").read_bytes()


def test_headers_and_row_counts(messy_small: Path) -> None:
    t = truth(messy_small)
    text = (messy_small / "truth.json").read_text(encoding="utf-8")
    assert text == json.dumps(t, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert len(t["customer_segment"]) == SMALL
    for name, header in HEADERS.items():
        encoding = t["encodings"][name]
        lines = (messy_small / name).read_bytes().decode(encoding).split("\n")
        assert lines[0] == header, name
        assert lines[-1] == "" and len(lines) - 2 == t["rows"][name], name


def test_customers_csv_is_gbk_when_messy_and_utf8_when_clean(messy_small: Path,
                                                             clean_small: Path) -> None:
    raw = (messy_small / "customers.csv").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    text = raw.decode("gbk")
    assert "华" in text and truth(messy_small)["defects"]["encoding"] == {"customers.csv": "gbk"}
    clean = (clean_small / "customers.csv").read_bytes().decode("utf-8")
    assert "华" in clean and truth(clean_small)["defects"]["encoding"] == {}


def test_customer_fields(clean_small: Path) -> None:
    c = read(clean_small, "customers.csv")
    orders = read(clean_small, "orders.csv")
    assert c["CustID"].str.fullmatch(r"C\d{6}").all() and c["CustID"].is_unique
    assert c["Email"].is_unique and (c["Email"] == c["Email"].str.lower()).all()
    assert c["Email"].str.fullmatch(r"[a-z.]+\d+@example\.(com|cn)").all()
    assert c["Phone"].str.fullmatch(r"\+86 1\d{2} \d{4} \d{4}").all()  # one format when clean
    assert set(c["Gender"]) <= {"F", "M"} and c["Age"].astype(int).between(18, 75).all()
    assert set(c["AcqChannel"]) <= set(CHANNELS)
    first = orders.groupby("CustID")["OrderDate"].min().str[:10]
    assert (c.set_index("CustID")["SignupDate"] == first).all()  # sign-up = first purchase
    assert c["Region"].str.len().eq(2).all() and c["City"].str.len().between(2, 3).all()


# ---------------------------------------------------------------------------------------------
# Defects


def test_defect_counts_in_truth_match_the_files(messy_small: Path) -> None:
    t = truth(messy_small)
    found = recount_defects(messy_small)
    expected = {**t["defects"]["transactions"], **t["defects"]["normalised"]}
    assert found == expected
    assert all(v > 0 for v in expected.values()) and expected["future_order_ts"] == 1
    removed = sum(t["defects"]["transactions"].values())
    assert t["rows"]["orders.csv"] == t["genuine_orders"] + removed


def test_defects_never_overlap_and_refunds_are_partial(messy_small: Path) -> None:
    orders = read(messy_small, "orders.csv")
    parsed, masks = parse_order_dates(orders["OrderDate"])
    cancelled = set(orders.loc[orders["Status"] == "cancelled", "OrderNo"])
    flags = pd.DataFrame({
        "duplicate": orders.duplicated(),
        "blank_customer": orders["CustID"].str.strip() == "",
        "bad_date": parsed.isna() | (parsed.dt.year > 2030),
        "refund": orders["Status"] == "refund",
        "cancellation": orders["Status"] == "cancelled",
        "cancelled_order": (orders["Status"] == "completed") & orders["OrderNo"].isin(cancelled),
        "other_date_format": ~masks["iso"] & parsed.notna(),
        "category": ~orders["Category"].isin(CATEGORIES),
    })
    assert flags.sum(axis=1).max() == 1
    # Refunds: one per order, 10-50% of a genuine completed order of the same customer, later.
    refunds = orders[orders["Status"] == "refund"]
    assert refunds["OrderNo"].is_unique
    sales = orders[(orders["Status"] == "completed") & ~orders.duplicated()]
    pairs = refunds.merge(sales, on="OrderNo", suffixes=("_r", "_o"))
    assert len(pairs) == len(refunds) and (pairs["CustID_r"] == pairs["CustID_o"]).all()
    share = -pairs["Total_r"].astype(float) / pairs["Total_o"].astype(float)
    assert share.between(0.09, 0.51).all()
    # Cancellations reverse the full amount of their fake order.
    cancels = orders[orders["Status"] == "cancelled"]
    fake = orders[(orders["Status"] == "completed") & orders["OrderNo"].isin(cancelled)]
    both = cancels.merge(fake, on=["OrderNo", "CustID"], suffixes=("_c", "_o"))
    assert len(both) == len(cancels)
    assert np.allclose(both["Total_c"].astype(float), -both["Total_o"].astype(float))
    # Junk dates really are unparseable, also for a permissive parser.
    junk = orders.loc[parsed.isna(), "OrderDate"]
    for dayfirst in (False, True):
        assert pd.to_datetime(junk, format="mixed", dayfirst=dayfirst, errors="coerce").isna().all()
    # Variants normalise back to the canonical names.
    assert set(orders["Category"].str.strip().str.lower()) == {c.lower() for c in CATEGORIES}
    touch = read(messy_small, "touchpoints.csv")
    assert set(touch["Channel"].str.strip().str.lower()) == set(CHANNELS)


def test_cleaning_the_messy_orders_gives_the_clean_orders(messy_small: Path,
                                                          clean_small: Path) -> None:
    clean = read(clean_small, "orders.csv")
    cleaned = reference_clean(read(messy_small, "orders.csv"), truth(messy_small)["end"])
    assert len(cleaned) == truth(messy_small)["genuine_orders"] == len(clean)
    key = ["OrderNo", "CustID", "Total", "Qty", "SKU", "Category", "Channel", "Status"]
    a = cleaned.sort_values("OrderNo").reset_index(drop=True)
    b = clean.sort_values("OrderNo").reset_index(drop=True)
    pd.testing.assert_frame_equal(a[key], b[key])
    got = parse_order_dates(a["OrderDate"])[0]
    want = pd.to_datetime(b["OrderDate"])
    assert ((want - got) >= pd.Timedelta(0)).all() and ((want - got) < pd.Timedelta(days=1)).all()
    for name in ("campaign_members.csv", "campaigns.csv", "channel_spend.csv"):
        assert (messy_small / name).read_bytes() == (clean_small / name).read_bytes()
    # Customers differ only in encoding and in the phone format.
    messy_customers = read(messy_small, "customers.csv")
    clean_customers = read(clean_small, "customers.csv")
    digits = messy_customers["Phone"].str.replace(r"^\+86 |[ -]", "", regex=True)
    assert (digits == clean_customers["Phone"].str.replace(r"^\+86 |[ -]", "", regex=True)).all()
    others = [c for c in clean_customers.columns if c != "Phone"]
    pd.testing.assert_frame_equal(messy_customers[others], clean_customers[others])
    dashed = messy_customers["Phone"].str.fullmatch(r"1\d{2}-\d{4}-\d{4}")
    assert dashed.sum() == truth(messy_small)["defects"]["customers"]["phone_dashed_format"]


def test_clean_mode_has_no_defects(clean_small: Path) -> None:
    t = truth(clean_small)
    assert all(v == 0 for v in recount_defects(clean_small).values())
    assert all(v == 0 for v in t["defects"]["transactions"].values())
    assert all(v == 0 for v in t["defects"]["normalised"].values())
    assert t["rows"]["orders.csv"] == t["genuine_orders"]
    orders = read(clean_small, "orders.csv")
    assert set(orders["Status"]) == {"completed"} and orders["OrderNo"].is_unique


# ---------------------------------------------------------------------------------------------
# Purchases: segments and BG/NBD / Gamma-Gamma ground truth


@pytest.mark.parametrize("recency", ["since_last", "first_to_last"])
def test_segments_are_recoverable_by_clustering(default_clean: Path, recency: str) -> None:
    t = truth(default_clean)
    features = rfm_features(read(default_clean, "orders.csv"), t["end"], recency)
    labels = pd.Series(t["customer_segment"]).loc[features.index]
    x = StandardScaler().fit_transform(features.to_numpy())
    found = KMeans(3, random_state=0).fit_predict(x)
    assert adjusted_rand_score(labels, found) >= 0.85


def test_bgnbd_and_gamma_gamma_truth_is_plausible(default_clean: Path) -> None:
    t = truth(default_clean)
    assert t["time_unit"] == "days" and len(t["customer_segment"]) == t["customers"] == 5000
    orders = read(default_clean, "orders.csv")
    orders["ts"] = pd.to_datetime(orders["OrderDate"])
    orders["value"] = orders["Total"].astype(float)
    orders = orders.sort_values(["CustID", "ts"], kind="stable")
    g = orders.groupby("CustID")
    first, value = g["ts"].first(), g["value"].first()
    second = orders[g.cumcount() == 1].set_index("CustID")["ts"].reindex(first.index)
    segment = pd.Series(t["customer_segment"]).loc[first.index]
    end = pd.Timestamp(t["end"]) + pd.Timedelta(days=1)
    window = 60.0
    for s in SEGMENTS:
        info = t["segments"][s.name]
        assert info["n_customers"] == int((segment == s.name).sum())
        assert info["bgnbd"] == {"r": s.r, "alpha": s.alpha, "a": s.a, "b": s.b}
        members = segment == s.name
        # Nobody drops out before the first repeat purchase, so the share with a repeat within
        # `window` days of the first purchase is exactly 1 - (alpha / (alpha + window))^r.
        observed = members & ((end - first) / pd.Timedelta(days=1) >= window)
        gap = (second[observed] - first[observed]) / pd.Timedelta(days=1)
        share = float((gap <= window).mean())
        expected = 1 - (s.alpha / (s.alpha + window)) ** s.r
        se = np.sqrt(expected * (1 - expected) / observed.sum())
        assert abs(share - expected) < 4 * se + 0.01, (s.name, share, expected)
        # E[first order value] = p * gamma / (q - 1) (Gamma-Gamma).
        assert value[members].mean() == pytest.approx(s.mean_spend, rel=0.04)


# ---------------------------------------------------------------------------------------------
# Experiments


def test_experiments_and_injected_srm(default_clean: Path) -> None:
    t = truth(default_clean)
    members = read(default_clean, "campaign_members.csv")
    for col in ("Delivered", "Opened", "Clicked", "Converted"):
        members[col] = members[col].astype(int)
    c02 = members[members["CampaignID"] == "C02"]
    counts = c02["Group"].value_counts().reindex(["A", "B", "C"])
    facts = t["experiments"]["C02"]
    assert counts.to_dict() == facts["actual_counts"] and len(c02) == 4000
    assert facts["srm_injected"] is True
    assert stats.chisquare(counts.to_numpy()).pvalue < 1e-3  # the SRM is detectable
    c01 = members[members["CampaignID"] == "C01"]
    assert len(c01) == 2000 and c01["CustID"].is_unique
    assert c01["Group"].value_counts().to_dict() == t["experiments"]["C01"]["actual_counts"]
    assert stats.chisquare(c01["Group"].value_counts().to_numpy()).pvalue > 0.05
    assert t["experiments"]["C01"]["true_abs_lift"] == pytest.approx(0.015)
    assert t["experiments"]["C01"]["true_rel_lift"] == pytest.approx(0.30)
    control = c01[c01["Group"] == "control"]
    assert (control[["Delivered", "Opened", "Clicked"]] == 0).all().all()
    assert (members["Clicked"] <= members["Opened"]).all()
    assert (members["Opened"] <= members["Delivered"]).all()
    assert ((members["Revenue"].astype(float) > 0) == (members["Converted"] == 1)).all()
    # PrePeriodValue = genuine revenue in the 90 days before the campaign start.
    orders = read(default_clean, "orders.csv")
    ts = pd.to_datetime(orders["OrderDate"])
    start = pd.Timestamp(t["experiments"]["C01"]["start"])
    recent = orders[(ts >= start - pd.Timedelta(days=90)) & (ts < start)]
    pre = recent.assign(v=recent["Total"].astype(float)).groupby("CustID")["v"].sum()
    expected = pre.reindex(c01["CustID"]).fillna(0.0).to_numpy()
    assert np.allclose(c01["PrePeriodValue"].astype(float).to_numpy(), expected, atol=0.005)


# ---------------------------------------------------------------------------------------------
# Touchpoints and channel truth


def test_channel_truth_and_spend(messy_small: Path) -> None:
    t = truth(messy_small)
    jm = journey_model()
    assert t["mean_conversion_probability"] == pytest.approx(jm.p_bar)
    assert t["journeys"]["non_converting"] == round(t["genuine_orders"] * (1 - jm.p_bar) / jm.p_bar)
    share = pd.Series(t["channel_true_share"])
    assert share.sum() == pytest.approx(1.0) and (share > 0).all()
    assert "Shapley" in t["channel_true_share_definition"]
    # Shapley values: efficiency, and a lone channel gets all of v.
    effect = np.array([t["channels"][c]["effect"] for c in CHANNELS])
    phi = shapley_noisy_or(effect, t["base_conversion"])
    masks = np.arange(64)
    bits = (masks[:, None] >> np.arange(6)) & 1
    v = (1 - t["base_conversion"]) * (1 - np.prod(np.where(bits == 1, 1 - effect, 1.0), axis=1))
    assert np.allclose(phi.sum(axis=1), v)
    assert np.allclose(phi[1 << np.arange(6), np.arange(6)], v[1 << np.arange(6)])
    # channel_spend.csv = touch costs per month and channel, from touchpoints.csv.
    touch = read(messy_small, "touchpoints.csv")
    touch["channel"] = touch["Channel"].str.strip().str.lower()
    touch["month"] = touch["TouchTime"].str[:7]
    touch["cost"] = touch["Cost"].astype(float)
    recount = touch.groupby(["month", "channel"])["cost"].sum()
    spend = read(messy_small, "channel_spend.csv")
    spend = spend.set_index(["Month", "Channel"])["Spend"].astype(float)
    assert np.allclose(recount.reindex(spend.index, fill_value=0.0), spend, atol=0.005)
    assert (spend.xs("direct", level="Channel") == 0).all()
    # Always-on campaigns cost what their touchpoints cost; e-mail touches may have no campaign.
    campaigns = read(messy_small, "campaigns.csv").set_index("CampaignID")["Cost"].astype(float)
    by_campaign = touch.groupby("CampaignID")["cost"].sum()
    for cid in ("C03", "C04", "C05", "C06", "C07"):
        assert campaigns[cid] == pytest.approx(by_campaign[cid], abs=0.005)
    assert set(touch.loc[touch["CampaignID"] == "", "channel"]) == {"email", "direct"}
    events = touch.groupby("channel")["Event"].unique()
    assert {c: list(e) for c, e in events.items()} == {c: [t["channels"][c]["event"]]
                                                         for c in CHANNELS}
    ts = pd.to_datetime(touch["TouchTime"])
    assert ts.is_monotonic_increasing
    assert (ts >= pd.Timestamp(t["start"])).all()
    assert (ts < pd.Timestamp(t["end"]) + pd.Timedelta(days=1)).all()
    expected_touches = t["rows"]["touchpoints.csv"]
    assert len(touch) == expected_touches


# ---------------------------------------------------------------------------------------------
# Without touchpoints; chunked draws


def files_of(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_without_touchpoints_only_the_touch_log_and_its_truth_are_left_out(
        tmp_path: Path, messy_small: Path) -> None:
    out = generate(tmp_path / "no_touch", customers=SMALL, seed=7, messy=True, touchpoints=False)
    full, lean = files_of(messy_small), files_of(out)
    assert set(lean) == set(FILES) - {"touchpoints.csv"}
    for name in lean.keys() - {"truth.json"}:  # AcqChannel, spend and costs come from journeys
        assert lean[name] == full[name], name
    t = truth(out)
    text = (out / "truth.json").read_text(encoding="utf-8")
    assert text == json.dumps(t, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert t["journeys"]["touchpoints"].startswith("not written")
    # The truth of the full run, less what only the touch log would back up.
    expected = truth(messy_small)
    for key in ("channel_true_share", "channel_true_share_expected",
                "channel_true_share_definition"):
        del expected[key]
    del expected["rows"]["touchpoints.csv"], expected["encodings"]["touchpoints.csv"]
    expected["defects"]["normalised"]["touch_channel_whitespace_case"] = 0
    expected["touchpoints_written"] = False
    expected["journeys"]["touchpoints"] = t["journeys"]["touchpoints"]
    assert t == expected


def test_cli_no_touchpoints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from crmbook.cli import main

    args = ["synth", "--out", str(tmp_path / "d"), "--customers", "50", "--seed", "3", "--messy"]
    assert main(args) == 0 and (tmp_path / "d" / "touchpoints.csv").is_file()
    assert main([*args[:2], str(tmp_path / "e"), *args[3:], "--no-touchpoints"]) == 0
    assert not (tmp_path / "e" / "touchpoints.csv").exists()
    assert truth(tmp_path / "e")["touchpoints_written"] is False
    assert "demo data written to" in capsys.readouterr().out


def test_chunk_sizes_do_not_change_the_files(tmp_path: Path, messy_small: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Draws, sorts and CSV text made in many small chunks give the same bytes; with many
    journey chunks too, leaving out the touchpoints changes no other file."""
    import crmbook.synth as synth

    monkeypatch.setattr(synth, "CHUNK_ROWS", 1000)
    small = generate(tmp_path / "small_chunks", customers=SMALL, seed=7, messy=True)
    assert files_of(small) == files_of(messy_small)
    monkeypatch.setattr(synth, "JOURNEY_CHUNK", 1000)
    full = files_of(generate(tmp_path / "full", customers=SMALL, seed=7, messy=True))
    lean = files_of(generate(tmp_path / "lean", customers=SMALL, seed=7, messy=True,
                             touchpoints=False))
    assert full["touchpoints.csv"] != files_of(messy_small)["touchpoints.csv"]  # 1000 per chunk
    assert all(lean[name] == full[name] for name in lean if name != "truth.json")


def test_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate(tmp_path, customers=0)
    with pytest.raises(ValueError):
        generate(tmp_path, customers=10, start="2024-01-01", end="2024-01-31")
    with pytest.raises(ValueError, match="68 years"):
        generate(tmp_path, customers=10, start="1950-01-01", end="2024-01-31")
