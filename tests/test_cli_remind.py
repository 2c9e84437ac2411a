"""``python -m outcomes remind``: summary, JSON dry run, exit status, re-runs and two processes at once, against
a real SMTP server on loopback."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from outcomes import cli, storage
from tests.messaging_servers import closed_port, smtp_server
from tests.messaging_servers import smtp  # noqa: F401  (fixture)
from tests.test_messaging import DUE, EMAIL, PEOPLE, build

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def clinic_file(tmp_path):
    path = tmp_path / "clinic.db"
    db = storage.connect(path)
    build(db, PEOPLE)
    db.close()
    return path


def environment(server=None, **extra) -> dict[str, str]:
    """The settings of a run, as the environment of the command (no SMS: those messages fail, named)."""
    env = {"OUTCOMES_PUBLIC_URL": "https://outcomes.lakeside.example", "OUTCOMES_CLINIC_NAME": "Lakeside Pain Clinic",
           "OUTCOMES_MAIL_FROM": "reminders@lakeside.example", "OUTCOMES_SMTP_SECURITY": "none",
           "OUTCOMES_QUIET_HOURS": "", "OUTCOMES_TIMEZONE": "America/Chicago",
           "OUTCOMES_SECRETS_FILE": "/nonexistent/secrets.toml"}
    if server is not None:
        env |= {"OUTCOMES_SMTP_HOST": server.host, "OUTCOMES_SMTP_PORT": str(server.port)}
    return env | extra


def remind(monkeypatch, *args: str, env: dict[str, str]) -> tuple[int, str, str]:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["remind", *args], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_remind_sends_and_summarises(monkeypatch, clinic_file, smtp):
    code, out, err = remind(monkeypatch, "--db", str(clinic_file), "--as-of", DUE.isoformat(), env=environment(smtp))
    assert code == 0 and err == ""
    first = out.splitlines()[0]
    assert first.startswith("Reminders for 2025-03-14: 2 planned, 1 sent, 1 failed (tried again by the next run), "
                            "0 given up"), out
    assert "SMS is not configured: set OUTCOMES_SMS_ACCOUNT_SID" in out  # the reason, not an address
    assert "@" not in out and "+1201" not in out
    assert [m.rcpt_tos for m in smtp.wait_for(1)] == [[EMAIL["MRN-40001"]]]


def test_a_second_remind_sends_nothing(monkeypatch, clinic_file, smtp):
    args = ("--db", str(clinic_file), "--as-of", DUE.isoformat(), "--format", "json")
    env = environment(smtp, OUTCOMES_SMS_ACCOUNT_SID="")
    code, out, _ = remind(monkeypatch, *args, env=env)
    first = json.loads(out)
    assert code == 0 and (first["planned"], first["sent"], first["outcome"]) == (2, 1, "failures")
    assert {m["patient_id"]: m["status"] for m in first["messages"]} == {"MRN-40001": "sent", "MRN-40002": "failed"}
    code, out, _ = remind(monkeypatch, *args, env=env)
    second = json.loads(out)
    assert code == 0 and (second["planned"], second["sent"]) == (0, 0)
    assert [m["status"] for m in second["messages"]] == ["failed"]  # only the SMS, tried again
    assert len(smtp.wait_for(1)) == 1


def test_dry_run_json_lists_the_messages_and_changes_nothing(monkeypatch, clinic_file, smtp):
    before = clinic_file.read_bytes()
    code, out, _ = remind(monkeypatch, "--db", str(clinic_file), "--as-of", DUE.isoformat(), "--dry-run",
                          "--format", "json", env=environment(smtp))
    assert code == 0
    listed = json.loads(out)
    assert isinstance(listed, list)
    assert [{k: m[k] for k in ("patient_id", "channel", "step", "due_on")} for m in listed] == [
        {"patient_id": "MRN-40001", "channel": "email", "step": "invitation", "due_on": "2025-03-14"},
        {"patient_id": "MRN-40002", "channel": "sms", "step": "invitation", "due_on": "2025-03-14"}]
    assert clinic_file.read_bytes() == before and smtp.messages == []
    db = storage.connect(clinic_file)
    assert storage.load_outbox(db).empty and storage.load_runs(db).empty
    db.close()
    code, out, _ = remind(monkeypatch, "--db", str(clinic_file), "--as-of", DUE.isoformat(), "--dry-run",
                          env=environment(smtp))
    assert out.strip() == "Reminders for 2025-03-14 (dry run, nothing written): would send 2 invitations."


def test_a_server_that_is_down_is_reported_not_an_error(monkeypatch, clinic_file):
    env = environment(OUTCOMES_SMTP_HOST="127.0.0.1", OUTCOMES_SMTP_PORT=str(closed_port()))
    code, out, err = remind(monkeypatch, "--db", str(clinic_file), "--as-of", DUE.isoformat(), env=env)
    assert code == 0 and err == ""
    assert "0 sent, 2 failed" in out and "SMTP server 127.0.0.1" in out and "cannot be reached" in out


def test_quiet_hours_send_nothing_and_exit_zero(monkeypatch, clinic_file, smtp):
    hour = datetime.now(UTC).hour
    env = environment(smtp, OUTCOMES_TIMEZONE="UTC", OUTCOMES_QUIET_HOURS=f"{hour}-{(hour + 2) % 24}")
    code, out, _ = remind(monkeypatch, "--db", str(clinic_file), "--as-of", DUE.isoformat(), env=env)
    assert code == 0 and "quiet hours" in out and smtp.messages == []
    db = storage.connect(clinic_file)
    assert storage.load_outbox(db).empty and storage.load_runs(db)["outcome"].tolist() == ["quiet_hours"]
    db.close()


def test_it_exits_non_zero_only_when_it_cannot_run(monkeypatch, tmp_path, clinic_file):
    code, _, err = remind(monkeypatch, "--db", str(tmp_path / "missing.db"), env=environment())
    assert code == 1 and "There is no database at" in err and not (tmp_path / "missing.db").exists()
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"not a database at all" * 100)
    code, _, err = remind(monkeypatch, "--db", str(bad), env=environment())
    assert code == 1 and "not an SQLite database" in err
    code, _, err = remind(monkeypatch, "--db", str(clinic_file), env=environment(OUTCOMES_SMTP_SECURITY="tls"))
    assert code == 1 and "OUTCOMES_SMTP_SECURITY" in err
    with pytest.raises(SystemExit) as usage:
        remind(monkeypatch, "--db", str(clinic_file), "--as-of", "14/03/2025", env=environment())
    assert usage.value.code == 2


@pytest.mark.slow
def test_two_remind_processes_at_once_send_each_step_once(tmp_path):
    path = tmp_path / "clinic.db"
    db = storage.connect(path)
    patients = {f"MRN-6{i:04d}": "email" for i in range(60)}
    build(db, patients)
    db.close()
    with smtp_server() as server:
        env = {**os.environ, **environment(server), "PYTHONPATH": str(ROOT)}
        command = [sys.executable, "-m", "outcomes", "remind", "--db", str(path), "--as-of", DUE.isoformat(),
                   "--format", "json"]
        runs = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(3)]
        results = [r.communicate(timeout=120) for r in runs]
        assert [r.returncode for r in runs] == [0, 0, 0], [e for _, e in results]
        mails = server.wait_for(60)
        assert sorted(m.rcpt_tos[0] for m in mails) == sorted(EMAIL[pid] for pid in patients)
    reports = [json.loads(out) for out, _ in results]
    assert sum(r["sent"] for r in reports) == 60 and sum(r["planned"] for r in reports) == 60
    db = storage.connect(path)
    assert storage.load_outbox(db)["status"].eq("sent").sum() == 60
    db.close()
