"""A GPT-2's weights as llama.cpp's `gpt2` graph reads them: names, layout and storage type per tensor.

Guarantee: `gguf_tensors` yields every weight the graph needs exactly once, under llama.cpp's names, in
torch's [out, in] layout (transformers' `Conv1D` keeps [in, out]: transposed here, as llama.cpp's converter
does); norms, biases and position embeddings stay f32, other matrices take the asked type, and q8_0 falls back
to f16 for a matrix whose rows are not whole 32-value blocks. A model the graph would compute differently
(another activation, attention scaling or architecture) is refused in one line by `check_graph`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from pycpilot.errors import PycpilotError

TYPES = ("f32", "f16", "q8_0")
Q8_BLOCK = 32  # values per q8_0 block: a row must hold whole blocks

# transformers' GPT-2 names -> llama.cpp's (gguf.TENSOR_NAMES spells the same); Conv1D weights are transposed
_LAYER = {
    "ln_1": "attn_norm",
    "attn.c_attn": "attn_qkv",
    "attn.c_proj": "attn_output",
    "ln_2": "ffn_norm",
    "mlp.c_fc": "ffn_up",
    "mlp.c_proj": "ffn_down",
}
_CONV1D = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
_TOP = {"transformer.wte": "token_embd", "transformer.wpe": "position_embd", "transformer.ln_f": "output_norm",
        "lm_head": "output"}  # fmt: skip
_TANH_GELU = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")  # llama.cpp's ggml_gelu is the tanh approximation


@dataclass
class Tensor:
    name: str
    data: np.ndarray  # as stored: float32, float16 or q8_0 bytes
    kind: str  # "f32", "f16" or "q8_0"
    shape: tuple[int, ...]  # the values' shape (torch order), whatever the storage


def check_graph(config: Any, where: str) -> None:
    """Refuse what llama.cpp's gpt2 graph does not compute: its words name the setting."""
    if getattr(config, "model_type", None) != "gpt2":
        raise PycpilotError(
            f"{where} is a {getattr(config, 'model_type', 'unknown')} model: export writes the GPT-2 family "
            "(model_type gpt2), which is what PYCPilot trains"
        )
    act = getattr(config, "activation_function", "gelu_new")
    if act not in _TANH_GELU:
        raise PycpilotError(f"{where} uses activation {act}; llama.cpp's GPT-2 computes the tanh GELU (gelu_new)")
    for flag, wanted in (("scale_attn_by_inverse_layer_idx", False), ("scale_attn_weights", True),
                         ("add_cross_attention", False)):  # fmt: skip
        if bool(getattr(config, flag, wanted)) != wanted:
            raise PycpilotError(f"{where} sets {flag}={not wanted}, which llama.cpp's GPT-2 does not compute")


def gguf_name(hf_name: str) -> str | None:
    """llama.cpp's name for a transformers GPT-2 weight; None for buffers the graph does not read."""
    stem, _, kind = hf_name.rpartition(".")
    if stem in _TOP:
        return f"{_TOP[stem]}.{kind}"
    parts = stem.split(".")
    if len(parts) >= 4 and parts[:2] == ["transformer", "h"] and parts[2].isdigit():
        sub = ".".join(parts[3:])
        if sub in _LAYER:
            return f"blk.{parts[2]}.{_LAYER[sub]}.{kind}"
    return None  # attn.bias / masked_bias (the causal mask buffers of older transformers)


def storage(name: str, values: np.ndarray, kind: str) -> str:
    """The type a tensor is written in: see the module docstring."""
    if values.ndim < 2 or not name.endswith(".weight") or name.endswith("_norm.weight") or name.startswith("position_"):
        return "f32"
    if kind == "q8_0" and values.shape[-1] % Q8_BLOCK:
        return "f16"
    return kind


def gguf_tensors(model: Any, kind: str) -> Iterator[Tensor]:
    """The model's weights for llama.cpp (see the module docstring); a tied output matrix is not written (the
    graph then reads token_embd), an untied one is."""
    from gguf import GGMLQuantizationType, quantize

    if kind not in TYPES:
        raise PycpilotError(f"--type must be one of {', '.join(TYPES)}, not {kind}")
    state = model.state_dict()
    head, wte = state.get("lm_head.weight"), state.get("transformer.wte.weight")
    tied = head is not None and wte is not None and head.data_ptr() == wte.data_ptr()
    seen: set[str] = set()
    for hf_name, tensor in state.items():
        name = gguf_name(hf_name)
        if name is None or (name == "output.weight" and tied):
            continue
        values = tensor.detach().float().cpu()
        if any(hf_name.endswith(f"{c}.weight") for c in _CONV1D):
            values = values.t()
        values = values.contiguous().numpy()
        chosen = storage(name, values, kind)
        if chosen == "q8_0":
            data = quantize(values, GGMLQuantizationType.Q8_0)
        else:
            data = values.astype(np.float16 if chosen == "f16" else np.float32)
        seen.add(name)
        yield Tensor(name, data, chosen, tuple(values.shape))
    needed = {"token_embd.weight", "position_embd.weight", "output_norm.weight", "output_norm.bias"}
    if needed - seen:
        raise PycpilotError(f"the model has no {', '.join(sorted(needed - seen))}: not a GPT2LMHeadModel's weights")
