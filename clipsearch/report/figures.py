"""Plotly figures of a report, each drawn from what a function of data.py extracted."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .compute import ComputeCurve
from .data import (Confusion, Curve, Embedding2D, Grid, Group, ParallelCoordinates, Progression, TrialPoint)
from .noise import SeedBand
from .study import ContourChoice, quiet_optuna

HEIGHT = 420
_STOPPED = dict(symbol="x-thin-open", size=9, line=dict(width=2))
_FINISHED = dict(symbol="circle", size=7)


def _layout(fig: go.Figure, title: str, height: int = HEIGHT, **more: Any) -> go.Figure:
    fig.update_layout(title=title, height=height, template="plotly_white",
                      **{"margin": dict(l=60, r=30, t=60, b=50), **more})
    return fig


# ------------------------------------------------------------------------------ the noise floor

CHANCE = "chance"


def add_chance(fig: go.Figure, chance: float | None) -> go.Figure:
    """A dotted horizontal line labelled "chance" at the metric's chance level (on every
    subplot); nothing when it is unknown."""
    if chance is not None:
        fig.add_hline(y=chance, line=dict(dash="dot", color="#666", width=1.5), annotation_text=CHANCE,
                      annotation_position="bottom left", annotation_font_color="#666")
    return fig


def add_seed_band(fig: go.Figure, band: SeedBand | None) -> go.Figure:
    """The best configuration's mean +- std over seeds, a shaded band across the figure."""
    if band is not None:
        fig.add_hrect(y0=band.low, y1=band.high, fillcolor="#2ca02c", opacity=0.15, line_width=0,
                      annotation_text=f"best configuration over {band.seeds} seeds: mean ± std",
                      annotation_position="top left", annotation_font_color="#2a7a2a")
    return fig


# ------------------------------------------------------------------------------ the figures

def parallel_coordinates(data: ParallelCoordinates) -> go.Figure:
    dimensions = [dict(label=a.label, values=list(a.values),
                       **({"tickvals": list(a.tickvals), "ticktext": list(a.ticktext)} if a.tickvals else {}),
                       **({"range": list(a.range)} if a.range else {}))
                  for a in data.axes]
    end = "highest" if data.mode == "min" else "lowest"
    title = data.color_label if data.chance is None else f"{data.color_label}<br>({end}: chance {data.chance:.3g})"
    scale = {} if data.chance is None else dict(cmin=data.axes[-1].range[0], cmax=data.axes[-1].range[1])
    trace = go.Parcoords(dimensions=dimensions,
                         line=dict(color=list(data.color), colorscale="Viridis", showscale=True, **scale,
                                   reversescale=data.mode == "min",  # the best score is always the brightest
                                   colorbar=dict(title=dict(text=title), x=1.04, xanchor="left")))
    return _layout(go.Figure(trace), "Every trial across the hyperparameters (colour: its best score)", 460,
                   margin=dict(l=80, r=130, t=100, b=40))


def objective_by(groups: list[Group], key: str, metric: str, chance: float | None = None) -> go.Figure:
    """A box per choice and its trials as points; a cross marks a trial ASHA stopped early."""
    fig = go.Figure()
    for i, group in enumerate(groups):
        fig.add_trace(go.Box(x=[i] * len(group.points), y=[p.score for p in group.points], name=group.name,
                             boxpoints=False, showlegend=False, marker_color="#9bb"))
    for stopped, style, label in ((False, _FINISHED, "ran every epoch"), (True, _STOPPED, "stopped early")):
        xs, ys, texts = [], [], []
        for i, group in enumerate(groups):
            for point, offset in zip(group.points, group.offsets):
                if point.stopped_early == stopped:
                    xs.append(i + offset), ys.append(point.score), texts.append(_hover(point))
        if xs:
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", marker=style, name=label, text=texts,
                                     hovertemplate="%{text}<extra></extra>"))
    fig.update_xaxes(tickvals=list(range(len(groups))), ticktext=[g.name for g in groups], title=key)
    fig.update_yaxes(title=f"best {metric}")
    return _layout(add_chance(fig, chance), f"Best {metric} by {key}")


def _hover(point: TrialPoint) -> str:
    return f"trial {point.trial_id}<br>score {point.score:.4g}<br>reached epoch {point.reach}"


