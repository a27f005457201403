"""The cleaning rules of "bring your own data": e-mails and phones, countries, time zones,
currencies, the single customer view, cancellations matched by product, outliers and the
data-quality score. Expected values are worked out by hand in the comments."""
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crmbook import cleaning, config
from crmbook.config import CleaningSection, Config
from crmbook.errors import ConfigError, InputError

DATA = Path(__file__).resolve().parents[1] / "data" / "cleaning"
CFG = Config.model_validate({"run": {"analysis_date": "2025-01-01"}})


def _lines(rows, columns=("order_id", "customer_id", "order_ts", "amount", "quantity", "product_id", "status")):
    frame = pd.DataFrame(rows, columns=list(columns))
    frame["order_ts"] = pd.to_datetime(frame["order_ts"], format="ISO8601").astype("datetime64[us]")
    for column in ("amount", "quantity"):
        if column in frame:
            frame[column] = frame[column].astype("float64")
    frame["source"] = "orders.csv"
    frame["source_row"] = np.arange(2, len(frame) + 2, dtype="int64")
    return frame


# --- e-mails and phones ---------------------------------------------------------------------

def test_emails_are_trimmed_lower_cased_and_invalid_ones_emptied():
    raw = pd.Series([" Ann.Lee@Example.COM ", "mailto:bob@shop.cn", "not an email", "", None, "a@b"])
    out = cleaning.normalise_email(raw)
    assert out.iloc[:2].tolist() == ["ann.lee@example.com", "bob@shop.cn"]
    assert out.iloc[2:].isna().all()


def test_phones_go_to_e164_with_the_default_region():
    raw = pd.Series(["177-4000-4146", "+86 177 4000 4146", "0044 20 7946 0958", "+44 (0)20 7946 0958", "12", "n/a", ""])
    out = cleaning.normalise_phone(raw, "CN")
    assert out.iloc[:4].tolist() == ["+8617740004146", "+8617740004146", "+442079460958", "+442079460958"]
    assert out.iloc[4:].isna().all()


def test_without_a_region_a_national_number_keeps_its_digits():
    out = cleaning.normalise_phone(pd.Series(["177-4000-4146", "+44 20 7946 0958"]), None)
    assert out.tolist() == ["17740004146", "+442079460958"]


def test_phone_normal_form_hashes_like_the_international_spelling():
    # ingestion hashes the digits of the normalised phone: a national and an international
    # spelling of one number must give the digits ingestion already used for "+86 138-0013-8000"
    national, international = cleaning.normalise_phone(pd.Series(["138-0013-8000", "+86 138-0013-8000"]), "CN")
    assert re.sub(r"\D", "", national) == re.sub(r"\D", "", international) == "8613800138000"


def test_contacts_record_what_normalisation_did_and_the_ledger_counts_it():
    frame = pd.DataFrame({"customer_id": ["a", "b", "c", "d"],
                          "email": [" Ann@X.com ", "bob@y.cn", "", "junk"],
                          "phone": ["138-0013-8000", "+8613800138000", "", "12"]})
    out = cleaning.normalise_contacts(frame, CleaningSection(phone_region="CN"))
    assert out["email"].iloc[0] == "ann@x.com" and out["phone"].iloc[0] == "+8613800138000"
    assert out["email_status"].tolist() == ["normalised", "kept", "", "invalid"]
    assert out["phone_status"].tolist() == ["normalised", "kept", "", "invalid"]
    step = cleaning.contacts_counted(out.drop(columns=["email", "phone"]))
    assert step.changed == 2 and "email_status" not in step.kept and len(step.kept) == 4
    counts = cleaning.contact_counts(out).set_index(["field", "status"])["rows"]
    assert counts[("email", "invalid")] == 1 and counts[("phone", "empty")] == 1


def test_phones_without_region_are_marked_for_the_report():
    out = cleaning.normalise_contacts(pd.DataFrame({"phone": ["177-4000-4146"]}))
    assert out["phone_status"].tolist() == ["no_country_code"]


# --- countries --------------------------------------------------------------------------------

