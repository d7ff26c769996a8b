"""`serve` on the command line (vLLM's flag names); the server lives in serving/, its benchmark
client's command in cli/bench_serve.py.

    python -m engine serve --model tiny [engine flags] [--host 127.0.0.1] [--port 8000] [--api-key KEY]
    python -m engine serve --simulate [--cost-model-file F | --from-run N] [engine flags]

serve: SIGINT/SIGTERM drains (stops accepting, lets what runs finish, at most --drain-timeout
seconds, then aborts the rest); a second signal aborts everything at once. The run is marked
finished, or aborted if anything was cut short.
"""

from __future__ import annotations

import argparse
import itertools
import queue
import re
import signal
import sys
import threading
from types import FrameType
from typing import Any

from cli.args import (
    DEFAULT_SIM_GPU_BLOCKS,
    MODEL_HELP,
    add_db_arg,
    add_engine_args,
    add_model_args,
    engine_config_from_args,
    positive_float,
    positive_int,
)
from engine.config import ConfigError, EngineConfig
from engine.engine_args import EngineArgs
from engine.executors.cost_model import CostModel
from engine.online import Rotation

DEFAULT_PORT = 8000
DEFAULT_DRAIN_TIMEOUT_S = 30.0
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smh])$")


def rotation_arg(text: str) -> Rotation:
    """N (steps) or a duration: 90s, 30m, 1h."""
    if text.isascii() and text.isdigit() and int(text) > 0:  # isdigit alone takes "²", which int() refuses
        return Rotation(every_steps=int(text))
    match = _DURATION.match(text)
    if match and float(match.group(1)) > 0:
        return Rotation(every_seconds=float(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)])
    raise argparse.ArgumentTypeError(f"expected a number of steps or a duration such as 90s, 30m or 1h, got {text!r}")


