"""The staff side of follow-up in outcomes/clinic.py: contacts, stopping messages, revoking links, the call list,
call outcomes and the completion view; who may do each, what is audited, and that contacts never leave in a
de-identified export."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pytest

from outcomes import auth, clinic, disclosure, exports, storage
from outcomes.errors import NotFound, PermissionDenied, ValidationError
from outcomes.settings import load_settings

pytestmark = pytest.mark.usefixtures("fast_hasher")

TODAY = date(2025, 4, 20)
NOW = datetime(2025, 4, 20, 15, 0, tzinfo=UTC)
SETTINGS = load_settings({})
D = date.fromisoformat
EMAIL, PHONE = "ann.lee@example.org", "(201) 555-0123"


class World:
    """A clinician, a QI user, an admin and a patient login; P1 (series 3-7 March 2025), P2 (series 7-11 April),
    P3 (no series)."""

    def __init__(self, db):
        self.db = db
        self.admin = auth.create_first_admin(db, "root.admin", "correct horse battery", now=NOW)
        self.clinician = auth.create_user(db, self.admin, username="dr.lee", role="clinician",
                                          password="lee's long password", now=NOW)
        self.qi = auth.create_user(db, self.admin, username="qi.ana", role="qi", password="ana's long password",
                                   now=NOW)
        for pid in ("P1", "P2", "P3"):
            storage.add_patient(db, patient_id=pid, entered_by="dr.lee", today=TODAY)
        self.patient = auth.create_user(db, self.admin, username="pat.one", role="patient", patient_id="P1",
                                        password="pat's long password", now=NOW)
        self.s1 = storage.add_series(db, patient_id="P1", first_infusion="2025-03-03", last_infusion="2025-03-07",
                                     infusions=5, entered_by="dr.lee", today=TODAY)
        self.s2 = storage.add_series(db, patient_id="P2", first_infusion="2025-04-07",
                                     last_infusion="2025-04-11", infusions=5, entered_by="dr.lee", today=TODAY)

    def audit(self, action):
        return storage.load_audit_log(self.db, action=action)


@pytest.fixture
def w(db):
    return World(db)


CALLS = {
    "contact": ({"clinician"}, lambda w, a: clinic.contact(w.db, a, "P1", now=NOW)),
    "set_contact": ({"clinician"}, lambda w, a: clinic.set_contact(
        w.db, a, patient_id="P1", email=EMAIL, channel="email", consent_on=TODAY, now=NOW, today=TODAY,
        settings=SETTINGS)),
    "stop_messages": ({"clinician"}, lambda w, a: clinic.stop_messages(w.db, a, patient_id="P1", now=NOW)),
    "revoke_links": ({"clinician"}, lambda w, a: clinic.revoke_links(w.db, a, patient_id="P1", now=NOW)),
    "call_list": ({"clinician"}, lambda w, a: clinic.call_list(w.db, a, today=TODAY, settings=SETTINGS)),
    "record_call": ({"clinician"}, lambda w, a: clinic.record_call(
        w.db, a, patient_id="P1", series_id=w.s1, slot="week_6", due_on="2025-04-18", outcome="no_answer",
        now=NOW)),
    "followup_completion": ({"clinician", "qi"}, lambda w, a: clinic.followup_completion(
        w.db, a, as_of=TODAY, settings=SETTINGS)),
}


@pytest.mark.parametrize("actor", ("admin", "clinician", "qi", "patient"))
@pytest.mark.parametrize("name", CALLS)
def test_role_matrix(w, name, actor):
    allowed, call = CALLS[name]
    user = getattr(w, actor)
    before = len(w.audit("access_denied"))
    if actor in allowed:
        call(w, user)
        assert len(w.audit("access_denied")) == before
    else:
        with pytest.raises(PermissionDenied):
            call(w, user)
        assert len(w.audit("access_denied")) == before + 1


# Contacts -----------------------------------------------------------------------------------------------------


def test_contact_details_are_stored_normalised_with_who_recorded_the_consent(w):
    details = clinic.set_contact(w.db, w.clinician, patient_id="P1", email="Ann.Lee@Example.org ", phone=PHONE,
                                 channel="sms", consent_on="2025-04-18", now=NOW, today=TODAY, settings=SETTINGS)
    assert (details.email, details.phone, details.channel) == ("Ann.Lee@example.org", "+12015550123", "sms")
    assert (details.consent_on, details.consent_by, details.consent_how) == (D("2025-04-18"), "dr.lee", "recorded")
    assert (details.updated_by, details.opted_out) == ("dr.lee", False)
    assert clinic.contact(w.db, w.clinician, "P1", now=NOW) == details
    assert clinic.contact(w.db, w.clinician, "P2", now=NOW).stored is False


def test_bad_contact_details_name_each_field_and_change_nothing(w, dump):
    before = dump(w.db)
    with pytest.raises(ValidationError) as info:
        clinic.set_contact(w.db, w.clinician, patient_id="P1", email="ann@", phone="12", channel="sms",
                           consent_on=TODAY + timedelta(days=1), now=NOW, today=TODAY, settings=SETTINGS)
    problems = info.value.problems
    assert [p.split(" ")[0] for p in problems] == ["email", "phone", "consent_on"]
    audit_free = {t: rows for t, rows in dump(w.db).items()}
    assert audit_free == before


def test_a_channel_needs_its_address_and_a_consent_date(w):
    with pytest.raises(ValidationError) as info:
        clinic.set_contact(w.db, w.clinician, patient_id="P1", channel="email", now=NOW, today=TODAY,
                           settings=SETTINGS)
    assert any("channel is email but no email address" in p for p in info.value.problems)
    assert any(p.startswith("consent_on is required") for p in info.value.problems)


def test_an_unknown_patient_is_not_found(w):
    with pytest.raises(NotFound):
        clinic.set_contact(w.db, w.clinician, patient_id="P9", channel="none", now=NOW, today=TODAY,
                           settings=SETTINGS)


def test_contact_changes_are_audited_by_field_name_never_by_value(w):
    clinic.set_contact(w.db, w.clinician, patient_id="P1", email=EMAIL, phone=PHONE, channel="email",
                       consent_on=TODAY, now=NOW, today=TODAY, settings=SETTINGS)
    clinic.set_contact(w.db, w.clinician, patient_id="P1", email=EMAIL, phone=PHONE, channel="sms",
                       consent_on=TODAY, now=NOW, today=TODAY, settings=SETTINGS)
    clinic.contact(w.db, w.clinician, "P1", now=NOW)
    clinic.stop_messages(w.db, w.clinician, patient_id="P1", now=NOW)
    entries = w.audit("set_contact")
    assert [json.loads(d)["fields"] for d in entries["details"]] == [["channel"],
                                                                     ["email", "phone", "channel", "consent_on"]]
    assert len(w.audit("view_contact")) == 1 and len(w.audit("stop_messages")) == 1
    log = storage.load_audit_log(w.db).to_json()
    assert "ann.lee" not in log and "5550123" not in log and "555-0123" not in log


def test_stopping_messages_keeps_the_addresses_says_who_and_cancels_planned_messages(w):
    clinic.set_contact(w.db, w.clinician, patient_id="P1", email=EMAIL, channel="email", consent_on=TODAY,
                       now=NOW, today=TODAY, settings=SETTINGS)
    storage.plan_messages(w.db, [{"patient_id": "P1", "series_id": w.s1, "slot": "week_6", "due_on": D("2025-04-18"),
                                  "step": "invitation", "channel": "email", "recipient": EMAIL}], by="remind", now=NOW)
    later = NOW + timedelta(hours=1)
    assert clinic.stop_messages(w.db, w.clinician, patient_id="P1", now=later) is True
    details = clinic.contact(w.db, w.clinician, "P1", now=later)
    assert (details.channel, details.email, details.opted_out_by) == ("none", EMAIL, "dr.lee")
    assert details.opted_out_at == later
    assert storage.load_outbox(w.db)["status"].tolist() == ["cancelled"]
    assert clinic.stop_messages(w.db, w.clinician, patient_id="P1", now=later) is False  # already off
    # choosing a channel again turns messages back on (staff record the new consent)
    again = clinic.set_contact(w.db, w.clinician, patient_id="P1", email=EMAIL, channel="email", consent_on=TODAY,
                               now=later, today=TODAY, settings=SETTINGS)
    assert again.opted_out is False
    assert json.loads(w.audit("set_contact")["details"].iloc[0])["messages"] == "turned back on"


def test_stopping_messages_of_a_patient_without_contacts_records_it(w):
    assert clinic.stop_messages(w.db, w.clinician, patient_id="P2", now=NOW) is False
    details = clinic.contact(w.db, w.clinician, "P2", now=NOW)
    assert details.channel == "none" and details.stored


def test_open_links_are_counted_and_revoked(w):
    for i, expires in enumerate((NOW + timedelta(days=3), NOW + timedelta(days=5), NOW - timedelta(days=1))):
        storage.add_link(w.db, token_hash=f"{i:064x}", purpose="checkin", patient_id="P1", expires_at=expires,
                         by="remind", now=NOW - timedelta(days=2), series_id=w.s1, slot="week_6")
    # a used link is a check-in session that may still be open: revoking ends it too
    assert storage.use_link(w.db, f"{0:064x}", purpose="checkin", now=NOW) is not None
    assert clinic.contact(w.db, w.clinician, "P1", now=NOW).open_links == 2
    assert clinic.revoke_links(w.db, w.clinician, patient_id="P1", now=NOW) == 2
    assert clinic.contact(w.db, w.clinician, "P1", now=NOW).open_links == 0
    assert json.loads(w.audit("revoke_links")["details"].iloc[0]) == {"links": 2}


def test_a_deidentified_export_holds_no_contact_details(w):
    clinic.set_contact(w.db, w.clinician, patient_id="P1", email=EMAIL, phone=PHONE, channel="sms",
                       consent_on=TODAY, now=NOW, today=TODAY, settings=SETTINGS)
    for kind, fmt in (("dataset", "csv"), ("summary", "csv"), ("fhir", "json")):
        file = exports.export(w.db, w.clinician, kind, fmt, as_of=date(2026, 12, 1), settings=SETTINGS,
                              now=datetime(2026, 12, 2, tzinfo=UTC))
        data = file.data
        if data[:2] == b"PK":
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                data = b"".join(z.read(n) for n in z.namelist())
        text = data.decode("utf-8", "replace").lower()
        for needle in ("ann.lee", "example.org", "2015550123", "555-0123", "email", "phone"):
            assert needle not in text, (kind, needle)


# The call list ------------------------------------------------------------------------------------------------


def test_the_call_list_holds_open_undone_slots_from_their_call_day_longest_waiting_first(w):
    # P1: week 6 due 18 April (day 3 on 20 April: not yet); P2: week 1 due 18 April too. On 21 April both are.
    day = D("2025-04-21")
    assert clinic.call_list(w.db, w.clinician, today=TODAY, settings=SETTINGS).empty
    clinic.set_contact(w.db, w.clinician, patient_id="P1", email=EMAIL, phone=PHONE, channel="sms",
                       consent_on=TODAY, now=NOW, today=TODAY, settings=SETTINGS)
    listed = clinic.call_list(w.db, w.clinician, today=day, settings=SETTINGS)
    assert listed[["patient_id", "slot", "label", "days_waiting", "status"]].values.tolist() == [
        ["P1", "week_6", "Week 6", 3, "overdue"], ["P2", "week_1", "Week 1", 3, "overdue"]]
    assert listed["due_on"].tolist() == [pd.Timestamp("2025-04-18")] * 2
    assert listed["contact"].tolist() == ["Text message (SMS) · +12015550123 · ann.lee@example.org",
                                          "no contact details"]
    assert listed["calls"].tolist() == [0, 0]
    assert json.loads(w.audit("view_call_list")["details"].iloc[0]) == {"slots": 2}


def test_no_answer_keeps_a_slot_on_the_list_and_a_final_outcome_takes_it_off(w):
    day = D("2025-04-21")
    clinic.record_call(w.db, w.clinician, patient_id="P1", series_id=w.s1, slot="week_6", due_on="2025-04-18",
                       outcome="no_answer", note="left a voicemail on 201 555 0123", now=NOW)
    listed = clinic.call_list(w.db, w.clinician, today=day, settings=SETTINGS).set_index("patient_id")
    assert (listed.loc["P1", "calls"], listed.loc["P1", "last_outcome"], listed.loc["P1", "last_called_by"]) == (
        1, "no_answer", "dr.lee")
    assert listed.loc["P1", "last_called_at"] == pd.Timestamp(NOW)
    clinic.record_call(w.db, w.clinician, patient_id="P1", series_id=w.s1, slot="week_6", due_on="2025-04-18",
                       outcome="completed_by_phone", now=NOW)
    clinic.record_call(w.db, w.clinician, patient_id="P2", series_id=w.s2, slot="week_1", due_on="2025-04-18",
                       outcome="wrong_number", now=NOW)
    assert clinic.call_list(w.db, w.clinician, today=day, settings=SETTINGS).empty
    details = [json.loads(d) for d in w.audit("record_call")["details"]]
    assert details[-1] == {"series_id": w.s1, "slot": "week_6", "outcome": "no_answer", "note": True}
    assert "voicemail" not in storage.load_audit_log(w.db).to_json()


def test_inactive_patients_are_not_on_the_call_list(w):
    storage.set_disposition(w.db, "P2", disposition="withdrawn", on="2025-04-12", reason="moved", by="dr.lee",
                            today=TODAY)
    listed = clinic.call_list(w.db, w.clinician, today=D("2025-04-21"), settings=SETTINGS)
    assert listed["patient_id"].tolist() == ["P1"]


def test_a_bad_call_is_refused_and_stores_nothing(w, dump):
    before = dump(w.db)
    with pytest.raises(ValidationError):
        clinic.record_call(w.db, w.clinician, patient_id="P1", series_id=w.s1, slot="week_6", due_on="2025-04-18",
                           outcome="hung up", now=NOW)
    with pytest.raises(NotFound):  # P2's series is not P1's
        clinic.record_call(w.db, w.clinician, patient_id="P1", series_id=w.s2, slot="week_1", due_on="2025-04-18",
                           outcome="no_answer", now=NOW)
    assert dump(w.db) == before


# Completion -------------------------------------------------------------------------------------------------


def test_a_clinician_sees_completion_with_patients_on_the_day(w):
    storage.save_assessment(w.db, patient_id="P1", assessed_on="2025-03-08", domain=next(iter(SETTINGS.domains)),
                            t_score=60.0, method="imported", source="clinician", entered_by="dr.lee", today=TODAY)
    result = clinic.followup_completion(w.db, w.clinician, as_of=TODAY, settings=SETTINGS)
    assert result.as_of == TODAY and not result.qi
    end = result.timepoints.set_index("group").loc["week_0"]
    assert (end["n_due"], end["n_completed"], end["n_before_message"]) == (2, 1, 1)
    assert set(result.slots["patient_id"]) == {"P1", "P2"}
    assert json.loads(w.audit("view_followup_completion")["details"].iloc[0]) == {"as_of": "2025-04-20",
                                                                                  "suppressed": False}


def test_qi_sees_completion_at_the_last_month_end_suppressed_without_patients(w):
    result = clinic.followup_completion(w.db, w.qi, as_of=TODAY, settings=SETTINGS)
    assert result.as_of == D("2025-03-31") and result.qi and result.slots.empty
    assert "P1" not in result.timepoints.to_json() and result.notice
    assert result.timepoints.set_index("group").loc["week_0", "n_due"] == disclosure.small_marker(10)
    assert clinic.followup_completion(w.db, w.qi, as_of=D("2025-04-30"), settings=SETTINGS).as_of == D("2025-04-30")
