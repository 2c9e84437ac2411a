"""Reusable inputs that return plain values (no storage, no scoring)."""

from __future__ import annotations

import re
import string
from collections.abc import Callable

import streamlit as st

from outcomes.instruments import Form, Item


def item_text(item: Item) -> str:
    if item.description_is_paraphrase:
        # Licensed PROMIS wording is not shipped; say plainly that this is our paraphrase. Plain text, no
        # Markdown: the label is also the radio group's accessible name, read out by screen readers.
        return f"{item.description} \u2014 (paraphrase)"
    return item.description


def questionnaire(form: Form, answers: dict[str, int | None], *, key: str,
                  on_change: Callable[[], None] | None = None) -> None:
    """One radio group per item, pre-set from ``answers``; every choice is written back into ``answers``.

    The answers live in a plain dict outside the widgets, so they survive reruns and moving between
    questionnaires (Streamlit drops the state of widgets that are not drawn in a run).
    """
    for number, item in enumerate(form.items, start=1):
        values = [value for value, _ in item.options]
        labels = dict(item.options)
        widget_key = f"{key}.{form.key}.{item.item_id}"
        current = answers.get(item.item_id)

        def store(item_id: str = item.item_id, widget_key: str = widget_key) -> None:
            answers[item_id] = st.session_state[widget_key]
            if on_change is not None:
                on_change()

        chosen = st.radio(f"{number}. {item_text(item)}", values, format_func=labels.get,
                          index=values.index(current) if current in values else None,
                          key=widget_key, on_change=store)
        if chosen is not None:
            # What the radio shows is the answer, even when its on_change was lost: a run stopped for the
            # next tap can take the new value into session state and stop before the callback runs, and
            # the next run sees no change (5 of 12 patients checking in at once lost a tapped answer without
            # this; docs/reliability.md bug 1).
            answers[item.item_id] = chosen


def sync_answers(forms, answers: dict[str, dict[str, int | None]], *, key: str) -> None:
    """Copy the radios' current values into ``answers`` (call first in a callback that uses them)."""
    for form in forms:
        for item in form.items:
            value = st.session_state.get(f"{key}.{form.key}.{item.item_id}")
            if value is not None:
                answers.setdefault(form.key, {})[item.item_id] = value


def answered(form: Form, answers: dict[str, int | None]) -> int:
    return sum(answers.get(item.item_id) is not None for item in form.items)


# CommonMark lets any ASCII punctuation be escaped; escaping all of it also covers entities (&lt;), setext
# headings (===), Streamlit's :material/...: icons, :red[...] colours and $ LaTeX, and GFM autolinks.
_MARKDOWN_SPECIALS = str.maketrans({c: "\\" + c for c in string.punctuation})


def md(text: object) -> str:
    """Stored text made safe to place inside Markdown: shown literally, never as formatting or HTML."""
    return _unlink(str(text)).translate(_MARKDOWN_SPECIALS)


_WWW = re.compile(r"(?i)\b(www)\.")


def _unlink(text: str) -> str:
    """Keep bare URLs from becoming links: Streamlit autolinks ``https://…`` and ``www.…`` even when every
    character is escaped, so an invisible word joiner (U+2060) goes after ``:`` and before ``.``."""
    return _WWW.sub("\\1\u2060.", text.replace("://", ":\u2060//"))


_ALWAYS = frozenset("\\`*[]<>|~$&")
_BLOCK_START = re.compile(r"^(\s*)([#+=-]|\d+[.)])")


def literal(text: object) -> str:
    """Prose made safe for Markdown with as few escapes as possible, so it reads as typed in the source too.

    Escapes what can start formatting: ``\\ ` * [ ] < > | ~ $ &`` everywhere, ``_`` unless inside a word
    (``patient_id`` stays), ``:`` before a letter, ``/`` or the end (Streamlit's ``:red[...]``,
    ``:material/...:``, emoji), heading, list and rule markers at a line start, and bare ``https://`` and
    ``www.`` links (an invisible word joiner, see ``_unlink``). Safe inside other Markdown too
    (``**{literal(name)}**``). tests/browser/test_concurrent_sessions.py checks the result in Chromium.
    """
    out = []
    for line in _unlink(str(text)).split("\n"):
        chars = []
        for i, ch in enumerate(line):
            after = line[i + 1] if i + 1 < len(line) else ""
            if (ch in _ALWAYS
                    or ch == "_" and not (i and line[i - 1].isalnum() and after.isalnum())
                    or ch == ":" and (after.isalpha() or after in "/")  # "" too: text may go on after it
                    or ch == "." and line[max(0, i - 3):i].lower() == "www"):
                chars.append("\\")
            chars.append(ch)
        out.append(_BLOCK_START.sub(_escape_block_marker, "".join(chars)))
    return "\n".join(out)


