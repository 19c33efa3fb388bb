"""gRPC against HTTP on the same ``inferno serve``: throughput at c=64, p50 at c=1 (issue 17).

server
    ``taskset -c 0 inferno serve REPO --threads 1 --grpc-port P`` serving digits and minilm (fp32
    on ONNX Runtime, CPU; REPO as in ``hardening.py``: ``--repository`` or built first).
load
    This process, pinned to core 1: closed loops with pre-built requests and no per-request
    encoding, so that the client is not what is measured — HTTP over raw keep-alive HTTP/1.1
    connections (``hardening.py``'s generator), JSON tensors or Triton's binary extension; gRPC
    with ``h2load`` (nghttp2's C load generator, Debian ``nghttp2-client``: 8 connections × 8
    streams for c=64) posting a pre-serialized ``ModelInferRequest`` (raw tensor contents, as
    ``tritonclient.grpc`` sends them). h2load sees HTTP statuses only, so the server's own
    statistics count what succeeded. Without h2load, and as a second reading beside it,
    ``grpc.aio`` channels send the same bytes ("gRPC (grpc.aio client)"): that client costs
    about as much CPU per call as the server, and tops out first.
    ``wrk`` (when installed) re-measures HTTP JSON at c=64 as a check on the generator.
rounds
    ``--rounds`` interleaved rounds; in each, every contender runs ``--duration`` s at c=64 and at
    c=1, the order rotating. Values are medians over rounds, ratios medians of per-round ratios
    with their min–max.
floor
    The transport alone: an empty HTTP request (``GET /v2/health/live``) and an empty RPC
    (``ServerLive``) at c=1 (p50) and c=64 (req/s), same core; and the runtime alone: the plan
    run in a process pinned to core 0 with one thread (batch 1: p50 ms; batch 64: rows/s), so
    that each protocol can be judged against runtime + floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import hardening as hx  # the HTTP generator and the server's start and stop

HOST = hx.HOST
MODELS = ("digits", "minilm")
INFER = "/inference.GRPCInferenceService/ModelInfer"
LIVE = "/inference.GRPCInferenceService/ServerLive"


# --------------------------------------------------------------------------- requests


def _tensor(model: str) -> tuple[str, str, list[int], bytes]:
    if model == "digits":
        pixels = (np.random.default_rng(0).random((1, 1, 8, 8)) * 16).astype(np.float32)
        return "pixels", "FP32", [1, 1, 8, 8], pixels.tobytes()
    text = hx.SENTENCE.encode()
    return "text", "BYTES", [1], len(text).to_bytes(4, "little") + text


def http_json(model: str) -> bytes:
    return hx.infer_request(model)


def http_binary(model: str) -> bytes:
    name, datatype, shape, raw = _tensor(model)
    header = json.dumps({"inputs": [{"name": name, "datatype": datatype, "shape": shape,
                                     "parameters": {"binary_data_size": len(raw)}}],
                         "parameters": {"binary_data_output": True}}).encode()
    body = header + raw
    head = (f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: {HOST}\r\n"
            f"Content-Type: application/octet-stream\r\nInference-Header-Content-Length: {len(header)}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def grpc_request(model: str) -> bytes:
    from tritonclient.grpc import service_pb2

    name, datatype, shape, raw = _tensor(model)
    request = service_pb2.ModelInferRequest(model_name=model)
    request.inputs.add(name=name, datatype=datatype, shape=shape)
    request.raw_input_contents.append(raw)
    return bytes(request.SerializeToString())


# --------------------------------------------------------------------------- gRPC load


async def grpc_closed_loop(port: int, method: str, request: bytes, concurrency: int,
                           duration: float) -> hx.Tally:
    """``concurrency`` callers over a few channels, each calling again as soon as it is answered."""
    import grpc

    tally = hx.Tally()
    channels = [grpc.aio.insecure_channel(f"{HOST}:{port}") for _ in range(min(concurrency, 8))]
    calls = [c.unary_unary(method, request_serializer=None, response_deserializer=None) for c in channels]
    t0 = time.perf_counter()
    end = t0 + duration

    async def caller(index: int) -> None:
        call = calls[index % len(calls)]
        while time.perf_counter() < end:
            started = time.perf_counter()
            try:
                await call(request, timeout=hx.REQUEST_TIMEOUT_S)
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code == grpc.StatusCode.UNAVAILABLE:
                    tally.rejected += 1
                else:
                    tally.other += 1
                    tally.kinds[f"gRPC {code.name}"] += 1
                continue
            tally.ok += 1
            tally.latencies_ms.append((time.perf_counter() - started) * 1000)

    try:
        await asyncio.gather(*(caller(i) for i in range(concurrency)))
    finally:
        for channel in channels:
            await channel.close()
    return tally


def h2load_closed_loop(port: int, method: str, request: bytes, concurrency: int, duration: float,
                       tmp: Path) -> hx.Tally:
    """h2load at ``concurrency`` streams in flight (up to 8 connections of 8 streams each) for
    ``duration`` s; latencies from its per-request log. ``ok`` counts HTTP 200 answers: the
    caller checks them against the server's statistics."""
    body, log = tmp / "grpc-body.bin", tmp / "h2load.log"
    body.write_bytes(b"\x00" + len(request).to_bytes(4, "big") + request)
    log.unlink(missing_ok=True)
    connections = min(concurrency, 8)
    command = ["h2load", "-c", str(connections), "-m", str(concurrency // connections),
               "-D", str(max(1, round(duration))), "--log-file", str(log),
               "-H", "content-type: application/grpc", "-H", "te: trailers", "-d", str(body),
               f"http://{HOST}:{port}{method}"]
    subprocess.run(command, capture_output=True, text=True, timeout=duration + 60, check=True)
    tally = hx.Tally()
    for line in log.read_text().splitlines():
        _, status, elapsed_us = line.split("\t")[:3]
        if status == "200":
            tally.ok += 1
            tally.latencies_ms.append(int(elapsed_us) / 1000)
        else:
            tally.other += 1
            tally.kinds[f"HTTP {status}"] += 1
    return tally


def successes(port: int, model: str) -> int:
    """The server's count of successful inferences of ``model`` (all protocols)."""
    with urllib.request.urlopen(f"http://{HOST}:{port}/v2/models/{model}/stats", timeout=10) as resp:
        stats = json.load(resp)["model_stats"][0]["inference_stats"]
    return int(stats["success"]["count"])


# --------------------------------------------------------------------------- the runtime alone


_RUNTIME_ALONE = r"""
import json, sys, time
import numpy as np
import inferno
from inferno.repository.plan import load_plan
folder, model, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
runner = load_plan(folder, threads=1)
def inputs(rows):
    if model == "digits":
        return (np.random.default_rng(0).random((rows, 1, 8, 8)) * 16).astype(np.float32)
    return ["The quick brown fox jumps over the lazy dog."] * rows
out = {}
for rows in (1, 64):
    x = inputs(rows)
    for _ in range(20):
        runner.predict(x)
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter(); runner.predict(x); times.append(time.perf_counter() - t)
    times.sort()
    out[rows] = {"p50_ms": times[len(times) // 2] * 1000, "rows_per_s": rows / (sum(times) / len(times))}
print(json.dumps(out))
"""


def runtime_alone(repo: Path, model: str, seconds: float, pinned: bool) -> dict[str, Any]:
    from inferno.repository import version_path

    folder = version_path(repo, model)
    command = [sys.executable, "-c", _RUNTIME_ALONE, str(folder), model, str(seconds)]
    if pinned:
        command = ["taskset", "-c", str(hx.SERVER_CORE), *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=True)
    data = json.loads(done.stdout.strip().splitlines()[-1])
    return {"p50_ms": data["1"]["p50_ms"], "rows_per_s": data["64"]["rows_per_s"]}


# --------------------------------------------------------------------------- measuring


def contenders(model: str) -> dict[str, tuple[str, Any]]:
    named = {"HTTP JSON": ("http", http_json(model)), "HTTP binary": ("http", http_binary(model))}
    if shutil.which("h2load"):
        named["gRPC"] = ("h2load", grpc_request(model))
        named["gRPC (grpc.aio client)"] = ("grpc", grpc_request(model))
    else:
        named["gRPC"] = ("grpc", grpc_request(model))
    return named


def run_one(kind: str, request: Any, port: int, grpc_port: int, concurrency: int, duration: float,
            method: str = INFER, model: str | None = None) -> hx.Tally:
    if kind == "http":
        return hx.run_async(hx.closed_loop(port, request, concurrency, duration, 2**31))
    if kind == "grpc":
        return hx.run_async(grpc_closed_loop(grpc_port, method, request, concurrency, duration))
    with tempfile.TemporaryDirectory() as tmp:
        before = successes(port, model) if model else 0
        tally = h2load_closed_loop(grpc_port, method, request, concurrency, duration, Path(tmp))
        if model:  # an HTTP 200 whose grpc-status was not OK is a failure the server counted
            failed = tally.ok - (successes(port, model) - before)
            if failed > 0:
                tally.ok -= failed
                tally.other += failed
                tally.kinds["grpc-status not OK"] += failed
        return tally


def summary(tally: hx.Tally, seconds: float) -> dict[str, Any]:
    return {"per_s": tally.ok / seconds, "p50_ms": hx.percentile(tally.latencies_ms, 50),
            "errors": tally.rejected + tally.other, "kinds": dict(tally.kinds)}


def measure_model(model: str, port: int, grpc_port: int, args: argparse.Namespace) -> dict[str, Any]:
    named = contenders(model)
    order = list(named)
    rounds: list[dict[str, dict[str, Any]]] = []
    for r in range(args.rounds):
        this: dict[str, dict[str, Any]] = {}
        for name in order[r % len(order):] + order[:r % len(order)]:
            kind, request = named[name]
            busy = summary(run_one(kind, request, port, grpc_port, 64, args.duration, model=model), args.duration)
            lone = summary(run_one(kind, request, port, grpc_port, 1, args.duration, model=model), args.duration)
            this[name] = {"c64_per_s": busy["per_s"], "c1_p50_ms": lone["p50_ms"],
                          "errors": busy["errors"] + lone["errors"], "kinds": {**busy["kinds"], **lone["kinds"]}}
            hx.say(f"  {model} round {r + 1}: {name}: c=64 {busy['per_s']:.0f}/s, c=1 p50 {lone['p50_ms']:.3f} ms")
        rounds.append(this)
    return {"rounds": rounds}


def floors(port: int, grpc_port: int, duration: float) -> dict[str, Any]:
    empty_http = hx.request_bytes("/v2/health/live", b"").replace(b"POST", b"GET", 1)
    out = {}
    rpc = "h2load" if shutil.which("h2load") else "grpc"
    for name, kind, request, method in (("HTTP", "http", empty_http, INFER), ("gRPC", rpc, b"", LIVE)):
        busy = summary(run_one(kind, request, port, grpc_port, 64, duration, method), duration)
        lone = summary(run_one(kind, request, port, grpc_port, 1, duration, method), duration)
        out[name] = {"c64_per_s": busy["per_s"], "c1_p50_ms": lone["p50_ms"]}
    return out


def wrk_check(model: str, port: int, duration: float, pinned: bool, tmp: Path) -> float | None:
    if shutil.which("wrk") is None:
        return None
    body = hx.infer_body(model)
    script = tmp / f"{model}.lua"
    script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                      f"wrk.body = {json.dumps(body.decode())}\n")
    command = ["wrk", "-t1", "-c64", f"-d{max(2, round(duration))}s", "-s", str(script),
               f"http://{HOST}:{port}/v2/models/{model}/infer"]
    if pinned:
        command = ["taskset", "-c", str(hx.LOAD_CORE), *command]
    out = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False).stdout
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    return None


