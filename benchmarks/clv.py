"""Benchmarks of the 04 CLV stage (`python -m benchmarks.clv`; `run` and `markdown_rows` for `make bench`).

Every case and its baseline run in the same run, each in a fresh interpreter, on the same input
file: wall seconds of the timed call (imports and reading the input are not timed) and the
process's peak RSS (VmHWM, which includes the interpreter and numpy/pandas/scipy/duckdb: ~100-200
MB; not `ru_maxrss`, which Linux carries over from the parent through fork and exec). The two
results are compared before anything is reported, so a fast wrong answer fails the benchmark. The
1-minute load average is recorded before and after each timed call: on 2 shared cores, other
processes' load shows directly in the wall times.

- `bgnbd_fit` (target <= 2 s, <= 1 GB): the stage's fit, `clv.fit_models(summary, ("bgnbd",))`,
  on the summary the stage fits: order lines of N simulated BG/NBD customers (default 1,000,000;
  r 0.25, alpha 28 days, a 0.8, b 2.5; first purchases spread over the year before the analysis
  date, timestamps to the second) summarised by `engine.customer_summary` in weeks, so recency and
  T are whole days / 7 and (x, t_x, T) rows repeat as they do in real data. Timed on crmbook's
  side: the `fit_models` call (which compresses the summary to its unique (x, t_x, T) rows with
  counts, fits and computes standard errors); reading the Parquet summary and imports are not.
  Baseline: lifetimes 0.11.3 itself, `BetaGeoFitter(penalizer_coef=0).fit(frequency, recency, T)`
  on the same summary (frequency, recency and T written to an .npz in the untimed step, one row
  per customer, passed as pandas Series as its users call it), in a fresh process of the
  benchmark-only venv `benchmarks/.peers-venv-lifetimes/` (lifetimes and pandas<3, made on demand
  by benchmarks/peers.py, reused when present; lifetimes is never a dependency of crmbook). Timed
  on lifetimes' side: the `fit` call alone, which rescales time to max(T) = 1, minimises the mean
  negative log-likelihood of every customer (weights of 1: `fit` does not compress the rows itself;
  its `weights` argument is left to the caller) with BFGS from log-parameters 0.1 and tol 1e-7 and
  autograd's gradient, then autograd's Hessian and the standard errors; imports and building the
  Series are not timed. Both fits must find the same maximum: parameters within a tenth of crmbook's
  standard error, and the stage's log-likelihood no lower than lifetimes' (its own per-customer
  `_negative_log_likelihood` at its parameters on the unscaled data, evaluated after the timer).
  `--no-peers`, or a lifetimes venv that cannot be made (no python3.11, no network, no wheel),
  falls back to re-implemented lifetimes' algorithm, said so in the results row: BFGS on the mean
  log-likelihood of every customer in lifetimes' rescaled time with crmbook's analytic gradient
  in place of autograd's (so if anything faster than lifetimes), the Hessian by central
  differences, its log-likelihood from FHL (2005) eq. (6) written out independently of crmbook.
- `customer_summary` (target at 10M lines <= 5 s, <= 1 GB): `engine.customer_summary` (DuckDB) on a
  Parquet file of N order lines (default 1M, 10M and 50M, each size with its own file and its own
  baseline; at 10M: 3.7M orders of 2.7 lines on average sharing the order's timestamp, 650k
  customers with skewed activity over two years, string ids, an export in time order), against
  pandas computing the same summary from the same file (three groupbys: lines -> orders ->
  purchase days -> customers, sums in integer micro-units as in the engine). Every column must
  agree. The time depends on the orders and purchase days more than on the lines: with one line per
  order (10M orders) it is about twice as long. The file is written by a separate process (not
  timed), so the benchmark's own process stays small. The pandas side runs with its address space
  limited to the memory available when it starts less 1 GB (RLIMIT_AS): where it would not fit
  (50M lines on a small machine) it fails with MemoryError instead of waking the kernel's
  out-of-memory killer on a shared machine; such a failure, or the process being killed, is
  recorded in the row (no ratio), and the engine's figures are still reported.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from benchmarks import PEAK_MB, peers

HERE = Path(__file__).resolve().parent

AS_OF = dt.date(2025, 1, 1)
TARGETS = {"bgnbd_fit": (2.0, 1024.0), "customer_summary": (5.0, 1024.0)}
SUMMARY_TARGET_ROWS = 10_000_000  # the customer_summary target is for this size
SUMMARY_ROWS = (1_000_000, 10_000_000, 50_000_000)
HEADROOM_MB = 1024  # left to the rest of the machine when the pandas side's memory is limited
BGNBD_TRUE = {"r": 0.25, "alpha": 28.0 / 7.0, "a": 0.8, "b": 2.5}  # alpha per week (28 days)
LIFETIMES_QUOTED_S = 16.0  # lifetimes' fit on 1M customers, quoted in the fallback's row
SUMMARY_COLUMNS = ("customer_id", "first_purchase", "last_purchase", "orders", "revenue", "purchase_days", "frequency",
                   "recency", "T", "recency_days", "monetary", "aov", "mean_interpurchase_days")

_PEAK = PEAK_MB

_FIT = _PEAK + """
import json, os, sys, time
import pandas as pd
from crmbook import clv
summary = pd.read_parquet(sys.argv[1])
start = time.perf_counter()
model = clv.fit_models(summary, ("bgnbd",))["bgnbd"]
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_mb": peak_mb(), "load_after": os.getloadavg()[0],
                  "converged": model.converged_, "message": model.message_, "params": model.params_,
                  "std_errors": model.std_errors_, "log_likelihood": model.log_likelihood_, "unique_rows": model.n_unique_}))
