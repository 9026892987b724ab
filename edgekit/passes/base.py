"""The pass interface: what every model transformation in edgekit looks like.

A pass has a **name**, one typed **config** (a pydantic model: the same class a recipe step
validates into and the Click options of its command build), and three methods:

- ``check(state, ctx)`` raises before any training or conversion if the pass cannot run
  (options, model, data, layer selections);
- ``apply(state, ctx)`` returns a :class:`PassOutput` with a **new** model state; the input
  model is never touched (the pipeline verifies its weights);
- ``finalize(state)`` strips training-time wrappers (masks, fake-quant graphs, optimizer state)
  and returns what the next pass, or the export, receives.

Passes transform: they do not measure and do not write files. Extra files a pass produces (a
compatibility report, NPU-compiled models) come back in :attr:`PassOutput.files` and the
workflow writes them.

The smallest pass, as a worked example (registered in :mod:`edgekit.passes.registry`)::

    class NoopConfig(PassConfig):
        pass_: Literal["noop"] = Field("noop", alias="pass")

    class NoopPass(Pass[NoopConfig]):
        name = "noop"
        config_type = NoopConfig

        def apply(self, state: ModelState, ctx: PassContext) -> PassOutput:
            return PassOutput(state=state, details={"did": "nothing"})
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from edgekit.core.data import Calibration, sample_rows
from edgekit.core.datatypes import Dataset, Preprocessing
from edgekit.passes.distribute import Distribution, StrategyChoice

# ----------------------------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------------------------


class PassConfig(BaseModel):
    """Base of every pass config: frozen, unknown keys rejected, ``pass`` as the discriminator.

    Subclasses declare ``pass_: Literal["name"] = Field("name", alias="pass")``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @property
    def name(self) -> str:
        """The pass name (``prune``, ``quantize``...)."""
        return str(self.__dict__["pass_"])  # declared by each subclass


LrSchedule = Literal["constant", "cosine"]


class TrainingConfig(PassConfig):
    """Settings every training pass shares (fine-tuning with the model's own loss)."""

    epochs: int = Field(2, ge=0, le=1000, description="Fine-tuning epochs (0: no fine-tuning).")
    batch_size: int = Field(64, ge=1, le=65536, description="Fine-tuning batch size.")
    learning_rate: float | None = Field(None, gt=0, allow_inf_nan=False,
                                        description="Fine-tuning learning rate (default: the model's optimizer's).")
    lr_schedule: LrSchedule = Field("constant", description="constant, or cosine decay to 2% over all fine-tuning steps.")
    loss: str | None = Field(None, description="A Keras loss name (default: the loss the model was compiled with).")
    strategy: StrategyChoice = Field("none", description="tf.distribute strategy: none, mirrored (local GPUs), multiworker "
                                     "(hosts in TF_CONFIG; batch_size is per replica) or auto (mirrored with several GPUs).")


# ----------------------------------------------------------------------------------------------
# What flows between passes
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelState:
    """The model between passes: a Keras model until a pass converts it, then TFLite bytes.

    ``kind`` says which: ``float`` (a Keras model), ``qat`` (a fake-quantized Keras model), or
    the TFLite mode once converted (``float32``, ``float16``, ``dynamic``, ``int8``,
    ``int16x8``, ``int8-mixed``, ``qat-int8``). ``keras`` stays set after conversion (the
    last Keras model, for layer names in reports); for a TensorFlow SavedModel (which only the
    conversion passes take) it holds the :class:`~edgekit.core.models.LoadedModel` instead.
    ``details`` carries facts later passes need (e.g. the int8 weight granularity chosen).
    """

    keras: Any = None
    tflite: bytes | None = None
    kind: str = "float"
    source: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def converted(self) -> bool:
        return self.tflite is not None

    def with_keras(self, keras_model: Any, kind: str = "float") -> ModelState:
        return replace(self, keras=keras_model, tflite=None, kind=kind)

    def with_tflite(self, flatbuffer: bytes, kind: str, **details: Any) -> ModelState:
        return replace(self, tflite=flatbuffer, kind=kind, details={**self.details, **details})


def _no_progress(_message: str) -> None:
    return None


