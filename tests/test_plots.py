"""The front plots on hand-made trial records: what each kind of point looks like, in the PNG and the HTML.

The PNG is checked on the matplotlib Figure before it is saved (`front_figure`), the HTML on the plotly
Figure (`front_plotly`) and on the written page.
"""

from __future__ import annotations

import json
import re

import pytest
from matplotlib.colors import to_hex, to_rgba
from matplotlib.container import ErrorbarContainer

from sweeps.plots import (AXIS_LIMITS, BASE_LABEL, COLLAPSED_COLOUR, COLLAPSED_LABEL, FRONT_LABEL, INFEASIBLE_LABEL,
                          TARGET_LABEL, front_figure, front_png, panels)
from sweeps.plots_html import front_html, front_plotly

SAFETY_TAX = {"harmful_score": "min", "reasoning_accuracy": "max"}
THREE = {**SAFETY_TAX, "refusal_rate": "min"}


def trial(trial_id, harmful, accuracy, harm_ci=None, accuracy_ci=None, **extra):
    """Return a finished trial record as `sweeps.report.trial_records` gives it, intervals when given."""
    record = {"trial_id": trial_id, "run_id": f"run-{trial_id}", "status": "FINISHED", "params": {"data.size": "30"},
              "harmful_score": harmful, "reasoning_accuracy": accuracy, **extra}
    if harm_ci:
        record.update(harmful_score_ci_low=harm_ci[0], harmful_score_ci_high=harm_ci[1], harmful_score_n=24)
    if accuracy_ci:
        record.update(reasoning_accuracy_ci_low=accuracy_ci[0], reasoning_accuracy_ci_high=accuracy_ci[1],
                      reasoning_accuracy_n=30)
    return record


BASE = {"harmful_score": 45.8, "reasoning_accuracy": 96.7, "harmful_score_ci_low": 27.9,
        "harmful_score_ci_high": 64.9, "reasoning_accuracy_ci_low": 83.3, "reasoning_accuracy_ci_high": 99.4}


def collection(ax, gid):
    found = [c for c in ax.collections if c.get_gid() == gid]
    assert found, f"no points drawn as {gid!r}"
    return found


def bar_segments(ax) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """Return every error-bar segment on `ax` as ((x0, y0), (x1, y1)), rounded."""
    segments = []
    for container in ax.containers:
        if isinstance(container, ErrorbarContainer):
            for lines in container.lines[2]:
                segments += [tuple((round(float(a), 6), round(float(b), 6)) for a, b in segment)
                             for segment in lines.get_segments()]
    return segments


