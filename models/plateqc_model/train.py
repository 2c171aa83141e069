"""Train the plateqc CNN on cached synthetic plates (see data.py) and choose the threshold.

    python -m plateqc_model.train --train train --val val --epochs 4 --out models/work/run

Loss = class CE (weighted toward unusable) + BCE over the 14 artifact types (positives weighted
      by neg/pos, capped)
      + sev_weight * ordinal severity term (training only: a separate linear layer on the same
        pooled features predicts, per type, severity >= 2 and severity >= 3; the usable/unusable
        rule turns on exactly that boundary, and the layer is not part of the exported model)
      + attn_weight * mask-guided attention term (training only: for plates with local artifact
        masks, the unusable-class CAM of layer ``last`` -- computed in closed form from the linear
        head over max+avg pooling -- is pushed to put its spatial-softmax mass inside the mask).
Masks are never an input of the network.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parents[1]   # models/

from plateqc_model import data as D
from plateqc_model.metrics import roc_auc
from plateqc_model import style as S_
from plateqc_model.net import PlateNet, build, head_of, is_extra_block


def set_seed(seed: int, threads: int = 2):
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1) if not getattr(set_seed, "_done", False) else None
    set_seed._done = True


def choose_threshold(y: np.ndarray, p: np.ndarray, target_sens: float) -> float:
    """Largest threshold t with sensitivity(P(unusable) >= t) >= target_sens."""
    pos = np.sort(np.asarray(p, np.float64)[np.asarray(y).astype(bool)])
    if len(pos) == 0:
        return 0.5
    k = int(math.floor((1.0 - target_sens) * len(pos)))  # number of positives we may miss
    return float(pos[min(k, len(pos) - 1)])


def cam_last(model: PlateNet, a: torch.Tensor) -> torch.Tensor:
    """Closed-form Grad-CAM (before ReLU) of the unusable logit at layer last
    (`PlateNet.cam_weights`: the gradient's spatial mean per channel, max ties aside)."""
    return torch.einsum("nkhw,k->nhw", a, model.cam_weights(*a.shape[1:]))


def forward_with_feats(model: PlateNet, x: torch.Tensor):
    feats = {}
    hs = [getattr(model, n).register_forward_hook(
        lambda m, i, o, n=n: feats.__setitem__(n, o)) for n in ("middle", "last")]
    try:
        cls, typ = model(x)
    finally:
        for h in hs:
            h.remove()
    return cls, typ, feats


class MixStyle:
    """Training-only feature-statistics mixing across rendering families (MixStyle, Zhou et al.,
    ICLR 2021), on the outputs of `stem` and `early`: with probability `p` per batch, each
    plate's per-channel spatial mean and standard deviation there are replaced by a mix
    (lambda ~ Beta(alpha, alpha)) of its own and those of a plate from another training family
    in the batch, so the shallow statistics that carry a family's rendering style stop telling
    the families apart. A plate and its counterfactual twin get the same partner and lambda
    (their difference stays the artifact). Off outside training, so the exported graph and the
    contract do not change."""

    LAYERS = ("stem", "early")

    def __init__(self, model: PlateNet, p: float, alpha: float = 0.1):
        self.model, self.p, self.alpha = model, p, alpha
        self.plan = None   # (partner index, lambda [N,1,1,1]) for the current batch, or None

    def draw(self, family: np.ndarray, pair: np.ndarray | None, rng: np.random.Generator):
        """Decide this batch's mixing from `rng` (nothing is drawn when p = 0)."""
        self.plan = None
        if self.p <= 0 or rng.random() >= self.p:
            return
        n = len(family)
        group = pair if pair is not None else np.arange(n)
        _, first, inv = np.unique(group, return_index=True, return_inverse=True)
        g_fam = family[first]
        partner_g = np.empty(len(first), np.int64)
        for k in range(len(first)):
            other = np.flatnonzero(g_fam != g_fam[k])
            pool = other if len(other) else np.arange(len(first))
            partner_g[k] = pool[rng.integers(len(pool))]
        lam_g = rng.beta(self.alpha, self.alpha, size=len(first))
        # each row takes the partner group's first row (a twin pair shares one style)
        self.plan = (torch.from_numpy(first[partner_g[inv]]),
                     torch.from_numpy(lam_g[inv].astype(np.float32)).view(-1, 1, 1, 1))

    def hooks(self):
        return [getattr(self.model, n).register_forward_hook(self._hook) for n in self.LAYERS]

    def _hook(self, module, inp, out):
        if self.plan is None or not module.training:
            return out
        idx, lam = self.plan
        mu = out.mean(dim=(2, 3), keepdim=True).detach()
        sig = (out.var(dim=(2, 3), keepdim=True) + 1e-6).sqrt().detach()
        normed = (out - mu) / sig
        return normed * (lam * sig + (1 - lam) * sig[idx]) + (lam * mu + (1 - lam) * mu[idx])


def batches(n: int, bs: int, rng: np.random.Generator | None):
    idx = np.arange(n) if rng is None else rng.permutation(n)
    for i in range(0, n, bs):
        yield idx[i:i + bs]


def pair_batches(pair: np.ndarray, bs: int, rng: np.random.Generator):
    """Shuffled batches of about `bs` rows that never split a plate from its counterfactual
    twin (rows sharing a `pair` id), so every batch shows the same scene with and without its
    artifacts and the gradient cannot credit anatomy or processing with the label."""
    starts = np.flatnonzero(np.r_[True, pair[1:] != pair[:-1]])
    ends = np.r_[starts[1:], len(pair)]
    batch: list[int] = []
    for g in rng.permutation(len(starts)):
        batch.extend(range(starts[g], ends[g]))
        if len(batch) >= bs:
            yield np.array(batch)
            batch = []
    if batch:
        yield np.array(batch)


class DenseHeads(torch.nn.Module):
    """Training-only dense supervision: 1x1 convolutions on `middle` and `last` predict the
    per-type artifact masks (local types: where the artifact is; global types: the affected
    area). Not exported: with the pooled head the verdict still comes from the class head. With
    the maps head (`last_maps`: the model's own `type_map`) the term trains the exported maps
    at `last` instead of a side head there."""

    def __init__(self, width: int, n_types: int, last_maps: torch.nn.Module | None = None):
        super().__init__()
        self.middle = torch.nn.Conv2d(4 * width, n_types, 1)
        if last_maps is None:
            self.last = torch.nn.Conv2d(8 * width, n_types, 1)
        # held in a list so that the model's own maps stay out of this module's parameters and
        # state (they are the model's)
        self._last = [self.last if last_maps is None else last_maps]

    def loss(self, feats: dict, target: torch.Tensor) -> torch.Tensor:
        """target: [N, K, 32, 32] float; `middle` is 32x32 at S=256, `last` 16x16."""
        out = 0.0
        for name, conv in (("middle", self.middle), ("last", self._last[0])):
            z = conv(feats[name])
            t = F.adaptive_max_pool2d(target, z.shape[-2:])
            out = out + F.binary_cross_entropy_with_logits(
                z, t, pos_weight=torch.tensor(4.0))
        return out / 2


@torch.no_grad()
def predict(model, X: np.ndarray, bs: int = 64):
    model.eval()
    pc, pt = [], []
    for b in batches(len(X), bs, None):
        cls, typ = model(torch.from_numpy(X[b].astype(np.float32)))
        pc.append(torch.softmax(cls, 1)[:, 1].numpy())
        pt.append(torch.sigmoid(typ).numpy())
    return np.concatenate(pc), np.concatenate(pt)


def threshold_fields(model, va, target_sens: float) -> dict:
    pv, _ = predict(model, va["x"])
    thr = choose_threshold(va["y"], pv, target_sens)
    yv = va["y"].astype(bool)
    return {"threshold": thr, "target_sens": target_sens, "val_auc": roc_auc(yv, pv),
            "val_sensitivity": float((pv[yv] >= thr).mean()),
            "val_specificity": float((pv[~yv] < thr).mean())}


def rethreshold(run: Path, target_sens: float, val: str | None = None,
                ambiguous: Path | None = None):
    """Chooses a finished run's threshold again: for another target sensitivity, or (round
    16) on other validation sets (`val`, cached with twins) without the ambiguous plates by
    the thresholds in `ambiguous`; the threshold it replaces is kept beside it."""
    res = json.loads((run / "train_result.json").read_text())
    set_seed(res["seed"], res["args"].get("threads", 2))
    model = build(torch.load(run / "weights.pt"), res["width"])
    psp = res["args"].get("psp", D.pp.PSP_V1)
    if val is None:
        va = D.load_split(res["args"]["val"], res["size"], psp=psp)
    else:
        from plateqc_model import ambiguous as AM
        taus = json.loads(ambiguous.read_text())["taus"] if ambiguous else None
        va = AM.load_scored(val, res["size"], psp, taus)
        # kept once: a second rethreshold must not record its own first result as the original
        res.setdefault("replaced_threshold", {k: res[k] for k in (
            "threshold", "val_auc", "val_sensitivity", "val_specificity") if k in res})
        res["threshold_on"] = {"val": val, "ambiguous_left_out_by": str(ambiguous) if ambiguous
                               else None}
    # the per-epoch AUCs stay those measured during training, on the plates there were then
    res["args"].setdefault("val_monitor", res["val_plates"])
    res["val_plates"] = int(len(va["y"]))
    res.update(threshold_fields(model, va, target_sens))
    res["args"]["target_sens"] = target_sens
    (run / "train_result.json").write_text(json.dumps(res, indent=1))
    print(json.dumps({k: v for k, v in res.items() if k not in ("history", "args")}, indent=1))


def init_from(model: PlateNet, sev_head, dense, c: dict):
    """Starts a run from another run's checkpoint `c`. Same head: everything. A maps-head run
    from a pooled-head checkpoint (round 15): the backbone, the severity layer and the dense
    term's `middle` head as they were, the checkpoint's trained `last` mask head as the first
    `type_map`; the pooled heads keep their fresh initialisation."""
    src = c["model"]
    if model.head == head_of(src):
        # a deepened network (round 18) takes a shallower one's weights; its extra residual
        # blocks keep their identity start
        missing, unexpected = model.load_state_dict(src, strict=False)
        if unexpected or not all(is_extra_block(k, model.extra_blocks) for k in missing):
            raise SystemExit("--init: the checkpoint's network is not this one or a shallower "
                             f"one (missing {missing[:4]}, unexpected {unexpected[:4]})")
        for m, k in ((sev_head, "sev_head"), (dense, "dense")):
            if m is not None:
                m.load_state_dict(c[k])
        return
    if model.head != "maps":
        raise SystemExit("a pooled-head run can only start from a pooled-head checkpoint")
    if "dense" not in c:
        raise SystemExit("a maps-head run needs a checkpoint with a trained dense head")
    heads = ("cls_head.", "type_head.", "type_map.", "type_scale", "type_bias")
    backbone = {k: v for k, v in src.items() if not k.startswith(heads)}
    missing, unexpected = model.load_state_dict(backbone, strict=False)
    assert not unexpected and all(k.startswith(heads) for k in missing), (missing, unexpected)
    with torch.no_grad():
        model.type_map.weight.copy_(c["dense"]["last.weight"])
        model.type_map.bias.copy_(c["dense"]["last.bias"])
    if sev_head is not None:
        sev_head.load_state_dict(c["sev_head"])
    if dense is not None:
        dense.middle.load_state_dict({k.split(".", 1)[1]: v for k, v in c["dense"].items()
                                      if k.startswith("middle.")})


def handle_ambiguous(tr: dict, names: list[str], out: Path, how: str) -> dict:
    """The training rows with the ambiguous plates left out (how="drop", round 16: compacted in
    place, since the five families' arrays are most of the machine's memory) or taught as usable
    (how="relabel", round 17). The rule's thresholds and which plates it judged ambiguous are
    written to `out`/ambiguous.json."""
    from plateqc_model import ambiguous as AM
    if "twin" not in tr:
        raise SystemExit(f"--{how}-ambiguous needs training caches with twins")
    rows, record = AM.judge(tr, names)
    record["action"] = {"drop": "left out", "relabel": "taught as usable"}[how]
    (out / "ambiguous.json").write_text(json.dumps(record, indent=1))
    print(f"{record['action']}: {int(rows.sum())} ambiguous plates of "
          f"{int((~tr['twin'].astype(bool)).sum())}", flush=True)
    return AM.compact(tr, ~rows) if how == "drop" else AM.relabel(tr, rows)


def recipe_args(a) -> dict:
    """The arguments that make a run what it is (what --resume must see again); an unset
    --init is left out so checkpoints written before the option existed still resume."""
    return {k: v for k, v in vars(a).items()
            if k not in ("resume", "checkpoint_steps", "stop_after_steps")
            and not (k == "init" and v is None)
            and not (k == "style_aug" and v == 0.0)
            and not (k == "mixstyle" and v == 0.0)
            and not (k == "head" and v == "pooled")
            and not (k == "drop_ambiguous" and not v)
            and not (k == "relabel_ambiguous" and not v)
            and not (k == "extra_blocks" and v == 0)
            and not (k == "pool" and v == 1)
            and k != "mmap"
            and not (k == "psp" and v == D.pp.PSP_V1)}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", default="train")
    ap.add_argument("--val", default="val")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--count", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--extra-blocks", type=int, default=0,
                    help="residual blocks appended to `middle` and `last` (round 18); each "
                         "starts as the identity, so --init from a shallower run starts there")
    ap.add_argument("--pool", type=int, default=1, metavar="K",
                    help="average K x K blocks of the cached inputs (training and validation) "
                         "before training: round 19's probe of the input scale; not a "
                         "preprocessing the product has, so such a run is never exported")
    ap.add_argument("--mmap", action="store_true",
                    help="read the training plates in place from the cached shards instead of "
                         "loading them (round 20: 384 px plates do not fit in memory); the "
                         "same rows in the same order, so the same run")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--unusable-weight", type=float, default=2.0)
    ap.add_argument("--attn-weight", type=float, default=0.2)
    ap.add_argument("--target-sens", type=float, default=0.97)
    ap.add_argument("--type-pos-weight-cap", type=float, default=6.0)
    ap.add_argument("--sev-weight", type=float, default=0.5,
                    help="weight of the training-only ordinal severity term (0: off)")
    ap.add_argument("--time-budget", type=float, default=0.0,
                    help="stop starting new epochs after this many seconds (0: no limit; a "
                         "limit makes the result depend on the machine's speed)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads; part of the recipe, since the float rounding "
                         "of a convolution can depend on how it is split (1 trains as fast as 2 "
                         "on the 2-core build machine and leaves the other core free)")
    ap.add_argument("--dense-weight", type=float, default=0.0,
                    help="weight of the training-only dense per-type mask term (0: off)")
    ap.add_argument("--resume", action="store_true",
                    help="continue from the last checkpoint in --out (after an epoch, or inside "
                         "one with --checkpoint-steps / --stop-after-steps)")
    ap.add_argument("--checkpoint-steps", type=int, default=0, metavar="N",
                    help="also checkpoint every N steps inside an epoch, so a run stopped "
                         "mid-epoch (a session's end) resumes at that step, not at the epoch's "
                         "start; the same run either way, so not part of the recipe")
    ap.add_argument("--stop-after-steps", type=int, default=0, metavar="N",
                    help="end this invocation after N training steps with a checkpoint "
                         "(--resume goes on from there); not part of the recipe")
    ap.add_argument("--head", choices=PlateNet.HEADS, default="pooled",
                    help="pooled: class and type logits from pooled `last` features (to 1.6.0); "
                         "maps: both only from per-type maps at `last` (plan-1.3.md round 15)")
    ap.add_argument("--init", metavar="RUN",
                    help="start from the weights (network and training-only heads) of the "
                         "finished run RUN, with a fresh optimiser and learning-rate cycle: a "
                         "second round that continues a first one (plan-1.3.md, round 2)")
    ap.add_argument("--psp", default=D.pp.PSP_V1, choices=D.pp.PREPROCESSINGS,
                    help="the preprocessing of the cached splits to train on (the exported "
                         "model names it)")
    ap.add_argument("--style-aug", type=float, default=0.0, metavar="P",
                    help="restyle each training scene (and its twin alike) with probability P: "
                         "spatial vendor processing imitated on the cached tensor "
                         "(style.py; psp-v2 caches only)")
    ap.add_argument("--mixstyle", type=float, default=0.0, metavar="P",
                    help="with probability P per batch, mix the per-channel feature statistics "
                         "of `stem` and `early` across training families (MixStyle; needs a "
                         "list of splits with twins, whose pair ids tell the families apart)")
    amb = ap.add_mutually_exclusive_group()
    amb.add_argument("--drop-ambiguous", action="store_true",
                     help="leave out the unusable plates whose label the input cannot carry "
                          "(ambiguous.py; plan-1.3.md round 16); needs training splits with twins")
    amb.add_argument("--relabel-ambiguous", action="store_true",
                     help="teach those plates as usable, their global types at severity 1 "
                          "(plan-1.3.md round 17); needs training splits with twins")
    ap.add_argument("--out", default=str(HERE / "work" / "run"))
    ap.add_argument("--val-monitor", type=int, default=0,
                    help="per-epoch validation AUC on the first N validation plates only (0: all);"
                         " the threshold is always chosen on all of them")
    ap.add_argument("--rethreshold", metavar="RUN",
                    help="do not train: choose the threshold of the finished run RUN again for "
                         "--target-sens (what training with that value would have chosen; the "
                         "weights do not depend on it)")
    ap.add_argument("--threshold-val", default=None, metavar="SPLITS",
                    help="with --rethreshold: choose on these validation splits instead")
    ap.add_argument("--ambiguous", default=None, metavar="JSON",
                    help="with --threshold-val: leave out the ambiguous plates by these "
                         "thresholds (a round-16 run's ambiguous.json)")
    a = ap.parse_args(argv)
    if a.rethreshold:
        return rethreshold(Path(a.rethreshold), a.target_sens, a.threshold_val,
                           Path(a.ambiguous) if a.ambiguous else None)

    set_seed(a.seed, a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.mmap and (a.pool > 1 or a.drop_ambiguous or a.relabel_ambiguous):
        raise SystemExit("--pool and the ambiguous-plate options rewrite loaded plates: "
                         "not with --mmap")
    if (a.checkpoint_steps or a.stop_after_steps) and a.style_aug > 0:
        # style randomisation draws each batch's plan inside the batch stream, one batch ahead,
        # so the stream cannot be restarted at a step; whole epochs still resume
        raise SystemExit("--checkpoint-steps and --stop-after-steps: not with --style-aug")
    if a.pool > 1 and a.style_aug > 0:
        raise SystemExit("--style-aug works on full-size plates (their rectangles): not with --pool")
    tr = D.load_split(a.train, a.size, a.count, psp=a.psp, mmap=a.mmap)
    va = D.load_split(a.val, a.size, psp=a.psp)
    if a.drop_ambiguous or a.relabel_ambiguous:
        tr = handle_ambiguous(tr, a.train.split(","), out,
                              "drop" if a.drop_ambiguous else "relabel")
    # masks and per-type targets stay at full size: the attention and dense terms pool them to
    # the feature maps' size whatever the input's
    tr["x"] = D.pool_inputs(tr["x"], a.pool)
    va["x"] = D.pool_inputs(va["x"], a.pool)
    Xtr, Ytr, Ttr = tr["x"], tr["y"].astype(np.int64), tr["types"].astype(np.float32)
    Str = tr["sev"].astype(np.float32)
    Mtr = tr["mask"]
    TMtr = tr.get("tmask")
    pair = tr.get("pair")
    Rtr = tr.get("rect")
    if a.style_aug > 0 and a.psp != D.pp.PSP_V2:
        raise SystemExit("--style-aug restyles rank images: it needs --psp plateqc-psp-v2")
    if a.mixstyle > 0 and pair is None:
        raise SystemExit("--mixstyle needs caches with pair ids (twins) to tell families apart")
    family = pair // D.PAIR_STRIDE if pair is not None else None
    has_mask = Mtr.any(axis=1)
    print(f"train {len(Xtr)} plates (unusable {Ytr.mean():.3f}, with local masks "
          f"{has_mask.mean():.3f}); val {len(va['x'])}", flush=True)

    model = PlateNet(n_types=Ttr.shape[1], width=a.width, head=a.head,
                     extra_blocks=a.extra_blocks)
    # training-only ordinal severity layer over the pooled features (max + mean of ``last``)
    n_types = Ttr.shape[1]
    # (only created when used: its initialisation draws from the torch RNG, which also drives
    # dropout, so a run without it reproduces runs made before it existed)
    sev_head = torch.nn.Linear(2 * 8 * a.width, 2 * n_types) if a.sev_weight > 0 else None
    dense = (DenseHeads(a.width, n_types, model.type_map if a.head == "maps" else None)
             if a.dense_weight > 0 else None)
    if a.head == "maps" and dense is None:
        raise SystemExit("--head maps needs the dense term (--dense-weight > 0) to train its maps")
    if dense is not None and TMtr is None:
        raise SystemExit("--dense-weight needs a cache with per-type masks (tmask)")
    params = list(model.parameters())
    if sev_head is not None:
        params += list(sev_head.parameters())
    if dense is not None:
        params += list(dense.parameters())
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=1e-4)
    steps_per_epoch = math.ceil(len(Xtr) / a.batch)
    total = steps_per_epoch * a.epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, total_steps=total,
                                                pct_start=0.15)
    cw = torch.tensor([1.0, a.unusable_weight])
    # each type is on ~7.5 % of plates: weigh positives up (neg/pos, capped) so that the type
    # head does not settle on "absent"
    pos = Ttr.sum(0)
    pos_w = (torch.from_numpy(np.minimum(a.type_pos_weight_cap,
                                         (len(Ttr) - pos) / np.maximum(pos, 1.0))).float()
             if a.type_pos_weight_cap > 0 else None)   # cap 0: unweighted BCE
    rng = np.random.default_rng(a.seed)
    # MixStyle draws from its own stream, so a run with it sees the same batches and flips as
    # the run without it (round 12: T against R measures the mixing alone)
    mix_rng = np.random.default_rng(np.random.SeedSequence([a.seed, 0x3157]))
    t_start = time.time()
    history = []
    S = a.size
    first = 0
    skip = 0        # steps of epoch `first` a mid-epoch checkpoint has already taken
    partial: dict = {}
    ckpt = out / "checkpoint.pt"
    if a.resume and ckpt.exists():
        # everything a finished epoch (or step) leaves behind, so a killed run goes on exactly
        # as if it had not stopped (same batches, same dropout draws)
        c = torch.load(ckpt, weights_only=False)
        same = recipe_args(a)
        if c.get("args") != same:
            raise SystemExit(f"{ckpt} was written by a run with other arguments; "
                             "resume only the same command")
        model.load_state_dict(c["model"])
        opt.load_state_dict(c["opt"])
        sched.load_state_dict(c["sched"])
        for m, k in ((sev_head, "sev_head"), (dense, "dense")):
            if m is not None:
                m.load_state_dict(c[k])
        rng.bit_generator.state = c["rng"]
        if "mix_rng" in c:
            mix_rng.bit_generator.state = c["mix_rng"]
        torch.set_rng_state(c["torch_rng"])
        history, first = c["history"], c["epoch"] + 1
        t_start -= c["seconds"]
        if "step" in c:
            # written inside epoch c["epoch"]: go on at its next step
            first, skip = c["epoch"], c["step"]
            partial = {k: c[k] for k in ("rng", "epoch_rng", "tot", "epoch_seconds")}
            print(f"resumed in epoch {first} after its step {skip}", flush=True)
        else:
            print(f"resumed after epoch {c['epoch']}", flush=True)
    if a.init and first == 0 and not skip:
        # weights only: the new round draws its own batches and dropout from --seed
        c = torch.load(Path(a.init) / "checkpoint.pt", weights_only=False)
        init_from(model, sev_head, dense, c)
        print(f"initialised from {a.init} after its epoch {c['epoch']}", flush=True)
    steps_per_epoch = math.ceil(len(Xtr) / a.batch)
    mix = MixStyle(model, a.mixstyle)
    mix_hooks = mix.hooks() if a.mixstyle > 0 else []

    def save_checkpoint(ep: int, mid: dict | None = None):
        """Everything needed to go on as if the run had not stopped: after epoch `ep`, or with
        `mid` (step, epoch_rng, tot, epoch_seconds) inside it."""
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                    "sched": sched.state_dict(), "rng": rng.bit_generator.state,
                    **({"mix_rng": mix_rng.bit_generator.state} if a.mixstyle > 0 else {}),
                    "torch_rng": torch.get_rng_state(), "history": history, "epoch": ep,
                    "seconds": time.time() - t_start,
                    "args": recipe_args(a),
                    **({"sev_head": sev_head.state_dict()} if sev_head is not None else {}),
                    **({"dense": dense.state_dict()} if dense is not None else {}),
                    **(mid or {})},
                   out / "checkpoint.tmp.pt")
        (out / "checkpoint.tmp.pt").replace(ckpt)

    steps_run = 0   # in this invocation, for --stop-after-steps
    for ep in range(first, a.epochs):
        if ep > 0 and a.time_budget > 0 and time.time() - t_start > a.time_budget:
            print(f"time budget reached, stopping before epoch {ep}", flush=True)
            break
        model.train()
        t0 = time.time()
        if sev_head is not None:
            sev_head.train()
        tot = {"cls": 0.0, "typ": 0.0, "sev": 0.0, "attn": 0.0, "dense": 0.0, "n": 0}
        if dense is not None:
            dense.train()
        start = skip if ep == first else 0
        if start:
            rng.bit_generator.state = partial["epoch_rng"]
            tot = dict(partial["tot"])
            t0 -= partial["epoch_seconds"]
        epoch_rng = rng.bit_generator.state
        it = (pair_batches(pair, a.batch, rng) if pair is not None
              else batches(len(Xtr), a.batch, rng))
        if a.style_aug <= 0:
            # the epoch's batches drawn now: the permutation is the stream's first draw either
            # way, so this is the lazy order; listed, a mid-epoch resume can start at a step
            it = list(it)
            n_steps = len(it)
            if start:
                rng.bit_generator.state = partial["rng"]
            it = it[start:]
        stop_now = False
        for step, (b, xb) in enumerate(S_.styled(it, Xtr, Rtr, pair, a.style_aug, rng),
                                       start=start):
            x = torch.from_numpy(xb)
            y = torch.from_numpy(Ytr[b])
            t = torch.from_numpy(Ttr[b])
            sv = torch.from_numpy(Str[b])
            m = torch.from_numpy(D.unpack_masks(Mtr[b], S).astype(np.float32)).unsqueeze(1)
            # augmentation: random flips of the whole canvas (artifacts are position-free)
            tm = (torch.from_numpy(np.unpackbits(TMtr[b], axis=-1).reshape(
                len(b), n_types, D.TMASK, D.TMASK).astype(np.float32))
                if dense is not None else None)
            if a.mixstyle > 0:
                mix.draw(family[b], pair[b], mix_rng)
            if rng.random() < 0.5:
                x, m = x.flip(3), m.flip(3)
                tm = tm.flip(3) if tm is not None else None
            if rng.random() < 0.5:
                x, m = x.flip(2), m.flip(2)
                tm = tm.flip(2) if tm is not None else None
            cls, typ, feats = forward_with_feats(model, x)
            last = feats["last"]
            l_cls = F.cross_entropy(cls, y, weight=cw)
            l_typ = F.binary_cross_entropy_with_logits(typ, t, pos_weight=pos_w)
            loss = l_cls + l_typ
            l_sev = torch.zeros(())
            if a.sev_weight > 0:
                pooled = model.dropout(torch.cat([last.amax(dim=(2, 3)), last.mean(dim=(2, 3))],
                                                 dim=1))
                ordinal = torch.cat([(sv >= 2).float(), (sv >= 3).float()], dim=1)
                l_sev = F.binary_cross_entropy_with_logits(sev_head(pooled), ordinal)
                loss = loss + a.sev_weight * l_sev
            l_attn = torch.zeros(())
            sel = torch.from_numpy(has_mask[b]) & (y == 1)
            if a.attn_weight > 0 and bool(sel.any()):
                cam = cam_last(model, last[sel])                      # [k,h,w]
                mm = F.adaptive_max_pool2d(m[sel], cam.shape[-2:]).squeeze(1)  # any coverage
                z = cam.flatten(1)
                z = (z - z.mean(1, keepdim=True)) / (z.std(1, keepdim=True) + 1e-6)
                logp = torch.log_softmax(z * 2.0, dim=1)
                inside = torch.logsumexp(logp.masked_fill(mm.flatten(1) < 0.5, -1e4), dim=1)
                l_attn = -inside.mean()
                loss = loss + a.attn_weight * l_attn
            l_dense = torch.zeros(())
            if dense is not None:
                l_dense = dense.loss(feats, tm)
                loss = loss + a.dense_weight * l_dense
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            k = len(b)
            tot["cls"] += float(l_cls.detach()) * k
            tot["typ"] += float(l_typ.detach()) * k
            tot["sev"] += float(l_sev.detach()) * k
            tot["attn"] += float(l_attn.detach()) * k
            tot["dense"] += float(l_dense.detach()) * k
            tot["n"] += k
            if step % 50 == 0:
                print(f"ep {ep} step {step}/{steps_per_epoch} cls {float(l_cls):.4f} "
                      f"typ {float(l_typ):.4f} sev {float(l_sev):.4f} attn {float(l_attn):.4f} "
                      f"dense {float(l_dense):.4f} "
                      f"{time.time() - t0:.0f}s", flush=True)
            steps_run += 1
            stop_now = bool(a.stop_after_steps) and steps_run >= a.stop_after_steps
            due = stop_now or (a.checkpoint_steps and (step + 1) % a.checkpoint_steps == 0)
            if due and step + 1 < n_steps:   # (never with --style-aug: refused above)
                save_checkpoint(ep, {"step": step + 1, "epoch_rng": epoch_rng, "tot": tot,
                                     "epoch_seconds": time.time() - t0})
            if stop_now:
                break
        if stop_now and step + 1 < n_steps:
            print(f"stopped in epoch {ep} after step {step + 1} (--stop-after-steps); "
                  "--resume goes on from there", flush=True)
            return
        nmon = a.val_monitor or len(va["y"])
        pv, tv = predict(model, va["x"][:nmon])
        auc = roc_auc(va["y"][:nmon], pv)
        rec = {"epoch": ep, "seconds": time.time() - t0,
               **{k: tot[k] / tot["n"] for k in ("cls", "typ", "sev", "attn", "dense")},
               "val_auc": auc}
        history.append(rec)
        print(json.dumps(rec), flush=True)
        torch.save(model.state_dict(), out / "weights.pt")
        save_checkpoint(ep)
        if stop_now and ep + 1 < a.epochs:
            print(f"stopped after epoch {ep} (--stop-after-steps); --resume goes on from there",
                  flush=True)
            return

    for h in mix_hooks:
        h.remove()
    train_seconds = time.time() - t_start
    result = {
        "seed": a.seed, "size": a.size, "width": a.width, "psp": a.psp,
        "epochs_run": len(history),
        "train_plates": int(len(Xtr)), "val_plates": int(len(va["y"])),
        "train_seconds": train_seconds, "history": history,
        **threshold_fields(model, va, a.target_sens),
        "args": vars(a),
    }
    torch.save(model.state_dict(), out / "weights.pt")
    (out / "train_result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "history"}, indent=1))


if __name__ == "__main__":
    main()
