"""Scores of accounts as of a month: PD, segment, points score, master-scale grade, reasons."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from credit_risk_assets import tables
from credit_risk_assets.compute.model import KEYS, ModelInputError, PdModel

SEGMENT_LABELS = ("Low", "Medium", "High")
DEFAULT_SEGMENT_EDGES = (0.3, 0.6)

# Grades by upper PD bound: a grade holds the PDs from the previous bound up to, but not
# including, its own; the last grade also holds a PD of exactly 1. Each bound is 1.7 to 2 times
# the one before, so a grade step means about the same relative change in risk everywhere. The
# bands suit a six-month behavioural PD whose book-wide default rate is near 10%: an account
# with no delinquency in its lookback lands in grade 4, and grades 5 to 9 split the tail.
MASTER_SCALE: tuple[tuple[float, str], ...] = (
    (0.01, "1"),
    (0.02, "2"),
    (0.04, "3"),
    (0.07, "4"),
    (0.12, "5"),
    (0.20, "6"),
    (0.35, "7"),
    (0.60, "8"),
    (1.0, "9"),
)
DEFAULT_GRADE = "D"

IN_DEFAULT_DPD = 90

# Clipping keeps ln((1 - pd) / pd) finite for a PD of exactly 0 or 1, which a saturated
# logistic regression can return in float64. At 1e-9 the scores stay within about 600 points
# of the offset, and every PD a model can meaningfully distinguish lies inside the clip.
PD_CLIP = 1e-9

REASON_CODE_COLUMNS = ("reason_code_1", "reason_code_2", "reason_code_3")
CARRIED_FEATURES = ("avg_dpd", "max_dpd", "delinquency_ratio", "delinquency_streak")


@dataclass(frozen=True)
class PointsScale:
    """A points scale: `base_points` at odds `base_odds`:1, `points_to_double_odds` per doubling."""

    base_points: float = 600
    base_odds: float = 50
    points_to_double_odds: float = 20

    def __post_init__(self) -> None:
        if not (self.base_odds > 0 and self.points_to_double_odds > 0):
            raise ValueError(
                f"A points scale needs base_odds > 0 and points_to_double_odds > 0; got "
                f"{self.base_odds} and {self.points_to_double_odds} (default 50 and 20)."
            )

    @property
    def factor(self) -> float:
        """Points per unit of log-odds."""
        return self.points_to_double_odds / math.log(2)

    @property
    def offset(self) -> float:
        """Score at even odds (1:1)."""
        return self.base_points - self.factor * math.log(self.base_odds)


def risk_segment(
    pd_score: ArrayLike, edges: tuple[float, float] = DEFAULT_SEGMENT_EDGES
) -> np.ndarray:
    """Low for PD in [0, edge_1), Medium for [edge_1, edge_2), High for [edge_2, 1]."""
    scores = _probabilities(pd_score)
    cut_points = _segment_edges(edges)

    positions = np.searchsorted(cut_points, scores, side="right")
    return np.asarray(SEGMENT_LABELS)[positions]


def credit_score(pd_score: ArrayLike, scale: PointsScale = PointsScale()) -> np.ndarray:
    """Points score offset + factor * ln((1 - pd) / pd): higher is safer, strictly so in PD.

    PDs are clipped to [1e-9, 1 - 1e-9] so that a PD of 0 or 1 gets a finite score.
    """
    scores = np.clip(_probabilities(pd_score), PD_CLIP, 1 - PD_CLIP)

    log_odds_good = np.log1p(-scores) - np.log(scores)
    return scale.offset + scale.factor * log_odds_good


def risk_grade(pd_score: ArrayLike, in_default: ArrayLike) -> np.ndarray:
    """Master-scale grade "1".."9" of each PD (see MASTER_SCALE), or "D" when in default."""
    scores = _probabilities(pd_score)
    defaulted = np.asarray(in_default)
    if defaulted.shape != scores.shape or not np.isin(defaulted, (0, 1)).all():
        raise ValueError(
            f"in_default must be 0/1 with the shape of pd_score {scores.shape}; got shape "
            f"{defaulted.shape} and values {np.unique(defaulted)[:10].tolist()}."
        )

    bounds = np.array([bound for bound, _ in MASTER_SCALE])
    grades = np.array([grade for _, grade in MASTER_SCALE], dtype=object)
    positions = np.minimum(np.searchsorted(bounds, scores, side="right"), len(bounds) - 1)
    return np.where(defaulted.astype(bool), DEFAULT_GRADE, grades[positions]).astype(str)


def master_scale_bands() -> pd.DataFrame:
    """The master scale as rows: risk_grade, grade_order (1.. with D last), pd_lower, pd_upper.

    A grade holds PDs in [pd_lower, pd_upper), the last model grade also PD 1; D has no band
    because it is given by the account's state (90+ DPD at T), not by its PD.
    """
    uppers = [bound for bound, _ in MASTER_SCALE]
    grades = [grade for _, grade in MASTER_SCALE]
    return pd.DataFrame(
        {
            "risk_grade": pd.Series([*grades, DEFAULT_GRADE], dtype="str"),
            "grade_order": np.arange(1, len(grades) + 2, dtype="int64"),
            "pd_lower": [0.0, *uppers[:-1], np.nan],
            "pd_upper": [*uppers, np.nan],
        }
    )


def reason_codes(model: PdModel, frame: pd.DataFrame, count: int = 3) -> pd.DataFrame:
    """The `count` features that raise each row's log-odds most, largest first.

    A feature counts only when its contribution is positive; a row with fewer such features
    has nulls in the remaining columns. Ties keep the model's feature order.
    """
    if count < 1:
        raise ValueError(f"count={count} must be at least 1 (default 3).")
    contributions = model.contributions(frame)

    ranked = np.argsort(-contributions, axis=1, kind="stable")[:, :count]
    ranked_values = np.take_along_axis(contributions, ranked, axis=1)
    names = np.asarray(model.features, dtype=object)[ranked]
    names[ranked_values <= 0] = None

    codes = {
        f"reason_code_{position + 1}": pd.Series(
            names[:, position] if position < names.shape[1] else None,
            index=frame.index,
            dtype="str",
        )
        for position in range(count)
    }
    return pd.DataFrame(codes, index=frame.index)


def score_accounts(
    features: pd.DataFrame,
    streaks: pd.DataFrame,
    model: PdModel,
    *,
    segment_edges: tuple[float, float] = DEFAULT_SEGMENT_EDGES,
    points: PointsScale = PointsScale(),
    in_default_dpd: int = IN_DEFAULT_DPD,
) -> pd.DataFrame:
    """Rows of `risk_scores` for every account with a row in its as-of month.

    Accounts with current_dpd >= `in_default_dpd` are already in default: they get PD 1,
    segment High, grade D and no points score or reason codes. Any number of months at once.
    """
    population = _population(features, streaks)
    in_default = population["current_dpd"].to_numpy(dtype="int64") >= in_default_dpd
    scored = population.loc[~in_default]

    pd_score = np.ones(len(population))
    pd_score[~in_default] = model.predict_pd(scored)
    points_score = np.full(len(population), np.nan)
    points_score[~in_default] = credit_score(pd_score[~in_default], points)
    reasons = reason_codes(model, scored, count=len(REASON_CODE_COLUMNS))

    result = population.loc[:, list(KEYS)].assign(
        pd_score=pd_score,
        risk_segment=risk_segment(pd_score, segment_edges),
        credit_score=points_score,
        risk_grade=risk_grade(pd_score, in_default.astype("int64")),
        **{column: reasons[column] for column in REASON_CODE_COLUMNS},
        in_default=in_default.astype("int64"),
        model_version=model.model_version,
        avg_dpd=population["avg_dpd"].to_numpy(dtype="float64"),
        max_dpd=population["max_dpd"].to_numpy(dtype="int64"),
        delinquency_ratio=population["delinquency_ratio"].to_numpy(dtype="float64"),
        delinquency_streak=population["delinquency_streak"].to_numpy(dtype="int64"),
    )
    text_columns = ["risk_segment", "risk_grade", *REASON_CODE_COLUMNS, "model_version"]
    result = result.astype(dict.fromkeys(text_columns, "str"))
    return result.loc[:, list(tables.RISK_SCORES.column_names)]


def _population(features: pd.DataFrame, streaks: pd.DataFrame) -> pd.DataFrame:
    """Feature rows with a row in month T, joined to their streaks, sorted by month and account."""
    carried_from_features = [c for c in CARRIED_FEATURES if c != "delinquency_streak"]
    _require_columns(features, (*KEYS, "current_dpd", *carried_from_features), "features")
    _require_columns(streaks, (*KEYS, "delinquency_streak"), "streaks")

    present = _with_month_dates(features.loc[features["current_dpd"].notna()])
    streak_only = [c for c in streaks.columns if c not in present.columns]
    streak_rows = _with_month_dates(streaks.loc[:, [*KEYS, *streak_only]])
    joined = present.merge(streak_rows, on=list(KEYS), how="left", indicator=True)

    unmatched = joined["_merge"] == "left_only"
    if unmatched.any():
        months = joined.loc[unmatched, "as_of_month"].dt.strftime("%Y-%m").value_counts()
        raise ModelInputError(
            f"{int(unmatched.sum())} feature rows have no streak row (rows per month: "
            f"{months.sort_index().to_dict()}). Materialise streaks for the same months."
        )
    joined = joined.drop(columns="_merge").sort_values(list(KEYS), kind="stable")
    return joined.reset_index(drop=True)


def _with_month_dates(frame: pd.DataFrame) -> pd.DataFrame:
    months = pd.to_datetime(frame["as_of_month"]).astype("datetime64[ns]")
    return frame.assign(as_of_month=months)


def _require_columns(frame: pd.DataFrame, columns: tuple[str, ...], name: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ModelInputError(
            f"The {name} frame lacks columns {missing}; it has {list(frame.columns)}."
        )


def _probabilities(pd_score: ArrayLike) -> np.ndarray:
    scores = np.asarray(pd_score, dtype="float64")
    outside = ~((scores >= 0) & (scores <= 1))
    if outside.any():
        examples = np.unique(scores[outside])[:5].tolist()
        raise ValueError(
            f"{int(outside.sum())} PDs are missing or outside [0, 1], e.g. {examples}. "
            "A PD must be a probability: check the model's output."
        )
    return scores


def _segment_edges(edges: tuple[float, float]) -> np.ndarray:
    cut_points = np.asarray(edges, dtype="float64")
    valid = (
        cut_points.shape == (len(SEGMENT_LABELS) - 1,)
        and np.all((cut_points > 0) & (cut_points < 1))
        and np.all(np.diff(cut_points) > 0)
    )
    if not valid:
        raise ValueError(
            f"Segment edges {tuple(edges)} must be {len(SEGMENT_LABELS) - 1} strictly increasing "
            f"numbers inside (0, 1), one between each of {SEGMENT_LABELS}; default "
            f"{DEFAULT_SEGMENT_EDGES}."
        )
    return cut_points
