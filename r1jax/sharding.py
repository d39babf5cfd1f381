"""Device meshes, logical-axis rules, and shardings of params, optimizer state, batches, caches.

Sharding is declared once. The model names the axes of every parameter and main activation
("embed", "q_heads", "batch", ...); one rule table maps those logical names to mesh axes; every
jitted function (init, forward, train steps, the sampler) takes its in/out shardings from it:

    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    params = init_params_sharded(config, rng, mesh)            # never materialised on one device
    step = sharded_jit(train_step, mesh, DEFAULT_RULES,
                       in_shardings=(state_shardings, batch_sharding(mesh)),
                       out_shardings=(state_shardings, replicated(mesh)), donate_argnums=0)
    state, loss = step(state, global_batch(local_batch, mesh))

Mesh axes: `data` (pure data parallel: params replicated), `fsdp` (data parallel with params and
optimizer state split across it), `expert` (routed experts split across it; the batch too, so
devices that hold different experts see different tokens and the MoE dispatch moves tokens to
their experts), `tensor` (heads / mlp / vocab split: Megatron-style). `tensor` is the innermost
mesh axis so tensor-parallel groups sit on the fastest links (the same host, neighbouring TPU
chips). An axis a mesh shape leaves out has size 1.

Two rules hold wherever logical names become mesh axes here:
  * a mesh axis that does not divide a dimension is dropped for that dimension, which is then
    replicated over it (e.g. 2 kv heads on tensor=4): shapes of real checkpoints rarely divide
    every mesh, and replicating a small tensor beats refusing to run;
  * a mesh axis is used at most once per array (the first rule that claims it wins).

Activations: the model's `nn.with_logical_constraint` annotations only take effect when the
function is TRACED under `activation_rules(mesh, rules)`; `sharded_jit` does that for you.
Outside any rules the annotations are no-ops, so `r1jax.models.logits(config, params, tokens)`
also runs eagerly on sharded params, with XLA choosing the activation layout.
"""
from __future__ import annotations

import contextlib
import functools
import math
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Union

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from r1jax.models import abstract_params, init_cache, init_params
from r1jax.models.config import ModelConfig
from r1jax.models.transformer import CACHE_AXES

# Mesh axis order, outermost first: `tensor` last keeps its groups on the fastest links, `expert`
# next to it because expert all-to-alls are the next most bandwidth-hungry.
MESH_AXES = ("data", "fsdp", "expert", "tensor")

MeshAxes = Union[str, tuple[str, ...], None]
Rules = tuple[tuple[str, MeshAxes], ...]

