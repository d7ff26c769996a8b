"""Batchscope dashboard: page config and navigation only (pages live in pages/)."""

import streamlit as st

st.set_page_config(page_title="Batchscope", page_icon="📊", layout="wide")

pages = [
    st.Page("pages/runs.py", title="Runs", icon="🗂️", default=True),
    st.Page("pages/live.py", title="Live", icon="🔴"),
    st.Page("pages/replay.py", title="Replay", icon="⏯️"),
    st.Page("pages/what_if.py", title="What-if", icon="🔮"),
    st.Page("pages/curves.py", title="Curves", icon="📈"),
]
st.navigation(pages).run()
