"""Every per-family fact about Hugging Face transformers, in one place.

Nothing here is a table of model names: the parts are found from the module structure and the
config, so a new decoder of a known architecture (llama, mistral, mixtral, phi, gpt2, qwen2,
gemma, ...) or vision transformer (clip_vision_model, dinov2, dinov2_with_registers, vit_mae,
vit, ...) needs no code.

  block stack   the first nn.ModuleList (in module order) whose length is the config's number
                of layers
  final norm    the first norm module registered after the stack, among its siblings or, failing
                those, its parent's siblings (a ViT's `layernorm` / `post_layernorm` beside its
                `encoder`)
  attention     a block's one child whose name contains "attn" or "attention", that holds weights
                (so not Pythia's `post_attention_dropout` or Phi-3's `resid_attn_dropout`) and is not
                a norm
  MLP           a block's child named mlp / feed_forward / block_sparse_moe / ffn (None when the
                family splits it, as ViT-MAE's intermediate + output)
  down proj.    the MLP's projection from the hidden width back to the residual width: an
                nn.Linear (weight [d_model, d_mlp]) or GPT-2's Conv1D (weight [d_mlp, d_model]);
                in a mixture of experts (Mixtral) the experts' 3-D parameter `down_proj`
                [experts, d_model, d_mlp] and the router that picks each token's experts
                (`down_weights`, `route`, `expert_hidden`)
  writers       (massive.core.hooks.writers) what the residual stream receives from each sublayer (`writers`, found once per
                model by a 3-token probe pass that follows each sublayer's output tensor through
                the block's children): the sublayer's own output, or the post-norm / dropout /
                layer scale applied to it before the add (Gemma-2/3 and OLMo-2/3 "sandwich" norms);
                times the block's `residual_multiplier` (Granite); minus the residual the module
                added itself (BLOOM's attention and MLP take the residual as an argument)
  parallel      a block whose attention and MLP both read the block's input (Phi-2, GPT-J, Falcon,
                Pythia's two norms), as the probe pass saw it (else: one norm child instead of two)
  newline       GPT-2's byte-level BPE writes "\\n" as "Ċ"
  vision layout prefix tokens (CLS, then registers), then one token per patch, row by row

    >>> parts = find_parts(model)
    >>> len(parts.blocks), type(parts.final_norm).__name__
    (30, 'LlamaRMSNorm')
"""

from __future__ import annotations

import inspect
import weakref
from dataclasses import dataclass

import torch
from torch import nn

from massive.core.configs import hidden_size, max_positions, num_layers, patch_size, vision_config  # noqa: F401 - also here
from massive.core.dtypes import DTYPE_NAMES, torch_dtype
from massive.core.errors import MassiveError
from massive.core.tokens import NEWLINE_BYTES, is_newline_token, role_of_name  # noqa: F401 - also here

DTYPES = {name: torch_dtype(name) for name in DTYPE_NAMES}  # name -> torch dtype (massive.core.dtypes)
MLP_NAMES = ("mlp", "feed_forward", "block_sparse_moe", "ffn")


# ---------------------------------------------------------------- module structure
@dataclass
class Parts:
    blocks: nn.ModuleList
    final_norm: nn.Module | None
    attentions: list[nn.Module]
    mlps: list[nn.Module | None]


def _is_norm(name: str, module: nn.Module) -> bool:
    k = name.lower()
    return "norm" in k or k.startswith("ln") or "norm" in type(module).__name__.lower()


def _is_attention(name: str, module: nn.Module) -> bool:
    """An attention child: named so, holding weights of its own (Pythia's `post_attention_dropout`
    and Phi-3's `resid_attn_dropout` hold none), and not a norm."""
    k = name.lower()
    return ("attn" in k or "attention" in k) and not _is_norm(name, module) and any(True for _ in module.parameters())


