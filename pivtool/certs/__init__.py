"""pivtool.certs."""
