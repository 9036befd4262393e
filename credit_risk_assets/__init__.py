"""Behavioural probability-of-default pipeline as Dagster software-defined assets."""
