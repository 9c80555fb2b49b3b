"""One contract for every analysis (DESIGN.md: Accumulator; in the spirit of TorchMetrics' ``add_state``).

An analysis is an :class:`Accumulator`: it says which layers of which models it reads
(:meth:`Accumulator.layers`), takes one batch at a time (:meth:`Accumulator.update`) and turns what
it summed into a :class:`~seelike.results.Result` (:meth:`Accumulator.compute`). Its state is
declared with :meth:`SummedState.add_state` as named tensors that are *summed* over batches (or,
where unavoidable, *concatenated*, e.g. batch sizes), so merging two accumulators, saving and
loading their state, resetting them and the all-reduce of a distributed run live here, once, and
never in an analysis. Two accumulators fed disjoint halves of the data and merged equal one fed
all of it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from seelike.errors import InvalidInputError
from seelike.models.model import Layer, Model
from seelike.results import Result, seelike_version

__all__ = ["ACCUMULATORS", "Accumulator", "Batch", "RunInfo", "SummedState", "activation"]

Reduction = Literal["sum", "cat"]

#: every accumulator class by its result kind; the common accumulator test runs over all of them
ACCUMULATORS: dict[str, type[Accumulator]] = {}


class SummedState:
    """Named tensor state that merges by addition (``"sum"``) or concatenation along dim 0 (``"cat"``).

    A state declared with ``default=None`` takes its shape from the first value added (e.g. a
    [layers, heads] sum whose head count the first batch tells). Children (other summed states, e.g. a
    :class:`~seelike.similarity.MinibatchCKA` inside an analysis) merge, save and reset with their parent.
    """

    def __init__(self) -> None:
        self._reductions: dict[str, Reduction] = {}
        self._defaults: dict[str, Tensor | None] = {}
        self._state: dict[str, Tensor | None] = {}
        self._children: dict[str, SummedState] = {}

    # -- declaring ------------------------------------------------------------------------------
    def add_state(self, name: str, default: Tensor | None = None, reduce: Reduction = "sum") -> None:
        """Declare state ``name``: summed over batches (``"sum"``) or concatenated (``"cat"``)."""
        if reduce not in ("sum", "cat"):
            raise ValueError(f"reduce must be 'sum' or 'cat', got {reduce!r}")
        if name in self._state or name in self._children:
            raise ValueError(f"state {name!r} is declared twice")
        self._reductions[name] = reduce
        self._defaults[name] = None if default is None else default.detach().clone()
        self._state[name] = None if default is None else default.detach().clone()

    def add_child(self, name: str, child: SummedState) -> None:
        """Register ``child`` so that it merges, saves and resets with this state."""
        if name in self._state or name in self._children:
            raise ValueError(f"state {name!r} is declared twice")
        self._children[name] = child

    # -- reading and adding ---------------------------------------------------------------------
    def state(self, name: str) -> Tensor | None:
        """The current value of state ``name`` (None while a lazily shaped state has seen nothing)."""
        return self._state[name]

    def accumulate(self, **values: Tensor) -> None:
        """Add one batch's ``values`` into the declared states (sum, or append along dim 0)."""
        for name, value in values.items():
            value = torch.as_tensor(value).detach()
            current = self._state[name]
            if current is None:
                self._state[name] = value.clone()
            elif self._reductions[name] == "cat":
                self._state[name] = torch.cat([current, value.to(current.device, current.dtype)])
            else:
                if current.shape != value.shape:
                    raise InvalidInputError(
                        f"{type(self).__name__}: this batch gives {name} of shape {tuple(value.shape)}, earlier batches "
                        f"{tuple(current.shape)}; feed every batch at the model's input size (Model.preprocess does)"
                    )
                self._state[name] = current + value.to(current.device, current.dtype)

    # -- the generic operations -----------------------------------------------------------------
    def signature(self) -> Any:
        """What must agree for two states to merge (settings, layer names); override to add more."""
        return type(self)

    def aligned_state(self, other: SummedState) -> dict[str, Tensor | None]:
        """``other``'s own state laid out like this one's (default: as is). Override where the layout can differ."""
        return dict(other._state)

    def merge(self, other: SummedState) -> None:
        """Add ``other``'s state (another shard of the data, or another rank) into this one."""
        if type(other) is not type(self) or other.signature() != self.signature():
            raise InvalidInputError(
                f"merge() takes a {type(self).__name__} over the same models, layers and settings; "
                f"got a {type(other).__name__} that differs"
            )
        theirs = self.aligned_state(other)
        for name, value in theirs.items():
            if value is not None:
                self.accumulate(**{name: value})
        for name, child in self._children.items():
            child.merge(other._children[name])

    def state_dict(self) -> dict[str, Tensor]:
        """Every state by name (children as ``child.state``); lazily shaped states that saw nothing are left out."""
        states = {name: value.clone() for name, value in self._state.items() if value is not None}
        for prefix, child in self._children.items():
            states.update({f"{prefix}.{name}": value for name, value in child.state_dict().items()})
        return states

    def load_state_dict(self, states: Mapping[str, Tensor]) -> None:
        """Restore what :meth:`state_dict` gave; unknown or missing names are an error."""
        children = {prefix: {} for prefix in self._children}
        for name, value in states.items():
            if name in self._state:
                continue
            prefix = next((p for p in sorted(self._children, key=len, reverse=True) if name.startswith(f"{p}.")), None)
            if prefix is None:
                raise InvalidInputError(f"{type(self).__name__} has no state {name!r}; it has {sorted(self._state)}")
            children[prefix][name[len(prefix) + 1:]] = value
        for name in self._state:
            if name not in states and self._defaults[name] is not None:
                raise InvalidInputError(f"the state dict lacks {name!r} of {type(self).__name__}")
            self._state[name] = states[name].clone() if name in states else None
        for prefix, child in self._children.items():
            child.load_state_dict(children[prefix])

    def add_state_dict(self, states: Mapping[str, Tensor]) -> None:
        """Add a :meth:`state_dict` of the same kind of state into this one (as :meth:`merge` adds a whole state)."""
        for name, value in states.items():
            if name in self._state:
                self.accumulate(**{name: value})
                continue
            prefix = next((p for p in sorted(self._children, key=len, reverse=True) if name.startswith(f"{p}.")), None)
            if prefix is None:
                raise InvalidInputError(f"{type(self).__name__} has no state {name!r}; it has {sorted(self._state)}")
            self._children[prefix].add_state_dict({name[len(prefix) + 1:]: value})

    def reset(self) -> None:
        """Back to the state before any batch."""
        self._state = {name: None if d is None else d.clone() for name, d in self._defaults.items()}
        for child in self._children.values():
            child.reset()

    def sync(self, group: Any = None) -> None:
        """Combine this state across the ranks of a ``torch.distributed`` run: all-reduce sums, all-gather cats."""
        import torch.distributed as dist

        on_device = dist.get_backend(group) == "nccl"  # NCCL reduces CUDA tensors only
        for name in sorted(self._state):
            value = self._state[name]
            if value is None:
                raise InvalidInputError(f"{type(self).__name__}: rank {dist.get_rank()} saw no batch; give every rank data")
            if self._reductions[name] == "sum":
                reduced = value.cuda() if on_device else value.clone()
                dist.all_reduce(reduced, group=group)
                self._state[name] = reduced.to(value.device)
            else:
                parts: list[Any] = [None] * dist.get_world_size(group)
                dist.all_gather_object(parts, value.cpu(), group=group)
                self._state[name] = torch.cat(parts).to(value.device)
        for name in sorted(self._children):
            self._children[name].sync(group)


