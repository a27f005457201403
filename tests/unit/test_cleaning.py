"""Cleaning rules: what each removes or rewrites, and that every row is accounted for."""
import datetime as dt

import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from crmbook import cleaning
from crmbook.config import CleaningSection, Config


def _orders(rows):
    frame = pd.DataFrame(rows, columns=["order_id", "customer_id", "order_ts", "amount", "category", "status"]).astype("str")
    frame["source"] = "orders.csv"
    frame["source_row"] = range(2, len(frame) + 2)
    return frame


CFG = Config.model_validate({"run": {"analysis_date": "2025-01-01"}})


def test_exact_duplicates_ignore_lineage():
    frame = _orders([["1", "a", "2024-01-01", "10", "x", "completed"]] * 3)
    step = cleaning.exact_duplicate(frame)
    assert len(step.kept) == 1 and len(step.removed) == 2
    assert list(step.kept["source_row"]) == [2]


def test_missing_ids_are_removed_and_ids_trimmed():
    frame = _orders([["1", " a ", "2024-01-01", "10", "x", ""], ["2", "  ", "2024-01-01", "5", "x", ""], ["3", "", "2024-01-01", "5", "x", ""]])
    step = cleaning.missing_id(frame, "customer_id")
    assert list(step.kept["customer_id"]) == ["a"]
    assert step.changed == 1 and len(step.removed) == 2
    assert set(step.removed["reason"]) == {"customer_id is empty"}


def test_dates_in_other_formats_are_rewritten_and_junk_quarantined():
    frame = _orders([["1", "a", "2024-03-05 10:00:00", "1", "x", ""], ["2", "a", "2024-03-06 11:00:00", "1", "x", ""],
                     ["3", "a", "05/03/2024 10:00", "1", "x", ""], ["4", "a", "31/02/2024 10:00", "1", "x", ""],
                     ["5", "a", "N/A", "1", "x", ""]])
    step = cleaning.parse_dates(frame, "order_ts", CleaningSection().date_formats, True, "timestamp")
    assert list(step.kept["order_id"]) == ["1", "2", "3"]
    assert step.kept["order_ts"].iloc[2] == pd.Timestamp("2024-03-05 10:00")  # day first, as configured
    assert step.changed == 1
    assert list(step.removed["order_id"]) == ["4", "5"]


def test_required_dates_quarantined_with_their_own_reason():
    frame = _orders([["1", "a", "2024-03-05", "1", "x", ""], ["2", "a", " ", "1", "x", ""],
                     ["3", "a", "bad", "1", "x", ""], ["4", "a", "", "1", "x", ""]])
    step = cleaning.parse_dates(frame, "order_ts", ["%Y-%m-%d"], True, "timestamp")
    assert list(step.kept["order_id"]) == ["1"]
    assert list(step.removed["order_id"]) == ["2", "3", "4"]
    assert list(step.removed["order_ts"]) == [" ", "bad", ""]  # as they were before the rule
    assert list(step.removed["reason"]) == ["order_ts is empty", "order_ts is not a date in any format of "
                                            "cleaning.date_formats", "order_ts is empty"]


def test_a_rule_that_removes_nothing_keeps_the_table_without_copying_it():
    frame = _orders([["1", "a", "2024-03-05", "1", "x", ""], ["2", "b", "2024-03-06", "1", "x", ""]])
    step = cleaning.exact_duplicate(frame)
    assert step.kept is frame and step.removed.empty and list(step.removed.columns) == [*frame.columns, "reason"]


def test_optional_dates_become_empty_not_removed():
    frame = _orders([["1", "a", "2024-03-05", "1", "x", ""], ["2", "a", "bad", "1", "x", ""]])
    step = cleaning.parse_dates(frame, "order_ts", ["%Y-%m-%d"], False, "timestamp")
    assert len(step.kept) == 2 and step.kept["order_ts"].isna().sum() == 1 and step.changed == 1


def test_future_dates_after_the_cutoff_day():
    frame = _orders([["1", "a", "", "1", "x", ""]] * 3).assign(
        order_ts=pd.to_datetime(["2025-01-01 23:59", "2025-01-02 00:00", "2031-06-15 00:00"]))
    step = cleaning.future_dates(frame, "order_ts", dt.date(2025, 1, 1))
    assert len(step.kept) == 1 and len(step.removed) == 2


def test_numbers_with_thousands_separators_and_text():
    frame = _orders([["1", "a", "", "1,234.50", "x", ""], ["2", "a", "", "abc", "x", ""], ["3", "a", "", " 7 ", "x", ""]])
    step = cleaning.parse_numbers(frame, "amount", required=True)
    assert list(step.kept["amount"]) == [1234.5, 7.0]
    assert step.removed["order_id"].tolist() == ["2"]


def test_category_spellings_join_the_most_common():
    values = pd.Series(["Email", "Email", " email", "EMAIL ", "Paid  Search", "paid search", None])
    out = cleaning.canonical_spelling(values)
    assert out.tolist()[:6] == ["Email"] * 4 + ["Paid Search", "Paid Search"]
    assert pd.isna(out.iloc[6])