"""

_FIT_BASELINE = _PEAK + """
import json, os, sys, time
import numpy as np, pandas as pd
from scipy import optimize
from scipy.special import gammaln
from crmbook import clv
summary = pd.read_parquet(sys.argv[1])
x, tx, T = (summary[c].to_numpy(float) for c in ("frequency", "recency", "T"))
start = time.perf_counter()
scale = 1.0 / T.max()  # lifetimes 0.11.3's _scale_time
data = (x, tx * scale, T * scale)

def nll_grad(theta):  # lifetimes: mean NLL of every customer over log-parameters and its exact gradient
    params = np.exp(theta)
    ll, g = clv._bg_loglik(params, *data, shift=0, grad=True)
    value = -ll.mean()
    if not np.isfinite(value):
        return np.inf, np.zeros(4)
    return value, -g.mean(axis=0) * params

res = optimize.minimize(nll_grad, 0.1 * np.ones(4), jac=True, method="BFGS", tol=1e-7)  # lifetimes' settings
params = np.exp(res.x)

def total_grad(p):
    return -clv._bg_loglik(p, *data, shift=0, grad=True)[1].sum(axis=0)

hess = np.empty((4, 4))
for j in range(4):  # central differences of the gradient (lifetimes: autograd's hessian)
    step = np.eye(4)[j] * 1e-5 * params[j]
    hess[:, j] = (total_grad(params + step) - total_grad(params - step)) / (2 * step[j])
se = np.sqrt(np.diag(np.linalg.inv(0.5 * (hess + hess.T))))
seconds = time.perf_counter() - start

def eq6(r, alpha, a, b):  # FHL (2005) eq. (6) for every customer, written out independently of crmbook
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
    a3 = -(r + x) * np.log(alpha + T)
    a4 = np.log(a) - np.log(np.maximum(b + x - 1, 1e-300)) - (r + x) * np.log(alpha + tx)
    return a1 + a2 + np.where(x > 0, np.logaddexp(a3, a4), a3)

