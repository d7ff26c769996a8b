"""bench_real.py's report: the systems it ran with every run they made, and the tables and targets
made of their medians (ratios only between systems measured in the same run)."""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench.flop_budget import PEAK_REPEATS, PEAK_SIZE, PeakReading
from bench.real_systems import BenchRequest, RunResult

Runner = Callable[[list[BenchRequest]], RunResult]

HF_STATIC, OURS_STATIC, OURS_CONT, HF_CB, OURS_STOCK = "hf_static", "ours_static", "ours_cont", "hf_cb", "ours_stock"
HF_STATIC_CACHE = "hf_static_cache"  # HF generate with StaticCache: K/V written in place, as our pool is
STATIC_TOLERANCE = 0.25  # our static within this share of HF static: the same algorithm, so the same speed
TARGET_VS_HF_STATIC, TARGET_VS_CB = 2.5, 1.3
TARGET_UTILIZATION, TARGET_UTIL_VS_CB = 0.60, 1.5


@dataclass
class Attempt:
    round: int
    result: RunResult
    others_cores: float
    kept: bool


@dataclass
class Contender:
    """One system at one setting, and every run it made in this session."""

    label: str
    kind: str  # one of the kinds above
    seqs: int  # batch size / max_num_seqs / CB's max requests per batch
    run: Runner
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def runs(self) -> list[RunResult]:
        return [a.result for a in self.attempts if a.kept]

    @property
    def num_redone(self) -> int:
        return sum(not a.kept for a in self.attempts)

    def median(self, key: Callable[[RunResult], float]) -> float:
        return statistics.median(key(r) for r in self.runs)

    @property
    def tok_s(self) -> float:
        return self.median(lambda r: r.output_tokens_per_s)

    @property
    def duration_s(self) -> float:
        return self.median(lambda r: r.duration_s)


@dataclass
class ModelReport:
    name: str
    lengths: list[tuple[int, int]]  # (prompt, output tokens) per request
    useful_flops: float  # the workload's, the same for every system
    contenders: list[Contender]
    peak_before: PeakReading
    peak_after: PeakReading
    hf_static_flops: dict[int, float]  # batch size: every FLOP HF generate computes, padding included
    max_load: float  # other processes' cores above which a run was redone

    def computed_flops(self, c: Contender) -> float | None:
        """FLOPs c computed, padding included: ours as the engine counted them, HF static worked out."""
        r = c.runs[0]
        if r.engine_flops is not None:
            return r.engine_flops + r.static_pad_flops + r.bucket_pad_flops
        return self.hf_static_flops.get(c.seqs) if c.kind == HF_STATIC else None

    @property
    def peak(self) -> float:
        """The higher of the two peaks: the lower, more cautious utilization."""
        return max(self.peak_before.flops, self.peak_after.flops)

    def of_kind(self, kind: str) -> list[Contender]:
        return [c for c in self.contenders if c.kind == kind and c.runs]

    def best(self, kind: str) -> Contender | None:
        return max(self.of_kind(kind), key=lambda c: c.tok_s, default=None)

    def find(self, kind: str, seqs: int) -> Contender | None:
        return next((c for c in self.of_kind(kind) if c.seqs == seqs), None)

    def utilization(self, c: Contender) -> float:
        return self.useful_flops / c.duration_s / self.peak  # never clamped: > 1 would say the count or peak is off


def format_header(command: str, date: str, machine: str, args: argparse.Namespace) -> str:
    return "\n".join([
        "# Real-model benchmark", "",
        f"- command: `{command}` (from the repo root)",
        f"- date: {date}",
        f"- machine: {machine}",
        f"- workload: {args.num_requests} requests at t=0, prompts 16..128, outputs 70% 10..20 / 30% 80..100, "
        "EOS ignored; the same prompt token ids for every system",
        f"- {args.repeats} rounds after one warm-up each; a round runs every system once (odd rounds in reverse "
        f"order); a run where other processes used more than {args.max_other_load} cores was redone (up to "
        f"{args.max_tries} tries, the last kept); medians of the kept runs",
        "- latency: end-to-end per request (all arrive at t=0); HF static returns a batch at once",
        *_kernel_note(args.baseline_kernels, args.stock_head_run),
        f"- utilization: the workload's useful FLOPs (every prompt prefilled once, every output token but the last "
        f"decoded once, LM head on the sampling rows, counted by engine/executors/flops.py) / a system's median wall "
        f"time / the fp32 {PEAK_SIZE}^3 matmul peak (the faster of torch.matmul and the packed oneDNN kernel, "
        f"{args.threads} threads, warm-up, median of {PEAK_REPEATS}) "
        "timed before and after each model's runs; the higher of the two is used (the more cautious figure). "
        "Padding (static pad rows, attention length-bucket keys) is counted apart, never as useful. Not clamped.",
    ])


