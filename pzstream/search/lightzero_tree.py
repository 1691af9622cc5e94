"""LightZero's C++ MuZero tree (``ctree_muzero.mz_tree``) behind the same interface.

It serves as a cross-check of the numpy backend and as a speed reference. Loading:
the extension module is loaded straight from its file, so neither ``lzero``'s package
``__init__`` chain nor DI-engine is ever imported.

Two adaptations make its results comparable with the numpy backend:

* Candidate sets. LightZero gives a non-root node *all* ``len(policy_logits)``
  actions. Our trees use the root's candidate set at every depth, so each root's
  legal slots are compacted to ``0..n_b-1`` (in slot order) before they reach the
  C++ tree, and mapped back on the way out.
* Tie-breaks. LightZero breaks ties between equal pUCT scores with ``rand()`` after
  ``srand(time)``, so even its first selection at each node (where every exploration
  term is zero) is random. We point the module's PLT slot for ``rand`` at a function
  returning 0, which turns that into "first maximum in slot order", the numpy
  backend's rule. This patches the loaded copy of ``mz_tree`` for the whole process
  (also for lzero's own MCTS, should that be imported): deterministic, but no longer
  randomised tie-breaks. Linux x86-64 only; elsewhere the backend reports itself
  unavailable.
"""
from __future__ import annotations

import ctypes
import glob
import importlib.machinery
import importlib.util
import os
import struct
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from .numpy_tree import TreeResult
from .types import RecurrentFn, SearchConfig

_module: ModuleType | None = None
_load_error: str | None = None
# Keeps the ctypes callback alive for as long as the patched module may call it.
_rand_stub = None


def _find_extension() -> str:
    spec = importlib.util.find_spec("lzero")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("package 'lzero' (lightzero) is not installed")
    pkg_dir = list(spec.submodule_search_locations)[0]
    found = glob.glob(os.path.join(pkg_dir, "mcts", "ctree", "ctree_muzero", "mz_tree*.so"))
    if not found:
        raise ImportError(f"no compiled mz_tree extension under {pkg_dir}/mcts/ctree/ctree_muzero")
    return found[0]


