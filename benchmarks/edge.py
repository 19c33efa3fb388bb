"""The edge on ``digits``: compact bundles, students, the edge↔cloud cascade and device profiles.

What it does, in one run and on this machine:

students
    The FP32 teacher (the bundled digits CNN) is pruned (``inferno.students.prune``: L1 filter
    pruning of ``--prune-ratio`` of the channels and hidden neurons, then a short fine-tune
    with the teacher as target) and distilled (``inferno.students.distill``: a narrower,
    shallower CNN trained on the teacher's soft outputs, ``--student`` spec or the default).
    A third, deliberately weak student (``channels=4;hidden=16``) is not a candidate:
    on digits the first two match the teacher, so the cascade keeps everything on the edge; the
    weak one shows the trade-off the cascade is for. Their own reports (parameters, accuracy,
    agreement, rough speed) are printed.

bundles
    ``export_edge`` makes an INT8 edge bundle (1 thread) of the teacher and of each student.
    Per bundle: size of the whole folder ÷ the FP32 teacher's ``model.onnx``, test accuracy of
    the shipped file, and its difference to the FP32 teacher's accuracy in points.
    Acceptance: a digits bundle ≤ 25% of the FP32 size within 0.5 point.

cascade
    The cloud is a real ``inferno serve`` process on 127.0.0.1 serving the FP32 teacher (ONNX
    Runtime). Each student bundle is the edge; ``sweep`` runs the edge and the cloud once over
    the 360 test images (one row per request) and scores every threshold of the top-probability
    rule, with a simulated network round trip of ``--rtt-ms`` (each value). The operating point
    is the highest edge share whose overall accuracy is within 0.5 point of the cloud alone;
    it is chosen on the data it is scored on, so a 2-fold cross-validated figure (threshold
    chosen on one half, scored on the other) is printed beside it.
    Acceptance: ≥ 60% answered on the edge by a student, within 0.5 point of the cloud.

profiles
    Each bundle and the FP32 teacher graph run under ``edge-small`` (1 thread, 512 MB) and
    ``edge-medium`` (2 threads, 2 GB) in a child process (``run_profile``): batch-1 p50, p90,
    throughput, and peak RSS of the process (Python + numpy + onnxruntime + model).

Latencies on a shared 2-core machine are noisy; sizes, accuracies and shares are exact.

Reproduce (from the repository root, with the dev environment)::

    python benchmarks/edge.py
    python benchmarks/edge.py --rtt-ms 0,20,80 --prune-ratio 0.5 --student "channels=16,32;hidden=64"

Results go to ``benchmarks/results/edge.json`` (``--json`` to change), the sweep plots to
``benchmarks/results/edge-cascade-<student>.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"
MAX_SIZE_RATIO = 0.25
MAX_DROP_POINTS = 0.5
MIN_EDGE_SHARE = 0.60
PROFILES = ("edge-small", "edge-medium")
TINY_SPEC = "channels=4;hidden=16"
TINY_EPOCHS = None  # distill's default


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prune-ratio", type=float, default=None, help="share of channels pruned (default: prune's)")
    parser.add_argument("--student", default=None, help="distilled student spec (default: distill's)")
    parser.add_argument("--rtt-ms", default="0,50", help="simulated network round trips, ms")
    parser.add_argument("--profile-seconds", type=float, default=3.0, help="measured seconds per profile run")
    parser.add_argument("--json", type=Path, default=RESULTS / "edge.json")
    return parser.parse_args()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def cloud_server(repository: Path) -> Iterator[str]:
    """``inferno serve`` of the repository in its own process; yields its URL once ready."""
    port = _free_port()
    command = [sys.executable, "-m", "inferno", "serve", str(repository), "--port", str(port),
               "--no-drift", "--threads", "2"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"the cloud server exited: {process.stderr.read() if process.stderr else ''}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/v2/health/ready", timeout=1) as answer:
                if answer.status == 200:
                    break
            time.sleep(0.3)
        else:
            raise SystemExit("the cloud server did not become ready in 120 s")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def make_students(teacher: Any, folder: Path, args: argparse.Namespace) -> dict[str, Path]:
    from inferno.students.distill import distill
    from inferno.students.prune import prune

    started = time.perf_counter()
    pruned = prune(teacher, folder / "digits-prune", **({"ratio": args.prune_ratio} if args.prune_ratio else {}))
    print(f"pruned student trained in {time.perf_counter() - started:.0f} s")
    started = time.perf_counter()
    distilled = distill(teacher, args.student, folder / "digits-distill")
    print(f"distilled student trained in {time.perf_counter() - started:.0f} s")
    # Deliberately weak: on digits the default students match the teacher, so every request
    # stays on the edge; a tiny student shows the cascade's real trade-off.
    tiny = distill(teacher, TINY_SPEC, folder / "digits-tiny", epochs=TINY_EPOCHS)
    return {"pruned": pruned, "distilled": distilled, "tiny": tiny}


def student_rows(students: dict[str, Path]) -> dict[str, Any]:
    from inferno.models.student import read_student_info

    reports = {}
    print(f"\n{'student':<10} {'spec':<28} {'params':>8} {'× teacher':>9} {'accuracy':>9} {'agreement':>9} "
          f"{'b1 speed-up':>11} {'b32 speed-up':>12} {'train s':>8}")
    for name, folder in students.items():
        info = read_student_info(folder)
        reports[name] = {"spec": info.spec, "architecture": info.architecture, "report": info.report}
        r = info.report
        print(f"{name:<10} {info.spec:<28} {r['student']['params']:>8,} {r['ratios']['params']:>9.3f} "
              f"{r['student']['accuracy']:>9.4f} {r['agreement']:>9.4f} {r['ratios']['latency_speedup']:>10.2f}x "
              f"{r['ratios']['throughput_speedup']:>11.2f}x {r['train_seconds']:>8.1f}")
    print("(teacher: 188,234 params; speed-ups are the students' own rough ONNX Runtime FP32 timings, 1 thread)")
    return reports


def make_bundles(students: dict[str, Path], folder: Path, teacher_accuracy: float,
                 teacher_size: int) -> dict[str, Any]:
    from inferno.edge.bundle import export_edge

    rows: dict[str, Any] = {}
    for name, source in {"teacher": "digits", **{k: str(v) for k, v in students.items()}}.items():
        report = export_edge(source, folder / f"{name}-edge", threads=1)
        accuracy = report.metrics["accuracy"]
        rows[name] = {
            "path": report.path, "variant": report.variant, "format": report.model_format,
            "size_bytes": report.size_bytes, "size_ratio": report.size_bytes / teacher_size,
            "accuracy": accuracy, "delta_points": (accuracy - teacher_accuracy) * 100,
        }
    print(f"\nedge bundles (FP32 teacher: {teacher_size:,} bytes, accuracy {teacher_accuracy:.4f}; whole folder counted)")
    print(f"{'bundle':<10} {'variant':<24} {'format':<6} {'bytes':>9} {'× FP32':>8} {'accuracy':>9} {'Δ pt':>6}")
    for name, r in rows.items():
        print(f"{name:<10} {r['variant']:<24} {r['format']:<6} {r['size_bytes']:>9,} {r['size_ratio']:>8.1%} "
              f"{r['accuracy']:>9.4f} {r['delta_points']:>+6.2f}")
    return rows


def run_cascades(bundles: dict[str, Any], cloud_url: str, rtts: list[float]) -> dict[str, Any]:
    from inferno.edge.cascade import load_edge, sweep
    from inferno.edge.cloud import CloudClient
    from inferno.edge.sweep import plot_sweep
    from inferno.models.loaders import load_model

    data = load_model("digits").eval_data
    samples, labels = dict(data.samples), np.asarray(data.labels)
    results: dict[str, Any] = {}
    cloud = CloudClient(cloud_url, "digits")
    for name, bundle in bundles.items():
        if name == "teacher":
            continue
        edge = load_edge(bundle["path"], threads=1)
        for rtt in rtts:
            result = sweep(edge, cloud, samples, labels, rtt_ms=rtt)
            results[f"{name}@rtt{rtt:g}"] = result.to_dict()
            _print_sweep(name, result)
            if rtt == rtts[-1]:
                plot_sweep(result, RESULTS / f"edge-cascade-{name}.png")
    cloud.close()
    return results


def _print_sweep(name: str, result: Any) -> None:
    print(f"\ncascade: edge = {name} student bundle, cloud = FP32 teacher served; round trip {result.rtt_ms:g} ms; "
          f"cloud alone {result.cloud_accuracy:.4f} at {result.cloud_latency_ms:.2f} ms/req, "
          f"edge alone {result.edge_accuracy:.4f} at {result.edge_latency_ms:.2f} ms/req")
    print(f"{'T':>8} {'on edge':>8} {'accuracy':>9} {'Δ pt':>6} {'ms/req':>8}")
    for p in result:
        print(f"{p.threshold:>8.4g} {p.edge_share:>8.1%} {p.accuracy:>9.4f} "
              f"{(p.accuracy - result.cloud_accuracy) * 100:>+6.2f} {p.mean_latency_ms:>8.2f}")
    op, cv = result.operating, result.cross_validated
    if op is not None:
        print(f"operating point: T={op.threshold:g}: {op.edge_share:.1%} on the edge, accuracy {op.accuracy:.4f} "
              f"({(op.accuracy - result.cloud_accuracy) * 100:+.2f} pt vs cloud), {op.mean_latency_ms:.2f} ms/req "
              f"vs {result.cloud_latency_ms:.2f} cloud alone")
    if cv is not None:
        print(f"2-fold cross-validated: {cv.edge_share:.1%} on the edge, accuracy {cv.accuracy:.4f} "
              f"({(cv.accuracy - cv.cloud_accuracy) * 100:+.2f} pt), thresholds {cv.thresholds}")


def run_profiles(targets: dict[str, str], seconds: float) -> dict[str, Any]:
    from inferno.edge.profiles import get_profile, run_profile

    rows: dict[str, Any] = {}
    print(f"\nprofiles (batch 1, {seconds:g} s each, a child process per run)")
    print(f"{'model':<14} {'profile':<12} {'fits':<5} {'p50 ms':>7} {'p90 ms':>7} {'rows/s':>8} {'peak RSS MB':>12}")
    for name, ref in targets.items():
        for profile_name in PROFILES:
            result = run_profile(ref, get_profile(profile_name), duration_s=seconds, warmup_s=0.5)
            rows[f"{name}@{profile_name}"] = result.to_dict()
            if not result.fits:
                print(f"{name:<14} {profile_name:<12} {'no':<5} {result.reason}")
                continue
            lat = result.latency_ms or {}
            print(f"{name:<14} {profile_name:<12} {'yes':<5} {lat.get('p50', 0):>7.3f} {lat.get('p90', 0):>7.3f} "
                  f"{result.throughput or 0:>8.0f} {result.peak_rss_mb or 0:>12.1f}")
    return rows


def acceptance(bundles: dict[str, Any], cascades: dict[str, Any]) -> list[str]:
    lines = []
    fitting = [n for n, b in bundles.items() if b["size_ratio"] <= MAX_SIZE_RATIO and -b["delta_points"] <= MAX_DROP_POINTS]
    best = min(bundles, key=lambda n: bundles[n]["size_ratio"] if n in fitting else 9.0)
    b = bundles[best]
    lines.append(f"{'PASS' if fitting else 'FAIL'} bundle ≤ 25% of FP32 within 0.5 pt: {best} bundle "
                 f"{b['size_ratio']:.1%} of FP32, {b['delta_points']:+.2f} pt (fitting: {', '.join(fitting) or 'none'})")
    for key, c in cascades.items():
        op = c.get("operating")
        ok = op is not None and op["edge_share"] >= MIN_EDGE_SHARE and op["within_tolerance"]
        # The tiny student is not a candidate: it is there to show the trade-off.
        ok_word = "info" if key.startswith("tiny") else "PASS" if ok else "FAIL"
        share = f"{op['edge_share']:.1%} on the edge, {(op['accuracy'] - c['cloud_accuracy']) * 100:+.2f} pt" if op else "none"
        cv = c.get("cross_validated") or {}
        lines.append(f"{ok_word} cascade {key}: operating point {share} "
                     f"(2-fold cross-validated: {cv.get('edge_share', 0):.1%} on the edge, "
                     f"{(cv.get('accuracy', 0) - cv.get('cloud_accuracy', 0)) * 100:+.2f} pt)")
    return lines


def main() -> None:
    import onnxruntime as ort

    import inferno
    from inferno.hardware import detect
    from inferno.models.loaders import load_model

    args = _arguments()
    rtts = [float(v) for v in args.rtt_ms.split(",") if v.strip()]
    os.environ.setdefault("INFERNO_THREADS", "2")
    RESULTS.mkdir(parents=True, exist_ok=True)
    teacher = load_model("digits")
    session = ort.InferenceSession(str(teacher.onnx_path), providers=["CPUExecutionProvider"])
    probabilities = session.run(None, dict(teacher.eval_data.samples))[0]
    teacher_accuracy = float(np.mean(probabilities.argmax(1) == teacher.eval_data.labels))
    teacher_size = teacher.onnx_path.stat().st_size
    with tempfile.TemporaryDirectory(prefix="inferno-edge-bench-") as tmp:
        work = Path(tmp)
        students = make_students(teacher, work, args)
        student_reports = student_rows(students)
        bundles = make_bundles(students, work, teacher_accuracy, teacher_size)
        inferno.accelerate("digits", repository=work / "cloud", variants=("fp32",), runtimes=("onnxruntime",),
                           device="cpu", repeats=3)
        with cloud_server(work / "cloud") as url:
            cascades = run_cascades(bundles, url, rtts)
        targets = {"teacher-fp32": str(teacher.onnx_path), **{f"{n}-int8": b["path"] for n, b in bundles.items()}}
        profiles = run_profiles(targets, args.profile_seconds)
    print()
    verdicts = acceptance(bundles, cascades)
    for line in verdicts:
        print(line)
    result = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": detect().cpu.model, "teacher": {"accuracy": teacher_accuracy, "size_bytes": teacher_size},
        "students": student_reports, "bundles": bundles, "cascades": cascades, "profiles": profiles,
        "acceptance": verdicts,
    }
    args.json.write_text(json.dumps(result, indent=1, default=str))
    print(f"\nresults: {args.json}")


if __name__ == "__main__":
    main()
