"""intermodal: how modalities interact, per sample and per dataset, streamed with Ray Data."""

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``intermodal.intershap``, ``intermodal.score`` and ``intermodal.to_shap_explanation``,
    imported on first use: importing the package stays cheap and loads no subpackage."""
    if name == "intershap":
        from intermodal.explain import intershap

        return intershap
    if name == "score":
        from intermodal.pipelines.score import score

        return score
    if name == "to_shap_explanation":
        from intermodal.measures.intershap import to_shap_explanation

        return to_shap_explanation
    raise AttributeError(f"module 'intermodal' has no attribute {name!r}")
