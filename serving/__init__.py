"""The OpenAI-compatible HTTP server (`serve`) and its benchmark client (`bench serve`).

An application layer above engine/: it uses the online engine loop (engine.online), records through
storage/, and imports nothing from the dashboard.
"""

__version__ = "0.1.0"
