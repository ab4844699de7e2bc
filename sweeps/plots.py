"""The Safety Tax picture: every trial as a point with its error bars, the Pareto front, the base model marked.

The first objective (harmful score by default) is the vertical axis and the second (reasoning accuracy)
the horizontal one, as in the paper's figures. With more objectives, every pair gets its own panel.
What is drawn, and how each kind of point looks, is decided once here (`layers`, `legend_entries`) and
rendered twice: the PNG (matplotlib) is for reports; the HTML (plotly) is self-contained (plotly.js
inlined) so MLflow's artifact view shows it without network access.

Kinds of point: healthy trials (coloured by group, such as the safety-data source, when trials carry
one), the Pareto front (larger, joined when there are exactly two objectives: the projection of a
front in more dimensions is not a curve), collapsed trials (an x in a muted colour, never joined),
infeasible trials (hollow), and the base model (a hollow star drawn beneath the trials, so a trial that
ties with it stays visible).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeps.pareto import Directions, has_objectives, sort_front
from sweeps.readings import format_reading, group_of, groups, has_field, interval, is_collapsed, is_infeasible

LABELS = {
    "harmful_score": "harmful score (%) ↓",
    "harmful_score_plus": "harmful score+ (%) ↓",
    "reasoning_accuracy": "reasoning accuracy (%) ↑",
    "refusal_rate": "over-refusal rate (%) ↓",
}

AXIS_LIMITS = (-3.0, 103.0)  # every objective is a percentage; a margin keeps 0 and 100 visible

TRIAL_GREY, FRONT_RED, FRONT_LINE_DARK = "#9aa5b1", "#d1495b", "#3d405b"
COLLAPSED_COLOUR, BASE_BLUE, TARGET_GREEN = "#a1887f", "#2e86ab", "#66a182"
# Dark2 (colour-blind safe, prints in grey): one colour per group, in sorted group order.
GROUP_COLOURS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666")

FRONT_LABEL = "Pareto front"
COLLAPSED_LABEL = "collapsed (mostly incoherent replies)"
STOPPED_LABEL, STOPPED_COLOUR = "stopped early (readings at that epoch)", "#8d6e63"
FEASIBLE_LABEL, INFEASIBLE_LABEL = "meets the constraints (filled)", "misses a constraint (hollow)"
BASE_LABEL = "base model (no safety SFT)"
TARGET_LABEL = "target: half the harm, ≤ 5 points of reasoning lost"
NO_GROUP_LABEL = "no group"

# Stacking order, bottom to top: the base model sits beneath every trial so that it never hides one.
Z_REGION, Z_ERRORS, Z_BASE, Z_TRIAL, Z_COLLAPSED, Z_LINE, Z_FRONT, Z_LABEL = 0.5, 1.5, 2, 3, 3.2, 3.5, 4, 5


@dataclass
class Layer:
    """Points drawn alike: the legend entry they belong to and their look (marker size is a diameter in points)."""

    entry: str
    points: list[Mapping[str, Any]]
    color: str
    marker: str  # "circle", "x", "star" or "triangle" (a trial stopped early)
    size: float
    zorder: float
    edge: str
    hollow: bool = False  # every point unfilled; otherwise only the infeasible ones are


@dataclass
class Entry:
    """One legend entry."""

    label: str
    color: str
    marker: str = "circle"  # or "x", "star", "triangle", "square" (a shaded region), "line" (the front)
    edge: str = ""
    hollow: bool = False


def panels(objectives: Directions) -> list[tuple[str, str]]:
    """Return the (x, y) objectives of every panel: each pair once, the earlier objective on the vertical axis."""
    names = list(objectives)
    if len(names) < 2:
        raise ValueError("the front plot needs two objectives")
    return [(names[j], names[i]) for i in range(len(names)) for j in range(i + 1, len(names))]


def grid(count: int) -> tuple[int, int]:
    """Return (rows, columns) for `count` panels, nearly square."""
    cols = math.ceil(math.sqrt(count))
    return math.ceil(count / cols), cols


def _shown(trials: Sequence[Mapping[str, Any]], objectives: Directions) -> list[int]:
    return [i for i, t in enumerate(trials) if has_objectives(t, objectives)]


def group_colours(trials: Sequence[Mapping[str, Any]]) -> dict[str | None, str]:
    """Return the colour of every group the trials name (grey for trials without one)."""
    colours: dict[str | None, str] = {g: GROUP_COLOURS[k % len(GROUP_COLOURS)] for k, g in enumerate(groups(trials))}
    colours[None] = TRIAL_GREY
    return colours


def front_label(objectives: Directions) -> str:
    """Return the front's legend entry; with more than two objectives it says the front is over all of them."""
    return FRONT_LABEL if len(objectives) == 2 else f"{FRONT_LABEL} (over all {len(objectives)} objectives)"