params[1] /= scale
se[1] /= scale
names = ("r", "alpha", "a", "b")
print(json.dumps({"seconds": seconds, "peak_mb": peak_mb(), "load_after": os.getloadavg()[0], "converged": bool(res.success),
                  "params": dict(zip(names, map(float, params))), "std_errors": dict(zip(names, map(float, se))),
                  "log_likelihood": float(eq6(*params).sum()), "evaluations": int(res.nfev)}))
"""

_FIT_LIFETIMES = _PEAK + """
import json, os, sys, time
import numpy as np, pandas as pd
from lifetimes import BetaGeoFitter
with np.load(sys.argv[1]) as data:
    summary = pd.DataFrame({c: data[c] for c in ("frequency", "recency", "T")})
frequency, recency, T = summary["frequency"], summary["recency"], summary["T"]
start = time.perf_counter()
model = BetaGeoFitter(penalizer_coef=0.0).fit(frequency, recency, T)
seconds = time.perf_counter() - start
peak = peak_mb()
load_after = os.getloadavg()[0]
params = model.params_
log_params = np.log(params[["r", "alpha", "a", "b"]].to_numpy(float))
x, tx, age = (summary[c].to_numpy() for c in ("frequency", "recency", "T"))
ones = np.ones(len(summary))  # lifetimes' own likelihood at its maximum, unscaled time, every customer
ll = -BetaGeoFitter._negative_log_likelihood(log_params, x.astype(int), tx, age, ones, 0.0) * len(summary)
print(json.dumps({"seconds": seconds, "peak_mb": peak, "load_after": load_after, "converged": True,
                  "params": {k: float(v) for k, v in params.items()},
                  "std_errors": {k: float(v) for k, v in model.standard_errors_.items()},
                  "log_likelihood": float(ll), "customers": int(len(model.data)), "scale": float(model._scale)}))
"""

_ENGINE = _PEAK + """
import datetime as dt, json, os, sys, time
from crmbook import engine
path, out, as_of = sys.argv[1], sys.argv[2], dt.date.fromisoformat(sys.argv[3])
start = time.perf_counter()
summary = engine.customer_summary(engine.connect(), path, as_of, "weeks")
seconds = time.perf_counter() - start
summary.to_parquet(out)
print(json.dumps({"seconds": seconds, "peak_mb": peak_mb(), "load_after": os.getloadavg()[0],
                  "customers": len(summary)}))
"""

_PANDAS = _PEAK + """
import datetime as dt, json, os, sys, time
import numpy as np, pandas as pd
path, out, as_of = sys.argv[1], sys.argv[2], pd.Timestamp(sys.argv[3])
start = time.perf_counter()
lines = pd.read_parquet(path, columns=["customer_id", "order_id", "order_ts", "amount"])
lines = lines[lines["order_ts"] < as_of + pd.Timedelta(days=1)]
lines = pd.DataFrame({"customer_id": lines["customer_id"], "order_id": lines["order_id"],
                      "day": lines["order_ts"].dt.floor("D"),
                      "micro": np.round(lines["amount"].to_numpy() * 1e6).astype(np.int64)})  # exact sums
orders = lines.groupby(["customer_id", "day", "order_id"], sort=False)["micro"].sum().reset_index()
days = (orders.groupby(["customer_id", "day"], sort=False)["micro"].agg(["sum", "size"]).reset_index()
        .sort_values(["customer_id", "day"], kind="stable"))
g = days.groupby("customer_id", sort=True)
summary = pd.DataFrame({"first_purchase": g["day"].first(), "last_purchase": g["day"].last(),
                        "orders": g["size"].sum(), "value": g["sum"].sum(), "first_value": g["sum"].first(),
                        "purchase_days": g.size()})
