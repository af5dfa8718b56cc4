"""intermodal: how modalities interact, per sample and per dataset, streamed with Ray Data."""

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``intermodal.intershap``, imported on first use: importing the package stays cheap and
    loads no subpackage."""
    if name == "intershap":
        from intermodal.explain import intershap

        return intershap
    raise AttributeError(f"module 'intermodal' has no attribute {name!r}")
