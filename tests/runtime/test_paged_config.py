"""The paged attention kernel's launch configurations (runtime/kernels/paged_config.py): decodes keep their
measured bests, and passes of few row groups get the splits of as many decode rows."""

from runtime.kernels.paged_config import TUNED, config_for, group_split_variant, splits_for_groups

LLAMA8B = (32, 8, 128)  # query heads, KV heads, head dim


def test_decodes_keep_the_measured_bests():
    for rows, want in ((1, 16), (5, 8), (8, 8), (32, 1), (64, 1), (200, 1)):
        assert config_for(rows, *LLAMA8B)["splits"] == want
    assert config_for(8, *LLAMA8B) == TUNED[8]


def test_groups_take_the_splits_of_as_many_decode_rows():
    # a verify of 8 sequences x 5 rows: 2 groups each (4 + 1 rows) = 16 groups -> 128 programs -> 8 splits
    assert splits_for_groups(16, *LLAMA8B) == 8
    assert splits_for_groups(64, *LLAMA8B) == 1  # 512 programs fill the GPU
    assert splits_for_groups(0, *LLAMA8B) == 16  # (an empty pass is priced as one group)


def test_second_graph_only_where_the_fewest_groups_want_more_splits():
    # bucket 64 of 4-row groups: 16 groups at the fewest, which want 8 splits; the bucket's own has none
    assert group_split_variant(64, 4, *LLAMA8B) == 8
    assert group_split_variant(8, 4, *LLAMA8B) == 16
    assert group_split_variant(128, 4, *LLAMA8B) is None  # 32 groups x 8 KV heads = 256 programs: no splits
    assert group_split_variant(1, 4, *LLAMA8B) is None  # a single row splits 16 ways already
    # multi-head attention (16-row groups): a 32-row bucket of 2 groups x 32 KV heads wants 16 splits
    assert group_split_variant(32, 16, 32, 32, 128) == 16
