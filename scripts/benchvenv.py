"""Virtualenvs of their own for the benchmarks' anchors (pygeoapi, spopt, GerryChain …), so that
nothing they bring reaches gridplan's environment."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def anchor_venv(name: str, requirements: str) -> Path:
    """``bench-out/venv-<name>`` with ``requirements`` installed (created once)."""
    venv = ROOT / "bench-out" / f"venv-{name}"
    if not (venv / ".installed").exists():
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True)
        pip = str(venv / "bin" / "pip")
        subprocess.run([pip, "install", "-q", "-r", str(ROOT / requirements)], check=True)
        (venv / ".installed").touch()
    return venv
