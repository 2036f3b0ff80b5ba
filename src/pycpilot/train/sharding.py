"""How the model is spread over processes: DDP (every rank holds it all) or FSDP (every rank holds a 1/N shard
of the weights, gradients and optimiser state; each GPT-2 block is gathered just for its own forward and
backward). And the full, unsharded state both ways, for checkpoints that load anywhere.

FSDP is torch's fully_shard (FSDP2): it changes the modules in place, so `lossy` stays the module to call, and
parameters become DTensors. Checkpoints always hold the full state with parameter names as keys (torch's
distributed state-dict API), so a run saved by N sharded ranks resumes on 1 process, and the other way round.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)

from pycpilot.train.optim import OptimizerSet
from pycpilot.train.runtime import Runtime

PREFIX = "model."  # FusedLossLM holds the GPT2LMHeadModel as `model`


def use_fsdp(setting: str, preset: str, rt: Runtime) -> bool:
    """auto: for `large` (its fp32 weights, gradients and AdamW state alone are ~12 GiB per copy) on 2+ ranks."""
    if rt.world < 2:
        return False
    return setting == "on" or (setting == "auto" and preset == "large")


def wrap(lossy: torch.nn.Module, rt: Runtime, fsdp: bool) -> torch.nn.Module:
    """The module the loop calls: `lossy` itself (1 process or FSDP, sharded in place) or a DDP wrapper."""
    if rt.world < 2:
        return lossy
    if not fsdp:
        return torch.nn.parallel.DistributedDataParallel(
            lossy, device_ids=[rt.local_rank] if rt.device.type == "cuda" else None
        )
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(rt.device.type, (rt.world,))
    for block in lossy.model.transformer.h:
        fully_shard(block, mesh=mesh)
    fully_shard(lossy, mesh=mesh)  # the rest: embeddings (tied to the output layer), final LayerNorm
    return lossy


def set_sync(step_fn: torch.nn.Module, sync: bool) -> Any:
    """Gradient sync only on the last micro-batch of an accumulation: DDP's no_sync, FSDP's flag."""
    import contextlib

    if hasattr(step_fn, "set_requires_gradient_sync"):  # FSDP2
        step_fn.set_requires_gradient_sync(sync)
        return contextlib.nullcontext()
    if hasattr(step_fn, "no_sync") and not sync:
        return step_fn.no_sync()
    return contextlib.nullcontext()


_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_model_state(lossy: torch.nn.Module, fsdp: bool) -> dict[str, torch.Tensor] | None:
    """The GPT2LMHeadModel's full weights for save_pretrained (every rank calls it; None: use the model's own)."""
    if not fsdp:
        return None
    state = {k.removeprefix(PREFIX): v for k, v in get_model_state_dict(lossy, options=_FULL).items()}
    if lossy.model.config.tie_word_embeddings:  # gathered copies are two tensors: keep the file as save_pretrained's
        state.pop("lm_head.weight", None)
    return state


def full_optimizer_state(lossy: torch.nn.Module, optimizer: OptimizerSet) -> dict[str, Any]:
    """The optimisers' state keyed by parameter names, unsharded (every rank calls it; rank 0 writes it)."""
    return get_optimizer_state_dict(lossy, optimizer.optimizers, options=_FULL)


def load_optimizer_state(lossy: torch.nn.Module, optimizer: OptimizerSet, state: dict[str, Any]) -> None:
    """The inverse: every rank passes the full state and keeps its own shard."""
    options = StateDictOptions(full_state_dict=True)
    set_optimizer_state_dict(lossy, optimizer.optimizers, optim_state_dict=state, options=options)
