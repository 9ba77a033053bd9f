"""Schema-first model configuration: read config.pbtxt, normalise it, validate it.

``protos/model_config.proto`` is the one definition of a model's configuration.
``normalize`` is the one place defaults are filled; the normalised config is what
the server schedules from and what status reports
(as the v1 server normalised it: defaults, batching, instance groups, version policy).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from google.protobuf import text_format

from pyserver.errors import ServerError, invalid_arg
from pyserver.tensors import element_size
from pyserver.protos.model_config_pb2 import (
    DataType,
    ModelConfig,
    ModelInstanceGroup,
    ModelInput,
    ModelOutput,
)

CONFIG_FILENAME = "config.pbtxt"

DEFAULT_MODEL_FILENAMES: dict[str, str] = {
    "tensorrt_plan": "model.plan",
    "tensorflow_graphdef": "model.graphdef",
    "tensorflow_savedmodel": "model.savedmodel",
    "caffe2_netdef": "model.netdef",
    "onnxruntime_onnx": "model.onnx",
    "pytorch_libtorch": "model.pt",
    "python": "model.py",
    "custom": "libcustom.so",
}

ENSEMBLE_PLATFORM = "ensemble"
PLATFORMS: tuple[str, ...] = (*DEFAULT_MODEL_FILENAMES, ENSEMBLE_PLATFORM)

DEFAULT_PREFERRED_BATCH_SIZES: tuple[int, ...] = (4, 8)
DEFAULT_MAX_SEQUENCE_IDLE_US = 1_000_000
INITIAL_STATE_FOLDER = "initial_state"
# Types a CONTROL_SEQUENCE_CORRID input may have.
CORRID_TYPES = (DataType.TYPE_UINT64, DataType.TYPE_INT64, DataType.TYPE_UINT32,
                DataType.TYPE_INT32, DataType.TYPE_STRING)

_GPU_FREE_KINDS = {
    ModelInstanceGroup.KIND_CPU: "KIND_CPU",
    ModelInstanceGroup.KIND_MODEL: "KIND_MODEL",
}


def _folder_name(model_dir: Path) -> str:
    """The model's folder name, also for relative paths such as '.'."""
    return Path(os.path.abspath(model_dir)).name


def _error(model_dir: Path, message: str) -> ServerError:
    """An INVALID_ARG error prefixed with the model's name."""
    return invalid_arg(f"model '{_folder_name(model_dir)}': {message}")