def _escape_block_marker(match: re.Match[str]) -> str:
    indent, marker = match.groups()
    return indent + marker[:-1] + "\\" + marker[-1]  # "\#", "\-", "12\."


def message(error: object) -> str:
    """An error's text for ``st.error``/``st.warning``: shown literally (it may quote what was typed or a
    file's cells), with the ``- problem`` lines of a ValidationError kept as a list."""
    return "\n".join("- " + literal(line[2:]) if line.startswith("- ") else literal(line)
                     for line in str(error).split("\n"))


def trajectory_charts(record, settings, registry, *, key: str) -> None:
    """One chart per domain the patient is asked or has scores in: T-scores with each series' baseline and meaningful-change band, severity
    bands, and a marker per infusion."""
    from outcomes import figures

    assessments = record.assessments
    shown = settings.reported_domains(assessments["domain"].unique())  # asked at the check-in, or scored
    tabs = st.tabs([registry.domain(d).label for d in shown])
    for tab, domain in zip(tabs, shown):
        rows = assessments[assessments["domain"] == domain]
        bands = registry.domain(domain).bands
        with tab:
            if rows.empty:
                st.info("No scores for this questionnaire yet.")
                continue
            st.plotly_chart(figures.patient_trajectory_figure(
                rows, domain, mcid=settings.mcid[domain], higher_is_worse=bands.higher_is_worse,
                cut_points=bands.cut_points, band_labels=bands.labels, infusions=record.infusions,
                series=record.series), key=f"{key}.{domain}")


def item_answers(record, registry) -> None:
    """Item-level answers, one table per questionnaire: a row per day, a column per item."""
    answers = record.item_responses
    if answers.empty:
        st.caption("No item-level answers (scores imported as T-scores only).")
        return
    order = {domain: i for i, domain in enumerate(registry.domains)}  # the check-in's order, as on the charts
    groups = sorted(answers.groupby("form", sort=False),
                    key=lambda group: order.get(registry.form(group[0]).domain, len(order)))
    for form_key, rows in groups:
        form = registry.form(form_key)
        names = {item.item_id: f"{item.position}. {item.description}" for item in form.items}
        labels = {item.item_id: dict(item.options) for item in form.items}
        shown = rows.assign(answer=[labels[i].get(v, v) if v is not None else "—"
                                    for i, v in zip(rows["item_id"], rows["value"])])
        table = shown.pivot_table(index="assessed_on", columns="item_id", values="answer", aggfunc="first")
        table = table.reindex(columns=[i for i in form.item_ids if i in table.columns]).rename(columns=names)
        table.index = table.index.strftime("%Y-%m-%d")
        with st.expander(f"{form.title}: {len(table)} check-ins"):
            st.dataframe(table.sort_index(ascending=False), column_config={"assessed_on": "Date"})
            if any(item.description_is_paraphrase for item in form.items):
                st.caption("Item names are our paraphrases; the clinic can load its licensed PROMIS wording.")


def long_date(value: object) -> str:
    """A day in words, "3 March 2026" (no leading zero on any platform); "" for a missing day."""
    import pandas as pd

    if value is None or pd.isna(value):
        return ""
    day = pd.Timestamp(value)
    return f"{day.day} {day:%B %Y}"


def clinic_times(stamps, settings):
    """UTC moments (a Series) as the clinic's wall-clock time, without a zone, for a ``DatetimeColumn``.

    The clinic's zone is the ``timezone`` setting, or the server's local zone when it is empty (as
    :func:`ui.session.today`, which dates check-ins).
    """
    import pandas as pd
    from dateutil import tz

    zone = settings.zoneinfo or tz.tzlocal()
    return pd.to_datetime(stamps, utc=True).dt.tz_convert(zone).dt.tz_localize(None)


def on_screen(frame):
    """``frame`` for ``st.dataframe``: every text cell a spreadsheet could run as a formula (starting with
    ``=``, ``+``, ``-``, ``@``, a tab or a carriage return) prefixed with ``'``, by the exports' own rule
    (``outcomes.exports.neutralise``), so a cell copied out of the table is inert too. Column names, numbers,
    dates and missing values are left as they are; the frame passed in is not changed.
    """
    import pandas as pd

    from outcomes.exports import neutralise

    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object or pd.api.types.is_string_dtype(out[column]):
            out[column] = out[column].map(lambda v: neutralise(v) if isinstance(v, str) else v)
    return out


def table(frame, **kwargs):
    """``st.dataframe`` of :func:`on_screen` (``frame``): what every page shows a table with."""
    return st.dataframe(on_screen(frame), **kwargs)


