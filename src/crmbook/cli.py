"""`crmbook run | synth | validate`: the command line.

Errors a user can act on print as one line and exit non-zero (2: params or input, 1: a failed
run or a file that cannot be written); set CRMBOOK_DEBUG=1 to see the traceback instead.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from crmbook.errors import CrmbookError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crmbook", description="Reproducible CRM analytics workbook.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the workbook into reports/<run_id>/")
    run.add_argument("--params", type=Path, default=Path("params/default.yaml"), help="params YAML (default: %(default)s)")
    run.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="stages run in parallel (default: cores)")
    run.add_argument("--stages", nargs="+", help="only these stages, e.g. 01_ingestion 02_cleaning")
    run.add_argument("--reports-dir", type=Path, default=Path("reports"), help="where run folders go (default: %(default)s)")
    run.add_argument("--notebooks", type=Path, default=None, help="a folder of your own copies of the notebooks")
    run.add_argument("--cell-timeout", type=int, default=1800, help="seconds a cell may run (default: %(default)s)")

    synth = sub.add_parser("synth", help="write the synthetic demo data with its ground truth")
    synth.add_argument("--out", type=Path, default=Path("data/raw/demo"))
    synth.add_argument("--customers", type=int, default=5000)
    synth.add_argument("--seed", type=int, default=42)
    synth.add_argument("--messy", action="store_true", help="add the defects real exports have")
    synth.add_argument("--no-touchpoints", dest="touchpoints", action="store_false",
                       help="leave out touchpoints.csv (~56 rows a customer) and the attribution truth")

    validate = sub.add_parser("validate", help="check a params file and its inputs, run nothing")
    validate.add_argument("--params", type=Path, default=Path("params/default.yaml"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            from crmbook.run import NOTEBOOKS, RunOptions, run

            run(RunOptions(params_path=args.params, reports_dir=args.reports_dir, jobs=args.jobs,
                           stages=tuple(args.stages) if args.stages else None,
                           notebooks_dir=(args.notebooks or NOTEBOOKS).resolve(), cell_timeout_s=args.cell_timeout))
        elif args.command == "synth":
            from crmbook import synth

            out = synth.generate(args.out, customers=args.customers, seed=args.seed, messy=args.messy,
                                 touchpoints=args.touchpoints)
            print(f"demo data written to {out}")
        elif args.command == "validate":
            from crmbook import config, ingestion

            cfg = config.load(args.params)
            ingestion.ensure_demo(cfg)
            ingestion.check_sources(cfg)
            print(f"{args.params}: ok")
    except CrmbookError as error:
        if os.environ.get("CRMBOOK_DEBUG"):
            raise
        print(f"crmbook: error: {error}", file=sys.stderr)
        return error.exit_code
    except OSError as error:  # a full disk, a folder that cannot be written: one line, no traceback
        if os.environ.get("CRMBOOK_DEBUG"):
            raise
        print(f"crmbook: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("crmbook: interrupted", file=sys.stderr)
        return 130
    return 0


def entry() -> None:
    """The `crmbook` command: main(), then leave without the interpreter's teardown, where DuckDB's
    bindings can print "nanobind: leaked N instances" after the last useful line (the error a user
    must read is the one line before it)."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
