"""A phase's report and an experiment's: the panels (extract, then draw), the pages, the files.

results/EXP/PHASE/report.html, importance.json and report_png/*.png for a phase;
results/EXP/report.html for an experiment (a section per phase, after a summary of each
phase's best). A figure that cannot be drawn leaves a note on the page saying why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import InputError
from ..results import IMPORTANCE_JSON, PHASES, PNG_DIR, REPORT_HTML, atomic_write_text, write_json
from . import compute as C
from . import data as D
from . import figures as F
from . import html as H
from . import noise as N
from . import study as S
from .export import write_pngs
from .importance import importance_report
from .sources import PhaseData, confirm_path, is_phase, load_phase

TOP_K = 10


@dataclass
class PhaseReport:
    data: PhaseData
    kinds: dict[str, D.ParamKind]
    constant: dict[str, str]
    importance: dict[str, Any]
    spent: C.ComputeSpent
    chance: float | None = None          # the metric's chance level (noise.chance_level)
    band: N.SeedBand | None = None       # the best configuration's spread over seeds (confirm.json)
    band_note: str | None = None         # why there is no band
    panels: list[H.Panel] = field(default_factory=list)


# ------------------------------------------------------------------------------ building

def build_phase(data: PhaseData) -> PhaseReport:
    kinds, constant = D.param_kinds(r["config"] for r in data.rows)
    kinds = D.with_declared(kinds, data.declared)
    importance = importance_report(data.rows, _histories_for_importance(data), data.metric, kinds, constant,
                                   kinds_from="the phase's optuna.db, else the trials' values" if data.declared
                                   else "the trials' values", mode=data.mode)
    spent = C.compute_spent(data.rows, data.histories, C.gpus_per_trial(data.state), C.phase_fraction(data.state))
    report = PhaseReport(data, kinds, constant, importance, spent,
                         N.chance_level(data.histories, data.rows, data.metric))
    report.band, report.band_note = _seed_band(data, kinds)
    report.panels = [_parallel(report), *_importance_panels(report), _by(report, D.OPTIMIZER), _by(report, D.LOSS),
                     _progression(report), _best_vs_compute(report), _curves(report), *_study_panels(report),
                     *_optional_panels(report)]
    return report


def _seed_band(data: PhaseData, kinds: dict[str, D.ParamKind]) -> tuple[N.SeedBand | None, str | None]:
    """The band, or why there is none. A confirm.json of another shape reads as no confirm.json."""
    entries = N.confirm_entries(data.confirm)
    if not entries:
        return None, (f"not known: {confirm_path(data.phase_dir)} holds no seed reruns (`clipsearch confirm` "
                      f"reruns the top configurations with several seeds and writes it)")
    try:
        return N.seed_band(entries, data.rows, kinds, data.metric, data.name), None
    except D.Unavailable as why:
        return None, f"not known for this phase: {why}"


def _histories_for_importance(data: PhaseData) -> dict[str, D.History]:
    """Ray's per-epoch records; trials.csv's two points for a trial Ray kept none of."""
    ids = {str(r["trial_id"]) for r in data.rows}
    fallback = {str(r["trial_id"]): D.history_from_row(r, data.metric) for r in data.rows}
    return {**fallback, **{t: h for t, h in data.histories.items() if t in ids}}


def _attempt(name: str, title: str, draw: Callable[[], Any], caption: str | None = None,
             unusable: tuple[type[Exception], ...] = (D.Unavailable,)) -> H.Panel:
    try:
        return H.Panel(name, title, draw(), caption=caption)
    except unusable as why:
        return H.Panel(name, title, note=f"Not shown: {why}.")


def _parallel(r: PhaseReport) -> H.Panel:
    caption = ("One line per trial that has a score (errored trials have none). Log-scale parameters are "
               "plotted as powers of ten; n/a: a conditional parameter the trial did not set.")
    if r.chance is not None:
        caption += " The score axis and the colour scale reach the chance level (the darkest colour)."
    return _attempt("parallel_coordinates", "Parallel coordinates",
                    lambda: F.parallel_coordinates(D.parallel_coordinates(r.data.rows, r.kinds, r.data.metric,
                                                                          r.chance, r.data.mode)),
                    caption)


def _importance_panels(r: PhaseReport) -> list[H.Panel]:
    imp = r.importance
    if imp["reason"]:
        return [H.Panel("importance", "Hyperparameter importance", note=f"Not computed: {imp['reason']}.")]
    caption = (f"Target: {imp['target']}. The {imp['trials_used']} trials that reached epoch "
               f"{imp['common_epoch']} are compared there; trials ASHA stopped before it are left out, so every "
               f"value comes from the same number of epochs. Each method's importances sum to 100%.")
    notes = [f"{m}: {res['reason']}" for m, res in imp["methods"].items() if res["reason"]]
    notes += [f"{m} left out {k}: {why}" for m, res in imp["methods"].items()
              for k, why in res["not_evaluated"].items()]
    drawn = any(res["importances"] for res in imp["methods"].values())
    panel = H.Panel("importance", "Hyperparameter importance (fANOVA and PED-ANOVA)",
                    F.importance(imp) if drawn else None, note="; ".join(notes) or None, caption=caption)
    return [panel, _share_panel(imp)]


def _share_panel(imp: dict[str, Any]) -> H.Panel:
    shares = imp["optimizer_vs_loss"]
    title = "Optimizer vs loss"
    if not any("reason" not in s for s in shares.values()):
        reasons = sorted({s["reason"] for s in shares.values()})
        return H.Panel("optimizer_vs_loss", title, note=f"Not shown: {'; '.join(reasons)}.")
    caption = ("The importances of optimizer.name and loss.name rescaled to sum to 100% "
               "(seed 001 found the optimizer 89%, the loss 11%).")
    return H.Panel("optimizer_vs_loss", title, F.optimizer_vs_loss(shares), caption=caption)


def _by(r: PhaseReport, key: str) -> H.Panel:
    name, title = f"objective_by_{key.split('.')[0]}", f"Best {r.data.metric} by {key}"
    if key in r.constant:
        return H.Panel(name, title, note=f"Not shown: {key} {r.constant[key]} in this phase.")
    caption = ("Each trial's best score over the epochs it reached; a cross marks a trial ASHA stopped early "
               "(its score comes from fewer epochs). Choices sorted by median, best first.")
    return _attempt(name, title, lambda: F.objective_by(D.objective_by(r.data.rows, key, r.data.metric,
                                                                       mode=r.data.mode),
                                                        key, r.data.metric, r.chance), caption)


def _progression(r: PhaseReport) -> H.Panel:
    caption = ("Best so far follows the ranking: the trial that reached the most epochs, then the best score; "
               "it can fall when a trial that trained longer overtakes one stopped early.")
    if not r.data.histories:
        caption += " Trial order is trials.csv's: no start times were found."
    caption = " ".join(filter(None, (caption, _noise_caption(r))))
    return _attempt("progression", f"Best {r.data.metric} over trials",
                    lambda: F.progression(D.progression(r.data.rows, r.data.metric, r.data.order, r.data.mode),
                                          r.data.metric, r.chance, r.band),
                    caption)


def _best_vs_compute(r: PhaseReport) -> H.Panel:
    caption = ("The best trial so far (the ranking's rule, as above) after each trial ended, against the epochs "
               "spent by the trials that had ended (each trial's epochs x its data fraction; hover for "
               "trial-seconds).")
    if not r.data.histories:
        caption += " Trials are in trials.csv's order: no end times were found."
    caption = " ".join(filter(None, (caption, _noise_caption(r))))
    return _attempt("best_vs_compute", f"Best {r.data.metric} against compute spent",
                    lambda: F.best_vs_compute([_compute_curve(r)], r.data.metric, r.chance, r.band), caption)


def _compute_curve(r: PhaseReport) -> C.ComputeCurve:
    return C.best_vs_compute(r.data.rows, r.data.metric, r.data.finished, r.data.name, C.phase_fraction(r.data.state),
                             r.data.mode)


def _noise_caption(r: PhaseReport) -> str:
    parts = []
    if r.chance is not None:
        parts.append(f"Dotted line: chance ({r.chance:.3g}).")
    if r.band is not None:
        parts.append(f"Green band: the best configuration rerun with {r.band.seeds} seeds, mean ± std "
                     f"({r.band.mean:.4g} ± {r.band.std:.2g}); a gain smaller than the band is inside the noise.")
    return " ".join(parts)


def _curves(r: PhaseReport) -> H.Panel:
    if not r.data.histories:
        return H.Panel("learning_curves", "Learning curves",
                       note=f"Not shown: no per-epoch records ({r.data.histories_from}).")
    return _attempt("learning_curves", "Learning curves",
                    lambda: F.learning_curves(D.learning_curves(r.data.histories, r.data.rows, r.data.metric),
                                              r.data.metric, r.chance),
                    f"From {r.data.histories_from}. Crosses: trials ASHA stopped early, at their last epoch."
                    + (f" Dotted line: chance ({r.chance:.3g})." if r.chance is not None else ""))


def _study_panels(r: PhaseReport) -> list[H.Panel]:
    """optuna.visualization's slice, contour and timeline plots, on the phase's trials put in an
    in-memory study (study.py), built once and only when a plot that needs it is drawn."""
    trials = S.study_trials(r.data.rows, r.data.histories, r.kinds, r.data.metric, r.data.order)
    built: list[Any] = []

    def study():
        if not built:
            built.append(S.build_study(trials, r.kinds, r.data.mode))
        return built[0]

    return [_slice(r, trials, study), _contour(r, trials, study), _timeline(r, trials)]


#: Optuna's own checks raise ValueError: a note, as for any other figure that cannot be drawn
_OPTUNA_UNUSABLE = (D.Unavailable, ValueError)


def _slice(r: PhaseReport, trials: list[S.StudyTrial], study: Callable[[], Any]) -> H.Panel:
    caption = ("Each trial that ran every epoch: its score against each parameter that varied, coloured by "
               "trial number. Trials ASHA stopped are left out (Optuna plots complete trials only): their "
               "scores come from fewer epochs.")
    if r.chance is not None:
        caption += f" Dotted line: chance ({r.chance:.3g})."
    return _attempt("slice", "Slice plot", lambda: F.slice_plot(study(), S.slice_params(trials, r.kinds),
                                                                r.data.metric, r.chance), caption, _OPTUNA_UNUSABLE)


def _contour(r: PhaseReport, trials: list[S.StudyTrial], study: Callable[[], Any]) -> H.Panel:
    fanova = ((r.importance.get("methods") or {}).get("fanova") or {}).get("importances")
    try:
        choice = S.contour_params(trials, r.kinds, fanova)
    except D.Unavailable as why:
        return H.Panel("contour", "Contour plot", note=f"Not shown: {why}.")
    caption = (f"The score of the trials that ran every epoch (dots), interpolated over {choice.why}. "
               f"Between and beyond the dots the colour is Optuna's interpolation, not a measurement.")
    return _attempt("contour", f"Contour plot: {choice.x} x {choice.y}",
                    lambda: F.contour_plot(study(), choice, r.data.metric), caption, _OPTUNA_UNUSABLE)


def _timeline(r: PhaseReport, trials: list[S.StudyTrial]) -> H.Panel:
    caption = ("Each trial from its start to its last report (history/): COMPLETE ran every epoch, PRUNED was "
               "stopped by ASHA, FAIL errored. A gap is time when no trial of the phase ran (trials starting, or "
               "the phase stopped and resumed).")
    # a study of the timed trials only: Optuna would stamp the others with the time of drawing
    return _attempt("timeline", "Timeline", lambda: F.timeline(S.build_study(S.timed(trials), r.kinds, r.data.mode)),
                    caption, _OPTUNA_UNUSABLE)


def _optional_panels(r: PhaseReport) -> list[H.Panel]:
    """Figures for data only some protocols produce: absent without a note when not there."""
    panels = []
    if D.is_lr_wd_sweep(r.kinds):
        panels.append(_attempt("lr_wd_grid", "(lr, weight decay) sweep",
                               lambda: F.lr_wd_heatmap(D.lr_wd_grid(r.data.rows, r.data.metric), r.data.metric,
                                                       r.data.mode)))
    # a malformed file some other protocol wrote is a note on the page, not a failed report
    malformed = (D.Unavailable, ValueError, TypeError)
    if r.data.embeddings is not None:
        panels.append(_attempt("tsne", "t-SNE of the embeddings", lambda: F.tsne(_tsne(r.data.embeddings)),
                               unusable=malformed))
    if r.data.confusion is not None:
        panels.append(_attempt("confusion_matrix", "Confusion matrix",
                               lambda: F.confusion(_confusion(r.data.confusion)), unusable=malformed))
    return panels


def _confusion(content: dict) -> D.Confusion:
    if not isinstance(content, dict) or "matrix" not in content or "class_names" not in content:
        raise D.Unavailable("confusion_matrix.json needs keys 'matrix' and 'class_names'")
    return D.confusion_data(content["matrix"], content["class_names"])


def _tsne(arrays: dict) -> D.Embedding2D:
    if "embeddings" not in arrays or "labels" not in arrays:
        raise D.Unavailable("embeddings.npz needs arrays 'embeddings' and 'labels'")
    names = arrays.get("class_names")
    return D.tsne_points(arrays["embeddings"], arrays["labels"], None if names is None else list(names))


# ------------------------------------------------------------------------------ the page of a phase

def phase_body(r: PhaseReport, figures: H.FigureHtml) -> list[str]:
    parallel, *rest = r.panels
    body = [H.facts(_phase_facts(r)), *map(H.note, r.data.problems), "<h3>Compute spent</h3>",
            H.table(compute_table(r.spent)), *noise_floor(r), H.panel(parallel, figures, r.data.name)]
    body.append(f"<h3>Top {TOP_K} configurations</h3>")
    try:
        body.append(H.table(D.top_configurations(r.data.rows, r.kinds, r.data.metric, TOP_K)))
    except D.Unavailable as why:
        body.append(H.note(f"Not shown: {why}."))
    body += [H.panel(p, figures, r.data.name) for p in rest]
    return body


def _phase_facts(r: PhaseReport) -> list[tuple[str, Any]]:
    rows, best = r.data.rows, r.data.best or {}
    imp = r.importance
    return [
        ("trials", len(rows)),
        ("ranked / errored / stopped early", f"{sum(x.get('rank') is not None for x in rows)} / "
                                             f"{sum(x.get('status') == 'ERROR' for x in rows)} / "
                                             f"{sum(bool(x.get('stopped_early')) for x in rows)}"),
        ("metric", f"{r.data.metric} ({'lower' if r.data.mode == 'min' else 'higher'} is better)"),
        ("best trial", f"{best['trial_id']}: {best['score']:.4g} (compared at epoch {best['compared_at_epoch']}, "
                       f"best epoch {best['best_epoch']})" if best else "none (no best.json)"),
        ("searched", ", ".join(r.kinds) or "nothing varied"),
        ("importance", f"at epoch {imp['common_epoch']} over {imp['trials_used']} trials" if not imp["reason"]
                       else f"not computed: {imp['reason']}"),
    ]


def compute_table(spent: C.ComputeSpent) -> D.Table:
    """What the phase spent, each line with how it is counted."""
    rows = [("epochs over all pairs", spent.epochs, "each trial's epochs x its data.fraction, summed (as bench "
                                                    "search counts them)"),
            ("trial-epochs", spent.trial_epochs, f"the epochs the {spent.trials} trials reached, summed"),
            ("trial-seconds", spent.trial_seconds, "the trials' wall time (trials.csv seconds), summed")]
    if spent.train_seconds is not None:
        rows.append(("of which training / evaluation",
                     f"{H.cell(spent.train_seconds)} / {H.cell(spent.eval_seconds or 0.0)}",
                     "train_seconds / eval_seconds of every epoch reported (history/); the rest is start-up, "
                     "data loading, checkpoints and Tune"))
    rows.append(_gpu_row(spent))
    return D.Table(("compute", "spent", "counted as"), tuple(rows))


def _gpu_row(spent: C.ComputeSpent) -> tuple[str, Any, str]:
    if spent.gpus_per_trial is None:
        return ("GPU-seconds", "unknown", "phase.json names no resources per trial")
    if spent.gpus_per_trial == 0:
        return ("GPU-seconds", 0, "none: the trials ran on CPU (phase.json resources.gpu = 0)")
    return ("GPU-seconds", spent.gpu_seconds,
            f"trial-seconds x {spent.gpus_per_trial:g} GPU(s) per trial (phase.json resources.gpu)")


def noise_floor(r: PhaseReport) -> list[str]:
    """The chance level and the seed spread, and how to read them against the figures."""
    chance = (f"{r.chance:.4g}: the {r.data.metric} a random ranking scores on the evaluation sets "
              f"(the dotted line labelled chance)" if r.chance is not None
              else f"not known: the trials reported no {N.chance_key(r.data.metric)}")
    if r.band is not None:
        spread = (f"the best trial's configuration ({r.band.trial_id}) over {r.band.seeds} seeds: mean "
                  f"{r.band.mean:.4g} ± std {r.band.std:.2g}, 95% CI [{r.band.ci95[0]:.4g}, {r.band.ci95[1]:.4g}]; "
                  f"its one-seed score here {r.band.score:.4g} (the green band)")
    else:
        spread = r.band_note
    how = ("How to read it: a trial near the chance line learned nothing. A score is one run with one seed; "
           "two scores closer than the seeds' std (the band's half-width) are not told apart by this search, "
           "and a rerun could swap them. A best-so-far line that climbs within the band has not improved.")
    return ["<h3>Noise floor</h3>", H.facts([("chance", chance), ("seed spread", spread)]),
            f'<p class="caption">{H.esc(how)}</p>']


def _page_title(data: PhaseData) -> str:
    experiment = data.state.get("experiment") or data.phase_dir.parent.name
    return f"clipsearch report: {experiment} / {data.name}"


# ------------------------------------------------------------------------------ files

def write_phase_files(r: PhaseReport) -> Path:
    """importance.json and report.html of one phase; returns the page's path."""
    write_json(r.data.phase_dir / IMPORTANCE_JSON, r.importance)
    page = H.document(_page_title(r.data), phase_body(r, H.FigureHtml()))
    return _write_text(r.data.phase_dir / REPORT_HTML, page)


