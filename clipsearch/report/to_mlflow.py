"""A phase's report as artifacts of its MLflow parent run (the run phase.json names).

Kept apart from the report's pages so that building a report never needs MLflow; only
report_after_run, the hook the CLI hands a phase for when it ends, calls this.
"""

from __future__ import annotations

from pathlib import Path

from ..results import IMPORTANCE_JSON, PHASE_JSON, PNG_DIR, REPORT_HTML, read_json

ARTIFACT_PATH = "report"


def log_phase_report(phase_dir: Path) -> str | None:
    """report.html, importance.json and every PNG under the parent run's report/; the
    optimizer-vs-loss shares as metrics. Returns the run id, or None when phase.json names no
    run (a phase not run by clipsearch, or its phase.json gone). Through the phase's outbox:
    behind its queue, and queued while the store does not answer."""
    from ..tracking_outbox import PARENT, phase_outbox

    phase_dir = Path(phase_dir)
    box = phase_outbox(phase_dir) if (phase_dir / PHASE_JSON).is_file() else None
    if box is None:
        return None
    for name in (REPORT_HTML, IMPORTANCE_JSON):
        if (phase_dir / name).is_file():
            box.log_artifact(PARENT, phase_dir / name, artifact_path=ARTIFACT_PATH)
    if any((phase_dir / PNG_DIR).glob("*.png")):
        box.log_artifacts(PARENT, phase_dir / PNG_DIR, artifact_path=f"{ARTIFACT_PATH}/{PNG_DIR}")
    box.log_metrics(PARENT, share_metrics(phase_dir / IMPORTANCE_JSON), step=0)
    return box.runs[PARENT]


def share_metrics(importance_json: Path) -> dict[str, float]:
    """importance_optimizer_share_fanova etc.: the number seed 001 reported, searchable in MLflow."""
    if not importance_json.is_file():
        return {}
    shares = read_json(importance_json, "importance.json", "rebuild the report").get("optimizer_vs_loss", {})
    return {f"importance_{key.split('.')[0]}_share_{method}": value
            for method, share in shares.items() for key, value in share.items() if key != "reason"}
