"""What the cohort page shows, display-ready: small-cell suppression for the QI role and number formatting.

The cohort page (``app_pages/cohort.py``) computes nothing: it hands the results of ``outcomes.analysis``
and ``outcomes.survival`` (through ``ui.data`` or ``outcomes.reports``) to a :class:`CohortView` for its
viewer and renders the frames and sentences it returns. For the quality-improvement role every count from
1 to ``small_cell_max`` and every value from which one could be worked out is hidden
(:mod:`outcomes.disclosure`; docs/methods.md §12, CMS cell-size suppression policy), head counts are
rounded to 10, a panel needs more patients before it shows estimates, and curves stop earlier. Clinicians
see the numbers as computed. Pure: no database, no Streamlit.

Example
-------
>>> import pandas as pd
>>> report = pd.DataFrame({"domain": ["depression"], "window": ["3mo"], "mcid": [3.5], "n_eligible": [120],
...     "n_observed": [100], "n_improved": [7], "pct_observed": [7.0], "ci_low": [3.4], "ci_high": [13.7],
...     "pct_missing_as_not_improved": [5.8], "mnni_ci_low": [2.9], "mnni_ci_high": [11.6]})
>>> CohortView(qi=True).responders(report)[["Improved / observed", "% improved (95 % CI)"]].values.tolist()
[['≤10 / 100', '*']]
>>> CohortView(qi=False).responders(report)["% improved (95 % CI)"].tolist()
['7.0 (3.4–13.7)']
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

import pandas as pd

from . import disclosure

if TYPE_CHECKING:
    from .settings import Settings
    from .survival import IntervalCensoredCurves, SurvivalCurves

#: Fewer patients with a baseline score than this and a panel shows an empty state, not estimates.
MIN_PATIENTS = 5
#: KMunicate: stop a curve where fewer than this many remain at risk (clinical-methods notes §4.5).
MIN_AT_RISK = 10
#: The survival estimates the page offers: Kaplan–Meier, interval-censored, durability of response.
ESTIMATES = ("km", "interval", "durability")


def plain_label(domain: str) -> str:
    """A domain's name in words ("pain_interference" -> "Pain interference")."""
    return domain.replace("_", " ").capitalize()


@dataclass(frozen=True)
class Shown:
    """A frame to draw, and what to add to the panel's caption about what was left out ("" for none)."""

    data: pd.DataFrame
    caveat: str = ""


@dataclass(frozen=True)
class Headline:
    """The sentence above the tabs, and the counts the panels' empty states are judged on (never shown to
    QI as such: only through :meth:`CohortView.count` and :meth:`CohortView.too_few`)."""

    text: str
    with_baseline: Mapping[str, int]
    n_series: int
    n_patients: int

    @property
    def n_any(self) -> int:
        """Patients with a baseline score in the best-covered domain."""
        return max(self.with_baseline.values(), default=0)


@dataclass(frozen=True)
class CompletionShown:
    """Follow-up completion: ``drawn`` for the bar chart (numbers; hidden bars NaN, their labels as text),
    ``table`` display-ready, and ``number_formats`` (column -> printf format) for numeric columns."""

    drawn: pd.DataFrame
    table: pd.DataFrame
    number_formats: Mapping[str, str]


@dataclass(frozen=True)
class DomainCurves:
    """One domain of a survival panel: an empty-state ``message`` (draw nothing) or the curves to draw, with
    where to cut them (``cut_weeks``: group -> week), and the summary ``table`` and log-rank sentence under
    the plot (None: nothing under it)."""

    domain: str
    message: str | None
    cut_weeks: Mapping[str, float]
    table: pd.DataFrame | None
    log_rank: str | None


@dataclass(frozen=True)
class SurvivalShown:
    """A survival panel, display-ready.

    ``curve`` and ``at_risk`` are what the figures may draw (QI: no hidden group, at-risk counts as text);
    ``hover_summary`` the summary for the Kaplan–Meier hover text (None for QI); ``domains`` one
    :class:`DomainCurves` per domain; ``notes`` the caveats of the fit (small counts redacted for QI);
    ``caveat`` says which groups were not drawn ("" when none).
    """

    estimate: str
    curve: pd.DataFrame
    at_risk: pd.DataFrame
    hover_summary: pd.DataFrame | None
    domains: tuple[DomainCurves, ...]
    notes: tuple[str, ...]
    caveat: str = ""


