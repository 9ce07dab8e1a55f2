"""Models as pure functions of a parameter dictionary.

Every learner treats the parameters as a ``dict[str, Tensor]`` and calls the network through
``torch.func.functional_call``, so that the inner loop can be differentiated through and
``torch.func.vmap``-ed over a leading task dimension. The ``nn.Module`` objects here only carry
the architecture; :func:`init_params` draws their parameters from an explicit generator.

The last linear layer of every model is named ``head`` (parameters ``head.weight`` and
``head.bias``), so that ANIL can adapt only the keys that start with ``"head"``.

The collaborative-filtering models take item ids (``int64 [..., n]``) as input: a fixed feature
table is a buffer (not a parameter), learned per-item tables are :class:`ItemTable` parameters.
"""

from __future__ import annotations

import inspect
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from metalearn.head_split import HeadSplit

Params = dict[str, Tensor]
Batch = tuple[Tensor, Tensor]
LossFn = Callable[[Params, Batch], Tensor]
PredictFn = Callable[[Params, Tensor], Tensor]

_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {"tanh": torch.tanh, "relu": F.relu}
_LOSS_KINDS = ("mse", "cross_entropy")


def _materialize(module: nn.Module, generator: torch.Generator | None) -> None:
    """Replace the (meta-device) parameters of ``module`` by :func:`init_params` values.

    Layers are built on the meta device so that constructing a model never draws from the global
    RNG; the module's own parameters come from ``generator`` (seed 0 if none is given).
    """
    module.to_empty(device="cpu")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    values = init_params(module, generator)
    with torch.no_grad():
        for name, param in module.named_parameters():
            param.copy_(values[name])


