"""Several fronts on one figure, and runs repeated over seeds with their spread.

A user who built fronts in several ways (a weight sweep, a weight-conditioned model, a
merge grid, a search) wants them on one plot to see which buys the most front for the
compute. :func:`fronts_figure` draws each front's non-dominated points as its own
staircase (two objectives), with its hypervolume in the legend; :func:`seed_spread_figure`
draws settings repeated over seeds as their mean with one standard deviation each way on
both objectives. Like :mod:`workbench.fronts.plots`, these only draw plain data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative

from workbench.fronts.pareto import ParetoFront, ParetoInputError
from workbench.fronts.plots import axis_title, hover_template, staircase_order

PALETTE = qualitative.D3


def _check_plane(names: Sequence[str], directions: Sequence[str], what: str) -> None:
    if len(names) != 2 or len(directions) != 2:
        raise ParetoInputError(
            f"{what} draws two objectives; got {list(names)} "
            "(pick two with front_from_runs(runs, names))"
        )


def fronts_figure(fronts: Mapping[str, ParetoFront], title: str | None = None) -> go.Figure:
    """One staircase per front (``{label: front}``, every front over the same two objectives
    in the same order), its hypervolume in the legend when it has a reference point."""
    if not fronts:
        raise ParetoInputError("no fronts to draw")
    first = next(iter(fronts.values()))
    _check_plane(first.names, first.directions, "fronts_figure")
    for label, front in fronts.items():
        if tuple(front.names) != tuple(first.names) or tuple(front.directions) != tuple(
            first.directions
        ):
            raise ParetoInputError(
                f"front '{label}' is over {list(front.names)} {list(front.directions)}; "
                f"the first is over {list(first.names)} {list(first.directions)}"
            )
    fig = go.Figure()
    hover = hover_template(first.names, ["x", "y"])
    for i, (label, front) in enumerate(fronts.items()):
        color = PALETTE[i % len(PALETTE)]
        order = staircase_order(front.front_points, front.directions)
        points = front.front_points[order]
        labels = np.array(front.labels, dtype=object)[front.mask][order]
        legend = (
            f"{label} (hypervolume {front.hypervolume:.4g})"
            if front.reference is not None
            else label
        )
        fig.add_trace(
            go.Scatter(
                x=points[:, 0],
                y=points[:, 1],
                mode="lines+markers",
                name=legend,
                line={"color": color, "shape": "hv", "width": 2},
                marker={"color": color, "size": 9},
                hovertext=[f"{label}: {run}" for run in labels],
                hovertemplate=hover,
            )
        )
    fig.update_xaxes(title_text=axis_title(first.names[0], first.directions[0]))
    fig.update_yaxes(title_text=axis_title(first.names[1], first.directions[1]))
    fig.update_layout(
        title_text=title or f"{len(fronts)} fronts",
        template="plotly_white",
        legend={"itemsizing": "constant"},
    )
    return fig


def seed_spread(values: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (over seeds, Bessel-corrected; 0 for one seed) of each
    objective, from ``values[seed][objective]``."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ParetoInputError(
            f"seed values must be a non-empty [seed][objective] table, got shape {arr.shape}"
        )
    std = arr.std(axis=0, ddof=1) if arr.shape[0] > 1 else np.zeros(arr.shape[1])
    return arr.mean(axis=0), std


def seed_spread_figure(
    settings: Mapping[str, Sequence[Sequence[float]]],
    names: Sequence[str],
    directions: Sequence[str],
    title: str | None = None,
) -> go.Figure:
    """Each setting (``{label: values[seed][objective]}``, two objectives) as its mean over
    seeds with error bars of one standard deviation on both axes."""
    _check_plane(names, directions, "seed_spread_figure")
    fig = go.Figure()
    for i, (label, values) in enumerate(settings.items()):
        mean, std = seed_spread(values)
        if mean.shape[0] != 2:
            raise ParetoInputError(
                f"setting '{label}' has {mean.shape[0]} objective values per seed; expected 2"
            )
        n = len(values)
        fig.add_trace(
            go.Scatter(
                x=[mean[0]],
                y=[mean[1]],
                mode="markers",
                name=f"{label} ({n} seed{'s' if n != 1 else ''})",
                marker={"color": PALETTE[i % len(PALETTE)], "size": 10},
                error_x={"type": "data", "array": [std[0]], "visible": True},
                error_y={"type": "data", "array": [std[1]], "visible": True},
                hovertemplate=f"{label}<br>{names[0]}=%{{x}} ± {std[0]:.3g}"
                f"<br>{names[1]}=%{{y}} ± {std[1]:.3g}"
                "<extra></extra>",
            )
        )
    fig.update_xaxes(title_text=axis_title(names[0], directions[0]))
    fig.update_yaxes(title_text=axis_title(names[1], directions[1]))
    fig.update_layout(
        title_text=title or "mean over seeds, one standard deviation each way",
        template="plotly_white",
    )
    return fig
