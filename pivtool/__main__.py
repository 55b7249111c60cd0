"""``python -m pivtool`` = the ``pivtool`` command."""

from pivtool.cli.main import entry

entry()