def find_parts(model: nn.Module) -> Parts:
    """The block stack, final norm, and each block's attention and MLP modules of `model`."""
    n = num_layers(model.config)
    stacks = [(name, mod) for name, mod in model.named_modules() if isinstance(mod, nn.ModuleList) and len(mod) == n]
    if not stacks:
        raise MassiveError(f"no stack of {n} blocks found in {type(model).__name__}")
    name, blocks = stacks[0]
    final_norm = None
    path = name.split(".")
    while path and final_norm is None:  # the stack's siblings, then its parent's siblings
        child = path.pop()
        parent = model.get_submodule(".".join(path)) if path else model
        names = [k for k, _ in parent.named_children()]
        after = names[names.index(child) + 1 :]
        norms = [getattr(parent, k) for k in after if "norm" in k.lower() or k in ("ln_f",)]
        final_norm = norms[0] if norms else None
    attentions, mlps = [], []
    for i, block in enumerate(blocks):
        attn = [m for k, m in block.named_children() if _is_attention(k, m)]
        if len(attn) != 1:
            raise MassiveError(
                f"block {i} of {type(model).__name__} (model_type={model.config.model_type!r}) has "
                f"{len(attn)} attention children ({', '.join(type(m).__name__ for m in attn) or 'none'}), "
                "expected 1"
            )
        attentions.append(attn[0])
        mlps.append(next((m for k, m in block.named_children() if k in MLP_NAMES), None))
    return Parts(blocks=blocks, final_norm=final_norm, attentions=attentions, mlps=mlps)


def down_projection(mlp: nn.Module, d_model: int) -> tuple[nn.Module, str]:
    """The MLP's projection back to the residual stream and its weight orientation:
    "out_in" (nn.Linear: weight [d_model, d_mlp]) or "in_out" (GPT-2's Conv1D: weight [d_mlp, d_model]).
    A mixture of experts has no single one: MassiveError."""
    found = []
    for name, mod in mlp.named_modules():
        if "expert" in name:
            continue
        if isinstance(mod, nn.Linear) and mod.out_features == d_model and mod.in_features != d_model:
            found.append((mod, "out_in"))
        elif type(mod).__name__ == "Conv1D" and getattr(mod, "nf", None) == d_model and mod.weight.shape[0] != d_model:
            found.append((mod, "in_out"))
    if len(found) != 1:
        raise MassiveError(
            f"{type(mlp).__name__} has {len(found)} projections to the residual width {d_model}, expected 1"
            " (a mixture of experts has one per expert)"
        )
    return found[0]


@dataclass
class DownWeights:
    """Where an MLP writes back to the residual stream, in the model's own orientation.

    weight: the parameter itself: [d_model, d_mlp] ("out_in", nn.Linear), [d_mlp, d_model]
    ("in_out", GPT-2's Conv1D), or [experts, d_model, d_mlp] (a mixture of experts, each "out_in");
    module: the down projection (or the experts container); router: the module that picks each
    token's experts (None for a dense MLP).

        >>> w = down_weights(find_parts(model).mlps[2], 4096)
        >>> w.index(dim=3968, channel=7003)   # the weight's own index of W[dim, channel]
        (3968, 7003)
    """

    module: nn.Module
    weight: nn.Parameter
    orientation: str  # "out_in" | "in_out"
    router: nn.Module | None = None

    @property
    def experts(self) -> int:
        """The number of experts (0: a dense MLP)."""
        return int(self.weight.shape[0]) if self.router is not None else 0

    def index(self, dim: int, channel, expert: int | None = None) -> tuple:
        """The index into `weight` of W[dim, channel] (`channel` may be a slice: the whole input channel is
        index(slice(None), channel))."""
        own = (dim, channel) if self.orientation == "out_in" else (channel, dim)
        return ((int(expert),) if self.experts else ()) + own

    def matrix(self, expert: int | None = None) -> torch.Tensor:
        """The down-projection matrix (of `expert`) as [d_model, d_mlp], a view of the weight."""
        w = self.weight.detach()
        if self.experts:
            w = w[int(expert)]
        return w if self.orientation == "out_in" else w.t()

    def name(self, model: nn.Module) -> str:
        """The parameter's name in `model` (model.layers.11.mlp.down_proj.weight)."""
        return next(k for k, p in model.named_parameters() if p is self.weight)


