"""Ground truth: on the messy demo, cleaning quarantines exactly the defects the generator
injected (counted in truth.json), rewrites exactly the values it garbled, and nothing else."""
import json

import pandas as pd
import pytest

from crmbook import cleaning, config, ingestion, synth
from tests.conftest import write_params

# truth.json key -> (table, rule, what is compared, how the quarantine reason starts)
REMOVED = {
    "exact_duplicate": ("exact_duplicate", None),
    "missing_customer_id": ("missing_customer_id", None),
    "unparseable_order_ts": ("parse_order_ts", None),
    "future_order_ts": ("future_order_ts", None),
    "refund_netted": ("net_refunds", "refund netted"),
    "cancellation_netted": ("net_refunds", "cancellation netted"),
    "cancelled_order": ("cancelled_order", None),
}


@pytest.fixture(scope="module")
def cleaned_demo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("truth")
    data = synth.generate(folder / "demo", customers=2000, seed=7, messy=True)
    cfg = config.load(write_params(folder, data))
    tables, _ = ingestion.ingest(cfg)
    return cleaning.clean(tables, cfg), json.loads((data / "truth.json").read_text())


@pytest.mark.parametrize("key", sorted(REMOVED))
def test_each_injected_transaction_defect_is_quarantined_exactly(cleaned_demo, key):
    cleaned, truth = cleaned_demo
    rule, reason = REMOVED[key]
    quarantine = cleaned.quarantine["transactions"]
    rows = quarantine[quarantine["rule"] == rule]
    if reason:
        rows = rows[rows["reason"].str.startswith(reason)]
    assert truth["defects"]["transactions"][key] > 0
    assert len(rows) == truth["defects"]["transactions"][key]


def test_nothing_else_is_quarantined(cleaned_demo):
    cleaned, truth = cleaned_demo
    injected = sum(truth["defects"]["transactions"].values())
    assert len(cleaned.quarantine["transactions"]) == injected
    for table, quarantine in cleaned.quarantine.items():
        if table != "transactions":
            assert len(quarantine) == 0, (table, quarantine["rule"].value_counts().to_dict())
    assert len(cleaned.tables["transactions"]) == truth["genuine_orders"]


@pytest.mark.parametrize("key, table, rule", [
    ("mixed_date_format", "transactions", "parse_order_ts"),
    ("category_whitespace_case", "transactions", "normalise_categories"),
    ("touch_channel_whitespace_case", "touchpoints", "normalise_categories"),
])
def test_garbled_values_are_rewritten_exactly(cleaned_demo, key, table, rule):
    cleaned, truth = cleaned_demo
    ledger = cleaned.quality.set_index(["table", "rule"])
    assert ledger.loc[(table, rule), "rows_changed"] == truth["defects"]["normalised"][key] > 0


def test_clean_orders_match_the_genuine_orders(cleaned_demo):
    cleaned, truth = cleaned_demo
    orders = cleaned.tables["transactions"]
    assert orders["order_id"].is_unique
    assert orders["category"].nunique() == orders["category"].str.strip().str.casefold().nunique()
    assert orders["order_ts"].max() <= pd.Timestamp(truth["end"]) + pd.Timedelta(days=1)
