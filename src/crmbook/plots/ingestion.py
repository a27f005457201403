"""Charts of the 01 ingestion report. Every chart has a title and labelled axes (words passed in
the report language by the caller); a sequential map that reads in grey, values printed in cells."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from crmbook.plots import FIG_WIDTH

SEQUENTIAL = "Blues"


def missing_heatmap(matrix: pd.DataFrame, title: str, xlabel: str, ylabel: str, colorbar: str) -> plt.Figure:
    """Share of empty values per source (rows) and canonical column (columns), 0-100 %, each cell
    annotated; a column a source does not have is blank."""
    shares = matrix.astype("float64")
    annot = np.vectorize(lambda v: "" if np.isnan(v) else ("0" if v == 0 else f"{v:.0%}" if v >= 0.01 else "<1%"))(shares.to_numpy())
    fig, ax = plt.subplots(figsize=(FIG_WIDTH, 0.5 * len(shares) + 2.4))
    sns.heatmap(shares, vmin=0, vmax=1, cmap=SEQUENTIAL, annot=annot, fmt="", linewidths=0.5, linecolor="white",
                cbar_kws={"label": colorbar, "format": plt.FuncFormatter(lambda v, _: f"{v:.0%}")}, ax=ax,
                annot_kws={"fontsize": 8})
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.tick_params(axis="x", rotation=45)
    plt.setp(ax.get_xticklabels(), ha="right")
    ax.tick_params(axis="y", rotation=0)
    fig.tight_layout()
    plt.close(fig)
    return fig
