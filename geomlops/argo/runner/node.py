"""The one node a local run's pods are placed on, by their resource requests.

On Kubernetes a pod starts only on a node with room for what its containers request
(``resources.requests``; a container that sets only ``limits`` requests as much): the CPUs and
memory of the pods already there count against the node's, and a pod that does not fit stays
``Pending`` ("Insufficient cpu") until one ends. The local runner stands for one node the size
of this machine (its usable CPUs and its memory) and places each task's process the same way, so
that two tasks whose models each keep every core busy run one after the other rather than beside
each other and twice as slowly. A pod's request is its main container's plus its sidecars'. A pod
asking for more than the whole node (which Kubernetes would never place) runs once nothing else
does. Limits are not enforced, and a request of another resource (``nvidia.com/gpu``) places
nothing here.
"""

from __future__ import annotations

import itertools
import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from geomlops.background import usable_cpus

#: the resources a pod's containers request, which place it
RESOURCES = ("cpu", "memory")
#: the node's room for pods at once (the runner's ``max_workers``): each pod takes one
PODS = "pods"
_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]))?$")
_SUFFIX = {
    "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50, "Ei": 2.0**60,
}  # fmt: skip


def parse_quantity(value: Any, where: str) -> float:
    """A Kubernetes quantity (``100m``, ``2``, ``1.5``, ``2Gi``, ``512M``, ``1e3``) as a number.

    Raises:
        ValueError: ``value`` is not a quantity; the message names ``where``.
    """
    text = str(value).strip()
    match = _QUANTITY.match(text)
    if match is None or isinstance(value, bool):
        raise ValueError(
            f"{where}: {value!r} is not a Kubernetes quantity (a number, with a suffix such as "
            "m, k, M, G, Ki, Mi or Gi)"
        )
    number, exponent, suffix = match.groups()
    if float(number) < 0:
        raise ValueError(f"{where}: {value!r} is negative; a request is at least 0")
    return float(number) * (10.0 ** int(exponent[1:]) if exponent else _SUFFIX.get(suffix or "", 1.0))


def pod_requests(template: Mapping[str, Any]) -> dict[str, float]:
    """What a (resolved) template's pod requests: its main container's and its sidecars'
    ``resources.requests`` summed, each resource's ``limits`` standing in for a request it does
    not make (as Kubernetes defaults it).

    Raises:
        ValueError: a request or limit is not a quantity (naming the container and the field).
    """
    containers = [(kind, template.get(kind)) for kind in ("script", "container")]
    containers += [(f"sidecar {s.get('name')!r}", s) for s in template.get("sidecars") or []]
    total = dict.fromkeys(RESOURCES, 0.0)
    for label, container in containers:
        if not isinstance(container, Mapping):
            continue
        resources = container.get("resources") or {}
        requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
        for name in RESOURCES:
            for field, given in (("requests", requests), ("limits", limits)):
                if given.get(name) not in (None, ""):
                    where = f"template {template.get('name')!r}, {label} resources.{field}.{name}"
                    total[name] += parse_quantity(given[name], where)
                    break
    return total


def request_errors(templates: Sequence[Any], where: str = "$.spec.templates") -> list[str]:
    """Requests and limits (``cpu``, ``memory``) written in ``templates`` that are not
    quantities, each naming its field; one given by a parameter (``{{…}}``) is checked when the
    task runs."""
    errors: list[str] = []
    for i, template in enumerate(templates):
        if not isinstance(template, Mapping):
            continue
        containers = [(kind, template.get(kind)) for kind in ("script", "container")]
        containers += [(f"sidecars[{j}]", c) for j, c in enumerate(template.get("sidecars") or [])]
        for label, container in containers:
            resources = container.get("resources") if isinstance(container, Mapping) else None
            if not isinstance(resources, Mapping):
                continue
            for field in ("requests", "limits"):
                given = resources.get(field)
                for name in RESOURCES:
                    value = given.get(name) if isinstance(given, Mapping) else None
                    if value in (None, "") or "{{" in str(value):
                        continue
                    try:
                        parse_quantity(value, f"{where}[{i}].{label}.resources.{field}.{name}")
                    except ValueError as err:
                        errors.append(str(err))
    return errors


