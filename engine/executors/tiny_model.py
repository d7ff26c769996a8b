"""`tiny`: a small random-weight Llama with an offline byte-level tokenizer, for tests and demos.

Nothing is downloaded: the weights come from a fixed seed and the tokenizer is built in code, so
the same `tiny` appears on every machine. It is saved once and then loaded through the ordinary
`from_pretrained` path, like any other model directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

TINY_SEED = 0
TINY_VOCAB_SIZE = 32_000
TINY_DIR_NAME = "tiny-llama-v1"  # bump the suffix when the config below changes
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")  # ids 0, 1, 2


def tiny_config_kwargs() -> dict[str, Any]:
    """~11M parameters: a 32k vocabulary (tied in/out embeddings) and four narrow layers."""
    return {
        "vocab_size": TINY_VOCAB_SIZE,
        "hidden_size": 256,
        "intermediate_size": 704,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,  # grouped-query attention, as in current Llamas
        "max_position_embeddings": 2048,
        "tie_word_embeddings": True,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "initializer_range": 0.05,  # a little wider than default so greedy outputs are not all one token
    }


def build_tiny_tokenizer() -> object:
    """A byte-level BPE whose vocabulary exactly fills the model's: every id decodes to 1-2 bytes.

    Ids 3..258 are the 256 bytes; the rest are two-byte merges, printable ASCII pairs first, so
    English text encodes to roughly two characters per token.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_chars = bytes_to_unicode()
    vocab: dict[str, int] = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for b in range(256):
        vocab[byte_chars[b]] = len(vocab)
    printable_first = [*range(97, 123), *range(65, 91), 32, *range(33, 65), *range(91, 97), *range(123, 256),
                       *range(0, 32)]
    order = [byte_chars[b] for b in printable_first]
    merges: list[tuple[str, str]] = []
    for a in order:
        for c in order:
            if len(vocab) >= TINY_VOCAB_SIZE:
                break
            vocab[a + c] = len(vocab)
            merges.append((a, c))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<unk>")


def ensure_tiny_model(cache_dir: Path) -> Path:
    """The tiny model's directory under cache_dir, built and saved on first use."""
    target = cache_dir / TINY_DIR_NAME
    if (target / "config.json").is_file() and (target / "tokenizer.json").is_file():
        return target
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cache_dir.mkdir(parents=True, exist_ok=True)
    # Build in a private folder, then rename: two processes starting at once never see half a model.
    staging = Path(tempfile.mkdtemp(prefix=f".{TINY_DIR_NAME}-", dir=cache_dir))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(TINY_SEED)
            model = LlamaForCausalLM(LlamaConfig(**tiny_config_kwargs()))
        model.save_pretrained(staging)
        build_tiny_tokenizer().save_pretrained(staging)  # type: ignore[attr-defined]
        os.chmod(staging, 0o755)  # mkdtemp makes it private; the cache is an ordinary folder
        try:
            os.replace(staging, target)
        except OSError:
            if not (target / "config.json").is_file():  # lost a race only if the winner finished
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
