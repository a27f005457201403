"""Charts of the 06 performance report: KPI trends, new vs returning customers, cohort heatmaps,
campaign funnels, experiment lifts, plus the tiny inline-SVG sparklines of the KPI cards.

Every chart has a title and labelled axes with units in the report language (the caller passes
the words, from crmbook.report.t); colours come from the colour-blind palette of the theme and
the heatmaps use viridis (perceptually uniform, colour-blind safe)."""
from __future__ import annotations

import html
import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import FuncFormatter, PercentFormatter

from crmbook.plots import FIG_WIDTH, PALETTE


def _colours(n: int) -> list:
    return sns.color_palette(PALETTE, max(n, 1))


def sparkline_svg(values: Sequence[float], width: int = 120, height: int = 28, title: str = "") -> str:
    """A tiny line of the values as inline SVG (no JavaScript, nothing fetched), last point marked.
    Missing values break the line; fewer than two finite values give an empty string."""
    points = [(i, float(v)) for i, v in enumerate(values) if v is not None and math.isfinite(float(v))]
    if len(points) < 2:
        return ""
    lo, hi = min(v for _, v in points), max(v for _, v in points)
    span = hi - lo or 1.0
    n = max(len(values) - 1, 1)
    pad = 3

    def xy(i: int, v: float) -> tuple[float, float]:
        return pad + (width - 2 * pad) * i / n, pad + (height - 2 * pad) * (1 - (v - lo) / span)

    coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(i, v) for i, v in points))
    lx, ly = xy(*points[-1])
    colour = "#0072B2"
    label = f"<title>{html.escape(title)}</title>" if title else ""
    return (f'<svg class="crm-spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'xmlns="http://www.w3.org/2000/svg" role="img" style="display:block;margin-top:.25rem">{label}'
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.6" points="{coords}"/>'
            f'<circle cx="{lx:.1f}" cy="{ly:.1f}" r="2.4" fill="{colour}"/></svg>')


def kpi_trends(wide: pd.DataFrame, panels: Sequence[tuple[str, str, str]], title: str, xlabel: str) -> plt.Figure:
    """Small multiples: one line per KPI over the periods. `panels` are (column, panel title,
    y label with unit); a column whose name ends in _rate is drawn in %."""
    panels = [p for p in panels if p[0] in wide.columns]
    cols = 2
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(FIG_WIDTH, 2.7 * rows + 0.6), sharex=True, squeeze=False)
    x = pd.to_datetime(wide["period"])
    colours = _colours(len(panels))
    for ax, (column, panel_title, ylabel), colour in zip(axes.flat, panels, colours):
        y = wide[column].astype("float64") * (100 if column.endswith("_rate") else 1)
        ax.plot(x, y, marker="o", markersize=3, color=colour)
        ax.set_title(panel_title, fontsize=11)
        ax.set_ylabel(ylabel)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.3g}"))
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel(xlabel)
    fig.suptitle(title, fontsize=13, fontweight="bold")
    fig.autofmt_xdate()
    fig.tight_layout()
    plt.close(fig)
    return fig


