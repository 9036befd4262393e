"""Tests of the pictures: valid PNGs, small enough for the Dagster UI, embedded as markdown."""

from __future__ import annotations

import base64
import io
import re
import struct

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from credit_risk_assets.compute.plots import (
    DOTS_PER_INCH,
    FIGURE_SIZE,
    calibration_png,
    markdown_image,
    pd_histogram_png,
    roc_curve_png,
)
from credit_risk_assets.compute.scoring import risk_segment
from credit_risk_assets.compute.validation import calibration_by_grade

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_PNG_BYTES = 100_000


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from the PNG's IHDR chunk, which must come first after the signature."""
    assert png[:8] == PNG_SIGNATURE
    assert png[12:16] == b"IHDR"
    return struct.unpack(">II", png[16:24])


@pytest.fixture(scope="module")
def scored() -> tuple[np.ndarray, np.ndarray]:
    """Outcomes and PDs of a book whose PDs are right."""
    rng = np.random.default_rng(4)
    scores = rng.beta(0.8, 7.0, size=20_000)
    return (rng.random(len(scores)) < scores).astype("int64"), scores


@pytest.fixture(scope="module")
def pictures(scored: tuple[np.ndarray, np.ndarray]) -> dict[str, bytes]:
    """Each picture of the module, drawn from the scored book."""
    outcomes, scores = scored
    calibration = pd.concat(
        [
            calibration_by_grade(outcomes[:15_000], scores[:15_000]).assign(sample="train"),
            calibration_by_grade(outcomes[15_000:], scores[15_000:]).assign(sample="out_of_time"),
        ]
    )
    return {
        "roc": roc_curve_png(
            {
                "train": (outcomes[:15_000], scores[:15_000]),
                "oot": (outcomes[15_000:], scores[15_000:]),
            }
        ),
        "calibration": calibration_png(calibration),
        "histogram": pd_histogram_png(scores, risk_segment(scores), "PD by segment"),
    }


@pytest.mark.parametrize("name", ["roc", "calibration", "histogram"])
def test_each_picture_is_a_readable_png_under_the_size_bound(
    pictures: dict[str, bytes], name: str
) -> None:
    """The bytes decode as a PNG of the declared pixel size and weigh less than 100 KB."""
    png = pictures[name]

    width, height = png_size(png)
    pixels = imread(io.BytesIO(png), format="png")

    assert (width, height) == (
        round(FIGURE_SIZE[0] * DOTS_PER_INCH),
        round(FIGURE_SIZE[1] * DOTS_PER_INCH),
    )
    assert pixels.shape[:2] == (height, width)
    assert len(png) < MAX_PNG_BYTES
    assert pixels[..., :3].std() > 0.05  # something is drawn, not a blank canvas


def test_a_picture_depends_on_its_data(scored: tuple[np.ndarray, np.ndarray]) -> None:
    """The same data draws the same bytes; other data draws other bytes."""
    outcomes, scores = scored

    first = roc_curve_png({"train": (outcomes, scores)})
    again = roc_curve_png({"train": (outcomes, scores)})
    other = roc_curve_png({"train": (outcomes, scores[::-1])})

    assert first == again
    assert first != other


def test_markdown_image_embeds_the_png_as_a_data_uri(pictures: dict[str, bytes]) -> None:
    """The markdown holds the PNG's bytes, base64-encoded, in a data URI the UI can show."""
    text = markdown_image(pictures["roc"], "ROC curve")

    found = re.fullmatch(r"!\[ROC curve\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", text)

    assert found is not None
    assert base64.b64decode(found.group(1)) == pictures["roc"]
