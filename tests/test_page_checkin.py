"""The patient's weekly check-in (app_pages/checkin.py): one questionnaire at a time, drafts, scores."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pytest

from outcomes import auth, clinic, storage
from outcomes.settings import load_settings
from tests.conftest import PASSWORD
from tests.page_helpers import button, messages, new_session, seen, sign_in
from tests.page_helpers import fresh_caches  # noqa: F401  (autouse: no cache shared between tests)

PAGE = "app_pages/checkin.py"
FORMS = clinic.checkin_forms(load_settings())
PI, DEP, PF = FORMS


def key(form, item: int) -> str:
    return f"checkin.{form.key}.{form.items[item].item_id}"


def answer(at, form, values: dict[int, int]):
    """Tap answers (item index -> value) one at a time, as a patient does: each tap is a rerun."""
    for item, value in values.items():
        at.radio(key=key(form, item)).set_value(value).run()
    return at


def every(value: int) -> dict[int, int]:
    return dict.fromkeys(range(6), value)


def draft(clinic_db, patient_id: str = "P001") -> dict | None:
    found = storage.load_draft(clinic_db.open(), patient_id=patient_id, user_id=clinic_db.users["patient"].id)
    return None if found is None else found[0]


def todays_scores(clinic_db, patient_id: str = "P001", *, superseded: bool = False) -> pd.DataFrame:
    rows = storage.load_assessments(clinic_db.open(), patient_id=patient_id, include_superseded=superseded)
    return rows[rows["assessed_on"] == pd.Timestamp(date.today())]


def fill_all(at, pi=3, dep=2, pf=4):
    answer(at, PI, every(pi))
    button(at, "Next").click().run()
    answer(at, DEP, every(dep))
    button(at, "Next").click().run()
    answer(at, PF, every(pf))
    return at


def test_the_first_questionnaire_is_shown_with_progress_and_the_crisis_text(app_as):
    at = app_as("patient", PAGE)
    assert not at.exception
    assert at.title[0].value == "Weekly check-in"
    assert at.get("progress")[0].proto.text == "Questionnaire 1 of 3: Pain Interference"
    assert [r.key for r in at.radio] == [key(PI, i) for i in range(6)]
    assert all(r.value is None for r in at.radio)                      # nothing pre-selected
    # Numbered, and marked as our paraphrase in plain text: the label is also what a screen reader reads out.
    assert [r.label for r in at.radio] == [f"{i}. {item.description} \u2014 (paraphrase)"
                                           for i, item in enumerate(PI.items, start=1)]
    assert [b.label for b in at.button if b.label in ("Back", "Next", "Send my answers")] == ["Next"]
    assert seen(at, "call or text 988", "caption")
    assert seen(at, "0 of 6 answered · saved as you go", "caption")


@pytest.mark.slow
def test_each_tap_is_saved_as_a_draft_and_answers_survive_moving_between_steps(app_as, clinic_db):
    at = app_as("patient", PAGE)
    answer(at, PI, {0: 4, 2: 2})
    assert draft(clinic_db)[PI.key] == {PI.items[0].item_id: 4, PI.items[2].item_id: 2}
    assert seen(at, "2 of 6 answered", "caption")
    at.run()                                                           # a rerun keeps the answers
    assert [r.value for r in at.radio][:3] == [4, None, 2]

    button(at, "Next").click().run()
    assert at.get("progress")[0].proto.text == "Questionnaire 2 of 3: Depression"
    answer(at, DEP, {5: 5})
    assert draft(clinic_db)[DEP.key] == {DEP.items[5].item_id: 5}
    assert draft(clinic_db)[PI.key] == {PI.items[0].item_id: 4, PI.items[2].item_id: 2}

    button(at, "Back").click().run()
    assert at.get("progress")[0].proto.text == "Questionnaire 1 of 3: Pain Interference"
    assert [r.value for r in at.radio] == [4, None, 2, None, None, None]


@pytest.mark.slow
def test_answers_and_step_are_kept_when_visiting_another_page(app_as):
    at = app_as("patient", PAGE)
    answer(at, PI, {0: 5})
    button(at, "Next").click().run()
    answer(at, DEP, {1: 2})
    at.switch_page("app_pages/progress.py").run()
    at.switch_page(PAGE).run()
    assert at.get("progress")[0].proto.text == "Questionnaire 2 of 3: Depression"
    assert [r.value for r in at.radio][:2] == [None, 2]
    button(at, "Back").click().run()
    assert at.radio[0].value == 5


@pytest.mark.slow
def test_a_reload_asks_to_sign_in_and_brings_the_answers_back(app_as, clinic_db):
    at = app_as("patient", PAGE)
    answer(at, PI, {0: 4, 1: 2})
    button(at, "Next").click().run()
    answer(at, DEP, {0: 3})

    at = new_session().run()                    # the browser reloads: a new session
    assert at.title[0].value == "Sign in"
    sign_in(at, "pat.patient", PASSWORD)
    assert at.title[0].value == "Weekly check-in"
    assert seen(at, "Welcome back: your unsent answers", "info")
    assert [r.value for r in at.radio] == [4, 2, None, None, None, None]
    button(at, "Next").click().run()
    assert at.radio[0].value == 3
    assert not seen(at, "Welcome back", "info")                       # said once


@pytest.mark.slow
def test_sending_scores_and_stores_the_check_in_and_explains_it_in_plain_words(app_as, clinic_db):
    at = fill_all(app_as("patient", PAGE))
    button(at, "Send my answers").click().run()
    assert not at.exception
    assert messages(at, "success") == ["Thank you. Your answers are saved."]
    results = messages(at, "info")
    assert len(results) == 3
    assert results[0].startswith("Your pain interference score is ")
    assert results[1].startswith("Your depression score is ")
    assert results[2].startswith("Your physical function score is ")
    assert all("than before your infusions" in r for r in results)
    assert seen(at, "call or text 988", "caption")

    stored = todays_scores(clinic_db)
    assert sorted(stored["domain"]) == sorted(f.domain for f in FORMS)
    assert set(stored["source"]) == {"patient"} and set(stored["entered_by"]) == {"pat.patient"}
    assert draft(clinic_db) is None
    for result in results:   # the T-score the patient reads is the stored one
        domain = next(d for d in stored.itertuples() if d.domain.replace("_", " ") in result)
        assert f"score is {domain.t_score:.1f} (" in result


@pytest.mark.slow
def test_a_second_check_in_the_same_day_asks_before_replacing(app_as, clinic_db):
    at = fill_all(app_as("patient", PAGE))
    button(at, "Send my answers").click().run()
    first = todays_scores(clinic_db)
    button(at, "Start another check-in").click().run()
    at = fill_all(at, pi=5, dep=5, pf=1)
    button(at, "Send my answers").click().run()
    assert messages(at, "warning")[-1] == "You already sent a check-in today. Replace it with these answers?"
    assert todays_scores(clinic_db)["assessment_id"].tolist() == first["assessment_id"].tolist()

    button(at, "Keep the earlier one").click().run()                  # changing one's mind changes nothing
    assert "Send my answers" in [b.label for b in at.button]
    assert todays_scores(clinic_db)["assessment_id"].tolist() == first["assessment_id"].tolist()
    assert draft(clinic_db) is not None                               # the new answers are still kept

    button(at, "Send my answers").click().run()
    button(at, "Replace today's check-in").click().run()
    assert not at.exception
    assert messages(at, "success") == ["Thank you. Your answers are saved. They replace today's earlier check-in."]
    replaced = todays_scores(clinic_db)
    assert len(replaced) == 3 and set(replaced["assessment_id"]).isdisjoint(first["assessment_id"])
    assert todays_scores(clinic_db, superseded=True)["superseded_by"].notna().sum() == 3
    assert draft(clinic_db) is None


@pytest.mark.slow
def test_a_questionnaire_with_too_few_answers_is_not_scored_and_the_patient_is_told(app_as, clinic_db):
    at = app_as("patient", PAGE)
    answer(at, PI, {0: 3, 1: 3})                                      # 2 of 6: not enough
    button(at, "Next").click().run()
    answer(at, DEP, every(2))
    button(at, "Next").click().run()
    button(at, "Send my answers").click().run()                       # physical function left empty
    assert messages(at, "success") == ["Thank you. Your answers are saved."]
    assert messages(at, "warning") == [
        "Your pain interference answers were not scored: answer at least 3 of the 6 questions (2 answered). "
        "This part was not saved.",
        "Your physical function answers were not scored: answer at least 3 of the 6 questions (0 answered). "
        "This part was not saved."]
    assert todays_scores(clinic_db)["domain"].tolist() == ["depression"]


@pytest.mark.slow
def test_nothing_scorable_is_refused_and_the_answers_are_kept(app_as, clinic_db, dump):
    at = app_as("patient", PAGE)
    answer(at, PI, {0: 3})
    before = dump(clinic_db.open())
    button(at, "Next").click().run()
    button(at, "Next").click().run()
    button(at, "Send my answers").click().run()
    assert len(at.error) == 1
    assert "None of the questionnaires has enough answers to be scored, so nothing was saved" in at.error[0].value
    assert "answer at least 3 of the 6 questions (1 answered)" in at.error[0].value
    assert dump(clinic_db.open()) == before
    assert "Send my answers" in [b.label for b in at.button]         # still on the last step
    assert draft(clinic_db)[PI.key] == {PI.items[0].item_id: 3}


@pytest.mark.slow
def test_discarding_clears_the_draft_and_the_answers(app_as, clinic_db):
    at = app_as("patient", PAGE)
    answer(at, PI, {0: 4, 1: 4})
    button(at, "Next").click().run()
    button(at, "Discard my unsent answers").click().run()
    assert not at.exception
    assert draft(clinic_db) is None
    assert at.get("progress")[0].proto.text.startswith("Questionnaire 1 of 3")
    assert all(r.value is None for r in at.radio)
    at = sign_in(new_session().run(), "pat.patient", PASSWORD)       # and nothing comes back after a reload
    assert not seen(at, "Welcome back", "info")
    assert all(r.value is None for r in at.radio)


# Due and overdue banners ---------------------------------------------------------------------------


@pytest.fixture
def patient_with_history(clinic_db):
    """A fresh patient P100 with a login; ``checked_in(days_ago)`` gives them a check-in some days ago and
    ``series(last_days_ago)`` a 5-day series that ended some days ago."""
    db, now = clinic_db.open(), datetime.now(UTC)
    clinic.enrol_patient(db, clinic_db.users["clinician"], patient_id="P100", today=now.date(), now=now,
                         settings=load_settings())
    pam = auth.create_user(db, clinic_db.users["admin"], username="pam.patient", role="patient",
                           password=PASSWORD, patient_id="P100", now=now)
    storage.update_user(db, pam.id, must_change_password=False)  # as if redeemed from an invitation

    def checked_in(days_ago: int):
        day = now.date() - timedelta(days=days_ago)
        clinic.submit_checkin(db, clinic_db.users["clinician"], patient_id="P100",
                              answers={DEP.key: {i.item_id: 2 for i in DEP.items}}, assessed_on=day,
                              today=now.date(), now=now, settings=load_settings())

    def series(last_days_ago: int):
        last = now.date() - timedelta(days=last_days_ago)
        clinic.log_series(db, clinic_db.users["clinician"], patient_id="P100", first_infusion=last - timedelta(days=4),
                          last_infusion=last, infusions=5, today=now.date())

    checked_in.series = series
    return checked_in


def checkin_of_pam():
    return sign_in(new_session().run(), "pam.patient", PASSWORD)


@pytest.mark.slow
def test_without_a_series_nothing_is_due_but_a_check_in_is_welcome(patient_with_history):
    at = checkin_of_pam()
    assert messages(at, "success")[0] == "No questionnaire is due. You can still check in whenever you like."
    assert at.get("progress")[0].proto.text.startswith("Questionnaire 1 of 3")


def test_a_weekly_slot_is_due_from_its_day(patient_with_history):
    patient_with_history.series(8)  # week 1 fell due yesterday: day 2 of the slot
    at = checkin_of_pam()
    closes = datetime.now(UTC).date() + timedelta(days=5)
    assert messages(at, "info")[0] == f"Your week 1 questionnaire is due. It is open until {closes:%A %d %B}."
    assert not at.warning


@pytest.mark.slow
def test_a_slot_is_overdue_from_day_three(patient_with_history):
    patient_with_history.series(9)
    at = checkin_of_pam()
    due = datetime.now(UTC).date() - timedelta(days=2)
    assert messages(at, "warning")[0].startswith(f"Your week 1 questionnaire is overdue: it was due on {due:%d %B}")


def test_after_today_s_check_in_the_slot_is_done_and_the_next_one_shown(patient_with_history):
    patient_with_history.series(8)
    patient_with_history(0)
    at = checkin_of_pam()
    next_due = datetime.now(UTC).date() + timedelta(days=6)
    assert messages(at, "success")[0] == (f"Thank you: your week 1 questionnaire is done. The next one (Week 2) is "
                                          f"due on {next_due:%A %d %B %Y}.")


def test_a_formal_time_point_asks_the_timepoint_forms(patient_with_history, monkeypatch):
    monkeypatch.setenv("OUTCOMES_TIMEPOINT_FORMS", DEP.key)
    patient_with_history.series(29)  # the 1-month slot (week 4) fell due yesterday
    at = checkin_of_pam()
    assert messages(at, "info")[0].startswith("Your 1 month questionnaire is due.")
    assert at.get("progress")[0].proto.text.startswith("Questionnaire 1 of 1")


def test_the_fixture_patient_is_overdue(app_as):
    # P001's last check-in was two weeks ago (tests/conftest.py).
    at = app_as("patient", PAGE)
    assert "overdue" in at.warning[0].value


def test_a_patient_deactivated_mid_check_in_gets_a_message_not_a_crash(app_as, clinic_db):
    at = app_as("patient", PAGE)
    answer(at, PI, {0: 4})
    auth.deactivate_user(clinic_db.open(), clinic_db.users["admin"], "pat.patient")
    at.radio(key=key(PI, 1)).set_value(2).run()
    assert not at.exception
    assert messages(at, "error") == ["Your account is no longer active. Sign in again, or ask an administrator."]
    assert draft(clinic_db)[PI.key] == {PI.items[0].item_id: 4}


@pytest.mark.slow
def test_the_patient_sees_while_answering_how_many_answers_a_score_needs(app_as):
    at = app_as("patient", PAGE)
    hint = "This part can only be scored if at least 3 of the 6 questions are answered."
    assert seen(at, hint, "caption")
    answer(at, PI, {0: 2, 1: 2})
    assert seen(at, hint, "caption")
    answer(at, PI, {2: 2})
    assert not seen(at, hint, "caption")