def test_countries_to_iso_codes_placeholders_empty_unknown_kept():
    raw = pd.Series(["United Kingdom", "EIRE", " germany ", "USA", "RSA", "Korea", "Unspecified", "Channel Islands", "GBR", None])
    out, unknown = cleaning.country_codes(raw)
    assert out.iloc[:6].tolist() == ["GB", "IE", "DE", "US", "ZA", "KR"]
    assert pd.isna(out.iloc[6]) and out.iloc[7] == "Channel Islands" and out.iloc[8] == "GB" and pd.isna(out.iloc[9])
    assert unknown == ["Channel Islands"]


def test_country_format_and_aliases():
    assert cleaning.country_codes(pd.Series(["EIRE", "Czech Republic"]), "name")[0].tolist() == ["Ireland", "Czechia"]
    assert cleaning.country_codes(pd.Series(["EIRE", "Czech Republic"]), "alpha3")[0].tolist() == ["IRL", "CZE"]
    out, unknown = cleaning.country_codes(pd.Series(["Channel Islands"]), aliases={"channel islands": "JE"})
    assert out.tolist() == ["JE"] and unknown == []


def test_normalise_country_counts_rows_rewritten():
    frame = pd.DataFrame({"country": ["UK", "GB", "Unspecified"]})
    step = cleaning.normalise_country(frame, "country", "alpha2", {})
    assert step.kept["country"].iloc[:2].tolist() == ["GB", "GB"] and pd.isna(step.kept["country"].iloc[2])
    assert step.changed == 2


# --- time zones -------------------------------------------------------------------------------

def test_london_times_to_utc_with_summer_time_and_the_dst_edges():
    frame = _lines([["1", "a", ts, 1.0, 1, "P", ""] for ts in
                    ["2024-07-01 12:00", "2024-01-15 12:00", "2024-10-27 01:30", "2024-03-31 01:30", None]])
    step = cleaning.convert_timezone(frame, "order_ts", "Europe/London", "UTC")
    expected = ["2024-07-01 11:00", "2024-01-15 12:00",
                "2024-10-27 00:30",  # the repeated hour: its first occurrence, summer time (UTC+1)
                "2024-03-31 01:00"]  # the skipped hour: moved to 02:00 summer time = 01:00 UTC
    assert step.kept["order_ts"].iloc[:4].tolist() == [pd.Timestamp(t) for t in expected]
    assert pd.isna(step.kept["order_ts"].iloc[4]) and step.changed == 4
    assert step.kept["order_ts"].dt.tz is None


def test_time_zone_per_source_file():
    frame = _lines([["1", "a", "2024-01-01 08:00", 1.0, 1, "P", ""], ["2", "a", "2024-01-01 08:00", 1.0, 1, "P", ""]])
    frame["source"] = ["cn.csv", "uk.csv"]
    step = cleaning.convert_timezone(frame, "order_ts", {"cn.csv": "Asia/Shanghai", "uk.csv": "UTC"}, "UTC")
    assert step.kept["order_ts"].tolist() == [pd.Timestamp("2024-01-01 00:00"), pd.Timestamp("2024-01-01 08:00")]
    assert step.changed == 1


def test_conversion_runs_before_the_future_date_check():
    # 20:00 in New York on the analysis date is 01:00 UTC the next day: future-dated
    frame = pd.DataFrame({"order_id": ["1", "2"], "customer_id": ["a", "a"], "order_ts": ["2025-01-01 20:00:00", "2025-01-01 10:00:00"],
                          "amount": ["5", "5"], "source": "o.csv", "source_row": np.array([2, 3], dtype="int64")})
    cfg = CFG.model_copy(update={"cleaning": CleaningSection(source_timezone="America/New_York")})
    clean, quarantine, ledger = cleaning.clean_table("transactions", frame, cfg)
    rules = ledger["rule"].tolist()
    assert rules.index("parse_order_ts") < rules.index("timezone_order_ts") < rules.index("future_order_ts")
    assert quarantine["order_id"].tolist() == ["1"] and quarantine["rule"].tolist() == ["future_order_ts"]
    assert clean["order_ts"].tolist() == [pd.Timestamp("2025-01-01 15:00")]


