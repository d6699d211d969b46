#!/usr/bin/env python3
"""api/openapi.yaml -> JSON, for the build (Tally serves it at /openapi.json).

Usage: scripts/openapi_json.py IN.yaml OUT.json
Refuses what YAML 1.1 would read differently from YAML 1.2 (a key or enum value parsed as a boolean, a date),
so the JSON is exactly what the spec's readers and the end-to-end tests' YAML 1.2 parser see.
"""
import datetime
import json
import sys

import yaml


def check(node, path):
    if isinstance(node, dict):
        for k, v in node.items():
            if isinstance(k, bool) or not isinstance(k, (str, int)):
                sys.exit(f"{path}: key {k!r} is not a string (quote it)")
            check(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            check(v, f"{path}/{i}")
    elif isinstance(node, (datetime.date, datetime.datetime)):
        sys.exit(f"{path}: {node!r} reads as a date (quote it)")


def main():
    src, out = sys.argv[1], sys.argv[2]
    with open(src, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    check(doc, "#")
    if not str(doc.get("openapi", "")).startswith("3.1"):
        sys.exit(f"{src}: openapi must be 3.1.x")
    with open(out, "w", encoding="utf-8") as f:
        json.dump(doc, f, separators=(",", ":"), ensure_ascii=False)


if __name__ == "__main__":
    main()
