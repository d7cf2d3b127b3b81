"""distgan: train GANs and distil them into small, fast students, with a C core on NumPy arrays.

>>> import distgan
>>> teacher = distgan.GAN(distgan.models.dcgan(width=1.0), seed=0)
>>> teacher.fit(distgan.datasets.load("fashion-mnist"), epochs=5)      # doctest: +SKIP
>>> student = distgan.GAN(distgan.models.dcgan(width=0.25))
>>> student, history = distgan.distill(teacher, student, T=2.0)         # doctest: +SKIP
"""
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("distgan")
except PackageNotFoundError:     # an in-place build that was never installed
    __version__ = "0.1.0"

from . import ops  # noqa: E402
from . import datasets, metrics, models, plot  # noqa: E402
from .checkpoint import CheckpointError  # noqa: E402
from .classifier import Classifier  # noqa: E402
from .distill import distill, prune_init, sweep_temperature  # noqa: E402
from .gan import GAN, DivergenceError, load  # noqa: E402
from .ops import get_num_threads, set_num_threads  # noqa: E402
# the functions shadow the submodule's attribute on the package (as DESIGN.md
# writes distgan.evaluate(student, data)); `from distgan.evaluate import ...`
# still reaches the module
from .evaluate import evaluate, evaluation_classifier, profile  # noqa: E402

__all__ = ["GAN", "Classifier", "distill", "sweep_temperature", "evaluate", "evaluation_classifier", "profile", "prune_init", "load", "datasets", "metrics", "models", "ops", "plot",
           "DivergenceError", "CheckpointError", "set_num_threads", "get_num_threads",
           "__version__"]
