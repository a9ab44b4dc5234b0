"""PrefillPredictor: prompts -> P(correct) per target, batched and thread-safe.

One encoder and one trunk session per bundle. Requests from many threads or
coroutines are queued to a single worker thread that groups whatever is waiting
into one batch, so concurrent traffic is batched and onnxruntime's intra-op threads
are not oversubscribed.

Routes never depend on which requests share a batch. An fp32 encoder is batch-invariant
(padding is masked), so prompts are encoded in padded batches sorted by length. A
dynamic-int8 encoder is not: onnxruntime computes one activation scale per MatMul input
tensor, i.e. per batch and including pad positions, so a prompt's P(correct) moved by up to
0.21 (argmax target changed for 12% of test prompts) depending on its neighbours. For
those bundles each prompt goes through the encoder alone (its own scales) and only the
trunk is batched; measured on the SmolLM2 bundle this is still faster than the fp32
encoder batched (README, "Batch-invariant routes").

:meth:`PrefillPredictor.predict_one` remembers the last ``cache_size`` predictions by the exact token ids the encoder
would see, so a prompt seen again (litellm's retries and fallbacks of one request, repeated questions, load tests)
costs its tokenisation only.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import os
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeoutError
from dataclasses import dataclass

import numpy as np

from .bundle import Bundle, load_bundle
from .errors import InferenceError
from .forking import reset_after_fork, unheld_in_child
from .novelty import NoveltyScorer, serving_scorer
from .prompt import EncodedPrompt, PromptEncoder, check_batch
from .sessions import MAX_BATCH_TOKENS, EncoderSession, ProviderSpec, TrunkSession, encode_grouped
from .worker_exit import finish_at_exit

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    p_correct: np.ndarray  # (K,)
    input_tokens: int
    truncated: bool
    has_text: bool
    cached: bool = False  # answered from the cache of prompts seen before


def _timed_out(timeout_s: float | None) -> TimeoutError:
    return TimeoutError(f"no prediction within {timeout_s:g} s")


class PrefillPredictor:
    """Load a bundle's graphs and predict P(correct) for every target."""

    def __init__(
        self,
        bundle: Bundle | str | os.PathLike[str],
        *,
        intra_op_threads: int | None = None,
        max_batch_size: int = 16,
        max_batch_tokens: int = MAX_BATCH_TOKENS,
        max_encoder_batch_size: int | None = None,
        cache_size: int = 1024,
        execution_providers: Sequence[ProviderSpec] | None = None,
        intra_op_spinning: bool = False,
    ) -> None:
        """``max_batch_size``: requests grouped per worker step (and per trunk call); ``max_batch_tokens``:
        padded tokens per encoder call; ``max_encoder_batch_size``: prompts per encoder call, default
        ``max_batch_size`` for an fp32 encoder and 1 for a dynamic-int8 one (see the module docstring:
        larger values trade batch-invariant routes for throughput); ``cache_size``: predictions remembered for
        prompts seen again (0: none); ``execution_providers``: onnxruntime providers for the encoder, in priority order
        (default CPU; e.g. ``["CUDAExecutionProvider", "CPUExecutionProvider"]`` with onnxruntime-gpu, see
        :func:`~.sessions.resolve_providers`) - the trunk, a small MLP, always runs on the CPU; ``intra_op_spinning``:
        let onnxruntime's intra-op threads spin-wait for work after each run (its default; off here: see
        :func:`~.sessions.make_session`)."""
        if max_batch_size < 1 or max_batch_tokens < 1 or (max_encoder_batch_size is not None
                                                          and max_encoder_batch_size < 1):
            raise ValueError(f"max_batch_size, max_batch_tokens and max_encoder_batch_size must be >= 1, got "
                             f"{max_batch_size}, {max_batch_tokens}, {max_encoder_batch_size}")
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0 (0: no prediction cache), got {cache_size}")
        if intra_op_threads is not None and not 1 <= intra_op_threads <= 256:
            raise ValueError(f"intra_op_threads must be from 1 to 256 (None: onnxruntime's default), got "
                             f"{intra_op_threads}")
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        m = self.bundle.manifest
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(self.bundle.path("tokenizer.json")))
        tok.no_padding()
        tok.no_truncation()
        tmpl = self.bundle.read_text(m.encoder.chat_template) if m.encoder.chat_template else None
        self.prompts = PromptEncoder(
            tok,
            chat_template=tmpl,
            max_tokens=m.encoder.max_prefill_tokens,
            head_fraction=m.encoder.head_fraction,
            add_generation_prompt=m.encoder.add_generation_prompt,
            add_special_tokens=m.encoder.add_special_tokens,
            special_tokens=m.encoder.template_vars,
            pad_token_id=m.encoder.pad_token_id,
        )
        self._session_settings = (intra_op_threads, execution_providers, intra_op_spinning)
        self.encoder, self.trunk = self._open_sessions()
        self._forked = False
        if m.encoder.quantized and self.providers[0] != "CPUExecutionProvider":
            logger.warning("prefill router: bundle %s has a dynamic-int8 encoder, whose quantised MatMuls %s mostly "
                           "cannot run (they fall back to the CPU); train with --no-quantize for GPU serving",
                           self.bundle.source, self.providers[0])
        self.targets = m.target_names
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        if max_encoder_batch_size is None:
            max_encoder_batch_size = 1 if m.encoder.quantized else max_batch_size
        self.max_encoder_batch_size = max_encoder_batch_size
        self.cache_size = cache_size
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()  # blake2b of the token ids -> P(correct)
        self.cache_hits = 0
        self._queue: queue.Queue[tuple[list[int], Future[np.ndarray]] | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()
        reset_after_fork(self)

    def _open_sessions(self) -> tuple[EncoderSession, TrunkSession]:
        m, (threads, providers, spinning) = self.bundle.manifest, self._session_settings
        encoder = EncoderSession(self.bundle.path("encoder.onnx"), m.encoder.feature_dim, intra_op_threads=threads,
                                 providers=providers, spinning=spinning)
        trunk = TrunkSession(self.bundle.path("trunk.onnx"), len(m.targets), m.encoder.feature_dim,
                             intra_op_threads=threads, spinning=spinning)
        return encoder, trunk

    def _after_fork_in_child(self) -> None:
        """In a forked child (see :mod:`.forking`): the parent's worker is not here and what it queued is the
        parent's; onnxruntime's thread pools are not here either, so the sessions are opened anew on next use (the
        inherited ones are never freed here: see ``sessions._keep_inherited_sessions``)."""
        self._lock = threading.Lock()
        self._queue = queue.Queue()
        self._worker = None
        self._forked = True

    def _reopen_if_forked(self) -> None:
        if self._forked:
            with self._lock:
                if self._forked:
                    self.encoder, self.trunk = self._open_sessions()
                    self._forked = False

    @functools.cached_property
    def novelty(self) -> NoveltyScorer | None:
        """How far a prediction lies from the bundle's validation rows (``report.json`` ``reference.rows``, stored by
        `train` since session 16), in units of the novelty threshold; None for a bundle without them. Built on first
        use (deciders ask at construction), once per predictor."""
        try:
            return serving_scorer(self.bundle.report().get("reference"), self.targets)
        except Exception as err:  # noqa: BLE001 - a malformed reference costs the novelty flag, never routing
            logger.warning("prefill router: bundle %s has a reference the novelty check cannot read (%s: %s); "
                           "decisions carry no novelty - retrain the bundle to restore it", self.bundle.source,
                           type(err).__name__, err)
            return None

    @property
    def providers(self) -> list[str]:
        """The execution providers the encoder runs on, in onnxruntime's priority order."""
        return list(self.encoder.session.get_providers())

    # -- the graphs -------------------------------------------------------
    def features_for_ids(self, ids: Sequence[Sequence[int]]) -> np.ndarray:
        """(n, F) pooled features, each independent of the other prompts in ``ids``: encoder calls of at most
        ``max_encoder_batch_size`` prompts and ``max_batch_tokens`` padded tokens, grouped by length."""
        self._reopen_if_forked()
        e = self.bundle.manifest.encoder
        return encode_grouped(self.encoder, ids, e.pad_token_id, e.feature_dim,
                              max_prompts=self.max_encoder_batch_size, max_tokens=self.max_batch_tokens)

    def probabilities_for_ids(self, ids: Sequence[Sequence[int]]) -> np.ndarray:
        """(n, K) probabilities: the features of :meth:`features_for_ids`, one trunk call."""
        if not ids:
            return np.zeros((0, len(self.targets)), dtype=np.float32)
        features = self.features_for_ids(ids)  # first: in a forked child it opens the sessions self.trunk names
        return self.trunk(features)

    # -- public API -------------------------------------------------------
    def encode(self, prompts: Sequence[object]) -> list[EncodedPrompt]:
        return self.prompts.encode_batch(prompts)

    def predict(self, prompts: Sequence[object]) -> np.ndarray:
        """(n, K) P(correct) for prompts given as strings or message lists (synchronous)."""
        enc = self.encode(prompts)
        return self.probabilities_for_ids([e.ids for e in enc])

    def predict_many(self, prompts: Sequence[object], chunk: int = 64,
                     progress: Callable[[int], object] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(n, K) P(correct) and (n,) prompt token counts for a dataset, ``chunk`` prompts at a time (bounded
        memory, progress logged, and ``progress(k)`` called with each chunk's size - e.g. a bar's ``update``); the
        same numbers as the runtime gives each prompt alone."""
        check_batch(prompts)
        p = np.zeros((len(prompts), len(self.targets)), dtype=np.float32)
        n_tokens = np.zeros(len(prompts), dtype=np.int64)
        for start in range(0, len(prompts), chunk):
            enc = self.encode(prompts[start : start + chunk])
            p[start : start + len(enc)] = self.probabilities_for_ids([e.ids for e in enc])
            n_tokens[start : start + len(enc)] = [e.n_tokens for e in enc]
            logger.info("predicted %d/%d", start + len(enc), len(prompts))
            if progress is not None:
                progress(len(enc))
        return p, n_tokens

    def predict_one(self, prompt: object, timeout_s: float | None = None) -> Prediction:
        """One prompt through the shared micro-batching worker (thread-safe, blocking), or from the cache.
        ``timeout_s``: raise :class:`TimeoutError` if the prediction is not ready by then (a prompt still queued is
        dropped from the queue; one being encoded finishes, unused)."""
        enc = self.prompts.encode(prompt)
        key = self._cache_key(enc.ids)
        p = cached = self._cached(key)
        if p is None:
            fut = self._submit(enc.ids)
            try:
                result = fut.result(timeout=timeout_s)
            except FutureTimeoutError as err:
                fut.cancel()
                raise _timed_out(timeout_s) from err
            p = self._remember(key, result)
        return Prediction(p, enc.n_tokens, enc.truncated, enc.has_text, cached is not None)

    async def apredict_one(self, prompt: object, timeout_s: float | None = None) -> Prediction:
        """Async twin of :meth:`predict_one`: tokenisation and inference run off the event loop. ``timeout_s``: as
        there (cancelling a prediction still queued takes it off the encoder's queue).

        The prediction runs on threads from start to end (tokenisation in the loop's executor hands the prompt
        straight to the encoder's worker), so the timeout bounds the prediction's work, not the event loop's: a
        prediction that is ready when a loop held up by other work (litellm's first lazy imports of its proxy, a
        slow callback) gets to it is used, not counted late."""
        pending = self._start(prompt, asyncio.get_running_loop())
        try:
            return await asyncio.wait_for(asyncio.wrap_future(pending), timeout_s)
        except asyncio.TimeoutError as err:  # an alias of TimeoutError from Python 3.11 on, not before
            # wait_for cancelled the wait; a prediction finished by then stays finished (a done future never cancels)
            if pending.done() and not pending.cancelled() and pending.exception() is None:
                return pending.result()
            raise _timed_out(timeout_s) from err

    def _start(self, prompt: object, loop: asyncio.AbstractEventLoop) -> Future[Prediction]:
        """``prompt``'s prediction as a future that threads settle: tokenised in ``loop``'s executor, then from the
        cache or the worker. Cancelling it takes a prompt still queued off the encoder's queue."""
        out: Future[Prediction] = Future()

        def settle(result: Prediction | None = None, error: BaseException | None = None) -> None:
            try:
                if error is not None:
                    out.set_exception(error)
                else:
                    out.set_result(result)  # type: ignore[arg-type]
            except InvalidStateError:  # cancelled meanwhile: nobody waits for it
                pass

        def encode_and_submit() -> None:
            if out.cancelled():
                return
            try:
                enc = self.prompts.encode(prompt)
                key = self._cache_key(enc.ids)
                p = self._cached(key)
                if p is not None:
                    settle(Prediction(p, enc.n_tokens, enc.truncated, enc.has_text, True))
                    return
                fut = self._submit(enc.ids)
            except BaseException as err:  # noqa: BLE001 - the waiter gets it
                settle(error=err)
                return

            def answered(f: Future[np.ndarray]) -> None:
                if f.cancelled():
                    out.cancel()
                elif (err := f.exception()) is not None:
                    settle(error=err)
                else:
                    settle(Prediction(self._remember(key, f.result()), enc.n_tokens, enc.truncated, enc.has_text,
                                      False))
            out.add_done_callback(lambda o: fut.cancel() if o.cancelled() else None)
            fut.add_done_callback(answered)

        loop.run_in_executor(None, encode_and_submit)
        return out

    # -- prediction cache ----------------------------------------------------
    def _cache_key(self, ids: Sequence[int]) -> bytes | None:
        if self.cache_size == 0:
            return None
        return hashlib.blake2b(np.asarray(ids, dtype=np.int64).tobytes(), digest_size=16).digest()

    def _cached(self, key: bytes | None) -> np.ndarray | None:
        if key is None:
            return None
        with self._lock:
            p = self._cache.get(key)
            if p is not None:
                self._cache.move_to_end(key)
                self.cache_hits += 1
        return p

    def _remember(self, key: bytes | None, p: np.ndarray) -> np.ndarray:
        if key is not None:
            p.setflags(write=False)  # shared by every request of this prompt
            with self._lock:
                self._cache[key] = p
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return p

    # -- micro-batching worker ---------------------------------------------
    def _submit(self, ids: list[int]) -> Future[np.ndarray]:
        fut: Future[np.ndarray] = Future()
        with self._lock:  # with the worker's exit check: a request is never queued behind a worker that left
            self._queue.put((ids, fut))
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._run, name="prefill-predictor", daemon=True)
                self._worker.start()
                finish_at_exit(self)
        return fut

    def close(self) -> None:
        """Stop the worker thread once it has answered what is queued. A later request still gets an answer (it
        starts a worker, which exits when idle), so closing a predictor that is still referenced loses nothing."""
        self._closed = True
        self._queue.put(None)  # wakes a worker blocked on an empty queue

    #: seconds a closed predictor's worker waits for late requests before it exits
    IDLE_EXIT_S = 1.0
    _closed = False
    _exiting = False

    def finish(self, timeout_s: float) -> None:
        """Let the worker answer what is queued, then exit at once; wait up to ``timeout_s`` for it (the
        interpreter's exit: see :mod:`.worker_exit`)."""
        self._closed = self._exiting = True
        self._queue.put(None)
        worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout_s)

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=self.IDLE_EXIT_S if self._closed else None)
                idle = first is None and self._exiting  # the interpreter is exiting: no late request to wait for
            except queue.Empty:
                first, idle = None, True
            if idle:
                with self._lock:
                    if self._queue.empty():
                        self._worker = None
                        return
                continue
            batch = [first] if first is not None else []
            while len(batch) < self.max_batch_size:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    batch.append(item)
            live = [(ids, f) for ids, f in batch if f.set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                probs = self.probabilities_for_ids([ids for ids, _ in live])
            except Exception as err:  # noqa: BLE001 - every waiter must get the error
                wrapped = err if isinstance(err, InferenceError) else InferenceError(f"prediction failed: {err}")
                for _, f in live:
                    f.set_exception(wrapped)
                continue
            for row, (_, f) in zip(probs, live):
                f.set_result(row)


_CACHE: dict[tuple[str, str, int | None, int, int | None, int, str, bool], PrefillPredictor] = {}
_CACHE_LOCK = unheld_in_child(threading.Lock())


def shared_predictor(
    bundle_dir: str | os.PathLike[str], *, intra_op_threads: int | None = None, max_batch_size: int = 16,
    max_encoder_batch_size: int | None = None, cache_size: int = 1024,
    execution_providers: Sequence[ProviderSpec] | None = None, intra_op_spinning: bool = False,
) -> PrefillPredictor:
    """One predictor (one pair of ORT sessions) per bundle and settings per process, verified on first load."""
    bundle = load_bundle(bundle_dir)
    # its version is the manifest's sha256 (the manifest pins every file's sha256, and holds the presets and prices):
    # a bundle rewritten in place with new presets is a new predictor too
    key = (str(bundle.directory.resolve()), bundle.version, intra_op_threads, max_batch_size, max_encoder_batch_size,
           cache_size, json.dumps(list(execution_providers or []), sort_keys=True, default=dict), intra_op_spinning)
    with _CACHE_LOCK:
        pred = _CACHE.get(key)
        if pred is None:
            pred = PrefillPredictor(bundle, intra_op_threads=intra_op_threads, max_batch_size=max_batch_size,
                                    max_encoder_batch_size=max_encoder_batch_size, cache_size=cache_size,
                                    execution_providers=execution_providers, intra_op_spinning=intra_op_spinning)
            pred.predict(["warm-up"])  # onnxruntime plans and allocates on its first run; do that at start-up
            _CACHE[key] = pred
        return pred


def release_predictor(pred: PrefillPredictor) -> None:
    """Forget ``pred`` in the shared cache (e.g. after a reload replaced its bundle) and close it."""
    with _CACHE_LOCK:
        for key in [k for k, v in _CACHE.items() if v is pred]:
            del _CACHE[key]
    pred.close()
