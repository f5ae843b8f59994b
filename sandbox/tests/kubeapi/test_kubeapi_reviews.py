"""The reviews every API server serves, through the official client: SelfSubjectAccessReview and
SubjectAccessReview (authorization.k8s.io/v1), SelfSubjectReview (authentication.k8s.io/v1); and the
ConfigMaps and ServiceAccounts a cluster's CoreDNS and a Helm chart leave there.

``mcsdns check`` and ``status`` ask these before they read; an emulator without them answered 404, and the
commands could not be tried on ``mcsdns demo``. The emulator has no authentication and no RBAC, so the answers
say that: everyone is anonymous, everything is allowed."""

from __future__ import annotations

import json
import socket
import struct
import time
import urllib.error
import urllib.request

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from mcsdns_sandbox.kubeapi import KubeApiEmulator


def attributes(verb: str = "list") -> client.V1ResourceAttributes:
    return client.V1ResourceAttributes(verb=verb, group="multicluster.x-k8s.io", resource="serviceimports")


def test_self_subject_access_review_allows_with_a_reason(api_client: client.ApiClient) -> None:
    review = client.V1SelfSubjectAccessReview(
        spec=client.V1SelfSubjectAccessReviewSpec(resource_attributes=attributes())
    )
    answer = client.AuthorizationV1Api(api_client).create_self_subject_access_review(review)
    assert answer.status.allowed is True
    assert "no RBAC" in answer.status.reason
    assert answer.spec.resource_attributes.resource == "serviceimports", "the spec comes back as asked"


def test_subject_access_review_answers_for_another_user(api_client: client.ApiClient) -> None:
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user="system:serviceaccount:mcsdns-system:mcsdns",
            groups=["system:serviceaccounts"],
            resource_attributes=attributes("watch"),
        )
    )
    answer = client.AuthorizationV1Api(api_client).create_subject_access_review(review)
    assert answer.status.allowed is True
    assert answer.spec.user == "system:serviceaccount:mcsdns-system:mcsdns"


def test_reviews_are_validated_as_the_api_server_does(api_client: client.ApiClient) -> None:
    authorization = client.AuthorizationV1Api(api_client)
    no_subject = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(resource_attributes=attributes())
    )
    with pytest.raises(ApiException) as raised:
        authorization.create_subject_access_review(no_subject)
    assert raised.value.status == 422
    assert "at least one of user or group must be specified" in raised.value.body
    neither = client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec())
    with pytest.raises(ApiException) as raised:
        authorization.create_self_subject_access_review(neither)
    assert raised.value.status == 422
    assert "exactly one of nonResourceAttributes or resourceAttributes" in raised.value.body


def test_self_subject_review_says_who_the_caller_is(api_client: client.ApiClient) -> None:
    answer = client.AuthenticationV1Api(api_client).create_self_subject_review(client.V1SelfSubjectReview())
    # The emulator's kubeconfig carries no credentials: the caller is anonymous, as on a real server.
    assert answer.status.user_info.username == "system:anonymous"
    assert answer.status.user_info.groups == ["system:unauthenticated"]
    api_client.default_headers["Impersonate-User"] = "jane"  # kubectl --as jane
    answer = client.AuthenticationV1Api(api_client).create_self_subject_review(client.V1SelfSubjectReview())
    assert answer.status.user_info.username == "jane"


def test_reviews_are_create_only_and_not_stored(api: KubeApiEmulator, api_client: client.ApiClient) -> None:
    before = api.storage.resource_version
    client.AuthorizationV1Api(api_client).create_self_subject_access_review(
        client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(resource_attributes=attributes())
        )
    )
    assert api.storage.resource_version == before, "a review writes nothing"
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(f"{api.url}/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", timeout=5)
    raised.value.close()
    assert raised.value.code == 405


def test_discovery_lists_the_reviews_with_create_only(api_client: client.ApiClient) -> None:
    groups = {g.name for g in client.ApisApi(api_client).get_api_versions().groups}
    assert {"authorization.k8s.io", "authentication.k8s.io"} <= groups
    authorization = client.AuthorizationV1Api(api_client).get_api_resources()
    verbs = {r.name: r.verbs for r in authorization.resources}
    assert verbs == {"selfsubjectaccessreviews": ["create"], "subjectaccessreviews": ["create"]}
    authentication = client.AuthenticationV1Api(api_client).get_api_resources()
    assert [(r.name, r.kind, r.namespaced) for r in authentication.resources] == [
        ("selfsubjectreviews", "SelfSubjectReview", False)
    ]


def test_configmaps_and_serviceaccounts_are_stored(core: client.CoreV1Api) -> None:
    corefile = ".:53 {\n    forward . /etc/resolv.conf\n}\n"
    core.create_namespaced_config_map(
        "kube-system",
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="coredns"), data={"Corefile": corefile}),
    )
    assert core.read_namespaced_config_map("coredns", "kube-system").data == {"Corefile": corefile}
    with pytest.raises(ApiException) as raised:
        core.create_namespaced_config_map(
            "kube-system",
            client.V1ConfigMap(metadata=client.V1ObjectMeta(name="bad"), data={"a/b": "x"}),
        )
    assert raised.value.status == 422
    assert json.loads(raised.value.body)["details"]["causes"][0]["field"] == "data[a/b]"
    core.create_namespaced_service_account("default", client.V1ServiceAccount(metadata={"name": "mcsdns"}))
    assert [a.metadata.name for a in core.list_namespaced_service_account("default").items] == ["mcsdns"]


def test_a_client_resetting_its_connection_prints_no_traceback(
    api: KubeApiEmulator, capfd: pytest.CaptureFixture[str]
) -> None:
    # A client that dies mid-request sends RST (SO_LINGER 0): the server's read fails with
    # ConnectionResetError, which socketserver used to print as a traceback ("Exception occurred ...").
    for _ in range(5):
        conn = socket.create_connection((api.host, api.port))
        conn.sendall(b"GET /api/v1/namespaces HTTP/1.1\r\nHost: x\r\n")  # the headers never end
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
    with urllib.request.urlopen(f"{api.url}/api/v1/namespaces", timeout=5) as response:
        assert response.status == 200, "the server still answers"
    time.sleep(0.2)  # the handler threads have read their reset by now
    assert "Exception occurred" not in capfd.readouterr().err
    # A real error still prints its traceback.
    try:
        raise ValueError("a bug")
    except ValueError:
        server = api._server
        assert server is not None
        server.handle_error(None, ("127.0.0.1", 1))
    assert "ValueError: a bug" in capfd.readouterr().err
