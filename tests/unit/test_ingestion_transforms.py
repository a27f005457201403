"""Value transforms in params (dates, decimal commas, cents, signs, codes, constants), the readers of
typed files, unions of several sources, and the DuckDB path that keeps rows out of pandas."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from crmbook import config, ingestion
from crmbook.config import Source
from crmbook.errors import ConfigError, InputError

HEADER = "OrderNo;Cust;Date;Amount;Type;Code\n"


def ingest(tmp_path, body: str, name: str = "o.csv", table: str = "transactions", **options) -> pd.DataFrame:
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    columns = {"order_id": "OrderNo", "customer_id": "Cust", "order_ts": "Date", "amount": "Amount", "status": "Code"}
    return ingestion.ingest_source(table, Source(path=path, columns=options.pop("columns", columns), **options), path)[0]


def test_decimal_comma_signs_and_currency_marks(tmp_path):
    body = HEADER + "".join(f"{i};c;05.01.2024;{v};Sale;1\n" for i, v in
                            enumerate(["1.234,56", "(12,50)", "12,50-", "€ 7,00", "-3", "1 000,5", "twelve", ""]))
    frame = ingest(tmp_path, body, transforms={"amount": {"decimal": ","}})
    assert frame["amount"].tolist() == ["1234.56", "-12.5", "-12.5", "7.0", "-3.0", "1000.5", "twelve", ""]


def test_decimal_point_with_thousands_commas(tmp_path):
    body = HEADER + "1;c;05.01.2024;\"1,234.56\";Sale;1\n2;c;05.01.2024;$12.00;Sale;1\n"
    frame = ingest(tmp_path, body.replace(";", ","), transforms={"amount": {"decimal": "."}})
    assert frame["amount"].tolist() == ["1234.56", "12.0"]


def test_cents_negate_and_negate_when(tmp_path):
    body = HEADER + "1;c;05.01.2024;1999;Sale;1\n2;c;05.01.2024;500;refund;1\n3;c;05.01.2024;250;Refund ;1\n"
    frame = ingest(tmp_path, body, transforms={"amount": {"cents": True, "negate_when": {"Type": ["Refund"]}}})
    assert frame["amount"].astype(float).tolist() == [19.99, -5.0, -2.5]
    flipped = ingest(tmp_path, body, name="n.csv", transforms={"amount": {"negate": True}})
    assert flipped["amount"].astype(float).tolist() == [-1999.0, -500.0, -250.0]


def test_multiply_by_another_column(tmp_path):
    body = "OrderNo;Cust;Date;Qty;Price;Code\n1;c;2024-01-05;6;2,55;1\n2;c;2024-01-05;-2;1,5;1\n"
    frame = ingest(tmp_path, body, columns={"order_id": "OrderNo", "customer_id": "Cust", "order_ts": "Date", "amount": "Qty",
                                            "quantity": "Qty"}, transforms={"amount": {"multiply_by": "Price", "decimal": ","}})
    assert frame["amount"].tolist() == ["15.3", "-3.0"] and frame["quantity"].tolist() == ["6", "-2"]


def test_date_formats_are_rewritten_and_unparseable_dates_kept_for_cleaning(tmp_path):
    body = HEADER + "1;c;05.01.2024 10:30;1;Sale;1\n2;c;2024年3月7日;1;Sale;1\n3;c;someday;1;Sale;1\n4;c;;1;Sale;1\n"
    frame = ingest(tmp_path, body, transforms={"order_ts": {"date_format": ["%d.%m.%Y %H:%M", "%Y年%m月%d日"]}})
    assert frame["order_ts"].tolist() == ["2024-01-05 10:30:00", "2024-03-07 00:00:00", "someday", ""]


def test_status_codes_patterns_default_and_replace(tmp_path):
    body = HEADER + "".join(f"{i};c;2024-01-05;1;Sale;{code}\n" for i, code in enumerate(["1", "9", "R-7", "x", ""]))
    frame = ingest(tmp_path, body, transforms={"status": {"values": {"1": "completed", "9": "cancelled"},
                                                          "patterns": {"^R-": "refunded"}, "default": "other"},
                                               "order_id": {"replace": {"^": "SO-"}}})
    assert frame["status"].tolist() == ["completed", "cancelled", "refunded", "other", ""]
    assert frame["order_id"].tolist() == ["SO-0", "SO-1", "SO-2", "SO-3", "SO-4"]


def test_constants_and_pseudonymised_ids(tmp_path, monkeypatch):
    monkeypatch.setenv("CRMBOOK_PII_SALT", "s")
    body = HEADER + "1;Ann@Example.com ;2024-01-05;1;Sale;1\n"
    frame = ingest(tmp_path, body, constants={"channel": "store"}, transforms={"customer_id": {"pseudonymise": "email"}})
    assert frame["channel"].tolist() == ["store"]
    assert frame["customer_id"].tolist() == ingestion.pii_hash(pd.Series(["ann@example.com"]), "email").tolist()


def test_transform_errors_name_the_file_and_column(tmp_path):
    body = HEADER + "1;c;2024-01-05;1;Sale;1\n"
    with pytest.raises(InputError, match=r"o\.csv, column 'Price', row 1: transforms\.amount uses column 'Price'"):
        ingest(tmp_path, body, transforms={"amount": {"multiply_by": "Price"}})
    with pytest.raises(InputError, match=r"unknown canonical column\(s\) \['colour'\]"):
        ingest(tmp_path, body, transforms={"colour": {"values": {"r": "red"}}})


def test_params_check_encodings_and_regular_expressions(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("data:\n  sources:\n    transactions:\n      - path: o.csv\n        encoding: klingon\n")
    with pytest.raises(ConfigError, match=r"data\.sources\.transactions\[0\]\.encoding: .*not a known encoding"):
        config.load(params)
    params.write_text("data:\n  sources:\n    transactions:\n      - path: o.csv\n        transforms: {status: {patterns: {'(': x}}}\n")
    with pytest.raises(ConfigError, match=r"transforms\.status\.patterns: .*not a regular expression"):
        config.load(params)


def test_forced_and_detected_single_byte_encodings(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes(("customer_id;city\n" + "".join(f"C{i};Montréal\n" for i in range(30))).encode("latin-1"))
    forced, read = ingestion.ingest_source("customers", Source(path=path, encoding="latin-1"), path)
    assert forced["city"].iloc[0] == "Montréal" and read.encoding == "latin-1" and read.delimiter == ";"
    detected, read = ingestion.ingest_source("customers", Source(path=path), path)
    assert detected["city"].iloc[0] == "Montréal" and read.encoding not in ("utf-8", "utf-8-sig")


def test_tsv_and_excel_sheet_by_position(tmp_path):
    import openpyxl

    tsv = tmp_path / "c.tsv"
    tsv.write_text("customer_id\tregion\nC1\t华东\n")
    assert ingestion.ingest_source("customers", Source(path=tsv), tsv)[1].delimiter == "tab"
    book = tmp_path / "c.xlsx"
    workbook = openpyxl.Workbook()
    workbook.active.append(["ignore"])
    sheet = workbook.create_sheet("Customers")
    sheet.append(["customer_id", "age"])
    sheet.append([1001, 34.0])
    workbook.save(book)
    frame, read = ingestion.ingest_source("customers", Source(path=book, sheet=1), book)
    assert frame[["customer_id", "age", "source_row"]].values.tolist() == [["1001", "34", 2]] and read.format == "excel"


def test_typed_parquet_and_json_lines_become_canonical_text(tmp_path):
    typed = pd.DataFrame({"customer_id": [13085.0, None], "signup_ts": pd.to_datetime(["2024-01-05 10:00:00", "2024-02-01 00:00:00"]),
                          "age": pd.array([34, None], dtype="Int64"), "vip": [True, False]})
    typed.to_parquet(tmp_path / "c.parquet")
    frame, _ = ingestion.ingest_source("customers", Source(path=tmp_path / "c.parquet"), tmp_path / "c.parquet")
    assert frame[["customer_id", "signup_ts", "age"]].values.tolist() == [["13085", "2024-01-05 10:00:00", "34"],
                                                                         ["", "2024-02-01 00:00:00", ""]]
    assert frame["source_row"].tolist() == [2, 3]
    lines = tmp_path / "m.jsonl"
    lines.write_text("\n".join(json.dumps(r) for r in [{"campaign_id": 7, "customer_id": "a", "group": "B", "opened": True},
                                                        {"campaign_id": 7, "customer_id": "b", "group": "A", "revenue": 12.50}]))
    members, read = ingestion.ingest_source("campaign_members", Source(path=lines), lines)
    assert members[["campaign_id", "customer_id", "group", "opened", "revenue"]].values.tolist() == [
        ["7", "a", "B", "true", ""], ["7", "b", "A", "", "12.5"]]
    assert read.format == "jsonl"


def test_monthly_files_and_a_store_file_are_unioned_with_their_source(tmp_path):
    for month in ("2024-01", "2024-02"):
        (tmp_path / f"online_{month}.csv").write_text(
            f"OrderNo,Cust,Date,Total,Channel\n{month}-1,a,{month}-05,10,web\n{month}-2,b,{month}-06,12,app\n")
    (tmp_path / "store.csv").write_text("order_id,customer_id,order_ts,amount\nS1,a,2024-01-09,30\n")
    online = "columns: {order_id: OrderNo, customer_id: Cust, order_ts: Date, amount: Total, channel: Channel}"
    params = tmp_path / "p.yaml"
    params.write_text("data:\n  sources:\n    transactions:\n"
                      f"      - path: online_2024-01.csv\n        {online}\n"
                      f"      - path: online_2024-02.csv\n        {online}\n"
                      "      - path: store.csv\n        constants: {channel: store}\n")
    tables, reads = ingestion.ingest(config.load(params))
    orders = tables["transactions"]
    assert orders["source"].tolist() == ["online_2024-01.csv"] * 2 + ["online_2024-02.csv"] * 2 + ["store.csv"]
    assert orders["source_row"].tolist() == [2, 3, 2, 3, 2]
    assert orders["channel"].tolist() == ["web", "app", "web", "app", "store"]
    assert reads["rows"].tolist() == [2, 2, 1] and list(orders.columns)[-2:] == ["source", "source_row"]


def test_the_same_inputs_give_identical_bytes(tmp_path):
    (tmp_path / "o.csv").write_text("order_id,customer_id,order_ts,amount,channel\n" +
                                    "".join(f"{i},c{i % 7},2024-01-{1 + i % 28:02d},{i}.5,web\n" for i in range(3000)))
    params = tmp_path / "p.yaml"
    params.write_text("data:\n  sources:\n    transactions:\n      - path: o.csv\n      - path: o.csv\n")
    cfg = config.load(params)
    ingestion.ingest_to(cfg, tmp_path / "a")
    ingestion.ingest_to(cfg, tmp_path / "b")
    assert (tmp_path / "a" / "canonical_transactions.parquet").read_bytes() == (tmp_path / "b" / "canonical_transactions.parquet").read_bytes()


def test_csv_and_parquet_rows_never_pass_through_pandas(tmp_path, monkeypatch):
    (tmp_path / "o.csv").write_text("order_id,customer_id,order_ts,amount\n1,a,2024-01-05,3\n2,b,2024-01-06,4\n")
    pd.DataFrame({"order_id": ["3"], "customer_id": ["c"], "order_ts": ["2024-01-07"], "amount": [5.0]}).to_parquet(tmp_path / "o.parquet")
    params = tmp_path / "p.yaml"
    params.write_text("data:\n  sources:\n    transactions:\n      - path: o.csv\n      - path: o.parquet\n")

    def refuse(*args, **kwargs):
        raise AssertionError("rows went through pandas")

    for name in ("read_csv", "read_parquet", "read_json", "read_excel"):
        monkeypatch.setattr(pd, name, refuse)
    monkeypatch.setattr(pd.DataFrame, "to_parquet", refuse)
    reads = ingestion.ingest_to(config.load(params), tmp_path / "out")
    assert reads["rows"].tolist() == [2, 1]


def test_contacts_are_normalised_then_hashed_with_their_status(tmp_path, monkeypatch):
    monkeypatch.setenv("CRMBOOK_PII_SALT", "s")
    path = tmp_path / "c.csv"
    path.write_text("customer_id,name,email\nC1,Ann, MAILTO:Ann@Example.com \nC2,Bo,not-an-email\nC3,Cy,\n")
    frame, _ = ingestion.ingest_source("customers", Source(path=path), path)
    assert "name" not in frame and "email" not in frame
    assert frame["email_hash"].tolist() == [ingestion.pii_hash(pd.Series(["ann@example.com"]), "email").iloc[0], "", ""]
    assert frame["email_status"].tolist() == ["normalised", "invalid", ""]
    assert "Ann" not in frame.to_csv()


def test_large_file_not_utf8_after_its_first_megabyte_is_detected_again(tmp_path, monkeypatch):
    """Above FULL_CHECK_BYTES only the first megabyte is decoded in Python; a Latin-1 byte later on
    makes DuckDB stop, and the file is then read in the encoding detected from all of it."""
    monkeypatch.setattr(ingestion, "FULL_CHECK_BYTES", 1000)
    ascii_rows = "".join(f"C{i};Paris\n" for i in range(120_000))  # > 1 MB of ASCII before the first é
    path = tmp_path / "late_latin.csv"
    path.write_bytes(("customer_id;city\n" + ascii_rows + "C-last;Montréal\n").encode("latin-1"))
    assert ingestion.detect_encoding_fast(path) == ("utf-8", True)
    frame, read = ingestion.ingest_source("customers", Source(path=path), path)
    assert len(frame) == 120_001 and frame["city"].iloc[-1] == "Montréal"
    assert read.encoding not in ("utf-8", "utf-8-sig")
    utf8 = tmp_path / "utf8.csv"
    utf8.write_text("customer_id;city\n" + ascii_rows + "C-last;Montréal\n", encoding="utf-8")
    frame, read = ingestion.ingest_source("customers", Source(path=utf8), utf8)
    assert frame["city"].iloc[-1] == "Montréal" and read.encoding == "utf-8"


def test_bad_row_after_the_first_batch_is_a_one_line_error(tmp_path):
    """DuckDB's errors in a later batch reach the writer through pyarrow (as OSError): still an
    InputError naming the file and the row, never a traceback."""
    rows = ingestion.BATCH_ROWS + 5_000
    path = tmp_path / "long.csv"
    path.write_text("customer_id,city\n" + "".join(f"C{i},Paris\n" for i in range(rows)) + "C-last,Paris,extra\n")
    with pytest.raises(InputError, match=rf"long\.csv, column 'city', row {rows + 2}: malformed CSV"):
        ingestion.ingest_source("customers", Source(path=path), path)
