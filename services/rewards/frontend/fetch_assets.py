"""Fetch the dashboard's browser libraries from the npm registry, verify them, vendor them.

The dashboard serves every script from its own origin, and machines that run it have no
internet, so the library files are committed under ``src/rewards/dashboard/static/vendor/``.
This script is how they got there and how anyone re-checks them:

    python services/rewards/frontend/fetch_assets.py          # re-fetch, verify, write
    python services/rewards/frontend/fetch_assets.py --check  # re-fetch, verify, compare

``package-lock.json`` pins each package's version and npm's ``integrity`` (sha512 of the
tarball); the tarball is refused unless it matches. ``assets.json`` names the files taken
from each tarball and records their own sha512, which the test suite checks offline
(``tests/dashboard/test_assets.py``). Standard library only: no node or npm needed.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import sys
import tarfile
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
STATIC = HERE.parent / "src" / "rewards" / "dashboard" / "static"
REGISTRY = os.environ.get("NPM_CONFIG_REGISTRY", "https://registry.npmjs.org").rstrip("/")


def sha512(data: bytes) -> str:
    """npm's integrity notation: ``sha512-<base64>``."""
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def locked(package: str) -> dict[str, str]:
    lock = json.loads((HERE / "package-lock.json").read_text())
    entry = lock["packages"][f"node_modules/{package}"]
    return {"version": entry["version"], "integrity": entry["integrity"]}


def tarball(package: str, version: str, integrity: str) -> tarfile.TarFile:
    url = f"{REGISTRY}/{package}/-/{package.rsplit('/', 1)[-1]}-{version}.tgz"
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - fixed https URL
        data = response.read()
    if sha512(data) != integrity:
        raise SystemExit(f"{url}: integrity {sha512(data)} differs from package-lock.json's "
                         f"{integrity}; refusing it")
    return tarfile.open(fileobj=io.BytesIO(data), mode="r:gz")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the vendored files instead of writing them")
    args = parser.parse_args(argv)
    manifest = json.loads((HERE / "assets.json").read_text())
    failures = 0
    for package, spec in manifest["packages"].items():
        pin = locked(package)
        if spec["version"] != pin["version"]:
            print(f"{package}: assets.json says {spec['version']}, package-lock.json "
                  f"{pin['version']}", file=sys.stderr)
            return 1
        archive = tarball(package, pin["version"], pin["integrity"])
        for source, target in spec["files"].items():
            member = archive.extractfile(f"package/{source}")
            if member is None:
                raise SystemExit(f"{package}@{pin['version']}: no file {source}")
            data = member.read()
            path = STATIC / target["path"]
            if args.check:
                ok = path.is_file() and path.read_bytes() == data
                ok = ok and target["sha512"] == sha512(data)
                print(f"{'ok' if ok else 'DIFFERS'}  {target['path']} ({package}@{pin['version']} "
                      f"{source})")
                failures += not ok
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                target["sha512"] = sha512(data)
                print(f"wrote {path.relative_to(HERE.parent)} ({package}@{pin['version']} "
                      f"{source}, {len(data):,} bytes)")
    if not args.check:
        (HERE / "assets.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
