"""Training: one engine (`engine`: a task protocol, one loop, schedules, checkpoints, DDP) and
the ANP's meta-training task on it (data per the paper's protocol, `trainer`). The command line
(`probcons train`, `probcons calibrate`) is `probcons.training.command`, kept out of this
package's import so that the engine does not pull in the runner.
"""

from probcons.training.data import sample_batch
from probcons.training.fit import train_anp
from probcons.training.trainer import TrainingOptions, TrainingResult

__all__ = ["TrainingOptions", "TrainingResult", "sample_batch", "train_anp"]
