"""Config layer: read, normalise, validate, version policy, labels."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format

from pyserver.errors import Code, ServerError
from pyserver.examples.store import build_example_store
from pyserver.protos.model_config_pb2 import ModelConfig, ModelInstanceGroup
from pyserver.repository.config import (
    CONFIG_FILENAME,
    DEFAULT_MODEL_FILENAMES,
    load_config,
    load_labels,
    model_path,
    normalize,
    read_config,
    select_versions,
    validate,
    versions_on_disk,
)


def tensor(name: str, dims: str = "4", dtype: str = "TYPE_FP32", extra: str = "") -> str:
    """One input or output entry in text format."""
    return f'{{ name: "{name}" data_type: {dtype} dims: [ {dims} ] {extra} }}'


def tensors(kind: str, *entries: str) -> str:
    """An ``input [...]`` or ``output [...]`` list."""
    return f"{kind} [ {', '.join(entries)} ]"


INPUT = tensors("input", tensor("IN"))
OUTPUT = tensors("output", tensor("OUT"))
LABELLED_OUTPUT = tensors("output", tensor("OUT", extra='label_filename: "l.txt"'))


def config_text(
    name: str = "m",
    platform: str = "onnxruntime_onnx",
    max_batch_size: int = 8,
    inputs: str = INPUT,
    outputs: str = OUTPUT,
    extra: str = "",
) -> str:
    """A config.pbtxt; pass an empty string to leave a part out."""
    lines = [f'name: "{name}"']
    if platform:
        lines.append(f'platform: "{platform}"')
    lines += [f"max_batch_size: {max_batch_size}", inputs, outputs, extra]
    return "\n".join(line for line in lines if line) + "\n"


def write_model(
    root: Path, text: str, name: str = "m", files: dict[str, str] | None = None
) -> Path:
    """Write <root>/<name>/config.pbtxt and extra files; return the model folder."""
    model_dir = root / name
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / CONFIG_FILENAME).write_text(text)
    for filename, content in (files or {}).items():
        (model_dir / filename).write_text(content)
    return model_dir


def load(tmp_path: Path, gpu_count: int = 0, **parts: object) -> ModelConfig:
    """Write a config built from parts and load it."""
    return load_config(write_model(tmp_path, config_text(**parts)), gpu_count)


def load_error(tmp_path: Path, gpu_count: int = 0, **parts: object) -> ServerError:
    """Write a config built from parts, load it and return the error it raises."""
    with pytest.raises(ServerError) as info:
        load(tmp_path, gpu_count, **parts)
    assert info.value.code == Code.INVALID_ARG
    assert info.value.message.startswith("model 'm': ")
    return info.value


def policy(text: str) -> ModelConfig:
    """A normalised config with the given version_policy body."""
    config = text_format.Parse(f"name: \"m\" version_policy {{ {text} }}", ModelConfig())
    return normalize(config)


# read_config


def test_read_config_parses_text_format(tmp_path: Path) -> None:
    config = read_config(write_model(tmp_path, config_text(max_batch_size=3)))
    assert (config.name, config.platform, config.max_batch_size) == ("m", "onnxruntime_onnx", 3)
    assert [t.name for t in config.input] == ["IN"]


def test_read_config_does_not_fill_defaults(tmp_path: Path) -> None:
    config = read_config(write_model(tmp_path, config_text()))
    assert not config.HasField("version_policy")
    assert not config.instance_group


def test_missing_config_file_is_invalid_arg(tmp_path: Path) -> None:
    (tmp_path / "nocfg").mkdir()
    with pytest.raises(ServerError) as info:
        read_config(tmp_path / "nocfg")
    assert info.value.code == Code.INVALID_ARG
    assert info.value.message.startswith("model 'nocfg': no config.pbtxt")


def test_parse_error_names_file_and_position(tmp_path: Path) -> None:
    model_dir = write_model(tmp_path, 'name: "m"\nmax_batch_size: many\n')
    with pytest.raises(ServerError) as info:
        read_config(model_dir)
    assert info.value.code == Code.INVALID_ARG
    assert str(model_dir / CONFIG_FILENAME) in info.value.message
    assert "2:17" in info.value.message


def test_unknown_field_is_a_parse_error(tmp_path: Path) -> None:
    model_dir = write_model(tmp_path, 'name: "m"\nno_such_field: 1\n')
    with pytest.raises(ServerError) as info:
        read_config(model_dir)
    assert info.value.code == Code.INVALID_ARG
    assert "no_such_field" in info.value.message


# normalize


def test_normalize_returns_a_copy() -> None:
    original = ModelConfig(name="m", platform="onnxruntime_onnx")
    normalize(original)
    assert original == ModelConfig(name="m", platform="onnxruntime_onnx")


def test_default_version_policy_is_latest_one() -> None:
    config = normalize(ModelConfig(name="m", platform="onnxruntime_onnx"))
    assert config.version_policy.WhichOneof("policy_choice") == "latest"
    assert config.version_policy.latest.num_versions == 1


def test_given_version_policy_is_kept() -> None:
    assert policy("all { }").version_policy.WhichOneof("policy_choice") == "all"


@pytest.mark.parametrize(("platform", "filename"), sorted(DEFAULT_MODEL_FILENAMES.items()))
def test_default_model_filename_follows_platform(platform: str, filename: str) -> None:
    assert normalize(ModelConfig(name="m", platform=platform)).default_model_filename == filename


def test_ensemble_has_no_default_model_filename() -> None:
    assert normalize(ModelConfig(name="m", platform="ensemble")).default_model_filename == ""


def test_given_default_model_filename_is_kept() -> None:
    config = ModelConfig(name="m", platform="onnxruntime_onnx", default_model_filename="x.onnx")
    assert normalize(config).default_model_filename == "x.onnx"


@pytest.mark.skipif(
    "backend" not in ModelConfig.DESCRIPTOR.fields_by_name,
    reason="model_config.proto has no backend field",
)
def test_python_backend_without_platform_gets_python_platform() -> None:
    config = normalize(ModelConfig(name="m", backend="python"))
    assert (config.platform, config.default_model_filename) == ("python", "model.py")


def test_missing_instance_group_becomes_one_group_named_after_model() -> None:
    groups = normalize(ModelConfig(name="m", platform="onnxruntime_onnx")).instance_group
    assert [(g.name, g.count, g.kind) for g in groups] == [("m", 1, ModelInstanceGroup.KIND_CPU)]


def test_ensemble_gets_no_default_instance_group() -> None:
    assert not normalize(ModelConfig(name="m", platform="ensemble")).instance_group


def test_unnamed_groups_are_named_model_and_index() -> None:
    config = ModelConfig(name="m")
    config.instance_group.add(kind=ModelInstanceGroup.KIND_CPU)
    config.instance_group.add(name="mine", kind=ModelInstanceGroup.KIND_CPU)
    config.instance_group.add(kind=ModelInstanceGroup.KIND_CPU)
    assert [g.name for g in normalize(config).instance_group] == ["m_0", "mine", "m_2"]


@pytest.mark.parametrize("count", [0, -3])
def test_group_count_below_one_becomes_one(count: int) -> None:
    config = ModelConfig(name="m")
    config.instance_group.add(count=count, kind=ModelInstanceGroup.KIND_CPU)
    assert normalize(config).instance_group[0].count == 1


def test_group_count_above_one_is_kept() -> None:
    config = ModelConfig(name="m")
    config.instance_group.add(count=3, kind=ModelInstanceGroup.KIND_CPU)
    assert normalize(config).instance_group[0].count == 3


def test_kind_auto_without_gpus_becomes_cpu() -> None:
    config = ModelConfig(name="m")
    config.instance_group.add(kind=ModelInstanceGroup.KIND_AUTO)
    group = normalize(config, gpu_count=0).instance_group[0]
    assert (group.kind, list(group.gpus)) == (ModelInstanceGroup.KIND_CPU, [])


def test_kind_auto_with_gpus_becomes_gpu_on_every_gpu() -> None:
    config = ModelConfig(name="m")
    config.instance_group.add(kind=ModelInstanceGroup.KIND_AUTO)
    group = normalize(config, gpu_count=3).instance_group[0]
    assert (group.kind, list(group.gpus)) == (ModelInstanceGroup.KIND_GPU, [0, 1, 2])


def test_kind_auto_keeps_listed_gpus() -> None:
    config = ModelConfig(name="m")
    config.instance_group.add(kind=ModelInstanceGroup.KIND_AUTO, gpus=[1])
    group = normalize(config, gpu_count=2).instance_group[0]
    assert (group.kind, list(group.gpus)) == (ModelInstanceGroup.KIND_GPU, [1])


def test_kind_auto_listing_a_missing_gpu_becomes_cpu() -> None:
    config = ModelConfig(name="m")
    config.instance_group.add(kind=ModelInstanceGroup.KIND_AUTO, gpus=[0, 5])
    assert normalize(config, gpu_count=2).instance_group[0].kind == ModelInstanceGroup.KIND_CPU


def test_kind_gpu_without_gpus_gets_every_gpu() -> None:
    config = ModelConfig(name="m")
    config.instance_group.add(kind=ModelInstanceGroup.KIND_GPU)
    assert list(normalize(config, gpu_count=2).instance_group[0].gpus) == [0, 1]


@pytest.mark.parametrize(
    ("max_batch_size", "preferred"), [(2, []), (4, [4]), (7, [4]), (8, [4, 8]), (64, [4, 8])]
)
def test_empty_preferred_batch_sizes_get_4_and_8_up_to_max(
    max_batch_size: int, preferred: list[int]
) -> None:
    config = ModelConfig(name="m", max_batch_size=max_batch_size)
    config.dynamic_batching.SetInParent()
    assert list(normalize(config).dynamic_batching.preferred_batch_size) == preferred


def test_given_preferred_batch_sizes_are_kept() -> None:
    config = ModelConfig(name="m", max_batch_size=16)
    config.dynamic_batching.preferred_batch_size.append(6)
    assert list(normalize(config).dynamic_batching.preferred_batch_size) == [6]


def test_no_dynamic_batching_is_added() -> None:
    assert not normalize(ModelConfig(name="m", max_batch_size=8)).HasField("dynamic_batching")


def test_label_filename_is_untouched(tmp_path: Path) -> None:
    outputs = LABELLED_OUTPUT
    model_dir = write_model(tmp_path, config_text(outputs=outputs), files={"l.txt": "a\n"})
    assert load_config(model_dir).output[0].label_filename == "l.txt"


def test_load_config_returns_normalised_config(tmp_path: Path) -> None:
    config = load(tmp_path)
    assert config.default_model_filename == "model.onnx"
    assert config.version_policy.latest.num_versions == 1
    assert config.instance_group[0].kind == ModelInstanceGroup.KIND_CPU


# validate


def test_valid_config_loads(tmp_path: Path) -> None:
    assert load(tmp_path).name == "m"


def test_validate_does_not_need_model_files(tmp_path: Path) -> None:
    model_dir = write_model(tmp_path, config_text())
    validate(normalize(read_config(model_dir)), model_dir)
    assert not (model_dir / "1").exists()


def test_name_must_equal_folder_name(tmp_path: Path) -> None:
    model_dir = write_model(tmp_path, config_text(name="other"), name="m")
    with pytest.raises(ServerError) as info:
        load_config(model_dir)
    assert info.value.code == Code.INVALID_ARG
    assert info.value.message.startswith("model 'm': ")
    assert "'other' must equal the model folder name 'm'" in info.value.message


def test_unknown_platform_lists_known_platforms(tmp_path: Path) -> None:
    error = load_error(tmp_path, platform="tensorflow_hub")
    assert "unknown platform 'tensorflow_hub'" in error.message
    assert "onnxruntime_onnx" in error.message and "ensemble" in error.message


def test_missing_platform_is_unknown(tmp_path: Path) -> None:
    assert "unknown platform ''" in load_error(tmp_path, platform="").message


def test_negative_max_batch_size_is_rejected(tmp_path: Path) -> None:
    assert "max_batch_size must be >= 0" in load_error(tmp_path, max_batch_size=-1).message


def test_zero_max_batch_size_is_allowed(tmp_path: Path) -> None:
    assert load(tmp_path, max_batch_size=0).max_batch_size == 0


def test_config_without_inputs_is_rejected(tmp_path: Path) -> None:
    assert "at least one input" in load_error(tmp_path, inputs="").message


def test_config_without_outputs_is_rejected(tmp_path: Path) -> None:
    assert "at least one output" in load_error(tmp_path, outputs="").message


def test_duplicate_input_names_are_rejected(tmp_path: Path) -> None:
    inputs = tensors("input", tensor("IN"), tensor("IN", "2", "TYPE_INT32"))
    assert "duplicate input name 'IN'" in load_error(tmp_path, inputs=inputs).message


def test_duplicate_output_names_are_rejected(tmp_path: Path) -> None:
    outputs = tensors("output", tensor("OUT"), tensor("OUT"))
    assert "duplicate output name 'OUT'" in load_error(tmp_path, outputs=outputs).message


def test_unnamed_tensor_is_rejected(tmp_path: Path) -> None:
    inputs = "input [ { data_type: TYPE_FP32 dims: [ 4 ] } ]"
    assert "every input must have a name" in load_error(tmp_path, inputs=inputs).message


def test_tensor_without_data_type_is_rejected(tmp_path: Path) -> None:
    inputs = 'input [ { name: "IN" dims: [ 4 ] } ]'
    error = load_error(tmp_path, inputs=inputs)
    assert "input 'IN' must have a data_type other than TYPE_INVALID" in error.message


def test_output_with_invalid_data_type_is_rejected(tmp_path: Path) -> None:
    outputs = tensors("output", tensor("OUT", dtype="TYPE_INVALID"))
    assert "output 'OUT' must have a data_type" in load_error(tmp_path, outputs=outputs).message


def test_tensor_without_dims_is_rejected(tmp_path: Path) -> None:
    inputs = 'input [ { name: "IN" data_type: TYPE_FP32 } ]'
    assert "input 'IN' must have dims" in load_error(tmp_path, inputs=inputs).message


@pytest.mark.parametrize("dim", [0, -2])
def test_dims_must_be_positive_or_minus_one(tmp_path: Path, dim: int) -> None:
    outputs = tensors("output", tensor("OUT", f"4, {dim}"))
    error = load_error(tmp_path, outputs=outputs)
    assert "output 'OUT' has dims" in error.message and "> 0 or -1" in error.message


def test_variable_dim_is_allowed(tmp_path: Path) -> None:
    inputs = tensors("input", tensor("IN", "-1, 3"))
    assert list(load(tmp_path, inputs=inputs).input[0].dims) == [-1, 3]


def test_reshape_with_other_element_count_is_rejected(tmp_path: Path) -> None:
    inputs = tensors("input", tensor("IN", "4", extra="reshape { shape: [ 2, 3 ] }"))
    error = load_error(tmp_path, inputs=inputs)
    assert "input 'IN' has reshape [2, 3] with a different element count" in error.message


def test_output_reshape_with_other_element_count_is_rejected(tmp_path: Path) -> None:
    outputs = tensors("output", tensor("OUT", "4", extra="reshape { shape: [ 5 ] }"))
    assert "output 'OUT' has reshape [5]" in load_error(tmp_path, outputs=outputs).message


def test_reshape_with_same_element_count_is_allowed(tmp_path: Path) -> None:
    inputs = tensors("input", tensor("IN", "6", extra="reshape { shape: [ 2, 3 ] }"))
    assert list(load(tmp_path, inputs=inputs).input[0].reshape.shape) == [2, 3]


def test_reshape_to_scalar_of_one_element_is_allowed(tmp_path: Path) -> None:
    inputs = tensors("input", tensor("IN", "1", extra="reshape { shape: [ ] }"))
    assert load(tmp_path, inputs=inputs).input[0].HasField("reshape")


def test_reshape_of_variable_dims_is_not_counted(tmp_path: Path) -> None:
    inputs = tensors("input", tensor("IN", "-1", extra="reshape { shape: [ 2, 3 ] }"))
    assert list(load(tmp_path, inputs=inputs).input[0].dims) == [-1]


def test_missing_label_file_is_rejected(tmp_path: Path) -> None:
    outputs = LABELLED_OUTPUT
    error = load_error(tmp_path, outputs=outputs)
    assert "output 'OUT' label_filename 'l.txt' is not a file" in error.message


def test_label_file_outside_model_folder_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "l.txt").write_text("a\n")
    outputs = tensors("output", tensor("OUT", extra='label_filename: "../l.txt"'))
    error = load_error(tmp_path, outputs=outputs)
    assert "label_filename '../l.txt' is not a file" in error.message


def test_cpu_group_listing_gpus_is_rejected(tmp_path: Path) -> None:
    extra = "instance_group [ { kind: KIND_CPU gpus: [ 0 ] } ]"
    error = load_error(tmp_path, gpu_count=1, extra=extra)
    assert "instance group 'm_0' has kind KIND_CPU but lists gpus [0]" in error.message


def test_model_group_listing_gpus_is_rejected(tmp_path: Path) -> None:
    extra = "instance_group [ { kind: KIND_MODEL gpus: [ 0 ] } ]"
    error = load_error(tmp_path, gpu_count=1, extra=extra)
    assert "has kind KIND_MODEL but lists gpus" in error.message


def test_auto_group_listing_a_missing_gpu_is_rejected(tmp_path: Path) -> None:
    extra = "instance_group [ { gpus: [ 3 ] } ]"
    error = load_error(tmp_path, gpu_count=2, extra=extra)
    assert "has kind KIND_CPU but lists gpus [3]" in error.message


def test_gpu_group_without_gpu_is_rejected(tmp_path: Path) -> None:
    extra = "instance_group [ { kind: KIND_GPU } ]"
    assert "no GPU is available" in load_error(tmp_path, gpu_count=0, extra=extra).message


def test_gpu_group_listing_a_missing_gpu_is_rejected(tmp_path: Path) -> None:
    extra = "instance_group [ { kind: KIND_GPU gpus: [ 0, 2 ] } ]"
    error = load_error(tmp_path, gpu_count=2, extra=extra)
    assert "lists gpus [2] that do not exist (GPU count is 2)" in error.message


def test_gpu_group_on_existing_gpus_is_allowed(tmp_path: Path) -> None:
    extra = "instance_group [ { kind: KIND_GPU gpus: [ 1 ] count: 2 } ]"
    group = load(tmp_path, gpu_count=2, extra=extra).instance_group[0]
    assert (list(group.gpus), group.count) == ([1], 2)


@pytest.mark.parametrize("size", [0, 9])
def test_preferred_batch_size_outside_one_to_max_is_rejected(tmp_path: Path, size: int) -> None:
    extra = f"dynamic_batching {{ preferred_batch_size: [ 4, {size} ] }}"
    error = load_error(tmp_path, max_batch_size=8, extra=extra)
    assert f"preferred_batch_size {size} must be > 0 and <= max_batch_size 8" in error.message


def test_dynamic_batching_without_batching_is_rejected(tmp_path: Path) -> None:
    error = load_error(tmp_path, max_batch_size=0, extra="dynamic_batching { }")
    assert "dynamic_batching requires max_batch_size > 0" in error.message


def test_latest_policy_with_zero_versions_is_rejected(tmp_path: Path) -> None:
    extra = "version_policy { latest { num_versions: 0 } }"
    assert "num_versions >= 1" in load_error(tmp_path, extra=extra).message


# versions on disk and version policy


def test_versions_on_disk_are_numeric_folders_ascending(tmp_path: Path) -> None:
    for name in ("10", "2", "0", "1"):
        (tmp_path / name).mkdir()
    assert versions_on_disk(tmp_path) == [0, 1, 2, 10]


def test_versions_with_leading_zero_are_ignored(tmp_path: Path) -> None:
    for name in ("01", "007", "3"):
        (tmp_path / name).mkdir()
    assert versions_on_disk(tmp_path) == [3]


def test_non_numeric_folders_are_ignored(tmp_path: Path) -> None:
    for name in ("warmup", "v1", "1a", "-1", "+2", "²", "4"):
        (tmp_path / name).mkdir()
    assert versions_on_disk(tmp_path) == [4]


def test_numeric_files_are_not_versions(tmp_path: Path) -> None:
    (tmp_path / "5").write_text("")
    (tmp_path / "6").mkdir()
    assert versions_on_disk(tmp_path) == [6]


def test_default_policy_serves_the_largest_version() -> None:
    assert select_versions(normalize(ModelConfig(name="m")), [3, 10, 2]) == [10]


def test_latest_policy_serves_the_n_largest_versions() -> None:
    assert select_versions(policy("latest { num_versions: 2 }"), [1, 7, 3, 5]) == [5, 7]


def test_latest_policy_with_fewer_versions_serves_all() -> None:
    assert select_versions(policy("latest { num_versions: 5 }"), [2, 1]) == [1, 2]


def test_all_policy_serves_every_version() -> None:
    assert select_versions(policy("all { }"), [3, 1, 2]) == [1, 2, 3]


def test_specific_policy_serves_listed_versions_that_exist() -> None:
    assert select_versions(policy("specific { versions: [ 4, 1, 9 ] }"), [1, 2, 3, 4]) == [1, 4]


def test_policy_over_no_versions_serves_none() -> None:
    assert select_versions(policy("all { }"), []) == []


def test_model_path_joins_version_and_default_file(tmp_path: Path) -> None:
    config = normalize(ModelConfig(name="m", platform="pytorch_libtorch"))
    assert model_path(tmp_path, 3, config) == tmp_path / "3" / "model.pt"


# labels


def test_labels_are_lines_without_newlines(tmp_path: Path) -> None:
    outputs = LABELLED_OUTPUT
    files = {"l.txt": "cat\ndog\r\nbird\n"}
    model_dir = write_model(tmp_path, config_text(outputs=outputs), files=files)
    assert load_labels(model_dir, load_config(model_dir)) == {"OUT": ["cat", "dog", "bird"]}


def test_outputs_without_label_file_have_no_labels(tmp_path: Path) -> None:
    outputs = tensors("output", tensor("A", extra='label_filename: "a.txt"'), tensor("B"))
    model_dir = write_model(tmp_path, config_text(outputs=outputs), files={"a.txt": "x\ny"})
    assert load_labels(model_dir, load_config(model_dir)) == {"A": ["x", "y"]}


# example store


@pytest.fixture(scope="module")
def example_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_example_store(tmp_path_factory.mktemp("store"))


EXAMPLE_MODELS = ["classifier", "image_classifier", "mlp", "simple", "simple_int32",
                  "simple_nobatch", "versioned"]


def test_example_store_has_the_expected_models(example_store: Path) -> None:
    assert sorted(p.name for p in example_store.iterdir()) == EXAMPLE_MODELS


@pytest.mark.parametrize("name", EXAMPLE_MODELS)
def test_example_model_loads_with_existing_model_files(example_store: Path, name: str) -> None:
    model_dir = example_store / name
    config = load_config(model_dir)
    versions = select_versions(config, versions_on_disk(model_dir))
    assert versions
    assert all(model_path(model_dir, v, config).is_file() for v in versions)


def test_example_versioned_model_serves_all_versions(example_store: Path) -> None:
    model_dir = example_store / "versioned"
    assert select_versions(load_config(model_dir), versions_on_disk(model_dir)) == [1, 2, 3]


def test_example_classifier_has_ten_labels(example_store: Path) -> None:
    model_dir = example_store / "classifier"
    assert len(load_labels(model_dir, load_config(model_dir))["OUTPUT"]) == 10


# -- sequence_batching --------------------------------------------------------------

def control(name: str, kind: str, values: str = "int32_false_true: [ 0, 1 ]") -> str:
    return f'{{ name: "{name}" control [ {{ kind: CONTROL_SEQUENCE_{kind} {values} }} ] }}'


def sequence(*controls: str, extra: str = "") -> str:
    return f"sequence_batching {{ control_input [ {', '.join(controls)} ] {extra} }}"


def test_sequence_batching_defaults_are_filled(tmp_path: Path) -> None:
    config = load(tmp_path, extra=sequence(control("START", "START")))
    assert config.sequence_batching.max_sequence_idle_microseconds == 1_000_000
    assert config.sequence_batching.WhichOneof("strategy_choice") == "direct"
    oldest = load(tmp_path / "o", extra=sequence(control("START", "START"), extra="oldest { }"))
    assert oldest.sequence_batching.oldest.max_candidate_sequences == 8  # max_batch_size


def test_sequence_batching_takes_every_control_kind_and_state(tmp_path: Path) -> None:
    state = ('state [ { input_name: "S_IN" output_name: "S_OUT" data_type: TYPE_FP32 '
             'dims: [ 2 ] initial_state { data_type: TYPE_FP32 dims: [ 2 ] zero_data: true '
             'name: "z" } } ] oldest { max_candidate_sequences: 4 preferred_batch_size: [ 2 ] }')
    config = load(tmp_path, extra=sequence(
        control("START", "START"), control("END", "END", "fp32_false_true: [ 0, 1 ]"),
        control("READY", "READY", "bool_false_true: [ false, true ]"),
        control("CORRID", "CORRID", "data_type: TYPE_STRING"), extra=state))
    seq = config.sequence_batching
    assert list(seq.control_input[2].control[0].bool_false_true) == [False, True]
    assert seq.state[0].initial_state[0].WhichOneof("state_data") == "zero_data"


def test_control_input_listed_among_inputs_is_rejected(tmp_path: Path) -> None:
    message = load_error(tmp_path, extra=sequence(control("IN", "START"))).message
    assert "control input 'IN' must not be listed among the model's inputs" in message


@pytest.mark.parametrize("values, fragment", [
    ("", "exactly one of int32_false_true, fp32_false_true and bool_false_true"),
    ("int32_false_true: [ 1 ]", "must have two entries"),
    ("int32_false_true: [ 0, 1 ] fp32_false_true: [ 0, 1 ]", "exactly one of"),
])
def test_boolean_control_needs_one_false_true_pair(tmp_path: Path, values: str,
                                                   fragment: str) -> None:
    assert fragment in load_error(tmp_path, extra=sequence(control("S", "START", values))).message


def test_corrid_control_needs_an_id_type(tmp_path: Path) -> None:
    message = load_error(tmp_path, extra=sequence(
        control("C", "CORRID", "data_type: TYPE_FP32"))).message
    assert "must have data_type TYPE_UINT64, TYPE_INT64, TYPE_UINT32, TYPE_INT32" in message


def test_duplicate_control_kind_is_rejected(tmp_path: Path) -> None:
    message = load_error(tmp_path, extra=sequence(control("A", "START"),
                                                  control("B", "START"))).message
    assert "multiple CONTROL_SEQUENCE_START tensors" in message


def test_state_needs_fixed_dims_and_a_matching_data_file(tmp_path: Path) -> None:
    variable = ('state [ { input_name: "S_IN" output_name: "S_OUT" data_type: TYPE_FP32 '
                'dims: [ -1 ] } ]')
    assert "needs fixed dims" in load_error(
        tmp_path, extra=sequence(control("S", "START"), extra=variable)).message
    from_file = ('state [ { input_name: "S_IN" output_name: "S_OUT" data_type: TYPE_FP32 '
                 'dims: [ 2 ] initial_state { data_type: TYPE_FP32 dims: [ 2 ] '
                 'data_file: "init.bin" name: "f" } } ]')
    text = config_text(extra=sequence(control("S", "START"), extra=from_file))
    model_dir = write_model(tmp_path / "file", text)
    (model_dir / "initial_state").mkdir()
    (model_dir / "initial_state" / "init.bin").write_bytes(b"\0" * 4)
    with pytest.raises(ServerError) as info:
        load_config(model_dir)
    assert "has 4 bytes, the state needs 8" in info.value.message
    (model_dir / "initial_state" / "init.bin").write_bytes(b"\0" * 8)
    assert load_config(model_dir).sequence_batching.state[0].input_name == "S_IN"
