"""Which node of a multi-node job runs which actor of the local backend.

Every Ray node of the job registers a custom resource naming its task rank
(:func:`node_resource`: ``miles_hydra_node_<rank>``, one unit). On more than one node the trainer
asks for a sliver of node 0's (the head, where the driver runs) and rollout engine ``i`` for one
of node ``1 + i % (nodes - 1)``'s: training and generation run on different nodes, the engines
spread over the others. On one node nothing is pinned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

NODE_RESOURCE_PREFIX = "miles_hydra_node_"
PIN_AMOUNT = 0.001  # of a node's one unit: any number of actors fit on their node


def node_resource(rank: int) -> str:
    """The custom resource the Ray node of task ``rank`` registers (one unit)."""
    return f"{NODE_RESOURCE_PREFIX}{rank}"


@dataclass(frozen=True)
class Placement:
    """Task ranks of the nodes the actors run on; None: wherever Ray puts them (one node)."""

    trainer: int | None  # node of the trainer actor
    engines: tuple[int | None, ...]  # node of each rollout engine actor

    def options(self, rank: int | None) -> dict[str, Any]:
        """``.options()`` arguments pinning an actor to node ``rank`` (none for None)."""
        return {} if rank is None else {"resources": {node_resource(rank): PIN_AMOUNT}}


def place_actors(num_nodes: int, num_engines: int) -> Placement:
    """Trainer on node 0, engine ``i`` on node ``1 + i % (num_nodes - 1)``; unpinned on one node."""
    if num_nodes <= 1:
        return Placement(None, (None,) * num_engines)
    return Placement(0, tuple(1 + i % (num_nodes - 1) for i in range(num_engines)))


def describe(placement: Placement) -> str:
    """``trainer on node 0; rollout engines 0, 2 on node 1, 1 on node 2`` (the plan's line)."""
    if placement.trainer is None:
        return "trainer and rollout engines wherever Ray has room (one node)"
    by_node: dict[int, list[str]] = {}
    for i, rank in enumerate(placement.engines):
        assert rank is not None  # pinned together with the trainer
        by_node.setdefault(rank, []).append(str(i))
    parts = [
        f"rollout engine{'s' if len(ids) > 1 else ''} {', '.join(ids)} on node {rank}"
        for rank, ids in sorted(by_node.items())
    ]
    return f"trainer on node {placement.trainer}; " + "; ".join(parts)
