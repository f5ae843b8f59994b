"""The Corefile reader and the routing of the zone: CoreDNS's syntax and its longest-zone choice."""

from __future__ import annotations

import pytest

from mcsdns.ops import corefile
from mcsdns.ops.check import FAIL, OK, SKIP, judge_coredns

EKS = """\
.:53 {
    errors
    health {
        lameduck 5s
      }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {   # the cluster's names
      pods insecure
      fallthrough in-addr.arpa ip6.arpa
    }
    prometheus :9153
    forward . /etc/resolv.conf
    cache 30
    loop
    reload
    loadbalance
}
"""
STANZA = "clusterset.local:53 {\n    errors\n    forward . 10.100.7.7\n}\n"


def test_server_blocks_keys_nested_blocks_comments_and_quotes() -> None:
    tail = 'dns://clusterset.local., example.org:1053 {\n  log "{remote} # \\"q\\"" # hi\n}\n'
    blocks = corefile.parse(EKS + tail)
    assert [b.title for b in blocks] == [".:53", "dns://clusterset.local. example.org:1053"]
    root = blocks[0]
    assert (root.first_line, root.last_line) == (1, 17)
    (kube,) = root.find("kubernetes")
    assert kube.args == ("cluster.local", "in-addr.arpa", "ip6.arpa")
    assert [(d.name, d.args) for d in kube.block] == [
        ("pods", ("insecure",)),
        ("fallthrough", ("in-addr.arpa", "ip6.arpa")),
    ]
    assert [(k.zone, k.port) for k in blocks[1].keys] == [("clusterset.local", 53), ("example.org", 1053)]
    assert [(d.name, d.args) for d in blocks[1].directives] == [("log", ('{remote} # "q"',))]


def test_reverse_networks_become_their_zones() -> None:
    (block,) = corefile.parse("10.0.0.0/8 fd00:20::/108 {\n whoami\n}\n")
    assert [k.zone for k in block.keys] == [
        "10.in-addr.arpa",
        "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.0.0.0.0.d.f.ip6.arpa",
    ]


@pytest.mark.parametrize(
    ("text", "unsupported", "line"),
    [
        (".:53 {\n import common\n}\n", True, 2),
        ("(common) {\n errors\n}\n", True, 1),
        (".:53 {\n errors\n", False, 1),
        ('.:53 {\n forward . "1.1.1.1\n}\n', False, 2),
        (".:53\nerrors\n", False, 1),
    ],
)
def test_what_it_does_not_read_it_says(text: str, unsupported: bool, line: int) -> None:
    with pytest.raises(corefile.CorefileError) as raised:
        corefile.parse(text)
    assert isinstance(raised.value, corefile.Unsupported) == unsupported
    assert raised.value.line == line


def test_the_longest_zone_on_the_port_serves_and_subzones_are_seen() -> None:
    blocks = corefile.parse(
        EKS + STANZA + "demo.svc.clusterset.local {\n whoami\n}\nclusterset.local:1053 {\n}\n"
    )
    found = corefile.route(blocks, "clusterset.local")
    assert found.serving is blocks[1] and found.serving_zone == "clusterset.local"
    assert [(b.title, z) for b, z in found.below] == [
        ("demo.svc.clusterset.local", "demo.svc.clusterset.local")
    ]
    assert corefile.forwards(blocks[1], "clusterset.local") == [corefile.Upstream("10.100.7.7", 53)]
    assert corefile.route(corefile.parse(EKS), "clusterset.local").serving_zone == "."


def judge(text: str | None, **kw: object) -> tuple[str, str, str]:
    options: dict = {
        "controller_only": False,
        "service_ips": ["10.100.7.7"],
        "service_name": "mcsdns-system/mcsdns",
    }
    options.update(kw)
    r = judge_coredns(text, "clusterset.local", **options)
    return r.status, r.summary, r.fix


def test_forwarding_to_mcsdns_passes_and_every_way_of_missing_it_fails_with_a_fix() -> None:
    assert judge(EKS + STANZA)[0] == OK
    status, summary, fix = judge(
        EKS.replace("cluster.local in-addr", "cluster.local clusterset.local in-addr")
    )
    assert status == FAIL and "its kubernetes plugin claiming clusterset.local" in summary
    assert (
        "printf '\\nclusterset.local:53 {\\n    errors\\n    forward . 10.100.7.7\\n}\\n' >> Corefile" in fix
    )
    status, summary, fix = judge(EKS + STANZA.replace("10.100.7.7", "10.1.1.1 10.100.7.7"))
    assert status == FAIL and "not only to mcsdns's" in summary
    status, summary, _ = judge(EKS + STANZA + STANZA)
    assert status == FAIL and "CoreDNS refuses to start" in summary
    status, summary, fix = judge(EKS + STANZA + "svc.clusterset.local:53 {\n whoami\n}\n")
    assert status == FAIL and "shadowed" in summary and fix.endswith("(delete lines 22-24)")
    assert judge(EKS + STANZA, service_port=5353)[0] == FAIL  # the Service listens elsewhere
    assert judge(EKS + STANZA.replace("10.100.7.7", "10.100.7.7:5353"), service_port=5353)[0] == OK
    assert judge(None)[0] == FAIL
    assert judge(".:53 {\n import x\n}\n")[0] == SKIP


def test_controller_only_wants_multicluster_in_the_kubernetes_plugin() -> None:
    with_mc = EKS.replace("cluster.local in-addr", "cluster.local clusterset.local in-addr").replace(
        "pods insecure", "pods insecure\n      multicluster clusterset.local"
    )
    assert judge(with_mc, controller_only=True)[0] == OK
    assert judge(EKS, controller_only=True)[0] == FAIL
