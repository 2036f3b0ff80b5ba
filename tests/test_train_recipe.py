"""The training recipe: Muon on GPT-2's Conv1D matrices, the schedules, zero-initialised projections, and a
model sized to a time budget."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch

from pycpilot.errors import PycpilotError
from pycpilot.train import TrainConfig, train
from pycpilot.train.optim import _conv1d_correction, is_block_matrix, lr_factor, make_optimizer
from pycpilot.train.sizing import LADDER, Shape, choose_size
from test_train import _cfg

CPU = torch.device("cpu")


@pytest.fixture
def packed(train_pack: Path) -> Path:
    return train_pack


def _gpt2(n_embd: int = 16, zero_init: bool = False):
    from transformers import GPT2Config

    from pycpilot.train.model import build_model

    config = GPT2Config(vocab_size=64, n_positions=16, n_layer=2, n_head=2, n_embd=n_embd)
    return build_model(config, grad_checkpointing=False, zero_init=zero_init)


def test_muon_takes_the_block_matrices_and_adamw_the_rest() -> None:
    model = _gpt2()
    opt = make_optimizer(model, name="muon", lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95), device=CPU, muon_lr=0.02)
    muon, adamw = opt.optimizers
    names = {id(p): n for n, p in model.named_parameters()}
    in_muon = {names[id(p)] for g in muon.param_groups for p in g["params"]}
    in_adamw = {names[id(p)] for g in adamw.param_groups for p in g["params"]}
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    kinds = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    assert in_muon == {f"transformer.h.{i}.{m}.weight" for i in range(2) for m in kinds}
    assert {"transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight"} <= in_adamw
    assert not in_muon & in_adamw and len(in_muon | in_adamw) == len({id(p) for p in model.parameters()})
    plain = make_optimizer(model, name="adamw", lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95), device=CPU)
    assert [type(o) for o in plain.optimizers] == [torch.optim.AdamW]
    assert not is_block_matrix("transformer.wte.weight", model.transformer.wte.weight)


def test_muon_steps_a_conv1d_matrix_as_the_linear_matrix_it_stands_for() -> None:
    """Conv1D keeps (in, out): our group factor makes its update the transpose of torch's Muon on (out, in)."""
    torch.manual_seed(0)
    model = _gpt2(n_embd=16)
    for name, p in model.named_parameters():
        p.grad = torch.randn_like(p) if is_block_matrix(name, p) else None
    fc = model.transformer.h[0].mlp.c_fc.weight  # (16, 64): in 16, out 64
    proj = model.transformer.h[0].mlp.c_proj.weight  # (64, 16)
    expected = {}
    for w in (fc, proj):
        linear = torch.nn.Parameter(w.detach().t().clone())
        linear.grad = w.grad.t().clone()
        ref = torch.optim.Muon([linear], lr=0.02, weight_decay=0.0)
        ref.step()
        expected[id(w)] = linear.detach().t()
    opt = make_optimizer(model, name="muon", lr=0.0, weight_decay=0.0, betas=(0.9, 0.95), device=CPU, muon_lr=0.02)
    opt.set_lr(1.0)
    opt.optimizers[0].step()
    for w in (fc, proj):
        assert torch.allclose(w.detach(), expected[id(w)], atol=1e-6)
    assert _conv1d_correction(fc.shape) == 2.0 and _conv1d_correction(proj.shape) == 0.5


def test_wsd_holds_then_decays_straight_to_its_floor() -> None:
    f = [lr_factor(s / 100, s, warmup=5, min_ratio=0.1, schedule="wsd", decay=0.2) for s in range(150)]
    assert f[0] < f[4] < 1.0 and set(f[5:81]) == {1.0}  # warmup, then stable until 80% of the run
    assert all(a > b for a, b in itertools.pairwise(f[80:101]))  # a straight line down ...
    assert f[90] == pytest.approx(0.55) and f[100] == pytest.approx(0.1) and set(f[100:]) == {f[100]}  # ... held
    cos = [lr_factor(s / 100, s, warmup=0, min_ratio=0.0) for s in range(101)]
    assert cos[0] == 1.0 and cos[50] == pytest.approx(0.5) and cos[100] == pytest.approx(0.0)


