"""Cohort outcomes: does treatment help, for whom, and for how long (docs/methods.md).

A thin view: the sidebar builds a ``CohortQuery``; ``ui.data`` computes it with ``outcomes.analysis`` and
``outcomes.survival`` (cached); ``outcomes.cohort_view`` makes the results display-ready for the viewer (for
the quality-improvement role it hides counts from 1 to ``small_cell_max`` through ``outcomes.disclosure``,
and formats every number); ``outcomes.figures`` draws. Only groups appear here: no patient identifiers, no
dates of care. A tab renders only while open, so lifelines loads with the first survival tab.

The quality-improvement role sees what the de-identified files hold (docs/privacy.md, "Dates and differencing"
and "Diagnosis codes and filters"): the episodes released by a month end (``outcomes.reports.qi_cohort``),
filters with pooled values only and no calendar filter, and no view that leaves 1 to ``small_cell_max``
patients of a wider one out (``reports.qi_suppression``).
"""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

import pandas as pd
import streamlit as st

from outcomes import figures, reports
from outcomes.analysis import AGE_BANDS, SeriesChoice
from outcomes.cohort_view import CohortView
from outcomes.errors import OutcomesError
from outcomes.settings import CUSTOM_MCID_LABEL
from ui import data, session, widgets

PRESET_SHORT = {"anchor": "anchor-based", "lenient": "lenient", "half_sd": "half SD", "custom": "custom"}
SERIES_LABELS = {"first": "Each patient's first series (primary)", "all": "All series"}
ESTIMATES = {"km": "Kaplan–Meier (improvement dated at the first improved score)",
             "interval": "Interval-censored (improvement between two scores: NPMLE + Weibull band)"}
DURABILITY_X_TITLE = "Weeks since the first meaningful improvement"
TABS = ("Responder rates", "Trajectories", "Distribution of change", "Time to improvement", "Durability",
        "Follow-up completion")
CAVEAT = (
    "**Observed outcomes in an uncontrolled cohort, not treatment effects.** Without a comparison group "
    "these numbers cannot show what the infusions added. The 2025 Cochrane review of randomised trials "
    "found no clear benefit of ketamine over placebo for chronic pain; a 2025 registry of 1,034 patients "
    "saw 20–46 % improve meaningfully, depending on the measure. Patients who start worst improve most "
    "even without any effect (regression to the mean).")

user = session.require_roles("clinician", "qi")
settings = data.settings()
view = CohortView.for_role(user.role, settings, domain_label=figures.label)
qi = view.qi
cells = settings.small_cell_max
windows = view.window_labels
label = figures.label
today = session.today()  # the clinic's calendar day (setting OUTCOMES_TIMEZONE), as check-ins are dated