def test_unknown_time_zone_and_region_are_config_errors(tmp_path):
    for body, key in (("cleaning:\n  source_timezone: Mars/Base\n", "cleaning.source_timezone"),
                      ("cleaning:\n  phone_region: CHN\n", "cleaning.phone_region"),
                      ("cleaning:\n  currency:\n    source: EURO\n", "cleaning.currency.source")):
        path = tmp_path / "p.yaml"
        path.write_text(body)
        with pytest.raises(ConfigError, match=re.escape(key)):
            config.load(path)


# --- currency ---------------------------------------------------------------------------------

def _priced(rows):
    frame = _lines([[str(i), "a", ts, amount, 1, "P", ""] for i, (ts, amount, _) in enumerate(rows)])
    return frame.assign(currency=[c for _, _, c in rows])


def test_amounts_converted_with_the_latest_rate_at_most_a_week_old():
    rates = cleaning.load_rates(DATA / "rates.csv")  # EUR 1.10 from 01-01, 1.20 from 01-05; GBP 1.25 from 01-01
    frame = _priced([("2024-01-03", 100, "EUR"),   # 01-01 rate, 2 days old: 110
                     ("2024-01-05 10:00", 100, "eur"),  # that day's rate: 120
                     ("2024-01-20", 100, "EUR"),   # latest rate 15 days old: no rate
                     ("2024-01-02", 50, "USD"),    # already in run.currency
                     ("2024-01-02", 10, ""),       # no currency: run.currency
                     ("2023-12-31", 10, "GBP"),    # before the first GBP rate: no rate
                     ("2024-01-08", 8, "GBP")])    # 7 days old, still used: 10
    step = cleaning.convert_currency(frame, rates, "USD", None, max_age_days=7)
    kept = step.kept.set_index("order_id")["amount"]
    assert kept.to_dict() == pytest.approx({"0": 110.0, "1": 120.0, "3": 50.0, "4": 10.0, "6": 10.0})
    assert (step.kept["currency"] == "USD").all() and step.changed == 3
    assert step.removed["order_id"].tolist() == ["2", "5"]
    assert step.removed["reason"].iloc[0].startswith("no EUR rate on or up to 7 days before the order day")
    assert step.removed["amount"].tolist() == [100.0, 10.0]  # quarantined as they were


def test_a_source_currency_applies_to_rows_without_one():
    frame = _lines([["1", "a", "2024-01-02", 10.0, 1, "P", ""]])
    step = cleaning.convert_currency(frame, cleaning.load_rates(DATA / "rates.csv"), "USD", "GBP")
    assert step.kept["amount"].tolist() == [12.5] and step.changed == 1


def test_a_missing_rate_can_be_an_error_instead():
    frame = _priced([("2024-01-20", 100, "EUR")])
    with pytest.raises(InputError, match="no EUR rate on or up to 7 days before 2024-01-20"):
        cleaning.convert_currency(frame, cleaning.load_rates(DATA / "rates.csv"), "USD", None, missing="error")


def test_rate_table_errors_name_the_column_and_row(tmp_path):
    path = tmp_path / "rates.csv"
    path.write_text("date,cur,rate\n2024-01-01,EUR,1.1\n")
    with pytest.raises(InputError, match=r"column 'currency', row 1: the rate table needs columns"):
        cleaning.load_rates(path)
    path.write_text("date,currency,rate\n2024-01-01,EUR,1.1\n2024-01-02,EUR,-1\n")
    with pytest.raises(InputError, match=r"column 'rate', row 3: not a valid rate"):
        cleaning.load_rates(path)
    with pytest.raises(InputError, match="rate table not found"):
        cleaning.load_rates(tmp_path / "nope.csv")


