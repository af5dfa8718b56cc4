"""The HTML report of a run: figures and tables from ``global/`` and ``scores/``."""

from intermodal.report.page import write_combined_report, write_report

__all__ = ["write_combined_report", "write_report"]
