"""Dashboard buttons start engines; page tests record the command lines instead."""

from __future__ import annotations

from pathlib import Path

import pytest

from dashboard import launcher


def record_launches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every launch's argv, in order; each launched command counts as started without an early failure."""
    started: list[list[str]] = []

    def fake_launch(argv: list[str], label: str) -> launcher.Launched:
        started.append(argv)
        return launcher.Launched(pid=999_999, log_path=tmp_path / f"{label}.log", argv=argv)

    monkeypatch.setattr(launcher, "launch", fake_launch)
    monkeypatch.setattr(launcher, "early_failure", lambda launched, wait_s=2.0, ready=None: None)
    return started