def _kernel_note(baseline_kernels: str, stock_run: bool) -> list[str]:
    lines = ["- LM head: every system computes it only on rows that sample. HF generate passes logits_to_keep=1 "
             "(transformers/generation/utils.py; static batches' finished members still get their row, part of "
             "static padding); transformers CB passes its logits_indices as logits_to_keep "
             "(continuous_batching/model_runner.py). So that trick needs no wrapper."]
    if baseline_kernels == "ours":
        lines.append("- What only our engine had is its CPU linear kernels (engine/executors/packed_linear.py: "
                     "oneDNN on weights packed once, the same results to rounding): here every baseline's "
                     "linears are those kernels too, so the ratios measure scheduling and attention, not one "
                     "side's kernels.")
    else:
        lines.append("- The baselines keep their own nn.Linear layers while ours run packed oneDNN kernels "
                     "(engine/executors/packed_linear.py): the ratios include those kernels.")
    if stock_run:
        lines.append("- 'ours continuous, stock linears' is our engine on plain nn.Linear layers (same weights): "
                     "what the kernels alone are worth.")
    return lines


def format_model(rep: ModelReport) -> str:
    prompt, output = sum(p for p, _ in rep.lengths), sum(o for _, o in rep.lengths)
    parts = [f"## {rep.name}", "",
             f"{len(rep.lengths)} requests, {prompt:,} prompt + {output:,} output tokens; useful work "
             f"{rep.useful_flops / 1e9:,.1f} GFLOP.",
             _systems_table(rep), _static_vs_continuous(rep), _static_forwards(rep), _targets(rep), _utilization(rep),
             _breakdown(rep), _every_run(rep)]
    return "\n\n".join(p for p in parts if p)


