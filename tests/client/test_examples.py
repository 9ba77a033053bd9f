"""examples/ run as subprocesses against a real server over the example
store: image_client.py's top classes equal onnxruntime's in-process answer
for the same preprocessed PNGs; simple_client.py and grpc_image_client.py
succeed; bad input gives one line on stderr and a non-zero exit."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import HOST, free_port

Image = pytest.importorskip("PIL.Image", reason="Pillow is needed by the image examples")
ort = pytest.importorskip("onnxruntime")
from pyserver.examples import image_models  # noqa: E402

pytestmark = pytest.mark.timeout(180)
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RUN_TIMEOUT_S = 60
LINE = re.compile(r"^\s+(\d+) \((\S*)\) = ([0-9.eE+-]+)$")


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True,
                          text=True, timeout=RUN_TIMEOUT_S)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """Three PNGs of different sizes and content (noise, gradient, blocks)."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(3)
    noise = (rng.random((300, 260, 3)) * 255).astype(np.uint8)
    gradient = np.dstack([np.tile(np.linspace(0, 255, 240, dtype=np.uint8), (200, 1))] * 3)
    blocks = np.kron(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), np.ones((32, 32, 1),
                                                                            np.uint8))
    paths = []
    for name, array in (("noise", noise), ("gradient", gradient), ("blocks", blocks)):
        path = root / f"{name}.png"
        Image.fromarray(array).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def session():
    return ort.InferenceSession(image_models.squeezenet(), providers=["CPUExecutionProvider"])


def reference_scores(session, path: Path, scaling: str) -> np.ndarray:
    """onnxruntime's class scores for ``path``, preprocessed independently
    of the example: RGB, bilinear resize to 224x224, scaling, CHW."""
    with Image.open(path) as img:
        array = np.asarray(img.convert("RGB").resize((224, 224), Image.BILINEAR), np.float32)
    if scaling == "INCEPTION":
        array = array / 128.0 - 1.0
    elif scaling == "VGG":
        array = array - np.array([123.0, 117.0, 104.0], np.float32)
    batch = np.ascontiguousarray(array.transpose(2, 0, 1))[None]
    return session.run(None, {image_models.INPUT: batch})[0].reshape(-1)


def parse_output(stdout: str) -> dict[str, list[tuple[int, str, float]]]:
    results: dict[str, list] = {}
    current = None
    for line in stdout.splitlines():
        if line.startswith("Image '"):
            current = line[len("Image '"):-2]
            results[current] = []
        else:
            match = LINE.match(line)
            assert match and current is not None, f"unexpected line {line!r}"
            results[current].append((int(match[1]), match[2], float(match[3])))
    return results


def _url(server, protocol: str) -> str:
    return f"{HOST}:{server.port}" if protocol == "http" else server.grpc_target


@pytest.mark.parametrize("protocol,scaling,batch", [("http", "VGG", "1"),
                                                    ("grpc", "INCEPTION", "2"),
                                                    ("http", "NONE", "3")])
def test_image_client_matches_onnxruntime(server, images, session, protocol, scaling, batch):
    done = run("image_client.py", "-i", protocol, "-u", _url(server, protocol), "-m",
               "image_classifier", "-c", "3", "-s", scaling, "-b", batch, *map(str, images))
    assert done.returncode == 0, done.stderr
    results = parse_output(done.stdout)
    for path in images:
        scores = reference_scores(session, path, scaling)
        top = results[str(path)]
        assert len(top) == 3
        assert top[0][0] == int(np.argmax(scores)), (path, top, np.sort(scores)[-3:])
        for idx, label, value in top:
            assert label == f"class_{idx:04d}"
            assert value == pytest.approx(float(scores[idx]), rel=1e-3, abs=1e-6)


def test_image_client_reports_each_image_once_when_the_last_batch_is_short(server, images):
    done = run("image_client.py", "-u", _url(server, "http"), "-m", "image_classifier",
               "-c", "1", "-b", "2", *map(str, images))
    assert done.returncode == 0, done.stderr
    reported = [line for line in done.stdout.splitlines() if line.startswith("Image '")]
    assert reported == [f"Image '{path}':" for path in images]


