"""The data stage on datatrove's executors: the same files kept as the one-machine pool, across tasks."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import datasets
import pytest

from pycpilot.data import build_dataset
from pycpilot.errors import PycpilotError

pytest.importorskip("datatrove")
from pycpilot.data.trove.shards import shard_entries

from conftest import good_code, write, write_repos


@pytest.fixture
def corpus(messy_repo: Path) -> Path:
    """messy_repo (a file for every filter) plus four repositories, and duplicates placed so that each lands
    in another task than its original (files are dealt to tasks round-robin, in walk order)."""
    write_repos(messy_repo, lambda r, f: good_code(f"r{r}f{f}", extra=r + f), repos=4, files=5)
    original = good_code("r1f2", extra=3)
    write(messy_repo / "repo3" / "zzz_exact.py", original.replace("    ", "\t"))  # equal up to whitespace
    write(messy_repo / "repo3" / "zzz_near.py", good_code("r2f4", extra=6).replace("helper_r2f4_1(", "helper_r2f4_x("))
    return messy_repo


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def _paths(out: Path) -> dict[str, list[str]]:
    dsd = datasets.load_from_disk(str(out))
    return {split: [f"{r}/{p}" for r, p in zip(ds["repo_name"], ds["path"], strict=True)] for split, ds in dsd.items()}


def _assert_same_as_pool(pool: Path, trove: Path) -> None:
    a, b = _manifest(pool), _manifest(trove)
    assert b["content_sha256"] == a["content_sha256"]  # same rows, same order, same copies, same split
    assert b["filters"] == a["filters"]
    assert b["splits"] == a["splits"] and b["kept"] == a["kept"] and b["seen"] == a["seen"]
    assert b["sources"] == a["sources"]  # per source: counts by reason and the input hash
    assert _paths(trove) == _paths(pool)
    assert b["engine"]["name"] == "datatrove" and a["engine"]["name"] == "pool"


@pytest.fixture
def pool_out(corpus: Path, cfg_for, tmp_path: Path) -> Path:
    build_dataset(cfg_for(corpus, out=tmp_path / "pool", valid_fraction=0.2))
    return tmp_path / "pool"


def test_local_executor_keeps_what_the_pool_keeps(corpus: Path, pool_out: Path, cfg_for, tmp_path: Path) -> None:
    out = tmp_path / "trove"
    build_dataset(cfg_for(corpus, out=out, valid_fraction=0.2, executor="local", tasks=3, workers=2, parquet=True))
    _assert_same_as_pool(pool_out, out)
    task_of = {
        f"{x.repo_name}/{x.path}": j % 3 for _, j, x in shard_entries(cfg_for(corpus), 0, 1) if hasattr(x, "repo_name")
    }
    assert task_of["repo1/m2.py"] != task_of["repo3/zzz_exact.py"]  # the duplicates sit in other tasks
    assert task_of["repo2/m4.py"] != task_of["repo3/zzz_near.py"]
    filters = {f["filter"]: f["files"] for f in _manifest(out)["filters"]}
    assert filters["exact duplicate"] == 2 and filters["near duplicate"] == 2  # messy's pair and the cross-task pair
    kept = {p for paths in _paths(out).values() for p in paths}
    assert "repo1/m2.py" in kept and "repo3/zzz_exact.py" not in kept  # the first in corpus order stays
    assert "repo2/m4.py" in kept and "repo3/zzz_near.py" not in kept
    assert not (tmp_path / "trove.work").exists()  # the default work folder goes once the output is there
    parquet = sorted(p.name for p in (out / "parquet").iterdir())
    assert parquet == ["train-00000-of-00001.parquet", "valid-00000-of-00001.parquet"]
    train = datasets.Dataset.from_parquet(str(out / "parquet" / parquet[0]))
    assert train.column_names[:5] == ["repo_name", "path", "copies", "size", "content"]


@pytest.mark.parametrize("switch", [{"exact_dedup": False}, {"near_dedup": False}, {"heuristics": False}])
def test_the_switches_mean_the_same_on_both_engines(corpus: Path, cfg_for, tmp_path: Path, switch: dict) -> None:
    build_dataset(cfg_for(corpus, out=tmp_path / "p", **switch))
    build_dataset(cfg_for(corpus, out=tmp_path / "t", executor="local", tasks=2, workers=2, **switch))
    _assert_same_as_pool(tmp_path / "p", tmp_path / "t")


def test_nothing_left_is_one_line_on_both_engines(corpus: Path, cfg_for, tmp_path: Path) -> None:
    for engine in ({}, {"executor": "local", "tasks": 2, "workers": 1}):
        with pytest.raises(PycpilotError, match=r"no file left after cleaning: all \d+ files were removed"):
            build_dataset(cfg_for(corpus, keywords=["no-file-mentions-this"], **engine))
        assert not (tmp_path / "out").exists()


def test_an_interrupted_run_resumes_with_finished_tasks_kept(
    corpus: Path, pool_out: Path, cfg_for, tmp_path: Path, monkeypatch
) -> None:
    from pycpilot.data.trove import clean, keep

    work, out = tmp_path / "work", tmp_path / "trove"
    work.mkdir()
    real_keep = keep.keep_shard

    def failing(w, rank, sources):
        if rank == 1:
            raise OSError("disk full (simulated)")
        return real_keep(w, rank, sources)

    monkeypatch.setattr(keep, "keep_shard", failing)
    cfg = dict(out=out, valid_fraction=0.2, executor="local", tasks=3, workers=1, work_dir=work)
    with pytest.raises(PycpilotError, match=r"keep stage failed in task 00001 of 3: .*disk full.* again to resume"):
        build_dataset(cfg_for(corpus, **cfg))
    assert not out.exists() and not list(tmp_path.glob(".trove*"))  # nothing half-written at --out
    assert sorted(os.listdir(work / "logs" / "keep" / "completions")) == ["00000"]

    monkeypatch.setattr(keep, "keep_shard", real_keep)
    monkeypatch.setattr(clean, "CleanShard", None)  # the clean stage must not run again
    build_dataset(cfg_for(corpus, **cfg))
    _assert_same_as_pool(pool_out, out)
    assert not (work / "kept").exists() and not (work / "settings.json").exists()  # data cleared, logs kept
    assert (work / "logs" / "keep" / "logs" / "task_00001.log").is_file()


def test_a_work_dir_with_other_settings_or_missing_is_refused(corpus: Path, cfg_for, tmp_path: Path) -> None:
    with pytest.raises(PycpilotError, match=r"work dir .*nowhere does not exist: create it"):
        build_dataset(cfg_for(corpus, executor="local", work_dir=tmp_path / "nowhere"))
    work = tmp_path / "work"
    work.mkdir()
    (work / "settings.json").write_text(json.dumps({"seed": 1}))
    with pytest.raises(PycpilotError, match=r"holds an unfinished run with other settings \(.*seed.*\)"):
        build_dataset(cfg_for(corpus, executor="local", work_dir=work))
    with pytest.raises(PycpilotError, match="--work-dir is for the datatrove engine"):
        build_dataset(cfg_for(corpus, work_dir=work))
    with pytest.raises(PycpilotError, match="--executor slurm needs --slurm-partition"):
        build_dataset(cfg_for(corpus, executor="slurm"))
    with pytest.raises(PycpilotError, match="--slurm-sbatch takes KEY=VALUE pairs, not 'account'"):
        build_dataset(cfg_for(corpus, executor="slurm", slurm_partition="cpu", slurm_sbatch=["account"]))
    with pytest.raises(PycpilotError, match="source stdlib is this machine's own"):
        build_dataset(cfg_for("stdlib", executor="slurm", slurm_partition="cpu", work_dir=tmp_path))
    assert not (tmp_path / "out").exists()


def test_an_unreachable_ray_cluster_is_one_line(corpus: Path, cfg_for, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    with pytest.raises(PycpilotError, match=r"cannot reach the Ray cluster at 127.0.0.1:1: "):
        build_dataset(cfg_for(corpus, executor="ray", ray_address="127.0.0.1:1"))
    assert not (tmp_path / "out").exists()


def test_ray_executor_keeps_what_the_pool_keeps(corpus: Path, pool_out: Path, cfg_for, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    out = tmp_path / "ray"
    try:
        build_dataset(cfg_for(corpus, out=out, valid_fraction=0.2, executor="ray", tasks=3, workers=2))
    finally:
        ray.shutdown()
    _assert_same_as_pool(pool_out, out)


_FAKE_SBATCH = """#!/bin/sh
# Records the script it is given and answers as sbatch does.
n=$(ls "$FAKE_SLURM" | grep -c '\\.sh$')
n=$((n + 1))
for last; do :; done
cp "$last" "$FAKE_SLURM/job_$n.sh"
echo "$@" > "$FAKE_SLURM/job_$n.args"
echo "Submitted batch job $((1000 + n))"
"""


def test_slurm_submission_then_its_jobs_in_order(
    corpus: Path, pool_out: Path, cfg_for, tmp_path: Path, monkeypatch
) -> None:
    """The sbatch scripts (arrays, afterok chain, options), then each array task run as Slurm would run it."""
    import dill

    bin_dir, jobs, work = tmp_path / "bin", tmp_path / "jobs", tmp_path / "shared"
    for folder in (bin_dir, jobs, work):
        folder.mkdir()
    write(bin_dir / "sbatch", _FAKE_SBATCH).chmod(0o755)
    write(bin_dir / "scontrol", '#!/bin/sh\necho "$3"\n').chmod(0o755)  # `scontrol show hostnames node1`
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(jobs))
    out = tmp_path / "slurm"
    cfg = dict(out=out, valid_fraction=0.2, executor="slurm", tasks=3, work_dir=work, slurm_partition="cpu")
    assert build_dataset(cfg_for(corpus, slurm_sbatch=["account=abc"], **cfg)) is None
    assert not out.exists()  # submitted, not run

    scripts = [(jobs / f"job_{i}.sh").read_text() for i in range(1, 11)]
    args = [(jobs / f"job_{i}.args").read_text() for i in range(1, 11)]
    stages = [s for s in scripts if "launch_pickled_pipeline" in s]  # the others merge datatrove's stats
    names = [re.search(r"--job-name=pycpilot-data-(\w+)", s).group(1) for s in stages]
    assert names == ["clean", "buckets", "cluster", "keep", "assemble"]
    arrays = [re.search(r"--array=([-0-9]+)", s).group(1) for s in stages]
    assert arrays == ["0-2", "0-13", "0-0", "0-2", "0-0"]  # 3 tasks; 13 LSH bands + the exact band; 1 ...
    for s in stages:
        assert "#SBATCH --partition=cpu" in s and "#SBATCH --account=abc" in s and "--time=4:00:00" in s
    stage_ids = [1001 + i for i, s in enumerate(scripts) if "launch_pickled_pipeline" in s]
    stage_args = [a for a, s in zip(args, scripts, strict=True) if "launch_pickled_pipeline" in s]
    assert "dependency" not in stage_args[0]
    for previous, a in zip(stage_ids, stage_args[1:], strict=False):
        assert f"--dependency=afterok:{previous}" in a

    # Submitting again while those jobs are queued (squeue lists one of them) is refused; nothing is submitted.
    write(bin_dir / "squeue", "#!/bin/sh\necho 1003\n").chmod(0o755)
    with pytest.raises(PycpilotError, match=r"Slurm jobs 1003 of an earlier submission .* still queued"):
        build_dataset(cfg_for(corpus, slurm_sbatch=["account=abc"], **cfg))
    assert len(list(jobs.glob("*.sh"))) == 10
    (bin_dir / "squeue").unlink()

    # Run the jobs as Slurm would: each array task unpickles its stage and runs its rank.
    monkeypatch.setenv("SLURM_NODELIST", "node1")
    for s in stages:
        pickled = re.search(r"launch_pickled_pipeline (\S+)", s).group(1)
        executor = dill.load(open(pickled, "rb"))  # noqa: SIM115
        last = int(re.search(r"--array=0-(\d+)", s).group(1))
        for task in range(last + 1):
            monkeypatch.setenv("SLURM_ARRAY_TASK_ID", str(task))
            executor.run()
    _assert_same_as_pool(pool_out, out)
    assert not (work / "kept").exists()  # the assemble job cleared the data


def test_pack_on_executors_gives_the_ids_of_one_process(train_pack: Path, tmp_path: Path) -> None:
    """Three tasks encode a third of each split each; the merge's blocks equal one process's, id for id."""
    from pycpilot.pack import PackConfig, pack_dataset

    data, tok = train_pack.parent / "tdata", train_pack.parent / "ttok"
    out = tmp_path / "packed"
    manifest = pack_dataset(
        PackConfig(
            data=data, tokenizer=tok, out=out, context_length=32, quiet=True, executor="local", tasks=3, workers=2
        )
    ).manifest
    one = json.loads((train_pack / "manifest.json").read_text())
    for split in ("train", "valid"):
        assert (out / f"{split}.bin").read_bytes() == (train_pack / f"{split}.bin").read_bytes()
        assert manifest["splits"][split] == one["splits"][split]
    assert manifest["splits"]["train"]["fim_files"] > 0  # FIM layouts were drawn per file in the tasks
    assert manifest["engine"]["executor"] == "local" and not (tmp_path / "packed.work").exists()


def test_dataset_sources_are_dealt_in_slices_and_row_groups(
    pool_out: Path, cfg_for, tmp_path: Path, monkeypatch
) -> None:
    """A saved DatasetDict (slices of rows) and a Parquet file of many row groups: the same files as the pool."""
    import pyarrow.parquet as pq

    from pycpilot.data.trove import shards

    saved = datasets.load_from_disk(str(pool_out))
    parquet = tmp_path / "rows.parquet"
    rows = saved["train"].data.table.slice(0, 20)
    pq.write_table(rows, parquet, row_group_size=3)
    sources = [pool_out, parquet]
    monkeypatch.setattr(shards, "_BATCH", 4)  # slices of 4 rows, so 3 tasks share even this small dataset
    dealt = [[(s, j) for s, j, _ in shards.shard_entries(cfg_for(*sources), rank, 3)] for rank in range(3)]
    every = [entry for d in dealt for entry in d]
    assert len(every) == len(set(every)) == sum(len(d) for d in saved.values()) + len(rows)  # each record once
    assert all(any(s == 0 for s, _ in d) and any(s == 1 for s, _ in d) for d in dealt)  # all tasks read both
    build_dataset(cfg_for(*sources, out=tmp_path / "p", valid_fraction=0.2))
    # workers=1: the tasks run in this process, with the 4-row slices
    build_dataset(cfg_for(*sources, out=tmp_path / "t", valid_fraction=0.2, executor="local", tasks=3, workers=1))
    _assert_same_as_pool(tmp_path / "p", tmp_path / "t")


def test_near_duplicate_chains_decide_as_the_pool(cfg_for, tmp_path: Path) -> None:
    """Variants of a few files with overlapping sets of renamed helpers: similarities spread around the
    threshold and chains (A ~ B, B ~ C, A !~ C) where keep-first and verification decide, not the buckets."""
    import random

    rng = random.Random(5)
    root = tmp_path / "chains"
    for base in range(3):
        text = good_code(f"b{base}", extra=24)
        for variant in range(10):
            start = rng.randrange(0, 16)
            renamed = text
            for i in range(start, start + rng.randrange(1, 9)):
                renamed = renamed.replace(f"helper_b{base}_{i}(", f"helper_b{base}_{i}_v{variant}(")
            write(root / f"repo{rng.randrange(4)}" / f"b{base}_v{variant}.py", renamed)
    build_dataset(cfg_for(root, out=tmp_path / "p"))
    build_dataset(cfg_for(root, out=tmp_path / "t", executor="local", tasks=3, workers=2))
    _assert_same_as_pool(tmp_path / "p", tmp_path / "t")
    filters = {f["filter"]: f["files"] for f in _manifest(tmp_path / "t")["filters"]}
    assert 5 <= filters["near duplicate"] <= 25  # some variants go, others are far enough to stay


def test_a_pack_work_dir_is_not_resumed_over_other_inputs(train_pack: Path, tmp_path: Path) -> None:
    """A work folder records the data and tokenizer it was started with: a rebuilt input is not mixed in."""
    from pycpilot.pack import PackConfig, pack_dataset

    data, tok, work = train_pack.parent / "tdata", train_pack.parent / "ttok", tmp_path / "work"
    work.mkdir()
    cfg = dict(data=data, tokenizer=tok, out=tmp_path / "p", context_length=32, quiet=True, executor="local",
               tasks=2, workers=1, work_dir=work)  # fmt: skip
    pack_dataset(PackConfig(**cfg))  # a finished run leaves only its logs: the next one starts afresh
    assert (work / "logs" / "encode").is_dir() and not (work / "settings.json").exists()
    settings = {"data_sha256": "an earlier corpus"}
    (work / "settings.json").write_text(json.dumps(settings))
    with pytest.raises(PycpilotError, match=r"holds an unfinished run with other settings \(.*data_sha256"):
        pack_dataset(PackConfig(**{**cfg, "out": tmp_path / "q"}))
    assert not (tmp_path / "q").exists()
