"""SQL sources: the same orders read from a CSV file, a SQLite file and a real PostgreSQL server
(started here from the machine's binaries) give identical canonical and clean tables; the database
password comes from an environment variable and never reaches a file of the run."""
from __future__ import annotations

import contextlib
import csv
import glob
import os
import pwd
import secrets
import shutil
import socket
import sqlite3
import subprocess
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from crmbook import cleaning, config, ingestion
from crmbook.errors import ConfigError, InputError

#: order_id, customer_id (None: missing), order_ts, amount, quantity, channel, status
ORDERS = [
    ("A-1", 1001, "2024-01-05 10:00:00", 19.5, 1, "online", "completed"),
    ("A-2", 1002, "2024-01-06 11:30:00", 120.0, 3, "门店", "completed"),
    ("A-3", None, "2024-01-07 09:15:00", 8.25, 1, "online", "completed"),
    ("A-4", 1001, "2024-02-10 16:45:00", 42.0, 2, "app", "completed"),
    ("A-4", 1001, "2024-02-12 10:00:00", -42.0, -2, "app", "refund"),
    ("A-5", 1003, "2024-03-01 08:00:00", 5.75, 1, "门店", "completed"),
    ("A-6", 1004, "2099-01-01 00:00:00", 10.0, 1, "online", "completed"),
]
COLUMNS = ["order_id", "customer_id", "order_ts", "amount", "quantity", "channel", "status"]
PASSWORD_ENV = "CRMBOOK_TEST_PG_PASSWORD"


def _text(value) -> str:
    return "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def write_csv(path: Path) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerows([[_text(v) for v in row] for row in ORDERS])
    return path


def write_sqlite(path: Path) -> Path:
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE orders (order_id TEXT, customer_id INTEGER, order_ts TEXT, amount REAL, quantity INTEGER, "
                   "channel TEXT, status TEXT)")
        db.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?, ?)", ORDERS)
        db.commit()
    return path


