"""Tokenizers for real checkpoints, built with the `tokenizers` package (Hugging Face's Rust BPE).

- Hugging Face directory: its tokenizer.json.
- GGUF: the file carries the vocabulary and merges (tokenizer.ggml.tokens / .merges) of a GPT-2-style byte-level
  BPE ("gpt2" model); the pre-tokenizer follows tokenizer.ggml.pre: "smollm" (SmolLM/SmolLM2) splits digits one
  by one before the byte-level split, as SmolLM2's own tokenizer.json does; other GPT-2-style files get the plain
  byte-level split. SentencePiece ("llama") vocabularies are not rebuilt here.
"""

from __future__ import annotations

from pathlib import Path

from sim.errors import UserError


def _tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise UserError("text prompts need the 'tokenizers' package (pip install tokenizers)") from None
    return tokenizers


def from_hf_dir(path: str | Path):
    """The tokenizer.json of a Hugging Face checkpoint directory."""
    tk = _tokenizers()
    f = Path(path) / "tokenizer.json"
    if not f.exists():
        raise UserError(f"{path}: no tokenizer.json")
    return tk.Tokenizer.from_file(str(f))


def from_gguf(path):
    """A byte-level BPE tokenizer from a GGUF file's tokenizer.ggml.* metadata (a path or an open GGUFReader)."""
    tk = _tokenizers()
    from gguf import GGUFReader

    fields = (path if isinstance(path, GGUFReader) else GGUFReader(str(path))).fields

    def get(key, default=None):
        return fields[key].contents() if key in fields else default

    if get("tokenizer.ggml.model") != "gpt2":
        raise UserError(f"{path}: tokenizer model '{get('tokenizer.ggml.model')}' is not supported (only gpt2 BPE)")
    tokens = get("tokenizer.ggml.tokens")
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = [tuple(m.split(" ", 1)) for m in get("tokenizer.ggml.merges")]
    tok = tk.Tokenizer(tk.models.BPE(vocab=vocab, merges=merges))
    byte_level = tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if get("tokenizer.ggml.pre") == "smollm":
        tok.pre_tokenizer = tk.pre_tokenizers.Sequence([tk.pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = tk.decoders.ByteLevel()
    # Control tokens (token_type 3 in GGUF) must match whole, never be split by BPE.
    types = get("tokenizer.ggml.token_type", [])
    tok.add_special_tokens([tokens[i] for i, t in enumerate(types) if t == 3])
    return tok
