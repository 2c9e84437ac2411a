"""Each role registers exactly its pages; nothing else is reachable, and every page renders for its roles."""

import pytest

from ui import navigation

ALL = [p.path for p in navigation.PAGES]


def registered(at) -> set[str]:
    """The pages this session can switch to (switch_page raises for any other)."""
    reachable = set()
    for path in ALL + [p.path for p in navigation.PUBLIC_PAGES] + [navigation.SETUP_PAGE.path]:
        try:
            at.switch_page(path)
        except ValueError:
            continue
        reachable.add(path)
    return reachable


@pytest.mark.slow
@pytest.mark.parametrize("role", ["admin", "clinician", "qi", "patient"])
def test_each_role_sees_only_its_pages(app_as, role):
    at = app_as(role)
    assert not at.exception
    assert registered(at) == {p.path for p in navigation.pages_for(role)}


def test_anonymous_visitors_only_reach_the_sign_in_pages(app_as):
    at = app_as(None)
    assert not at.exception
    assert at.title[0].value == "Sign in"
    assert registered(at) == {p.path for p in navigation.PUBLIC_PAGES}


@pytest.mark.slow
@pytest.mark.parametrize("role, page", [(role, p.path) for p in navigation.PAGES for role in sorted(p.roles)])
def test_every_page_renders_for_each_of_its_roles(app_as, role, page):
    at = app_as(role, page)
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


@pytest.mark.slow
@pytest.mark.parametrize("role, page", [(role, p.path) for p in navigation.PAGES
                                        for role in ("admin", "clinician", "qi", "patient") if role not in p.roles])
def test_every_page_checks_the_role_itself(clinic_db, role, page):
    # Run the page file directly, as if the navigation had let it through: the page still refuses.
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(navigation.ROOT / page), default_timeout=60)
    at.session_state["auth.user"] = clinic_db.users[role]
    at.run()
    assert not at.exception
    assert at.error and "role" in at.error[0].value


def test_no_page_a_signed_out_visitor_reaches_has_an_upload(app_as):
    """Security issue, finding 9: an upload widget is Streamlit's door for files; only signed-in staff
    (REDCap import: clinician, admin) reach one. The server's own upload limit is tested in
    tests/browser/test_security_downloads.py."""
    at = app_as(None)
    for page in navigation.PUBLIC_PAGES:
        at.switch_page(page.path).run()
        assert not at.exception and not at.get("file_uploader"), page.path
    every = [*navigation.PAGES, *navigation.PUBLIC_PAGES, navigation.SETUP_PAGE]
    uploads = {p.path for p in every if "file_uploader(" in (navigation.ROOT / p.path).read_text()}
    assert uploads == {"app_pages/import_redcap.py"}
    assert next(p for p in navigation.PAGES if p.path == "app_pages/import_redcap.py").roles <= {"clinician", "admin"}
