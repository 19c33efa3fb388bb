"""The core commands: hardware, serve, accelerate, bench, monitor."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from inferno.cli._app import app, err, new_progress, out, state


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


@app.command()
def serve(
    target: Annotated[str, typer.Argument(
        metavar="[REPO]", help="Model repository folder, or a bundled model name (minilm, digits): "
                               "served from --repository, accelerated first when it has no plan yet.")] = "model_repository",
    model: Annotated[list[str] | None, typer.Option("--model", help="Serve only this model (repeatable).")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    grpc_port: Annotated[int | None, typer.Option(help="Triton's gRPC service on this port (0: off; default "
                                                       "8001 when the \\[grpc] extra is installed).")] = None,
    repository: Annotated[Path, typer.Option(help="Repository for a bundled model name.")] = Path("model_repository"),
    token: Annotated[str | None, typer.Option(help="Bearer token for all but health endpoints "
                                                   "(or INFERNO_SERVE_TOKEN).")] = None,
    max_batch_size: Annotated[int | None, typer.Option(help="Most rows per runtime call and per request "
                                                            "(default: 64 for CPU plans, 256 for GPU plans).")] = None,
    max_queue_delay_us: Annotated[int, typer.Option(help="How long a batch may wait to fill to the size of "
                                                         "recent batches (0: run when an instance is free).")] = 10_000,
    queue_size: Annotated[int, typer.Option(help="Waiting requests beyond this get 503.")] = 1024,
    instances: Annotated[int, typer.Option(help="Model instances per version.")] = 1,
    threads: Annotated[int | None, typer.Option(help="Runtime threads per instance (default: the plan's).")] = None,
    cache_mb: Annotated[float, typer.Option(help="Response cache size in MiB (0: off).")] = 0.0,
    timeout_s: Annotated[float, typer.Option(help="Default per-request timeout, seconds.")] = 30.0,
    max_body_mb: Annotated[float, typer.Option(help="Largest request body, MiB (larger: 413).")] = 64.0,
    max_response_mb: Annotated[float | None, typer.Option(help="Largest response, MiB (larger: 400 naming the "
                                                              "limit; default: --max-body-mb).")] = None,
    max_connections: Annotated[int, typer.Option(help="Open connections at most; beyond it idle ones are "
                                                      "closed, oldest first, else 503.")] = 1000,
    keep_alive_timeout_s: Annotated[float, typer.Option(help="Close a connection idle this long, seconds.")] = 5.0,
    header_timeout_s: Annotated[float, typer.Option(help="A request's headers must arrive within this, "
                                                         "seconds from its first byte.")] = 10.0,
    body_timeout_s: Annotated[float, typer.Option(help="A request's body must arrive within this, "
                                                       "seconds after its headers.")] = 60.0,
    trust: Annotated[bool, typer.Option(help="Let plans import Python code (torch plans' module:attr source) "
                                             "and name files outside the repository.")] = False,
    versions: Annotated[str, typer.Option(help="Versions to load: latest or all.")] = "latest",
    drift: Annotated[bool, typer.Option(help="Watch for drift against each version's reference profile.")] = True,
    drift_window: Annotated[int, typer.Option(help="Rows in the drift window (first verdict when full).")] = 750,
    drift_share: Annotated[float, typer.Option(help="Drift when at least this share of features drifted.")] = 0.5,
    validation: Annotated[str, typer.Option(help="Inputs out of range, NaN/inf, unknown tokens: "
                                                 "count, reject (400) or off.")] = "count",
    log_predictions: Annotated[Path | None, typer.Option(help="Write input summaries and outputs to "
                                                             "rotating JSONL files in this folder.")] = None,
    log_max_mb: Annotated[float, typer.Option(help="Disk budget of --log-predictions, MiB.")] = 256.0,
    strict_readiness: Annotated[bool, typer.Option(help="/v2/health/ready only when every model loaded "
                                                        "(default: once one did; failed ones show in the index).")] = False,
) -> None:
    """Serve a model repository over the Open Inference Protocol v2 (KServe / Triton clients work)."""
    from pydantic import ValidationError

    from inferno import repository as repo
    from inferno.config import describe_validation_error, serve_token
    from inferno.errors import ConfigError
    from inferno.models.zoo import BUNDLED
    from inferno.serving import ModelServeConfig, ServeConfig
    from inferno.serving import serve as run_server

    if grpc_port is None:
        import importlib.util

        grpc_port = 8001 if importlib.util.find_spec("grpc") is not None else 0
        if not grpc_port:
            err.print("gRPC off: pip install 'inferno[grpc]' for Triton's gRPC service (--grpc-port)")
    folder = Path(target)
    names = list(model or [])
    if not folder.is_dir() and target in BUNDLED:
        folder, names = repository, [target, *[n for n in names if n != target]]
        if not repo.versions(folder, target):
            err.print(f"no plan for {target} in {folder} yet: running inferno accelerate {target} first")
            _accelerate_with_progress(target, repository=folder)
    if not folder.is_dir():
        raise ConfigError(f"repository {target!r}: expected a folder written by `inferno accelerate` "
                          f"or a bundled model name ({', '.join(BUNDLED)}), found neither")
    available = repo.models(folder)
    missing = [n for n in names if n not in available]
    if missing or not available:
        raise ConfigError(f"--model {missing or names}: not in repository {folder} "
                          f"(it holds {sorted(available) or 'no models'})")
    try:
        config = ServeConfig.model_validate({
            "repository": folder, "models": tuple(names), "host": host, "port": port,
            "grpc_port": grpc_port or None,
            "token": token or serve_token(), "max_body_bytes": int(max_body_mb * 2**20), "versions": versions,
            "log_predictions": log_predictions, "log_max_bytes": int(log_max_mb * 2**20),
            "strict_readiness": strict_readiness, "trust": trust,
            "max_response_bytes": None if max_response_mb is None else int(max_response_mb * 2**20),
            "max_connections": max_connections, "keep_alive_timeout_s": keep_alive_timeout_s,
            "header_timeout_s": header_timeout_s, "body_timeout_s": body_timeout_s,
            "defaults": ModelServeConfig.model_validate({
                "max_batch_size": max_batch_size, "max_queue_delay_us": max_queue_delay_us,
                "max_queue_size": queue_size, "instances": instances, "threads": threads,
                "cache_bytes": int(cache_mb * 2**20), "timeout_s": timeout_s, "drift": drift,
                "drift_window": drift_window, "drift_share": drift_share, "validation": validation}),
        })
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from exc
    logging.getLogger("inferno").setLevel(logging.DEBUG if state["debug"] else logging.INFO)
    served = names or sorted(available)
    grpc = f" and grpc://{host}:{grpc_port}" if grpc_port else ""
    err.print(f"serving {', '.join(served)} from {folder} on http://{host}:{port}{grpc} "
              "(ready when /v2/health/ready answers 200; Ctrl-C or SIGTERM stops after in-flight requests)")
    run_server(config)


@app.command()
def accelerate(
    model: Annotated[str, typer.Argument(help="Bundled name (minilm, digits), .onnx/TorchScript/.pt2 file, "
                                               "package.module:attr, or a pickle with --trust.")] = "minilm",
    budget: Annotated[str | None, typer.Option(help="Accuracy budget: '1%', 'cosine_mean=0.995,cosine_min=0.97', "
                                                    "'snr=30dB' (regression/other outputs).")] = None,
    objective: Annotated[str, typer.Option(help="Rank by 'throughput' (at --batch-size) or 'latency' (batch-1 p50).")] = "throughput",
    batch_size: Annotated[int, typer.Option(help="Serving batch size for throughput.")] = 32,
    threads: Annotated[int | None, typer.Option(help="Runtime threads (default: all cores).")] = None,
    repository: Annotated[Path, typer.Option(help="Model repository folder.")] = Path("model_repository"),
    data: Annotated[Path | None, typer.Option(help="Evaluation data .npz (arrays named like inputs, optional 'labels').")] = None,
    shape: Annotated[list[str] | None, typer.Option(
        "--shape", metavar="NAME:DIMS", help="Sizes of an input's dynamic axes, e.g. x:N,3,320,320 "
                                             "(repeatable; default: sizes the graph is found to accept).")] = None,
    trust: Annotated[bool, typer.Option(help="Allow loading a pickle (it can run arbitrary code).")] = False,
    task: Annotated[str | None, typer.Option(help="Override the task: classification, embedding, regression, other.")] = None,
    name: Annotated[str | None, typer.Option(help="Name in the repository (default: the model's).")] = None,
    variants: Annotated[str | None, typer.Option(help="Comma-separated recipes to build (default: all that apply).")] = None,
    runtimes: Annotated[str | None, typer.Option(help="Comma-separated runtimes (default: all installed).")] = None,
    repeats: Annotated[int, typer.Option(help="Timed repetitions per measurement.")] = 20,
    max_samples: Annotated[int | None, typer.Option(help="Use at most this many evaluation samples.")] = None,
    device: Annotated[str, typer.Option(help="Where candidates run: cpu, cuda (error without a GPU), "
                                             "or all (CPU and every GPU runtime found).")] = "all",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout.")] = False,
) -> None:
    """Build optimized variants, measure each on every runtime, keep the fastest within budget."""
    from inferno.config import parse_budget
    from inferno.tuning.render import COLUMNS, DEVICE_COLUMNS, device_rows, rows, summary

    settings: dict[str, Any] = {"objective": objective, "batch_size": batch_size, "repeats": repeats,
                                "max_eval_samples": max_samples, "device": device}
    if budget is not None:
        settings["budget"] = parse_budget(budget)
    if threads is not None:
        settings["threads"] = threads
    if variants:
        settings["variants"] = _recipes(variants)
    if runtimes:
        settings["runtimes"] = tuple(r.strip() for r in runtimes.split(",") if r.strip())
    report = _accelerate_with_progress(model, repository=repository, trust=trust, data=data, task=task,
                                       name=name, shapes=tuple(shape or ()), **settings)
    if as_json:
        print(report.to_json())
        return
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


@app.command()
def bench(
    model: Annotated[str | None, typer.Argument(help="The served model's name; with --profile: an edge bundle folder, an .onnx file, a student folder or a bundled name.")] = None,
    url: Annotated[str | None, typer.Option(help="The server, http(s)://host[:port] (default http://127.0.0.1:8000) or grpc://host[:port]; nothing else is contacted.")] = None,
    protocol: Annotated[str | None, typer.Option(help="http (default) or grpc: Triton's ModelInfer RPC on --grpc-port (needs the \\[grpc] extra); a grpc:// --url implies grpc.")] = None,
    binary: Annotated[bool, typer.Option("--binary", help="HTTP: tensors in Triton's binary tensor extension instead of JSON.")] = False,
    grpc_port: Annotated[int | None, typer.Option(help="With --protocol grpc and an http(s) --url: the server's gRPC port (default 8001).")] = None,
    clients: Annotated[int | None, typer.Option(help="Load-generator processes sharing each level, results merged (default: one per 128 connections or 5,000 req/s, at most one per core this command may use; a level where one was busy all along runs again with twice as many).")] = None,
    version: Annotated[str | None, typer.Option(help="Model version (default: the server's choice).")] = None,
    concurrency: Annotated[str | None, typer.Option(help="Closed-loop levels: requests outstanding, e.g. 1,16,64.")] = None,
    rate: Annotated[str | None, typer.Option(help="Open-loop Poisson rates in requests/s, e.g. 50,100 (alone: only these).")] = None,
    duration: Annotated[float | None, typer.Option(help="Measured seconds per level (default 10), or per profile (default 3).")] = None,
    warmup: Annotated[float | None, typer.Option(help="Unrecorded seconds before each level (default 2) or profile (default 1).")] = None,
    max_requests: Annotated[int | None, typer.Option(help="Stop a level after this many recorded requests.")] = None,
    batch: Annotated[int, typer.Option(help="Rows per request (or per run, with --profile).")] = 1,
    data: Annotated[Path | None, typer.Option(help="Inputs from an .npz (arrays named like the inputs, first axis = samples).")] = None,
    text: Annotated[Path | None, typer.Option(help="Text inputs, one per line (default for text models: the bundled sentences).")] = None,
    timeout: Annotated[float, typer.Option(help="Per-request timeout in seconds.")] = 30.0,
    token: Annotated[str | None, typer.Option(help="Bearer token for a server started with one.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout.")] = False,
    plot: Annotated[Path | None, typer.Option(help="Draw latency against throughput to this .png.")] = None,
    profile: Annotated[list[str] | None, typer.Option("--profile", help="Run MODEL here, in a child process, under a device profile (repeatable or comma-separated to compare; see --list-profiles). Exit code 3: measured, and it does not fit a profile.")] = None,
    threads: Annotated[int | None, typer.Option(help="With --profile: override its threads (alone: a custom profile).")] = None,
    memory_mb: Annotated[int | None, typer.Option(help="With --profile: override its memory cap in MB (alone: a custom profile).")] = None,
    cpu_quota: Annotated[float | None, typer.Option(help="With --profile: override its CPU quota in cores (alone: a custom profile).")] = None,
    list_profiles: Annotated[bool, typer.Option("--list-profiles", help="List the device profiles and exit.")] = False,
) -> None:
    """Load an Open Inference Protocol v2 server and report throughput, latency percentiles and errors.

    With --profile, run MODEL locally under constrained device profiles instead and report
    latency, throughput, peak RSS and whether it fits (exit code 3 when it does not fit one).
    """
    from inferno.bench import run_bench
    from inferno.bench.config import make_config, parse_list
    from inferno.bench.render import notes, progress_bar, table
    from inferno.bench.render import plot as draw
    from inferno.errors import ConfigError

    if list_profiles:
        _list_profiles(as_json)
        return
    if profile or threads is not None or memory_mb is not None or cpu_quota is not None:
        server_only = {"--url": url, "--version": version, "--concurrency": concurrency, "--rate": rate,
                       "--max-requests": max_requests, "--text": text, "--token": token, "--plot": plot,
                       "--protocol": protocol, "--binary": binary or None, "--grpc-port": grpc_port,
                       "--clients": clients}
        _bench_profiles(model, profile or [], threads=threads, memory_mb=memory_mb, cpu_quota=cpu_quota,
                        batch=batch, duration=duration, warmup=warmup, data=data, as_json=as_json,
                        server_only=[flag for flag, value in server_only.items() if value is not None])
        return
    if model is None:
        raise ConfigError("MODEL: expected the served model's name (or --profile with a model to run here), got none")
    settings: dict[str, Any] = {"model": model, "url": url or "http://127.0.0.1:8000", "version": version,
                                "duration_s": 10.0 if duration is None else duration,
                                "warmup_s": 2.0 if warmup is None else warmup, "max_requests": max_requests,
                                "batch": batch, "data": data, "text": text, "timeout_s": timeout, "token": token,
                                "protocol": _protocol(protocol), "binary": binary, "grpc_port": grpc_port,
                                "clients": clients}
    if concurrency is not None:
        settings["concurrency"] = parse_list("--concurrency", concurrency, int)
    if rate is not None:
        settings["rates"] = parse_list("--rate", rate, float)
    config = make_config(**settings)
    if plot is not None and not plot.parent.is_dir():
        raise ConfigError(f"--plot {plot}: folder {plot.parent} does not exist")
    with progress_bar(err) as update:
        report = run_bench(config, progress=update)
    if plot is not None:
        draw(report, plot)
    if as_json:
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


