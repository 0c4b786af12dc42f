"""Plotly figures built from the plain data in :mod:`workbench.fronts.pareto`.

Nothing here computes a front or a hypervolume: the figures only draw a
:class:`~workbench.fronts.pareto.ParetoFront` (or logged objective values), so tests can check a
figure's traces without a browser and the widgets show exactly what the data says.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go

from workbench.fronts.pareto import DIRECTIONS, ParetoFront, ParetoInputError
from workbench.spec.objective_source import direction_sign

FRONT_COLOR = "#d62728"
DOMINATED_COLOR = "#b8b8b8"
REFERENCE_COLOR = "#444444"
REGION_FILL = "rgba(214, 39, 40, 0.08)"

# Trace names: the tests and the widgets find traces by these.
DOMINATED = "dominated runs"
FRONT = "Pareto front"
REFERENCE = "reference point"
REGION = "dominated region (hypervolume)"
BASE = "base model"
BASE_COLOR = "#222222"
# Beyond this many spots, run labels beside the points cover each other: hover only.
LABELLED_POINTS = 12


def axis_title(name: str, direction: str) -> str:
    """``"accuracy (max)"``: the objective's name and which way is better."""
    return f"{name} ({direction})"


def hover_template(names: Sequence[str], coords: Sequence[str]) -> str:
    lines = ["%{hovertext}"] + [f"{n}=%{{{c}}}" for n, c in zip(names, coords, strict=True)]
    return "<br>".join(lines) + "<extra></extra>"


def _default_title(front: ParetoFront) -> str:
    n, n_front = len(front.labels), int(front.mask.sum())
    title = f"Pareto front: {n_front} of {n} runs non-dominated"
    if front.reference is not None:
        title += f", hypervolume {front.hypervolume:.4g}"
    return title


