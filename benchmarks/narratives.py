"""What the narrative model costs and gives on this CPU: SmolLM2-135M LoRA training throughput
with and without DP-SGD, generation throughput, and the narratives' consistency and diversity
against the real ones, for the base model (adapter at zero), a DP-trained adapter and one trained
without DP, all measured side by side in one run.

    python benchmarks/narratives.py [--base smollm2] [--records 600] [--steps 12]
                                    [--generate 48] [--epsilon 3] [--seed 0] [--threads 2]

Training: one simulated site's records, ``--steps`` optimizer steps at the quick profile's
settings (batch 16, targets cut at 64 tokens); tokens/s counts the real (non-padding) tokens of
the expected batches. Generation: ``--generate`` held-out records, batched, with the gate's
retries counted apart. Consistency: the share of narratives the gate (schema synonyms; mechanism
and body region) passes at the first attempt, and a mechanism classifier trained on the site's
real narratives applied to them (CONTRACT ``consistency_accuracy``; its score on held-out real
narratives is the ceiling). distinct-2 against the same number of real narratives. Prints a
markdown table; runs are recorded in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from common.data import stratified_split
from common.metrics.text import consistency_classifier, distinct_n
from common.text.narrative_model import NarrativeModel
from common.text.tokens import PAD, encode_pairs
from simulation.ed_schema import ed_trauma_schema
from simulation.hospitals import simulate_site
from simulation.profiles import PROFILES

SCHEMA = ed_trauma_schema(["A"])


@dataclass
class Row:
    model: str
    train_tokens_s: float | None
    generate_tokens_s: float
    first_pass: float
    flagged: float
    consistency: float
    distinct_2: float


def train(model: NarrativeModel, records: pd.DataFrame, steps: int) -> float:
    """Training tokens/s over ``steps`` steps (the plan's expected batch of real tokens)."""
    pairs = encode_pairs(model.tokenizer, model.prompts(records), list(records["narrative"]),
                         model.config["max_target_tokens"])
    tokens_per_example = float((pairs.tokens != PAD).sum(1).mean())
    model.plan(len(records), steps)
    start = time.perf_counter()
    model.train_steps(records, steps)
    seconds = time.perf_counter() - start
    return steps * model.config["batch_size"] * tokens_per_example / seconds


def generate(name: str, model: NarrativeModel, records: pd.DataFrame, classify, seed: int,
             train_tokens_s: float | None) -> Row:
    out = model.sample(records.drop(columns=["narrative"]), seed=seed)
    stats = model.last_sample_stats
    texts = list(out["narrative"])
    predicted = classify(texts)
    return Row(name, train_tokens_s, stats["tokens"] / stats["seconds"],
               stats["first_pass"] / len(texts),
               float(out["narrative_flagged"].mean()),
               float(np.mean(predicted == records["mechanism"].astype(str).to_numpy())),
               distinct_n(texts) or 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="smollm2")
    parser.add_argument("--records", type=int, default=600, help="the site's records")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--generate", type=int, default=48)
    parser.add_argument("--epsilon", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    site = simulate_site("community", args.records, args.seed, "A")
    splits = stratified_split(site, "mechanism", args.seed)
    train_set, test = splits["train"], splits["test"]
    held_out = test.sample(n=min(args.generate, len(test)), random_state=args.seed)
    classifier = consistency_classifier(list(train_set["narrative"]),
                                        train_set["mechanism"].astype(str).to_numpy(), args.seed)
    ceiling = float(np.mean(classifier(list(test["narrative"])) ==
                            test["mechanism"].astype(str).to_numpy()))
    real = test["narrative"].sample(n=len(held_out), random_state=args.seed + 1)
    config = {**PROFILES["quick"].text_config, "base": args.base}

    rows = []
    base = NarrativeModel(SCHEMA, epsilon=None, config=config, device="cpu", seed=args.seed)
    rows.append(generate("base model (adapter at zero)", base, held_out, classifier, args.seed, None))
    del base
    for name, epsilon in ((f"DP-LoRA, epsilon {args.epsilon:g}", args.epsilon),
                          ("LoRA without DP", None)):
        model = NarrativeModel(SCHEMA, epsilon=epsilon, config=config, device="cpu",
                               seed=args.seed, noise_seed=args.seed)
        speed = train(model, train_set, args.steps)
        rows.append(generate(name, model, held_out, classifier, args.seed, speed))
        del model

    dp, plain = rows[1].train_tokens_s, rows[2].train_tokens_s
    print(f"# narratives benchmark: {args.base}, {len(train_set)} training records, {args.steps} "
          f"steps, {len(held_out)} narratives; {platform.processor() or platform.machine()}, "
          f"{args.threads} thread(s), torch {torch.__version__}\n")
    print("| model | train tokens/s | generate tokens/s | gate pass, 1st try | flagged | "
          "consistency | distinct-2 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        speed = "" if r.train_tokens_s is None else f"{r.train_tokens_s:.0f}"
        print(f"| {r.model} | {speed} | {r.generate_tokens_s:.0f} | {r.first_pass:.2f} | "
              f"{r.flagged:.2f} | {r.consistency:.2f} | {r.distinct_2:.3f} |")
    print(f"| real narratives (held out) | | | | | {ceiling:.2f} | "
          f"{distinct_n(list(real)):.3f} |")
    print(f"\nDP-SGD training throughput / non-DP: {dp / plain:.2f}x "
          f"({dp:.0f} vs {plain:.0f} tokens/s)")


if __name__ == "__main__":
    main()
