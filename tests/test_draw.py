"""The batched sampler (generate/draw.py): a straightforward reference's distribution, and rows that do not
depend on their neighbours."""

from __future__ import annotations

import math

import pytest
import torch

from pycpilot.generate.draw import draw, filtered, row_seed, uniform, uniforms


def reference(logits: list[float], temperature: float, top_k: int, top_p: float) -> dict[int, float]:
    """Token -> probability, written plainly: temperature, keep the k likeliest (ties with the k-th too), the
    smallest set of likeliest tokens whose mass reaches p (the likeliest always), renormalise."""
    scaled = [x / temperature for x in logits]
    if 0 < top_k < len(scaled):
        kth = sorted(scaled, reverse=True)[top_k - 1]
        scaled = [x if x >= kth else -math.inf for x in scaled]
    top = max(scaled)
    weights = [math.exp(x - top) if x != -math.inf else 0.0 for x in scaled]
    total = sum(weights)
    ranked = sorted(range(len(weights)), key=lambda i: (-weights[i], i))
    kept, mass = [], 0.0
    for i in ranked:
        if weights[i] == 0 or (kept and top_p < 1 and mass >= top_p):
            break
        kept.append(i)
        mass += weights[i] / total
    norm = sum(weights[i] for i in kept)
    return {i: weights[i] / norm for i in kept}


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p"),
    [(1.0, 0, 1.0), (0.7, 0, 0.9), (1.3, 5, 1.0), (0.8, 8, 0.6), (2.0, 1, 1.0), (0.5, 0, 0.01), (1.0, 3, 0.95)],
)
def test_the_filtered_distribution_is_the_reference(temperature: float, top_k: int, top_p: float) -> None:
    torch.manual_seed(0)
    logits = torch.randn(4, 50) * 3
    logits[2, :5] = 1.5  # ties, at the top-k boundary too
    rows = len(logits)
    probs, order = filtered(
        logits, torch.full((rows,), temperature), torch.full((rows,), top_k), torch.full((rows,), top_p)
    )
    for r in range(rows):
        want = reference(logits[r].tolist(), temperature, top_k, top_p)
        got = {int(t): float(p) for t, p in zip(order[r], probs[r], strict=True) if p > 0}
        assert set(got) == set(want)
        for token, p in want.items():
            assert got[token] == pytest.approx(p, rel=1e-5, abs=1e-7)


def test_draws_follow_the_distribution_and_greedy_rows_take_the_argmax() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0], [0.0, 3.0, 0.0, 0.0]])
    t, k, p = torch.tensor([1.0, 0.0]), torch.tensor([0, 0]), torch.tensor([1.0, 1.0])
    counts = torch.zeros(4)
    for step in range(4000):
        u = torch.cat([uniforms([row_seed(1, 0)], [step]), torch.rand(1, dtype=torch.float64)])
        token = draw(logits, t, k, p, u)
        assert int(token[1]) == 1  # temperature 0: the argmax, whatever u
        counts[int(token[0])] += 1
    assert torch.allclose(counts / counts.sum(), logits[0].softmax(-1), atol=0.03)
    assert draw(logits, t, k, p, torch.tensor([0.0, 0.0]))[0] == 0  # u = 0: the likeliest
    assert draw(logits, t, k, p, torch.tensor([0.999999, 0.0]))[0] == 3  # u -> 1: the least likely kept


def test_a_row_draws_the_same_alone_or_among_others() -> None:
    torch.manual_seed(1)
    logits = torch.randn(7, 300)
    logits[6] = 0.0  # flat: its top-p cut needs every token, so the batch looks past the first candidates
    t = torch.tensor([0.8, 1.0, 0.0, 1.2, 0.5, 1.0, 1.0])
    k = torch.tensor([0, 40, 0, 5, 0, 0, 0])
    p = torch.tensor([0.95, 1.0, 1.0, 0.9, 0.5, 1.0, 0.99])
    seeds = [row_seed(7, r) for r in range(7)]
    together = [draw(logits, t, k, p, uniforms(seeds, [step] * 7)).tolist() for step in range(20)]
    for r in range(7):
        one = slice(r, r + 1)
        alone = [int(draw(logits[one], t[one], k[one], p[one], uniforms([seeds[r]], [step]))) for step in range(20)]
        assert alone == [step[r] for step in together]
    assert row_seed(7, 0) != row_seed(7, 1) and row_seed(7, 0) == row_seed(7, 0)


def test_a_stream_is_uniform_reproducible_and_its_own() -> None:
    seed = row_seed(5, 0)
    stream = [uniform(seed, step) for step in range(20_000)]
    assert all(0.0 <= u < 1.0 for u in stream)
    assert stream[:50] == [uniform(seed, step) for step in range(50)]  # a function of (seed, step) alone
    bins = torch.histc(torch.tensor(stream), bins=10, min=0.0, max=1.0)
    assert float(bins.min()) > 1800 and float(bins.max()) < 2200  # ~2,000 each
    other = torch.tensor([uniform(row_seed(5, 1), step) for step in range(20_000)])
    assert abs(float(torch.corrcoef(torch.stack([torch.tensor(stream), other]))[0, 1])) < 0.03
    assert uniforms([seed, seed], [3, 4]).tolist() == [stream[3], stream[4]]