BATCH_AXES = ("data", "fsdp", "expert")
DEFAULT_RULES: Rules = (
    ("batch", BATCH_AXES),
    ("experts", "expert"),
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("q_heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("expert_mlp", "tensor"),
    ("head_dim", None),
    ("q_lora", None),
    ("kv_lora", None),
    ("lora_rank", None),  # LoRA adapters' rank: small, replicated
    ("router_experts", None),
    ("expert_capacity", None),
    ("layers", None),
    ("length", None),
    ("cache_length", None),
)


# ----------------------------------------------------------------------------- mesh and rules


def make_mesh(shape: Mapping[str, int], devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
    """A mesh with axes ("data", "fsdp", "expert", "tensor"); axes missing from `shape` are 1.

    The product of the sizes must equal the number of devices (all of `jax.devices()` unless
    `devices` is given). `jax.make_mesh` picks a device order that follows the physical topology.
    Axes are `Auto` (GSPMD propagation), not `Explicit`, so jit in/out shardings and the model's
    logical constraints drive the layout.
    """
    unknown = sorted(set(shape) - set(MESH_AXES))
    if unknown:
        raise ValueError(f"Unknown mesh axes {unknown} in mesh shape {dict(shape)}; "
                         f"allowed axes: {', '.join(MESH_AXES)}.")
    devices = list(jax.devices() if devices is None else devices)
    names = MESH_AXES
    sizes = tuple(int(shape.get(a, 1)) for a in names)
    if math.prod(sizes) != len(devices):
        raise ValueError(f"Mesh shape {dict(zip(names, sizes))} has {math.prod(sizes)} devices "
                         f"but {len(devices)} devices are available; the product must match.")
    return jax.make_mesh(sizes, names, axis_types=(AxisType.Auto,) * len(names), devices=devices)


def _as_tuple(mesh_axes: MeshAxes) -> tuple[str, ...]:
    if mesh_axes is None:
        return ()
    return (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes)


def validate_rules(rules: Sequence[Sequence[Any]], mesh: Mesh) -> Rules:
    """Checks (logical name, mesh axes) pairs against the mesh; returns them as hashable tuples.

    Rules usually come from a config as lists ([["batch", ["data", "fsdp"]], ...]); mesh axes
    may be a name, a sequence of names, or None (replicated).
    """
    normalized = []
    for rule in rules:
        if len(rule) != 2 or not isinstance(rule[0], str):
            raise ValueError(f"Sharding rule {rule!r} is not a (logical name, mesh axes) pair.")
        name, mesh_axes = rule[0], rule[1]
        axes = _as_tuple(mesh_axes)
        for axis in axes:
            if axis not in mesh.axis_names:
                raise ValueError(f"Sharding rule {name!r} -> {mesh_axes!r} names mesh axis "
                                 f"{axis!r}, which is not in the mesh "
                                 f"(axes: {', '.join(mesh.axis_names)}).")
        normalized.append((name, None if not axes else axes[0] if len(axes) == 1 else axes))
    return tuple(normalized)


def logical_to_mesh_spec(logical: Sequence[Optional[str]], shape: Sequence[int],
                         mesh_shape: Mapping[str, int], rules: Rules) -> PartitionSpec:
    """The PartitionSpec of one array from its logical axis names and shape.

    Rules are applied in order (flax's precedence): each names a logical axis and the mesh axes
    its dimension is split over. A mesh axis that is already used, or whose size does not divide
    the dimension (together with the axes kept before it), is skipped, leaving that part of the
    dimension replicated.
    """
    if len(logical) != len(shape):
        raise ValueError(f"Logical axes {tuple(logical)} do not match shape {tuple(shape)}.")
    assigned: list[MeshAxes] = [None] * len(shape)
    decided = [name is None for name in logical]
    used: set[str] = set()
    for name, mesh_axes in rules:
        if name not in logical or decided[logical.index(name)]:
            continue
        dim = logical.index(name)
        decided[dim] = True
        kept, split = [], 1
        for axis in _as_tuple(mesh_axes):
            if axis not in used and shape[dim] % (split * mesh_shape[axis]) == 0:
                kept.append(axis)
                split *= mesh_shape[axis]
        used.update(kept)
        assigned[dim] = None if not kept else kept[0] if len(kept) == 1 else tuple(kept)
    return PartitionSpec(*assigned)


def logical_to_shardings(logical_specs: Any, mesh: Mesh, rules: Sequence[Sequence[Any]],
                         shapes: Any) -> Any:
    """A tree of NamedShardings for a tree of logical PartitionSpecs and a matching tree of shapes.

    `shapes` leaves are anything with `.shape` (jax.ShapeDtypeStruct, arrays). See
    `logical_to_mesh_spec` for how non-dividing mesh axes are dropped.
    """
    rules = validate_rules(rules, mesh)
    return jax.tree.map(
        lambda spec, x: NamedSharding(mesh, logical_to_mesh_spec(tuple(spec), x.shape,
                                                                  mesh.shape, rules)),
        logical_specs, shapes, is_leaf=lambda x: isinstance(x, PartitionSpec))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (scalars, step counters, metrics)."""
    return NamedSharding(mesh, PartitionSpec())


# ----------------------------------------------------------------------------- parameters


def param_shardings(config: ModelConfig, mesh: Mesh,
                    rules: Sequence[Sequence[Any]] = DEFAULT_RULES):
    """NamedShardings shaped like the params tree, from the model's logical annotations."""
    boxed = abstract_params(config)
    return logical_to_shardings(nn.get_partition_spec(boxed), mesh, rules, nn.meta.unbox(boxed))


def init_params_sharded(config: ModelConfig, rng: jax.Array, mesh: Mesh,
                        rules: Sequence[Sequence[Any]] = DEFAULT_RULES):
    """Random params created directly on their shards: no device ever holds the full model.

    Same values as `init_params(config, rng)` (jax's partitionable threefry makes random bits
    independent of the sharding). `rng` must be the same on every process.
    """
    shardings = param_shardings(config, mesh, rules)
    init = jax.jit(functools.partial(init_params, config), in_shardings=replicated(mesh),
                   out_shardings=shardings)
    return init(rng)


def _place(path, expected, sharding: NamedSharding, x):
    if tuple(x.shape) != tuple(expected.shape):
        raise ValueError(f"Parameter {jax.tree_util.keystr(path)} has shape {tuple(x.shape)}, "
                         f"the config expects {tuple(expected.shape)}.")
    if isinstance(x, jax.Array):
        return jax.device_put(x, sharding)
    # Host arrays (numpy, memory-mapped safetensors) are sliced per shard, so a host only reads
    # and copies the pieces its own devices hold.
    return jax.make_array_from_callback(x.shape, sharding, lambda index: np.asarray(x[index]))


def shard_params(config: ModelConfig, params, mesh: Mesh,
                 rules: Sequence[Sequence[Any]] = DEFAULT_RULES):
    """Places every leaf of `params` (jax or numpy arrays, dtypes kept) onto its shards."""
    boxed = abstract_params(config)
    return jax.tree_util.tree_map_with_path(_place, nn.meta.unbox(boxed),
                                            param_shardings(config, mesh, rules), params)


def _fits(sharding: NamedSharding, shape: Sequence[int]) -> bool:
    """Whether `sharding` can hold an array of `shape` (same rank, every split divides)."""
    spec = tuple(sharding.spec)
    if len(spec) != len(shape):
        return False
    mesh_shape = sharding.mesh.shape
    return all(dim % math.prod(mesh_shape[a] for a in _as_tuple(axes)) == 0
               for dim, axes in zip(shape, spec))


def shardings_like(tree_of_shapes: Any, params_shardings: Any) -> Any:
    """Shardings for a tree (optimizer state, EMA, ...) that contains copies of the params.

    A leaf whose path ends with a parameter's path (optax's `mu`/`nu` hold the params tree) and
    whose shape fits that parameter's sharding takes it; everything else (step counts, scalars,
    factored statistics of another shape) is replicated. Typical use:
    `shardings_like(jax.eval_shape(optimizer.init, params), param_shardings(config, mesh))`.
    """
    by_path = {tuple(map(str, path)): s
               for path, s in jax.tree_util.tree_leaves_with_path(params_shardings)}
    mesh = next(iter(by_path.values())).mesh

    def sharding_of(path, x):
        keys = tuple(map(str, path))
        for start in range(len(keys)):
            param = by_path.get(keys[start:])
            if param is not None and _fits(param, x.shape):
                return param
        return replicated(mesh)

    return jax.tree_util.tree_map_with_path(sharding_of, tree_of_shapes)


# ----------------------------------------------------------------------------- batches and caches


def batch_shards(mesh_shape: Mapping[str, int]) -> int:
    """How many ways a batch is split: the product of the batch axes' sizes."""
    return math.prod(mesh_shape.get(axis, 1) for axis in BATCH_AXES)


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Dim 0 (the batch) split over ("data", "fsdp"); the other ndim - 1 dims replicated."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES, *([None] * (ndim - 1))))


def global_batch(local_batch: Any, mesh: Mesh) -> Any:
    """Assembles each process's rows into global arrays split over the batch axes.

    local_batch: a tree of host arrays [B_local, ...], this process's part of the global batch
    (B_local = B / jax.process_count()). Returns jax.Arrays [B, ...] with `batch_sharding`. On one
    process the local batch is the global batch.
    """
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(batch_sharding(mesh, np.ndim(x)),
                                                         np.asarray(x)),
        local_batch)


def global_batch_from_whole(batch: Any, mesh: Mesh) -> Any:
    """Like `global_batch`, from host arrays every process holds whole and identical [B, ...]:
    each process places just the rows its devices hold."""
    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, batch_sharding(mesh, x.ndim),
                                            lambda index: x[index])

    return jax.tree.map(put, batch)


