"""`python -m engine`: simulate, run, runs, export, sweep, profile, delete."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from engine.cli import simulate
from engine.cli.args import OneLineParser
from engine.config import ConfigError
from engine.sampling_params import SamplingParamsError
from engine.workload import WorkloadError

# Errors whose message is the whole story: one line, no traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, WorkloadError, SamplingParamsError)


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="python -m engine", description="Batchscope: a serving engine you can watch.")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    simulate.add_parser(subparsers)
    for name in ("run", "runs", "export", "sweep", "profile", "delete"):
        module = _optional_command(name)
        if module is not None:
            module.add_parser(subparsers)
    return parser


def _optional_command(name: str):  # type: ignore[no-untyped-def]
    import importlib

    try:
        return importlib.import_module(f"engine.cli.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"engine.cli.{name}":
            return None
        raise


def user_errors() -> tuple[type[BaseException], ...]:
    errors = list(USER_ERRORS)
    try:
        from storage.database import StorageError

        errors.append(StorageError)
    except ModuleNotFoundError:
        pass
    try:
        from engine.executors.model_loading import ModelLoadError

        errors.append(ModelLoadError)
    except ModuleNotFoundError:
        pass
    return tuple(errors)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except user_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
