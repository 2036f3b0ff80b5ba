"""`pycpilot export`: a trained model as one GGUF file for llama.cpp, Ollama and LM Studio.

Guarantee: everything is checked before a byte is written (the model loads and is a GPT-2 that llama.cpp's graph
computes the same way, the tokenizer splits as llama.cpp's `gpt-2` pre-tokenizer does, the destination is free or
--overwrite is given); the file is written beside its final name and renamed into place, so a failed or
interrupted export leaves no partial file. Written with gguf-py (llama.cpp's own writer library); llama.cpp's
`convert_hf_to_gguf.py` cannot take our models (it recognises a BPE only by hashes of known tokenizers).
"""

from __future__ import annotations

import contextlib
import os
import re
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
from pycpilot.export.vocab import Vocab, gguf_vocab
from pycpilot.manifest import base_manifest, write_json_atomic

FILE_TYPES = {"f32": 0, "f16": 1, "q8_0": 7}  # llama.cpp's LlamaFileType: ALL_F32, MOSTLY_F16, MOSTLY_Q8_0


def outputs(cfg: ExportConfig) -> dict[str, Path]:
    """Every file an export writes: the GGUF, its manifest and (ollama) the Modelfile."""
    found = {"gguf": cfg.out, "manifest": cfg.out.with_name(cfg.out.name + ".json")}
    if cfg.format == "ollama":
        found["modelfile"] = cfg.out.with_name(cfg.out.stem + ".Modelfile")
    return found


def check_destination(cfg: ExportConfig) -> None:
    """Refuse an existing output without --overwrite, and a folder that cannot be written, before any work."""
    for path in outputs(cfg).values():
        if path.is_dir():
            raise PycpilotError(f"{path} is a folder: --out names the .gguf file to write")
        if path.exists() and not cfg.overwrite:
            raise PycpilotError(f"{path} already exists (pass --overwrite to replace it)")
    folder = cfg.out.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PycpilotError(f"cannot create {folder}: {exc.strerror or exc}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PycpilotError(f"cannot write in {folder}: permission denied")


def _metadata(writer: Any, model: Any, vocab: Vocab, cfg: ExportConfig, name: str, origin: Any) -> None:
    from gguf import GGML_QUANT_VERSION, Keys, TokenType

    c = model.config
    writer.add_name(name)
    writer.add_description(f"PYCPilot GPT-2 code-completion model, {c.n_layer} layers x {c.n_embd}, exported by "
                           f"pycpilot {__version__}")  # fmt: skip
    if origin.license_text():
        writer.add_license(origin.license_text())
    writer.add_string("pycpilot.version", __version__)
    writer.add_string("pycpilot.model", str(Path(cfg.model).resolve()))
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


def _write_gguf(path: Path, model: Any, vocab: Vocab, cfg: ExportConfig, name: str, origin: Any) -> dict[str, int]:
    """The GGUF at `path` (written beside it, then renamed); tensors per storage type."""
    import logging

    from gguf import GGMLQuantizationType, GGUFWriter

    logging.getLogger("gguf").setLevel(logging.WARNING)  # its "This GGUF file is for Little Endian only"
    kinds = {"f32": GGMLQuantizationType.F32, "f16": GGMLQuantizationType.F16, "q8_0": GGMLQuantizationType.Q8_0}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    counts: dict[str, int] = {}
    try:
        writer = GGUFWriter(str(tmp), "gpt2")
        _metadata(writer, model, vocab, cfg, name, origin)
        for t in gguf_tensors(model, cfg.type):
            writer.add_tensor(t.name, t.data, raw_dtype=kinds[t.kind])  # q8_0 bytes: it derives the shape
            counts[t.kind] = counts.get(t.kind, 0) + 1
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file(progress=False)
        writer.close()
        os.replace(tmp, path)
    except OSError as exc:  # a read-only folder, a full disk: the OS's words about the file asked for
        raise PycpilotError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return counts


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
    counts = _write_gguf(files["gguf"], loaded.model, vocab, cfg, name, origin)
    c = loaded.model.config
    if "modelfile" in files:
        text = modelfile(files["gguf"].name, context=c.n_positions, fim={"pre", "suf", "mid"} <= set(vocab.fim))
        tmp = files["modelfile"].with_name(f".{files['modelfile'].name}.tmp-{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, files["modelfile"])
    from pycpilot.seal import sha256_file

    manifest = base_manifest("export", {k: str(v) if isinstance(v, Path) else v for k, v in vars(cfg).items()})
    manifest |= {
        "model": {"path": str(loaded.path), "n_layer": c.n_layer, "n_embd": c.n_embd, "n_head": c.n_head,
                  "n_positions": c.n_positions, "vocab_rows": rows, "tokenizer_tokens": len(loaded.tokenizer)},
        "gguf": {"file": files["gguf"].name, "bytes": files["gguf"].stat().st_size,
                 "sha256": sha256_file(files["gguf"]), "tensors": counts, "fim_ids": vocab.fim,
                 "bos": vocab.bos, "eos": vocab.eos},
        "provenance": {"run": str(origin.run) if origin.run else None,
                       "data": str(origin.data) if origin.data else None,
                       "licenses": dict(origin.licenses), "missing": origin.missing},
        "modelfile": files["modelfile"].name if "modelfile" in files else None,
        "timings": {"seconds": round(time.perf_counter() - started, 2)},
    }  # fmt: skip
    write_json_atomic(files["manifest"], manifest)
    if not cfg.quiet:
        size = manifest["gguf"]["bytes"] / 1e6
        print(f"export: wrote {files['gguf']} ({size:,.1f} MB, {cfg.type}, {c.n_layer} x {c.n_embd}, "
              f"{rows:,} tokens) in {manifest['timings']['seconds']:.1f} s", file=sys.stderr)  # fmt: skip
        if "modelfile" in files:
            tag = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-.") or "pycpilot"  # Ollama's model names
            print(f"export: ollama create {tag} -f {files['modelfile']}", file=sys.stderr)
    return manifest
