"""The app's pages as plain data; app.py turns them into ``st.navigation`` and the tests walk the same list.

A session only ever registers the pages its user may open, so a deep link to any other page (on a
freshly started server too) lands on the default page of that session instead: the sign-in page for
an anonymous visitor. Each page also checks the role itself (``ui.session.require_roles``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st
from streamlit.navigation.page import StreamlitPage

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class PageSpec:
    path: str
    title: str
    icon: str
    url_path: str
    roles: frozenset[str]
    section: str


def _page(path: str, title: str, icon: str, roles: str, section: str) -> PageSpec:
    url_path = path.removeprefix("app_pages/").removesuffix(".py")
    return PageSpec(path, title, f":material/{icon}:", url_path, frozenset(roles.split()), section)


#: Pages for signed-in users, in menu order; the first page a role may open is its home page.
PAGES: tuple[PageSpec, ...] = (
    _page("app_pages/checkin.py", "Weekly check-in", "edit_note", "patient", "My check-ins"),
    _page("app_pages/progress.py", "My progress", "show_chart", "patient", "My check-ins"),
    _page("app_pages/roster.py", "Roster", "groups", "clinician", "Clinic"),
    _page("app_pages/alerts.py", "Alerts", "notifications", "clinician", "Clinic"),
    _page("app_pages/patient.py", "Patient", "person", "clinician", "Clinic"),
    _page("app_pages/record.py", "Record", "add_notes", "clinician", "Clinic"),
    _page("app_pages/cohort.py", "Cohort outcomes", "monitoring", "clinician qi", "Outcomes"),
    _page("app_pages/users.py", "Users", "manage_accounts", "admin", "Administration"),
    _page("app_pages/audit.py", "Audit log", "policy", "admin", "Administration"),
    _page("app_pages/home.py", "Database", "database", "admin", "Administration"),
    _page("app_pages/backup.py", "Backup", "backup", "admin", "Administration"),
    _page("app_pages/diagnoses.py", "Diagnosis codes", "list_alt", "admin", "Administration"),
    _page("app_pages/reminders.py", "Reminders", "outgoing_mail", "admin", "Administration"),
    # After the first page of every role, so no role's home page changes.
    _page("app_pages/import_redcap.py", "Import from REDCap", "upload_file", "clinician admin", "Clinic"),
    _page("app_pages/exports.py", "Exports", "download", "clinician qi admin", "Outcomes"),
    _page("app_pages/followup.py", "Follow-up", "phone_in_talk", "clinician qi", "Outcomes"),
    _page("app_pages/account.py", "My account", "key", "admin clinician qi patient", "Account"),
)

#: Pages for visitors who are not signed in.
PUBLIC_PAGES: tuple[PageSpec, ...] = (
    _page("app_pages/login.py", "Sign in", "login", "", ""),
    _page("app_pages/invitation.py", "I have an invitation code", "mail", "", ""),
)
SETUP_PAGE = _page("app_pages/setup.py", "Set up", "rocket_launch", "", "")
#: What a one-tap link that is not a check-in session opens: the friendly page of a link that cannot be used,
#: and the "stop these messages" confirmation (docs/authentication.md, "One-tap links").
LINK_PAGE = _page("app_pages/link.py", "Your clinic's link", "link", "", "")
#: The only page a session opened by a check-in link registers.
CHECKIN_PAGE = next(p for p in PAGES if p.path == "app_pages/checkin.py")


def pages_for(role: str) -> tuple[PageSpec, ...]:
    return tuple(p for p in PAGES if role in p.roles)


ACCOUNT_PAGE = next(p for p in PAGES if p.path == "app_pages/account.py")


def build(role: str | None, *, first_run: bool = False, must_change_password: bool = False,
          link_session: bool = False, link_page: bool = False) -> StreamlitPage:
    """The navigation of one session: its role's pages, the sign-in pages, or the first-run setup.

    A user whose password was set by an administrator gets only "My account" until they choose their own.
    A session opened by a check-in link (``link_session``) gets only the check-in page; a visitor whose link
    was refused, or who opened a stop link (``link_page``), only the link page.
    """
    if link_session:
        return st.navigation(_st_pages([CHECKIN_PAGE]), position="hidden")
    if role is None and link_page:
        return st.navigation(_st_pages([LINK_PAGE]), position="hidden")
    if role is None:
        specs = (SETUP_PAGE,) if first_run else PUBLIC_PAGES
        return st.navigation(_st_pages(specs), position="hidden" if first_run else "sidebar")
    if must_change_password:
        return st.navigation(_st_pages([ACCOUNT_PAGE]))
    sections: dict[str, list[StreamlitPage]] = {}
    for i, spec in enumerate(pages_for(role)):
        sections.setdefault(spec.section, []).extend(_st_pages([spec], default=i == 0))
    return st.navigation(sections)


def _st_pages(specs, default: bool = True) -> list[StreamlitPage]:
    return [st.Page(s.path, title=s.title, icon=s.icon, url_path=s.url_path, default=default and i == 0)
            for i, s in enumerate(specs)]
