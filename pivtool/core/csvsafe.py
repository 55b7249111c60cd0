"""CSV cells a spreadsheet will not run: every report pivtool writes as CSV goes through
:func:`spreadsheet_safe` (UPNs, subjects and error texts come from rosters and certificates,
which an attacker can shape)."""

from __future__ import annotations

#: First characters that make Excel, LibreOffice or Google Sheets evaluate a cell (OWASP
#: "CSV injection"): formulas, DDE, and TAB/CR that some importers strip before looking.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(text: str) -> str:
    """*text*, prefixed with ``'`` when a spreadsheet would take it for a formula (the
    apostrophe makes it literal text and is not displayed)."""
    return "'" + text if text[:1] in FORMULA_STARTS else text
