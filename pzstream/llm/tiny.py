"""A tiny, locally built Qwen2-architecture causal LM and its tokenizer.

No model weights can be downloaded on the machines this project runs on, so the default
LLM ("tiny") is built here, deterministically, from nothing:

* a byte-level BPE tokenizer trained with the ``tokenizers`` library on a built-in corpus
  (English-like sentences from a word list held in this module plus text-adventure
  commands such as "go north", "take lamp", "open mailbox", "examine leaflet");
* a randomly initialised ``Qwen2ForCausalLM`` (hidden 128, 2 layers, 2 heads, 1 KV head,
  intermediate 256, tied embeddings, 2048 positions) from a fixed seed.

Real architectures with random weights (``random:qwen2.5-0.5b`` and others) are built by
``pzstream.llm.shapes`` with the same tokenizer and the same build-once machinery.

Both are written with ``save_pretrained`` so that ``AutoModelForCausalLM.from_pretrained``
and ``AutoTokenizer.from_pretrained`` load the directory like any Hugging Face model.

Building is done once per cache directory and is safe when several processes race: an
exclusive ``fcntl`` lock on ``<dir>.lock`` serialises builders, the files are written to a
temporary directory next to the target and moved into place with one ``os.rename``, and a
``BUILD_OK`` marker written last tells later callers the directory is complete.

Special tokens: ``<|endoftext|>`` (id 0) is bos, eos and pad. ``<think>``, ``</think>``,
``<answer>`` and ``</answer>`` are added tokens (one id each, not "special", so decoding
with ``skip_special_tokens=True`` keeps them).
"""
from __future__ import annotations

import fcntl
import os
import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

TINY_NAME = "tiny-qwen2-v2"
SEED = 1234
VOCAB_SIZE = 3000
EOS = "<|endoftext|>"
RANDOM_PREFIX = "random:"  # llm.model=random:<shape>: see pzstream/llm/shapes.py
ADDED_TOKENS = ("<think>", "</think>", "<answer>", "</answer>")
# Larger than Hugging Face's default 0.02 so that the random model's next-token
# distributions are far from uniform: candidate log-probs then differ by whole nats and
# tests comparing two scoring paths cannot pass by accident.
INIT_RANGE = 0.25

_WORDS = """
the a an and or but if then when while of to in on at by for with from into onto over under
above below behind before after near far inside outside through across around between is
are was were be been being has have had do does did can could will would shall should may
might must you your yours i me my mine we us our he him his she her it its they them their
this that these those there here where what which who whom whose why how all some any none
every each many few more most less other another such only own same so than too very just
now still again ever never always often once up down out off not no yes small large big
little old new dark light cold warm wet dry long short tall narrow wide heavy empty full
open closed locked broken ancient strange quiet loud bright dim dusty rusty wooden stone
golden silver iron glass white black red green blue brown grey yellow room hall house
kitchen cellar attic garden forest path road river bridge cave tunnel door window wall
floor ceiling table chair bed chest box bag bottle lamp lantern torch candle book page map
note letter leaflet key sword knife axe rope ladder coin jewel egg nest tree leaf rock
sand water fire smoke wind rain sky sun moon star night day morning evening troll thief
wizard dragon guard king queen man woman child dog cat bird rat snake bat ghost voice sound
smell light shadow passage stair staircase trapdoor rug mailbox sack bread garlic bell
book candles skull painting canary grating gate fence shed barn mill dam boat raft pump
game score moves points treasure trophy case west east north south northeast northwest
southeast southwest up down climb walk run go take get drop put place give throw open close
unlock lock read examine look search turn push pull move lift break kill attack fight eat
drink wear remove light extinguish fill pour tie untie wave ring knock listen smell touch
enter exit leave say ask tell answer wait sleep save restore inventory you see can there
is nothing special about it seems to be appears notice find found hear feel here also
contains contain holding carrying empty-handed taken dropped opened closed nothing happens
which do you mean i don't understand that sentence you can't go that way it is too dark
to see you are likely to be eaten by a grue welcome to adventure your score is out of
possible in moves
""".split()

_VERBS_OBJ = ("take", "get", "drop", "open", "close", "examine", "read", "push", "pull",
              "move", "eat", "drink", "light", "turn on", "turn off", "wear", "remove",
              "unlock", "lock", "break", "search", "look at", "climb", "enter", "kill",
              "attack", "tie", "untie", "wave", "ring", "fill", "empty", "throw", "give")
