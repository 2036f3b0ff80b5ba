"""Stage `export`: a trained model as a GGUF file for llama.cpp, Ollama and LM Studio (reads train's output)."""

from pycpilot.export.config import ExportConfig

__all__ = ["ExportConfig", "export_model"]


def __getattr__(name: str):  # export_model imports gguf and torch: load it on use
    if name == "export_model":
        from pycpilot.export.write import export_model

        return export_model
    raise AttributeError(name)
