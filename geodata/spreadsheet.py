"""CSV cells a spreadsheet will not run: OWASP's advice against CSV (formula) injection.

Excel, WPS and LibreOffice read a cell that starts with ``=``, ``+``, ``-`` or ``@`` (or a tab or
carriage return before one) as a formula, so a resident's complaint ``=HYPERLINK(…)`` would become
a link, or worse, in the spreadsheet of whoever opens the export. Every CSV gridplan writes puts
a ``'`` before such a text cell: the spreadsheet shows the text as it was typed. Numbers stay
numbers (a negative number is not text); GeoJSON, GeoPackage and shapefile exports keep every
text exactly as stored.
"""

from __future__ import annotations

import pandas as pd

#: what makes a spreadsheet read a cell as a formula (OWASP "CSV Injection")
FORMULA_STARTERS = ("=", "+", "-", "@", "\t", "\r")


def cell(value):
    """``value`` as a CSV cell: text starting with a formula character gets a leading ``'``."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTERS):
        return "'" + value
    return value


def frame_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` with :func:`cell` applied to every text column."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object or pd.api.types.is_string_dtype(out[column]):
            out[column] = out[column].map(cell)
    return out