#: Audit-log actions in words; an action not listed reads as its name with spaces ("close_series" →
#: "Close series"). The internal name stays in the table, so a filter and the CSV agree.
AUDIT_ACTIONS = {
    "login": "Signed in", "login_failed": "Sign-in failed", "logout": "Signed out",
    "session_timeout": "Signed out after being idle", "access_denied": "Access refused",
    "open_page": "Opened a page", "view_record": "Viewed a patient's record",
    "view_record_history": "Viewed a record's history", "view_roster": "Viewed the roster",
    "view_alerts": "Viewed the alerts", "view_audit_log": "Viewed the audit log",
    "list_users": "Listed the users", "list_patients": "Listed the patients",
    "export": "Exported data", "import": "Imported files (command line)", "import_redcap": "Imported from REDCap",
    "backup": "Made a backup", "restore": "Restored a backup",
    "enrol_patient": "Enrolled a patient", "plan_series": "Planned a series", "log_series": "Logged a series",
    "log_infusion": "Logged an infusion", "cancel_series": "Cancelled a series",
    "correct_record": "Corrected a record", "void_record": "Voided a record",
    "set_disposition": "Set a disposition", "submit_checkin": "Sent a check-in", "save_draft": "Saved a draft",
    "load_draft": "Reopened a draft", "discard_draft": "Discarded a draft",
    "acknowledge_alert": "Acknowledged an alert", "issue_invitation": "Issued an invitation",
    "redeem_invitation": "Redeemed an invitation", "invitation_failed": "Invitation code refused",
    "create_first_admin": "Created the first administrator", "create_user": "Created a user",
    "create_demo_accounts": "Created the demo accounts", "deactivate_user": "Deactivated a user",
    "reactivate_user": "Reactivated a user", "unlock_user": "Unlocked a user",
    "reset_password": "Reset a password", "change_password": "Changed their password",
    "change_password_failed": "Password change refused",
    "add_diagnosis_code": "Added a diagnosis code", "rename_diagnosis_code": "Renamed a diagnosis code",
    "retire_diagnosis_code": "Retired a diagnosis code", "set_diagnosis_code": "Coded a patient's diagnosis",
    "code_patients_by_note": "Coded patients by their diagnosis note", "diagnosis_codes": "Viewed the diagnosis codes",
    "diagnosis_notes": "Viewed the diagnosis notes", "diagnosis_code": "Changed a diagnosis code", "issue_setup_token": "Issued a setup token",
    "setup_failed": "Setup token refused",
    # Follow-up (docs/followup.md)
    "view_followup": "Viewed a patient's follow-up", "view_contact": "Viewed a patient's contacts",
    "set_contact": "Changed a patient's contacts", "stop_messages": "Stopped a patient's messages",
    "opt_out": "Messages stopped", "revoke_links": "Revoked a patient's check-in links",
    "view_call_list": "Viewed the call list", "record_call": "Recorded a follow-up call",
    "view_followup_completion": "Viewed follow-up completion", "view_outbox": "Viewed the outbox",
    "send_test_message": "Sent a test message", "remind_run": "Reminder run",
    "link_used": "Opened a one-tap link", "link_refused": "One-tap link refused",
}


def audit_action(action: object) -> str:
    """An audit-log action in words, followed by its internal name: "Sign-in failed (login_failed)"."""
    name = str(action)
    words = AUDIT_ACTIONS.get(name) or name.replace("_", " ").strip().capitalize()
    return f"{words} ({name})"


def audit_details(details: object) -> str:
    """An audit entry's details (JSON text) as words: "what: audit log; rows: 12; de-identified: no;
    filters: action = login". Not JSON, or not an object: the text as it is; none: "".
    """
    import json

    if details is None or (isinstance(details, float) and details != details):
        return ""
    try:
        value = json.loads(details) if isinstance(details, str) else details
    except ValueError:
        return str(details)
    if not isinstance(value, dict):
        return str(details)

    def words(v: object) -> str:
        if v is None:
            return "none"
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, dict):
            return ", ".join(f"{_audit_key(k)} = {words(x)}" for k, x in v.items()) or "none"
        if isinstance(v, list | tuple):
            return ", ".join(words(x) for x in v) or "none"
        if isinstance(v, int | float):
            return f"{v:,}"
        return str(v)

    return "; ".join(f"{_audit_key(k)}: {words(v)}" for k, v in value.items())


def _audit_key(key: object) -> str:
    text = str(key)
    return {"deidentified": "de-identified", "patient_id": "patient ID", "at": "time"}.get(
        text, text.replace("_", " "))
