"""The metric registry (eval/report/registry.py) is the only list of metrics: every spec names a
family runner that exists, every runner computes some metric, and the app reads the schema from it."""

from __future__ import annotations

import pytest

from eval.report import build, fid2d
from eval.report.registry import FAMILIES, METRICS, SCHEMA, MetricSpec, names_for, parse_metric_names


def test_every_metric_has_a_runner_and_every_runner_a_metric():
    assert {s.runner for s in METRICS.values()} == set(build.RUNNERS)
    assert all(name == spec.name for name, spec in METRICS.items())


def test_names_for_groups_the_selection_by_runner_in_catalogue_order():
    selected = parse_metric_names("memorization,noise,kid,ssim_nearest_real")
    assert names_for("similarity", selected) == ["ssim_nearest_real", "memorization"]
    assert names_for("case_stats", selected) == FAMILIES["noise"]
    assert names_for("radiomics", selected) == ["kid"]
    assert names_for("inception", selected) == []
    assert sum(len(names_for(r, list(METRICS))) for r in build.RUNNERS) == len(METRICS)


def test_fid2d_names_are_the_radimagenet_family():
    assert list(fid2d.METRIC_NAMES) == FAMILIES["radimagenet"]


def test_spec_refuses_unknown_direction_and_needs():
    with pytest.raises(ValueError, match="better must be"):
        MetricSpec("x", "f", "smaller", "", "d", runner="case_stats")
    with pytest.raises(ValueError, match="unknown needs"):
        MetricSpec("x", "f", "lower", "", "d", runner="case_stats", needs=frozenset({"gpu"}))


def test_app_reads_the_schema_from_the_registry():
    from ctdiff_app import dashboard

    assert dashboard.SCHEMA is SCHEMA


def test_fast_families_are_those_without_frd_score_or_weights():
    from eval.report import radiomics_eta
    from eval.report.registry import FAST_FAMILIES
    from eval.selftest import FAST_METRICS

    assert FAST_FAMILIES == ("intensity", "noise", "texture", "similarity")
    assert radiomics_eta.FAST_FAMILIES == FAST_FAMILIES
    assert FAST_METRICS == "intensity,noise,texture,similarity"
