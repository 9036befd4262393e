"""Small PNG pictures of the model and the book: ROC curves, calibration, PD by segment.

Figures are drawn with matplotlib's object API on its Agg canvas (no pyplot state, no
display), at a size and resolution that keep each PNG to a few tens of kilobytes, because the
Dagster UI loads every materialisation's metadata, pictures included.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import ArrayLike
from sklearn.metrics import auc, roc_curve

from credit_risk_assets.compute.scoring import SEGMENT_LABELS

FIGURE_SIZE = (4.8, 3.4)
DOTS_PER_INCH = 80
SEGMENT_COLOURS = {"Low": "#4c9f70", "Medium": "#e0a030", "High": "#c8453c"}
SAMPLE_COLOURS = ("#3a6ea5", "#c8453c", "#6b6b6b")
HISTOGRAM_BINS = np.linspace(0.0, 1.0, 21)


def roc_curve_png(samples: Mapping[str, tuple[ArrayLike, ArrayLike]]) -> bytes:
    """ROC curves of {sample name: (0/1 outcomes, PDs)}, one line per sample, AUC in the legend."""
    figure, axes = _figure()
    axes.plot([0, 1], [0, 1], color="#b0b0b0", linewidth=1, linestyle="--", label="random")
    for colour, (name, (outcomes, scores)) in zip(SAMPLE_COLOURS, samples.items(), strict=False):
        false_positive, true_positive, _ = roc_curve(np.asarray(outcomes), np.asarray(scores))
        area = auc(false_positive, true_positive)
        axes.plot(false_positive, true_positive, color=colour, label=f"{name} (AUC {area:.3f})")

    axes.set(xlim=(0, 1), ylim=(0, 1), xlabel="false positive rate", ylabel="true positive rate")
    axes.set_title("ROC curve", fontsize=10)
    axes.legend(loc="lower right", fontsize=8, frameon=False)
    return _png(figure)


def calibration_png(calibration: pd.DataFrame) -> bytes:
    """Observed against expected default rate per grade and sample, with 2-standard-error bars.

    `calibration` holds the columns of `model_calibration` (sample, risk_grade,
    expected_default_rate, observed_default_rate, standard_error).
    """
    figure, axes = _figure()
    highest = float(
        np.nanmax(calibration[["expected_default_rate", "observed_default_rate"]].to_numpy())
    )
    limit = min(1.0, max(0.05, highest * 1.1))
    axes.plot([0, limit], [0, limit], color="#b0b0b0", linewidth=1, linestyle="--")
    for colour, (name, rows) in zip(
        SAMPLE_COLOURS, calibration.groupby("sample", sort=False), strict=False
    ):
        axes.errorbar(
            rows["expected_default_rate"],
            rows["observed_default_rate"],
            yerr=2 * rows["standard_error"],
            fmt="o",
            markersize=4,
            capsize=2,
            color=colour,
            label=str(name),
        )

    axes.set(xlim=(0, limit), ylim=(0, limit))
    axes.set(xlabel="expected default rate (mean PD)", ylabel="observed default rate")
    axes.set_title("Calibration by grade", fontsize=10)
    axes.legend(loc="upper left", fontsize=8, frameon=False)
    return _png(figure)


def pd_histogram_png(pd_score: ArrayLike, segments: Sequence[str], title: str) -> bytes:
    """Accounts per PD band of 0.05, stacked by risk segment, on a log scale of accounts."""
    scores = np.asarray(pd_score, dtype="float64")
    labels = np.asarray(segments, dtype=object)
    figure, axes = _figure()
    stacked = [scores[labels == segment] for segment in SEGMENT_LABELS]
    labelled = (SEGMENT_LABELS, stacked)
    axes.hist(
        stacked,
        bins=HISTOGRAM_BINS,
        stacked=True,
        color=[SEGMENT_COLOURS[segment] for segment in SEGMENT_LABELS],
        label=[f"{segment} ({len(values):,})" for segment, values in zip(*labelled, strict=True)],
    )

    axes.set_yscale("log")
    axes.set(xlim=(0, 1), xlabel="PD", ylabel="accounts (log scale)")
    axes.set_title(title, fontsize=10)
    axes.legend(loc="upper right", fontsize=8, frameon=False)
    return _png(figure)


def markdown_image(png: bytes, description: str) -> str:
    """Markdown that shows `png` inline, as the Dagster UI renders a markdown metadata value."""
    encoded = base64.b64encode(png).decode("ascii")
    return f"![{description}](data:image/png;base64,{encoded})"


def _figure() -> tuple[Figure, object]:
    figure = Figure(figsize=FIGURE_SIZE, dpi=DOTS_PER_INCH, layout="tight")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    axes.tick_params(labelsize=8)
    axes.xaxis.label.set_size(9)
    axes.yaxis.label.set_size(9)
    return figure, axes


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    # No "Software" text chunk: the bytes then depend on the data only, not the library version.
    figure.savefig(buffer, format="png", dpi=DOTS_PER_INCH, metadata={"Software": None})
    return buffer.getvalue()