_OBJECTS = ("lamp", "lantern", "sword", "knife", "mailbox", "leaflet", "door", "window",
            "trapdoor", "rug", "table", "sack", "bottle", "water", "garlic", "rope", "egg",
            "nest", "tree", "book", "candles", "bell", "skull", "painting", "chest", "box",
            "key", "coin", "jewel", "map", "note", "letter", "gate", "grating", "boat",
            "troll", "thief", "axe", "torch", "ladder", "bread", "case", "canary", "house",
            "brown sack", "glass bottle", "small mailbox", "wooden door", "brass lantern",
            "elvish sword", "jewel-encrusted egg", "rusty knife", "old map", "red button")
_DIRECTIONS = ("north", "south", "east", "west", "northeast", "northwest", "southeast",
               "southwest", "up", "down", "in", "out")
_BARE = ("look", "inventory", "wait", "score", "listen", "smell", "jump", "pray", "yes",
         "no", "again", "sleep", "diagnose", "l", "i", "n", "s", "e", "w", "u", "d")


def _corpus(seed: int = SEED, sentences: int = 6000) -> list[str]:
    """Deterministic training text: English-like sentences, game commands, prompt-like text."""
    rng = random.Random(seed)
    out: list[str] = []
    for _ in range(sentences):
        n = rng.randint(4, 16)
        words = [rng.choice(_WORDS) for _ in range(n)]
        s = " ".join(words)
        out.append(s[:1].upper() + s[1:] + rng.choice((".", ".", ".", "!", "?", ",")))
    for v in _VERBS_OBJ:
        for o in _OBJECTS:
            out.append(f"{v} {o}")
            out.append(f"> {v} the {o}")
    for d in _DIRECTIONS:
        out += [f"go {d}", f"Action: go {d}", f"walk {d}", f"<answer>go {d}</answer>"]
    for b in _BARE:
        out += [b, f"Action: {b}"]
    for _ in range(1500):
        o = rng.choice(_OBJECTS)
        out.append(f"Step {rng.randint(1, 9)}: Observation: You see a {o} here. "
                   f"Action: {rng.choice(_VERBS_OBJ)} {o} Reward: {rng.choice((0, 0, 1, 5, 10))}")
        out.append(f"<think>The {o} may be useful, so I should {rng.choice(_VERBS_OBJ)} it."
                   f"</think> <answer>{rng.choice(_VERBS_OBJ)} {o}</answer>")
    suffixes = ("s", "ed", "ing", "er", "est", "ly", "ness", "able", "ful", "less")
    for w in _WORDS:
        for suf in suffixes:
            out.append(f"{w}{suf} {w.capitalize()}{suf} {w.upper()}")
    for _ in range(800):
        out.append(" ".join(str(rng.randint(0, 10 ** rng.randint(1, 4))) for _ in range(6)))
    out.append("=== Recent History === === Current Situation === === Task === "
               "Candidate actions: Choose the single best next action. Score: Moves: 0123456789")
    return out


_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def models_dir() -> Path:
    """Where locally built models live: ``$PZSTREAM_CACHE_DIR/models`` or ``~/.cache/pzstream/models``."""
    env = os.environ.get("PZSTREAM_CACHE_DIR")
    base = Path(env).expanduser() if env else Path.home() / ".cache" / "pzstream"
    return base / "models"


def build_bpe_tokenizer(corpus: list[str], vocab_size: int = VOCAB_SIZE,
                        added_tokens: tuple[str, ...] = ADDED_TOKENS):
    """A byte-level BPE tokenizer with Qwen2's normaliser and pre-tokenizer, trained on ``corpus``
    (offline, deterministic), as a ``PreTrainedTokenizerFast`` with ``<|endoftext|>`` (id 0) as
    bos, eos and pad. ``added_tokens`` become one id each; without them ``<answer>`` is split by
    the pre-tokenizer as a real Qwen2 tokenizer splits it (``>open`` can then be one piece)."""
    from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers,
                            pre_tokenizers, trainers)
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # The same normaliser and pre-tokeniser as Qwen2's tokenizer (NFC, then a GPT-4-style
    # split: letters with one leading non-letter, single digits, punctuation runs,
    # newlines, spaces; then byte-level). transformers' ``Qwen2Tokenizer`` (which
    # ``AutoTokenizer`` picks for a ``qwen2`` config) installs exactly these when it loads
    # the directory, so training and use agree.
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_SPLIT_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    if added_tokens:
        tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in added_tokens])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=EOS, unk_token=None,
        model_max_length=2048, clean_up_tokenization_spaces=False,
    )
    return fast


def _build_tokenizer():
    return build_bpe_tokenizer(_corpus())


