"""The whole run on tiny demo data: the run-folder contract, reproducibility, failure handling,
and what the HTML reports must never contain."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from tests.conftest import ROOT, crmbook, require_java, write_params

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, demo_dir):
    """One reports folder shared by the tests below, with a first good run in it."""
    folder = tmp_path_factory.mktemp("e2e")
    params = write_params(folder, demo_dir)
    reports = folder / "reports"
    temp = folder / "tmp"  # the run's temporary files (kernel sockets and stderr logs), searched for PII below
    temp.mkdir()
    result = crmbook("run", "--params", str(params), "--reports-dir", str(reports), env={"TMPDIR": str(temp)})
    assert result.returncode == 0, result.stdout + result.stderr
    return {"params": params, "reports": reports, "first": (reports / "latest").resolve(), "stdout": result.stdout,
            "stderr": result.stderr, "temp": temp}


def test_run_folder_contract(workspace):
    run = workspace["first"]
    for name in ("index.html", "01_ingestion.html", "02_cleaning.html", "manifest.json", "tables/data_quality.csv",
                 "tables/ingestion_summary.csv", "tables/clean_transactions.parquet", "tables/quarantine/transactions.parquet",
                 "notebooks/01_ingestion.ipynb", "notebooks/02_cleaning.ipynb"):
        assert (run / name).is_file(), name
    assert not list(workspace["reports"].glob(".*.partial")), "a partial folder was left behind"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "succeeded" and manifest["run_id"] == run.name
    stages = {s["name"]: s for s in manifest["stages"]}
    assert list(stages)[:2] == ["01_ingestion", "02_cleaning"]
    for stage in stages.values():
        assert stage["status"] == "succeeded" and stage["duration_s"] > 0, stage
        assert 50 < stage["peak_mb"] < 4096, stage  # the stage kernel's VmHWM: a Python with pandas is > 50 MB
        assert (run / f"{stage['name']}.html").is_file()
    outputs = {o["path"]: o["sha256"] for o in manifest["outputs"]}
    from crmbook.ingestion import file_sha256

    assert outputs["tables/data_quality.csv"] == file_sha256(run / "tables" / "data_quality.csv")
    assert {i["table"] for i in manifest["inputs"]} >= {"transactions", "customers"}
    assert manifest["versions"]["pandas"].startswith("3.")
    out = workspace["stdout"]
    assert "done in" in out  # a line per stage as it ends
    # what the stages are doing, as they do it (crmbook.progress), and the per-stage summary at the end
    assert re.search(r"^    02_cleaning: cleaned transactions: [\d,]+ rows kept, [\d,]+ quarantined$", out, re.M), out
    assert re.search(r"^    04_clv: fitted BG/NBD on the calibration period$", out, re.M), out
    assert re.search(r"^stages \(wall time, peak memory\): 01_ingestion [\d.]+ s, [\d,]+ MB · 02_cleaning", out, re.M), out
    logged = (run / "progress.log").read_text(encoding="utf-8").splitlines()
    assert logged and all(f"    {line}" in out.splitlines() for line in logged)


def test_data_quality_accounts_for_every_row(workspace, demo_dir):
    quality = pd.read_csv(workspace["first"] / "tables" / "data_quality.csv")
    assert (quality["rows_in"] == quality["rows_out"] + quality["rows_quarantined"]).all()
    for _, rules in quality.groupby("table", sort=False):
        assert (rules["rows_in"].iloc[1:].to_numpy() == rules["rows_out"].iloc[:-1].to_numpy()).all()
    truth = json.loads((demo_dir / "truth.json").read_text())
    assert quality.query("table == 'transactions'")["rows_in"].iloc[0] == truth["rows"]["orders.csv"]


def test_second_run_writes_byte_identical_tables(workspace):
    result = crmbook("run", "--params", str(workspace["params"]), "--reports-dir", str(workspace["reports"]))
    assert result.returncode == 0, result.stderr
    second = (workspace["reports"] / "latest").resolve()
    assert second != workspace["first"]
    first_files = sorted(p.relative_to(workspace["first"]) for p in (workspace["first"] / "tables").rglob("*") if p.is_file())
    second_files = sorted(p.relative_to(second) for p in (second / "tables").rglob("*") if p.is_file())
    assert first_files == second_files and first_files
    for rel in first_files:
        assert (workspace["first"] / rel).read_bytes() == (second / rel).read_bytes(), rel


def test_the_pyspark_engine_writes_the_same_tables(workspace, tmp_path):
    """run.engine: pyspark (local mode) sends the engine's queries to Spark: every table of the
    workbook comes out byte-identical to the DuckDB run's."""
    require_java()
    text = workspace["params"].read_text(encoding="utf-8").replace("engine: duckdb", "engine: pyspark\n  spark_master: local[2]")
    assert "engine: pyspark" in text
    params = tmp_path / "spark.yaml"
    params.write_text(text, encoding="utf-8")
    result = crmbook("run", "--params", str(params), "--reports-dir", str(tmp_path / "reports"))
    assert result.returncode == 0, result.stdout + result.stderr
    spark_run, duckdb_run = (tmp_path / "reports" / "latest").resolve(), workspace["first"]
    files = sorted(p.relative_to(duckdb_run) for p in (duckdb_run / "tables").rglob("*") if p.is_file())
    assert len(files) > 20 and files == sorted(p.relative_to(spark_run) for p in (spark_run / "tables").rglob("*") if p.is_file())
    for rel in files:
        assert (duckdb_run / rel).read_bytes() == (spark_run / rel).read_bytes(), rel