def staircase_order(points: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Order of the front's rows from best to worst in the first objective.

    Along that order the second objective gets better, and the attainment boundary goes
    from each point horizontally to the next one's x, then vertically to its y: plotly's
    ``line_shape="hv"``. That holds for every mix of min/max, since flipping an axis
    maps the staircase's corners onto the flipped staircase's corners.
    """
    key_x = -direction_sign(directions[0]) * points[:, 0]
    key_y = -direction_sign(directions[1]) * points[:, 1]
    return np.lexsort((key_y, key_x))


def _region_polygon(
    front_points: np.ndarray, directions: Sequence[str], reference: np.ndarray
) -> tuple[list[float], list[float]]:
    """Corners of the 2-D area the hypervolume measures, as a closed polygon.

    Only points strictly better than the reference in both objectives bound it, the same
    rule as :func:`workbench.fronts.pareto.hypervolume`.
    """
    better = np.array(
        [
            direction_sign(d) * p > direction_sign(d) * r
            for p, r, d in zip(front_points.T, reference, directions, strict=True)
        ]
    ).all(axis=0)
    inside = front_points[better]
    if len(inside) == 0:
        return [], []
    inside = inside[staircase_order(inside, directions)]
    rx, ry = float(reference[0]), float(reference[1])
    xs, ys = [float(inside[0, 0])], [ry]
    for i, (x, y) in enumerate(inside):
        if i > 0:
            xs.append(float(x))  # the corner under/over the previous point
            ys.append(float(inside[i - 1, 1]))
        xs.append(float(x))
        ys.append(float(y))
    xs += [rx, rx]
    ys += [float(inside[-1, 1]), ry]
    return xs, ys


def overlap_groups(points: np.ndarray, rows: Iterable[int] | None = None) -> list[list[int]]:
    """Rows (of ``points``, or among ``rows``) that sit on one spot, grouped: runs with the same
    objective values (to 12 significant digits) would hide each other on a plot. Groups come in
    the order of their first row; a run alone is a group of one."""
    points = np.asarray(points, dtype=float)
    rows = range(len(points)) if rows is None else rows
    groups: dict[tuple[float, ...], list[int]] = {}
    for i in rows:
        key = tuple(float(f"{v:.12g}") for v in points[int(i)])
        groups.setdefault(key, []).append(int(i))
    return list(groups.values())


def point_text(labels: Sequence[str]) -> str:
    """The text beside a point standing for the runs ``labels``: the run's label, with the
    count when several runs share the spot (``"correctness=0.7 ×2"``), or the labels when
    they differ and are short, else the first and how many more."""
    labels = [str(label) for label in labels]
    if len(labels) == 1:
        return labels[0]
    if len(set(labels)) == 1:
        return f"{labels[0]} ×{len(labels)}"
    joined = ", ".join(labels)
    return joined if len(joined) <= 32 else f"{labels[0]} +{len(labels) - 1} more"


def point_hover(labels: Sequence[str]) -> str:
    """The hover text of a point: its run, or every run at that spot, one per line."""
    if len(labels) == 1:
        return str(labels[0])
    return f"{len(labels)} runs here:<br>" + "<br>".join(map(str, labels))


def text_positions(points: np.ndarray, within: np.ndarray) -> list[str]:
    """Where each point's label goes so it stays inside the plot: to the left of points in
    the right third of ``within``'s x range, to the right of those in the left third, above
    or (in the top fifth of the y range) below."""
    points = np.asarray(points, dtype=float).reshape(-1, 2)
    within = np.asarray(within, dtype=float).reshape(-1, 2)
    (x_low, y_low), (x_high, y_high) = within.min(axis=0), within.max(axis=0)
    out = []
    for x, y in points:
        fx = (x - x_low) / (x_high - x_low) if x_high > x_low else 0.5
        fy = (y - y_low) / (y_high - y_low) if y_high > y_low else 0.5
        side = "left" if fx > 2 / 3 else "right" if fx < 1 / 3 else "center"
        out.append(f"{'bottom' if fy > 0.8 else 'top'} {side}")
    return out


def _grouped_scatter(
    front: ParetoFront, groups: list[list[int]], text: bool, **trace: Any
) -> go.Scatter:
    """One marker per spot in a 2-D figure: its customdata is the spot's first row (a click
    finds that run), its hover lists every run there, and a shared spot's marker is larger."""
    labels = front.labels
    firsts = [g[0] for g in groups]
    marker = dict(trace.pop("marker"))
    base_size = marker.get("size", 8)
    marker["size"] = [base_size + min(6, 3 * (len(g) - 1)) for g in groups]
    mode = trace.pop("mode")
    return go.Scatter(
        x=front.points[firsts, 0] if groups else [],
        y=front.points[firsts, 1] if groups else [],
        mode=mode + "+text" if text else mode,
        text=[point_text([labels[i] for i in g]) for g in groups] if text else None,
        textposition=text_positions(front.points[firsts], front.points) if groups else None,
        cliponaxis=False,  # a label near the edge runs into the margin, never cut
        textfont={"size": 11},
        marker=marker,
        hovertext=[point_hover([labels[i] for i in g]) for g in groups],
        customdata=firsts,  # row numbers: a click finds its run
        **trace,
    )


def _front_figure_2d(front: ParetoFront, text: bool) -> go.Figure:
    fig = go.Figure()
    names, directions = front.names, front.directions
    hover = hover_template(names, ["x", "y"])
    if front.reference is not None:
        xs, ys = _region_polygon(front.front_points, directions, front.reference)
        if xs:
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    mode="lines",
                    fill="toself",
                    fillcolor=REGION_FILL,
                    line={"width": 0},
                    hoverinfo="skip",
                    name=REGION,
                )
            )
    dominated = overlap_groups(front.points, np.flatnonzero(~front.mask))
    fig.add_trace(
        _grouped_scatter(
            front,
            dominated,
            text,
            mode="markers",
            marker={"color": DOMINATED_COLOR, "size": 8},
            textfont_color="#777777",
            hovertemplate=hover,
            name=DOMINATED,
        )
    )
    on_front = overlap_groups(front.points, np.flatnonzero(front.mask))
    order: Iterable[int] = (
        staircase_order(front.points[[g[0] for g in on_front]], directions) if on_front else []
    )
    fig.add_trace(
        _grouped_scatter(
            front,
            [on_front[i] for i in order],
            text,
            mode="lines+markers",
            line={"color": FRONT_COLOR, "shape": "hv", "width": 2},
            marker={"color": FRONT_COLOR, "size": 10},
            hovertemplate=hover,
            name=FRONT,
        )
    )
    if front.reference is not None:
        fig.add_trace(
            go.Scatter(
                x=[front.reference[0]],
                y=[front.reference[1]],
                mode="markers",
                marker={"color": REFERENCE_COLOR, "symbol": "x", "size": 10},
                hovertext=["reference point"],
                hovertemplate=hover,
                name=REFERENCE,
            )
        )
    fig.update_xaxes(title_text=axis_title(names[0], directions[0]))
    fig.update_yaxes(title_text=axis_title(names[1], directions[1]))
    return fig


