"""Run the benchmarks and write benchmarks/results.md.

Cases (each case and its baseline run in their own process; wall time and peak RSS):
- ingest_clean: 01 ingestion + 02 cleaning of the synthetic demo's transactions at N customers,
  against the baseline `pandas.read_csv` of the same file (reading alone, no typing or rules).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

CASES = {
    "ingest_clean": """
import time, resource, sys
from crmbook import cleaning, config, ingestion
cfg = config.load(sys.argv[1])
t = time.perf_counter()
tables, _ = ingestion.ingest(cfg)
cleaning.clean({"transactions": tables["transactions"]}, cfg)
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
""",
    "baseline_read_csv": """
import time, resource, sys
import pandas as pd
t = time.perf_counter()
pd.read_csv(sys.argv[2])
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
""",
}


def measure(code: str, *args: str) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one case in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    seconds, rss_kb = out.stdout.split()
    return float(seconds), float(rss_kb) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=50_000)
    args = parser.parse_args()
    from crmbook import synth

    with tempfile.TemporaryDirectory() as tmp:
        data = synth.generate(Path(tmp) / "demo", customers=args.customers, seed=1, messy=True)
        params = Path(tmp) / "params.yaml"
        params.write_text("data:\n  sources:\n    transactions:\n      - path: demo/orders.csv\n        columns: "
                          "{order_id: OrderNo, customer_id: CustID, order_ts: OrderDate, amount: Total, category: Category, status: Status}\n"
                          "run:\n  analysis_date: 2025-01-01\n")
        rows = json.loads((data / "truth.json").read_text())["rows"]["orders.csv"]
        crm = measure(CASES["ingest_clean"], str(params), str(data / "orders.csv"))
        base = measure(CASES["baseline_read_csv"], str(params), str(data / "orders.csv"))
    lines = [
        "# Benchmark results", "",
        f"{dt.date.today().isoformat()} · {platform.machine()} · {platform.python_version()} · "
        f"command: `make bench` (`python -m benchmarks --customers {args.customers}`)", "",
        "| case | rows | seconds | peak RSS (MB) | baseline | baseline s | baseline MB | time ratio |",
        "|---|---|---|---|---|---|---|---|",
        f"| ingest + clean transactions | {rows:,} | {crm[0]:.2f} | {crm[1]:.0f} | pandas.read_csv | {base[0]:.2f} | {base[1]:.0f} | {crm[0] / base[0]:.1f}× |",
    ]
    (HERE / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
