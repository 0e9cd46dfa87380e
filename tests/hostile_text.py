"""Hostile text: XSS payloads for every form and import, injection strings for every filter.

``XSS`` are texts a resident, a planner or another department's file may carry into a name,
an address or a note. Each payload that would run script in a browser makes an element whose
``id`` starts with ``xss`` or calls ``alert``/``confirm``/``prompt``, so a browser test can ask
``document.querySelector('[id^=xss]')`` and listen for dialogs. ``SPREADSHEET`` are the cell
starters a spreadsheet reads as a formula (OWASP "CSV injection"). ``INJECTION`` are what a
curious user types into a filter: SQL fragments, LIKE wildcards, quotes, control characters,
absurd numbers, JSON where a word is expected.

Used by ``tests/test_hostile_text.py`` (a few of each, small) and by ``scripts/bench_hardening.py``
part ``inject`` (all of them, every route).
"""

from __future__ import annotations

#: payloads that must never run; short enough for a 50-character name unless said otherwise
XSS: tuple[str, ...] = (
    "<script>alert('xss1')</script>",
    "<img src=x id=xss2 onerror=alert(2)>",
    '"><svg id=xss3 onload=alert(3)>',
    "'><svg id=xss4 onload=alert(4)>",
    "<iframe id=xss5 src=javascript:alert(5)>",
    "javascript:alert(6)",
    '" onmouseover="alert(7)" x="',
    "' onfocus='alert(8)' autofocus='",
    "</textarea><img src=x id=xss9 onerror=alert(9)>",
    "</title><img src=x id=xss10 onerror=alert(10)>",
    "</script><img src=x id=xss11 onerror=alert(11)>",
    "${alert(12)}",
    "`${alert(13)}`<b id=xss13>",
    "{{7*7}}<b id=xss14>{% raw %}",
    '<a id=xss15 href="javascript:alert(15)">地图</a>',
    "<b id=xss16 onclick=alert(16)>社区</b>",
    "<div id=xss17 style=\"width:1000px;height:1000px\" onmouseover=alert(17)>",
    "<details id=xss18 open ontoggle=alert(18)>",
    "<math><mtext><img src=x id=xss19 onerror=alert(19)>",
    "<svg><script>alert(20)</script></svg>",
    "&lt;img src=x id=xss21 onerror=alert(21)&gt;",
    "<img src=x id=xss22 onerror=&#97;lert(22)>",
    "<IMG SRC=x ID=xss23 OnErRoR=alert(23)>",
    "<input id=xss24 autofocus onfocus=alert(24)>",
    "<body onload=alert(25)>",
    "<object id=xss26 data=javascript:alert(26)>",
    "<meta http-equiv=refresh content=0;url=javascript:alert(27)>",
    "\u202egnp.exe<img src=x id=xss28 onerror=alert(28)>",
    "社区\u200b\u200d\ufeff<img src=x id=xss29 onerror=alert(29)>",
    "line\r\nbreak\x0b\x0c<b id=xss30>",
    "tab\tand\x1fcontrol<b id=xss31>",
    "<style>*{display:none}</style><b id=xss32>",
    "<template><img src=x onerror=alert(33)></template><b id=xss33>",
    "<form id=xss34 action=javascript:alert(34)><button>go</button></form>",
    '<img src="x` `<script>alert(35)</script>"` `>',
)

#: cells a spreadsheet would read as a formula (each also an XSS-free text)
SPREADSHEET: tuple[str, ...] = (
    "=HYPERLINK(\"http://x.invalid\",\"点击\")",
    "+1+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
)

#: longer than any form's limit: refused with a 400 that says so, or stored whole
LONG = "<b id=xss99>" + "长" * 5000

#: what may come as a query parameter (strings: the test client sends them URL-encoded)
INJECTION: tuple[str, ...] = (
    "' OR 1=1 --",
    "' OR '1'='1",
    "\" OR \"\"=\"",
    "1; DROP TABLE units",
    "1'; DROP TABLE incidents; --",
    "%' AND 1=1 AND '%'='",
    "%",
    "_",
    "%%",
    "__%__",
    "\\",
    "\\'",
    "’ OR 1=1 --",  # a typographic quote
    "＇ OR 1=1 --",  # a full-width quote
    "1 UNION SELECT name, password_hash FROM users",
    "0x41",
    "\x00",
    "a\x00b",
    "-1",
    "-99999999999999999999",
    "99999999999999999999999999999",
    "1e309",
    "NaN",
    "Infinity",
    "-Infinity",
    "0.1e-400",
    "[]",
    "{}",
    '{"$gt": ""}',
    "[1,2,3]",
    "null",
    "true",
    "()",
    "1,2,3,4,5",
    "180,90,-180,-90",
    "nan,nan,nan,nan",
    "1e999,0,1,1",
    "../../etc/passwd",
    "<script>alert(1)</script>",
    "社区' OR 1=1 --",
    "2024-13-45",
    "9999-12-31T23:59:59Z/..",
    " ",
    "",
)

#: query strings that repeat or bracket a parameter (``a[]=``)
ARRAY_FORMS: tuple[str, ...] = ("{name}[]=1&{name}[]=2", "{name}=1&{name}=2", "{name}[0]=x",
                                "{name}[$ne]=x")


def unescaped(payload: str, html: str) -> bool:
    """Whether ``payload`` appears in ``html`` as it was sent. Only payloads with a character
    HTML gives a meaning to (``<``, ``>``, quotes) count: ``javascript:alert(6)`` shown as text
    harms nobody."""
    return any(c in payload for c in "<>\"'") and payload in html
