"""mixprune: lightweight CNNs from Mixup and pruning, with honest measurements.

Public API (see README):
    from mixprune import StudyConfig, TrainConfig, MixupConfig, PruneConfig, reproduce
    results = reproduce(StudyConfig(seeds=(0, 1, 2), train=TrainConfig(epochs=10)))
    results = reproduce(cfg, dataset=(train_x, train_y, test_x, test_y), model=my_factory)
    results.summary("mixup_pruned", "test_accuracy")

The packages, lowest first (each imports only those before it): core, data, models, compress, train, deploy,
study, reporting, explore, commands; then api and cli.
"""

from .api import SearchSpec, as_dataset, compress, reproduce, run_search, run_sweep
from .core.config import (
    BenchConfig,
    DataConfig,
    DistillConfig,
    MixupConfig,
    ModelConfig,
    PruneConfig,
    StudyConfig,
    TrainConfig,
    load_config_file,
)
from .core.errors import ConfigError, DataError, MixpruneError, ModelFileError, OutputError, WorkerDied
from .data import Dataset, download_fashion_mnist, load_dataset, load_fashion_mnist
from .deploy.files import load_model, save_safetensors
from .models import LeNet5, build_model
from .study.observer import Observer
from .study.results import Results
from .study.run import run_study
from .study.variants import PAPER, Design, Variant

__all__ = ["reproduce", "compress", "as_dataset", "run_study", "run_sweep", "run_search", "SearchSpec", "Observer", "Results",
           "StudyConfig", "DataConfig", "ModelConfig", "TrainConfig", "MixupConfig", "PruneConfig", "DistillConfig",
           "BenchConfig", "load_config_file", "Dataset", "load_dataset", "load_fashion_mnist",
           "download_fashion_mnist", "LeNet5", "build_model", "load_model", "save_safetensors", "MixpruneError",
           "ConfigError", "DataError", "ModelFileError", "OutputError", "WorkerDied", "PAPER", "Design", "Variant"]
__version__ = "0.1.0"
