"""``benchmarks/out/speed.json``: where every benchmark's figures are gathered."""

from __future__ import annotations

import json
from pathlib import Path


def merge_figures(out_dir: Path, figures: dict) -> Path:
    """Add ``figures`` to ``out_dir/speed.json`` (keeping the figures other benchmarks wrote)
    and print them; returns the file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "speed.json"
    speed = json.loads(path.read_text()) if path.is_file() else {}
    speed.update(figures)
    path.write_text(json.dumps(speed, indent=2) + "\n")
    for key, value in figures.items():
        print(f"{key:32s} {value}")
    return path
