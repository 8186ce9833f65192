"""Benchmarks: training speed and FLOPs (:mod:`~medsg_lib.bench.train`, :mod:`~medsg_lib.bench.flops`) and
the metrics pipeline
(:mod:`~medsg_lib.bench.metrics`: our FID against pytorch-fid, the Table 1 evaluation).

Each returns a JSON-able dict; ``python -m medsg_lib bench train|metrics`` prints it or appends it to a JSONL
record.
"""

from medsg_lib.bench.flops import PEAK_TFLOPS, count_flops, peak_tflops, utilisation
from medsg_lib.bench.metrics import (
    RANDOM_WEIGHTS_NOTE,
    bench_metrics,
    bench_table1,
    metrics_worker,
    metrics_worker_main,
    write_noise_pngs,
    write_random_fid_weights,
)
from medsg_lib.bench.train import bench_config, bench_summary, bench_table, bench_train, step_flops

__all__ = [
    "PEAK_TFLOPS",
    "RANDOM_WEIGHTS_NOTE",
    "bench_config",
    "bench_metrics",
    "bench_summary",
    "bench_table",
    "bench_table1",
    "bench_train",
    "count_flops",
    "metrics_worker",
    "metrics_worker_main",
    "peak_tflops",
    "step_flops",
    "utilisation",
    "write_noise_pngs",
    "write_random_fid_weights",
]
