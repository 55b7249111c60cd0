"""pivtool.cli."""