def test_currency_rule_runs_in_the_plan_with_a_rate_file():
    frame = pd.DataFrame({"order_id": ["1"], "customer_id": ["a"], "order_ts": ["2024-01-03 00:00:00"], "amount": ["100"],
                          "source": "o.csv", "source_row": np.array([2], dtype="int64")})
    cfg = Config.model_validate({"run": {"analysis_date": "2025-01-01", "currency": "USD"},
                                 "cleaning": {"currency": {"rates": str(DATA / "rates.csv"), "source": "EUR"}}})
    clean, _, ledger = cleaning.clean_table("transactions", frame, cfg)
    assert clean["amount"].tolist() == [pytest.approx(110.0)]
    assert ledger.set_index("rule").loc["convert_currency", "rows_changed"] == 1


# --- single customer view ---------------------------------------------------------------------

def _customers():
    rows = [  # customer_id, email_hash, phone_hash, region, source
        ("A1", "e1", "p1", None, "crm.csv"), ("S9", "e1", "", "North", "shop.csv"),      # same e-mail: one customer
        ("A2", "e2", "p2", "West", "crm.csv"), ("S10", "e2", "p3", "West", "shop.csv"),  # same e-mail, two phones
        ("A3", "e3", "", "East", "crm.csv"), ("S11", "e3", "p4", "East", "shop.csv"),    # a chain: A3~S11 by e-mail,
        ("S12", "", "p4", "East", "shop.csv"),                                           # S11~S12 by phone
        ("S13", "e5", "p5", "South", "shop.csv"), ("S14", "", "p5", None, "shop.csv"),   # same phone
        ("A4", "e6", "p6", "North", "crm.csv"),                                          # nobody else
    ]
    frame = pd.DataFrame(rows, columns=["customer_id", "email_hash", "phone_hash", "region", "source"])
    frame["source_row"] = np.arange(2, len(frame) + 2, dtype="int64")
    return frame


def test_ids_sharing_an_email_or_phone_are_one_customer_and_ambiguous_groups_kept_apart():
    id_map = cleaning.match_customers(_customers(), CleaningSection.Identity(), ["crm.csv", "shop.csv"])
    rows = id_map.set_index("source_customer_id")
    assert rows["customer_id"].to_dict() == {"A1": "A1", "A2": "A2", "A3": "A3", "A4": "A4", "S10": "S10", "S11": "S11",
                                             "S12": "S12", "S13": "S13", "S14": "S13", "S9": "A1"}
    assert rows["matched_on"].to_dict() == {"A1": "email", "A2": "email", "A3": "email", "A4": "", "S10": "email",
                                            "S11": "email+phone", "S12": "phone", "S13": "phone", "S14": "phone", "S9": "email"}
    assert rows.loc["A2", "ambiguous"] == rows.loc["S10", "ambiguous"] == "same e-mail, different phone"
    assert rows.loc["S12", "ambiguous"] == "chain of 3 ids (two share no identifier)"
    assert rows.loc[["A1", "S9", "S13", "S14", "A4"], "ambiguous"].eq("").all()
    assert rows.loc["S12", "group_id"] == "A3" and rows.loc["S12", "group_size"] == 3
    assert id_map["source"].tolist() == ["crm.csv"] * 4 + ["shop.csv"] * 6  # sorted by source, then id


@settings(max_examples=30, deadline=None)
@given(st.permutations(list(range(10))))
def test_property_the_id_map_does_not_depend_on_row_order(order):
    base = cleaning.match_customers(_customers(), CleaningSection.Identity(), ["crm.csv", "shop.csv"])
    shuffled = cleaning.match_customers(_customers().iloc[order], CleaningSection.Identity(), ["crm.csv", "shop.csv"])
    pd.testing.assert_frame_equal(base, shuffled)


def test_survivor_is_from_the_first_source_in_params_order():
    id_map = cleaning.match_customers(_customers(), CleaningSection.Identity(), ["shop.csv", "crm.csv"])
    assert id_map.set_index("source_customer_id").loc[["A1", "S9"], "customer_id"].tolist() == ["S9", "S9"]


def test_ambiguous_groups_can_be_merged_and_size_is_capped():
    merged = cleaning.match_customers(_customers(), CleaningSection.Identity(ambiguous="merge"), ["crm.csv", "shop.csv"])
    assert merged.set_index("source_customer_id").loc[["S10", "S11", "S12"], "customer_id"].tolist() == ["A2", "A3", "A3"]
    capped = cleaning.match_customers(_customers(), CleaningSection.Identity(max_group_size=2), ["crm.csv", "shop.csv"])
    assert capped.set_index("source_customer_id").loc["S11", "ambiguous"].startswith("3 ids linked: more than")


