"""Read a published Piper voice (`.onnx`) back into named generator weights, by the graph's structure.

An ONNX voice is the trainer's generator after `torch.onnx.export`: its weights are the graph's initializers,
but not under names one can trust. The exporter renames some (the phoneme embedding of single-speaker voices is
called `sid`, after the unused input), leaves others anonymous (`onnx::Conv_8168`: weight-normed convolutions
whose `g * v / |v|` was constant-folded into one plain weight) and folds a few small expressions away (the
duration flow's `exp(-logs)` is stored, not `logs`). So each weight is placed by the node that consumes it: the
node's scope (`/flow/flows.0/enc/in_layers.3/Conv`) is the module path, its op and input slot say which
parameter it is (a Conv's input 1 is the weight, input 2 the bias; a Gather's input 0 an embedding table). A
name is believed only where it agrees with that scope. The model's hyperparameters (sizes, kernels, strides,
dilations) are read from the same graph, so any Piper voice size (x_low to high) comes back. Needs only `onnx`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from plush.errors import PlushError

Transform = Literal["as_is", "neg_log"]
"""How a stored tensor becomes the parameter: as it is, or `-log(x)` for a folded `exp(-logs)`."""


class OnnxVoiceError(PlushError):
    """The ONNX file is not a Piper (VITS) voice whose weights can be placed in the trainer's model."""


@dataclass(frozen=True)
class PlacedWeight:
    """One generator parameter found in the graph."""

    key: str
    """The parameter's name in the trainer's `SynthesizerTrn` (`dec.ups.0.weight`), before weight norm."""
    value: np.ndarray[Any, Any]
    source: str
    """The initializer's name in the ONNX file, for messages."""
    transform: Transform = "as_is"


@dataclass
class _Use:
    scope: str
    op: str
    slot: int
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OnnxVoiceWeights:
    """Every generator weight of an ONNX voice, placed by structure, plus the conv attributes the sizes need."""

    weights: dict[str, PlacedWeight]
    strides: dict[str, tuple[int, ...]]
    """Per module path of each ConvTranspose: its strides (the upsample rates)."""
    dilations: dict[str, tuple[int, ...]]
    """Per module path of each Conv: its dilations (the resblocks' dilation sizes)."""

    def shape(self, key: str) -> tuple[int, ...]:
        if key not in self.weights:
            raise OnnxVoiceError(f"the voice has no '{key}': not a Piper VITS voice, or an unknown variant")
        return tuple(self.weights[key].value.shape)

    def count(self, prefix: str, suffix: str) -> int:
        """How many numbered modules `prefix{i}` have a parameter ending in `suffix` (layers, flows, blocks)."""
        found = set()
        for key in self.weights:
            if key.startswith(prefix) and key.endswith(suffix):
                found.add(key[len(prefix) :].split(".", 1)[0])
        return len(found)

    def hyperparameters(self) -> dict[str, Any]:
        """The trainer's (`VitsModel`) size settings that rebuild exactly this generator."""
        n_vocab, hidden = self.shape("enc_p.emb.weight")
        n_layers = self.count("enc_p.encoder.attn_layers.", ".conv_q.weight")
        k_channels = self.shape("enc_p.encoder.attn_layers.0.emb_rel_k")[-1]
        filter_channels, _, kernel_size = self.shape("enc_p.encoder.ffn_layers.0.conv_1.weight")
        n_ups = self.count("dec.ups.", ".weight")
        ups = [f"dec.ups.{i}" for i in range(n_ups)]
        n_blocks = self.count("dec.resblocks.", ".weight")
        if not n_ups or n_blocks % n_ups:
            raise OnnxVoiceError(f"the decoder has {n_ups} upsampling layers and {n_blocks} residual blocks")
        n_kernels = n_blocks // n_ups
        resblock = "1" if "dec.resblocks.0.convs1.0.weight" in self.weights else "2"
        conv_list = "convs1" if resblock == "1" else "convs"
        n_convs = self.count(f"dec.resblocks.0.{conv_list}.", ".weight")
        rates = tuple(self.strides[up][0] for up in ups)
        hop = int(np.prod(rates))
        speakers = self.shape("emb_g.weight") if "emb_g.weight" in self.weights else (1, 0)
        return {
            "num_symbols": n_vocab,
            "num_speakers": speakers[0],
            "gin_channels": speakers[1],
            "hidden_channels": hidden,
            "inter_channels": self.shape("enc_p.proj.weight")[0] // 2,
            "filter_channels": filter_channels,
            "n_heads": hidden // k_channels,
            "n_layers": n_layers,
            "kernel_size": kernel_size,
            "resblock": resblock,
            "resblock_kernel_sizes": tuple(self.shape(f"dec.resblocks.{j}.{conv_list}.0.weight")[2]
                                           for j in range(n_kernels)),
            "resblock_dilation_sizes": tuple(
                tuple(self.dilations[f"dec.resblocks.{j}.{conv_list}.{m}"][0] for m in range(n_convs))
                for j in range(n_kernels)
            ),
            "upsample_rates": rates,
            "upsample_initial_channel": self.shape("dec.conv_pre.weight")[0],
            "upsample_kernel_sizes": tuple(self.shape(f"{up}.weight")[2] for up in ups),
            "hop_length": hop,
            "use_sdp": any(key.startswith("dp.flows.") for key in self.weights),
        }  # fmt: skip


