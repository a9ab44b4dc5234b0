"""``prefill-router evaluate``: the prefill router and the baselines on the same rows, two modes.

* **split** (``--bundle DIR --split test``): the deployed bundle (ONNX, as served) on one split. Operating points
  are chosen on the validation rows of the training split (the rows training calibrated on) and applied to
  the split; learned baselines are fitted on the remaining training rows.
* **cross-validation** (``--cv K``): K folds over the whole dataset, stratified by benchmark. Features are
  cached, so each fold only refits the heads. Every row gets an out-of-fold prediction (``oof_preds.jsonl``);
  each fold's operating points are chosen on the other folds' out-of-fold predictions (cross-fitting), so no
  row's label picks its own policy setting.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PrefillRouterError
from . import evaluation as ev
from .data import RoutingDataset

logger = logging.getLogger(__name__)

BASELINE_NAMES = {"knn": "kNN MiniLM", "logreg": "logreg MiniLM", "mlp": "MLP (trunk) MiniLM", "mf": "MF MiniLM",
                  "benchmark": "per-benchmark (task tag known)"}
Predictor = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # (fit rows, val rows, query rows) -> p


@dataclass
class PrefillVariant:
    """One prefill configuration evaluated under CV: layers, pooling and head ("trunk" or "logreg")."""

    layers: list[int]
    pooling: list[str] = field(default_factory=lambda: ["mean", "last"])
    head: str = "trunk"
    seeds: int = 5  # trunk seed ensemble: fit ``seeds``, keep the best ``keep`` by validation loss
    keep: int = 3

    @property
    def name(self) -> str:
        default_ensemble = (self.seeds, self.keep) == (5, 3) or self.head != "trunk"
        ens = "" if default_ensemble else f" ({self.seeds} seeds keep {self.keep})"
        return f"prefill {self.head} L{'+'.join(map(str, self.layers))} {'+'.join(self.pooling)}{ens}"


def check_folds(k: int, rows: int) -> None:
    """Refuse ``k`` folds over ``rows`` rows where a fold would hold out nothing (before: as many folds as rows, the
    progress bar counting ``k``)."""
    if k < 2:
        raise PrefillRouterError(f"--cv needs at least 2 folds, got {k}")
    if k > rows:
        raise PrefillRouterError(f"--cv {k}: the data has {rows} rows, fewer than the folds asked for (each fold "
                                 f"holds out at least one row); use --cv {min(5, rows)}, or at most {rows}")


def stratified_folds(ds: RoutingDataset, k: int, seed: int = 0) -> np.ndarray:
    """Fold id per row: within each benchmark, rows ordered by a hash of their id are dealt round-robin."""
    check_folds(k, len(ds))
    fold = np.zeros(len(ds), dtype=np.int64)
    by_b: dict[str, list[int]] = {}
    for i, r in enumerate(ds.rows):
        by_b.setdefault(r.benchmark, []).append(i)
    offset = 0
    for b in sorted(by_b):
        idx = sorted(by_b[b], key=lambda i: hashlib.sha256(f"fold:{seed}:{ds.rows[i].id}".encode()).hexdigest())
        for j, i in enumerate(idx):
            fold[i] = (j + offset) % k
        offset += len(idx)  # spread small benchmarks' remainders over different folds
    return fold


def _eval_set(ds: RoutingDataset, hard: np.ndarray, cost: np.ndarray, idx: np.ndarray | None = None) -> ev.EvalSet:
    idx = np.arange(len(ds)) if idx is None else idx
    return ev.EvalSet(list(ds.targets), hard[idx], cost[idx], np.array([ds.rows[i].benchmark for i in idx]),
                      [ds.rows[i].id for i in idx])


def cv_rows(ds: RoutingDataset, n_tokens: np.ndarray, folds: int, *, expected_output_tokens: float = 256.0,
            seed: int = 0) -> tuple[ev.EvalSet, np.ndarray]:
    """Every row of ``ds`` as an EvalSet (labels binarised, expected cost per target from the prompt's tokens) and
    its benchmark-stratified fold: what cross-validation and the lever benchmarks score against."""
    from ..costs import cost_matrix

    hard = ev.binarize(ds.scores())
    cost = cost_matrix([ds.prices[t] for t in ds.targets], n_tokens.astype(np.float64),
                       [ds.mean_output_tokens(t) or expected_output_tokens for t in ds.targets])
    return _eval_set(ds, hard, cost), stratified_folds(ds, folds, seed)


def cv_splits(ds: RoutingDataset, fold: np.ndarray,
              val_fraction: float) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """Per fold f: (f, held-out rows, fit rows, validation rows); fit and validation come from the other folds."""
    from .pipeline import split_validation

    for f in range(int(fold.max()) + 1):
        q, tr = np.flatnonzero(fold == f), np.flatnonzero(fold != f)
        fit, val = split_validation(ds, tr, val_fraction)
        yield f, q, fit, val


def _learned(names: Sequence[str], ds: RoutingDataset, scores: np.ndarray, cache_dir: Path | None,
             progress: bool) -> dict[str, tuple[Predictor, dict[str, Any]]]:
    unknown = [n for n in names if n not in BASELINE_NAMES]
    if unknown:
        raise PrefillRouterError(f"unknown baselines {unknown}; choose from {sorted(BASELINE_NAMES)} or 'none'")
    if not names:
        return {}
    from . import baselines as bl

    emb = bl.sentence_embeddings(ds, cache_dir, progress) if set(names) - {"benchmark"} else np.zeros((len(ds), 0))
    bench = [r.benchmark for r in ds.rows]
    out: dict[str, tuple[Predictor, dict[str, Any]]] = {}
    for n in names:
        info: dict[str, Any] = {"features": "the benchmark tag of each row" if n == "benchmark" else
                                "all-MiniLM-L6-v2 mean-pooled, L2-normalised"}

        def fn(fit: np.ndarray, val: np.ndarray, q: np.ndarray, n: str = n, info: dict[str, Any] = info) -> np.ndarray:
            if n == "benchmark":
                both = np.r_[fit, val]
                return bl.benchmark_prior_predict([bench[i] for i in both], scores[both], [bench[i] for i in q])
            if n == "knn":
                k = bl.fit_knn(emb[fit], scores[fit], emb[val], scores[val])
                info.setdefault("k", []).append(k)
                both = np.r_[fit, val]
                return bl.knn_predict(emb[both], scores[both], emb[q], k)
            if n == "logreg":
                p, c = bl.logreg_predict(emb[fit], scores[fit], emb[val], scores[val], emb[q])
                info.setdefault("C", []).append(c)
                return p
            if n == "mlp":
                return bl.mlp_predict(emb[fit], scores[fit], emb[val], scores[val], emb[q])
            return bl.mf_predict(emb[fit], scores[fit], emb[val], scores[val], emb[q])

        out[BASELINE_NAMES[n]] = (fn, info)
    return out


def _scorers_from_predictions(preds: dict[str, np.ndarray], es: ev.EvalSet, fold: np.ndarray,
                              settings: dict[str, dict[str, Any]]) -> list[ev.Scorer]:
    """Cross-fitted operating points: fold f's setting is chosen on the other folds' out-of-fold rows."""
    scorers = []
    n = len(es.ids)
    for name, p in preds.items():
        ops: dict[str, np.ndarray] = {}
        for f in np.unique(fold):
            q, ref = np.flatnonzero(fold == f), np.flatnonzero(fold != f)
            for op, choice in ev.choose_on_reference(p[ref], es.subset(ref), p[q], es.cost[q]).items():
                ops.setdefault(op, np.zeros(n, dtype=np.int64))[q] = choice
        scorers.append(ev.Scorer(name, p=p, operating_points=ops, settings=settings.get(name, {})))
    return scorers


def _best_single_per_fold(es: ev.EvalSet, fold: np.ndarray) -> np.ndarray:
    """Per row, the most accurate target on the *other* folds."""
    best = np.zeros(len(fold), dtype=np.int64)
    for f in np.unique(fold):
        q = fold == f
        best[q] = int(np.nanargmax(np.nanmean(es.hard[~q], 0)))
    return best


def _trunk_predictor(x: np.ndarray, scores: np.ndarray, cfg: Any) -> Predictor:
    from .trunk import fit_trunk

    def fn(fit: np.ndarray, val: np.ndarray, q: np.ndarray) -> np.ndarray:
        return fit_trunk(x[fit], scores[fit], x[val], scores[val], cfg).predict(x[q]).astype(np.float64)
    return fn


def _logreg_predictor(x: np.ndarray, scores: np.ndarray) -> Predictor:
    from .baselines import logreg_predict

    def fn(fit: np.ndarray, val: np.ndarray, q: np.ndarray) -> np.ndarray:
        return logreg_predict(x[fit], scores[fit], x[val], scores[val], x[q])[0]
    return fn


def cross_validate(ds: RoutingDataset, *, folds: int = 5, encoder: str | None = None,
                   variants: Sequence[PrefillVariant] | None = None, baselines: Sequence[str] = tuple(BASELINE_NAMES),
                   bootstrap: int = 1000, pair: tuple[str, str] | None = None, cache_dir: Path | None = None,
                   progress: bool = True, seed: int = 0) -> tuple[dict[str, Any], dict[str, np.ndarray], ev.EvalSet]:
    """K-fold evaluation of prefill variants and baselines; returns (report, out-of-fold p per scorer, rows)."""
    from tqdm.auto import tqdm

    from .pipeline import TrainOptions, cached_probes, compute_features, split_validation
    from .probes import select_layer
    from .trunk import TrunkConfig

    opts = TrainOptions(cache_dir=cache_dir, progress=progress)
    if encoder:
        opts = dataclasses.replace(opts, encoder=encoder)
    missing = [t for t in ds.targets if t not in ds.prices]
    if missing:
        raise PrefillRouterError(f"no prices for targets {missing}; give --models-json with input/output cost per "
                                 "token")
    scores = ds.scores()
    check_folds(folds, len(ds))  # before the features: minutes on a real dataset
    handle, cache = compute_features(ds, opts)
    if not variants:
        fit_idx, _ = split_validation(ds, ds.indices("train") if len(ds.indices("train")) else np.arange(len(ds)),
                                      opts.val_fraction)
        sel = select_layer(cached_probes(cache, scores, ds.targets, fit_idx, opts), opts.max_auc_loss)
        variants = [PrefillVariant([int(sel["layer"])], list(sel["pooling"]))]
    es, fold = cv_rows(ds, cache.n_tokens, folds, expected_output_tokens=opts.expected_output_tokens, seed=seed)
    models: dict[str, tuple[Predictor, dict[str, Any]]] = {}
    for v in variants:
        x = cache.select(v.layers, v.pooling)
        info: dict[str, Any] = {"encoder": handle.id, "layers": v.layers, "pooling": v.pooling, "head": v.head}
        if v.head == "trunk":
            models[v.name] = (_trunk_predictor(x, scores, TrunkConfig(seeds=v.seeds, keep=min(v.keep, v.seeds))),
                              info)
        elif v.head == "logreg":
            models[v.name] = (_logreg_predictor(x, scores), info)
        else:
            raise PrefillRouterError(f"unknown prefill head {v.head!r}; use trunk or logreg")
    models.update(_learned(list(baselines), ds, scores, cache_dir, progress))
    preds = {name: np.zeros(es.hard.shape) for name in models}
    with tqdm(total=folds * len(models), desc="cross-validation", disable=not progress) as bar:
        for f, q, fit, val in cv_splits(ds, fold, opts.val_fraction):
            for name, (fn, _) in models.items():
                bar.set_postfix_str(f"fold {f + 1} {name}")
                preds[name][q] = fn(fit, val, q)
                bar.update()
    scorers = _scorers_from_predictions(preds, es, fold, {k: v[1] for k, v in models.items()})
    fixed = ev.fixed_baselines(es, _best_single_per_fold(es, fold), "the other folds", seed)
    report = ev.evaluate(scorers + fixed, es, bootstrap=bootstrap, pair=pair, seed=seed)
    ref = scorers[0]
    report["per_benchmark"] = {op: ev.per_benchmark(ref.p, ref.operating_points[op], es)  # type: ignore[arg-type]
                               for op in ("max-quality", "paper-savings")}
    report["mode"] = {"kind": "cv", "folds": folds, "rows": len(ds), "encoder": handle.id,
                      "operating_points": "cross-fitted: each fold's setting chosen on the other folds' OOF rows",
                      "layer_selection": "probes on the training split (shared by all folds)"}
    return report, preds, es


def evaluate_bundle(ds: RoutingDataset, bundle: str | Path, *, split: str = "test", baselines: Sequence[str] = (),
                    bootstrap: int = 1000, pair: tuple[str, str] | None = None, threads: int | None = None,
                    cache_dir: Path | None = None, progress: bool = True,
                    seed: int = 0) -> tuple[dict[str, Any], dict[str, np.ndarray], ev.EvalSet]:
    """The served bundle on one split, with settings chosen on the training split's validation rows."""
    from ..costs import cost_matrix, manifest_price
    from ..predictor import PrefillPredictor
    from .pipeline import split_validation

    pred = PrefillPredictor(bundle, intra_op_threads=threads)
    m = pred.bundle.manifest
    names = [t.name for t in m.targets]
    missing = [t for t in names if t not in ds.targets]
    if missing:
        raise PrefillRouterError(f"the data at {ds.source} has no scores for bundle targets {missing}; evaluate on "
                                 "the dataset the bundle was trained on, or one with the same targets")
    if names != list(ds.targets):
        ds = dataclasses.replace(ds, targets=names)
    eval_idx = ds.indices(split)
    if not len(eval_idx):
        raise PrefillRouterError(f"no rows with split {split!r} in {ds.source}")
    rest = np.setdiff1d(np.arange(len(ds)), eval_idx)
    val_idx = ds.indices("val") if len(ds.indices("val")) else split_validation(ds, ds.indices("train"), 0.15)[1]
    fit_idx = np.setdiff1d(rest, val_idx)
    need = np.r_[val_idx, eval_idx]
    p = np.zeros((len(ds), len(names)))
    n_tok = np.zeros(len(ds))
    p[need], n_tok[need] = pred.predict_many([ds.rows[i].prompt for i in need])
    prices = [manifest_price(t) for t in m.targets]
    cost = cost_matrix([(pr.input_cost_per_token, pr.output_cost_per_token) for pr in prices], n_tok,
                           [t.expected_output_tokens for t in m.targets])
    scores = ds.scores(names)
    hard = ev.binarize(scores)
    es_val, es = _eval_set(ds, hard, cost, val_idx), _eval_set(ds, hard, cost, eval_idx)
    precision = "int8" if m.encoder.quantized else "fp32"
    bundle_name = f"prefill bundle L{'+'.join(map(str, m.encoder.layers))} ({precision})"
    preds = {bundle_name: p}
    settings: dict[str, dict[str, Any]] = {bundle_name: {"bundle": str(pred.bundle.directory), "encoder": m.encoder.id}}
    learned = _learned(list(baselines), ds, scores, cache_dir, progress)
    if learned:
        # learned baselines need costs for their validation rows too: token counts from the bundle's tokenizer
        for name, (fn, info) in learned.items():
            preds[name] = np.zeros_like(p)
            preds[name][need] = fn(fit_idx, val_idx, need)
            settings[name] = info
    scorers = []
    for name, pp in preds.items():
        ops = ev.choose_on_reference(pp[val_idx], es_val, pp[eval_idx], cost[eval_idx])
        if name == bundle_name:
            from ..policy import choose_batch

            for pname, pr in m.presets.items():
                ops[f"preset {pname}"] = choose_batch(pp[eval_idx], cost[eval_idx], pr.kind, pr.value)
        scorers.append(ev.Scorer(name, p=pp[eval_idx], operating_points=ops, settings=settings.get(name, {})))
    train_best = int(np.nanargmax(np.nanmean(hard[rest], 0)))
    fixed = ev.fixed_baselines(es, np.full(len(eval_idx), train_best), "rows outside the split", seed)
    report = ev.evaluate(scorers + fixed, es, bootstrap=bootstrap, pair=pair, seed=seed)
    report["per_benchmark"] = {op: ev.per_benchmark(scorers[0].p, scorers[0].operating_points[op], es)  # type: ignore[arg-type]
                               for op in ("max-quality", "paper-savings")}
    report["mode"] = {"kind": "split", "split": split, "rows": len(eval_idx), "bundle": str(pred.bundle.directory),
                      "operating_points": "chosen on the validation rows of the training split"}
    return report, {k: v[eval_idx] for k, v in preds.items()}, es


# ----------------------------------------------------------------------------------------------- outputs