def test_matching_on_email_only():
    id_map = cleaning.match_customers(_customers(), CleaningSection.Identity(match_on=["email"]), ["crm.csv", "shop.csv"])
    rows = id_map.set_index("source_customer_id")
    assert rows.loc[["S11", "S12", "S14"], "customer_id"].tolist() == ["A3", "S12", "S14"]  # A3~S11 alone is unambiguous
    assert rows.loc["S14", "matched_on"] == ""


def test_clean_merges_customers_and_rekeys_their_orders(tmp_path):
    cfg = Config.model_validate({"run": {"analysis_date": "2025-01-01"},
                                 "data": {"sources": {"customers": [{"path": "crm.csv"}, {"path": "shop.csv"}]}}})
    orders = pd.DataFrame({"order_id": ["1", "2", "3", "4"], "customer_id": ["S9", "S14", "A2", "X"],
                           "order_ts": "2024-05-01 10:00:00", "amount": "10", "source": "o.csv",
                           "source_row": np.arange(2, 6, dtype="int64")})
    cleaned = cleaning.clean({"transactions": orders, "customers": _customers()}, cfg)
    customers = cleaned.tables["customers"].set_index("customer_id")
    assert sorted(customers.index) == ["A1", "A2", "A3", "A4", "S10", "S11", "S12", "S13"]
    assert customers.loc["A1", "region"] == "North"  # taken from the merged S9
    merged = cleaned.quarantine["customers"].set_index("customer_id")["reason"]
    assert merged.to_dict() == {"S9": "merged into customer A1 (matched on email)", "S14": "merged into customer S13 (matched on phone)"}
    assert cleaned.tables["transactions"]["customer_id"].tolist() == ["A1", "S13", "A2", "X"]
    ledger = cleaned.quality.set_index(["table", "rule"])
    assert ledger.loc[("customers", "merge_customers"), ["rows_in", "rows_out", "rows_quarantined", "rows_changed"]].tolist() == [10, 8, 2, 1]
    assert ledger.loc[("transactions", "rekey_customer_id"), "rows_changed"] == 2
    assert list(cleaned.quality["table"].unique()) == ["transactions", "customers"]  # the input order
    assert cleaning.identity_counts(cleaned.id_map) == {"ids": 10, "matched_ids": 9, "groups": 4, "rekeyed_ids": 2,
                                                        "ambiguous_groups": 2, "ambiguous_ids": 5}
    cleaning.save(tmp_path, cleaned)
    saved = pd.read_csv(tmp_path / "tables" / "customer_id_map.csv", dtype=str, keep_default_na=False)
    assert list(saved.columns[:4]) == ["source", "source_customer_id", "customer_id", "matched_on"] and len(saved) == 10


# --- cancellations with no link to their order (UCI Online Retail) ------------------------------

def _retail():
    return _lines([
        ["1001", "c1", "2024-01-01 10:00", 12.0, 6, "P", "completed"],
        ["1002", "c1", "2024-01-05 10:00", 12.0, 6, "P", "completed"],
        ["1002", "c1", "2024-01-05 10:00", 5.0, 1, "Q", "completed"],
        ["C2001", "c1", "2024-01-10 09:00", -16.0, -8, "P", "cancelled"],  # 12 from 1002, then 4 of 1001's 12
        ["C2002", "c1", "2024-01-10 09:00", -5.0, -1, "R", "cancelled"],   # never bought R
        ["C2003", "c2", "2024-01-02 09:00", -3.0, -1, "P", "cancelled"],   # c2 bought P only later
        ["1003", "c2", "2024-01-03 09:00", 3.0, 1, "P", "completed"],
        ["C2004", "c1", "2024-01-11 09:00", -10.0, -2, "Q", "cancelled"],  # only 5 of Q to net into
    ])


