from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from darec.data.batching import Batch, bucketed_batches, pad_right, training_windows, trim


@pytest.mark.parametrize("context", [0, 1, 3])
def test_every_transition_is_a_target_once_with_context(context: int) -> None:
    sequences = [np.arange(1, 24), np.array([5, 6]), np.arange(100, 105)]
    items, skip = training_windows(sequences, max_len=6, context=context)
    batch = Batch(torch.from_numpy(items), torch.from_numpy(skip))
    targets = batch.next_item_targets()
    seen: Counter = Counter()
    for row in range(len(items)):
        for pos in torch.nonzero(targets[row]).flatten().tolist():
            before = items[row, pos]  # the input item at this position
            seen[(int(before), int(targets[row, pos]))] += 1
            # context: the target sees every earlier item of its window
            if skip[row]:
                assert pos >= context
    expected = Counter((int(s[i]), int(s[i + 1])) for s in sequences for i in range(len(s) - 1))
    assert seen == expected  # each next-item transition exactly once


def test_most_recent_windows_only() -> None:
    sequences = [np.arange(1, 24), np.array([5, 6])]
    items, skip = training_windows(sequences, max_len=6, context=2, per_sequence=1)
    assert items.tolist() == [list(range(17, 24)), [5, 6, 0, 0, 0, 0, 0]] and skip.tolist() == [0, 0]
    all_items, _ = training_windows(sequences, max_len=6, context=2)
    two, two_skip = training_windows(sequences, max_len=6, context=2, per_sequence=2)
    assert two.tolist() == [all_items[0].tolist(), all_items[1].tolist(), [5, 6, 0, 0, 0, 0, 0]]
    assert two_skip.tolist() == [2, 0, 0]


def test_pad_trim_and_buckets() -> None:
    items, lengths = pad_right([np.array([1, 2, 3]), np.arange(1, 10)], 4)
    assert items.tolist() == [[1, 2, 3, 0], [6, 7, 8, 9]] and lengths.tolist() == [3, 4]
    assert trim(torch.tensor([[1, 2, 0, 0], [3, 0, 0, 0]])).shape == (2, 2)
    lengths = torch.randint(1, 50, (1000,))
    batches = list(bucketed_batches(lengths, 16, torch.Generator().manual_seed(0), pool=8))
    assert sorted(torch.cat(batches).tolist()) == list(range(1000))  # every row once
    spread = np.mean([float(lengths[b].max() - lengths[b].min()) for b in batches])
    assert spread < 10  # rows of similar length share a batch (random batches would spread ~45)


def reference_windows(sequences: list[np.ndarray], max_len: int, context: int, per_sequence: int) -> tuple[list, list]:
    """The windows as the rule reads, one at a time: from the end, each overlapping the next by context + 1."""
    windows, skips = [], []
    for seq in sequences:
        end, taken = len(seq), 0
        while end >= 2 and (per_sequence <= 0 or taken < per_sequence):
            taken += 1
            start = max(0, end - max_len - 1)
            windows.append(list(seq[start:end]) + [0] * (max_len + 1 - (end - start)))
            skips.append(context if start > 0 else 0)
            end = start + 1 + context
            if start == 0:
                break
        if taken == per_sequence and skips and skips[-1]:
            skips[-1] = 0
    return windows, skips


@pytest.mark.parametrize("max_len, context, per_sequence", [(6, 0, 0), (6, 2, 0), (6, 5, 0), (4, 1, 2), (10, 3, 1)])
def test_windows_cut_on_arrays_equal_the_rule_applied_one_by_one(max_len: int, context: int, per_sequence: int) -> None:
    rng = np.random.default_rng(max_len + context)
    sequences = [rng.integers(1, 50, size=n) for n in rng.integers(0, 40, size=60)]
    items, skip = training_windows(sequences, max_len, context, per_sequence)
    windows, skips = reference_windows(sequences, max_len, context, per_sequence)
    assert items.tolist() == windows and skip.tolist() == skips
