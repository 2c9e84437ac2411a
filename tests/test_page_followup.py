"""The Follow-up page (app_pages/followup.py): the call list with its call form (clinicians), and completion per
time point, per week, by clinician and diagnosis (clinicians and QI, QI suppressed).

The clinic of ``clinic_db``: P001 and P002, each a series ending 38 days ago and check-ins 7, 5 and 2 weeks ago,
so week 5 (due 3 days ago) is undone and both are on today's call list.
"""

from __future__ import annotations

import json

import pytest

from outcomes import storage
from tests.page_helpers import button, charts, messages, seen, table, texts
from tests.page_helpers import fresh_caches  # noqa: F401  (autouse: no cache shared between tests)

PAGE = "app_pages/followup.py"


@pytest.fixture
def page(app_as):
    return app_as("clinician", PAGE)


def tab(at, label: str):
    found = [t for t in at.tabs if t.label == label]
    assert len(found) == 1, [t.label for t in at.tabs]
    return found[0]


def choose(at, key_fragment: str):
    """Choose the call list row whose key starts with ``key_fragment`` (e.g. "P001|")."""
    box = next(s for s in at.selectbox if s.label == "Call about")
    option = next(o for o in box.options if o.startswith(key_fragment.split("|")[0]))
    box.select(option)
    return at.run()


def call_box(at):
    return next(s for s in at.selectbox if s.label == "Call about")


def test_the_call_list_shows_who_to_phone_with_the_slot_due_day_and_wait(page, clinic_db):
    assert not page.exception
    calls = table(page, 0)
    assert calls["Patient"].tolist() == ["P001", "P002"]
    assert calls["Questionnaire"].tolist() == ["Week 5", "Week 5"]
    assert calls["Days waiting"].tolist() == [3, 3]
    assert calls["Contact"].tolist() == ["no contact details"] * 2
    assert calls["Last call"].tolist() == ["not called yet"] * 2
    with clinic_db.open() as db:
        assert len(storage.load_audit_log(db, action="view_call_list")) == 1


def test_a_call_outcome_is_saved_and_the_form_starts_empty_for_the_next(page, clinic_db):
    page = choose(page, "P001|")
    next(r for r in page.radio if r.label == "Outcome").set_value("no_answer")
    next(t for t in page.text_input if t.label == "Note (optional)").input("left a voicemail")
    page = button(page, "Save the call outcome").click().run()
    assert not page.exception
    assert any("Call to P001 about Week 5 saved: No answer." in m for m in messages(page, "success"))
    with clinic_db.open() as db:
        calls = storage.load_call_outcomes(db)
        audit = storage.load_audit_log(db, action="record_call")
    assert calls[["patient_id", "slot", "outcome", "note", "recorded_by"]].values.tolist() == [
        ["P001", "week_5", "no_answer", "left a voicemail", "cleo.clinician"]]
    assert json.loads(audit["details"].iloc[0])["outcome"] == "no_answer"
    # no answer: still on the list, with the call; the picker and the form are new and empty
    assert table(page, 0)["Last call"].iloc[0].startswith("No answer, ")
    assert call_box(page).value is None
    assert not [r for r in page.radio if r.label == "Outcome"]


def test_nothing_typed_for_one_patient_is_shown_for_another(page):
    page = choose(page, "P001|")
    next(t for t in page.text_input if t.label == "Note (optional)").input("call after 5 pm")
    next(r for r in page.radio if r.label == "Outcome").set_value("declined")
    page.run()
    page = choose(page, "P002|")
    assert next(t for t in page.text_input if t.label == "Note (optional)").value == ""
    assert next(r for r in page.radio if r.label == "Outcome").value is None


def test_a_call_without_an_outcome_is_refused_and_saves_nothing(page, clinic_db):
    page = choose(page, "P002|")
    page = button(page, "Save the call outcome").click().run()
    assert "Choose the outcome of the call. Nothing was saved." in messages(page, "error")
    with clinic_db.open() as db:
        assert storage.load_call_outcomes(db).empty


@pytest.mark.slow
def test_completed_by_phone_takes_the_patient_off_the_list_and_points_to_the_paper_form(page, clinic_db):
    page = choose(page, "P002|")
    next(r for r in page.radio if r.label == "Outcome").set_value("completed_by_phone")
    page = button(page, "Save the call outcome").click().run()
    assert table(page, 0)["Patient"].tolist() == ["P001"]
    assert seen(page, "Enter the answers on the Record page", "success")
    assert [link.label for link in page.get("page_link")] == ["Record → Paper questionnaire"]


def test_completion_per_time_point_week_clinician_and_diagnosis(page):
    completion = tab(page, "Completion")
    assert seen(page, "**Due**: follow-up slots whose due day is on or before", "caption")
    headers = [h.value for h in completion.subheader]
    assert headers == ["Per formal time point", "Per week after the series", "By clinician", "By diagnosis"]
    points = table(page, 1)
    assert points["Time point"].tolist() == ["Baseline", "End of series", "1 month", "3 months", "6 months",
                                             "All formal time points"]
    # check-ins 7 weeks ago (baseline), 5 weeks ago (end of series) and 2 weeks ago (week 3); week 4 (1 month)
    # closed 4 days ago undone
    assert points["Completed / due"].tolist() == ["2 / 2", "2 / 2", "0 / 2", "0 / 0", "0 / 0", "4 / 6"]
    assert points["Missed"].tolist()[:3] == ["0", "0", "2"]
    assert points.columns.tolist()[-4:] == ["Before any message", "After the invitation", "After the reminder",
                                            "By phone"]
    assert table(page, 3)["Clinician"].tolist() == ["cleo.clinician", "All"]
    assert len(charts(page)) == 1
    slots = table(page, 5)
    assert set(slots["Patient"]) == {"P001", "P002"}


def test_qi_sees_completion_only_suppressed_and_without_patients(app_as, clinic_db):
    at = app_as("qi", PAGE)
    assert not at.exception
    assert [t.label for t in at.tabs] == ["Completion"]
    assert seen(at, "Quality-improvement view", "info")
    assert not any(b.label == "Call about" for b in at.selectbox)
    shown = " ".join(texts(at)) + " ".join(table(at, i).to_json() for i in range(len(at.dataframe)))
    assert "P001" not in shown and "P002" not in shown
    with clinic_db.open() as db:
        assert json.loads(storage.load_audit_log(db, action="view_followup_completion")["details"].iloc[0])[
            "suppressed"] is True
        assert storage.load_audit_log(db, action="view_call_list").empty


def test_the_page_is_registered_for_clinicians_and_qi_only():
    from ui import navigation

    spec = next(p for p in navigation.PAGES if p.path == PAGE)
    assert (spec.title, spec.roles) == ("Follow-up", frozenset({"clinician", "qi"}))
    # tests/test_app_navigation.py opens it for those roles and refuses it for every other one