def test_cancellations_net_into_the_customers_latest_earlier_sales_of_the_product():
    step = cleaning.match_cancellations(_retail(), CleaningSection())
    kept = step.kept.set_index("order_id")
    assert kept["amount"].to_dict() == {"1001": 8.0, "1003": 3.0}
    assert kept.loc["1001", "quantity"] == 4.0  # 6 x 8/12
    assert step.changed == 1
    reasons = dict(zip(step.removed["order_id"] + "/" + step.removed["product_id"], step.removed["reason"]))
    assert reasons == {
        "1002/P": "order line fully cancelled by a later refund or cancellation of the same product",
        "1002/Q": "order line fully cancelled by a later refund or cancellation of the same product",
        "C2001/P": "cancellation matched to the customer's earlier sales of the same product",
        "C2002/R": "cancellation with no order or earlier sale of the same product by the customer to net into",
        "C2003/P": "cancellation with no order or earlier sale of the same product by the customer to net into",
        "C2004/Q": "cancellation partly matched to the customer's earlier sales of the same product (the rest found no sale)",
    }
    assert step.removed.set_index("order_id").loc["C2001", "amount"] == -16.0  # quarantined as it was
    assert step.removed.set_index("product_id").loc["Q", "amount"].tolist() == [5.0, -10.0]


def test_cancellation_matching_off_quarantines_them_unmatched():
    step = cleaning.match_cancellations(_retail(), CleaningSection(cancellation_matching="off"))
    assert step.kept["order_id"].tolist() == ["1001", "1002", "1002", "1003"] and step.changed == 0
    assert set(step.removed["reason"]) == {"refund with no order to net into (cancellation)"}


def test_in_the_plan_order_links_come_first_then_products():
    frame = _retail()
    frame.loc[len(frame)] = ["1003", "c2", pd.Timestamp("2024-01-04"), -1.0, -1.0, "P", "refund", "orders.csv", 10]
    clean, quarantine, ledger = cleaning.clean_table("transactions", frame.astype({"order_ts": "str"}), CFG)
    counts = ledger.set_index("rule")["rows_quarantined"]
    assert counts["net_refunds"] == 1 and counts["match_cancellations"] == 6
    assert clean.set_index("order_id")["amount"].to_dict() == {"1001": 8.0, "1003": 2.0}
    assert len(clean) + len(quarantine) == len(frame)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("PQ"), st.integers(1, 40)), min_size=1, max_size=8),
       st.lists(st.tuples(st.sampled_from("PQR"), st.integers(1, 40)), max_size=8))
def test_property_cancellations_after_every_sale_leave_max_zero_sales_minus_cancellations(sales, cancels):
    rows = [[f"S{i}", "c", f"2024-01-01 00:{i:02d}", float(a), 1, p, "completed"] for i, (p, a) in enumerate(sales)]
    rows += [[f"C{i}", "c", f"2024-02-01 00:{i:02d}", -float(a), -1, p, "cancelled"] for i, (p, a) in enumerate(cancels)]
    step = cleaning.match_cancellations(_lines(rows), CleaningSection())
    assert len(step.kept) + len(step.removed) == len(rows)
    assert (step.kept["amount"] > 0).all()
    for product in "PQ":
        sold = sum(a for p, a in sales if p == product)
        cancelled = sum(a for p, a in cancels if p == product)
        kept = step.kept.loc[step.kept["product_id"] == product, "amount"].sum()
        assert kept == pytest.approx(max(0, sold - cancelled))


# --- outliers ---------------------------------------------------------------------------------

LOGS = [-3, -1, -1, 0, 0, 0, 1, 1, 1, 3, 6]  # median 0; |deviations| sorted 0 0 0 1 1 1 1 1 3 3 6: MAD 1
LIMIT = math.exp(3.5 / 0.6745)  # exp(median + 3.5 MAD / 0.6745) = 179.3; e^6 = 403 is above, e^3 = 20 is not


def _amounts():
    return _lines([[str(i), "a", "2024-01-01", math.exp(v), 1, "P", ""] for i, v in enumerate(LOGS)])