def legend_texts(fig) -> list[str]:
    legends = fig.legends or [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    return [t.get_text() for legend in legends for t in legend.get_texts()]


def test_png_draws_each_interval_on_both_axes_for_trials_and_the_base_model():
    trials = [trial("t1", 4.2, 53.3, (0.7, 20.2), (36.1, 69.8)), trial("t2", 20.0, 80.0, (9.5, 37.3), (62.7, 90.5)),
              trial("t3", 60.0, 40.0, (40.0, 77.0), (24.0, 58.0))]
    fig = front_figure(trials, [0, 1], SAFETY_TAX, base=BASE)
    segments = set(bar_segments(fig.axes[0]))
    assert fig._suptitle.get_text().endswith("bars: 95% intervals")
    for t in [*trials, BASE]:
        x, y = t["reasoning_accuracy"], t["harmful_score"]
        assert ((t["reasoning_accuracy_ci_low"], y), (t["reasoning_accuracy_ci_high"], y)) in segments
        assert ((x, t["harmful_score_ci_low"]), (x, t["harmful_score_ci_high"])) in segments


def test_records_without_intervals_or_tags_draw_as_before():
    trials = [trial("t1", 10.0, 60.0), trial("t2", 50.0, 70.0), trial("t3", 60.0, 65.0),
              {"trial_id": "t4", "status": "FAILED", "params": {}}]
    fig = front_figure(trials, [0, 1], SAFETY_TAX, base={"harmful_score": 80.0, "reasoning_accuracy": 90.0})
    ax = fig.axes[0]
    assert bar_segments(ax) == []
    assert legend_texts(fig)[:2] == ["trial", FRONT_LABEL]
    assert COLLAPSED_LABEL not in legend_texts(fig) and INFEASIBLE_LABEL not in legend_texts(fig)
    (line,) = [line for line in ax.lines if line.get_gid() == FRONT_LABEL]
    assert sorted(line.get_xdata()) == [60.0, 70.0]
    assert fig._suptitle.get_text() == "3 trials, 1 failed (not shown)"


def test_html_carries_the_error_bars_of_every_point():
    trials = [trial("t1", 4.2, 53.3, (0.7, 20.2), (36.1, 69.8)), trial("t2", 50.0, 70.0)]
    fig = front_plotly(trials, [0, 1], SAFETY_TAX, base=BASE)
    by_trial = {}
    for trace in fig.data:
        for k, text in enumerate(trace.hovertext or ()):
            by_trial[text.split("<br>")[0]] = (trace, k)
    trace, k = by_trial["trial t1"]
    assert trace.error_x.arrayminus[k] == pytest.approx(53.3 - 36.1)
    assert trace.error_x.array[k] == pytest.approx(69.8 - 53.3)
    assert trace.error_y.arrayminus[k] == pytest.approx(4.2 - 0.7)
    assert trace.error_y.array[k] == pytest.approx(20.2 - 4.2)
    trace, k = by_trial["trial t2"]  # no interval recorded: a zero-length bar, never a made-up one
    assert trace.error_y.array[k] == 0 and trace.error_y.arrayminus[k] == 0
    trace, k = by_trial["trial base model"]
    assert trace.error_x.array[k] == pytest.approx(99.4 - 96.7)
    trace, k = by_trial["trial t1"]
    assert "harmful_score = 4.2 [0.7–20.2] n=24" in trace.hovertext[k]


def test_html_page_is_self_contained_and_holds_the_interval_arrays(tmp_path):
    trials = [trial("t1", 4.2, 53.3, (0.7, 20.2), (36.1, 69.8))]
    page = front_html(trials, [0], SAFETY_TAX, tmp_path / "front.html", base=BASE).read_text()
    assert "<script src=\"http" not in page
    start = re.search(r'Plotly\.newPlot\(\s*"[^"]+",\s*', page).end()
    spec, _ = json.JSONDecoder().raw_decode(page, start)
    errors = [t["error_y"] for t in spec if "error_y" in t]
    assert any(e["arrayminus"] == [pytest.approx(3.5)] and e["array"] == [pytest.approx(16.0)] for e in errors)


def test_three_objectives_give_three_pairwise_panels_in_png_and_html():
    trials = [trial("t1", 10.0, 60.0, refusal_rate=20.0), trial("t2", 40.0, 85.0, refusal_rate=5.0),
              trial("t3", 50.0, 50.0, refusal_rate=50.0)]
    assert panels(THREE) == [("reasoning_accuracy", "harmful_score"), ("refusal_rate", "harmful_score"),
                             ("refusal_rate", "reasoning_accuracy")]
    fig = front_figure(trials, [0, 1], THREE)
    drawn = [ax for ax in fig.axes if ax.axison]
    assert len(drawn) == 3
    assert {(ax.get_xlabel(), ax.get_ylabel()) for ax in drawn} == {
        ("reasoning accuracy (%) ↑", "harmful score (%) ↓"), ("over-refusal rate (%) ↓", "harmful score (%) ↓"),
        ("over-refusal rate (%) ↓", "reasoning accuracy (%) ↑")}
    refusal_panel = next(ax for ax in drawn if ax.get_xlabel().startswith("over-refusal"))
    offsets = {tuple(o) for c in refusal_panel.collections for o in c.get_offsets()}
    assert (20.0, 10.0) in offsets and (5.0, 40.0) in offsets  # the third objective is drawn, not left out
    # A 3-D front projected on a plane is not a curve: points are marked, never joined.
    assert not [line for ax in drawn for line in ax.lines if line.get_gid() == FRONT_LABEL]
    assert f"{FRONT_LABEL} (over all 3 objectives)" in legend_texts(fig)

    html = front_plotly(trials, [0, 1], THREE)
    axes_used = {(t.xaxis, t.yaxis) for t in html.data if t.x and t.x[0] is not None}
    assert axes_used == {("x", "y"), ("x2", "y2"), ("x3", "y3")}
    assert html.layout.xaxis3.title.text == "over-refusal rate (%) ↓"


def test_the_base_model_never_hides_a_front_point_that_ties_with_it():
    tied = trial("t1", 45.8, 96.7)
    fig = front_figure([tied, trial("t2", 10.0, 50.0)], [0, 1], SAFETY_TAX, base=BASE)
    ax = fig.axes[0]
    (base,) = collection(ax, BASE_LABEL)
    (front,) = collection(ax, FRONT_LABEL)
    assert base.get_zorder() < front.get_zorder()
    assert to_rgba(base.get_facecolor()[0])[3] == 0  # hollow: the tied point shows through
    assert [96.7, 45.8] in front.get_offsets().tolist()

    html = front_plotly([tied], [0], SAFETY_TAX, base=BASE)
    names = [t.name for t in html.data if t.mode == "markers" and t.x[0] is not None]
    assert names.index(BASE_LABEL) < names.index(FRONT_LABEL)  # drawn first, so beneath
    base_trace = next(t for t in html.data if t.name == BASE_LABEL and t.x[0] is not None)
    assert base_trace.marker.symbol[0].endswith("-open")


def test_labels_stay_inside_the_axes_even_at_the_corners():
    corners = [trial("t1", 100.0, 100.0), trial("t2", 100.0, 100.0), trial("t3", 100.0, 100.0),
               trial("t4", 0.0, 0.0), trial("t5", 100.0, 0.0), trial("t6", 0.0, 100.0), trial("t7", 50.0, 99.0)]
    fig = front_figure(corners, list(range(len(corners))), {"harmful_score": "max", "reasoning_accuracy": "max"})
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    box = ax.get_window_extent(renderer)
    labels = [t for t in ax.texts if t.get_text().startswith("t")]
    assert sorted(t.get_text() for t in labels) == ["t1, t2, t3", "t4", "t5", "t6", "t7"]  # ties labelled together
    for label in labels:
        extent = label.get_window_extent(renderer)
        assert box.x0 <= extent.x0 and extent.x1 <= box.x1 and box.y0 <= extent.y0 and extent.y1 <= box.y1, \
            label.get_text()

    html = front_plotly(corners, list(range(len(corners))), {"harmful_score": "max", "reasoning_accuracy": "max"})
    (text,) = [t for t in html.data if t.mode == "text"]
    positions = dict(zip(text.text, text.textposition))
    assert positions["t1, t2, t3"] == "bottom left" and positions["t4"] == "top right"
    assert text.cliponaxis is True


def test_collapsed_trials_are_marked_and_never_joined_into_the_front():
    healthy = [trial("t1", 10.0, 60.0), trial("t2", 50.0, 70.0)]
    collapsed = trial("t3", 70.8, 8.0, (50.8, 85.1), (2.2, 25.0), collapsed=True)
    sneaky = trial("t4", 30.0, 65.0, collapsed=True)  # on the front it was given, yet collapsed
    trials = [*healthy, collapsed, sneaky]
    fig = front_figure(trials, [0, 1, 3], SAFETY_TAX)
    ax = fig.axes[0]
    (marked,) = collection(ax, COLLAPSED_LABEL)
    assert sorted(map(tuple, marked.get_offsets().tolist())) == [(8.0, 70.8), (65.0, 30.0)]
    assert to_hex(marked.get_edgecolor()[0]) == COLLAPSED_COLOUR
    assert marked.get_paths()[0].vertices.tolist() != collection(ax, FRONT_LABEL)[0].get_paths()[0].vertices.tolist()
    (line,) = [line for line in ax.lines if line.get_gid() == FRONT_LABEL]
    assert sorted(zip(line.get_xdata(), line.get_ydata())) == [(60.0, 10.0), (70.0, 50.0)]
    assert COLLAPSED_LABEL in legend_texts(fig)
    assert "4 trials, 2 collapsed" in fig._suptitle.get_text()
    assert ((2.2, 70.8), (25.0, 70.8)) in bar_segments(ax)  # a collapsed trial keeps its error bars

    html = front_plotly(trials, [0, 1, 3], SAFETY_TAX)
    marked = next(t for t in html.data if t.name == COLLAPSED_LABEL and t.x[0] is not None)
    assert marked.marker.symbol[0] == "x" and marked.marker.color == COLLAPSED_COLOUR
    (line,) = [t for t in html.data if t.mode == "lines"]
    assert sorted(line.x) == [60.0, 70.0]


def test_groups_get_distinct_colours_and_infeasible_trials_are_hollow():
    trials = [trial("d1", 5.0, 40.0, group="directrefusal", feasible=True),
              trial("d2", 30.0, 45.0, group="directrefusal", feasible=False),
              trial("s1", 25.0, 70.0, group="safechain", feasible=False),
              trial("s2", 35.0, 60.0, group="safechain", feasible=None)]
    fig = front_figure(trials, [0, 2], SAFETY_TAX)
    ax = fig.axes[0]
    colours = {}
    for gid in ("directrefusal", "safechain"):
        for points in collection(ax, gid):
            for (x, y), face, edge in zip(points.get_offsets().tolist(), points.get_facecolor(),
                                          points.get_edgecolor()):
                colours[(x, y)] = (to_rgba(face), to_rgba(edge), gid)
    group_colour = {gid: {edge for face, edge, g in colours.values() if g == gid and face[3] == 0}
                    | {face for face, edge, g in colours.values() if g == gid and face[3] > 0} for gid in
                    ("directrefusal", "safechain")}
    assert len(group_colour["directrefusal"]) == 1 and len(group_colour["safechain"]) == 1
    assert group_colour["directrefusal"] != group_colour["safechain"]
    assert colours[(40.0, 5.0)][0][3] == 1 and colours[(60.0, 35.0)][0][3] == 1  # feasible, and unknown: filled
    assert colours[(45.0, 30.0)][0][3] == 0 and colours[(70.0, 25.0)][0][3] == 0  # infeasible: hollow
    texts = legend_texts(fig)
    assert {"directrefusal", "safechain", INFEASIBLE_LABEL} <= set(texts) and "trial" not in texts

    html = front_plotly(trials, [0, 2], SAFETY_TAX)
    legend = {t.name: t.marker.color for t in html.data if t.x and t.x[0] is None}
    assert legend["directrefusal"] != legend["safechain"]
    symbols = {text.split("<br>")[0]: symbol for t in html.data if t.hovertext
               for text, symbol in zip(t.hovertext, t.marker.symbol)}
    assert symbols == {"trial d1": "circle", "trial d2": "circle-open", "trial s1": "circle-open",
                       "trial s2": "circle"}


def test_a_two_objective_png_is_seven_by_five_inches_with_the_target_shaded(tmp_path):
    trials = [trial("t1", 4.2, 53.3, (0.7, 20.2), (36.1, 69.8), group="directrefusal")]
    target = {"harmful_score": 22.9, "reasoning_accuracy": 91.7}
    fig = front_figure(trials, [0], SAFETY_TAX, base=BASE, target=target)
    assert tuple(fig.get_size_inches()) == (7, 5)
    (region,) = collection(fig.axes[0], TARGET_LABEL)
    corners = region.get_paths()[0].vertices
    assert corners[:, 0].min() == pytest.approx(91.7) and corners[:, 0].max() == pytest.approx(AXIS_LIMITS[1])
    assert corners[:, 1].max() == pytest.approx(22.9)
    assert TARGET_LABEL in legend_texts(fig)
    path = front_png(trials, [0], SAFETY_TAX, tmp_path / "front.png", base=BASE, target=target)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_trials_stopped_early_are_drawn_apart_unless_on_the_front():
    from sweeps.plots import STOPPED_LABEL

    trials = [trial("t1", 10.0, 60.0), trial("t2", 50.0, 70.0), trial("t3", 60.0, 40.0, stopped_at=1),
              trial("t4", 5.0, 62.0, stopped_at=2)]  # t4 was stopped, yet its readings are on the front
    fig = front_figure(trials, [1, 3], SAFETY_TAX)
    (marked,) = collection(fig.axes[0], STOPPED_LABEL)
    assert marked.get_offsets().tolist() == [[40.0, 60.0]]
    assert STOPPED_LABEL in legend_texts(fig)
    html = front_plotly(trials, [1, 3], SAFETY_TAX)
    marked = next(t for t in html.data if t.name == STOPPED_LABEL and t.x[0] is not None)
    assert list(marked.x) == [40.0] and marked.marker.symbol[0] == "triangle-down-open"
