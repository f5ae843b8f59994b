"""An embedded AWS Cloud Map (servicediscovery) for tests, benchmarks and the demo: moto in server mode on
loopback, with a layer of our own that answers the documented API from moto's state (``motoapi``, the one
module that imports moto, proven on the moto versions it lists), fault hooks (throttling, server errors,
outages) and a per-operation call counter.

    with EmbeddedCloudMap() as cloudmap:
        cloudmap.endpoint_url      # http://127.0.0.1:<port>
        cloudmap.env()             # what a boto3 client in another process needs
        cloudmap.throttle_next(2)  # the next two calls are throttled as AWS throttles them

For scale (see ``EmbeddedCloudMap``): reads answered concurrently, writes alone (``locks``); opt-in quotas
as AWS enforces them (``EmbeddedCloudMap(enforce_quotas=True, quota_scale=0.01)``, ``quotas``); every
operation kept for ListOperations/GetOperation; several accounts (``add_account``) and namespaces shared
between them (``share_namespace``).

Layers: ``faults``, ``quotas``, ``accounts``, ``locks`` (pure) and ``motoapi`` (moto's state) -> ``wsgi``
(request path) -> ``server`` (composition). This package never imports boto3/botocore (the import contract
keeps them in ``mcsdns.clients.cloudmap``); clients are built by whoever uses the endpoint. Needs
``moto[server]`` at a version in ``motoapi.PROVEN_MOTO_VERSIONS``.
"""

from __future__ import annotations

from .faults import (
    DATA_PLANE_OPERATIONS,
    REQUEST_LIMIT_EXCEEDED,
    THROTTLE_CODES,
    THROTTLING_EXCEPTION,
    Faults,
    Hold,
)
from .motoapi import OPERATIONS, PROVEN_MOTO_VERSIONS, UnprovenMoto, check_moto
from .quotas import DEFAULT_LIMITS, QuotaLimit
from .server import DEFAULT_REGION, EmbeddedCloudMap

__all__ = [
    "DATA_PLANE_OPERATIONS",
    "DEFAULT_LIMITS",
    "DEFAULT_REGION",
    "OPERATIONS",
    "PROVEN_MOTO_VERSIONS",
    "REQUEST_LIMIT_EXCEEDED",
    "THROTTLE_CODES",
    "THROTTLING_EXCEPTION",
    "EmbeddedCloudMap",
    "Faults",
    "Hold",
    "QuotaLimit",
    "UnprovenMoto",
    "check_moto",
]
