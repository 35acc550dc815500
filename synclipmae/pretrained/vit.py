"""Starting the frame encoder from a pretrained ViT / MAE / Sapiens checkpoint (`--config.init.encoder=PATH`).

The frame encoder is a plain pre-LN ViT (patch embedding, blocks, final LayerNorm) plus prompt tokens and factor
heads. `load_into` copies a checkpoint's ViT into the first part and leaves the prompt tokens and heads freshly
initialised. The checkpoint layout is recognised from its tensor names:

  layout                       patch embedding (conv [E,3,p,p])          blocks                      final norm
  Hugging Face ViTMAE / ViT    [vit.]embeddings.patch_embeddings         encoder.layer.N.:           layernorm
                               .projection; embeddings.cls_token,         layernorm_before/_after,
                               embeddings.position_embeddings [1,1+P,E]   attention.attention.query/
                                                                          key/value, attention.output
                                                                          .dense, intermediate.dense,
                                                                          output.dense
  Sapiens / mmpretrain         [backbone.]patch_embed.projection;        layers.N.: ln1, attn.qkv    ln1
  VisionTransformer, MAEViT    cls_token (optional), pos_embed            (fused [3E,E], split in q,
                               [1,(1+)P,E]                                k, v order), attn.proj, ln2,
                                                                          ffn.layers.0.0, ffn.layers.1
  MAE / timm VisionTransformer patch_embed.proj; cls_token, pos_embed     blocks.N.: norm1, attn.qkv, norm
                                                                          attn.proj, norm2, mlp.fc1/fc2

Parts that are not the backbone are ignored by name: the MAE decoders (`decoder.*` of ViTMAEForPreTraining,
`neck.*` of mmpretrain, `decoder_*` / `mask_token` of MAE), classification heads and poolers (`classifier.*`,
`pooler.*`, `head.*`, `fc_norm.*`), mmpretrain's pooled-feature norm (top-level `ln2`) and `data_preprocessor.*`.
Any other tensor nothing takes is an error, so a checkpoint of another architecture never loads half-way.
Not supported (a clear error names the tensor): a LayerNorm before the first block (`pre_norm`, CLIP-style),
layer scale, a ViT without q/k/v biases or without a final norm. Sapiens' task checkpoints (pose, segmentation)
pad the patch convolution by 2 pixels; their weights load, but this encoder cuts unpadded patches.

Geometry: width, depth and patch size are read from the tensors and must equal the encoder's (the error names the
tensor that differs and the config flag to change); the MLP width is checked by shape. The head count is not in
the weights: it is checked against `config.json` for a Hugging Face directory and trusted otherwise.

Position embeddings: the checkpoint's table (learned, or MAE's stored sin-cos) is split into its CLS row (if any)
and the patch grid (from `config.json`, or the square root of the row count; a non-square grid needs `grid=`),
then resized bicubically to the encoder's patch grid (`vit.resize_pos_embed`: antialiased Keys cubic on the
[rows, cols, E] grid, as timm; the identity when the grids agree). It needs `model.encoder.pos_embed='learned'`;
with the default 'sincos' a table is accepted only if it is the encoder's own sin-cos table (MAE's stored table is
not: it puts the column code first), otherwise the error asks for the flag. The CLS token: with
`model.encoder.cls_token=True` it is loaded with its position row folded in (a CLS token always sits at that
position) and stays first in the sequence; with the default False it is dropped, as Sapiens' downstream models
drop it. We fail rather than switch these options silently: the recorded run config then describes the model
exactly, and resuming never depends on the checkpoint file still being there.

LayerNorm eps is not configurable: the encoder uses 1e-6, what MAE, timm and mmpretrain (Sapiens) train with.
Hugging Face ViTMAE configs declare 1e-12 (the conversion's default, not what the MAE weights were trained with),
which is not checked: for patch tokens the two agree within 1e-5; a CLS token is small (MAE initialises it with
std 0.02), so its first LayerNorm differs by about 1e-4 (tests/test_vit_init.py measures both).
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import numpy as np

from synclipmae.models import vit as vit_lib
from synclipmae.models.encoder import FrameEncoder
from synclipmae.models.synclipmae import ENCODER_EXTRAS
from synclipmae.pretrained import checkpoint_files as cf


@dataclasses.dataclass(frozen=True)
class Layout:
  """Tensor names of one checkpoint layout (without the optional wrapper prefix); layer names follow `layer`."""
  name: str
  prefixes: tuple[str, ...]  # Wrapper prefixes, tried in order ("" = none).
  patch: str
  cls: str
  pos: str
  layer: str  # Prefix of block i, with "{i}".
  norm1: str
  norm2: str
  qkv: str | tuple[str, str, str]  # One fused [3E, E] projection, or separate q, k, v.
  out: str
  fc1: str
  fc2: str
  norm: str
  ignore: tuple[str, ...]  # Name prefixes of parts that are not the backbone.
  unsupported: tuple[tuple[str, str], ...] = ()  # (name fragment, why) of features the encoder does not have.


HF = Layout(
    "Hugging Face ViTMAE/ViT", ("vit.", ""), "embeddings.patch_embeddings.projection", "embeddings.cls_token",
    "embeddings.position_embeddings", "encoder.layer.{i}.", "layernorm_before", "layernorm_after",
    ("attention.attention.query", "attention.attention.key", "attention.attention.value"),
    "attention.output.dense", "intermediate.dense", "output.dense", "layernorm",
    ignore=("decoder.", "pooler.", "classifier."), unsupported=(("layer_scale", "layer scale"),))
MMPRETRAIN = Layout(
    "Sapiens/mmpretrain", ("backbone.", ""), "patch_embed.projection", "cls_token", "pos_embed", "layers.{i}.",
    "ln1", "ln2", "attn.qkv", "attn.proj", "ffn.layers.0.0", "ffn.layers.1", "ln1",
    ignore=("neck.", "head.", "data_preprocessor.", "ln2."),
    unsupported=(("pre_norm.", "a LayerNorm before the first block (pre_norm, CLIP-style)"),
                 (".gamma", "layer scale")))
TIMM = Layout(
    "MAE/timm", ("",), "patch_embed.proj", "cls_token", "pos_embed", "blocks.{i}.", "norm1", "norm2", "attn.qkv",
    "attn.proj", "mlp.fc1", "mlp.fc2", "norm",
    ignore=("decoder_", "mask_token", "head.", "fc_norm."),
    unsupported=(("norm_pre.", "a LayerNorm before the first block (norm_pre, CLIP-style)"),
                 (".ls1.", "layer scale"), (".ls2.", "layer scale")))
LAYOUTS = (HF, MMPRETRAIN, TIMM)

_SINCOS_TOLERANCE = 1e-5


def detect_layout(source: cf.TensorSource) -> tuple[Layout, str]:
  """The layout and wrapper prefix of a checkpoint, from the name of its patch-embedding weight."""
  for layout in LAYOUTS:
    for prefix in layout.prefixes:
      if f"{prefix}{layout.patch}.weight" in source:
        return layout, prefix
  looked_for = ", ".join(repr(f"{layout.prefixes[0]}{layout.patch}.weight") for layout in LAYOUTS)
  raise cf.CheckpointError(f"{source.file}: no patch-embedding tensor of a known ViT layout (looked for {looked_for},"
                           " with or without the prefix)")


def load_into(encoder: FrameEncoder, path: str | os.PathLike, *, grid: tuple[int, int] | None = None) -> str:
  """Loads a pretrained ViT checkpoint (file or Hugging Face directory) into `encoder`'s backbone, in place.

  `grid`: the checkpoint's (rows, columns) patch grid, needed only for a non-square position table without a
  config.json. Returns a one-line summary of what was loaded. Raises CheckpointError (one line, naming the file and
  the tensor) for a corrupt, incomplete or mismatched checkpoint; the encoder is unchanged then.
  """
  source = cf.TensorSource.open(path)
  layout, prefix = detect_layout(source)
  name = lambda suffix: prefix + suffix
  ignored = lambda tensor: tensor.removeprefix(prefix).startswith(layout.ignore) or tensor.startswith(layout.ignore)
  for tensor in source.tensors:
    for fragment, why in layout.unsupported:
      if fragment in tensor and not ignored(tensor):
        raise source.error(tensor, f"belongs to {why}, which the frame encoder does not have")

  width, p, heads = encoder.width, encoder.patch_size, encoder.blocks[0].attn.num_heads
  patch_name = name(f"{layout.patch}.weight")
  if not isinstance(encoder.patch_embed, vit_lib.PatchEmbed):
    raise source.error(patch_name, "is a linear patch embedding, the encoder has a conv stem; set "
                                   "--config.model.encoder.stem=linear to load this checkpoint")
  shape = tuple(source.tensors[patch_name].shape)
  if shape != (width, 3, p, p):
    raise source.error(patch_name, f"has shape {shape} (width, channels, patch rows, patch columns); the encoder "
                                   f"has width {width} and {p}x{p} patches of 3 channels (model.encoder.width, "
                                   "model.patch_size)")
  depth = _count_layers(source, layout, prefix)
  if depth != len(encoder.blocks):
    first = name(layout.layer.format(i=min(depth, len(encoder.blocks))) + layout.norm1 + ".weight")
    problem = "is missing" if depth < len(encoder.blocks) else "is one layer too many"
    raise source.error(first, f"{problem}: the checkpoint has {depth} layers, the encoder {len(encoder.blocks)} "
                              "(model.encoder.depth)")
  config_grid = _check_hf_config(path, encoder) if layout is HF else None

  values: dict[str, tuple[str, np.ndarray]] = {}

  def linear(param: str, tensor: str, rows: int, cols: int) -> None:  # torch Linear [out, in] -> kernel [in, out].
    values[f"{param}/kernel"] = (name(tensor + ".weight"), source.take(name(tensor + ".weight"), (rows, cols)).T)
    values[f"{param}/bias"] = (name(tensor + ".bias"), source.take(name(tensor + ".bias"), (rows,)))

  def norm(param: str, tensor: str) -> None:
    values[f"{param}/scale"] = (name(tensor + ".weight"), source.take(name(tensor + ".weight"), (width,)))
    values[f"{param}/bias"] = (name(tensor + ".bias"), source.take(name(tensor + ".bias"), (width,)))

  conv = source.take(patch_name, (width, 3, p, p))  # -> [(row, column, channel), E], the order of vit.patchify.
  values["patch_embed/proj/kernel"] = (patch_name, conv.transpose(2, 3, 1, 0).reshape(p * p * 3, width))
  values["patch_embed/proj/bias"] = (name(f"{layout.patch}.bias"), source.take(name(f"{layout.patch}.bias"),
                                                                                (width,)))
  for i, block in enumerate(encoder.blocks):
    layer, ours = layout.layer.format(i=i), f"blocks/{i}"
    hidden = block.mlp.fc1.kernel.shape[1]
    norm(f"{ours}/norm1", layer + layout.norm1)
    if isinstance(layout.qkv, str):  # Fused [3E, E]: output rows are q, then k, then v.
      fused = layer + layout.qkv
      weight = source.take(name(fused + ".weight"), (3 * width, width))
      bias = source.take(name(fused + ".bias"), (3 * width,))
      for j, part in enumerate("qkv"):
        values[f"{ours}/attn/{part}/kernel"] = (name(fused + ".weight"), weight[j * width:(j + 1) * width].T)
        values[f"{ours}/attn/{part}/bias"] = (name(fused + ".bias"), bias[j * width:(j + 1) * width])
    else:
      for part, tensor in zip("qkv", layout.qkv):
        linear(f"{ours}/attn/{part}", layer + tensor, width, width)
    linear(f"{ours}/attn/out", layer + layout.out, width, width)
    norm(f"{ours}/norm2", layer + layout.norm2)
    linear(f"{ours}/mlp/fc1", layer + layout.fc1, hidden, width)
    linear(f"{ours}/mlp/fc2", layer + layout.fc2, width, hidden)
  norm("norm", layout.norm)

  notes = _load_positions(encoder, source, name(layout.pos), name(layout.cls), grid or config_grid, values)
  source.finish(ignore=ignored)
  cf.assign(encoder, values, source.file, leave_out=ENCODER_EXTRAS)
  return "; ".join([f"{layout.name} layout, width {width}, depth {depth}, patch {p}", *notes])


def _count_layers(source: cf.TensorSource, layout: Layout, prefix: str) -> int:
  """Number of consecutive blocks 0, 1, ... that have any tensor in the checkpoint."""
  depth = 0
  while any(t.startswith(prefix + layout.layer.format(i=depth)) for t in source.tensors):
    depth += 1
  return depth


def _check_hf_config(path: str | os.PathLike, encoder: FrameEncoder) -> tuple[int, int] | None:
  """Checks a Hugging Face directory's config.json against the encoder; returns its patch grid (None: no config)."""
  file = Path(path) / "config.json"
  if not file.is_file():
    return None
  config = cf.read_config(path)
  expected = {"hidden_size": (encoder.width, "model.encoder.width"),
              "num_hidden_layers": (len(encoder.blocks), "model.encoder.depth"),
              "num_attention_heads": (encoder.blocks[0].attn.num_heads, "model.encoder.num_heads"),
              "intermediate_size": (encoder.blocks[0].mlp.fc1.kernel.shape[1], "model.encoder.mlp_ratio"),
              "patch_size": (encoder.patch_size, "model.patch_size"), "num_channels": (3, "3 colour channels")}
  for key, (ours, flag) in expected.items():
    if key in config and config[key] != ours:
      raise cf.CheckpointError(f"{file}: {key}={config[key]} but the encoder has {ours} ({flag})")
  if config.get("hidden_act", "gelu") != "gelu":
    raise cf.CheckpointError(f"{file}: hidden_act={config['hidden_act']!r}, the encoder uses exact GELU ('gelu')")
  if "image_size" not in config:
    return None
  size = config["image_size"]
  rows, cols = (size, size) if isinstance(size, int) else size
  return rows // encoder.patch_size, cols // encoder.patch_size


