"""Weight sync from the trainer to the rollout engines, by placement (issue 22).

The trainer exports its weights once; each engine maps them once, by the cheapest route its
placement allows; every later sync is one copy (a cast where the dtypes differ) into the
engine's own tensors, which its captured CUDA graphs read (rollout/graphs.py):

==============  ==============================================  ==============================
route           when                                            per sync
==============  ==============================================  ==============================
same_process    trainer and engine objects in one process       ``_foreach_copy_`` from the
                (bench/inproc_ray.py, tests)                    trainer's tensors
cuda_ipc        other process, same GPU (colocated actors)      the same, from the trainer's
                                                                tensors mapped by CUDA IPC
shared_memory   other process, same host, CPU                   the same, from shared memory
                                                                that holds the trainer's
                                                                weights (a memfd)
object_store    anything else (another host or GPU)             today's path: a CPU state
                                                                dict through Ray
==============  ==============================================  ==============================

The engine never aliases the trainer's storage: with ``rollout.async_training`` it generates
while the trainer steps, and must see the weights of the last sync only. The optimizer updates
the trainer's tensors in place (as does ``TrainerActor.load``), so the mapping stays valid;
``WeightExport.publish``, called before each CUDA IPC sync (the trainer's stream must be
drained then anyway), checks that no tensor was reallocated. Draft (MTP) head weights are
part of the policy's state dict and travel the same way. Engines on other GPUs take the object
store route: a device-to-device broadcast (NCCL) is not built (no machine here to test it on).
"""

from __future__ import annotations

import enum
import mmap
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

ALIGN_BYTES = 64  # offset of each tensor in the shared-memory block (cache-line aligned)


class Route(enum.Enum):
    """How an engine reads the trainer's weights; see the module docstring."""

    same_process = "same_process"
    cuda_ipc = "cuda_ipc"
    shared_memory = "shared_memory"
    object_store = "object_store"


@dataclass(frozen=True)
class Place:
    """Where a side's weights live: host (name + boot id), process, CUDA device uuid."""

    host: str
    pid: int
    gpu: Optional[str]  # uuid of the CUDA device; None on CPU


def place_of(device: torch.device | str) -> Place:
    device = torch.device(device)
    gpu = None
    if device.type == "cuda":
        gpu = str(torch.cuda.get_device_properties(_cuda_index(device)).uuid)
    return Place(_host_id(), os.getpid(), gpu)


def choose_route(trainer: Place, engine: Place) -> Route:
    """The cheapest route between the two places (object_store when nothing else applies)."""
    if trainer.gpu != engine.gpu:  # CPU vs CUDA, or two GPUs
        return Route.object_store
    if trainer.host != engine.host:
        return Route.object_store
    if trainer.pid == engine.pid:
        return Route.same_process
    return Route.shared_memory if trainer.gpu is None else Route.cuda_ipc


def _host_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}"


def _cuda_index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def unique_tensors(module: torch.nn.Module) -> tuple[list[list[str]], list[torch.Tensor]]:
    """The module's state-dict tensors without repeats (tied weights appear once), each with
    all its names."""
    names: list[list[str]] = []
    tensors: list[torch.Tensor] = []
    seen: dict[tuple[int, tuple[int, ...], torch.dtype], int] = {}
    for name, value in module.state_dict(keep_vars=True).items():
        key = (value.data_ptr(), tuple(value.shape), value.dtype)
        if key in seen:
            names[seen[key]].append(name)
            continue
        seen[key] = len(tensors)
        names.append([name])
        tensors.append(value)
    return names, tensors


# ------------------------------------------------------------------------- what travels
@dataclass
class WeightSource:
    """What an engine needs to map the trainer's weights (picklable except same_process)."""

    route: Route
    names: list[list[str]]  # per trainer tensor, every state-dict name it has
    tensors: list[torch.Tensor] = field(default_factory=list)  # same_process: the live tensors
    cuda_handles: list[tuple[Callable, tuple]] = field(default_factory=list)  # cuda_ipc
    gpu: Optional[str] = None  # cuda_ipc: the device uuid
    shm: Optional[_SharedBlock] = None  # shared_memory

    def __getstate__(self) -> dict[str, Any]:
        if self.route is Route.same_process:
            raise TypeError("a same_process WeightSource holds live tensors: it cannot travel")
        return self.__dict__


