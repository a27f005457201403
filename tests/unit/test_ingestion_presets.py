"""Presets for real exports: each fixture in tests/data/presets/<name>/ (see its README for where the
layout comes from) ingests with every required column mapped, with the right rows and values."""
from pathlib import Path

import pytest

from crmbook import cleaning, config, ingestion
from crmbook.config import Source

PRESETS = Path(__file__).resolve().parents[1] / "data" / "presets"


def ingest(table: str, path: Path, **options):
    return ingestion.ingest_source(table, Source(path=path, **options), path)


def test_every_preset_has_a_fixture_with_a_readme():
    for name in ingestion.PRESETS:
        folder = PRESETS / name
        assert (folder / "README.md").is_file(), name
        assert [p for p in folder.iterdir() if p.name != "README.md"], name


def test_uci_online_retail_excel_sheet():
    frame, read = ingest("transactions", PRESETS / "uci_online_retail" / "online_retail_II_sample.xlsx",
                         preset="uci_online_retail", sheet="Year 2009-2010")
    assert read.rows == 12 and read.format == "excel"
    first = frame.iloc[0]
    assert (first["order_id"], first["customer_id"], first["order_ts"]) == ("489434", "13085", "2009-12-01 07:45:00")
    assert float(first["amount"]) == pytest.approx(12 * 6.95) and first["status"] == "completed"
    cancelled = frame[frame["order_id"] == "C489449"]
    assert cancelled["status"].tolist() == ["cancelled", "cancelled"]
    assert cancelled["amount"].astype(float).tolist() == pytest.approx([-12 * 2.95, -6 * 1.65])
    assert frame["customer_id"].eq("").sum() == 2  # two lines without a customer id stay empty (02 counts them)
    assert frame["source_row"].tolist() == list(range(2, 14))


def test_cdnow_whitespace_without_header():
    frame, read = ingest("transactions", PRESETS / "cdnow" / "CDNOW_sample_head.txt", preset="cdnow")
    assert read.rows == 20 and read.delimiter == "whitespace"
    assert frame.iloc[0][["customer_id", "order_ts", "amount", "quantity"]].tolist() == ["00004", "19970101", "29.33", "2"]
    assert frame["order_id"].iloc[[0, -1]].tolist() == ["CDNOW_sample_head-1", "CDNOW_sample_head-20"]
    assert frame["source_row"].iloc[0] == 1  # no header: the first line is row 1


def test_hillstrom_members():
    frame, read = ingest("campaign_members", PRESETS / "hillstrom" / "hillstrom_head.csv", preset="hillstrom")
    assert read.rows == 20
    assert set(frame["campaign_id"]) == {"hillstrom_2008"}
    assert frame.iloc[0][["customer_id", "group", "pre_period_value", "visited"]].tolist() == [
        "hillstrom_head-1", "Womens E-Mail", "142.44", "0"]


def test_shopify_orders_line_items_fill_order_fields_and_hash_the_email(monkeypatch):
    monkeypatch.setenv("CRMBOOK_PII_SALT", "test-salt")
    path = PRESETS / "shopify_orders" / "orders_export.csv"
    frame, read = ingest("transactions", path, preset="shopify_orders")
    assert read.rows == 6 and read.file_columns == 79
    assert frame["order_id"].tolist() == ["#1001", "#1001", "#1002", "#1003", "#1004", "#1004"]
    assert frame["status"].tolist() == ["completed", "completed", "refunded", "completed", "voided", "voided"]
    assert frame["amount"].astype(float).tolist() == pytest.approx([25.0, 7.9, 39.0, 23.7, 12.5, 6.0])
    assert frame["order_ts"].iloc[0] == "2024-03-01 10:15:00" and frame["order_ts"].iloc[3] == "2024-04-10 09:05:45"
    assert frame["channel"].tolist() == ["web", "web", "web", "pos", "web", "web"]
    email = ingestion.pii_hash(ingestion.pd.Series(["ann@example.com"]), "email").iloc[0]
    assert frame["customer_id"].iloc[[0, 1, 3]].tolist() == [email] * 3  # the second line and " Ann@Example.com" too
    text = frame.to_csv()
    assert "example.com" not in text and "Ann Example" not in text and "+33" not in text


def test_zoho_crm_deals_stages():
    frame, read = ingest("transactions", PRESETS / "zoho_crm_deals" / "Deals_export.csv", preset="zoho_crm_deals")
    assert read.rows == 8
    assert frame["order_id"].iloc[0] == "5725767000000412001"
    assert frame["status"].tolist() == ["completed", "completed", "cancelled", "completed", "open", "open", "completed", "cancelled"]
    assert frame["order_ts"].iloc[1] == "2024-02-28 00:00:00" and frame["amount"].iloc[1] == "4500.5"
    assert frame["customer_id"].iloc[0] == "Northwind Traders" and frame["channel"].iloc[0] == "Web Site"
    assert "Jordan Sample" not in frame.to_csv()  # the contact's name is not mapped


@pytest.mark.parametrize("name", ["销售订单_导出.xlsx", "销售订单_导出_gbk.csv"])
def test_fxiaoke_orders_xlsx_and_gbk_csv(name):
    frame, read = ingest("transactions", PRESETS / "fxiaoke_orders" / name, preset="fxiaoke_orders")
    assert read.rows == 6
    assert read.encoding == ("binary" if name.endswith("xlsx") else "gb18030")
    assert frame["order_id"].iloc[0] == "SO20240105-0001" and frame["customer_id"].iloc[0] == "上海晨光贸易有限公司"
    assert frame["order_ts"].tolist()[:2] == ["2024-01-05 00:00:00", "2024-01-12 00:00:00"]
    assert frame["amount"].astype(float).tolist() == pytest.approx([12800, 3560.5, 980, 25600, 1499.9, 7200])
    assert frame["status"].tolist() == ["completed", "completed", "cancelled", "completed", "pending", "completed"]


def test_a_preset_fixture_goes_through_cleaning(tmp_path):
    """The canonical table a preset produces is what 02 expects: the voided order and the refunded
    order leave no purchase, the two paid orders stay."""
    params = tmp_path / "p.yaml"
    params.write_text(f"run: {{analysis_date: 2024-12-31, currency: EUR}}\ndata:\n  sources:\n    transactions:\n"
                      f"      - path: {PRESETS / 'shopify_orders' / 'orders_export.csv'}\n        preset: shopify_orders\n")
    cfg = config.load(params)
    tables, _ = ingestion.ingest(cfg)
    clean = cleaning.clean(tables, cfg).tables["transactions"]
    assert sorted(clean["order_id"].unique()) == ["#1001", "#1003"]