qi_data: reports.QiCohort | None = None
with st.sidebar:
    st.header("Which patients")
    if qi:  # month ends only, and only released episodes: the cut cannot date anybody's care
        as_of = st.selectbox("Data as of (end of month)", reports.month_end_cuts(today),
                             key="cohort.as_of_month", format_func=lambda d: f"{d:%B %Y}",
                             help="Episodes whose follow-up had closed, each after a delay of up to a year, "
                                  "by the end of this month.")
        with data.database() as db:
            qi_data = reports.qi_cohort(db, cut=as_of, settings=settings)
        options: dict[str, Any] = dict(qi_data.options)
        domains = settings.reported_domains(qi_data.scores["domain"].unique())
        filter_labels = {name: label for name, (_, label) in reports.QI_FILTERS.items()}
    else:
        as_of = st.date_input("Data as of", value=today, max_value=today, key="cohort.as_of",
                              help="Scores after this date are ignored and follow-up ends on it.")
        options = {**data.cohort_options(), "age_band": AGE_BANDS}
        domains = options["domains"]
        filter_labels = {"diagnosis": "Diagnosis", "sex": "Sex", "age_band": "Age band",
                         "protocol": "Protocol", "series_number": "Series number"}
    chosen_set = st.radio("Analysis set", list(SERIES_LABELS), format_func=lambda s: SERIES_LABELS[s],
                          key="cohort.series",
                          help="Repeat series of one patient are not independent: their CIs are too narrow.")
    series: SeriesChoice = "all" if chosen_set == "all" else "first"
    pooled_help = (f"Values shared by 1 to {cells} patients are pooled into “{reports.POOLED}”." if qi
                   else None)
    diagnosis = st.multiselect(filter_labels["diagnosis"], options["diagnosis"], key="cohort.diagnosis",
                               placeholder="All", help=pooled_help)
    sex = st.multiselect(filter_labels["sex"], options["sex"], key="cohort.sex", placeholder="All",
                         help=pooled_help)
    age_band = st.multiselect(filter_labels["age_band"], options["age_band"], key="cohort.age_band",
                              placeholder="All", help=pooled_help)
    protocol = st.multiselect(filter_labels["protocol"], options["protocol"], key="cohort.protocol",
                              placeholder="All", help=pooled_help)
    series_number = st.multiselect(filter_labels["series_number"], options["series_number"],
                                   key="cohort.series_number", placeholder="All", disabled=series == "first",
                                   help="Choose 'All series' above to analyse repeat series.")
    span: Any = ()
    if not qi:  # a calendar filter would date care by differencing: clinicians only
        # Not the first infusion on record: that would be one patient's date of care.
        first_day = date(options["first_year"] or today.year, 1, 1)
        span = st.date_input("First infusion between", value=(first_day, today), key="cohort.span")
    impaired = st.checkbox("Impaired at baseline only", key="cohort.impaired",
                           help="Each domain counts only the patients impaired in it before treatment (a "
                                "baseline in the mild band or worse: "
                                + "; ".join(f"{label(d)} T {'≥' if settings.domains[d].higher_is_worse else '≤'} "
                                            f"{settings.domains[d].bands.cut_points[0]:g}" for d in domains)
                                + "): patients within normal limits have little room to improve.")
    st.header("Meaningful change")
    preset_labels = {**settings.domains.presets, "custom": CUSTOM_MCID_LABEL}
    choices = list(preset_labels)
    default = "custom" if settings.mcid_label == CUSTOM_MCID_LABEL else settings.mcid_preset
    preset = st.selectbox("Threshold", choices, index=choices.index(default), key="cohort.preset",
                          format_func=lambda p: preset_labels[p]) or default
    if preset == "custom":
        mcid = {d: st.number_input(f"{label(d)}, T points", min_value=0.5, max_value=30.0, step=0.5,
                                   value=float(settings.mcid[d]), key=f"cohort.mcid.{d}") for d in domains}
    else:
        mcid = settings.domains.preset(preset)

# While a range is being picked the widget holds one date.
start, end = (tuple(span) + (None, None))[:2] if isinstance(span, (tuple, list)) else (span, None)
query = data.CohortQuery(
    as_of=as_of, mcid=tuple((d, float(mcid[d])) for d in domains), series=series,
    diagnosis=tuple(diagnosis), sex=tuple(sex), age_band=tuple(age_band), protocol=tuple(protocol),
    series_number=tuple(series_number) if series == "all" else (), first_infusion_from=start,
    first_infusion_to=end, impaired_only=impaired)
qi_filters = {"diagnosis": tuple(diagnosis), "sex": tuple(sex), "age_band": tuple(age_band),
              "protocol": tuple(protocol), "series_number": tuple(series_number) if series == "all" else ()}
qi_sets = (reports.qi_subsets(qi_data, series=series, filters=qi_filters, impaired_only=impaired,
                              domains=domains, baseline_days=settings.baseline_days)
           if qi_data is not None else [])


def cohort_table(panel: str) -> pd.DataFrame:
    """One table of the chosen view: cached through ui.data for clinicians; the released cohort for QI."""
    if qi_data is None:
        return data.cohort_table(query, panel)
    return reports.cohort_table(qi_sets, qi_data.scores, panel=panel, as_of=qi_data.cut,
                                mcid=dict(query.mcid), series=series, windows=settings.windows,
                                baseline_days=settings.baseline_days)


def cohort_survival(estimate: str, group_col: str | None) -> Any:
    if qi_data is None:
        return data.cohort_survival(query, estimate, group_col=group_col, min_at_risk=view.min_at_risk)
    return reports.cohort_survival(qi_sets, qi_data.scores, estimate=estimate, group_col=group_col,
                                   min_at_risk=view.min_at_risk, as_of=qi_data.cut, mcid=dict(query.mcid),
                                   series=series, baseline_days=settings.baseline_days)


threshold_text = view.threshold_text(preset_labels[preset], mcid, domains)


def empty_state(n: int) -> bool:
    message = view.too_few(n)
    if message:
        st.info(message + ". Widen the filters in the sidebar.", icon=":material/filter_alt_off:")
    return message is not None


def caption(text: str, caveat: str = "") -> None:
    st.caption(f"{text} {caveat}" if caveat else text)


def chart(fig: Any, key: str) -> None:
    st.plotly_chart(fig, key=key, config={"displaylogo": False})


