"""Shared fixtures: params files pointing at synthetic data in a temporary folder."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "params" / "tiny.yaml"


def require_java() -> None:
    """The Spark tests need Java 17+: skipped on a machine without it, failed where
    CRMBOOK_REQUIRE_SPARK is set (`.ci/run` installs Java and sets it, so CI always runs them)."""
    if shutil.which("java") is None:
        if os.environ.get("CRMBOOK_REQUIRE_SPARK"):
            pytest.fail("CRMBOOK_REQUIRE_SPARK is set but there is no java on PATH")
        pytest.skip("the Spark tests need Java 17 or newer on PATH (CI installs it)")


def write_params(folder: Path, data_dir: Path, text: str | None = None, **replace: str) -> Path:
    """A copy of tests/params/tiny.yaml whose data lives in `data_dir` (absolute paths)."""
    body = (text or TINY.read_text(encoding="utf-8")).replace("../../data/raw/tiny", str(data_dir))
    for old, new in replace.items():
        body = body.replace(old, new)
    path = folder / "params.yaml"
    path.write_text(body, encoding="utf-8")
    return path


def crmbook(*args: str, cwd: Path | None = None, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the command line as a user would, capturing its output."""
    command = [sys.executable, "-m", "crmbook.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """Tiny messy demo data (300 customers), generated once per test session."""
    from crmbook import synth

    return synth.generate(tmp_path_factory.mktemp("demo") / "tiny", customers=300, seed=42, messy=True)


@pytest.fixture
def params(tmp_path, demo_dir) -> Path:
    return write_params(tmp_path, demo_dir)
