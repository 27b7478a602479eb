import json

import pytest

from sim.errors import UserError
from sim.model import CATALOG, load_model


def test_llama31_8b_hand_checked():
    m = load_model("llama-3.1-8b")
    # embed 128256*4096 + 32 layers * (attn 41.9M + mlp 176.2M + norms) + final norm + untied head
    assert m.param_count == 8_030_261_248
    assert m.kv_bytes_per_token("bf16") == 131_072  # 2 * 32 * 8 * 128 * 2
    assert m.kv_bytes_per_token("fp8") == 65_536
    assert m.weight_bytes("bf16") == pytest.approx(16.06e9, rel=1e-3)


def test_known_parameter_counts():
    # published totals (model cards): 70.6B, 46.7B (Mixtral), 1.24B (tied head), 7.6B (Qwen2.5, QKV bias)
    assert load_model("llama-3.1-70b").param_count / 1e9 == pytest.approx(70.55, abs=0.01)
    assert load_model("mixtral-8x7b").param_count / 1e9 == pytest.approx(46.70, abs=0.01)
    assert load_model("llama-3.2-1b").param_count / 1e9 == pytest.approx(1.236, abs=0.001)
    assert load_model("qwen2.5-7b").param_count / 1e9 == pytest.approx(7.616, abs=0.001)
    assert load_model("smollm2-135m").param_count / 1e6 == pytest.approx(134.5, abs=0.1)


def test_moe_active_params_use_top_k_only():
    m = load_model("mixtral-8x7b")
    assert m.active_params_per_token / 1e9 == pytest.approx(12.75, abs=0.05)  # "12.9B active" incl. embedding


def test_flops_per_token_is_two_per_active_param_plus_attention():
    m = load_model("llama-3.1-8b")
    assert m.flops_per_token(0) == 2 * m.active_params_per_token
    assert m.flops_per_token(1000) - m.flops_per_token(0) == 4 * 32 * 4096 * 1000


def test_catalog_has_the_required_models():
    for name in ["llama-3.2-1b", "llama-3.2-3b", "llama-3.1-8b", "llama-3.1-70b", "llama-2-7b", "llama-2-70b",
                 "mistral-7b", "qwen2.5-7b", "mixtral-8x7b", "llada-8b", "smollm2-135m"]:
        assert name in CATALOG
    assert load_model("llada-8b").attention == "bidirectional"


def test_hf_config_json(tmp_path):
    cfg = {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
           "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 128256, "rope_theta": 500000.0,
           "tie_word_embeddings": False, "max_position_embeddings": 131072}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    m = load_model(str(tmp_path))
    assert m.param_count == load_model("llama-3.1-8b").param_count


def test_unknown_model_lists_known():
    with pytest.raises(UserError, match="unknown model 'llama-9b'.*known: .*llama-3.1-8b"):
        load_model("llama-9b")


def test_bad_config_json(tmp_path):
    (tmp_path / "config.json").write_text('{"hidden_size": 64,')
    with pytest.raises(UserError, match=r"config.json:1:\d+: malformed JSON"):
        load_model(str(tmp_path / "config.json"))
    (tmp_path / "config.json").write_text('{"hidden_size": 64}')
    with pytest.raises(UserError, match="lacks num_layers"):
        load_model(str(tmp_path / "config.json"))
