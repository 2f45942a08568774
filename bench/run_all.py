#!/usr/bin/env python3
"""Run every benchmark in its bounded mode and write bench/RESULTS.md with two plots.

Runs bench/issuance.py, renewal.py, login.py, crl.py, ocsp.py and expiry.py (each with
``--json``), on SQLite and, with ``--postgres URL``, on PostgreSQL too, then writes
bench/RESULTS.md (date, machine, the exact commands and their durations, each table, each goal
met or NOT MET) and beside it ocsp-latency.png and crl-time.png. Every ratio is against a
baseline measured in the same run, so the report stays meaningful on a noisy machine.

    bench/run_all.py [--postgres postgresql://postgres@127.0.0.1:5432/test] [--out bench]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# Goals of issues #4, #14 and #16 (the scripts' docstrings name them too).
CRL_GOAL = 1.5  # ours <= 1.5x bare
OCSP_GOAL = 1.5  # ours >= 1.5x openssl's throughput ...
OCSP_P99_MS = 10.0  # ... with p99 <= 10 ms


# Why the goals this report finds NOT MET are missed (see the README's Benchmarks section):
# issuance's figures are this run's (issuance_notes), the others' what past runs found.
RENEWAL_NOTES = [
    "A renewal is one HTTP request doing a whole application's work (sign-in token, checks,",
    "application, history, audit, reservation, signature, storing): it costs the server about",
    "8-11 ms of CPU (the renewal table below) against 0.3-1.6 ms for a bare signature, so on two",
    "cores its ratio cannot pass about 10 % / 4 % whatever the load; reaching 30 % / 10 % needs",
    "a server path three to four times leaner again (README, Status).",
]
GENERAL_NOTES = [
    "Absolute rates (logins per CPU-second) and ratios near their goal (OCSP) follow the",
    "machine: compare each with its baseline column (SELECT 1 transactions per CPU-second, bare",
    "signature checks, openssl ocsp) of the same run, and the per-round range. CRLs of 10,000",
    "and 40,000 entries are listed without a verdict: their time is mostly the fixed cost of a",
    "publication (tens of milliseconds); the goal is for 1,000,000 entries, and the largest CRL",
    "of this bounded run is judged. Bounded sizes make every ratio noisier than the README's",
    "runs.",
]


def _span(values: list[float], unit: str = " ms", digits: int = 2) -> str:
    low, high = min(values), max(values)
    if f"{low:.{digits}f}" == f"{high:.{digits}f}":
        return f"{low:.{digits}f}{unit}"
    return f"{low:.{digits}f}-{high:.{digits}f}{unit}"


def issuance_notes(figures: list[dict[str, Any]]) -> list[str]:
    """Why one-by-one issuance misses its goals, from this run's figures (bench/issuance.py:
    the durability floor, the CPU of each case)."""
    by_db: dict[str, list[dict[str, Any]]] = {}
    for f in figures:
        by_db.setdefault(f["database"], []).append(f)
    commits = "; ".join(
        f"{db} {_span([f['commits_ms'] / 2 for f in fs])} each"
        f" ({_span([f['commits_cpu_ms'] / 2 for f in fs])} of it this process's CPU)"
        for db, fs in by_db.items()
    )
    floors = ", ".join(
        f"{f['issuing key']} {f['database']} {f['floor_ratio']:.0%}" for f in figures
    )
    budgets = ", ".join(
        f"{f['issuing key']} {f['database']} {f['goal']:.0%} of {f['bare_ms']:.2f} ms ="
        f" {f['budget_ms']:.2f} ms a certificate, {f['budget_left_ms']:+.2f} ms of it for our"
        " code beyond the floor"
        for f in figures
    )
    code = ", ".join(
        f"{f['issuing key']} {f['database']} {f['one_by_one_cpu_ms']:.2f} ms CPU"
        f" ({f['code_cpu_ms']:.2f} ms beyond the floor's {f['floor_cpu_ms']:.2f} ms) and"
        f" {f['other_wait_ms']:.2f} ms waiting beyond the floor's"
        for f in figures
    )
    cpu_only = ", ".join(
        f"{f['issuing key']} {f['database']} {f['floor_cpu_ratio']:.0%} /"
        f" {f['one_by_one_cpu_ratio']:.0%}"
        for f in figures
    )
    targets = ", ".join(
        f"{goal:.0%} ({key})"
        for key, goal in dict.fromkeys((f["issuing key"], f["goal"]) for f in figures)
    )
    paragraph = " ".join(
        [
            "Known misses, and why. One by one (as an approval issues) the design requires two",
            "durable COMMITs per certificate: the reserved serial before the HSM signs, the",
            "certificate after. The issuance table's durability floor measures them in the same",
            "run: a bare signature plus two commits of a trivial row on the service's own engine",
            "(SQLite WAL with synchronous=FULL; PostgreSQL's synchronous_commit on). In this run",
            f"a commit cost {commits}. That floor alone allows at most: {floors} one by one,",
            f"against goals of {targets}. The budgets: {budgets}. Our code costs, one by one:",
            f"{code}. In CPU time alone (were waiting for the disk, round trips and a core",
            f"free) floor / one by one would be {cpu_only}. Batches pay the commits once per",
            "batch (their rows above).",
        ]
    )
    return textwrap.wrap(paragraph, width=92)


def notes(results: list[dict[str, Any]]) -> list[str]:
    """The NOTES paragraph for the benchmarks that ran."""
    ran = {r["name"]: r["data"] for r in results if r["data"] is not None}
    out: list[str] = []
    if ran.get("issuance", {}).get("figures"):
        out += issuance_notes(ran["issuance"]["figures"])
    if "renewal" in ran:
        out += RENEWAL_NOTES
    return out + GENERAL_NOTES


def benchmarks(pg: str | None) -> list[tuple[str, str, list[str]]]:
    """(name, title, arguments) of each run: the smallest sizes that still give a ratio."""
    with_pg = ["--postgres", pg] if pg else []
    runs = [
        ("issuance", "Issuance", ["issuance.py", "-n", "300", "--round", "50", *with_pg]),
        ("renewal", "Renewal over HTTP", ["renewal.py", "-n", "400", *with_pg]),
        ("login", "Certificate login", ["login.py", "-n", "100", "--seconds", "1.5", *with_pg]),
        ("crl", "CRL publication", ["crl.py", "--sizes", "10000,40000,100000", *with_pg]),
        ("ocsp", "OCSP responder", ["ocsp.py", "--rounds", "2", "--seconds", "2", *with_pg]),
        ("expiry-sqlite", "Expiry warnings (SQLite)", ["expiry.py", "--rows", "100000"]),
    ]
    if pg:
        runs.append(
            (
                "expiry-postgresql",
                "Expiry warnings (PostgreSQL)",
                ["expiry.py", "--rows", "100000", "--database-url", pg],
            )
        )
    return runs


def _output(command: list[str]) -> str:
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    lines = (proc.stdout or proc.stderr).strip().splitlines()  # wrk -v exits 1
    return lines[0] if lines else "?"


def machine(pg: str | None) -> list[tuple[str, str]]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    ram = "unknown"
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal"):
            ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    os_name = platform.platform()
    release = Path("/etc/os-release")
    if release.exists():
        for line in release.read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = f"{line.split('=', 1)[1].strip(chr(34))} ({platform.release()})"
    postgres = "not run"
    if pg:
        postgres = _output(["psql", pg, "-Atc", "SHOW server_version"])
    import cryptography
    from cryptography.hazmat.backends.openssl.backend import backend as openssl_backend

    return [
        ("CPU", cpu),
        ("cores", str(os.cpu_count())),
        ("RAM", ram),
        ("OS", os_name),
        ("Python", platform.python_version()),
        ("SQLite", sqlite3.sqlite_version),
        ("PostgreSQL", postgres),
        ("SoftHSM", _output(["softhsm2-util", "--version"])),
        ("OpenSSL (command)", _output(["openssl", "version"])),
        (
            "OpenSSL (cryptography)",
            f"{openssl_backend.openssl_version_text()}, cryptography {cryptography.__version__}",
        ),
        ("wrk", _output(["wrk", "-v"])),
    ]


def table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "(no rows)"
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def _verdict(met: bool) -> str:
    return "met" if met else "**NOT MET**"


def _issuance_goals(data: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """The issuance rows judged; a missed one-by-one row says why, with the durability floor
    of the same run (the bare signature plus the design's two durable commits)."""
    out: list[tuple[str, str, str, str]] = []
    rows = data["rows"]
    floors = {(f["issuing key"], f["database"]): f for f in data.get("figures", [])}
    for r in rows:
        if r["goal"].startswith("-"):
            continue  # the durability floor: the design's ceiling, not a goal
        goal, _, verdict = r["goal"].rpartition(" ")
        shown = _verdict(verdict == "met")
        floor = floors.get((r["issuing key"], r["database"]))
        if verdict != "met" and r["issued"] == "one by one" and floor:
            allow = (
                "alone allow at most"
                if floor["floor_ratio"] < floor["goal"]
                else "would allow (the goal is within the design's reach)"
            )
            shown += (
                f": the design's two durable commits {allow} {floor['floor_ratio']:.0%}"
                f" (bare + 2 commits {floor['floor_ms']:.2f} ms a certificate); our code costs"
                f" {floor['code_cpu_ms']:.2f} ms CPU/cert beyond them (and waits"
                f" {floor['other_wait_ms']:.2f} ms more than the floor); in CPU time alone"
                f" the floor allows {floor['floor_cpu_ratio']:.0%}, ours is"
                f" {floor['one_by_one_cpu_ratio']:.0%}"
            )
        what = f"issuance {r['issuing key']} {r['database']} {r['issued']}"
        out.append((what, f"{r['ratio']} of bare HSM signing", goal, shown))
    return out


def goals(name: str, data: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(what, measured, goal, verdict) for one benchmark's figures."""
    out: list[tuple[str, str, str, str]] = []
    rows = data["rows"]
    if name == "issuance":
        out += _issuance_goals(data)
    elif name == "renewal":
        out += [
            (
                f"renewal {r['issuing key']} {r['database']}",
                f"{r['ratio']} of bare HSM signing",
                r["goal"].rpartition(" ")[0],
                _verdict(r["goal"].endswith(" met")),
            )
            for r in rows
        ]
    elif name == "login":
        for r in rows:
            cpu = float(r["logins per CPU-second"])
            out.append(
                (
                    f"login {r['certificate']} {r['database']}",
                    f"{cpu:.0f} per CPU-second",
                    ">= 1,000/s per core",
                    _verdict(cpu >= 1000),
                )
            )
    elif name == "crl":
        # The goal (issue #4) is for a CRL of 1,000,000 entries: the bounded run judges its
        # largest CRL; smaller ones show the fixed cost of a publication (reading the issuer,
        # storing the CRL, the audit event, the commit) and are listed without a verdict.
        largest: dict[str, int] = {}
        for p in data["points"]:
            largest[p["backend"]] = max(largest.get(p["backend"], 0), p["entries"])
        for p in data["points"]:
            ratio = p["ours_s"] / p["bare_s"]
            judged = p["entries"] == largest[p["backend"]]
            out.append(
                (
                    f"CRL {p['backend']} {p['entries']:,} entries",
                    f"{ratio:.2f}x bare",
                    f"<= {CRL_GOAL}x" if judged else "- (goal at 1,000,000 entries)",
                    _verdict(ratio <= CRL_GOAL) if judged else "-",
                )
            )
    elif name == "ocsp":
        by = {(x["backend"], x["server"]): x for x in data["latencies"]}
        for backend in dict.fromkeys(x["backend"] for x in data["latencies"]):
            ours, openssl = by[(backend, "ours")], by[(backend, "openssl")]
            ratio = ours["rps"] / openssl["rps"]
            out.append(
                (
                    f"OCSP {backend} throughput",
                    f"{ratio:.2f}x openssl",
                    f">= {OCSP_GOAL}x",
                    _verdict(ratio >= OCSP_GOAL),
                )
            )
            out.append(
                (
                    f"OCSP {backend} p99",
                    f"{ours['p99_ms']:.2f} ms",
                    f"<= {OCSP_P99_MS:.0f} ms",
                    _verdict(ours["p99_ms"] <= OCSP_P99_MS),
                )
            )
    elif name.startswith("expiry"):
        for r in rows:
            if r["goal"] != "-":
                goal, _, verdict = r["goal"].rpartition(": ")
                out.append(
                    (
                        f"expiry {data['backend']} {r['case']}",
                        r["expiry run"],
                        goal,
                        _verdict(verdict == "met"),
                    )
                )
    return out


def plot_ocsp(latencies: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backends = list(dict.fromkeys(x["backend"] for x in latencies))
    fig, axes = plt.subplots(1, len(backends), figsize=(5 * len(backends), 4), squeeze=False)
    labels = ("p50", "p90", "p99")
    for ax, backend in zip(axes[0], backends, strict=True):
        for offset, (server, title, color) in enumerate(
            (
                ("ours", "ours (ca-service serve)", "tab:blue"),
                ("openssl", "openssl ocsp", "tab:gray"),
            )
        ):
            entry = next(x for x in latencies if x["backend"] == backend and x["server"] == server)
            values = [entry[f"{label}_ms"] for label in labels]
            xs = [i + (offset - 0.5) * 0.38 for i in range(len(labels))]
            bars = ax.bar(xs, values, width=0.38, label=f"{title}, {entry['rps']:.0f} req/s")
            for bar in bars:
                bar.set_color(color)
            ax.bar_label(bars, fmt="%.2f", fontsize=8)
        ax.axhline(OCSP_P99_MS, color="tab:red", linestyle="--", linewidth=1, label="p99 goal")
        ax.set_xticks(range(len(labels)), labels)
        ax.set_xlabel("latency percentile")
        ax.set_ylabel("latency (ms)")
        ax.set_title(f"OCSP latency, {backend}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_crl(points: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    styles = {"sqlite": "tab:blue", "postgresql": "tab:orange"}
    for backend in dict.fromkeys(p["backend"] for p in points):
        mine = sorted((p for p in points if p["backend"] == backend), key=lambda p: p["entries"])
        xs = [p["entries"] for p in mine]
        color = styles.get(backend, "tab:green")
        ax.plot(xs, [p["ours_s"] for p in mine], "o-", color=color, label=f"ours, {backend}")
        ax.plot(xs, [p["bare_s"] for p in mine], "s--", color=color, label=f"bare, {backend}")
    ax.set_xlabel("revoked entries on the CRL")
    ax.set_ylabel("time to build and sign the CRL (s)")
    ax.set_title("CRL signing time against entry count (ours vs bare cryptography)")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", metavar="URL", help="also on this PostgreSQL database")
    parser.add_argument("--out", default=str(HERE), help="directory for RESULTS.md and the PNGs")
    parser.add_argument("--only", help="comma-separated names (issuance,renewal,...) to run")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.UTC)
    t0 = time.monotonic()
    results: list[dict[str, Any]] = []
    only = set(args.only.split(",")) if args.only else None
    with tempfile.TemporaryDirectory(prefix="bench-all-") as tmp:
        for name, title, argv in benchmarks(args.postgres):
            if only and name.split("-")[0] not in only and name not in only:
                continue
            json_path = Path(tmp) / f"{name}.json"
            command = [sys.executable, str(HERE / argv[0]), *argv[1:], "--json", str(json_path)]
            shown = shlex.join(["python", f"bench/{argv[0]}", *argv[1:]])
            print(f"== {shown}", file=sys.stderr, flush=True)
            start = time.monotonic()
            proc = subprocess.run(command, capture_output=True, text=True, check=False)
            seconds = time.monotonic() - start
            sys.stderr.write(proc.stderr[-4000:])
            print(proc.stdout, file=sys.stderr, flush=True)
            data = json.loads(json_path.read_text()) if json_path.exists() else None
            results.append(
                {
                    "name": name,
                    "title": title,
                    "command": shown,
                    "seconds": seconds,
                    "returncode": proc.returncode,
                    "data": data,
                    "stdout": proc.stdout,
                    "stderr": proc.stderr,
                }
            )
    total = time.monotonic() - t0

    lines = [
        "# Benchmark report",
        "",
        f"Written by `bench/run_all.py` on {started:%Y-%m-%d %H:%M} UTC in {total / 60:.1f} min. "
        "Each benchmark runs in a bounded mode (smaller sizes than the README's figures) and "
        "measures its baseline in the same run, taking turns with it, so that a busy machine "
        "slows both alike; the ratios, not the absolute rates, are what to compare.",
        "",
        "## Machine",
        "",
        "| | |",
        "| --- | --- |",
        *(f"| {k} | {v} |" for k, v in machine(args.postgres)),
        "",
        "## Commands",
        "",
        "| benchmark | command | duration | exit |",
        "| --- | --- | --- | --- |",
        *(
            f"| {r['title']} | `{r['command']}` | {r['seconds']:.0f} s | {r['returncode']} |"
            for r in results
        ),
        "",
        "## Goals",
        "",
        "| measure | measured | goal | verdict |",
        "| --- | --- | --- | --- |",
    ]
    for r in results:
        if r["data"] is None:
            lines.append(f"| {r['title']} | failed (exit {r['returncode']}) | | **NOT MET** |")
            continue
        lines += [f"| {w} | {m} | {g} | {v} |" for w, m, g, v in goals(r["name"], r["data"])]
    lines += ["", *notes(results), ""]
    for r in results:
        lines += [f"## {r['title']}", "", f"`{r['command']}`", ""]
        if r["data"] is None:
            tail = "\n".join(r["stderr"].strip().splitlines()[-15:])
            lines += ["Failed:", "", "```", tail, "```", ""]
            continue
        lines += [table(r["data"]["rows"]), ""]
        if r["name"] == "ocsp" and r["data"].get("latencies"):
            plot_ocsp(r["data"]["latencies"], out / "ocsp-latency.png")
            lines += ["![OCSP latency percentiles](ocsp-latency.png)", ""]
        if r["name"] == "crl" and r["data"].get("points"):
            plot_crl(r["data"]["points"], out / "crl-time.png")
            lines += ["![CRL signing time against entry count](crl-time.png)", ""]
    (out / "RESULTS.md").write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {out / 'RESULTS.md'} in {total:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
