"""The Result of a step and its views: figures, tables, plots."""
