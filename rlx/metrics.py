"""The metric vocabulary (docs/design.md) and the functions that compute rollout metrics.

Names are fixed; an algorithm adds extras only under its own prefix (``dapo/gen_rounds``).
"""

from __future__ import annotations

import math
import resource
from collections import defaultdict

import torch

from rlx.ops import masked_var

VOCABULARY = {
    "reward/mean": "total shaped reward per sample",
    "reward/std": "std of the total reward over the step's samples",
    "reward/failures": "samples whose reward could not be computed (masked out of the update)",
    "score/mean": "task score before shaping (answer correct = 1)",
    "response_length/mean": "tokens per response (EOS included)",
    "response_length/max": "longest response",
    "response_length/min": "shortest response",
    "response_length/clip_ratio": "share of responses that hit the length limit without EOS",
    "policy/entropy": "token-mean entropy of the behaviour policy on the sampled responses (nats)",
    "policy/kl_ref": "KL(pi_theta || pi_ref) per token (algo.kl_estimator, default k3)",
    "policy/kl_old": "k3 KL(pi_old || pi_theta) per token: size of the step's update",
    "policy/clip_frac": "share of tokens whose clipped branch was active",
    "policy/clip_frac_low": "share with ratio < 1-eps_low and A < 0",
    "policy/clip_frac_high": "share with ratio > 1+eps_high and A > 0",
    "policy/ratio_max": "largest importance ratio over valid tokens",
    "policy/ratio_min": "smallest importance ratio over valid tokens",
    "loss/policy": "policy-gradient loss as optimised",
    "loss/kl": "beta * KL loss term",
    "loss/entropy": "entropy bonus term",
    "loss/value": "critic loss",
    "loss/total": "the loss back-propagated",
    "adv/mean": "advantage mean over valid tokens",
    "adv/std": "advantage std over valid tokens",
    "adv/max": "largest advantage",
    "adv/min": "smallest advantage",
    "rollout/logp_diff": "mean |engine - trainer old log-prob| over response tokens (engine log-probs recorded)",
    "rollout/logp_diff_max": "largest |engine - trainer old log-prob| over response tokens",
    "rollout/is_weight_mean": "mean truncated importance weight min(pi_old/pi_engine, is_cap) (rollout.is_correction)",
    "rollout/is_clip_frac": "share of response tokens whose importance weight hit rollout.is_cap",
    "groups/frac_zero_std": "share of prompt groups whose rewards are all equal",
    "groups/kept_frac": "share of generated groups kept for the update (dynamic sampling)",
    "optim/lr": "learning rate",
    "optim/grad_norm": "global gradient norm before clipping",
    "perf/step_s": "wall seconds per step",
    "perf/gen_s": "seconds generating",
    "perf/train_s": "seconds in forward/backward/optimizer",
    "perf/tokens_per_s": "generated tokens per second of generation",
    "perf/peak_mem_gb": "peak resident memory (CPU) or allocated memory (GPU), GB",
    "perf/compile_s": "seconds torch.compile spent compiling during the step (hardware.compile; 0 when off)",
    "health/skipped_steps": "updates skipped because a loss, gradient or reward was not finite",
    "episode/turns_mean": "policy turns per episode (multi-turn envs)",
    "episode/tokens_mean": "tokens per episode after the prompt: turns and observations",
    "episode/truncated_frac": "share of episodes cut by env.max_turns or a turn without EOS",
    "tool/calls_mean": "tool calls per episode (calculator calls, guesses)",
    "tool/errors": "malformed tool calls this step (each ends its episode)",
    "env/failures": "episodes ended by a failure: the env raised, timed out, a malformed call, or the context limit",
    "eval/<ds>/accuracy": "greedy held-out accuracy over the samples the reward could score",
    "eval/<ds>/failures": "held-out samples the reward could not score (left out of accuracy)",
}


def rollout_metrics(rewards, scores, terms, failed, response_mask, truncated, group_size) -> dict:
    """Reward, score, length and group metrics of one step's samples (before filtering)."""
    r = torch.tensor(rewards, dtype=torch.float64)
    ok = ~torch.tensor(failed)
    lengths = response_mask.sum(-1).double()
    m = {
        "reward/mean": r[ok].mean().item() if ok.any() else math.nan,
        "reward/std": r[ok].std().item() if ok.sum() > 1 else 0.0,
        "reward/failures": float((~ok).sum()),
        "score/mean": float(torch.tensor(scores, dtype=torch.float64)[ok].mean()) if ok.any() else math.nan,
        "response_length/mean": lengths.mean().item(),
        "response_length/max": lengths.max().item(),
        "response_length/min": lengths.min().item(),
        "response_length/clip_ratio": truncated.double().mean().item(),
    }
    for name, vals in terms.items():
        v = torch.tensor(vals, dtype=torch.float64)
        m[f"reward/{name}/mean"] = v[ok].mean().item() if ok.any() else math.nan
    if group_size > 1:
        g = r.view(-1, group_size)
        m["groups/frac_zero_std"] = ((g.max(-1).values - g.min(-1).values) == 0).double().mean().item()
    return m


