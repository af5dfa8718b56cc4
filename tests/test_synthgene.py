"""SynthGene and SynthGene-Tri: layout, one-hot strings, motif rates, XOR labels, seeds."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from intermodal.synthetic.synthgene import (
    ALPHABET,
    SynthGeneSpec,
    SynthGeneTriSpec,
    generate_synthgene,
    generate_synthgene_tri,
    write_shards,
)


def letters(table: pa.Table, column: str) -> np.ndarray:
    """Letter codes [n, seq_len] back from the one-hot column (checking it is one-hot)."""
    one_hot = table[column].combine_chunks().values.to_numpy().reshape(table.num_rows, -1, 4)
    assert set(np.unique(one_hot)) <= {0.0, 1.0}
    assert (one_hot.sum(axis=2) == 1).all()
    return one_hot.argmax(axis=2)


def contains(codes: np.ndarray, motif: str) -> np.ndarray:
    text = ["".join(ALPHABET[c] for c in row) for row in codes]
    return np.array([motif in row for row in text])


def test_synthgene_layout_and_class_motif_rates() -> None:
    spec = SynthGeneSpec(n_samples=4000)
    table = generate_synthgene(spec)
    assert table.column_names == ["sample_id", "label", *(f"M{m}" for m in range(1, 11))]
    assert table.schema.field("M1").type == pa.list_(pa.float32(), 4 * spec.seq_len)
    assert table["sample_id"].to_pylist() == list(range(4000))
    label = table["label"].to_numpy()
    assert label.sum() == 2000  # balanced exactly
    negative, positive = spec.motifs
    for m, p in enumerate(spec.probabilities, start=1):
        codes = letters(table, f"M{m}")
        own = np.where(label == 1, contains(codes, positive), contains(codes, negative))
        other = np.where(label == 1, contains(codes, negative), contains(codes, positive))
        chance = other.mean()  # the other class's motif only ever occurs by chance
        assert chance < 0.03
        assert abs(own.mean() - (p + (1 - p) * chance)) < 0.04, (m, own.mean())


def test_synthgene_tri_label_is_the_xor_of_motif_presence() -> None:
    spec = SynthGeneTriSpec(n_samples=4000)
    table = generate_synthgene_tri(spec)
    assert table.column_names == ["sample_id", "label", "M1", "M2", "M3"]
    present = [contains(letters(table, m), spec.motif) for m in ("M1", "M2", "M3")]
    label = table["label"].to_numpy()
    np.testing.assert_array_equal(label, present[0] ^ present[1])
    assert abs(present[0].mean() - 0.5) < 0.04 and abs(present[1].mean() - 0.5) < 0.04
    assert present[2].mean() < 0.03  # chance occurrences only
    assert abs(label.mean() - 0.5) < 0.04


def test_seeded_and_written_in_the_input_layout(tmp_path) -> None:
    spec = SynthGeneSpec(n_samples=50, seed=3)
    assert generate_synthgene(spec).equals(generate_synthgene(spec))
    assert not generate_synthgene(spec).equals(generate_synthgene(SynthGeneSpec(n_samples=50)))
    files = write_shards(SynthGeneTriSpec(n_samples=50), str(tmp_path), n_shards=2)
    read = pa.concat_tables([pq.read_table(f) for f in files])
    assert read.equals(generate_synthgene_tri(SynthGeneTriSpec(n_samples=50)))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"motifs": ("ACGTA", "ACGTA")},
        {"motifs": ("ACGTX", "GATCA")},
        {"seq_len": 4},
        {"probabilities": (0.5, 1.5)},
    ],
)
def test_invalid_specs_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        SynthGeneSpec(**kwargs)
