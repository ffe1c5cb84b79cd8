"""mixprune: lightweight CNNs from Mixup and pruning, with honest measurements.

Public API (see README):
    from mixprune import StudyConfig, TrainConfig, MixupConfig, PruneConfig, reproduce
    results = reproduce(StudyConfig(seeds=(0, 1, 2), train=TrainConfig(epochs=10)))
"""

from .api import reproduce
from .config import (
                     BenchConfig,
                     DataConfig,
                     MixupConfig,
                     ModelConfig,
                     PruneConfig,
                     StudyConfig,
                     TrainConfig,
                     load_config_file,
)
from .data import Dataset, download_fashion_mnist, load_fashion_mnist
from .errors import ConfigError, DataError, MixpruneError, ModelFileError, OutputError
from .export import load_model, save_safetensors
from .model import LeNet5
from .study import Observer, run_study

__all__ = ["reproduce", "run_study", "Observer", "StudyConfig", "DataConfig", "ModelConfig", "TrainConfig",
           "MixupConfig", "PruneConfig", "BenchConfig", "load_config_file", "Dataset", "load_fashion_mnist",
           "download_fashion_mnist", "LeNet5", "load_model", "save_safetensors", "MixpruneError", "ConfigError",
           "DataError", "ModelFileError", "OutputError"]
__version__ = "0.1.0"
