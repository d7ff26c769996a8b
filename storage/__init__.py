"""Recorded runs: the schema, the writer, the read-side queries."""
