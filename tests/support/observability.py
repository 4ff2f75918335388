"""The observability assets (deploy/grafana, deploy/prometheus) as data for the tests: the
PromQL expressions of the dashboard and the alert rules, the jobcast metric names and the
equality label matchers they use, and whether a ``/metrics`` text exposes each name.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "jobcast.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"

#: A jobcast metric name in PromQL (not inside a longer identifier); with a colon, it is a
#: recording rule's output, not a scraped name.
_NAME = re.compile(r"(?<![\w:])(jobcast_[A-Za-z0-9_:]+)")
#: ``name{...}``: a selector with its label matchers.
_SELECTOR = re.compile(r"(?<![\w:])(jobcast_[A-Za-z0-9_]+)\s*\{([^}]*)\}")
_MATCHER = re.compile(r'([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*"([^"]*)"')
#: Labels Prometheus adds when it scrapes: never on /metrics itself.
_TARGET_LABELS = frozenset({"job", "instance"})
#: Sample suffixes and the metric types that have them (as prometheus-client's parser names
#: families: a counter ``x_total`` is family ``x``).
_SUFFIXES = (
    ("_total", frozenset({"counter"})),
    ("_bucket", frozenset({"histogram"})),
    ("_sum", frozenset({"histogram", "summary"})),
    ("_count", frozenset({"histogram", "summary"})),
)
_SERIES_TYPES = frozenset({"gauge", "untyped", "info", "stateset", "unknown"})


def load_dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def load_rules() -> dict[str, Any]:
    rules: dict[str, Any] = yaml.safe_load(ALERTS.read_text())
    return rules


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    """Every panel target's expression and every query variable's query."""
    exprs = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", ())
        if target.get("expr")
    ]
    for variable in dashboard.get("templating", {}).get("list", ()):
        if variable.get("type") == "query":
            query = variable.get("query")
            exprs.append(query["query"] if isinstance(query, dict) else str(query))
    return exprs


def rule_exprs(rules: dict[str, Any]) -> list[str]:
    return [str(rule["expr"]) for group in rules["groups"] for rule in group["rules"]]


def metric_names(exprs: Iterable[str]) -> set[str]:
    """The scraped jobcast names (recording rules' ``a:b`` outputs left out)."""
    return {name for expr in exprs for name in _NAME.findall(expr) if ":" not in name}


def equality_matchers(exprs: Iterable[str]) -> set[tuple[str, str, str]]:
    """``(metric, label, value)`` of each ``label="value"`` matcher on a jobcast metric
    (not the labels Prometheus adds, not dashboard variables)."""
    found = set()
    for expr in exprs:
        for name, inner in _SELECTOR.findall(expr):
            for label, op, value in _MATCHER.findall(inner):
                if op == "=" and label not in _TARGET_LABELS and "$" not in value:
                    found.add((name, label, value))
    return found


class Exposition:
    """A ``/metrics`` text, parsed with prometheus-client's own parser."""

    def __init__(self, text: str) -> None:
        from prometheus_client.parser import text_string_to_metric_families

        self.types: dict[str, str] = {}
        self.samples: list[tuple[str, dict[str, str], float]] = []
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            self.samples.extend((s.name, dict(s.labels), s.value) for s in family.samples)

    def has(self, name: str) -> bool:
        """Whether ``name`` is a series name of an exposed metric: a gauge's (or info's) own
        name, a counter's ``_total``, a histogram's ``_bucket``/``_sum``/``_count``. Exposed
        means declared (``# TYPE``), so a labelled counter nothing has incremented yet
        counts; a counter's or histogram's bare family name does not."""
        if self.types.get(name) in _SERIES_TYPES:
            return True
        for suffix, kinds in _SUFFIXES:
            if name.endswith(suffix) and self.types.get(name[: -len(suffix)]) in kinds:
                return True
        return False

    def has_label(self, name: str, label: str, value: str) -> bool:
        return any(n == name and labels.get(label) == value for n, labels, _ in self.samples)

    def value(self, name: str, **labels: str) -> float | None:
        """The first sample of ``name`` whose labels include ``labels``, or None."""
        for sample_name, sample_labels, sample_value in self.samples:
            if sample_name == name and all(sample_labels.get(k) == v for k, v in labels.items()):
                return sample_value
        return None


def promtool() -> str | None:
    """promtool (Debian's prometheus package), or None; set ``JOBCAST_PROMTOOL`` to
    choose another."""
    return os.environ.get("JOBCAST_PROMTOOL") or shutil.which("promtool")
