"""Exploration for the private recipe (#24), in one process: consent pretraining, then FedAvg of
DP-SGD over ML-1M's 10 regional silos, each silo's step the ClientApp's own (`local_fit` with the
plan `plan_round` makes), the silos' updates averaged by user count as FedAvg weighs them.

    python -m simulations.private_explore NAME [consent=0.1] [pre_epochs=15] [rounds=5] [eps=8]
        [bias=1] [fed_opt=adamw|sgd] [fed_lr=0.002] [batch=32] [local_epochs=1] [trainable=all]

Faster to iterate on than `fedrec simulate` (no SuperLink, Ray or messages), and so not the
product's path: its numbers point to a recipe; `simulations.private_recipe` measures it through
`fedrec train` and `fedrec simulate`. Metrics are on the test items of the users who did not
consent. Writes outputs/private_explore/NAME.json; the pretrained weights are cached there.
"""
import json, sys, time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from client.data import LocalData
from client.privacy import new_state, plan_round
from client.training import local_fit, local_examples
from shared.config import DataConfig, ModelConfig, PartitionConfig, PrivacyConfig, TrainConfig
from shared.data.dataset import load_dataset
from shared.data.partition import partition_users
from shared.data.sources import default_cache_dir
from shared.eval.protocols import evaluate
from shared.models.batches import training_sequences
from shared.models.params import flat_trainable, load_flat
from shared.models.popularity import Popularity
from shared.models.training import build_model, evaluate_model, make_optimizer, train_epoch

def main(argv: list[str]) -> int:
    """NAME, then key=value settings (see the module's docstring)."""
    args = dict(a.split("=", 1) for a in argv[1:])
    name = argv[0]
    f = lambda k, d: type(d)(args.get(k, d))
    consent = f("consent", 0.1)
    pre_epochs = f("pre_epochs", 15)
    rounds = f("rounds", 5)
    eps = f("eps", 8.0)
    bias = f("bias", 1) == 1
    fed_lr = f("fed_lr", 0.002)
    fed_opt = args.get("fed_opt", "adamw")
    batch = f("batch", 32)
    local_epochs = f("local_epochs", 1)
    local_steps = f("local_steps", 0)
    trainable = args.get("trainable", "all")
    clip = f("clip", 1.0)
    loss = args.get("loss", "softmax")
    negatives = f("negatives", 64)
    seed = 42
    torch.manual_seed(seed)
    t0 = time.time()
    ds = load_dataset(DataConfig(dataset="movielens-1m"))
    rng = np.random.default_rng(seed)
    consented = rng.random(ds.num_users) < consent
    cu, nu = np.flatnonzero(consented), np.flatnonzero(~consented)
    mcfg = ModelConfig(use_id_embedding=False, use_item_bias=bias, retrieval_loss=loss)
    model = build_model(ds, mcfg, default_cache_dir())
    out = {"name": name, "args": args}


    def ev(tag: str, stage: str = "test") -> None:
        r = evaluate_model(model, ds, stage, users=nu)
        out[tag] = {"full_ndcg": r["ranking"]["full"]["ndcg@10"], "sampled_hr": r["ranking"]["sampled"]["hr@10"],
                    "full_hr": r["ranking"]["full"]["hr@10"]}
        print(tag, out[tag], f"{time.time()-t0:.0f}s", flush=True)


    pop = Popularity(Popularity.count(ds, cu if consent > 0 else None))
    p = evaluate(ds, pop, "test", users=nu)
    out["popularity_consented_counts"] = {"full_ndcg": p["full"]["ndcg@10"], "sampled_hr": p["sampled"]["hr@10"]}
    print("popularity", out["popularity_consented_counts"], flush=True)
    WORK = Path("outputs/private_explore")
    ckpt = WORK / f"pre_bias{int(bias)}_c{consent}_e{pre_epochs}_{loss}{negatives}.pt"
    if consent > 0 and pre_epochs > 0:
        if ckpt.exists():
            model.load_state_dict(torch.load(ckpt))
            out["pretrained"] = json.loads(ckpt.with_suffix(".json").read_text())
            print("pretrained (cached)", out["pretrained"], flush=True)
        else:
            tc = TrainConfig(epochs=1, seed=seed, num_negatives=negatives)
            opt = make_optimizer(model, tc)
            data = training_sequences(ds, cu, mcfg.max_len)
            for e in range(pre_epochs):
                train_epoch(model, ds.num_items, opt, data, tc, rng, "cpu", progress=False)
                if (e + 1) % 5 == 0 and e + 1 < pre_epochs:
                    ev(f"pretrain_epoch{e + 1}_valid", "valid")
            ev("pretrained_valid", "valid")
            ev("pretrained")
            ckpt.parent.mkdir(exist_ok=True)
            torch.save(model.state_dict(), ckpt)
            ckpt.with_suffix(".json").write_text(json.dumps(out["pretrained"]))
    # freeze for fine-tuning
    if trainable != "all":
        keep = trainable.split(",")
        for n_, p_ in model.named_parameters():
            if p_.requires_grad and not any(n_.startswith(k) or k in n_ for k in keep):
                p_.requires_grad_(False)
        model._trainable = None
    print("trainable params", sum(p_.numel() for p_ in model.parameters() if p_.requires_grad), flush=True)
    part = partition_users(ds, PartitionConfig(partitioning="region"))
    cfg = TrainConfig(epochs=local_epochs, batch_size=batch, lr=fed_lr, optimizer=fed_opt, seed=seed,
                      num_negatives=negatives)
    pcfg = PrivacyConfig(target_epsilon=eps, max_grad_norm=clip)
    states = {}
    dp = eps < 1e9
    for r in range(1, rounds + 1):
        glob = flat_trainable(model).clone()
        acc, wsum = torch.zeros_like(glob), 0.0
        for pid in range(part.num_partitions):
            users = np.intersect1d(part.users(pid), nu)
            local = LocalData(ds, users, pid, "region")
            load_flat(model, glob)
            data = local_examples(model, local, "user")
            plan = None
            if dp:
                st = states.get(pid) or new_state(f"r{pid}", "user", pcfg)
                st, plan = plan_round(st, pcfg, len(data), batch, local_epochs, rounds, local_steps)
                from client.privacy import epsilon_after, record_round
                e = epsilon_after(st, plan)
                states[pid] = record_round(st, plan, r, e, plan.steps)
            local_fit(model, local, data, cfg, r, dp=plan, steps=local_steps)
            w = len(users)
            acc += flat_trainable(model) * w
            wsum += w
        load_flat(model, acc / wsum)
        if dp:
            out.setdefault("sigma", {p_: s.noise_multiplier for p_, s in states.items()})
            out["eps_max"] = max(s.epsilon for s in states.values())
        ev(f"round{r}")
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / f"{name}.json").write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
