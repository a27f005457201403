"""Committed notebooks: no outputs, a stable kernelspec, a parameters cell, no definitions."""
import json

import pytest

from tests.conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_clean(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "strip the outputs"
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    assert nb["cells"][0]["cell_type"] == "markdown" and "".join(nb["cells"][0]["source"]).startswith("# ")
    assert "parameters" in nb["cells"][1].get("metadata", {}).get("tags", [])
    for cell in code:
        source = "".join(cell["source"])
        assert "\ndef " not in f"\n{source}" and "\nclass " not in f"\n{source}", "logic belongs in src/crmbook"


def test_all_six_stages_have_a_notebook_or_none_yet():
    names = [p.stem for p in NOTEBOOKS]
    assert names[:2] == ["01_ingestion", "02_cleaning"]
