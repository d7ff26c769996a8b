"""Batchscope dashboard: page config and navigation only (pages live in pages/)."""

import streamlit as st

st.set_page_config(page_title="Batchscope", page_icon=":material/view_timeline:", layout="wide")

pages = [
    st.Page("pages/runs.py", title="Runs", icon=":material/table_rows:", default=True),
    st.Page("pages/live.py", title="Live", icon=":material/radio_button_checked:"),
    st.Page("pages/replay.py", title="Replay", icon=":material/replay:"),
    st.Page("pages/what_if.py", title="What-if", icon=":material/science:"),
    st.Page("pages/curves.py", title="Curves", icon=":material/show_chart:"),
]
st.navigation(pages).run()
