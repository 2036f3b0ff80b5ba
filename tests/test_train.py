"""Training: decay groups, the schedule's floor, exact resume after kill -9, 2 processes = 1, guards."""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pycpilot.errors import PycpilotError
from pycpilot.train import TrainConfig, train
from pycpilot.train.checkpoint import sealed_checkpoints
from pycpilot.train.config import load_recipe, parse_duration
from pycpilot.train.metrics import read_metrics
from pycpilot.train.optim import lr_factor, param_groups, steps_progress

from conftest import write

TINY = ["--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--n-positions", "32", "--batch-size", "2"]


@pytest.fixture
def packed(train_pack: Path) -> Path:
    return train_pack


def _cli(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("pycpilot")), *args]


def _losses(out: Path) -> dict[int, float]:
    """Step -> train loss; a resumed run's rows replace the killed run's for the same step."""
    return {r["step"]: r["loss"] for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "train"}


def _cfg(packed: Path, out: Path, **kw) -> TrainConfig:
    base = dict(n_layer=2, n_head=2, n_embd=32, n_positions=32, batch_size=2, quiet=True, eval_every=1000, log_every=1)
    return TrainConfig(packed=packed, out=out, **{**base, **kw})


def test_weight_decay_only_on_matrices() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=100, n_positions=16, n_layer=2, n_head=2, n_embd=8))
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    kept = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert "transformer.wte.weight" in decayed and "transformer.h.0.attn.c_attn.weight" in decayed
    assert all(".ln_" in n or n.endswith(".bias") for n in kept)
    assert {"transformer.ln_f.weight", "transformer.h.1.ln_2.bias", "transformer.h.0.mlp.c_fc.bias"} <= kept
    assert len(decayed) + len(kept) == len({id(p) for p in model.parameters()})  # tied lm_head counted once


def test_schedule_warms_up_decays_and_holds_its_floor() -> None:
    f = [lr_factor(steps_progress(s, 10, 100), s, warmup=10, min_ratio=0.1) for s in range(300)]
    assert f[0] < f[5] < f[9] <= 1.0
    assert max(f) == pytest.approx(1.0, abs=1e-3)
    assert all(a >= b for a, b in itertools.pairwise(f[10:101]))  # never climbs while decaying
    assert f[100] == pytest.approx(0.1) and set(f[100:]) == {f[100]}  # holds the floor after the last step


def test_durations_and_recipes(tmp_path: Path) -> None:
    assert parse_duration("6m") == 360 and parse_duration("1h30m") == 5400 and parse_duration("90s") == 90
    with pytest.raises(PycpilotError, match="not a duration"):
        parse_duration("six minutes")
    write(tmp_path / "r.yaml", "lr: 3e-3\nbatch-size: 8\nmax_time: 6m\n")
    assert load_recipe(tmp_path / "r.yaml") == {"lr": 0.003, "batch_size": 8, "max_time": "6m"}
    write(tmp_path / "bad.yaml", "lr: [1, 2\n")
    with pytest.raises(PycpilotError, match=r"recipe .*bad.yaml is not valid YAML"):
        load_recipe(tmp_path / "bad.yaml")
    write(tmp_path / "odd.json", '{"learning_rate": 1}')
    with pytest.raises(PycpilotError, match="unknown setting 'learning_rate'"):
        load_recipe(tmp_path / "odd.json")
    write(tmp_path / "typed.yaml", "batch_size: lots\n")
    with pytest.raises(PycpilotError, match="batch_size must be int"):
        load_recipe(tmp_path / "typed.yaml")


