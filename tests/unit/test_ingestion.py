"""Readers: encodings, delimiters, mappings, and the errors a user can meet."""
import hashlib

import pandas as pd
import pytest

from crmbook import ingestion
from crmbook.config import Source
from crmbook.errors import InputError

ROWS = "CustID,Name,Region\nC1,王伟,华东\nC2,李娜,华北\nC3,Emma Clarke,西南\n" * 20


@pytest.mark.parametrize("encoding, expected", [("utf-8", "utf-8"), ("utf-8-sig", "utf-8-sig"), ("gbk", "gb18030"), ("gb18030", "gb18030")])
def test_encoding_detection(tmp_path, encoding, expected):
    path = tmp_path / "c.csv"
    path.write_bytes(ROWS.encode(encoding))
    assert ingestion.detect_encoding(path) == expected
    frame, _, _ = ingestion.read_source(path, Source(path=path))
    assert frame["Region"].iloc[0] == "华东" and list(frame.columns) == ["CustID", "Name", "Region"]


@pytest.mark.parametrize("sep", [",", ";", "\t", "|"])
def test_delimiter_detection(tmp_path, sep):
    path = tmp_path / "d.csv"
    path.write_text(f"a{sep}b{sep}c\n1{sep}2{sep}3\n4{sep}5{sep}6\n")
    frame, _, delimiter = ingestion.read_source(path, Source(path=path))
    assert delimiter == sep and frame.shape == (2, 3)


def test_values_stay_text(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("order_id,customer_id,order_ts,amount\n007,0012,2024-01-01,1.50\n")
    frame, _, _ = ingestion.read_source(path, Source(path=path))
    assert frame.iloc[0].tolist() == ["007", "0012", "2024-01-01", "1.50"]


def test_unmapped_required_column_names_file_and_column(tmp_path):
    path = tmp_path / "o.csv"
    path.write_text("OrderNo,CustID,OrderDate\n1,a,2024-01-01\n")
    source = Source(path=path, columns={"order_id": "OrderNo", "customer_id": "CustID", "order_ts": "OrderDate"})
    with pytest.raises(InputError, match=r"o\.csv, column 'amount': the transactions table needs column 'amount'"):
        ingestion.ingest_source("transactions", source, path)


def test_mapping_to_a_column_not_in_the_header(tmp_path):
    path = tmp_path / "o.csv"
    path.write_text("OrderNo,CustID,OrderDate,Total\n1,a,2024-01-01,3\n")
    source = Source(path=path, columns={"order_id": "OrderNo", "customer_id": "CustomerID", "order_ts": "OrderDate", "amount": "Total"})
    with pytest.raises(InputError, match=r"column 'CustomerID', row 1: params map 'customer_id' to 'CustomerID'"):
        ingestion.ingest_source("transactions", source, path)


def test_duplicate_header_and_empty_file(tmp_path):
    dup = tmp_path / "dup.csv"
    dup.write_text("a,b,a\n1,2,3\n")
    with pytest.raises(InputError, match="repeats a column name"):
        ingestion.read_source(dup, Source(path=dup))
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(InputError, match="empty"):
        ingestion.read_source(empty, Source(path=empty))


def test_malformed_csv_names_the_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("a,b\n1,2\n3,4,5,6\n")
    with pytest.raises(InputError, match=r"bad\.csv, column 'b', row 3: malformed CSV: this row has more fields than the header's 2"):
        ingestion.read_source(path, Source(path=path, delimiter=","))


def test_pii_is_hashed_and_names_dropped(tmp_path, monkeypatch):
    monkeypatch.setenv("CRMBOOK_PII_SALT", "s")
    path = tmp_path / "c.csv"
    path.write_text("customer_id,name,email,phone\nC1,Ann Lee, Ann@Example.com ,+86 138-0013-8000\n")
    frame, read = ingestion.ingest_source("customers", Source(path=path), path)
    assert "name" not in frame and "email" not in frame and "phone" not in frame
    assert frame["email_hash"].iloc[0] == hashlib.sha256(b"s|ann@example.com").hexdigest()[:16]
    assert frame["phone_hash"].iloc[0] == hashlib.sha256(b"s|8613800138000").hexdigest()[:16]
    assert frame["source_row"].tolist() == [2] and read.rows == 1


def test_several_sources_are_unioned_with_their_source(tmp_path):
    from crmbook.config import Config

    for name in ("jan.csv", "feb.csv"):
        (tmp_path / name).write_text("order_id,customer_id,order_ts,amount\n1,a,2024-01-01,3\n")
    params = tmp_path / "p.yaml"
    params.write_text("data:\n  sources:\n    transactions:\n      - path: jan.csv\n      - path: feb.csv\n")
    from crmbook import config

    tables, reads = ingestion.ingest(config.load(params))
    assert tables["transactions"]["source"].tolist() == ["jan.csv", "feb.csv"]
    assert reads["rows"].tolist() == [1, 1]


def test_constants_and_row_ids_fill_columns_a_file_lacks(tmp_path):
    path = tmp_path / "members.csv"
    path.write_text("segment,visit\nMens E-Mail,1\nNo E-Mail,0\n")
    source = Source(path=path, columns={"group": "segment", "visited": "visit"}, constants={"campaign_id": "hillstrom"},
                    row_id="customer_id")
    frame, _ = ingestion.ingest_source("campaign_members", source, path)
    assert frame["campaign_id"].tolist() == ["hillstrom", "hillstrom"]
    assert frame["customer_id"].tolist() == ["members-1", "members-2"]
    assert frame["visited"].tolist() == ["1", "0"]


def test_two_runs_making_the_demo_at_once_both_get_a_complete_demo(tmp_path):
    """The demo is made in a temporary folder and renamed into place: the slower of two runs
    starting together drops its copy and reads the first one's (never a half-written folder)."""
    from concurrent.futures import ThreadPoolExecutor

    from crmbook import config

    (tmp_path / "p.yaml").write_text("data:\n  demo:\n    dir: raw/demo\n    customers: 60\n")
    cfg = config.load(tmp_path / "p.yaml")
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda _: ingestion.ensure_demo(cfg), range(2)))
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["demo"]  # no temporary folder left
    assert (tmp_path / "raw" / "demo" / "truth.json").is_file()
    (tmp_path / "raw" / "demo" / "truth.json").unlink()
    with pytest.raises(InputError, match="holds no complete demo"):
        ingestion.ensure_demo(cfg)