def _front_figure_1d(front: ParetoFront) -> go.Figure:
    # One objective: the "front" is the best value (with its ties); show runs as rows.
    fig = go.Figure()
    labels = np.array(front.labels, dtype=object)
    hover = "%{hovertext}<br>" + f"{front.names[0]}=%{{x}}<extra></extra>"
    for name, rows, color, size in (
        (DOMINATED, ~front.mask, DOMINATED_COLOR, 8),
        (FRONT, front.mask, FRONT_COLOR, 10),
    ):
        fig.add_trace(
            go.Scatter(
                x=front.points[rows, 0],
                y=labels[rows],
                mode="markers",
                marker={"color": color, "size": size},
                hovertext=labels[rows],
                hovertemplate=hover,
                name=name,
            )
        )
    if front.reference is not None:
        fig.add_vline(
            x=float(front.reference[0]),
            line={"color": REFERENCE_COLOR, "dash": "dash"},
            annotation_text=REFERENCE,
        )
    fig.update_xaxes(title_text=axis_title(front.names[0], front.directions[0]))
    fig.update_yaxes(title_text="run", type="category")
    return fig


def _front_figure_nd(front: ParetoFront) -> go.Figure:
    # Three or more objectives: a scatter matrix (lower triangle), one panel per pair.
    # Chosen over parallel coordinates because every point keeps its hover label and
    # the front stays a separate, countable trace.
    fig = go.Figure()
    titles = [axis_title(n, d) for n, d in zip(front.names, front.directions, strict=True)]
    hover = "%{hovertext}<extra></extra>"

    def splom(
        rows: np.ndarray, marker: dict[str, Any], name: str, text: Any, index: Any = None
    ) -> go.Splom:
        return go.Splom(
            dimensions=[{"label": t, "values": rows[:, j]} for j, t in enumerate(titles)],
            marker=marker,
            hovertext=text,
            customdata=index,  # row numbers: a click finds its run
            hovertemplate=hover,
            name=name,
            showupperhalf=False,
            diagonal_visible=False,
        )

    for name, keep, marker in (
        (DOMINATED, ~front.mask, {"color": DOMINATED_COLOR, "size": 6}),
        (FRONT, front.mask, {"color": FRONT_COLOR, "size": 8}),
    ):
        groups = overlap_groups(front.points, np.flatnonzero(keep))
        firsts = [g[0] for g in groups]
        hovertext = [point_hover([front.labels[i] for i in g]) for g in groups]
        fig.add_trace(splom(front.points[firsts], marker, name, hovertext, firsts))
    if front.reference is not None:
        fig.add_trace(
            splom(
                front.reference[None, :],
                {"color": REFERENCE_COLOR, "symbol": "x", "size": 8},
                REFERENCE,
                [REFERENCE],
            )
        )
    return fig