span = (summary["last_purchase"] - summary["first_purchase"]).dt.days
repeats = summary["purchase_days"] - 1
summary = pd.DataFrame({
    "customer_id": summary.index.astype(str),
    "first_purchase": summary["first_purchase"], "last_purchase": summary["last_purchase"],
    "orders": summary["orders"], "revenue": summary["value"] / 1e6, "purchase_days": summary["purchase_days"],
    "frequency": repeats, "recency": span / 7.0, "T": (as_of - summary["first_purchase"]).dt.days / 7.0,
    "recency_days": (as_of - summary["last_purchase"]).dt.days,
    "monetary": ((summary["value"] - summary["first_value"]) / repeats.where(repeats > 0) / 1e6).fillna(0.0),
    "aov": summary["value"] / summary["orders"] / 1e6,
    "mean_interpurchase_days": span / repeats.where(repeats > 0),
}).reset_index(drop=True)
seconds = time.perf_counter() - start
summary.to_parquet(out)
print(json.dumps({"seconds": seconds, "peak_mb": peak_mb(), "load_after": os.getloadavg()[0],
                  "customers": len(summary)}))
"""


_WRITE = """
import sys
from pathlib import Path
from benchmarks.clv import write_transactions
write_transactions(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
print("{}")
"""


def _run(code: str, *args, limit_mb: float | None = None) -> dict:
    """One case in a fresh interpreter (its address space limited to `limit_mb` when given); its
    last output line is a JSON object. Raises RuntimeError with why it failed."""
    def limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (int(limit_mb * 2**20),) * 2)

    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                         cwd=HERE.parent, preexec_fn=limit if limit_mb else None)
    if out.returncode:
        raise RuntimeError(_failure(out.returncode, out.stderr))
    return json.loads(out.stdout.strip().splitlines()[-1])


def _failure(returncode: int, stderr: str) -> str:
    """Why a case's process failed, in one line: the signal that killed it, else its last error line."""
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name} (out of memory?)"
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return lines[-1][:300] if lines else f"exit code {returncode}"


def available_mb() -> float:
    """MemAvailable from /proc/meminfo in MB (memory the system can give without swapping)."""
    with open("/proc/meminfo") as meminfo:  # noqa: PTH123
        return next(int(line.split()[1]) / 1024 for line in meminfo if line.startswith("MemAvailable:"))


def _load() -> float:
    """The 1-minute load average (other processes competing for the cores)."""
    return round(os.getloadavg()[0], 2)


def _require(condition: bool, message: str) -> None:
    """Stop the benchmark when the case and its baseline disagree (kept under python -O, unlike assert)."""
    if not condition:
        raise AssertionError(message)


def write_bgnbd_transactions(path: Path, customers: int = 1_000_000, seed: int = 0) -> Path:
    """A clean-transactions Parquet of `customers` simulated BG/NBD customers, one line per order.

    Rates per day: lambda ~ Gamma(r 0.25, alpha 28), p ~ Beta(0.8, 2.5) (FHL 2005's process: Poisson
    purchases while active, drop-out with probability p after each repeat purchase). First purchases
    are uniform over the 365 days before AS_OF, at any second of the day."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    lam = rng.gamma(BGNBD_TRUE["r"], 1.0 / 28.0, customers)
    p = rng.beta(BGNBD_TRUE["a"], BGNBD_TRUE["b"], customers)
    t = rng.uniform(0.0, 365.0, customers)  # days since AS_OF - 365
    who, when = [np.arange(customers)], [t.copy()]
    alive = np.arange(customers)
    while alive.size:
        nxt = t[alive] + rng.exponential(1.0, alive.size) / lam[alive]
        inside = nxt < 365.0
        alive, nxt = alive[inside], nxt[inside]
        t[alive] = nxt
        who.append(alive)
        when.append(nxt)
        alive = alive[rng.random(alive.size) >= p[alive]]
    customer, days = np.concatenate(who), np.concatenate(when)
    start = np.datetime64(AS_OF - dt.timedelta(days=365), "us")
    table = pa.table({
        "order_id": pc.cast(pa.array(np.arange(customer.size, dtype=np.int64)), pa.string()),
        "customer_id": pc.cast(pa.array(customer.astype(np.int64)), pa.string()),
        "order_ts": pa.array(start + (days * 86_400e6).astype("timedelta64[us]")),
        "amount": pa.array(np.round(rng.gamma(4.0, 10.0, customer.size) + 1.0, 2)),
    })
    pq.write_table(table, path, compression="zstd")
    return path


def write_transactions(path: Path, rows: int = 10_000_000, seed: int = 0) -> Path:
    """A clean-transactions Parquet of `rows` order lines made with numpy: rows/2.5 orders (lines
    per order ~ 1 + Poisson(1.5) in effect: each line picks an order at random), each with one
    timestamp over the two years before AS_OF and one of rows/10 customers (activity ~ Gamma(0.5),
    so many never buy); lines of an order adjacent, orders in time order, string ids, amounts > 0."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    customers, orders = max(rows // 10, 1), max(int(rows / 2.5), 1)
    weights = rng.gamma(0.5, 1.0, customers)
    order_customer = rng.choice(customers, size=orders, p=weights / weights.sum())
    order_seconds = np.sort(rng.integers(0, 730 * 86_400, orders))
    line_order = np.sort(rng.integers(0, orders, rows))
    start = np.datetime64(AS_OF - dt.timedelta(days=730), "us")
    table = pa.table({
        "order_id": pc.cast(pa.array(line_order.astype(np.int64)), pa.string()),
        "customer_id": pc.cast(pa.array(order_customer[line_order].astype(np.int64)), pa.string()),
        "order_ts": pa.array(start + order_seconds[line_order].astype("timedelta64[s]").astype("timedelta64[us]")),
        "amount": pa.array(np.round(rng.gamma(2.0, 25.0, rows) + 1.0, 2)),
    })
    pq.write_table(table, path, compression="zstd")
    return path


