"""The seaborn theme and the standard charts. Every chart has a title and labelled axes with
units; the palette is colour-blind safe (Okabe-Ito, as in seaborn's 'colorblind').
Chinese labels need a CJK font: Noto Sans CJK (Debian fonts-noto-cjk) is used when present.

Charts shared by several reports live here; a chart only one stage draws lives in
`crmbook.plots.<stage module>` (e.g. `crmbook.plots.segmentation`)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib import font_manager

PALETTE = "colorblind"
FIG_WIDTH = 9.0
CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans CJK JP", "WenQuanYi Zen Hei", "SimHei", "Microsoft YaHei")


def theme() -> None:
    """Apply the crmbook chart theme (call once per notebook)."""
    installed = {f.name for f in font_manager.fontManager.ttflist}
    fonts = [f for f in CJK_FONTS if f in installed] + ["DejaVu Sans"]
    sns.set_theme(style="whitegrid", palette=PALETTE, rc={
        "figure.dpi": 96, "savefig.dpi": 96, "figure.figsize": (FIG_WIDTH, 4.0),
        "axes.titlesize": 13, "axes.titleweight": "bold", "axes.labelsize": 11,
        "font.family": "sans-serif", "font.sans-serif": fonts, "axes.unicode_minus": False,
    })


def barh(values: pd.Series, title: str, xlabel: str, ylabel: str = "") -> plt.Figure:
    """Horizontal bars, largest on top, each labelled with its value."""
    values = values.sort_values()
    fig, ax = plt.subplots(figsize=(FIG_WIDTH, max(2.2, 0.42 * len(values) + 1.2)))
    ax.barh([str(i) for i in values.index], values.to_numpy(), color=sns.color_palette(PALETTE)[0])
    for y, v in enumerate(values.to_numpy()):
        ax.text(v, y, f" {v:,.0f}", va="center", fontsize=9)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.margins(x=0.12)
    fig.tight_layout()
    plt.close(fig)
    return fig


def line(frame: pd.DataFrame, x: str, y: str, title: str, xlabel: str, ylabel: str, hue: str | None = None) -> plt.Figure:
    """A line chart over time."""
    fig, ax = plt.subplots()
    sns.lineplot(frame, x=x, y=y, hue=hue, marker="o", ax=ax)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    fig.autofmt_xdate()
    fig.tight_layout()
    plt.close(fig)
    return fig
