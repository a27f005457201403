"""The pipeline runner: validate, execute the notebooks with papermill, export HTML, publish.

A run (GUIDE §3):
1. loads the params and checks every input before any kernel starts;
2. executes the stage notebooks into `reports/.<run_id>.partial/`, each wave of stages whose
   dependencies are done in parallel (`jobs` processes), printing a line per stage;
3. exports each executed notebook to HTML without code, writes `manifest.json` and `index.html`;
4. on success renames the folder to `reports/<run_id>/` and repoints `reports/latest`; on
   failure renames it to `reports/<run_id>.failed/`, keeps papermill's error notebook, leaves
   `latest` alone, and raises `RunError` (the command line exits 1).
A lock on the reports folder keeps two runs from publishing over each other.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import logging
import multiprocessing
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from importlib import metadata
from multiprocessing import get_context
from pathlib import Path

from typing import TYPE_CHECKING

from crmbook import config, progress
from crmbook.errors import CrmbookError, InputError, RunError

if TYPE_CHECKING:
    from crmbook import report

PROJECT_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = PROJECT_ROOT / "notebooks"
KERNEL = "python3"
KERNEL_PEAK_FILE = "kernel-peak-mb"  # written beside the kernel's sockets as it shuts down
PACKAGES = ("crmbook", "pandas", "numpy", "scipy", "scikit-learn", "statsmodels", "duckdb", "ibis-framework", "pyspark",
            "pyarrow", "papermill", "nbconvert", "nbclient", "ipykernel", "pandera", "pydantic", "seaborn", "matplotlib")


@dataclass(frozen=True)
class Stage:
    """A notebook, the stages whose outputs it reads, and the canonical tables it needs (any of)."""

    name: str
    needs: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()


def discover_stages(notebooks_dir: Path) -> tuple[Stage, ...]:
    """The stages are the notebooks `NN_name.ipynb`, in order. Each declares in its metadata
    `crmbook: {needs: [stage, ...], tables: [table, ...]}`: the stages it reads from, and the
    canonical tables of which it needs at least one (none listed: it always runs)."""
    import json

    stages = []
    for path in sorted(notebooks_dir.glob("[0-9][0-9]_*.ipynb")):
        meta = json.loads(path.read_text(encoding="utf-8")).get("metadata", {}).get("crmbook", {})
        stages.append(Stage(path.stem, tuple(meta.get("needs", ())), tuple(meta.get("tables", ()))))
    if not stages:
        raise RunError(f"no notebooks named NN_<stage>.ipynb in {notebooks_dir}")
    return tuple(stages)


NO_INPUT = "no input"


def skip_reason(stage: Stage, tables: set[str], skipped: dict[str, str]) -> str | None:
    """Why a stage cannot run with these input tables (None: it can). `skipped` maps each skipped
    stage to its reason. An upstream stage skipped only for lack of its own input tables does not
    block a stage that has its own input (05 on a paths file runs without 01 and 02)."""
    if stage.tables and not tables & set(stage.tables):
        wanted = "a " + " or ".join(stage.tables) if len(stage.tables) <= 3 else "an input"
        return f"{NO_INPUT}: needs {wanted} table, and the params have none"
    upstream = [n for n in stage.needs if n in skipped and not skipped[n].startswith(NO_INPUT)]
    return f"needs stage {upstream[0]}, which was skipped" if upstream else None


def input_tables(cfg: config.Config) -> set[str]:
    """The input tables the params provide: the canonical sources, and `attribution_paths` when
    attribution reads a pre-aggregated paths file."""
    tables = {name for name, _ in cfg.data.sources.items()}
    return tables | {"attribution_paths"} if cfg.attribution.paths_file is not None else tables


@dataclass
class StageResult:
    name: str
    status: str = "pending"
    duration_s: float = 0.0
    reason: str = ""
    peak_mb: float | None = None  # the stage kernel's peak resident memory (VmHWM), when the system reports it


@dataclass
class RunOptions:
    params_path: Path
    reports_dir: Path = Path("reports")
    jobs: int = field(default_factory=lambda: os.cpu_count() or 1)
    stages: tuple[str, ...] | None = None
    notebooks_dir: Path = NOTEBOOKS
    cell_timeout_s: int | None = 1800
    echo: bool = True


def execute_stage(notebook: Path, output: Path, params_path: Path, run_dir: Path,
                  cell_timeout_s: int | None) -> tuple[float, float | None]:
    """Execute one notebook with papermill (kernel `python3`, IPC transport so that kernels started
    in parallel cannot collide on TCP ports, papermill #511). Returns the seconds it took and the
    kernel's peak memory in MB (None where /proc does not say). Raises on failure,
    including a cell timeout, which leaves no error banner in the notebook. The output notebook is
    saved as each cell starts and ends (about 20 ms a save), so a stage that times out, whose kernel
    dies or that a signal stops still leaves the notebook up to the cell it was running."""
    import shutil
    import tempfile

    import papermill

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # kernels run side by side: one BLAS/OpenMP thread each
    _quiet(logging.getLogger("papermill"))
    started = time.perf_counter()
    socket_dir = Path(tempfile.mkdtemp(prefix="crmbook-kernel-"))
    try:
        papermill.execute_notebook(
            str(notebook), str(output), parameters={"params_path": str(params_path), "run_dir": str(run_dir)},
            kernel_name=KERNEL, cwd=str(notebook.parent), progress_bar=False, request_save_on_cell_execute=True,
            execution_timeout=cell_timeout_s, kernel_manager_class=_ipc_kernel_manager(socket_dir),
        )
    except BaseException:
        # Keep the socket folder (a kernel still starting may bind in it; it exits with its parent),
        # and the kernel's stderr beside the error notebook, where the failed run folder keeps it.
        log = socket_dir / "kernel-stderr.log"
        with contextlib.suppress(OSError):
            if log.stat().st_size:
                shutil.copyfile(log, output.with_suffix(".stderr.log"))
        raise
    seconds = time.perf_counter() - started
    peak = socket_dir / KERNEL_PEAK_FILE
    peak_mb = float(peak.read_text()) if peak.is_file() else None
    shutil.rmtree(socket_dir, ignore_errors=True)
    return seconds, peak_mb


def _ipc_kernel_manager(socket_dir: Path):
    """A kernel manager whose kernel talks over IPC sockets in `socket_dir`: kernels started in
    parallel cannot collide on TCP ports (papermill #511) nor on socket names, and no socket file
    lands next to the notebooks (jupyter_client's default is `kernel-ipc` in the working directory)."""
    from jupyter_client.manager import AsyncKernelManager

    class IPCKernelManager(AsyncKernelManager):
        transport = "ipc"

        def _ip_default(self) -> str:
            return str(socket_dir / "kernel")

        async def start_kernel(self, **kw) -> None:
            # The kernel's own stderr (library warnings; DuckDB's "nanobind: leaked instances" at
            # exit) goes to a file beside its sockets, not into the run's output: the notebook keeps
            # every cell's output, and the folder is kept when the stage fails.
            with open(socket_dir / "kernel-stderr.log", "ab") as log:
                await super().start_kernel(**{"stderr": log, **kw})

        async def shutdown_kernel(self, now: bool = False, restart: bool = False) -> None:
            # The kernel's peak memory, read just before it ends (its /proc entry goes with it).
            peak = _peak_mb(getattr(self.provisioner, "pid", None))
            if peak is not None:
                (socket_dir / KERNEL_PEAK_FILE).write_text(f"{peak:.1f}")
            await super().shutdown_kernel(now=now, restart=restart)

        async def _async_interrupt_kernel(self) -> None:
            # jupyter_client interrupts before every shutdown; an idle kernel then logs
            # "ERROR | KeyboardInterrupt caught in kernel" into the run's output, which reads like
            # a failure. A shutdown ends the kernel anyway (asked, then killed after a grace period).
            if not self.shutting_down:
                await super()._async_interrupt_kernel()

    return IPCKernelManager


def _peak_mb(pid: int | None) -> float | None:
    """Peak resident memory (VmHWM) of process `pid` in MB, or None where /proc does not say."""
    try:
        with open(f"/proc/{int(pid)}/status") as status:  # noqa: PTH123 - a /proc file, read once
            return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM:"))
    except (TypeError, ValueError, OSError, StopIteration):
        return None


def _quiet(logger: logging.Logger) -> None:
    """Keep a library's log records off the terminal: without a handler, Python prints warnings and
    errors to stderr ("Kernel died while waiting for execute reply."), and a failed run must print
    one line. The exception papermill raises carries the same news into the manifest."""
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())


def _failure_reason(error: BaseException) -> str:
    """One readable line that says why a stage or a run failed (for the manifest and the terminal)."""
    name = type(error).__name__
    if isinstance(error, CrmbookError):
        reason = str(error)
    elif name == "PapermillExecutionError":
        reason = f"cell {getattr(error, 'exec_count', '?')} raised {getattr(error, 'ename', '')}: {getattr(error, 'evalue', '')}"
    elif name == "CellTimeoutError":  # papermill leaves no error banner in the notebook: say it here
        limit = re.search(r"after (\d+) seconds", str(error))
        reason = (f"a cell ran longer than the cell timeout ({limit.group(1) + ' s' if limit else 'run.cell_timeout'}): "
                  "raise it with --cell-timeout if the data is large")
    elif isinstance(error, KeyboardInterrupt):
        reason = "interrupted (Ctrl-C)"
    elif name == "DeadKernelError":
        reason = "the notebook's kernel died (killed by a signal, or out of memory)"
    elif isinstance(error, OSError) and error.errno == errno.ENOSPC:
        reason = f"the disk is full ({error.strerror}{': ' + str(error.filename) if error.filename else ''})"
    else:
        reason = f"{name}: {error}"
    return " ".join(reason.split())


def plan_waves(stages: tuple[Stage, ...]) -> list[list[Stage]]:
    """Group stages into waves; each wave only needs stages of earlier waves."""
    selected = {s.name for s in stages}
    waves, done, todo = [], set(), list(stages)
    while todo:
        wave = [s for s in todo if {n for n in s.needs if n in selected} <= done]
        if not wave:
            raise RunError(f"stages {[s.name for s in todo]} need stages that are not selected")
        waves.append(wave)
        done |= {s.name for s in wave}
        todo = [s for s in todo if s not in wave]
    return waves


def sha256(path: Path) -> str:
    from crmbook.ingestion import file_sha256

    return file_sha256(path)


def _git_commit() -> str | None:
    with contextlib.suppress(Exception):
        out = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            return out.stdout.strip()
    return None


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def new_run_id(reports_dir: Path, params_path: Path) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    base = f"{stamp}-{params_path.stem}"
    run_id, n = base, 1
    while any((reports_dir / name).exists() for name in (run_id, f"{run_id}.failed", f".{run_id}.partial")):
        n += 1
        run_id = f"{base}-{n}"
    return run_id


@contextlib.contextmanager
def reports_lock(reports_dir: Path):
    """Hold `reports/.lock` for the whole run; a second run on the same folder is refused."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    handle = open(reports_dir / ".lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RunError(f"another crmbook run is writing to {reports_dir}; wait for it to finish") from None
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def write_atomic(path: Path, text: str) -> None:
    """Write a UTF-8 file whole or not at all (a temporary file renamed over it), so a full disk
    cannot leave a truncated manifest that a reader would take for a complete one."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def point_latest(reports_dir: Path, run_id: str) -> None:
    """Atomically repoint reports/latest at a finished run."""
    tmp = reports_dir / ".latest.tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(run_id, target_is_directory=True)
    os.replace(tmp, reports_dir / "latest")


def build_manifest(run_id: str, cfg: config.Config, results: list[StageResult], run_dir: Path,
                   started: dt.datetime, status: str, error: str | None) -> dict:
    """Run id, times, per-stage status and duration, params, sha256 of inputs and outputs, versions."""
    inputs = [{"table": table, "path": str(src.path), "sha256": sha256(cfg.resolve(src.path))}
              for table, sources in cfg.data.sources.items() for src in sources if cfg.resolve(src.path).is_file()]
    outputs = [{"path": str(p.relative_to(run_dir)), "bytes": p.stat().st_size, "sha256": sha256(p)}
               for p in sorted(run_dir.rglob("*")) if p.is_file() and p.name != "manifest.json"]
    finished = dt.datetime.now(dt.UTC)
    return {
        "run_id": run_id, "status": status, "error": error, "title": cfg.report.title,
        "as_of": cfg.run.analysis_date.isoformat() if cfg.run.analysis_date else None,
        "started": started.isoformat(timespec="seconds"), "finished": finished.isoformat(timespec="seconds"),
        "duration_s": round((finished - started).total_seconds(), 2),
        "stages": [vars(r) for r in results], "params_file": str(cfg.params_file), "params": cfg.public_dict(),
        "inputs": inputs, "outputs": outputs, "git_commit": _git_commit(), "versions": _versions(),
        "command": " ".join(["crmbook", *sys.argv[1:]]) if sys.argv else "",
    }


_SAY_LOCK = threading.Lock()  # the progress follower prints from its own thread


def _say(opts: RunOptions, line: str) -> None:
    if opts.echo:
        with _SAY_LOCK:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()


def _terminate(signum, frame):  # noqa: ARG001 - signal handler signature
    raise RunError(f"stopped by signal {signal.Signals(signum).name}")


def run(opts: RunOptions) -> Path:
    """Run the workbook; returns the published run folder. Raises CrmbookError on any failure."""
    import json

    cfg = config.load(opts.params_path)  # params and file existence first: no pandas import before they pass
    if cfg.data.demo is None and cfg.missing_sources():
        table, path = cfg.missing_sources()[0]
        key = table if "." in table else f"data.sources.{table}"
        raise InputError(path, f"file not found ({key} in {cfg.params_file.name})")
    from crmbook import ingestion

    ingestion.ensure_demo(cfg)
    ingestion.check_sources(cfg)
    from crmbook import report

    stages = discover_stages(opts.notebooks_dir)
    unknown = set(opts.stages or ()) - {s.name for s in stages}
    if unknown:
        raise RunError(f"unknown stage(s) {sorted(unknown)}; the stages are {[s.name for s in stages]}")
    tables = input_tables(cfg)
    results: dict[str, StageResult] = {}
    runnable: list[Stage] = []
    for stage in stages:
        if opts.stages is not None and stage.name not in opts.stages:
            continue
        reason = skip_reason(stage, tables, {n: r.reason for n, r in results.items() if r.status == "skipped"})
        results[stage.name] = StageResult(stage.name, "skipped" if reason else "pending", reason=reason or "")
        if not reason:
            runnable.append(stage)
    selected = tuple(runnable)
    waves = plan_waves(selected)
    reports_dir = opts.reports_dir.resolve()
    with reports_lock(reports_dir):
        run_id = new_run_id(reports_dir, opts.params_path)
        partial = reports_dir / f".{run_id}.partial"
        (partial / "notebooks").mkdir(parents=True)
        (partial / "tables").mkdir()  # every run has one, even when its stages write no table
        started = dt.datetime.now(dt.UTC)
        info = None
        if opts.jobs > 1:
            _start_quiet_resource_tracker()  # before the SIGTERM handler and the echo thread below
        previous = signal.signal(signal.SIGTERM, _terminate)
        error: str | None = None
        _say(opts, f"crmbook run {run_id}: {len(selected)} stage(s), params {opts.params_path}")
        for result in results.values():
            if result.status == "skipped":
                _say(opts, f"  {result.name:<16} skipped: {result.reason}")
        stop_echo = progress.follow(partial / progress.LOG_FILE, lambda line: _say(opts, f"    {line}"))
        try:
            for wave in waves:
                _run_wave(wave, opts, cfg, partial, results)
            stop_echo()
            info = publish_reports(cfg, partial, run_id, started, selected)
        except BaseException as exc:  # noqa: BLE001 - every failure must end as a .failed run
            error = exc.args[0] if isinstance(exc, CrmbookError) else _failure_reason(exc)
            if not isinstance(exc, (CrmbookError, KeyboardInterrupt)):
                with contextlib.suppress(OSError):  # a full disk: the manifest below may still fit
                    (partial / "error.txt").write_text("".join(traceback.format_exception(exc)), encoding="utf-8")
        finally:
            stop_echo()
            signal.signal(signal.SIGTERM, previous)
        status = "failed" if error else "succeeded"
        manifest = build_manifest(run_id, cfg, list(results.values()), partial, started, status, error)
        if info is not None:
            manifest["as_of"] = info.as_of
        try:
            write_run_index(cfg, partial, manifest)
        except OSError as exc:  # a full disk, say: a run without its index page is not published
            error = error or f"index.html could not be written: {_failure_reason(exc)}"
            manifest.update(status="failed", error=error)
        try:
            write_atomic(partial / "manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False))
        except OSError as exc:
            error = f"{error or 'the run was not published'}; manifest.json could not be written: {_failure_reason(exc)}"
        if error:
            failed = reports_dir / f"{run_id}.failed"
            partial.rename(failed)
            raise RunError(f"run {run_id} failed: {error}. Details: {failed}/manifest.json and {failed}/notebooks/")
        final = reports_dir / run_id
        partial.rename(final)
        point_latest(reports_dir, run_id)
        peaks = [r.peak_mb for r in results.values() if r.peak_mb is not None]
        memory = f", largest stage peak memory {max(peaks):,.0f} MB" if peaks else ""
        _say(opts, "stages (wall time, peak memory): " + " · ".join(
            f"{r.name} {r.duration_s:.1f} s" + (f", {r.peak_mb:,.0f} MB" if r.peak_mb is not None else "")
            for r in results.values() if r.status == "succeeded"))
        _say(opts, f"crmbook run {run_id}: succeeded in {manifest['duration_s']:.1f} s{memory} -> {final}/index.html")
        return final


def data_as_of(cfg: config.Config, run_dir: Path) -> str | None:
    """The date the numbers are as of: `run.analysis_date`, else the day after the last clean order."""
    if cfg.run.analysis_date:
        return cfg.run.analysis_date.isoformat()
    path = run_dir / "tables" / "clean_transactions.parquet"
    if not path.is_file():
        return None
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    last = pc.max(pq.read_table(path, columns=["order_ts"])["order_ts"]).as_py()
    if last is None:
        return None
    return ((last.date() if isinstance(last, dt.datetime) else last) + dt.timedelta(days=1)).isoformat()


def publish_reports(cfg: config.Config, run_dir: Path, run_id: str, started: dt.datetime,
                    stages: tuple[Stage, ...]) -> report.RunInfo:
    """The end of a run whose stages succeeded: the data dictionary (tables/README.md), the Excel
    workbook of the key tables, and each stage's HTML report with its cards' changes against the
    previous run of the same params file in the reports folder. Returns the reports' `RunInfo`."""
    from crmbook import exports, report

    language, currency = cfg.report.language, cfg.run.currency
    exports.write_data_dictionary(run_dir / "tables", language, currency)
    workbook = exports.write_workbook(run_dir / "tables", run_dir / f"crmbook_{run_id}.xlsx", language, currency)
    earlier = report.earlier_runs(run_dir.parent, run_id)
    previous = report.read_summaries(earlier[-1]) if earlier else {}
    sources = [(table, cfg.resolve(src.path).name) for table, items in cfg.data.sources.items() for src in items]
    if cfg.attribution.paths_file is not None:
        sources.append(("attribution_paths", cfg.resolve(cfg.attribution.paths_file).name))
    info = report.RunInfo(
        run_id=run_id, title=cfg.report.title, language=language, as_of=data_as_of(cfg, run_dir),
        run_date=report.run_date(started), params_file=cfg.params_file.name, version=metadata.version("crmbook"),
        sources=tuple(sources), previous_run=earlier[-1].name if earlier else None,
        workbook=workbook.name if workbook else None, dictionary=True)
    summaries = report.read_summaries(run_dir)
    exp = report.exporter()
    for stage in stages:
        report.export_html(run_dir / "notebooks" / f"{stage.name}.ipynb", run_dir / f"{stage.name}.html", stage.name, info,
                           report.changes_against(summaries.get(stage.name), previous.get(stage.name), language), exp)
    return info


def write_run_index(cfg: config.Config, run_dir: Path, manifest: dict) -> Path:
    """index.html of a finished or failed run, with the KPI history of the earlier runs of the same
    params file in the reports folder."""
    from crmbook import report

    run_id = manifest["run_id"]
    earlier = report.earlier_runs(run_dir.parent, run_id)
    history = [(folder.name, report.read_summaries(folder)) for folder in earlier[-(report.HISTORY_RUNS - 1):]]
    workbook = run_dir / f"crmbook_{run_id}.xlsx"
    return report.write_index(run_dir, manifest, report.read_summaries(run_dir), cfg.report.language,
                              previous=history[-1][1] if history else None, previous_run=earlier[-1].name if earlier else None,
                              history=history, workbook=workbook.name if workbook.is_file() else None,
                              dictionary=(run_dir / "tables" / "README.md").is_file())


def _start_quiet_resource_tracker() -> None:
    """Start multiprocessing's resource tracker (which the stage workers of `--jobs` share) with its
    stderr on /dev/null. `crmbook` leaves with os._exit (see cli.entry), which skips
    multiprocessing's exit hooks: after a run stopped by a signal, the tracker would still unlink
    the stopped pool's semaphores but also print a warning below the run's one error line."""
    from multiprocessing import resource_tracker

    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        resource_tracker.ensure_running()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _run_wave(wave: list[Stage], opts: RunOptions, cfg: config.Config, run_dir: Path, results: dict[str, StageResult]) -> None:
    """Execute one wave of stages (in parallel when there are several); raise on the first failure."""
    def args(stage: Stage) -> tuple:
        return (opts.notebooks_dir / f"{stage.name}.ipynb", run_dir / "notebooks" / f"{stage.name}.ipynb",
                cfg.params_file, run_dir, opts.cell_timeout_s)

    failures = []
    if len(wave) == 1 or opts.jobs <= 1:
        outcomes = []
        for stage in wave:
            try:
                outcomes.append((stage, *execute_stage(*args(stage)), None))
            except Exception as exc:  # noqa: BLE001
                outcomes.append((stage, 0.0, None, exc))
                break
    else:
        with ProcessPoolExecutor(max_workers=min(opts.jobs, len(wave)), mp_context=get_context("spawn")) as pool:
            futures = [(stage, pool.submit(execute_stage, *args(stage))) for stage in wave]
            stopped: BaseException | None = None
            try:
                wait([future for _, future in futures])
            except BaseException as exc:  # noqa: BLE001 - SIGTERM or Ctrl-C
                stopped = exc
            outcomes = [(stage, *_outcome(future, stopped)) for stage, future in futures]
            if stopped is not None:  # stop the other stages now, not when they end
                pool.shutdown(wait=False, cancel_futures=True)
                for worker in multiprocessing.active_children():
                    worker.terminate()  # its kernel sees its parent gone and exits
    for stage, seconds, peak_mb, exc in outcomes:
        if exc is not None and not isinstance(exc, Exception):
            raise exc  # Ctrl-C
        result = results[stage.name]
        result.duration_s = round(seconds, 2)
        result.peak_mb = None if peak_mb is None else round(peak_mb, 1)
        if exc is None:
            result.status = "succeeded"
            memory = f", peak memory {peak_mb:,.0f} MB" if peak_mb is not None else ""
            _say(opts, f"  {stage.name:<16} done in {seconds:5.1f} s{memory}")
        else:
            result.status, result.reason = "failed", _failure_reason(exc)
            _say(opts, f"  {stage.name:<16} FAILED: {result.reason}")
            failures.append(result)
    if failures:
        raise RunError(f"stage {failures[0].name} failed: {failures[0].reason}")


def _outcome(future, stopped: BaseException | None) -> tuple[float, float | None, BaseException | None]:
    """(seconds, peak MB, None) of a stage that succeeded, else (0, None, why it failed or was stopped)."""
    if not future.done() or future.cancelled():
        return 0.0, None, stopped
    return (*future.result(), None) if future.exception() is None else (0.0, None, future.exception())
