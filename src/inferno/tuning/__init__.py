"""Build variants, measure them on every runtime, choose under the accuracy budget."""

from inferno.tuning.accelerate import accelerate, choose
from inferno.tuning.recipes import RECIPES, Recipe
from inferno.tuning.report import Chosen, Measurement, Report

__all__ = ["RECIPES", "Chosen", "Measurement", "Recipe", "Report", "accelerate", "choose"]