def build_model(vocab_size: int, eos_id: int):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(
        # head_dim 64: vLLM's CPU attention kernels support it (head_dim 16 is refused)
        vocab_size=vocab_size, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, intermediate_size=256, tie_word_embeddings=True,
        max_position_embeddings=2048, initializer_range=INIT_RANGE, rope_theta=10000.0,
        bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=eos_id, use_cache=True,
    )
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(SEED)
        model = Qwen2ForCausalLM(cfg)
    finally:
        torch.random.set_rng_state(state)
    return model.eval()


def _is_built(path: Path) -> bool:
    return (path / "BUILD_OK").is_file()


def build_once(out: Path, write: Callable[[Path], None], marker: str) -> Path:
    """Run ``write(tmp_dir)`` once to fill model directory ``out``; return ``out`` (absolute).

    A complete directory (one with a ``BUILD_OK`` marker, whose text is ``marker``) is reused
    without touching it; concurrent callers serialise on ``<out>.lock`` and the directory
    appears atomically (temporary directory + rename), so a crashed builder leaves nothing
    that a later caller would take for complete.
    """
    out = Path(out).expanduser().absolute()
    if _is_built(out):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    lock_path = out.parent / (out.name + ".lock")
    with open(lock_path, "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            if _is_built(out):
                return out
            tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
            try:
                write(tmp)
                (tmp / "BUILD_OK").write_text(marker + "\n")
                if out.exists():  # an incomplete directory left by a crashed builder
                    shutil.rmtree(out)
                os.rename(tmp, out)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
    return out


def build_tiny(out_dir: Path | None = None) -> Path:
    """Build the tiny model + tokenizer once into ``out_dir`` and return the directory.

    Default directory: ``$PZSTREAM_CACHE_DIR/models/tiny-qwen2-v2``, or
    ``~/.cache/pzstream/models/tiny-qwen2-v2`` (built by ``build_once``: reused when complete,
    safe when processes race).
    """
    def write(tmp: Path) -> None:
        tokenizer = _build_tokenizer()
        model = build_model(len(tokenizer), tokenizer.convert_tokens_to_ids(EOS))
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return build_once(Path(out_dir) if out_dir is not None else models_dir() / TINY_NAME, write,
                      f"{TINY_NAME} seed={SEED}")


def _quiet_loading() -> None:
    """No "Loading weights" progress bar from transformers for each model a process loads: many
    processes load models at once here, and their bars would bury the roles' logs."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def resolve_model(name_or_path: str) -> str:
    """Map a model argument to something ``from_pretrained`` accepts.

    * ``"tiny"`` -> the locally built tiny model (built on first use);
    * ``"random:<shape>"`` (e.g. ``"random:qwen2.5-0.5b"``) -> a real architecture with random
      weights, built locally on first use (``pzstream.llm.shapes``);
    * a packaged pretrained model (``"smollm2-135m-instruct"``, ``"gemma3-270m"``) or a ``.gguf``
      file -> a model directory dequantized from it on first use and cached by the file's hash
      (``pzstream.llm.packaged``; ``ModelError`` naming the file and the cause if it cannot load);
    * an existing directory -> that directory;
    * a Hugging Face repo id such as ``"Qwen/Qwen2.5-0.5B-Instruct"`` -> passed through
      unchanged (it loads where the user has it in the Hugging Face cache);
    * anything that looks like a filesystem path (absolute, ``./``, ``../``, ``~``, or
      more than one ``/``) but does not exist -> ``FileNotFoundError``.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"model must be a string or path, got {type(name_or_path).__name__}")
    _quiet_loading()
    s = os.fspath(name_or_path)
    if s == "tiny":
        return str(build_tiny())
    if s.startswith(RANDOM_PREFIX):
        from .shapes import build_random  # imported here: shapes builds on this module

        return str(build_random(s[len(RANDOM_PREFIX):]))
    from .packaged import is_gguf_model, resolve_gguf  # imported here: packaged builds on this module

    if is_gguf_model(s):
        return str(resolve_gguf(s))
    p = Path(s).expanduser()
    if p.is_dir():
        return str(p)
    if p.exists():
        raise FileNotFoundError(f"model path {s!r} is a file, expected a .gguf file, a model "
                                "directory (with config.json) or a Hugging Face repo id")
    path_like = (s.startswith(("/", "./", "../", "~", "\\")) or s.count("/") > 1
                 or "\\" in s or s in (".", ".."))
    if path_like:
        raise FileNotFoundError(
            f"model path {s!r} does not exist; pass 'tiny' for the built-in tiny model, "
            "'random:qwen2.5-0.5b' (or -1.5b, -7b) for a real shape with random weights, "
            "'smollm2-135m-instruct' or 'gemma3-270m' for a packaged pretrained model, a .gguf "
            "file, an existing model directory, or a Hugging Face repo id (e.g. 'Qwen/Qwen2.5-0.5B')")
    return s
