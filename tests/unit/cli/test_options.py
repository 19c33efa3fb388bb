"""The CLI's options come from the config models: one default and one help text per field."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import typer

from inferno.cli import commands, serve
from inferno.cli.options import MIB, bound, own, takes, values
from inferno.config import AccelerateConfig
from inferno.errors import ConfigError
from inferno.serving.config import ModelServeConfig, ServeConfig


def test_every_model_setting_is_a_serve_option() -> None:
    filled = {f.target for f in serve.SERVE_FLAGS if f.model is ModelServeConfig}
    assert filled == set(ModelServeConfig.model_fields)


def test_bound_options_show_the_fields_default_and_help() -> None:
    for flags in (serve.SERVE_FLAGS, commands.ACCELERATE_FLAGS):
        for flag in flags:
            if flag.model is None:
                continue
            field = flag.model.model_fields[flag.target]
            option = flag.parameter().default
            assert isinstance(option, typer.models.OptionInfo)
            expected = field.default if field.default is None or flag.per == 1 else field.default / flag.per
            assert option.default == expected, flag.name
            assert option.help == (flag.help or field.description) and option.help, flag.name


def test_values_fill_the_fields_in_their_units() -> None:
    flags = (bound(ModelServeConfig, "cache_mb", float, field="cache_bytes", per=MIB),
             bound(ServeConfig, "max_response_mb", float | None, field="max_response_bytes", per=MIB),
             bound(AccelerateConfig, "repeats", int), own("json", bool, False, "JSON."))
    given = {"cache_mb": 1.5, "max_response_mb": None, "repeats": 7, "json": True}
    assert values(flags, given, ModelServeConfig) == {"cache_bytes": int(1.5 * MIB)}
    assert values(flags, given, ServeConfig) == {"max_response_bytes": None}
    assert values(flags, given, AccelerateConfig) == {"repeats": 7}


def test_takes_gives_the_command_its_options_in_order() -> None:
    @takes(own("first", int, 1, "One."), bound(ServeConfig, "port", int))
    def command(target: str = "x", **options: object) -> None: ...

    params = list(inspect.signature(command).parameters.values())
    assert [p.name for p in params] == ["target", "first", "port"]
    assert params[2].default.default == 8000 and params[2].annotation is int


def _serve_options(**given: object) -> dict[str, object]:
    defaults = {p.name: p.default.default for p in inspect.signature(serve.serve).parameters.values()
                if isinstance(p.default, typer.models.OptionInfo)}
    return {**defaults, "grpc_port": 0, **given}


def test_serve_options_become_the_serve_config(tmp_path: Path) -> None:
    from tests.unit.serving.plans import relu, write_plan

    repo = tmp_path / "repo"
    write_plan(repo, "relu", relu())
    config = serve._serve_config(str(repo), _serve_options(cache_mb=2.0, queue_size=7, drift_method="psi",
                                                              validation_margin=0.5, group_by_length=False))
    assert config.models == () and config.grpc_port is None and config.max_body_bytes == 64 * MIB
    assert config.defaults == ModelServeConfig(cache_bytes=2 * MIB, max_queue_size=7, drift_method="psi",
                                               validation_margin=0.5, group_by_length=False)
    with pytest.raises(ConfigError, match="drift_method"):
        serve._serve_config(str(repo), _serve_options(drift_method="fast"))


def test_serve_without_a_folder_serves_the_repository_option(tmp_path: Path) -> None:
    from tests.unit.serving.plans import relu, write_plan

    repo = tmp_path / "repo"
    write_plan(repo, "relu", relu())
    config = serve._serve_config(None, _serve_options(repository=repo))
    assert config.repository == repo
    with pytest.raises(ConfigError, match="repository 'nowhere'"):
        serve._serve_config(None, _serve_options(repository=Path("nowhere")))
    assert serve._serve_config(str(repo), _serve_options(repository=Path("nowhere"))).repository == repo


@pytest.mark.parametrize("given", [{"replicas": 2}, {"address": "auto"}, {"autoscale": "1:3"}, {"replica_cpus": 0.5}])
def test_ray_placement_options_need_ray(given: dict[str, object]) -> None:
    flag = "--" + next(iter(given)).replace("_", "-")
    with pytest.raises(ConfigError, match=f"{flag}: expected with --ray"):
        serve._ray_cluster(_serve_options(**given))


def test_without_ray_no_cluster_starts() -> None:
    assert serve._ray_cluster(_serve_options()) is None
