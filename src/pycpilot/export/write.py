"""`pycpilot export`: a trained model as one GGUF file for llama.cpp, Ollama and LM Studio.

Guarantee: everything is checked before a byte is written (the model loads and is a GPT-2 that llama.cpp's graph
computes the same way, the tokenizer splits as llama.cpp's `gpt-2` pre-tokenizer does, the destination is free or
--overwrite is given); the file is written beside its final name and renamed into place, so a failed or
interrupted export leaves no partial file. Written with gguf-py (llama.cpp's own writer library); llama.cpp's
`convert_hf_to_gguf.py` cannot take our models (it recognises a BPE only by hashes of known tokenizers).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from pycpilot import __version__
from pycpilot.errors import PycpilotError
from pycpilot.export.config import ExportConfig
from pycpilot.export.ollama import modelfile
from pycpilot.export.provenance import provenance
from pycpilot.export.tensors import check_graph, gguf_tensors
from pycpilot.export.vocab import Vocab, check_byte_level_bpe, gguf_vocab
from pycpilot.manifest import base_manifest

FILE_TYPES = {"f32": 0, "f16": 1, "q8_0": 7}  # llama.cpp's LlamaFileType: ALL_F32, MOSTLY_F16, MOSTLY_Q8_0


def outputs(cfg: ExportConfig) -> dict[str, Path]:
    """Every file an export writes: the GGUF, its manifest and (ollama) the Modelfile."""
    found = {"gguf": cfg.out, "manifest": cfg.out.with_name(cfg.out.name + ".json")}
    if cfg.format == "ollama":
        found["modelfile"] = cfg.out.with_name(cfg.out.stem + ".Modelfile")
    return found


def check_destination(cfg: ExportConfig) -> None:
    """Refuse an existing output without --overwrite, and a folder that cannot be made or written, before any
    work (nothing is created here: a refused export leaves nothing behind)."""
    for path in outputs(cfg).values():
        if path.is_dir():
            raise PycpilotError(f"{path} is a folder: --out names the .gguf file to write")
        if path.exists() and not cfg.overwrite:
            raise PycpilotError(f"{path} already exists (pass --overwrite to replace it)")
    folder = cfg.out.parent
    existing = next(p for p in (folder, *folder.parents) if p.exists() or p == p.parent)
    if not existing.is_dir():
        raise PycpilotError(f"cannot create {folder}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PycpilotError(f"cannot write in {existing}: permission denied")


def _metadata(writer: Any, model: Any, vocab: Vocab, cfg: ExportConfig, name: str, origin: Any) -> None:
    from gguf import GGML_QUANT_VERSION, Keys, TokenType

    c = model.config
    writer.add_name(name)
    writer.add_description(f"PYCPilot GPT-2 code-completion model, {c.n_layer} layers x {c.n_embd}, exported by "
                           f"pycpilot {__version__}")  # fmt: skip
    if origin.license_text():
        writer.add_license(origin.license_text())
    writer.add_string("pycpilot.version", __version__)
    writer.add_string("pycpilot.model", Path(cfg.model).resolve().name)  # the name only: the file is shared
    if origin.valid_bpb is not None:
        writer.add_float32("pycpilot.valid_bits_per_byte", origin.valid_bpb)
    writer.add_context_length(c.n_positions)
    writer.add_embedding_length(c.n_embd)
    writer.add_feed_forward_length(c.n_inner or 4 * c.n_embd)
    writer.add_block_count(c.n_layer)
    writer.add_head_count(c.n_head)
    writer.add_layer_norm_eps(c.layer_norm_epsilon)
    writer.add_file_type(FILE_TYPES[cfg.type])
    writer.add_quantization_version(GGML_QUANT_VERSION)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(vocab.tokens)
    writer.add_token_types([TokenType(t) for t in vocab.types])
    writer.add_token_merges(vocab.merges)
    writer.add_bos_token_id(vocab.bos)  # llama.cpp's gpt2 defaults (GPT-2's 50256) would point elsewhere
    writer.add_eos_token_id(vocab.eos)
    writer.add_add_bos_token(False)  # prompts are not prefixed, as in `pycpilot complete` (bos is an option)
    writer.add_add_eos_token(False)
    keys = {"pre": Keys.Tokenizer.FIM_PRE_ID, "suf": Keys.Tokenizer.FIM_SUF_ID, "mid": Keys.Tokenizer.FIM_MID_ID,
            "pad": Keys.Tokenizer.FIM_PAD_ID, "sep": Keys.Tokenizer.FIM_SEP_ID}  # fmt: skip
    for key, token_id in vocab.fim.items():
        writer.add_uint32(keys[key], token_id)


def _write_gguf(tmp: Path, model: Any, vocab: Vocab, cfg: ExportConfig, name: str, origin: Any) -> dict[str, int]:
    """The GGUF, written at `tmp`; tensors per storage type."""
    import logging

    from gguf import GGMLQuantizationType, GGUFWriter

    logging.getLogger("gguf").setLevel(logging.WARNING)  # its "This GGUF file is for Little Endian only"
    kinds = {"f32": GGMLQuantizationType.F32, "f16": GGMLQuantizationType.F16, "q8_0": GGMLQuantizationType.Q8_0}
    counts: dict[str, int] = {}
    writer = GGUFWriter(str(tmp), "gpt2")
    try:
        _metadata(writer, model, vocab, cfg, name, origin)
        for t in gguf_tensors(model, cfg.type):
            writer.add_tensor(t.name, t.data, raw_dtype=kinds[t.kind])  # q8_0 bytes: it derives the shape
            counts[t.kind] = counts.get(t.kind, 0) + 1
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file(progress=False)
    finally:
        writer.close()  # before any unlink (Windows keeps an open file)
    return counts


@contextlib.contextmanager
def _staged(files: dict[str, Path]) -> Any:
    """Temp paths beside each output; on success they replace the outputs together (the manifest last: it
    vouches for the rest), on any failure they vanish and the outputs are as they were."""
    temps = {k: p.with_name(f".{p.name}.tmp-{os.getpid()}") for k, p in files.items()}
    folder = files["gguf"].parent
    created = [p for p in reversed((folder, *folder.parents)) if not p.exists()]
    done = False
    try:
        folder.mkdir(parents=True, exist_ok=True)
        yield temps
        with contextlib.suppress(FileNotFoundError):
            files["manifest"].unlink()  # a stale manifest must never sit beside a new file
        for key in sorted(files, key=lambda k: k == "manifest"):
            os.replace(temps[key], files[key])
        done = True
    except OSError as exc:  # a read-only folder, a full disk: the OS's words about the file asked for
        raise PycpilotError(f"cannot write {files['gguf']}: {exc.strerror or exc}") from None
    finally:
        for tmp in temps.values():
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        for made in reversed(created) if not done else ():  # folders made for an export that never came
            with contextlib.suppress(OSError):
                made.rmdir()


def check_exportable(folder: Path, where: str) -> None:
    """Before any training: a model folder's config and tokenizer are ones export can write (`run --init-from
    SRC --export` must not learn that after the training)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
        spec = json.loads((Path(folder) / "tokenizer.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # unreadable: loading it says so in its own words
    check_graph(config, where)
    if isinstance(spec, dict):
        check_byte_level_bpe(spec, where)


def _default_name(folder: Path) -> str:
    """The model's folder name, or the run's for `pycpilot run`'s RUN/model."""
    from pycpilot.manifest import MANIFEST

    if folder.name == "model" and (folder.parent / MANIFEST).is_file():
        return folder.parent.name
    return folder.name


def export_model(cfg: ExportConfig) -> dict[str, Any]:
    """Write the GGUF (and its manifest, and the Modelfile for --format ollama); returns the manifest."""
    from pycpilot.generate.load import load_model

    cfg.validate()
    check_destination(cfg)
    started = time.perf_counter()
    loaded = load_model(cfg.model)
    where = str(cfg.model)
    check_graph(loaded.model.config, where)
    rows = loaded.model.get_input_embeddings().weight.shape[0]
    vocab = gguf_vocab(loaded.tokenizer, rows, where)
    origin = provenance(loaded.path)
    name = cfg.name or _default_name(origin.run or loaded.path)
    files = outputs(cfg)
    c = loaded.model.config
    from pycpilot.seal import sha256_file

    with _staged(files) as temps:
        counts = _write_gguf(temps["gguf"], loaded.model, vocab, cfg, name, origin)
        if "modelfile" in files:
            fim = {"pre", "suf", "mid"} <= set(vocab.fim)
            temps["modelfile"].write_text(modelfile(files["gguf"].name, context=c.n_positions, fim=fim), "utf-8")
        manifest = base_manifest("export", {k: str(v) if isinstance(v, Path) else v for k, v in vars(cfg).items()})
        manifest |= {
            "model": {"path": str(loaded.path), "n_layer": c.n_layer, "n_embd": c.n_embd, "n_head": c.n_head,
                      "n_positions": c.n_positions, "vocab_rows": rows, "tokenizer_tokens": len(loaded.tokenizer)},
            "gguf": {"file": files["gguf"].name, "bytes": temps["gguf"].stat().st_size,
                     "sha256": sha256_file(temps["gguf"]), "tensors": counts, "fim_ids": vocab.fim,
                     "bos": vocab.bos, "eos": vocab.eos},
            "provenance": {"run": str(origin.run) if origin.run else None,
                           "data": str(origin.data) if origin.data else None,
                           "licenses": dict(origin.licenses), "missing": origin.missing},
            "modelfile": files["modelfile"].name if "modelfile" in files else None,
            "timings": {"seconds": round(time.perf_counter() - started, 2)},
        }  # fmt: skip
        temps["manifest"].write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
    if not cfg.quiet:
        size = manifest["gguf"]["bytes"] / 1e6
        print(f"export: wrote {files['gguf']} ({size:,.1f} MB, {cfg.type}, {c.n_layer} x {c.n_embd}, "
              f"{rows:,} tokens) in {manifest['timings']['seconds']:.1f} s", file=sys.stderr)  # fmt: skip
        if "modelfile" in files:
            tag = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-.") or "pycpilot"  # Ollama's model names
            print(f"export: ollama create {tag} -f {shlex.quote(str(files['modelfile']))}", file=sys.stderr)
    return manifest
