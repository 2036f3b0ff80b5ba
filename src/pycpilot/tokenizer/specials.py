"""Special tokens, spelled as StarCoder spells them so editors' FIM templates work unchanged."""

EOS = "<|endoftext|>"  # also bos and unk, as in GPT-2
FIM_PREFIX = "<fim_prefix>"
FIM_MIDDLE = "<fim_middle>"
FIM_SUFFIX = "<fim_suffix>"
FIM_PAD = "<fim_pad>"
FILE_SEP = "<file_sep>"
CODE_SPECIALS = [FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX, FIM_PAD, FILE_SEP]
ALL_SPECIALS = [EOS, *CODE_SPECIALS]

# The seed's comparison example (7.4.2).
ADD_NUMBERS = 'def add_numbers(a, b):\n    """Add the two numbers `a` and `b`."""\n    return a + b\n'
