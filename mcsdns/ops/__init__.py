"""Operator commands that look at a clusterset without serving it: ``mcsdns check`` (a preflight of every
prerequisite, one line each) and ``mcsdns status`` (the clusterset at a glance).

The judgements and renderings are pure (``check`` results and ``status`` models are data, the Corefile
parser works on text); ``reader`` is the one module here that talks to the Kubernetes API, Cloud Map and a
running server, always through the adapters in ``mcsdns.clients``.
"""
