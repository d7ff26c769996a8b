"""Workloads from files: JSONL (one request per line) and the Azure LLM inference trace CSV."""

from __future__ import annotations

import csv
import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any

from engine.limits import INT64_MAX
from engine.workload.spec import RequestSpec, Workload, WorkloadError

AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")


def _whole(value: Any, name: str, where: str, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= INT64_MAX:
        raise WorkloadError(f"{where}: {name} must be a whole number from {minimum} to 2**63 - 1, got {value!r}")
    return value


def load_jsonl(path: Path) -> Workload:
    """Each line: {"arrival_time", "max_tokens", one of "prompt_len" | "prompt" | "prompt_token_ids",
    optional "priority", "request_id", "ignore_eos", "temperature", "true_output_len" (where it really
    stops, below the declared max_tokens; no policy but sjf-oracle reads it)}."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise WorkloadError(f"cannot read workload file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise WorkloadError(f"{path} is not a UTF-8 text file") from None
    specs: list[RequestSpec] = []
    seen: set[str] = set()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path.name} line {lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise WorkloadError(f"{where}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise WorkloadError(f"{where}: expected a JSON object")
        specs.append(_spec_from_row(row, where, default_id=f"r{len(specs)}"))
        if specs[-1].request_id in seen:
            raise WorkloadError(f"{where}: duplicate request_id {specs[-1].request_id!r}")
        seen.add(specs[-1].request_id)
    if not specs:
        raise WorkloadError(f"{path} holds no requests")
    return Workload(tuple(specs), f"{path.name}: {len(specs)} requests")


def _spec_from_row(row: dict[str, Any], where: str, default_id: str) -> RequestSpec:
    arrival = row.get("arrival_time", 0.0)
    if not isinstance(arrival, (int, float)) or isinstance(arrival, bool) or not math.isfinite(arrival) or arrival < 0:
        raise WorkloadError(f"{where}: arrival_time must be a number of seconds >= 0, got {arrival!r}")
    if "max_tokens" not in row:
        raise WorkloadError(f"{where}: max_tokens is missing")
    max_tokens = _whole(row["max_tokens"], "max_tokens", where, 1)
    given = [k for k in ("prompt_len", "prompt", "prompt_token_ids") if k in row]
    if len(given) != 1:
        raise WorkloadError(f"{where}: give exactly one of prompt_len, prompt, prompt_token_ids")
    prompt_len = prompt = ids = None
    if "prompt_len" in row:
        prompt_len = _whole(row["prompt_len"], "prompt_len", where, 1)
    elif "prompt" in row:
        if not isinstance(row["prompt"], str) or not row["prompt"]:
            raise WorkloadError(f"{where}: prompt must be non-empty text")
        prompt = row["prompt"]
    else:
        raw = row["prompt_token_ids"]
        if not isinstance(raw, list) or not raw or not all(isinstance(t, int) and not isinstance(t, bool)
                                                            and 0 <= t <= INT64_MAX for t in raw):
            raise WorkloadError(f"{where}: prompt_token_ids must be a non-empty list of token ids")
        ids = tuple(raw)
    priority = row.get("priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool) or abs(priority) > INT64_MAX:
        raise WorkloadError(f"{where}: priority must be a whole number within +-(2**63 - 1), got {priority!r}")
    temperature = row.get("temperature", 0.0)
    if (not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not math.isfinite(temperature)
            or temperature < 0):
        raise WorkloadError(f"{where}: temperature must be a number >= 0, got {temperature!r}")
    request_id = str(row.get("request_id", default_id))
    true_len = row.get("true_output_len")
    if true_len is not None:
        true_len = _whole(true_len, "true_output_len", where, 1)
    return RequestSpec(request_id=request_id, arrival_time=float(arrival), max_tokens=max_tokens,
                       prompt_len=prompt_len, prompt=prompt, prompt_token_ids=ids, priority=priority,
                       ignore_eos=bool(row.get("ignore_eos", prompt is None)), temperature=float(temperature),
                       true_output_len=true_len)


def load_azure_csv(
    path: Path, length_scale: float = 1.0, time_scale: float = 1.0, max_requests: int | None = None
) -> Workload:
    """The Azure LLM inference trace format: TIMESTAMP, ContextTokens, GeneratedTokens.

    Lengths are multiplied by length_scale and arrival gaps by time_scale (0.1 = ten times
    faster), both rounded and kept >= 1 token, so a CPU model can replay a GPU-sized trace.
    The csv module reads it (three plain columns; no need to load pandas for that).
    """
    if length_scale <= 0 or time_scale < 0:
        raise WorkloadError("--length-scale must be > 0 and --time-scale >= 0")
    if max_requests is not None and max_requests < 1:
        raise WorkloadError(f"--max-requests must be >= 1, got {max_requests}")
    rows: list[tuple[datetime, int, int]] = []
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in AZURE_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise WorkloadError(
                    f"{path.name} is not in the Azure trace format: missing column(s) {', '.join(missing)} "
                    f"(expected {', '.join(AZURE_COLUMNS)})"
                )
            for lineno, row in enumerate(reader, 2):
                if max_requests is not None and len(rows) >= max_requests:
                    break
                try:
                    stamp = datetime.fromisoformat(row["TIMESTAMP"].strip())
                    context, generated = int(row["ContextTokens"]), int(row["GeneratedTokens"])
                except (ValueError, TypeError, AttributeError):
                    raise WorkloadError(f"{path.name} line {lineno}: cannot read a TIMESTAMP and two token "
                                        f"counts from {dict(row)}") from None
                if not (0 <= context <= INT64_MAX and 0 <= generated <= INT64_MAX):
                    raise WorkloadError(f"{path.name} line {lineno}: token counts must be from 0 to 2**63 - 1")
                rows.append((stamp, context, generated))
    except FileNotFoundError:
        raise WorkloadError(f"workload file not found: {path}") from None
    except UnicodeDecodeError:
        raise WorkloadError(f"{path} is not a UTF-8 text file") from None
    except OSError as exc:
        raise WorkloadError(f"cannot read workload file {path}: {exc.strerror or exc}") from None
    except csv.Error as exc:
        raise WorkloadError(f"cannot read {path} as CSV: {exc}") from None
    if not rows:
        raise WorkloadError(f"{path} holds no requests")
    start = min(stamp for stamp, _, _ in rows)
    specs = [
        RequestSpec(request_id=f"r{i}", arrival_time=round((stamp - start).total_seconds() * time_scale, 6),
                    max_tokens=max(1, round(generated * length_scale)),
                    prompt_len=max(1, round(context * length_scale)))
        for i, (stamp, context, generated) in enumerate(rows)
    ]
    specs.sort(key=lambda spec: spec.arrival_time)
    desc = (f"{path.name}: {len(specs)} requests, lengths x{length_scale:g}, time x{time_scale:g} "
            "(Azure LLM inference trace 2023, CC-BY 4.0)")
    return Workload(tuple(specs), desc)
