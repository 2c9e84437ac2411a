"""Small helpers shared by the page tests (tests/test_page_*.py): what the user sees, and signing in."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.conftest import APP

#: Element kinds whose text a user reads.
_TEXT_KINDS = ("title", "header", "subheader", "markdown", "caption", "text", "info", "warning", "error",
               "success", "code")


def texts(at: AppTest, *kinds: str) -> list[str]:
    """The text of every element of these kinds (all readable kinds by default), in page order per kind."""
    out = []
    for kind in kinds or _TEXT_KINDS:
        out += [str(e.value) for e in getattr(at, kind)]
    return out


def seen(at: AppTest, fragment: str, *kinds: str) -> bool:
    """Whether ``fragment`` appears in any element of these kinds."""
    return any(fragment in t for t in texts(at, *kinds))


def messages(at: AppTest, kind: str) -> list[str]:
    return [str(e.value) for e in getattr(at, kind)]


def new_session() -> AppTest:
    """A fresh browser session (a reload or a new tab): the app with nobody signed in."""
    return AppTest.from_file(APP, default_timeout=60)


def sign_in(at: AppTest, username: str, password: str) -> AppTest:
    """Fill in the sign-in form and submit it (values and click in the same run)."""
    text_input(at, "Username").input(username)
    text_input(at, "Password").input(password)
    button(at, "Sign in").click().run()
    return at


def button(at: AppTest, label: str):
    """The (form submit or plain) button with this label; fails clearly when there is none."""
    found = [b for b in at.button if b.label == label]
    if not found:
        labels = [b.label for b in at.button]
        raise AssertionError(f"no button {label!r}; buttons: {labels}")
    return found[0]


def text_input(at: AppTest, label: str):
    found = [t for t in at.text_input if t.label == label]
    if not found:
        raise AssertionError(f"no text input {label!r}; inputs: {[t.label for t in at.text_input]}")
    return found[0]


def charts(at: AppTest) -> list[dict]:
    """The figure JSON of every Plotly chart (AppTest has no typed accessor for them)."""
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def values(array: Any) -> list:
    """A Plotly JSON array as a list: plain lists pass through, typed arrays (``bdata``) are decoded."""
    if isinstance(array, dict) and "bdata" in array:
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).tolist()
    return list(array)


def table(at: AppTest, index: int = 0):
    """The DataFrame behind the ``index``-th ``st.dataframe``."""
    return at.dataframe[index].value


def select_row(at: AppTest, row: int, index: int = 0) -> AppTest:
    """Select one row of the ``index``-th ``st.dataframe(on_select="rerun")`` and rerun, as a click would.

    AppTest has no API for dataframe selections, so this sends the widget state the browser would send
    (through AppTest's internal ``_tree`` and ``_run``).
    """
    states = at._tree.get_widget_states()
    state = states.widgets.add()
    state.id = at.dataframe[index].proto.id
    state.string_value = json.dumps({"selection": {"rows": [row], "columns": [], "cells": []}})
    return at._run(states)


@pytest.fixture(autouse=True)
def fresh_caches():
    """st.cache_* are process-wide: start every test without results cached by another test's database.

    Autouse in every module that imports it (``from tests.page_helpers import fresh_caches``)."""
    st.cache_data.clear()
    st.cache_resource.clear()