def _table(head: Sequence[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _systems_table(rep: ModelReport) -> str:
    rows = []
    for c in rep.contenders:
        if not c.runs:
            continue
        loaded = sum(a.kept and a.others_cores > rep.max_load for a in c.attempts)  # its last try was loaded too
        notes = []
        if c.num_redone:
            notes.append(f"{c.num_redone} redone")
        if loaded:
            notes.append(f"{loaded} kept over the load limit")
        redone = f" ({', '.join(notes)})" if notes else ""
        rows.append([c.label, f"{c.tok_s:,.1f}", f"{c.duration_s:.2f}", f"{c.median(lambda r: r.p50_s):.2f}",
                     f"{c.median(lambda r: r.p99_s):.2f}", _share(c.runs[0].padding_share),
                     f"{len(c.runs)}{redone}", f"{max(a.others_cores for a in c.attempts if a.kept):.2f}"])
    return "### Every system\n\n" + _table(
        ["system", "output tok/s", "duration s", "p50 latency s", "p99 latency s", "padding (rows)", "runs",
         "other load (cores, max)"], rows)


def _static_vs_continuous(rep: ModelReport) -> str:
    rows = []
    for seqs in sorted({c.seqs for c in rep.of_kind(HF_STATIC) + rep.of_kind(HF_STATIC_CACHE)}):
        dynamic, preallocated = rep.find(HF_STATIC, seqs), rep.find(HF_STATIC_CACHE, seqs)
        ours_s, ours_c = rep.find(OURS_STATIC, seqs), rep.find(OURS_CONT, seqs)
        if ours_s is None:
            continue
        hf = max((c for c in (dynamic, preallocated) if c is not None), key=lambda c: c.tok_s)
        ratio = ours_s.tok_s / hf.tok_s
        ok = abs(ratio - 1) <= STATIC_TOLERANCE
        rows.append([str(seqs), _tok_s(dynamic), _tok_s(preallocated), f"{ours_s.tok_s:,.1f}",
                     f"{ratio:.2f} ({'within' if ok else 'outside'} ±{STATIC_TOLERANCE:.0%})",
                     _tok_s(ours_c), _ratio(ours_c, ours_s), _ratio(ours_c, hf),
                     _share(hf.runs[0].padding_share), _share(ours_s.runs[0].padding_share)])
    if not rows:
        return ""
    return ("### Static vs continuous, by max_num_seqs (output tok/s, medians)\n\n" + _table(
        ["max_num_seqs", "HF static, DynamicCache", "HF static, StaticCache", "ours static",
         "ours static / HF static (its faster cache)", "ours continuous", "continuous / ours static",
         "continuous / HF static (its faster cache)", "padding: HF static (analytic)", "padding: ours static"], rows)
        + "\n\nHF generate's default DynamicCache grows each layer's K/V by torch.cat, copying the whole cache "
          "every step; its StaticCache is preallocated for the batch's full length and written in place, as "
          "our paged pool is, but its attention then spans that whole length. The comparison takes whichever "
          "is faster at each size. Padding: share of computed token rows that are padding (left padding in "
          "prefill + finished members' decode rows). HF's is worked out from its batches; ours is the "
          "engine's count.")


def _static_forwards(rep: ModelReport) -> str:
    """The static systems' time split into the model's forward passes and the loop around them."""
    rows = []
    for seqs in sorted({c.seqs for c in rep.of_kind(OURS_STATIC)}):
        ours = rep.find(OURS_STATIC, seqs)
        for hf in (rep.find(HF_STATIC, seqs), rep.find(HF_STATIC_CACHE, seqs)):
            if ours is None or hf is None or hf.runs[0].forward_s is None:
                continue
            hf_fwd, our_fwd = hf.median(_forward), ours.median(_forward)
            rows.append([str(seqs), hf.label, f"{hf_fwd:.2f}", f"{hf.duration_s - hf_fwd:.2f}", f"{our_fwd:.2f}",
                         f"{ours.duration_s - our_fwd:.2f}", f"{hf_fwd / our_fwd:.2f}",
                         f"{hf.duration_s / ours.duration_s:.2f}"])
    if not rows:
        return ""
    return ("### Static: the model's forward passes apart from the loop around them (median seconds per run)\n\n"
            + _table(["max_num_seqs", "HF system", "HF forwards", "HF rest (generate's loop)", "ours forwards",
                      "ours rest (scheduler, inputs, sampling)", "forwards HF / ours", "whole run HF / ours"], rows)
            + "\n\nHF's forwards are timed around every call of the model generate makes (hooks on its top "
              "module: embeddings, layers with attention and the cache update, LM head); ours are the "
              "executor's model, attention, KV write and gather parts. The same work in both: the same "
              "batches, pad rows computed, the same kernels for the linear layers.")


def _forward(r: RunResult) -> float:
    return r.forward_s or 0.0


def _tok_s(c: Contender | None) -> str:
    return "not run" if c is None else f"{c.tok_s:,.1f}"


def _ratio(a: Contender | None, b: Contender | None) -> str:
    return "n/a" if a is None or b is None else f"{a.tok_s / b.tok_s:.2f}"


def _verdict(value: float, target: float) -> str:
    return f"**{value:.2f}** (target >= {target:g}: {'met' if value >= target else 'missed'})"


def _targets(rep: ModelReport) -> str:
    ours, cb = rep.best(OURS_CONT), rep.best(HF_CB)
    if ours is None:
        return ""
    lines = ["### Targets (ratios of medians from this run)", ""]
    for kind, cache in ((HF_STATIC, "DynamicCache"), (HF_STATIC_CACHE, "StaticCache")):
        hf = rep.best(kind)
        if hf is not None:
            lines.append(f"- throughput, ours continuous ({ours.seqs} seqs, our best) / HF static with its {cache} "
                         f"(batches of {hf.seqs}, its best): {_verdict(ours.tok_s / hf.tok_s, TARGET_VS_HF_STATIC)}")
    if cb is not None:
        lines.append(f"- throughput, ours continuous ({ours.seqs} seqs) / transformers CB at its best "
                     f"({cb.label.removeprefix('transformers CB ')}): {_verdict(ours.tok_s / cb.tok_s, TARGET_VS_CB)}")
    util = rep.utilization(ours)
    lines.append(f"- utilization, ours continuous ({ours.seqs} seqs): **{util:.1%}** (target >= "
                 f"{TARGET_UTILIZATION:.0%}: {'met' if util >= TARGET_UTILIZATION else 'missed'})")
    if cb is not None:
        lines.append(f"- utilization, ours / transformers CB's best: "
                     f"{_verdict(util / rep.utilization(cb), TARGET_UTIL_VS_CB)} (every system does the same "
                     "useful FLOPs, so this is the throughput ratio held to 1.5)")
    return "\n".join(lines)


def _gflop(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 1e9:.2f}"


def _utilization_row(rep: ModelReport, c: Contender) -> list[str]:
    r = c.runs[0]
    ours = r.engine_flops is not None
    computed = rep.computed_flops(c)
    static_pad = r.static_pad_flops if ours else computed - rep.useful_flops if computed is not None else None
    return [c.label, f"{c.duration_s:.2f}", f"{rep.useful_flops / c.duration_s / 1e9:.1f}",
            f"{rep.utilization(c):.1%}", _share(r.padding_share), _gflop(static_pad),
            _gflop(r.bucket_pad_flops if ours else None),
            "n/a" if computed is None else f"{computed / c.duration_s / 1e9:.1f}", _gflop(r.engine_flops)]


def _utilization(rep: ModelReport) -> str:
    b, a = rep.peak_before, rep.peak_after
    rows = [_utilization_row(rep, c) for c in rep.contenders if c.runs]
    return (f"### Compute utilization\n\nPeak (fp32 {PEAK_SIZE}^3 matmul): {b.flops / 1e9:.1f} GFLOP/s before the "
            f"runs (others {b.others_cores:.2f} cores), {a.flops / 1e9:.1f} GFLOP/s after (others "
            f"{a.others_cores:.2f}); used: the higher, {rep.peak / 1e9:.1f} GFLOP/s. Useful work: "
            f"{rep.useful_flops / 1e9:.2f} GFLOP for every system.\n\n"
            + _table(["system", "duration s", "useful GFLOP/s", "utilization", "padding (rows)",
                      "static pad GFLOP", "bucket pad GFLOP", "computed GFLOP/s (padding too)",
                      "useful GFLOP, engine's own count"], rows)
            + "\n\nThe engine's own count (summed per step) should equal the workload's useful work; padding "
              "columns are extra work on top, not in the utilization. Our static pad rows run the model body "
              "(one-key attention), finished members' rows their logits too, as HF's do; HF static's padding, "
              "worked out from its batches, is its left-pad rows, its finished members' decode rows with their "
              "logits, and the masked keys its attention computes (a prefill's whole padded width, left-pad "
              "keys in decode).")


def _breakdown(rep: ModelReport) -> str:
    ours = [c for c in rep.contenders if c.runs and c.runs[0].breakdown]
    if not ours:
        return ""
    parts = list(ours[0].runs[0].breakdown)
    rows = []
    for c in ours:
        dur = c.duration_s
        secs = [c.median(lambda r, p=p: r.breakdown[p]) for p in parts]  # type: ignore[misc]
        rows.append([c.label, *(f"{s:.3f} ({s / dur:.0%})" for s in secs)])
    return "### Where our engine's time goes (median seconds per run; share of the run)\n\n" + _table(
        ["system", *parts], rows)


def _every_run(rep: ModelReport) -> str:
    rows = [[c.label, str(a.round + 1), f"{a.result.output_tokens_per_s:,.1f}", f"{a.result.duration_s:.2f}",
             f"{a.others_cores:.2f}", "kept" if a.kept else "redone"]
            for c in rep.contenders for a in c.attempts]
    return "### Every run\n\n" + _table(["system", "round", "output tok/s", "duration s", "other load (cores)",
                                         "kept"], rows)