@dataclass(frozen=True)
class CohortView:
    """How the cohort page shows results to one viewer.

    Attributes
    ----------
    qi
        The viewer has the quality-improvement role: suppressed output.
    small_cell_max
        Largest count that may not be shown to QI (setting ``small_cell_max``).
    domain_label
        A domain's name in words (the page passes ``figures.label``, as its figures use).
    window_labels
        Follow-up window name -> its label ("3mo" -> "3 months").
    """

    qi: bool
    small_cell_max: int = disclosure.DEFAULT_THRESHOLD
    domain_label: Callable[[str], str] = plain_label
    window_labels: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def for_role(cls, role: str, settings: Settings, *,
                 domain_label: Callable[[str], str] = plain_label) -> CohortView:
        """The view of a user with ``role`` ("clinician" or "qi") under the clinic's settings."""
        return cls(qi=role == "qi", small_cell_max=settings.small_cell_max, domain_label=domain_label,
                   window_labels={w.name: w.label for w in settings.windows})

    # Thresholds and sentences ---------------------------------------------------------------------------

    @property
    def min_patients(self) -> int:
        """Patients with a baseline a panel needs (QI: more than ``small_cell_max``, hidden anyway)."""
        return max(MIN_PATIENTS, self.small_cell_max + 1) if self.qi else MIN_PATIENTS

    @property
    def min_at_risk(self) -> int:
        """Where curves stop (QI: no step of a published curve rests on 1 to ``small_cell_max`` patients)."""
        return max(MIN_AT_RISK, self.small_cell_max + 1) if self.qi else MIN_AT_RISK

    @property
    def notice(self) -> str | None:
        """What the QI view hides and why, for the top of the page (None for clinicians)."""
        if not self.qi:
            return None
        cells = self.small_cell_max
        return (f"**Quality-improvement view.** Counts from 1 to {cells} are shown as "
                f"“{disclosure.small_marker(cells)}”, and “{disclosure.HIDDEN}” marks a value hidden so that "
                "such a count cannot be worked out from it (CMS cell-size rule; docs/methods.md §12). No "
                "patient identifiers or dates of care are shown. As in the de-identified exports, an episode "
                "is included once its follow-up has closed and a further delay of up to a year has passed, "
                "so recent episodes are not here yet; filters offer only values shared by more than "
                f"{cells} patients, and a selection that leaves out only 1 to {cells} patients is not shown "
                "(docs/privacy.md).")

    def count(self, n: Any) -> str:
        """A head count; rounded to 10 for QI, since an exact total minus a panel's counts can be small."""
        if not self.qi:
            return f"{int(n):,}"
        if disclosure.is_small(n, self.small_cell_max):
            return disclosure.show_count(n, self.small_cell_max)
        return f"about {int(round(n, -1)):,}"

    def too_few(self, n: int, what: str = "this panel", who: str = "with a baseline score") -> str | None:
        """The empty-state message when fewer than :attr:`min_patients` patients qualify, else None."""
        if n >= self.min_patients:
            return None
        shown = (f"n ≤ {self.small_cell_max}" if self.qi and disclosure.is_small(n, self.small_cell_max)
                 else f"n = {n}")
        return f"Too few patients for {what} ({shown} {who}; at least {self.min_patients} needed)"

    def threshold_text(self, preset_label: str, mcid: Mapping[str, float], domains: Sequence[str]) -> str:
        """"Meaningful change: <preset>: depression 3.5, ... T points (docs/methods.md §4).\""""
        thresholds = ", ".join(f"{self.domain_label(d).lower()} {mcid[d]:.1f}" for d in domains)
        return f"Meaningful change: {preset_label}: {thresholds} T points (docs/methods.md §4)."

    def headline(self, counts: pd.DataFrame, *, domains: Sequence[str], series: str, as_of: date,
                 impaired: bool) -> Headline:
        """The cohort in one sentence from the ``counts`` table (``domain, episodes, patients,
        with_baseline``): head counts rounded for QI, and no baseline counts for QI (an exact one minus a
        panel's counts could reveal a small group)."""
        by_domain = counts.set_index("domain")
        with_baseline = {d: int(by_domain.loc[d, "with_baseline"]) if d in by_domain.index else 0
                         for d in domains}
        n_series, n_patients = int(counts["episodes"].max()), int(counts["patients"].max())
        text = (f"**{self.count(n_patients)} patients** (first series of each)" if series == "first" else
                f"**{self.count(n_series)} series of {self.count(n_patients)} patients** (all series)")
        text += (f" released by the end of {as_of:%B %Y}" if self.qi
                 else f" with a first infusion up to {as_of:%Y-%m-%d}")
        if not self.qi:
            text += "; with a baseline score: " + ", ".join(
                f"{self.domain_label(d).lower()} {with_baseline[d]:,}" for d in domains)
        if impaired:
            text += "; each domain counts only patients impaired in it at baseline"
        return Headline(text + ".", with_baseline, n_series, n_patients)

    def notes(self, items: Sequence[str]) -> tuple[str, ...]:
        """Notes of a fit, with small counts of patients or events replaced by the marker for QI."""
        if not self.qi:
            return tuple(items)
        return tuple(disclosure.redact_text(n, threshold=self.small_cell_max) for n in items)

    # Panels -------------------------------------------------------------------------------------------

    def responders(self, report: pd.DataFrame) -> pd.DataFrame:
        """The responder table (``analysis.responder_report``) as shown: counts as "improved / observed",
        percentages with their Wilson CI; for QI through ``disclosure.RESPONDER_SPEC``."""
        shown = (disclosure.suppress(report, disclosure.RESPONDER_SPEC, threshold=self.small_cell_max)
                 if self.qi else report)
        rows = shown.to_dict("records")
        return pd.DataFrame({
            "Domain": report["domain"].map(self.domain_label),
            "Follow-up": report["window"].map(self.window_labels),
            "Threshold (T)": [f"{m:.1f}" for m in report["mcid"]],
            "Improved / observed": [_ratio(r["n_improved"], r["n_observed"]) for r in rows],
            "% improved (95 % CI)": [_percent(r["pct_observed"], r["ci_low"], r["ci_high"]) for r in rows],
            "Observed / eligible": [_ratio(r["n_observed"], r["n_eligible"]) for r in rows],
            "% if missing = not improved (95 % CI)": [
                _percent(r["pct_missing_as_not_improved"], r["mnni_ci_low"], r["mnni_ci_high"])
                for r in rows],
        })

    def trajectories(self, traj: pd.DataFrame, measure: str) -> Shown:
        """``analysis.trajectories`` for the figure; for QI, weeks with 1 to ``small_cell_max`` patients of
        the ``measure`` drawn ("t" or "change") become NaN (left out)."""
        if not self.qi:
            return Shown(traj)
        spec = disclosure.TRAJECTORY_CHANGE_SPEC if measure == "change" else disclosure.TRAJECTORY_T_SPEC
        return Shown(disclosure.suppress(traj, spec, threshold=self.small_cell_max, as_text=False),
                     f"Weeks with 1 to {self.small_cell_max} patients are not shown.")

    def change_cdf(self, cdf: pd.DataFrame, pins: Mapping[str, float]) -> Shown:
        """``analysis.change_cdf`` for the figure; for QI read on a 1-point grid plus the threshold in use
        (``pins``, per domain) and kept only where no small group can be worked out
        (``disclosure.coarsen_cdf``)."""
        if not self.qi:
            return Shown(cdf)
        return Shown(disclosure.coarsen_cdf(cdf, threshold=self.small_cell_max, pins=pins),
                     "Quality-improvement view: read on a 1-point grid; only points that let no group of 1 "
                     f"to {self.small_cell_max} patients be worked out are shown, joined by dotted lines.")

    def completion(self, completion: pd.DataFrame) -> CompletionShown:
        """``analysis.follow_up_completion`` for the chart and the table; for QI through
        ``disclosure.COMPLETION_SPEC`` (with a score + without = eligible)."""
        table, drawn = completion, completion
        if self.qi:
            spec, cells = disclosure.COMPLETION_SPEC, self.small_cell_max
            mask = disclosure.suppression_mask(completion, spec, threshold=cells)
            table = disclosure.apply_mask(completion, mask, counts=spec.counts, threshold=cells)
            drawn = disclosure.apply_mask(completion, mask, as_text=False).assign(
                **{c: table[c] for c in spec.counts})  # bar heights as numbers, their labels as text
        rows = table.to_dict("records")
        shown = pd.DataFrame({
            "Domain": completion["domain"].map(self.domain_label),
            "Follow-up": completion["window"].map(self.window_labels),
            "Eligible": table["n_eligible"], "With a score": table["n_completed"],
            "% with a score": table["pct_completed"],
            "Baseline T, with a score: mean (SD)": [
                _mean_sd(r["completer_baseline_mean"], r["completer_baseline_sd"]) for r in rows],
            "Baseline T, without: mean (SD)": [
                _mean_sd(r["noncompleter_baseline_mean"], r["noncompleter_baseline_sd"]) for r in rows],
        })
        return CompletionShown(drawn, shown, {} if self.qi else {"% with a score": "%.1f"})

    def survival(self, result: SurvivalCurves | IntervalCensoredCurves, cut: Mapping[tuple[str, str], float],
                 *, estimate: str, domains: Sequence[str], with_baseline: Mapping[str, int]) -> SurvivalShown:
        """A survival panel (``estimate``: "km", "interval" or "durability") from a fit and where to cut each
        (domain, group) curve.

        For QI the summary and at-risk table go through ``disclosure.suppress_curves``: a group of 1 to
        ``small_cell_max`` patients, and one more where needed so that none can be worked out from the
        total, is not drawn. Each domain needs :attr:`min_patients` patients with a baseline
        (``with_baseline``; for durability, responders) before it is drawn.
        """
        if estimate not in ESTIMATES:
            raise ValueError(f"estimate must be one of {', '.join(ESTIMATES)}, got {estimate!r}")
        cells, durability = self.small_cell_max, estimate == "durability"
        raw = result.summary
        summary, at_risk, hidden = (disclosure.suppress_curves(raw, result.at_risk, threshold=cells)
                                    if self.qi else (raw, result.at_risk, set()))
        keep = [(str(d), str(g)) not in hidden
                for d, g in zip(result.curve["domain"], result.curve["group"], strict=True)]
        curve = result.curve[keep]
        p_values = getattr(result, "p_values", {})
        everyone = "Responders" if durability else "All patients"
        median = ("Median weeks in response (95 % CI)" if durability else "Weibull median weeks"
                  if estimate == "interval" else "Median weeks to improvement (95 % CI)")
        panels = []
        for d in domains:
            label = self.domain_label(d)
            # Durability follows responders only: judge the panel on their number.
            n = int(raw.loc[raw["domain"] == d, "n"].sum()) if durability else with_baseline[d]
            message = self.too_few(n, label, "who responded" if durability else "with a baseline score")
            if not message and curve[curve["domain"] == d].empty and any(dom == d for dom, _ in hidden):
                message = (f"{label}: every group has 1 to {cells} patients or would reveal one; "
                           "choose “All patients”")
            rows = summary[summary["domain"] == d].sort_values(  # as in the plot, the total row last
                "group", key=lambda g: g.map(lambda x: (x in ("all", "All"), str(x).lower())))
            table = log_rank = None
            if not message and not rows.empty:
                table = pd.DataFrame({
                    "Group": rows["group"].replace({"all": everyone, "All": everyone}),
                    "Responders" if durability else "Patients": rows["n"],
                    "Lost response" if durability else "Improved": rows["events"],
                    median: [_median_text(r, with_ci=estimate != "interval")
                             for r in rows.to_dict("records")]})
                if d in p_values:
                    log_rank = (f"Log-rank test across groups: p = {p_values[d]:.3f} (descriptive: the "
                                "groups also differ in baseline severity and follow-up).")
            panels.append(DomainCurves(d, message, {g: w for (dom, g), w in cut.items() if dom == d}, table,
                                       log_rank))
        caveat = (f"Groups with 1 to {cells} patients, and one more where needed so that none can be worked "
                  "out from the total, are not drawn." if hidden else "")
        return SurvivalShown(estimate, curve, at_risk, None if self.qi else summary, tuple(panels),
                             self.notes(result.notes), caveat)


