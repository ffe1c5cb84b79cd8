"""mixprune: lightweight CNNs from Mixup and pruning, with honest measurements.

Public API (see README):
    from mixprune import StudyConfig, TrainConfig, MixupConfig, PruneConfig, reproduce
    results = reproduce(StudyConfig(seeds=(0, 1, 2), train=TrainConfig(epochs=10)))
    results = reproduce(cfg, dataset=(train_x, train_y, test_x, test_y), model=my_factory)
"""

from .api import as_dataset, reproduce
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
from .data import Dataset, download_fashion_mnist, load_dataset, load_fashion_mnist
from .errors import ConfigError, DataError, MixpruneError, ModelFileError, OutputError
from .export import load_model, save_safetensors
from .models import LeNet5, build_model
from .study import Observer, run_study
from .variants import PAPER, Design, Variant

__all__ = ["reproduce", "as_dataset", "run_study", "Observer", "StudyConfig", "DataConfig", "ModelConfig",
           "TrainConfig", "MixupConfig", "PruneConfig", "BenchConfig", "load_config_file", "Dataset", "load_dataset",
           "load_fashion_mnist", "download_fashion_mnist", "LeNet5", "build_model", "load_model", "save_safetensors",
           "MixpruneError", "ConfigError", "DataError", "ModelFileError", "OutputError", "PAPER", "Design", "Variant"]
__version__ = "0.1.0"
