from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import HIST_PROMPT, MATH_PROMPT, needs_training_extra
from litellm_prefill_router.predictor import PrefillPredictor, shared_predictor


@pytest.fixture(scope="module")
def predictor(bundle_dir: Path) -> PrefillPredictor:
    return PrefillPredictor(bundle_dir, intra_op_threads=1, max_batch_size=8, cache_size=0)  # every call infers


def test_predictions_change_with_the_prompt(predictor: PrefillPredictor) -> None:
    p = predictor.predict([MATH_PROMPT, HIST_PROMPT])
    t = predictor.targets
    assert p.shape == (2, 3)
    assert p[0, t.index("math-model")] > p[0, t.index("history-model")]
    assert p[1, t.index("history-model")] > p[1, t.index("math-model")]


def test_a_bare_string_or_one_message_given_as_a_batch_is_refused_not_read_as_one_prompt_per_item(
        predictor: PrefillPredictor) -> None:
    from litellm_prefill_router import PromptError

    for batch in (HIST_PROMPT, HIST_PROMPT.encode(), {"role": "user", "content": HIST_PROMPT}):
        with pytest.raises(PromptError, match=r"wrap one prompt in a list \(\[prompt\]\), or use predict_one"):
            predictor.predict(batch)  # type: ignore[arg-type]
        with pytest.raises(PromptError, match="a batch of prompts must be a list"):
            predictor.predict_many(batch)  # type: ignore[arg-type]
    assert predictor.predict([HIST_PROMPT]).shape == (1, 3)


def spin_waits(session) -> bool:  # type: ignore[no-untyped-def]
    """Whether an onnxruntime session's intra-op threads spin-wait for work after a run (onnxruntime's default)."""
    try:
        return session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") != "0"
    except RuntimeError:  # not set: onnxruntime's default
        return True


def test_onnxruntime_threads_do_not_spin_wait_between_runs_unless_asked(bundle_dir: Path) -> None:
    """Spinning threads took the cores the serving threads need (session 31: 37 vs 47 ms added at 256 tokens)."""
    quiet = PrefillPredictor(bundle_dir, cache_size=0)
    spinning = PrefillPredictor(bundle_dir, cache_size=0, intra_op_spinning=True)
    assert [spin_waits(p.encoder.session) or spin_waits(p.trunk.session) for p in (quiet, spinning)] == [False, True]
    assert spin_waits(spinning.trunk.session)
    np.testing.assert_allclose(quiet.predict([HIST_PROMPT]), spinning.predict([HIST_PROMPT]), atol=1e-6)
    assert shared_predictor(bundle_dir, intra_op_spinning=True) is not shared_predictor(bundle_dir)


def test_batched_and_single_predictions_agree(predictor: PrefillPredictor) -> None:
    prompts = [MATH_PROMPT, HIST_PROMPT, "why", "the sum " * 40]
    batch = predictor.predict(prompts)
    singles = np.stack([predictor.predict_one(x).p_correct for x in prompts])
    np.testing.assert_allclose(batch, singles, atol=1e-5)


def test_onnx_runtime_reproduces_the_torch_test_metrics(trained, predictor: PrefillPredictor, tiny_data: Path) -> None:
    """The bundle's ONNX graphs, fed by the runtime tokenizer, give the AUCs training measured with torch."""
    from litellm_prefill_router.training.calibrate import auc_per_target
    from litellm_prefill_router.training.data import load_dataset

    bundle, report = trained
    ds = load_dataset(tiny_data)
    idx = ds.indices("test")
    p = predictor.predict([ds.rows[i].prompt for i in idx])
    auc = auc_per_target(p, ds.scores()[idx], ds.targets)
    for t in ds.targets:
        assert abs(auc[t] - report["test"]["auc"][t]) < 1e-3, (t, auc[t], report["test"]["auc"][t])
    assert bundle.manifest.parity.probability_max_abs_diff < 1e-3


def test_predictor_is_thread_safe_under_concurrent_callers(predictor: PrefillPredictor) -> None:
    expected = predictor.predict([MATH_PROMPT, HIST_PROMPT])
    results: list[np.ndarray] = []
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results.append((i % 2, predictor.predict_one(MATH_PROMPT if i % 2 == 0 else HIST_PROMPT).p_correct))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(64)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert len(results) == 64
    for which, p in results:
        np.testing.assert_allclose(p, expected[which], atol=1e-5)


