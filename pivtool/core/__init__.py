"""pivtool.core."""
