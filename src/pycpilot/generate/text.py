"""From token ids to text as they arrive, and where a completion stops (stop strings and `--scope`)."""

from __future__ import annotations

from typing import Any

ENGINES = ("auto", "native", "torch", "hf")  # decoders (complete.py); here, where settings read them without torch

# CodeParrot's HumanEval stops: a new top-level statement ends the function being written.
BLOCK_STOPS = ["\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif"]
SCOPES = ("line", "block", "file")


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level BPE spells each byte as one printable character; this is that map, inverted."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


class TokenText:
    """Bytes of every token id (byte-level BPE), so text grows by a table lookup per token; other tokenizers
    fall back to decoding the whole sequence."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.special = set(tokenizer.all_special_ids)
        alphabet = _byte_level_alphabet()
        table: list[bytes] | None = []
        for token in tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))):
            if token is None or any(ch not in alphabet for ch in token):
                table = None
                break
            table.append(bytes(alphabet[ch] for ch in token))
        self.table = table

    def decode(self, ids: list[int], row: RowBytes | None = None) -> str:
        """The text of `ids`, special tokens dropped; a multi-byte character cut at the end is left out. With
        `row` (one row's cache), only the ids past those it saw last are looked up."""
        if self.table is None:
            return self.tokenizer.decode([i for i in ids if i not in self.special])
        table, size = self.table, len(self.table)  # a model may have more ids than its tokenizer: those are no text
        if row is None:
            data = b"".join(table[i] for i in ids if i < size and i not in self.special)
        else:
            seen = len(row.ids)
            if len(ids) < seen or ids[:seen] != row.ids:  # not the same row grown: start again
                row.ids, row.data, seen = [], bytearray(), 0
            row.data += b"".join(table[i] for i in ids[seen:] if i < size and i not in self.special)
            row.ids += ids[seen:]
            data = bytes(row.data)
        text = data.decode("utf-8", errors="replace")
        # An incomplete UTF-8 sequence at the very end is still arriving: do not show a replacement for it.
        for cut in range(1, min(4, len(data)) + 1):
            byte = data[-cut]
            if byte < 0x80:  # ASCII: everything before is complete
                break
            if byte >= 0xC0:  # the lead byte of the last character
                need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
                if need > cut:
                    return data[:-cut].decode("utf-8", errors="replace")
                break
        return text


class RowBytes:
    """The bytes of one row's tokens so far, for `TokenText.decode`: each token is looked up once, where
    decoding the whole row at every new token was quadratic in its length."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.data = bytearray()


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


class Stopper:
    """Where the completion of one row ends: a stop string, the end of the line, or of the block.

    One per row, fed the row's text as it grows: `cut` scans only what is new since the last text it saw
    without an end (and the last line, for the block's indentation); a text that does not extend that one is
    scanned from the start."""

    def __init__(self, prompt: str, stops: list[str], scope: str, skip: int = 0) -> None:
        self.skip = skip  # characters the new tokens repeat from the prompt (token healing): not completion text
        self.scope = scope
        self.stops = [s for s in stops if s] + (BLOCK_STOPS if scope == "block" else [])
        self.current_line = prompt.rsplit("\n", 1)[-1]  # the line the cursor is on
        self.hold = max((len(s) for s in self.stops), default=1)  # what streaming keeps back
        self.row = RowBytes()  # the row's bytes, for Completer.finish_row
        self._seen = ""  # the last text scanned without an end
        self._block: tuple[int | None, int] = (None, 0)  # the block's indentation, where the last line starts

    def cut(self, text: str) -> int | None:
        """The length to keep when `text` is finished by the scope or a stop string, else None."""
        if not text.startswith(self._seen):
            self._seen, self._block = "", (None, 0)
        old = len(self._seen)
        ends = [i for s in self.stops if (i := text.find(s, max(old - len(s) + 1, 0))) >= 0]
        if self.scope == "line" and (i := text.find("\n", old)) >= 0:
            ends.append(i)
        block = self._block
        if self.scope == "block":
            where, block = self._dedent(text)
            if where is not None:
                ends.append(where)
        if ends:
            return min(ends)
        self._seen, self._block = text, block
        return None

    def _dedent(self, text: str) -> tuple[int | None, tuple[int | None, int]]:
        """Where a line of the completion starts indented less than the first one it wrote (the block is over),
        and the state to go on from: that first indentation and where the last line starts.

        Only lines where the completion wrote a visible character count (not the prompt's own line alone, nor it
        with trailing spaces), and a line counts as soon as it has one, since its indentation cannot change after.
        """
        head = self.current_line
        base, start = self._block  # lines before `start` were complete and passed
        last = start
        for line in (head + text)[start:].split("\n"):
            if line[max(len(head) - start, 0) :].strip():
                if base is None:
                    base = _indent(line)
                elif _indent(line) < base:
                    return start - 1 - len(head), (base, last)  # before the newline that opened this line
            last = start
            start += len(line) + 1
        return None, (base, last)


def safe_stream_length(text: str, stopper: Stopper) -> int:
    """How much of an unfinished completion can be shown: all but what a stop might still cut away."""
    safe = len(text) - (stopper.hold - 1)
    if stopper.scope in ("line", "block") and "\n" in text:  # scope cuts fall on newlines
        safe = min(safe, text.rfind("\n"))
    return max(safe, 0)
