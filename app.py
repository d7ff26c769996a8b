"""Batchscope dashboard entry: page config, navigation, and the first-launch demo.

Streamlit runs this file on every page before the page itself, so what it does must be cheap and
idempotent. Each view is a file in views/ with an explicit URL path, so links such as
`/Replay?run=3` keep working whatever the files are called. The folder is not called `pages/`:
beside the entry file that name makes Streamlit treat the app as an old-style multipage app, and the
first view a fresh server opens from a direct link gets a "Page not found" dialog over it.
"""

import streamlit as st

from dashboard import demo, settings, view_files

PAGES = [
    st.Page(view_files.RUNS, title="Runs", icon=":material/table_rows:", url_path="", default=True),
    st.Page(view_files.LIVE, title="Live", icon=":material/radio_button_checked:", url_path="Live"),
    st.Page(view_files.REPLAY, title="Replay", icon=":material/replay:", url_path="Replay"),
    st.Page(view_files.WHAT_IF, title="What-if", icon=":material/science:", url_path="What-if"),
    st.Page(view_files.CURVES, title="Curves", icon=":material/show_chart:", url_path="Curves"),
    st.Page(view_files.TUNE, title="Tune", icon=":material/tune:", url_path="Tune"),
    st.Page(view_files.LEARN, title="Learn", icon=":material/school:", url_path="Learn"),
]

# Across the top: the charts get the whole width.
page = st.navigation(PAGES, position="top")
st.set_page_config(page_title=f"{page.title} · Batchscope", page_icon=":material/view_timeline:", layout="wide")
demo.ensure_started(settings.db_target())
page.run()