def all_rows(tree: Any) -> Any:
    """Every process's rows, on every process, as numpy arrays.

    A host array [B_local, ...] becomes [P * B_local, ...], the processes' rows in process order
    (the order `global_batch` lays them out in); a jax.Array split across processes becomes its
    whole value. On one process: the values themselves. Each leaf must have the same shape on
    every process.
    """
    if jax.process_count() == 1:
        return jax.tree.map(np.asarray, tree)
    from jax.experimental import multihost_utils  # Only multi-process runs need it.
    return multihost_utils.process_allgather(tree, tiled=True)


def cache_shardings(config: ModelConfig, mesh: Mesh, rules: Sequence[Sequence[Any]],
                    batch_size: int, max_len: int) -> dict:
    """NamedShardings for the KV cache of `init_cache(config, batch_size, max_len)`.

    The per-layer entries (k/v, or MLA's latent/k_rope) [L, B, S, K, D] follow CACHE_AXES,
    valid [B, S] follows ("batch", "cache_length"), index is replicated. A batch or head count
    the mesh does not divide is replicated.
    """
    shapes = jax.eval_shape(functools.partial(init_cache, config, batch_size, max_len))
    specs = {name: PartitionSpec(*CACHE_AXES) for name in shapes}
    specs.update(valid=PartitionSpec("batch", "cache_length"), index=PartitionSpec())
    return logical_to_shardings(specs, mesh, rules, shapes)


