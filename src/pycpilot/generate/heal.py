"""Token healing: the prompt's last token is given back and the first new token must start with its bytes.

A cursor rarely sits where training text had a token boundary: training spells a newline together with the next
line's indentation ("\n    "), a space with the next word (" return"), and a word typed half-way ("sel" of
"self") ends in a token the model rarely saw there. Conditioned on such a token it tends to end the block at once
or to go astray; allowed to choose the token that spans the cursor, it continues as it would have.

Guarantee: `give_back` leaves special tokens, tokens that end inside a UTF-8 character (completions are counted
in characters) and fill-in-the-middle prompts (framed as in training) alone; `first_mask` allows exactly the
non-special tokens whose bytes start with the healed bytes.
"""

from __future__ import annotations

import bisect
import itertools

import torch

from pycpilot.generate.text import TokenText

MASKS_KEPT = 256  # first-token masks of healed tokens kept (one bool per vocabulary entry each)


class Healing:
    def __init__(self, text: TokenText, vocab_size: int) -> None:
        self.text, self.vocab_size = text, vocab_size
        self._masks: dict[bytes, torch.Tensor] = {}  # least recently used first
        self._by_bytes: list[tuple[bytes, int]] | None = None

    def give_back(self, ids: list[int], fim: bool) -> tuple[list[int], bytes]:
        """(the prompt ids without their last token, that token's bytes), or (ids, b"") where it stays."""
        table = self.text.table
        if fim or table is None or len(ids) < 2 or ids[-1] >= len(table) or ids[-1] in self.text.special:
            return ids, b""
        last = table[ids[-1]]
        try:
            last.decode("utf-8")
        except UnicodeDecodeError:
            return ids, b""
        return (ids[:-1], last) if last else (ids, b"")

    def first_mask(self, healed: bytes) -> torch.Tensor | None:
        """Which tokens may come first after healing `healed` bytes: those that start with them."""
        if not healed:
            return None
        mask = self._masks.pop(healed, None)
        if mask is None:
            if self._by_bytes is None:  # sorted once: the tokens starting with any bytes are one run of it
                table = self.text.table or []
                self._by_bytes = sorted((b, i) for i, b in enumerate(table) if i not in self.text.special)
            allowed = []
            for b, i in itertools.islice(self._by_bytes, bisect.bisect_left(self._by_bytes, (healed, -1)), None):
                if not b.startswith(healed):
                    break
                allowed.append(i)
            mask = torch.zeros(self.vocab_size, dtype=torch.bool)
            mask[allowed] = True
            if len(self._masks) >= MASKS_KEPT:
                self._masks.pop(next(iter(self._masks)))  # the least recently used
        self._masks[healed] = mask
        return mask
