"""``inferno cascade``: answer on the edge when confident, forward the rest to a cloud server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from inferno.cli._app import app, err, new_progress, out

if TYPE_CHECKING:
    from inferno.edge.cascade import Cascade, CascadeEvaluation, SweepResult
    from inferno.models.model import EvalData


@app.command()
def cascade(
    edge: Annotated[str, typer.Argument(metavar="EDGE", help="The edge model: an edge bundle folder, an .onnx file, a student "
                                             "folder or a bundled name; a classifier.")],
    cloud_url: Annotated[str, typer.Argument(metavar="CLOUD_URL",
                                             help="The cloud inferno server, http(s)://host[:port].")],
    model: Annotated[str | None, typer.Option(help="The model's name at the cloud (default: the edge's "
                                                   "teacher or source name).")] = None,
    version: Annotated[str | None, typer.Option(help="Its version at the cloud (default: the server's choice).")] = None,
    threshold: Annotated[float, typer.Option(help="Answer on the edge when its confidence is at least this (0..1).")] = 0.99,
    rule: Annotated[str, typer.Option(help="Confidence: top (best probability) or margin (best minus second).")] = "top",
    do_sweep: Annotated[bool, typer.Option("--sweep", help="Score many thresholds: accuracy, edge share, latency.")] = False,
    thresholds: Annotated[str | None, typer.Option(help="With --sweep: thresholds, e.g. 0.5,0.9,0.99.")] = None,
    rtt_ms: Annotated[float, typer.Option(help="Simulated network round trip added to each forwarded request, ms.")] = 0.0,
    data: Annotated[Path | None, typer.Option(help="Evaluation data: .npz of the edge's inputs and 'labels' "
                                                   "(default: the edge's source model's).")] = None,
    batch_size: Annotated[int, typer.Option(help="Rows per request while scoring.")] = 1,
    tolerance: Annotated[float, typer.Option(help="Operating point: accuracy at most this many points below "
                                                  "the cloud alone.")] = 0.5,
    plot: Annotated[Path | None, typer.Option(help="With --sweep: draw accuracy and latency against edge share to this .png.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
    serve: Annotated[bool, typer.Option("--serve", help="Serve the cascade as a local v2 server in front of the cloud.")] = False,
    host: Annotated[str, typer.Option(help="With --serve: address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="With --serve: port to listen on.")] = 8100,
    threads: Annotated[int | None, typer.Option(help="Edge threads (default: the bundle's, else 1).")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the cloud.")] = 30.0,
    token: Annotated[str | None, typer.Option(help="The cloud's bearer token (or INFERNO_SERVE_TOKEN).")] = None,
) -> None:
    """Answer on the edge when confident, forward the rest to the cloud: evaluate, sweep or serve."""
    from inferno.bench.config import parse_list
    from inferno.config import serve_token
    from inferno.edge.cascade import DEFAULT_THRESHOLDS, Cascade, CloudClient, load_edge
    from inferno.edge.sweep import check_rule, check_threshold
    from inferno.errors import ConfigError

    check_threshold(threshold)
    grid = parse_list("--thresholds", thresholds, float) if thresholds else DEFAULT_THRESHOLDS
    for t in grid:
        check_threshold(t, "--thresholds")
    if do_sweep and serve:
        raise ConfigError("--sweep and --serve: expected one of them, got both")
    if plot is not None and (not do_sweep or not plot.parent.is_dir()):
        raise ConfigError(f"--plot {plot}: expected with --sweep, into an existing folder")
    if not 0 <= tolerance < 100:
        raise ConfigError(f"--tolerance {tolerance}: expected accuracy points from 0 to below 100")
    if timeout <= 0:
        raise ConfigError(f"--timeout {timeout}: expected seconds > 0")
    edge_model = load_edge(edge, threads=threads)
    client = CloudClient(cloud_url, model or edge_model.cloud_model, version, timeout_s=timeout,
                         token=token or serve_token(), output=None)
    runner = Cascade(edge_model, client, threshold, check_rule(rule))
    runner.check_cloud()
    if serve:
        _serve(runner, model or edge_model.cloud_model, host, port)
    elif do_sweep:
        _sweep(runner, edge_model.eval_data(data), grid, rtt_ms, batch_size, tolerance, plot, as_json)
    else:
        _evaluate(runner, edge_model.eval_data(data), rtt_ms, batch_size, as_json)


def _serve(runner: Cascade, name: str, host: str, port: int) -> None:
    """Serve the cascade as model ``name`` through ``inferno serve``'s app, until SIGTERM/SIGINT."""
    from inferno.serving.cascade import cascade_app, cascade_config
    from inferno.serving.server import serve

    config = cascade_config(host, port)
    err.print(f"cascade {name}: edge {runner.edge.name} (T={runner.threshold:g}, {runner.rule}) in front of "
              f"{getattr(runner.cloud, 'url', 'the cloud')}, serving on http://{host}:{port}",
              markup=False, highlight=False)
    serve(config, cascade_app(runner, name, config))