def this_machine(cgroup: str = "/sys/fs/cgroup/memory.max") -> dict[str, float]:
    """This machine as a node: its usable CPUs and its memory (no more than its control group's
    limit, a container's, where it has one)."""
    memory = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    try:
        limit = open(cgroup, encoding="ascii").read().strip()  # noqa: SIM115
        if limit.isdigit():
            memory = min(memory, float(limit))
    except OSError:
        pass
    return {"cpu": float(usable_cpus()), "memory": memory}


def describe(resources: Mapping[str, float]) -> str:
    """``2 CPUs and 4.0 GiB of memory``: how a request or the room left reads."""
    cpu, memory = resources.get("cpu"), resources.get("memory")
    parts = []
    if cpu is not None:
        count = f"{cpu:,.0f}" if cpu >= 1e6 else f"{cpu:g}"  # not 2.14748e+09
        parts.append(f"{count} CPU{'' if cpu == 1 else 's'}")
    parts += [] if memory is None else [f"{memory / 2**30:.1f} GiB of memory"]
    return " and ".join(parts)


class Node:
    """Room for pods on one node of ``capacity`` (``cpu`` in cores, ``memory`` in bytes,
    ``pods`` at once; a resource it does not name is not counted).

    Pods are placed in the order they asked where they fit; a later, smaller one that fits
    goes first while an earlier one waits for room (as the scheduler places any pending pod
    that fits).
    """

    def __init__(self, capacity: Mapping[str, float], aborted: threading.Event) -> None:
        self.capacity = {k: float(v) for k, v in capacity.items() if k in (*RESOURCES, PODS)}
        self._aborted = aborted
        self._used = dict.fromkeys(self.capacity, 0.0)
        self._running = 0
        self._waiting: list[tuple[int, dict[str, float]]] = []
        self._tickets = itertools.count()
        self._changed = threading.Condition()

    def clamped(self, requests: Mapping[str, float]) -> dict[str, float]:
        """The part of ``requests`` counted against the node: no more than the whole of it."""
        return {k: min(float(requests.get(k, 0.0)), cap) for k, cap in self.capacity.items()}

    def _fits(self, wanted: Mapping[str, float]) -> bool:
        if self._running == 0:
            return True
        return all(self._used[k] + wanted[k] <= cap + 1e-9 for k, cap in self.capacity.items())

    def held(self) -> dict[str, float]:
        """What the pods placed now hold."""
        with self._changed:
            return dict(self._used)

    @contextmanager
    def place(
        self, requests: Mapping[str, float], waiting: Any = None, placed_now: Any = None
    ) -> Iterator[bool]:
        """Hold room for a pod requesting ``requests`` while the block runs; yields False (and
        holds nothing) when the run was stopped while it waited. ``waiting()`` is called once,
        before it waits, when it does not fit at once; ``placed_now()`` once it is placed, before
        any other pod is placed or told to wait (so what each says comes out in that order)."""
        wanted = self.clamped(requests)
        told = placed = False
        with self._changed:
            ticket = next(self._tickets)
            self._waiting.append((ticket, wanted))
            try:
                while not self._aborted.is_set():
                    ahead = [w for t, w in self._waiting if t < ticket]
                    if self._fits(wanted) and not any(self._fits(w) for w in ahead):
                        placed = True
                        break
                    if not told and waiting is not None:
                        told = True
                        waiting()
                    self._changed.wait(0.5)
            finally:
                self._waiting.remove((ticket, wanted))
                self._changed.notify_all()
            if placed:
                for k, v in wanted.items():
                    self._used[k] += v
                self._running += 1
                if placed_now is not None:
                    placed_now()
        if not placed:
            yield False
            return
        try:
            yield True
        finally:
            with self._changed:
                for k, v in wanted.items():
                    self._used[k] -= v
                self._running -= 1
                self._changed.notify_all()