def test_humaneval_samples_do_not_depend_on_the_batch_size(tiny_run) -> None:
    """The queue keeps the batch full across problems; each sample's text is the same for any batch size."""
    from types import SimpleNamespace

    from pycpilot.evaluate.problems import load_problems
    from pycpilot.evaluate.sampling import _Problem, _run_queue
    from pycpilot.generate import Completer
    from pycpilot.generate.sampling import SamplingParams

    completer = Completer(tiny_run)
    problems = load_problems()
    tasks = list(problems)[:3]

    def run(batch_size: int) -> tuple[dict, list]:
        todo = []
        for i, task in enumerate(tasks):
            ids, _, max_new, _ = completer.prepare(problems[task]["prompt"].strip(), None, 24, bos=True)
            todo.append(_Problem(i, task, problems[task]["prompt"].strip(), ids, max_new))
        started: list[int] = []

        def params(n: int, p: _Problem) -> SamplingParams:
            started.append(n)
            return SamplingParams(n=n, max_new_tokens=p.max_new, temperature=0.9, top_p=0.95, scope="block", seed=3)

        texts = {}

        def finished(p: _Problem, sample: int, c) -> None:
            texts[p.task, sample] = c.text

        _run_queue(completer, SimpleNamespace(batch_size=batch_size, n=5, seed=3), 0, todo, params, finished)
        return texts, started

    alone, started_alone = run(1)
    shared, started_shared = run(7)
    assert len(alone) == 15 and alone == shared
    assert started_alone == [1] * 15  # one row at a time
    assert max(started_shared) > 1 and sum(started_shared) == 15  # rows of a problem share a prompt pass
    assert len(set(alone.values())) > 3  # samples differ from one another


@pytest.mark.parametrize("vocab", [700, 701, 37])  # blocks of 64 and a rest, an odd vocabulary, under one block
def test_the_c_sampler_draws_as_the_torch_one(vocab: int) -> None:
    """sample_rows.c applies the same rule row by row: the same tokens for the same u (up to an exp() that may
    differ in its last bit), and a row's token does not depend on the other rows."""
    from pycpilot.generate.native import load_library

    lib, why = load_library()
    if lib is None:
        pytest.skip(f"no native library: {why}")
    torch.manual_seed(3)
    logits = torch.randn(6, vocab) * 2
    logits[5] = logits[5] * 0.01  # nearly flat: top-p cuts deep into the vocabulary
    t = torch.tensor([0.8, 1.0, 0.0, 1.2, 0.5, 1.0])
    k = torch.tensor([0, 20, 0, 5, 0, 0])
    p = torch.tensor([0.95, 1.0, 1.0, 0.9, 0.3, 0.95])
    agree = total = 0
    for step in range(300):
        u = torch.rand(6, generator=torch.Generator().manual_seed(step))
        native = draw(logits, t, k, p, u, lib=lib)
        agree += int((native == draw(logits, t, k, p, u)).sum())
        total += 6
        for r in (0, 3, 5):
            alone = draw(logits[r : r + 1], t[r : r + 1], k[r : r + 1], p[r : r + 1], u[r : r + 1], lib=lib)
            assert int(alone) == int(native[r])
    assert agree / total >= 0.99


def test_a_tiny_top_p_keeps_the_likeliest_and_bad_logits_give_a_valid_token() -> None:
    """1 - p rounding to 1 must not drop every token; NaN or infinite logits (a broken model) give some token id
    of the vocabulary, never a crash or a write outside the sampler's memory."""
    from pycpilot.generate.native import load_library

    lib, _ = load_library()
    logits = torch.randn(3, 300)
    logits[:, 17] = 9.0
    one_row = torch.ones(3), torch.zeros(3, dtype=torch.long)
    for p in (1e-20, 1e-45):
        for engine in (None, lib) if lib is not None else (None,):
            u = torch.tensor([0.0, 0.5, 1 - 2**-53], dtype=torch.float64)
            assert draw(logits, *one_row, torch.full((3,), p), u, lib=engine).tolist() == [17, 17, 17]
    bad = torch.randn(4, 301)
    bad[0] = -torch.tensor(float("nan"))  # NaNs with the sign bit set: negative bits, a negative bucket
    bad[1, 5] = float("nan")
    bad[2, 9] = float("inf")
    bad[3] = float("-inf")
    settings = torch.full((4,), 0.8), torch.zeros(4, dtype=torch.long), torch.full((4,), 0.9)
    for engine in (None, lib) if lib is not None else (None,):
        for u in (0.0, 0.3, 1 - 2**-53):
            got = draw(bad, *settings, torch.full((4,), u, dtype=torch.float64), lib=engine)
            assert all(0 <= t < 301 for t in got.tolist())
