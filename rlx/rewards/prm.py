"""A process reward model as a token-level reward term (``reward=prm reward.path=<dir>``): the PRM saved by
``algo=prm`` scores every step of a completion in one forward pass, and each step's reward is placed at the
step's end token — the reward at the end of each step of Math-Shepherd's step-by-step PPO (Wang et al. 2024,
arXiv:2312.08935), instead of one score at the last token.

The completion is split at the delimiters the PRM was trained with (its info file; data=sums_prm: ``;`` and
``>``), on the policy's own completion ids (``completion_ids``, passed by the trainer), so the rewards line up with
the policy's tokens; the PRM must share the policy's tokenizer (algo=prm trains a head on the policy's
backbone), which is checked by decoding. From the step probability p_k = σ(z_k) (``step_reward``):

    clip       r_k = min(p_k − η, 0)      Gao et al. 2024, arXiv:2410.15115 (the Clip mechanism): a step the PRM
                                          doubts is penalised, a good one earns nothing, so writing more correct
                                          steps cannot pile up reward (their reward hacking of PRM rewards)
    log_prob   r_k = log p_k              Σ_k r_k = log Π_k p_k, the log of the PRM's solution score of Lightman
                                          et al. 2023 (arXiv:2305.20050 §2.6); also never positive, unbounded below

The term returns, per completion, a list of per-token rewards (0 off the step ends) as long as its completion
ids: a token-level term (``token_level``). The composite reward (rlx/rewards/composite.py) logs their sum as
``reward/prm/mean`` and hands the weighted lists to the trainer as ``Batch.token_rewards``, which PPO and
REINFORCE++ add to their token rewards beside the outcome term's score at the last token.
"""

from __future__ import annotations

import torch

from rlx.models.prm_head import encode, load_prm, step_ends, step_logits
from rlx.registry import REWARDS


def clip_reward(z: torch.Tensor, eta: float) -> torch.Tensor:
    """min(σ(z) − η, 0) per step (Gao et al. 2024, Clip)."""
    return (torch.sigmoid(z) - eta).clamp(max=0.0)


def log_prob_reward(z: torch.Tensor, eta: float) -> torch.Tensor:
    """log σ(z) per step (the log of Lightman et al.'s product score, step by step); ``eta`` unused."""
    return torch.nn.functional.logsigmoid(z)


#: ``step_reward`` choices: per-step reward from the step logits z
STEP_REWARDS = {"clip": clip_reward, "log_prob": log_prob_reward}


def place(values: list[float], ends: list[int], length: int) -> list[float]:
    """Per-token rewards [length]: ``values[k]`` at token ``ends[k]``, 0 elsewhere."""
    out = [0.0] * length
    for v, j in zip(values, ends):
        out[j] = v
    return out


@REWARDS.register("prm")
def build_prm_reward(cfg):
    if not cfg.get("path"):
        raise ValueError("reward=prm needs reward.path=<dir>: a run dir of algo=prm (or its model/ subdir)")
    form = cfg.get("step_reward", "clip")
    if form not in STEP_REWARDS:
        raise ValueError(f"reward.terms.prm.step_reward={form}: valid: {', '.join(STEP_REWARDS)}")
    eta = float(cfg.get("eta", 0.5))
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"reward.terms.prm.eta={eta}: must be in [0, 1] (a threshold on a probability)")
    model, tok, delimiters = load_prm(cfg.path)
    device = torch.device(cfg.get("device") or "cpu")
    model.to(device).eval()
    batch, reward_of, texts = int(cfg.get("batch_size", 64)), STEP_REWARDS[form], {}

    def ids_of(completions, completion_ids):
        if completion_ids is None:   # a call without the policy's ids: tokenise as the rollout would, with EOS
            return [tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for c in completions]
        for c, ids in zip(completions, completion_ids):
            if tok.decode(ids, skip_special_tokens=True).strip() != c.strip():
                raise ValueError("the PRM's tokenizer does not decode the policy's completion ids to its text: "
                                 "reward=prm needs a PRM trained (algo=prm) on the policy's tokenizer")
        return [list(ids) for ids in completion_ids]

    @torch.no_grad()
    def prm(prompts, completions, completion_ids=None, **fields) -> list[list[float]]:
        """Per-token rewards of each completion: r_k at step k's end token, 0 elsewhere."""
        all_ids, out = ids_of(completions, completion_ids), []
        for i in range(0, len(all_ids), batch):
            chunk = all_ids[i:i + batch]
            ends = [step_ends(tok, ids, delimiters, texts) for ids in chunk]
            ids, am, T = encode(tok, prompts[i:i + batch], chunk, device)
            z, _ = step_logits(model, ids, am, T, ends)
            r = reward_of(z.float(), eta).cpu()
            out += [place(r[j, :len(e)].tolist(), e, len(c)) for j, (e, c) in enumerate(zip(ends, chunk))]
        return out

    return prm


build_prm_reward.token_level = True   # returns per-token lists (rlx/rewards/composite.py), not one number
