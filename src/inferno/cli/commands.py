"""The core commands: hardware, accelerate, bench, monitor (serve: ``cli.serve``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from inferno.cli._app import app, err, new_progress, out
from inferno.cli.options import bound, own, takes, values
from inferno.config import AccelerateConfig


@app.command()
def hardware(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """What this machine has for inference: CPU ISA, memory, GPUs, runtimes."""
    from inferno.hardware import detect

    info = detect()
    if as_json:
        print(json.dumps(info.to_dict(), indent=2))
        return
    table = Table(show_header=False, box=None)
    cpu = info.cpu
    table.add_row("CPU", f"{cpu.model} ({cpu.architecture})")
    table.add_row("cores", f"{cpu.physical_cores} physical, {cpu.logical_cores} logical, {cpu.usable_cores} usable")
    table.add_row("ISA", ", ".join(f"{k}{'' if v else ' ✗'}" for k, v in cpu.features.items()))
    table.add_row("INT8 dot product", "yes (VNNI/AMX)" if cpu.int8_accelerated else "no")
    table.add_row("BF16", "yes" if cpu.bf16_accelerated else "no")
    table.add_row("memory", f"{info.memory_gb} GiB")
    table.add_row("CUDA GPUs", "none" if not info.gpus else str(len(info.gpus)))
    for g in info.gpus:
        details = [f"{g.memory_mb} MiB", f"compute capability {g.compute_capability}"]
        details += [f"driver {g.driver}"] if g.driver else []
        details += [f"power limit {g.power_limit_w:.0f} W"] if g.power_limit_w else []
        table.add_row(f"  GPU {g.index}", f"{g.name} ({', '.join(details)})")
    table.add_row("GPU runtimes", _gpu_runtimes(info))
    table.add_row("ONNX Runtime EPs", ", ".join(info.ort_providers) or "onnxruntime not installed")
    table.add_row("OpenVINO devices", ", ".join(info.openvino_devices) or "openvino not installed")
    for note in info.notes:
        table.add_row("note", note)
    out.print(table)


def _gpu_runtimes(info: Any) -> str:
    """What accelerate can measure on a GPU here (torch is probed only when installed)."""
    from inferno.tuning.targets import gpu_targets

    found = [t.label for t in gpu_targets(info)]
    return ", ".join(found) or "none (onnxruntime-gpu not installed, torch sees no GPU)"


ACCELERATE_FLAGS = (
    own("budget", str | None, None, "Accuracy budget: '1%', 'cosine_mean=0.995,cosine_min=0.97', "
        "'snr=30dB' (regression/other outputs)."),
    bound(AccelerateConfig, "objective", str, help="Rank by 'throughput' (at --batch-size) or 'latency' (batch-1 p50)."),
    bound(AccelerateConfig, "batch_size", int),
    own("threads", int | None, None, "Runtime threads (default: all cores)."),
    own("repository", Path, Path("model_repository"), "Model repository folder."),
    own("data", Path | None, None, "Evaluation data .npz (arrays named like inputs, optional 'labels')."),
    own("shape", list[str] | None, None, "Sizes of an input's dynamic axes, e.g. x:N,3,320,320 "
        "(repeatable; default: sizes the graph is found to accept).", "--shape", metavar="NAME:DIMS"),
    own("trust", bool, False, "Allow loading a pickle (it can run arbitrary code)."),
    own("task", str | None, None, "Override the task: classification, embedding, regression, other."),
    own("name", str | None, None, "Name in the repository (default: the model's)."),
    own("variants", str | None, None, "Comma-separated recipes to build (default: all that apply)."),
    own("runtimes", str | None, None, "Comma-separated runtimes (default: all installed)."),
    bound(AccelerateConfig, "repeats", int),
    bound(AccelerateConfig, "max_samples", int | None, field="max_eval_samples"),
    bound(AccelerateConfig, "device", str),
    own("as_json", bool, False, "Print the report as JSON on stdout.", "--json"),
)


@app.command()
@takes(*ACCELERATE_FLAGS)
def accelerate(
    model: Annotated[str, typer.Argument(help="Bundled name (minilm, digits), .onnx/TorchScript/.pt2 file, "
                                               "package.module:attr, or a pickle with --trust.")] = "minilm",
    **options: Any,
) -> None:
    """Build optimized variants, measure each on every runtime, keep the fastest within budget."""
    from inferno.config import parse_budget

    settings = values(ACCELERATE_FLAGS, options, AccelerateConfig)
    if options["budget"] is not None:
        settings["budget"] = parse_budget(options["budget"])
    if options["threads"] is not None:
        settings["threads"] = options["threads"]
    if options["variants"]:
        settings["variants"] = _recipes(options["variants"])
    if options["runtimes"]:
        settings["runtimes"] = tuple(r.strip() for r in options["runtimes"].split(",") if r.strip())
    report = _accelerate_with_progress(model, repository=options["repository"], trust=options["trust"],
                                       data=options["data"], task=options["task"], name=options["name"],
                                       shapes=tuple(options["shape"] or ()), **settings)
    if options["as_json"]:
        print(report.to_json())
        return
    _print_report(report)


def _print_report(report: Any) -> None:
    """The accelerate report as tables: every variant × runtime, then CPU vs GPU when both ran."""
    from inferno.tuning.render import COLUMNS, DEVICE_COLUMNS, device_rows, rows, summary

    table = Table(title=f"inferno accelerate: {report.model} — {report.evaluation['source']}")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("variant", "runtime", "precision", "fidelity") else "right")
    for row in rows(report):
        table.add_row(*row)
    out.print(table)
    devices = device_rows(report)
    if len(devices) > 1:
        versus = Table(title="CPU vs GPU")
        for column in DEVICE_COLUMNS:
            versus.add_column(column, justify="left" if column in ("device", "best within budget", "provider") else "right")
        for row in devices:
            versus.add_row(*row)
        out.print(versus)
    out.print(summary(report))
    for note in report.notes:
        out.print(f"note: {note}")
    out.print(f"plan saved to {report.chosen.path}")


BENCH_FLAGS = (
    own("url", str | None, None, "The server, http(s)://host[:port] (default http://127.0.0.1:8000) or "
        "grpc://host[:port]; nothing else is contacted."),
    own("protocol", str | None, None, "http (default) or grpc: Triton's ModelInfer RPC on --grpc-port (needs the "
        "\\[grpc] extra); a grpc:// --url implies grpc."),
    own("binary", bool, False, "HTTP: tensors in Triton's binary tensor extension instead of JSON.", "--binary"),
    own("grpc_port", int | None, None, "With --protocol grpc and an http(s) --url: the server's gRPC port (default 8001)."),
    own("clients", int | None, None, "Load-generator processes sharing each level, results merged (default: one "
        "per 128 connections or 5,000 req/s, at most one per core this command may use; a level where one was busy "
        "all along runs again with twice as many)."),
    own("version", str | None, None, "Model version (default: the server's choice)."),
    own("concurrency", str | None, None, "Closed-loop levels: requests outstanding, e.g. 1,16,64."),
    own("rate", str | None, None, "Open-loop Poisson rates in requests/s, e.g. 50,100 (alone: only these)."),
    own("duration", float | None, None, "Measured seconds per level (default 10), or per profile (default 3)."),
    own("warmup", float | None, None, "Unrecorded seconds before each level (default 2) or profile (default 1)."),
    own("max_requests", int | None, None, "Stop a level after this many recorded requests."),
    own("batch", int, 1, "Rows per request (or per run, with --profile)."),
    own("data", Path | None, None, "Inputs from an .npz (arrays named like the inputs, first axis = samples)."),
    own("text", Path | None, None, "Text inputs, one per line (default for text models: the bundled sentences)."),
    own("timeout", float, 30.0, "Per-request timeout in seconds."),
    own("token", str | None, None, "Bearer token for a server started with one."),
    own("as_json", bool, False, "Print the report as JSON on stdout.", "--json"),
    own("plot", Path | None, None, "Draw latency against throughput to this .png."),
    own("profile", list[str] | None, None, "Run MODEL here, in a child process, under a device profile (repeatable "
        "or comma-separated to compare; see --list-profiles). Exit code 3: measured, and it does not fit a profile.",
        "--profile"),
    own("threads", int | None, None, "With --profile: override its threads (alone: a custom profile)."),
    own("memory_mb", int | None, None, "With --profile: override its memory cap in MB (alone: a custom profile)."),
    own("cpu_quota", float | None, None, "With --profile: override its CPU quota in cores (alone: a custom profile)."),
    own("list_profiles", bool, False, "List the device profiles and exit.", "--list-profiles"),
)
SERVER_ONLY = ("url", "version", "concurrency", "rate", "max_requests", "text", "token", "plot", "protocol",
               "binary", "grpc_port", "clients")
"""bench options that load a server: refused with --profile (it runs the model here)."""


@app.command()
@takes(*BENCH_FLAGS)
def bench(
    model: Annotated[str | None, typer.Argument(help="The served model's name; with --profile: an edge bundle folder, an .onnx file, a student folder or a bundled name.")] = None,
    **options: Any,
) -> None:
    """Load an Open Inference Protocol v2 server and report throughput, latency percentiles and errors.

    With --profile, run MODEL locally under constrained device profiles instead and report
    latency, throughput, peak RSS and whether it fits (exit code 3 when it does not fit one).
    """
    o = options
    if o["list_profiles"]:
        _list_profiles(o["as_json"])
    elif o["profile"] or any(o[k] is not None for k in ("threads", "memory_mb", "cpu_quota")):
        given = [f"--{k.replace('_', '-')}" for k in SERVER_ONLY if o[k] is not None and o[k] is not False]
        _bench_profiles(model, o["profile"] or [], threads=o["threads"], memory_mb=o["memory_mb"],
                        cpu_quota=o["cpu_quota"], batch=o["batch"], duration=o["duration"], warmup=o["warmup"],
                        data=o["data"], as_json=o["as_json"], server_only=given)
    else:
        _bench_server(model, o)


def _bench_server(model: str | None, o: dict[str, Any]) -> None:
    """``inferno bench MODEL``: load the server at --url and report (BenchConfig's defaults where not given)."""
    from inferno.bench import run_bench
    from inferno.bench.config import make_config, parse_list
    from inferno.bench.render import notes, progress_bar, table
    from inferno.bench.render import plot as draw
    from inferno.errors import ConfigError

    if model is None:
        raise ConfigError("MODEL: expected the served model's name (or --profile with a model to run here), got none")
    given = {"model": model, "url": o["url"] or None, "version": o["version"], "duration_s": o["duration"],
             "warmup_s": o["warmup"], "max_requests": o["max_requests"], "batch": o["batch"], "data": o["data"],
             "text": o["text"], "timeout_s": o["timeout"], "token": o["token"], "protocol": _protocol(o["protocol"]),
             "binary": o["binary"], "grpc_port": o["grpc_port"], "clients": o["clients"]}
    settings = {key: value for key, value in given.items() if value is not None}
    if o["concurrency"] is not None:
        settings["concurrency"] = parse_list("--concurrency", o["concurrency"], int)
    if o["rate"] is not None:
        settings["rates"] = parse_list("--rate", o["rate"], float)
    config = make_config(**settings)
    plot = o["plot"]
    if plot is not None and not plot.parent.is_dir():
        raise ConfigError(f"--plot {plot}: folder {plot.parent} does not exist")
    with progress_bar(err) as update:
        report = run_bench(config, progress=update)
    if plot is not None:
        draw(report, plot)
    if o["as_json"]:
        print(report.to_json())
        return
    out.print(table(report))
    for line in notes(report):
        err.print(line, markup=False, highlight=False, soft_wrap=True)
    if plot is not None:
        out.print(f"plot saved to {plot}")


def _protocol(value: str | None) -> str | None:
    """``--protocol``: http or grpc (any case); None lets the URL decide."""
    from inferno.errors import ConfigError

    if value is None:
        return None
    if value.lower() not in ("http", "grpc"):
        raise ConfigError(f"--protocol: expected http or grpc, got {value!r}")
    return value.lower()


def _bench_profiles(model: str | None, names: list[str], *, threads: int | None, memory_mb: int | None,
                    cpu_quota: float | None, batch: int, duration: float | None, warmup: float | None,
                    data: Path | None, as_json: bool, server_only: list[str]) -> None:
    """``inferno bench MODEL --profile ...``: each profile in a child process, one table; exit 3 if one does not fit."""
    from inferno.bench.render import progress_bar
    from inferno.edge import profile_report
    from inferno.edge.profiles import (
        EXIT_DOES_NOT_FIT,
        prepare_target,
        resolve_profiles,
        run_profile,
    )
    from inferno.errors import ConfigError

    if server_only:
        raise ConfigError(f"{', '.join(server_only)}: not with --profile (it runs MODEL here, without a server)")
    if model is None:
        raise ConfigError("MODEL: expected an edge bundle folder, an .onnx file, a student folder or a bundled "
                          "name to run under --profile, got none")
    profiles = resolve_profiles(names, threads=threads, memory_mb=memory_mb, cpu_quota=cpu_quota)
    results = []
    with progress_bar(err) as update:
        update(f"loading {model}", 0.0)
        with prepare_target(model, batch=batch, data=data) as target:
            for i, chosen in enumerate(profiles):
                results.append(run_profile(target, chosen, duration_s=3.0 if duration is None else duration,
                                           warmup_s=1.0 if warmup is None else warmup,
                                           progress=_share(update, i, len(profiles))))
    if as_json:
        print(profile_report.to_json(results))
    else:
        out.print(profile_report.table(results))
        for line in profile_report.notes(results):
            err.print(line, markup=False, highlight=False, soft_wrap=True)
    if not all(r.fits for r in results):
        raise SystemExit(EXIT_DOES_NOT_FIT)


def _share(update: Callable[[str, float], None], index: int, count: int) -> Callable[[str, float], None]:
    """A progress callback for part ``index`` of ``count`` of one bar."""
    return lambda what, done: update(what, (index + done) / count)


def _list_profiles(as_json: bool) -> None:
    from inferno.edge.profiles import PROFILES

    if as_json:
        print(json.dumps([p.model_dump() for p in PROFILES.values()], indent=2))
        return
    grid = Table(title="device profiles (inferno bench MODEL --profile NAME)")
    for column in ("profile", "threads", "memory cap", "cores", "description"):
        grid.add_column(column, justify="right" if column in ("threads", "memory cap", "cores") else "left")
    for p in PROFILES.values():
        grid.add_row(p.name, str(p.threads), f"{p.memory_mb:,} MB" if p.memory_mb else "none", f"{p.cores:g}",
                     p.description)
    out.print(grid)


@app.command()
def monitor(
    url: Annotated[str, typer.Argument(metavar="[URL]", help="The server, http(s)://host[:port]; nothing else is contacted.")] = "http://127.0.0.1:8000",
    model: Annotated[list[str] | None, typer.Option("--model", help="Watch only this model (repeatable; default: every READY model).")] = None,
    interval: Annotated[float, typer.Option(help="Seconds between polls.")] = 2.0,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds (default: at Ctrl-C).")] = None,
    plot: Annotated[Path | None, typer.Option(help="At the end, draw score/threshold over time to this .png.")] = None,
    token: Annotated[str | None, typer.Option(help="Bearer token for a server started with one (or INFERNO_SERVE_TOKEN).")] = None,
    once: Annotated[bool, typer.Option("--once", help="Print one table and exit (for scripts).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --once: print the drift documents as JSON.")] = False,
) -> None:
    """Watch drift on a running server: a live table per model version, and scores over time."""
    from inferno.config import serve_token
    from inferno.errors import ConfigError, UserInputError
    from inferno.monitoring.view import History, Poller, make_config, table, watch
    from inferno.monitoring.view import plot as draw

    config = make_config(url=url, models=tuple(model or ()), interval_s=interval, duration_s=duration,
                         plot=plot, token=token or serve_token())
    if as_json and not once:
        raise ConfigError("--json: only with --once (the live view has no JSON form)")
    poller = Poller(config.url, config.token)
    poller.check(config.models)
    history = History()
    if once:
        snapshot = poller.poll(config.models)
        if snapshot.error is not None:
            raise UserInputError(snapshot.error)
        history.record(snapshot)
        if as_json:
            print(json.dumps(snapshot.documents, indent=2))
        else:
            out.print(table(snapshot.entries, title=f"inferno monitor: drift at {config.url}"))
    else:
        watch(poller, config, history, out)
    if config.plot is not None:
        draw(history, config.plot)
        (err if as_json else out).print(f"plot saved to {config.plot}")


def _recipes(text: str) -> tuple[str, ...]:
    from inferno.errors import ConfigError
    from inferno.tuning.recipes import RECIPES

    names = tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise ConfigError(f"--variants: unknown {unknown}; expected some of {', '.join(RECIPES)}")
    return names


def _accelerate_with_progress(model: str, **settings: Any) -> Any:
    """Run ``accelerate`` with a progress bar on stderr; returns its Report."""
    from inferno.tuning import accelerate as run

    with new_progress() as progress:
        task_id = progress.add_task("loading the model", total=None)

        def update(what: str, done: int, total: int) -> None:
            progress.update(task_id, description=what, completed=done, total=total)

        return run(model, progress=update, **settings)


