"""Workloads: named generators, JSONL files, and Azure-format trace CSVs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from engine.workload.files import load_azure_csv, load_jsonl
from engine.workload.generators import synthetic_workload
from engine.workload.spec import RequestSpec, Workload, WorkloadError, declare_max_tokens
from engine.workload.synthetic import SyntheticPrompt

BUNDLED_AZURE_TRACE = Path(__file__).resolve().parents[2] / "data" / "traces" / "azure_conv_2023.csv"
NAMED_WORKLOADS = ("uniform", "mixed", "azure")


@dataclass(frozen=True)
class WorkloadOptions:
    """Command-line knobs; generators use the first group, trace files the second."""

    num_requests: int = 64
    prompt_lens: tuple[int, int] = (16, 128)
    output_lens: tuple[int, int] = (10, 100)
    request_rate: float = math.inf
    priority_levels: int = 1
    seed: int = 0
    length_scale: float = 1.0
    time_scale: float = 1.0
    max_requests: int | None = None
    max_tokens_cap: int | None = None  # generated and trace workloads: declare this max_tokens


def resolve_workload(source: str | None, options: WorkloadOptions) -> Workload:
    """A workload from a name (uniform, mixed, azure) or a .jsonl / .csv path; None: mixed.
    With max_tokens_cap, generated and trace requests declare it and stop at their own length."""
    workload = _resolve(source, options)
    if options.max_tokens_cap is None:
        return workload
    if source is not None and source.lower().endswith(".jsonl"):
        raise WorkloadError("--max-tokens-cap is for generated and trace workloads; a JSONL file declares "
                            "max_tokens per request (and may give true_output_len)")
    return declare_max_tokens(workload, options.max_tokens_cap)


def _resolve(source: str | None, options: WorkloadOptions) -> Workload:
    source = source or "mixed"
    if source in ("uniform", "mixed"):
        return synthetic_workload(source, options.num_requests, options.prompt_lens, options.output_lens,
                                  options.request_rate, options.priority_levels, options.seed)
    if source == "azure":
        return load_azure_csv(BUNDLED_AZURE_TRACE, options.length_scale, options.time_scale, options.max_requests)
    path = Path(source)
    if path.suffix.lower() not in (".jsonl", ".csv"):
        raise WorkloadError(
            f"unknown workload {source!r}: use one of {', '.join(NAMED_WORKLOADS)}, or a .jsonl or .csv file"
        )
    if not path.is_file():
        raise WorkloadError(f"workload file not found: {path}")
    if path.suffix.lower() == ".jsonl":
        return load_jsonl(path)
    return load_azure_csv(path, options.length_scale, options.time_scale, options.max_requests)


__all__ = [
    "BUNDLED_AZURE_TRACE",
    "NAMED_WORKLOADS",
    "RequestSpec",
    "SyntheticPrompt",
    "Workload",
    "WorkloadError",
    "WorkloadOptions",
    "declare_max_tokens",
    "resolve_workload",
]