def test_zero_init_starts_every_block_as_the_identity_and_training_moves_it(packed: Path, tmp_path: Path) -> None:
    model = _gpt2(zero_init=True)
    for block in model.transformer.h:
        assert not block.attn.c_proj.weight.any() and not block.mlp.c_proj.weight.any()
        assert block.attn.c_proj.bias.abs().sum() == 0 and block.mlp.c_fc.weight.any()
    out = train(_cfg(packed, tmp_path / "z", max_steps=2, zero_init=True, lr=1e-2, warmup_steps=0)).out
    from safetensors.torch import load_file

    weights = load_file(str(out / "model.safetensors"))
    assert weights["transformer.h.0.mlp.c_proj.weight"].abs().sum() > 0


def test_a_muon_run_resumes_exactly(packed: Path, tmp_path: Path) -> None:
    """Muon's momentum is in the checkpoint: steps 3-4 resumed from step 2 equal the uninterrupted run's."""
    import shutil

    from pycpilot.train.metrics import read_metrics

    kw = dict(max_steps=4, optimizer="muon", muon_lr=0.05, lr=1e-2, warmup_steps=1, precision="fp32", save_every=2)
    whole = train(_cfg(packed, tmp_path / "whole", **kw)).out
    part = tmp_path / "part"
    shutil.copytree(whole, part)
    shutil.rmtree(part / "checkpoints" / "step-0000004")
    rows = (part / "metrics.jsonl").read_text().splitlines()
    (part / "metrics.jsonl").write_text("".join(r + "\n" for r in rows if json.loads(r)["step"] <= 2))
    train(_cfg(packed, part, **kw, resume=True))

    def losses(out: Path) -> dict[int, float]:
        return {r["step"]: r["loss"] for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "train"}

    a, b = losses(whole), losses(part)
    assert a.keys() == b.keys() == {1, 2, 3, 4}
    assert all(b[s] == pytest.approx(a[s], abs=1e-6) for s in a)
    assert json.loads((whole / "manifest.json").read_text())["config"]["optimizer"] == "muon"


# --- sizing -------------------------------------------------------------------------------------------------


def _speed(shape: Shape) -> float:
    """A made-up machine: tokens/s falls as the blocks grow."""
    return 4e9 / (shape.non_embedding + 2e5)


def test_a_longer_budget_picks_a_larger_model_and_stops_measuring_at_the_first_miss() -> None:
    seen: list[Shape] = []

    def measure(shape: Shape) -> float:
        seen.append(shape)
        return _speed(shape)

    short = choose_size(60, measure=measure, fits=lambda s: True, block=256, batch_rows=None)
    assert short.shape == LADDER[0] and seen == list(LADDER[:1])  # the smallest misses already: nothing more measured
    seen.clear()
    hour = choose_size(3600, measure=measure, fits=lambda s: True, block=256, batch_rows=None)
    day = choose_size(8 * 3600, measure=measure, fits=lambda s: True, block=256, batch_rows=None)
    order = list(LADDER)
    assert order.index(short.shape) < order.index(hour.shape) < order.index(day.shape)
    for choice in (hour, day):  # the rule holds for the choice and fails for the next size up
        assert choice.expected_tokens >= choice.k * choice.shape.non_embedding
        up = order[order.index(choice.shape) + 1]
        assert _speed(up) * 0.9 * (3600 if choice is hour else 8 * 3600) < choice.k * up.non_embedding
    assert day.batch_rows >= hour.batch_rows >= 8 and short.batch_rows == 8
    assert "tokens per parameter" in hour.reason and str(hour.shape) in hour.measured


