"""The tokenizer stage (seed 7.4.2): a GPT-2-style byte-level BPE with StarCoder's FIM tokens."""

from pycpilot.tokenizer.config import TokenizerConfig
from pycpilot.tokenizer.load import load_tokenizer
from pycpilot.tokenizer.train import TokenizerResult, train_tokenizer

__all__ = ["TokenizerConfig", "TokenizerResult", "load_tokenizer", "train_tokenizer"]
