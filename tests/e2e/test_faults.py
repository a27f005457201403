"""Faults during a run, each injected into a real `crmbook run` on a reports folder that already
holds a good run: a kernel that dies, a cell timeout, a full disk (in a stage and in the runner),
SIGTERM, a second run on a locked folder and two runs at once. Each failure must end with exit
code 1, one line on stderr and no traceback, a `<run_id>.failed` folder whose manifest says why,
`latest` still on the good run, and nothing that looks like a successful run.

The stages here are one-cell notebooks (`--notebooks`), so a fault costs a kernel start, not a
real stage. A full disk is `/dev/full`, the kernel's always-full device: a stage's cell links the
file about to be written to it, and the real write (pyarrow's, or the runner's own) fails with
ENOSPC. No hook in the package, no root, no mounted filesystem."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import pytest

from crmbook.run import reports_lock
from tests.conftest import crmbook, write_params

pytestmark = pytest.mark.slow

WRITE_TABLE = 'import pandas as pd\nfrom crmbook import store\nstore.write_table(run_dir, "probe", pd.DataFrame({"n": [1, 2]}))'


def write_notebooks(folder: Path, *cells: str, stages: tuple[str, ...] = ("01_probe",)) -> Path:
    """A notebooks folder whose stages (no dependencies: one wave) run the parameters cell, then `cells`."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in stages:
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.cells = [nbformat.v4.new_markdown_cell(f"# {name}"),
                    nbformat.v4.new_code_cell('params_path = "params.yaml"\nrun_dir = "."', metadata={"tags": ["parameters"]}),
                    *(nbformat.v4.new_code_cell(cell) for cell in cells)]
        nbformat.write(nb, folder / f"{name}.ipynb")
    return folder


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, demo_dir):
    """A reports folder with one good run in it, the params that made it, and a short temporary
    folder for the runs' own temporary files (a failed stage keeps its kernel's socket folder;
    a socket path must stay under 108 bytes)."""
    folder = tmp_path_factory.mktemp("faults")
    params = write_params(folder, demo_dir)
    good = write_notebooks(folder / "good", WRITE_TABLE)
    temp = Path(tempfile.mkdtemp(prefix="crmbook-faults-"))
    result = crmbook("run", "--params", str(params), "--reports-dir", str(folder / "reports"), "--notebooks", str(good),
                     env={"TMPDIR": str(temp)})
    assert result.returncode == 0, result.stderr
    yield {"params": params, "reports": folder / "reports", "good": (folder / "reports" / "latest").resolve(),
           "env": {**os.environ, "TMPDIR": str(temp)}}
    shutil.rmtree(temp, ignore_errors=True)


def run_folders(reports: Path) -> set[str]:
    return {p.name for p in reports.iterdir() if p.is_dir() and not p.is_symlink()}


def run(workspace: dict, notebooks: Path, *options: str) -> subprocess.CompletedProcess:
    return crmbook("run", "--params", str(workspace["params"]), "--reports-dir", str(workspace["reports"]),
                   "--notebooks", str(notebooks), *options, env=workspace["env"])


