"""The benchmarks' helpers (benchmarks/workbook.py, clv.py, __main__.py), without running a benchmark."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from benchmarks import clv, workbook
from benchmarks.__main__ import machine
from crmbook.run import discover_stages, plan_waves

ROOT = Path(__file__).resolve().parents[2]


def test_floor_notebooks_keep_names_metadata_and_only_the_parameters_cell(tmp_path: Path) -> None:
    floor = workbook.floor_notebooks(ROOT / "notebooks", tmp_path / "floor")
    real = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert [p.name for p in sorted(floor.glob("*.ipynb"))] == [p.name for p in real]
    assert discover_stages(floor) == discover_stages(ROOT / "notebooks")
    for path in real:
        nb, copy = (json.loads(p.read_text(encoding="utf-8")) for p in (path, floor / path.name))
        assert copy["metadata"] == nb["metadata"]
        assert len(copy["cells"]) == 1
        (cell,) = copy["cells"]
        assert "parameters" in cell["metadata"]["tags"]
        assert cell["source"] == next(c["source"] for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
        assert cell["outputs"] == []


def test_scaled_params_point_every_source_at_the_folder(tmp_path: Path) -> None:
    """Every source's file in the folder; a table whose file is not there (no touch log) is left out."""
    template = yaml.safe_load((ROOT / "params" / "default.yaml").read_text(encoding="utf-8"))
    names = {Path(s["path"]).name for sources in template["data"]["sources"].values() for s in sources}
    (tmp_path / "data").mkdir()
    for name in names - {"touchpoints.csv"}:
        (tmp_path / "data" / name).write_text("", encoding="utf-8")
    params = yaml.safe_load(workbook.scaled_params(ROOT / "params" / "default.yaml", tmp_path / "data",
                                                   tmp_path / "p.yaml", {"memory_limit": "4GB"}).read_text(encoding="utf-8"))
    assert "demo" not in params["data"]
    assert "touchpoints" in template["data"]["sources"] and "touchpoints" not in params["data"]["sources"]
    paths = [Path(s["path"]) for sources in params["data"]["sources"].values() for s in sources]
    assert len(paths) == len(names) - 1
    assert all(p.is_absolute() and p.parent == (tmp_path / "data").resolve() for p in paths)
    assert params["run"]["analysis_date"] is not None and params["run"]["memory_limit"] == "4GB"


def _fake_run(seconds: dict[str, float]) -> dict:
    """A result of run_workbook as the stages' output lines would time-stamp it."""
    names = list(seconds)
    lines, t = [(1.0, "crmbook run x: 6 stage(s), params p"), (1.5, "    01_ingestion: reading")], 1.0
    for wave in plan_waves(discover_stages(ROOT / "notebooks")):
        t += max(seconds[s.name] for s in wave)
        lines += [(t, f"  {s.name:<16} done in {seconds[s.name]:5.1f} s") for s in wave]
    lines.append((t + 2.0, "crmbook run x: succeeded in 9.0 s -> index.html"))
    manifest = {"stages": [{"name": n, "status": "succeeded", "duration_s": seconds[n], "peak_mb": 100.0 + i}
                           for i, n in enumerate(names)]}
    result = {"seconds": t + 2.5, "runner_peak_mb": 200.0, "manifest": manifest, "lines": lines,
              "cells": {n: [(0.1, "import os"), (seconds[n] - 0.5, "from crmbook import x")] for n in names}}
    return {**result, "phases": workbook.phases(result, ROOT / "notebooks")}


def test_phases_add_up_to_the_wall_time() -> None:
    names = [s.name for s in discover_stages(ROOT / "notebooks")]
    run = _fake_run({n: float(i + 1) for i, n in enumerate(names)})
    phases = dict(run["phases"])
    assert phases["startup"] == 1.0 and phases["publish"] == 2.0
    assert abs(sum(phases.values()) - run["seconds"]) < 1e-9
    assert workbook.peak_mb(run) == (200.0, "runner")
    text = "\n".join(workbook.breakdown(run, _fake_run({n: 1.0 for n in names}), {n: 0.5 for n in names}))
    assert "01_ingestion" in text and "publish" in text and "total" in text


def test_customer_summary_row_of_a_failed_baseline() -> None:
    row = {"label": "summary", "rows": 50_000_000, "seconds": 20.0, "peak_mb": 900.0, "baseline": "pandas groupby",
           "baseline_seconds": None, "baseline_peak_mb": None, "baseline_error": "MemoryError",
           "baseline_limit_mb": 20_000, "time_ratio": None}
    (line,) = clv.markdown_rows([row])
    assert "FAILED (MemoryError" in line and line.count("|") == 9


def test_failure_says_which_signal_killed_the_process() -> None:
    assert clv._failure(-9, "") == "killed by SIGKILL (out of memory?)"
    assert clv._failure(1, "Traceback\n  ...\nMemoryError\n") == "MemoryError"


def test_machine_names_cores_and_ram() -> None:
    assert "cores" in machine() and "RAM" in machine()