def progression(data: Progression, metric: str, chance: float | None = None,
                band: SeedBand | None = None) -> go.Figure:
    x = list(range(1, len(data.points) + 1))
    fig = go.Figure()
    for stopped, style, label in ((False, _FINISHED, "trial (ran every epoch)"),
                                  (True, _STOPPED, "trial (stopped early)")):
        idx = [i for i, p in enumerate(data.points) if p.stopped_early == stopped]
        if idx:
            fig.add_trace(go.Scatter(x=[x[i] for i in idx], y=[data.points[i].score for i in idx], mode="markers",
                                     marker=style, name=label, text=[_hover(data.points[i]) for i in idx],
                                     hovertemplate="%{text}<extra></extra>"))
    fig.add_trace(go.Scatter(x=x, y=[p.score for p in data.best], mode="lines", line_shape="hv", name="best so far",
                             text=[p.trial_id for p in data.best],
                             hovertemplate="best so far: trial %{text}<extra></extra>"))
    fig.update_xaxes(title="trial (in the order they started)", dtick=1 if len(x) <= 20 else None)
    fig.update_yaxes(title=f"best {metric}")
    return _layout(add_seed_band(add_chance(fig, chance), band), f"Best {metric} over trials")


def best_vs_compute(curves: list[ComputeCurve], metric: str, chance: float | None = None,
                    band: SeedBand | None = None) -> go.Figure:
    """The best so far against the epochs spent, a line per phase; a point where a trial ended."""
    fig = go.Figure()
    for curve in curves:
        steps = curve.scored
        fig.add_trace(go.Scatter(
            x=[s.epochs for s in steps], y=[s.best.score for s in steps], mode="lines+markers", line_shape="hv",
            name=curve.name or "best so far", marker=dict(size=5),
            customdata=[(s.trial_id, s.seconds, s.best.trial_id) for s in steps],
            hovertemplate="after trial %{customdata[0]}: %{x:.3g} epochs, %{customdata[1]:.4g} trial-seconds<br>"
                          "best so far: trial %{customdata[2]}, %{y:.4g}<extra>" + (curve.name or "") + "</extra>"))
    fig.update_xaxes(title="epochs spent (each trial's epochs x its data fraction), cumulative", rangemode="tozero")
    fig.update_yaxes(title=f"best {metric} so far")
    return _layout(add_seed_band(add_chance(fig, chance), band), f"Best {metric} against compute spent",
                   showlegend=len(curves) > 1)


def learning_curves(curves: list[Curve], metric: str, chance: float | None = None) -> go.Figure:
    fig = go.Figure()
    for curve in curves:
        # markers too: a trial stopped after one epoch has no line to draw
        fig.add_trace(go.Scatter(x=list(curve.epochs), y=list(curve.values), mode="lines+markers",
                                 name=curve.trial_id, line=dict(width=1), marker=dict(size=4), opacity=0.6,
                                 showlegend=False,
                                 hovertemplate=f"trial {curve.trial_id}<br>epoch %{{x}}: %{{y:.4g}}<extra></extra>"))
    for end, style in (("stopped early", dict(_STOPPED, color="#d62728")),
                       ("errored", dict(symbol="square-open", size=9, color="black"))):
        ended = [c for c in curves if c.end == end]
        if ended:
            fig.add_trace(go.Scatter(x=[c.epochs[-1] for c in ended], y=[c.values[-1] for c in ended], mode="markers",
                                     marker=style, name=end, text=[c.trial_id for c in ended],
                                     hovertemplate=f"trial %{{text}}: {end} at epoch %{{x}}<extra></extra>"))
    fig.update_xaxes(title="epoch", dtick=1 if max(len(c.epochs) for c in curves) <= 20 else None)
    fig.update_yaxes(title=metric)
    return _layout(add_chance(fig, chance), f"{metric} per epoch, one line per trial")


# ------------------------------------------------------------------------------ optuna.visualization's

def slice_plot(study, params: list[str], metric: str, chance: float | None = None) -> go.Figure:
    import optuna.visualization as ov

    with quiet_optuna():
        fig = ov.plot_slice(study, params=params, target_name=f"best {metric}")
    return _layout(add_chance(fig, chance), f"Best {metric} against each parameter (trials that ran every epoch)",
                   max(HEIGHT, 380))


def contour_plot(study, choice: ContourChoice, metric: str) -> go.Figure:
    import optuna.visualization as ov

    with quiet_optuna():
        fig = ov.plot_contour(study, params=[choice.x, choice.y], target_name=f"best {metric}")
    return _layout(fig, f"Best {metric} over {choice.x} x {choice.y}", 460)


def timeline(study) -> go.Figure:
    import optuna.visualization as ov

    with quiet_optuna():
        fig = ov.plot_timeline(study)
    fig.update_yaxes(title="trial (in the order they started)", dtick=1 if len(study.trials) <= 30 else None)
    return _layout(fig, "When each trial ran, and how it ended", max(HEIGHT, 120 + 22 * len(study.trials)))