def _jump_slot_offset(path: str, symbol: str) -> int:
    """Offset (from the load base) of the PLT/GOT slot through which ``path`` calls ``symbol``.

    A minimal ELF64 little-endian reader: section headers -> .rela.plt -> .dynsym/.dynstr.
    """
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ImportError("mz_tree is not an ELF64 little-endian object")
    e_shoff, = struct.unpack_from("<Q", data, 0x28)
    e_shentsize, e_shnum, e_shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    sections = []
    for i in range(e_shnum):
        name, typ, _flags, _addr, off, size, link, _info, _align, entsize = struct.unpack_from(
            "<IIQQQQIIQQ", data, e_shoff + i * e_shentsize)
        sections.append((name, typ, off, size, link, entsize))
    shstr_off = sections[e_shstrndx][2]

    def sec_name(s) -> str:
        end = data.index(b"\0", shstr_off + s[0])
        return data[shstr_off + s[0]:end].decode()

    r_x86_64_jump_slot = 7
    for s in sections:
        if sec_name(s) != ".rela.plt":
            continue
        dynsym = sections[s[4]]
        dynstr_off = sections[dynsym[4]][2]
        for j in range(s[3] // 24):
            r_offset, r_info, _addend = struct.unpack_from("<QQq", data, s[2] + 24 * j)
            if r_info & 0xFFFFFFFF != r_x86_64_jump_slot:
                continue
            st_name, = struct.unpack_from("<I", data, dynsym[2] + (r_info >> 32) * dynsym[5])
            end = data.index(b"\0", dynstr_off + st_name)
            if data[dynstr_off + st_name:end] == symbol.encode():
                return r_offset
    raise ImportError(f"mz_tree has no lazily bound PLT slot for {symbol!r}")


def _load_base(path: str) -> int:
    real = os.path.realpath(path)
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and parts[5] == real and int(parts[2], 16) == 0:
                return int(parts[0].split("-")[0], 16)
    raise ImportError("mz_tree is not mapped in this process")


def _pin_tie_break(path: str) -> None:
    """Make the loaded mz_tree's ``rand()`` return 0 (see module docstring)."""
    global _rand_stub
    slot = _load_base(path) + _jump_slot_offset(path, "rand")
    _rand_stub = ctypes.CFUNCTYPE(ctypes.c_int)(lambda: 0)
    ctypes.c_void_p.from_address(slot).value = ctypes.cast(_rand_stub, ctypes.c_void_p).value


def _load() -> ModuleType:
    global _module, _load_error
    if _module is not None:
        return _module
    if _load_error is not None:
        raise ImportError(_load_error)
    try:
        path = _find_extension()
        # The name's last component must be the extension's own (PyInit_mz_tree).
        loader = importlib.machinery.ExtensionFileLoader("pzstream_lightzero_ctree.mz_tree", path)
        spec = importlib.util.spec_from_file_location(loader.name, path, loader=loader)
        module = importlib.util.module_from_spec(spec)
        loader.exec_module(module)
        _pin_tie_break(path)
    except Exception as exc:  # any failure means "backend unavailable", with the reason
        _load_error = f"LightZero ctree backend unavailable: {exc}"
        raise ImportError(_load_error) from exc
    _module = module
    return module


def lightzero_available() -> bool:
    """True when LightZero's compiled MuZero tree can be loaded (and tie-pinned) here."""
    try:
        _load()
    except ImportError:
        return False
    return True


@dataclass
class _Mirror:
    """What ctree does not expose, kept beside it: each node's model state, parent, slot and reward,
    and the values backed into each root child (to recover the root children's Q).

    Node i is the one LightZero calls latent index i: 0 the root, i the node simulation i - 1 expanded.
    """

    handles: np.ndarray  # int64 [num_sims + 1, B]
    parent: np.ndarray  # int64 [num_sims + 1, B]; -1 for the root
    slot_of: np.ndarray  # int64 [num_sims + 1, B]: the slot that leads to the node from its parent
    node_reward: np.ndarray  # float64 [num_sims + 1, B]
    child_sum: np.ndarray  # float64 [B, K]: backed-up values per root child
    child_n: np.ndarray  # int64 [B, K]

    @classmethod
    def empty(cls, root_handle: np.ndarray, num_sims: int, num_slots: int) -> "_Mirror":
        num_roots = len(root_handle)
        handles = np.zeros((num_sims + 1, num_roots), dtype=np.int64)
        handles[0] = root_handle
        return cls(handles=handles, parent=np.full((num_sims + 1, num_roots), -1, dtype=np.int64),
                   slot_of=np.zeros((num_sims + 1, num_roots), dtype=np.int64),
                   node_reward=np.zeros((num_sims + 1, num_roots), dtype=np.float64),
                   child_sum=np.zeros((num_roots, num_slots), dtype=np.float64),
                   child_n=np.zeros((num_roots, num_slots), dtype=np.int64))


def _simulate(tree: ModuleType, roots, bounds, mirror: _Mirror, new: int, slots: list[np.ndarray],
              recurrent_fn: RecurrentFn, config: SearchConfig) -> None:
    """One simulation on every tree: ctree selects, the model expands node ``new``, ctree backs up; the mirror follows."""
    num_roots = len(slots)
    gamma = float(config.discount)
    no_players = [-1] * num_roots  # single player: LightZero's to_play == -1
    results = tree.ResultsWrapper(num_roots)
    latent_idx, batch_idx, compact_actions, to_play = tree.batch_traverse(
        roots, int(config.pb_c_base), float(config.pb_c_init), gamma, bounds, results, no_players)
    latent_idx = np.asarray(latent_idx, dtype=np.int64)
    batch_idx = np.asarray(batch_idx, dtype=np.int64)
    actions = np.array([slots[b][a] for b, a in zip(batch_idx, compact_actions)], dtype=np.int64)
    out = recurrent_fn(mirror.handles[latent_idx, batch_idx], actions)
    mirror.handles[new] = np.asarray(out.handle, dtype=np.int64).reshape(num_roots)
    mirror.parent[new], mirror.slot_of[new] = latent_idx, actions
    rewards = np.asarray(out.reward, dtype=np.float32).reshape(num_roots)
    values = np.asarray(out.value, dtype=np.float32).reshape(num_roots)
    mirror.node_reward[new] = rewards
    logits = np.asarray(out.prior_logits, dtype=np.float32)
    # Shift by the legal max so LightZero's softmax (which starts its max at -1e6)
    # and ours see the same numbers.
    logit_lists = [(logits[b, slots[b]] - logits[b, slots[b]].max()).tolist() for b in range(num_roots)]
    tree.batch_backpropagate(new, gamma, rewards.tolist(), values.tolist(), logit_lists, bounds, results, to_play)
    _mirror_backup(mirror, new, values, gamma)


def _mirror_backup(mirror: _Mirror, new: int, values: np.ndarray, gamma: float) -> None:
    """Add to the root child on node ``new``'s path the value backed into it: the discounted rewards
    below it plus the discounted leaf value (the tree's own backup recursion)."""
    rows = np.arange(values.shape[0])
    node = np.full(len(rows), new, dtype=np.int64)
    boot = values.astype(np.float64)
    deeper = mirror.parent[node, rows] != 0
    while deeper.any():
        boot = np.where(deeper, mirror.node_reward[node, rows] + gamma * boot, boot)
        node = np.where(deeper, mirror.parent[node, rows], node)
        deeper = mirror.parent[node, rows] != 0
    np.add.at(mirror.child_sum, (rows, mirror.slot_of[node, rows]), boot)
    np.add.at(mirror.child_n, (rows, mirror.slot_of[node, rows]), 1)


def _harvest(roots, mirror: _Mirror, slots: list[np.ndarray], gamma: float, num_sims: int) -> TreeResult:
    """The roots' visit counts (from ctree), mean backed-up values and children's Q (from the mirror)."""
    num_roots, num_slots = mirror.child_n.shape
    rows = np.arange(num_roots)
    visit_counts = np.zeros((num_roots, num_slots), dtype=np.int32)
    for b, dist in enumerate(roots.get_distributions()):
        visit_counts[b, slots[b]] = dist
    # get_values() divides the root's value sum by (num_sims + 1): prepare() gave the
    # root one visit with no value; undo that to report the mean backed-up value.
    root_value = np.asarray(roots.get_values(), dtype=np.float64) * (num_sims + 1) / num_sims
    first_reward = np.zeros((num_roots, num_slots), dtype=np.float64)
    for node in range(1, num_sims + 1):
        direct = mirror.parent[node] == 0
        first_reward[rows[direct], mirror.slot_of[node, direct]] = mirror.node_reward[node, direct]
    n = mirror.child_n
    q_values = np.where(n > 0, first_reward + gamma * mirror.child_sum / np.maximum(n, 1), 0.0)
    return TreeResult(
        visit_counts=visit_counts,
        root_value=root_value.astype(np.float32),
        q_values=q_values.astype(np.float32),
    )


def search_lightzero(
    root_logits: np.ndarray,
    noise: np.ndarray | None,
    legal: np.ndarray,
    root_handle: np.ndarray,
    recurrent_fn: RecurrentFn,
    config: SearchConfig,
) -> TreeResult:
    """Same contract as ``numpy_tree.search_numpy``, computed by LightZero's ctree."""
    try:
        tree = _load()
    except ImportError as exc:
        raise RuntimeError(f"SearchConfig(backend='lightzero'): {exc}") from exc
    num_roots, num_slots = root_logits.shape
    num_sims = config.num_simulations
    slots = [np.flatnonzero(legal[b]) for b in range(num_roots)]  # compact index -> slot
    no_players = [-1] * num_roots

    roots = tree.Roots(num_roots, [list(range(len(s))) for s in slots])
    root_logit_lists = [root_logits[b, slots[b]].tolist() for b in range(num_roots)]
    zero_rewards = [0.0] * num_roots
    if noise is None:
        roots.prepare_no_noise(zero_rewards, root_logit_lists, no_players)
    else:
        noise_lists = [noise[b, slots[b]].tolist() for b in range(num_roots)]
        roots.prepare(float(config.root_noise_fraction), noise_lists, zero_rewards, root_logit_lists, no_players)
    bounds = tree.MinMaxStatsList(num_roots)
    bounds.set_delta(float(config.value_delta_max))
    mirror = _Mirror.empty(root_handle, num_sims, num_slots)
    for sim in range(num_sims):
        _simulate(tree, roots, bounds, mirror, sim + 1, slots, recurrent_fn, config)
    return _harvest(roots, mirror, slots, float(config.discount), num_sims)
