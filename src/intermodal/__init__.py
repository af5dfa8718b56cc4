"""intermodal: how modalities interact, per sample and per dataset, streamed with Ray Data."""

__version__ = "0.1.0"