def _sweep(runner: Cascade, eval_data: EvalData, grid: tuple[float, ...], rtt_ms: float,
           batch_size: int, tolerance: float, plot: Path | None, as_json: bool) -> None:
    from inferno.edge.cascade import plot_sweep, sweep

    samples: dict[str, Any] = dict(eval_data.samples)  # type: ignore[arg-type]
    labels: Any = eval_data.labels  # eval_data() has checked there are labels
    with new_progress() as bar:
        task = bar.add_task("edge", total=len(labels))

        def update(what: str, done: int, total: int) -> None:
            bar.update(task, description=what, completed=done, total=total)

        result = sweep(runner.edge, runner.cloud, samples, labels, grid, rule=runner.rule, rtt_ms=rtt_ms,
                       batch_size=batch_size, tolerance=tolerance / 100, progress=update)
    if plot is not None:
        plot_sweep(result, plot)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
        return
    out.print(sweep_table(result))
    for line in sweep_notes(result):
        out.print(line, markup=False, highlight=False, soft_wrap=True)
    if plot is not None:
        out.print(f"plot saved to {plot}")


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def sweep_table(result: SweepResult) -> Table:
    """One row per threshold; the operating point marked."""
    table = Table(title=f"cascade sweep: {result.rows} rows, {result.rule} rule, round trip {result.rtt_ms:g} ms")
    for column in ("threshold", "on edge", "accuracy", "Δ vs cloud", "edge acc. (its share)",
                   "cloud acc. (the rest)", "mean latency ms"):
        table.add_column(column, justify="right")
    for p in result:
        mark = " ◀" if p == result.operating else ""
        table.add_row(f"{p.threshold:g}{mark}", _pct(p.edge_share), _pct(p.accuracy),
                      f"{100 * (p.accuracy - result.cloud_accuracy):+.2f} pt", _pct(p.edge_accuracy),
                      _pct(p.cloud_accuracy), f"{p.mean_latency_ms:.3f}")
    return table


def sweep_notes(result: SweepResult) -> list[str]:
    """The lines under the table: references, the operating point, its cross-validated figure."""
    lines = [f"cloud alone: accuracy {_pct(result.cloud_accuracy)}, {result.cloud_latency_ms:.3f} ms per request; "
             f"edge alone: accuracy {_pct(result.edge_accuracy)}, {result.edge_latency_ms:.3f} ms per request"]
    op = result.operating
    if op is None:
        lines.append(f"operating point: none — no threshold keeps accuracy within "
                     f"{100 * result.tolerance:g} pt of the cloud alone")
    else:
        lines.append(f"operating point (within {100 * result.tolerance:g} pt of the cloud alone, most on the edge): "
                     f"T={op.threshold:g}: {_pct(op.edge_share)} on the edge, accuracy {_pct(op.accuracy)} "
                     f"({100 * (op.accuracy - result.cloud_accuracy):+.2f} pt), {op.mean_latency_ms:.3f} ms per request")
    cv = result.cross_validated
    if cv is not None:
        chosen = ", ".join("none" if t is None else f"{t:g}" for t in cv.thresholds)
        lines.append(f"2-fold cross-validated (T chosen on one half, scored on the other; T = {chosen}): "
                     f"{_pct(cv.edge_share)} on the edge, accuracy {_pct(cv.accuracy)} "
                     f"({100 * (cv.accuracy - cv.cloud_accuracy):+.2f} pt"
                     f"{'' if cv.within_tolerance else ', outside the tolerance'})")
    return lines


def _evaluate(runner: Cascade, eval_data: EvalData, rtt_ms: float, batch_size: int, as_json: bool) -> None:
    from inferno.edge.cascade import evaluate_cascade

    samples: dict[str, Any] = dict(eval_data.samples)  # type: ignore[arg-type]
    labels: Any = eval_data.labels  # eval_data() has checked there are labels
    with new_progress() as bar:
        task = bar.add_task("cascade", total=len(labels))
        result = evaluate_cascade(runner, samples, labels, batch_size=batch_size, rtt_ms=rtt_ms,
                                  progress=lambda _w, done, _n: bar.update(task, completed=done))
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
        return
    out.print(evaluation_line(result), markup=False, highlight=False, soft_wrap=True)


def evaluation_line(result: CascadeEvaluation) -> str:
    return (f"cascade at T={result.threshold:g} ({result.rule}) on {result.rows} rows, {result.batch_size} per request: "
            f"{_pct(result.edge_share)} answered on the edge, accuracy {_pct(result.accuracy)} "
            f"(edge {_pct(result.edge_accuracy)} on its share, cloud {_pct(result.cloud_accuracy)} on the rest), "
            f"mean latency {result.mean_latency_ms:.3f} ms per request (round trip {result.rtt_ms:g} ms)")
