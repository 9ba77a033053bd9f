"""Installs the serving peers ``compare`` measures pyserver against, a venv each under perf/.peers/.

Idempotent: a peer whose recorded install spec is unchanged and whose venv still imports
is skipped (perf/.peers/ is gitignored).

    python -m perf install-peers                 # every peer
    python -m perf install-peers triton mlserver # some
    python -m perf install-peers --force kserve  # reinstall one

Peers (versions and install notes, as found on PyPI and Debian):

- triton:        nvidia-pytriton==0.7.0 (carries tritonserver 2.51 + python backend)
                 with onnxruntime for the Python-backend model.py
- perf_analyzer: tritonclient[all]==2.51.0 (bin/perf_analyzer) + nvidia-cuda-runtime-cu12;
                 needs Debian's libb64-0d
- mlserver:      mlserver==1.7.1 with uvloop==0.21.0, onnxruntime
- kserve:        kserve==0.21.0, onnxruntime
- torchserve:    torch==2.13.0 (local CPU wheel) first, then torchserve 0.12,
                 torch-model-archiver, pyyaml; Java 17 from Debian
- system:        Debian's nginx-light (with the echo module), wrk, libb64-0d (apt)

Each peer's outcome (ok, or the reason it failed) goes to
perf/.peers/<peer>/install.json, which ``compare`` reads to report a peer it
cannot run. Every pip/apt call is bounded in time.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import time
import venv

from ..harness.paths import PERF

PEERS = PERF / ".peers"
PIP_TIMEOUT_S = 1200
APT_TIMEOUT_S = 600

# peer -> (pip install steps, run one after the other; python check that must succeed)
SPECS: dict[str, tuple[list[list[str]], str]] = {
    "triton": ([["nvidia-pytriton==0.7.0", "onnxruntime", "numpy<2.3"]],
               "import pytriton, onnxruntime, numpy"),
    "perf_analyzer": ([["tritonclient[all]==2.51.0", "nvidia-cuda-runtime-cu12"]],
                      "import tritonclient.http"),
    "mlserver": ([["mlserver==1.7.1", "uvloop==0.21.0", "onnxruntime"]],
                 "import mlserver, onnxruntime"),
    "kserve": ([["kserve==0.21.0", "onnxruntime"]], "import kserve, onnxruntime"),
    "torchserve": ([["torch==2.13.0"],
                    ["torchserve>=0.12,<0.13", "torch-model-archiver>=0.12,<0.13", "pyyaml",
                     "onnxruntime"]],
                   "import ts, torch, onnxruntime"),
}
APT_PACKAGES = ["nginx-light", "wrk", "libb64-0d"]


def peer_dir(peer: str) -> pathlib.Path:
    return PEERS / peer


def peer_python(peer: str) -> pathlib.Path:
    return peer_dir(peer) / "venv" / "bin" / "python"


def install_record(peer: str) -> dict:
    """What the last install of ``peer`` left: {"ok": bool, "reason": str, ...};
    {"ok": False, "reason": "not installed ..."} when it never ran."""
    path = peer_dir(peer) / "install.json"
    if not path.exists():
        return {"ok": False, "reason": "not installed (run python -m perf install-peers)"}
    return json.loads(path.read_text())


def _write_record(peer: str, ok: bool, reason: str = "") -> None:
    peer_dir(peer).mkdir(parents=True, exist_ok=True)
    record = {"ok": ok, "reason": reason, "spec": SPECS.get(peer, (APT_PACKAGES, ""))[0],
              "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    (peer_dir(peer) / "install.json").write_text(json.dumps(record, indent=1))


def _run(command: list[str], log: pathlib.Path, timeout: float, env: dict | None = None) -> None:
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(command)}\n".encode())
        out.flush()
        try:
            subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=True,
                           timeout=timeout, env=env, stdin=subprocess.DEVNULL)
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"{' '.join(command[:4])}... exited {exc.returncode}; "
                               f"last lines: {_tail(log)}") from None
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{' '.join(command[:4])}... ran past {timeout:.0f} s") from None


def _tail(log: pathlib.Path, lines: int = 3) -> str:
    text = log.read_text(errors="replace").strip().splitlines()
    return " | ".join(line.strip() for line in text[-lines:])


def _check(peer: str) -> bool:
    python = peer_python(peer)
    return python.exists() and subprocess.run(
        [str(python), "-c", SPECS[peer][1]], capture_output=True, timeout=120).returncode == 0


def install_peer(peer: str, force: bool = False) -> dict:
    steps, _ = SPECS[peer]
    record = install_record(peer)
    if not force and record.get("ok") and record.get("spec") == steps and _check(peer):
        print(f"{peer}: already installed", flush=True)
        return record
    directory = peer_dir(peer)
    if force and directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "install.log"
    log.write_text("")
    print(f"{peer}: installing (log {log.relative_to(PERF.parent)})", flush=True)
    try:
        if not peer_python(peer).exists():
            venv.EnvBuilder(with_pip=True, clear=True).create(directory / "venv")
        for packages in steps:
            _run([str(peer_python(peer)), "-m", "pip", "install", "--quiet", *packages],
                 log, PIP_TIMEOUT_S)
        if not _check(peer):
            raise RuntimeError(f"installed, but `{SPECS[peer][1]}` fails in its venv")
    except Exception as exc:  # noqa: BLE001 - recorded for compare's table
        _write_record(peer, False, str(exc))
        print(f"{peer}: FAILED: {exc}", flush=True)
        return install_record(peer)
    _write_record(peer, True)
    print(f"{peer}: ok", flush=True)
    return install_record(peer)


def install_system(force: bool = False) -> dict:
    """nginx-light (echo module), wrk and libb64-0d from Debian (root only)."""
    missing = [p for p in APT_PACKAGES if subprocess.run(
        ["dpkg", "-s", p], capture_output=True).returncode != 0]
    if not missing and not force:
        print("system: already installed", flush=True)
        _write_record("system", True)
        return install_record("system")
    peer_dir("system").mkdir(parents=True, exist_ok=True)
    log = peer_dir("system") / "install.log"
    log.write_text("")
    print(f"system: apt-get install {' '.join(missing)}", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        if shutil.which("apt-get") is None:
            raise RuntimeError("no apt-get on this machine")
        _run(["apt-get", "update", "-qq"], log, APT_TIMEOUT_S, env)
        _run(["apt-get", "install", "-y", "-qq", *missing], log, APT_TIMEOUT_S, env)
    except Exception as exc:  # noqa: BLE001
        _write_record("system", False, str(exc))
        print(f"system: FAILED: {exc}", flush=True)
        return install_record("system")
    _write_record("system", True)
    print("system: ok", flush=True)
    return install_record("system")


def perf_analyzer() -> tuple[str | None, dict[str, str], str]:
    """(perf_analyzer's path, the environment it runs in, "") once installed; else
    (None, {}, why not)."""
    record = install_record("perf_analyzer")
    if not record.get("ok"):
        return None, {}, f"perf_analyzer not installed: {record.get('reason')}"
    python = peer_python("perf_analyzer")
    binary = python.parent / "perf_analyzer"
    if not binary.exists():
        return None, {}, "no bin/perf_analyzer in the tritonclient wheel"
    site = next((python.parent.parent / "lib").glob("python3*/site-packages"))
    cudart = site / "nvidia" / "cuda_runtime" / "lib"
    env = dict(os.environ, LD_LIBRARY_PATH=f"{cudart}:{os.environ.get('LD_LIBRARY_PATH', '')}")
    return str(binary), env, ""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("peers", nargs="*", help=f"some of: system {' '.join(SPECS)}")
    parser.add_argument("--force", action="store_true", help="reinstall from scratch")


def run(args: argparse.Namespace) -> int:
    wanted = args.peers or ["system", *SPECS]
    unknown = [p for p in wanted if p != "system" and p not in SPECS]
    if unknown:
        raise SystemExit(f"error: unknown peer(s): {', '.join(unknown)}")
    PEERS.mkdir(exist_ok=True)
    failed = []
    for peer in wanted:
        record = install_system(args.force) if peer == "system" else install_peer(peer, args.force)
        if not record["ok"]:
            failed.append(peer)
    if failed:
        print(f"failed: {', '.join(failed)} (compare reports them with the reason)")
    return 1 if failed else 0
