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
    run (a phase not run by clipsearch, or its phase.json gone)."""
    from .. import tracking

    phase_dir = Path(phase_dir)
    path = phase_dir / PHASE_JSON
    state = read_json(path, "phase.json", "rerun the phase") if path.is_file() else {}
    run_id, uri = state.get("parent_run_id"), state.get("tracking_uri")
    if not (run_id and uri):
        return None
    client = tracking.client(uri)
    for name in (REPORT_HTML, IMPORTANCE_JSON):
        if (phase_dir / name).is_file():
            client.log_artifact(run_id, str(phase_dir / name), artifact_path=ARTIFACT_PATH)
    if any((phase_dir / PNG_DIR).glob("*.png")):
        client.log_artifacts(run_id, str(phase_dir / PNG_DIR), artifact_path=f"{ARTIFACT_PATH}/{PNG_DIR}")
    tracking.log_metrics(client, run_id, share_metrics(phase_dir / IMPORTANCE_JSON), step=0)
    return run_id


def share_metrics(importance_json: Path) -> dict[str, float]:
    """importance_optimizer_share_fanova etc.: the number seed 001 reported, searchable in MLflow."""
    if not importance_json.is_file():
        return {}
    shares = read_json(importance_json, "importance.json", "rebuild the report").get("optimizer_vs_loss", {})
    return {f"importance_{key.split('.')[0]}_share_{method}": value
            for method, share in shares.items() for key, value in share.items() if key != "reason"}
