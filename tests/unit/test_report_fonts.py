"""Chinese chart labels: the crmbook theme draws them with a CJK font, and a missing glyph is
detectable (matplotlib warns), which the browser test relies on for the charts of the zh run."""
from __future__ import annotations

import io
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib import font_manager  # noqa: E402

from crmbook import plots  # noqa: E402

LABEL = "每月净收入（美元）"


def _render_warnings() -> list[str]:
    fig, ax = plt.subplots()
    ax.set(title=LABEL, xlabel="月份", ylabel=LABEL)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.savefig(io.BytesIO(), format="png")
    plt.close(fig)
    return [str(w.message) for w in caught if "missing from font" in str(w.message)]


@pytest.fixture
def restore_rc():
    saved = matplotlib.rcParams.copy()
    yield
    matplotlib.rcParams.update(saved)


def test_theme_draws_chinese_labels_with_a_cjk_font(restore_rc):
    if not any("CJK" in f.name for f in font_manager.fontManager.ttflist):
        pytest.skip("no CJK font installed (Debian fonts-noto-cjk; .ci/run installs it)")
    plots.theme()
    assert plots.CJK_FONTS[0] in matplotlib.rcParams["font.sans-serif"] or any(
        f in matplotlib.rcParams["font.sans-serif"] for f in plots.CJK_FONTS)
    assert _render_warnings() == []


def test_a_latin_only_font_leaves_boxes_and_matplotlib_says_so(restore_rc):
    matplotlib.rcParams.update({"font.family": "sans-serif", "font.sans-serif": ["DejaVu Sans"]})
    assert any("Glyph" in w for w in _render_warnings())