def per_layer_cache_shardings(shardings: dict, num_layers: int) -> dict:
    """`cache_shardings` for the cache in `transformer.per_layer_cache`'s layout: each per-layer
    entry a tuple of num_layers arrays [B, S, K * D], each laid out as its layer of the stack
    was (heads and head dims split on the flattened axis in that order, the heads' mesh axes
    outermost)."""
    def layer(s: NamedSharding) -> NamedSharding:
        spec = tuple(s.spec) + (None,) * (5 - len(s.spec))
        heads = tuple(axis for part in spec[3:] if part is not None
                      for axis in ((part,) if isinstance(part, str) else part))
        return NamedSharding(s.mesh, PartitionSpec(spec[1], spec[2], heads or None))

    return {name: (layer(s),) * num_layers if name not in ("valid", "index") else s
            for name, s in shardings.items()}


# ----------------------------------------------------------------------------- compiling


@contextlib.contextmanager
def activation_rules(mesh: Mesh, rules: Sequence[Sequence[Any]] = DEFAULT_RULES) -> Iterator[None]:
    """Sets the mesh and the logical rules, so the model's activation constraints take effect.

    The constraints are read when a function is TRACED: jit/lower/compile inside this context
    (or use `sharded_jit`). Eager calls inside it also honour them. Unlike parameter shardings,
    activation constraints do not look at shapes: XLA pads a dimension the mesh does not divide.
    """
    rules = validate_rules(rules, mesh)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        yield


def sharded_jit(fn: Callable, mesh: Mesh, rules: Sequence[Sequence[Any]], in_shardings: Any,
                out_shardings: Any, donate_argnums: Union[int, Sequence[int]] = (),
                compiler_options: Optional[dict] = None):
    """`jax.jit` with explicit in/out shardings whose tracing happens under the logical rules.

    The returned function is a plain jitted function (`.lower`, `.trace` work) and may be called
    from anywhere: the rules and the (abstract) mesh are entered inside the traced function,
    because `jax.set_mesh` is not allowed under jit. Donate the train state with
    `donate_argnums=0` so its buffers are reused for the new state. compiler_options: XLA
    options of this compilation only (`jax.jit`'s).
    """
    rules = validate_rules(rules, mesh)

    @functools.wraps(fn)
    def traced(*args):
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), nn.logical_axis_rules(rules):
            return fn(*args)

    return jax.jit(traced, in_shardings=in_shardings, out_shardings=out_shardings,
                   donate_argnums=donate_argnums, compiler_options=compiler_options)
