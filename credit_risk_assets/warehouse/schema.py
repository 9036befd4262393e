"""Declared table schemas: one definition drives the DDL, the frame check and the UI schema."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import sqlalchemy as sa
from dagster import TableColumn, TableColumnConstraints, TableConstraints, TableSchema

# Column kinds, each with the SQLAlchemy type it is created as. `flag` holds 0/1.
SQL_TYPES: dict[str, sa.types.TypeEngine] = {
    "bigint": sa.BigInteger(),
    "int": sa.Integer(),
    "flag": sa.SmallInteger(),
    "double": sa.Double(),
    "date": sa.Date(),
    "datetime": sa.DateTime(),
    "label": sa.String(64),
    "text": sa.String(255),
}

# Integer kinds and the values their SQL types hold; a flag holds 0 or 1 only.
INTEGER_RANGES: dict[str, tuple[int, int]] = {
    "bigint": (-(2**63), 2**63 - 1),
    "int": (-(2**31), 2**31 - 1),
    "flag": (0, 1),
}

# Frame dtypes of the other kinds (the frame conventions of the project).
FRAME_DTYPES: dict[str, str] = {
    "double": "float64",
    "date": "datetime64[ns]",
    "datetime": "datetime64[ns]",
    "label": "str",
    "text": "str",
}

_NANOSECONDS_PER_DAY = 86_400 * 10**9

# What pandas.api.types.infer_dtype says of object columns that hold numbers only.
_NUMBER_INFERENCES = {"integer", "floating", "mixed-integer-float", "decimal", "boolean"}


class SchemaMismatchError(ValueError):
    """A frame does not fit the declared schema of the table it is meant for."""


@dataclass(frozen=True)
class ColumnSpec:
    """One column of a warehouse table: its name, kind, nullability and meaning."""

    name: str
    kind: str
    description: str
    nullable: bool = False

    def __post_init__(self) -> None:
        if self.kind not in SQL_TYPES:
            raise ValueError(
                f"Column {self.name!r} has kind {self.kind!r}; use one of {sorted(SQL_TYPES)}."
            )

    @property
    def frame_dtype(self) -> str:
        """The pandas dtype of this column in frames: Int64 for a nullable integer column."""
        if self.kind in INTEGER_RANGES:
            return "Int64" if self.nullable else "int64"
        return FRAME_DTYPES[self.kind]

    def convert(self, values: pd.Series) -> tuple[pd.Series, str | None]:
        """`values` as this column's frame dtype, or the values and why they do not fit.

        Nulls are kept (integer columns holding some come back as Int64): whether this
        column may hold them is the caller's check.
        """
        if isinstance(values.dtype, pd.CategoricalDtype):
            values = values.astype(object)
        if len(values) == 0:
            return pd.Series(index=values.index, dtype=self.frame_dtype), None
        if values.isna().all():
            # None, not pd.NA: pandas cannot fill a float64 column with pd.NA.
            return pd.Series(None, index=values.index, dtype=self._nullable_dtype()), None
        if self.kind in INTEGER_RANGES:
            return self._to_integers(values)
        if self.kind == "double":
            return _to_doubles(values)
        if self.kind in ("date", "datetime"):
            return self._to_timestamps(values)
        return self._to_text(values)

    def _nullable_dtype(self) -> str:
        return "Int64" if self.kind in INTEGER_RANGES else self.frame_dtype

    def _to_integers(self, values: pd.Series) -> tuple[pd.Series, str | None]:
        numbers = _as_numbers(values)
        if numbers is None:
            return values, f"holds values that are not numbers, e.g. {_first_text(values)!r}"

        if pd.api.types.is_float_dtype(numbers.dtype):
            fractional = _mask(numbers.notna() & (numbers % 1 != 0))
            if fractional.any():
                example = _plain(numbers[fractional].iloc[0])
                return values, f"holds numbers that are not whole, e.g. {example!r}"

        low, high = INTEGER_RANGES[self.kind]
        outside = _mask((numbers < low) | (numbers > high))
        if outside.any():
            example = _plain(numbers[outside].iloc[0])
            return values, f"holds values outside {low}..{high}, e.g. {example!r}"

        dtype = self.frame_dtype if numbers.notna().all() else "Int64"
        return numbers.astype(dtype), None

    def _to_timestamps(self, values: pd.Series) -> tuple[pd.Series, str | None]:
        if pd.api.types.is_datetime64_any_dtype(values.dtype):
            stamps = values
            if getattr(values.dtype, "tz", None) is not None:
                stamps = values.dt.tz_convert("UTC").dt.tz_localize(None)
        elif pd.api.types.infer_dtype(values, skipna=True) in _NUMBER_INFERENCES:
            example = _plain(values.dropna().iloc[0])
            return values, f"holds numbers, not dates, e.g. {example!r}"
        else:
            try:
                stamps = pd.to_datetime(values, errors="coerce", format="ISO8601")
            except (TypeError, ValueError) as error:
                return values, f"holds values that are not dates ({error})"

        unreadable = _mask(stamps.isna() & values.notna())
        if unreadable.any():
            example = _plain(values[unreadable].iloc[0])
            return values, f"holds values that are not dates, e.g. {example!r}"
        try:
            stamps = stamps.astype("datetime64[ns]")
        except (OverflowError, ValueError):
            return values, "holds dates outside 1677..2262, which datetime64[ns] cannot hold"

        if self.kind == "date":
            timed = has_time_of_day(stamps)
            if timed.any():
                example = stamps[timed].iloc[0]
                return values, f"holds times of day, e.g. {example}; a date is at midnight"
        return stamps, None

    def _to_text(self, values: pd.Series) -> tuple[pd.Series, str | None]:
        if pd.api.types.infer_dtype(values, skipna=True) != "string":
            example = _plain(values.dropna().iloc[0])
            return values, f"holds values that are not text, e.g. {example!r}: convert them to str"

        text = values.astype("str")
        limit = SQL_TYPES[self.kind].length
        too_long = _mask(text.str.len() > limit)
        if too_long.any():
            example = text[too_long].iloc[0]
            return values, f"holds text longer than {limit} characters, e.g. {example[:80]!r}"
        return text, None


@dataclass(frozen=True)
class TableSpec:
    """A warehouse table as declared: columns in order, primary key and partition column."""

    name: str
    description: str
    columns: tuple[ColumnSpec, ...]
    primary_key: tuple[str, ...]
    partition_column: str | None = None
    column_names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        names = tuple(column.name for column in self.columns)
        object.__setattr__(self, "column_names", names)
        unknown = [key for key in (*self.primary_key, self.partition_column) if key]
        unknown = [key for key in unknown if key not in names]
        if unknown:
            raise ValueError(f"Table {self.name!r} names keys {unknown} that are not columns.")

    def column(self, name: str) -> ColumnSpec:
        """The declared column called `name`."""
        return next(column for column in self.columns if column.name == name)

    def select_columns(self, names: Sequence[str] | None = None) -> tuple[ColumnSpec, ...]:
        """The declared columns called `names`, in that order (all columns when None)."""
        if names is None:
            return self.columns
        unknown = [name for name in names if name not in self.column_names]
        if unknown:
            raise SchemaMismatchError(
                f"Table {self.name!r} has no columns {unknown}; its columns are "
                f"{list(self.column_names)}."
            )
        return tuple(self.column(name) for name in names)

    def empty_frame(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """A frame with no rows and the declared columns (or `columns`) and dtypes."""
        return pd.DataFrame(
            {
                column.name: pd.Series(dtype=column.frame_dtype)
                for column in self.select_columns(columns)
            }
        )

    def conform(self, frame: pd.DataFrame, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """`frame` with the declared columns in order and of the declared dtypes.

        Raises SchemaMismatchError, naming the table and every column at fault, when a
        column is missing or unexpected, a non-null column holds nulls, values do not
        convert to the column's kind, or rows repeat the primary key. With `columns`, the
        frame must hold exactly those declared columns (a projection of the table).
        """
        expected = self.select_columns(columns)
        self._check_column_names(frame, expected)

        converted: dict[str, pd.Series] = {}
        problems: list[str] = []
        for column in expected:
            values = frame[column.name]
            converted[column.name], problem = column.convert(values)
            nulls = 0 if column.nullable else int(values.isna().sum())
            if nulls:
                problems.append(f"{column.name}: {nulls} nulls in a non-null column")
            if problem:
                problems.append(f"{column.name}: {problem}")

        if not problems:
            problems = self._key_problems(converted)
        if problems:
            raise SchemaMismatchError(
                f"Frame for table {self.name!r} does not fit its declared schema: "
                + "; ".join(problems)
                + ". Fix the values upstream; nothing was written."
            )
        # No copy: the converted columns are new or the caller's (copy-on-write keeps them
        # apart), and a copy of a large frame would double the memory a write needs.
        return pd.DataFrame(converted, index=frame.index, copy=False)

    def _check_column_names(self, frame: pd.DataFrame, expected: Sequence[ColumnSpec]) -> None:
        names = [column.name for column in expected]
        present = [str(name) for name in frame.columns]
        missing = [name for name in names if name not in present]
        unexpected = [name for name in present if name not in names]
        repeated = sorted({name for name in present if present.count(name) > 1})
        if missing or unexpected or repeated:
            found = [
                f"{label} {found}"
                for label, found in (
                    ("missing columns", missing),
                    ("unexpected columns", unexpected),
                    ("repeated columns", repeated),
                )
                if found
            ]
            raise SchemaMismatchError(
                f"Frame for table {self.name!r} does not fit its declared schema: "
                f"{'; '.join(found)}. Return exactly the columns {names}; nothing was written."
            )

    def _key_problems(self, converted: dict[str, pd.Series]) -> list[str]:
        if not all(key in converted for key in self.primary_key):
            return []
        keys = pd.DataFrame({key: converted[key] for key in self.primary_key})
        repeated = keys.duplicated(keep=False)
        if not repeated.any():
            return []
        example = tuple(str(value) for value in keys[repeated].iloc[0])
        return [
            f"{int(repeated.sum())} rows share their primary key ({', '.join(self.primary_key)}) "
            f"with another row, e.g. {example}"
        ]

    def sqlalchemy_table(self, metadata: sa.MetaData, name: str | None = None) -> sa.Table:
        """This schema as an SQLAlchemy table, optionally under another name (staging)."""
        columns = [
            sa.Column(
                column.name,
                SQL_TYPES[column.kind],
                nullable=column.nullable,
                autoincrement=False,
                comment=column.description,
            )
            for column in self.columns
        ]
        # A table-level constraint keeps the declared key order (month first), which the
        # partition deletes and reads rely on; per-column flags would follow column order.
        key = sa.PrimaryKeyConstraint(*self.primary_key)
        return sa.Table(name or self.name, metadata, *columns, key, comment=self.description)

    def dagster_schema(self) -> TableSchema:
        """This schema as Dagster shows it in the UI."""
        return TableSchema(
            columns=[
                TableColumn(
                    name=column.name,
                    type=column.kind,
                    description=column.description,
                    constraints=TableColumnConstraints(nullable=column.nullable),
                )
                for column in self.columns
            ],
            constraints=TableConstraints(other=[f"primary key ({', '.join(self.primary_key)})"]),
        )


def has_time_of_day(stamps: pd.Series) -> np.ndarray:
    """Which of the datetime64[ns] `stamps` are not at midnight (NaT is not).

    Whole-day arithmetic on the ticks: Series.dt.normalize does the same in several passes
    over the data, a second or so on ten million dates.
    """
    ticks = stamps.to_numpy(dtype="datetime64[ns]").view("int64")
    return (ticks % _NANOSECONDS_PER_DAY != 0) & stamps.notna().to_numpy()


def _as_numbers(values: pd.Series) -> pd.Series | None:
    """`values` as a numeric series, or None when some of them are not numbers."""
    if pd.api.types.is_bool_dtype(values.dtype):
        return values.astype("Int64")
    if pd.api.types.is_numeric_dtype(values.dtype):
        return values
    if pd.api.types.infer_dtype(values, skipna=True) in _NUMBER_INFERENCES:
        return pd.to_numeric(values, dtype_backend="numpy_nullable")
    return None


def _to_doubles(values: pd.Series) -> tuple[pd.Series, str | None]:
    numbers = _as_numbers(values)
    if numbers is None:
        return values, f"holds values that are not numbers, e.g. {_first_text(values)!r}"

    doubles = numbers.astype("float64")
    infinite = np.isinf(doubles.to_numpy())
    if infinite.any():
        return values, "holds infinite values, which the database cannot store"
    return doubles, None


def _first_text(values: pd.Series) -> object:
    """The first value that is not a number: the example an error message shows."""
    numeric = pd.to_numeric(values, errors="coerce")
    offenders = values[numeric.isna() & values.notna()]
    return _plain(offenders.iloc[0] if len(offenders) else values.dropna().iloc[0])


def _plain(value: object) -> object:
    """A numpy scalar as the Python value it holds, so that messages show `1.5`, not its type."""
    return value.item() if isinstance(value, np.generic) else value


def _mask(flags: pd.Series) -> pd.Series:
    """A boolean mask from a comparison that may hold NA (nullable dtypes)."""
    return flags.fillna(False).astype(bool)