def layers(trials: Sequence[Mapping[str, Any]], front: Sequence[int], objectives: Directions,
           base: Mapping[str, Any] | None) -> list[Layer]:
    """Return every set of points to draw, bottom first: base model, trials by group, collapsed, front by group."""
    on_front, shown = set(front), _shown(trials, objectives)
    colours = group_colours([trials[i] for i in shown])
    grouped = len(colours) > 1
    out = []
    if base:
        out.append(Layer(BASE_LABEL, [base], BASE_BLUE, "star", 17, Z_BASE, BASE_BLUE, hollow=True))
    # A trial stopped early is drawn apart (its readings are of an earlier epoch), unless it is on the front.
    stopped = [i for i in shown if not is_collapsed(trials[i]) and trials[i].get("stopped_at") and i not in on_front]
    healthy = [i for i in shown if not is_collapsed(trials[i]) and i not in stopped]
    for group, colour in colours.items():
        mine = [i for i in healthy if group_of(trials[i]) == group]
        entry = (group or NO_GROUP_LABEL) if grouped else "trial"
        out.append(Layer(entry, [trials[i] for i in mine if i not in on_front], colour, "circle", 6, Z_TRIAL, colour))
        out.append(Layer(entry if grouped else front_label(objectives), [trials[i] for i in mine if i in on_front],
                         colour if grouped else FRONT_RED, "circle", 9, Z_FRONT, "black" if grouped else FRONT_RED))
    out.append(Layer(COLLAPSED_LABEL, [trials[i] for i in shown if is_collapsed(trials[i])], COLLAPSED_COLOUR,
                     "x", 7, Z_COLLAPSED, COLLAPSED_COLOUR))
    out.append(Layer(STOPPED_LABEL, [trials[i] for i in stopped], STOPPED_COLOUR, "triangle", 7, Z_TRIAL,
                     STOPPED_COLOUR, hollow=True))
    return [layer for layer in out if layer.points]


def legend_entries(trials: Sequence[Mapping[str, Any]], front: Sequence[int], objectives: Directions,
                   base: Mapping[str, Any] | None, target_drawn: bool) -> list[Entry]:
    """Return the legend: one entry per group (or "trial"), the front, then each special kind that is drawn."""
    shown = [trials[i] for i in _shown(trials, objectives)]
    colours = group_colours(shown)
    grouped = len(colours) > 1
    used = {group_of(t) for t in shown if not is_collapsed(t)}
    entries = [Entry(g or NO_GROUP_LABEL, c, edge=c) for g, c in colours.items() if g in used] if grouped else [
        Entry("trial", TRIAL_GREY, edge=TRIAL_GREY)]
    entries.append(Entry(front_label(objectives), "#e0e0e0" if grouped else FRONT_RED,
                         "line" if len(objectives) == 2 else "circle", "black" if grouped else FRONT_RED))
    if any(is_collapsed(t) for t in shown):
        entries.append(Entry(COLLAPSED_LABEL, COLLAPSED_COLOUR, "x", COLLAPSED_COLOUR))
    if any(t.get("stopped_at") and not is_collapsed(t) for t in shown):
        entries.append(Entry(STOPPED_LABEL, STOPPED_COLOUR, "triangle", STOPPED_COLOUR, hollow=True))
    if has_field(shown, "feasible"):
        entries += [Entry(FEASIBLE_LABEL, TRIAL_GREY, edge=TRIAL_GREY),
                    Entry(INFEASIBLE_LABEL, TRIAL_GREY, edge=TRIAL_GREY, hollow=True)]
    if base:
        entries.append(Entry(BASE_LABEL, BASE_BLUE, "star", BASE_BLUE, hollow=True))
    if target_drawn:
        entries.append(Entry(TARGET_LABEL, TARGET_GREEN, "square"))
    return entries


def front_line(trials: Sequence[Mapping[str, Any]], front: Sequence[int], objectives: Directions) -> list[int]:
    """Return the healthy front trials in joining order; none with more than two objectives or collapsed ones."""
    if len(objectives) != 2:
        return []
    healthy = [i for i in front if has_objectives(trials[i], objectives) and not is_collapsed(trials[i])]
    x, y = panels(objectives)[0]
    return sort_front(trials, healthy, {x: objectives[x], y: objectives[y]})


