"""metav1.Condition lists, as mcs-api's ServiceExport and ServiceImport carry them (``status.conditions``, a
list-map keyed by ``type``): the export's ``Valid``/``Ready``/``Conflict`` and the import's ``Ready``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str


def merge_conditions(
    existing: list[Obj], new: Iterable[Condition], *, now: str, generation: int
) -> list[Obj]:
    """metav1.Condition list: lastTransitionTime moves only when a condition's status changes."""
    by_type = {c.get("type"): c for c in existing}
    out = [c for c in existing if c.get("type") not in {n.type for n in new}]
    for condition in new:
        status = "True" if condition.status else "False"
        previous = by_type.get(condition.type)
        changed = previous is None or previous.get("status") != status
        out.append(
            {
                "type": condition.type,
                "status": status,
                "reason": condition.reason,
                "message": condition.message,
                "observedGeneration": generation,
                "lastTransitionTime": now
                if changed or previous is None
                else previous.get("lastTransitionTime", now),
            }
        )
    return sorted(out, key=lambda c: str(c.get("type")))


def comparable(conditions: Iterable[Obj]) -> list[tuple[Any, ...]]:
    """A condition list without its timestamps: equal means a status write would change nothing."""
    return sorted((c.get("type"), c.get("status"), c.get("reason"), c.get("message")) for c in conditions)