def down_weights(mlp: nn.Module | None, d_model: int) -> DownWeights:
    """The down-projection weight of a dense MLP or a mixture of experts; an MLP of neither kind
    is a MassiveError naming its module type."""
    if mlp is None:
        raise MassiveError(
            "the block has no MLP module of its own (an MLP named mlp / feed_forward / block_sparse_moe / ffn)"
        )
    for _, mod in mlp.named_modules():
        p = getattr(mod, "down_proj", None)
        transposed = bool(getattr(mod, "is_transposed", False))  # gpt-oss: [experts, d_mlp, d_model]
        if isinstance(p, nn.Parameter) and p.dim() == 3 and p.shape[2 if transposed else 1] == d_model:
            routers = [m for k, m in mlp.named_children() if k in ("gate", "router")]
            if len(routers) != 1:
                raise MassiveError(f"{type(mlp).__name__}: experts found but no router (a child named gate or router)")
            return DownWeights(
                module=mod, weight=p, orientation="in_out" if transposed else "out_in", router=routers[0]
            )
    try:
        module, orientation = down_projection(mlp, d_model)
    except MassiveError as exc:
        raise MassiveError(
            f"no MLP down projection known to massive.core.arch in {type(mlp).__name__}: {exc}"
        ) from None
    return DownWeights(module=module, weight=module.weight, orientation=orientation)