def line_colour(trials: Sequence[Mapping[str, Any]], objectives: Directions) -> str:
    """Return the front line's colour: red, or a dark grey that no group colour is mistaken for."""
    grouped = len(group_colours([trials[i] for i in _shown(trials, objectives)])) > 1
    return FRONT_LINE_DARK if grouped else FRONT_RED


def in_panel(points: Sequence[Mapping[str, Any]], x: str, y: str) -> list[Mapping[str, Any]]:
    """Return the points holding a number for both of a panel's objectives."""
    return [p for p in points if has_objectives(p, {x: "min", y: "min"})]


def errors(points: Sequence[Mapping[str, Any]], name: str) -> tuple[list[float], list[float]] | None:
    """Return (below, above) distances to each point's interval on `name`, or None when no point has one.

    A point without an interval gets zero-length bars, so one missing bound never hides the others.
    """
    spans = [interval(p, name) for p in points]
    if all(s is None for s in spans):
        return None
    below = [max(0.0, p[name] - s[0]) if s else 0.0 for p, s in zip(points, spans)]
    above = [max(0.0, s[1] - p[name]) if s else 0.0 for p, s in zip(points, spans)]
    return below, above


def axis_label(name: str) -> str:
    """Return an objective's axis title: its unit and which way is better."""
    return LABELS.get(name, name)


def title_line(trials: Sequence[Mapping[str, Any]], objectives: Directions, title: str,
               base: Mapping[str, Any] | None = None) -> str:
    """Return the plot's title: the sweep's name, how many trials are shown, collapsed and failed, what bars mean."""
    shown = [trials[i] for i in _shown(trials, objectives)]
    failed, collapsed = len(trials) - len(shown), sum(map(is_collapsed, shown))
    bars = any(interval(p, name) for p in [*shown, *([base] if base else [])] for name in objectives)
    suffix = f"{len(shown)} trials" + (f", {collapsed} collapsed" if collapsed else "") + (
        f", {failed} failed (not shown)" if failed else "") + ("; bars: 95% intervals" if bars else "")
    return f"{title}: {suffix}" if title else suffix


def point_labels(trials: Sequence[Mapping[str, Any]], front: Sequence[int], x: str,
                 y: str) -> dict[tuple[float, float], str]:
    """Return one label per distinct position of a front trial: the ids of every trial there, so ties stay readable."""
    labels: dict[tuple[float, float], list[str]] = {}
    for t in in_panel([trials[i] for i in front], x, y):
        labels.setdefault((t[x], t[y]), []).append(str(t.get("trial_id", "")))
    return {position: ", ".join(names) for position, names in labels.items()}


def inward(px: float, py: float) -> tuple[bool, bool]:
    """Return (left, below): the side of a point its label goes on so that the label stays inside the axes."""
    low, high = AXIS_LIMITS
    return (px - low) / (high - low) > 0.7, (py - low) / (high - low) > 0.85


def target_region(target: Mapping[str, float] | None, objectives: Directions, x: str,
                  y: str) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """Return ((x from, x to), (y from, y to)) of the target region, or None without a bound on both axes."""
    if not target or x not in target or y not in target:
        return None
    low, high = AXIS_LIMITS

    def span(name: str) -> tuple[float, float]:
        return (low, target[name]) if objectives[name] == "min" else (target[name], high)

    return span(x), span(y)


def hover_text(trial: Mapping[str, Any], objectives: Directions) -> str:
    """Return a point's hover text (HTML lines): its readings with intervals, its tags and its params."""
    lines = [f"trial {trial.get('trial_id', '?')}"]
    lines += [f"{name} = {format_reading(trial, name, with_n=True)}" for name in objectives if name in trial]
    lines += [f"{key} = {trial[key]}" for key in ("group", "feasible") if trial.get(key) is not None]
    if is_collapsed(trial):
        lines.append(COLLAPSED_LABEL)
    lines += [f"{key} = {value}" for key, value in sorted((trial.get("params") or {}).items())]
    return "<br>".join(lines)


