"""SynthGene and SynthGene-Tri: DNA-like strings with class motifs (InTense, paper 004 §4.1).

Every modality of a sample is a uniformly random string over {A, C, G, T}; a motif (a short
fixed string) is written over it at a uniformly random position with a per-modality probability.

* SynthGene (App. C.1): the label is a fair coin; modality ``m`` carries the motif of the
  sample's class with probability ``p_m``. The paper's setting (the default) has 10 modalities
  with ``p = 0.2, 0.3, 0.5`` for M2, M4, M7 and 0 elsewhere, so only those three inform the
  label, M7 most.
* SynthGene-Tri (App. C.2): three modalities; M1 and M2 each carry one (class-free) motif with
  probability 1/2, M3 never does; the label is the XOR of "M1 contains the motif" and "M2
  contains the motif" (read from the strings, so a chance occurrence counts as present).

Features are one-hot letters flattened position-major: modality column ``M<k>`` is a fixed-size
list<float32>[4 * seq_len] with entry ``4 * position + letter`` (letters in ``ACGT`` order).

Sizes: the paper uses strings of 100 letters, motifs of 7 and 10k samples. Here motifs have 5
letters and strings 12 (SynthGene) or 20 (SynthGene-Tri), 4000 samples by default, so a small
MLP subnetwork learns them on a CPU in seconds. A chance occurrence of a 5-letter motif has
probability ≈ 0.8 % in 12 letters and ≈ 1.6 % in 20. SynthGene's strings are the shorter
because M2 carries its motif in only 20 % of the rows: with 20 letters (16 motif positions)
InTense's penalty pruned M2's block before its subnetwork learned the motif on two of four
seeds; with 12 letters (8 positions) M2 ranked third on all four.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, Field, model_validator

from intermodal.synthetic.hdxor import write_table_shards

ALPHABET = "ACGT"

# Two class motifs for SynthGene (negative, positive) and one for SynthGene-Tri. The two class
# motifs share their letter composition, so a subnetwork must read their order, as in the paper.
# The XOR label has no first-order signal: a subnetwork only learns "motif present" from what
# its random start already sees, and a motif with a distinct composition gives that. With a
# composition-neutral motif (TGCAT) the CPU-sized models memorised the training rows instead
# (held-out accuracy 0.50).
CLASS_MOTIFS = ("ACGTA", "GATCA")
XOR_MOTIF = "TTTTT"

PAPER_PROBABILITIES = (0.0, 0.2, 0.0, 0.3, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0)


def _check_motif(motif: str, seq_len: int) -> None:
    if not motif or set(motif) - set(ALPHABET):
        raise ValueError(f"motif {motif!r} must be a non-empty string over {ALPHABET}")
    if len(motif) > seq_len:
        raise ValueError(f"motif {motif!r} is longer than seq_len={seq_len}")


class SynthGeneSpec(BaseModel, extra="forbid", frozen=True):
    """SynthGene: ``probabilities[m]`` is the chance modality ``M<m+1>`` carries the class
    motif (``motifs[label]``)."""

    n_samples: int = Field(default=4000, ge=2)
    seq_len: int = Field(default=12, ge=1)
    probabilities: tuple[float, ...] = PAPER_PROBABILITIES
    motifs: tuple[str, str] = CLASS_MOTIFS
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> SynthGeneSpec:
        if not self.probabilities or not all(0 <= p <= 1 for p in self.probabilities):
            raise ValueError(f"probabilities must be in [0, 1], got {self.probabilities}")
        for motif in self.motifs:
            _check_motif(motif, self.seq_len)
        if self.motifs[0] == self.motifs[1]:
            raise ValueError("the two class motifs must differ")
        return self

    @property
    def modality_names(self) -> list[str]:
        return [f"M{m + 1}" for m in range(len(self.probabilities))]


class SynthGeneTriSpec(BaseModel, extra="forbid", frozen=True):
    """SynthGene-Tri: M1 and M2 carry ``motif`` with probability ``probability`` each; M3 never
    does; label = XOR of motif presence in M1 and M2."""

    n_samples: int = Field(default=4000, ge=2)
    seq_len: int = Field(default=20, ge=1)
    probability: float = Field(default=0.5, ge=0, le=1)
    motif: str = XOR_MOTIF
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> SynthGeneTriSpec:
        _check_motif(self.motif, self.seq_len)
        return self

    @property
    def modality_names(self) -> list[str]:
        return ["M1", "M2", "M3"]


def _random_strings(rng: np.random.Generator, n: int, seq_len: int) -> np.ndarray:
    """Letter codes [n, seq_len] int64 in 0..3."""
    return rng.integers(0, len(ALPHABET), size=(n, seq_len))


def _codes(motif: str) -> np.ndarray:
    return np.array([ALPHABET.index(letter) for letter in motif])


def _insert(
    rng: np.random.Generator, strings: np.ndarray, motifs: np.ndarray, rows: np.ndarray
) -> None:
    """Write ``motifs[i]`` ([n, k] codes) over ``strings[i]`` at a random position, in place,
    for the rows where ``rows`` ([n] bool) is set."""
    n, seq_len = strings.shape
    k = motifs.shape[1]
    start = rng.integers(0, seq_len - k + 1, size=n)
    columns = start[:, None] + np.arange(k)
    selected = np.flatnonzero(rows)
    strings[selected[:, None], columns[selected]] = motifs[selected]


def _contains(strings: np.ndarray, motif: str) -> np.ndarray:
    """Whether each string holds ``motif`` anywhere: [n] bool."""
    k = len(motif)
    windows = np.lib.stride_tricks.sliding_window_view(strings, k, axis=1)
    return (windows == _codes(motif)).all(axis=2).any(axis=1)


def _one_hot_column(strings: np.ndarray) -> pa.FixedSizeListArray:
    """Letter codes [n, seq_len] -> fixed-size list<float32>[4 * seq_len] of one-hot letters."""
    one_hot = np.eye(len(ALPHABET), dtype=np.float32)[strings].reshape(len(strings), -1)
    return pa.FixedSizeListArray.from_arrays(pa.array(one_hot.reshape(-1)), one_hot.shape[1])


def _table(label: np.ndarray, names: list[str], strings: list[np.ndarray]) -> pa.Table:
    columns = [
        pa.array(np.arange(len(label), dtype=np.int64)),
        pa.array(label.astype(np.int64)),
        *(_one_hot_column(s) for s in strings),
    ]
    return pa.Table.from_arrays(columns, names=["sample_id", "label", *names])


def generate_synthgene(spec: SynthGeneSpec) -> pa.Table:
    """Columns: ``sample_id`` int64, ``label`` int64 in {0, 1} (balanced: exactly half the
    rows are positive, shuffled), ``M1``..``M<M>`` one-hot strings (see the module doc)."""
    rng = np.random.default_rng(spec.seed)
    n = spec.n_samples
    label = rng.permutation(np.arange(n) % 2)
    class_motifs = np.stack([_codes(motif) for motif in spec.motifs])[label]
    strings = []
    for p in spec.probabilities:
        modality = _random_strings(rng, n, spec.seq_len)
        _insert(rng, modality, class_motifs, rng.random(n) < p)
        strings.append(modality)
    return _table(label, spec.modality_names, strings)


def generate_synthgene_tri(spec: SynthGeneTriSpec) -> pa.Table:
    """Columns: ``sample_id`` int64, ``label`` int64 = [M1 holds the motif] XOR [M2 holds the
    motif], ``M1``, ``M2``, ``M3`` one-hot strings (see the module doc)."""
    rng = np.random.default_rng(spec.seed)
    n = spec.n_samples
    motif = np.broadcast_to(_codes(spec.motif), (n, len(spec.motif)))
    strings = [_random_strings(rng, n, spec.seq_len) for _ in spec.modality_names]
    for informative in strings[:2]:
        _insert(rng, informative, motif, rng.random(n) < spec.probability)
    label = _contains(strings[0], spec.motif) ^ _contains(strings[1], spec.motif)
    return _table(label, spec.modality_names, strings)


def write_shards(spec: SynthGeneSpec | SynthGeneTriSpec, uri: str, n_shards: int = 4) -> list[str]:
    """Generate the data set of ``spec`` and write it with
    :func:`intermodal.synthetic.hdxor.write_table_shards`."""
    if isinstance(spec, SynthGeneTriSpec):
        return write_table_shards(generate_synthgene_tri(spec), uri, n_shards)
    return write_table_shards(generate_synthgene(spec), uri, n_shards)
