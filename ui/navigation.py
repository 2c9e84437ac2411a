"""The app's pages as plain data; app.py turns them into ``st.navigation`` and the tests walk the same list."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st
from streamlit.navigation.page import StreamlitPage


@dataclass(frozen=True)
class PageSpec:
    path: str
    title: str
    icon: str
    url_path: str
    section: str = ""


PAGES: tuple[PageSpec, ...] = (
    PageSpec("app_pages/home.py", "Database", ":material/database:", "home"),
)


def build() -> StreamlitPage:
    pages = [st.Page(p.path, title=p.title, icon=p.icon, url_path=p.url_path, default=(i == 0))
             for i, p in enumerate(PAGES)]
    return st.navigation(pages)
