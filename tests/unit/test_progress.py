"""Progress lines: from the helpers' loggers to the notebook's stderr and progress.log, and from
progress.log to the runner's output."""
import logging

import pytest

from crmbook import progress


@pytest.fixture(autouse=True)
def _detach():
    """Leave the crmbook logger as other tests expect it: no handlers, propagating."""
    yield
    logger = logging.getLogger(progress.LOGGER)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


def test_start_sends_helper_lines_to_stderr_and_the_log_once(tmp_path, capsys):
    progress.start(tmp_path, "02_cleaning")
    progress.start(tmp_path, "02_cleaning")  # a notebook run twice: still one line per record
    logging.getLogger("crmbook.cleaning").info("cleaned %s: %s rows kept", "transactions", "1,234")
    logging.getLogger("crmbook.cleaning").debug("not shown")
    logging.getLogger("other").warning("not ours")
    assert (tmp_path / "progress.log").read_text(encoding="utf-8") == "02_cleaning: cleaned transactions: 1,234 rows kept\n"
    assert capsys.readouterr().err.count("02_cleaning: cleaned transactions: 1,234 rows kept") == 1


def test_follow_prints_complete_lines_as_they_arrive(tmp_path):
    log = tmp_path / "progress.log"
    seen: list[str] = []
    stop = progress.follow(log, seen.append, every_s=0.05)  # the file does not exist yet
    with log.open("a", encoding="utf-8") as handle:
        handle.write("01_ingestion: read a.csv into transactions: 10 rows\n03_segm")
    import time

    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        time.sleep(0.05)
    assert seen == ["01_ingestion: read a.csv into transactions: 10 rows"]  # the half-written line waits
    with log.open("a", encoding="utf-8") as handle:
        handle.write("entation: RFM features of 3 customers\n")
    stop()
    assert seen == ["01_ingestion: read a.csv into transactions: 10 rows", "03_segmentation: RFM features of 3 customers"]
