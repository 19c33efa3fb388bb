"""A load generator for any Open Inference Protocol v2 server (inferno's, Triton's, MLServer's).

Closed-loop concurrency sweeps and open-loop Poisson rates, with warm-up, a fixed duration
and a bound on requests; inputs from the model's evaluation data or synthesized from its
metadata. Over HTTP (JSON or Triton's binary tensor extension, on lean keep-alive
connections) or Triton's gRPC service, from one or several processes, so that the generator is
not what limits a measurement. It contacts only the server it is given.
"""

from inferno.bench.config import BenchConfig
from inferno.bench.runner import run_bench
from inferno.bench.stats import BenchReport, LoadPoint

__all__ = ["BenchConfig", "BenchReport", "LoadPoint", "run_bench"]