def test_outlier_limit_is_a_modified_z_score_of_log_amount():
    assert cleaning.outlier_limit(_amounts()["amount"], 3.5) == pytest.approx(LIMIT)
    assert cleaning.outlier_limit(pd.Series([5.0] * 20)) is None  # no spread
    assert cleaning.outlier_limit(pd.Series([1.0, 100.0])) is None  # too few


@pytest.mark.parametrize("action", ["flag", "cap", "quarantine"])
def test_outliers_flagged_capped_or_quarantined(action):
    step = cleaning.flag_outliers(_amounts(), action, cleaning.outlier_limit(_amounts()["amount"]))
    if action == "quarantine":
        assert step.removed["order_id"].tolist() == ["10"] and step.removed["reason"].iloc[0].startswith("amount above the outlier limit 179.")
        return
    assert step.kept["amount_outlier"].tolist() == [0] * 10 + [1] and step.changed == 1
    assert step.kept["amount"].iloc[-1] == pytest.approx(LIMIT if action == "cap" else math.exp(6))
    assert step.kept["amount"].iloc[:10].tolist() == _amounts()["amount"].iloc[:10].tolist()


# --- data-quality score and the report helpers ---------------------------------------------------

def test_quality_score_counts_defects_not_business_events():
    ledger = pd.DataFrame([
        ("transactions", "exact_duplicate", 100, 90, 10, 0), ("transactions", "parse_order_ts", 90, 85, 5, 4),
        ("transactions", "normalise_categories", 85, 85, 0, 6), ("transactions", "net_refunds", 85, 80, 5, 3),
        ("transactions", "outliers_amount", 80, 80, 0, 2),
        ("customers", "duplicate_key", 10, 9, 1, 0), ("customers", "merge_customers", 9, 8, 1, 1),
    ], columns=["table", "rule", "rows_in", "rows_out", "rows_quarantined", "rows_changed"])
    scores = cleaning.quality_scores(ledger).set_index("table")
    # transactions: 1 - (10 + 5 removed + 4 + 6 rewritten) / 100; customers: 1 - 1 / 10
    assert scores["score"].tolist() == pytest.approx([0.75, 0.9])
    assert scores.loc["transactions", ["defect_rows_removed", "rows_rewritten", "other_rows_removed", "rows_kept"]].tolist() == [15, 10, 5, 80]
    assert cleaning.overall_score(scores.reset_index()) == pytest.approx((75 + 9) / 110)


def test_report_samples_mask_personal_data():
    quarantine = pd.DataFrame({"rule": ["r", "r"], "reason": ["x", "x"], "source": "c.csv", "source_row": ["2", "3"],
                               "customer_id": ["a", "b"], "email_hash": ["3f2a9c", ""], "phone_hash": [None, "77aa"]})
    sample = cleaning.quarantine_sample(quarantine)
    assert sample["email_hash"].tolist() == [cleaning.MASK, ""] and sample["phone_hash"].iloc[1] == cleaning.MASK
    assert sample["customer_id"].tolist() == ["a", "b"]