def test_refunds_are_netted_into_their_orders_and_cancelled_orders_removed():
    frame = _orders([["1", "a", "", "100", "x", "completed"], ["1", "a", "", "-30", "x", "refund"],
                     ["2", "b", "", "50", "x", "completed"], ["2", "b", "", "-50", "x", "cancelled"],
                     ["9", "c", "", "-5", "x", "refund"]]).assign(amount=[100.0, -30.0, 50.0, -50.0, -5.0])
    step = cleaning.net_refunds(frame, CleaningSection())
    assert step.kept.set_index("order_id")["amount"].to_dict() == {"1": 70.0, "2": 0.0}
    assert sorted(step.removed["reason"]) == ["cancellation netted into its order", "refund netted into its order",
                                              "refund with no order to net into (refund)"]
    final = cleaning.cancelled_order(step.kept)
    assert final.kept["order_id"].tolist() == ["1"] and final.removed["order_id"].tolist() == ["2"]


def test_free_orders_are_quarantined_unless_kept_but_cancelled_ones_always_go():
    frame = _orders([["1", "a", "", "0", "x", "completed"], ["2", "b", "", "50", "x", "completed"],
                     ["2", "b", "", "-50", "x", "cancelled"]]).assign(amount=[0.0, 50.0, -50.0])
    config = CFG.model_copy(update={"cleaning": CleaningSection(free_orders="keep")})
    clean, quarantine, _ = cleaning.clean_table("transactions", frame.assign(order_ts="2024-01-01"), config)
    assert clean["order_id"].tolist() == ["1"] and sorted(quarantine["order_id"]) == ["2", "2"]
    clean, quarantine, _ = cleaning.clean_table("transactions", frame.assign(order_ts="2024-01-01"), CFG)
    assert clean.empty and sorted(quarantine["order_id"]) == ["1", "2", "2"]


def test_ledger_chains_and_accounts_for_every_row():
    frame = _orders([["1", "a", "2024-01-01 10:00:00", "10", " x", "completed"], ["1", "a", "2024-01-01 10:00:00", "10", " x", "completed"],
                     ["2", "", "2024-01-02 10:00:00", "10", "x", "completed"], ["3", "b", "nope", "10", "X", "completed"],
                     ["4", "b", "2030-01-01 10:00:00", "10", "x", "completed"], ["5", "b", "2024-01-05 10:00:00", "ten", "x", "completed"]])
    clean, quarantine, ledger = cleaning.clean_table("transactions", frame, CFG)
    assert (ledger["rows_in"] == ledger["rows_out"] + ledger["rows_quarantined"]).all()
    assert (ledger["rows_in"].iloc[1:].to_numpy() == ledger["rows_out"].iloc[:-1].to_numpy()).all()
    assert len(clean) + len(quarantine) == len(frame)
    assert clean["order_id"].tolist() == ["1"] and clean["category"].tolist() == ["x"]
    counts = ledger.set_index("rule")["rows_quarantined"]
    assert counts[["exact_duplicate", "missing_customer_id", "parse_order_ts", "future_order_ts", "parse_amount"]].tolist() == [1, 1, 1, 1, 1]


_cell = st.one_of(st.just(""), st.just("  "), st.text(max_size=6), st.sampled_from(["2024-01-01 10:00:00", "05/03/2024 10:00", "2031-01-01", "-5", "12.5", "refund", "cancelled", "中文"]))


@settings(max_examples=120, deadline=None)
@given(st.lists(st.tuples(*[_cell] * 6), max_size=25))
@example([("", "", "", "", "", "")] * 3 + [("0", "0", "2024-01-01 10:00:00", "-1", "", "")])  # a refund and no sale
def test_property_rows_in_equal_rows_out_plus_quarantined(rows):
    frame = _orders([list(r) for r in rows])
    clean, quarantine, ledger = cleaning.clean_table("transactions", frame, CFG)
    assert len(clean) + len(quarantine) == len(frame)
    if len(ledger):
        assert (ledger["rows_in"] == ledger["rows_out"] + ledger["rows_quarantined"]).all()
        assert ledger["rows_in"].iloc[0] == len(frame) and ledger["rows_out"].iloc[-1] == len(clean)
    assert clean["amount"].notna().all() and (clean["amount"] > 0).all()


@settings(max_examples=40, deadline=None)
@given(st.permutations(list(range(8))))
def test_property_clean_result_does_not_depend_on_row_order(order):
    rows = [["1", "a", "2024-01-01 10:00:00", "10", "Shoes", "completed"], ["1", "a", "2024-01-01 10:00:00", "-4", "Shoes", "refund"],
            ["2", "b", "2024-02-01 10:00:00", "20", " shoes", "completed"], ["3", "b", "bad", "5", "Hats", "completed"],
            ["4", "c", "2024-03-01 10:00:00", "7", "hats", "completed"], ["5", "", "2024-03-01 10:00:00", "7", "Hats", "completed"],
            ["6", "d", "2024-03-02 10:00:00", "8", "HATS", "completed"], ["7", "d", "2024-03-03 10:00:00", "9", "Hats ", "completed"]]
    base, _, _ = cleaning.clean_table("transactions", _orders(rows), CFG)
    shuffled, _, _ = cleaning.clean_table("transactions", _orders([rows[i] for i in order]), CFG)
    key = ["order_id", "amount", "category"]
    pd.testing.assert_frame_equal(base[key].sort_values("order_id").reset_index(drop=True),
                                  shuffled[key].sort_values("order_id").reset_index(drop=True))
