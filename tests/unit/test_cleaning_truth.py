"""Ground truth: on the messy demo, cleaning quarantines exactly the defects the generator
injected (counted in truth.json), rewrites exactly the values it garbled, and nothing else."""
import json

import pandas as pd
import pytest

from crmbook import cleaning, config, ingestion, synth
from crmbook.config import CleaningSection
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
def demo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("truth")
    data = synth.generate(folder / "demo", customers=2000, seed=7, messy=True)
    return folder, data


@pytest.fixture(scope="module")
def cleaned_demo(demo):
    folder, data = demo
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


@pytest.mark.parametrize("region, status", [("CN", "normalised"), (None, "no_country_code")])
def test_phones_missing_their_country_code_are_the_ones_the_generator_wrote_dashed(demo, region, status):
    _, data = demo
    truth = json.loads((data / "truth.json").read_text())
    raw = pd.read_csv(data / "customers.csv", encoding=truth["encodings"]["customers.csv"], dtype=str, keep_default_na=False)
    out = cleaning.normalise_contacts(raw.rename(columns={"Email": "email", "Phone": "phone"}),
                                      CleaningSection(phone_region=region))
    dashed = truth["defects"]["customers"]["phone_dashed_format"]
    assert 0 < dashed < len(raw)
    assert out["phone_status"].value_counts().to_dict() == {status: dashed, "kept": len(raw) - dashed}
    assert (out["email_status"] == "kept").all()  # the generator writes every e-mail in normal form


def test_demo_customers_share_no_email_so_nothing_is_merged_on_it(cleaned_demo):
    cleaned, truth = cleaned_demo
    id_map = cleaned.id_map
    assert len(id_map) == len(cleaned.tables["customers"]) == len(truth["customer_segment"])
    assert not id_map["matched_on"].str.contains("email").any()  # the generator makes every e-mail unique
