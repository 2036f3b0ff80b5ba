"""Model, data and training presets, in one place. Every stage reads its defaults for a preset from here.

`small` is the seed's recipe (GPT-2 small, vocabulary 52,000, context 1,024, AdamW lr 5e-5, cosine with
1,000 warmup steps, batch 4, 5 epochs); `medium` and `large` are the GPT-2 sizes with the usual GPT-2/3
optimiser settings; `tiny` is tuned to learn as much as it can in minutes on a 2-core CPU from a corpus of
tens of megabytes (the stdlib): small vocabulary and context, no dropout, Muon for the blocks' matrices, a
warmup-stable-decay schedule and zero-initialised output projections (docs/benchmarks.md, "Recipe"). Its
training settings are also what a model sized to a time budget trains with (train/sizing.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from pycpilot.errors import PycpilotError


@dataclass(frozen=True)
class Preset:
    name: str
    vocab_size: int
    context_length: int
    n_layer: int
    n_head: int
    n_embd: int
    # Training defaults.
    lr: float
    warmup_steps: int
    batch_size: int
    epochs: float
    dropout: float
    weight_decay: float
    beta2: float
    min_lr_ratio: float
    seq_warmup: float = 0.0
    optimizer: str = "adamw"  # adamw, or muon for the blocks' weight matrices (AdamW for the rest)
    muon_lr: float = 0.02
    schedule: str = "cosine"  # cosine, or wsd: warmup-stable-decay
    decay: float = 0.2  # wsd: the share of the run spent decaying
    zero_init: bool = False  # start every block's output projections (attn.c_proj, mlp.c_proj) at zero


# tiny was tuned by 150 s runs on the stdlib (valid bits per byte): 4 x 256 -> 2.02, 4 x 192 -> 2.00, 4 x 128
# -> 1.97 (a smaller model sees more tokens: 9,100 vs 4,300 tokens/s), plus sequence-length warmup over 80% of
# the budget -> 1.92; lr 6e-3 and vocabulary 4,096 were worse, batch 8 no better. All in fp32; with bf16
# autocast on a CPU with native bf16 the order holds: 4 x 128 1.75, 4 x 192 1.80, 4 x 256 1.83.
# Then (issue 12, 600-step runs, bf16, valid bits per byte): Muon at 0.01 for the block matrices 1.782 -> 1.632
# (0.02: 1.640, 0.04: 1.691), wsd decaying to 0 over the last 30% -> 1.730 (a cosine to 0: 1.824), zero-init
# -> 1.764; all three 1.598, and with AdamW's lr (now only embeddings, norms, biases) at 6e-3 1.580 (decaying
# over the last 50% instead: 1.590). Sequence-length warmup no longer changes the figure at equal tokens
# (1.598 without) but its short rows run faster, so it stays.
PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "tiny",
            4096,  # 8,192 until 2026-12-05: 4,096 ended 0.02 bits per byte lower at 6 minutes, twice (benchmarks.md)
            256,
            n_layer=4,
            n_head=4,
            n_embd=128,
            lr=6e-3,  # AdamW's, for the embeddings, LayerNorms and biases (Muon takes the matrices)
            warmup_steps=50,
            batch_size=16,
            epochs=1,
            dropout=0.0,
            weight_decay=0.1,
            beta2=0.95,
            min_lr_ratio=0.0,
            seq_warmup=0.8,
            optimizer="muon",
            muon_lr=0.01,
            schedule="wsd",
            decay=0.3,
            zero_init=True,
        ),
        # The seed: torch's AdamW defaults (weight decay 0.01, betas 0.9/0.999) and GPT-2's dropout 0.1.
        Preset(
            "small",
            52000,
            1024,
            n_layer=12,
            n_head=12,
            n_embd=768,
            lr=5e-5,
            warmup_steps=1000,
            batch_size=4,
            epochs=5,
            dropout=0.1,
            weight_decay=0.01,
            beta2=0.999,
            min_lr_ratio=0.0,
        ),
        Preset(
            "medium",
            52000,
            1024,
            n_layer=24,
            n_head=16,
            n_embd=1024,
            lr=3e-4,
            warmup_steps=2000,
            batch_size=8,
            epochs=1,
            dropout=0.0,
            weight_decay=0.1,
            beta2=0.95,
            min_lr_ratio=0.1,
        ),
        Preset(
            "large",
            52000,
            1024,
            n_layer=36,
            n_head=20,
            n_embd=1280,
            lr=2.5e-4,
            warmup_steps=2000,
            batch_size=8,
            epochs=1,
            dropout=0.0,
            weight_decay=0.1,
            beta2=0.95,
            min_lr_ratio=0.1,
        ),
    )
}


# --init-from: training settings that suit a model that has learned already (each given option wins): AdamW for
# every weight (Muon's orthogonalised updates are made for training from scratch), a learning rate for the
# model's width (fine_tuning_lr), a short warmup, a cosine to a tenth, no re-initialisation and no
# sequence-length warmup; dropout is the source model's own. Measured in docs/benchmarks.md ("Fine-tuning").
FINE_TUNING = {
    "optimizer": "adamw",
    "warmup_steps": 20,
    "schedule": "cosine",
    "min_lr_ratio": 0.1,
    "weight_decay": 0.1,
    "zero_init": False,
    "seq_warmup": 0.0,
}


def fine_tuning_lr(n_embd: int) -> float:
    """AdamW's best learning rate falls about as 1/width (the muP rule for hidden weights): 3e-4, the usual
    fine-tuning rate of GPT-2 small (768 wide), scaled to `n_embd` and capped at 3e-3 (2.4e-3 for the demo's
    96-wide model, where 3e-4 barely moved it: docs/benchmarks.md, "Fine-tuning")."""
    return min(3e-3, 3e-4 * 768 / n_embd)


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise PycpilotError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
