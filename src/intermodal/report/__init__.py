"""The HTML report of a run: figures and tables from ``global/`` and ``scores/``."""

from intermodal.report.page import Chapter, chapter, write_combined_report, write_report

__all__ = ["Chapter", "chapter", "write_combined_report", "write_report"]