def notes(items: tuple[str, ...]) -> None:
    if items:
        with st.expander(f"Notes on these estimates ({len(items)})"):
            st.markdown("\n".join(f"- {widgets.literal(n)}" for n in items))


st.title("Cohort outcomes")
st.warning(CAVEAT, icon=":material/info:")
if qi:
    st.info(view.notice, icon=":material/shield:")
    hidden = reports.qi_suppression(qi_data, series=series, filters=qi_filters, impaired_only=impaired,
                                    domains=domains, settings=settings)
    if hidden:
        st.warning(hidden, icon=":material/filter_alt_off:")
        st.stop()

try:
    counts = cohort_table("counts")
except OutcomesError as exc:
    st.error(widgets.message(exc))
    st.stop()
headline = view.headline(counts, domains=domains, series=series, as_of=as_of, impaired=impaired)
with_baseline, n_any, n_series = headline.with_baseline, headline.n_any, headline.n_series
st.markdown(headline.text + "  \n" + threshold_text)

if qi and n_series == 0:
    st.info(f"No episode had been released by the end of {as_of:%B %Y}: an episode is included once its "
            "follow-up has closed (about 7½ months after the last infusion) and a further delay of up to a "
            "year has passed. Choose a later month, or clear the filters.", icon=":material/schedule:")
    st.stop()
tabs = dict(zip(TABS, st.tabs(TABS, key="cohort.tab", on_change="rerun"), strict=True))


def responder_tab() -> None:
    widgets.table(view.responders(cohort_table("responders")), hide_index=True, height="content",
                  key="cohort.responders")
    spans = "; ".join(f"{w.label.lower()} {w.low}–{w.high}" for w in settings.windows)
    st.caption(
        "**Improved**: a change from baseline of at least the threshold in the better direction (lower pain "
        "interference and depression, higher physical function), rounded to 0.1. **% improved** = improved ÷ "
        "observed (a baseline and a score in the window): the primary estimate, with a Wilson 95 % CI. "
        "**Missing = not improved** = improved ÷ eligible (a baseline, and the window had closed by the "
        f"as-of date): a conservative lower bound. Windows, in days after the last infusion: {spans}. "
        f"{threshold_text} Methods: docs/methods.md §3–6.")


def trajectory_tab() -> None:
    shown_as = st.segmented_control(
        "Show", ["change", "t"], default="change", required=True, key="cohort.measure",
        format_func=lambda m: "Mean T-score" if m == "t" else "Mean change from baseline")
    measure: Literal["change", "t"] = "t" if shown_as == "t" else "change"
    traj = view.trajectories(cohort_table("trajectories"), measure)
    for d in domains:
        message = view.too_few(with_baseline[d], label(d))
        chart(figures.empty_figure(message) if message else
              figures.trajectory_figure(traj.data, d, measure=measure), f"cohort.trajectory.{d}")
    caption(
        "Mean of the scores in each week since the first infusion (week 0 = days 0–6, the infusion week; "
        "negative weeks are before it), with the 95 % CI of the mean. Bars: patients with a score that week; "
        "later weeks rest on fewer patients, and those who keep answering may differ from those who stop. "
        "Change is from each patient's baseline (latest score in the 30 days up to the first infusion). No "
        "threshold is involved: a mean change says nothing about how many patients improved meaningfully. "
        "Methods: docs/methods.md §7.", traj.caveat)


def distribution_tab() -> None:
    cdf = view.change_cdf(cohort_table("cdf"), pins=mcid)
    for d in domains:
        message = view.too_few(with_baseline[d], label(d))
        marks = {PRESET_SHORT.get(p, p): settings.domains[d].meaningful_change[p].t
                 for p in settings.domains.presets if p in settings.domains[d].meaningful_change}
        if preset == "custom":
            marks["custom"] = mcid[d]
        chart(figures.empty_figure(message) if message else
              figures.change_cdf_figure(cdf.data, d, thresholds=marks, current=mcid[d], steps=not qi),
              f"cohort.cdf.{d}")
    caption(
        "Each line: the share of patients with a baseline and a score in that window whose score improved "
        "by at least x T points (n = those patients). Dotted lines mark the published thresholds, the dashed "
        "line the one in use; the circles are the responder rates of the first tab. A lower or higher "
        f"threshold moves the rate along the line (FDA PRO guidance 2009). {threshold_text}", cdf.caveat)


