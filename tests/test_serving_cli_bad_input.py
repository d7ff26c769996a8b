"""`serve` and `bench serve` given what a new user might get wrong: exit 2, one line on stderr, no
traceback, and nothing created or lost (a database, a saved result)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from cli.main import main
from tests.serving_helpers import serve, simulated


def _one_error_line(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The error line (bench serve's progress line before it, once it has started, aside)."""
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's errors
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if not line.startswith("bench serve: ")]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    return lines[0]


@pytest.mark.parametrize(("flags", "says"), [
    (["--port", "-1"], "expected a port number from 0 to 65535, got '-1'"),
    (["--port", "99999"], "expected a port number from 0 to 65535, got '99999'"),
    (["--api-key", ""], "--api-key: is empty"),
    (["--served-model-name", ""], "--served-model-name: is empty"),
    (["--no-record", "--rotate-every", "5"], "--no-record records none"),
])
def test_serve_flags_that_cannot_work(flags: list[str], says: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    line = _one_error_line(capsys, "serve", "--simulate", "--db", str(tmp_path / "x.db"), *flags)
    assert says in line
    assert list(tmp_path.iterdir()) == []


def test_serve_refuses_a_bad_db_before_the_backend_and_a_bad_model_before_the_db(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Before, the backend came first: its start-up line, then (after loading a model) the error.
    line = _one_error_line(capsys, "serve", "--simulate", "--port", "0", "--db", str(tmp_path / "no" / "x.db"))
    assert line == f"error: cannot create {tmp_path / 'no' / 'x.db'}: folder {tmp_path / 'no'} does not exist"
    line = _one_error_line(capsys, "serve", "--model", str(tmp_path / "nope"), "--port", "0",
                           "--db", str(tmp_path / "x.db"))
    assert "model not found" in line
    assert list(tmp_path.iterdir()) == []


def test_serve_on_a_busy_port_names_it_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        line = _one_error_line(capsys, "serve", "--simulate", "--port", str(port), "--db", str(tmp_path / "x.db"))
    assert line == f"error: cannot listen on 127.0.0.1:{port}: Address already in use"


@pytest.fixture
def not_openai() -> Iterator[str]:
    """An HTTP server that is not an OpenAI one (as `python -m http.server`: 404 for /v1/models)."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404, "File not found")

        def log_message(self, *args: object) -> None:
            pass

    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_bench_serve_against_no_server_or_a_non_openai_one(not_openai: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    line = _one_error_line(capsys, "bench", "serve", "--base-url", f"http://127.0.0.1:{_free_port()}",
                           "--num-prompts", "2")
    assert "cannot connect to http://127.0.0.1:" in line and "is the server running?" in line
    line = _one_error_line(capsys, "bench", "serve", "--base-url", not_openai, "--num-prompts", "2")
    assert "answered HTTP 404" in line and "OpenAI-compatible" in line
    line = _one_error_line(capsys, "bench", "serve", "--base-url", "localhost:8000", "--num-prompts", "2")
    assert "is not an http:// or https:// URL" in line


def test_bench_serve_checks_its_outputs_before_it_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["bench", "serve", "--base-url", f"http://127.0.0.1:{_free_port()}", "--num-prompts", "2"]
    line = _one_error_line(capsys, *base, "--save-result", str(tmp_path / "no" / "r.json"))
    assert line == f"error: --save-result {tmp_path / 'no' / 'r.json'}: folder {tmp_path / 'no'} does not exist"
    line = _one_error_line(capsys, *base, "--save-result", str(tmp_path))
    assert "is a folder" in line
    line = _one_error_line(capsys, *base, "--db", str(tmp_path / "no" / "b.db"))
    assert "does not exist" in line  # said before the benchmark, not after it ran


def test_bench_serve_says_it_replaced_an_existing_result(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = tmp_path / "result.json"
    result.write_text('{"old": 1}')
    with serve(simulated(step_s=0.001), tmp_path / "serve.db") as server:
        code = main(["bench", "serve", "--base-url", server.url, "--num-prompts", "2", "--save-result", str(result)])
    err = capsys.readouterr().err
    assert code == 0
    assert f"replaced {result}" in err
    assert json.loads(result.read_text())["completed"] == 2
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("serve.db")) == ["result.json"]
