"""Progress of a stage while it runs (rows read, rows cleaned, models fitted).

The helper modules log what they are doing to `crmbook.*` loggers at INFO level, with counts and
model names only (never a customer's data). A stage notebook calls `start(run_dir, stage)` first:
the lines then go to the notebook's stderr (visible in JupyterLab; the HTML report leaves stderr
out) and to `<run_dir>/progress.log`, which the runner prints as the lines arrive (`follow`).
Plain `logging`: imported and called outside a notebook, the helpers print nothing.
"""
from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from pathlib import Path

LOG_FILE = "progress.log"
LOGGER = "crmbook"


class _StageHandler(logging.Handler):
    """Marks the handlers `start` adds, so a second call (a notebook run twice) replaces them."""


def start(run_dir: str | Path, stage: str) -> None:
    """Send this process's `crmbook.*` INFO lines to stderr and to `<run_dir>/progress.log`,
    each prefixed with the stage name."""
    logger = logging.getLogger(LOGGER)
    for handler in [h for h in logger.handlers if isinstance(h, _StageHandler)]:
        logger.removeHandler(handler)
        handler.close()
    path = Path(run_dir) / LOG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    for target in (_StreamTo(sys.stderr), _AppendTo(path)):
        target.setFormatter(logging.Formatter(f"{stage}: %(message)s"))
        logger.addHandler(target)
    logger.setLevel(logging.INFO)
    logger.propagate = False


class _StreamTo(_StageHandler, logging.StreamHandler):
    pass


class _AppendTo(_StageHandler, logging.Handler):
    """One line per record, appended and flushed at once (several stages write to one file: each
    line is a single short `write` on a file opened for appending)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record).replace("\n", " ") + "\n"
        try:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(line)
        except OSError:  # progress never stops a stage (a full disk fails it where outputs are written)
            pass


def follow(path: Path, say: Callable[[str], None], every_s: float = 0.5) -> Callable[[], None]:
    """Print the lines appended to `path` as they arrive, on a background thread; returns the
    function that stops it (after printing what is left)."""
    done = threading.Event()

    def loop() -> None:
        offset = 0
        while True:
            finished = done.wait(every_s)
            try:
                with path.open("rb") as handle:
                    handle.seek(offset)
                    chunk = handle.read()
            except OSError:
                chunk = b""
            complete = chunk[: chunk.rfind(b"\n") + 1]
            offset += len(complete)
            for line in complete.decode("utf-8", errors="replace").splitlines():
                say(line)
            if finished:
                return

    thread = threading.Thread(target=loop, name="crmbook-progress", daemon=True)
    thread.start()

    def stop() -> None:
        done.set()
        thread.join(timeout=5)

    return stop