def _add_base(fig: go.Figure, front: ParetoFront, base: Mapping[str, float]) -> None:
    """The base model (before any training) as a point of its own, labelled."""
    found = [base.get(n) for n in front.names]
    values = [v for v in found if v is not None and np.isfinite(v)]
    if len(values) < len(found):
        return
    marker = {"color": BASE_COLOR, "symbol": "diamond", "size": 11}
    hover = "base model (before training)<br>" + "<br>".join(
        f"{n}={v:.4g}" for n, v in zip(front.names, values, strict=True)
    )
    k = len(front.names)
    if k == 1:
        fig.add_vline(
            x=float(values[0]),
            line={"color": BASE_COLOR, "dash": "dot"},
            annotation_text=BASE,
        )
    elif k == 2:
        fig.add_trace(
            go.Scatter(
                x=[values[0]],
                y=[values[1]],
                mode="markers+text",
                text=[BASE],
                textposition="bottom center",
                textfont={"size": 11, "color": BASE_COLOR},
                marker=marker,
                hovertext=[hover],
                hovertemplate="%{hovertext}<extra></extra>",
                name=BASE,
            )
        )
    else:
        titles = [axis_title(n, d) for n, d in zip(front.names, front.directions, strict=True)]
        fig.add_trace(
            go.Splom(
                dimensions=[
                    {"label": t, "values": [v]} for t, v in zip(titles, values, strict=True)
                ],
                marker=marker,
                hovertext=[hover],
                hovertemplate="%{hovertext}<extra></extra>",
                name=BASE,
                showupperhalf=False,
                diagonal_visible=False,
            )
        )


def front_figure(
    front: ParetoFront,
    title: str | None = None,
    *,
    base: Mapping[str, float] | None = None,
    point_labels: bool | None = None,
) -> go.Figure:
    """Plot a :class:`~workbench.fronts.pareto.ParetoFront`.

    Two objectives: every run as a point (dominated ones grey), the front as a red
    staircase bounding the region it dominates, that region shaded up to the reference
    point (an ``x``). Three or more: a scatter matrix of every pair with the same colours.
    One: runs on a line, the best highlighted. Hovering a point shows its run label.

    Runs with the same values share one marker (larger), whose hover lists them all and
    whose label counts them (:func:`overlap_groups`). ``point_labels``: write each run's
    label beside its point in a 2-D figure (default: when there are at most
    :data:`LABELLED_POINTS` spots, beyond that labels cover each other). ``base``: the base
    model's objective values (the runs' first evaluation), drawn as a labelled diamond.
    """
    k = len(front.names)
    if point_labels is None:
        point_labels = len(overlap_groups(front.points)) <= LABELLED_POINTS
    if k == 1:
        fig = _front_figure_1d(front)
    elif k == 2:
        fig = _front_figure_2d(front, point_labels)
    else:
        fig = _front_figure_nd(front)
    if base:
        _add_base(fig, front, base)
    fig.update_layout(title_text=title if title is not None else _default_title(front))
    fig.update_layout(template="plotly_white", legend={"itemsizing": "constant"})
    return fig


