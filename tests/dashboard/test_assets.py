"""The vendored browser libraries are exactly the files recorded from the npm registry
(offline check; `make dashboard-assets-check` re-fetches and compares)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FRONTEND = ROOT / "services" / "rewards" / "frontend"
STATIC = ROOT / "services" / "rewards" / "src" / "rewards" / "dashboard" / "static"


def test_vendored_files_match_the_recorded_npm_versions_and_hashes():
    manifest = json.loads((FRONTEND / "assets.json").read_text())
    lock = json.loads((FRONTEND / "package-lock.json").read_text())
    declared = json.loads((FRONTEND / "package.json").read_text())["dependencies"]
    assert set(manifest["packages"]) == set(declared)
    for package, spec in manifest["packages"].items():
        locked = lock["packages"][f"node_modules/{package}"]
        assert spec["version"] == locked["version"] == declared[package]  # exact pins
        assert locked["integrity"].startswith("sha512-")
        for source, target in spec["files"].items():
            data = (STATIC / target["path"]).read_bytes()
            digest = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
            assert digest == target["sha512"], f"{target['path']} differs from {package} {source}"


def test_the_vendored_uplot_is_the_pinned_release():
    version = json.loads((FRONTEND / "assets.json").read_text())["packages"]["uplot"]["version"]
    css = (STATIC / "vendor" / "uPlot.min.css").read_text()
    script = (STATIC / "vendor" / "uPlot.iife.min.js").read_text()
    assert script.startswith(f"/*! https://github.com/leeoniya/uPlot (v{version})")
    assert ".uplot" in css
