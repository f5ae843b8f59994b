"""mcsdns: multi-cluster service discovery for Kubernetes in one process.

An authoritative DNS server for ``clusterset.local`` (KEP-1645 MCS DNS spec) whose zone is filled by a sync
engine from manifests, Kubernetes watches or AWS Cloud Map. See DESIGN.md for the data flow.
"""

__version__ = "0.1.0"
