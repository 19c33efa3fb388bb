"""Command options declared once, in a table per command, and read from the config models.

A :class:`Flag` bound to a field of a config model (``ServeConfig``, ``ModelServeConfig``,
``AccelerateConfig``) takes its default and its help from the field, and its value goes back
to that field (:func:`values`), so a default exists in one place: the model. Options of the
command itself (``--json``, ``--repository`` ...) say their own default and help.

``@takes(*flags)`` gives a command taking ``**options`` those options, in the table's order
(Typer reads the command's ``__signature__``); ``--help`` lists them in that order.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import typer
from pydantic import BaseModel

MIB = 2**20
"""``per`` of a ``--...-mb`` option that fills a ``..._bytes`` field."""

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Flag:
    """One option: ``--name-with-dashes`` (or ``decls``), parsed as ``kind``."""

    name: str
    kind: Any
    model: type[BaseModel] | None = None
    """The config model whose field this option fills; None: the command's own option."""
    field: str | None = None
    """The field, when not named like the option (``--queue-size`` → ``max_queue_size``)."""
    per: int = 1
    """Field units per option unit: ``MIB`` for an option in MiB that fills bytes."""
    help: str | None = None
    """Help when the field's description does not fit the option (units, other flags)."""
    default: Any = None
    """The default of an option of the command's own (a bound option's is the field's)."""
    decls: tuple[str, ...] = ()
    metavar: str | None = None

    @property
    def target(self) -> str:
        return self.field or self.name

    def parameter(self) -> inspect.Parameter:
        """The keyword parameter Typer makes the option from."""
        default, help_text = self.default, self.help
        if self.model is not None:
            info = self.model.model_fields[self.target]
            default = info.default if info.default is None or self.per == 1 else info.default / self.per
            help_text = help_text or info.description
        option = typer.Option(default, *self.decls, help=help_text, metavar=self.metavar)
        return inspect.Parameter(self.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=self.kind)

    def value(self, given: Any) -> Any:
        """The field's value for what the option was given."""
        return given if given is None or self.per == 1 else int(given * self.per)


def bound(model: type[BaseModel], name: str, kind: Any, *, field: str | None = None, per: int = 1,
          help: str | None = None) -> Flag:
    """An option filling ``model.<field or name>``: default and help from the field."""
    return Flag(name, kind, model, field, per, help)


def own(name: str, kind: Any, default: Any, help: str, *decls: str, metavar: str | None = None) -> Flag:
    """An option of the command itself."""
    return Flag(name, kind, help=help, default=default, decls=decls, metavar=metavar)


def takes(*flags: Flag) -> Callable[[F], F]:
    """Give a command with ``**options`` these options, after its own parameters (its arguments)."""

    def decorate(command: F) -> F:
        signature = inspect.signature(command, eval_str=True)
        params = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        setattr(command, "__signature__",  # noqa: B010  (mypy: a Callable has no __signature__)
                signature.replace(parameters=[*params, *(f.parameter() for f in flags)]))
        return command

    return decorate


def values(flags: Sequence[Flag], options: Mapping[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    """The fields of ``model`` that ``options`` (a command's ``**options``) fill."""
    return {f.target: f.value(options[f.name]) for f in flags if f.model is model}