def port_arg(text: str) -> int:
    """0 (a free one) to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535, got {text!r}")
    return port


def _nonempty(name: str, what: str) -> Any:
    def parse(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"is empty: {what}")
        return text
    parse.__name__ = name
    return parse


# -- serve -----------------------------------------------------------------------------------------
def add_serve_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("serve", help="an OpenAI-compatible server, every step recorded as a run")
    g = add_model_args(p, model_default=None,
                       model_help=f"{MODEL_HELP} (default: tiny; with --simulate, a name for the simulated model)")
    g.add_argument("--seed", type=int, default=0, help="sampling seed for requests without one (0)")
    add_engine_args(p)
    s = p.add_argument_group("server")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1: this machine only)")
    s.add_argument("--port", type=port_arg, default=DEFAULT_PORT, help=f"port ({DEFAULT_PORT}; 0 picks a free one)")
    s.add_argument("--api-key", type=_nonempty("api_key", "give a key, or leave the flag out to serve without one"),
                   default=None, help="require 'Authorization: Bearer KEY' on /v1 routes")
    unnamed = "give a name, or leave the flag out to serve under --model"
    s.add_argument("--served-model-name", type=_nonempty("served_model_name", unnamed), default=None,
                   help="the model name clients send (default: --model)")
    s.add_argument("--max-waiting", type=positive_int, default=None,
                   help="answer 503 while this many requests wait to be scheduled (default: no limit)")
    s.add_argument("--drain-timeout", type=positive_float, default=DEFAULT_DRAIN_TIMEOUT_S,
                   help=f"on SIGINT/SIGTERM, seconds to let running requests finish ({DEFAULT_DRAIN_TIMEOUT_S:g})")
    sim = p.add_argument_group("simulated serving")
    sim.add_argument("--simulate", action="store_true",
                     help="no model: the same scheduler on the wall clock, each step sleeping its predicted time, "
                          "placeholder tokens")
    models = sim.add_mutually_exclusive_group()
    models.add_argument("--cost-model", choices=("default", "unit"), default=None,
                        help="default (tiny on 2 CPU threads) or unit (1 s a step)")
    models.add_argument("--cost-model-file", default=None, metavar="JSON",
                        help="a cost model written by `python -m engine profile -o`")
    models.add_argument("--from-run", type=positive_int, default=None, metavar="RUN",
                        help="the cost model fitted to recorded run RUN, under its config (flags given override it)")
    r = p.add_argument_group("recording")
    add_db_arg(r)
    r.add_argument("--name", default=None, help="a name for the recorded run")
    r.add_argument("--no-record", action="store_true", help="do not record")
    r.add_argument("--rotate-every", type=rotation_arg, default=None, metavar="N|DURATION",
                   help="start a new run after N steps or a duration (1h, 30m) so each stays small; the switch "
                        "waits until running requests finish")
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from serving.server import ServerOptions, ServingServer, bind_socket

    if args.simulate and (args.device or args.dtype or args.gpu_memory_utilization):
        raise ConfigError("--device, --dtype and --gpu-memory-utilization need a model; --simulate has none")
    if not args.simulate and (args.cost_model or args.cost_model_file or args.from_run):
        raise ConfigError("--cost-model, --cost-model-file and --from-run need --simulate")
    if args.no_record and args.rotate_every is not None:
        raise ConfigError("--rotate-every starts new recorded runs, and --no-record records none; drop one of them")
    sock = bind_socket(args.host, args.port)  # a busy port fails before a model loads
    server = None
    db: Any = args.db
    try:
        if not args.no_record:  # a bad --db, too, fails before a model loads (a mistyped model before it)
            db = _open_recording_db(args)
        backend = _simulated_backend(args) if args.simulate else _real_backend(args)
        for line in backend.description:
            print(line, file=sys.stderr)
        options = ServerOptions(served_model_name=args.served_model_name, api_key=args.api_key,
                                max_waiting=args.max_waiting, db=db, record=not args.no_record,
                                rotation=args.rotate_every, name=args.name)
        server = ServingServer(backend, sock, options)
        server.start(engine_thread=False)  # the engine loop runs on this thread, which loaded the model
        return _serve_until_signalled(server, args.drain_timeout)
    finally:
        if server is not None:
            server.close()  # ends the run too if the loop never ran (once: a second close does nothing)
        else:
            sock.close()
            if db is not args.db:
                db.dispose()


def _open_recording_db(args: argparse.Namespace) -> Any:
    from engine.executors.model_loading import NAMED_MODELS, resolve_model_path
    from storage.database import open_for_write

    if not args.simulate and args.model is not None and args.model not in NAMED_MODELS:
        resolve_model_path(args.model)  # a path that is no model: said before a database is created
    return open_for_write(args.db)


def _real_backend(args: argparse.Namespace) -> Any:
    from serving.backend import real_backend

    return real_backend(EngineArgs.from_values(vars(args)))


def _simulated_backend(args: argparse.Namespace) -> Any:
    from cli.args import chosen_cost_model
    from engine.executors.cost_model import named_cost_model
    from serving.backend import simulated_backend

    base_config: EngineConfig | None = None
    cost_model = chosen_cost_model(args)
    model = args.model
    if args.from_run is not None:
        cost_model, base_config, base_model = _base_run_model(args.db, args.from_run)
        model = model or base_model
    # A base run's KV pool is part of its config: the simulated default fills in only without one.
    config = engine_config_from_args(args, num_gpu_blocks=DEFAULT_SIM_GPU_BLOCKS if base_config is None else None,
                                     base=base_config)
    return simulated_backend(config, cost_model or named_cost_model("default"), model or "simulated")


def _base_run_model(db: str | None, run_id: int) -> tuple[CostModel, EngineConfig, str | None]:
    """The one place a base run is read."""
    from storage.database import open_for_write
    from whatif.base_run import load_base_run

    writer = open_for_write(db)
    try:
        base = load_base_run(writer, run_id)
    finally:
        writer.dispose()  # the server records through its own engine
    return base.cost_model, base.config, base.model


def _serve_until_signalled(server: Any, drain_timeout: float) -> int:
    # The handler runs on the engine loop's thread, between two bytecodes of it, perhaps inside a
    # lock: it only hands the signal to a thread of its own (SimpleQueue.put is safe there), which
    # says what happens and orders it once the loop lets go.
    signals: queue.SimpleQueue[int] = queue.SimpleQueue()

    def obey() -> None:
        for count in itertools.count(1):
            signum = signals.get()
            if count == 1:
                print(f"{signal.Signals(signum).name}: draining (no new requests; running ones get up to "
                      f"{drain_timeout:g} s); signal again to abort them", file=sys.stderr, flush=True)
                server.drain(drain_timeout)
            else:
                print("aborting every request", file=sys.stderr, flush=True)
                server.abort_all()

    def handler(signum: int, frame: FrameType | None) -> None:
        signals.put(signum)

    threading.Thread(target=obey, name="batchscope-signals", daemon=True).start()
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        where = f"recording run {server.run_id}" if server.run_id is not None else "not recording"
        print(f"serving `{server.served_model_name}` at {server.url}/v1 ({where}); Ctrl-C drains, twice aborts",
              file=sys.stderr, flush=True)
        server.serve_engine_here()
    finally:
        server.close()
        for sig, old in previous.items():
            signal.signal(sig, old)
    online = server.online
    runs = ", ".join(str(r) for r in online.run_ids) or "none"
    print(f"stopped: run(s) {runs} {online.status}" + (f" ({online.error})" if online.error else ""),
          file=sys.stderr, flush=True)
    return 1 if online.status == "failed" else 0
