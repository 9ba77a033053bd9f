"""Write an example model store of real ONNX models."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from . import image_models
from . import onnx_models as m

log = logging.getLogger(__name__)

LABELS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def tensor(name: str, dtype: str, dims: Sequence[int], **extra: str) -> str:
    """Return one input/output entry in protobuf text format."""
    shape = ", ".join(map(str, dims))
    fields = [f'name: "{name}"', f"data_type: TYPE_{dtype}", f"dims: [ {shape} ]"]
    fields += [f'{key}: "{value}"' for key, value in extra.items()]
    return "{ " + " ".join(fields) + " }"


def config(
    name: str,
    max_batch_size: int,
    inputs: Sequence[str],
    outputs: Sequence[str],
    *extra: str,
) -> str:
    """Return a config.pbtxt for an onnxruntime_onnx model."""
    lines = [
        f'name: "{name}"',
        'platform: "onnxruntime_onnx"',
        f"max_batch_size: {max_batch_size}",
        f"input [ {', '.join(inputs)} ]",
        f"output [ {', '.join(outputs)} ]",
        *extra,
    ]
    return "\n".join(lines) + "\n"


def write_model(
    root: Path,
    name: str,
    cfg: str,
    versions: dict[int, bytes],
    files: dict[str, str] | None = None,
) -> Path:
    """Replace <root>/<name> with the config, extra files and versioned model.onnx files."""
    model_dir = root / name
    shutil.rmtree(model_dir, ignore_errors=True)
    model_dir.mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(cfg)
    for filename, text in (files or {}).items():
        (model_dir / filename).write_text(text)
    for version, data in versions.items():
        (model_dir / str(version)).mkdir()
        (model_dir / str(version) / "model.onnx").write_bytes(data)
    return model_dir


def _add_sub_config(name: str, dtype: str, max_batch_size: int) -> str:
    """Return the config of an add_sub model with dims [16]."""
    ins = [tensor(f"INPUT{i}", dtype, [16]) for i in range(2)]
    outs = [tensor(f"OUTPUT{i}", dtype, [16]) for i in range(2)]
    return config(name, max_batch_size, ins, outs)


def build_example_store(root: str | os.PathLike) -> Path:
    """Write the example models under root and return its absolute path."""
    root = Path(root).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    for name, dtype, max_batch_size in (
        ("simple", "FP32", 8),
        ("simple_int32", "INT32", 8),
        ("simple_nobatch", "FP32", 0),
    ):
        model = m.add_sub(dtype, 16, batched=max_batch_size > 0)
        write_model(root, name, _add_sub_config(name, dtype, max_batch_size), {1: model})
    write_model(
        root,
        "classifier",
        config(
            "classifier",
            8,
            [tensor("INPUT", "FP32", [8])],
            [tensor("OUTPUT", "FP32", [10], label_filename="labels.txt")],
        ),
        {1: m.classifier(8, 10)},
        {"labels.txt": "\n".join(LABELS) + "\n"},
    )
    write_model(
        root,
        "versioned",
        config(
            "versioned",
            8,
            [tensor("INPUT0", "FP32", [16])],
            [tensor("OUTPUT0", "FP32", [16])],
            "version_policy: { all { } }",
        ),
        {v: m.add_constant(float(v)) for v in (1, 2, 3)},
    )
    write_model(
        root,
        "mlp",
        config(
            "mlp",
            32,
            [tensor("INPUT0", "FP32", [512])],
            [tensor("OUTPUT0", "FP32", [1000])],
            "instance_group [ { count: 2 kind: KIND_CPU } ]",
        ),
        {1: m.mlp()},
    )
    _write_image_classifier(root)
    return root


def _write_image_classifier(root: Path) -> None:
    """Write image_classifier (SqueezeNet, see image_models); skipped with a
    log line when the onnx package or its light model is missing."""
    try:
        model = image_models.squeezenet()
    except image_models.ModelUnavailable as exc:
        log.warning("example store: skipping %s: %s", image_models.NAME, exc)
        return
    write_model(root, image_models.NAME, image_models.config(), {1: model},
                {image_models.LABEL_FILE: "\n".join(image_models.labels()) + "\n"})


def main() -> None:
    """Command line entry point: build the example store at PATH."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path", help="directory to write the model store into")
    print(build_example_store(parser.parse_args().path))


if __name__ == "__main__":
    main()
