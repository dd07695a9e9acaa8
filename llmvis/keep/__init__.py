"""Keeping runs: the .llmvis bundle, the on-disk history, and persistence/import/export."""
