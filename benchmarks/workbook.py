"""Benchmarks of whole runs of the workbook (`python -m benchmarks.workbook`; `demo`, `large` and
`markdown_rows` are what `make bench` calls).

Each run is `crmbook run --params P --jobs J --reports-dir D` (`crmbook.cli.main`) in a fresh
interpreter, with an empty temporary reports folder of its own, so no run compares itself with an
earlier one. Timed: the wall time of that process, from its start to its exit (interpreter start,
imports, the params and input checks, every stage's papermill run, the data dictionary, the Excel
workbook, the HTML export, manifest.json with its hashes, index.html, publishing). Peak memory: the
largest stage kernel's peak (VmHWM, manifest.json `stages[].peak_mb`) and the runner process's own
(VmHWM, measured as it ends); the pool processes that start the kernels of parallel stages are
counted in neither. The runner's output lines are time-stamped as they arrive, which splits the
wall time into startup, stages (per stage: manifest `stages[].duration_s`, the papermill call
including its kernel's start and stop) and publishing.

- `demo` (target: at most 1.5x the floor): the demo (params/default.yaml, 5,000 customers) end
  to end, against the floor: the same runner, params, jobs and kind of reports folder on notebooks
  that contain only the papermill `parameters` cell. The floor's notebooks have the real ones' file
  names (NN_name.ipynb), notebook metadata (the `crmbook` needs and tables that run.discover_stages
  reads, the kernel) and parameters cell, so the runner plans the same waves and exports the same
  number of HTML reports; what the floor does not have is the stages' work and the tables they
  write. Not timed: making the demo data (`crmbook validate`, which generates data/raw/demo when it
  is missing, runs first) and one warm-up run of the floor (first imports, disk cache), so the two
  timed runs start from the same state.
- `large` (no baseline): the whole workbook on the demo generator's data at scale
  (`crmbook.synth.generate(folder, customers=N, seed, messy=True)`, about 6.55 order lines per
  customer: 230,000 customers give ~1.5M lines), with params/default.yaml's sources and settings
  pointed at that folder (absolute paths). Generating the data is timed separately and is not part
  of the run's figure.
- `huge` (no baseline; `python -m benchmarks --huge`): the same on 7,600,000 customers, about 50M
  order lines, generated without the touch log (`crmbook synth --no-touchpoints`: 420M touches
  would not fit the generator; 05 attribution is then skipped, its own benchmark has 10M
  journeys), with run.memory_limit 4GB and `--jobs 1`, so the whole run's peak is its largest
  process's (stage kernels and runner).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import PEAK_MB

ROOT = Path(__file__).resolve().parents[1]
DEMO_PARAMS = ROOT / "params" / "default.yaml"
NOTEBOOKS = ROOT / "notebooks"
TARGET_RATIO = 1.5
LARGE_CUSTOMERS = 230_000
HUGE_CUSTOMERS = 7_600_000  # about 50M order lines

_RUNNER = PEAK_MB + """
import json, os, sys
from crmbook.cli import main
code = main(sys.argv[1:])
print(json.dumps({"exit_code": code, "peak_mb": peak_mb()}), flush=True)
sys.stderr.flush()
os._exit(code)  # as the `crmbook` command does: no interpreter teardown
"""


def floor_notebooks(notebooks: Path, out: Path) -> Path:
    """Copies of every NN_name.ipynb in `notebooks` with the same name, nbformat and notebook
    metadata, holding only the cell tagged `parameters` (source and metadata kept, outputs cleared)."""
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(notebooks.glob("[0-9][0-9]_*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        cells = [dict(cell, outputs=[], execution_count=None) for cell in nb["cells"]
                 if "parameters" in cell.get("metadata", {}).get("tags", [])]
        if len(cells) != 1:
            raise ValueError(f"{path.name}: {len(cells)} cells tagged parameters, expected one")
        (out / path.name).write_text(json.dumps({**nb, "cells": cells}, indent=1), encoding="utf-8")
    return out


def run_command(params: Path, reports_dir: Path, jobs: int, notebooks: Path | None = None) -> list[str]:
    """The `crmbook` arguments of one benchmarked run."""
    return ["run", "--params", str(params), "--jobs", str(jobs), "--reports-dir", str(reports_dir),
            *(["--notebooks", str(notebooks)] if notebooks else [])]


def run_workbook(params: Path, reports_dir: Path, jobs: int, notebooks: Path | None = None) -> dict:
    """One `crmbook run` in a fresh interpreter: wall seconds, the runner's peak MB, the run's
    manifest, and each output line with the seconds since the start at which it arrived."""
    with tempfile.TemporaryFile(mode="w+") as stderr:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", _RUNNER, *run_command(params, reports_dir, jobs, notebooks)],
                                stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=ROOT)
        lines = [(time.perf_counter() - start, line.rstrip("\n")) for line in proc.stdout]
        proc.wait()
        seconds = time.perf_counter() - start
        stderr.seek(0)
        errors = stderr.read()
    if proc.returncode:
        output = "\n".join(line for _, line in lines)
        raise RuntimeError(f"crmbook run failed (exit {proc.returncode}):\n{output[-3000:]}\n{errors[-3000:]}")
    runner = json.loads(lines[-1][1])
    manifest = json.loads((reports_dir / "latest" / "manifest.json").read_text(encoding="utf-8"))
    cells = {path.stem: cell_seconds(path) for path in sorted((reports_dir / "latest" / "notebooks").glob("*.ipynb"))}
    result = {"seconds": seconds, "runner_peak_mb": runner["peak_mb"], "manifest": manifest, "lines": lines[:-1],
              "cells": cells, "load_after": round(os.getloadavg()[0], 2)}
    return {**result, "phases": phases(result, notebooks or NOTEBOOKS)}


def cell_seconds(notebook: Path) -> list[tuple[float, str]]:
    """(papermill's duration, first source line) of each code cell of an executed notebook."""
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    return [(float(cell["metadata"].get("papermill", {}).get("duration") or 0.0), "".join(cell["source"]).split("\n")[0])
            for cell in nb["cells"] if cell["cell_type"] == "code"]


_IMPORTS = """
import sys, time
start = time.perf_counter()
exec(sys.stdin.read())
print(time.perf_counter() - start)
"""


def import_seconds(notebook: Path) -> float:
    """Seconds a fresh interpreter takes to run the notebook's import statements (the lines of its
    code cells that start with `import` or `from`): what each kernel of the stage pays before its work."""
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    imports = [line for cell in nb["cells"] if cell["cell_type"] == "code"
               for line in "".join(cell["source"]).splitlines() if line.startswith(("import ", "from "))]
    out = subprocess.run([sys.executable, "-c", _IMPORTS], input="\n".join(imports), capture_output=True, text=True,
                         cwd=notebook.parent, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=True)
    return float(out.stdout.split()[-1])


def phases(result: dict, notebooks: Path) -> list[tuple[str, float]]:
    """Wall seconds of the run's phases, from its time-stamped output: startup (interpreter,
    imports, params and input checks: up to the runner's first line), each wave of stages (to the
    line of its last stage: a wave's lines come when the whole wave is done; a parallel wave's wall
    also holds its process pool's start, where each worker imports papermill), publish (data
    dictionary, Excel, HTML export, manifest hashes, index: to the "succeeded" line), exit."""
    from crmbook.run import discover_stages, plan_waves

    ran = {s["name"] for s in result["manifest"]["stages"] if s["status"] != "skipped"}
    stamps = {line.split()[0]: t for t, line in result["lines"]
              if line.split()[:1] and line.split()[0] in ran and " done in " in line}
    first = next(t for t, line in result["lines"] if line.startswith("crmbook run ") and " stage(s)" in line)
    out, previous = [("startup", first)], first
    for wave in plan_waves(tuple(s for s in discover_stages(notebooks) if s.name in ran)):
        end = max(stamps[s.name] for s in wave)
        out.append(("wave " + " + ".join(s.name[:2] for s in wave), end - previous))
        previous = end
    done = next(t for t, line in result["lines"] if ": succeeded in " in line)
    return [*out, ("publish", done - previous), ("exit", result["seconds"] - done)]


def timeline(result: dict) -> list[str]:
    """The runner's output lines (its stages' progress lines included), each with the second it came."""
    return [f"  {t:8.2f} s  {line}" for t, line in result["lines"]]


def peak_mb(result: dict) -> tuple[float, str]:
    """The largest of the stage kernels' and the runner's peaks, and which process it was."""
    stages = [(s["peak_mb"], f"{s['name']} kernel") for s in result["manifest"]["stages"] if s.get("peak_mb")]
    return max([*stages, (result["runner_peak_mb"], "runner")])


def breakdown(result: dict, floor: dict | None = None, imports: dict[str, float] | None = None) -> list[str]:
    """Text lines for stdout: each stage's seconds (its papermill call), kernel peak MB and where its
    time went (the notebook's imports in a fresh interpreter when measured, its cells as papermill
    timed them, its longest cell, and the rest: kernel start and stop, papermill's saves), then the
    wall seconds of each phase (see `phases`); with the floor's seconds and the difference."""
    floor_stages = {s["name"]: s["duration_s"] for s in floor["manifest"]["stages"]} if floor else {}
    head = f"  {'stage (papermill call)':<24} {'s':>7} {'peak MB':>7}"
    out = [head + (f" {'floor s':>7} {'extra s':>7}" if floor else "") + f" {'imports':>7} {'cells':>7} {'other':>7}  longest cell"]
    for s in result["manifest"]["stages"]:
        cells = result["cells"].get(s["name"], [])
        in_cells = sum(d for d, _ in cells)
        longest = max(cells, default=(0.0, ""))
        row = f"  {s['name']:<24} {s['duration_s']:7.2f} {s.get('peak_mb') or 0:7.0f}"
        if floor:
            row += f" {floor_stages.get(s['name'], 0.0):7.2f} {s['duration_s'] - floor_stages.get(s['name'], 0.0):+7.2f}"
        row += f" {imports[s['name']]:7.2f}" if imports and s["name"] in imports else f" {'':>7}"
        out.append(row + f" {in_cells:7.2f} {s['duration_s'] - in_cells:7.2f}  {longest[0]:.2f} s `{longest[1][:60]}`")
    floor_phases = dict(floor["phases"]) if floor else {}
    out.append("  phase (wall)")
    for name, seconds in [*result["phases"], ("total", result["seconds"])]:
        base = floor_phases.get(name, floor["seconds"] if floor and name == "total" else None)
        out.append(f"  {name:<24} {seconds:7.2f} {'':>7}" + (f" {base:7.2f} {seconds - base:+7.2f}" if floor else ""))
    out.append(f"  runner process peak {result['runner_peak_mb']:.0f} MB")
    return out


def _crmbook(*args: str) -> None:
    """An untimed `crmbook` command (validate: makes the demo data when it is missing)."""
    out = subprocess.run([sys.executable, "-m", "crmbook.cli", *args], capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        raise RuntimeError(f"crmbook {' '.join(args)} failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")


def demo(customers: int | None = None, jobs: int | None = None, warmup: bool = True) -> dict:
    """The demo end to end against the floor (parameters-only notebooks), same runner and params:
    params/default.yaml, or with `customers` its sources on a demo of that size made in a temporary
    folder (`--quick`). Making the data and the floor's warm-up run are not timed."""
    jobs = jobs or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="crmbook-bench-") as tmp:
        if customers is None:
            params = DEMO_PARAMS
            _crmbook("validate", "--params", str(params))  # generates data/raw/demo when it is missing
        else:
            _crmbook("synth", "--out", f"{tmp}/data", "--customers", str(customers), "--seed", "42", "--messy")
            params = scaled_params(DEMO_PARAMS, Path(tmp) / "data", Path(tmp) / f"demo-{customers}.yaml")
        rows = input_rows(params)
        floor_dir = floor_notebooks(NOTEBOOKS, Path(tmp) / "floor")
        if warmup:
            run_workbook(params, Path(tmp) / "warmup", jobs, floor_dir)
        load = round(os.getloadavg()[0], 2)
        floor = run_workbook(params, Path(tmp) / "reports-floor", jobs, floor_dir)
        ours = run_workbook(params, Path(tmp) / "reports-demo", jobs)
    imports = {path.stem: import_seconds(path) for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))}
    return {"case": "demo", "imports": imports, "params": "params/default.yaml" if customers is None else "<tmp>/" + params.name,
            "jobs": jobs, "rows": rows["orders.csv"], "customers": rows["customers.csv"], "result": ours, "floor": floor,
            "seconds": ours["seconds"], "peak": peak_mb(ours), "baseline_seconds": floor["seconds"],
            "baseline_peak": peak_mb(floor), "time_ratio": ours["seconds"] / floor["seconds"],
            "meets_target": ours["seconds"] <= TARGET_RATIO * floor["seconds"], "load_average": (load, ours["load_after"])}