# Number formats (a suppressed value arrives as its marker, text) ------------------------------------------


def _whole(value: Any) -> str:
    return value if isinstance(value, str) else f"{int(value):,}"


def _ratio(part: Any, total: Any) -> str:
    """"40 / 100"; a suppressed count shows its marker."""
    return f"{_whole(part)} / {_whole(total)}"


def _percent(pct: Any, low: Any, high: Any) -> str:
    """"40.4 (37.3–43.6)"; a suppressed percentage shows only its marker, a missing one "–"."""
    if isinstance(pct, str):
        return pct if pct in (disclosure.HIDDEN, "") else f"{pct} ({low}–{high})"
    return "–" if pd.isna(pct) else f"{pct:.1f} ({low:.1f}–{high:.1f})"


def _mean_sd(mean: Any, sd: Any) -> str:
    """"52.3 (7.9)"; "–" without a mean; the marker when either is hidden."""
    if isinstance(mean, str) or isinstance(sd, str):
        return disclosure.HIDDEN if disclosure.HIDDEN in (mean, sd) else f"{mean} ({sd or '–'})"
    return "–" if pd.isna(mean) else f"{mean:.1f}" + ("" if pd.isna(sd) else f" ({sd:.1f})")


def _weeks(value: Any) -> str:
    if isinstance(value, str):
        return value or "not reached"
    return "not reached" if pd.isna(value) else f"{value:.1f}"


def _median_text(row: Mapping[str, Any], *, with_ci: bool = True) -> str:
    """"10.0 (7.9 to 13.0)"; "not reached" while fewer than half had the event; "" on a total row; without
    ``with_ci`` (the Weibull median, which has none) the median alone."""
    if row["group"] == "All":  # a total row added for suppression has no estimate of its own
        return ""
    if row.get("median_weeks") == disclosure.HIDDEN:
        return disclosure.HIDDEN
    if not with_ci or _weeks(row["median_weeks"]) == "not reached":
        return _weeks(row["median_weeks"])
    low, high = _weeks(row["median_ci_low"]), _weeks(row["median_ci_high"])
    return f"{_weeks(row['median_weeks'])} ({low} to {high})"