def trajectory_figure(
    trajectories: Mapping[Any, Sequence[tuple[int, Mapping[str, float]]]],
    names: Sequence[str],
    directions: Sequence[str] | None = None,
    title: str | None = None,
) -> go.Figure:
    """Each run's path through a 2-D objective space across its evaluations.

    ``trajectories`` maps a run label to ``[(step, {objective name: value}), ...]`` as
    logged under ``objective/<name>``; ``names`` picks the two objectives for x and y.
    Evaluations are drawn in step order; ones missing either value (or with a non-finite
    one) are skipped, since runs may log objectives at different intervals. The first
    evaluation is an open circle, the last a filled one, so the direction of travel shows.
    """
    if isinstance(names, str) or len(names) != 2:
        raise ParetoInputError(
            f"trajectory_figure draws two objectives; got names={names!r}, pass two names"
        )
    if directions is not None:
        if isinstance(directions, str) or len(directions) != 2:
            raise ParetoInputError(
                f"directions must be two of 'min'/'max' matching names; got {directions!r}"
            )
        for d in directions:
            if d not in DIRECTIONS:
                raise ParetoInputError(f"direction {d!r} must be 'min' or 'max'")
    x_name, y_name = names
    fig = go.Figure()
    for label, evaluations in trajectories.items():
        path = []
        for step, values in sorted(evaluations, key=lambda e: e[0]):
            x, y = values.get(x_name), values.get(y_name)
            if x is None or y is None or not (np.isfinite(x) and np.isfinite(y)):
                continue
            path.append((step, float(x), float(y)))
        if not path:
            continue
        n = len(path)
        symbols = (["circle-open"] + ["circle"] * (n - 1)) if n > 1 else ["circle"]
        sizes = [7] * (n - 1) + [11]
        fig.add_trace(
            go.Scatter(
                x=[p[1] for p in path],
                y=[p[2] for p in path],
                mode="lines+markers",
                marker={"symbol": symbols, "size": sizes},
                hovertext=[f"{label} step {p[0]}" for p in path],
                hovertemplate=hover_template(names, ["x", "y"]),
                name=str(label),
            )
        )
    x_title = axis_title(x_name, directions[0]) if directions else x_name
    y_title = axis_title(y_name, directions[1]) if directions else y_name
    fig.update_xaxes(title_text=x_title)
    fig.update_yaxes(title_text=y_title)
    fig.update_layout(
        title_text=title if title is not None else "Runs in objective space over evaluations",
        template="plotly_white",
    )
    return fig


def curves_figure(
    curves: Mapping[Any, Sequence[tuple[int, float]]],
    metric: str,
    title: str | None = None,
) -> go.Figure:
    """One line per run of ``metric`` against the training step.

    ``curves`` maps a run label to ``[(step, value), ...]`` as
    :func:`workbench.tracking.metric_history` returns them; points are drawn in step order
    and non-finite values are left out (a diverged run shows where it stopped).
    """
    fig = go.Figure()
    for label, points in curves.items():
        kept = sorted((int(s), float(v)) for s, v in points if np.isfinite(v))
        fig.add_trace(
            go.Scatter(
                x=[s for s, _ in kept],
                y=[v for _, v in kept],
                mode="lines",
                name=str(label),
                hovertemplate=f"{label}<br>step %{{x}}<br>{metric} %{{y:.4g}}<extra></extra>",
            )
        )
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text=metric)
    fig.update_layout(title_text=title if title is not None else metric, template="plotly_white")
    return fig


# -- small multiples: one panel per metric, one colour and one legend entry per run --------

# Plotly's default colour sequence: a run keeps its colour in every panel.
RUN_COLORS = (
    "#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a",
    "#19d3f3", "#ff6692", "#b6e880", "#ff97ff", "#fecb52",
)  # fmt: skip


def run_color(index: int) -> str:
    """The colour of the ``index``-th run (cycling through :data:`RUN_COLORS`)."""
    return RUN_COLORS[index % len(RUN_COLORS)]


def panel_axes(index: int) -> tuple[str, str]:
    """Plotly's names of panel ``index``'s axes (0-based): ``("x", "y")``, ``("x2", "y2")``..."""
    suffix = "" if index == 0 else str(index + 1)
    return f"x{suffix}", f"y{suffix}"


