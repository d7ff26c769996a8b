"""The dashboard's helpers: cached reads, chart builders, run launching. Pages import only these."""
