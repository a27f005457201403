"""Charts of the 03 segmentation report. Every chart has a title and labelled axes (units in
the labels, passed in the report language by the caller); colours from the colour-blind palette
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


def rf_heatmap(counts: pd.DataFrame, revenue_share: pd.DataFrame, title: str, xlabel: str, ylabel: str,
               colorbar: str, revenue_word: str) -> plt.Figure:
    """R x F cells coloured by customers, each annotated with its customers and share of revenue.
    `counts` and `revenue_share` have R scores as rows (high to low) and F scores as columns."""
    def share(r: float) -> str:
        return f"{r:.0%}" if r >= 0.095 or r == 0 else f"{r:.1%}"

    annot = np.array([[f"{int(n):,}\n{share(r)} {revenue_word}" if n else "–" for n, r in zip(cr, rr)]
                      for cr, rr in zip(counts.to_numpy(), revenue_share.to_numpy())])
    fig, ax = plt.subplots(figsize=(FIG_WIDTH, 0.75 * len(counts) + 1.6))
    sns.heatmap(counts, annot=annot, fmt="", cmap=SEQUENTIAL, linewidths=0.5, linecolor="white",
                cbar_kws={"label": colorbar}, ax=ax, annot_kws={"fontsize": 9})
    ax.set_xticklabels([f"F{c}" for c in counts.columns])
    ax.set_yticklabels([f"R{r}" for r in counts.index], rotation=0)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    return _done(fig)


def share_bars(shares: pd.DataFrame, title: str, xlabel: str, customers_label: str, revenue_label: str) -> plt.Figure:
    """Side-by-side horizontal bars: share of customers and share of net revenue per group
    (`shares` has customer_share and revenue_share columns, index = group labels, top to bottom)."""
    colours = sns.color_palette(PALETTE)
    labels = [str(i) for i in shares.index][::-1]
    y = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(FIG_WIDTH, max(2.4, 0.5 * len(labels) + 1.3)))
    height = 0.38
    for offset, column, label, colour in ((height / 2, "customer_share", customers_label, colours[0]),
                                          (-height / 2, "revenue_share", revenue_label, colours[1])):
        values = shares[column].to_numpy()[::-1]
        ax.barh(y + offset, values, height=height, label=label, color=colour)
        for yy, v in zip(y + offset, values):
            ax.text(v, yy, f" {v:.0%}", va="center", fontsize=8)
    ax.set_yticks(y, labels)
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    ax.set(title=title, xlabel=xlabel)
    ax.margins(x=0.12)
    ax.legend(loc="lower right", frameon=True)
    return _done(fig)


def k_selection(selection: pd.DataFrame, k_kmeans: int, k_gmm: int, criterion: str, titles: tuple[str, str],
                xlabel: str, silhouette_label: str, criterion_label: str, chosen_label: str) -> plt.Figure:
    """Two panels over k: K-means silhouette (higher is better) and GMM BIC / ICL (lower is
    better), the chosen k of each marked."""
    colours = sns.color_palette(PALETTE)
    fig, (left, right) = plt.subplots(1, 2, figsize=(FIG_WIDTH, 3.6))
    left.plot(selection["k"], selection["silhouette"], marker="o", color=colours[0])
    left.axvline(k_kmeans, color=colours[3], linestyle="--", label=f"{chosen_label} k = {k_kmeans}")
    left.set(title=titles[0], xlabel=xlabel, ylabel=silhouette_label)
    left.legend(loc="best", fontsize=8)
    for column, style, colour in (("bic", "o-", colours[1]), ("icl", "s--", colours[2])):
        right.plot(selection["k"], selection[column], style, color=colour, label=column.upper())
    right.axvline(k_gmm, color=colours[3], linestyle="--", label=f"{chosen_label} k = {k_gmm} ({criterion.upper()})")
    right.set(title=titles[1], xlabel=xlabel, ylabel=criterion_label)
    right.legend(loc="best", fontsize=8)
    for ax in (left, right):
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    return _done(fig)


def cluster_scatter(orders: pd.Series, aov: pd.Series, labels: pd.Series, names: dict[int, str], title: str,
                    xlabel: str, ylabel: str, max_points: int = 4000, seed: int = 0) -> plt.Figure:
    """Orders against average order value (both on log scales), one colour per cluster; a seeded
    sample of at most `max_points` customers, order counts jittered a little so that stacked
    customers stay visible."""
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(orders), size=min(len(orders), max_points), replace=False))
    x = orders.to_numpy(dtype=float)[idx] * np.exp(rng.uniform(-0.12, 0.12, len(idx)))
    y, lab = aov.to_numpy(dtype=float)[idx], labels.to_numpy()[idx]
    colours = sns.color_palette(PALETTE, max(len(names), 1))
    fig, ax = plt.subplots(figsize=(FIG_WIDTH, 4.6))
    for i, (cluster, name) in enumerate(names.items()):
        mask = lab == cluster
        if mask.any():
            ax.scatter(x[mask], y[mask], s=9, alpha=0.55, color=colours[i % len(colours)], label=name, linewidths=0)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.legend(loc="best", fontsize=8, markerscale=2, frameon=True)
    return _done(fig)


def count_heatmap(table: pd.DataFrame, title: str, xlabel: str, ylabel: str, colorbar: str) -> plt.Figure:
    """A table of counts as a heatmap, each cell labelled with its count."""
    fig, ax = plt.subplots(figsize=(FIG_WIDTH, 0.55 * len(table) + 2.6))
    sns.heatmap(table, annot=True, fmt=",d", cmap=SEQUENTIAL, linewidths=0.5, linecolor="white",
                cbar_kws={"label": colorbar}, ax=ax, annot_kws={"fontsize": 8})
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.set_xticklabels(ax.get_xticklabels(), rotation=30, ha="right")
    ax.set_yticklabels(ax.get_yticklabels(), rotation=0)
    return _done(fig)


def level_bars(values: pd.Series, title: str, xlabel: str, ylabel: str, fmt: str = "{:,.0f}") -> plt.Figure:
    """Vertical bars in the given order (e.g. age bands), each labelled."""
    fig, ax = plt.subplots(figsize=(FIG_WIDTH, 3.4))
    ax.bar([str(i) for i in values.index], values.to_numpy(), color=sns.color_palette(PALETTE)[0])
    for x, v in enumerate(values.to_numpy()):
        ax.text(x, v, fmt.format(v), ha="center", va="bottom", fontsize=8)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.margins(y=0.12)
    return _done(fig)


def decision_tree(model, feature_names: list[str], class_names: list[str], title: str) -> plt.Figure:
    """A fitted shallow decision tree, drawn with scikit-learn's plot_tree (share of customers
    per node, the majority class coloured)."""
    from sklearn.tree import plot_tree

    depth = max(model.get_depth(), 1)
    fig, ax = plt.subplots(figsize=(max(FIG_WIDTH, 3.2 * 2 ** min(depth, 3) / 2), 1.9 * depth + 1.6))
    plot_tree(model, feature_names=feature_names, class_names=class_names, filled=True, rounded=True,
              proportion=True, impurity=False, precision=2, fontsize=8, ax=ax)
    ax.set_title(title)
    return _done(fig)
