"""The data stage on datatrove's executors (local processes, Slurm, Ray): `pycpilot data --executor ...`.

Five stages, each a datatrove pipeline run as tasks; files pass between them through the work folder:

1. clean (T tasks): each task reads its shard of the sources and runs the one-machine path's checks
   (`data.worker.Worker`); it writes the survivors, the LSH bands of their MinHash and their full signatures.
2. buckets (one task per band): datatrove's `MinhashDedupBuckets` finds files that share a band.
3. cluster (1 task): keep-first in corpus order, as the one-machine path decides (`cluster.py`).
4. keep (T tasks): drops what the cluster removed and writes the kept files.
5. assemble (1 task): the split, the DatasetDict and the manifest at --out, as the one-machine path writes them.
"""
