"""An Ollama Modelfile for an exported GGUF: the FIM prompt the model was trained with, its stops and context.

Guarantee: the template lays a request out exactly as training laid out fill-in-the-middle text (PSM:
`<fim_prefix>` prefix `<fim_suffix>` suffix `<fim_middle>`, pack/fim.py) when Ollama passes a suffix (Continue's
autocomplete does), and the bare prompt otherwise; generation stops at the end-of-text token and at every FIM
token, which the model only writes when it has finished the middle or wandered into another file.
"""

from __future__ import annotations

from pycpilot.tokenizer.specials import EOS, FILE_SEP, FIM_MIDDLE, FIM_PAD, FIM_PREFIX, FIM_SUFFIX


def modelfile(gguf_name: str, *, context: int, fim: bool, temperature: float = 0.2) -> str:
    """Modelfile text for `ollama create NAME -f FILE`, reading the GGUF beside it (`gguf_name`)."""
    if fim:
        template = (
            f"{{{{- if .Suffix }}}}{FIM_PREFIX}{{{{ .Prompt }}}}{FIM_SUFFIX}{{{{ .Suffix }}}}{FIM_MIDDLE}"
            "{{- else }}{{ .Prompt }}{{- end }}"
        )
        stops = [EOS, FILE_SEP, FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE, FIM_PAD]
    else:  # a model packed with --fim-rate 0 (or fine-tuned from one without FIM tokens): prompts only
        template = "{{ .Prompt }}"
        stops = [EOS]
    lines = [
        "# Made by `pycpilot export --format ollama`: ollama create NAME -f THIS_FILE",
        f"FROM ./{gguf_name}",
        f'TEMPLATE """{template}"""',
        *(f'PARAMETER stop "{s}"' for s in stops),
        f"PARAMETER num_ctx {context}",
        f"PARAMETER temperature {temperature:g}",
    ]
    return "\n".join(lines) + "\n"
