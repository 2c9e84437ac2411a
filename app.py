"""Entry point: ``streamlit run app.py``. Builds the navigation in code from ui/navigation.py."""

import streamlit as st

from ui import navigation

st.set_page_config(page_title="Infusion outcomes", page_icon=":material/monitoring:", layout="wide")
navigation.build().run()
