"""The Safety Tax picture: every trial as a point, the Pareto front joined, the base model marked.

The first objective (harmful score by default) is the vertical axis and the second (reasoning accuracy)
the horizontal one, as in the paper's figures. The PNG is for reports; the HTML is self-contained
(plotly.js inlined) so MLflow's artifact view shows it without network access.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sweeps.pareto import Directions, has_objectives, sort_front

LABELS = {
    "harmful_score": "harmful score (%) ↓",
    "harmful_score_plus": "harmful score+ (%) ↓",
    "reasoning_accuracy": "reasoning accuracy (%) ↑",
    "refusal_rate": "over-refusal rate (%) ↓",
}


AXIS_LIMITS = (-3.0, 103.0)  # every objective is a percentage; a margin keeps 0 and 100 visible


def _axes(objectives: Directions) -> tuple[str, str]:
    names = list(objectives)
    if len(names) < 2:
        raise ValueError("the front plot needs two objectives")
    return names[1], names[0]  # (x, y)


def _label(name: str) -> str:
    return LABELS.get(name, name)


def _title(trials: Sequence[Mapping[str, Any]], objectives: Directions, title: str) -> str:
    failed = sum(not has_objectives(t, objectives) for t in trials)
    shown = len(trials) - failed
    suffix = f"{shown} trials" + (f", {failed} failed (not shown)" if failed else "")
    return f"{title}: {suffix}" if title else suffix


def front_png(
    trials: Sequence[Mapping[str, Any]],
    front: Sequence[int],
    objectives: Directions,
    path: str | Path,
    base: Mapping[str, Any] | None = None,
    title: str = "",
    target: Mapping[str, float] | None = None,
) -> Path:
    """Return `path` after drawing the trials, the joined front, the base model and the target region as a PNG.

    `target` holds a bound per axis objective ({harmful_score: at most, reasoning_accuracy: at least});
    the region meeting both is shaded.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    x, y = _axes(objectives)
    on_front = set(front)
    fig = Figure(figsize=(7, 5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    others = [t for i, t in enumerate(trials) if i not in on_front and has_objectives(t, objectives)]
    ax.scatter([t[x] for t in others], [t[y] for t in others], c="#9aa5b1", s=36, label="trial")
    ordered = [trials[i] for i in sort_front(trials, front, {x: objectives[x], y: objectives[y]})]
    ax.plot([t[x] for t in ordered], [t[y] for t in ordered], "-o", c="#d1495b", ms=8, label="Pareto front")
    for (px, py), names in _labels(ordered, x, y).items():
        ax.annotate(names, (px, py), textcoords="offset points", xytext=(5, 5), fontsize=7)
    region = _region(target, objectives, x, y)
    if region is not None:
        (x0, x1), (y0, y1) = region
        ax.fill_between([x0, x1], y0, y1, color="#66a182", alpha=0.15, label="target: half the harm, ≤ 5 points of reasoning lost")
    if base is not None and has_objectives(base, {x: "min", y: "min"}):
        ax.scatter([base[x]], [base[y]], marker="*", s=260, c="#2e86ab", edgecolors="black", zorder=5,
                   label="base model (no safety SFT)")
    ax.set_xlabel(_label(x))
    ax.set_ylabel(_label(y))
    ax.set_xlim(*AXIS_LIMITS)
    ax.set_ylim(*AXIS_LIMITS)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    ax.set_title(_title(trials, objectives, title), fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def _labels(points: Sequence[Mapping[str, Any]], x: str, y: str) -> dict[tuple[float, float], str]:
    """Return one label per distinct position: the ids of every trial there, so ties stay readable."""
    labels: dict[tuple[float, float], list[str]] = {}
    for t in points:
        labels.setdefault((t[x], t[y]), []).append(str(t.get("trial_id", "")))
    return {position: ", ".join(names) for position, names in labels.items()}


def _region(target: Mapping[str, float] | None, objectives: Directions, x: str,
            y: str) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """Return ((x from, x to), (y from, y to)) of the target region, or None without a bound on both axes."""
    if not target or x not in target or y not in target:
        return None
    low, high = AXIS_LIMITS

    def span(name: str) -> tuple[float, float]:
        return (low, target[name]) if objectives[name] == "min" else (target[name], high)

    return span(x), span(y)


def _hover(trial: Mapping[str, Any], objectives: Directions) -> str:
    lines = [f"trial {trial.get('trial_id', '?')}"]
    lines += [f"{name} = {trial[name]:.1f}" for name in objectives if name in trial]
    lines += [f"{key} = {value}" for key, value in sorted((trial.get("params") or {}).items())]
    return "<br>".join(lines)


def front_html(
    trials: Sequence[Mapping[str, Any]],
    front: Sequence[int],
    objectives: Directions,
    path: str | Path,
    base: Mapping[str, Any] | None = None,
    title: str = "",
    target: Mapping[str, float] | None = None,
) -> Path:
    """Return `path` after writing an interactive, self-contained HTML plot with each trial's params on hover."""
    import plotly.graph_objects as go

    x, y = _axes(objectives)
    on_front = set(front)
    fig = go.Figure()
    others = [t for i, t in enumerate(trials) if i not in on_front and has_objectives(t, objectives)]
    fig.add_trace(go.Scatter(
        x=[t[x] for t in others], y=[t[y] for t in others], mode="markers", name="trial",
        marker=dict(color="#9aa5b1", size=9), hovertext=[_hover(t, objectives) for t in others], hoverinfo="text",
    ))
    ordered = [trials[i] for i in sort_front(trials, front, {x: objectives[x], y: objectives[y]})]
    fig.add_trace(go.Scatter(
        x=[t[x] for t in ordered], y=[t[y] for t in ordered], mode="lines+markers", name="Pareto front",
        marker=dict(color="#d1495b", size=11), line=dict(color="#d1495b"),
        hovertext=[_hover(t, objectives) for t in ordered], hoverinfo="text",
    ))
    if base is not None and has_objectives(base, {x: "min", y: "min"}):
        fig.add_trace(go.Scatter(
            x=[base[x]], y=[base[y]], mode="markers", name="base model (no safety SFT)",
            marker=dict(symbol="star", size=18, color="#2e86ab", line=dict(color="black", width=1)),
            hovertext=[_hover({"trial_id": "base model", **base}, objectives)], hoverinfo="text",
        ))
    region = _region(target, objectives, x, y)
    if region is not None:
        (x0, x1), (y0, y1) = region
        fig.add_shape(type="rect", x0=x0, x1=x1, y0=y0, y1=y1, fillcolor="#66a182", opacity=0.15, line_width=0,
                      layer="below")
    fig.update_layout(
        title=_title(trials, objectives, title), xaxis_title=_label(x), yaxis_title=_label(y),
        xaxis_range=list(AXIS_LIMITS), yaxis_range=list(AXIS_LIMITS), template="plotly_white",
    )
    path = Path(path)
    fig.write_html(path, include_plotlyjs=True, full_html=True)
    return path