EpochCallback = Callable[[str, int, int, Mapping[str, float]], None]


@dataclass(frozen=True)
class PassContext:
    """Everything a pass may read besides the model. Built once by the workflow.

    Attributes:
        train: training data (fine-tuning passes); also the calibration source.
        val: validation data (training passes report it per epoch; never used to choose weights).
        calibration: the preprocessed inputs int8 calibration draws from (the whole ``--data``, or an already
            drawn sample); passes take their seeded sample with :meth:`calibration_for`.
        preprocessing: how raw data became model input (recorded in metadata).
        labels: class names, when the data has them.
        seed: the seed for everything random.
        teacher: the original float Keras model (recovery distillation, QAT's reference).
        passes_done: names of the passes already applied in this pipeline.
        progress: called with short status lines.
        on_epoch: called after each training epoch with ``(title, epoch, epochs, logs)``.
        show_training: show per-batch progress bars on stderr.
        unsafe, custom_objects: how to load extra model files a config names (a distill student).
        base_dir: relative paths in a config (a distill student) are resolved against it (a recipe's folder).
        ahead: the pass is checked ahead of time, against the starting model, while the passes in
            ``passes_done`` have not run yet: checks that depend on what they do (the sparsity a prune
            pass leaves) wait for the second check, which the pipeline runs on the real input.
    """

    train: Dataset | None = None
    val: Dataset | None = None
    calibration: Calibration | None = None
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    labels: tuple[str, ...] | None = None
    seed: int = 0
    teacher: Any = None
    passes_done: tuple[str, ...] = ()
    progress: Callable[[str], None] = _no_progress
    on_epoch: EpochCallback | None = None
    show_training: bool = False
    unsafe: bool = False
    custom_objects: str | None = None
    base_dir: Path | None = None
    ahead: bool = False
    #: each output's task (classification, regression...) as the workflow detected it (None: passes detect from the model)
    tasks: tuple[Any, ...] | None = None
    #: the tf.distribute strategy training passes build, compile and train under (None: one process, model.fit)
    distribution: Distribution | None = None

    def calibration_for(self, samples: int) -> Calibration | None:
        """The seeded sample of ``samples`` calibration inputs (:func:`edgekit.core.data.sample_rows`).

        Every int8 path draws it the same way, so the same data, sample size and seed give the same
        model bytes in ``quantize``, a recipe, ``qat``'s PTQ column and ``optimize``.
        """
        if self.calibration is None:
            return None
        return sample_rows(self.calibration, samples, self.seed)


@dataclass(frozen=True)
class PassOutput:
    """What :meth:`Pass.apply` returns: the new state and what the pass did.

    ``details`` is JSON-ready (layer reports, training history...); ``files`` maps relative file
    names to bytes the workflow writes into the output folder (the pass itself writes nothing).
    """

    state: ModelState
    details: Mapping[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    files: Mapping[str, bytes] = field(default_factory=dict)


C = TypeVar("C", bound=PassConfig)


class Pass(abc.ABC, Generic[C]):
    """A model transformation. See the module docstring for the contract and an example."""

    name: ClassVar[str]
    config_type: ClassVar[type[PassConfig]]
    #: whether the pass trains (needs labelled training data when its config has epochs > 0)
    trains: ClassVar[bool] = False
    #: whether the pass needs a Keras model (False: it can work on TFLite bytes or a SavedModel)
    needs_keras: ClassVar[bool] = True

    def __init__(self, config: C) -> None:
        if not isinstance(config, self.config_type):
            raise TypeError(f"{type(self).__name__} takes a {self.config_type.__name__}, got {type(config).__name__}")
        self.config: C = config

    def check(self, state: ModelState, ctx: PassContext) -> None:  # noqa: B027 - optional hook
        """Raises an :class:`~edgekit.core.errors.EdgekitError` if the pass cannot run; trains nothing."""

    @abc.abstractmethod
    def apply(self, state: ModelState, ctx: PassContext) -> PassOutput:
        """Returns a new model state; ``state`` and its model stay untouched."""

    def finalize(self, state: ModelState) -> ModelState:
        """Strips training-time wrappers; the default returns ``state`` as it is."""
        return state
