"""The paged attention kernel's launch configurations (runtime/kernels/paged_config.py)."""

from runtime.kernels.paged_config import TUNED, config_for

LLAMA8B = (32, 8, 128)  # query heads, KV heads, head dim


def test_the_measured_bests_serve_the_shape_they_were_measured_on():
    for rows, want in ((1, 16), (5, 8), (8, 8), (32, 1), (64, 1), (200, 1), (5000, 1)):
        assert config_for(rows, *LLAMA8B)["splits"] == want
    assert config_for(8, *LLAMA8B) == TUNED[8]
    config_for(8, *LLAMA8B)["splits"] = 99  # a copy: the table is not changed through it
    assert TUNED[8]["splits"] == 8


def test_other_shapes_split_until_about_1024_programs():
    # 2 rows x 32 KV heads = 64 programs -> 16 splits; 64 x 32 = 2,048 programs -> none
    assert config_for(2, 32, 32, 128)["splits"] == 16
    assert config_for(64, 32, 32, 128)["splits"] == 1
    assert config_for(16, 32, 8, 64)["splits"] == 8  # the 1B draft: 128 programs
