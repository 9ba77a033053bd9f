"""The model lifecycle: scan the store, load and unload versions, and keep
the table that requests are resolved against.

Every version is a small state machine (LOADING -> READY | UNAVAILABLE,
READY -> UNLOADING -> gone). A reload makes the new version READY before the
old one goes. Scans run on one worker thread at a time; the event loop only
reads the resolution table, which is replaced whole after each change.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pyserver import _core
from pyserver.backends import load_runtime
from pyserver.errors import Code, ServerError, not_found, unavailable
from pyserver.protos import model_config_pb2 as mc
from pyserver.protos import server_status_pb2 as ss
from pyserver.repository import config as cfg
from pyserver.tensors import element_size

log = logging.getLogger("pyserver.repository")

LATEST = -1
_LABEL_FILE = re.compile(r'label_filename\s*:\s*"([^"]*)"')
# Every ModelVersion object gets the next number: a reload of the same
# version number is a new generation (the response cache keys on it).
_GENERATIONS = itertools.count(1)


@dataclass(eq=False)
class ModelVersion:
    """One version of a model: its config, instances and scheduler."""

    name: str
    version: int
    config: mc.ModelConfig
    labels: dict[str, list[str]]
    state: int = ss.MODEL_LOADING
    reason: str = ""
    stats: _core.ModelStats = field(default_factory=_core.ModelStats)
    scheduler: _core.ModelScheduler | None = None
    runtimes: list = field(default_factory=list)
    # Per-version cache the protocol layer may fill (e.g. parsed request plans).
    plans: dict = field(default_factory=dict)
    generation: int = field(default_factory=lambda: next(_GENERATIONS))
    # Called with the version once it is UNLOADING, before it drains.
    on_unload: Callable[["ModelVersion"], None] | None = None
    cache_responses: bool = field(init=False)  # config: response_cache { enable: true }
    # Scheduled by the sequence batcher: requests carry a correlation id.
    sequence: bool = False

    def __post_init__(self) -> None:
        self.cache_responses = self.config is not None and self.config.response_cache.enable
        self.sequence = self.config is not None and self.config.HasField("sequence_batching")

    def unload(self) -> None:
        """Finishes accepted requests, then releases the runtimes. Blocks."""
        self.state = ss.MODEL_UNLOADING
        if self.on_unload is not None:
            try:
                self.on_unload(self)
            except Exception:
                log.exception("unload hook of %s version %d failed", self.name, self.version)
        if self.scheduler is not None:
            self.scheduler.stop()
        for runtime in self.runtimes:
            runtime.close()
        self.runtimes = []
        self.state = ss.MODEL_UNAVAILABLE


@dataclass(eq=False)
class Model:
    """A model folder as last scanned."""

    name: str
    path: Path
    config: mc.ModelConfig | None
    fingerprint: tuple  # what a change of triggers a reload (see _fingerprint)
    error: str = ""
    versions: dict[int, ModelVersion] = field(default_factory=dict)


class RepositoryManager:
    """Owns every loaded model of one store."""

    def __init__(self, root: Path, completions: _core.CompletionQueue,
                 pool: _core.HostMemoryPool, gpu_count: int = 0,
                 on_unload: Callable[[ModelVersion], None] | None = None,
                 inline_limit_us: float = 0.0) -> None:
        """``on_unload(version)`` runs on the unloading thread each time a
        loaded version starts unloading (reload, removal, shutdown).
        ``inline_limit_us``: see ServerOptions.inline_execution_limit_us."""
        self.root = Path(root)
        self._inline_limit_us = inline_limit_us
        self._on_unload = on_unload
        self._completions = completions
        self._pool = pool
        self._gpu_count = gpu_count
        self._scan_lock = threading.Lock()
        self.models: dict[str, Model] = {}
        # Resolution table, replaced whole (never mutated) after each change.
        self._ready: dict[tuple[str, int], ModelVersion] = {}

    # -- requests -----------------------------------------------------------

    def resolve(self, name: str, version: int = LATEST) -> ModelVersion:
        """The READY version a request runs on. ``LATEST`` = highest READY."""
        found = self._ready.get((name, version))
        if found is not None:
            return found
        if name not in self.models:
            raise not_found(f"model '{name}' is not found")
        if version == LATEST:
            raise unavailable(f"model '{name}' has no ready version")
        raise not_found(f"model '{name}' version {version} is not found")

    # -- lifecycle ----------------------------------------------------------

    def poll(self) -> None:
        """Brings the loaded models in line with the store. Blocks while
        versions load or drain; one scan at a time."""
        with self._scan_lock:
            on_disk = self._model_dirs()
            for name in sorted(set(self.models) - set(on_disk)):
                self._remove_model(name)
            for name, path in sorted(on_disk.items()):
                self._sync_model(name, path)
            self._publish()

    def load_model(self, name: str) -> None:
        """Loads one model from the store, or reloads it if it is loaded
        (explicit model control). Blocks. Raises ServerError when the model
        is not in the store or does not load; a failed reload leaves the
        loaded model serving."""
        if not name or name in (".", "..") or "/" in name or "\0" in name:
            raise ServerError(Code.INVALID_ARG, f"'{name}' is not a model name")
        with self._scan_lock:
            path = self.root / name
            if not path.is_dir() or name.startswith("."):
                raise not_found(f"model '{name}' is not in the model store")
            old = self.models.get(name)
            if old is None:
                self._sync_model(name, path)
                failure = _failure_of(self.models[name])
            else:
                failure = self._reload_model(old, path, _fingerprint(path))
            self._publish()
            if failure:
                raise ServerError(Code.INTERNAL, f"failed to load '{name}': {failure}")

    def unload_model(self, name: str) -> None:
        """Unloads every version of one model (accepted requests finish
        first). Blocks. Unloading a model that is not loaded does nothing."""
        with self._scan_lock:
            if name in self.models:
                self._remove_model(name)
            self._publish()

    def index(self) -> list[tuple[str, bool]]:
        """(name, loaded) for every model folder in the store and every
        loaded model, sorted by name."""
        names = set(self._model_dirs()) | set(self.models)
        return [(name, name in self.models) for name in sorted(names)]

    def stop(self) -> None:
        """Unloads every version (accepted requests finish first). Blocks."""
        with self._scan_lock:
            for name in list(self.models):
                self._remove_model(name)
            self._publish()

    def failures(self) -> list[str]:
        """One line per model or version that failed to load."""
        failed = []
        for model in self.models.values():
            if model.error:
                failed.append(f"{model.name}: {model.error}")
            for v in model.versions.values():
                if v.state == ss.MODEL_UNAVAILABLE:
                    failed.append(f"{model.name} version {v.version}: {v.reason}")
        return failed

    def all_ready(self) -> bool:
        """Every model has at least one version and all of them are READY."""
        return all(m.versions and not m.error and
                   all(v.state == ss.MODEL_READY for v in m.versions.values())
                   for m in self.models.values())

    # -- internals ----------------------------------------------------------

    def _model_dirs(self) -> dict[str, Path]:
        try:
            entries = list(self.root.iterdir())
        except OSError as exc:
            log.error("cannot read model store %s: %s", self.root, exc)
            return {name: self.root / name for name in self.models}
        return {p.name: p for p in entries if p.is_dir() and not p.name.startswith(".")}

    def _sync_model(self, name: str, path: Path) -> None:
        fingerprint = _fingerprint(path)
        model = self.models.get(name)
        if model is not None and model.fingerprint != fingerprint:
            self._reload_model(model, path, fingerprint)
            return
        if model is None:
            model = self._new_model(name, path, fingerprint)
            self.models[name] = model
        if model.config is None:
            return
        try:
            wanted = set(cfg.select_versions(model.config, cfg.versions_on_disk(path)))
        except OSError as exc:
            log.error("cannot list versions of %s: %s", name, exc)
            return
        if not wanted and not model.versions:
            model.error = "at least one version must be available under the version policy"
            log.error("model '%s' failed to load: %s", name, model.error)
            return
        model.error = ""
        added = sorted(wanted - set(model.versions))
        for version in added:
            model.versions[version] = self._load_version(model, path, version)
        if added:
            self._publish()
        for version in sorted(set(model.versions) - wanted):
            log.info("unloading %s version %d", name, version)
            gone = model.versions.pop(version)
            self._publish()
            gone.unload()

    def _new_model(self, name: str, path: Path, fingerprint: tuple) -> Model:
        try:
            config = cfg.load_config(path, self._gpu_count)
        except ServerError as exc:
            log.error("model '%s' failed to load: %s", name, exc.message)
            return Model(name, path, None, fingerprint, error=exc.message)
        return Model(name, path, config, fingerprint)

    def _reload_model(self, old: Model, path: Path, fingerprint: tuple) -> str:
        """Loads the model anew, then drops the old one. If the new one
        fails while the old one serves, the old one stays (and the change is
        not retried until the files change again). Returns the failure, or
        an empty string."""
        log.info("reloading '%s'", old.name)
        new = self._new_model(old.name, path, fingerprint)
        if new.config is not None:
            versions = cfg.select_versions(new.config, cfg.versions_on_disk(path))
            if not versions:
                new.error = "at least one version must be available under the version policy"
            for version in versions:
                new.versions[version] = self._load_version(new, path, version)
        failure = _failure_of(new)
        if failure and any(v.state == ss.MODEL_READY for v in old.versions.values()):
            log.error("reload of '%s' failed, the loaded model stays: %s", old.name, failure)
            for version in new.versions.values():
                version.unload()
            old.fingerprint = fingerprint
            return failure
        self.models[old.name] = new
        self._publish()
        for version in old.versions.values():
            version.unload()
        return failure

    def _remove_model(self, name: str) -> None:
        model = self.models.pop(name)
        log.info("unloading model '%s'", name)
        self._publish()
        for version in model.versions.values():
            version.unload()

    def _load_version(self, model: Model, path: Path, version: int) -> ModelVersion:
        config = model.config
        entry = ModelVersion(model.name, version, config, labels={}, on_unload=self._on_unload)
        log.info("loading %s version %d", model.name, version)
        try:
            entry.labels = cfg.load_labels(path, config)
            model_file = cfg.model_path(path, version, config)
            log.debug("%s version %d: model file %s", model.name, version, model_file)
            for group in config.instance_group:
                devices = list(group.gpus) if group.kind == mc.ModelInstanceGroup.KIND_GPU else [-1]
                for device in devices:
                    for _ in range(group.count):
                        entry.runtimes.append(load_runtime(config, model_file, group, device,
                                                           self._pool))
            entry.scheduler = _core.ModelScheduler(
                entry.runtimes, self._completions, entry.stats, batching=_batching(config),
                pool=self._pool, input_names=tuple(i.name for i in config.input),
                output_names=tuple(o.name for o in config.output) + tuple(
                    s.output_name for s in config.sequence_batching.state),
                retry_failed_batch=_core.retry_failed_batch(config),
                sequence=_sequence(config, path), inline_limit_us=self._inline_limit_us)
        except Exception as exc:
            reason = exc.message if isinstance(exc, ServerError) else f"{type(exc).__name__}: {exc}"
            log.error("%s version %d failed to load: %s", model.name, version, reason)
            for runtime in entry.runtimes:
                runtime.close()
            entry.runtimes = []
            entry.state = ss.MODEL_UNAVAILABLE
            entry.reason = reason
            return entry
        entry.state = ss.MODEL_READY
        log.info("%s version %d is ready", model.name, version)
        return entry

    def _publish(self) -> None:
        ready: dict[tuple[str, int], ModelVersion] = {}
        for model in self.models.values():
            live = [v for v in model.versions.values() if v.state == ss.MODEL_READY]
            for v in live:
                ready[(model.name, v.version)] = v
            if live:
                ready[(model.name, LATEST)] = max(live, key=lambda v: v.version)
        self._ready = ready


def _failure_of(model: Model) -> str:
    """Why a model did not (entirely) load; empty when every version is READY."""
    if model.error:
        return model.error
    failed = [f"version {v.version}: {v.reason}" for v in model.versions.values()
              if v.state != ss.MODEL_READY]
    if failed:
        return "; ".join(failed)
    return "" if model.versions else "no version was loaded"


def _batching(config: mc.ModelConfig) -> dict | None:
    """The core's dynamic batcher settings, or None for direct scheduling."""
    if not config.HasField("dynamic_batching"):
        return None
    db = config.dynamic_batching

    def policy(p: mc.ModelQueuePolicy) -> dict:
        return {"timeout_action": mc.ModelQueuePolicy.TimeoutAction.Name(p.timeout_action),
                "default_timeout_microseconds": p.default_timeout_microseconds,
                "allow_timeout_override": p.allow_timeout_override,
                "max_queue_size": p.max_queue_size}

    return {"max_batch_size": config.max_batch_size,
            "preferred_batch_sizes": list(db.preferred_batch_size),
            "max_queue_delay_microseconds": db.max_queue_delay_microseconds,
            "preserve_ordering": db.preserve_ordering,
            "priority_levels": db.priority_levels,
            "default_priority_level": db.default_priority_level,
            "default_queue_policy": policy(db.default_queue_policy),
            "priority_queue_policy": {level: policy(p)
                                      for level, p in db.priority_queue_policy.items()}}


