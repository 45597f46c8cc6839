"""Calibration reports from posterior samples stored as ArviZ InferenceData.

`write_report(run_dirs, out)` reads the `<method>.nc` files of one or several run directories
(one function at a time) and writes report.md, a self-contained report.html and PNGs.
`to_inference_data` turns a user's Pyro samples and the truth into the same schema;
`write_inference_data` stores it as `<run_dir>/<method>.nc`.
"""

from probcons.report.calibration import (
    calibration_flag,
    coverage_from_pit,
    interval_width,
    pit_uniformity,
    randomized_pit,
)
from probcons.report.data import MethodData, to_inference_data, write_inference_data
from probcons.report.document import write_report
from probcons.report.summary import MethodSummary, summarize_method

__all__ = [
    "MethodData",
    "MethodSummary",
    "calibration_flag",
    "coverage_from_pit",
    "interval_width",
    "pit_uniformity",
    "randomized_pit",
    "summarize_method",
    "to_inference_data",
    "write_inference_data",
    "write_report",
]
