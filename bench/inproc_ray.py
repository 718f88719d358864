"""Ray for bench/bench_speculative.py: the real one, or an in-process stand-in.

The device machine has no Ray (bench/README.md), and Ray is too big to carry there, yet
``miles_hydra.backends.local.loop`` talks to its actors through Ray. ``ray_or_inproc("inproc")``
registers a minimal ``ray`` module in which an actor is a plain object in this process and
``.remote()`` calls run at once (so ``ray.get`` only unwraps): the driver's loop then runs
unchanged, sequentially, as it does under Ray (it waits on every call). Bench only.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import types
from collections.abc import Iterator
from typing import Any

_ACTOR_MODULES = ("miles_hydra.backends.local.rollout", "miles_hydra.backends.local.rollout.actor")


class _Ref:
    """The result of a call that already ran."""

    def __init__(self, value: Any) -> None:
        self.value = value


def _unwrap(value: Any) -> Any:
    return value.value if isinstance(value, _Ref) else value


class _Method:
    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def remote(self, *args: Any, **kwargs: Any) -> _Ref:
        args = tuple(_unwrap(a) for a in args)
        return _Ref(self.fn(*args, **{k: _unwrap(v) for k, v in kwargs.items()}))


class _Handle:
    """An actor handle whose object lives in this process."""

    def __init__(self, obj: Any) -> None:
        self._obj = obj

    def __getattr__(self, name: str) -> _Method:
        if name == "__ray_ready__":
            return _Method(lambda: True)
        if name == "__ray_call__":
            return _Method(lambda fn, *args: fn(self._obj, *args))
        return _Method(getattr(self._obj, name))


class _ActorClass:
    def __init__(self, cls: type) -> None:
        self.cls = cls

    def options(self, **_: Any) -> _ActorClass:
        return self

    def remote(self, *args: Any, **kwargs: Any) -> _Handle:
        return _Handle(self.cls(*args, **kwargs))


def _module() -> types.ModuleType:
    ray = types.ModuleType("ray")
    exceptions = types.ModuleType("ray.exceptions")
    for name in ("RayTaskError", "GetTimeoutError", "RayActorError"):
        setattr(exceptions, name, type(name, (Exception,), {}))
    ray.exceptions = exceptions
    ray.remote = lambda cls=None, **_: _ActorClass(cls) if cls is not None else _ActorClass
    ray.get = lambda refs, timeout=None: (
        [_unwrap(r) for r in refs] if isinstance(refs, list) else _unwrap(refs)
    )
    ray.put = _Ref
    ray.is_initialized = lambda: True
    ray.init = lambda *a, **k: None
    ray.shutdown = lambda: None
    return ray


@contextlib.contextmanager
def _stub_installed() -> Iterator[None]:
    """The stand-in as ``ray``; an engine actor class made by the real Ray before (the
    engine imported earlier in this process) is swapped for an in-process one meanwhile."""
    saved = {k: sys.modules.get(k) for k in ("ray", "ray.exceptions")}
    imported_before = set(sys.modules)
    stub = _module()
    sys.modules["ray"], sys.modules["ray.exceptions"] = stub, stub.exceptions
    patched = []
    for name in _ACTOR_MODULES:
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "RolloutEngineActor"):
            patched.append((module, module.RolloutEngineActor))
            module.RolloutEngineActor = _ActorClass(module.RolloutEngine)
    try:
        yield
    finally:
        for module, actor in patched:
            module.RolloutEngineActor = actor
        for key, module in saved.items():
            if module is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = module
        # Modules first imported meanwhile bound the stand-in as `ray` (e.g. the lazily imported
        # engine actor): forget them, so later imports in this process get the real Ray.
        for name in set(sys.modules) - imported_before:
            if name.startswith("miles_hydra"):
                del sys.modules[name]


@contextlib.contextmanager
def ray_or_inproc(actors: str = "auto") -> Iterator[str]:
    """Yield ``"ray"`` inside a Ray session (joined via RAY_ADDRESS or started here and shut
    down after), or ``"inproc"`` with the stand-in registered as ``ray``.

    ``actors``: "ray", "inproc", or "auto" (Ray when it is installed)."""
    real = "ray" in sys.modules or importlib.util.find_spec("ray") is not None
    if actors == "inproc" or (actors == "auto" and not real):
        with _stub_installed():
            yield "inproc"
        return
    import ray

    if ray.is_initialized():
        yield "ray"
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
    try:
        yield "ray"
    finally:
        ray.shutdown()
