"""Small CSV tables that departments send beside their layers (value mappings, code tables,
household totals): UTF-8 or GBK, read as text, refused with a message naming the file."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pandas as pd

#: A table of this kind (a few thousand rows at most) is read whole as text: past this many MB it
#: is not what it says it is.
MAX_TABLE_MB = 50



def decode_text(raw: bytes) -> str | None:
    """A table's bytes as text: UTF-8 (with or without a BOM) or GBK/GB 18030, as Chinese offices
    write CSV; None when it is neither."""
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return None

def read_text_table(path: str | Path, refusal: type[Exception], *, missing: str, label: str = "",
                    header: bool = True) -> pd.DataFrame:
    """``path`` as a frame of text cells (UTF-8, with or without BOM, or GBK/GB18030).

    Raises ``refusal`` with ``"{missing} {path} does not exist"``, or naming the file (after
    ``label``) when it is over :data:`MAX_TABLE_MB`, neither encoding or not readable CSV."""
    path = Path(path)
    if not path.exists():
        raise refusal(f"{missing} {path} does not exist")
    size = path.stat().st_size
    if size > MAX_TABLE_MB * 1024**2:
        raise refusal(f"{label}{path.name} is {size / 1024**2:,.0f} MB, over the limit of {MAX_TABLE_MB} MB "
                      "for such a table")
    raw = path.read_bytes()
    text = decode_text(raw)
    if text is None:
        raise refusal(f"{label}{path.name} is neither UTF-8 nor GBK text")
    try:
        return pd.read_csv(StringIO(text), dtype=str, keep_default_na=False, header=0 if header else None)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise refusal(f"{label}{path.name} is not a readable CSV file ({exc})") from None
