"""Attribution benchmark: raw touch-log journeys -> paths (DuckDB + numpy) -> Markov order 1 + every heuristic.

`run(journeys)` generates a synthetic touch log and its orders as Parquet (in a subprocess, not
timed), then measures the stage's own code in a fresh interpreter: preparing the log and the
orders in DuckDB (`attribution._load_touch_log`), building the journeys and counting them by path
(`attribution.journey_paths`, fixed 30-day lookback: DuckDB sorts the log by customer and time,
numpy cuts it into journeys batch by batch; the first read also counts the distinct customer ids
that make the customer keys exact), then `markov_attribution(paths, 1)` and
`heuristic_attribution(paths)`. Wall time of that work (`seconds_journeys` up to the paths,
`seconds_models` after), the CPU seconds it used (DuckDB's threads included: on a busy machine
wall time can exceed CPU time / cores by far) and the process's peak RSS (Python, pandas and
DuckDB's native memory together). The load average before and after is recorded, because other
processes on the machine change the wall time.

Targets (issue 6): at most 20 s and 1.5 GB for 10M journeys. Baseline: ChannelAttribution's
`markov_model` takes about 81 s and 2.7 GB on 10M raw journeys on this machine (measured by the lead
engineer; ChannelAttribution is GPL-3 and not installed here, so it is quoted, not rerun).

The generated log: `journeys // 4` customers with 4 journeys each, 50 days apart; each journey has
1 + Poisson(1.5) touches on 10 channels in the 14 days before its end; 30% of journeys end in an
order (the conversion). Customer ids are strings ('C' + 9 digits), channels dictionary-encoded
strings, times microsecond timestamps, as in the clean tables 02 writes.

    python -m benchmarks.attribution --journeys 10000000
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

BASELINE = {"name": "ChannelAttribution markov_model (R/C++, GPL-3; quoted, not rerun)", "seconds": 81.0, "mb": 2700.0}
TARGET = {"seconds": 20.0, "mb": 1500.0}
LOOKBACK_DAYS = 30
MEMORY_LIMIT = "1GB"

GENERATE = r"""
import sys
from pathlib import Path
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

folder, journeys, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(seed)
per_customer, day = 4, 86_400_000_000
channels = np.array(["email", "paid_search", "social", "display", "affiliate", "direct", "organic", "video",
                     "push", "sms"])
weights = np.array([0.2, 0.12, 0.14, 0.18, 0.04, 0.1, 0.1, 0.05, 0.04, 0.03])
n_cust = journeys // per_customer
journeys = n_cust * per_customer
t0 = np.datetime64("2023-01-01T00:00:00", "us").astype(np.int64)
start = t0 + rng.integers(0, 365 * day, n_cust)
end = np.repeat(start, per_customer) + np.tile(np.arange(per_customer) * 50 * day, n_cust) + 14 * day
converted = rng.random(journeys) < 0.3
n_touch = 1 + rng.poisson(1.5, journeys)
touch_journey = np.repeat(np.arange(journeys), n_touch)
ts = end[touch_journey] - (rng.random(touch_journey.size) * 14 * day).astype(np.int64)
order = np.argsort(ts, kind="stable")
ts, touch_journey = ts[order], touch_journey[order]
channel = rng.choice(len(channels), touch_journey.size, p=weights).astype(np.int8)

def ids(index):
    text = pc.cast(pa.array(index + 1), pa.string())
    return pc.binary_join_element_wise("C", pc.utf8_lpad(text, 9, "0"), "")

touch_cust = (touch_journey // per_customer).astype(np.int64)
pq.write_table(pa.table({
    "customer_id": ids(touch_cust),
    "ts": pa.array(ts, pa.timestamp("us")),
    "channel": pa.DictionaryArray.from_arrays(pa.array(channel), pa.array(channels)),
}), folder / "clean_touchpoints.parquet", compression="zstd")
conv = np.flatnonzero(converted)
amount = np.round(rng.gamma(2.0, 30.0, conv.size), 2)
pq.write_table(pa.table({
    "order_id": pc.binary_join_element_wise("O", pc.utf8_lpad(pc.cast(pa.array(conv + 1), pa.string()), 9, "0"), ""),
    "customer_id": ids(conv // per_customer),
    "order_ts": pa.array(end[conv], pa.timestamp("us")),
    "amount": pa.array(amount),
}), folder / "clean_transactions.parquet", compression="zstd")
print(journeys, touch_journey.size, conv.size)
"""

MEASURE = r"""
import json, resource, sys, tempfile, time
from crmbook import attribution as A, engine

folder, lookback, memory_limit = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with tempfile.TemporaryDirectory() as spill:
    before = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = before.ru_utime + before.ru_stime
    started = time.perf_counter()
    con = engine.connect(memory_limit=memory_limit, temp_directory=spill)
    A._load_touch_log(con, f"{folder}/clean_touchpoints.parquet", f"{folder}/clean_transactions.parquet")
    paths, stats = A.journey_paths(con, lookback)
    con.close()
    sql = time.perf_counter()
    markov = A.markov_attribution(paths, 1)
    heuristics = A.heuristic_attribution(paths)
    done = time.perf_counter()
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"seconds": done - started, "seconds_journeys": sql - started, "seconds_models": done - sql,
                  "cpu_seconds": usage.ru_utime + usage.ru_stime - cpu_before, "peak_mb": usage.ru_maxrss / 1024,
                  "paths": len(paths), "journeys_rebuilt": stats.journeys, "touches": stats.touches,
                  "conversions": stats.converting, "markov_total": float(markov["conversions"].sum()),
                  "models": int(heuristics["model"].nunique()) + 1}))
"""


def run(journeys: int = 10_000_000, seed: int = 0, memory_limit: str = MEMORY_LIMIT) -> dict:
    """Generate `journeys` raw journeys, then time journeys -> paths -> models in a fresh process.
    Returns the measurement with the generated sizes, the target and the baseline."""
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="crmbook-bench-attribution-") as tmp:
        made = subprocess.run([sys.executable, "-c", GENERATE, tmp, str(journeys), str(seed)],
                              capture_output=True, text=True, check=True)
        n_journeys, n_touches, n_orders = map(int, made.stdout.split())
        out = subprocess.run([sys.executable, "-c", MEASURE, tmp, str(LOOKBACK_DAYS), memory_limit],
                             capture_output=True, text=True, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        result["input_mb"] = sum(p.stat().st_size for p in Path(tmp).iterdir()) / 2**20
    result.update({"journeys": n_journeys, "touch_rows": n_touches, "orders": n_orders, "cores": os.cpu_count(),
                   "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                   "memory_limit": memory_limit, "target": TARGET, "baseline": BASELINE})
    return result


def markdown_row(result: dict) -> str:
    """One row for benchmarks/results.md (the columns of `python -m benchmarks`)."""
    return (f"| attribution: touch log -> paths (DuckDB sort + numpy) -> Markov 1 + 6 heuristics | {result['journeys']:,} journeys "
            f"({result['touch_rows']:,} touches; {result['cpu_seconds']:.0f} CPU s on {result['cores']} cores) | "
            f"{result['seconds']:.2f} | {result['peak_mb']:.0f} | "
            f"{BASELINE['name']} | {BASELINE['seconds']:.0f} | {BASELINE['mb']:.0f} | "
            f"{result['seconds'] / BASELINE['seconds']:.2f}× |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--journeys", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory-limit", default=MEMORY_LIMIT)
    args = parser.parse_args()
    result = run(args.journeys, args.seed, args.memory_limit)
    print(json.dumps(result, indent=2))
    print(markdown_row(result))


if __name__ == "__main__":
    main()