@dataclass(frozen=True)
class Batch:
    """One batch as the driver hands it to every accumulator.

    ``images``: as the data set yields them [B, C, H, W] in [0, 1]; ``labels`` [B]; ``indices`` [B]
    (positions in the data set); ``inputs``: per model name, the preprocessed input that the model ran
    on (requires grad in a gradient pass, see :func:`seelike.driver.run`). ``derived``: what accumulators
    compute from the batch itself (not from a model's layers) and may share within the batch, see :meth:`derive`.
    """

    images: Tensor
    labels: Tensor
    indices: Tensor
    inputs: Mapping[str, Tensor] = field(default_factory=dict)
    derived: list[tuple[str, Tensor, Any]] = field(default_factory=list, compare=False, repr=False)

    def __len__(self) -> int:
        return len(self.images)

    def derive(self, name: str, source: Tensor, compute: Callable[[Tensor], Any]) -> Any:
        """``compute(source)``, computed once per batch for equal sources: e.g. the input cells' Grams of several
        models that ran on the same preprocessed input (checked with ``torch.equal``, not assumed)."""
        for known, known_source, value in self.derived:
            if known == name and known_source.shape == source.shape and torch.equal(known_source, source):
                return value
        value = compute(source)
        self.derived.append((name, source, value))
        return value