def input_rows(params: Path) -> dict[str, int]:
    """Rows of each file of the demo folder the params' transactions come from (its truth.json)."""
    from crmbook import config

    cfg = config.load(params)
    orders = cfg.resolve(cfg.data.sources.transactions[0].path)
    return json.loads((orders.parent / "truth.json").read_text(encoding="utf-8"))["rows"]


def scaled_params(template: Path, data: Path, out: Path, run: dict | None = None) -> Path:
    """`template`'s params with every source's file in folder `data` (absolute paths; a table whose
    file is not there is left out), no demo section, and `run` settings on top of the template's."""
    import yaml

    params = yaml.safe_load(template.read_text(encoding="utf-8"))
    params["data"].pop("demo", None)
    params["run"] = {**params.get("run", {}), **(run or {})}
    for table, sources in list(params["data"]["sources"].items()):
        for source in sources:
            source["path"] = str((data / Path(source["path"]).name).resolve())
        if not all(Path(source["path"]).is_file() for source in sources):
            del params["data"]["sources"][table]
    out.write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return out


def large(customers: int = LARGE_CUSTOMERS, seed: int = 7, jobs: int | None = None, touchpoints: bool = True,
          memory_limit: str | None = None) -> dict:
    """The whole workbook on the demo generator's data for `customers` customers (messy; without
    the touch log unless `touchpoints`), with run.memory_limit `memory_limit` when given and DuckDB's
    spill folder in the temporary folder. The generation is timed on its own; a failed run is
    returned with its error, not raised."""
    jobs = jobs or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="crmbook-bench-") as tmp:
        data = Path(tmp) / "data"
        start = time.perf_counter()
        _crmbook("synth", "--out", str(data), "--customers", str(customers), "--seed", str(seed), "--messy",
                 *([] if touchpoints else ["--no-touchpoints"]))
        generation = time.perf_counter() - start
        run = {"temp_directory": str(Path(tmp) / "spill"), **({"memory_limit": memory_limit} if memory_limit else {})}
        params = scaled_params(DEMO_PARAMS, data, Path(tmp) / f"large-{customers}.yaml", run)
        rows = input_rows(params)
        result = {"case": "large", "customers": customers, "seed": seed, "jobs": jobs, "rows": rows["orders.csv"],
                  "input_rows": rows, "generation_seconds": generation, "error": None, "touchpoints": touchpoints,
                  "memory_limit": memory_limit}
        try:
            ours = run_workbook(params, Path(tmp) / "reports", jobs)
        except RuntimeError as error:
            return {**result, "error": str(error)}
    return {**result, "result": ours, "seconds": ours["seconds"], "peak": peak_mb(ours)}


