"""Faults during a run: a second run on a locked reports folder, and SIGTERM mid-run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from crmbook.run import reports_lock
from tests.conftest import crmbook

pytestmark = pytest.mark.slow


def test_second_run_on_a_locked_reports_folder_is_refused(params, tmp_path):
    reports = tmp_path / "reports"
    with reports_lock(reports):
        result = crmbook("run", "--params", str(params), "--reports-dir", str(reports))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"crmbook: error: another crmbook run is writing to {reports}; wait for it to finish"]
    assert not (reports / "latest").exists()


def test_sigterm_mid_run_leaves_a_failed_run_and_no_latest(params, tmp_path):
    reports = tmp_path / "reports"
    process = subprocess.Popen([sys.executable, "-m", "crmbook.cli", "run", "--params", str(params), "--reports-dir", str(reports)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    deadline = time.time() + 60
    while time.time() < deadline and not list(reports.glob(".*.partial/notebooks/01_ingestion.ipynb")):
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stderr
    assert "stopped by signal SIGTERM" in stderr and "Traceback" not in stderr
    failed = list(reports.glob("*.failed"))
    assert len(failed) == 1 and not (reports / "latest").exists()
    assert json.loads((failed[0] / "manifest.json").read_text())["status"] == "failed"
