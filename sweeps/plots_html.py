"""The front as an interactive, self-contained HTML page (plotly): the same layers, legend and panels as the PNG.

Every trace belongs to a legend group named after its legend entry, so clicking an entry hides that kind
of point in every panel at once. Hovering a point shows its readings with intervals and its params.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sweeps.pareto import Directions
from sweeps.plots import (AXIS_LIMITS, FRONT_LABEL, FRONT_LINE_DARK, TARGET_GREEN, Entry, Layer, axis_label,
                          errors, front_label, front_line, grid, hover_text, in_panel, inward, layers, legend_entries,
                          line_colour, panels, point_labels, target_region, title_line)
from sweeps.readings import is_infeasible

PX_PER_POINT = 1.25  # plotly sizes markers in pixels, matplotlib in points
SYMBOLS = {"circle": "circle", "x": "x", "star": "star", "square": "square", "line": "circle",
           "triangle": "triangle-down"}


def _error_bars(points: Sequence[Mapping[str, Any]], name: str, colour: str) -> dict | None:
    spread = errors(points, name)
    if spread is None:
        return None
    below, above = spread
    return dict(type="data", symmetric=False, array=above, arrayminus=below, color=colour, thickness=1, width=3)


def _marker(layer: Layer, points: Sequence[Mapping[str, Any]]) -> dict:
    hollow = [layer.hollow or is_infeasible(p) for p in points]
    symbol = SYMBOLS[layer.marker]
    return dict(symbol=[f"{symbol}-open" if h else symbol for h in hollow], color=layer.color,
                size=layer.size * PX_PER_POINT, line=dict(color=layer.edge, width=1.5 if layer.marker != "x" else 0))


def _legend_trace(entry: Entry):
    import plotly.graph_objects as go

    if entry.marker == "square":
        marker = dict(symbol="square", color=TARGET_GREEN, opacity=0.35, size=14)
    else:
        symbol = SYMBOLS[entry.marker] + ("-open" if entry.hollow else "")
        marker = dict(symbol=symbol, color=entry.color, size=11, line=dict(color=entry.edge or entry.color, width=1.5))
    return go.Scatter(x=[None], y=[None], name=entry.label, legendgroup=entry.label, marker=marker,
                      mode="lines+markers" if entry.marker == "line" else "markers",
                      line=dict(color=FRONT_LINE_DARK if entry.edge == "black" else entry.color))


def front_plotly(trials: Sequence[Mapping[str, Any]], front: Sequence[int], objectives: Directions,
                 base: Mapping[str, Any] | None = None, title: str = "",
                 target: Mapping[str, float] | None = None):
    """Return the plotly Figure of the front: one subplot per pair of objectives, every trial's params on hover."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    pairs = panels(objectives)
    rows, cols = grid(len(pairs))
    fig = make_subplots(rows=rows, cols=cols, horizontal_spacing=0.1, vertical_spacing=0.12)
    drawn = layers(trials, front, objectives, base)
    line = [trials[i] for i in front_line(trials, front, objectives)]
    target_drawn = False
    for k, (x, y) in enumerate(pairs):
        cell = dict(row=k // cols + 1, col=k % cols + 1)
        if line:  # first, so that the front's markers sit on top of it
            fig.add_trace(go.Scatter(x=[t[x] for t in line], y=[t[y] for t in line], mode="lines", name=FRONT_LABEL,
                                     legendgroup=front_label(objectives), showlegend=False,
                                     line=dict(color=line_colour(trials, objectives)), hoverinfo="skip"), **cell)
        for layer in drawn:
            points = in_panel(layer.points, x, y)
            if not points:
                continue
            fig.add_trace(go.Scatter(
                x=[p[x] for p in points], y=[p[y] for p in points], mode="markers", name=layer.entry,
                legendgroup=layer.entry, showlegend=False, marker=_marker(layer, points),
                error_x=_error_bars(points, x, layer.color), error_y=_error_bars(points, y, layer.color),
                hovertext=[hover_text({"trial_id": "base model", **p} if p is base else p, objectives)
                           for p in points], hoverinfo="text"), **cell)
        labels = point_labels(trials, front, x, y)
        if labels:
            sides = [inward(px, py) for px, py in labels]
            fig.add_trace(go.Scatter(
                x=[px for px, _ in labels], y=[py for _, py in labels], mode="text", text=list(labels.values()),
                textposition=[f"{'bottom' if below else 'top'} {'left' if left else 'right'}" for left, below in sides],
                textfont=dict(size=10), showlegend=False, hoverinfo="skip", cliponaxis=True), **cell)
        region = target_region(target, objectives, x, y)
        if region is not None:
            target_drawn = True
            (x0, x1), (y0, y1) = region
            fig.add_shape(type="rect", x0=x0, x1=x1, y0=y0, y1=y1, fillcolor=TARGET_GREEN, opacity=0.15,
                          line_width=0, layer="below", **cell)
        fig.update_xaxes(title_text=axis_label(x), range=list(AXIS_LIMITS), **cell)
        fig.update_yaxes(title_text=axis_label(y), range=list(AXIS_LIMITS), **cell)
    for entry in legend_entries(trials, front, objectives, base, target_drawn):
        fig.add_trace(_legend_trace(entry))
    fig.update_layout(title=title_line(trials, objectives, title, base), template="plotly_white",
                      height=520 if len(pairs) == 1 else 420 * rows, legend=dict(groupclick="togglegroup"))
    return fig


def front_html(
    trials: Sequence[Mapping[str, Any]],
    front: Sequence[int],
    objectives: Directions,
    path: str | Path,
    base: Mapping[str, Any] | None = None,
    title: str = "",
    target: Mapping[str, float] | None = None,
) -> Path:
    """Return `path` after writing `front_plotly` as a self-contained HTML page (plotly.js inlined)."""
    path = Path(path)
    fig = front_plotly(trials, front, objectives, base=base, title=title, target=target)
    fig.write_html(path, include_plotlyjs=True, full_html=True)
    return path