def test_uci_cancellations_on_real_invoice_lines():
    raw = pd.read_csv(DATA / "online_retail_two_customers.csv", dtype=str)
    quantity, price = raw["Quantity"].astype(float), raw["Price"].astype(float)
    frame = pd.DataFrame({  # what the uci_online_retail preset maps
        "order_id": raw["Invoice"], "customer_id": raw["Customer ID"].str.removesuffix(".0"), "order_ts": raw["InvoiceDate"],
        "amount": (quantity * price).astype(str), "quantity": raw["Quantity"], "product_id": raw["StockCode"],
        "status": np.where(raw["Invoice"].str.startswith("C"), "cancelled", "completed"),
        "source": "online_retail.csv", "source_row": np.arange(2, len(raw) + 2, dtype="int64")})
    cfg = Config.model_validate({"run": {"analysis_date": "2010-12-10"}, "cleaning": {"outliers": {"action": "off"}}})
    clean, quarantine, ledger = cleaning.clean_table("transactions", frame, cfg)
    reasons = quarantine.groupby("reason")["order_id"].apply(sorted).to_dict()
    assert reasons == {
        # 14028 cancelled 511164 three minutes after placing it: all three lines
        "cancellation matched to the customer's earlier sales of the same product": ["C511172"] * 3 + ["C538052"],
        "order line fully cancelled by a later refund or cancellation of the same product": ["511164"] * 3,
        # a manual adjustment "M" and a product 15181 never bought have nothing to net into
        "cancellation with no order or earlier sale of the same product by the customer to net into": ["C491027", "C517480"],
    }
    kept = clean.set_index(["order_id", "product_id"])
    assert len(clean) == 10 and len(clean) + len(quarantine) == len(raw)
    # C538052 cancels 1 unit at 4.95 out of 24 x 4.25 = 102.00 bought on 2010-10-15
    assert kept.loc[("527197", "22138"), ["amount", "quantity"]].tolist() == pytest.approx([97.05, 23.0])
    assert kept.loc["511176", "amount"].tolist() == pytest.approx([1203.5] * 3)  # the re-order stands
    assert clean.groupby("customer_id")["amount"].sum().to_dict() == pytest.approx({"14028": 6786.0, "15181": 505.77})
    assert ledger.set_index("rule").loc["match_cancellations", ["rows_quarantined", "rows_changed"]].tolist() == [9, 1]


def test_cleaning_params_typos_name_the_allowed_keys(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("cleaning:\n  outliers:\n    treshold: 3\n")
    with pytest.raises(ConfigError, match=r"cleaning\.outliers\.treshold: unknown key \(allowed: action, threshold\)"):
        config.load(path)


def test_the_online_retail_example_matches_cancellations_by_product():
    cfg = config.load(Path(__file__).resolve().parents[2] / "params" / "examples" / "online_retail.yaml")
    assert cfg.cleaning.cancellation_matching == "product" and cfg.cleaning.outliers.action == "flag"


def test_summary_reports_the_score_merges_and_matched_cancellations():
    cfg = Config.model_validate({"run": {"analysis_date": "2025-01-01"},
                                 "data": {"sources": {"customers": [{"path": "crm.csv"}, {"path": "shop.csv"}]}}})
    orders = _retail().astype({"order_ts": "str"}).assign(customer_id=lambda f: f["customer_id"].map({"c1": "S9", "c2": "A2"}))
    cleaned = cleaning.clean({"transactions": orders, "customers": _customers()}, cfg)
    summary = cleaning.summarise(cleaned, cfg)
    cards = {c.label: c.value for c in summary.cards}
    # 18 rows read, no defect removed or rewritten: every removal is a merge or a cancellation
    assert cards["Data-quality score"] == "100.0%" and cards["Rows read"] == "18"
    text = " ".join(summary.findings)
    assert "1 refunds or cancellations with no sale in their own order were matched" in text  # C2001
    assert "(1 more only in part); 2 found no sale and were set aside; 2 order lines were fully cancelled" in text
    assert "9 customer ids share an e-mail or phone with another id (4 groups); 2 were merged" in text
    assert cleaning.cancellation_counts(cleaned) == {"matched": 1, "partly": 1, "unmatched": 2, "lines": 2}


def test_implausibly_old_dates_and_out_of_range_amounts_are_quarantined_and_counted():
    """A 1900 order (a mistyped year) and a 1e15 amount would stop the stages downstream (a span of
    centuries; an exact sum out of range): cleaning quarantines them, counted, with a reason."""
    import datetime as dt

    from crmbook import cleaning

    frame = pd.DataFrame({"order_ts": pd.to_datetime(["1900-01-02 00:00", "1969-12-31 23:59", "1970-01-01 00:00", "2024-05-01 00:00"]),
                          "amount": [10.0, 5.0, -2e12, 12.5]})
    old = cleaning.past_dates(frame, "order_ts", dt.date(1970, 1, 1))
    assert len(old.kept) == 2 and len(old.removed) == 2
    assert set(old.removed["reason"]) == {"order_ts is before 1970-01-01"}
    big = cleaning.out_of_range(old.kept, "amount", 1e12)
    assert big.kept["amount"].tolist() == [12.5] and big.removed["reason"].tolist() == ["amount is beyond ±1e+12"]
