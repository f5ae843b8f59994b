"""A small, honest reader of CoreDNS's Corefile, and where it sends the clusterset zone.

The Corefile is Caddyfile syntax: server blocks (keys such as ``clusterset.local:53`` or
``dns://.:53``, then ``{ ... }``), each holding directive lines (a plugin and its arguments) that may
open nested blocks; ``#`` comments to the end of a line; ``"double"`` and `` `backtick` `` quotes.
What it does not read, it says so rather than guess: ``import`` and snippets ``(name) { ... }``
(``Unsupported``), and a file that does not parse (``CorefileError``, with the line).

``route`` answers the question CoreDNS's dnsserver answers for a query: among the server blocks listening
on a port, the one whose zone is the longest suffix of the name serves it. Pure: text in, data out.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

DEFAULT_PORT = 53  # coredns -dns.port, and what every cluster's DNS Service targets


class CorefileError(ValueError):
    """The Corefile cannot be read; ``line`` is where (1-based), 0 when it is the whole file."""

    def __init__(self, message: str, line: int = 0) -> None:
        super().__init__(f"line {line}: {message}" if line else message)
        self.line = line


class Unsupported(CorefileError):
    """The Corefile uses something this reader does not follow (import, snippets): judge it by hand."""


@dataclass(frozen=True, slots=True)
class Directive:
    name: str
    args: tuple[str, ...]
    block: tuple[Directive, ...]
    line: int

    def find(self, name: str) -> Iterator[Directive]:
        return (d for d in self.block if d.name == name)


@dataclass(frozen=True, slots=True)
class Key:
    """One server block key: ``[scheme://]zone[:port]``, the zone lower-cased and without its final dot."""

    text: str
    scheme: str
    zone: str  # "." for the root
    port: int


@dataclass(frozen=True, slots=True)
class ServerBlock:
    keys: tuple[Key, ...]
    directives: tuple[Directive, ...]
    first_line: int
    last_line: int

    @property
    def title(self) -> str:
        return " ".join(key.text for key in self.keys)

    def find(self, name: str) -> Iterator[Directive]:
        return (d for d in self.directives if d.name == name)


@dataclass(frozen=True, slots=True)
class _Token:
    text: str
    line: int
    quoted: bool
    newline_before: bool


def _tokens(text: str) -> list[_Token]:
    out: list[_Token] = []
    i, line, newline = 0, 1, True
    while i < len(text):
        c = text[i]
        if c == "\n":
            line, newline, i = line + 1, True, i + 1
        elif c.isspace():
            i += 1
        elif c == "#":
            while i < len(text) and text[i] != "\n":
                i += 1
        elif c in '"`':
            start, i, chars = line, i + 1, []
            while True:
                if i >= len(text):
                    raise CorefileError("a quote is not closed", start)
                if c == '"' and text[i] == "\\" and i + 1 < len(text) and text[i + 1] in '"\\':
                    chars.append(text[i + 1])
                    i += 2
                    continue
                if text[i] == c:
                    i += 1
                    break
                if text[i] == "\n":
                    line += 1
                chars.append(text[i])
                i += 1
            out.append(_Token("".join(chars), start, True, newline))
            newline = False
        else:
            start = i
            while i < len(text) and not text[i].isspace() and text[i] not in '"`' and text[i] != "#":
                i += 1
            out.append(_Token(text[start:i], line, False, newline))
            newline = False
    return out


def _key(text: str, line: int) -> Key:
    raw = text.strip().rstrip(",")
    scheme = "dns"
    if "://" in raw:
        scheme, _, raw = raw.partition("://")
        scheme = scheme.lower()
    port = DEFAULT_PORT
    if raw.startswith("[") or raw.count(":") == 1:  # zone:port ([v6 net]:port in reverse zones)
        host, _, number = raw.rpartition(":")
        if number.isdigit():
            raw, port = host.strip("[]"), int(number)
        elif number:
            raise CorefileError(f"server block key {text!r}: {number!r} is not a port", line)
    if "{" in raw or "$" in raw:
        raise Unsupported(f"server block key {text!r} uses a placeholder this reader does not expand", line)
    zone = raw.lower().rstrip(".") or "."
    if (
        "/" in zone
    ):  # a reverse zone written as a network, e.g. 10.0.0.0/8: CoreDNS turns it into in-addr.arpa
        try:
            zone = _reverse_zone(ipaddress.ip_network(zone, strict=False))
        except ValueError:
            raise CorefileError(f"server block key {text!r} is not a zone", line) from None
    return Key(text=text.rstrip(","), scheme=scheme, zone=zone, port=port)


def _reverse_zone(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    """The reverse zone of a network on a label boundary (what CoreDNS makes of ``10.0.0.0/8``)."""
    step = 8 if network.version == 4 else 4
    labels = network.prefixlen // step
    name = network.network_address.reverse_pointer.split(".")
    return ".".join(name[len(name) - 2 - labels :])


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self._tokens = tokens
        self._i = 0

    def _peek(self) -> _Token | None:
        return self._tokens[self._i] if self._i < len(self._tokens) else None

    def _next(self) -> _Token:
        token = self._tokens[self._i]
        self._i += 1
        return token

    def _opens(self, token: _Token) -> bool:
        return token.text == "{" and not token.quoted

    def _closes(self, token: _Token) -> bool:
        return token.text == "}" and not token.quoted

    def blocks(self) -> list[ServerBlock]:
        out = []
        while self._peek() is not None:
            out.append(self._server_block())
        return out

    def _server_block(self) -> ServerBlock:
        first = self._next()
        if self._opens(first) or self._closes(first):
            raise CorefileError(f"expected server block keys, found {first.text!r}", first.line)
        if first.text.startswith("(") and first.text.endswith(")"):
            raise Unsupported(
                f"snippet {first.text} (and import) is not supported by this reader", first.line
            )
        keys = [first]
        while True:
            token = self._peek()
            if token is None:
                raise CorefileError(f"server block {first.text} has no '{{ ... }}'", first.line)
            if self._opens(token):
                self._next()
                break
            if token.newline_before and not keys[-1].text.endswith(","):
                raise CorefileError(f"server block {first.text} has no '{{ ... }}'", first.line)
            keys.append(self._next())
        parsed = []
        for token in keys:
            for part in filter(None, token.text.split(",")):
                parsed.append(_key(part, token.line))
        directives, last = self._block_body(first.line)
        return ServerBlock(tuple(parsed), tuple(directives), first.line, last)

    def _block_body(self, opened_at: int) -> tuple[list[Directive], int]:
        """Directive lines up to the matching '}' (consumed); returns them and the closing line."""
        directives: list[Directive] = []
        while True:
            token = self._peek()
            if token is None:
                raise CorefileError("a '{' is not closed", opened_at)
            if self._closes(token):
                self._next()
                return directives, token.line
            directives.append(self._directive())

    def _directive(self) -> Directive:
        name = self._next()
        if self._opens(name):
            raise CorefileError("a '{' where a plugin name was expected", name.line)
        if name.text == "import":
            raise Unsupported("import is not supported by this reader", name.line)
        args: list[str] = []
        block: list[Directive] = []
        while True:
            token = self._peek()
            if token is None or token.newline_before or self._closes(token):
                break
            self._next()
            if self._opens(token):
                block, _ = self._block_body(token.line)
                break
            args.append(token.text)
        return Directive(name.text.lower(), tuple(args), tuple(block), name.line)


def parse(text: str) -> list[ServerBlock]:
    """The server blocks of a Corefile; ``CorefileError`` (or ``Unsupported``) when it cannot be read."""
    return _Parser(_tokens(text)).blocks()


# --- where a zone goes -------------------------------------------------------------------------------------


def in_zone(name: str, zone: str) -> bool:
    """Whether ``name`` is ``zone`` or below it (both lower-case, no final dot; "." is the root)."""
    return zone == "." or name == zone or name.endswith("." + zone)


@dataclass(frozen=True, slots=True)
class Route:
    """Which server block answers the zone on a port, and which blocks take parts of it."""

    serving: ServerBlock | None  # the block with the longest zone that the zone is in (None: none)
    serving_zone: str
    below: tuple[tuple[ServerBlock, str], ...]  # blocks (and zone) for names strictly below the zone
    duplicates: tuple[ServerBlock, ...]  # other blocks with the very same zone and port (CoreDNS refuses)


def route(blocks: Sequence[ServerBlock], zone: str, port: int = DEFAULT_PORT) -> Route:
    best: tuple[ServerBlock, str] | None = None
    same: list[ServerBlock] = []
    below: list[tuple[ServerBlock, str]] = []
    for block in blocks:
        for key in block.keys:
            if key.port != port or key.scheme not in ("dns", ""):
                continue
            if in_zone(zone, key.zone):
                if best is None or _depth(key.zone) > _depth(best[1]):
                    best, same = (block, key.zone), []
                elif key.zone == best[1] and block is not best[0]:
                    same.append(block)
            elif in_zone(key.zone, zone):
                below.append((block, key.zone))
    return Route(best[0] if best else None, best[1] if best else "", tuple(below), tuple(same))


def _depth(zone: str) -> int:
    return 0 if zone == "." else zone.count(".") + 1


def kubernetes_zones(block: ServerBlock) -> list[str]:
    """The zones a block's ``kubernetes`` plugin claims: its arguments, else the block's own zones."""
    found: list[str] = []
    for directive in block.find("kubernetes"):
        zones = directive.args or tuple(key.zone for key in block.keys)
        found.extend(z.lower().rstrip(".") or "." for z in zones)
    return found


def multicluster_zones(block: ServerBlock) -> list[str]:
    """The zones a block's ``kubernetes { multicluster ZONE... }`` answers from ServiceImports."""
    return [
        z.lower().rstrip(".")
        for directive in block.find("kubernetes")
        for inner in directive.find("multicluster")
        for z in inner.args
    ]


@dataclass(frozen=True, slots=True)
class Upstream:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def forwards(block: ServerBlock, zone: str) -> list[Upstream] | None:
    """Where the block's ``forward`` sends names of ``zone`` (None: it has no forward that covers them).

    ``forward FROM TO...``: FROM is a domain the block's names must be in ("." all); TO are addresses,
    ``[dns://]IP[:PORT]`` (port 53 by default). TLS (``tls://``) and other schemes are returned as given."""
    for directive in block.find("forward"):
        if not directive.args:
            continue
        origin = directive.args[0].lower().rstrip(".") or "."
        if not in_zone(zone, origin):
            continue
        out = []
        for target in directive.args[1:]:
            scheme, _, rest = target.rpartition("://")
            rest = rest or target
            default = 853 if scheme == "tls" else DEFAULT_PORT
            host, port = rest, default
            if rest.startswith("["):
                host, _, tail = rest[1:].partition("]")
                port = int(tail[1:]) if tail.startswith(":") and tail[1:].isdigit() else default
            elif rest.count(":") == 1:
                host, _, number = rest.partition(":")
                port = int(number) if number.isdigit() else default
            out.append(Upstream(f"{scheme}://{host}" if scheme not in ("", "dns") else host, port))
        return out
    return None
