"""Evaluation reports: build (metrics over cohorts), cache (features on disk), render (md/html)."""

from eval.report.build import DEFAULTS, build_report
from eval.report.registry import METRICS, SCHEMA

__all__ = ["DEFAULTS", "METRICS", "SCHEMA", "build_report"]
