"""The learning loop: training data from ClickHouse or JSONL, LoRA fine-tunes, evaluation.

Pure parts (text building, data loading, metrics, protocols) import only the standard library
and the schemas; `modeling`, `train` and the transformers backend import torch, transformers and
peft lazily, so nothing here slows down a worker that serves no transformers version.
"""