def importance(report: dict[str, Any]) -> go.Figure:
    """The two methods' importances side by side, parameters in the same order in both."""
    methods = {m: r["importances"] for m, r in report["methods"].items() if r["importances"]}
    params = sorted({p for imp in methods.values() for p in imp},
                    key=lambda p: np.mean([imp.get(p, 0.0) for imp in methods.values()]))
    fig = make_subplots(1, len(methods), shared_yaxes=True, subplot_titles=[_METHOD_NAMES[m] for m in methods])
    for col, (method, imp) in enumerate(methods.items(), start=1):
        values = [imp.get(p) for p in params]
        fig.add_trace(go.Bar(x=[v or 0.0 for v in values], y=params, orientation="h", showlegend=False,
                             text=["not evaluated" if v is None else f"{100 * v:.0f}%" for v in values],
                             textposition="outside", cliponaxis=False), 1, col)
        fig.update_xaxes(title="share of importance", tickformat=".0%", range=[0, 1.15], row=1, col=col)
    return _layout(fig, f"Hyperparameter importance at epoch {report['common_epoch']} "
                        f"({report['trials_used']} trials)", max(HEIGHT, 120 + 28 * len(params)))


_METHOD_NAMES = {"fanova": "fANOVA", "ped_anova": "PED-ANOVA"}


def optimizer_vs_loss(shares: dict[str, dict[str, float]]) -> go.Figure:
    """Stacked bars: of what the optimizer and the loss explain together, each one's part."""
    methods = [m for m, s in shares.items() if "reason" not in s]
    fig = go.Figure()
    for key, color in (("optimizer.name", "#1f77b4"), ("loss.name", "#ff7f0e")):
        values = [shares[m][key] for m in methods]
        fig.add_trace(go.Bar(y=[_METHOD_NAMES[m] for m in methods], x=values, orientation="h", name=key.split(".")[0],
                             marker_color=color, text=[f"{100 * v:.0f}%" for v in values], textposition="inside"))
    fig.update_layout(barmode="stack")
    fig.update_xaxes(tickformat=".0%", range=[0, 1])
    return _layout(fig, "Optimizer vs loss: their share of the importance of the two", 260)


def lr_wd_heatmap(grid: Grid, metric: str, mode: str = "max") -> go.Figure:
    z = [[np.nan if v is None else v for v in row] for row in grid.z]
    text = [[f"{v:.4g}" + (f" (x{n})" if n > 1 else "") if v is not None else "" for v, n in zip(row, counts)]
            for row, counts in zip(grid.z, grid.counts)]
    fig = go.Figure(go.Heatmap(z=z, x=[f"{w:.0e}" for w in grid.wds], y=[f"{lr:.0e}" for lr in grid.lrs],
                               text=text, texttemplate="%{text}", colorscale="Viridis",
                               reversescale=mode == "min", colorbar=dict(title=dict(text=f"best {metric}")),
                               hovertemplate="lr %{y}, weight decay %{x}: %{z:.4g}<extra></extra>"))
    fig.update_xaxes(title="weight decay", type="category")
    fig.update_yaxes(title="learning rate", type="category")
    return _layout(fig, f"Best {metric} over the (lr, weight decay) grid (mean of repeats)")


def tsne(points: Embedding2D) -> go.Figure:
    fig = go.Figure()
    labels = np.asarray(points.labels)
    for name in sorted(set(points.labels), key=_natural):
        mask = labels == name
        fig.add_trace(go.Scatter(x=points.xy[mask, 0], y=points.xy[mask, 1], mode="markers", name=name,
                                 marker=dict(size=5)))
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    return _layout(fig, f"t-SNE of the embeddings ({len(labels)} points)", 480)


def _natural(text: str) -> tuple:
    return (0, int(text), "") if text.isdigit() else (1, 0, text)


def confusion(data: Confusion) -> go.Figure:
    text = [[f"{p:.0f}%<br>({c})" for p, c in zip(prow, crow)] for prow, crow in zip(data.percent, data.counts)]
    fig = go.Figure(go.Heatmap(z=data.percent, x=list(data.class_names), y=list(data.class_names), text=text,
                               texttemplate="%{text}", colorscale="Blues", zmin=0, zmax=100,
                               colorbar=dict(title=dict(text="% of true class")),
                               hovertemplate="true %{y}, predicted %{x}: %{z:.1f}%<extra></extra>"))
    fig.update_xaxes(title="predicted", type="category")
    fig.update_yaxes(title="true", type="category", autorange="reversed")
    size = max(HEIGHT, 60 + 36 * len(data.class_names))
    return _layout(fig, f"Confusion matrix (accuracy {data.accuracy:.1f}%)", size)
