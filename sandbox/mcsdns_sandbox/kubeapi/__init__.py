"""A Kubernetes API server emulator for tests, benchmarks and the demo (no kube-apiserver binary needed).

The official ``kubernetes`` Python client and ``kubectl`` talk to it over plain HTTP on loopback. It serves
core/v1 namespaces and services, discovery.k8s.io/v1 endpointslices, coordination.k8s.io/v1 leases, the MCS
API's serviceexports and serviceimports (multicluster.x-k8s.io v1alpha1 and v1beta1), about.k8s.io
clusterproperties and apiextensions.k8s.io CRDs, with the list/watch/resourceVersion semantics clients rely
on, plus fault hooks. Layers: errors/validation/selectors/patch/ipalloc (pure) -> strategies/resources ->
storage (versioned state) -> gc, discovery/tables -> handlers (requests, no sockets) -> server (HTTP) ->
emulator (composition). Standard library and PyYAML only.

    with KubeApiEmulator() as api:
        api.write_kubeconfig(path)
        api.store.create({...})
        api.fail_next(2, code=429)
"""

from __future__ import annotations

from .emulator import PAUSE_MODES, KubeApiEmulator
from .errors import ApiError
from .store import Store

__all__ = ["PAUSE_MODES", "ApiError", "KubeApiEmulator", "Store"]
