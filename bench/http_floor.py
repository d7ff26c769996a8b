"""A bare OpenAI-shaped streaming endpoint: the HTTP round trip's floor on this machine.

`python bench/http_floor.py --port 0` serves /v1/models and a /v1/completions that answers every
request at once with one chunk with choices, a usage chunk and [DONE]: no engine, no validation, the
same uvicorn stack as `engine serve` (uvloop, httptools). `bench serve` against it at a rate measures
the round trip of a streamed first token at that spacing of requests with no engine behind it
(bench_serving part 2 puts it beside the simulated server's TTFT). On a 2-core VM a client and
server that sit idle between requests wake slowly: there the round trip was 1.0-1.6 ms at 25-400
requests/s and 0.3-0.5 ms back to back. It is a reference, not a bound: a busy server's threads
wake faster than this idle one's.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

MODEL = "http-floor"
_FIRST = "data: " + json.dumps({"id": "cmpl-floor", "object": "text_completion", "model": MODEL,
                                "choices": [{"index": 0, "text": "", "finish_reason": "length"}]}) + "\n\n"
_USAGE = "data: " + json.dumps({"id": "cmpl-floor", "object": "text_completion", "model": MODEL, "choices": [],
                                "usage": {"prompt_tokens": 0, "completion_tokens": 1, "total_tokens": 1}}) + "\n\n"


async def _chunks() -> AsyncIterator[str]:
    yield _FIRST
    yield _USAGE
    yield "data: [DONE]\n\n"


async def completions(request: Request) -> StreamingResponse:
    await request.body()
    return StreamingResponse(_chunks(), media_type="text/event-stream")


async def models(_: Request) -> JSONResponse:
    return JSONResponse({"object": "list", "data": [{"id": MODEL, "object": "model"}]})


app = Starlette(routes=[Route("/v1/completions", completions, methods=["POST"]), Route("/v1/models", models)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0, help="0: a free one (the URL is printed)")
    a = p.parse_args()
    sock = socket.create_server(("127.0.0.1", a.port))
    port = sock.getsockname()[1]
    # The line bench.serving_procs reads a server's URL from, as `engine serve` prints it.
    print(f"serving `{MODEL}` at http://127.0.0.1:{port}/v1 (a bare endpoint)", file=sys.stderr, flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")).run(sockets=[sock])


if __name__ == "__main__":
    main()
