"""``optimize --ray ADDRESS|auto``: candidates built as Ray tasks on a cluster, measured on the driver.

Building a candidate (conversion, calibration, QAT or pruning with fine-tuning) is the expensive,
device-independent part of a search; measuring it (accuracy and latency on the device) must happen
one at a time on that device. So the driver submits the builds of independent candidates as Ray Core
tasks (never Ray Train: its TensorFlow integration breaks with Keras 3), at most ``--max-parallel``
at once; each task loads the model and data from their paths (a worker keeps them for its next
task), runs the candidate's passes through the same pipeline with the same seed, and returns the
``.tflite`` bytes; the driver measures every candidate in the order the in-process search would, so
the trials, the report and the recommendation are those of an in-process run.

Every node needs edgekit and its dependencies installed (the same version as the driver) and the
model and data at the same paths (a shared folder), as usual for Ray jobs. ``--ray auto`` connects
to the cluster in ``RAY_ADDRESS`` or the one ``ray start`` made on this machine.

Example:
    >>> pool = RayBuilds.connect("127.0.0.1:6379", job, max_parallel=2)  # doctest: +SKIP
    >>> futures = [pool.submit(passes) for passes in candidates]  # doctest: +SKIP
    >>> flatbuffers = [pool.result(f) for f in futures]  # doctest: +SKIP
"""

from __future__ import annotations

import os
import tempfile
from collections import deque
from pathlib import Path
from typing import Any

from edgekit.core import errors as error_types
from edgekit.core.datatypes import Preprocessing
from edgekit.core.errors import DeviceError, EdgekitError, InputError
from edgekit.core.extras import import_extra
from edgekit.devices.profiles import DeviceProfile
from edgekit.devices.run import run_model
from edgekit.passes.pipeline import run_passes
from edgekit.passes.registry import build, pass_class
from edgekit.workflows.inputs import ensure_loss, load_search_inputs

_prepared: dict[str, Any] = {}  # in a Ray worker: the job's (state, ctx), loaded once per job


def _state_and_context(job: dict[str, Any]) -> tuple[Any, Any]:
    """The model state and pass context of ``job``, as :func:`edgekit.workflows.optimize.optimize` makes them."""
    key = job["key"]
    if key not in _prepared:
        found = load_search_inputs(job["model"], job["data"], job["val"], preprocessing=Preprocessing.from_dict(job["preprocessing"]),
                                   seed=job["seed"], unsafe=job["unsafe"], custom_objects=job["custom_objects"], tasks=job["tasks"],
                                   x_key=job["x_key"], y_key=job["y_key"])
        if found.loaded.keras_model is not None and found.ctx.train is not None and found.ctx.train.y is not None:
            ensure_loss(found.loaded.keras_model)
        _prepared.clear()
        _prepared[key] = (found.state, found.ctx)
    return _prepared[key]


def build_remote(job: dict[str, Any], passes: list[dict[str, Any]]) -> tuple[str, Any]:
    """Runs in a Ray worker: ``("ok", tflite bytes)`` or ``("error", (kind, message, hint))``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # conversions go through the converter's worker, as on the driver
    try:
        state, ctx = _state_and_context(job)
        configs = []
        for spec in passes:
            extra = {"layer_stats": False} if spec["pass"] == "quantize" else {}
            configs.append(pass_class(spec["pass"]).config_type.model_validate({**spec, **extra}))
        result = run_passes([build(c) for c in configs], state, ctx)
        assert result.state.tflite is not None
        return "ok", bytes(result.state.tflite)
    except EdgekitError as exc:
        return "error", (type(exc).__name__, exc.message, exc.hint)


def device_resource(name: str) -> str:
    """The Ray custom resource a node offers for the device ``name`` (``ray start --resources '{"device:NAME": 1}'``)."""
    return f"device:{name}"


def run_remote(profile: DeviceProfile, name: str, data: bytes, feed: Any, options: dict[str, Any]) -> tuple[str, Any]:
    """Runs in a Ray task on the node offering the device: the file's bytes run there with ``run_model``."""
    try:
        with tempfile.TemporaryDirectory(prefix="edgekit-ray-") as tmp:
            path = Path(tmp) / name
            path.write_bytes(data)
            return "ok", run_model(profile, path, feed, **options)
    except EdgekitError as exc:
        return "error", (type(exc).__name__, exc.message, exc.hint)


