"""Pure computations on DataFrames: no Dagster, no database, no I/O."""