def _write_text(path: Path, text: str) -> Path:
    atomic_write_text(path, text)
    return path


def png_jobs(r: PhaseReport) -> list[tuple[Any, Path]]:
    folder = r.data.phase_dir / PNG_DIR
    return [(p.figure, folder / f"{p.name}.png") for p in r.panels if p.figure is not None]


def write_phase_report(phase_dir: Path, png: bool = True) -> Path:
    """Build one phase's report: report.html, importance.json and (with png) report_png/."""
    report = build_phase(load_phase(Path(phase_dir)))
    page = write_phase_files(report)
    if png:
        write_pngs(png_jobs(report), [report.data.phase_dir / PNG_DIR])
    return page


# ------------------------------------------------------------------------------ an experiment

def phase_dirs(exp_dir: Path) -> list[Path]:
    """The experiment's phases (folders holding a trials.csv): phase1..3 first, others by name."""
    found = [d for d in Path(exp_dir).iterdir() if d.is_dir() and is_phase(d)] if Path(exp_dir).is_dir() else []
    return sorted(found, key=lambda d: (PHASES.index(d.name) if d.name in PHASES else len(PHASES),
                                        d.name))


def write_experiment_report(exp_dir: Path, png: bool = True, phase_pngs: bool = True) -> Path:
    """results/EXP/report.html with a section per phase, and every phase's own files; with png,
    the PNGs of the experiment's figure and (with phase_pngs) of every phase's."""
    exp_dir = Path(exp_dir)
    phases = phase_dirs(exp_dir)
    if not phases:
        raise InputError("not an experiment: no phase folder with a trials.csv in it", where=str(exp_dir),
                         fix="give results/EXP of a search that has run")
    reports = [build_phase(load_phase(d)) for d in phases]
    for report in reports:
        write_phase_files(report)
    figures = H.FigureHtml()
    compute = experiment_compute_panel(reports)
    body = ["<h2>Summary</h2>", H.table(experiment_summary(reports)), H.panel(compute, figures, "experiment")]
    for report in reports:
        body += [f'<h2 id="{H.esc(report.data.name)}">{H.esc(report.data.name)}</h2>', *phase_body(report, figures)]
    page = _write_text(exp_dir / REPORT_HTML, H.document(f"clipsearch report: {exp_dir.name}", body))
    if png:
        jobs = [job for r in reports for job in png_jobs(r)] if phase_pngs else []
        jobs += [(compute.figure, exp_dir / PNG_DIR / f"{compute.name}.png")] if compute.figure is not None else []
        write_pngs(jobs, [exp_dir / PNG_DIR, *(r.data.phase_dir / PNG_DIR for r in reports if phase_pngs)])
    return page


