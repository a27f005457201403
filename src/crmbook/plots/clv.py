"""Charts of the 04 customer-lifetime-value report. Every chart has a title and labelled axes
(units in the labels, passed in the report language by the caller); colours from the colour-blind
palette (seaborn 'colorblind'), the actual series always black, models dashed."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from crmbook.plots import FIG_WIDTH, PALETTE

SEQUENTIAL = "Blues"
ACTUAL_COLOUR = "#000000"


def _done(fig: plt.Figure) -> plt.Figure:
    fig.tight_layout()
    plt.close(fig)
    return fig


def _model_colours(n: int) -> list:
    return sns.color_palette(PALETTE)[:n]


def tracking(frame: pd.DataFrame, series: dict[str, str], actual_label: str, title: str, xlabel: str, ylabel: str,
             cumulative: bool, calibration_end_week: float | None, calibration_label: str) -> plt.Figure:
    """Repeat purchases per week (or cumulative), actual (black) against each model (dashed).
    `series` maps a column stem of `frame` (predicted_<key>) to its legend label; a dotted vertical
    line marks the end of the calibration period."""
    suffix = "_cumulative" if cumulative else ""
    fig, ax = plt.subplots(figsize=(FIG_WIDTH, 4.2))
    ax.plot(frame["period"], frame[f"actual{suffix}"], color=ACTUAL_COLOUR, lw=2.0, label=actual_label)
    for (column, label), colour in zip(series.items(), _model_colours(len(series))):
        ax.plot(frame["period"], frame[f"{column}{suffix}"], ls="--", lw=1.6, color=colour, label=label)
    if calibration_end_week is not None:
        ax.axvline(calibration_end_week, color="#52606d", ls=":", lw=1.2)
        ax.text(calibration_end_week, ax.get_ylim()[1], f" {calibration_label}", va="top", ha="left", fontsize=9,
                color="#52606d")
    ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.legend(loc="upper left" if cumulative else "best", frameon=True)
    return _done(fig)


def conditional(frame: pd.DataFrame, series: dict[str, str], actual_label: str, title: str, xlabel: str,
                ylabel: str) -> plt.Figure:
    """Mean holdout purchases per customer by calibration frequency: actual bars, model markers."""
    fig, ax = plt.subplots(figsize=(FIG_WIDTH, 4.0))
    x = np.arange(len(frame))
    ax.bar(x, frame["actual"], color="#bcccdc", edgecolor=ACTUAL_COLOUR, lw=0.6, label=actual_label)
    markers = ("o", "s", "D", "^")
    for (column, label), colour, marker in zip(series.items(), _model_colours(len(series)), markers):
        ax.plot(x, frame[column], ls="--", marker=marker, color=colour, label=label)
    ax.set_xticks(x, frame["frequency"].astype(str))
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.legend(loc="upper left", frameon=True)
    return _done(fig)


def deciles(frame: pd.DataFrame, title: str, xlabel: str, ylabel: str, cumulative_label: str) -> plt.Figure:
    """Share of the predicted value held by each tenth of customers (1 = most valuable), with the
    cumulative share as a line."""
    colours = sns.color_palette(PALETTE)
    fig, ax = plt.subplots(figsize=(FIG_WIDTH, 3.8))
    ax.bar(frame["decile"], frame["share"], color=colours[0])
    for d, v in zip(frame["decile"], frame["share"]):
        ax.text(d, v, f"{v:.0%}", ha="center", va="bottom", fontsize=9)
    ax.plot(frame["decile"], frame["cumulative_share"], color=colours[1], marker="o", label=cumulative_label)
    ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    ax.set_xticks(frame["decile"])
    ax.set_ylim(0, 1.08)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.legend(loc="center right", frameon=True)
    return _done(fig)


def p_alive_heatmap(grid: pd.DataFrame, title: str, xlabel: str, ylabel: str, colorbar: str) -> plt.Figure:
    """P(alive) over frequency (rows, most purchases on top) x recency (columns); empty cells blank."""
    shown = grid.iloc[::-1]
    fig, ax = plt.subplots(figsize=(FIG_WIDTH, max(3.6, 0.22 * len(shown) + 1.6)))
    sns.heatmap(shown, vmin=0, vmax=1, cmap=SEQUENTIAL, linewidths=0.3, linecolor="white", ax=ax,
                cbar_kws={"label": colorbar, "format": plt.FuncFormatter(lambda v, _: f"{v:.0%}")},
                annot=len(shown) <= 16, fmt=".0%", annot_kws={"fontsize": 7})
    ax.set_xticklabels([f"{float(c):.0f}" for c in shown.columns], rotation=0)
    ax.set_yticklabels([str(i) for i in shown.index], rotation=0)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    return _done(fig)


def group_value(frame: pd.DataFrame, title: str, xlabel: str, share_label: str, customers_label: str) -> plt.Figure:
    """Predicted value per group (horizontal bars, largest on top), labelled with its share of the
    total and the group's share of customers."""
    data = frame.iloc[::-1]
    colours = sns.color_palette(PALETTE)
    fig, ax = plt.subplots(figsize=(FIG_WIDTH, max(2.4, 0.45 * len(data) + 1.3)))
    y = np.arange(len(data))
    ax.barh(y, data["clv_total"], color=colours[0])
    total_customers = max(int(frame["customers"].sum()), 1)
    for yy, value, share, n in zip(y, data["clv_total"], data["clv_share"], data["customers"]):
        ax.text(value, yy, f" {share:.0%} {share_label} · {n / total_customers:.0%} {customers_label}", va="center", fontsize=8)
    ax.set_yticks(y, [str(g) for g in data["group"]])
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.margins(x=0.35)
    ax.set(title=title, xlabel=xlabel)
    return _done(fig)