def _pg_binary(name: str) -> str | None:
    found = shutil.which(name) or (sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [None])[-1]
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL server on 127.0.0.1 with a password-protected user `crm` and a
    table `orders` holding ORDERS (typed: BIGINT, TIMESTAMP, NUMERIC). Stopped at the end."""
    initdb, pg_ctl = _pg_binary("initdb"), _pg_binary("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) on this machine: install Debian's postgresql package")
    folder = Path(tempfile.mkdtemp(prefix="crmbook-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: run it as the postgres user
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no postgres user to start PostgreSQL as")
        os.chown(folder, account.pw_uid, account.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    password = secrets.token_urlsafe(18)
    pwfile = folder / "pwfile"
    pwfile.write_text(password + "\n")
    if as_user:
        os.chown(pwfile, pwd.getpwnam("postgres").pw_uid, -1)
    data, port = folder / "data", _free_port()

    def run(*command: str) -> None:
        subprocess.run([*as_user, *command], check=True, capture_output=True, timeout=120)

    run(initdb, "-D", str(data), "-U", "crm", f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8", "--locale=C")
    pwfile.unlink()
    run(pg_ctl, "-D", str(data), "-l", str(folder / "server.log"), "-w", "-t", "60", "-o",
        f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    try:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=port, user="crm", password=password, dbname="postgres") as db:
            db.execute("CREATE TABLE orders (order_id TEXT, customer_id BIGINT, order_ts TIMESTAMP, amount NUMERIC(12, 2), "
                       "quantity INTEGER, channel TEXT, status TEXT)")
            with db.cursor() as cursor:
                cursor.executemany("INSERT INTO orders VALUES (%s, %s, %s, %s, %s, %s, %s)", ORDERS)
        yield {"url": f"postgresql+psycopg://crm@127.0.0.1:{port}/postgres", "password": password, "port": port}
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


def params(folder: Path, source: str, name: str = "params.yaml") -> Path:
    path = folder / name
    path.write_text("run: {analysis_date: 2024-12-31}\ndata:\n  sources:\n    transactions:\n" + source, encoding="utf-8")
    return path


def sql_source(url: str, table: str | None = "orders", query: str | None = None, password_env: str | None = None) -> str:
    lines = ["      - sql:", f"          url: {url}"]
    lines += [f"          table: {table}"] if table else [f'          query: "{query}"']
    lines += [f"          password_env: {password_env}"] if password_env else []
    return "\n".join(lines) + "\n"


def canonical_and_clean(params_path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    cfg = config.load(params_path)
    ingestion.check_sources(cfg)
    tables, _ = ingestion.ingest(cfg)
    clean = cleaning.clean(tables, cfg).tables["transactions"]
    return tables["transactions"].drop(columns="source"), clean.drop(columns="source")


def test_csv_sqlite_and_postgres_give_identical_tables(tmp_path, postgres, monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, postgres["password"])
    csv_params = params(tmp_path, f"      - path: {write_csv(tmp_path / 'orders.csv')}\n", "csv.yaml")
    sqlite_params = params(tmp_path, sql_source(f"sqlite:///{write_sqlite(tmp_path / 'shop.db')}"), "sqlite.yaml")
    pg_params = params(tmp_path, sql_source(postgres["url"], password_env=PASSWORD_ENV), "pg.yaml")
    from_csv, from_sqlite, from_pg = (canonical_and_clean(p) for p in (csv_params, sqlite_params, pg_params))
    assert len(from_csv[0]) == len(ORDERS)
    assert from_csv[0]["customer_id"].tolist()[:3] == ["1001", "1002", ""]  # no float ids from a nullable integer column
    assert from_csv[0]["amount"].tolist()[:3] == ["19.5", "120", "8.25"]
    for other in (from_sqlite, from_pg):
        pd.testing.assert_frame_equal(from_csv[0], other[0])
        pd.testing.assert_frame_equal(from_csv[1], other[1])
    assert len(from_csv[1]) < len(ORDERS)  # cleaning acted (missing id, refund, future date) the same way on all three


def test_a_read_only_query_and_a_relative_sqlite_path(tmp_path):
    write_sqlite(tmp_path / "shop.db")
    cfg = config.load(params(tmp_path, sql_source("sqlite:///shop.db", table=None,
                                                  query="SELECT order_id, customer_id, order_ts, amount FROM orders WHERE amount > 0")))
    tables, reads = ingestion.ingest(cfg)
    assert reads["rows"].tolist() == [6] and reads["source"].tolist() == ["sql:query"]
    assert tables["transactions"]["source_row"].tolist() == list(range(2, 8))


def test_a_writing_query_is_refused_by_the_database(tmp_path, postgres, monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, postgres["password"])
    query = "WITH gone AS (DELETE FROM orders RETURNING *) SELECT * FROM gone"
    cfg = config.load(params(tmp_path, sql_source(postgres["url"], table=None, query=query, password_env=PASSWORD_ENV)))
    with pytest.raises(InputError, match=r"sql:query: database error: .*read-only transaction"):
        ingestion.ingest(cfg)
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=postgres["port"], user="crm", password=postgres["password"], dbname="postgres") as db:
        assert db.execute("SELECT count(*) FROM orders").fetchone()[0] == len(ORDERS)


def test_params_refuse_a_write_statement_and_a_password_in_the_url(tmp_path):
    with pytest.raises(ConfigError, match=r"sql\.query: .*starts with SELECT or WITH"):
        config.load(params(tmp_path, sql_source("sqlite:///x.db", table=None, query="DELETE FROM orders")))
    secret = "s3cr3t-" + secrets.token_hex(4)
    with pytest.raises(ConfigError) as caught:
        config.load(params(tmp_path, sql_source(f"postgresql://crm:{secret}@localhost/shop")))
    assert "contains a password" in str(caught.value) and secret not in str(caught.value)


@pytest.mark.parametrize("url", ["postgresql+psycopg://crm@localhost/shop?password={secret}",
                                 "postgresql://crm@localhost/shop?sslmode=require&PASSWORD={secret}&application_name=x"])
def test_params_refuse_a_password_in_the_url_query(tmp_path, url):
    """Drivers also take the password from the URL's query: refused and masked like `user:secret@`."""
    secret = "s3cr3t-" + secrets.token_hex(4)
    with pytest.raises(ConfigError) as caught:
        config.load(params(tmp_path, sql_source(url.format(secret=secret))))
    assert "contains a password" in str(caught.value) and secret not in str(caught.value)


