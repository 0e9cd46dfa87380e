"""Names without codes: matching names as departments write them, and provisional codes.

Cities hold streets and communities by *name*: a community's street is written ``宝塔河街办``
where the streets layer says ``宝塔河街道``. A name is matched exactly first, then by its
stem — the name without its suffix (街道 / 街办 / 街道办事处 / 办事处 / 镇 / 乡 / 管理区 for
streets; 社区 / 居委会 / 社区居民委员会 / 村委会 / 村民委员会 / 村 for communities). A name that
matches more than one candidate is *ambiguous* and reported, never guessed.

A street or community without a code gets a **provisional code** (临时代码): still a valid,
nested code (so every check, prefix query and shapefile field keeps working), taken from a range
official codes do not use — sequence 901–999 (then 800–899, 700–799) under the district for a
street (街道 001–099, 镇 100–199, 乡 200–399 are official), the same under the street for a
community (居委会 001–199, 村 200+) — and flagged ``provisional`` until the official code table
replaces it (:mod:`geodata.code_table`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from geodata.i18n import _

#: Suffixes of street names, longest first (街道办事处 before 办事处 before …).
STREET_SUFFIXES = ("街道办事处", "街道办", "管理委员会", "管理区", "办事处", "街道", "街办", "镇", "乡")
#: Suffixes of community names, longest first.
COMMUNITY_SUFFIXES = ("社区居民委员会", "村民委员会", "社区居委会", "居民委员会", "居委会", "村委会",
                      "社区", "村")
#: Sequences a provisional code takes, in order: ranges no official code uses.
PROVISIONAL_SEQUENCES = tuple(range(901, 1000)) + tuple(range(800, 900)) + tuple(range(700, 800))

_SPACE = re.compile(r"[\s\u3000]+")


def normalise(name) -> str | None:
    """A name without spaces (also full-width ones); None when empty."""
    if name is None or (isinstance(name, float) and np.isnan(name)) or name is pd.NA:
        return None
    text = _SPACE.sub("", str(name))
    return text or None


def stem(name, suffixes: Iterable[str] = STREET_SUFFIXES) -> str | None:
    """``name`` without its one suffix (``宝塔河街办`` → ``宝塔河``); a name that is only a suffix
    keeps it."""
    text = normalise(name)
    if text is None:
        return None
    for suffix in suffixes:
        if text.endswith(suffix) and len(text) > len(suffix):
            return text[: -len(suffix)]
    return text


@dataclass
class NameMatch:
    """The result of matching names to candidates: a code per name (None where unmatched or
    ambiguous), and the names that matched nothing or more than one candidate."""

    codes: list[str | None]
    unmatched: list[str] = field(default_factory=list)
    ambiguous: dict[str, list[str]] = field(default_factory=dict)  # name → the candidates' codes
    by_stem: dict[str, str] = field(default_factory=dict)  # names matched only without their suffix

    @property
    def ok(self) -> bool:
        return not self.unmatched and not self.ambiguous


def match_names(names: Iterable, candidates: pd.DataFrame, suffixes: Iterable[str] = STREET_SUFFIXES,
                *, group: Iterable | None = None) -> NameMatch:
    """Match each of ``names`` to ``candidates`` (columns ``code``, ``name`` [, ``group``]).

    Exact name first (spaces ignored), then the stem. With ``group`` (one value per name, e.g. the
    street a community lies in), only candidates of the same group count. Empty names give None and
    are not reported.
    """
    suffixes = tuple(suffixes)
    names = list(names)
    groups = list(group) if group is not None else [None] * len(names)
    cand = candidates.assign(_exact=[normalise(n) for n in candidates["name"]],
                             _stem=[stem(n, suffixes) for n in candidates["name"]])
    if group is None or "group" not in cand.columns:
        cand = cand.assign(group=None)
    exact: dict[tuple, list[str]] = {}
    stems: dict[tuple, list[str]] = {}
    for code, g, e, s in zip(cand["code"], cand["group"], cand["_exact"], cand["_stem"], strict=True):
        exact.setdefault((g, e), []).append(code)
        stems.setdefault((g, s), []).append(code)
    out = NameMatch([])
    for name, g in zip(names, groups, strict=True):
        text = normalise(name)
        if text is None:
            out.codes.append(None)
            continue
        key_g = g if group is not None else None
        found = sorted(set(exact.get((key_g, text), [])))
        if not found:
            found = sorted(set(stems.get((key_g, stem(text, suffixes)), [])))
            if len(found) == 1:
                out.by_stem[text] = found[0]
        if len(found) == 1:
            out.codes.append(found[0])
            continue
        out.codes.append(None)
        if found:
            out.ambiguous[text] = found
        elif text not in out.unmatched:
            out.unmatched.append(text)
    return out


def next_codes(parent: str, taken: Iterable[str], count: int) -> list[str]:
    """``count`` provisional codes under ``parent`` (a 6- or 9-digit code) that are not ``taken``.

    Raises ``ValueError`` when the provisional ranges under ``parent`` are used up.
    """
    taken = set(taken)
    out: list[str] = []
    for seq in PROVISIONAL_SEQUENCES:
        if len(out) == count:
            break
        code = f"{parent}{seq:03d}"
        if code not in taken:
            out.append(code)
    if len(out) < count:
        raise ValueError(_("no provisional codes left under {parent}: {count} needed, {n_out} free in the "
                           "ranges 700–999", parent=parent, count=count, n_out=len(out)))
    return out


__all__ = ["COMMUNITY_SUFFIXES", "NameMatch", "PROVISIONAL_SEQUENCES", "STREET_SUFFIXES", "match_names",
           "next_codes", "normalise", "stem"]
