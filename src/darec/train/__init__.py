"""Training: typed run configs, the loop, metrics, checkpoints and run directories."""

from darec.train.config import DataConfig, RunConfig, TrainConfig, build_config
from darec.train.evaluate import evaluate, sample_negatives
from darec.train.run import LoadedRun, load_companions, load_run
from darec.train.trainer import Trainer

__all__ = ["DataConfig", "LoadedRun", "RunConfig", "TrainConfig", "Trainer", "build_config", "evaluate", "load_companions", "load_run",
           "sample_negatives"]
