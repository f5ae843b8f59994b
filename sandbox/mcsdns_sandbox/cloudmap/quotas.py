"""Request quotas of the embedded Cloud Map, enforced as AWS enforces them: token buckets per account (and
Region: one emulator serves one), shared by every client of that account, answering with throttling errors
when empty. Opt-in: off unless ``EmbeddedCloudMap(enforce_quotas=True)`` or ``POST /_mcsdns/quotas``.

What AWS documents (Cloud Map Developer Guide, "Cloud Map API request throttling quota"): "AWS Cloud Map uses
the token bucket algorithm to implement API throttling. [...] There is one bucket for a single Region, and it
applies to all endpoints in the Region." "Each request removes one token from the bucket." "The bucket size
for the DiscoverInstances API operation is 2,000 tokens, and the refill rate is 1,000 tokens every second."
"If the bucket is at capacity when refill tokens arrive, then these tokens are discarded." "If you exceed an
API throttling quota, you get the RequestLimitExceeded error code." The quotas page ("Cloud Map service
quotas") adds "DiscoverInstancesRevision operation per account rate: 3,000" (per second, adjustable), with no
burst figure.

What AWS does not publish, so these are our ASSUMPTIONS (conservative, i.e. lower than AWS probably allows,
so a client that survives them survives AWS):

- DiscoverInstancesRevision's bucket holds 2 seconds of refill (6,000), the ratio DiscoverInstances has.
- Control-plane reads (every List* and Get*) share one bucket per account: 100 per second, 200 burst.
- Control-plane writes (everything else: Create*, Delete*, Register/DeregisterInstance, Update*, ...) share
  one bucket per account: 50 per second, 100 burst.
- Control-plane calls are throttled with the common AWS error ThrottlingException (HTTP 400), as
  ``faults.THROTTLING_EXCEPTION`` already answers; DiscoverInstances(Revision) with RequestLimitExceeded and
  the HTTP 429 that botocore's service model gives that error ("httpStatusCode": 429).

The arithmetic is exact: time is integer nanoseconds from an injectable clock and tokens are
:class:`fractions.Fraction`, so a bucket refilled for exactly 1 ms at 1,000/s holds exactly one more token,
never 0.9999999. Pure standard library and thread-safe.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from .faults import REQUEST_LIMIT_EXCEEDED, THROTTLE_CODES, THROTTLING_EXCEPTION, ErrorReply, throttling_reply

NANOS = 10**9

DISCOVER = "DiscoverInstances"
DISCOVER_REVISION = "DiscoverInstancesRevision"
CONTROL_READ = "ControlPlaneRead"
CONTROL_WRITE = "ControlPlaneWrite"
BUCKETS = (DISCOVER, DISCOVER_REVISION, CONTROL_READ, CONTROL_WRITE)

# Operations that only read: they share the control-plane read bucket (and the state lock's read side).
READ_PREFIXES = ("Discover", "List", "Get")


@dataclass(frozen=True)
class QuotaLimit:
    """One bucket: ``rate`` tokens added per second, at most ``burst`` held, ``code`` answered when empty."""

    rate: float
    burst: float
    code: str

    def __post_init__(self) -> None:
        if not self.rate > 0 or not self.burst > 0:
            raise ValueError(f"rate and burst must be positive, not {self.rate}/{self.burst}")
        if self.code not in THROTTLE_CODES:
            raise ValueError(f"code must be one of {THROTTLE_CODES}, not {self.code!r}")


DEFAULT_LIMITS: Mapping[str, QuotaLimit] = {
    DISCOVER: QuotaLimit(1000, 2000, REQUEST_LIMIT_EXCEEDED),  # documented
    DISCOVER_REVISION: QuotaLimit(3000, 6000, REQUEST_LIMIT_EXCEEDED),  # rate documented, burst assumed
    CONTROL_READ: QuotaLimit(100, 200, THROTTLING_EXCEPTION),  # assumed
    CONTROL_WRITE: QuotaLimit(50, 100, THROTTLING_EXCEPTION),  # assumed
}


def bucket_of(operation: str) -> str:
    """The bucket an operation draws from."""
    if operation in (DISCOVER, DISCOVER_REVISION):
        return operation
    return CONTROL_READ if operation.startswith(READ_PREFIXES) else CONTROL_WRITE


def _exact(value: float | int | Fraction | str) -> Fraction:
    # Through str so 0.01 is 1/100, not the binary float nearest to it.
    return value if isinstance(value, Fraction) else Fraction(str(value))


class TokenBucket:
    """A token bucket that starts full. ``now`` is integer nanoseconds; the clock must not run backwards
    (a step back is read as no time passing)."""

    def __init__(self, rate: Fraction, burst: Fraction, now: int) -> None:
        self.rate, self.burst = rate, burst
        self._tokens = burst
        self._stamp = now

    def _refill(self, now: int) -> None:
        if now > self._stamp:
            self._tokens = min(self.burst, self._tokens + self.rate * (now - self._stamp) / NANOS)
            self._stamp = now

    def take(self, now: int) -> bool:
        """Take one token if there is a whole one."""
        self._refill(now)
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def tokens(self, now: int) -> Fraction:
        self._refill(now)
        return self._tokens


class Quotas:
    """Per-account token buckets for every operation; shared by every client and thread of one emulator.

    ``scale`` multiplies every rate and burst (``0.01``: DiscoverInstances 10/s, burst 20), so tests and
    benchmarks reach the limits with few calls; a burst is never scaled below one token. ``limits``
    overrides buckets by name (:data:`BUCKETS`). ``clock`` returns integer nanoseconds (default
    ``time.monotonic_ns``); tests inject their own to check the arithmetic.
    """

    def __init__(
        self,
        *,
        enabled: bool = False,
        scale: float = 1.0,
        limits: Mapping[str, QuotaLimit] | None = None,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._enabled = False
        self._scale = Fraction(1)
        self._limits: dict[str, QuotaLimit] = dict(DEFAULT_LIMITS)
        self.configure(enabled=enabled, scale=scale, limits=limits)

    def configure(
        self,
        *,
        enabled: bool | None = None,
        scale: float | None = None,
        limits: Mapping[str, QuotaLimit] | None = None,
    ) -> None:
        """Change what is enforced; every bucket starts full again. None leaves a setting as it is."""
        new_scale = self._scale if scale is None else _exact(scale)
        if not new_scale > 0:
            raise ValueError(f"scale must be positive, not {scale}")
        unknown = set(limits or {}) - set(BUCKETS)
        if unknown:
            raise ValueError(f"no quota bucket {sorted(unknown)}; the buckets are {list(BUCKETS)}")
        with self._lock:
            if enabled is not None:
                self._enabled = bool(enabled)
            self._scale = new_scale
            self._limits.update(limits or {})
            self._buckets.clear()

    @property
    def enabled(self) -> bool:
        return self._enabled

    def effective(self, bucket: str) -> tuple[Fraction, Fraction]:
        """(rate per second, burst) of ``bucket`` after scaling."""
        limit = self._limits[bucket]
        return _exact(limit.rate) * self._scale, max(Fraction(1), _exact(limit.burst) * self._scale)

    def take(self, account: str, operation: str) -> ErrorReply | None:
        """Charge one call of ``operation`` to ``account``; the throttling reply if its bucket is empty."""
        if not self._enabled:
            return None
        name = bucket_of(operation)
        with self._lock:
            now = self._clock()
            bucket = self._buckets.get((account, name))
            if bucket is None:
                rate, burst = self.effective(name)
                bucket = self._buckets[(account, name)] = TokenBucket(rate, burst, now)
            if bucket.take(now):
                return None
            code = self._limits[name].code
        return throttling_reply(code)

    def snapshot(self) -> dict[str, Any]:
        """What is enforced and, per account, the tokens left in each bucket used so far (JSON-ready)."""
        with self._lock:
            now = self._clock()
            limits = {}
            for name in BUCKETS:
                rate, burst = self.effective(name)
                limits[name] = {"rate": float(rate), "burst": float(burst), "code": self._limits[name].code}
            tokens: dict[str, dict[str, float]] = {}
            for (account, name), bucket in sorted(self._buckets.items()):
                tokens.setdefault(account, {})[name] = float(bucket.tokens(now))
            return {"enabled": self._enabled, "scale": float(self._scale), "limits": limits, "tokens": tokens}


def limits_from_json(raw: Any) -> dict[str, QuotaLimit]:
    """``{"DiscoverInstances": {"rate": 10, "burst": 20, "code": "..."}}`` (code optional) as limits."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise TypeError("limits must be a JSON object of bucket name -> {rate, burst[, code]}")
    out = {}
    for name, spec in raw.items():
        if name not in BUCKETS or not isinstance(spec, dict):
            raise ValueError(f"no quota bucket {name!r}; the buckets are {list(BUCKETS)}")
        default = DEFAULT_LIMITS[name]
        out[name] = QuotaLimit(
            float(spec.get("rate", default.rate)),
            float(spec.get("burst", default.burst)),
            str(spec.get("code", default.code)),
        )
    return out


class ThrottledCounter:
    """Throttled calls per operation, whether a quota or an injected fault threw them back."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, operation: str) -> None:
        with self._lock:
            self._counts[operation] += 1

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
