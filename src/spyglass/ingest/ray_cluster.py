"""A Ray cluster to embed on: ``--ray ADDRESS`` joins a running one, ``--ray local[N]``
starts one here with N worker processes. Ray is an extra (``spyglass[ray]``), imported
only when asked for; an address that does not answer fails at once, in one line, before
anything is written (Ray itself would retry for minutes, printing as it goes).
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any

from spyglass.errors import ClusterUnreachable, IndexProblem, InvalidQuery, MissingDependency
from spyglass.settings import RuntimeSettings

INSTALL_HINT = 'pip install "spyglass[ray]"'
_LOCAL = re.compile(r"local(?:\[(\d+)\])?")


@dataclass(frozen=True)
class RaySettings:
    """Which Ray cluster embeds, and how the driver feeds it."""

    #: A running cluster: ``HOST:PORT`` (its head node's GCS port, 6379 by default),
    #: ``ray://HOST:PORT`` (Ray Client) or ``auto`` (the one started on this machine by
    #: ``ray start``). ``None``: start a local cluster of ``local_workers`` processes.
    address: str | None = None
    local_workers: int = 2
    #: Batches sent to each worker beyond the one it works on: while one travels back,
    #: the next is being decoded, so the worker never waits for the driver.
    queued_per_worker: int = 1
    #: Times one batch may lose its worker before the run stops with an error.
    max_attempts: int = 3
    #: Seconds to wait for a cluster's address to answer before giving up.
    connect_timeout: float = 10.0

    @classmethod
    def parse(cls, text: str) -> RaySettings:
        """``--ray``'s value: ``local``, ``local[N]`` or an address. Raises
        :class:`InvalidQuery` for a malformed one."""
        text = text.strip()
        local = _LOCAL.fullmatch(text)
        if local is not None:
            count = int(local.group(1)) if local.group(1) else (os.cpu_count() or 1)
            if count < 1:
                raise InvalidQuery("--ray local[N] needs at least one worker (N >= 1)")
            return cls(address=None, local_workers=count)
        if text.startswith("local"):
            raise InvalidQuery(f"--ray {text}: write local or local[N], e.g. local[4]")
        if text != "auto" and _host_and_port(text) is None:
            raise InvalidQuery(
                f"--ray {text}: give HOST:PORT (the head node's address), ray://HOST:PORT, "
                "auto, or local[N]"
            )
        return cls(address=text)

    def describe(self) -> str:
        return self.address or f"local[{self.local_workers}]"


def import_ray() -> ModuleType:
    """The ``ray`` module, or :class:`MissingDependency` naming the extra."""
    try:
        import ray
    except ImportError as error:
        raise MissingDependency(
            f"distributed indexing needs Ray: {INSTALL_HINT} ({error})"
        ) from error
    return ray


class RayCluster:
    """A connection to a Ray cluster, or a local cluster started for this run.

    :meth:`connect` before opening the index to write, so that a wrong address leaves
    nothing behind; :meth:`close` disconnects (and stops a local cluster). A process
    already connected to Ray (``ray.init`` called by the program) is used as it is and
    left connected."""

    def __init__(self, settings: RaySettings, runtime: RuntimeSettings) -> None:
        self.settings = settings
        # Sent to every worker: a callback would not travel, nor is there anyone to tell.
        self.runtime = replace(runtime, report_model_preparation=None)
        self._ray: ModuleType | None = None
        self._owned = False
        self._restore_printer: Callable[[], None] = lambda: None

    @property
    def ray(self) -> ModuleType:
        if self._ray is None:
            raise IndexProblem("the Ray cluster is not connected (call connect first)")
        return self._ray

    def connect(self) -> RayCluster:
        """Join the cluster. Raises :class:`MissingDependency` without Ray and
        :class:`ClusterUnreachable` when the address does not answer."""
        ray = import_ray()
        if ray.is_initialized():
            self._ray = ray
            return self
        address = self.settings.address
        if address is not None and address != "auto":
            where = _host_and_port(address)
            assert where is not None  # checked by RaySettings.parse
            _check_reachable(address, *where, self.settings.connect_timeout)
        options: dict[str, Any] = {
            "include_dashboard": False,
            # Workers' own output (Ray's and the model's) stays in Ray's log files: the
            # command's stderr is for its progress bar and its one-line errors.
            "log_to_driver": False,
            "logging_level": "ERROR",
        }
        try:
            if address is None:
                ray.init(num_cpus=self.settings.local_workers, **options)
            else:
                ray.init(address=address, **options)
        except (ConnectionError, RuntimeError, TimeoutError, ValueError) as error:
            raise ClusterUnreachable(
                f"cannot join the Ray cluster at {self.settings.describe()}: {first_line(error)}"
            ) from error
        self._ray, self._owned = ray, True
        self._restore_printer = _quiet_raylet_reports(ray)
        return self

    def close(self) -> None:
        if self._ray is not None and self._owned:
            self._ray.shutdown()
            self._restore_printer()
        self._ray, self._owned = None, False

    def __enter__(self) -> RayCluster:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def worker_plan(self) -> WorkerPlan:
        """How many workers, and what each reserves: one per GPU when the cluster has
        GPUs, else one per CPU (``local[N]``: N)."""
        resources = self.ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        if gpus:
            return WorkerPlan(count=gpus, cpus=1, gpus=1)
        cpus = int(resources.get("CPU", 0))
        if self.settings.address is None:
            cpus = min(cpus, self.settings.local_workers) if cpus else 0
        if cpus < 1:
            raise ClusterUnreachable(
                f"the Ray cluster at {self.settings.describe()} has no CPU or GPU to run workers on"
            )
        return WorkerPlan(count=cpus, cpus=1, gpus=0)


@dataclass(frozen=True)
class WorkerPlan:
    """Workers to start and the Ray resources each reserves."""

    count: int
    cpus: int
    gpus: int


def _host_and_port(address: str) -> tuple[str, int] | None:
    """``HOST:PORT`` or ``ray://HOST:PORT`` -> (host, port); None if malformed."""
    rest = address.removeprefix("ray://")
    host, _, port = rest.rpartition(":")
    host = host.strip("[]")  # [::1]:6379
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)


def _check_reachable(address: str, host: str, port: int, timeout: float) -> None:
    """Fail fast, in one line, when nothing answers at the address: Ray itself retries
    an unreachable head for minutes, printing as it goes."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as error:
        if isinstance(error, TimeoutError):
            reason = f"no answer in {timeout:g} s"
        else:
            reason = str(error.strerror or error).lower()
        raise ClusterUnreachable(
            f"cannot reach the Ray cluster at {address} ({reason}); start one there with "
            "`ray start --head`, or use --ray local[N]"
        ) from error


def _quiet_raylet_reports(ray: ModuleType) -> Callable[[], None]:
    """Keep Ray's driver from printing the raylet's reports (a paragraph for each worker
    that dies) on stdout, where they would break ``--json``: the run handles a death
    itself, and the engine never prints. Other output of Ray is left alone. Ray offers
    no setting for this, so its printer is wrapped (when this version of Ray has it);
    returns what puts it back."""
    module = getattr(getattr(ray, "_private", None), "worker", None)
    printer = getattr(module, "print_to_stdstream", None)
    if module is None or not callable(printer):
        return lambda: None

    def quiet(data: Mapping[str, Any], *args: Any, **kwargs: Any) -> None:
        if data.get("pid") != "raylet":
            printer(data, *args, **kwargs)

    module.print_to_stdstream = quiet

    def restore() -> None:
        module.print_to_stdstream = printer

    return restore


def first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