def _sequence(config: mc.ModelConfig, model_dir: Path) -> dict | None:
    """The core's sequence batcher settings, or None. Control inputs and
    state inputs follow the config's inputs, in this order; state outputs
    follow its outputs."""
    if not config.HasField("sequence_batching"):
        return None
    seq = config.sequence_batching
    kinds = {mc.ModelSequenceBatching.Control.CONTROL_SEQUENCE_START: "start",
             mc.ModelSequenceBatching.Control.CONTROL_SEQUENCE_END: "end",
             mc.ModelSequenceBatching.Control.CONTROL_SEQUENCE_READY: "ready",
             mc.ModelSequenceBatching.Control.CONTROL_SEQUENCE_CORRID: "corrid"}
    controls = []
    for control_input in seq.control_input:
        control = control_input.control[0]
        if control.kind == control.CONTROL_SEQUENCE_CORRID:
            data_type, values = control.data_type, (0, 0)
        elif len(control.int32_false_true):
            data_type, values = mc.TYPE_INT32, tuple(control.int32_false_true)
        elif len(control.fp32_false_true):
            data_type, values = mc.TYPE_FP32, tuple(control.fp32_false_true)
        else:
            data_type, values = mc.TYPE_BOOL, tuple(float(v) for v in control.bool_false_true)
        controls.append({"name": control_input.name, "kind": kinds[control.kind],
                         "data_type": data_type, "false": values[0], "true": values[1]})
    states = []
    for state in seq.state:
        size = math.prod(state.dims) * element_size(state.data_type)
        initial = bytes(size)
        for init in state.initial_state:
            if init.WhichOneof("state_data") == "data_file":
                initial = (model_dir / cfg.INITIAL_STATE_FOLDER / init.data_file).read_bytes()
        states.append({"input_name": state.input_name, "output_name": state.output_name,
                       "data_type": state.data_type, "dims": list(state.dims),
                       "initial": initial})
    choice = seq.WhichOneof("strategy_choice")
    oldest = seq.oldest
    return {"model_name": config.name, "strategy": choice or "direct",
            "max_batch_size": config.max_batch_size,
            "max_sequence_idle_microseconds": seq.max_sequence_idle_microseconds,
            "max_candidate_sequences": oldest.max_candidate_sequences,
            "preferred_batch_sizes": sorted(oldest.preferred_batch_size),
            "max_queue_delay_microseconds": oldest.max_queue_delay_microseconds,
            "input_count": len(config.input), "output_count": len(config.output),
            "controls": controls, "states": states}


def _fingerprint(path: Path) -> tuple:
    """The config text and the label files it names, as last read. A change
    of either reloads the model (labels are part of what a version serves)."""
    try:
        config_text = (path / cfg.CONFIG_FILENAME).read_text()
    except (OSError, UnicodeDecodeError):
        return ("",)
    labels = []
    for match in _LABEL_FILE.finditer(config_text):
        try:
            labels.append((path / match.group(1)).read_bytes())
        except OSError:
            labels.append(b"")
    return (config_text, *labels)
