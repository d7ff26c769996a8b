"""The dashboard's helpers; pages import only these.

data (cached reads), charts (chart builders), launcher (every engine command line and process),
run_meta (a run's metadata), demo / demo_workload (the first-launch demo), ui (page pieces),
runs_table / replay / what_if / curves (each page's figures), presets, settings.
"""
