"""An embedded AWS Cloud Map (servicediscovery) for tests, benchmarks and the demo: moto in server mode on
loopback, with a thin patch layer where moto differs from the documented service, fault hooks (throttling,
server errors, outages) and a per-operation call counter.

    with EmbeddedCloudMap() as cloudmap:
        cloudmap.endpoint_url      # http://127.0.0.1:<port>
        cloudmap.env()             # what a boto3 client in another process needs
        cloudmap.throttle_next(2)  # the next two calls are throttled as AWS throttles them

Layers: ``faults`` (pure) and ``patches`` (moto's classes) -> ``wsgi`` (request path) -> ``server``
(composition). This package never imports boto3/botocore (the import contract keeps them in
``mcsdns.sync.cloudmap``); clients are built by whoever uses the endpoint. Needs moto 5 and Flask
(``moto[server]``).
"""

from __future__ import annotations

from .faults import (
    DATA_PLANE_OPERATIONS,
    REQUEST_LIMIT_EXCEEDED,
    THROTTLE_CODES,
    THROTTLING_EXCEPTION,
    Faults,
)
from .patches import PATCHES, apply_patches
from .server import DEFAULT_REGION, EmbeddedCloudMap

__all__ = [
    "DATA_PLANE_OPERATIONS",
    "DEFAULT_REGION",
    "PATCHES",
    "REQUEST_LIMIT_EXCEEDED",
    "THROTTLE_CODES",
    "THROTTLING_EXCEPTION",
    "EmbeddedCloudMap",
    "Faults",
    "apply_patches",
]
