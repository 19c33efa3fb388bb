"""``inferno serve``: a repository over the Open Inference Protocol, on this machine or with
its model replicas on Ray Serve (``--ray``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from inferno.cli._app import app, err, state
from inferno.cli.commands import _accelerate_with_progress
from inferno.cli.options import MIB, bound, own, takes, values
from inferno.serving.config import ModelServeConfig, ServeConfig

SERVE_FLAGS = (
    own("model", list[str] | None, None, "Serve only this model (repeatable).", "--model"),
    bound(ServeConfig, "host", str),
    bound(ServeConfig, "port", int),
    own("grpc_port", int | None, None, "Triton's gRPC service on this port (0: off; default 8001 when the "
        "\\[grpc] extra is installed)."),
    own("repository", Path, Path("model_repository"), "Repository for a bundled model name."),
    own("token", str | None, None, "Bearer token for all but health endpoints (or INFERNO_SERVE_TOKEN)."),
    bound(ModelServeConfig, "max_batch_size", int | None),
    bound(ModelServeConfig, "max_queue_delay_us", int),
    bound(ModelServeConfig, "queue_size", int, field="max_queue_size"),
    bound(ModelServeConfig, "instances", int),
    bound(ModelServeConfig, "threads", int | None),
    bound(ModelServeConfig, "cache_mb", float, field="cache_bytes", per=MIB, help="Response cache size in MiB (0: off)."),
    bound(ModelServeConfig, "timeout_s", float),
    bound(ModelServeConfig, "group_by_length", bool),
    bound(ServeConfig, "max_body_mb", float, field="max_body_bytes", per=MIB,
          help="Largest request body, MiB (larger: 413)."),
    bound(ServeConfig, "max_response_mb", float | None, field="max_response_bytes", per=MIB,
          help="Largest response, MiB (larger: 400 naming the limit; default: --max-body-mb)."),
    bound(ServeConfig, "max_connections", int),
    bound(ServeConfig, "keep_alive_timeout_s", float),
    bound(ServeConfig, "header_timeout_s", float),
    bound(ServeConfig, "body_timeout_s", float),
    bound(ServeConfig, "trust", bool),
    bound(ServeConfig, "versions", str),
    bound(ModelServeConfig, "drift", bool),
    bound(ModelServeConfig, "drift_window", int),
    bound(ModelServeConfig, "drift_share", float),
    bound(ModelServeConfig, "drift_method", str),
    bound(ModelServeConfig, "drift_threshold", float | None),
    bound(ModelServeConfig, "drift_check_every", int),
    bound(ModelServeConfig, "drift_check_interval_s", float),
    bound(ModelServeConfig, "validation", str),
    bound(ModelServeConfig, "validation_margin", float),
    bound(ServeConfig, "log_predictions", Path | None),
    bound(ServeConfig, "log_max_mb", float, field="log_max_bytes", per=MIB, help="Disk budget of --log-predictions, MiB."),
    bound(ServeConfig, "strict_readiness", bool),
    own("ray", bool, False, "Run each model's replicas on Ray Serve (the \\[ray] extra); this process serves "
        "HTTP and gRPC in front of them.", "--ray"),
    own("address", str | None, None, "Ray cluster to join with --ray (auto, HOST:PORT); default: a local "
        "Ray instance for this server."),
    own("replicas", int, 1, "Ray replicas per model version (--ray)."),
    own("autoscale", str | None, None, "MIN:MAX Ray replicas per model version, scaled on the batches in "
        "flight (--ray; 0:MAX lets an idle model scale to zero).", metavar="MIN:MAX"),
    own("replica_cpus", float | None, None, "Ray CPUs each replica reserves (--ray; default: the plan's threads)."),
)
RAY_ONLY = ("address", "replicas", "autoscale", "replica_cpus")


@app.command()
@takes(*SERVE_FLAGS)
def serve(
    target: Annotated[str | None, typer.Argument(
        metavar="[REPO]", help="Model repository folder, or a bundled model name (minilm, digits): "
                               "served from --repository, accelerated first when it has no plan yet "
                               "(default: the --repository folder).")] = None,
    **options: Any,
) -> None:
    """Serve a model repository over the Open Inference Protocol v2 (KServe / Triton clients work)."""
    from inferno.serving import serve as run_server

    config = _serve_config(target, options)
    logging.getLogger("inferno").setLevel(logging.DEBUG if state["debug"] else logging.INFO)
    served = config.models or _served_models(config.repository)
    grpc = f" and grpc://{config.host}:{config.grpc_port}" if config.grpc_port else ""
    cluster = _ray_cluster(options)
    on_ray = "" if cluster is None else f" (replicas on Ray Serve, {cluster.where})"
    err.print(f"serving {', '.join(served)} from {config.repository} on http://{config.host}:{config.port}{grpc}"
              f"{on_ray} (ready when /v2/health/ready answers 200; Ctrl-C or SIGTERM stops after in-flight requests)")
    if cluster is None:
        run_server(config)
        return
    from inferno.serving.app import InfernoApp

    try:
        served_app = InfernoApp(config, runners=cluster.runners)
        cluster.export_metrics(served_app.metrics.registry)
        run_server(config, served_app)
    finally:
        cluster.close()


def _ray_cluster(options: dict[str, Any]) -> Any:
    """The Ray instance ``--ray`` asks for (started or joined), or None without ``--ray``."""
    from inferno.errors import ConfigError

    defaults = {"address": None, "replicas": 1, "autoscale": None, "replica_cpus": None}
    if not options["ray"]:
        given = [f"--{n.replace('_', '-')}" for n in RAY_ONLY if options[n] != defaults[n]]
        if given:
            raise ConfigError(f"{', '.join(given)}: expected with --ray (they place Ray replicas), got no --ray")
        return None
    from inferno.distributed import RayOptions
    from inferno.distributed.cluster import RayCluster

    ray_options = RayOptions(address=options["address"], replicas=options["replicas"],
                             autoscale=RayOptions.parse_autoscale(options["autoscale"]),
                             replica_cpus=options["replica_cpus"])
    err.print("starting a local Ray instance" if ray_options.address is None
              else f"joining the Ray cluster at {ray_options.address}")
    return RayCluster(ray_options)


def _serve_config(target: str | None, options: dict[str, Any]) -> ServeConfig:
    """``inferno serve``'s options as a ServeConfig: the repository found (a bundled name is
    accelerated first when it has no plan), its models checked, gRPC on when installed."""
    from pydantic import ValidationError

    from inferno.config import describe_validation_error, serve_token
    from inferno.errors import ConfigError

    grpc_port = options["grpc_port"]
    if grpc_port is None:
        import importlib.util

        grpc_port = 8001 if importlib.util.find_spec("grpc") is not None else 0
        if not grpc_port:
            err.print("gRPC off: pip install 'inferno[grpc]' for Triton's gRPC service (--grpc-port)")
    folder, names = _serve_repository(target, list(options["model"] or []), options["repository"])
    try:
        return ServeConfig.model_validate({
            **values(SERVE_FLAGS, options, ServeConfig), "repository": folder, "models": tuple(names),
            "grpc_port": grpc_port or None, "token": options["token"] or serve_token(),
            "defaults": ModelServeConfig.model_validate(values(SERVE_FLAGS, options, ModelServeConfig)),
        })
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from exc


def _serve_repository(target: str | None, names: list[str], repository: Path) -> tuple[Path, list[str]]:
    """The repository folder to serve and the models asked for (a bundled name: it, from
    ``repository``; no target: ``repository`` itself)."""
    from inferno import repository as repo
    from inferno.errors import ConfigError
    from inferno.models.zoo import BUNDLED

    if target is None:
        target = str(repository)
    folder = Path(target)
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
    return folder, names


def _served_models(folder: Path) -> list[str]:
    from inferno import repository as repo

    return sorted(repo.models(folder))
