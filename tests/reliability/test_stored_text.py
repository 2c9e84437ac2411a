"""Issue 7, stored text rendered back: a patient ID, diagnosis, protocol, notes, adverse-event notes, alert
note, display names, an uploaded file's name and cells, all holding HTML, Markdown and Streamlit markup,
are shown literally on every page, for every role that can open it.

Streamlit renders Markdown in titles, captions, alerts, ``st.markdown``/``st.write`` and widget labels;
``st.text``, ``st.code``, tables and select options are literal. The test walks every element of every
page and fails if a payload appears unescaped in any Markdown-rendered string (``ui.widgets.literal`` and
``md`` turn ``**bold**`` into ``\\*\\*bold\\*\\*``, which no longer contains it), or raw in a Plotly label.
tests/browser/test_concurrent_sessions.py checks the same in Chromium's DOM: no image, no link, no script.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pytest

from outcomes import auth, clinic, storage
from outcomes.settings import load_settings
from tests.conftest import PASSWORD
from tests.page_helpers import fresh_caches  # noqa: F401  (autouse)
from tests.page_helpers import button
from ui import navigation

PAYLOADS = ("<img src=x onerror=alert(1)>", "**bold**", "[link](javascript:alert(1))", ":red[red]",
            "<script>alert(2)</script>", "`code`", "~~strike~~", "$x^2$", "![pic](https://example.org/p.png)",
            "https://phish.example/login", "&lt;b&gt;")
HOSTILE = " ".join(PAYLOADS)
HOSTILE_ID = "P<img src=x onerror=alert(1)>**9**"
#: Proto fields Streamlit renders as Markdown (radio options too); selectbox options, inputs, text are plain.
MARKDOWN_FIELDS = ("body", "label", "help", "captions")
LITERAL_TYPES = ("text", "code", "arrow_data_frame", "plotly_chart", "json", "exception")


def markdown_strings(at) -> list[tuple[str, str]]:
    out = []
    for node in at._tree:
        proto = getattr(node, "proto", None)
        if proto is None or node.type in LITERAL_TYPES or not hasattr(proto, "ListFields"):
            continue
        for field, value in proto.ListFields():
            if field.name in MARKDOWN_FIELDS or (field.name == "options" and node.type == "radio"):
                values = value if isinstance(value, (list, tuple)) or hasattr(value, "extend") else [value]
                out += [(node.type, v) for v in values if isinstance(v, str)]
    return out


def unescaped(at) -> list[str]:
    found = [f"{kind}: {text[:120]!r}" for kind, text in markdown_strings(at) for p in PAYLOADS if p in text]
    for chart in at.get("plotly_chart"):
        spec = json.dumps(json.loads(chart.proto.spec))
        found += [f"plotly: {p}" for p in ("<img", "<script", "javascript:") if p in spec]
    return found


@pytest.fixture
def hostile(clinic_db):
    """The clinic database with hostile text in every stored text field a page can show."""
    settings = load_settings({})
    db = clinic_db.open()
    users = clinic_db.users
    today, now = clinic_db.today, datetime.now(UTC)
    clinician = users["clinician"]
    clinic.enrol_patient(db, clinician, patient_id=HOSTILE_ID, diagnosis=HOSTILE[:200], sex="F", birth_year=1970,
                         today=today, now=now, settings=settings)
    first = today - timedelta(days=30)
    series_id = clinic.log_series(db, clinician, patient_id=HOSTILE_ID, first_infusion=first,
                                  last_infusion=first + timedelta(days=4), infusions=5, protocol=HOSTILE[:200],
                                  notes=HOSTILE, today=today)
    clinic.log_infusion(db, clinician, patient_id=HOSTILE_ID, series_id=series_id, infused_on=first,
                        dose_mg_per_kg=0.5, duration_min=40, notes=HOSTILE,
                        adverse_events=[{"kind": "other", "severity": "mild", "notes": HOSTILE,
                                                        "description": HOSTILE[:200]}], today=today)
    # The record's trail shows reasons as typed: a hostile correction reason and disposition reason.
    clinic.correct_record(db, clinician, patient_id=HOSTILE_ID, record="series", record_id=series_id,
                          changes={"dose_mg_per_kg": 0.4}, reason=HOSTILE[:500], today=today, now=now,
                          settings=settings)
    clinic.set_disposition(db, clinician, patient_id=HOSTILE_ID, disposition="lost_to_follow_up", on=today,
                           reason=HOSTILE[:500], today=today)
    forms = clinic.checkin_forms(settings)
    for days, value in ((35, 3), (1, 5)):  # a baseline, then a severe depression score: an alert
        clinic.submit_checkin(db, clinician, patient_id=HOSTILE_ID, assessed_on=today - timedelta(days=days),
                              answers={f.key: dict.fromkeys(f.item_ids, value) for f in forms}, today=today,
                              now=now, settings=settings)
    alert_id = int(storage.load_alerts(db, patient_id=HOSTILE_ID)["alert_id"].iloc[0])
    for user in users.values():
        storage.update_user(db, user.id, display_name=HOSTILE[:200])
    patient = auth.create_user(db, users["admin"], username="hostile.patient", role="patient", password=PASSWORD,
                               patient_id=HOSTILE_ID, display_name=HOSTILE[:200], now=now)
    storage.update_user(db, patient.id, must_change_password=False)
    clinic.record_export(db, users["admin"], what=HOSTILE, rows=1, deidentified=False, reason=HOSTILE)
    db.close()
    signed_in = {role: dataclasses.replace(u, display_name=HOSTILE[:200]) for role, u in users.items()}
    signed_in["hostile_patient"] = dataclasses.replace(patient, must_change_password=False,
                                                       display_name=HOSTILE[:200])
    return signed_in, alert_id


def open_as(user, page: str, **state):
    from streamlit.testing.v1 import AppTest

    from tests.conftest import APP

    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["auth.user"] = user
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    at.switch_page(page).run()
    assert not at.exception, (page, at.exception)
    return at


CASES = [(role, p.path) for p in navigation.PAGES for role in sorted(p.roles)]


@pytest.mark.slow
@pytest.mark.parametrize("role, page", CASES)
def test_every_page_shows_stored_text_literally(hostile, role, page):
    users, _ = hostile
    user = users["hostile_patient" if role == "patient" else role]
    at = open_as(user, page, **{"patient.selected": HOSTILE_ID})
    assert unescaped(at) == []


@pytest.mark.slow
def test_messages_that_quote_what_was_typed_or_stored_are_literal(hostile):
    users, alert_id = hostile
    at = open_as(users["clinician"], "app_pages/record.py")
    # Enrolling the same ID again: the refusal quotes it. Then a series for it: the success message names it.
    def field(label):  # the enrolment form's keys carry a counter, so that each patient gets an empty form
        return next(t for t in at.text_input if t.label == label)

    field("Clinic patient ID").input(HOSTILE_ID)
    field("Diagnosis note (optional free text; never shown to QI)").input(HOSTILE[:200])
    button(at, "Enrol and create invitation code").click().run()
    assert at.error and "already enrolled" in at.error[0].value
    field("Clinic patient ID").input("P-" + HOSTILE[:40])
    button(at, "Enrol and create invitation code").click().run()
    assert at.success and "Enrolled" in at.success[0].value
    at.selectbox(key="record.invite.patient").set_value(HOSTILE_ID).run()
    button(at, "Create a new invitation code").click().run()
    assert unescaped(at) == []
    at = open_as(users["clinician"], "app_pages/alerts.py")
    at.text_input(key=f"alerts.note.{alert_id}").input(HOSTILE)
    button(at, "Acknowledge").click().run()
    assert not at.exception and unescaped(at) == []
    at = open_as(users["clinician"], "app_pages/patient.py", **{"patient.selected": HOSTILE_ID})
    assert unescaped(at) == []


def test_an_uploaded_file_name_and_its_cells_are_literal(hostile):
    users, _ = hostile
    at = open_as(users["clinician"], "app_pages/import_redcap.py")
    rows = f"record_id,visit_date,eddep04,eddep06,eddep29,eddep41\n{HOSTILE_ID},2025-01-01,{PAYLOADS[0]},2,2,2\n"
    at.file_uploader(key="redcap.file").set_value(("**bold**[link](javascript:alert(1)).csv", rows.encode(),
                                                   "text/csv")).run()
    assert not at.exception
    assert any("\\*\\*bold\\*\\*" in text for _, text in markdown_strings(at))  # the name is shown, escaped
    assert unescaped(at) == []


@pytest.mark.slow
def test_the_check_fails_when_stored_text_is_not_escaped(hostile, monkeypatch):
    """The negative control: with the escaping switched off, the same walk finds the payloads."""
    from ui import widgets

    users, _ = hostile
    at = open_as(users["clinician"], "app_pages/patient.py", **{"patient.selected": HOSTILE_ID})
    assert any(HOSTILE_ID.replace("*", "\\*").replace("<", "\\<") in text or "\\<img" in text
               for _, text in markdown_strings(at))  # the ID is on the page, escaped
    monkeypatch.setattr(widgets, "literal", str)
    monkeypatch.setattr(widgets, "md", str)
    at = open_as(users["clinician"], "app_pages/patient.py", **{"patient.selected": HOSTILE_ID})
    assert unescaped(at)
