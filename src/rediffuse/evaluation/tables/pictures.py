"""Pictures of synthetic rows against real ones: each column's histogram, and the pair-trend differences."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from rediffuse.data.table_types import Table
from rediffuse.evaluation.tables.shapes import pair_trends, trend_matrix


def histograms_png(path: Path, real: Table, synth: Table, per_row: int = 4) -> Path:
    """One panel per column: real and synthetic histograms (numbers on the real column's bins, categories as bars
    of their shares)."""
    names = real.schema.names
    rows = math.ceil(len(names) / per_row)
    fig = Figure(figsize=(3.2 * per_row, 2.4 * rows))
    for k, name in enumerate(names):
        ax = fig.add_subplot(rows, per_row, k + 1)
        column = real.schema.column(name)
        if column.numeric:
            a, b = real[name][~np.isnan(real[name])], synth[name][~np.isnan(synth[name])]
            edges = np.histogram_bin_edges(a, bins=30)
            ax.hist(a, bins=edges, density=True, alpha=0.5, label="real")
            ax.hist(np.clip(b, edges[0], edges[-1]), bins=edges, density=True, alpha=0.5, label="synthetic")
        else:
            count = len(column.categories)
            shares = [np.bincount(t[name], minlength=count)[:count] / max(len(t), 1) for t in (real, synth)]
            ax.bar(np.arange(count) - 0.2, shares[0], width=0.4, label="real")
            ax.bar(np.arange(count) + 0.2, shares[1], width=0.4, label="synthetic")
            ax.set_xticks(np.arange(count), [c[:8] for c in column.categories], rotation=90, fontsize=6)
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=6)
    fig.axes[0].legend(fontsize=6)
    fig.tight_layout()
    FigureCanvasAgg(fig).print_png(str(path))
    return path


def trends_png(path: Path, real: Table, synth: Table) -> Path:
    """A heatmap of 1 - pair-trend score for every pair of columns (0: the dependence is kept)."""
    names = real.schema.names
    matrix = trend_matrix(pair_trends(real, synth), names)
    fig = Figure(figsize=(1.0 + 0.35 * len(names), 0.8 + 0.35 * len(names)))
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(matrix, cmap="magma_r", vmin=0, vmax=max(0.2, float(matrix.max())))
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
    ax.set_yticks(range(len(names)), names, fontsize=6)
    fig.colorbar(image, ax=ax, label="1 - pair-trend score")
    fig.tight_layout()
    FigureCanvasAgg(fig).print_png(str(path))
    return path