def _load_positions(encoder: FrameEncoder, source: cf.TensorSource, pos_name: str, cls_name: str,
                    grid: tuple[int, int] | None, values: dict) -> list[str]:
  """Adds the position table and CLS token to `values` (see the module docstring); returns notes for the summary."""
  width, notes = encoder.width, []
  cls = source.take(cls_name).reshape(-1) if cls_name in source else None
  if cls is not None and cls.shape != (width,):
    raise source.error(cls_name, f"has {cls.size} values, expected {width} (one token of the encoder width)")
  cls_row = patches = None
  if pos_name in source:
    table = source.take(pos_name)
    if table.ndim not in (2, 3) or table.shape[-1] != width or (table.ndim == 3 and table.shape[0] != 1):
      raise source.error(pos_name, f"has shape {table.shape}, expected [1, positions, {width}] or "
                                   f"[positions, {width}]")
    table = table.reshape(-1, width)
    grid, has_cls_row = _position_grid(source, pos_name, len(table), grid, cls is not None)
    cls_row, patches = (table[0], table[1:]) if has_cls_row else (None, table)
  if encoder.pos_embed is not None:
    if patches is None:
      raise source.error(pos_name, "is missing: the encoder has a learned position table (model.encoder.pos_embed="
                                   "'learned'); use --config.model.encoder.pos_embed=sincos for this checkpoint")
    values["pos_embed"] = (pos_name, np.asarray(vit_lib.resize_pos_embed(patches, grid, encoder.grid)))
    if tuple(grid) != tuple(encoder.grid):
      notes.append(f"position table resized {grid[0]}x{grid[1]} -> {encoder.grid[0]}x{encoder.grid[1]}")
  elif patches is not None:
    sincos = vit_lib.sincos_pos_embed_2d(width, tuple(grid))
    if np.abs(patches - sincos).max() > _SINCOS_TOLERANCE:
      raise source.error(pos_name, "is a position table other than the encoder's fixed sin-cos embedding; set "
                                   "--config.model.encoder.pos_embed=learned to load it")
  if encoder.cls_token is not None:
    if cls is None:
      raise source.error(cls_name, "is missing: the encoder has a CLS token (model.encoder.cls_token=True); use "
                                   "--config.model.encoder.cls_token=False for this checkpoint")
    values["cls_token"] = (cls_name, cls + (0 if cls_row is None else cls_row))
  elif cls is not None:
    notes.append("CLS token dropped (model.encoder.cls_token=False)")
  return notes


def _position_grid(source: cf.TensorSource, pos_name: str, rows: int, grid: tuple[int, int] | None,
                   has_cls: bool) -> tuple[tuple[int, int], bool]:
  """(patch grid, whether the table's first row is the CLS position) of a table with `rows` rows."""
  if grid is not None:
    size = grid[0] * grid[1]
    if rows not in (size, size + 1):
      raise source.error(pos_name, f"has {rows} positions, which fits neither a {grid[0]}x{grid[1]} patch grid "
                                   "nor that grid plus a CLS position")
    return tuple(grid), rows == size + 1
  square = lambda n: n > 0 and math.isqrt(n) ** 2 == n
  # A CLS row is there when the rest is a square grid and either the checkpoint has a CLS token or the row count
  # is not square itself (mmpretrain writes the CLS row even for models that drop the token).
  if square(rows - 1) and (has_cls or not square(rows)):
    return (math.isqrt(rows - 1),) * 2, True
  if square(rows):
    return (math.isqrt(rows),) * 2, False
  raise source.error(pos_name, f"has {rows} positions, not a square patch grid (with or without a CLS position); "
                               "pass the checkpoint's grid to synclipmae.pretrained.vit.load_into(..., grid=(rows, "
                               "cols))")