@dataclass(frozen=True)
class RunInfo:
    """The metadata every streamed result carries about its run (one schema for every analysis)."""

    models: dict[str, str]
    model_fingerprints: dict[str, str]
    data: str
    split: str
    n: int
    batch_size: int
    seed: int
    seconds: float
    seelike_version: str = field(default_factory=seelike_version)

    @classmethod
    def of(cls, models: list[Model], dataset: Any, n: int, batch_size: int, seed: int, started: float) -> RunInfo:
        return cls(
            models={model.name: model.spec for model in models},
            model_fingerprints={model.name: model.fingerprint() for model in models},
            data=dataset.spec, split=dataset.split, n=n, batch_size=batch_size, seed=seed,
            seconds=round(time.perf_counter() - started, 2),
        )

    def as_metadata(self) -> dict[str, Any]:
        return {
            "models": dict(self.models), "model_fingerprints": dict(self.model_fingerprints), "data": self.data,
            "split": self.split, "n": self.n, "batch_size": self.batch_size, "seed": self.seed,
            "seconds": self.seconds, "seelike_version": self.seelike_version,
        }


RUN_INFO_KEYS = tuple(RunInfo.__dataclass_fields__)


class Accumulator(SummedState):
    """An analysis: which layers it reads, how it takes a batch, what it computes.

    Subclasses set ``kind`` (the kind of Result they compute, and their key in :data:`ACCUMULATORS`),
    declare their state in ``__init__`` and implement :meth:`layers`, :meth:`update` and
    :meth:`compute`. :attr:`num_images` counts the images seen (summed like every state).
    """

    kind: ClassVar[str] = ""
    #: whether update() needs the gradient of the captured layers with respect to the model input (ERF)
    needs_grad: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            ACCUMULATORS[cls.kind] = cls

    def __init__(self, models: list[Model]) -> None:
        super().__init__()
        names = [model.name for model in models]
        if len(set(names)) != len(names):
            raise InvalidInputError(f"model names must be distinct, got {names}; give each model its own name")
        self.models = list(models)
        self.add_state("images", torch.zeros((), dtype=torch.int64))

    @property
    def num_images(self) -> int:
        return int(self.state("images"))

    def layers(self) -> dict[str, list[Layer]]:
        """Per model name, the layers this analysis reads in every batch."""
        raise NotImplementedError

    def reduce(self, key: str, tensor: Tensor) -> Any:
        """What this analysis keeps of layer ``key`` (``"model/layer"``), computed as its hook fires.

        The default keeps the tensor. Analyses that need less (a Gram, per-head sums) return that, so the
        activation is freed before the next layer runs; :meth:`update` then receives the reduced values.
        """
        return tensor

    def reduction_key(self, key: str) -> Any:
        """A hashable name of what :meth:`reduce` computes of layer ``key``, or None (the default: not shared).

        Accumulators giving equal names in one pass get one shared value, computed once (several CKA
        steps of a study read the same layer's Gram); what :meth:`reduce` returns must then be read, never
        changed, by :meth:`update`."""
        return None

    def update(self, activations: Mapping[str, Any], batch: Batch) -> None:
        """Add one batch: ``activations`` keyed ``"model/layer"`` holds :meth:`reduce` of each of :meth:`layers`."""
        raise NotImplementedError

    def compute(self) -> Result:
        """The result of everything seen so far (needs at least one batch)."""
        raise NotImplementedError

    def count(self, batch: Batch) -> None:
        """Count the batch's images; every update calls it once."""
        self.accumulate(images=torch.tensor(len(batch)))

    def signature(self) -> Any:
        return (type(self), tuple((name, tuple(layer.name for layer in layers)) for name, layers in self.layers().items()))

    def result(self, info: RunInfo | None = None) -> Result:
        """:meth:`compute` with the run's metadata (:class:`RunInfo`) added; refuses an empty accumulator."""
        if not self.num_images:
            raise InvalidInputError(f"{type(self).__name__}.result() needs at least one batch; no batch has been seen")
        result = self.compute()
        if info is None:
            return result
        clashes = sorted(set(result.metadata) & set(RUN_INFO_KEYS) - {"n", "models"})
        if clashes:
            raise AssertionError(f"{type(self).__name__}.compute() sets run metadata {clashes}; RunInfo owns them")
        return type(result)(arrays=result.arrays, metadata={**result.metadata, **info.as_metadata()})


def activation(activations: Mapping[str, Tensor], model: Model, layer: Layer) -> Tensor:
    """``model``'s ``layer`` from a batch's activations, or an error saying what to capture."""
    key = f"{model.name}/{layer.name}"
    if key not in activations:
        raise InvalidInputError(
            f"the activations hold no {layer.name!r} of {model.name}; capture the layers the analysis asks for "
            "(Accumulator.layers()), e.g. by running it through seelike.driver.run"
        )
    return activations[key]