def _check_same_maximum(ours: dict, base: dict) -> dict:
    """Both fits found the same maximum: parameters within a tenth of a standard error, and the
    stage's log-likelihood no lower than the baseline's (to 1e-6 in total: a different maximum or a
    wrong likelihood would be off by far more). Returns each parameter's gap in standard errors."""
    gaps = {}
    for name, value in ours["params"].items():
        gaps[name] = abs(value - base["params"][name]) / ours["std_errors"][name]
        _require(gaps[name] <= 0.1, f"BG/NBD {name}: {value} vs baseline {base['params'][name]}")
    ll, base_ll = ours["log_likelihood"], base["log_likelihood"]
    _require(ll >= base_ll - 1e-6, f"BG/NBD log-likelihood {ll} < baseline {base_ll}")
    return gaps


def bgnbd_fit(customers: int = 1_000_000, seed: int = 0, use_peers: bool = True) -> dict:
    """The stage's BG/NBD fit on the weekly summary of `customers` simulated customers, against
    lifetimes' BetaGeoFitter on every customer (its own venv; else its algorithm re-implemented),
    same summary, same run. Simulation, summary and writing the inputs are not timed."""
    import numpy as np

    from crmbook import clv, engine

    python, versions = peers.ensure(peers.LIFETIMES) if use_peers else (None, "--no-peers")
    with tempfile.TemporaryDirectory() as tmp:
        lines = write_bgnbd_transactions(Path(tmp) / "transactions.parquet", customers, seed)
        summary = clv._tidy_summary(engine.customer_summary(engine.connect(), lines, AS_OF, "weeks"))
        path = Path(tmp) / "summary.parquet"
        summary.to_parquet(path)
        peer_input = Path(tmp) / "summary.npz"  # the lifetimes venv has no pyarrow: the same three columns
        np.savez(peer_input, **{c: summary[c].to_numpy() for c in ("frequency", "recency", "T")})
        load = _load()
        ours = _run(_FIT, path)
        if python is not None:
            base = peers.run(python, _FIT_LIFETIMES, peer_input)
            _require(base["customers"] == len(summary), "lifetimes did not fit every customer")
            baseline = (f"lifetimes {versions['lifetimes']} BetaGeoFitter.fit, every customer "
                        f"(pandas {versions['pandas']}, own venv)")
        else:
            base = _run(_FIT_BASELINE, path)
            baseline = f"lifetimes' algorithm re-implemented, every customer (lifetimes not run: {versions})"
    _require(ours["converged"], f"BG/NBD fit did not converge: {ours['message']}")
    _require(base["converged"], "baseline BG/NBD fit did not converge")
    gaps = _check_same_maximum(ours, base)
    result = {"case": "bgnbd_fit", "label": "04 BG/NBD fit: fit_models on the weekly summary (customers)",
              "rows": customers, "seconds": ours["seconds"], "peak_mb": ours["peak_mb"],
              "baseline": baseline, "baseline_seconds": base["seconds"],
              "baseline_peak_mb": base["peak_mb"],
              "load_average": (load, round(ours["load_after"], 2), round(base["load_after"], 2)),
              "unique_rows": ours["unique_rows"], "params": ours["params"], "std_errors": ours["std_errors"],
              "baseline_params": base["params"], "gaps_in_std_errors": gaps,
              "log_likelihood": ours["log_likelihood"], "baseline_log_likelihood": base["log_likelihood"],
              "true_params": BGNBD_TRUE, "peer_versions": versions if python is not None else None}
    if python is None:
        result["lifetimes_quoted_seconds"] = LIFETIMES_QUOTED_S
    return result


