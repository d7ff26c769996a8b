"""Where each dashboard view's file is: one name for app.py's navigation and every link between
views (st.page_link takes a view by its file). The folder is `views/`, not `pages/`: see app.py."""

from __future__ import annotations

RUNS = "views/runs.py"
LIVE = "views/live.py"
REPLAY = "views/replay.py"
WHAT_IF = "views/what_if.py"
CURVES = "views/curves.py"
TUNE = "views/tune.py"
LEARN = "views/learn.py"
