"""Tables in a run folder: stages hand data to each other through files, never globals.

`tables/` holds every stage's outputs (the run-folder contract, GUIDE §3). Files are written
deterministically (stable row order, no timestamps) so the same inputs give identical bytes.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


def tables_dir(run_dir: str | Path) -> Path:
    path = Path(run_dir) / "tables"
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_table(run_dir: str | Path, name: str, frame: pd.DataFrame, fmt: str = "parquet") -> Path:
    """Write `tables/<name>.<fmt>` (name may contain a sub-folder, e.g. quarantine/orders)."""
    path = tables_dir(run_dir) / f"{name}.{fmt}"
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        frame.to_parquet(path, index=False, compression="zstd")
    elif fmt == "csv":
        frame.to_csv(path, index=False, lineterminator="\n")
    else:
        raise ValueError(f"unknown table format {fmt!r}")
    return path


def read_table(run_dir: str | Path, name: str) -> pd.DataFrame:
    """Read `tables/<name>.parquet`, else `.csv`."""
    base = Path(run_dir) / "tables" / name
    for fmt, reader in (("parquet", pd.read_parquet), ("csv", pd.read_csv)):
        if base.with_name(f"{base.name}.{fmt}").is_file():
            return reader(base.with_name(f"{base.name}.{fmt}"))
    raise FileNotFoundError(f"{base}.parquet: run the stage that writes it first")


def has_table(run_dir: str | Path, name: str) -> bool:
    base = Path(run_dir) / "tables"
    return (base / f"{name}.parquet").is_file() or (base / f"{name}.csv").is_file()


def write_stage_summary(run_dir: str | Path, stage: str, summary: dict) -> Path:
    """The headline KPIs and findings of a stage, for the index page (`summary/<stage>.json`)."""
    path = Path(run_dir) / "summary" / f"{stage}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    return path
