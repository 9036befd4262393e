"""The warehouse: declared table schemas, the database client and the Dagster IO manager."""
