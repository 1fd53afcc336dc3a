"""Which n-gram scheme for the wide part: one bag over the model's text ("text") or one bag per
field ("fields": message, stats + paths, diff lines)? A cheap ablation on frozen MiniLM.

    python -m bench.bench_lexical_schemes [--dataset FILE] [--protocols temporal,loro]

Each example is embedded once by the frozen base model (mean pooling, 256 tokens: the
encoder block of the refit without LoRA), then the head refit's logistic regression
(`head_refit.refit_head`: [n-grams | numeric features | pooled * 0.5]) is fitted per fold for both
schemes over a grid of C and class weighting, under the same splits as `reviewbus eval`.
A fine-tuned adapter moves the absolute numbers; the comparison between schemes at equal
settings is what this measures. Writes bench/results/lexical_schemes-<time>.json.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

from bench.bench_tfidf_reference import DATASET, folds, means, write_result

GRID = [(c, balanced) for c in (1.0, 10.0) for balanced in (False, True)]


def embed(examples, batch_size: int = 32):
    import numpy as np
    import torch

    from agents.learning.modeling import default_base_dir, load_encoder
    from agents.learning.text import build_text
    from streams.cli.render import Progress

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

    from agents.learning.text import LEXICAL_DIM, features, lexical_input, text_fields

    rows, cols, vals = [], [], []
    for i, ex in enumerate(examples):
        for k, v in lexical_input(text_fields(ex.change), LEXICAL_DIM, scheme).items():
            rows.append(i)
            cols.append(k)
            vals.append(v)
    lex = csr_matrix((vals, (rows, cols)), shape=(len(examples), LEXICAL_DIM))
    feats = csr_matrix(np.array([features(ex.change) for ex in examples]))
    return hstack([lex, feats, csr_matrix(pooled * 0.5)]).tocsr()


def score(examples, x, protocol: str, c: float, balanced: bool) -> dict[str, dict]:
    """Per repository: the refit's logistic regression on the fold's train rows, scored on
    its test rows."""
    from sklearn.linear_model import LogisticRegression

    from agents.learning.metrics import classification_report

    index = {ex.id: i for i, ex in enumerate(examples)}
    per_repo = {}
    for repo, train_rows, test_rows in folds(examples, protocol):
        clf = LogisticRegression(C=c, class_weight="balanced" if balanced else None, max_iter=3000)
        clf.fit(x[[index[e.id] for e in train_rows]], [e.label for e in train_rows])
        report = classification_report([e.label for e in test_rows],
                                        list(clf.predict(x[[index[e.id] for e in test_rows]])))
        per_repo[repo] = {k: report[k] for k in ("accuracy", "macro_f1")}
    return per_repo


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_lexical_schemes")
    p.add_argument("--dataset", type=Path, default=DATASET)
    p.add_argument("--protocols", default="temporal,loro")
    args = p.parse_args(argv)
    from agents.learning.data import load_examples

    examples = load_examples(args.dataset)
    pooled = embed(examples)
    protocols = [s.strip() for s in args.protocols.split(",") if s.strip()]
    out: dict = {"bench": "lexical_schemes", "dataset": str(args.dataset), "results": []}
    for scheme in ("text", "fields"):
        x = design(examples, pooled, scheme)
        for protocol, (c, balanced) in itertools.product(protocols, GRID):
            per_repo = score(examples, x, protocol, c, balanced)
            mean = means(per_repo)
            out["results"].append({"scheme": scheme, "protocol": protocol, "C": c,
                                   "balanced": balanced, **mean, "per_repo": per_repo})
            print(f"{scheme:6} {protocol:8} C={c:<4} balanced={balanced!s:5}  "
                  f"accuracy {mean['accuracy']:.3f}  macro-F1 {mean['macro_f1']:.3f}", flush=True)
    write_result("lexical_schemes", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