def _check_same_summary(engine_path: Path, pandas_path: Path) -> None:
    """Every column of the two summaries agrees (floats to 1e-9 relative, which is exact for these sums)."""
    import numpy as np
    import pandas as pd

    a, b = pd.read_parquet(engine_path), pd.read_parquet(pandas_path)
    _require(len(a) == len(b), f"summary: {len(a)} customers in the engine's, {len(b)} in pandas'")
    _require(a["customer_id"].astype(str).tolist() == b["customer_id"].astype(str).tolist(),
             "summary: different customers, or in a different order")
    for column in SUMMARY_COLUMNS[1:]:
        left, right = a[column], b[column]
        if column in ("first_purchase", "last_purchase"):
            same = (pd.to_datetime(left).to_numpy() == pd.to_datetime(right).to_numpy()).all()
        else:
            x, y = left.to_numpy(float, na_value=np.nan), right.to_numpy(float, na_value=np.nan)
            same = np.allclose(x, y, rtol=1e-9, atol=1e-9, equal_nan=True)
        _require(bool(same), f"summary: {column} differs between the engine and pandas")


def customer_summary(rows: int = 10_000_000, seed: int = 0) -> dict:
    """engine.customer_summary against the same summary in pandas, same file, same run; the two
    results must agree before the times are reported. Writing the file is not timed. When the
    pandas side fails (out of memory), `baseline_error` says why and its figures are None."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "transactions.parquet"
        _run(_WRITE, path, rows, seed)
        load = _load()
        duck = _run(_ENGINE, path, Path(tmp) / "engine.parquet", AS_OF.isoformat())
        limit = available_mb() - HEADROOM_MB
        try:
            base, error = _run(_PANDAS, path, Path(tmp) / "pandas.parquet", AS_OF.isoformat(), limit_mb=limit), None
        except RuntimeError as failure:
            base, error = {"seconds": None, "peak_mb": None, "load_after": os.getloadavg()[0]}, str(failure)
        if error is None:
            _check_same_summary(Path(tmp) / "engine.parquet", Path(tmp) / "pandas.parquet")
    return {"case": "customer_summary", "label": "04 engine.customer_summary from Parquet (order lines)",
            "rows": rows, "seconds": duck["seconds"], "peak_mb": duck["peak_mb"],
            "baseline": "pandas groupby, same summary", "baseline_seconds": base["seconds"],
            "baseline_peak_mb": base["peak_mb"], "baseline_error": error, "baseline_limit_mb": round(limit),
            "load_average": (load, round(duck["load_after"], 2), round(base["load_after"], 2)),
            "customers": duck["customers"]}


def run(customers: int = 1_000_000, rows: Sequence[int] = SUMMARY_ROWS, seed: int = 0, use_peers: bool = True) -> list[dict]:
    """The BG/NBD fit and the customer summary at each size in `rows`, each with its baseline; each
    dict has case, label, rows, seconds, peak_mb, baseline, baseline_seconds, baseline_peak_mb,
    time_ratio (None when the baseline failed), load_average (1-minute, before and after the timed
    calls), target_seconds, target_mb, meets_target (None where no target is set), case details."""
    results = [bgnbd_fit(customers, seed, use_peers), *(customer_summary(n, seed) for n in rows)]
    for result in results:
        has_target = result["case"] != "customer_summary" or result["rows"] == SUMMARY_TARGET_ROWS
        seconds, mb = TARGETS[result["case"]] if has_target else (None, None)
        base = result["baseline_seconds"]
        result.update(time_ratio=result["seconds"] / base if base else None, target_seconds=seconds, target_mb=mb,
                      meets_target=result["seconds"] <= seconds and result["peak_mb"] <= mb if has_target else None)
    return results


def markdown_rows(results: list[dict]) -> list[str]:
    """Table rows for benchmarks/results.md: case | rows | seconds | peak RSS (MB) | baseline |
    baseline s | baseline MB | time ratio (a failed baseline: why, and dashes)."""
    def baseline(r: dict) -> str:
        if r.get("baseline_error"):
            return (f"{r['baseline']}: FAILED ({r['baseline_error']}; address space limited to "
                    f"{r['baseline_limit_mb']:,} MB) | — | — | — |")
        return f"{r['baseline']} | {r['baseline_seconds']:.2f} | {r['baseline_peak_mb']:.0f} | {r['time_ratio']:.2f}× |"

    return [f"| {r['label']} | {r['rows']:,} | {r['seconds']:.2f} | {r['peak_mb']:.0f} | {baseline(r)}" for r in results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1_000_000, help="customers in the BG/NBD fit")
    parser.add_argument("--rows", type=int, nargs="+", default=list(SUMMARY_ROWS),
                        help="order lines in the customer summary, one case per size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-peers", action="store_true",
                        help="do not make or use the lifetimes venv: baseline lifetimes' algorithm re-implemented")
    args = parser.parse_args()
    results = run(args.customers, args.rows, args.seed, use_peers=not args.no_peers)
    print(f"{dt.date.today().isoformat()} · {platform.machine()} · {os.cpu_count()} cores · {platform.python_version()} · "
          f"command: `python -m benchmarks.clv --customers {args.customers} --rows {' '.join(map(str, args.rows))}"
          f"{' --no-peers' if args.no_peers else ''}`\n")
    print("| case | rows | seconds | peak RSS (MB) | baseline | baseline s | baseline MB | time ratio |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(markdown_rows(results)))
    print()
    for r in results:
        verdict = ("no target at this size" if r["meets_target"] is None else
                   f"{'meets' if r['meets_target'] else 'MISSES'} the target (<= {r['target_seconds']:g} s, <= {r['target_mb']:.0f} MB)")
        print(f"{r['case']} ({r['rows']:,}): {verdict}; "
              f"1-minute load average {r['load_average'][0]} before, "
              f"{', '.join(map(str, r['load_average'][1:]))} after the timed calls, on {os.cpu_count()} cores")
        if r["case"] == "bgnbd_fit":
            print("  BG/NBD " + "; ".join(f"{n} {v:.4f} vs {r['baseline_params'][n]:.4f} (se {r['std_errors'][n]:.4f}, "
                                          f"gap {r['gaps_in_std_errors'][n]:.1e} se)" for n, v in r["params"].items())
                  + f"; log-likelihood {r['log_likelihood']:.6f} vs {r['baseline_log_likelihood']:.6f}"
                  + f"; {r['unique_rows']:,} unique rows")


if __name__ == "__main__":
    main()
