"""Meta-training of the ANP backbone: data per the paper's protocol, trainer, command."""

from probcons.training.command import add_train_arguments, train_command
from probcons.training.data import sample_batch
from probcons.training.trainer import TrainingOptions, TrainingResult, train_anp

__all__ = [
    "TrainingOptions",
    "TrainingResult",
    "add_train_arguments",
    "sample_batch",
    "train_anp",
    "train_command",
]
