"""A small kustomize in Python, for rendering deploy/k8s without the Go binary (which no
package registry we may use ships; PyPI's `pykustomize` needs Python 3.14).

It implements the part of kustomize that deploy/k8s uses, with kustomize's semantics, and
refuses anything else, so a kustomization can't silently rely on a feature it lacks:

- ``resources``: files (one or more documents) and directories holding a kustomization;
- ``namespace``: set on every namespaced resource;
- ``labels`` with ``includeSelectors: false``: added to metadata.labels, and with
  ``includeTemplates: true`` to pod templates too;
- ``images``: ``newName`` / ``newTag`` / ``digest`` of matching containers and initContainers;
- ``patches`` (``path`` or inline ``patch``, optional ``target`` by kind / name): strategic
  merge patches. Maps merge recursively, ``null`` deletes a key; lists of built-in kinds merge
  by their patch merge key (containers, initContainers, env, volumes by name, volumeMounts by
  mountPath), lists with another merge key (ports, topologySpreadConstraints, ...) are
  refused, other lists and every list of a custom resource are replaced.
  A patch document without ``target`` patches the resource of its kind and name; several
  documents in one file are allowed only without ``target``.

Order as in kustomize: resources are accumulated, then patches, namespace, labels, images.
When a real ``kustomize`` (v5) is on PATH, tests/deploy also compares its output with this.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "patches"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                  "PriorityClass", "StorageClass", "PersistentVolume",
                  "ClusterTriggerAuthentication"}
MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
              "volumeMounts": "mountPath"}
# Lists that kustomize merges by a key this renderer does not implement: refused in patches.
UNSUPPORTED_LISTS = {"ports", "topologySpreadConstraints", "imagePullSecrets", "hostAliases",
                     "ephemeralContainers", "resourceClaims"}
BUILTIN_GROUPS = {"", "apps", "batch", "policy", "autoscaling", "networking.k8s.io",
                  "rbac.authorization.k8s.io"}

Resource = dict[str, Any]


class KustomizeError(Exception):
    pass


def build(directory: Path) -> list[Resource]:
    """Render the kustomization in ``directory`` (like ``kustomize build directory``)."""
    directory = Path(directory)
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(spec) - SUPPORTED
    if unknown:
        raise KustomizeError(f"{directory}: unsupported kustomization fields {sorted(unknown)}")
    resources: list[Resource] = []
    for entry in spec.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            resources.extend(build(path))
        else:
            resources.extend(_load(path))
    _check_unique(resources, directory)
    for patch in spec.get("patches", []):
        _apply_patch(resources, patch, directory)
    if namespace := spec.get("namespace"):
        for res in resources:
            if res["kind"] not in CLUSTER_SCOPED:
                res["metadata"]["namespace"] = namespace
    for label in spec.get("labels", []):
        _apply_labels(resources, label)
    for image in spec.get("images", []):
        _apply_image(resources, image)
    return resources


def _load(path: Path) -> list[Resource]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _check_unique(resources: list[Resource], where: Path) -> None:
    seen: set[tuple[str, str, str]] = set()
    for res in resources:
        ident = (res["kind"], res["metadata"].get("namespace", ""), res["metadata"]["name"])
        if ident in seen:
            raise KustomizeError(f"{where}: {ident} defined twice")
        seen.add(ident)


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0] if "/" in api_version else ""


def _apply_patch(resources: list[Resource], entry: dict[str, Any], directory: Path) -> None:
    unknown = set(entry) - {"path", "patch", "target"}
    if unknown:
        raise KustomizeError(f"{directory}: unsupported patch fields {sorted(unknown)}")
    if "path" in entry:
        docs = _load(directory / entry["path"])
    else:
        docs = [doc for doc in yaml.safe_load_all(entry["patch"]) if doc]
    target = entry.get("target")
    if target and len(docs) > 1:
        raise KustomizeError(f"{directory}: several patches in one entry with a target")
    for doc in docs:
        if isinstance(doc, list):
            raise KustomizeError(f"{directory}: JSON 6902 patches are not supported")
        if target:
            unknown = set(target) - {"kind", "name"}
            if unknown:
                raise KustomizeError(f"{directory}: unsupported target fields {sorted(unknown)}")
            matched = [r for r in resources
                       if r["kind"] == target.get("kind", r["kind"])
                       and r["metadata"]["name"] == target.get("name", r["metadata"]["name"])]
        else:
            matched = [r for r in resources if r["kind"] == doc["kind"]
                       and r["metadata"]["name"] == doc["metadata"]["name"]]
        if not matched:
            raise KustomizeError(f"{directory}: patch {doc['kind']}/{doc['metadata']['name']} "
                                 f"(target {target}) matches no resource")
        for res in matched:
            builtin = _group(res["apiVersion"]) in BUILTIN_GROUPS
            body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind")}
            body["metadata"] = {k: v for k, v in body.get("metadata", {}).items()
                                if k not in ("name", "namespace")}
            merged = _merge(res, body, builtin)
            res.clear()
            res.update(merged)


def _merge(base: Any, patch: Any, builtin: bool, key: str | None = None) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = _merge(out[k], v, builtin, k)
            else:
                out[k] = copy.deepcopy(v)
        return out
    if isinstance(patch, list) and builtin and key in UNSUPPORTED_LISTS:
        raise KustomizeError(f"patching the list {key!r} is not supported by this renderer")
    if (isinstance(base, list) and isinstance(patch, list) and builtin
            and MERGE_KEYS.get(key or "")):
        merge_key = MERGE_KEYS[key or ""]
        out = copy.deepcopy(base)
        for item in patch:
            for i, existing in enumerate(out):
                if existing.get(merge_key) == item.get(merge_key):
                    out[i] = _merge(existing, item, builtin)
                    break
            else:
                out.append(copy.deepcopy(item))
        return out
    return copy.deepcopy(patch)


def _apply_labels(resources: list[Resource], entry: dict[str, Any]) -> None:
    unknown = set(entry) - {"pairs", "includeSelectors", "includeTemplates"}
    if unknown or entry.get("includeSelectors"):
        raise KustomizeError(f"unsupported labels entry {entry}")
    pairs = entry["pairs"]
    for res in resources:
        res["metadata"].setdefault("labels", {}).update(pairs)
        template = res.get("spec", {}).get("template")
        if entry.get("includeTemplates") and isinstance(template, dict):
            template.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)


def _apply_image(resources: list[Resource], entry: dict[str, Any]) -> None:
    unknown = set(entry) - {"name", "newName", "newTag", "digest"}
    if unknown:
        raise KustomizeError(f"unsupported images entry {entry}")
    for container in _containers(resources):
        image = container["image"]
        name, tag = _split_image(image)
        if name != entry["name"]:
            continue
        new_name = entry.get("newName", name)
        if "digest" in entry:
            container["image"] = f"{new_name}@{entry['digest']}"
        elif "newTag" in entry:
            container["image"] = f"{new_name}:{entry['newTag']}"
        else:
            container["image"] = f"{new_name}{tag}"


def _split_image(image: str) -> tuple[str, str]:
    if "@" in image:
        name, _, digest = image.partition("@")
        return name, "@" + digest
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon:]
    return image, ""


def _containers(resources: list[Resource]) -> list[dict[str, Any]]:
    found = []
    for res in resources:
        pod = res.get("spec", {}).get("template", {}).get("spec", {})
        found.extend(pod.get("containers", []))
        found.extend(pod.get("initContainers", []))
    return found
