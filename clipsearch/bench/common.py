"""What every benchmark records beside its figures: the machine, the versions, the date."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path


def environment() -> dict:
    import torch

    import clipsearch

    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": platform.machine(), "cpu_count": os.cpu_count(), "processor": platform.processor() or "unknown",
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(), "torch": torch.__version__, "clipsearch": clipsearch.__version__,
    }


def write_result(out_dir: Path, name: str, result: dict, table_rows: list[tuple], header: tuple) -> Path:
    """results/benchmarks/NAME.json plus a markdown table NAME.md."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    env = result["environment"]
    lines = [f"# {name}", "", f"Measured {env['date']} on {env['machine']} x{env['cpu_count']}"
             f"{' + ' + env['cuda'] if env['cuda'] else ' (CPU only)'}, torch {env['torch']}, "
             f"clipsearch {env['clipsearch']}.", "", f"Rerun: `{result['command']}`", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in table_rows]
    path = out_dir / f"{name}.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    from .summary import write_index

    write_index(out_dir)  # the one table of every benchmark, kept in step with its files
    return path