def test_a_short_run_leaves_a_loadable_model_metrics_and_plot(packed: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = train(_cfg(packed, tmp_path / "m", max_steps=6, eval_every=3, save_every=3, lr=1e-2, warmup_steps=1))
    out = result.out
    assert AutoModelForCausalLM.from_pretrained(str(out)).config.n_layer == 2
    assert len(AutoTokenizer.from_pretrained(str(out))) == 320
    ckpts = sealed_checkpoints(out / "checkpoints")
    assert [p.name for p in ckpts] == ["step-0000003", "step-0000006"]
    assert AutoModelForCausalLM.from_pretrained(str(ckpts[0])).config.n_embd == 32
    rows = read_metrics(out / "metrics.jsonl")
    evals = [r for r in rows if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [3, 6]  # the end does not evaluate step 6 twice
    assert all(math.isfinite(r["bpb"]) and r["perplexity"] == pytest.approx(math.exp(r["loss"])) for r in evals)
    losses = _losses(out)
    assert losses[6] < losses[1]  # it learns
    assert (out / "loss.png").stat().st_size > 5000 and list((out / "tensorboard").iterdir())
    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "done" and m["result"]["steps"] == 6 and m["model"]["n_layer"] == 2


def test_bf16_autocast_trains_like_fp32_and_says_so(packed: Path, tmp_path: Path) -> None:
    kw = dict(max_steps=6, lr=1e-2, warmup_steps=1)
    fp32 = train(_cfg(packed, tmp_path / "fp32", precision="fp32", **kw)).out
    bf16 = train(_cfg(packed, tmp_path / "bf16", precision="bf16", **kw)).out
    a, b = _losses(fp32), _losses(bf16)
    assert a != b  # autocast is really on ...
    assert all(b[s] == pytest.approx(a[s], rel=0.03) for s in a)  # ... and learns the same
    assert b[6] < b[1] - 0.5
    compute = json.loads((bf16 / "manifest.json").read_text())["compute"]
    assert compute == {
        "device": "cpu",
        "processes": 1,
        "dtype": "torch.bfloat16",
        "attention": "sdpa",
        "malloc_tuned": sys.platform.startswith("linux"),
        "sharding": "none",
    }
    assert json.loads((fp32 / "manifest.json").read_text())["compute"]["dtype"] == "torch.float32"


def test_gradient_checkpointing_gives_the_same_run(packed: Path, tmp_path: Path) -> None:
    kw = dict(max_steps=4, lr=1e-2, warmup_steps=1, precision="fp32")
    plain = _losses(train(_cfg(packed, tmp_path / "plain", **kw)).out)
    again = _losses(train(_cfg(packed, tmp_path / "again", grad_checkpointing=True, **kw)).out)
    assert all(again[s] == pytest.approx(plain[s], abs=1e-5) for s in plain) and len(plain) == 4


def test_a_time_budget_ends_the_run_with_the_cosine_on_the_clock(packed: Path, tmp_path: Path) -> None:
    kw = dict(max_time="4s", warmup_steps=2, lr=1e-2, min_lr_ratio=0.1, schedule="cosine")
    out = train(_cfg(packed, tmp_path / "t", **kw)).out
    m = json.loads((out / "manifest.json").read_text())
    assert m["result"]["stopped_by"] == "time" and 3.5 < m["result"]["train_seconds"] < 30
    rows = [r for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "train"]
    lrs = [r["lr"] for r in rows[2:]]  # after warmup: the cosine falls with the clock toward its floor
    assert len(lrs) > 5 and all(b <= a for a, b in itertools.pairwise(lrs))
    assert lrs[0] > 0.8e-2 and 1e-3 <= lrs[-1] < 0.3e-2


def test_recomputed_attention_gives_the_same_run_and_a_plain_model(packed: Path, tmp_path: Path) -> None:
    kw = dict(max_steps=4, lr=1e-2, warmup_steps=1, dropout=0.2, precision="fp32")
    plain = train(_cfg(packed, tmp_path / "plain", recompute_attention="off", **kw)).out
    again = train(_cfg(packed, tmp_path / "again", recompute_attention="on", **kw)).out
    a, b = _losses(plain), _losses(again)
    assert all(b[s] == pytest.approx(a[s], abs=1e-6) for s in a)  # the same dropout masks, replayed
    assert json.loads((again / "manifest.json").read_text())["compute"]["attention"] == "sdpa_recompute_core"
    config = json.loads((again / "config.json").read_text())
    assert "recompute" not in json.dumps(config)  # the saved model is a plain GPT-2 ...
    load = "import sys, transformers as t; print(t.AutoModelForCausalLM.from_pretrained(sys.argv[1]).config.n_layer)"
    done = subprocess.run([sys.executable, "-c", load, str(again)], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "2", done.stderr[-500:]  # ... that loads where our attention is not registered


def test_resume_after_kill_9_matches_an_uninterrupted_run(packed: Path, tmp_path: Path) -> None:
    common = [
        "train",
        "--packed",
        str(packed),
        *TINY,
        "--max-steps",
        "14",
        "--save-every",
        "2",
        "--log-every",
        "1",
        "--eval-every",
        "1000",
        "--dropout",
        "0.1",
        "--lr",
        "5e-3",
        "--warmup-steps",
        "2",
        "-q",
    ]
    straight = tmp_path / "straight"
    subprocess.run(_cli(*common, "--out", str(straight)), check=True, timeout=300)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cli(*common, "--out", str(killed)))
    deadline = time.monotonic() + 120
    while not any(p.name >= "step-0000006" for p in sealed_checkpoints(killed / "checkpoints")):
        assert time.monotonic() < deadline and proc.poll() is None, "no checkpoint appeared"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((killed / "manifest.json").read_text())["status"] == "running"
    leftover = killed / "checkpoints" / ".step-0000099.tmp-999999"  # what a save killed midway leaves
    leftover.mkdir()
    subprocess.run(_cli(*common, "--out", str(killed), "--resume"), check=True, timeout=300)
    assert not leftover.exists()
    a, b = _losses(straight), _losses(killed)
    assert sorted(a) == sorted(b) == list(range(1, 15))
    # The rows the killed run logged past its checkpoint were dropped, not repeated: the curve never doubles back.
    steps = [r["step"] for r in read_metrics(killed / "metrics.jsonl") if r["kind"] == "train"]
    assert steps == list(range(1, 15))
    for step in a:
        assert b[step] == pytest.approx(a[step], abs=1e-6), step


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("launch", "fsdp", "accum", "optimizer"),
    [
        ("torchrun", "off", 1, "adamw"),
        ("torchrun", "on", 1, "adamw"),
        ("accelerate", "off", 2, "adamw"),  # accum 2: no sync mid-accumulation
        ("torchrun", "off", 1, "muon"),
    ],
)
def test_two_processes_match_one_with_the_same_global_batch(
    launch: str, fsdp: str, accum: int, optimizer: str, packed: Path, tmp_path: Path
) -> None:
    common = [
        "train",
        "--packed",
        str(packed),
        "--n-layer",
        "2",
        "--n-head",
        "2",
        "--n-embd",
        "32",
        "--n-positions",
        "32",
        "--max-steps",
        "5",
        "--log-every",
        "1",
        "--eval-every",
        "5",
        "--save-every",
        "2",
        "-q",
        "--lr",
        "5e-3",
        "--warmup-steps",
        "1",
        "--precision",
        "fp32",  # bf16 sums in another order would blur what this compares
    ]
    common += ["--optimizer", optimizer]
    one = tmp_path / "one"
    subprocess.run(_cli(*common, "--batch-size", "4", "--out", str(one)), check=True, timeout=300)
    two = tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    script = str(Path(sys.executable).with_name("pycpilot"))
    port = str(_free_port())
    # accelerate's --multi_gpu is its torchrun launcher (its --cpu mode wants MPI); without GPUs we pick gloo.
    launcher = {
        "torchrun": [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", port],
        "accelerate": [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                       "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                       "--main_process_port", port],
    }[launch] + [script]  # fmt: skip
    sharded = [*common, "--batch-size", str(4 // 2 // accum), "--grad-accum", str(accum), "--fsdp", fsdp]
    subprocess.run([*launcher, *sharded, "--out", str(two)], check=True, timeout=300, env=env)
    assert json.loads((two / "manifest.json").read_text())["compute"]["sharding"] == {"off": "ddp", "on": "fsdp"}[fsdp]
    a, b = _losses(one), _losses(two)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5]
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-5), step
    ea = [r["loss"] for r in read_metrics(one / "metrics.jsonl") if r["kind"] == "eval"]
    eb = [r["loss"] for r in read_metrics(two / "metrics.jsonl") if r["kind"] == "eval"]
    assert eb == pytest.approx(ea, rel=1e-5)
    # The saved models (gathered from the shards with FSDP) are the same model.
    from safetensors.torch import load_file

    wa, wb = load_file(str(one / "model.safetensors")), load_file(str(two / "model.safetensors"))
    assert wa.keys() == wb.keys()
    if optimizer == "muon":
        # Muon maps every singular value of the update to ~1, those of the gradient's noise floor too, so the
        # last bits of a gradient summed in another order move weights by up to ~1e-3 here (the losses and
        # evaluations above still agree to 1e-5); ranks stepping on their own halves would move them by ~lr.
        assert all(float((wa[k] - wb[k]).abs().max()) < 5e-3 for k in wa)
        return
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)
    # A checkpoint of the 2 ranks resumes in 1 process (full, named state either way) and goes on alike.
    cross = tmp_path / "cross"
    shutil.copytree(two, cross)
    shutil.rmtree(cross / "checkpoints" / "step-0000005")
    subprocess.run(_cli(*common, "--batch-size", "4", "--out", str(cross), "--resume"), check=True, timeout=300)
    assert _losses(cross)[5] == pytest.approx(a[5], rel=1e-5)


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(packed: Path, tmp_path: Path) -> None:
    out = tmp_path / "nan"
    with pytest.raises(
        PycpilotError, match=r"the loss became (nan|inf) at step \d+: stopped; the last good checkpoint"
    ):
        train(_cfg(packed, out, max_steps=200, save_every=1, lr=1e6, grad_clip=0, warmup_steps=0))
    last = sealed_checkpoints(out / "checkpoints")[-1]
    weights = __import__("safetensors.torch").torch.load_file(str(last / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_non_finite_gradients_stop_the_run_before_the_weights_change(
    packed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real, calls = torch.nn.utils.clip_grad_norm_, []

    def poisoned(params, max_norm, **kw):  # a finite loss whose gradients overflowed at the 4th step
        params = list(params)
        calls.append(1)
        if len(calls) == 4:
            params[0].grad.view(-1)[0] = float("inf")
        return real(params, max_norm, **kw)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", poisoned)
    out = tmp_path / "inf"
    with pytest.raises(PycpilotError, match=r"the gradients became (inf|nan) at step 4 .*last good checkpoint"):
        train(_cfg(packed, out, max_steps=10, save_every=1, precision="fp32"))
    last = sealed_checkpoints(out / "checkpoints")[-1]
    assert last.name == "step-0000003"
    weights = __import__("safetensors.torch").torch.load_file(str(last / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values())


def _flip_a_byte(path: Path, from_end: int = 5) -> None:
    """Change one byte of the tensor data (same size: only a hash can tell)."""
    data = bytearray(path.read_bytes())
    data[-from_end] ^= 0x40
    path.write_bytes(bytes(data))


def test_damaged_or_foreign_checkpoints_are_refused(packed: Path, tmp_path: Path) -> None:
    out = tmp_path / "c"
    train(_cfg(packed, out, max_steps=2, save_every=1))
    last = sealed_checkpoints(out / "checkpoints")[-1]
    with pytest.raises(PycpilotError, match=r"is from another model .*n_embd 32 vs 64"):
        train(_cfg(packed, out, max_steps=4, resume=True, n_embd=64))
    for ckpt in sealed_checkpoints(out / "checkpoints"):
        state = ckpt / "trainer_state.pt"
        state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(PycpilotError, match=r"no complete checkpoint .*damaged: trainer_state.pt has 100 of \d+ bytes"):
        train(_cfg(packed, out, max_steps=4, resume=True))
    assert last.is_dir()


def test_a_flipped_byte_in_a_checkpoint_is_set_aside_and_resume_uses_the_last_whole_one(
    packed: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from safetensors.torch import load_file

    whole = tmp_path / "whole"
    train(_cfg(packed, whole, max_steps=5))
    out = tmp_path / "flip"
    train(_cfg(packed, out, max_steps=4, save_every=1))
    final = (out / "model.safetensors").read_bytes()
    _flip_a_byte(out / "checkpoints" / "step-0000004" / "model.safetensors")
    capsys.readouterr()
    train(_cfg(packed, out, max_steps=5, resume=True, save_every=1))
    err = capsys.readouterr().err
    assert "step-0000004 is damaged: model.safetensors does not match its recorded SHA-256" in err
    assert (out / "checkpoints" / "corrupt-step-0000004").is_dir()
    # From step 3 to 5, exactly as one uninterrupted run: the flipped weights never reached the model.
    assert (out / "model.safetensors").read_bytes() != final
    ours, theirs = load_file(str(out / "model.safetensors")), load_file(str(whole / "model.safetensors"))
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    assert [p.name for p in sealed_checkpoints(out / "checkpoints")] == ["step-0000003", "step-0000004", "step-0000005"]

    # Every checkpoint damaged: refused in one line, and the final model at the top is left as it was.
    final = (out / "model.safetensors").read_bytes()
    for ckpt in sealed_checkpoints(out / "checkpoints"):
        _flip_a_byte(ckpt / "model.safetensors")
    with pytest.raises(PycpilotError, match=r"no complete checkpoint .*model.safetensors does not match"):
        train(_cfg(packed, out, max_steps=7, resume=True))
    assert (out / "model.safetensors").read_bytes() == final


def test_loading_a_changed_model_warns(packed: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from pycpilot.generate.load import load_model

    out = tmp_path / "m"
    train(_cfg(packed, out, max_steps=2, save_every=1))
    recorded = json.loads((out / "manifest.json").read_text())["files"]
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(recorded)
    capsys.readouterr()
    load_model(out)
    load_model(out / "checkpoints" / "step-0000002")
    assert "warning" not in capsys.readouterr().err
    _flip_a_byte(out / "model.safetensors")
    _flip_a_byte(out / "checkpoints" / "step-0000002" / "model.safetensors")
    load_model(out)
    assert "model.safetensors does not match its recorded SHA-256" in capsys.readouterr().err
    load_model(out / "checkpoints" / "step-0000002")
    assert "step-0000002 is damaged: model.safetensors" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"n_positions": 16}, "the packed blocks hold 32 tokens but the model has 16 positions"),
        ({"batch_size": 100_000}, "fewer than one global batch"),
        (
            {"preset": "large", "n_positions": None, "n_layer": 200, "n_head": 20, "n_embd": 1280},
            r"needs about .* GiB \(\d+M parameters\) but .* GiB is free: lower --batch-size",
        ),
        ({"max_time": "soon"}, "is not a duration"),
        ({"n_embd": 30, "n_head": 4}, "--n-embd must be a multiple of --n-head"),
        ({"precision": "fp8"}, "--precision must be one of auto, fp32, bf16, fp16, not 'fp8'"),
        ({"precision": "fp16"}, "--precision fp16 needs a CUDA GPU"),
        ({"n_layer": -3}, r"--n-layer must be between 1 and 1,024, not -3"),
        ({"n_layer": 0}, r"--n-layer must be between 1 and 1,024, not 0"),
        ({"n_head": 0}, r"--n-head must be between 1 and 1,024, not 0"),
        ({"n_embd": -8}, r"--n-embd must be between 1 and 65,536, not -8"),
        ({"eval_blocks": -1}, r"--eval-blocks must be at least 1, not -1"),
        ({"lr": float("nan")}, r"--lr must be above 0, not nan"),
        ({"epochs": float("inf")}, r"--epochs must be in \(0, 1,000,000\], not inf"),
    ],
)
def test_bad_settings_fail_before_any_work(kw: dict, message: str, packed: Path, tmp_path: Path) -> None:
    out = tmp_path / "bad"
    with pytest.raises(PycpilotError, match=message):
        train(_cfg(packed, out, max_steps=2, **kw))
    assert not out.exists()


def test_existing_output_needs_resume_or_overwrite(packed: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    train(_cfg(packed, out, max_steps=1, save_every=1))
    with pytest.raises(PycpilotError, match=r"already exists \(--resume continues it\)"):
        train(_cfg(packed, out, max_steps=2))
    with pytest.raises(PycpilotError, match=r"--resume: this run would see other data .*global batch .* 2 -> 4"):
        train(_cfg(packed, out, max_steps=2, resume=True, batch_size=4))
    with pytest.raises(PycpilotError, match=r"--seed 42 -> 7"):
        train(_cfg(packed, out, max_steps=2, resume=True, seed=7))
    train(_cfg(packed, out, max_steps=2, resume=True))
    assert json.loads((out / "manifest.json").read_text())["result"]["steps"] == 2
    train(_cfg(packed, out, max_steps=2, resume=True))  # nothing left to do: no second evaluation of step 2
    evals = [r["step"] for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "eval"]
    assert evals == [1, 2] and json.loads((out / "manifest.json").read_text())["result"]["valid_loss"] > 0
    train(_cfg(packed, out, max_steps=1, overwrite=True))
    assert json.loads((out / "manifest.json").read_text())["result"]["steps"] == 1


def test_ctrl_c_saves_a_checkpoint_and_resume_continues(packed: Path, tmp_path: Path) -> None:
    out = tmp_path / "int"
    args = [
        "train",
        "--packed",
        str(packed),
        *TINY,
        "--max-steps",
        "100000",
        "--log-every",
        "1",
        "--eval-every",
        "100000",
        "-q",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(_cli(*args), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(_losses(out)) < 3:
        assert time.monotonic() < deadline and proc.poll() is None, "training did not start"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    assert json.loads((out / "manifest.json").read_text())["status"] == "interrupted"
    saved = sealed_checkpoints(out / "checkpoints")
    assert len(saved) == 1
    step = int(saved[0].name.split("-")[1])
    assert step >= 3
    subprocess.run(
        _cli(*args[:-2], "--out", str(out), "--resume", "--max-steps", str(step + 2)), check=True, timeout=300
    )
    assert max(_losses(out)) == step + 2


def test_sequence_length_warmup_shortens_rows_then_uses_whole_blocks() -> None:
    from pycpilot.train.loop import short_block

    assert [short_block(256, p, 0.5) for p in (0.0, 0.2, 0.3, 0.49, 0.5, 0.9)] == [64, 64, 128, 128, 256, 256]
    assert short_block(256, 0.0, 0.0) == 256  # off
    assert short_block(30, 0.0, 0.5) == 30  # a block that does not split evenly stays whole


def test_a_checkpoint_at_every_epoch_end(packed: Path, tmp_path: Path) -> None:
    from pycpilot.pack import PackedDataset

    steps_per_epoch = len(PackedDataset(packed, "train")) // 2
    out = train(_cfg(packed, tmp_path / "ep", epochs=2.5, keep_last=10)).out
    names = [p.name for p in sealed_checkpoints(out / "checkpoints")]
    total = math.ceil(2.5 * steps_per_epoch)
    assert names == [f"step-{s:07d}" for s in (steps_per_epoch, 2 * steps_per_epoch, total)]


def test_missing_pack_or_mismatched_tokenizer_is_one_line(packed: Path, tmp_path: Path) -> None:
    with pytest.raises(PycpilotError, match="is not a packed dataset"):
        train(_cfg(tmp_path / "nowhere", tmp_path / "o1", max_steps=1))
    other = tmp_path / "othertok"
    import shutil

    shutil.copytree(json.loads((packed / "manifest.json").read_text())["tokenizer"]["path"], other)
    spec = json.loads((other / "tokenizer.json").read_text())
    spec["added_tokens"][0]["content"] = "<|other|>"
    (other / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(PycpilotError, match=r"is not the one .* was packed with"):
        train(_cfg(packed, tmp_path / "o2", max_steps=1, tokenizer=other))
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_bad_model_sizes_on_the_command_line_are_one_line_and_write_nothing(packed: Path, tmp_path: Path) -> None:
    for flag, value, words in [
        ("--n-layer", "-3", "--n-layer must be between 1 and 1,024, not -3"),
        ("--n-head", "0", "--n-head must be between 1 and 1,024, not 0"),
        ("--n-embd", "-8", "--n-embd must be between 1 and 65,536, not -8"),
    ]:
        out = tmp_path / "cli"
        args = [*TINY, flag, value, "--max-steps", "1", "--out", str(out)]
        done = subprocess.run(_cli("train", "--packed", str(packed), *args), capture_output=True, text=True)
        assert done.returncode != 0 and words in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and not out.exists()


def test_interim_evaluations_sample_the_split_and_the_last_reads_it_all(
    packed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pycpilot.pack.reader import PackedDataset
    from pycpilot.train import evaluation as loop

    assert list(loop.eval_indices(10, None)) == list(range(10)) == list(loop.eval_indices(10, 50))
    assert list(loop.eval_indices(10, 3)) == [0, 4, 8] and list(loop.eval_indices(100, 10)) == list(range(0, 100, 10))
    monkeypatch.setattr(loop, "INTERIM_EVAL_BLOCKS", 3)
    out = tmp_path / "ev"
    train(_cfg(packed, out, max_steps=4, eval_every=2))
    whole = len(PackedDataset(packed, "valid"))
    evals = [(r["step"], r["blocks"], r["loss"]) for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "eval"]
    assert [(s, b) for s, b, _ in evals] == [(2, 3), (4, 3), (4, whole)] and whole > 3
    assert json.loads((out / "manifest.json").read_text())["result"]["valid_loss"] == evals[-1][2]
