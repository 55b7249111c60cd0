"""pivtool.sim."""