def test_sample_images_serve_as_written_in_the_readme(server, tmp_path):
    """``python -m pyserver.examples.sample_images images``, then the README's
    image_client line on the folder."""
    folder = tmp_path / "images"
    made = subprocess.run([sys.executable, "-m", "pyserver.examples.sample_images", str(folder)],
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert made.returncode == 0, made.stderr
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["blocks.png", "gradient.jpg", "noise.png"]
    done = run("image_client.py", "-u", _url(server, "http"), "-m", "image_classifier", "-c",
               "3", "-s", "INCEPTION", "-b", "2", str(folder))
    assert done.returncode == 0, done.stderr
    assert set(parse_output(done.stdout)) == {str(folder / name) for name in names}


def test_grpc_image_client(server, images, session):
    done = run("grpc_image_client.py", "-u", server.grpc_target, "-m", "image_classifier",
               "-c", "2", "-s", "VGG", *map(str, images[:2]))
    assert done.returncode == 0, done.stderr
    results = parse_output(done.stdout)
    for path in images[:2]:
        assert results[str(path)][0][0] == int(np.argmax(reference_scores(session, path, "VGG")))


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("model", ["simple", "simple_int32", "simple_nobatch"])
def test_simple_client(server, protocol, model):
    done = run("simple_client.py", "-i", protocol, "-u", _url(server, protocol), "-m", model)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 32 and lines[-2].replace(".0", "") == "15 + 1 = 16"


def _one_line_error(done: subprocess.CompletedProcess, *fragments: str) -> None:
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def not_an_image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bad") / "not_an_image.png"
    path.write_text("this is text, not a PNG\n")
    return path


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_image_client_bad_input(server, images, not_an_image, protocol):
    url = _url(server, protocol)
    dead = f"{HOST}:{free_port()}"
    image = str(images[0])
    _one_line_error(run("image_client.py", "-i", protocol, "-u", dead, "-m", "image_classifier",
                        image), "UNAVAILABLE", dead)
    _one_line_error(run("image_client.py", "-i", protocol, "-u", "http://nowhere/x", "-m",
                        "image_classifier", image), "bad server URL")
    _one_line_error(run("image_client.py", "-i", protocol, "-u", url, "-m", "no_such_model",
                        image), "no_such_model")
    _one_line_error(run("image_client.py", "-i", protocol, "-u", url, "-m", "image_classifier",
                        str(not_an_image)), "cannot read image")
    _one_line_error(run("image_client.py", "-i", protocol, "-u", url, "-m", "image_classifier",
                        image + ".missing"), "no such file")
    _one_line_error(run("image_client.py", "-i", protocol, "-u", url, "-m", "simple", image),
                    "one input and one output")
    _one_line_error(run("image_client.py", "-i", protocol, "-u", url, "-m", "image_classifier",
                        "-b", "9", image), "exceeds")


def test_simple_client_bad_input(server):
    dead = f"{HOST}:{free_port()}"
    _one_line_error(run("simple_client.py", "-u", dead), "UNAVAILABLE")
    _one_line_error(run("simple_client.py", "-u", f"{HOST}:{server.port}", "-m", "nope"), "nope")
    # The classifier's input is FP32 [8]: the wrong shape for this client.
    _one_line_error(run("simple_client.py", "-i", "grpc", "-u", server.grpc_target, "-m",
                        "classifier"), "INVALID_ARG")


def test_grpc_image_client_bad_input(server, images, not_an_image):
    dead = f"{HOST}:{free_port()}"
    _one_line_error(run("grpc_image_client.py", "-u", dead, "-t", "5", "-m", "image_classifier",
                        str(images[0])), "UNAVAILABLE")
    _one_line_error(run("grpc_image_client.py", "-u", server.grpc_target, "-m", "no_such_model",
                        str(images[0])), "no_such_model")
    _one_line_error(run("grpc_image_client.py", "-u", server.grpc_target, "-m",
                        "image_classifier", str(not_an_image)), "cannot read image")