def test_shared_predictor_reuses_one_session_per_bundle(bundle_dir: Path) -> None:
    assert shared_predictor(bundle_dir) is shared_predictor(bundle_dir)


@pytest.fixture(scope="module")
def int8_bundle(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained bundle with its encoder dynamically quantised to int8, as `train --quantize` ships it."""
    needs_training_extra()
    from litellm_prefill_router.bundle import MANIFEST_NAME, load_bundle, write_bundle
    from litellm_prefill_router.training.export import quantize_embeddings, quantize_encoder

    src = load_bundle(bundle_dir)
    work = tmp_path_factory.mktemp("int8")
    quantize_encoder(src.path("encoder.onnx"), work / "encoder.onnx")
    # the tiny vocabulary is below the size train quantises (1,024 rows); quantise it anyway to serve the same graph
    assert quantize_embeddings(work / "encoder.onnx", work / "encoder.onnx", min_rows=1)
    files = {name: (work / name if name == "encoder.onnx" else src.path(name))
             for name in src.manifest.files if name != MANIFEST_NAME}
    fields = src.manifest.model_dump(mode="json", exclude={"files", "schema_version"})
    fields["encoder"]["quantized"] = True
    return write_bundle(work / "bundle", files, fields).directory


def test_int8_encoder_routes_a_prompt_the_same_whatever_shares_its_batch(int8_bundle: Path) -> None:
    """Dynamic int8 scales are per encoder call; each prompt is encoded alone, so neighbours cannot move it."""
    neighbours = [HIST_PROMPT, "the sum of the integral " * 30, "why", "king " * 50]
    pred = PrefillPredictor(int8_bundle, intra_op_threads=1, max_batch_size=8)
    assert pred.max_encoder_batch_size == 1
    alone = pred.predict([MATH_PROMPT])[0]
    with_others = pred.predict([MATH_PROMPT, *neighbours])[0]
    np.testing.assert_allclose(with_others, alone, atol=1e-6)
    # the same int8 graph encoding the batch in one call does move the prompt: what the default prevents
    batched = PrefillPredictor(int8_bundle, intra_op_threads=1, max_batch_size=8, max_encoder_batch_size=8)
    moved = np.abs(batched.predict([MATH_PROMPT, *neighbours])[0] - alone).max()
    assert moved > 1e-4
    np.testing.assert_allclose(batched.predict([MATH_PROMPT])[0], alone, atol=1e-6)


def test_int8_encoder_concurrent_requests_get_their_solo_prediction(int8_bundle: Path) -> None:
    pred = PrefillPredictor(int8_bundle, intra_op_threads=1, max_batch_size=8, cache_size=0)
    prompts = [MATH_PROMPT, HIST_PROMPT, "why", "king " * 50] * 4
    solo = np.stack([pred.predict([p])[0] for p in prompts[:4]])
    results: dict[int, np.ndarray] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, pred.predict_one(prompts[i]).p_correct))
               for i in range(len(prompts))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for i, p in results.items():
        np.testing.assert_allclose(p, solo[i % 4], atol=1e-6)
    assert len(results) == len(prompts)


def test_fp32_encoder_batches_prompts_and_bad_batch_sizes_are_rejected(bundle_dir: Path) -> None:
    assert PrefillPredictor(bundle_dir, max_batch_size=8).max_encoder_batch_size == 8
    with pytest.raises(ValueError, match="max_encoder_batch_size"):
        PrefillPredictor(bundle_dir, max_encoder_batch_size=0)
    with pytest.raises(ValueError, match="intra_op_threads must be from 1 to 256"):  # accepted before
        PrefillPredictor(bundle_dir, intra_op_threads=-1)


def test_a_bundle_named_by_its_manifest_file_is_refused_naming_its_directory(bundle_dir: Path) -> None:
    from litellm_prefill_router import BundleError

    with pytest.raises(BundleError, match=f"is a file; a bundle is the directory that holds it .*\\({bundle_dir}\\)"):
        PrefillPredictor(bundle_dir / "manifest.json")  # before: "does not exist or is not a directory"


def test_int8_embedding_table_is_4x_smaller_moves_features_by_a_rounding_step_and_keeps_batching_exact(
        bundle_dir: Path, tmp_path: Path) -> None:
    needs_training_extra()
    import onnx

    from litellm_prefill_router.bundle import load_bundle
    from litellm_prefill_router.sessions import EncoderSession, encode_grouped
    from litellm_prefill_router.training.export import quantize_embeddings

    src = load_bundle(bundle_dir)
    fp32 = src.path("encoder.onnx")
    assert quantize_embeddings(fp32, tmp_path / "big_rows_only.onnx") == []  # tiny table < 1,024 rows: untouched
    tables = quantize_embeddings(fp32, tmp_path / "encoder.onnx", min_rows=1)
    model = onnx.load(str(tmp_path / "encoder.onnx"))
    q = {i.name: i for i in model.graph.initializer}
    assert len(tables) == 1 and tables[0] not in q and q[f"{tables[0]}_int8"].data_type == onnx.TensorProto.INT8
    before = {i.name: i for i in onnx.load(str(fp32)).graph.initializer}[tables[0]]
    assert len(q[f"{tables[0]}_int8"].raw_data) * 4 == len(before.raw_data)

    pred = PrefillPredictor(bundle_dir)
    dim = src.manifest.encoder.feature_dim
    ids = [e.ids for e in pred.encode([MATH_PROMPT, HIST_PROMPT, "why", "king " * 50])]
    pad = src.manifest.encoder.pad_token_id
    ref = encode_grouped(EncoderSession(fp32, dim), ids, pad, dim, max_prompts=1)
    enc = EncoderSession(tmp_path / "encoder.onnx", dim)
    solo = encode_grouped(enc, ids, pad, dim, max_prompts=1)
    rel = np.abs(solo - ref).max() / np.abs(ref).max()
    assert 0 < rel < 0.02  # per-row int8: each embedding within 1/254 of its largest entry
    # weight-only quantisation: unlike dynamic int8 activations, a prompt's features do not depend on its batch
    np.testing.assert_allclose(encode_grouped(enc, ids, pad, dim, max_prompts=4), solo, atol=1e-5)


async def test_a_closed_predictor_answers_what_was_queued_and_late_requests_then_stops_its_worker(
        bundle_dir: Path) -> None:
    import asyncio

    pred = PrefillPredictor(bundle_dir)
    pred.IDLE_EXIT_S = 0.2
    queued = [asyncio.ensure_future(pred.apredict_one(f"the integral {i}")) for i in range(20)]
    await asyncio.sleep(0)
    pred.close()
    assert len(await asyncio.gather(*queued)) == 20
    late = await pred.apredict_one("the king")  # after close: still answered
    assert 0.0 <= float(late.p_correct[0]) <= 1.0
    for _ in range(50):
        if pred._worker is None:
            break
        await asyncio.sleep(0.05)
    assert pred._worker is None  # idle and closed: the thread has exited


def _counting_encoder_calls(pred: PrefillPredictor, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Prompts sent to ``pred``'s graphs, one entry per worker batch."""
    calls: list[int] = []
    real = pred.probabilities_for_ids

    def counted(ids):  # type: ignore[no-untyped-def]
        calls.append(len(ids))
        return real(ids)

    monkeypatch.setattr(pred, "probabilities_for_ids", counted)
    return calls


async def test_a_prompt_seen_again_is_answered_from_the_cache_without_the_graphs(
        bundle_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pred = PrefillPredictor(bundle_dir, intra_op_threads=1, cache_size=2)
    calls = _counting_encoder_calls(pred, monkeypatch)
    first = pred.predict_one(MATH_PROMPT)
    again = pred.predict_one(MATH_PROMPT)
    async_again = await pred.apredict_one([{"role": "user", "content": MATH_PROMPT}])  # the same text as messages
    assert calls == [1] and pred.cache_hits == 2
    assert (first.cached, again.cached, async_again.cached) == (False, True, True)
    np.testing.assert_array_equal(again.p_correct, first.p_correct)
    np.testing.assert_array_equal(async_again.p_correct, first.p_correct)
    assert (again.input_tokens, again.truncated, again.has_text) == (first.input_tokens, first.truncated, True)
    with pytest.raises(ValueError, match="read-only"):  # shared by every request of the prompt: nobody may edit it
        again.p_correct[0] = 1.0
    # least recently used first out: two more prompts push MATH_PROMPT out of a 2-entry cache
    pred.predict_one(HIST_PROMPT)
    pred.predict_one("why")
    pred.predict_one(MATH_PROMPT)
    assert calls == [1, 1, 1, 1] and len(pred._cache) == 2


def test_a_predictor_without_a_cache_runs_the_graphs_every_time_and_a_negative_size_is_rejected(
        bundle_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pred = PrefillPredictor(bundle_dir, intra_op_threads=1, cache_size=0)
    calls = _counting_encoder_calls(pred, monkeypatch)
    for _ in range(3):
        pred.predict_one(MATH_PROMPT)
    assert calls == [1, 1, 1] and pred.cache_hits == 0
    with pytest.raises(ValueError, match="cache_size"):
        PrefillPredictor(bundle_dir, cache_size=-1)


async def test_a_prediction_that_times_out_while_queued_is_dropped_from_the_encoders_queue(
        bundle_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A decision timeout sheds load: the late prompt is never encoded (sync and async), the one being encoded is."""
    import asyncio
    import time

    pred = PrefillPredictor(bundle_dir, intra_op_threads=1, max_batch_size=1, cache_size=0)
    real = pred.probabilities_for_ids
    encoded: list[int] = []
    busy = threading.Event()

    def slow(ids):  # type: ignore[no-untyped-def]
        encoded.append(len(ids))
        busy.set()
        time.sleep(0.6)
        return real(ids)

    monkeypatch.setattr(pred, "probabilities_for_ids", slow)
    first = threading.Thread(target=pred.predict_one, args=(MATH_PROMPT,))
    first.start()
    assert busy.wait(10)  # the worker is encoding MATH_PROMPT: what comes next waits in the queue
    started = time.perf_counter()
    with pytest.raises(TimeoutError, match="no prediction within 0.1 s"):
        pred.predict_one(HIST_PROMPT, timeout_s=0.1)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(pred.apredict_one("why"), 0.1)
    assert time.perf_counter() - started < 0.5
    first.join()
    assert pred.predict_one(HIST_PROMPT, timeout_s=5).has_text  # the worker is free again: answered in time
    assert encoded == [1, 1]  # MATH_PROMPT, then HIST_PROMPT's last call; the two timed-out ones never ran


async def test_a_prediction_ready_while_the_event_loop_was_held_up_is_used_not_counted_late(bundle_dir: Path) -> None:
    """The decision timeout bounds the prediction's work, not the event loop's: litellm's first complexity-routed
    call imports its proxy server on the loop (2.8 s on 2 cores), which used to turn ready predictions into
    timeouts."""
    import asyncio
    import time

    pred = PrefillPredictor(bundle_dir, cache_size=0)
    pred.predict(["warm-up"])

    async def hold_up_the_loop() -> None:
        await asyncio.sleep(0)
        time.sleep(1.0)  # a blocking import on the loop: timers cannot fire meanwhile

    for prompt in (MATH_PROMPT, [{"role": "user", "content": HIST_PROMPT}]):
        blocker = asyncio.ensure_future(hold_up_the_loop())
        started = time.perf_counter()
        got = await pred.apredict_one(prompt, timeout_s=0.3)
        assert got.has_text and not got.cached and time.perf_counter() - started >= 0.9
        await blocker
    # a prediction not ready when the loop looks at it is still late
    real = pred.probabilities_for_ids
    pred.probabilities_for_ids = lambda ids: (time.sleep(0.6), real(ids))[1]  # type: ignore[method-assign]
    with pytest.raises(TimeoutError, match="no prediction within 0.2 s"):
        await pred.apredict_one("why did the empire fall", timeout_s=0.2)


def test_the_interpreters_exit_waits_for_a_prediction_still_running_in_the_worker(bundle_dir: Path,
                                                                                 tmp_path: Path) -> None:
    """A daemon worker still inside onnxruntime when Python finalizes aborts the process (std::terminate, exit
    status 134) after the program is done: the exit waits for it instead."""
    import subprocess
    import sys

    script = tmp_path / "abandon.py"
    script.write_text(
        "import atexit, sys, time\n"
        "from litellm_prefill_router.predictor import PrefillPredictor\n"
        "pred = PrefillPredictor(sys.argv[1], cache_size=0)\n"
        "real = pred.probabilities_for_ids\n"
        "def slow(ids):\n"
        "    time.sleep(0.5)  # the worker is busy with it when the program ends\n"
        "    return real(ids)\n"
        "pred.probabilities_for_ids = slow\n"
        "state = {}\n"
        "atexit.register(lambda: print('finished before exit:', state['fut'].done()))  # runs after the router's\n"
        "state['fut'] = pred._submit(pred.prompts.encode('the integral of x').ids)\n"
        "time.sleep(0.05)\n")
    done = subprocess.run([sys.executable, str(script), str(bundle_dir)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "finished before exit: True" in done.stdout
