"""The whole run on tiny demo data: the run-folder contract, reproducibility, failure handling,
and what the HTML reports must never contain."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from tests.conftest import ROOT, crmbook, write_params

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, demo_dir):
    """One reports folder shared by the tests below, with a first good run in it."""
    folder = tmp_path_factory.mktemp("e2e")
    params = write_params(folder, demo_dir)
    reports = folder / "reports"
    result = crmbook("run", "--params", str(params), "--reports-dir", str(reports))
    assert result.returncode == 0, result.stdout + result.stderr
    return {"params": params, "reports": reports, "first": (reports / "latest").resolve(), "stdout": result.stdout}


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
        assert (run / f"{stage['name']}.html").is_file()
    outputs = {o["path"]: o["sha256"] for o in manifest["outputs"]}
    from crmbook.ingestion import file_sha256

    assert outputs["tables/data_quality.csv"] == file_sha256(run / "tables" / "data_quality.csv")
    assert {i["table"] for i in manifest["inputs"]} >= {"transactions", "customers"}
    assert manifest["versions"]["pandas"].startswith("3.")
    assert "done in" in workspace["stdout"]  # a progress line per stage


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
