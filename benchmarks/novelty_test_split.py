"""Are the prompts the router flags as novel routed worse? The served bundle on the test split, novel vs the rest.

    python benchmarks/novelty_test_split.py [--bundle bundles/llmrouter] [--data ../shared/datasets/llmrouter]

Prints, for the novel test prompts (novelty above 1) and the others: mean per-target AUC, accuracy of the most
likely target (max-quality), its mean P(correct) (calibration), the oracle and the best single target; writes
benchmarks/results/novelty_test_split.json.
"""

import argparse
import collections
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np

from litellm_prefill_router.predictor import PrefillPredictor
from litellm_prefill_router.training import calibrate as cal
from litellm_prefill_router.training.data import load_dataset

ap = argparse.ArgumentParser()
ap.add_argument("--bundle", default="bundles/llmrouter")
ap.add_argument("--data", default=os.environ.get("PREFILL_ROUTER_DATA", "../shared/datasets/llmrouter"))
args = ap.parse_args()
ds = load_dataset(args.data)
pred = PrefillPredictor(args.bundle)
test = ds.indices('test')
prompts = [ds.rows[i].prompt for i in test]
enc = pred.encode(prompts)
P = pred.predict(prompts)
tok = np.array([e.n_tokens for e in enc], dtype=float)
nov = pred.novelty.distances(P, tok)
S = (ds.scores(pred.targets)[test] >= 0.5).astype(float)
novel = nov > 1
out = {'novel_prompts': int(novel.sum()), 'prompts': len(novel)}
print('novel', novel.sum(), 'of', len(novel))
for name, mask in (('novel', novel), ('not novel', ~novel)):
    aucs = cal.auc_per_target(P[mask], S[mask], pred.targets)
    best = P[mask].argmax(1)
    acc = S[mask][np.arange(mask.sum()), best].mean()
    pm = P[mask][np.arange(mask.sum()), best].mean()
    out[name] = {'mean_auc': float(np.nanmean(list(aucs.values()))), 'max_quality_accuracy': float(acc),
                 'mean_p_of_pick': float(pm), 'oracle': float(S[mask].max(1).mean()),
                 'best_single_accuracy': float(S[mask].mean(0).max())}
    print(name, 'mean AUC', np.nanmean(list(aucs.values())).round(3), 'max-quality acc', acc.round(3),
          'mean P of pick', pm.round(3), 'oracle', S[mask].max(1).mean().round(3),
          'best single acc', S[mask].mean(0).max().round(3))
out['novel_by_benchmark'] = dict(collections.Counter(ds.rows[i].benchmark for i, n in zip(test, novel) if n))
print(out['novel_by_benchmark'])
Path('benchmarks/results/novelty_test_split.json').write_text(json.dumps(out, indent=1))
