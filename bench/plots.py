"""PNG curves for the benches' ``--plot FILE``: panels of named series over time, drawn off-screen.

    write_png("soak.png", "soak, 30 min", [Panel("RSS (MB)", {"hub": [(0.0, 280.1), ...]}), ...])

matplotlib (a project dependency) draws with its file-only Agg backend, so no display is needed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

Series = list[tuple[float, float]]  # (x, y) points in x order


@dataclass
class Panel:
    """One plot: ``series`` by name, ``marks`` as labelled vertical lines (x, label)."""

    ylabel: str
    series: dict[str, Series]
    xlabel: str = "minutes"
    marks: list[tuple[float, str]] = field(default_factory=list)


def write_png(path: str | Path, title: str, panels: list[Panel]) -> Path:
    """Draw ``panels`` one above the other into the PNG file ``path`` (its folder is made)."""
    if not panels:
        raise ValueError("write_png: no panels to draw")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 3.2 * len(panels)), squeeze=False)
    try:
        for ax, panel in zip(axes[:, 0], panels):
            for name, points in panel.series.items():
                if points:
                    ax.plot([x for x, _ in points], [y for _, y in points], label=name, linewidth=1.2)
            for x, label in panel.marks:
                ax.axvline(x, color="grey", linestyle="--", linewidth=0.8)
                ax.annotate(label, (x, 1.0), xycoords=("data", "axes fraction"), fontsize=8,
                            ha="left", va="top", color="grey")
            ax.set_xlabel(panel.xlabel)
            ax.set_ylabel(panel.ylabel)
            ax.grid(alpha=0.3)
            if len(panel.series) > 1:
                ax.legend(fontsize=8, loc="best")
        axes[0, 0].set_title(title)
        fig.tight_layout()
        fig.savefig(out, dpi=100)
    finally:
        plt.close(fig)
    return out


def rates(counts: Series) -> Series:
    """Per-unit rates between consecutive (time, cumulative count) points, at each interval's end."""
    return [(t1, (n1 - n0) / (t1 - t0)) for (t0, n0), (t1, n1) in zip(counts, counts[1:]) if t1 > t0]
