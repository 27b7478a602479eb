"""Loaders round-trip checkpoints that the tests write: a Hugging Face directory (config.json + safetensors, in two
shards) and a GGUF file written with gguf.GGUFWriter in llama.cpp's layout (Q/K rows permuted, one tensor Q8_0)."""

import json

import numpy as np
import pytest
import torch

from rt_helpers import random_tokens, tiny_spec
from runtime.loaders import load_gguf, load_hf_checkpoint, permute_rope_rows, unpermute_rope_rows
from runtime.model import Transformer
from runtime.weights import random_hf_state_dict
from sim.errors import UserError

gguf = pytest.importorskip("gguf", reason="the GGUF loader needs the 'gguf' package")
safetensors_torch = pytest.importorskip("safetensors.torch", reason="the HF loader needs 'safetensors'")


def hf_config(spec) -> dict:
    return {"model_type": "llama", "hidden_size": spec.hidden_size, "num_hidden_layers": spec.num_layers,
            "num_attention_heads": spec.num_heads, "num_key_value_heads": spec.num_kv_heads,
            "intermediate_size": spec.intermediate_size, "vocab_size": spec.vocab_size,
            "tie_word_embeddings": spec.tie_word_embeddings, "rope_theta": spec.rope_theta,
            "rope_scaling": spec.rope_scaling, "max_position_embeddings": spec.max_position_embeddings,
            "rms_norm_eps": spec.rms_norm_eps}


def test_rope_row_permutation_by_hand():
    """One head of d_h = 4 (rows 0..3, pairs (0, 2) and (1, 3)): llama.cpp's order interleaves them as 0, 2, 1, 3."""
    w = torch.arange(8.0).reshape(4, 2)  # row r holds (2r, 2r + 1)
    assert permute_rope_rows(w, 1)[:, 0].tolist() == [0.0, 4.0, 2.0, 6.0]
    two_heads = torch.randn(16, 3)
    assert torch.equal(unpermute_rope_rows(permute_rope_rows(two_heads, 2), 2), two_heads)


def test_safetensors_checkpoint_round_trip(tmp_path):
    spec = tiny_spec(num_layers=3)
    sd = random_hf_state_dict(spec, seed=11)
    (tmp_path / "config.json").write_text(json.dumps(hf_config(spec)))
    names = sorted(sd)
    half = len(names) // 2  # two shards, as large checkpoints come
    safetensors_torch.save_file({k: sd[k].to(torch.bfloat16) for k in names[:half]}, tmp_path / "model-1.safetensors")
    safetensors_torch.save_file({k: sd[k].to(torch.bfloat16) for k in names[half:]}, tmp_path / "model-2.safetensors")

    loaded = load_hf_checkpoint(tmp_path)
    ref = Transformer.from_hf_state_dict(spec, {k: v.to(torch.bfloat16).float() for k, v in sd.items()})
    assert loaded.spec.num_layers == 3 and loaded.spec.rope_scaling == spec.rope_scaling
    tokens = random_tokens(12, seed=1)
    torch.testing.assert_close(loaded.full_logits(tokens), ref.full_logits(tokens), atol=1e-5, rtol=0)


def test_missing_tensor_is_a_user_error(tmp_path):
    spec = tiny_spec(num_layers=1)
    sd = random_hf_state_dict(spec, seed=0)
    del sd["model.layers.0.mlp.up_proj.weight"]
    (tmp_path / "config.json").write_text(json.dumps(hf_config(spec)))
    safetensors_torch.save_file(sd, tmp_path / "model.safetensors")
    with pytest.raises(UserError, match="mlp.up_proj.weight"):
        load_hf_checkpoint(tmp_path)


def write_gguf(path, spec, sd: dict[str, torch.Tensor]) -> None:
    """A llama GGUF as llama.cpp's converter lays it out: its tensor names, Q/K rows permuted for interleaved RoPE,
    the tied LM head omitted, ffn_down of layer 0 quantized to Q8_0 and the rest float32."""
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(spec.num_layers)
    w.add_context_length(spec.max_position_embeddings)
    w.add_embedding_length(spec.hidden_size)
    w.add_feed_forward_length(spec.intermediate_size)
    w.add_head_count(spec.num_heads)
    w.add_head_count_kv(spec.num_kv_heads)
    w.add_rope_freq_base(spec.rope_theta)
    w.add_layer_norm_rms_eps(spec.rms_norm_eps)
    w.add_vocab_size(spec.vocab_size)
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    layer = {"input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
             "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
             "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
             "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
             "mlp.down_proj.weight": "ffn_down.weight"}
    for i in range(spec.num_layers):
        names.update({f"model.layers.{i}.{k}": f"blk.{i}.{v}" for k, v in layer.items()})
    for hf, g in names.items():
        t = sd[hf]
        if g.endswith("attn_q.weight"):
            t = permute_rope_rows(t, spec.num_heads)
        elif g.endswith("attn_k.weight"):
            t = permute_rope_rows(t, spec.num_kv_heads)
        a = t.numpy().astype(np.float32)
        if g == "blk.0.ffn_down.weight":
            q = gguf.quants.quantize(a, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(g, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(g, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_gguf_round_trip(tmp_path):
    spec = tiny_spec(num_layers=2, tie_word_embeddings=True, rope_scaling=None, rope_theta=500.0)
    sd = random_hf_state_dict(spec, seed=12)
    path = tmp_path / "tiny.gguf"
    write_gguf(path, spec, sd)

    loaded = load_gguf(path)
    assert (loaded.spec.num_heads, loaded.spec.num_kv_heads, loaded.spec.tie_word_embeddings) == (4, 2, True)
    assert loaded.spec.rope_theta == 500.0
    # What the file holds: every tensor exact except ffn_down of layer 0, which went through Q8_0.
    q8 = gguf.quants.quantize(sd["model.layers.0.mlp.down_proj.weight"].numpy(), gguf.GGMLQuantizationType.Q8_0)
    expected = dict(sd)
    expected["model.layers.0.mlp.down_proj.weight"] = torch.from_numpy(
        gguf.quants.dequantize(q8, gguf.GGMLQuantizationType.Q8_0).copy())
    ref = Transformer.from_hf_state_dict(spec, expected)
    tokens = random_tokens(12, seed=2)
    torch.testing.assert_close(loaded.full_logits(tokens), ref.full_logits(tokens), atol=1e-5, rtol=0)
    # Without the un-permutation the logits would differ: the check above can fail.
    wrong = dict(expected)
    for i in range(spec.num_layers):
        k = f"model.layers.{i}.self_attn.q_proj.weight"
        wrong[k] = permute_rope_rows(sd[k], spec.num_heads)
    assert not torch.allclose(Transformer.from_hf_state_dict(spec, wrong).full_logits(tokens),
                              ref.full_logits(tokens), atol=1e-3)


def test_missing_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="config.json"):
        load_hf_checkpoint(tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        load_gguf(tmp_path / "nope.gguf")


def test_a_file_that_is_not_gguf_is_a_user_error(tmp_path):
    pytest.importorskip("gguf")
    f = tmp_path / "fake.gguf"
    f.write_bytes(b"not a gguf file at all")
    with pytest.raises(UserError, match=r"fake\.gguf is not a readable GGUF file"):
        load_gguf(f)