def test_an_unreachable_database_prints_one_line_without_the_password(tmp_path):
    """`crmbook validate` and `crmbook run` against a server that is not there: exit 2, one line
    naming the source, and neither the password nor a traceback."""
    from tests.conftest import crmbook

    secret = "pw-" + secrets.token_hex(8)
    path = params(tmp_path, sql_source(f"postgresql+psycopg://crm@127.0.0.1:{_free_port()}/shop", password_env=PASSWORD_ENV))
    for command in (["validate"], ["run", "--reports-dir", str(tmp_path / "reports")]):
        done = crmbook(*command, "--params", str(path), env={PASSWORD_ENV: secret})
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("crmbook: error: sql:orders: database error: ") and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and secret not in done.stdout + done.stderr
    assert not (tmp_path / "reports").exists() or not any((tmp_path / "reports").iterdir())


def test_a_wrong_password_prints_one_line_without_it(tmp_path, postgres):
    from tests.conftest import crmbook

    wrong = "wrong-" + secrets.token_hex(6)
    done = crmbook("validate", "--params", str(params(tmp_path, sql_source(postgres["url"], password_env=PASSWORD_ENV))),
                   env={PASSWORD_ENV: wrong})
    assert done.returncode == 2 and "password authentication failed" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and wrong not in done.stdout + done.stderr


def test_missing_password_variable_and_wrong_password(tmp_path, postgres, monkeypatch):
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    cfg = config.load(params(tmp_path, sql_source(postgres["url"], password_env=PASSWORD_ENV)))
    with pytest.raises(InputError, match=f"sql:orders: the environment variable {PASSWORD_ENV} .* is not set"):
        ingestion.check_sources(cfg)
    wrong = "wrong-" + secrets.token_hex(6)
    monkeypatch.setenv(PASSWORD_ENV, wrong)
    with pytest.raises(InputError, match="password authentication failed") as caught:
        ingestion.check_sources(cfg)
    assert wrong not in str(caught.value) and "\n" not in str(caught.value)


def test_unknown_table_names_the_tables_there(tmp_path):
    write_sqlite(tmp_path / "shop.db")
    cfg = config.load(params(tmp_path, sql_source("sqlite:///shop.db", table="sales")))
    with pytest.raises(InputError, match=r"sql:sales: there is no table 'sales' in the database \(it has: orders\)"):
        ingestion.check_sources(cfg)


@pytest.mark.slow
def test_the_password_reaches_no_file_of_a_run(tmp_path, postgres):
    """A whole run (01 and 02) on a PostgreSQL source: the password is in the environment only; no
    file of the run folder (manifest, notebooks, HTML, tables) and no line of output contains it."""
    from tests.conftest import crmbook

    path = params(tmp_path, sql_source(postgres["url"], password_env=PASSWORD_ENV))
    temp = tmp_path / "tmp"  # the run's temporary files (kernel sockets and logs) are searched too
    temp.mkdir()
    done = crmbook("run", "--params", str(path), "--stages", "01_ingestion", "02_cleaning", "--reports-dir",
                   str(tmp_path / "reports"), "--jobs", "1", env={PASSWORD_ENV: postgres["password"], "TMPDIR": str(temp)})
    assert done.returncode == 0, done.stderr
    secret = postgres["password"].encode()
    run_dir = (tmp_path / "reports" / "latest").resolve()
    assert secret not in path.read_bytes()
    import nbformat

    for name in ("01_ingestion", "02_cleaning"):  # papermill records the parameters it injects (papermill #271)
        executed = nbformat.read(run_dir / "notebooks" / f"{name}.ipynb", as_version=4)
        assert set(executed.metadata.papermill.parameters) == {"params_path", "run_dir"}
    files = [p for folder in (run_dir, temp) for p in folder.rglob("*") if p.is_file()]
    assert {"manifest.json", "01_ingestion.html", "01_ingestion.ipynb", "canonical_transactions.parquet"} <= {p.name for p in files}
    assert [p for p in files if secret in p.read_bytes()] == []
    assert secret not in (done.stdout + done.stderr).encode()
    assert PASSWORD_ENV in (run_dir / "manifest.json").read_text(encoding="utf-8")  # the variable's name is recorded