# --------------------------------------------------------------------------- report


def _med(values: list[float]) -> float:
    return statistics.median(values)


def print_model(model: str, result: dict[str, Any], alone: dict[str, Any], floor: dict[str, Any]) -> None:
    rounds = result["rounds"]
    names = list(rounds[0])
    hx.say(f"\n== {model}: medians of {len(rounds)} interleaved rounds ==")
    lines = []
    for name in names:
        busy = [r[name]["c64_per_s"] for r in rounds]
        lone = [r[name]["c1_p50_ms"] for r in rounds]
        errors = sum(r[name]["errors"] for r in rounds)
        lines.append([name, f"{_med(busy):.0f}", f"{min(busy):.0f}–{max(busy):.0f}", f"{_med(lone):.3f}",
                      f"{min(lone):.3f}–{max(lone):.3f}", str(errors)])
    hx.say(hx.table(["protocol", "c=64 req/s", "(min–max)", "c=1 p50 ms", "(min–max)", "errors"], lines))
    for other in ("HTTP binary", "HTTP JSON"):
        tput = [r["gRPC"]["c64_per_s"] / r[other]["c64_per_s"] for r in rounds]
        lat = [r["gRPC"]["c1_p50_ms"] / r[other]["c1_p50_ms"] for r in rounds]
        hx.say(f"  gRPC ÷ {other}: throughput {_med(tput):.2f}x ({min(tput):.2f}–{max(tput):.2f}), "
               f"c=1 p50 {_med(lat):.2f}x ({min(lat):.2f}–{max(lat):.2f}; below 1 is faster)")
    for name, proto in (("HTTP binary", "HTTP"), ("gRPC", "gRPC")):
        expected = alone["p50_ms"] + floor[proto]["c1_p50_ms"]
        got = _med([r[name]["c1_p50_ms"] for r in rounds])
        hx.say(f"  {name} c=1 p50 {got:.3f} ms vs runtime alone {alone['p50_ms']:.3f} + {proto} floor "
               f"{floor[proto]['c1_p50_ms']:.3f} = {expected:.3f} ms: {got / expected:.2f}x")
    hx.say(f"  runtime alone, one thread on the server's core: batch 1 p50 {alone['p50_ms']:.3f} ms; "
           f"batch 64 {alone['rows_per_s']:.0f} rows/s (the c=64 ceiling)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repository", type=Path, help="repository holding digits and minilm (built when missing)")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=4.0, help="seconds per contender and concurrency")
    p.add_argument("--json", type=Path, help="results file (default benchmarks/results/grpc_vs_http-<timestamp>.json)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    pinned = len(os.sched_getaffinity(0)) >= 2
    if pinned:
        os.sched_setaffinity(0, {hx.LOAD_CORE})
    hx.say(f"python benchmarks/grpc_vs_http.py {' '.join(argv or sys.argv[1:])}")
    hx.say(f"1-min load average {os.getloadavg()[0]:.2f}; " + ("server on core 0, load on core 1"
                                                             if pinned else "fewer than 2 cores: not pinned"))
    results: dict[str, Any] = {"models": {}}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        repo = hx.ensure_repository(args, tmp)
        port, grpc_port = hx.free_port(), hx.free_port()
        command = [sys.executable, "-m", "inferno", "serve", str(repo), "--host", HOST, "--port", str(port),
                   "--grpc-port", str(grpc_port), "--threads", "1"]
        if pinned:
            command = ["taskset", "-c", str(hx.SERVER_CORE), *command]
        hx.say("server: " + " ".join(command))
        with hx.serving(command, port, tmp / "server.log"):
            floor = floors(port, grpc_port, args.duration)
            hx.say(f"transport floor: HTTP empty request c=1 p50 {floor['HTTP']['c1_p50_ms']:.3f} ms, "
                   f"c=64 {floor['HTTP']['c64_per_s']:.0f}/s; gRPC empty RPC c=1 p50 "
                   f"{floor['gRPC']['c1_p50_ms']:.3f} ms, c=64 {floor['gRPC']['c64_per_s']:.0f}/s")
            results["floor"] = floor
            for model in models:
                result = measure_model(model, port, grpc_port, args)
                result["wrk_http_json_c64"] = wrk_check(model, port, args.duration, pinned, tmp)
                results["models"][model] = result
        for model in models:
            alone = runtime_alone(repo, model, args.duration, pinned)
            results["models"][model]["runtime_alone"] = alone
            print_model(model, results["models"][model], alone, floor)
            check = results["models"][model]["wrk_http_json_c64"]
            ours = _med([r["HTTP JSON"]["c64_per_s"] for r in results["models"][model]["rounds"]])
            if check is not None:
                hx.say(f"  wrk, HTTP JSON c=64: {check:.0f}/s; this script's generator {ours:.0f}/s "
                       f"({ours / check:.2f}x wrk)")
    out = args.json or Path(__file__).parent / "results" / f"grpc_vs_http-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    hx.say(f"\nresults: {out}")


if __name__ == "__main__":
    main()
