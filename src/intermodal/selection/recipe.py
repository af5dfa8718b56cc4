"""The shipped library recipe: the ten latent data sets of paper 003 Table 2 (four with one
interaction, six mixed) × the model families we have, at sizes that build in minutes on two
CPU cores (docs/choices.md, "The model library").

The mixed data sets follow the paper's "truth" row of Table 2: the share of each interaction
in the total information (a label from both z1 and z2 counts as synergy, from zc as
redundancy). ``share_mix`` turns those shares into weights of the generator's pure label
vectors (DR from zc, DU1 from z1, DU2 from z2, DS from z1 ⊙ z2), each share becoming that
share of the label score's variance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from intermodal.models import FAMILIES
from intermodal.synthetic.pid_data import Interaction, LatentSpec, share_mix

PAIR = ("x1", "x2")


@dataclass(frozen=True)
class BuildSizes:
    """How large the library's data and training are. ``n_train`` rows train each family,
    ``n_heldout`` other rows give its accuracy and are the run's input; ``n_clusters`` cells per
    modality keep the plug-in bias of a ``k × k × 2`` joint small at ``n_heldout`` rows;
    ``encoder_steps`` caps the training of ``pid_cvx``'s joint encoders (their default, 20,000
    steps with early stopping, is most of a run at these sizes)."""

    n_train: int = 2000
    n_heldout: int = 2000
    epochs: int = 10
    n_clusters: int = 10
    encoder_steps: int = 1000
    seed: int = 0
    families: tuple[str, ...] = field(default=FAMILIES)

    def as_dict(self) -> dict:
        return {**asdict(self), "families": list(self.families)}


@dataclass(frozen=True)
class LibraryDataset:
    name: str
    description: str  # the paper's label function
    mix: dict[Interaction, float]  # interaction → share of the information

    def spec(self, sizes: BuildSizes) -> LatentSpec:
        n = sizes.n_train + sizes.n_heldout
        if len(self.mix) == 1:
            (setting,) = self.mix
            return LatentSpec(setting=setting, n_samples=n, seed=sizes.seed)
        return LatentSpec(setting="mixed", mix=share_mix(self.mix), n_samples=n, seed=sizes.seed)


RECIPE = (
    LibraryDataset("DR", "y = f(zc)", {"DR": 1.0}),
    LibraryDataset("DU1", "y = f(z1)", {"DU1": 1.0}),
    LibraryDataset("DU2", "y = f(z2)", {"DU2": 1.0}),
    LibraryDataset("DS", "y = f(z1, z2)", {"DS": 1.0}),
    LibraryDataset("mix_z1h_z2h_zch", "y = f(z1*, z2*, zc*)", {"DR": 0.13, "DS": 0.27}),
    LibraryDataset("mix_z1_z2h_zch", "y = f(z1, z2*, zc*)", {"DU1": 0.25, "DS": 0.25}),
    LibraryDataset("mix_z1_z2_zch", "y = f(z1, z2, zc*)", {"DR": 0.18, "DS": 0.36}),
    LibraryDataset("mix_z1h_z2h_zc", "y = f(z1*, z2*, zc)", {"DR": 0.22, "DS": 0.22}),
    LibraryDataset("mix_z2h_zch", "y = f(z2*, zc*)", {"DR": 0.21, "DU2": 0.21}),
    LibraryDataset("mix_z2h_zc", "y = f(z2*, zc)", {"DR": 0.34, "DU2": 0.17}),
)