def read_onnx_voice(onnx_path: Path) -> OnnxVoiceWeights:
    """Place every weight of the voice's graph by the node that uses it; unplaceable weights are an error."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:  # pragma: no cover - depends on the extras installed
        raise OnnxVoiceError("reading an ONNX voice needs onnx: pip install 'plush[train]'") from exc
    try:
        graph = onnx.load(str(onnx_path)).graph
    except Exception as exc:  # protobuf decode errors vary
        raise OnnxVoiceError(f"{onnx_path} is not a readable ONNX file: {exc}") from exc

    uses: dict[str, list[_Use]] = defaultdict(list)
    strides: dict[str, tuple[int, ...]] = {}
    dilations: dict[str, tuple[int, ...]] = {}
    for node in graph.node:
        scope = _scope(node.name)
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "ConvTranspose":
            strides[scope] = tuple(attributes.get("strides", (1,)))
        if node.op_type == "Conv":
            dilations[scope] = tuple(attributes.get("dilations", (1,)))
        for slot, name in enumerate(node.input):
            uses[name].append(_Use(scope, node.op_type, slot, attributes))

    weights: dict[str, PlacedWeight] = {}
    for tensor in graph.initializer:
        value = numpy_helper.to_array(tensor)
        if value.dtype != np.float32 or value.size <= 1:
            continue  # shapes, indices and scalar constants of the computation, not weights
        placed = _place(tensor.name, value, uses.get(tensor.name, []))
        if placed is None:
            raise OnnxVoiceError(
                f"cannot tell which generator weight '{tensor.name}' {value.shape} of {onnx_path.name} is "
                "(its users: " + ", ".join(f"{u.op}@{u.scope or '?'}" for u in uses.get(tensor.name, [])) + ")"
            )
        if placed.key in weights:
            raise OnnxVoiceError(f"two weights of {onnx_path.name} claim '{placed.key}'")
        weights[placed.key] = placed
    if "enc_p.emb.weight" not in weights:
        raise OnnxVoiceError(f"{onnx_path} has no phoneme embedding: it is not a Piper voice")
    return OnnxVoiceWeights(weights, strides, dilations)


def _scope(node_name: str) -> str:
    """`/flow/flows.0/enc/in_layers.3/Conv` -> `flow.flows.0.enc.in_layers.3` (the module that ran the node)."""
    parts = [p for p in node_name.split("/") if p]
    return ".".join(parts[:-1])


def _place(name: str, value: np.ndarray[Any, Any], uses: list[_Use]) -> PlacedWeight | None:  # noqa: PLR0911
    scopes = {u.scope for u in uses}
    if len(scopes) != 1 or not next(iter(scopes)):
        return None
    scope = scopes.pop()
    if name.startswith(scope + ".") and "/" not in name and name.count(".") == scope.count(".") + 1:
        return PlacedWeight(name, value, name)  # a name that agrees with its user: emb_rel_k, gamma, m ...
    kinds = {(u.op, u.slot) for u in uses}
    if len(kinds) != 1:
        return None
    op, slot = kinds.pop()
    if op in ("Conv", "ConvTranspose") and slot in (1, 2):
        return PlacedWeight(f"{scope}.{'weight' if slot == 1 else 'bias'}", value, name)
    if op == "Gather" and slot == 0:
        return PlacedWeight(f"{scope}.weight", value, name)  # an embedding table (even when called `sid`)
    if _scope(name) == scope and name.rsplit("/", 1)[-1].startswith("Exp_output") and op == "Mul":
        # ElementwiseAffine in reverse computes (x - m) * exp(-logs); the exporter folded exp(-logs).
        return PlacedWeight(f"{scope}.logs", value, name, "neg_log")
    return None
