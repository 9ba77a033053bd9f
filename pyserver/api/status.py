"""What the server reports about its models, protocol-neutral: status
per version, the repository index and model metadata."""

from __future__ import annotations

from dataclasses import dataclass, field

from pyserver.protos import model_config_pb2 as mc


@dataclass
class VersionStatus:
    """One version: its state (READY, LOADING, UNLOADING, UNAVAILABLE), why
    it is not ready, and its counters. ``by_batch_size`` maps a batch size
    to success/failed/compute/queue counts and nanoseconds (the core's
    ModelStats keys); successes include the requests answered from the
    response cache, counted again in ``cache_hit_count`` (with their lookup
    time), while ``cache_miss_*`` counts the successful requests that missed
    it (lookup plus insertion time)."""

    model: str
    version: int
    state: str
    reason: str = ""
    execution_count: int = 0
    inference_count: int = 0
    last_inference_ms: int = 0  # wall clock, ms since the epoch; 0 = never
    by_batch_size: dict[int, dict[str, int]] = field(default_factory=dict)
    cache_hit_count: int = 0
    cache_hit_ns: int = 0
    cache_miss_count: int = 0
    cache_miss_ns: int = 0


@dataclass
class ModelStatus:
    """One model of the store: its normalised config (None when it did not
    load; then ``error`` says why) and its versions."""

    name: str
    config: mc.ModelConfig | None
    error: str = ""
    versions: list[VersionStatus] = field(default_factory=list)


@dataclass
class IndexEntry:
    """A model folder or loaded model; ``version`` and ``state`` are None
    for a model with no version loaded."""

    name: str
    version: int | None = None
    state: str | None = None
    reason: str = ""
    loaded: bool = False


@dataclass
class TensorMetadata:
    name: str
    datatype: str
    shape: list[int]  # -1 for a variable dimension, the batch dimension included


@dataclass
class ModelMetadata:
    name: str
    versions: list[int]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