def huge(customers: int = HUGE_CUSTOMERS, seed: int = 7) -> dict:
    """The whole workbook on about 50M order lines (`customers` customers, no touch log) with a 4 GB
    DuckDB cap, one stage at a time (see the module docstring)."""
    return {**large(customers, seed, jobs=1, touchpoints=False, memory_limit="4GB"), "case": "huge"}


HUGE_HEADING = "## The whole workbook on 50M order lines with a 4 GB cap"


def huge_section(g: dict) -> list[str]:
    """The results.md section of a `huge` run: its row, the per-stage breakdown, the date and machine."""
    from benchmarks.__main__ import machine

    return [HUGE_HEADING, "",
            f"{dt.date.today().isoformat()} · {machine()} · command: `python -m benchmarks --huge` (`make bench-50m`); "
            "`make bench` keeps this section as it is.", "",
            "| case | rows | seconds | peak RSS (MB) | baseline | baseline s | baseline MB | time ratio |",
            "|---|---|---|---|---|---|---|---|", *scale_rows(g), "",
            "```", f"inputs {g['input_rows']}", *([f"FAILED: {g['error']}"] if g["error"] else breakdown(g["result"])), "```"]


def markdown_rows(demo_result: dict, large_result: dict) -> list[str]:
    """Table rows for benchmarks/results.md (case | rows | seconds | peak RSS (MB) | baseline |
    baseline s | baseline MB | time ratio), the commands in the case column."""
    d, g = demo_result, large_result
    command = f"`crmbook run --params {d['params']} --jobs {d['jobs']} --reports-dir <tmp>`"
    (mb, who), (base_mb, base_who) = d["peak"], d["baseline_peak"]
    rows = [f"| demo end to end: {command} ({d['customers']:,} customers) | {d['rows']:,} order lines | {d['seconds']:.2f} | "
            f"{mb:.0f} ({who}; runner {d['result']['runner_peak_mb']:.0f}) | floor: the same command with "
            f"`--notebooks <tmp>/floor` (parameters cell only; same names, metadata, params, jobs) | "
            f"{d['baseline_seconds']:.2f} | {base_mb:.0f} ({base_who}) | {d['time_ratio']:.2f}× |"]
    return rows + scale_rows(g)