def front_figure(trials: Sequence[Mapping[str, Any]], front: Sequence[int], objectives: Directions,
                 base: Mapping[str, Any] | None = None, title: str = "",
                 target: Mapping[str, float] | None = None):
    """Return the matplotlib Figure of the front: one panel per pair of objectives, the legend in a spare cell."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pairs = panels(objectives)
    rows, cols = grid(len(pairs))
    spare = rows * cols > len(pairs)
    size = (7, 5) if len(pairs) == 1 else (4.6 * cols, 3.9 * rows)
    fig = Figure(figsize=size, dpi=120, layout="constrained")
    FigureCanvasAgg(fig)  # a canvas that can render, so callers can measure the drawn figure
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    drawn = layers(trials, front, objectives, base)
    line = [trials[i] for i in front_line(trials, front, objectives)]
    target_drawn = False
    for ax, (x, y) in zip(axes, pairs):
        target_drawn |= _draw_panel(ax, drawn, line, trials, front, objectives, x, y, target)
    handles = [_proxy(e) for e in legend_entries(trials, front, objectives, base, target_drawn)]
    for ax in axes[len(pairs):]:
        ax.axis("off")
    if len(pairs) == 1:
        fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=7, frameon=False)
    elif spare:
        axes[-1].legend(handles=handles, loc="center", fontsize=8, frameon=False)
    else:
        fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    fig.suptitle(title_line(trials, objectives, title, base), fontsize=10)
    return fig


def _draw_panel(ax, drawn: list[Layer], line: list[Mapping[str, Any]], trials, front, objectives: Directions,
                x: str, y: str, target: Mapping[str, float] | None) -> bool:
    """Draw one pair of objectives on `ax`; return whether the target region is shaded there."""
    for layer in drawn:
        points = in_panel(layer.points, x, y)
        if not points:
            continue
        xs, ys = [p[x] for p in points], [p[y] for p in points]
        xerr, yerr = errors(points, x), errors(points, y)
        if xerr or yerr:
            ax.errorbar(xs, ys, xerr=xerr and list(xerr), yerr=yerr and list(yerr), fmt="none", ecolor=layer.color,
                        elinewidth=0.9, capsize=2, alpha=0.55, zorder=Z_ERRORS, label=f"errors: {layer.entry}")
        if layer.marker == "x":
            ax.scatter(xs, ys, marker="x", c=layer.color, s=layer.size ** 2, linewidths=1.6, zorder=layer.zorder,
                       gid=layer.entry)
            continue
        hollow = [layer.hollow or is_infeasible(p) for p in points]
        ax.scatter(xs, ys, marker={"star": "*", "triangle": "v"}.get(layer.marker, "o"), s=layer.size ** 2,
                   facecolors=["none" if h else layer.color for h in hollow],
                   edgecolors=[layer.color if h else layer.edge for h in hollow],
                   linewidths=1.5, zorder=layer.zorder, gid=layer.entry)
    if line:
        ax.plot([t[x] for t in line], [t[y] for t in line], "-", lw=1.5, zorder=Z_LINE, gid=FRONT_LABEL,
                color=line_colour(trials, objectives))
    for (px, py), names in point_labels(trials, front, x, y).items():
        left, below = inward(px, py)
        ax.annotate(names, (px, py), textcoords="offset points", xytext=(-6 if left else 6, -6 if below else 6),
                    ha="right" if left else "left", va="top" if below else "bottom", fontsize=7,
                    zorder=Z_LABEL, clip_on=True)
    region = target_region(target, objectives, x, y)
    if region is not None:
        (x0, x1), (y0, y1) = region
        ax.fill_between([x0, x1], y0, y1, color=TARGET_GREEN, alpha=0.15, zorder=Z_REGION, gid=TARGET_LABEL)
    ax.set_xlabel(axis_label(x), fontsize=8)
    ax.set_ylabel(axis_label(y), fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_xlim(*AXIS_LIMITS)
    ax.set_ylim(*AXIS_LIMITS)
    ax.grid(alpha=0.3)
    return region is not None


def _proxy(entry: Entry):
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    if entry.marker == "square":
        return Patch(facecolor=entry.color, alpha=0.25, label=entry.label)
    marker = {"circle": "o", "line": "o", "x": "x", "star": "*", "triangle": "v"}[entry.marker]
    return Line2D([], [], linestyle="-" if entry.marker == "line" else "none",
                  color=FRONT_LINE_DARK if entry.edge == "black" else entry.color, marker=marker,
                  markersize=11 if entry.marker == "star" else 7,
                  markerfacecolor="none" if entry.hollow else entry.color,
                  markeredgecolor=entry.edge or entry.color, markeredgewidth=1.5, label=entry.label)


def front_png(
    trials: Sequence[Mapping[str, Any]],
    front: Sequence[int],
    objectives: Directions,
    path: str | Path,
    base: Mapping[str, Any] | None = None,
    title: str = "",
    target: Mapping[str, float] | None = None,
) -> Path:
    """Return `path` after saving `front_figure` as a PNG.

    `target` holds a bound per axis objective ({harmful_score: at most, reasoning_accuracy: at least});
    the region meeting both is shaded.
    """
    path = Path(path)
    front_figure(trials, front, objectives, base=base, title=title, target=target).savefig(path)
    return path

