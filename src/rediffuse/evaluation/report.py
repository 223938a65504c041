"""Where an evaluation goes: RUN/eval/eval.json (the numbers) and RUN/eval/eval.md (the same in words)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rediffuse.io import atomic_write_text


def write_report(run_dir: Path, report: dict[str, Any], markdown: str) -> Path:
    """Write a report as RUN/eval/eval.json and its Markdown as eval.md; returns the folder."""
    out = run_dir / "eval"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "eval.json", json.dumps(report, indent=1))
    atomic_write_text(out / "eval.md", markdown)
    return out
