"""Plotly figures for the cohort and patient pages: pure builders over tidy frames, no streamlit, no I/O.

Every builder takes the frames of :mod:`outcomes.analysis` / :mod:`outcomes.survival` (possibly with
hidden values already replaced: NaN numbers are left out, count columns may hold markers such as
"≤10") and returns a ``go.Figure``. An empty frame gives an empty figure whose title says why,
never an exception. Colours and line styles are the named constants below; the clinical choices
(KMunicate layout, 1 - S rising, ticks at 0/4/8/13/26 weeks) follow clinical-methods notes §4.5.

Example
-------
>>> fig = trajectory_figure(pd.DataFrame(columns=["domain", "week", "n"]), "depression")
>>> fig.layout.title.text
'Depression: no scores in weeks -4 to 26 for these patients'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .analysis import round_half_away
from .domains import Domains, load_domains
from .settings import DEFAULT_WINDOWS
from .survival import AT_RISK_WEEKS

WINDOW_LABELS: Mapping[str, str] = MappingProxyType({w.name: w.label for w in DEFAULT_WINDOWS})

#: Okabe–Ito colours: told apart with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#999999", "#000000")
BAND_OPACITY = 0.15
N_BAR_COLOUR = "#B0B7C3"
INFUSION_FILL = "rgba(120, 120, 120, 0.15)"
ZERO_LINE = {"color": "#888888", "width": 1}
THRESHOLD_LINE = {"color": "#777777", "dash": "dot", "width": 1}
CURRENT_THRESHOLD_LINE = {"color": "#222222", "dash": "dash", "width": 1.5}
MEDIAN_LINE = {"color": "#555555", "dash": "dot", "width": 1}
#: Severity bands from "within normal limits" to "severe" (HealthMeasures cut points).
SEVERITY_FILLS = ("rgba(0, 0, 0, 0)", "rgba(255, 213, 79, 0.20)", "rgba(255, 152, 0, 0.20)",
                  "rgba(229, 57, 53, 0.20)")
MCID_BAND_FILL = "rgba(0, 114, 178, 0.12)"
MCID_LEGEND_FILL = "rgba(0, 114, 178, 0.3)"  # the band's legend square, on white
BASELINE_LINE = {"color": "#0072B2", "dash": "dash", "width": 1.5}
INFUSION_MARKER = {"symbol": "triangle-up", "size": 10, "color": "#6A1B9A"}
TRAJECTORY_WEEKS = (-4, 26)
KM_Y_TITLE = "% reaching meaningful improvement"
DURABILITY_Y_TITLE = "% still responding"
WEEKS_X_TITLE = "Weeks since first infusion"
HEIGHT = 460


def label(domain: str, registry: Domains | None = None) -> str:
    """Display name of a domain (forms.toml ``display``); None: the shipped definitions."""
    return (load_domains() if registry is None else registry).display(domain)


def empty_figure(reason: str) -> go.Figure:
    """A figure with no data whose title says why (e.g. "Too few patients for this panel (n = 3)").

    Examples
    --------
    >>> empty_figure("No data").layout.title.text
    'No data'
    """
    fig = go.Figure()
    fig.update_layout(title={"text": reason, "font": {"size": 15}}, height=220,
                      xaxis={"visible": False}, yaxis={"visible": False}, plot_bgcolor="white")
    return fig


def _band(fig: go.Figure, x: Any, low: Any, high: Any, colour: str, name: str, *, steps: bool = False,
          row: int | None = None, legendgroup: str | None = None, showlegend: bool = False,
          opacity: float = BAND_OPACITY) -> None:
    """A confidence band as one filled polygon per stretch of known bounds (gaps stay open).

    ``fill="tonexty"`` between two edge traces bridges gaps with stray wedges, and a reversed "hv"
    edge steps the wrong way; explicit outlines avoid both. ``steps`` draws a step function
    (each value holds until the next x).
    """
    xs = np.asarray(x, dtype=float)
    lo, hi = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    known = ~(np.isnan(xs) | np.isnan(lo) | np.isnan(hi))
    px: list[float | None] = []
    py: list[float | None] = []
    for segment in np.split(np.arange(len(xs)), np.flatnonzero(np.diff(known.astype(int)) != 0) + 1):
        if not len(segment) or not known[segment[0]]:
            continue
        sx, sl, sh = xs[segment], lo[segment], hi[segment]
        if steps:  # (x0, y0) (x1, y0) (x1, y1) ...: each value held until the next time
            sx, sl, sh = np.repeat(sx, 2)[1:], np.repeat(sl, 2)[:-1], np.repeat(sh, 2)[:-1]
        px += [*sx, *sx[::-1], None]
        py += [*sh, *sl[::-1], None]
    kw = {"row": row, "col": 1} if row else {}
    fig.add_trace(go.Scatter(x=px, y=py, mode="lines", line={"width": 0}, fill="toself",
                             fillcolor=_rgba(colour, opacity), name=name, hoverinfo="skip",
                             showlegend=showlegend, legendgroup=legendgroup, connectgaps=False), **kw)


def _rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r}, {g}, {b}, {alpha})"


def _fmt(value: Any, pattern: str = "{:.1f}") -> str:
    if isinstance(value, str):
        return value
    return "–" if value is None or pd.isna(value) else pattern.format(value)


# ---------------------------------------------------------------------------------------------
# Cohort views.


def trajectory_figure(
    trajectories: pd.DataFrame,
    domain: str,
    *,
    measure: Literal["change", "t"] = "change",
    infusion_weeks: tuple[float, float] = (-0.5, 0.5),
    title: str | None = None,
) -> go.Figure:
    """Mean change from baseline (or mean T) by week since the first infusion, with its 95 % CI and n.

    Parameters
    ----------
    trajectories
        ``analysis.trajectories`` output (``domain, week, n, mean_t, t_ci_low, t_ci_high, n_change,
        mean_change, change_ci_low, change_ci_high``); weeks whose mean is NaN (no scores, or hidden)
        are left out.
    domain
        The domain to draw.
    measure
        ``"change"`` (mean change from baseline, with a zero line and the direction of improvement)
        or ``"t"`` (mean T-score).
    infusion_weeks
        Shaded span marking the infusion series (week 0 holds days 0-6 after the first infusion).

    Returns
    -------
    go.Figure
        Top: the CI band and the mean line; bottom: bars of the number of patients with a score in
        each week. 3 traces.
    """
    prefix = "change" if measure == "change" else "t"
    mean, low, high = f"mean_{prefix}", f"{prefix}_ci_low", f"{prefix}_ci_high"
    n_col = "n_change" if measure == "change" else "n"
    name = label(domain)
    data = trajectories[trajectories["domain"] == domain] if "domain" in trajectories else trajectories
    if data.empty or mean not in data or data[mean].notna().sum() == 0:
        first, last = TRAJECTORY_WEEKS
        return empty_figure(title or f"{name}: no scores in weeks {first} to {last} for these patients")
    data = data.sort_values("week")
    weeks = data["week"].to_numpy()
    colour = PALETTE[0]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.78, 0.22], vertical_spacing=0.05)
    _band(fig, weeks, data[low], data[high], colour, "95 % CI", row=1, showlegend=True)
    n_text = [_fmt(v, "{:,.0f}") for v in data[n_col]]
    hover = [f"week {w}: {_fmt(m)} (95 % CI {_fmt(a)} to {_fmt(b)}), n = {n}"
             for w, m, a, b, n in zip(weeks, data[mean], data[low], data[high], n_text)]
    y_name = "Mean change from baseline" if measure == "change" else "Mean T-score"
    fig.add_trace(go.Scatter(x=weeks, y=data[mean], mode="lines+markers", name=y_name, line={"color": colour},
                             hovertext=hover, hoverinfo="text", connectgaps=False), row=1, col=1)
    counts = pd.to_numeric(data[n_col], errors="coerce")
    fig.add_trace(go.Bar(x=weeks, y=counts, name="Patients with a score", marker_color=N_BAR_COLOUR,
                         hovertext=[f"week {w}: n = {n}" for w, n in zip(weeks, n_text)], hoverinfo="text"),
                  row=2, col=1)
    fig.add_vrect(x0=infusion_weeks[0], x1=infusion_weeks[1], row=1, col=1, fillcolor=INFUSION_FILL,
                  line_width=0, annotation_text="infusions", annotation_position="top left")
    if measure == "change":
        fig.add_hline(y=0, row=1, col=1, line=ZERO_LINE)
        known = load_domains()
        better = known[domain].direction_text if domain in known else "lower is better"
        y_title = f"Mean change in T ({better})"
    else:
        y_title = "Mean T-score"
    fig.update_layout(title=title or name, height=HEIGHT, hovermode="closest", bargap=0.15,
                      legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 1, "xanchor": "right"},
                      margin={"t": 70, "r": 20, "l": 60, "b": 50})
    fig.update_yaxes(title_text=y_title, row=1, col=1)
    fig.update_yaxes(title_text="n", row=2, col=1, rangemode="tozero")
    fig.update_xaxes(range=[TRAJECTORY_WEEKS[0] - 0.5, TRAJECTORY_WEEKS[1] + 0.5], row=1, col=1)
    fig.update_xaxes(title_text=WEEKS_X_TITLE, tickvals=[-4, 0, 4, 8, 13, 17, 21, 26], row=2, col=1)
    return fig


def change_cdf_figure(
    cdf: pd.DataFrame,
    domain: str,
    *,
    thresholds: Mapping[str, float] | None = None,
    current: float | None = None,
    steps: bool = True,
    window_labels: Mapping[str, str] = WINDOW_LABELS,
    title: str | None = None,
) -> go.Figure:
    """Share of patients improving by at least x, one step line per follow-up window.

    Parameters
    ----------
    cdf
        ``analysis.change_cdf`` output (or ``disclosure.coarsen_cdf`` of it): ``domain, window,
        improvement, n_at_least, n, pct_at_least``. Improvement is positive when the patient is better.
    domain
        The domain to draw.
    thresholds
        Label -> x of each threshold to mark (e.g. every MCID preset of this domain), drawn dotted and
        labelled, so the reader sees how the responder rate moves with the threshold.
    current
        The threshold in use: dashed, with a marker per window at the share reaching it.
    steps
        True for the full distribution (a step at each observed change); False for a coarsened one
        (``disclosure.coarsen_cdf``): the published points joined by dotted lines, since the curve
        between them is not known.

    Returns
    -------
    go.Figure
        One trace per window, plus one "at the threshold" marker trace when ``current`` is given.
    """
    name = label(domain)
    data = cdf[cdf["domain"] == domain] if "domain" in cdf else cdf
    if data.empty:
        return empty_figure(title or f"{name}: no patient has a baseline and a follow-up score")
    fig = go.Figure()
    marks_x, marks_y, marks_text = [], [], []
    for i, (window, curve) in enumerate(data.groupby("window", sort=False, observed=True)):
        curve = curve.sort_values("improvement")
        x, y = curve["improvement"].to_numpy(float), curve["pct_at_least"].to_numpy(float)
        n = curve["n"].iloc[0]
        wname = f"{window_labels.get(str(window), str(window))} (n = {_fmt(n, '{:,.0f}')})"
        # "At least x" falls just after each observed value: vertical first, then across ("vh").
        line = {"shape": "vh", "color": PALETTE[i]} if steps else {"color": PALETTE[i], "dash": "dot"}
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines" if steps else "lines+markers", name=wname, line=line,
                                 hovertemplate="≥ %{x:.1f} T points: %{y:.1f} %<extra>" + wname + "</extra>"))
        if current is not None:
            at = int(np.searchsorted(x, current - 1e-9, side="left"))
            if not steps and not (at < len(x) and abs(x[at] - current) < 1e-9):
                continue  # the share at the threshold was not published
            share = float(y[at]) if at < len(y) else 0.0
            marks_x.append(current)
            marks_y.append(share)
            marks_text.append(f"{wname}: {share:.1f} % improved by ≥ {current:g}")
    if current is not None:
        fig.add_trace(go.Scatter(x=marks_x, y=marks_y, mode="markers", name="At the threshold in use",
                                 marker={"color": "#222222", "size": 8, "symbol": "circle-open"},
                                 hovertext=marks_text, hoverinfo="text"))
    by_x: dict[float, list[str]] = {}
    for text, x in (thresholds or {}).items():
        by_x.setdefault(round(float(x), 3), []).append(text)
    for j, (x, names) in enumerate(sorted(by_x.items())):
        in_use = current is not None and abs(x - current) < 1e-9
        # Stagger the labels so that neighbouring thresholds do not overwrite each other.
        fig.add_vline(x=x, line=CURRENT_THRESHOLD_LINE if in_use else THRESHOLD_LINE)
        fig.add_annotation(x=x, y=1.0 - 0.07 * (j % 3), yref="paper", text=" / ".join(names) + f": {x:g}",
                           showarrow=False, xanchor="left", font={"size": 11},
                           bgcolor="rgba(255,255,255,0.7)")
    if current is not None and round(current, 3) not in by_x:
        fig.add_vline(x=current, line=CURRENT_THRESHOLD_LINE)
    # Show where the curves move (between 99 % and 1 % still improving), not the far tails.
    moving = data[(data["pct_at_least"] <= 99) & (data["pct_at_least"] >= 1) | (not steps)]["improvement"]
    marks = [*by_x, *([current] if current is not None else [])]
    low = min([*moving.tolist(), *marks, 0.0], default=-10.0)
    high = max([*moving.tolist(), *marks, 0.0], default=20.0)
    fig.update_xaxes(range=[np.floor(low) - 1, np.ceil(high) + 1])
    fig.update_layout(title=title or name, height=HEIGHT, hovermode="closest",
                      legend={"orientation": "h", "y": -0.22, "yanchor": "top"},
                      margin={"t": 60, "r": 20, "l": 60, "b": 90})
    fig.update_xaxes(title_text="Improvement from baseline, T points (positive = better)", zeroline=True,
                     zerolinecolor="#BBBBBB")
    fig.update_yaxes(title_text="% improving by at least x", range=[0, 101])
    return fig


def km_figure(
    curve: pd.DataFrame,
    at_risk: pd.DataFrame,
    domain: str,
    *,
    kind: Literal["event", "survival"] = "event",
    summary: pd.DataFrame | None = None,
    cut_weeks: Mapping[str, float] | None = None,
    ticks: Sequence[float] = AT_RISK_WEEKS,
    x_title: str = WEEKS_X_TITLE,
    all_label: str = "All patients",
    title: str | None = None,
) -> go.Figure:
    """Kaplan–Meier curves with 95 % CI bands and a number-at-risk table under the plot (KMunicate).

    Parameters
    ----------
    curve
        ``SurvivalCurves.curve`` (``domain, group, time_weeks, estimate, ci_low, ci_high``, proportions).
        With a ``method`` column (``IntervalCensoredCurves.curve``) use :func:`interval_censored_figure`.
    at_risk
        ``SurvivalCurves.at_risk``; ``at_risk``, ``events`` and ``censored`` may be text markers.
    domain
        The domain to draw; groups are drawn in the order they appear (group "all" is "All patients").
    kind
        ``"event"``: "% reaching meaningful improvement" (1 - S rising); ``"survival"``: "% still
        responding" (S falling).
    summary
        ``SurvivalCurves.summary``: a reached median goes into the hover text with its 95 % CI, and
        with a single curve it is marked on the plot.
    cut_weeks
        Group -> last week to draw (e.g. where fewer than 10 remain at risk); the curve stops there.
    x_title, all_label
        Axis title (durability: "Weeks since first meaningful improvement") and the name of group "all".

    Returns
    -------
    go.Figure
        Per group: CI band, the estimate, and one row of the at-risk table (a text trace).
    """
    return _survival_figure(curve, at_risk, domain, kind=kind, summary=summary, cut_weeks=cut_weeks,
                            ticks=ticks, title=title, interval=False, x_title=x_title, all_label=all_label)


def interval_censored_figure(
    curve: pd.DataFrame,
    at_risk: pd.DataFrame,
    domain: str,
    *,
    cut_weeks: Mapping[str, float] | None = None,
    ticks: Sequence[float] = AT_RISK_WEEKS,
    title: str | None = None,
) -> go.Figure:
    """Interval-censored estimate: the Turnbull NPMLE as steps, the Weibull fit with its 95 % band.

    Parameters
    ----------
    curve
        ``IntervalCensoredCurves.curve`` (``method`` is ``"npmle"`` or ``"weibull"``).
    at_risk
        ``IntervalCensoredCurves.at_risk`` (not yet improved and still followed at each tick).

    Returns
    -------
    go.Figure
        Per group: Weibull band and line, NPMLE steps, and one at-risk row.
    """
    return _survival_figure(curve, at_risk, domain, kind="event", summary=None, cut_weeks=cut_weeks,
                            ticks=ticks, title=title, interval=True, x_title=WEEKS_X_TITLE,
                            all_label="All patients")


def plain(text: Any) -> str:
    """Stored text (a diagnosis naming a group) as Plotly text that shows literally: Plotly reads ``<b>``,
    ``<a href>`` and other tags in names and labels, and ``%{...}`` in hover templates."""
    return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("%", "&#37;"))


def _group_name(group: Any, all_label: str = "All patients") -> str:
    return all_label if str(group) == "all" else plain(group)


def _cut(part: pd.DataFrame, limit: float | None) -> pd.DataFrame:
    """The curve up to ``limit``, extended flat to it (a step function holds its last value)."""
    if limit is None or part.empty:
        return part
    kept = part[part["time_weeks"] <= limit]
    if kept.empty:
        return kept
    if kept["time_weeks"].iloc[-1] < limit:
        kept = pd.concat([kept, kept.iloc[[-1]].assign(time_weeks=limit)], ignore_index=True)
    return kept


def _survival_figure(curve: pd.DataFrame, at_risk: pd.DataFrame, domain: str, *, kind: str,
                     summary: pd.DataFrame | None, cut_weeks: Mapping[str, float] | None,
                     ticks: Sequence[float], title: str | None, interval: bool, x_title: str,
                     all_label: str) -> go.Figure:
    name = label(domain)
    y_title = KM_Y_TITLE if kind == "event" else DURABILITY_Y_TITLE
    data = curve[curve["domain"] == domain] if "domain" in curve else curve
    if data.empty:
        return empty_figure(title or f"{name}: nothing to estimate for these patients")
    risk = at_risk[at_risk["domain"] == domain] if "domain" in at_risk else at_risk
    # "all" first, then by name, so that a group keeps its place (and colour) from one domain to the next.
    groups = sorted(dict.fromkeys(data["group"].astype(str)), key=lambda g: (g != "all", g.lower()))
    opacity = BAND_OPACITY if len(groups) <= 2 else BAND_OPACITY / 2  # many overlapping bands turn to mud
    x_max = float(max(ticks))
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.74, 0.26], vertical_spacing=0.1)
    medians = {} if summary is None else {str(r["group"]): r for r in
                                           summary[summary["domain"] == domain].to_dict("records")}
    for i, group in enumerate(groups):
        colour = PALETTE[i % len(PALETTE)]
        gname = _group_name(group, all_label)
        part = data[data["group"].astype(str) == group].sort_values("time_weeks")
        limit = None if cut_weeks is None else cut_weeks.get(group)
        if interval:
            weib = _cut(part[part["method"] == "weibull"], limit)
            npmle = _cut(part[part["method"] == "npmle"], limit)
            if not weib.empty:
                _band(fig, weib["time_weeks"], 100 * weib["ci_low"], 100 * weib["ci_high"], colour,
                      f"{gname}: Weibull 95 % CI", row=1, legendgroup=group, opacity=opacity)
                fig.add_trace(go.Scatter(x=weib["time_weeks"], y=100 * weib["estimate"], mode="lines",
                                         name=f"{gname}: Weibull fit", legendgroup=group,
                                         line={"color": colour, "dash": "dash"},
                                         hovertemplate=_hover(f"{gname} (Weibull)")),
                              row=1, col=1)
            fig.add_trace(go.Scatter(x=npmle["time_weeks"], y=100 * npmle["estimate"], mode="lines+markers",
                                     name=f"{gname}: NPMLE", legendgroup=group, marker={"size": 5},
                                     line={"color": colour, "shape": "hv"},
                                     hovertemplate=_hover(f"{gname} (NPMLE)")),
                          row=1, col=1)
        else:
            part = _cut(part, limit)
            _band(fig, part["time_weeks"], 100 * part["ci_low"], 100 * part["ci_high"], colour,
                  f"{gname}: 95 % CI", steps=True, row=1, legendgroup=group, opacity=opacity)
            median = medians.get(group)
            suffix = ""
            if median is not None and pd.notna(median.get("median_weeks")):
                high = _fmt(median["median_ci_high"]) if pd.notna(median["median_ci_high"]) else "not reached"
                suffix = (f"median {median['median_weeks']:.1f} weeks "
                          f"(95 % CI {_fmt(median['median_ci_low'])} to {high})")
                if len(groups) == 1:
                    fig.add_vline(x=median["median_weeks"], row=1, col=1, line=MEDIAN_LINE)
                    above = kind == "survival"  # keep the label off the curve
                    fig.add_annotation(x=median["median_weeks"], y=52 if above else 48, row=1, col=1,
                                       text=suffix, showarrow=False, xanchor="left",
                                       yanchor="bottom" if above else "top", font={"size": 11})
                suffix = "<br>" + suffix
            fig.add_trace(go.Scatter(x=part["time_weeks"], y=100 * part["estimate"], mode="lines", name=gname,
                                     legendgroup=group, line={"color": colour, "shape": "hv", "width": 2},
                                     hovertemplate=_hover(gname + suffix)),
                          row=1, col=1)
        rows = risk[risk["group"].astype(str) == group].set_index("week")
        cells = [rows.loc[w] if w in rows.index else None for w in ticks]
        text = [_fmt(c["at_risk"], "{:,.0f}") if c is not None else "" for c in cells]
        hover = [(f"{gname}, week {w:g}: {_fmt(c['at_risk'], '{:,.0f}')} at risk, "
                  f"{_fmt(c['events'], '{:,.0f}')} {'improved' if kind == 'event' else 'lost response'}, "
                  f"{_fmt(c['censored'], '{:,.0f}')} censored") if c is not None else ""
                 for w, c in zip(ticks, cells)]
        fig.add_trace(go.Scatter(x=list(ticks), y=[i] * len(ticks), mode="text", text=text, hovertext=hover,
                                 hoverinfo="text", textfont={"color": colour, "size": 12}, showlegend=False,
                                 name=f"{gname}: at risk"), row=2, col=1)
    if kind == "survival" or summary is not None:
        fig.add_hline(y=50, row=1, col=1, line=MEDIAN_LINE)
    fig.update_layout(title=title or name, height=HEIGHT + 26 * len(groups), hovermode="closest",
                      legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0, "xanchor": "left"},
                      margin={"t": 90, "r": 20, "l": 60, "b": 50})
    fig.update_yaxes(title_text=y_title, range=[0, 101], row=1, col=1)
    fig.update_yaxes(tickvals=list(range(len(groups))),
                     ticktext=[_short(_group_name(g, all_label)) for g in groups],
                     range=[len(groups) - 0.5, -0.5], showgrid=False, zeroline=False, title_text="At risk",
                     row=2, col=1)
    fig.update_xaxes(range=[-0.5, x_max + 0.8], tickvals=list(ticks), row=1, col=1)
    fig.update_xaxes(title_text=x_title, tickvals=list(ticks), showgrid=False, row=2, col=1)
    return fig


def _hover(name: str) -> str:
    return "week %{x:.1f}: %{y:.1f} %<extra>" + name + "</extra>"


def _short(text: str, width: int = 22) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def completion_figure(
    completion: pd.DataFrame,
    *,
    window_labels: Mapping[str, str] = WINDOW_LABELS,
    title: str = "Follow-up completion",
) -> go.Figure:
    """Share of eligible patients with a score in each follow-up window, one bar group per domain.

    Parameters
    ----------
    completion
        ``analysis.follow_up_completion`` output: ``domain, window, n_eligible, n_completed,
        pct_completed``; hidden percentages (NaN) draw no bar, counts may be text markers.

    Returns
    -------
    go.Figure
        One bar trace per domain, labelled "completed/eligible".
    """
    if completion.empty:
        return empty_figure("No patient is due for follow-up yet")
    fig = go.Figure()
    for i, (domain, part) in enumerate(completion.groupby("domain", sort=False, observed=True)):
        text = [f"{_fmt(c, '{:,.0f}')}/{_fmt(e, '{:,.0f}')}"
                for c, e in zip(part["n_completed"], part["n_eligible"])]
        name = label(str(domain))
        fig.add_trace(go.Bar(x=[window_labels.get(str(w), str(w)) for w in part["window"]],
                             y=pd.to_numeric(part["pct_completed"], errors="coerce"), name=name,
                             text=text, textposition="outside", marker_color=PALETTE[i % len(PALETTE)],
                             hovertemplate="%{x}: %{y:.1f} % (%{text})<extra>" + name + "</extra>"))
    fig.update_layout(title=title, barmode="group", height=400, legend={"orientation": "h", "y": -0.18},
                      margin={"t": 60, "r": 20, "l": 60, "b": 70})
    fig.update_yaxes(title_text="% of eligible patients with a score", range=[0, 112])
    fig.update_xaxes(title_text="Follow-up window")
    return fig


# ---------------------------------------------------------------------------------------------
# One patient.


#: Name of the shapes drawing baseline ± the threshold around each series' baseline.
BASELINE_BAND_NAME = "no meaningful change"
#: The x-axis of a patient chart covers at least this span, so that one score is not drawn on an axis
#: of hours; up to :data:`SHORT_SPAN` it has a labelled tick every week from the first score, a small
#: tick every day.
MIN_DATE_RANGE = pd.Timedelta(days=14)
SHORT_SPAN = pd.Timedelta(days=35)
DAY_MS = 86_400_000
DATE_FORMAT = "%d %b %Y"
#: Tick labels by tick spacing (ms): whole days at most, never a time of day.
DATE_TICK_FORMATS = ((None, 28 * DAY_MS, DATE_FORMAT), (28 * DAY_MS, 365 * DAY_MS, "%b %Y"),
                     (365 * DAY_MS, None, "%Y"))
#: Share of the plot height given to the infusion rug under the scores.
RUG_DOMAIN = (0.0, 0.16)
PLOT_DOMAIN = (0.22, 1.0)


class ChangeDelta(NamedTuple):
    """What ``st.metric`` shows for a change from baseline (:func:`change_delta`)."""

    text: str | None  #: None: no delta at all
    color: Literal["normal", "inverse", "off"]  #: st.metric's ``delta_color``
    arrow: Literal["auto", "off"]  #: st.metric's ``delta_arrow``


def change_delta(change: Any, *, higher_is_worse: bool, is_baseline: bool = False,
                 suffix: str = "since baseline") -> ChangeDelta:
    """The delta of a latest score: its text, colour mode and arrow for ``st.metric``.

    The change is rounded half away from zero to 0.1 first. A change of 0.0 (and the baseline score
    itself) has no arrow and a neutral colour; otherwise the arrow follows the sign of the change and
    the colour says better (green) or worse (red): for a measure where higher is worse a fall is
    green (``"inverse"``), else a rise is (``"normal"``). No baseline (None/NaN/NA): no delta at all.

    Examples
    --------
    >>> change_delta(-5.0, higher_is_worse=True)
    ChangeDelta(text='-5.0 since baseline', color='inverse', arrow='auto')
    >>> change_delta(0.04, higher_is_worse=False)
    ChangeDelta(text='0.0 since baseline', color='off', arrow='off')
    >>> change_delta(float("nan"), higher_is_worse=True).text is None
    True
    """
    if change is None or pd.isna(change):
        return ChangeDelta(None, "off", "off")
    if is_baseline:
        return ChangeDelta("baseline score", "off", "off")
    value = float(round_half_away(float(change)))
    if value == 0:
        return ChangeDelta(f"0.0 {suffix}", "off", "off")
    return ChangeDelta(f"{value:+.1f} {suffix}", "inverse" if higher_is_worse else "normal", "auto")


def _series_table(series: pd.DataFrame | Sequence[tuple[Any, Any]]) -> pd.DataFrame:
    """``series_number, first_infusion, last_infusion`` (and ``series_id`` if given), by first infusion."""
    if isinstance(series, pd.DataFrame):
        table = series.copy()
        if "series_number" not in table:
            table["series_number"] = np.arange(1, len(table) + 1)
    else:
        pairs = list(series)
        table = pd.DataFrame({"series_number": np.arange(1, len(pairs) + 1),
                              "first_infusion": [p[0] for p in pairs],
                              "last_infusion": [p[1] for p in pairs]})
    if table.empty:
        return pd.DataFrame({"series_number": pd.Series(dtype="int64"),
                             "first_infusion": pd.Series(dtype="datetime64[ns]"),
                             "last_infusion": pd.Series(dtype="datetime64[ns]")})
    table["first_infusion"] = pd.to_datetime(table["first_infusion"])
    table["last_infusion"] = pd.to_datetime(table["last_infusion"])
    return table.sort_values("first_infusion").reset_index(drop=True)


def _window(days: pd.Series, series: pd.DataFrame) -> np.ndarray:
    """Index into ``series`` of the latest series started on or before each day (-1: none)."""
    firsts = series["first_infusion"].to_numpy(dtype="datetime64[ns]")
    return np.searchsorted(firsts, pd.to_datetime(days).to_numpy(dtype="datetime64[ns]"), side="right") - 1


def baseline_segments(assessments: pd.DataFrame,
                      series: pd.DataFrame | Sequence[tuple[Any, Any]] = ()) -> pd.DataFrame:
    """One baseline segment per series: where each series' baseline applies on a patient chart.

    Scores (``assessed_on, baseline_on, baseline_t``, one domain, as ``clinic.patient_record`` gives
    them) are grouped by their baseline, in date order. A segment starts at its baseline's date and ends
    where the next series starts (or the next baseline was scored, if earlier), else at the last score.
    Scores without a baseline draw none.

    Returns
    -------
    pandas.DataFrame
        ``label`` ("Series 2 baseline", or "Baseline (first score)" before any series), ``baseline_on``,
        ``baseline_t``, ``x0``, ``x1``; one row per segment, in date order.

    Examples
    --------
    >>> a = pd.DataFrame({"assessed_on": pd.to_datetime(["2025-01-06", "2025-01-20", "2025-03-03"]),
    ...                   "baseline_on": pd.to_datetime(["2025-01-06", "2025-01-06", "2025-03-03"]),
    ...                   "baseline_t": [64.0, 64.0, 60.0]})
    >>> seg = baseline_segments(a, [("2025-01-06", "2025-01-10"), ("2025-03-03", "2025-03-07")])
    >>> seg[["label", "baseline_t", "x0", "x1"]].astype(str).values.tolist()  # doctest: +NORMALIZE_WHITESPACE
    [['Series 1 baseline', '64.0', '2025-01-06', '2025-03-03'],
     ['Series 2 baseline', '60.0', '2025-03-03', '2025-03-03']]
    """
    columns = ["label", "baseline_on", "baseline_t", "x0", "x1"]
    if assessments.empty or not {"baseline_on", "baseline_t"} <= set(assessments.columns):
        return pd.DataFrame(columns=columns)
    data = assessments.sort_values("assessed_on", kind="stable")
    days = pd.to_datetime(data["assessed_on"]).reset_index(drop=True)
    base_on = pd.to_datetime(data["baseline_on"]).reset_index(drop=True)
    base_t = pd.to_numeric(data["baseline_t"], errors="coerce").astype(float).reset_index(drop=True)
    table = _series_table(series)
    window = _window(days, table)
    firsts = table["first_infusion"].tolist()
    numbers = table["series_number"].tolist()
    known = base_on.notna() & base_t.notna()
    runs: list[list[int]] = []
    for i in range(len(days)):
        same = (runs and known[i] and known[runs[-1][-1]] and base_on[i] == base_on[runs[-1][-1]]
                and base_t[i] == base_t[runs[-1][-1]])
        if same:
            runs[-1].append(i)
        else:
            runs.append([i])
    rows = []
    keyed = [run for run in runs if known[run[0]]]
    for j, run in enumerate(keyed):
        last_day = days[run[-1]]
        x0 = base_on[run[0]]
        later = [f for f in firsts if f > last_day]
        x1 = min(later) if later else last_day
        if j + 1 < len(keyed):
            x1 = min(x1, base_on[keyed[j + 1][0]])
        in_series = sorted({int(numbers[w]) for w in window[run] if w >= 0})
        if not in_series:
            text = "Baseline (first score)"
        elif len(in_series) == 1:
            text = f"Series {in_series[0]} baseline"
        else:
            text = f"Series {in_series[0]}–{in_series[-1]} baseline"
        rows.append({"label": text, "baseline_on": x0, "baseline_t": float(base_t[run[0]]), "x0": x0,
                     "x1": max(x1, x0)})
    return pd.DataFrame(rows, columns=columns)


def _infusion_table(infusions: pd.DataFrame | Sequence[Any], series: pd.DataFrame) -> pd.DataFrame:
    """``infused_on, series_number, k`` (k-th infusion of its series), by date.

    Infusions go to their series by ``series_id`` when both frames have it, else by date (the latest
    series started on or before the day). Without any series, a gap of more than 14 days starts a new
    run, numbered like a series.
    """
    if isinstance(infusions, pd.DataFrame):
        table = infusions.copy()
    else:
        table = pd.DataFrame({"infused_on": list(infusions)})
    if table.empty:
        return pd.DataFrame({"infused_on": pd.Series(dtype="datetime64[ns]"), "series_number": [],
                             "group": [], "k": []})
    table["infused_on"] = pd.to_datetime(table["infused_on"])
    table = table.sort_values("infused_on", kind="stable").reset_index(drop=True)
    if len(series) and "series_id" in table and "series_id" in series:
        number = table["series_id"].map(dict(zip(series["series_id"], series["series_number"])))
    elif len(series):
        window = _window(table["infused_on"], series)
        number = pd.Series([series["series_number"].iloc[w] if w >= 0 else pd.NA for w in window])
    else:
        number = pd.Series(pd.NA, index=table.index)
    # Infusions outside any known series: runs split by gaps of more than two weeks.
    loose = number.isna().to_numpy()
    gaps = table["infused_on"].diff().dt.days.fillna(np.inf).to_numpy() > 14
    run = np.cumsum(gaps | ~np.roll(loose, 1) | (np.arange(len(table)) == 0))
    group = np.where(loose, -run, pd.to_numeric(number, errors="coerce").fillna(0).to_numpy())
    table["series_number"] = number.astype("Int64").to_numpy()
    table["group"] = group
    table["k"] = table.groupby("group").cumcount() + 1
    return table


def _date_axis(days: pd.Series, first_score: pd.Timestamp) -> dict[str, Any]:
    """Date x-axis settings: a padded range of at least two weeks; whole-day ticks only.

    Up to :data:`SHORT_SPAN` the ticks are explicit (a label every 7 days from the first score, a small
    tick every day); beyond, plotly chooses them (never less than a day apart at that span) and
    :data:`DATE_TICK_FORMATS` labels them.
    """
    lo, hi = days.min().normalize(), days.max().normalize()
    pad = max(pd.Timedelta(days=2), pd.Timedelta(days=round((hi - lo).days * 0.03)))
    x0, x1 = lo - pad, hi + pad
    if x1 - x0 < MIN_DATE_RANGE:
        mid = lo + (hi - lo) / 2
        x0 = (mid - MIN_DATE_RANGE / 2).normalize()
        x1 = x0 + MIN_DATE_RANGE
    short = x1 - x0 <= SHORT_SPAN
    if short:  # half a day more each side, so that a tick on the first or last day is drawn
        x0, x1 = x0 - pd.Timedelta(hours=12), x1 + pd.Timedelta(hours=12)
    axis: dict[str, Any] = {"type": "date", "range": [f"{x0:%Y-%m-%d %H:%M}", f"{x1:%Y-%m-%d %H:%M}"],
                            "title_text": "Date", "tickformat": DATE_FORMAT}
    if short:
        axis.update(tickmode="linear", tick0=f"{first_score.normalize():%Y-%m-%d}", dtick=7 * DAY_MS,
                    minor={"dtick": DAY_MS, "ticks": "outside", "ticklen": 4, "showgrid": False})
    else:
        axis.update(tickformat=None, tickformatstops=[{"dtickrange": [low, high], "value": fmt}
                                                      for low, high, fmt in DATE_TICK_FORMATS])
    return axis


def patient_trajectory_figure(
    assessments: pd.DataFrame,
    domain: str,
    *,
    mcid: float | None = None,
    higher_is_worse: bool = True,
    cut_points: Sequence[float] = (),
    band_labels: Sequence[str] = (),
    infusions: pd.DataFrame | Sequence[date | pd.Timestamp | str] = (),
    series: pd.DataFrame | Sequence[tuple[date | pd.Timestamp | str, date | pd.Timestamp | str]] = (),
    title: str | None = None,
) -> go.Figure:
    """One patient's T-scores over time: each series' baseline and change band, severity bands, infusions.

    Parameters
    ----------
    assessments
        ``assessed_on, t_score`` (and ``domain``: other domains are ignored), one patient; with
        ``baseline_on, baseline_t`` (``clinic.patient_record``) each series' baseline is drawn where it
        applies (:func:`baseline_segments`).
    domain
        The domain to draw.
    mcid
        The threshold: the band baseline ± mcid around each baseline is "no meaningful change".
    higher_is_worse
        True for symptoms (pain interference, depression), False for physical function.
    cut_points, band_labels
        Severity cut points in worsening order and their labels, one more label than cut points
        (``instruments.Domain.bands``); a band starts at its cut point.
    infusions
        The infusions (``infused_on``, and ``series_id`` to match ``series``; or a list of dates): one
        marker each on a strip under the scores, the k-th infusion of a series k rows down, so that
        daily infusions stay apart at any span; hover: "infusion k of series n".
    series
        ``series_number, first_infusion, last_infusion`` (``storage.load_series``), or (first, last)
        pairs numbered from 1: shaded and labelled "Series 1", "Series 2", ...

    Returns
    -------
    go.Figure
        Traces: "T-score", one "Baseline" line per segment, and "Infusion" (with infusions, on
        ``yaxis2``); severity bands, change bands (named "no meaningful change") and series spans are
        layout shapes. The x-axis never has ticks at a time of day (:func:`_date_axis`).

    Examples
    --------
    >>> a = pd.DataFrame({"assessed_on": pd.to_datetime(["2025-01-06", "2025-01-13"]),
    ...                   "t_score": [62.0, 57.5], "baseline_on": pd.to_datetime("2025-01-06"),
    ...                   "baseline_t": 62.0})
    >>> fig = patient_trajectory_figure(a, "depression", mcid=3.5, cut_points=[55, 60, 70],
    ...     band_labels=["within normal limits", "mild", "moderate", "severe"], infusions=["2025-01-06"],
    ...     series=[("2025-01-06", "2025-01-06")])
    >>> [t.name for t in fig.data]
    ['T-score', 'Baseline', 'Baseline ± 3.5: no meaningful change', 'Infusion']
    """
    name = label(domain)
    data = assessments
    if "domain" in data:
        data = data[data["domain"] == domain]
    data = data.dropna(subset=["t_score"]).sort_values("assessed_on") if not data.empty else data
    if data.empty:
        return empty_figure(title or f"{name}: no scores recorded yet")
    t = data["t_score"].to_numpy(float)
    days = pd.to_datetime(data["assessed_on"])
    table = _series_table(series)
    segments = baseline_segments(data, table)
    shots = _infusion_table(infusions, table)
    levels = [*t, *segments["baseline_t"]]
    y_low = min(20.0, float(np.nanmin(levels)) - 5)
    y_high = max(80.0, float(np.nanmax(levels)) + 5)
    fig = go.Figure()
    # Band edges in worsening order: up the axis for symptoms, down it for function.
    edges = ([y_low, *sorted(cut_points), y_high] if higher_is_worse
             else [y_high, *sorted(cut_points, reverse=True), y_low])
    for k in range(len(edges) - 1):
        if k >= len(band_labels):
            break
        fig.add_hrect(y0=edges[k], y1=edges[k + 1], fillcolor=SEVERITY_FILLS[min(k, len(SEVERITY_FILLS) - 1)],
                      line_width=0, layer="below", annotation_text=band_labels[k],
                      annotation_position="top right" if higher_is_worse else "bottom right",
                      annotation_font={"size": 10, "color": "#666666"})
    # A segment scored and ended on one day still shows: half a day either side.
    half = pd.Timedelta(hours=12)
    starts = [x0 - half if x1 <= x0 else x0 for x0, x1 in zip(segments["x0"], segments["x1"])]
    ends = [x1 + half if x1 <= x0 else x1 for x0, x1 in zip(segments["x0"], segments["x1"])]
    if mcid is not None:
        for x0, x1, b in zip(starts, ends, segments["baseline_t"]):
            fig.add_shape(type="rect", xref="x", yref="y", x0=x0, x1=x1, y0=b - mcid, y1=b + mcid,
                          fillcolor=MCID_BAND_FILL, line_width=0, layer="below", name=BASELINE_BAND_NAME)
    for s in table.itertuples():  # over the scores and the infusion strip
        fig.add_shape(type="rect", xref="x", yref="paper", x0=s.first_infusion - half,
                      x1=s.last_infusion + half, y0=0, y1=1, fillcolor=INFUSION_FILL, line_width=0,
                      layer="below", name="series")
        fig.add_annotation(x=s.first_infusion - half, y=1, xref="x", yref="paper",
                           text=f"Series {s.series_number}", showarrow=False, xanchor="left", yanchor="top",
                           font={"size": 11})
    bands = [_band_of(v, cut_points, band_labels, higher_is_worse) for v in t]
    changes = data["change"] if "change" in data else pd.Series(np.nan, index=data.index)
    base_on = (pd.to_datetime(data["baseline_on"]) if "baseline_on" in data
               else pd.Series(pd.NaT, index=data.index))
    deltas = [change_delta(c, higher_is_worse=higher_is_worse, is_baseline=d == on).text
              for c, d, on in zip(changes, days, base_on)]
    hover = [f"{d:%d %b %Y}: T {v:.1f}" + (f" ({b})" if b else "") + (f"<br>{c}" if c else "")
             for d, v, b, c in zip(days, t, bands, deltas)]
    fig.add_trace(go.Scatter(x=days, y=t, mode="lines+markers", name="T-score",
                             line={"color": PALETTE[0], "width": 2}, hovertext=hover, hoverinfo="text"))
    for i, seg in enumerate(segments.itertuples()):
        text = f"{seg.label}: T {seg.baseline_t:.1f}, scored {seg.baseline_on:%d %b %Y}"
        fig.add_trace(go.Scatter(x=[starts[i], ends[i]], y=[seg.baseline_t] * 2, mode="lines",
                                 name="Baseline", line=BASELINE_LINE, legendgroup="baseline",
                                 showlegend=i == 0, hovertext=[text, text], hoverinfo="text"))
    if mcid is not None and len(segments):  # the bands are shapes: named in the legend by an empty trace
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", hoverinfo="skip",
                                 name=f"Baseline ± {mcid:g}: no meaningful change",
                                 marker={"symbol": "square", "size": 14, "color": MCID_LEGEND_FILL}))
    layout: dict[str, Any] = {}
    if len(shots):
        n_of = shots.groupby("group")["k"].transform("max")
        hover = [f"{d:%d %b %Y}: infusion {k} of series {int(n)} ({m} in the series)" if pd.notna(n)
                 else f"{d:%d %b %Y}: infusion {k} of {m} (no series recorded)"
                 for d, k, m, n in zip(shots["infused_on"], shots["k"], n_of, shots["series_number"])]
        fig.add_trace(go.Scatter(x=shots["infused_on"], y=shots["k"], yaxis="y2", mode="markers",
                                 name="Infusion", marker=INFUSION_MARKER, hovertext=hover, hoverinfo="text"))
        depth = int(shots["k"].max())
        layout = {"yaxis": {"domain": PLOT_DOMAIN},
                  "yaxis2": {"domain": RUG_DOMAIN, "range": [depth + 0.8, 0.2], "showticklabels": False,
                             "showgrid": False, "zeroline": False, "fixedrange": True,
                             "title": {"text": "Infusions", "font": {"size": 11}}},
                  "xaxis": {"anchor": "y2"}}
    direction = "higher is worse" if higher_is_worse else "higher is better"
    parts = [days, segments["x0"], shots["infused_on"], table["first_infusion"], table["last_infusion"]]
    all_days = pd.to_datetime(pd.concat([p for p in parts if len(p)], ignore_index=True)).dropna()
    fig.update_layout(title=title or name, height=440, hovermode="closest",
                      legend={"orientation": "h", "y": -0.2}, margin={"t": 60, "r": 20, "l": 60, "b": 60},
                      **layout)
    fig.layout.yaxis.update(title_text=f"T-score ({direction})", range=[y_low, y_high])
    fig.layout.xaxis.update(_date_axis(all_days, days.iloc[0]))
    return fig


def _band_of(t: float, cut_points: Sequence[float], labels: Sequence[str], higher_is_worse: bool) -> str:
    if len(labels) != len(cut_points) + 1:
        return ""
    reached = sum(t >= c for c in cut_points) if higher_is_worse else sum(t <= c for c in cut_points)
    return str(labels[reached])


def at_risk_cutoff(times: pd.DataFrame, *, group_col: str | None = None, min_at_risk: int = 10,
                   time_col: str = "time_weeks") -> dict[tuple[str, str], float]:
    """Last week at which at least ``min_at_risk`` episodes are still at risk, per domain and group.

    KMunicate advice (clinical-methods notes §4.5): cut the curve where fewer than about 10 remain at
    risk, because beyond it single patients make large steps. At risk at t = time >= t, so the curve
    may run up to the ``min_at_risk``-th largest time.

    Parameters
    ----------
    times
        ``survival.improvement_times`` or ``response_durations`` output (``domain``, ``time_col``;
        rows with ``has_baseline`` False are ignored).
    group_col
        The grouping column used in the fit (None: every row is group "all").

    Returns
    -------
    dict
        (domain, group) -> week; a curve with fewer than ``min_at_risk`` episodes gets -1 (draw none).

    Examples
    --------
    >>> t = pd.DataFrame({"domain": "depression", "time_weeks": [1.0, 2, 3, 4, 5]})
    >>> at_risk_cutoff(t, min_at_risk=2)
    {('depression', 'all'): 4.0}
    """
    data = times
    if "has_baseline" in data:
        data = data[data["has_baseline"].astype(bool)]
    groups = data[group_col].astype(object).where(data[group_col].notna(), "(missing)").astype(str) \
        if group_col else pd.Series("all", index=data.index)
    out: dict[tuple[str, str], float] = {}
    for (domain, group), part in data.groupby([data["domain"].astype(str), groups], sort=False):
        t = np.sort(part[time_col].to_numpy(float))
        out[(str(domain), str(group))] = float(t[len(t) - min_at_risk]) if len(t) >= min_at_risk else -1.0
    return out


# ---------------------------------------------------------------------------------------------
# Follow-up completion per week (outcomes.completion; docs/followup.md).

#: How a completion came (outcomes.completion.HOW), bottom to top, with its colour.
FOLLOWUP_HOW: tuple[tuple[str, str, str], ...] = (
    ("n_before_message", "Before any message", PALETTE[2]), ("n_after_invitation", "After the invitation", PALETTE[0]),
    ("n_after_reminder", "After the reminder", PALETTE[4]), ("n_by_phone", "By phone", PALETTE[1]))


def followup_weeks_figure(weeks: pd.DataFrame, *, title: str = "Completion per week after the series") -> go.Figure:
    """Completed slots per week as a share of the slots due, stacked by how each completion came.

    Parameters
    ----------
    weeks
        ``outcomes.completion.by_week`` (``Completion.drawn_weeks``): ``group`` (week), ``label``, ``n_due``,
        ``n_completed`` and the four ``n_<how>`` counts; hidden values NaN (no bar is drawn for them). Weeks
        with nothing due draw no bar.
    """
    due = pd.to_numeric(weeks.get("n_due", pd.Series(dtype=float)), errors="coerce")
    if weeks.empty or not (due > 0).any():
        return empty_figure("No follow-up slot has fallen due yet")
    fig = go.Figure()
    x = [str(v) for v in weeks["label"]]
    with np.errstate(divide="ignore", invalid="ignore"):
        for column, name, colour in FOLLOWUP_HOW:
            count = pd.to_numeric(weeks[column], errors="coerce")
            share = (100 * count / due).where(due > 0)
            fig.add_trace(go.Bar(x=x, y=share, name=name, marker_color=colour,
                                 customdata=np.stack([count.to_numpy(dtype=float), due.to_numpy(dtype=float)], axis=1),
                                 hovertemplate="%{x}: %{y:.1f} % (%{customdata[0]:.0f} of %{customdata[1]:.0f} due)"
                                               "<extra>" + name + "</extra>"))
    fig.update_layout(title=title, barmode="stack", height=420, legend={"orientation": "h", "y": -0.25},
                      margin={"t": 60, "r": 20, "l": 60, "b": 90})
    fig.update_yaxes(title_text="% of the slots due", range=[0, 100])
    fig.update_xaxes(title_text="Week after the last infusion (formal time points named)", type="category")
    return fig
