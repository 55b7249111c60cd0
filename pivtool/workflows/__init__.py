"""pivtool.workflows."""