class RayDeviceRunner:
    """``run_model`` as a Ray task asking for the device's resource: the measurement runs on the node the device
    is attached to, one at a time on that device, while builds run anywhere on the cluster."""

    def __init__(self, ray: Any, device: str, address: str) -> None:
        self.ray, self.device, self.address = ray, device, address
        self._remote = ray.remote(num_cpus=0, max_retries=0)(run_remote).options(resources={device_resource(device): 1})

    @classmethod
    def offered(cls, ray: Any, device: str, address: str) -> RayDeviceRunner | None:
        """A runner when a node of the cluster offers ``device:NAME``; None (measure from the driver) otherwise."""
        return cls(ray, device, address) if ray.cluster_resources().get(device_resource(device), 0) >= 1 else None

    def __call__(self, profile: DeviceProfile, path: str | os.PathLike[str], feed: Any, **options: Any) -> Any:
        ref = self._remote.remote(profile, Path(path).name, Path(path).read_bytes(), feed, options)
        try:
            status, value = self.ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - the task or its node died
            raise DeviceError(f"the Ray task measuring on {self.device} failed: {' '.join(str(exc).split())[:200]}",
                              hint=f"check the node offering {device_resource(self.device)} has edgekit installed") from None
        if status == "ok":
            return value
        kind, message, hint = value
        cls = getattr(error_types, kind, None)
        raise (cls if isinstance(cls, type) and issubclass(cls, EdgekitError) else DeviceError)(message, hint=hint)


def connect_ray(address: str) -> Any:
    """The ``ray`` module, connected to the cluster at ``address`` (``auto``: ``RAY_ADDRESS`` or the local one).

    Raises:
        InputError: ray is not installed (the ``distributed`` extra).
        DeviceError: no cluster answers at ``address``.
    """
    ray = import_extra("distributed", "ray")
    if not ray.is_initialized():
        try:
            ray.init(address=address, log_to_driver=False, include_dashboard=False, logging_level="ERROR", configure_logging=False)
        except Exception as exc:  # noqa: BLE001 - any connection failure: one line
            raise DeviceError(f"no Ray cluster answers at {address}: {' '.join(str(exc).split())[:200]}",
                              hint="start one with `ray start --head` (or give its ADDRESS:PORT), or drop --ray") from None
    return ray


class RayBuilds:
    """Builds submitted to a Ray cluster, at most ``max_parallel`` in flight; results in submission order."""

    def __init__(self, ray: Any, job: dict[str, Any], max_parallel: int, address: str) -> None:
        self.ray, self.job, self.max_parallel, self.address = ray, job, max_parallel, address
        self._remote = ray.remote(num_cpus=1, max_retries=0)(build_remote)
        self._job_ref = ray.put(job)
        self._waiting: deque[tuple[int, list[dict[str, Any]]]] = deque()
        self._running: dict[int, Any] = {}
        self._done: dict[int, tuple[str, Any]] = {}
        self._next = 0

    @classmethod
    def connect(cls, address: str, job: dict[str, Any], *, max_parallel: int | None = None) -> RayBuilds:
        """Connects to the cluster at ``address`` (``auto``: ``RAY_ADDRESS`` or the local ``ray start`` cluster).

        Raises:
            InputError: ray is not installed.
            DeviceError: no cluster answers at ``address``.
        """
        ray = connect_ray(address)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        return cls(ray, job, max_parallel or max(1, cpus), address)

    def submit(self, passes: list[dict[str, Any]]) -> int:
        """Queues one build; returns its ticket."""
        ticket = self._next
        self._next += 1
        self._waiting.append((ticket, passes))
        self._fill()
        return ticket

    def _fill(self) -> None:
        while self._waiting and len(self._running) < self.max_parallel:
            ticket, passes = self._waiting.popleft()
            self._running[ticket] = self._remote.remote(self._job_ref, passes)

    def result(self, ticket: int) -> bytes:
        """Waits for build ``ticket`` (others keep running) and returns its bytes.

        Raises:
            the build's own edgekit error, or DeviceError when the task or its node died.
        """
        while ticket not in self._done:
            if ticket not in self._running:
                self._fill()
            ready, _ = self.ray.wait(list(self._running.values()), num_returns=1)
            for t, ref in list(self._running.items()):
                if ref == ready[0]:
                    del self._running[t]
                    try:
                        self._done[t] = self.ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - a worker that died, a lost node
                        self._done[t] = ("lost", " ".join(str(exc).split())[:200])
            self._fill()
        status, value = self._done.pop(ticket)
        if status == "ok":
            return bytes(value)
        if status == "lost":
            raise DeviceError(f"the Ray task building this candidate failed on the cluster at {self.address}: {value}",
                              hint="check the workers have edgekit installed and see the cluster's logs (ray logs)")
        kind, message, hint = value
        cls = getattr(error_types, kind, None)
        if not (isinstance(cls, type) and issubclass(cls, EdgekitError)):
            cls = InputError
        raise cls(message, hint=hint)

    def close(self) -> None:
        for ref in self._running.values():
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
        self._running.clear()
        self._waiting.clear()
        self.ray.shutdown()
