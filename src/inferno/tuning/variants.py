"""Build the candidate variants of a model by running each recipe's passes."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from inferno.errors import InfernoError
from inferno.models.model import Model
from inferno.passes import PASSES, PassContext, make_pass
from inferno.runtimes import Artifact
from inferno.tuning.recipes import RECIPES, Recipe

log = logging.getLogger(__name__)

ORT_DOMAINS = {"com.microsoft", "com.microsoft.nchwc"}


@dataclass(frozen=True)
class Variant:
    name: str
    path: Path
    recipe: Recipe
    passes: tuple[str, ...]
    ort_only: bool
    """The graph uses ONNX Runtime contrib ops, which other runtimes cannot load."""
    integer_ops: int = 0
    """Nodes of the final graph that compute or convert in integers (QuantizeLinear,
    MatMulInteger, QLinearConv, ...): what an ``int8`` label must be backed by."""
    op_delta: dict[str, int] = field(default_factory=dict)
    """Op type → count after minus count before, over all of the recipe's passes (changed types only)."""

    @property
    def precision(self) -> str:
        return self.recipe.label

    @property
    def description(self) -> str:
        return self.recipe.description

    def artifact(self, input_names: tuple[str, ...]) -> Artifact:
        return Artifact(self.path, input_names, self.recipe.precision, self.recipe.compute,
                        hints=dict(self.recipe.hints))

    @property
    def size_mb(self) -> float:
        files = [self.path, *self.path.parent.glob(self.path.stem + ".onnx.data")]
        return sum(f.stat().st_size for f in files if f.exists()) / 2**20


def model_kind(model: Model) -> str:
    if model.is_text:
        return "text"
    if any(len(t.shape) == 4 and t.dtype.startswith("float") for t in model.signature.inputs):
        return "vision"
    return "tensor"


def select_recipes(model: Model, names: Sequence[str] | None) -> list[Recipe]:
    """Recipes that fit the model's kind, or exactly ``names`` when given."""
    if names is not None:
        return [RECIPES[n] for n in names]
    kind = model_kind(model)
    return [r for r in RECIPES.values() if not r.tags or kind in r.tags]


def build_variant(recipe: Recipe, model: Model, ctx: PassContext, workdir: Path) -> Variant | str:
    """Run the recipe's passes; return the Variant, or the reason it was not built."""
    current = model.onnx_path
    applied = []
    for step, (pass_name, options) in enumerate(recipe.steps):
        if pass_name not in PASSES:
            return f"pass {pass_name!r} is not available"
        graph_pass = make_pass(pass_name, **options)
        proto = onnx.load(str(current), load_external_data=False)
        if not graph_pass.applies_to(proto, ctx):
            return f"{pass_name} does not apply to this model on this machine"
        target = workdir / f"{recipe.name}.{step}.onnx"
        try:
            graph_pass.run(current, target, ctx)
        except InfernoError as exc:
            return f"{pass_name} failed: {exc}"
        except Exception as exc:  # a third-party tool failing on this graph: record, keep going
            log.warning("pass %s failed on %s", pass_name, model.name, exc_info=True)
            return f"{pass_name} failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        applied.append(graph_pass.describe())
        current = target
    final = workdir / f"{recipe.name}.onnx"
    if current == model.onnx_path:
        shutil.copyfile(current, final)
    else:
        current.rename(final)
    domains = {op.domain for op in onnx.load(str(final), load_external_data=False).opset_import}
    return Variant(recipe.name, final, recipe, tuple(applied), ort_only=bool(domains & ORT_DOMAINS))


def build_variants(
    recipes: Sequence[Recipe], model: Model, ctx: PassContext, workdir: Path,
    on_step: Callable[[str], None] = lambda _: None,
) -> tuple[list[Variant], dict[str, str]]:
    variants, skipped = [], {}
    for recipe in recipes:
        on_step(f"building {recipe.name}")
        result = build_variant(recipe, model, ctx, workdir)
        if isinstance(result, str):
            log.info("recipe %s not built: %s", recipe.name, result)
            skipped[recipe.name] = result
        else:
            variants.append(result)
    return variants, skipped
