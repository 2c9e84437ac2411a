"""One-tap links (outcomes/link_access.py, auth.LinkUser): exchange, single use, expiry, revocation, forged and
malformed tokens, the wrong purpose, throttling, what a link session may do, the stop link, and the audit log."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import pytest

from outcomes import auth, clinic, link_access, links, storage
from outcomes.errors import PermissionDenied
from outcomes.link_access import LINK_INVALID, LinkRefused
from outcomes.settings import load_settings

SETTINGS = load_settings({})


def now() -> datetime:
    # The link session is checked against the server's clock (auth._require_link), so tests use it too.
    return datetime.now(UTC)


def make_link(db, patient_id: str = "P001", purpose: str = "checkin", *, expires_in=timedelta(hours=6),
              created: datetime | None = None) -> tuple[str, int]:
    token = links.new_token()
    link_id = storage.add_link(db, token_hash=links.token_hash(token), purpose=purpose, patient_id=patient_id,
                               expires_at=(created or now()) + expires_in, by="reminders", now=created or now())
    return token, link_id


def refused(db, token, purpose: str = "checkin", address: str | None = "203.0.113.7", **kw) -> str:
    opener = link_access.open_checkin_link if purpose == "checkin" else link_access.open_stop_link
    with pytest.raises(LinkRefused) as exc:
        opener(db, token, now=kw.pop("at", None) or now(), settings=SETTINGS, address=address, **kw)
    return str(exc.value)


def audit(db, action: str | None = None) -> list[dict]:
    rows = db.conn.execute("SELECT a.actor, a.action, p.patient_id, a.details FROM audit_log a "
                           "LEFT JOIN patients p ON p.id = a.patient_ref ORDER BY a.id").fetchall()
    out = [{"actor": r[0], "action": r[1], "patient_id": r[2], "details": json.loads(r[3] or "{}")} for r in rows]
    return [r for r in out if action is None or r["action"] == action]


@pytest.fixture
def cdb(clinic_db):
    db = clinic_db.open()
    yield db
    db.close()


def test_a_check_in_link_is_exchanged_once_for_a_session_of_its_patient(cdb):
    token, link_id = make_link(cdb)
    user = link_access.open_checkin_link(cdb, token, now=now(), settings=SETTINGS, address="203.0.113.7")
    assert isinstance(user, auth.LinkUser)
    assert (user.role, user.patient_id, user.link_id, user.username, user.id) == (
        "patient", "P001", link_id, f"link:{link_id}", -link_id)
    assert storage.get_user(cdb, user_id=user.id) is None              # no account behind it
    used = audit(cdb, "link_used")
    assert [(u["actor"], u["patient_id"], u["details"]["purpose"], u["details"]["link_id"]) for u in used] == [
        (f"link:{link_id}", "P001", "checkin", link_id)]
    assert used[0]["details"]["client"].startswith("client-")           # a digest, not the address
    assert "203.0.113.7" not in json.dumps(audit(cdb))
    # Used once: the same link again gets the friendly answer.
    assert refused(cdb, token) == LINK_INVALID
    assert storage.load_links(cdb, "P001").loc[lambda t: t.link_id == link_id, "used_at"].notna().all()


@pytest.mark.parametrize("how", ["used", "expired", "revoked", "forged", "malformed", "wrong purpose"])
def test_every_unusable_link_gets_the_same_answer_and_an_audit_entry_without_a_patient(cdb, how):
    token, link_id = make_link(cdb, purpose="stop" if how == "wrong purpose" else "checkin")
    if how == "used":
        link_access.open_checkin_link(cdb, token, now=now())
    elif how == "expired":
        token, _ = make_link(cdb, created=now() - timedelta(days=2), expires_in=timedelta(days=1))
    elif how == "revoked":
        assert storage.revoke_links(cdb, "P001", by="cleo.clinician", now=now()) == 1
    elif how == "forged":
        token = links.new_token()
    elif how == "malformed":
        token = token[:-1] + "%"
    assert refused(cdb, token) == LINK_INVALID == "This link can't be used any more. Ask your clinic for a new link."
    entry = audit(cdb, "link_refused")[-1]
    assert entry["patient_id"] is None and "patient_id" not in entry["details"]
    assert entry["details"]["reason"] == ("malformed" if how == "malformed" else "unknown, used, expired or revoked")


@pytest.mark.parametrize("token", [None, "", "x" * 43 + "y", "é" * 43, "../" * 15, 12345, ["a"]])
def test_anything_that_is_not_a_token_is_refused_unread(cdb, token):
    assert refused(cdb, token) == LINK_INVALID


def test_a_stop_link_is_no_check_in_link_and_the_other_way_round(cdb):
    stop, _ = make_link(cdb, purpose="stop")
    checkin, _ = make_link(cdb)
    assert refused(cdb, stop, "checkin") == LINK_INVALID
    assert refused(cdb, checkin, "stop") == LINK_INVALID
    # Neither was used up by the wrong door.
    assert link_access.open_checkin_link(cdb, checkin, now=now()).patient_id == "P001"
    assert link_access.open_stop_link(cdb, stop, now=now()).patient_id == "P001"


def test_guessing_from_one_address_is_slowed_then_refused_while_other_clients_still_get_in(cdb):
    allowance = auth.ADDRESS_ALLOWANCE * SETTINGS.lockout_attempts
    for _ in range(allowance):
        assert refused(cdb, links.new_token(), address="198.51.100.9") == LINK_INVALID
    good, link_id = make_link(cdb)
    # The guesser's address now waits, even with a good link (which is not used up by the refusal)...
    message = refused(cdb, good, address="198.51.100.9")
    assert message.startswith("Too many links that cannot be used were opened from here. Try again in 1 minute")
    assert storage.load_links(cdb, "P001").loc[lambda t: t.link_id == link_id, "used_at"].isna().all()
    for _ in range(20):
        assert refused(cdb, links.new_token(), address="198.51.100.9").startswith("Too many")
    # The audit log got each failure within the allowance, then the first refusal; not one entry per guess.
    refusals = audit(cdb, "link_refused")
    assert len(refusals) == allowance + 1
    assert refusals[-1]["details"]["reason"] == "throttled"
    # ... and a minute later one more guess gets through the leak, not a burst.
    later = now() + timedelta(minutes=1, seconds=1)
    assert refused(cdb, links.new_token(), address="198.51.100.9", at=later) == LINK_INVALID
    assert refused(cdb, links.new_token(), address="198.51.100.9", at=later).startswith("Too many")
    # Another client opens the good link.
    user = link_access.open_checkin_link(cdb, good, now=now(), settings=SETTINGS, address="192.0.2.1")
    assert user.link_id == link_id


def test_a_good_link_gives_its_count_back(cdb):
    allowance = auth.ADDRESS_ALLOWANCE * SETTINGS.lockout_attempts
    for _ in range(allowance + 3):  # a household opening its own good links never waits
        token, _ = make_link(cdb)
        link_access.open_checkin_link(cdb, token, now=now(), settings=SETTINGS, address="198.51.100.10")


def test_the_token_is_never_in_the_audit_log_or_the_log(cdb, caplog):
    caplog.set_level(logging.DEBUG)
    good, _ = make_link(cdb)
    stop, _ = make_link(cdb, purpose="stop")
    forged = links.new_token()
    link_access.open_checkin_link(cdb, good, now=now(), settings=SETTINGS, address="203.0.113.7")
    refused(cdb, good)
    refused(cdb, forged)
    link_access.stop_messages(cdb, link_access.open_stop_link(cdb, stop, now=now()), now=now())
    everything = json.dumps(audit(cdb)) + caplog.text
    for token in (good, stop, forged):
        assert token not in everything and links.token_hash(token) not in everything
    assert "203.0.113.7" not in everything


# What a link session may do --------------------------------------------------------------------------------


def answers(value: int = 2) -> dict:
    return {f.key: {i.item_id: value for i in f.items} for f in clinic.checkin_forms(SETTINGS)}


PI = clinic.checkin_forms(SETTINGS)[0].key
PI_ITEM = clinic.checkin_forms(SETTINGS)[0].items[0].item_id


def test_a_link_session_sends_its_patients_check_in_and_nothing_else(cdb, clinic_db):
    token, link_id = make_link(cdb)
    user = link_access.open_checkin_link(cdb, token, now=now())
    today = clinic_db.today
    assert auth.require_role(cdb, user, "patient", action="open_page") is user
    clinic.checkin_due(cdb, user, "P001", today=today, settings=SETTINGS)
    assert clinic.load_draft(cdb, user, "P001") is None
    result = clinic.submit_checkin(cdb, user, patient_id="P001", answers=answers(), assessed_on=today, today=today,
                                   now=now(), settings=SETTINGS)
    assert result.source == "patient" and result.patient_id == "P001"
    sent = audit(cdb, "submit_checkin")[-1]
    assert (sent["actor"], sent["patient_id"], sent["details"]["source"]) == (f"link:{link_id}", "P001", "patient")

    denied_before = len(audit(cdb, "access_denied"))
    for attempt in (lambda: clinic.patient_record(cdb, user, "P001", settings=SETTINGS),   # "My progress"
                    lambda: clinic.checkin_due(cdb, user, "P002", today=today, settings=SETTINGS),
                    lambda: clinic.submit_checkin(cdb, user, patient_id="P002", answers=answers(),
                                                  assessed_on=today, today=today, now=now(), settings=SETTINGS),
                    lambda: clinic.save_draft(cdb, user, "P002", answers(), now=now()),
                    lambda: auth.require_role(cdb, user, "clinician", action="open_page"),
                    lambda: auth.require_role(cdb, user, "patient", action="export"),
                    lambda: clinic.roster(cdb, user, today=today, settings=SETTINGS)):
        with pytest.raises(PermissionDenied):
            attempt()
    denials = audit(cdb, "access_denied")[denied_before:]
    assert len(denials) == 7 and {d["actor"] for d in denials} == {f"link:{link_id}"}
    with pytest.raises(PermissionDenied):  # no account to change a password of
        auth.change_password(cdb, user, "x", "a new long password", now=now(), settings=SETTINGS)


def test_a_link_session_is_checked_against_its_link_not_the_object_it_holds(cdb):
    token, link_id = make_link(cdb)
    user = link_access.open_checkin_link(cdb, token, now=now())
    assert auth.require_role(cdb, user, "patient", action="open_page") is user
    # An expired link's session is refused, whatever expiry the session object carries.
    _, old_id = make_link(cdb, created=now() - timedelta(days=2), expires_in=timedelta(days=1))
    stale = link_access.link_user({"link_id": old_id, "patient_id": "P001", "expires_at": now() + timedelta(days=1)})
    # So is a session user naming a stop link, or a link of another patient.
    _, stop_id = make_link(cdb, purpose="stop")
    for fake in (stale, link_access.link_user({"link_id": stop_id, "patient_id": "P001", "expires_at": now()}),
                 link_access.link_user({"link_id": link_id, "patient_id": "P002", "expires_at": now()})):
        with pytest.raises(PermissionDenied, match="can't be used any more"):
            auth.require_role(cdb, fake, "patient", action="open_page")


def test_a_revoked_open_link_is_refused_and_its_session_ends(cdb):
    token, link_id = make_link(cdb)
    user = link_access.link_user({"link_id": link_id, "patient_id": "P001", "expires_at": now()})
    assert auth.require_role(cdb, user, "patient", action="open_page") is user
    storage.revoke_links(cdb, "P001", by="cleo.clinician", now=now(), link_id=link_id)
    with pytest.raises(PermissionDenied, match="can't be used any more"):
        auth.require_role(cdb, user, "patient", action="open_page")
    assert refused(cdb, token) == LINK_INVALID


def test_the_first_browser_may_reopen_its_link_and_finds_its_answers_until_the_check_in_is_sent(cdb, clinic_db):
    token, link_id = make_link(cdb)
    today = clinic_db.today
    first = link_access.open_checkin_link(cdb, token, now=now(), browser="b" * 40)
    clinic.save_draft(cdb, first, "P001", {PI: {PI_ITEM: 3}}, now=now())
    assert storage.load_draft(cdb, patient_id="P001", user_id=first.id) is None  # kept with the link, not a user
    # The phone discarded the tab: the same browser opens the link again and finds its answers.
    again = link_access.open_checkin_link(cdb, token, now=now(), browser="b" * 40)
    assert again.link_id == link_id and clinic.load_draft(cdb, again, "P001").answers == {PI: {PI_ITEM: 3}}
    assert [e["details"]["reopened"] for e in audit(cdb, "link_used")] == [False, True]
    # Another browser (someone who saw the link) cannot, nor a request without a browser.
    assert refused(cdb, token, browser="c" * 40) == LINK_INVALID
    assert refused(cdb, token) == LINK_INVALID
    clinic.submit_checkin(cdb, again, patient_id="P001", answers=answers(), assessed_on=today, today=today,
                          now=now(), settings=SETTINGS)
    # Sent: the link is spent, for the first browser too, and its draft is gone.
    assert refused(cdb, token, browser="b" * 40) == LINK_INVALID
    assert storage.load_link_draft(cdb, link_id) is None
    assert storage.load_links(cdb, "P001").set_index("link_id")["spent_at"].notna().loc[link_id]
    # The session that sent it may still show its result (and send again today, as a signed-in patient may).
    assert auth.require_role(cdb, again, "patient", action="open_page") is again


def test_staff_revoking_a_patients_links_ends_a_check_in_session_already_open(cdb):
    token, link_id = make_link(cdb)
    user = link_access.open_checkin_link(cdb, token, now=now(), settings=SETTINGS)  # used: a session is open
    assert auth.require_role(cdb, user, "patient", action="open_page") is user
    assert storage.revoke_links(cdb, "P001", by="cleo.clinician", now=now()) == 1
    assert not auth.link_session_open(cdb, user)
    with pytest.raises(PermissionDenied, match="can't be used any more"):
        auth.require_role(cdb, user, "patient", action="open_page")


# The stop link --------------------------------------------------------------------------------------------


def test_a_stop_link_stops_the_messages_and_may_be_used_again(cdb):
    storage.set_contact(cdb, "P001", email="pat@example.org", channel="email", consent_on=now().date(), by="cleo.clinician",
                        now=now())
    token, link_id = make_link(cdb, purpose="stop")
    stop = link_access.open_stop_link(cdb, token, now=now(), settings=SETTINGS, address="203.0.113.7")
    assert (stop.patient_id, stop.link_id) == ("P001", link_id)
    assert storage.load_contacts(cdb, "P001")["channel"].tolist() == ["email"]   # opening stops nothing yet
    assert link_access.stop_messages(cdb, stop, now=now()) is True
    contact = storage.load_contacts(cdb, "P001").iloc[0]
    assert (contact["channel"], contact["opted_out_by"]) == ("none", link_access.STOP_BY)
    stopped = audit(cdb, "opt_out")
    assert [(s["actor"], s["patient_id"]) for s in stopped] == [(link_access.STOP_BY, "P001")]
    # Again, harmlessly.
    again = link_access.open_stop_link(cdb, token, now=now())
    assert link_access.stop_messages(cdb, again, now=now()) is False
    assert storage.load_contacts(cdb, "P001")["channel"].tolist() == ["none"]
    assert link_access.stopped_message(SETTINGS) == "You will get no more messages from Your clinic."


def test_a_stop_link_revoked_before_confirming_stops_nothing(cdb):
    storage.set_contact(cdb, "P001", email="pat@example.org", channel="email", consent_on=now().date(),
                        by="cleo.clinician", now=now())
    token, link_id = make_link(cdb, purpose="stop")
    stop = link_access.open_stop_link(cdb, token, now=now())
    cdb.conn.execute("UPDATE checkin_links SET revoked_at = ?, revoked_by = 'x' WHERE id = ?",
                     [now().isoformat(), link_id])
    cdb.conn.commit()
    with pytest.raises(LinkRefused, match="can't be used any more"):
        link_access.stop_messages(cdb, stop, now=now())
    assert storage.load_contacts(cdb, "P001")["channel"].tolist() == ["email"]
    forged = link_access.StopLink(link_id=link_id, patient_id="P002", token_hash=links.token_hash(links.new_token()))
    with pytest.raises(LinkRefused):
        link_access.stop_messages(cdb, forged, now=now())
