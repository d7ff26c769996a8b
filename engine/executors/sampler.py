"""Token sampling: greedy, temperature, top-k, top-p, with a reproducible generator per request.

A request with a seed gets its own torch.Generator, kept across steps (so a request draws the
same tokens whatever else shares its batch, and across preemptions) and dropped when the request
finishes. Sampling uses the exponential race (argmax of p / E with E ~ Exp(1)), equivalent to
drawing from p, so only the noise is per request and everything else is batched.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from engine.sampling_params import SamplingParams
from engine.token_logprobs import TokenLogprobs


class Sampler:
    def __init__(self, device: torch.device, seed: int = 0) -> None:
        self.device = device
        self._generators: dict[str, torch.Generator] = {}
        self._shared = torch.Generator(device=device)  # requests without a seed draw from this one
        self._shared.manual_seed(seed)

    def drop(self, request_ids: Iterable[str]) -> None:
        """Forget finished requests' generators."""
        for rid in request_ids:
            self._generators.pop(rid, None)

    def clear(self) -> None:
        self._generators.clear()

    @property
    def num_generators(self) -> int:
        return len(self._generators)

    def sample(self, logits: torch.Tensor, request_ids: Sequence[str], params: Sequence[SamplingParams],
               held_off: Sequence[tuple[int, ...]] = ()) -> list[int]:
        """One token per row of logits [R, V]; row i belongs to request_ids[i] and never draws a token in
        held_off[i] (EOS and stop tokens before min_tokens, as vLLM's min-tokens processor masks them)."""
        if any(held_off):
            logits = _hold_off(logits, held_off)
        greedy = [p.temperature == 0 for p in params]
        if all(greedy):  # the common case: one batched argmax
            return logits.argmax(dim=-1).tolist()
        tokens = logits.argmax(dim=-1)
        rows = [i for i, g in enumerate(greedy) if not g]
        row_index = torch.tensor(rows, device=logits.device)
        sampled = self._sample_rows(logits.index_select(0, row_index), [request_ids[i] for i in rows],
                                    [params[i] for i in rows])
        tokens.index_copy_(0, row_index, sampled)
        return tokens.tolist()

    @staticmethod
    def logprobs(logits: torch.Tensor, tokens: Sequence[int], request_ids: Sequence[str],
                 params: Sequence[SamplingParams]) -> dict[str, TokenLogprobs]:
        """The raw log-probabilities (log-softmax of the model's logits, before any sampling
        transform: vLLM's raw_logprobs) of each row's sampled token, with its rank and the row's
        `params.logprobs` most likely tokens, for the rows whose params ask for them."""
        rows = [i for i, p in enumerate(params) if p.logprobs is not None]
        if not rows:
            return {}
        row_index = torch.tensor(rows, device=logits.device)
        lp = torch.log_softmax(logits.index_select(0, row_index).float(), dim=-1)
        chosen = torch.tensor([tokens[i] for i in rows], device=logits.device)
        chosen_lp = lp.gather(1, chosen.unsqueeze(1))
        ranks = (lp > chosen_lp).sum(dim=1).add_(1).tolist()  # 1 + tokens strictly more likely
        k_max = max(params[i].logprobs or 0 for i in rows)
        top_lp, top_ids = lp.topk(k_max, dim=-1) if k_max else (lp[:, :0], lp[:, :0].long())
        top_lp_rows, top_id_rows, chosen_rows = top_lp.tolist(), top_ids.tolist(), chosen_lp.squeeze(1).tolist()
        out: dict[str, TokenLogprobs] = {}
        for j, i in enumerate(rows):
            k = params[i].logprobs or 0
            top = tuple(zip(top_id_rows[j][:k], top_lp_rows[j][:k], strict=True))
            out[request_ids[i]] = TokenLogprobs(tokens[i], chosen_rows[j], ranks[j], top)
        return out

    def _sample_rows(self, logits: torch.Tensor, request_ids: Sequence[str],
                     params: Sequence[SamplingParams]) -> torch.Tensor:
        dev = logits.device
        x = logits.float() / torch.tensor([p.temperature for p in params], device=dev).unsqueeze(1)
        top_k = [p.top_k if p.top_k > 0 else 0 for p in params]
        if any(top_k):
            x = _apply_top_k(x, top_k)
        top_p = [float(p.top_p) for p in params]
        if any(p < 1.0 for p in top_p):
            x = _apply_top_p(x, torch.tensor(top_p, device=dev))
        probs = torch.softmax(x, dim=-1)
        noise = torch.empty_like(probs)
        for i, (rid, p) in enumerate(zip(request_ids, params, strict=True)):
            noise[i].exponential_(generator=self._generator(rid, p.seed))
        return probs.div_(noise).argmax(dim=-1)

    def _generator(self, request_id: str, seed: int | None) -> torch.Generator:
        if seed is None:
            return self._shared
        gen = self._generators.get(request_id)
        if gen is None:
            gen = self._generators[request_id] = torch.Generator(device=self.device)
            gen.manual_seed(seed)
        return gen


def _hold_off(logits: torch.Tensor, held_off: Sequence[tuple[int, ...]]) -> torch.Tensor:
    """A copy of logits with each row's held-off tokens at -inf (ids beyond the vocabulary skipped)."""
    vocab = logits.shape[-1]
    pairs = [(row, t) for row, ids in enumerate(held_off) for t in ids if 0 <= t < vocab]
    if not pairs:
        return logits
    rows, cols = torch.tensor(pairs, dtype=torch.long, device=logits.device).T
    return logits.index_put((rows, cols), torch.tensor(float("-inf"), dtype=logits.dtype, device=logits.device))


def _apply_top_k(x: torch.Tensor, top_k: list[int]) -> torch.Tensor:
    """Keep each row's k largest logits (k = 0 keeps all)."""
    vocab = x.shape[-1]
    ks = torch.tensor([min(k, vocab) if k > 0 else vocab for k in top_k], device=x.device)
    kmax = int(ks.max())
    top = x.topk(kmax, dim=-1).values  # sorted descending
    threshold = top.gather(1, (ks - 1).unsqueeze(1))
    return x.masked_fill(x < threshold, float("-inf"))


def _apply_top_p(x: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability reaches top_p (at least one)."""
    sorted_x, order = x.sort(dim=-1, descending=True)
    probs = sorted_x.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs
    remove_sorted = mass_before >= top_p.unsqueeze(1)  # the more likely tokens already reach top_p
    remove = torch.zeros_like(remove_sorted).scatter(1, order, remove_sorted)
    return x.masked_fill(remove, float("-inf"))
