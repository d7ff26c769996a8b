"""What paged attention implements, and the refusals for models that need more.

Paged attention computes plain causal softmax(q k^T * scale) v over a request's own tokens. A
model whose attention adds anything to the scores (soft-capping, sinks, ALiBi or another bias), or
attends to something other than its own past (cross-attention), would be served wrongly and
silently: Gemma-2 with soft-capping ignored loads and serves with logit errors of ~0.03. So such a
model is refused at load from its config, in one line naming the feature and the model type, and
the attention function refuses the keywords that carry those features in case a config hides them.
"""

from __future__ import annotations

from typing import Any

# Keywords transformers' attention modules pass when the scores need more than scale and a causal
# mask; a non-None value means the model wants it. Values: the feature, as the error names it.
UNSUPPORTED_KWARGS: dict[str, str] = {
    "softcap": "logit soft-capping in attention",
    "s_aux": "attention sinks",
    "sinks": "attention sinks",
    "position_bias": "an additive position bias (ALiBi / relative buckets)",
    "alibi": "ALiBi position bias",
    "alibi_slopes": "ALiBi position bias",
    "head_mask": "head masking",
    "encoder_hidden_states": "cross-attention",
}

SINK_MODEL_TYPES = frozenset({"gpt_oss"})  # sinks are a parameter of the attention module, not a config flag
ALIBI_MODEL_TYPES = frozenset({"bloom"})  # ALiBi always, no flag


def unsupported_attention_feature(config: Any) -> str | None:
    """The first attention feature of a transformers config that paged attention lacks, or None."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for cfg in (config, text):
        if getattr(cfg, "is_encoder_decoder", False):
            return "encoder-decoder attention (cross-attention to an encoder)"
        if getattr(cfg, "add_cross_attention", False) or getattr(cfg, "cross_attention_layers", None):
            return "cross-attention"
        softcap = getattr(cfg, "attn_logit_softcapping", None)
        if softcap:
            return f"logit soft-capping in attention (attn_logit_softcapping={softcap:g})"
        if getattr(cfg, "model_type", None) in SINK_MODEL_TYPES:
            return "attention sinks"
        if getattr(cfg, "model_type", None) in ALIBI_MODEL_TYPES or _uses_alibi(cfg):
            return "ALiBi position bias"
    return None


def _uses_alibi(cfg: Any) -> bool:
    if getattr(cfg, "alibi", False) is True or getattr(cfg, "position_embedding_type", None) == "alibi":
        return True
    attn_config = getattr(cfg, "attn_config", None)  # MPT keeps it one level down, as a dict or an object
    if isinstance(attn_config, dict):
        return bool(attn_config.get("alibi", False))
    return bool(getattr(attn_config, "alibi", False))


def unsupported_module_feature(model: Any) -> str | None:
    """Features visible only on the built modules (a sink parameter under any model type)."""
    for module in model.modules():
        if getattr(module, "sinks", None) is not None:
            return "attention sinks"
    return None


def check_attention_kwargs(kwargs: dict[str, object], attention_mask: object, is_cross: bool) -> None:
    """Raise NotImplementedError for what the attention function would otherwise swallow silently."""
    for name, feature in UNSUPPORTED_KWARGS.items():
        if kwargs.get(name) is not None:
            raise NotImplementedError(f"paged attention does not implement {feature} (got `{name}`)")
    if kwargs.get("is_causal") is False:
        raise NotImplementedError("paged attention is causal only; the model asked for bidirectional attention")
    if attention_mask is not None:
        # No mask function is registered for our name, so a mask here is a bias the model built itself.
        raise NotImplementedError("paged attention builds its own causal masks; the model passed an attention mask")
    if is_cross:
        raise NotImplementedError("paged attention does not implement cross-attention (keys from another sequence)")
