"""Where the harness lives: the perf/ folder, its scenarios and peers, the repository root."""

from pathlib import Path

PERF = Path(__file__).resolve().parents[1]
REPO = PERF.parent
SCENARIOS = PERF / "scenarios"
PEER_FILES = PERF / "peers"
