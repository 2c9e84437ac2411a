"""No page is reachable without the right login through any URL, on a freshly started server too."""

import pytest

from tests.conftest import PASSWORD
from ui import navigation

from .conftest import wait_for_idle
from .test_journeys import sign_in

DEEP_LINKS = [p.url_path for p in navigation.PAGES] + [navigation.SETUP_PAGE.url_path]


def test_every_deep_link_lands_on_sign_in_for_an_anonymous_visitor(browser, start_server, clinic_db):
    from playwright.sync_api import expect

    server = start_server(clinic_db.path)   # freshly started: the first request is a deep link
    for url_path in DEEP_LINKS:
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{server.url}/{url_path}")
        wait_for_idle(page)
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        main = page.get_by_role("main")
        for spec in navigation.PAGES:
            expect(main.get_by_role("heading", name=spec.title, exact=True)).to_have_count(0)
        for secret in ("P001", "P002", "ada.admin", "cleo.clinician"):
            expect(main.get_by_text(secret)).to_have_count(0)
        context.close()


@pytest.mark.parametrize("username, role", [("pat.patient", "patient"), ("quinn.qi", "qi")])
def test_a_signed_in_user_sees_and_reaches_only_their_pages(browser, start_server, clinic_db, username, role):
    from playwright.sync_api import expect

    server = start_server(clinic_db.path)
    page = browser.new_page()
    page.goto(server.url)
    wait_for_idle(page)
    sign_in(page, username, PASSWORD)
    nav = page.get_by_test_id("stSidebarNav")
    expect(nav).to_be_visible(timeout=30_000)
    mine = {p.title for p in navigation.pages_for(role)}
    for spec in navigation.PAGES:
        expect(nav.get_by_role("link", name=spec.title, exact=True)).to_have_count(1 if spec.title in mine else 0)
    # Typing another role's URL opens a new session, which starts at the sign-in page again.
    forbidden = next(p for p in navigation.PAGES if role not in p.roles)
    page.goto(f"{server.url}/{forbidden.url_path}")
    wait_for_idle(page)
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