def test_sizing_skips_what_does_not_fit_and_refuses_when_nothing_does() -> None:
    small_only = choose_size(8 * 3600, measure=_speed, fits=lambda s: s.n_embd <= 128, block=256, batch_rows=16)
    assert small_only.shape.n_embd == 128 and small_only.batch_rows == 16
    with pytest.raises(PycpilotError, match="not even the smallest model"):
        choose_size(3600, measure=_speed, fits=lambda s: False, block=256, batch_rows=None)


def test_max_time_alone_sizes_the_model_and_records_why(packed: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(packed=packed, out=tmp_path / "auto", max_time="3s", quiet=True, eval_blocks=2)
    assert cfg.auto_size()
    out = train(cfg).out
    m = json.loads((out / "manifest.json").read_text())
    sizing = m["sizing"]
    assert sizing["shape"] == {k: m["model"][k] for k in ("n_layer", "n_head", "n_embd")}
    assert sizing["measured"] and sizing["tokens_per_s"] > 0 and "tokens per parameter" in sizing["line"]
    assert m["config"]["batch_size"] == sizing["batch_size"]
    train_tokens = json.loads((packed / "manifest.json").read_text())["splits"]["train"]["tokens"]
    assert sizing["epochs"] == pytest.approx(sizing["expected_tokens"] / train_tokens, abs=0.1)
    assert ("data_note" in sizing) == (sizing["epochs"] > 4)
    # An explicit preset or size wins: no sizing.
    assert not TrainConfig(packed=packed, out=tmp_path / "p", max_time="3s", preset="tiny").auto_size()
    assert not TrainConfig(packed=packed, out=tmp_path / "n", max_time="3s", n_layer=2).auto_size()
    assert not TrainConfig(packed=packed, out=tmp_path / "s", max_time="3s", max_steps=5).auto_size()


def test_a_corpus_too_small_for_the_budget_is_said_so(packed: Path, tmp_path: Path) -> None:
    from pycpilot.tokenizer.load import load_tokenizer
    from pycpilot.train.budget import size_to_budget
    from pycpilot.train.runtime import Runtime

    tokenizer = load_tokenizer(Path(json.loads((packed / "manifest.json").read_text())["tokenizer"]["path"]))
    cfg = TrainConfig(packed=packed, out=tmp_path / "x", max_time="2m", quiet=True)
    sized, record = size_to_budget(cfg, cfg.out, tokenizer, 32, Runtime.from_env(), train_tokens=1_000)
    assert record["epochs"] > 100 and "site-packages" in record["data_note"] and "times" in record["data_note"]
    assert (sized.n_layer, sized.n_embd) == (record["shape"]["n_layer"], record["shape"]["n_embd"])
    _, plenty = size_to_budget(cfg, cfg.out, tokenizer, 32, Runtime.from_env(), train_tokens=10**12)
    assert "data_note" not in plenty


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"optimizer": "sgd"}, "--optimizer must be one of adamw, muon, not 'sgd'"),
        ({"schedule": "linear"}, "--schedule must be one of cosine, wsd"),
        ({"decay": 0.0}, r"--decay must be in \(0, 1\]"),
        ({"muon_lr": -1.0}, r"--muon-lr must be above 0, not -1.0"),
        ({"muon_weight_decay": -0.1}, "--muon-weight-decay must be between 0 and 10, not -0.1"),
    ],
)
def test_bad_recipe_settings_fail_before_any_work(kw: dict, message: str, packed: Path, tmp_path: Path) -> None:
    out = tmp_path / "bad"
    with pytest.raises(PycpilotError, match=message):
        train(_cfg(packed, out, max_steps=2, **kw))
    assert not out.exists()


def test_a_budget_too_short_for_one_step_fails_before_any_output(packed: Path, tmp_path: Path) -> None:
    out = tmp_path / "short"
    with pytest.raises(PycpilotError, match="too short for one step"):
        train(TrainConfig(packed=packed, out=out, max_time="0.0001s", quiet=True))
    assert not out.exists()