def survival_panel(estimate: str, group_col: str | None) -> None:
    """Curves per domain with their summary table, for "km", "interval" or "durability"."""
    try:
        fitted = cohort_survival(estimate, group_col)
    except OutcomesError as exc:
        st.info(widgets.message(exc))
        return
    if fitted is None:
        st.info("No patient in this selection reached meaningful improvement, so no response to follow."
                if estimate == "durability" else "No patient in this selection has a baseline score.")
        return
    result, cut = fitted
    shown = view.survival(result, cut, estimate=estimate, domains=domains, with_baseline=with_baseline)
    durability = estimate == "durability"
    for panel in shown.domains:
        d = panel.domain
        if panel.message:
            fig = figures.empty_figure(panel.message)
        elif estimate == "interval":
            fig = figures.interval_censored_figure(shown.curve, shown.at_risk, d, cut_weeks=panel.cut_weeks)
        else:
            fig = figures.km_figure(shown.curve, shown.at_risk, d, kind="survival" if durability else "event",
                                    summary=shown.hover_summary, cut_weeks=panel.cut_weeks,
                                    x_title=DURABILITY_X_TITLE if durability else figures.WEEKS_X_TITLE,
                                    all_label="Responders" if durability else "All patients")
        chart(fig, f"cohort.{estimate}.{d}")
        if panel.table is not None:
            widgets.table(panel.table, hide_index=True, height="content",
                          key=f"cohort.{estimate}.{d}.summary")
        if panel.log_rank:
            st.caption(panel.log_rank)
    if shown.caveat:
        st.caption(shown.caveat)
    notes(shown.notes)


def time_to_improvement_tab() -> None:
    left, right = st.columns([3, 2])
    estimate = left.radio("Estimate", list(ESTIMATES), format_func=ESTIMATES.get, key="cohort.estimate")
    grouping = right.radio("Curves", ["diagnosis", "all"], key="cohort.grouping",
                           format_func={"diagnosis": "One per diagnosis", "all": "All patients"}.get)
    st.markdown("How soon patients first reached a meaningful improvement. Any single score counts, so "
                "this share ends higher than the responder rates of the first tab (one score per window) and "
                "includes improvements that did not last: see *Durability*.")
    if estimate == "km":
        st.markdown("**Kaplan–Meier, right-censored.** Improvement is dated at the first score that met the "
                    "threshold; patients who never improved count until their last score. With weekly scores "
                    "the true time lies up to a week earlier.")
    else:
        st.markdown("**Interval-censored.** Improvement happened somewhere between the previous score and "
                    "the first improved one. Steps: Turnbull NPMLE (model-free, no CI). Dashed line and "
                    "band: Weibull model with its 95 % CI, trustworthy only where it follows the steps.")
    survival_panel(estimate, "diagnosis" if grouping == "diagnosis" else None)
    st.caption(
        "Time zero: first infusion. Event: the first later score with a change of at least the threshold "
        "(a single score: noise alone can trigger it, so the responder table stays the primary report). "
        f"n = patients with a baseline score. Curves stop where fewer than {view.min_at_risk} remain at risk "
        "(KMunicate); the table under each plot gives the number still at risk at 0, 4, 8, 13 and 26 weeks. "
        f"{threshold_text} Methods: docs/methods.md §8–9.")


def durability_tab() -> None:
    st.markdown("How long a meaningful improvement lasted, among the patients who reached one. Time zero is "
                "each patient's first improved score.")
    survival_panel("durability", None)
    st.caption(
        "Loss of response: two consecutive later scores below the threshold (dated at the first of the two). "
        "Followed until the last score, or the day before a repeat series. The median is the time by which "
        "half had lost their response (“not reached” while more than half still respond). "
        f"{threshold_text} Methods: docs/methods.md §10.")


def completion_tab() -> None:
    shown = view.completion(cohort_table("completion"))
    chart(figures.completion_figure(shown.drawn, window_labels=windows), "cohort.completion")
    widgets.table(shown.table, hide_index=True, height="content", key="cohort.completion.table",
                  column_config={column: st.column_config.NumberColumn(format=f)
                                 for column, f in shown.number_formats.items()} or None)
    st.caption(
        "Eligible: a baseline score, and the window had closed by the as-of date (or already holds a score). "
        "If patients without a follow-up score started out differently from those with one, the observed "
        "responder rates are biased and the “missing = not improved” column of the responder table matters "
        "more (Mercieca-Bebber et al., BMJ Open 2016). No threshold is involved. "
        "Methods: docs/methods.md §6.")


for name, render in zip(TABS, (responder_tab, trajectory_tab, distribution_tab, time_to_improvement_tab,
                               durability_tab, completion_tab), strict=True):
    if tabs[name].open:
        with tabs[name]:
            if not empty_state(n_any):
                render()
