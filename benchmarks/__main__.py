"""Run the benchmarks and write benchmarks/results.md.

Cases (each case and its baseline run in their own process, in this one run; wall time and peak RSS):
- ingest_clean: 01 ingestion + 02 cleaning of the synthetic demo's transactions at N customers,
  against the baseline `pandas.read_csv` of the same file (reading alone, no typing or rules).
- ingestion (benchmarks/ingestion.py): a 10M-row CSV to canonical Parquet against pandas.read_csv.
- workbook (benchmarks/workbook.py): the demo end to end (`crmbook run --params params/default.yaml`)
  against the floor, the same run on notebooks holding only their parameters cell (target <= 1.5x);
  the whole workbook on the demo generator's data for 230,000 customers (~1.5M order lines; no
  baseline). Per-stage and per-phase seconds are printed, not written to results.md.
- clv (benchmarks/clv.py): the BG/NBD fit on 1M customers; the customer summary of 1M, 10M and 50M
  transactions, each against a pandas groupby.
- attribution (benchmarks/attribution.py): 10M raw journeys -> paths -> Markov order 1 + heuristics.

`--quick` runs every case at a tenth of its size (a smoke test of the benchmarks themselves; the demo
is then a 500-customer demo made in a temporary folder, without the floor's warm-up run).
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
from pathlib import Path

from benchmarks import PEAK_MB

HERE = Path(__file__).resolve().parent

CASES = {
    "ingest_clean": PEAK_MB + """
import time, sys
from crmbook import cleaning, config, ingestion
cfg = config.load(sys.argv[1])
t = time.perf_counter()
tables, _ = ingestion.ingest(cfg)
cleaning.clean({"transactions": tables["transactions"]}, cfg)
print(time.perf_counter() - t, peak_mb())
""",
    "baseline_read_csv": PEAK_MB + """
import time, sys
import pandas as pd
t = time.perf_counter()
pd.read_csv(sys.argv[2])
print(time.perf_counter() - t, peak_mb())
""",
}


def measure(code: str, *args: str) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one case in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    seconds, peak = out.stdout.split()
    return float(seconds), float(peak)


def machine() -> str:
    """CPU model (/proc/cpuinfo), logical cores and total RAM (/proc/meminfo) of this machine."""
    def field(path: str, name: str) -> str | None:
        try:
            with open(path) as info:  # noqa: PTH123
                return next((line.split(":", 1)[1].strip() for line in info if line.startswith(name)), None)
        except OSError:
            return None

    memory = field("/proc/meminfo", "MemTotal")
    ram = f"{int(memory.split()[0]) / 2**20:.1f} GB RAM" if memory else "RAM unknown"
    return f"{field('/proc/cpuinfo', 'model name') or platform.processor() or 'CPU unknown'}, {os.cpu_count()} cores, {ram}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=50_000, help="customers of the ingest + clean case")
    parser.add_argument("--quick", action="store_true", help="every case at a tenth of its size")
    parser.add_argument("--huge", action="store_true", help="only the whole workbook on ~50M order lines with a 4 GB cap "
                                                            "(about an hour); its section of results.md is replaced")
    args = parser.parse_args()
    if args.huge:
        from benchmarks import workbook

        result = workbook.huge(customers=workbook.HUGE_CUSTOMERS // (10 if args.quick else 1))
        section = workbook.huge_section(result)
        print("\n".join(["huge run's output, time-stamped:", *workbook.timeline(result.get("result", {"lines": []})), *section]))
        (HERE / "results.md").write_text(_without_huge() + "\n" + "\n".join(section) + "\n", encoding="utf-8")
        return
    scale = 10 if args.quick else 1
    from benchmarks import attribution, clv, ingestion, workbook
    from crmbook import synth

    with tempfile.TemporaryDirectory() as tmp:
        data = synth.generate(Path(tmp) / "demo", customers=args.customers // scale, seed=1, messy=True)
        params = Path(tmp) / "params.yaml"
        params.write_text("data:\n  sources:\n    transactions:\n      - path: demo/orders.csv\n        columns: "
                          "{order_id: OrderNo, customer_id: CustID, order_ts: OrderDate, amount: Total, category: Category, status: Status}\n"
                          "run:\n  analysis_date: 2025-01-01\n")
        rows = json.loads((data / "truth.json").read_text())["rows"]["orders.csv"]
        crm = measure(CASES["ingest_clean"], str(params), str(data / "orders.csv"))
        base = measure(CASES["baseline_read_csv"], str(params), str(data / "orders.csv"))
    lines = [
        "# Benchmark results", "",
        f"{dt.date.today().isoformat()} · {machine()} · {platform.machine()} · Python {platform.python_version()} · "
        f"command: `make bench` (`python -m benchmarks --customers {args.customers}{' --quick' if args.quick else ''}`)", "",
        "| case | rows | seconds | peak RSS (MB) | baseline | baseline s | baseline MB | time ratio |",
        "|---|---|---|---|---|---|---|---|",
        f"| ingest + clean transactions | {rows:,} | {crm[0]:.2f} | {crm[1]:.0f} | pandas.read_csv | {base[0]:.2f} | {base[1]:.0f} | {crm[0] / base[0]:.1f}× |",
    ]
    demo = workbook.demo(customers=500 if args.quick else None, warmup=not args.quick)
    large = workbook.large(customers=workbook.LARGE_CUSTOMERS // scale)
    print("\n".join(["demo run's output, time-stamped:", *workbook.timeline(demo["result"])]
                    + (["large run's output, time-stamped:", *workbook.timeline(large["result"])] if "result" in large else [])
                    + workbook.report(demo, large)), flush=True)
    lines += workbook.markdown_rows(demo, large)
    lines += ingestion.markdown_rows(ingestion.run(rows=10_000_000 // scale))
    lines += clv.markdown_rows(clv.run(customers=1_000_000 // scale, rows=[n // scale for n in clv.SUMMARY_ROWS]))
    lines.append(attribution.markdown_row(attribution.run(journeys=10_000_000 // scale)))
    lines += ["", "Whole runs, per stage and phase (`benchmarks/workbook.py`; seconds; imports: the stage notebook's "
              "import lines in a fresh interpreter; cells: papermill's cell times; other: kernel start and stop, saves):",
              "", "```", *workbook.report(demo, large), "```"]
    lines += ["", f"Load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())} "
                  f"({os.cpu_count()} cores; the machine is shared, so compare ratios within one run)."]
    kept = _huge_section()
    (HERE / "results.md").write_text("\n".join(lines) + "\n" + (("\n" + kept) if kept else ""), encoding="utf-8")
    print("\n".join(lines))


def _huge_section() -> str:
    """The 50M run's section of results.md as it is (written by `--huge`), or ''."""
    from benchmarks.workbook import HUGE_HEADING

    path = HERE / "results.md"
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    return text[text.index(HUGE_HEADING):] if HUGE_HEADING in text else ""


def _without_huge() -> str:
    """results.md without the 50M run's section."""
    from benchmarks.workbook import HUGE_HEADING

    path = HERE / "results.md"
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmark results\n"
    return text[:text.index(HUGE_HEADING)].rstrip("\n") + "\n" if HUGE_HEADING in text else text


if __name__ == "__main__":
    main()