def assert_failed_run(workspace: dict, before: set[str], returncode: int, stdout: str, stderr: str) -> dict:
    """The contract of every failed run; returns its manifest."""
    reports = workspace["reports"]
    assert returncode == 1, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("crmbook: error: run ") and "Traceback" not in stderr, stderr
    new = run_folders(reports) - before
    assert len(new) == 1 and next(iter(new)).endswith(".failed"), new  # no published run, no .partial left
    failed = reports / next(iter(new))
    manifest = json.loads((failed / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["status"] == "failed" and manifest["error"] and "\n" not in manifest["error"]
    assert manifest["error"] in lines[0]
    index = failed / "index.html"
    if not index.is_symlink():  # the full-disk test links it to /dev/full, which reads as endless zeros
        assert 'class="crm-status failed"' in index.read_text(encoding="utf-8")
    assert list((failed / "notebooks").glob("01_*.ipynb")), "the failed stage's notebook is not kept"
    assert (reports / "latest").resolve() == workspace["good"]
    assert json.loads((workspace["good"] / "manifest.json").read_text(encoding="utf-8"))["status"] == "succeeded"
    assert "succeeded" not in stdout
    return manifest


def test_a_kernel_that_dies_mid_stage(workspace, tmp_path):
    notebooks = write_notebooks(tmp_path, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    before = run_folders(workspace["reports"])
    result = run(workspace, notebooks)
    manifest = assert_failed_run(workspace, before, result.returncode, result.stdout, result.stderr)
    assert manifest["stages"][0]["status"] == "failed"
    assert "kernel died" in manifest["error"] and "kernel died" in manifest["stages"][0]["reason"]


def test_a_cell_timeout(workspace, tmp_path):
    """papermill leaves no error banner in the notebook on a timeout: the runner must say it."""
    notebooks = write_notebooks(tmp_path, "import time\ntime.sleep(120)")
    before = run_folders(workspace["reports"])
    started = time.monotonic()
    result = run(workspace, notebooks, "--cell-timeout", "2")
    assert time.monotonic() - started < 60
    manifest = assert_failed_run(workspace, before, result.returncode, result.stdout, result.stderr)
    assert "cell timeout (2 s)" in manifest["error"] and manifest["stages"][0]["status"] == "failed"
    assert "time.sleep" not in result.stderr  # no code in the message
    failed = workspace["reports"] / f"{manifest['run_id']}.failed"
    kept = nbformat.read(failed / "notebooks" / "01_probe.ipynb", as_version=4)
    assert not [o for c in kept.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]


@pytest.mark.parametrize("target, writer", [
    ("tables/probe.parquet", "the stage (pyarrow, in the kernel)"),
    ("01_probe.html", "the runner (HTML export)"),
    ("index.html", "the runner (its last page, after every stage succeeded)"),
])
def test_a_full_disk_while_writing_outputs(workspace, tmp_path, target, writer):
    link = f'import os\nos.symlink("/dev/full", os.path.join(run_dir, "{target}"))'
    notebooks = write_notebooks(tmp_path, link, WRITE_TABLE)
    before = run_folders(workspace["reports"])
    result = run(workspace, notebooks)
    manifest = assert_failed_run(workspace, before, result.returncode, result.stdout, result.stderr)
    assert "No space left on device" in manifest["error"] or "disk is full" in manifest["error"], (writer, manifest["error"])


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_sigterm_mid_run(workspace, tmp_path, jobs):
    """With --jobs 2 the two stages run in worker processes: the run stops them, not waits for them."""
    notebooks = write_notebooks(tmp_path, "import time\ntime.sleep(120)", stages=("01_a", "02_b"))
    reports = workspace["reports"]
    before = run_folders(reports)
    process = subprocess.Popen([sys.executable, "-m", "crmbook.cli", "run", "--params", str(workspace["params"]),
                                "--reports-dir", str(reports), "--notebooks", str(notebooks), "--jobs", jobs],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=workspace["env"])
    deadline = time.time() + 60
    while time.time() < deadline and not list(reports.glob(".*.partial/notebooks/01_a.ipynb")):
        time.sleep(0.2)
    time.sleep(1)
    process.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    stdout, stderr = process.communicate(timeout=120)
    assert time.monotonic() - stopped < 30, "the run waited for its stages instead of stopping them"
    manifest = assert_failed_run(workspace, before, process.returncode, stdout, stderr)
    assert "stopped by signal SIGTERM" in manifest["error"]
    assert manifest["stages"][0]["status"] == "failed"


def test_second_run_on_a_locked_reports_folder_is_refused(params, tmp_path):
    reports = tmp_path / "reports"
    with reports_lock(reports):
        result = crmbook("run", "--params", str(params), "--reports-dir", str(reports))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"crmbook: error: another crmbook run is writing to {reports}; wait for it to finish"]
    assert not (reports / "latest").exists()


def test_two_runs_at_once_one_refused_one_good(workspace, tmp_path):
    """Two real `crmbook run` processes on one reports folder: the first holds the lock (its stage
    waits for a go file), the second is refused without touching anything, the first ends good."""
    go = tmp_path / "go"
    notebooks = write_notebooks(tmp_path / "nb", f"import pathlib, time\nwhile not pathlib.Path({str(go)!r}).exists():\n    time.sleep(0.1)",
                                WRITE_TABLE)
    reports = workspace["reports"]
    before = run_folders(reports)
    first = subprocess.Popen([sys.executable, "-m", "crmbook.cli", "run", "--params", str(workspace["params"]),
                              "--reports-dir", str(reports), "--notebooks", str(notebooks)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=workspace["env"])
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not list(reports.glob(".*.partial/notebooks/01_probe.ipynb")):
            time.sleep(0.2)
        second = run(workspace, notebooks)
        assert second.returncode == 1
        assert second.stderr.strip().splitlines() == [f"crmbook: error: another crmbook run is writing to {reports}; wait for it to finish"]
        assert run_folders(reports) - before == {p.name for p in reports.glob(".*.partial")}  # only the first's
        assert (reports / "latest").resolve() == workspace["good"]
    finally:
        go.touch()
    stdout, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr
    new = run_folders(reports) - before
    assert len(new) == 1 and (reports / "latest").resolve() == reports / next(iter(new))
    assert json.loads((reports / next(iter(new)) / "manifest.json").read_text(encoding="utf-8"))["status"] == "succeeded"
    assert (reports / next(iter(new)) / "tables" / "probe.parquet").is_file()
    assert json.loads((workspace["good"] / "manifest.json").read_text(encoding="utf-8"))["status"] == "succeeded"
    workspace["good"] = (reports / "latest").resolve()  # the tests after this one keep it as the good run
