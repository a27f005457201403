"""Runner planning: stages from notebooks, waves, and skipped stages."""
import nbformat
import pytest

from crmbook.errors import RunError
from crmbook.run import Stage, discover_stages, plan_waves, skip_reason


def _notebook(folder, name, needs=(), tables=()):
    nb = nbformat.v4.new_notebook(metadata={"crmbook": {"needs": list(needs), "tables": list(tables)}})
    nbformat.write(nb, folder / f"{name}.ipynb")


def test_stages_are_discovered_in_order_with_their_metadata(tmp_path):
    _notebook(tmp_path, "02_cleaning", ["01_ingestion"])
    _notebook(tmp_path, "01_ingestion")
    _notebook(tmp_path, "06_performance", ["02_cleaning"], ["transactions", "campaign_members"])
    (tmp_path / "scratch.ipynb").write_text("{}")
    stages = discover_stages(tmp_path)
    assert [s.name for s in stages] == ["01_ingestion", "02_cleaning", "06_performance"]
    assert stages[2] == Stage("06_performance", ("02_cleaning",), ("transactions", "campaign_members"))


def test_no_notebooks_is_an_error(tmp_path):
    with pytest.raises(RunError, match="no notebooks"):
        discover_stages(tmp_path)


def test_waves_run_independent_stages_together():
    stages = (Stage("01"), Stage("02", ("01",)), Stage("03", ("02",)), Stage("04", ("02",)), Stage("05", ("03",)))
    assert [[s.name for s in wave] for wave in plan_waves(stages)] == [["01"], ["02"], ["03", "04"], ["05"]]


def test_a_stage_whose_tables_are_missing_is_skipped_with_a_reason():
    clv = Stage("04_clv", ("02_cleaning",), ("transactions",))
    assert skip_reason(clv, {"campaign_members"}, {}) == "no input: needs a transactions table, and the params have none"
    assert skip_reason(clv, {"transactions"}, {}) is None
    after = Stage("07_x", ("04_clv",))
    assert "04_clv, which was skipped" in skip_reason(after, {"transactions"}, {"04_clv": "needs stage 02, which was skipped"})


def test_a_stage_with_its_own_input_runs_when_upstream_had_no_input():
    cleaning = Stage("02_cleaning", ("01_ingestion",), ("transactions", "touchpoints"))
    attribution = Stage("05_attribution", ("02_cleaning",), ("touchpoints", "attribution_paths"))
    tables = {"attribution_paths"}
    reason = skip_reason(cleaning, tables, {})
    assert reason.startswith("no input: ")
    assert skip_reason(attribution, tables, {"02_cleaning": reason}) is None


def test_kernel_shutdown_sends_no_interrupt(tmp_path, monkeypatch):
    """jupyter_client interrupts a kernel before shutting it down; an idle kernel then logs
    'ERROR | KeyboardInterrupt caught in kernel' into a scheduled run's output. Ours does not."""
    import asyncio

    from jupyter_client.manager import AsyncKernelManager

    from crmbook.run import KERNEL, _ipc_kernel_manager

    interrupts = []

    async def record(self):
        interrupts.append(type(self).__name__)

    async def start_and_stop(manager) -> None:
        km = manager(kernel_name=KERNEL)
        await km.start_kernel()
        await km.shutdown_kernel()

    monkeypatch.setattr(AsyncKernelManager, "_async_interrupt_kernel", record)
    for manager in (AsyncKernelManager, _ipc_kernel_manager(tmp_path)):
        asyncio.run(start_and_stop(manager))
    assert interrupts == ["AsyncKernelManager"]  # jupyter_client's own manager does interrupt


def test_stages_that_read_clv_run_after_it():
    """03, 05 and 06 read 04's clv_customers when it exists: running them beside 04 made their
    tables depend on which finished first (segment_profiles.mean_clv differed between two runs)."""
    from crmbook.run import NOTEBOOKS

    waves = [[s.name for s in wave] for wave in plan_waves(discover_stages(NOTEBOOKS))]
    clv = next(i for i, wave in enumerate(waves) if "04_clv" in wave)
    for stage in ("03_segmentation", "05_attribution", "06_performance"):
        assert next(i for i, wave in enumerate(waves) if stage in wave) > clv
