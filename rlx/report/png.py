"""``report.png`` of ``python -m rlx.compare``: the dashboard's panels with matplotlib (Agg, no display)."""

from __future__ import annotations

from pathlib import Path

# Okabe-Ito, then Paul Tol's muted scheme, then tab10: 16 distinguishable colours before any repeats
# (colour-blind-safe first); the HTML uses the same order.
COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#332288",
          "#117733", "#882255", "#44AA99", "#999933", "#AA4499", "#88CCEE", "#CC6677", "#DDCC77",
          "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def write_png(path: Path, panels, curves: dict, labels: list, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 3
    rows = max(1, -(-len(panels) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows + 0.9), squeeze=False)
    for ax, (key, name) in zip(axes.flat, panels):
        for i, label in enumerate(labels):
            c = curves[key].get(label)
            if not c or not c["steps"]:
                continue
            color = COLORS[i % len(COLORS)]
            style = dict(marker="o", markersize=3) if len(c["steps"]) <= 12 else {}
            ax.plot(c["steps"], c["mean"], color=color, linewidth=1.4, label=label, **style)
            ax.fill_between(c["steps"], c["lo"], c["hi"], color=color, alpha=0.15, linewidth=0)
        ax.set_title(f"{name}\n{key}", fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    legend = {}
    for ax in axes.flat:
        for h, n in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(n, h)
    names = [n for n in labels if n in legend]
    handles = [legend[n] for n in names]
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 8), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=11)
    n_legend_rows = -(-len(names) // 8) if names else 0
    fig.tight_layout(rect=(0, 0.03 + 0.035 * n_legend_rows, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)
