"""Training: the loop (`train`), the per-step batches, the run state and its checkpoints, logs and clock."""

from rediffuse.train.loop import TrainResult, learning_rate, train, train_step
from rediffuse.train.state import TrainState, new_state

__all__ = ["TrainResult", "TrainState", "learning_rate", "new_state", "train", "train_step"]
