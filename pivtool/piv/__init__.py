"""pivtool.piv."""
