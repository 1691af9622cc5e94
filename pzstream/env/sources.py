"""Where game files come from: the Jericho suite directory and the embedded default game.

* Suite games are looked up by stem ("zork1") in a games directory: the ``games_dir``
  argument, else ``$PZSTREAM_GAMES_DIR``, else ``<repo root>/../shared/games/jericho``.
* The default game ("default" / "tw-default") is a TextWorld ``tw-simple`` game generated
  offline with a fixed seed into ``<cache dir>/games/tw-default-<seed>/`` on first use.
"""
from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
STORY_EXTENSIONS = (".z1", ".z2", ".z3", ".z4", ".z5", ".z6", ".z7", ".z8", ".zblorb", ".zlb", ".blorb")
DEFAULT_GAME_SEED = 1234
DEFAULT_GAME_FILE = "tw-simple.z8"
DEFAULT_SPECS = ("default", "tw-default")


class GameNotFound(FileNotFoundError):
    """A game spec could not be resolved to a story file."""


def default_games_dir() -> Path:
    env = os.environ.get("PZSTREAM_GAMES_DIR")
    return Path(env).expanduser() if env else (REPO_ROOT.parent / "shared" / "games" / "jericho")


def default_cache_dir() -> Path:
    env = os.environ.get("PZSTREAM_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pzstream"


def available_games(games_dir: str | Path | None = None) -> list[str]:
    """Sorted stems of the story files in ``games_dir`` ([] if it does not exist)."""
    d = Path(games_dir) if games_dir is not None else default_games_dir()
    if not d.is_dir():
        return []
    return sorted({p.stem for p in d.iterdir() if p.suffix.lower() in STORY_EXTENSIONS})


#: A game name a peer may send: a bare name or file name, no directory part (checked before any lookup).
_PEER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}\Z")


def peer_game_spec(name: str, games_dir: str | Path | None = None) -> str:
    """A game name that came from the network (a segment's ``game``), as a spec ``open_game`` may
    take: one of ``DEFAULT_SPECS``, or the name (``zork1``) or file name (``zork1.z5``) of a story
    file inside the games directory. Anything else raises GameNotFound before any file is touched:
    names from peers never reach other paths (``/etc/hostname``, ``../x.z5``, ``~/y``)."""
    if name in DEFAULT_SPECS:
        return name
    if not isinstance(name, str) or not _PEER_NAME.match(name) or ".." in name:
        raise GameNotFound(f"game name {name[:80]!r} from a peer is not a bare game name: refused")
    d = (Path(games_dir).expanduser() if games_dir is not None else default_games_dir()).resolve()
    found = [d / name] if Path(name).suffix.lower() in STORY_EXTENSIONS else \
        [d / f"{name}{ext}" for ext in STORY_EXTENSIONS] + [d / f"{name}{ext.upper()}" for ext in STORY_EXTENSIONS]
    for path in found:
        if path.is_file() and path.resolve().parent == d:
            return str(path)
    raise GameNotFound(f"game {name!r} from a peer is not a story file in {str(d)!r}: refused")


def resolve_story_file(spec: str, games_dir: str | Path | None = None) -> Path:
    """Resolve a path or a bare game name to an existing story file, or raise GameNotFound."""
    p = Path(spec).expanduser()
    looks_like_path = os.sep in spec or p.suffix.lower() in STORY_EXTENSIONS
    if looks_like_path:
        if p.is_file():
            return p.resolve()
        d = Path(games_dir).expanduser() if games_dir is not None else default_games_dir()
        if os.sep not in spec and (d / spec).is_file():  # "zork1.z5": a file name in the games dir
            return (d / spec).resolve()
        raise GameNotFound(f"story file {str(p)!r} not found (looked for a file at {str(p.resolve())!r}"
                           + ("" if os.sep in spec else f" and in {str(d)!r}") + ")")

    d = Path(games_dir).expanduser() if games_dir is not None else default_games_dir()
    if not d.is_dir():
        raise GameNotFound(
            f"game {spec!r}: games directory {str(d)!r} does not exist; point at one with "
            "open_game(..., games_dir=DIR) or the PZSTREAM_GAMES_DIR environment variable, "
            "or pass a path to a story file")
    for ext in STORY_EXTENSIONS:
        for cand in (d / f"{spec}{ext}", d / f"{spec}{ext.upper()}"):
            if cand.is_file():
                return cand.resolve()
    names = available_games(d)
    hint = f"; available: {', '.join(names[:8])}{', ...' if len(names) > 8 else ''}" if names else "; it holds no story files"
    raise GameNotFound(
        f"game {spec!r} not found: looked for {spec}{{{','.join(STORY_EXTENSIONS)}}} in {str(d)!r}{hint}")


def _find_tw_make() -> str | None:
    here = Path(sys.executable).parent / "tw-make"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    return shutil.which("tw-make")


def _generate_tw_simple(out_file: Path, seed: int) -> None:
    """Write tw-simple.{z8,json,ni} into out_file's directory (tw-make, else textworld's API)."""
    tw_make = _find_tw_make()
    if tw_make is not None:
        cmd = [tw_make, "tw-simple", "--rewards", "dense", "--goal", "detailed",
               "--seed", str(seed), "--output", str(out_file), "--silent"]
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout)[-2000:]
            raise RuntimeError(f"generating the default game failed: {' '.join(cmd)} exited "
                               f"{proc.returncode}; stderr tail:\n{tail}")
        return
    import textworld
    import textworld.challenges

    options = textworld.GameOptions()
    options.seeds = seed
    options.path = str(out_file)
    options.file_ext = ".z8"
    _, make_game, _ = textworld.challenges.CHALLENGES["tw-simple"]
    game = make_game(settings={"rewards": "dense", "goal": "detailed", "test": False}, options=options)
    textworld.generator.compile_game(game, options)


def _default_game_complete(d: Path) -> bool:
    return (d / DEFAULT_GAME_FILE).is_file() and (d / DEFAULT_GAME_FILE).with_suffix(".json").is_file()


def ensure_default_game(cache_dir: str | Path | None = None, seed: int = DEFAULT_GAME_SEED) -> Path:
    """Path of the default TextWorld game's .z8, generating it if absent.

    Safe across processes: generation happens under an fcntl lock into a temporary
    directory that is renamed into place, so readers never see a half-written game.
    """
    root = (Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()) / "games"
    final = root / f"tw-default-{seed}"
    if _default_game_complete(final):
        return final / DEFAULT_GAME_FILE
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".tw-default-{seed}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if _default_game_complete(final):
                return final / DEFAULT_GAME_FILE
            tmp = Path(tempfile.mkdtemp(prefix=f".tw-default-{seed}-", dir=root))
            try:
                _generate_tw_simple(tmp / DEFAULT_GAME_FILE, seed)
                if not _default_game_complete(tmp):
                    raise RuntimeError(f"generating the default game produced no {DEFAULT_GAME_FILE} "
                                       f"and .json in {tmp}")
                if final.exists():  # incomplete leftover from a crashed run
                    shutil.rmtree(final)
                os.rename(tmp, final)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return final / DEFAULT_GAME_FILE
