"""The math: pure numpy/torch functions, no Ray and no I/O.

Array shapes used throughout (one place, so every module agrees):

- ``B``: samples in a batch; ``M``: modalities (players); ``C``: classes;
- ``T``: explained outputs per sample (1 for the predicted class or the label, ``C`` for all);
- coalition values ``[..., 2**M]``: coalition axis last, index ``S = sum(1 << m for m in S)``,
  bit ``m`` set means modality ``m`` is present;
- Shapley values ``[..., M]``; interaction matrices ``[..., M, M]`` (symmetric).
"""