def advantage_metrics(adv: torch.Tensor, mask: torch.Tensor) -> dict:
    if not mask.any():
        return {}
    valid = adv[mask]
    return {"adv/mean": valid.mean().item(), "adv/std": valid.std().item() if valid.numel() > 1 else 0.0,
            "adv/max": valid.max().item(), "adv/min": valid.min().item()}


def peak_mem_gb() -> float:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


class MetricAccumulator:
    """Combines per-micro-batch metrics: extremes by max/min, loss terms summed within a mini-batch
    (micro losses add up to the mini-batch loss) and averaged over mini-batches, the rest
    weighted by valid-token count."""

    def __init__(self):
        self.sums, self.weights, self.ext = defaultdict(float), defaultdict(float), {}
        self.loss_now, self.loss_all = defaultdict(float), defaultdict(list)

    def add(self, metrics: dict, weight: float) -> None:
        for k, v in metrics.items():
            v = float(v)
            if k.endswith("_max"):
                self.ext[k] = max(self.ext.get(k, -math.inf), v)
            elif k.endswith("_min"):
                self.ext[k] = min(self.ext.get(k, math.inf), v)
            elif k.startswith("loss/"):
                self.loss_now[k] += v
            else:
                self.sums[k] += v * weight
                self.weights[k] += weight

    def end_minibatch(self) -> None:
        for k, v in self.loss_now.items():
            self.loss_all[k].append(v)
        self.loss_now = defaultdict(float)

    def result(self, dist=None) -> dict:
        """The step's metrics; with ``dist`` (rlx.runtime.dist.Dist) combined over ranks first."""
        sums, weights, ext = dict(self.sums), dict(self.weights), dict(self.ext)
        losses = {k: sum(v) / len(v) for k, v in self.loss_all.items() if v}
        if dist is not None:
            sums, weights, ext, losses = dist.reduce_metrics(sums, weights, ext, losses)
        out = {k: sums[k] / weights[k] for k in sums if weights[k] > 0}
        out.update(ext)
        out.update(losses)
        return out


def merged_rollout_metrics(raws: list[dict], group_size: int) -> dict:
    """Rollout metrics over every sample generated this step (all rounds, before filtering)."""
    def cat(k):
        return [v for r in raws for v in r[k]]

    T = max(r["response_mask"].shape[1] for r in raws)
    mask = torch.cat([torch.cat([r["response_mask"], r["response_mask"].new_zeros(
        (r["response_mask"].shape[0], T - r["response_mask"].shape[1]))], 1) for r in raws])
    terms = {name: [v for r in raws for v in r["terms"][name]] for name in raws[0]["terms"]}
    m = rollout_metrics(cat("total"), cat("score"), terms, cat("failed"), mask,
                        torch.cat([r["truncated"] for r in raws]), group_size)
    m["perf/tokens_per_s"] = sum(r["gen_tokens"] for r in raws) / max(sum(r["gen_s"] for r in raws), 1e-9)
    for k in raws[0]["shape_metrics"]:
        m[k] = sum(float(r["shape_metrics"][k]) for r in raws) / len(raws)
    return m


def merged_extra_metrics(parts: list[dict | None]) -> dict:
    """The extra metrics (``Rollout.extra_metrics``) of several generation rounds: means and shares averaged, counts summed."""
    parts = [p for p in parts if p]
    if not parts:
        return {}
    return {k: (sum(p[k] for p in parts) / len(parts) if k.endswith(("_mean", "_frac")) else sum(p[k] for p in parts))
            for k in parts[0]}


def explained_variance(values, returns, response_mask) -> float:
    """1 − Var(R̂ − V)/Var(R̂) over valid tokens (1 = perfect critic, 0 = no better than a constant)."""
    var_r = masked_var(returns, response_mask)
    if var_r <= 0:
        return 0.0
    return float(1 - masked_var(returns - values, response_mask) / var_r)