def new_vs_returning(wide: pd.DataFrame, labels: tuple[str, str], title: str, xlabel: str, ylabel: str) -> plt.Figure:
    """Stacked bars: new and returning active customers per period."""
    fig, ax = plt.subplots(figsize=(FIG_WIDTH, 3.8))
    x = np.arange(len(wide))
    colours = _colours(2)
    ax.bar(x, wide["new_customers"], color=colours[0], label=labels[0])
    ax.bar(x, wide["returning_customers"], bottom=wide["new_customers"], color=colours[1], label=labels[1])
    step = max(1, len(wide) // 12)
    ax.set_xticks(x[::step], [str(p)[:7] for p in wide["period"].iloc[::step]], rotation=45, ha="right")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.legend(frameon=False, loc="upper left")
    fig.tight_layout()
    plt.close(fig)
    return fig


def cohort_heatmap(matrix: pd.DataFrame, title: str, xlabel: str, ylabel: str, colorbar: str, percent: bool) -> plt.Figure:
    """Cohorts (rows) x months since acquisition (columns). In % (`percent`), month 0 is 100% by
    definition, so the colour scale is set by the later months; values are written in the cells
    when they fit."""
    rows, cols = matrix.shape
    fig, ax = plt.subplots(figsize=(FIG_WIDTH, max(3.0, 0.28 * rows + 1.6)))
    later = matrix.iloc[:, 1:] if cols > 1 and percent else matrix
    vmax = float(np.nanmax(later.to_numpy(dtype=float))) if later.notna().any().any() else None
    data = matrix * 100 if percent else matrix
    annotate = cols <= 13 and rows <= 30
    sns.heatmap(data, ax=ax, cmap="viridis", vmin=0, vmax=(vmax * 100 if percent else vmax) if vmax else None,
                annot=annotate, fmt=".0f", annot_kws={"fontsize": 7}, linewidths=0.3, linecolor="white",
                cbar_kws={"label": colorbar})
    ax.set_yticks(np.arange(rows) + 0.5, [str(c)[:7] for c in matrix.index], rotation=0, fontsize=8)
    ax.grid(False)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    fig.tight_layout()
    plt.close(fig)
    return fig


def funnel_chart(funnels: pd.DataFrame, stage_labels: dict[str, str], title: str, xlabel: str, ylabel: str,
                 campaign_label: str) -> plt.Figure:
    """Share of members reaching each stage, one panel per campaign, one bar per group."""
    campaigns = list(dict.fromkeys(funnels["campaign_id"]))
    fig, axes = plt.subplots(len(campaigns), 1, figsize=(FIG_WIDTH, 2.8 * len(campaigns) + 0.6), squeeze=False)
    for ax, campaign in zip(axes[:, 0], campaigns):
        rows = funnels[(funnels["campaign_id"] == campaign) & (funnels["stage"] != "members")]
        stages = list(dict.fromkeys(rows.sort_values("stage_order")["stage"]))
        groups = list(dict.fromkeys(rows["group"]))
        width = 0.8 / max(len(groups), 1)
        for k, (group, colour) in enumerate(zip(groups, _colours(len(groups)))):
            share = rows[rows["group"] == group].set_index("stage")["pct_of_first"].reindex(stages) * 100
            xs = np.arange(len(stages)) + (k - (len(groups) - 1) / 2) * width
            ax.bar(xs, share.to_numpy(dtype=float), width=width, color=colour, label=str(group))
            for xv, v in zip(xs, share.to_numpy(dtype=float)):
                if math.isfinite(v):
                    ax.text(xv, v, f"{v:.1f}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(np.arange(len(stages)), [stage_labels.get(s, s) for s in stages])
        ax.set_title(f"{campaign_label} {campaign}", fontsize=11)
        ax.set_ylabel(ylabel)
        ax.yaxis.set_major_formatter(PercentFormatter(decimals=0))
        ax.margins(y=0.15)
        ax.legend(frameon=False, fontsize=8, ncols=min(len(groups), 4), loc="upper right")
    axes[-1, 0].set_xlabel(xlabel)
    fig.suptitle(title, fontsize=13, fontweight="bold")
    fig.tight_layout()
    plt.close(fig)
    return fig


def lift_chart(table: pd.DataFrame, metric_labels: dict[str, str], title: str, xlabel: str, alpha: float = 0.05) -> plt.Figure:
    """Relative lift of every variant over its control with its interval, one line per campaign,
    variant and metric; filled dots are significant after Holm's adjustment (interval-free rows,
    e.g. a control mean of 0, are left out)."""
    rows = table[(table["verdict"] != "control") & np.isfinite(table["lift_rel"].astype(float))].copy()
    rows = rows.iloc[::-1]
    labels = [f"{e} · {v} · {metric_labels.get(m, m)}" for e, v, m in zip(rows["experiment"], rows["variant"], rows["metric"])]
    fig, ax = plt.subplots(figsize=(FIG_WIDTH, max(2.4, 0.36 * len(rows) + 1.3)))
    metrics = list(dict.fromkeys(table["metric"]))
    colour_of = dict(zip(metrics, _colours(len(metrics))))
    y = np.arange(len(rows))
    for yi, (_, r) in zip(y, rows.iterrows()):
        colour = colour_of[r["metric"]]
        ax.plot([r["lift_rel_ci_low"] * 100, r["lift_rel_ci_high"] * 100], [yi, yi], color=colour, linewidth=2)
        significant = bool(r["p_adj_holm"] < alpha)
        ax.plot(r["lift_rel"] * 100, yi, "o", color=colour, markerfacecolor=colour if significant else "white", markersize=6)
    ax.axvline(0, color="#52606d", linewidth=1, linestyle="--")
    ax.set_yticks(y, labels, fontsize=8)
    ax.xaxis.set_major_formatter(PercentFormatter(decimals=0))
    ax.set(title=title, xlabel=xlabel)
    fig.tight_layout()
    plt.close(fig)
    return fig


def history_chart(history: pd.DataFrame, kpis: Sequence[str], kpi_labels: dict[str, str], title: str,
                  xlabel: str, ylabel: str) -> plt.Figure:
    """Each watched KPI's latest-period value per run, indexed to its first run = 100, with
    alerts marked by a red ring."""
    fig, ax = plt.subplots(figsize=(FIG_WIDTH, 3.6))
    runs = list(dict.fromkeys(history["run_id"]))
    for kpi, colour in zip(kpis, _colours(len(kpis))):
        rows = history[history["kpi"] == kpi].set_index("run_id").reindex(runs)
        base = rows["value"].dropna()
        if base.empty or base.iloc[0] == 0:
            continue
        index = rows["value"].astype(float) / float(base.iloc[0]) * 100
        ax.plot(range(len(runs)), index, marker="o", color=colour, label=kpi_labels.get(kpi, kpi))
        flagged = rows["alert"].fillna(False).astype(bool).to_numpy()
        ax.plot(np.arange(len(runs))[flagged], index.to_numpy()[flagged], "o", markersize=11, markerfacecolor="none",
                markeredgecolor="#D55E00", markeredgewidth=1.5)
    ax.set_xticks(range(len(runs)), [r[:15] for r in runs], rotation=30, ha="right", fontsize=8)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.legend(frameon=False, fontsize=8, ncols=3)
    fig.tight_layout()
    plt.close(fig)
    return fig
