from __future__ import annotations

from collections import Counter

import numpy as np

from darec.data import SyntheticSpec, build_dataset, generate, load_dataset


def test_seeded_and_structured() -> None:
    spec = SyntheticSpec(n_users=2000, n_items=400, n_clusters=8, seed=3)
    a, b = generate(spec), generate(spec)
    assert a.sequences == b.sequences and a.item_text == b.item_text
    assert generate(SyntheticSpec(n_users=2000, n_items=400, n_clusters=8, seed=4)).sequences != a.sequences
    counts = Counter(i for s in a.sequences.values() for i in s)
    top = sum(c for _, c in counts.most_common(40))
    assert top / sum(counts.values()) > 0.35  # power law: the top 10% of items hold far more than 10%
    assert all(len(s) >= spec.min_length for s in a.sequences.values())
    # Sequential structure: some transitions repeat far more often than chance would allow.
    pairs = Counter((s[i], s[i + 1]) for s in a.sequences.values() for i in range(len(s) - 1))
    total = sum(pairs.values())
    assert pairs.most_common(1)[0][1] > 20 * total / (400 * 400)
    # Titles carry the taste cluster: consecutive items share the title theme more often than not.
    theme = {i: t.split(" No.")[0].split(" ", 1)[1] for i, t in a.item_text.items()}
    same = np.mean([theme[s[i]] == theme[s[i + 1]] for s in a.sequences.values() for i in range(len(s) - 1)])
    assert same > 0.5


def test_named_synthetic_sizes() -> None:
    tiny = load_dataset("synthetic-tiny")
    assert tiny.n_users == 60 and tiny.n_items <= 40 and all(tiny.item_text[1:])
    medium = build_dataset(generate(SyntheticSpec(n_users=20_000, n_items=5_000, n_clusters=30)), "m")
    assert sum(map(len, medium.sequences)) > 300_000
