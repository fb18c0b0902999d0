"""Plotly figures of a report, each drawn from what a function of data.py extracted."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .data import (Confusion, Curve, Embedding2D, Grid, Group, ParallelCoordinates, Progression, TrialPoint)

HEIGHT = 420
_STOPPED = dict(symbol="x-thin-open", size=9, line=dict(width=2))
_FINISHED = dict(symbol="circle", size=7)


def _layout(fig: go.Figure, title: str, height: int = HEIGHT, **more: Any) -> go.Figure:
    fig.update_layout(title=title, height=height, template="plotly_white",
                      **{"margin": dict(l=60, r=30, t=60, b=50), **more})
    return fig


def parallel_coordinates(data: ParallelCoordinates) -> go.Figure:
    dimensions = [dict(label=a.label, values=list(a.values),
                       **({"tickvals": list(a.tickvals), "ticktext": list(a.ticktext)} if a.tickvals else {}),
                       **({"range": list(a.range)} if a.range else {}))
                  for a in data.axes]
    trace = go.Parcoords(dimensions=dimensions,
                         line=dict(color=list(data.color), colorscale="Viridis", showscale=True,
                                   colorbar=dict(title=dict(text=data.color_label), x=1.04, xanchor="left")))
    return _layout(go.Figure(trace), "Every trial across the hyperparameters (colour: its best score)", 460,
                   margin=dict(l=80, r=130, t=100, b=40))


def objective_by(groups: list[Group], key: str, metric: str) -> go.Figure:
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
    return _layout(fig, f"Best {metric} by {key}")


def _hover(point: TrialPoint) -> str:
    return f"trial {point.trial_id}<br>score {point.score:.4g}<br>reached epoch {point.reach}"


def progression(data: Progression, metric: str) -> go.Figure:
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
    return _layout(fig, f"Best {metric} over trials")


def learning_curves(curves: list[Curve], metric: str) -> go.Figure:
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
    return _layout(fig, f"{metric} per epoch, one line per trial")


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


def lr_wd_heatmap(grid: Grid, metric: str) -> go.Figure:
    z = [[np.nan if v is None else v for v in row] for row in grid.z]
    text = [[f"{v:.4g}" + (f" (x{n})" if n > 1 else "") if v is not None else "" for v, n in zip(row, counts)]
            for row, counts in zip(grid.z, grid.counts)]
    fig = go.Figure(go.Heatmap(z=z, x=[f"{w:.0e}" for w in grid.wds], y=[f"{lr:.0e}" for lr in grid.lrs],
                               text=text, texttemplate="%{text}", colorscale="Viridis",
                               colorbar=dict(title=dict(text=f"best {metric}")),
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
