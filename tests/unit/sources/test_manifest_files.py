"""One manifest file in, its valid records and its rejected objects out (``sources.manifests.parse_file``):
where each rejected object is, as ``kubectl apply`` would say it."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcsdns.errors import ManifestError
from mcsdns.sources.manifests import parse_file
from tests.support import service_import, write_manifests

IMPORT = "apiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceImport\n"


def test_documents_are_numbered_from_one_counting_empty_ones(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_text(
        f"---\n{IMPORT}metadata: {{name: web}}\nspec: {{type: Headless}}\n---\n---\n"
        f"{IMPORT}metadata: {{name: api}}\nspec: {{type: Nope}}\n"
    )
    manifest = parse_file(str(path))
    assert list(manifest.records) == [("ServiceImport", "default", "web")]
    [rejection] = manifest.rejections
    assert (rejection.document, rejection.item) == (3, None)
    assert rejection.text() == (
        f"{path} document 3 ServiceImport default/api: spec.type must be ClusterSetIP or Headless, got 'Nope'"
    )


def test_list_items_are_placed_by_index_and_typed_lists_lend_their_kind(tmp_path: Path) -> None:
    good = service_import("web", "prod")
    bad = service_import("api", "prod", type="Nope")
    for obj in (good, bad):
        del obj["kind"], obj["apiVersion"]
    path = write_manifests(
        tmp_path,
        "list.yaml",
        [
            {
                "apiVersion": "multicluster.x-k8s.io/v1alpha1",
                "kind": "ServiceImportList",
                "items": [good, "x", bad],
            }
        ],
    )
    manifest = parse_file(str(path))
    assert list(manifest.records) == [("ServiceImport", "prod", "web")]
    assert [r.text() for r in manifest.rejections] == [
        f"{path} document 1 items[1]: not a Kubernetes object (a string)",
        f"{path} document 1 items[2] ServiceImport prod/api: "
        "spec.type must be ClusterSetIP or Headless, got 'Nope'",
    ]
    assert [r.ref for r in manifest.rejections] == [None, ("ServiceImport", "prod", "api")]


def test_an_object_defined_twice_is_rejected_at_each_place(tmp_path: Path) -> None:
    path = write_manifests(
        tmp_path,
        "f.yaml",
        [
            service_import("web", "prod", ips=["10.0.0.1"]),
            service_import("db", "prod"),
            service_import("web", "prod", ips=["10.0.0.2"]),
        ],
    )
    manifest = parse_file(str(path))
    assert list(manifest.records) == [("ServiceImport", "prod", "db")]
    assert [r.text() for r in manifest.rejections] == [
        f"{path} document 1 ServiceImport prod/web: defined more than once in this file (also document 3)",
        f"{path} document 3 ServiceImport prod/web: defined more than once in this file (also document 1)",
    ]


def test_other_kinds_are_listed_as_ignored(tmp_path: Path) -> None:
    path = write_manifests(
        tmp_path,
        "f.yaml",
        [
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}},
            service_import("web", "prod"),
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web"}},
        ],
    )
    manifest = parse_file(str(path))
    assert manifest.ignored == ("apps/v1 Deployment", "v1 ConfigMap")
    assert manifest.rejections == () and len(manifest.records) == 1


def test_a_list_whose_items_are_not_a_list_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_text("apiVersion: v1\nkind: List\nitems: {a: 1}\n")
    [rejection] = parse_file(str(path)).rejections
    assert rejection.text() == f"{path} document 1 List: items: a mapping, not a list of objects"


def test_yaml_that_does_not_parse_rejects_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_text(f"{IMPORT}metadata: {{name: web}}\n---\nkind: [unclosed\n")
    with pytest.raises(ManifestError, match=r"f\.yaml: line \d+: "):
        parse_file(str(path))