def test_tables_cleaned_in_parts_give_the_same_workbook(workspace, tmp_path):
    """cleaning.part_rows below the tiny demo's transactions and touchpoints: 02 cleans them in parts
    on disk. Their clean and quarantined rows equal the one-piece run's, and every table of stages
    03 to 06 comes out byte-identical."""
    text = workspace["params"].read_text(encoding="utf-8").replace("cleaning: {}", "cleaning: {part_rows: 1000}")
    assert "part_rows: 1000" in text
    params = tmp_path / "parts.yaml"
    params.write_text(text, encoding="utf-8")
    result = crmbook("run", "--params", str(params), "--reports-dir", str(tmp_path / "reports"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "cleaning transactions in " in result.stdout + result.stderr  # the progress line of the parts
    parts_run, whole_run = (tmp_path / "reports" / "latest").resolve(), workspace["first"]
    files = sorted(p.relative_to(whole_run) for p in (whole_run / "tables").rglob("*") if p.is_file())
    assert len(files) > 20 and files == sorted(p.relative_to(parts_run) for p in (parts_run / "tables").rglob("*") if p.is_file())
    in_parts = {Path("tables") / f"{kind}{table}.parquet" for kind in ("clean_", "quarantine/") for table in ("transactions", "touchpoints")}
    for rel in files:
        if rel in in_parts:
            whole, parts = pd.read_parquet(whole_run / rel), pd.read_parquet(parts_run / rel)
            pd.testing.assert_frame_equal(parts.astype("object").where(parts.notna(), None),
                                          whole.astype("object").where(whole.notna(), None))
        else:
            assert (whole_run / rel).read_bytes() == (parts_run / rel).read_bytes(), rel


def test_failing_notebook_keeps_failed_folder_and_latest(workspace, tmp_path):
    good = (workspace["reports"] / "latest").resolve()
    notebooks = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks", notebooks)
    nb = nbformat.read(notebooks / "02_cleaning.ipynb", as_version=4)
    nb.cells.insert(3, nbformat.v4.new_code_cell('raise RuntimeError("injected failure")'))
    nbformat.write(nb, notebooks / "02_cleaning.ipynb")
    result = crmbook("run", "--params", str(workspace["params"]), "--reports-dir", str(workspace["reports"]),
                     "--notebooks", str(notebooks))
    assert result.returncode == 1
    assert "injected failure" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    failed = sorted(workspace["reports"].glob("*.failed"))
    assert len(failed) == 1
    manifest = json.loads((failed[0] / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "injected failure" in manifest["error"]
    statuses = {s["name"]: s["status"] for s in manifest["stages"]}
    assert statuses["01_ingestion"] == "succeeded" and statuses["02_cleaning"] == "failed"
    error_nb = nbformat.read(failed[0] / "notebooks" / "02_cleaning.ipynb", as_version=4)
    assert any(o.get("ename") == "RuntimeError" for c in error_nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert (workspace["reports"] / "latest").resolve() == good
    assert not list(workspace["reports"].glob(".*.partial"))


def _pii_values(demo_dir: Path) -> list[str]:
    customers = pd.read_csv(demo_dir / "customers.csv", encoding="gbk", dtype=str)
    values = pd.concat([customers["Name"], customers["Email"], customers["Phone"]]).dropna()
    return sorted({v.strip() for v in values if len(v.strip()) >= 4})


def test_reports_contain_no_code_and_no_pii(workspace, demo_dir):
    pii = _pii_values(demo_dir)
    assert len(pii) > 500
    for page in sorted(workspace["first"].glob("*.html")):
        html = page.read_text(encoding="utf-8")
        for marker in ("from crmbook import", "params_path", "cfg = config.load", "hl-ipython3", "jp-InputPrompt\">", "In&nbsp;["):
            assert marker not in html, f"{page.name} shows code ({marker})"
        leaked = [v for v in pii if v in html]
        assert not leaked, f"{page.name} shows personal data: {leaked[:3]}"
        assert "cdn.jsdelivr" not in html and "require.js" not in html and "mathjax" not in html.lower()


def _personal_values(demo_dir: Path) -> list[str]:
    """Every name, e-mail and phone number of the demo's customers, lower-cased, with each phone
    number also as bare digits (a pipeline that normalises phones must not publish them either)."""
    customers = pd.read_csv(demo_dir / "customers.csv", encoding="gbk", dtype=str)
    values = {v.strip().lower() for v in pd.concat([customers["Name"], customers["Email"], customers["Phone"]]).dropna()}
    values |= {re.sub(r"\D", "", v) for v in customers["Phone"].dropna()}
    return sorted(v for v in values if (len(v) >= 8 if v.isdigit() else len(v) >= 2))


def _text_of(path: Path) -> str:
    """What a reader of the file sees: Parquet and Excel are read (their compressed bytes hide text)."""
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
        return " ".join(map(str, frame.columns)) + "\n" + frame.astype(str).to_csv(index=False)
    if path.suffix == ".xlsx":
        sheets = pd.read_excel(path, sheet_name=None, dtype=str, header=None)
        return "\n".join(sheet.to_csv(index=False) for sheet in sheets.values())
    return path.read_bytes().decode("utf-8", errors="replace")


def test_no_file_of_a_run_and_no_line_it_prints_holds_personal_data(workspace, demo_dir):
    """Every file of the run folder (HTML, notebooks, tables, workbook, manifest, summaries, logs),
    any temporary file the run left, and its stdout and stderr: zero names, e-mails or phones."""
    pii = _personal_values(demo_dir)
    assert len(pii) > 700 and any("@" in v for v in pii) and any(v.isdigit() for v in pii)
    files = [p for folder in (workspace["first"], workspace["temp"]) for p in sorted(folder.rglob("*")) if p.is_file()]
    assert {p.suffix for p in files} >= {".html", ".ipynb", ".csv", ".parquet", ".xlsx", ".json", ".md"}
    texts = {str(p): _text_of(p).lower() for p in files}
    texts["stdout and stderr"] = (workspace["stdout"] + workspace["stderr"]).lower()
    leaks = {name: hits[:3] for name, text in texts.items() if (hits := [v for v in pii if v in text])}
    assert leaks == {}


MAX_REPORT_BYTES = 1_500_000
#: A reference that makes a browser fetch from a network: src/href/poster to http(s) or //host,
#: url(...) in CSS to one, @import.
NETWORK_REFERENCE = re.compile(r"""\b(?:src|href|poster|srcset)\s*=\s*["']?\s*(?:https?:)?//|url\(\s*["']?\s*(?:https?:)?//|@import""", re.I)


def test_reports_are_small_and_reference_nothing_online(workspace):
    pages = sorted(workspace["first"].glob("*.html"))
    assert len(pages) == 7
    for page in pages:
        assert page.stat().st_size <= MAX_REPORT_BYTES, f"{page.name}: {page.stat().st_size:,} bytes"
        html = page.read_text(encoding="utf-8")
        found = NETWORK_REFERENCE.search(html)
        assert found is None, f"{page.name} references the network: {html[found.start():found.start() + 80]!r}"
        assert "<script src" not in html and "<link" not in html


def test_every_report_has_the_header_toc_cards_findings_and_footer(workspace):
    from bs4 import BeautifulSoup

    run = workspace["first"]
    for page in sorted(run.glob("[0-9][0-9]_*.html")):
        soup = BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser")
        header = soup.select_one("header.crm-header")
        assert header is not None and header.h1.get_text(strip=True), page.name
        assert run.name in header.get_text() and "2025-01-01" in header.select_one(".crm-asof").get_text()
        links = soup.select("nav.crm-toc ol a")
        assert len(links) >= 3 and all(soup.find(id=a["href"][1:]).name in ("h2", "h3") for a in links), page.name
        assert soup.select(".crm-body .crm-card") and soup.select_one(".crm-body .crm-findings"), page.name
        footer = soup.select_one("footer.crm-footer")
        assert {"manifest.json", "index.html", "tables/README.md", f"crmbook_{run.name}.xlsx"} <= {a["href"] for a in footer.find_all("a")}
    index = (run / "index.html").read_text(encoding="utf-8")
    for stage in json.loads((run / "manifest.json").read_text())["stages"]:
        assert f'href="{stage["name"]}.html"' in index


def test_excel_workbook_sheets_equal_their_csvs(workspace):
    from openpyxl import load_workbook

    from crmbook import exports

    run = workspace["first"]
    path = run / f"crmbook_{run.name}.xlsx"
    book = load_workbook(path)
    csvs = {p.stem for p in (run / "tables").glob("*.csv")}
    sheets = [name for name in book.sheetnames if name != exports.DICTIONARY_SHEET]
    assert {"kpis", "segment_profiles", "attribution", "clv_model_params", "data_quality"} <= set(sheets) <= csvs
    for name in sheets:
        assert book[name].freeze_panes == "A2" and book[name]["A1"].font.bold
        actual = pd.read_excel(path, sheet_name=name)
        for column in actual.columns:
            if pd.api.types.is_datetime64_any_dtype(actual[column]):
                actual[column] = actual[column].dt.strftime("%Y-%m-%d")
        pd.testing.assert_frame_equal(actual, pd.read_csv(run / "tables" / f"{name}.csv"), check_dtype=False, obj=name)


def test_every_csv_column_is_in_the_data_dictionary(workspace):
    from crmbook import exports

    tables = workspace["first"] / "tables"
    assert exports.undocumented(tables) == []
    readme = (tables / "README.md").read_text(encoding="utf-8")
    for table in exports.csv_tables(tables):
        assert f"## {table.name}.csv" in readme
        for column in pd.read_csv(table.paths[0], nrows=1).columns:
            assert f"| `{column}` |" in readme, f"{table.name}.csv: {column}"


def test_reports_compare_with_the_previous_run(workspace):
    reports = workspace["reports"]
    good = sorted(p for p in reports.iterdir() if p.is_dir() and not p.is_symlink() and p.name[0].isdigit() and "." not in p.name)
    if len(good) < 2:
        result = crmbook("run", "--params", str(workspace["params"]), "--reports-dir", str(reports))
        assert result.returncode == 0, result.stderr
        good = sorted(p for p in reports.iterdir() if p.is_dir() and not p.is_symlink() and p.name[0].isdigit() and "." not in p.name)
    latest, before = good[-1], good[-2]
    from bs4 import BeautifulSoup

    page = BeautifulSoup((latest / "03_segmentation.html").read_text(encoding="utf-8"), "html.parser")
    assert before.name in page.select_one("header .crm-compare").get_text()
    assert page.select(".crm-body .crm-card .change")  # the same inputs: every numeric card "unchanged"
    assert {c.get_text(" ", strip=True) for c in page.select(".crm-body .crm-card .change")} == {"▬ unchanged"}
    index = BeautifulSoup((latest / "index.html").read_text(encoding="utf-8"), "html.parser")
    header = [th.get("title") for th in index.select("table.crm-history thead th")]
    assert header[-2:] == [before.name, latest.name]
