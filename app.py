"""Entry point: ``streamlit run app.py``.

This file is two things. ``streamlit run app.py`` finds the ``st.App`` below and serves it: Streamlit's own
server with ``ui.session.ServerGuard`` in front (the browser cookie that keeps a signed-in session to its
browser, no cache clearing by clients, no public metrics; docs/authentication.md). That server then runs
this same file as the page script of every browser session (``__name__ == "__main__"``, as in AppTest).

As the page script it decides who this session is (nobody, a local account, or a hospital identity) and
registers only the pages that user may open (ui/navigation.py); nothing else is reachable, whatever the URL.
"""

import streamlit as st

if __name__ != "__main__":
    # Imported by the server that `streamlit run app.py` starts (uvicorn, "app:app").
    from starlette.middleware import Middleware

    from ui.session import ServerGuard

    app = st.App(__file__, middleware=[Middleware(ServerGuard)])

else:
    from outcomes.errors import StorageUnavailable
    from ui import data, navigation, session, widgets

    st.set_page_config(page_title="Infusion outcomes", page_icon=":material/monitoring:", layout="wide")

    try:
        demo = data.demo_mode()  # first: a demo session this server no longer offers is emptied before use
        session.open_link()  # a one-tap link's token leaves the address bar before anything else is done
        user = session.current_user()
        if demo:
            st.warning("**Demo with synthetic data.** No real patient is in this database; accounts and "
                       "passwords are listed on the sign-in page.", icon=":material/science:")
        link_page = user is None and session.link_page() is not None
        first_run = user is None and not link_page and not data.demo_mode() and data.user_count() == 0
        page = navigation.build(user.role if user else None, first_run=first_run,
                                must_change_password=bool(user and user.must_change_password),
                                link_session=session.is_link_session(user), link_page=link_page)
        if user is not None:
            session.sidebar(user)
        if toast := st.session_state.pop("app.toast", None):
            st.toast(toast, icon=":material/check_circle:")
        page.run()
    except StorageUnavailable as exc:
        # Disk full, read-only or unreachable database (docs/reliability.md, "Faults"): every write was rolled
        # back, and a page that must audit what it shows cannot show it. Say so plainly; the next action works once IT has fixed it.
        st.error(widgets.message(exc), icon=":material/database:")
