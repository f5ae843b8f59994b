"""Start, probe and stop the DNS servers under test, each on its own free 127.0.0.1 port.

Every server runs in its own session (process group) so that stopping it also stops any children NSD
forks, and every one is started through the same ``taskset`` prefix so the comparison stays fair.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

LOCALHOST = "127.0.0.1"  # the only address anything here listens on or sends to
REPO = Path(__file__).resolve().parent.parent


class ServerError(RuntimeError):
    """A server did not start, exited early, or never gave the expected answer."""


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (the servers listen on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((LOCALHOST, 0))
            port: int = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((LOCALHOST, port))
                except OSError:
                    continue
                return port
    raise ServerError("no free UDP+TCP port on 127.0.0.1")


def pin(cpu: int | None) -> list[str]:
    """The ``taskset`` prefix that puts a process on one core, or nothing when pinning is off."""
    return [] if cpu is None else ["taskset", "-c", str(cpu)]


# ---------------------------------------------------------------- probing


def ask(port: int, qname: str, qtype: str, timeout: float = 0.5, edns: bool = True,
        rd: bool = False) -> dns.message.Message:
    query = dns.message.make_query(qname, qtype, use_edns=0 if edns else False, payload=1232)
    if not rd:
        query.flags &= ~dns.flags.RD  # authoritative servers: no recursion wanted (a resolver needs it)
    return dns.query.udp(query, LOCALHOST, port=port, timeout=timeout)


def answers_a(port: int, qname: str, expected_ip: str, timeout: float = 0.2, rd: bool = False) -> bool:
    """True once the server returns NOERROR with ``expected_ip`` among the A records of ``qname``."""
    try:
        reply = ask(port, qname, "A", timeout, rd=rd)
    except (dns.exception.Timeout, OSError):
        return False
    if reply.rcode() != dns.rcode.NOERROR:
        return False
    return any(rd.to_text() == expected_ip for rrset in reply.answer for rd in rrset
               if rrset.rdtype == dns.rdatatype.A)


# ---------------------------------------------------------------- processes


@dataclass
class Running:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    started: float  # time.monotonic() just before exec

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self, qname: str, expected_ip: str, timeout: float, rd: bool = False) -> float:
        """Poll until the expected answer arrives; return seconds since start. Bounded by ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            if answers_a(self.port, qname, expected_ip, rd=rd):
                return time.monotonic() - self.started
            time.sleep(0.01)
        raise ServerError(f"{self.name} gave no correct answer for {qname} in {timeout:.0f} s:\n"
                          f"{self.log_tail()}")

    def rss_bytes(self) -> int:
        """Resident memory of the whole process group (NSD forks; Python servers are one process)."""
        return sum(_vm_rss(pid) for pid in group_pids(self.proc.pid))

    def stop(self, grace: float = 5.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(grace)
        # NSD's children may outlive the parent by a moment; make sure none holds the port or a core.
        for pid in group_pids(self.proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def group_pids(pgid: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            # Field 5 is the process group; split after the ')' so a command name with spaces is safe.
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                pids.append(int(stat.parent.name))
    return pids


def _vm_rss(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def spawn(name: str, port: int, argv: list[str], workdir: Path, cpu: int | None) -> Running:
    log = workdir / f"{name}.log"
    with log.open("wb") as fh:
        started = time.monotonic()
        proc = subprocess.Popen([*pin(cpu), *argv], stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=workdir)
    return Running(name, port, proc, log, started)


# ---------------------------------------------------------------- the three servers


@dataclass(frozen=True)
class Data:
    """What a server needs: the zone and where the generated data lives."""

    zone: str
    ttl: int
    manifests: Path
    zone_file: Path


def mcsdns_argv(data: Data, port: int, workdir: Path) -> list[str]:
    # `python -m mcsdns` is the same entry point as the console script, without depending on PATH.
    return [sys.executable, "-m", "mcsdns", "serve", "--manifests", str(data.manifests.resolve()),
            "--listen", f"{LOCALHOST}:{port}", "--zone", data.zone, "--ttl", str(data.ttl),
            "--log-level", "warning",
            # One serving process, as the other servers here run one (workers_bench.py passes its own).
            "--workers", "1"]


NSD_CONF = """\
server:
  ip-address: {addr}
  port: {port}
  # One serving process by default, to compare one process with one process (workers_bench.py asks for N).
  server-count: {server_count}
  do-ip6: no
  username: ""
  chroot: ""
  zonesdir: "{dir}"
  pidfile: "{dir}/nsd.pid"
  zonelistfile: "{dir}/zone.list"
  xfrdfile: "{dir}/xfrd.state"
  xfrdir: "{dir}"
  database: ""
  logfile: "{dir}/nsd-internal.log"
  verbosity: 1
  hide-version: yes
  # Debian builds NSD with response rate limiting (default 200 qps per /24): a benchmark from one client
  # address would mostly measure the limiter, so turn it off.
  rrl-ratelimit: 0
  rrl-whitelist-ratelimit: 0
remote-control:
  control-enable: no
zone:
  name: {zone}
  zonefile: "{zone_file}"
"""


def nsd_argv(data: Data, port: int, workdir: Path, server_count: int = 1) -> list[str]:
    conf = workdir / "nsd.conf"
    conf.write_text(NSD_CONF.format(addr=LOCALHOST, port=port, dir=workdir, zone=data.zone,
                                    zone_file=data.zone_file.resolve(), server_count=server_count))
    nsd = shutil.which("nsd") or "/usr/sbin/nsd"
    return [nsd, "-d", "-c", str(conf)]


def dnslib_argv(data: Data, port: int, workdir: Path) -> list[str]:
    script = Path(__file__).resolve().parent / "dnslib_server.py"
    return [sys.executable, str(script), "--zone-file", str(data.zone_file.resolve()), "--zone", data.zone,
            "--address", LOCALHOST, "--port", str(port)]


ARGV: dict[str, Callable[[Data, int, Path], list[str]]] = {
    "mcsdns": mcsdns_argv,
    "nsd": nsd_argv,
    "dnslib": dnslib_argv,
}


def mcsdns_runnable() -> str | None:
    """None when ``mcsdns serve`` exists, else why not (the server may still be under construction)."""
    try:
        out = subprocess.run([sys.executable, "-m", "mcsdns", "serve", "--help"], capture_output=True,
                             timeout=30, cwd=REPO, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if out.returncode != 0:
        text = (out.stderr or out.stdout).decode(errors="replace").strip().splitlines()
        return text[-1] if text else f"exit {out.returncode}"
    return None


@contextlib.contextmanager
def serving(name: str, data: Data, cpu: int | None, probe: tuple[str, str],
            ready_timeout: float = 60.0) -> Iterator[tuple[Running, float]]:
    """Run one server until the block ends; yield it and the seconds it took to answer ``probe``."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        server = spawn(name, port, ARGV[name](data, port, workdir), workdir, cpu)
        try:
            ready = server.wait_ready(probe[0], probe[1], ready_timeout)
            yield server, ready
        finally:
            server.stop()