def read_config(model_dir: Path) -> ModelConfig:
    """Parse ``<model_dir>/config.pbtxt`` as a text-format ModelConfig, as written."""
    path = Path(model_dir) / CONFIG_FILENAME
    if not path.is_file():
        raise _error(model_dir, f"no {CONFIG_FILENAME} in {model_dir}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _error(model_dir, f"cannot read {path}: {exc}") from exc
    try:
        return text_format.Parse(text, ModelConfig())
    except text_format.ParseError as exc:
        raise _error(model_dir, f"cannot parse {path}: {exc}") from exc


def _backend(config: ModelConfig) -> str:
    """The config's ``backend`` field, or "" while the schema has no such field."""
    if "backend" not in config.DESCRIPTOR.fields_by_name:
        return ""
    return getattr(config, "backend")


def _normalize_group(group: ModelInstanceGroup, name: str, gpu_count: int) -> None:
    """Fill one instance group's name and count and resolve KIND_AUTO (facts §7.3)."""
    if not group.name:
        group.name = name
    if group.count < 1:
        group.count = 1
    if group.kind == ModelInstanceGroup.KIND_AUTO:
        gpus_exist = gpu_count > 0 and all(0 <= gpu < gpu_count for gpu in group.gpus)
        group.kind = ModelInstanceGroup.KIND_GPU if gpus_exist else ModelInstanceGroup.KIND_CPU
    if group.kind == ModelInstanceGroup.KIND_GPU and not group.gpus:
        group.gpus.extend(range(gpu_count))


def normalize(config: ModelConfig, gpu_count: int = 0) -> ModelConfig:
    """Return a copy of config with every server default filled in."""
    out = ModelConfig()
    out.CopyFrom(config)
    if not out.platform and _backend(out) == "python":
        out.platform = "python"
    if out.version_policy.WhichOneof("policy_choice") is None:
        out.version_policy.latest.num_versions = 1
    if not out.default_model_filename:
        out.default_model_filename = DEFAULT_MODEL_FILENAMES.get(out.platform, "")
    if not out.instance_group and out.platform != ENSEMBLE_PLATFORM:
        out.instance_group.add(name=out.name, kind=ModelInstanceGroup.KIND_AUTO, count=1)
    for index, group in enumerate(out.instance_group):
        _normalize_group(group, f"{out.name}_{index}", gpu_count)
    if out.HasField("dynamic_batching") and not out.dynamic_batching.preferred_batch_size:
        sizes = [s for s in DEFAULT_PREFERRED_BATCH_SIZES if out.max_batch_size >= s]
        out.dynamic_batching.preferred_batch_size.extend(sizes)
    if out.HasField("sequence_batching"):
        seq = out.sequence_batching
        if seq.max_sequence_idle_microseconds == 0:
            seq.max_sequence_idle_microseconds = DEFAULT_MAX_SEQUENCE_IDLE_US
        if seq.WhichOneof("strategy_choice") is None:
            seq.direct.SetInParent()
        if seq.WhichOneof("strategy_choice") == "oldest" and \
                seq.oldest.max_candidate_sequences == 0:
            seq.oldest.max_candidate_sequences = max(out.max_batch_size, 1)
    return out


def _element_count(shape: Sequence[int]) -> int | None:
    """Number of elements of a shape, or None when a dim is variable (-1)."""
    return None if any(d < 0 for d in shape) else math.prod(shape)


def _tensor_errors(kind: str, tensor: ModelInput | ModelOutput) -> Iterator[str]:
    """Problems with one input or output description."""
    if tensor.data_type == DataType.TYPE_INVALID or tensor.data_type not in DataType.values():
        yield f"{kind} '{tensor.name}' must have a data_type other than TYPE_INVALID"
    if not tensor.dims:
        yield f"{kind} '{tensor.name}' must have dims"
    bad_dims = [d for d in tensor.dims if d == 0 or d < -1]
    if bad_dims:
        yield f"{kind} '{tensor.name}' has dims {list(tensor.dims)}; each dim must be > 0 or -1"
    elif tensor.HasField("reshape"):
        dims_count = _element_count(tensor.dims)
        reshape_count = _element_count(tensor.reshape.shape)
        if None not in (dims_count, reshape_count) and dims_count != reshape_count:
            yield (
                f"{kind} '{tensor.name}' has reshape {list(tensor.reshape.shape)} with a different"
                f" element count than dims {list(tensor.dims)}"
            )


def _tensor_list_errors(kind: str, tensors: Sequence[ModelInput | ModelOutput]) -> Iterator[str]:
    """Problems with the inputs or the outputs of a model."""
    if not tensors:
        yield f"must have at least one {kind}"
    seen: set[str] = set()
    for tensor in tensors:
        if not tensor.name:
            yield f"every {kind} must have a name"
        elif tensor.name in seen:
            yield f"duplicate {kind} name '{tensor.name}'"
        seen.add(tensor.name)
        yield from _tensor_errors(kind, tensor)


def _label_errors(config: ModelConfig, model_dir: Path) -> Iterator[str]:
    """Label files that are missing or lie outside the model folder."""
    root = Path(os.path.abspath(model_dir))
    for output in config.output:
        if not output.label_filename:
            continue
        path = Path(os.path.abspath(root / output.label_filename))
        if root not in path.parents or not path.is_file():
            yield (
                f"output '{output.name}' label_filename '{output.label_filename}'"
                f" is not a file in {model_dir}"
            )


def _group_errors(group: ModelInstanceGroup, gpu_count: int) -> Iterator[str]:
    """Problems with one (normalised) instance group."""
    label = f"instance group '{group.name}'"
    if group.kind in _GPU_FREE_KINDS and group.gpus:
        yield f"{label} has kind {_GPU_FREE_KINDS[group.kind]} but lists gpus {list(group.gpus)}"
    if group.kind == ModelInstanceGroup.KIND_GPU and gpu_count == 0:
        yield f"{label} has kind KIND_GPU but no GPU is available"
    missing = [gpu for gpu in group.gpus if not 0 <= gpu < gpu_count]
    if missing and gpu_count > 0:
        yield f"{label} lists gpus {missing} that do not exist (GPU count is {gpu_count})"


def _batching_errors(config: ModelConfig) -> Iterator[str]:
    """Problems with max_batch_size and the dynamic batcher."""
    if config.max_batch_size < 0:
        yield f"max_batch_size must be >= 0, not {config.max_batch_size}"
    if not config.HasField("dynamic_batching"):
        return
    if config.max_batch_size == 0:
        yield "dynamic_batching requires max_batch_size > 0"
        return
    for size in config.dynamic_batching.preferred_batch_size:
        if not 0 < size <= config.max_batch_size:
            yield (
                f"preferred_batch_size {size} must be > 0 and <= max_batch_size"
                f" {config.max_batch_size}"
            )


def _cache_errors(config: ModelConfig) -> Iterator[str]:
    """Problems with response_cache: a sequence model's answers depend on
    the requests before them, so they are never cached (as in Triton)."""
    if config.response_cache.enable and config.HasField("sequence_batching"):
        yield ("response_cache cannot be enabled for a model with sequence_batching: its "
               "responses depend on the sequence's earlier requests; disable the response "
               "cache for this model")


def _control_errors(control_input, kind_names: set[str]) -> Iterator[str]:
    """Problems with one sequence_batching control_input."""
    name = control_input.name
    if len(control_input.control) != 1:
        yield f"sequence batching control input '{name}' must carry exactly one control"
        return
    control = control_input.control[0]
    kind = control.Kind.Name(control.kind)
    if kind in kind_names:
        yield f"sequence batching specifies multiple {kind} tensors"
    kind_names.add(kind)
    pairs = [field for field in ("int32_false_true", "fp32_false_true", "bool_false_true")
             if len(getattr(control, field))]
    if control.kind == control.CONTROL_SEQUENCE_CORRID:
        if pairs:
            yield f"sequence batching control '{name}' ({kind}) takes a data_type, not {pairs[0]}"
        if control.data_type not in CORRID_TYPES:
            yield (f"sequence batching control '{name}' ({kind}) must have data_type "
                   f"TYPE_UINT64, TYPE_INT64, TYPE_UINT32, TYPE_INT32 or TYPE_STRING")
        return
    if len(pairs) != 1:
        yield (f"sequence batching control '{name}' ({kind}) must specify exactly one of "
               f"int32_false_true, fp32_false_true and bool_false_true")
    elif len(getattr(control, pairs[0])) != 2:
        yield (f"sequence batching control '{name}' ({kind}): {pairs[0]} must have two "
               f"entries, false then true")


def _state_errors(state, tensor_names: set[str], model_dir: Path) -> Iterator[str]:
    """Problems with one sequence_batching state."""
    for field in ("input_name", "output_name"):
        name = getattr(state, field)
        if not name:
            yield f"sequence batching state must have an {field}"
        elif name in tensor_names:
            yield (f"sequence batching state tensor '{name}' must not be listed among the "
                   f"model's inputs, outputs or control inputs")
        tensor_names.add(name)
    if state.data_type in (DataType.TYPE_INVALID, DataType.TYPE_STRING) or \
            state.data_type not in DataType.values():
        yield f"sequence batching state '{state.input_name}' needs a fixed-size data_type"
    if not state.dims or any(d < 1 for d in state.dims):
        yield (f"sequence batching state '{state.input_name}' needs fixed dims (each > 0), "
               f"got {list(state.dims)}")
    if state.use_growable_memory:
        yield f"sequence batching state '{state.input_name}': use_growable_memory needs CUDA"
    if len(state.initial_state) > 1:
        yield f"sequence batching state '{state.input_name}' may have one initial_state"
    for initial in state.initial_state:
        if initial.data_type != state.data_type or list(initial.dims) != list(state.dims):
            yield (f"initial_state of state '{state.input_name}' must have the state's "
                   f"data_type and dims")
        if initial.WhichOneof("state_data") is None:
            yield f"initial_state of state '{state.input_name}' needs zero_data or data_file"
        if initial.WhichOneof("state_data") == "data_file":
            path = Path(model_dir) / INITIAL_STATE_FOLDER / initial.data_file
            count = _element_count(state.dims) or 0
            expected = count * element_size(state.data_type)
            if not path.is_file():
                yield f"initial_state data_file {path} does not exist"
            elif path.stat().st_size != expected:
                yield (f"initial_state data_file {path} has {path.stat().st_size} bytes, "
                       f"the state needs {expected}")


def _sequence_errors(config: ModelConfig, model_dir: Path) -> Iterator[str]:
    """Problems with sequence_batching."""
    if not config.HasField("sequence_batching"):
        return
    seq = config.sequence_batching
    if seq.iterative_sequence:
        yield "sequence batching: iterative_sequence is not supported"
    tensor_names = {t.name for t in config.input} | {t.name for t in config.output}
    kinds: set[str] = set()
    for control_input in seq.control_input:
        if not control_input.name:
            yield "sequence batching control input must have a name"
        elif control_input.name in tensor_names:
            yield (f"sequence batching control input '{control_input.name}' must not be "
                   f"listed among the model's inputs: the server provides it")
        tensor_names.add(control_input.name)
        yield from _control_errors(control_input, kinds)
    for state in seq.state:
        yield from _state_errors(state, tensor_names, model_dir)
    if seq.WhichOneof("strategy_choice") == "oldest":
        oldest = seq.oldest
        if oldest.max_candidate_sequences < 0:
            yield "sequence batching oldest: max_candidate_sequences must be >= 0"
        for size in oldest.preferred_batch_size:
            if not 0 < size <= max(config.max_batch_size, 1):
                yield (f"sequence batching oldest: preferred_batch_size {size} must be > 0 "
                       f"and <= max_batch_size {config.max_batch_size}")


def _policy_errors(config: ModelConfig) -> Iterator[str]:
    """Problems with the version policy."""
    policy = config.version_policy
    if policy.WhichOneof("policy_choice") == "latest" and policy.latest.num_versions < 1:
        yield "version_policy latest must have num_versions >= 1"


def _config_errors(config: ModelConfig, model_dir: Path, gpu_count: int) -> Iterator[str]:
    """Every problem with a normalised config, name and platform first."""
    folder = _folder_name(model_dir)
    if config.name != folder:
        yield f"config name '{config.name}' must equal the model folder name '{folder}'"
        return
    if config.platform not in PLATFORMS:
        yield f"unknown platform '{config.platform}'; expected one of {', '.join(PLATFORMS)}"
    yield from _batching_errors(config)
    yield from _cache_errors(config)
    yield from _sequence_errors(config, model_dir)
    yield from _tensor_list_errors("input", config.input)
    yield from _tensor_list_errors("output", config.output)
    yield from _label_errors(config, model_dir)
    for group in config.instance_group:
        yield from _group_errors(group, gpu_count)
    yield from _policy_errors(config)


def validate(config: ModelConfig, model_dir: Path, gpu_count: int = 0) -> None:
    """Raise INVALID_ARG for the first problem with a normalised config."""
    for problem in _config_errors(config, Path(model_dir), gpu_count):
        raise _error(model_dir, problem)


def load_config(model_dir: Path, gpu_count: int = 0) -> ModelConfig:
    """Read, normalise and validate a model's config; return the normalised config."""
    config = normalize(read_config(model_dir), gpu_count)
    validate(config, model_dir, gpu_count)
    return config


def _is_version_name(name: str) -> bool:
    """True for "0" and ASCII decimal names without a leading zero."""
    return name.isascii() and name.isdigit() and (name == "0" or not name.startswith("0"))


def versions_on_disk(model_dir: Path) -> list[int]:
    """Version numbers of the numeric sub-folders of model_dir, ascending."""
    return sorted(
        int(entry.name)
        for entry in Path(model_dir).iterdir()
        if entry.is_dir() and _is_version_name(entry.name)
    )


def select_versions(config: ModelConfig, available: list[int]) -> list[int]:
    """The available versions the config's version policy serves, ascending."""
    present = sorted(set(available))
    policy = config.version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return present
    if choice == "specific":
        return sorted(set(policy.specific.versions) & set(present))
    count = policy.latest.num_versions if choice == "latest" else 1
    return present[-count:] if count > 0 else []


def model_path(model_dir: Path, version: int, config: ModelConfig) -> Path:
    """Path of a version's model file: ``<model_dir>/<version>/<default_model_filename>``."""
    return Path(model_dir) / str(version) / config.default_model_filename


def load_labels(model_dir: Path, config: ModelConfig) -> dict[str, list[str]]:
    """Output name -> lines of its label file, for each output with a label_filename."""
    labels: dict[str, list[str]] = {}
    for output in config.output:
        if not output.label_filename:
            continue
        path = Path(model_dir) / output.label_filename
        try:
            labels[output.name] = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise _error(model_dir, f"cannot read label file {path}: {exc}") from exc
    return labels