def scale_rows(g: dict) -> list[str]:
    """The results.md row of a `large` (or `huge`) run."""
    rows = []
    label = (f"whole workbook at scale: `crmbook synth --customers {g['customers']:,} --seed {g['seed']} --messy"
             f"{'' if g['touchpoints'] else ' --no-touchpoints'}` (not timed: {g['generation_seconds']:.0f} s), then "
             f"`crmbook run --params <default.yaml's sources there{', run.memory_limit: ' + g['memory_limit'] if g['memory_limit'] else ''}> "
             f"--jobs {g['jobs']} --reports-dir <tmp>`")
    if g["error"]:
        rows.append(f"| {label} | {g['rows']:,} order lines | FAILED: {' '.join(g['error'].split())[:300]} | — | — | — | — | — |")
    else:
        mb, who = g["peak"]
        rows.append(f"| {label} | {g['rows']:,} order lines | {g['seconds']:.2f} | "
                    f"{mb:.0f} ({who}; runner {g['result']['runner_peak_mb']:.0f}) | — | — | — | — |")
    return rows


def report(demo_result: dict, large_result: dict) -> list[str]:
    """What the runs spent their time on, for stdout."""
    d, g = demo_result, large_result
    out = [f"demo: {d['seconds']:.1f} s vs floor {d['baseline_seconds']:.1f} s = {d['time_ratio']:.2f}× "
           f"({'meets' if d['meets_target'] else 'MISSES'} the target <= {TARGET_RATIO}×); 1-minute load "
           f"{d['load_average'][0]} before, {d['load_average'][1]} after", *breakdown(d["result"], d["floor"], d["imports"])]
    out.append(f"large: {g['customers']:,} customers, {g['rows']:,} order lines, inputs {g['input_rows']}; "
               f"generation {g['generation_seconds']:.1f} s (not timed)")
    out += [f"  FAILED: {g['error']}"] if g["error"] else [f"  run {g['seconds']:.1f} s", *breakdown(g["result"])]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=LARGE_CUSTOMERS, help="customers of the large run")
    parser.add_argument("--demo-customers", type=int, default=None,
                        help="a demo of this size in a temporary folder instead of params/default.yaml's")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    results = demo(args.demo_customers, jobs=args.jobs), large(args.customers, jobs=args.jobs)
    print(f"{dt.date.today().isoformat()} · {platform.machine()} · {os.cpu_count()} cores · {platform.python_version()}\n")
    print("\n".join(markdown_rows(*results)))
    print()
    print("\n".join(report(*results)))


if __name__ == "__main__":
    main()
