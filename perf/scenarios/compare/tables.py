"""The tables ``compare`` prints and appends to perf/RESULTS.md: one row per server, API,
client, model and concurrency, medians of the rounds, each divided by the matching pyserver
row; and a section rendered again from an earlier run's results.json."""

from __future__ import annotations

import json
import pathlib
import statistics

from .servers import Row


def reference_row(rows: list[Row], row: Row) -> Row | None:
    """The pyserver row a row is divided by, same model: the same client and
    API where pyserver has it; else the same client on the nearest API (v2
    JSON for a JSON API, else v1 binary); perf_analyzer against pyserver-perf
    when pyserver has no v2 row for it."""
    def find(client: str, api: str) -> Row | None:
        return next((r for r in rows if r.server == "pyserver" and r.client == client
                     and r.model == row.model and r.api == api and not r.reason), None)
    if row.model == "echo":
        return None
    nearest = "v2 HTTP JSON" if "JSON" in row.api else "v1 HTTP binary"
    return (find(row.client, row.api) or find(row.client, nearest)
            or find(row.client, "v1 HTTP binary")
            or (find("pyserver-perf", "v1 HTTP binary") if row.client == "perf_analyzer"
                else None))


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(rows: list[Row], levels: list[int], models: list[str]) -> str:
    lines = ["| model | conc. | server | API | client | infer/s | p50 µs | p99 µs | "
             "server CPU µs/req | client CPU | errors | × pyserver |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for model in [*models, "echo"]:
        for c in levels:
            for row in (r for r in rows if r.model == model):
                head = f"| {model} | {c} | {row.server} | {row.api} | {row.client} |"
                if row.reason:
                    lines.append(f"{head} – | – | – | – | – | – | not run: {row.reason} |")
                    continue
                rs = row.results.get(c, [])
                good = [r for r in rs if "failed" not in r]
                if not good:
                    why = next((r["failed"] for r in rs), "not measured")
                    lines.append(f"{head} – | – | – | – | – | – | failed: {why} |")
                    continue
                rps = median([r["rps"] for r in good])
                ref = reference_row(rows, row)
                ratio = "–"
                if ref is not None:
                    ref_good = [r for r in ref.results.get(c, []) if "failed" not in r]
                    if ref_good:
                        ratio = f"{rps / median([r['rps'] for r in ref_good]):.2f}"
                        if ref.client != row.client:
                            ratio += " †"
                        elif ref.api != row.api:
                            ratio += " ‡"
                cpu_req = [r["server_cpu_us"] for r in good if r.get("server_cpu_us")]
                failed_runs = len(rs) - len(good)
                errors = sum(r["errors"] for r in good)
                lines.append(
                    f"{head} {rps:.0f} | {median([r['p50'] for r in good]):.0f} | "
                    f"{median([r['p99'] for r in good]):.0f} | "
                    f"{median(cpu_req):.0f} |".replace("nan |", "– |")
                    + f" {median([r['client_cpu'] for r in good]) * 100:.0f}% | "
                    f"{errors}{f' ({failed_runs} runs failed)' if failed_runs else ''} | "
                    f"{ratio} |")
    return "\n".join(lines)


def row_record(row: Row) -> dict:
    return {"server": row.server, "api": row.api, "client": row.client, "model": row.model,
            "reason": row.reason, "results": {str(c): rs for c, rs in row.results.items()}}


def render_section(meta: dict, rows: list[Row]) -> str:
    return "\n".join([
        f"## {meta['started']} — python -m perf compare: pyserver beside Triton and the peers",
        "",
        "```",
        meta["command"],
        "```",
        "",
        f"Machine: {meta['cores']} cores (shared), {meta['platform']}, Python {meta['python']}; "
        f"load average (1/5/15 min) {meta['load_before']} at the start, {meta['load_after']} at "
        f"the end. {meta['rounds']} rounds × {meta['seconds']:g} s per run, servers "
        f"alternating; medians.",
        "",
        *meta["status_lines"],
        "",
        table(rows, meta["levels"], meta["models"]),
        "",
        "× pyserver: infer/s ÷ that of the pyserver row with the same client and API; ‡ same "
        "client, nearest pyserver API (v2 JSON for a JSON API, else v1 binary); † against "
        "pyserver measured by pyserver-perf (perf_analyzer and pyserver-perf follow the same "
        "perf_client method but are different programs). Server CPU µs/req: the server's "
        "whole process tree over a wrk run ÷ requests answered. Client CPU: the load "
        "generator's CPU time ÷ wall time (100% = one core).",
        ""])


def render_json(path: str) -> int:
    data = json.loads(pathlib.Path(path).read_text())
    rows = [Row(r["server"], r["api"], r["client"], r["model"], reason=r["reason"],
                results={int(c): rs for c, rs in r["results"].items()}) for r in data["rows"]]
    print(render_section(data["meta"], rows))
    return 0