@dataclass(frozen=True)
class _SharedBlock:
    """One memfd holding every tensor of the trainer, opened by others through /proc."""

    pid: int
    fd: int
    size: int
    layout: tuple[tuple[int, torch.dtype, tuple[int, ...]], ...]  # (byte offset, dtype, shape)

    def map(self, pid: int) -> tuple[mmap.mmap, list[torch.Tensor]]:
        """The block's tensors, as seen from process ``pid`` (one mmap, kept alive by them)."""
        path = f"/proc/self/fd/{self.fd}" if pid == self.pid else f"/proc/{self.pid}/fd/{self.fd}"
        fd = os.open(path, os.O_RDWR)
        try:
            buf = mmap.mmap(fd, self.size)
        finally:
            os.close(fd)
        tensors = []
        for offset, dtype, shape in self.layout:
            count = _numel(shape)
            t = torch.frombuffer(buf, dtype=dtype, count=count, offset=offset) if count else None
            tensors.append(t.view(shape) if t is not None else torch.empty(shape, dtype=dtype))
        return buf, tensors


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


# ------------------------------------------------------------------------- trainer side
class WeightExport:
    """The trainer's side: its policy's tensors, exported once per route."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.names, self.tensors = unique_tensors(module)
        self.place = place_of(self.tensors[0].device)
        self._ptrs = [t.data_ptr() for t in self.tensors]
        self._cuda_handles: Optional[list[tuple[Callable, tuple]]] = None
        self._shm: Optional[_SharedBlock] = None
        self._shm_buf: Optional[mmap.mmap] = None

    def source_for(self, engine: Place) -> Optional[WeightSource]:
        """What ``engine`` maps, or None for the object store route."""
        route = choose_route(self.place, engine)
        if route is Route.same_process:
            return WeightSource(route, self.names, tensors=self.tensors)
        if route is Route.cuda_ipc:
            if self._cuda_handles is None:
                from torch.multiprocessing.reductions import reduce_tensor

                self._cuda_handles = [reduce_tensor(t.detach()) for t in self.tensors]
            return WeightSource(
                route, self.names, cuda_handles=self._cuda_handles, gpu=self.place.gpu
            )
        if route is Route.shared_memory:
            if self._shm is None:
                self._move_to_shared_memory()
            return WeightSource(route, self.names, shm=self._shm)
        return None

    def _move_to_shared_memory(self) -> None:
        """Re-home the trainer's CPU tensors in one memfd (a copy, once); the optimizer keeps
        its Parameter objects (``.data`` is swapped), and each tensor keeps its own storage
        (so safetensors and ``save_pretrained`` see no shared tensors)."""
        layout, offset = [], 0
        for t in self.tensors:
            layout.append((offset, t.dtype, tuple(t.shape)))
            offset += -(-t.numel() * t.element_size() // ALIGN_BYTES) * ALIGN_BYTES
        fd = os.memfd_create("miles_hydra_weights")
        os.ftruncate(fd, max(offset, 1))
        self._shm = _SharedBlock(os.getpid(), fd, max(offset, 1), tuple(layout))
        self._shm_buf, shared = self._shm.map(os.getpid())
        with torch.no_grad():
            for t, s in zip(self.tensors, shared):
                s.copy_(t)
                t.data = s
        self._ptrs = [t.data_ptr() for t in self.tensors]

    def publish(self) -> None:
        """Before engines copy: the trainer's writes done (CUDA: its stream drained) and no
        tensor reallocated since the export (the mapped addresses would be stale)."""
        if [t.data_ptr() for t in self.tensors] != self._ptrs:
            raise RuntimeError(
                "weight sync: the trainer's tensors were reallocated after they were exported; "
                "update weights in place (copy_, load_state_dict), never by reassigning them"
            )
        if self.place.gpu is not None:
            torch.cuda.current_stream(self.tensors[0].device).synchronize()


# ------------------------------------------------------------------------- engine side
class MappedWeights:
    """The engine's side: the trainer's tensors (mapped) paired with the engine's own."""

    def __init__(self, source: WeightSource, params: dict[str, torch.Tensor]) -> None:
        unknown = sorted(n for names in source.names for n in names if n not in params)
        if unknown:
            raise KeyError(f"weight sync: keys not in the rollout policy: {unknown[:5]}")
        self.route = source.route
        self._keep: Any = None  # what keeps the mapping alive (the mmap)
        src = self._map(source, params)
        self.src: list[torch.Tensor] = []
        self.dst: list[torch.Tensor] = []
        seen: set[int] = set()
        for names, tensor in zip(source.names, src):
            for name in names:
                target = params[name]
                if id(target) in seen:  # tied in the engine too
                    continue
                seen.add(id(target))
                if tuple(target.shape) != tuple(tensor.shape):
                    raise ValueError(
                        f"weight sync: {name} has shape {tuple(tensor.shape)} in the trainer "
                        f"and {tuple(target.shape)} in the engine"
                    )
                self.src.append(tensor)
                self.dst.append(target)
        self.device = self.dst[0].device if self.dst else torch.device("cpu")

    def _map(self, source: WeightSource, params: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        if source.route is Route.same_process:
            return source.tensors
        if source.route is Route.shared_memory:
            assert source.shm is not None
            self._keep, tensors = source.shm.map(os.getpid())
            return tensors
        assert source.route is Route.cuda_ipc
        index = _local_cuda_index(source.gpu)
        tensors = []
        for rebuild, args in source.cuda_handles:
            args = (*args[:6], index, *args[7:])  # storage_device: this process's numbering
            tensors.append(rebuild(*args))
        return tensors

    @torch.no_grad()
    def pull(self) -> int:
        """Copy (and cast) every tensor into the engine's; returns the number copied. On CUDA
        waits for the copy, so the trainer may write again once this returns."""
        if self.dst:
            torch._foreach_copy_(self.dst, self.src)
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()
        return len(self.dst)


def _local_cuda_index(uuid: Optional[str]) -> int:
    for i in range(torch.cuda.device_count()):
        if str(torch.cuda.get_device_properties(i).uuid) == uuid:
            return i
    raise RuntimeError(f"weight sync: CUDA device {uuid} is not visible to this engine")


# ------------------------------------------------------------------------- the driver's side
class WeightSync:
    """The driver's side: routes picked once (``connect``), then one ``sync`` per step.

    ``trainer`` and ``engines`` are actor handles (Ray's or bench/inproc_ray.py's); ``get``
    waits on refs (actors.get)."""

    def __init__(self, trainer: Any, engines: list[Any], get: Callable[..., Any]) -> None:
        self.trainer = trainer
        self.get = get
        places = get([e.weight_place.remote() for e in engines], what="locating the engines")
        sources = get(self.trainer.weight_sources.remote(places), what="exporting weights")
        self.mapped = [e for e, s in zip(engines, sources) if s is not None]
        self.copied = [e for e, s in zip(engines, sources) if s is None]
        refs = [e.attach_weights.remote(s) for e, s in zip(engines, sources) if s is not None]
        self.routes = [Route(r) for r in get(refs, what="mapping the trainer's weights")]
        self.routes += [Route.object_store] * len(self.copied)
        # another process reads the trainer's GPU memory: its stream must be drained first
        self.publish = Route.cuda_ipc in self.routes

    def sync(self) -> None:
        """Every engine's weights := the trainer's."""
        import ray

        if self.publish:
            self.get(self.trainer.publish_weights.remote(), what="publishing weights")
        if self.mapped:
            self.get([e.pull_weights.remote() for e in self.mapped], what="copying weights")
        if self.copied:
            state = self.get(self.trainer.engine_state_dict.remote(), what="exporting weights")
            ref = ray.put(state)
            self.get([e.update_weights.remote(ref) for e in self.copied], what="updating weights")