def experiment_compute_panel(reports: list[PhaseReport]) -> H.Panel:
    """Every phase's best so far against the experiment's compute: the phases one after another."""
    curves = []
    for r in reports:
        try:
            curves.append(_compute_curve(r))
        except D.Unavailable:  # a phase without a score has no line; its section says why
            continue
    title = f"Best {reports[0].data.metric} against compute spent, one line per phase"
    if not curves:
        return H.Panel("best_vs_compute", title, note="Not shown: no phase has a scored trial.")
    fig = F.best_vs_compute(C.stacked(curves), reports[0].data.metric)
    chances = sorted({r.chance for r in reports if r.chance is not None})  # one, unless the phases' data differ
    for chance in chances:
        F.add_chance(fig, chance)
    caption = ("Each phase's best trial so far after each of its trials ended; the phases one after another, "
               "each starting where the ones before it stopped spending, so the x axis is the experiment's "
               "epochs (each trial's epochs x its data fraction).")
    if chances:
        caption += " Dotted line: chance."
    return H.Panel("best_vs_compute", title, fig, caption=caption)


def experiment_summary(reports: list[PhaseReport]) -> D.Table:
    """Each phase's best (best.json): what it decided and what it scored, and what it spent."""
    columns = ("phase", "trials", "errored", "best trial", "score", "compared at epoch", "best epoch", "decided",
               "epochs spent", "trial-seconds")
    rows = []
    for r in reports:
        best = r.data.best or {}
        decided = ", ".join(f"{k}={H.cell(v)}" for k, v in (best.get("decided") or {}).items())
        rows.append((r.data.name, len(r.data.rows), sum(x.get("status") == "ERROR" for x in r.data.rows),
                     best.get("trial_id", "none"), best.get("score"), best.get("compared_at_epoch"),
                     best.get("best_epoch"), decided, r.spent.epochs, r.spent.trial_seconds))
    return D.Table(columns, tuple(rows))
