"""Issue 7, authorization: every role against every ``outcomes`` function that reads or writes the clinic's
data, every page, a tampered session, the demo switch in the URL, and the command line.

``test_every_function_that_touches_the_database_is_classified`` enumerates the public functions of
outcomes.clinic, outcomes.auth, outcomes.exports and outcomes.redcap that take the database: each must be
in ``MATRIX`` (role-checked, run below for every role) or in ``UNCHECKED`` with the reason it needs no
role. A new function fails the test until someone decides which.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import json
from datetime import UTC, date, datetime

import pytest

from outcomes import auth, clinic, exports, redcap, storage
from outcomes.cli import main
from outcomes.errors import PermissionDenied
from outcomes.instruments import default_registry
from outcomes.settings import load_settings
from tests.export_helpers import file_texts
from tests.page_helpers import fresh_caches  # noqa: F401  (autouse)
from tests.page_helpers import button, texts
from ui import navigation

pytestmark = pytest.mark.usefixtures("fast_hasher")

NOW = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)
TODAY = date(2025, 6, 2)
SETTINGS = load_settings({})
REGISTRY = default_registry()
PI, DEP, PF = SETTINGS.checkin_forms
ROLES = ("admin", "clinician", "qi", "patient", "other")  # "patient" owns P001, "other" owns P002
PASSWORD = "correct horse battery"


def full(form_key: str, value: int = 3) -> dict[str, int]:
    return {i: value for i in REGISTRY.form(form_key).item_ids}


class World:
    def __init__(self, db):
        self.db = db
        self.admin = auth.create_first_admin(db, "root.admin", PASSWORD, now=NOW)
        make = lambda name, role, pid=None: dataclasses.replace(auth.create_user(  # noqa: E731
            db, self.admin, username=name, role=role, password=PASSWORD, patient_id=pid, now=NOW),
            must_change_password=False)
        self.clinician = make("dr.lee", "clinician")
        self.qi = make("qi.ana", "qi")
        for pid in ("P001", "P002", "P003"):
            storage.add_patient(db, patient_id=pid, diagnosis="CRPS", sex="F", birth_year=1970, entered_by="dr.lee",
                                today=TODAY)
        self.patient = make("pat.one", "patient", "P001")
        self.other = make("pat.two", "patient", "P002")
        self.series_id = clinic.log_series(db, self.clinician, patient_id="P001", first_infusion="2025-05-05",
                                           last_infusion="2025-05-09", infusions=5, dose_mg_per_kg=0.5, today=TODAY)
        for pid in ("P001", "P002"):
            clinic.submit_checkin(db, self.clinician, patient_id=pid, answers={DEP: full(DEP, 5)},
                                  assessed_on="2025-05-01", today=TODAY, now=NOW, settings=SETTINGS)
        self.alert_id = int(storage.load_alerts(db, patient_id="P001")["alert_id"].iloc[0])
        self.code = int(clinic.diagnosis_codes(db, self.admin).iloc[0]["code"])
        self.n = 0

    def actor(self, role: str):
        return self.other if role == "other" else getattr(self, role)

    def fresh(self) -> str:
        self.n += 1
        return str(self.n)

    def denials(self):
        return storage.load_audit_log(self.db, action="access_denied")


@pytest.fixture
def w(db):
    return World(db)


def _redcap_commit(w: World, a):
    frame = redcap.read(b"record_id,visit_date,depression_tscore\nP001,2025-05-2" + w.fresh()[-1].encode()
                        + b",55.5\n")
    return redcap.commit(w.db, a, frame, redcap.detect(frame, REGISTRY), registry=REGISTRY, today=TODAY)


def _export(deidentified: bool, kind: str = "dataset"):
    return lambda w, a: exports.export(w.db, a, kind, "json" if kind == "fhir" else "csv",
                                       deidentified=deidentified, as_of=TODAY, reason=None if deidentified else "QA",
                                       settings=SETTINGS, registry=REGISTRY, now=NOW)


#: function -> [(label, roles allowed, call(world, actor))]; "patient" = the owner of P001 (whose record the
#: calls concern), "other" = P002's login, who must be refused everything about P001.
MATRIX = {
    "clinic.enrol_patient": [("", {"clinician"}, lambda w, a: clinic.enrol_patient(
        w.db, a, patient_id="N" + w.fresh(), today=TODAY, now=NOW, settings=SETTINGS))],
    "clinic.log_series": [("", {"clinician"}, lambda w, a: clinic.log_series(
        w.db, a, patient_id="P001", first_infusion=f"2025-04-{10 + int(w.fresh()):02d}",
        last_infusion="2025-04-30", infusions=3, today=TODAY))],
    "clinic.log_infusion": [("", {"clinician"}, lambda w, a: clinic.log_infusion(
        w.db, a, patient_id="P001", series_id=w.series_id, infused_on="2025-05-06", dose_mg_per_kg=0.5,
        duration_min=40, today=TODAY))],
    "clinic.plan_series": [("", {"clinician"}, lambda w, a: clinic.plan_series(
        w.db, a, patient_id="P001", first_infusion=f"2025-07-{10 + int(w.fresh()):02d}", planned_infusions=5,
        today=TODAY))],
    "clinic.cancel_series": [("", {"clinician"}, lambda w, a: clinic.cancel_series(
        w.db, a, patient_id="P001", series_id=storage.plan_series(
            w.db, patient_id="P001", first_infusion=f"2025-08-{10 + int(w.fresh()):02d}", planned_infusions=5,
            entered_by="dr.lee", today=TODAY), reason="insurance declined"))],
    "clinic.correct_record": [("", {"clinician"}, lambda w, a: clinic.correct_record(
        w.db, a, patient_id="P001", record="patient", changes={"diagnosis": "CRPS " + w.fresh()}, reason="typo",
        today=TODAY, now=NOW, settings=SETTINGS))],
    "clinic.void_record": [("", {"clinician"}, lambda w, a: clinic.void_record(
        w.db, a, patient_id="P001", record="assessment",
        record_id=int(storage.load_assessments(w.db, patient_id="P001")["assessment_id"].iloc[0]),
        reason="entered for the wrong patient"))],
    "clinic.set_disposition": [("", {"clinician"}, lambda w, a: clinic.set_disposition(
        w.db, a, patient_id="P001", disposition="withdrawn", on=TODAY, reason="moved " + w.fresh(),
        today=TODAY))],
    "clinic.record_history": [("", {"clinician"}, lambda w, a: clinic.record_history(w.db, a, "P001"))],
    "clinic.diagnosis_codes": [("", {"clinician", "admin"}, lambda w, a: clinic.diagnosis_codes(w.db, a))],
    "clinic.add_diagnosis_code": [("", {"admin"}, lambda w, a: clinic.add_diagnosis_code(
        w.db, a, label="Code " + w.fresh()))],
    "clinic.rename_diagnosis_code": [("", {"admin"}, lambda w, a: clinic.rename_diagnosis_code(
        w.db, a, code=w.code, label="Renamed " + w.fresh()))],
    "clinic.retire_diagnosis_code": [("", {"admin"}, lambda w, a: clinic.retire_diagnosis_code(
        w.db, a, code=w.code, retired=bool(int(w.fresh()) % 2)))],
    "clinic.set_diagnosis_code": [("", {"clinician"}, lambda w, a: clinic.set_diagnosis_code(
        w.db, a, patient_id="P001", code=w.code if int(w.fresh()) % 2 else None, reason="coded"))],
    "clinic.diagnosis_notes": [("", {"admin"}, lambda w, a: clinic.diagnosis_notes(w.db, a))],
    "clinic.code_patients_by_note": [("", {"admin"}, lambda w, a: clinic.code_patients_by_note(
        w.db, a, note="CRPS", code=w.code, reason="coded from the note"))],
    "clinic.contact": [("", {"clinician"}, lambda w, a: clinic.contact(w.db, a, "P001", now=NOW))],
    "clinic.set_contact": [("", {"clinician"}, lambda w, a: clinic.set_contact(
        w.db, a, patient_id="P001", email="p001@example.org", channel="email", consent_on=TODAY, now=NOW,
        today=TODAY, settings=SETTINGS))],
    "clinic.stop_messages": [("", {"clinician"}, lambda w, a: clinic.stop_messages(w.db, a, patient_id="P001",
                                                                                   now=NOW))],
    "clinic.revoke_links": [("", {"clinician"}, lambda w, a: clinic.revoke_links(w.db, a, patient_id="P001",
                                                                                 now=NOW))],
    "clinic.call_list": [("", {"clinician"}, lambda w, a: clinic.call_list(w.db, a, today=TODAY,
                                                                           settings=SETTINGS))],
    "clinic.record_call": [("", {"clinician"}, lambda w, a: clinic.record_call(
        w.db, a, patient_id="P001", series_id=w.series_id, slot="week_3", due_on="2025-05-30",
        outcome="no_answer", now=NOW))],
    "clinic.followup_completion": [("", {"clinician", "qi"}, lambda w, a: clinic.followup_completion(
        w.db, a, as_of=TODAY, settings=SETTINGS))],
    "clinic.submit_checkin": [("", {"clinician", "patient"}, lambda w, a: clinic.submit_checkin(
        w.db, a, patient_id="P001", answers={PI: full(PI)}, assessed_on=TODAY, today=TODAY, now=NOW,
        settings=SETTINGS, replace=True))],
    "clinic.save_draft": [("", {"clinician", "patient"}, lambda w, a: clinic.save_draft(
        w.db, a, "P001", {PI: {"PAININ9": 3}}, now=NOW))],
    "clinic.load_draft": [("", {"clinician", "patient"}, lambda w, a: clinic.load_draft(w.db, a, "P001"))],
    "clinic.discard_draft": [("", {"clinician", "patient"}, lambda w, a: clinic.discard_draft(w.db, a, "P001"))],
    "clinic.checkin_due": [("", {"clinician", "patient"}, lambda w, a: clinic.checkin_due(
        w.db, a, "P001", today=TODAY, settings=SETTINGS))],
    "clinic.followup_schedule": [("", {"clinician"}, lambda w, a: clinic.followup_schedule(
        w.db, a, "P001", today=TODAY, settings=SETTINGS))],
    "clinic.patient_record": [("", {"clinician", "patient"}, lambda w, a: clinic.patient_record(
        w.db, a, "P001", settings=SETTINGS))],
    "clinic.patient_ids": [("", {"clinician"}, lambda w, a: clinic.patient_ids(w.db, a))],
    "clinic.roster": [("", {"clinician"}, lambda w, a: clinic.roster(w.db, a, today=TODAY, settings=SETTINGS))],
    "clinic.open_alerts": [("", {"clinician"}, lambda w, a: clinic.open_alerts(w.db, a))],
    "clinic.acknowledge_alert": [("", {"clinician"}, lambda w, a: clinic.acknowledge_alert(
        w.db, a, w.alert_id, now=NOW))],
    "clinic.read_audit_log": [("", {"admin"}, lambda w, a: clinic.read_audit_log(w.db, a))],
    "clinic.record_export": [
        ("de-identified", {"clinician", "qi", "admin"}, lambda w, a: clinic.record_export(
            w.db, a, what="x", rows=1, deidentified=True)),
        ("identified", {"clinician", "admin"}, lambda w, a: clinic.record_export(
            w.db, a, what="x", rows=1, deidentified=False)),
        ("own record", {"clinician", "admin", "patient"}, lambda w, a: clinic.record_export(
            w.db, a, what="x", rows=1, deidentified=False, patient_id="P001"))],
    "clinic.backup_database": [("", {"admin"}, lambda w, a: clinic.backup_database(w.db, a, now=NOW))],
    "auth.create_user": [("", {"admin"}, lambda w, a: auth.create_user(
        w.db, a, username="new.user" + w.fresh(), role="qi", password=PASSWORD, now=NOW))],
    "auth.deactivate_user": [("", {"admin"}, lambda w, a: auth.deactivate_user(w.db, a, "qi.ana"))],
    "auth.reactivate_user": [("", {"admin"}, lambda w, a: auth.reactivate_user(w.db, a, "qi.ana"))],
    "auth.unlock_user": [("", {"admin"}, lambda w, a: auth.unlock_user(w.db, a, "qi.ana"))],
    "auth.reset_password": [("", {"admin"}, lambda w, a: auth.reset_password(w.db, a, "qi.ana", "a new long password"))],
    "auth.list_users": [("", {"admin"}, lambda w, a: auth.list_users(w.db, a, now=NOW))],
    "auth.issue_invitation": [("", {"clinician", "admin"}, lambda w, a: auth.issue_invitation(
        w.db, a, "P003", now=NOW, settings=SETTINGS))],
    # Every signed-in user, for their own account only (the account is the actor's own id).
    "auth.change_password": [("own account", set(ROLES), lambda w, a: auth.change_password(
        w.db, a, PASSWORD, PASSWORD + " x", now=NOW, settings=SETTINGS))],
    "auth.log_out": [("own session", set(ROLES), lambda w, a: auth.log_out(w.db, a))],
    # The guards themselves.
    "auth.require_role": [("admin only", {"admin"}, lambda w, a: auth.require_role(w.db, a, "admin", action="t"))],
    "auth.require_patient_access": [("P001", {"clinician", "patient"}, lambda w, a: auth.require_patient_access(
        w.db, a, "P001", action="t"))],
    "exports.export": [("de-identified dataset", {"clinician", "qi", "admin"}, _export(True)),
                       ("de-identified FHIR", {"clinician", "qi", "admin"}, _export(True, "fhir")),
                       ("identified dataset", {"clinician", "admin"}, _export(False))],
    "redcap.commit": [("", {"clinician", "admin"}, _redcap_commit)],
}

#: Functions that take the database without a signed-in user, and why that is right.
UNCHECKED = {
    "auth.login": "signs in: anonymous by definition; generic failure, lockout (test_sessions.py)",
    "auth.redeem_invitation": "anonymous with a single-use, expiring code (test_sessions.py)",
    "auth.create_first_admin": "only while the database has no user at all (tested below)",
    "auth.user_for_identity": "maps an identity the hospital's identity provider has verified",
    "auth.create_demo_accounts": "refused unless the database is flagged synthetic (tests/test_auth.py)",
    "clinic.record_operator_export": "the command line: file access is full access; audited as cli:<login>",
    "clinic.raise_score_alerts": "runs inside the authorised write that stored the scores (check-in, correction, "
                                 "import, demo); never called by a page",
    "exports.load_source": "reads for exports.export after its role check; not called by pages",
    "redcap.preview": "a dry run behind the import page's clinician/admin check; returns the file's own rows",
    "auth.link_session_open": "answers whether a check-in link session's own link still stands; grants nothing "
                              "(tests/test_link_access.py)",
}


def _public_db_functions():
    for module in (clinic, auth, exports, redcap):
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            if fn.__module__ == module.__name__ and not name.startswith("_"):
                params = list(inspect.signature(fn).parameters)
                if params and params[0] == "db":
                    yield f"{module.__name__.removeprefix('outcomes.')}.{name}", params


def test_every_function_that_touches_the_database_is_classified():
    found = dict(_public_db_functions())
    unclassified = sorted(set(found) - set(MATRIX) - set(UNCHECKED))
    assert unclassified == [], f"add these to MATRIX (with their roles) or UNCHECKED (with a reason): {unclassified}"
    assert sorted(set(MATRIX) | set(UNCHECKED)) == sorted(found), "the matrix names a function that is gone"
    with_actor = sorted(n for n, params in found.items() if "actor" in params)
    assert set(with_actor) <= set(MATRIX), "a function with an actor must be role-checked"


CASES = [(name, label, role) for name, rows in MATRIX.items() for label, _, _ in rows for role in ROLES]


@pytest.mark.slow
@pytest.mark.parametrize("name, label, role", CASES, ids=[f"{n}[{lb or 'call'}]-{r}" for n, lb, r in CASES])
def test_role_matrix(w, name, label, role):
    allowed, call = next((a, c) for lb, a, c in MATRIX[name] if lb == label)
    actor = w.actor(role)
    before = len(w.denials())
    if role in allowed:
        call(w, actor)
        assert len(w.denials()) == before
        return
    with pytest.raises(PermissionDenied) as info:
        call(w, actor)
    denials = w.denials()
    assert len(denials) == before + 1 and denials["actor"].iloc[0] == actor.username
    if role == "other" and "patient" in allowed:  # P002's login asking about P001
        assert str(info.value) == "You can only see and enter your own check-ins."


def test_the_first_admin_can_only_be_created_in_an_empty_database(w, dump):
    before = dump(w.db)
    with pytest.raises(PermissionDenied):
        auth.create_first_admin(w.db, "intruder", "a long enough password", now=NOW)
    assert dump(w.db) == before


# QI never receives identifiers ----------------------------------------------------------------------------

IDENTIFIERS = ("P001", "P002", "P003", "pat.one", "pat.two", "dr.lee", "root.admin")


@pytest.mark.slow
def test_nothing_a_qi_user_may_call_returns_an_identifier(w):
    got = []
    # Changing one's password or signing out ends the session (credential version): those go last.
    last = ("auth.change_password", "auth.log_out")
    for name, rows in sorted(MATRIX.items(), key=lambda item: item[0] in last):
        for label, allowed, call in rows:
            if "qi" in allowed:
                got.append((f"{name}[{label}]", call(w, w.qi)))
    for what, result in got:
        if isinstance(result, exports.ExportFile):
            parts = file_texts(result.data, result.filename)
            parts["tables"] = "\n".join(t.to_csv() for t in result.tables.values())
            text = "\n".join(parts.values())
        else:
            text = repr(result)
        assert not [i for i in IDENTIFIERS if i in text], what


@pytest.mark.slow
def test_qi_pages_show_no_identifier_even_after_preparing_every_export(app_as, clinic_db):
    identifiers = ("P001", "P002", "pat.patient", "cleo.clinician", "ada.admin")
    shown = []
    for spec in navigation.pages_for("qi"):
        at = app_as("qi", spec.path)
        assert not at.exception
        if spec.path == "app_pages/exports.py":
            for choice in ("dataset", "summary", "fhir"):
                at.radio(key="exports.choice").set_value(choice).run()
                button(at, "Prepare and download the file").click().run()
                assert not at.exception and not at.error
                file = at.session_state["exports.file"][1]
                shown.append("\n".join(file_texts(file.data, file.filename).values()))
                shown += [d.value.to_csv() for d in at.dataframe]
        shown += texts(at) + [d.value.to_csv() for d in at.dataframe]
        shown += [json.dumps(json.loads(c.proto.spec)) for c in at.get("plotly_chart")]
    leaks = [i for i in identifiers if any(i in s for s in shown)]
    assert leaks == []


# A tampered session ------------------------------------------------------------------------------------


def _tampered(app_as, clinic_db, page: str, **changes):
    from streamlit.testing.v1 import AppTest

    from tests.conftest import APP

    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["auth.user"] = dataclasses.replace(clinic_db.users["patient"], **changes)
    at.run()
    at.switch_page(page).run()
    return at


STAFF_PAGES = sorted({p.path for p in navigation.PAGES if "patient" not in p.roles})


@pytest.mark.slow
@pytest.mark.parametrize("role", ["clinician", "admin", "qi"])
def test_a_patient_session_edited_to_another_role_is_refused_on_every_page_of_that_role(app_as, clinic_db, role):
    pages = [p.path for p in navigation.pages_for(role) if p.path != navigation.ACCOUNT_PAGE.path]
    for page in pages:
        at = _tampered(app_as, clinic_db, page, role=role)  # the navigation believes the session...
        assert not at.exception, page
        assert at.error and "you are signed in as patient" in at.error[0].value, page  # ...the page does not
        assert not at.dataframe and not at.get("plotly_chart"), page
    with storage.open_db(clinic_db.path) as db:
        denials = storage.load_audit_log(db, action="access_denied", actor="pat.patient")
    assert len(denials) >= len(pages)
    assert all(json.loads(d)["reason"] == "role patient" for d in denials["details"])


@pytest.mark.slow
@pytest.mark.parametrize("page", ["app_pages/progress.py", "app_pages/checkin.py"])
def test_a_patient_session_edited_to_another_patient_still_sees_only_its_own_record(app_as, clinic_db, page):
    at = _tampered(app_as, clinic_db, page, patient_id="P002")
    assert not at.exception and not at.error
    with storage.open_db(clinic_db.path) as db:
        log = storage.load_audit_log(db, actor="pat.patient")
        p2 = storage.load_assessments(db, patient_id="P002")
    assert "P002" not in set(log["patient_id"].dropna())  # every read was of P001
    assert not any("P002" in t for t in texts(at))
    if page == "app_pages/progress.py":
        assert set(log.loc[log["action"] == "view_record", "patient_id"]) == {"P001"}
    else:  # what this session sends is stored as P001's, never P002's
        at.session_state["checkin.answers"] = {f.key: {i.item_id: 2 for i in f.items}
                                               for f in clinic.checkin_forms(SETTINGS)}
        at.session_state["checkin.step"] = 2
        at.run()
        button(at, "Send my answers").click().run()
        assert not at.exception and not at.error
        with storage.open_db(clinic_db.path) as db:
            assert storage.load_assessments(db, patient_id="P002").equals(p2)
            assert (storage.load_assessments(db, patient_id="P001")["assessed_on"] == str(date.today())).sum() == 3


@pytest.mark.slow
def test_a_session_edited_to_another_users_id_is_refused(app_as, clinic_db):
    at = _tampered(app_as, clinic_db, "app_pages/checkin.py", id=clinic_db.users["admin"].id)
    assert not at.exception
    assert at.error and "no longer active" in at.error[0].value
    assert not at.radio  # no questionnaire of anybody


@pytest.mark.slow
@pytest.mark.parametrize("demo_setting", ["false", "true"])
def test_switching_a_signed_in_session_to_the_demo_database_in_the_url_gives_no_access(
        app_as, clinic_db, tmp_path, monkeypatch, demo_setting):
    from outcomes import synthetic

    monkeypatch.setenv("OUTCOMES_DEMO", demo_setting)
    with storage.connect(tmp_path / "demo.db") as demo:  # OUTCOMES_DEMO_DB_PATH of the clinic_db fixture
        synthetic.prepare_demo(demo, end=date.today(), now=datetime.now(UTC), n_patients=20)
    at = app_as("clinician")
    at.query_params["demo"] = "1"
    at.run()
    assert not at.exception
    if demo_setting == "false":  # the clinic has accounts, so there is no demo: the parameter is dropped
        assert "demo" not in at.query_params and at.title[0].value == "Roster"
        assert not any("Demo with synthetic data." in w.value for w in at.warning)
        assert "P001" in at.dataframe[0].value.to_csv()  # the clinic's own roster
    else:
        assert at.error and "no longer active" in at.error[0].value  # the clinic's user is not the demo's user
        assert not at.dataframe


# The command line --------------------------------------------------------------------------------------


def test_the_command_line_has_no_sign_in_and_audits_every_identified_read(clinic_db, tmp_path, monkeypatch):
    """Whoever can open the database file can read all of it (docs/privacy.md): the CLI offers no login to
    widen, and each command that writes identified data to a file is written to the audit log."""
    monkeypatch.setenv("USER", "operator")
    from outcomes.cli import build_parser

    options = {o for a in build_parser()._subparsers._group_actions for p in a.choices.values()
               for act in p._actions for o in act.option_strings}
    assert not options & {"--user", "--username", "--password", "--role", "--patient"}
    db = str(clinic_db.path)
    out, err = io.StringIO(), io.StringIO()
    for argv in (["export", "identified", "--db", db, "--out", str(tmp_path / "i.zip"), "--reason", "audit"],
                 ["backup", "--db", db, "--out", str(tmp_path / "b.db")]):
        assert main(argv, out, err) == 0, err.getvalue()
    with storage.open_db(clinic_db.path) as d:
        log = storage.load_audit_log(d, actor="cli:operator")
    assert sorted(log["action"]) == ["backup", "export"]
    report = io.StringIO()
    assert main(["report", "responders", "--db", db, "--as-of", f"{date.today()}"], report, err) == 0
    assert "P001" not in report.getvalue() and "P002" not in report.getvalue()  # aggregate only
