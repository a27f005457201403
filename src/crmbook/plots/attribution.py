"""Charts of the 05 attribution report. Every chart has a title and labelled axes (units in the
labels, passed in the report language by the caller); colours from the colour-blind palette
(seaborn 'colorblind') or a sequential map that reads in grey."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from crmbook.plots import FIG_WIDTH, PALETTE

SEQUENTIAL = "Blues"


def _done(fig: plt.Figure) -> plt.Figure:
    fig.tight_layout()
    plt.close(fig)
    return fig


def _percent_axis(axis) -> None:
    axis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))


def touch_rate(curve: pd.DataFrame, days: int, background: float, title: str, xlabel: str, ylabel: str,
               window_label: str, background_label: str) -> plt.Figure:
    """Touches per conversion by days before it (bars), the background rate (dashed line) and
    the lookback window (shaded)."""
    colours = sns.color_palette(PALETTE)
    fig, ax = plt.subplots(figsize=(FIG_WIDTH, 3.6))
    shown = curve[curve["rate"].notna()]
    inside = shown["days_before"] < days
    ax.bar(shown["days_before"][inside], shown["rate"][inside], width=0.9, color=colours[0], label=window_label)
    ax.bar(shown["days_before"][~inside], shown["rate"][~inside], width=0.9, color=colours[7])
    if np.isfinite(background):
        ax.axhline(background, color=colours[3], linestyle="--", linewidth=1.5, label=background_label)
    ax.axvspan(-0.5, days - 0.5, color=colours[0], alpha=0.08)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.set_xlim(-0.8, len(curve) - 0.2)
    ax.legend(loc="upper right", frameon=True)
    return _done(fig)


def share_intervals(share: pd.Series, low: pd.Series, high: pd.Series, truth: pd.Series | None, title: str,
                    xlabel: str, interval_label: str, truth_label: str) -> plt.Figure:
    """Horizontal bars of each channel's share (largest on top) with interval whiskers and, when
    known, the true share as a diamond."""
    colours = sns.color_palette(PALETTE)
    order = share.sort_values().index
    y = np.arange(len(order))
    fig, ax = plt.subplots(figsize=(FIG_WIDTH, max(2.4, 0.5 * len(order) + 1.3)))
    values = share.reindex(order).to_numpy()
    lo, hi = low.reindex(order).to_numpy(), high.reindex(order).to_numpy()
    ax.barh(y, values, color=colours[0], height=0.6)
    if np.isfinite(lo).all() and np.isfinite(hi).all():
        ax.errorbar(values, y, xerr=[np.maximum(values - lo, 0), np.maximum(hi - values, 0)], fmt="none",
                    ecolor="black", elinewidth=1.2, capsize=4, label=interval_label)
    if truth is not None:
        ax.scatter(truth.reindex(order).to_numpy(), y, marker="D", s=46, color=colours[1], zorder=3,
                   edgecolor="black", linewidth=0.6, label=truth_label)
    for yy, v in zip(y, values):
        ax.text(v, yy + 0.32, f"{v:.1%}", fontsize=8, ha="center", va="bottom")
    ax.set_yticks(y, [str(c) for c in order])
    _percent_axis(ax.xaxis)
    ax.set(title=title, xlabel=xlabel)
    ax.margins(x=0.1)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", frameon=True)
    return _done(fig)


def share_heatmap(wide: pd.DataFrame, title: str, xlabel: str, ylabel: str, colorbar: str,
                  highlight_last: bool = False) -> plt.Figure:
    """Models (rows) x channels (columns), cells coloured and annotated with the share; with
    ``highlight_last`` the last row (the known truth) is set apart by a line."""
    fig, ax = plt.subplots(figsize=(FIG_WIDTH, 0.42 * len(wide) + 1.9))
    sns.heatmap(wide, annot=wide.map(lambda v: f"{v:.0%}").to_numpy(), fmt="", cmap=SEQUENTIAL, vmin=0,
                linewidths=0.5, linecolor="white", cbar_kws={"label": colorbar, "format": "{x:.0%}"}, ax=ax,
                annot_kws={"fontsize": 9})
    if highlight_last:
        ax.axhline(len(wide) - 1, color="black", linewidth=2)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.tick_params(axis="y", rotation=0)
    ax.tick_params(axis="x", rotation=0)
    return _done(fig)


def misallocation_bars(values: pd.Series, highlight: str, threshold: float, title: str, xlabel: str,
                       target_label: str) -> plt.Figure:
    """Misallocation per model (best on top), the highlighted model in the accent colour, and
    the target as a dashed line."""
    colours = sns.color_palette(PALETTE)
    values = values.sort_values(ascending=False)
    y = np.arange(len(values))
    fig, ax = plt.subplots(figsize=(FIG_WIDTH, max(2.4, 0.42 * len(values) + 1.3)))
    ax.barh(y, values.to_numpy(), color=[colours[2] if k == highlight else colours[7] for k in values.index])
    for yy, v in zip(y, values.to_numpy()):
        ax.text(v, yy, f" {v:.1%}", va="center", fontsize=9)
    ax.axvline(threshold, color=colours[3], linestyle="--", linewidth=1.5, label=target_label)
    ax.set_yticks(y, [str(i) for i in values.index])
    _percent_axis(ax.xaxis)
    ax.set(title=title, xlabel=xlabel)
    ax.margins(x=0.12)
    ax.legend(loc="upper right", frameon=True)
    return _done(fig)


def transition_heatmap(matrix: pd.DataFrame, title: str, xlabel: str, ylabel: str, colorbar: str) -> plt.Figure:
    """Transition probabilities (rows sum to 1), annotated in percent; blanks are zero."""
    annot = matrix.map(lambda v: f"{v:.0%}" if v >= 0.005 else "").to_numpy()
    fig, ax = plt.subplots(figsize=(FIG_WIDTH, 0.45 * len(matrix) + 2.2))
    sns.heatmap(matrix, annot=annot, fmt="", cmap=SEQUENTIAL, vmin=0, vmax=1, linewidths=0.5, linecolor="white",
                cbar_kws={"label": colorbar, "format": "{x:.0%}"}, ax=ax, annot_kws={"fontsize": 8})
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.tick_params(axis="y", rotation=0)
    ax.tick_params(axis="x", rotation=30)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    return _done(fig)


def roas_bars(roas: pd.Series, title: str, xlabel: str) -> plt.Figure:
    """Attributed revenue per unit of spend per channel, best on top, on a log scale when the
    channels differ by more than a factor of 50."""
    colours = sns.color_palette(PALETTE)
    values = roas.sort_values()
    y = np.arange(len(values))
    fig, ax = plt.subplots(figsize=(FIG_WIDTH, max(2.2, 0.45 * len(values) + 1.2)))
    ax.barh(y, values.to_numpy(), color=colours[0])
    for yy, v in zip(y, values.to_numpy()):
        ax.text(v, yy, f" {v:,.1f}×", va="center", fontsize=9)
    positive = values[values > 0]
    if len(positive) > 1 and positive.max() / positive.min() > 50:
        ax.set_xscale("log")
    ax.set_yticks(y, [str(i) for i in values.index])
    ax.set(title=title, xlabel=xlabel)
    ax.margins(x=0.15)
    return _done(fig)