def panels_layout(
    titles: Sequence[str],
    *,
    title: str | None = None,
    columns: int = 4,
    panel_height: int = 190,
    x_title: str = "step",
) -> dict[str, Any]:
    """The layout of small multiples: one panel per entry of ``titles`` (its title above it),
    at most ``columns`` a row, each with its own y axis. No width is set, so the figure fits
    the width of whatever holds it (a notebook cell); the height follows the rows. The
    legend runs horizontally under the panels, where it never narrows them."""
    n = max(1, len(titles))
    columns = max(1, min(columns, n))
    rows = -(-n // columns)
    top, bottom = (64 if title else 36), 96
    layout: dict[str, Any] = {
        "grid": {
            "rows": rows,
            "columns": columns,
            "pattern": "independent",
            "roworder": "top to bottom",
            "xgap": 0.25 if columns > 1 else 0.1,
            "ygap": 0.45 if rows > 1 else 0.1,
        },
        "height": rows * panel_height + top + bottom,
        "autosize": True,
        "margin": {"t": top, "b": bottom, "l": 56, "r": 16},
        "template": "plotly_white",
        "legend": {
            "orientation": "h",
            "x": 0,
            "xanchor": "left",
            "y": 0,
            "yref": "container",
            "yanchor": "bottom",
        },
        "hovermode": "closest",
        "annotations": [],
    }
    if title:
        layout["title"] = {"text": title, "x": 0, "xanchor": "left", "font": {"size": 15}}
    for i, text in enumerate(titles):
        x, y = panel_axes(i)
        bottom_row = i + columns >= n
        layout[x.replace("x", "xaxis", 1)] = {
            "title": {"text": x_title if bottom_row else ""},
            "automargin": True,
        }
        layout[y.replace("y", "yaxis", 1)] = {"automargin": True, "exponentformat": "e"}
        layout["annotations"].append(
            {
                "text": f"<b>{text}</b>",
                "xref": f"{x} domain",
                "yref": f"{y} domain",
                "x": 0,
                "y": 1.02,
                "xanchor": "left",
                "yanchor": "bottom",
                "showarrow": False,
                "font": {"size": 12},
            }
        )
    return layout


def flat_range(values: Sequence[float]) -> list[float] | None:
    """A y range for a panel whose values are all one number (a constant learning rate):
    plotly pads such data by 1 either side, which draws 3e-4 as a line at 0. The value's
    half to its one and a half (or -1 to 1 for 0); None when the values vary (autorange)."""
    finite = [float(v) for v in values if v is not None and np.isfinite(v)]
    if not finite:
        return None
    low, high = min(finite), max(finite)
    if high - low > 1e-9 * max(abs(high), abs(low)):
        return None
    if high == 0:
        return [-1.0, 1.0]
    return sorted([high * 0.5, high * 1.5])


def legend_entries(figure: go.Figure) -> list[str]:
    """The names the figure's legend lists (traces shown in it), in order."""
    return [t.name for t in figure.data if t.showlegend is not False]


PLOTLYJS_MODES = ("beside", "embed")


def plotlyjs_file_name() -> str:
    """The name plotly.js is written under beside the pages that load it: versioned, so a page
    written by a later plotly never loads an older bundle left in the folder."""
    from plotly.offline import get_plotlyjs_version

    return f"plotly-{get_plotlyjs_version()}.min.js"


def write_html(fig: go.Figure, path: str | Path, plotlyjs: str = "beside") -> Path:
    """Write ``fig`` as an HTML page that opens offline; returns the path.

    plotly.js (4.8 MB with plotly 7) never comes from a CDN, since a workshop room or an
    air-gapped machine has none. ``plotlyjs="beside"`` (the default, for pages in a folder
    such as the store's ``demo-front.html``) writes the bundle once into the page's folder
    as :func:`plotlyjs_file_name` and the page loads it from there: the page itself is a few
    tens of KB, and every page in the folder shares the one bundle (moving a page alone
    means moving the bundle with it). ``"embed"`` puts the bundle inside the page, for a
    page that must stand alone, such as an MLflow artifact (MLflow's viewer shows the one
    file, so a script beside it is not found).
    """
    if plotlyjs not in PLOTLYJS_MODES:
        raise ValueError(f"plotlyjs={plotlyjs!r} must be one of {PLOTLYJS_MODES}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if plotlyjs == "embed":
        fig.write_html(path, include_plotlyjs=True, full_html=True)
        return path
    bundle = path.parent / plotlyjs_file_name()
    if not bundle.is_file():
        import tempfile

        from plotly.offline import get_plotlyjs

        # Written aside and renamed: a page never loads a half-written bundle.
        with tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", dir=path.parent, suffix=".partial", delete=False
        ) as partial:
            partial.write(get_plotlyjs())
        os.chmod(partial.name, 0o644)  # readable like any page beside it (a temp file is 0600)
        Path(partial.name).replace(bundle)
    fig.write_html(path, include_plotlyjs=bundle.name, full_html=True)
    return path
