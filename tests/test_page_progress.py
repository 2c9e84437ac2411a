"""My progress (app_pages/progress.py): the patient's own trajectory and answers, nobody else's."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from outcomes import auth, clinic, instruments, storage
from outcomes.settings import load_settings
from tests.conftest import PASSWORD
from tests.page_helpers import charts, messages, new_session, seen, sign_in, texts, values
from tests.page_helpers import fresh_caches  # noqa: F401  (autouse: no cache shared between tests)

PAGE = "app_pages/progress.py"
FORMS = clinic.checkin_forms(load_settings())


def scores(clinic_db, patient_id: str) -> pd.DataFrame:
    return storage.load_assessments(clinic_db.open(), patient_id=patient_id)


def give_p002_a_different_check_in(clinic_db) -> pd.Timestamp:
    """P002 (same answers as P001 in the fixture) gets a check-in of their own three days ago."""
    now = datetime.now(UTC)
    day = now.date() - timedelta(days=3)
    clinic.submit_checkin(clinic_db.open(), clinic_db.users["clinician"], patient_id="P002",
                          answers={f.key: {i.item_id: 1 for i in f.items} for f in FORMS}, assessed_on=day,
                          today=now.date(), now=now, settings=load_settings())
    return pd.Timestamp(day)


@pytest.mark.slow
def test_the_latest_scores_are_shown_with_the_change_since_baseline(app_as, clinic_db):
    at = app_as("patient", PAGE)
    assert not at.exception
    assert at.title[0].value == "My progress"
    own = scores(clinic_db, "P001")
    latest = own.sort_values("assessed_on").groupby("domain").tail(1).set_index("domain")
    assert [m.label for m in at.metric] == ["Pain Interference", "Depression", "Physical Function"]
    assert [m.value for m in at.metric] == [f"{latest.loc[d, 't_score']:.1f}" for d in
                                            ("pain_interference", "depression", "physical_function")]
    assert all("since baseline" in m.proto.delta for m in at.metric)
    assert [m.proto.help.split(" · ")[0] for m in at.metric] == [
        instruments.severity_band(d, latest.loc[d, "t_score"]) for d in
        ("pain_interference", "depression", "physical_function")]                  # the band, in words
    assert seen(at, "50 is the average of the US population", "caption")
    assert seen(at, "call or text 988", "caption")


@pytest.mark.slow
def test_one_chart_per_domain_with_baseline_series_and_severity_bands(app_as, clinic_db):
    at = app_as("patient", PAGE)
    assert [t.label for t in at.tabs] == ["Pain Interference", "Depression", "Physical Function"]
    figures = charts(at)
    assert len(figures) == 3
    own = scores(clinic_db, "P001")
    for figure, domain in zip(figures, ("pain_interference", "depression", "physical_function")):
        trace = figure["data"][0]
        assert trace["name"] == "T-score"
        assert values(trace["y"]) == own[own["domain"] == domain]["t_score"].tolist()
        notes = [a.get("text", "") for a in figure["layout"].get("annotations", [])]
        assert "Series 1" in notes
        assert [t["name"] for t in figure["data"]][1:] == [   # one series, one baseline
            "Baseline", f"Baseline ± {load_settings().mcid[domain]:g}: no meaningful change"]
        assert len(notes) > 3                                          # severity band labels


@pytest.mark.slow
def test_item_level_answers_per_week(app_as, clinic_db):
    at = app_as("patient", PAGE)
    assert [e.label for e in at.expander] == [f"{f.title}: 3 check-ins" for f in FORMS]
    answers = at.dataframe[0].value                                    # pain interference
    own_days = sorted(scores(clinic_db, "P001")["assessed_on"].dt.strftime("%Y-%m-%d").unique(), reverse=True)
    assert answers.index.tolist() == own_days
    assert answers.shape[1] == 6
    # The fixture answered 4, 3, 2 on weeks 7, 5 and 2 ago: newest first, shown as words.
    assert answers.iloc[:, 0].tolist() == ["A little bit", "Somewhat", "Quite a bit"]


@pytest.mark.slow
def test_another_patient_s_data_never_appears(app_as, clinic_db):
    other_day = give_p002_a_different_check_in(clinic_db)
    at = app_as("patient", PAGE)
    for figure in charts(at):
        assert other_day.strftime("%Y-%m-%d") not in json.dumps(figure["data"])
        assert len(values(figure["data"][0]["y"])) == 3
    for i in range(len(at.dataframe)):
        assert other_day.strftime("%Y-%m-%d") not in at.dataframe[i].value.index
    # A patient's session cannot point the page at someone else.
    at.session_state["patient.selected"] = "P002"
    at.run()
    assert all(len(values(f["data"][0]["y"])) == 3 for f in charts(at))
    views = storage.load_audit_log(clinic_db.open(), action="view_record", actor="pat.patient")
    assert set(views["patient_id"]) == {"P001"}


@pytest.mark.slow
def test_the_overdue_banner_links_to_the_check_in(app_as):
    at = app_as("patient", PAGE)
    assert messages(at, "warning")[0].startswith("Your week 5 questionnaire is overdue")
    links = at.get("page_link")
    assert [link.proto.label for link in links] == ["Do my check-in now"]


def test_before_any_check_in_the_page_says_what_will_appear(clinic_db):
    db, now = clinic_db.open(), datetime.now(UTC)
    clinic.enrol_patient(db, clinic_db.users["clinician"], patient_id="P100", today=now.date(), now=now,
                         settings=load_settings())
    pam = auth.create_user(db, clinic_db.users["admin"], username="pam.patient", role="patient",
                           password=PASSWORD, patient_id="P100", now=now)
    storage.update_user(db, pam.id, must_change_password=False)  # as if redeemed from an invitation
    at = sign_in(new_session().run(), "pam.patient", PASSWORD)
    at.switch_page(PAGE).run()
    assert not at.exception
    assert messages(at, "success") == ["No questionnaire is due. You can still check in whenever you like."]
    assert messages(at, "info") == ["Your scores will appear here after your first check-in."]
    assert not at.get("plotly_chart")


@pytest.mark.slow
def test_a_single_score_shows_no_plus_zero_red_arrow_and_no_none(clinic_db):
    from streamlit.proto.Metric_pb2 import Metric as MetricProto

    db, now = clinic_db.open(), datetime.now(UTC)
    settings = load_settings()
    clinic.enrol_patient(db, clinic_db.users["clinician"], patient_id="P100", today=now.date(), now=now,
                         settings=settings)
    clinic.submit_checkin(db, clinic_db.users["clinician"], patient_id="P100",
                          answers={f.key: {i.item_id: 3 for i in f.items} for f in FORMS},
                          assessed_on=now.date(), today=now.date(), now=now, settings=settings)
    pam = auth.create_user(db, clinic_db.users["admin"], username="pam.patient", role="patient",
                           password=PASSWORD, patient_id="P100", now=now)
    storage.update_user(db, pam.id, must_change_password=False)
    at = sign_in(new_session().run(), "pam.patient", PASSWORD)
    at.switch_page(PAGE).run()
    assert not at.exception
    assert len(at.metric) == 3
    for metric in at.metric:                          # the one score is its own baseline: said so, in grey
        assert metric.proto.delta == "baseline score"
        assert metric.proto.color == MetricProto.MetricColor.GRAY
        assert metric.proto.direction == MetricProto.MetricDirection.NONE
        assert "None" not in metric.proto.delta + metric.proto.help and "+0.0" not in metric.proto.delta
    assert not any("None" in t for t in texts(at))
    for figure in charts(at):                         # whole days on the date axis, not hours
        axis = figure["layout"]["xaxis"]
        x0, x1 = (pd.Timestamp(x) + pd.Timedelta(hours=12) for x in axis["range"])  # half a day of margin
        assert x1 - x0 >= pd.Timedelta(days=14) and x0 == x0.normalize()
        assert axis["tickformat"] == "%d %b %Y" and axis["dtick"] == 7 * 86_400_000
        assert "None" not in json.dumps(figure)


@pytest.mark.slow
def test_an_improvement_is_green_whichever_way_the_domain_improves(app_as):
    from streamlit.proto.Metric_pb2 import Metric as MetricProto

    at = app_as("patient", PAGE)  # P001 improved on all three: symptoms fell, function rose
    deltas = [(m.proto.delta[0], m.proto.color, m.proto.direction) for m in at.metric]
    assert deltas == [("-", MetricProto.MetricColor.GREEN, MetricProto.MetricDirection.DOWN),
                      ("-", MetricProto.MetricColor.GREEN, MetricProto.MetricDirection.DOWN),
                      ("+", MetricProto.MetricColor.GREEN, MetricProto.MetricDirection.UP)]
