"""A table too large for memory is cleaned in parts on disk (`cleaning.clean_in_parts`). The
reference is the same rules run on the whole table in memory (`cleaning.clean`): every output of
the parts (clean rows, quarantine, ledger, report numbers) must be equal to it, on the messy demo
(every injected defect) and on UCI Online Retail II (real cancellations, missing customers,
duplicates, countries)."""
import shutil

import numpy as np
import pandas as pd
import pytest

from crmbook import cleaning, config, ingestion, store, synth
from tests.conftest import ROOT, write_params


def _in_parts(cfg: config.Config, rows: int) -> config.Config:
    return cfg.model_copy(update={"cleaning": cfg.cleaning.model_copy(update={"part_rows": rows})})


def _both(cfg: config.Config, folder, rows: int) -> tuple:
    """Ingest once; clean the copy `whole/` in memory and the copy `parts/` in parts of `rows`."""
    ingestion.canonical_paths(cfg, folder / "run")
    runs = {}
    for name in ("whole", "parts"):
        shutil.copytree(folder / "run", folder / name)
        runs[name] = folder / name
    whole = cleaning.clean(ingestion.load_canonical(cfg, runs["whole"]), cfg)
    cleaning.save(runs["whole"], whole)
    parts = cleaning.clean_run(_in_parts(cfg, rows), runs["parts"])
    cleaning.save(runs["parts"], parts)
    return whole, parts, runs


def _text(frame: pd.DataFrame) -> pd.DataFrame:
    """Quarantined rows are text; an empty cell is None whichever writer wrote it."""
    return frame.astype("object").where(frame.notna(), None).reset_index(drop=True)


def _assert_same(cfg: config.Config, whole: cleaning.Cleaned, parts: cleaning.Cleaned, runs: dict, large: list[str]) -> None:
    assert sorted(parts.on_disk) == large
    pd.testing.assert_frame_equal(parts.quality, whole.quality)
    for table, _ in cfg.data.sources.items():
        pd.testing.assert_frame_equal(store.read_table(runs["parts"], f"clean_{table}"),
                                      store.read_table(runs["whole"], f"clean_{table}"), check_dtype=False)
        pd.testing.assert_frame_equal(_text(store.read_table(runs["parts"], f"quarantine/{table}")),
                                      _text(store.read_table(runs["whole"], f"quarantine/{table}")))
    pd.testing.assert_frame_equal(cleaning.reason_counts(parts), cleaning.reason_counts(whole), check_dtype=False)
    assert cleaning.cancellation_counts(parts) == cleaning.cancellation_counts(whole)
    samples = cleaning.quarantine_samples(parts)
    assert list(samples) == list(cleaning.quarantine_samples(whole))
    for table, sample in cleaning.quarantine_samples(whole).items():
        pd.testing.assert_frame_equal(_text(samples[table]), _text(sample))
    assert parts.details == whole.details
    facts, expected = dict(parts.orders), dict(whole.orders)
    pd.testing.assert_frame_equal(facts.pop("monthly"), expected.pop("monthly"), check_exact=False)
    assert facts.pop("revenue") == pytest.approx(expected.pop("revenue"), rel=1e-12)
    assert facts == expected


def test_the_messy_demo_cleaned_in_parts_equals_the_whole_table(tmp_path):
    data = synth.generate(tmp_path / "demo", customers=1500, seed=3, messy=True)
    cfg = config.load(write_params(tmp_path, data))
    whole, parts, runs = _both(cfg, tmp_path, rows=1000)
    _assert_same(cfg, whole, parts, runs, ["campaign_members", "touchpoints", "transactions"])
    ledger = parts.quality.set_index(["table", "rule"])
    assert ledger.loc[("transactions", "exact_duplicate"), "rows_quarantined"] > 0  # the defects were there to find
    assert ledger.loc[("transactions", "parse_order_ts"), "rows_changed"] > 0
    assert ledger.loc[("transactions", "net_refunds"), "rows_quarantined"] > 0


def test_online_retail_cleaned_in_parts_equals_the_whole_table(tmp_path):
    """Real data: cancellations matched to the customer's earlier sales of the product, which needs
    every line of a customer in one part."""
    cfg = config.load(ROOT / "params" / "examples" / "online_retail.yaml")
    whole, parts, runs = _both(cfg, tmp_path, rows=100_000)
    _assert_same(cfg, whole, parts, runs, ["transactions"])
    assert cleaning.cancellation_counts(parts)["matched"] > 1000


def test_date_formats_are_counted_against_the_whole_table():
    """A part whose own majority format differs from the table's still counts the table's minority."""
    text = np.full(3000, "2024-01-02 10:00:00", dtype=object)
    text[:700] = text[2000:2300] = "02/01/2024 10:00"  # 1,000 rows in the minority format, 700 of them in part 1
    frame = pd.DataFrame({"order_ts": text})
    formats = cleaning.CleaningSection().date_formats
    tally: dict = {}
    pieces = [cleaning.parse_dates(frame.iloc[a:b], "order_ts", formats, True, "timestamp", tally) for a, b in ((0, 1000), (1000, 3000))]
    whole = cleaning.parse_dates(frame, "order_ts", formats, True, "timestamp")
    assert sum(p.changed for p in pieces) != whole.changed  # counting per part would be wrong
    assert cleaning.changed_in_parts(tally) == whole.changed == 1000


def test_an_order_naming_two_customers_stays_in_one_part(tmp_path):
    """Lines of one order under two customer ids (a data error) are cleaned together: the refund on
    such an order is netted into all of its lines, as in the one-piece cleaning."""
    data = synth.generate(tmp_path / "demo", customers=600, seed=5, messy=False)
    cfg = config.load(write_params(tmp_path, data))
    path = ingestion.canonical_paths(cfg, tmp_path / "run")["transactions"]
    orders = pd.read_parquet(path)
    first = orders.drop_duplicates("order_id").head(60)
    other = first["customer_id"].iloc[::-1].to_numpy()  # another customer's id on a second line of each order
    extra = first.assign(customer_id=other, source_row=first["source_row"] + 10**6)
    refund = first.assign(amount="-" + first["amount"].astype("str"), status="refunded", source_row=first["source_row"] + 2 * 10**6)
    pd.concat([orders, extra, refund], ignore_index=True).to_parquet(path, index=False)
    whole, parts, runs = _both(cfg, tmp_path, rows=1000)
    _assert_same(cfg, whole, parts, runs, ["touchpoints", "transactions"])
    assert parts.quality.set_index(["table", "rule"]).loc[("transactions", "net_refunds"), "rows_changed"] > 100
