"""The paper's models behind a name-keyed factory: ``create("st-cnn", transform="tps")``.

Table 1 (:mod:`~stnkit.models.mnist`), MNIST addition's parallel transformers (:mod:`~stnkit.models.addition`),
attention crops (:mod:`~stnkit.models.attention`), co-localisation (:mod:`~stnkit.models.coloc`), 3-D MNIST
(:mod:`~stnkit.models.mnist3d`) and multi-digit SVHN (:mod:`~stnkit.models.svhn`).
"""

from stnkit.models import addition, attention, coloc, mnist, mnist3d, svhn
from stnkit.models._registry import build, create, list_models, model_args, register_model
from stnkit.models.mnist import CNN, FCN, STClassifier
from stnkit.models.summary import count_params, summary

__all__ = ["CNN", "FCN", "STClassifier", "addition", "attention", "build", "coloc", "count_params", "create",
           "list_models", "mnist", "mnist3d", "model_args", "register_model", "summary", "svhn"]