class MLP(nn.Module):
    """Fully connected network ``x -> head(act(... act(layers.0(x))))``.

    Parameters are ``layers.{i}.weight``/``layers.{i}.bias`` for the hidden layers and
    ``head.weight``/``head.bias`` for the output layer.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden: Sequence[int] = (40, 40),
        activation: str = "tanh",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        _check_activation(activation)
        widths = [int(in_dim), *(int(h) for h in hidden)]
        self.activation = activation
        self.layers = _mlp_layers(widths)
        self.head = nn.Linear(widths[-1], int(out_dim), device="meta")
        _materialize(self, generator)

    def forward(self, x: Tensor, body_only: bool = False) -> Tensor | tuple[Tensor, None]:
        act = _ACTIVATIONS[self.activation]
        for layer in self.layers:
            x = act(layer(x))
        return (x, None) if body_only else self.head(x)


class ItemTable(nn.Module):
    """A learned per-item table ``weight [n_items, dim]``, initialised to zeros: an item that no
    meta-train user rated never receives a gradient and stays at the mean item (zero)."""

    def __init__(self, n_items: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(int(n_items), int(dim), device="meta"))


def _mlp_layers(widths: Sequence[int]) -> nn.ModuleList:
    return nn.ModuleList(
        nn.Linear(a, b, device="meta") for a, b in zip(widths[:-1], widths[1:], strict=True)
    )


class ItemFeatureMLP(MLP):
    """The MLP of :class:`MLP` over fixed item features: ``f(i) = MLP(features[i])`` for item ids
    ``i`` (seed 000's collaborative-filtering model; ``model.cf: mlp``). Same parameter names and
    initialisation as ``MLP(in_dim, 1, hidden)``."""

    def __init__(
        self,
        features: Tensor,
        hidden: Sequence[int] = (40, 40),
        activation: str = "tanh",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(features.shape[1], 1, hidden, activation, generator)
        self.register_buffer("features", features.float(), persistent=False)  # after to_empty

    def forward(self, items: Tensor, body_only: bool = False) -> Tensor | tuple[Tensor, None]:
        return super().forward(self.features[items], body_only)


class ItemFactorModel(nn.Module):
    """A meta-learned factor model of ratings (MeLU, Lee et al. 2019; the ANIL split):

        f(i) = head(MLP([features[i], item.embedding[i]])) + item.bias[i]

    The item embedding, the item bias and the MLP are shared by all users (meta-learned, held
    fixed in the inner loop under ``algo.adapt: head``); the ``head`` is the user: its weight a
    taste vector over the learned item representation, its bias the user's offset. The head's
    weight starts at zero and its bias at the meta-train mean rating ``mean``, so the untrained
    model predicts the global mean plus the user offset the inner loop fits: the classical
    bias baseline's structure is the starting point, and everything else is learned. With
    ``offsets`` (``[n_items, 1]``, the bias baseline's fitted item offsets) the item bias starts
    there instead of at zero: the untrained model is the bias baseline, and training learns a
    residual over it.
    """

    def __init__(
        self,
        features: Tensor,
        mean: float,
        item_dim: int = 32,
        hidden: Sequence[int] = (40, 40),
        activation: str = "tanh",
        generator: torch.Generator | None = None,
        offsets: Tensor | None = None,
    ) -> None:
        super().__init__()
        _check_activation(activation)
        self.activation, self.mean, self.offsets = activation, float(mean), offsets
        n_items = features.shape[0]
        self.item = nn.ModuleDict({"bias": ItemTable(n_items, 1)})
        if item_dim:
            self.item["embedding"] = ItemTable(n_items, item_dim)
        widths = [features.shape[1] + int(item_dim), *(int(h) for h in hidden)]
        self.layers = _mlp_layers(widths)
        self.head = nn.Linear(widths[-1], 1, device="meta")
        _materialize(self, generator)
        self.register_buffer("features", features.float(), persistent=False)  # after to_empty

    def initial_values(self, values: Params) -> Params:
        head = {"head.weight": torch.zeros_like(values["head.weight"])}
        values = {**values, **head, "head.bias": _fill(values["head.bias"], self.mean)}
        if self.offsets is not None:
            bias = values["item.bias.weight"]
            values["item.bias.weight"] = self.offsets.to(dtype=bias.dtype, device=bias.device)
        return values

    def forward(self, items: Tensor, body_only: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        x = self.features[items]
        if "embedding" in self.item:
            x = torch.cat([x, self.item["embedding"].weight[items]], dim=-1)
        act = _ACTIVATIONS[self.activation]
        for layer in self.layers:
            x = act(layer(x))
        offset = self.item["bias"].weight[items]
        return (x, offset) if body_only else self.head(x) + offset


class BiasModel(nn.Module):
    """The classical baseline's predictor ``f(i) = item.bias[i] + head.bias``: an item offset
    and one number for the user (global mean plus the user's offset)."""

    def __init__(self, n_items: int, mean: float) -> None:
        super().__init__()
        self.mean = float(mean)
        self.item = nn.ModuleDict({"bias": ItemTable(n_items, 1)})
        self.head = nn.Module()
        self.head.bias = nn.Parameter(torch.empty(1, device="meta"))
        _materialize(self, None)

    def initial_values(self, values: Params) -> Params:
        return {**values, "head.bias": _fill(values["head.bias"], self.mean)}

    def forward(self, items: Tensor) -> Tensor:
        return self.item["bias"].weight[items] + self.head.bias


def _fill(like: Tensor, value: float) -> Tensor:
    return torch.full_like(like, value)


def _check_activation(activation: str) -> None:
    if activation not in _ACTIVATIONS:
        raise ValueError(
            f"unknown activation {activation!r}; expected one of {sorted(_ACTIVATIONS)}"
        )


class Conv4(nn.Module):
    """The standard few-shot Conv4 (Vinyals et al. 2016; Finn et al. 2017).

    Four blocks of [3x3 conv (padding 1), BatchNorm2d, ReLU, 2x2 max-pool], then flatten and a
    linear ``head``. Parameters ``blocks.{i}.conv.*``, ``blocks.{i}.norm.*``, ``head.*``.
    Input ``[n, in_channels, image_size, image_size]``, output logits ``[n, n_classes]``.

    Batch norm normalises with the statistics of the batch it is given and keeps no running
    statistics (``track_running_stats=False``, as the MAML reference code): inside a task this
    is the task's own batch, it behaves the same in train and eval mode, and it has no buffers,
    so ``functional_call`` + ``vmap`` over tasks is exact. The affine ``weight``/``bias`` are
    ordinary (meta-learned) parameters.
    """

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        filters: int = 64,
        image_size: int = 28,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        channels = [int(in_channels)] + [int(filters)] * 4
        self.blocks = nn.ModuleList(
            nn.Sequential(
                OrderedDict(
                    conv=nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, device="meta"),
                    norm=nn.BatchNorm2d(c_out, track_running_stats=False, device="meta"),
                    relu=nn.ReLU(),
                    pool=nn.MaxPool2d(2),
                )
            )
            for c_in, c_out in zip(channels[:-1], channels[1:], strict=True)
        )
        side = int(image_size)
        for _ in range(4):
            side //= 2  # max-pool 2x2 floors odd sizes (28 -> 14 -> 7 -> 3 -> 1)
        if side < 1:
            raise ValueError(f"image_size={image_size} is too small for 4 max-pool layers")
        self.feature_dim = int(filters) * side * side
        self.head = nn.Linear(self.feature_dim, int(n_classes), device="meta")
        _materialize(self, generator)

    def forward(self, x: Tensor, body_only: bool = False) -> Tensor | tuple[Tensor, None]:
        for block in self.blocks:
            x = block(x)
        x = x.flatten(start_dim=-3)
        return (x, None) if body_only else self.head(x)


def init_params(
    model: nn.Module,
    generator: torch.Generator,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Params:
    """Draw a fresh parameter dictionary for ``model`` from ``generator``.

    PyTorch's default schemes, drawn in float64 on the generator's device and then cast:

    * ``Linear``/``Conv2d`` weight: ``U(-b, b)``, ``b = gain * sqrt(3 / fan_in)`` with the
      kaiming-uniform gain for ``a = sqrt(5)``, i.e. ``b = 1 / sqrt(fan_in)``;
    * ``Linear``/``Conv2d`` bias: ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``;
    * ``BatchNorm`` weight 1, bias 0; an :class:`ItemTable` 0 (a bare bias parameter, as
      :class:`BiasModel`'s ``head.bias``, 0);
    * last, a model's own ``initial_values(values)``, where it has one (the rating models'
      head: zero weight, the mean rating as bias).

    Parameters are drawn in ``model.named_parameters()`` order, so the same seed gives the same
    parameters (for any ``dtype``/``device``, up to the final cast). ``dtype`` defaults to
    float32. Returns detached tensors with ``requires_grad=False``.
    """
    dtype = torch.float32 if dtype is None else dtype
    gen_device = generator.device

    def uniform(shape: torch.Size, bound: float) -> Tensor:
        u = torch.rand(shape, generator=generator, dtype=torch.float64, device=gen_device)
        return (2.0 * u - 1.0) * bound

    values: Params = {}
    for prefix, module in model.named_modules():
        own = dict(module.named_parameters(recurse=False))
        if not own:
            continue
        if isinstance(module, nn.Linear | nn.Conv2d):
            weight = own["weight"]
            fan_in = weight.shape[1] * math.prod(weight.shape[2:])
            bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            drawn = {"weight": uniform(weight.shape, bound)}
            if "bias" in own:
                drawn["bias"] = uniform(own["bias"].shape, bound)
        elif isinstance(module, ItemTable) or type(module) is nn.Module:
            drawn = {k: torch.zeros(v.shape, dtype=torch.float64) for k, v in own.items()}
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            drawn = {
                "weight": torch.ones(own["weight"].shape, dtype=torch.float64),
                "bias": torch.zeros(own["bias"].shape, dtype=torch.float64),
            }
        else:
            raise TypeError(f"init_params: no initialisation scheme for {type(module).__name__}")
        for name, value in drawn.items():
            key = f"{prefix}.{name}" if prefix else name
            values[key] = value.to(device=device, dtype=dtype)
    if hasattr(model, "initial_values"):
        values = model.initial_values(values)
    # Keep the model's parameter order (the drawing order above is the same).
    return {name: values[name].detach() for name, _ in model.named_parameters()}


def make_predict(model: nn.Module, kind: str = "mse") -> PredictFn:
    """Return ``predict(params, x) = f_params(x)`` through ``functional_call``.

    For ``kind="mse"`` the trailing output dimension (size 1) is squeezed, so a regression
    prediction has the shape of the targets ``[..., n]``; for ``"cross_entropy"`` the logits
    ``[..., n, n_classes]`` are returned.
    """
    if kind not in _LOSS_KINDS:
        raise ValueError(f"unknown loss kind {kind!r}; expected one of {_LOSS_KINDS}")

    def predict(params: Params, x: Tensor) -> Tensor:
        out = functional_call(model, params, (x,))
        return out.squeeze(-1) if kind == "mse" else out

    return predict


def make_loss(model: nn.Module, kind: str) -> LossFn:
    """Return ``loss_fn(params, (x, y))``, a scalar.

    * ``"mse"``: ``L = (1/n) sum_j (f(x_j) - y_j)^2`` with ``y`` of shape ``[n]``;
    * ``"cross_entropy"``: ``L = -(1/n) sum_j log softmax(f(x_j))[y_j]`` with integer labels.

    Pure and free of data-dependent control flow, so it can be ``vmap``-ed over tasks.
    """
    predict = make_predict(model, kind)
    ell = _mse if kind == "mse" else F.cross_entropy

    def loss_fn(params: Params, batch: Batch) -> Tensor:
        x, y = batch
        return ell(predict(params, x), y)

    if any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        loss_fn.reverse_hvp = False  # type: ignore[attr-defined]  # see functional.hvp_at
    if "body_only" in inspect.signature(model.forward).parameters:
        # head(body(x)) (+ an offset): a head-only inner loop can run on the body's features
        loss_fn.head_split = HeadSplit(  # type: ignore[attr-defined]
            head_keys=tuple(k for k, _ in model.named_parameters() if k.startswith("head.")),
            body=lambda params, x: functional_call(model, params, (x,), {"body_only": True}),
            ell=ell,
            squeeze=kind == "mse",
        )
    return loss_fn


def _mse(prediction: Tensor, y: Tensor) -> Tensor:
    return (prediction - y).square().mean()