def route(mlp: nn.Module, w: DownWeights, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each token's experts and their weights, as the router picks them: x [tokens, d_model] ->
    (weights [tokens, k], experts [tokens, k]). A router that returns (logits, scores, indices)
    (transformers >= 5), or the logits alone (softmax, top-k of mlp.top_k, renormalised: Mixtral)."""
    out = w.router(x)
    if isinstance(out, tuple) and len(out) == 3:
        return out[1].to(torch.float32), out[2]
    probs = torch.softmax(out.to(torch.float32), dim=-1)
    top, idx = torch.topk(probs, int(getattr(mlp, "top_k", 2)), dim=-1)
    return top / top.sum(-1, keepdim=True), idx


def expert_hidden(w: DownWeights, x: torch.Tensor, expert: int) -> torch.Tensor:
    """The input of expert `expert`'s down projection for x [tokens, d_model]: act(gate) * up from the
    fused gate_up_proj ([experts, 2 * d_mlp, d_model], Mixtral; gate rows then up rows), or its
    transposed, interleaved, biased form ([experts, d_model, 2 * d_mlp], gpt-oss, with the experts'
    own `_apply_gate`)."""
    experts = w.module
    gate_up = getattr(experts, "gate_up_proj", None)
    if gate_up is None or not (hasattr(experts, "act_fn") or hasattr(experts, "_apply_gate")):
        raise MassiveError(
            f"{type(experts).__name__}: experts without a fused gate_up_proj and act_fn are not known to massive.core.arch"
        )
    e = int(expert)
    if getattr(experts, "is_transposed", False):
        h = x @ gate_up[e]
    else:
        h = torch.nn.functional.linear(x, gate_up[e])
    bias = getattr(experts, "gate_up_proj_bias", None)
    if bias is not None:
        h = h + bias[e]
    if hasattr(experts, "_apply_gate"):
        return experts._apply_gate(h)
    if getattr(experts, "is_concatenated", True):
        gate, up = h.chunk(2, dim=-1)
    else:
        gate, up = h[..., ::2], h[..., 1::2]
    return experts.act_fn(gate) * up


def linears(block: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """Every linear layer inside `block`: (path in the block, module, weight orientation), in module
    order: nn.Linear ("out_in": weight [out, in]) and GPT-2's Conv1D ("in_out": weight [in, out]).
    Fused expert weights (Mixtral's 3-D experts.gate_up_proj / down_proj) are parameters, not
    linear modules, and are not listed.

        >>> [p for p, _, _ in linears(find_parts(model).blocks[0])][:3]
        ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj']
    """
    out = []
    for name, mod in block.named_modules():
        if isinstance(mod, nn.Linear):
            out.append((name, mod, "out_in"))
        elif type(mod).__name__ == "Conv1D" and getattr(mod, "weight", None) is not None and mod.weight.dim() == 2:
            out.append((name, mod, "in_out"))
    return out


_PARALLEL: "weakref.WeakKeyDictionary[nn.Module, bool]" = (
    weakref.WeakKeyDictionary()
)  # filled by massive.core.hooks.writers


def is_parallel(block: nn.Module) -> bool:
    """Whether a block's attention and MLP both read the block's input (Phi-2, GPT-J, Falcon, Pythia):
    as the probe pass of massive.core.hooks.writers saw it where it ran, else from the norms (one norm child)."""
    if block in _PARALLEL:
        return _PARALLEL[block]
    norms = [k for k, _ in block.named_children() if "norm" in k.lower() or k.lower().startswith("ln")]
    return len(norms) == 1


def repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """[batch, kv_heads, seq, d] -> [batch, kv_heads * groups, seq, d]: grouped-query attention's keys or
    values, one copy per query head.

        >>> repeat_kv(torch.zeros(1, 2, 3, 4), 3).shape
        torch.Size([1, 6, 3, 4])
    """
    if groups == 1:
        return x
    b, h, t, d = x.shape
    return x[:, :, None].expand(b, h, groups, t, d).reshape(b, h * groups, t, d)


# ---------------------------------------------------------------- vision transformers
@dataclass(frozen=True)
class Layout:
    """Which position of a ViT's residual stream is the CLS token, a register, or a patch."""

    n_cls: int
    n_registers: int
    grid: tuple[int, int]  # patch rows, patch columns

    @property
    def n_prefix(self) -> int:
        return self.n_cls + self.n_registers

    @property
    def seq_len(self) -> int:
        return self.n_prefix + self.grid[0] * self.grid[1]

    def name(self, position: int) -> str:
        """`[CLS]`, `[REG0]`.., or `patch r,c` (row, column of the patch grid)."""
        if position < self.n_cls:
            return "[CLS]"
        if position < self.n_prefix:
            return f"[REG{position - self.n_cls}]"
        r, c = divmod(position - self.n_prefix, self.grid[1])
        return f"patch {r},{c}"

    def role(self, position: int) -> str:
        return "cls" if position < self.n_cls else "register" if position < self.n_prefix else "patch"

    def positions(self, role: str) -> list[int]:
        return [p for p in range(self.seq_len) if self.role(p) == role]


def layout(config, pixel_shape: tuple[int, ...], seq_len: int) -> Layout:
    """The layout of a residual stream of `seq_len` tokens for images of `pixel_shape` [.., H, W]:
    patches = (H / patch) x (W / patch), registers = num_register_tokens, CLS = what is left.

        >>> layout(model.config, (1, 3, 224, 224), 261)
        Layout(n_cls=1, n_registers=4, grid=(16, 16))
    """
    vc = vision_config(config)
    patch = patch_size(config)
    grid = (int(pixel_shape[-2]) // patch, int(pixel_shape[-1]) // patch)
    registers = int(getattr(vc, "num_register_tokens", 0) or 0)
    n_cls = seq_len - registers - grid[0] * grid[1]
    if n_cls < 0:
        raise MassiveError(f"{seq_len} tokens cannot hold {registers} registers and a {grid[0]}x{grid[1]} patch grid")
    return Layout(n_cls=n_cls, n_registers=registers, grid=grid)


def forward_kwargs(model: nn.Module, pixel_values: torch.Tensor) -> dict:
    """The forward arguments for a batch of images. A model that orders its patches by a random
    `noise` (MAE's masking; load it with mask_ratio=0.0) gets an increasing noise, so that every
    patch is kept in its place."""
    kwargs = {"pixel_values": pixel_values}
    if "noise" in inspect.signature(model.forward).parameters:
        patch = patch_size(model.config)
        n = (pixel_values.shape[-2] // patch) * (pixel_values.shape[-1] // patch)
        kwargs["noise"] = torch.arange(n, dtype=torch.float32, device=pixel_values.device).expand(len(pixel_values), n)
    return kwargs
