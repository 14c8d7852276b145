#!/usr/bin/env python3
"""Write deploy/kubernetes/base/prometheusrule.yaml from prometheus/alerts.yml.

The PrometheusRule (Prometheus Operator) carries exactly the rule groups of
prometheus/alerts.yml; tests/test_kubernetes.py fails when the two drift apart.

    python scripts/gen-prometheusrule.py           # rewrite the manifest
    python scripts/gen-prometheusrule.py --check   # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
ALERTS = ROOT / "prometheus" / "alerts.yml"
OUTPUT = ROOT / "deploy" / "kubernetes" / "base" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from prometheus/alerts.yml by scripts/gen-prometheusrule.py: do not edit by hand.
# For the Prometheus Operator. If your Prometheus selects rules by label (e.g. the
# kube-prometheus-stack's `release: <name>`), add that label to metadata.labels.
# The recording rule cloudflare_ai_gateway_exporter:up expects job="cloudflare-ai-gateway",
# the name of the Service in service.yaml (a ServiceMonitor's job is its Service's name).
"""


class _Dumper(yaml.SafeDumper):
    """Block scalars for long or multi-line strings, so templated descriptions stay readable."""


def _str_representer(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else ">" if len(data) > 100 and " " in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_representer)


def render(alerts_text: str) -> str:
    alerts: Any = yaml.safe_load(alerts_text)
    if not isinstance(alerts, dict) or not isinstance(alerts.get("groups"), list):
        raise SystemExit(f"{ALERTS}: no `groups` list")
    manifest = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "cloudflare-ai-gateway-exporter",
            "labels": {
                "app.kubernetes.io/name": "cloudflare-ai-gateway-exporter",
                "app.kubernetes.io/component": "exporter",
            },
        },
        "spec": {"groups": alerts["groups"]},
    }
    body = yaml.dump(manifest, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=110)
    return HEADER + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if the manifest is out of date")
    args = parser.parse_args(argv)
    text = render(ALERTS.read_text(encoding="utf-8"))
    current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
    if args.check:
        if current != text:
            print(f"{OUTPUT.relative_to(ROOT)} is out of date: run scripts/gen-prometheusrule.py", file=sys.stderr)
            return 1
        return 0
    if current != text:
        OUTPUT.write_text(text, encoding="utf-8")
        print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
