"""A decode loop written for speed: GPT-2's forward pass for generation only, with a preallocated KV cache.

transformers' `generate` pays per new token for its logits processors, cache objects, masks and a full
module-tree walk; for a model of a few million parameters that overhead is most of the time. Here the
weights are pulled out of the transformers model once. The prompt runs through torch (~10 tensor ops per
layer, the model's own kernels) and its cache is copied to the `n` rows of a batch; each new token then runs
through the C step of native.py (one call per token, threads over the weight rows) or, without a C compiler,
through the same torch ops. Greedy output is transformers' token for token either way (tested).

`int8=True` quantises every weight matrix (output layer included) per output channel: the C step reads int8
rows and scales them; torch runs the prompt with the dequantised weights, so both compute the same model.
Without the C step, torch's dynamic-quantised linear kernel (fbgemm: activations quantised per call) runs it."""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F

from pycpilot.errors import PycpilotError
from pycpilot.generate.native import ACTIVATIONS, NativeLinear, NativeStep, load_library


class Unsupported(PycpilotError):
    """This model is not a plain GPT-2: the caller falls back to transformers' generate."""


class _Linear:
    """y = x @ W + b with W in GPT-2's Conv1D layout [in, out]; or its int8 twin."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, int8: bool) -> None:
        self.int8 = int8
        self.bias = bias
        if int8:
            w = weight.t().contiguous().float()  # [out, in], what the quantised kernel takes
            scales = (w.abs().amax(dim=1) / 127).clamp(min=1e-8)
            zeros = torch.zeros(len(scales), dtype=torch.long)
            with warnings.catch_warnings():  # torch marks quantised tensors deprecated; still its int8 CPU path
                warnings.simplefilter("ignore")
                q = torch.quantize_per_channel(w, scales.double(), zeros, 0, torch.qint8)
            self.packed = torch.ops.quantized.linear_prepack(q, None if bias is None else bias.float())
        else:
            self.weight = weight

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.int8:
            return torch.ops.quantized.linear_dynamic(x, self.packed)
        if self.bias is None:
            return x @ self.weight
        return torch.addmm(self.bias, x, self.weight)


class FastGPT2:
    """Generation-only GPT-2 over a transformers GPT2LMHeadModel's weights (which it shares, not copies)."""

    def __init__(self, model: Any, int8: bool = False, native: bool = True, threads: int | None = None) -> None:
        from transformers.activations import ACT2FN

        cfg = model.config
        if cfg.model_type != "gpt2" or cfg.scale_attn_by_inverse_layer_idx or cfg.reorder_and_upcast_attn:
            raise Unsupported(f"the fast decoder handles plain GPT-2 models, not this {cfg.model_type}")
        self.config = cfg
        self.n_layer, self.n_head, self.d = cfg.n_layer, cfg.n_head, cfg.n_embd
        self.head_dim = self.d // self.n_head
        self.scale = self.head_dim**-0.5
        self.eps = cfg.layer_norm_epsilon
        self.max_positions = cfg.n_positions
        self.act = ACT2FN[cfg.activation_function]
        t = model.transformer
        self.wte, self.wpe = t.wte.weight.detach(), t.wpe.weight.detach()
        self.ln_f = (t.ln_f.weight.detach(), t.ln_f.bias.detach())
        head = model.lm_head.weight.detach()  # [vocab, d]
        self.vocab = head.shape[0]
        self.threads = threads or torch.get_num_threads()
        self.lib, self.native_note = None, "not asked for"
        if native and self.wte.device.type == "cpu":  # the C step reads CPU memory
            self.lib, self.native_note = load_library()
            if self.lib is not None and (self.wte.dtype != torch.float32 or cfg.activation_function not in ACTIVATIONS):
                self.lib, self.native_note = None, f"{self.wte.dtype} weights, {cfg.activation_function}"
        fbgemm = int8 and self.lib is None
        # fbgemm quantises a call's activations with one scale for all its rows: a row's result then depends
        # on the rows beside it, so this path must not batch different requests (serve runs them one by one).
        self.rows_independent = not fbgemm
        self.int8_activations = bool(int8 and self.lib is not None and self.lib.pyc_int8_activations())
        if fbgemm and ("quantized" not in dir(torch.ops) or not torch.backends.quantized.supported_engines):
            raise PycpilotError("--int8 needs torch's quantised CPU kernels (or a C compiler), which are missing")
        # With the C step, it does every new token and torch runs the prompt with the same weights (for int8:
        # the dequantised ones, so both compute the same model); without it, torch does both.
        self.layers: list[dict[str, Any]] = []
        self.native_layers: list[dict[str, NativeLinear]] = []
        for block in t.h:
            layer: dict[str, Any] = {
                "ln_1": (block.ln_1.weight.detach(), block.ln_1.bias.detach()),
                "ln_2": (block.ln_2.weight.detach(), block.ln_2.bias.detach()),
            }
            parts = {}
            for name, conv in (("attn", block.attn.c_attn), ("proj", block.attn.c_proj),
                               ("fc", block.mlp.c_fc), ("out", block.mlp.c_proj)):  # fmt: skip
                weight, bias = conv.weight.detach(), conv.bias.detach()  # [in, out]
                if self.lib is not None:
                    parts[name] = NativeLinear(weight.t(), bias, int8, self.int8_activations)
                    weight = parts[name].dequantized() if int8 else weight
                layer[name] = _Linear(weight, bias, fbgemm)
            self.layers.append(layer)
            self.native_layers.append(parts)
        if self.lib is not None:
            self.native_head = NativeLinear(head, None, int8, self.int8_activations)
            self.head = _Linear(self.native_head.dequantized() if int8 else head.t(), None, False)
        else:
            self.head = _Linear(head.t().contiguous(), None, int8)  # [d, vocab]: GEMV 2x faster than on [vocab, d]

    @torch.inference_mode()
    def step_rows(self, ids: list[int], pos: list[int], slots: list[int], cache: KVCache) -> torch.Tensor:
        """One new token for each of several rows, each at its own position and cache slot (a server's requests
        side by side), in torch ops: what the C step's `run_rows` does, for the torch engine and for GPUs.
        Logits [rows, vocab]."""
        rows, batch, length = len(ids), cache.keys[0].shape[0], cache.keys[0].shape[2]
        if not (0 < rows <= batch and len(pos) == rows and len(slots) == rows and len(set(slots)) == rows):
            raise IndexError(f"{rows} rows for a cache of {batch} (one position and one distinct slot each)")
        if max(pos) >= min(length, self.max_positions) or min(pos) < 0 or not all(0 <= s < batch for s in slots):
            raise IndexError(f"a position past the cache or the model's context ({min(length, self.max_positions)})")
        if not all(0 <= i < self.vocab for i in ids):
            raise IndexError("token id outside the vocabulary")
        device = self.wte.device
        d, heads, head_dim, eps, scale = self.d, self.n_head, self.head_dim, self.eps, self.scale
        tok, at, slot = (torch.tensor(v, device=device) for v in (ids, pos, slots))
        span = max(pos) + 1
        seen = (torch.arange(span, device=device) <= at[:, None])[:, None, None, :]  # [rows, 1, 1, span]
        x = self.wte[tok] + self.wpe[at]
        for layer, keys, values in zip(self.layers, cache.keys, cache.values, strict=True):
            h = F.layer_norm(x, (d,), *layer["ln_1"], eps)
            q, k, v = layer["attn"](h).view(rows, 3, heads, head_dim).unbind(1)
            keys[slot, :, at] = k
            values[slot, :, at] = v
            a = F.scaled_dot_product_attention(
                q[:, :, None], keys[slot, :, :span], values[slot, :, :span], seen, scale=scale
            )
            x = x + layer["proj"](a.reshape(rows, d))
            h = F.layer_norm(x, (d,), *layer["ln_2"], eps)
            x = x + layer["out"](self.act(layer["fc"](h)))
        return self.head(F.layer_norm(x, (d,), *self.ln_f, eps))

    def new_cache(self, batch: int, length: int, zero: bool = False) -> KVCache:
        """`zero`: for step_rows, which reads each slot up to the longest row and masks the rest (a NaN left
        in fresh memory would survive the mask: NaN times a zero weight)."""
        return KVCache(self.n_layer, batch, self.n_head, length, self.head_dim, self.wte.dtype, self.wte.device, zero)

    @torch.inference_mode()
    def step(self, ids: torch.Tensor, start: int, cache: KVCache, every: bool = False) -> torch.Tensor:
        """Run `ids` [batch, T] at positions start.. over the cache's first `start` positions; logits of the last
        position [batch, vocab], or of every position [batch, T, vocab] with `every` (for scoring). T > 1 with
        start > 0 is the rest of a prompt whose beginning is cached already (serve's prompt cache)."""
        b, t = ids.shape
        end = start + t
        if self.lib is not None and t == 1 and start > 0 and not every:
            if getattr(cache, "native", None) is None:
                cache.native = NativeStep(self.lib, self, cache, self.threads)
            return cache.native.run(ids, start)
        d, heads, head_dim, eps, scale = self.d, self.n_head, self.head_dim, self.eps, self.scale
        device = self.wte.device
        ids = ids.to(device)
        x = self.wte[ids] + self.wpe[start:end]
        last = len(self.layers) - 1
        # The rest of a cached prompt: queries at start.. see every cached key and their own past.
        span = torch.arange(end, device=device)
        mask = span <= torch.arange(start, end, device=device)[:, None] if t > 1 and start > 0 else None
        for i, (layer, keys, values) in enumerate(zip(self.layers, cache.keys, cache.values, strict=True)):
            h = F.layer_norm(x, (d,), *layer["ln_1"], eps)
            q, k, v = layer["attn"](h.view(b * t, d)).view(b, t, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
            keys[:, :, start:end] = k
            values[:, :, start:end] = v
            if i == last and t > 1 and not every:  # only the last position's output is used: the rest of the
                q, x, t = q[:, :, -1:], x[:, -1:], 1  # last layer runs for it alone (a prompt's ~1/n_layer less)
            if mask is not None and t > 1:
                a = F.scaled_dot_product_attention(q, keys[:, :, :end], values[:, :, :end], mask, scale=scale)
            else:
                a = F.scaled_dot_product_attention(
                    q, keys[:, :, :end], values[:, :, :end], is_causal=t > 1, scale=scale
                )
            x = x + layer["proj"](a.transpose(1, 2).reshape(b * t, d)).view(b, t, d)
            h = F.layer_norm(x, (d,), *layer["ln_2"], eps)
            x = x + layer["out"](self.act(layer["fc"](h.view(b * t, d)))).view(b, t, d)
        if every:
            return self.head(F.layer_norm(x, (d,), *self.ln_f, eps).view(b * t, d)).view(b, t, -1)
        return self.head(F.layer_norm(x[:, -1], (d,), *self.ln_f, eps))


class KVCache:
    """Keys and values of every layer, [batch, head, position, head_dim] each, allocated once per call."""

    def __init__(
        self,
        layers: int,
        batch: int,
        heads: int,
        length: int,
        head_dim: int,
        dtype: torch.dtype,
        device: Any = "cpu",
        zero: bool = False,
    ) -> None:
        self.native: NativeStep | None = None  # the C step bound to these tensors, made on first use
        shape, make = (batch, heads, length, head_dim), torch.zeros if zero else torch.empty
        self.keys = [make(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [make(shape, dtype=dtype, device=device) for _ in range(layers)]

    def row(self, index: int) -> KVCache:
        """A view of one batch row (the prompt is run once, into row 0)."""
        view = KVCache.__new__(KVCache)
        view.native = None
        view.keys = [k[index : index + 1] for k in self.keys]
        view.values = [v[index : index + 1] for v in self.values]
        return view

    def copy_row(self, source: int, length: int) -> None:
        """Copy row `source`'s first `length` positions to every row."""
        for cache in (*self.keys, *self.values):
            cache[:, :, :length] = cache[source : source + 1, :, :length]
