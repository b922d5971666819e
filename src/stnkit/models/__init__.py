"""The paper's distorted-MNIST models behind a name-keyed factory: ``create("st-cnn", transform="tps")``."""

from stnkit.models import mnist
from stnkit.models._registry import create, list_models, register_model
from stnkit.models.mnist import CNN, FCN, STClassifier
from stnkit.models.summary import count_params, summary

__all__ = ["CNN", "FCN", "STClassifier", "count_params", "create", "list_models", "mnist", "register_model", "summary"]
