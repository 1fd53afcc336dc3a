"""Which n-gram scheme for the wide part: one bag over the model's text ("text") or one bag per
field ("fields": message, stats + paths, diff lines)? A cheap ablation on frozen MiniLM.

    python -m bench.bench_lexical_schemes [--dataset FILE] [--protocols temporal,loro]

Each example is embedded once by the frozen base model (mean pooling, 256 tokens: the
encoder block of the refit without LoRA), then the head refit's logistic regression
(`train.refit_head`: [n-grams | numeric features | pooled * 0.5]) is fitted per fold for both
schemes over a grid of C and class weighting, under the same splits as `reviewbus eval`.
A fine-tuned adapter moves the absolute numbers; the comparison between schemes at equal
settings is what this measures. Writes bench/results/lexical_schemes-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from bench.bench_tfidf_reference import DATASET, folds

GRID = [(c, balanced) for c in (1.0, 10.0) for balanced in (False, True)]


def embed(examples, batch_size: int = 32):
    import numpy as np
    import torch

    from agents.learning.modeling import default_base_dir, load_encoder
    from agents.learning.text import build_text
    from streams.progress import Progress

    tokenizer, encoder = load_encoder(default_base_dir())
    encoder.eval()
    texts = [build_text(e.change) for e in examples]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), encoder.config.hidden_size), dtype=np.float32)
    bar = Progress(len(texts), "embedding")
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            enc = tokenizer([texts[i] for i in idx], truncation=True, max_length=256,
                            padding=True, return_tensors="pt")
            hidden = encoder(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            out[idx] = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
            bar.update(len(idx))
    bar.close()
    return out


def design(examples, pooled, scheme: str):
    import numpy as np
    from scipy.sparse import csr_matrix, hstack

    from agents.learning.text import LEXICAL_DIM, features, lexical_input

    rows, cols, vals = [], [], []
    for i, ex in enumerate(examples):
        for k, v in lexical_input(ex.change, LEXICAL_DIM, scheme).items():
            rows.append(i)
            cols.append(k)
            vals.append(v)
    lex = csr_matrix((vals, (rows, cols)), shape=(len(examples), LEXICAL_DIM))
    feats = csr_matrix(np.array([features(ex.change) for ex in examples]))
    return hstack([lex, feats, csr_matrix(pooled * 0.5)]).tocsr()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_lexical_schemes")
    p.add_argument("--dataset", type=Path, default=DATASET)
    p.add_argument("--protocols", default="temporal,loro")
    args = p.parse_args(argv)
    from sklearn.linear_model import LogisticRegression

    from agents.learning.data import load_examples
    from agents.learning.metrics import classification_report

    examples = load_examples(args.dataset)
    pooled = embed(examples)
    labels = [ex.label for ex in examples]
    index = {ex.id: i for i, ex in enumerate(examples)}
    out: dict = {"bench": "lexical_schemes", "dataset": str(args.dataset), "results": []}
    for scheme in ("text", "fields"):
        x = design(examples, pooled, scheme)
        for protocol in [s.strip() for s in args.protocols.split(",") if s.strip()]:
            for c, balanced in GRID:
                per_repo = {}
                for repo, train_rows, test_rows in folds(examples, protocol):
                    train, test = [index[e.id] for e in train_rows], [index[e.id] for e in test_rows]
                    clf = LogisticRegression(C=c, class_weight="balanced" if balanced else None,
                                             max_iter=3000)
                    clf.fit(x[train], [labels[i] for i in train])
                    report = classification_report([labels[i] for i in test],
                                                    list(clf.predict(x[test])))
                    per_repo[repo] = {k: report[k] for k in ("accuracy", "macro_f1")}
                mean = {k: round(statistics.mean(r[k] for r in per_repo.values()), 4)
                        for k in ("accuracy", "macro_f1")}
                out["results"].append({"scheme": scheme, "protocol": protocol, "C": c,
                                       "balanced": balanced, **mean, "per_repo": per_repo})
                print(f"{scheme:6} {protocol:8} C={c:<4} balanced={balanced!s:5}  "
                      f"accuracy {mean['accuracy']:.3f}  macro-F1 {mean['macro_f1']:.3f}",
                      flush=True)
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    path = results / f"lexical_schemes-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
