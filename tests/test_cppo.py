"""CPPO (rlx/algos/cppo.py): the kept rows of two groups by hand, k per pruning rate, zero advantages and failed
samples, the masked update against GRPO on the kept rows alone, a step where everything is pruned through the
online loop's own code, and the preset."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from conftest import algo_batch, loss_inputs
from omegaconf import OmegaConf

import rlx
from rlx.algos.cppo import CPPO, kept_per_group, prune_completions
from rlx.batch import Batch
from rlx.config import ConfigError
from rlx.runtime.dist import Dist
from rlx.trainers.online import OnlineTrainer

T_, F_ = True, False
EPS = 1e-4


def cppo(*overrides, **keys):
    """The preset's algorithm (command-line ``overrides``), with ``keys`` set on the built node (group sizes the
    default batch units would refuse)."""
    return rlx.build("algo", OmegaConf.merge(rlx.compose(["algo=cppo", *overrides]).algo, keys))


def test_kept_rows_of_two_groups_by_hand():
    # G = 4, P = 0.5 → k = 4 − ⌊2⌋ = 2 kept per group.
    # group 0: r [1, 0, 0, 0], mean 0.25, unbiased std sqrt((0.5625 + 3·0.0625)/3) = 0.5
    #          A = [0.75, −0.25, −0.25, −0.25]/0.5 = [1.5, −0.5, −0.5, −0.5] → |A| top 2: row 0, then row 1 (first tie)
    # group 1: r [0, 1, 2, 3], mean 1.5, std sqrt(5/3) = 1.2910, A ∝ [−1.5, −0.5, 0.5, 1.5] → rows 0 and 3
    a = cppo(group_size=4, pruning_rate=0.5)
    mask = torch.ones(8, 2, dtype=torch.bool)
    batch = algo_batch(torch.tensor([1.0, 0, 0, 0, 0, 1, 2, 3]), mask)
    adv, m = a.advantages(batch)
    kept = [T_, T_, F_, F_, T_, F_, F_, T_]
    assert batch.response_mask.any(-1).tolist() == kept            # pruned rows are out of the update
    s1 = (5 / 3) ** 0.5
    want = torch.tensor([1.5 * 0.5 / (0.5 + EPS), -0.5 * 0.5 / (0.5 + EPS), 0, 0, -1.5 / (s1 + EPS), 0, 0,
                         1.5 / (s1 + EPS)])
    torch.testing.assert_close(adv[:, 0], want, rtol=1e-5, atol=1e-6)
    assert m == {"cppo/pruned_frac": 0.5}                           # 4 of the 8 scored completions


def test_k_per_pruning_rate():
    # the paper's G = 16: P = 0.5, 0.75, 0.875, 0.9375 → k = 8, 4, 2, 1; the preset's G = 16, P = 0.875 → 2
    assert [kept_per_group(16, p) for p in (0.0, 0.5, 0.75, 0.875, 0.9375)] == [16, 8, 4, 2, 1]
    assert kept_per_group(8, 0.875) == 1 and kept_per_group(cppo().group_size, cppo().pruning_rate) == 2


def test_zero_advantages_and_failed_samples():
    # r [1, 0, 2, 1]: A ∝ [0, −1, 1, 0]; P = 0.25 → k = 3: rows 1, 2 (|A| = 1), then row 0 (first of the zeros).
    # prune_zero_advantage drops row 0 as well: it has no policy-gradient signal
    adv, valid = torch.tensor([0.0, -1.0, 1.0, 0.0]), torch.ones(4, dtype=torch.bool)
    assert prune_completions(adv, valid, 4, 0.25, prune_zero=False).tolist() == [T_, T_, T_, F_]
    assert prune_completions(adv, valid, 4, 0.25, prune_zero=True).tolist() == [F_, T_, T_, F_]
    # a failed sample (no valid token) ranks last even among zeros and is never kept
    adv, valid = torch.tensor([0.0, 0.0, 1.0, -1.0]), torch.tensor([F_, T_, T_, T_])
    assert prune_completions(adv, valid, 4, 0.25, prune_zero=False).tolist() == [F_, T_, T_, T_]


def test_keep_drops_the_groups_with_no_signal_only_with_prune_zero_advantage():
    rewards = torch.tensor([[1.0, 1, 1, 1], [0.0, 0, 0, 0], [1.0, 0, 0, 0]])
    assert cppo(group_size=4, prune_zero_advantage=True).keep(rewards).tolist() == [F_, F_, T_]
    assert cppo(group_size=4).keep(rewards).all()                      # the paper's top-k: every group stays
    # and through advantages: the paper's top-k keeps k zero-advantage rows of a uniform group (P = 0.5, k = 2)
    batch = algo_batch(torch.tensor([1.0, 1, 1, 1]), torch.ones(4, 1, dtype=torch.bool))
    adv, m = cppo(group_size=4, pruning_rate=0.5).advantages(batch)
    assert batch.response_mask[:, 0].tolist() == [T_, T_, F_, F_] and adv.abs().max().item() == 0.0


def test_the_masked_update_is_grpo_on_the_kept_rows_alone():
    # the pruned rows stay in the batch with an all-False mask: the loss and the kept rows' gradient must equal
    # GRPO's loss on a batch that holds only the kept rows (same advantages), for every aggregation
    g = torch.Generator().manual_seed(0)
    old = -torch.rand(8, 3, generator=g)
    logp0 = old + 0.2 * torch.randn(8, 3, generator=g)
    ref = old + 0.1 * torch.randn(8, 3, generator=g)
    for agg in ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum"):
        a = cppo(group_size=4, pruning_rate=0.5, loss_agg_mode=agg)
        batch = algo_batch(torch.tensor([1.0, 0, 0, 0, 0, 1, 2, 3]), torch.ones(8, 3, dtype=torch.bool))
        adv, _ = a.advantages(batch)
        rows = torch.tensor([T_, T_, F_, F_, T_, F_, F_, T_])               # the kept rows of the by-hand test
        logp = logp0.clone().requires_grad_(True)
        loss, _ = a.loss(logp, loss_inputs(old, adv, batch.response_mask, ref_logp=ref))
        loss.backward()
        sub = logp0[rows].clone().requires_grad_(True)
        want, _ = a.loss(sub, loss_inputs(old[rows], adv[rows], batch.response_mask[rows], ref_logp=ref[rows]))
        want.backward()
        assert loss.item() == pytest.approx(want.item(), rel=1e-6), agg
        torch.testing.assert_close(logp.grad[rows], sub.grad)
        assert logp.grad[~rows].abs().max().item() == 0.0                   # the pruned rows get no gradient


def _stub_loop(algo, rewards, G, T=2):
    """The online loop's own ``train_step`` and ``rollout`` on a stub trainer whose generation round returns
    ``rewards`` (one round of B = len(rewards)/G prompts); no model: a step that reaches the update fails."""
    n = len(rewards)
    mask = torch.ones(n, T, dtype=torch.bool)

    def generate_round(B, G_, retry, round_=0):
        batch = Batch(torch.zeros(n, 1 + T, dtype=torch.long), torch.ones(n, 1 + T, dtype=torch.long), mask, rewards)
        raw = dict(total=rewards.tolist(), score=rewards.tolist(), terms={}, failed=[False] * n, response_mask=mask,
                   truncated=torch.zeros(n, dtype=torch.bool), gen_s=1.0, gen_tokens=n * T, shape_metrics={},
                   extra_metrics=None, rewards=rewards, local_samples=n)
        return batch, raw, algo.keep(rewards.view(-1, G)), [{}] * (n // G)

    lr_steps = []
    stub = SimpleNamespace(cfg=OmegaConf.create({"data": {"prompts_per_step": n // G}}), algo=algo, ref=None, step=1,
                           dist=Dist(),
                           tok=SimpleNamespace(pad_token_id=0), _generate_round=generate_round,
                           _select=OnlineTrainer._select,
                           sched=SimpleNamespace(step=lambda: lr_steps.append(1), get_last_lr=lambda: [1e-4]))
    stub.rollout = lambda: OnlineTrainer.rollout(stub)
    return stub, lr_steps


def test_a_step_where_everything_is_pruned_ends_cleanly_and_is_counted():
    # with prune_zero_advantage, two groups whose rewards are all equal: every advantage is 0, every completion
    # pruned. The loop's step ends without an update (the stub has no model: an update would raise), the
    # scheduler still steps, and the step is logged with groups/kept_frac = 0 and a zero loss
    a = cppo(group_size=4, prune_zero_advantage=True)
    stub, lr_steps = _stub_loop(a, torch.tensor([1.0, 1, 1, 1, 0, 0, 0, 0]), 4)
    m = OnlineTrainer.train_step(stub)
    assert lr_steps == [1] and m["groups/kept_frac"] == 0.0 and m["groups/frac_zero_std"] == 1.0
    assert m["loss/total"] == 0.0 and m["optim/grad_norm"] == 0.0 and m["perf/train_s"] == 0.0
    # one group with signal: the same loop keeps it whole for the advantages (the pruning happens there)
    stub, _ = _stub_loop(a, torch.tensor([1.0, 1, 1, 1, 1, 0, 0, 0]), 4)
    batch, metrics, _ = OnlineTrainer.rollout(stub)
    assert len(batch) == 4 and metrics["groups/kept_frac"] == 0.5
    adv, m = a.advantages(batch)                                       # P = 0.875, G = 4 → k = 4 − 3 = 1
    assert batch.response_mask.any(-1).tolist() == [T_, F_, F_, F_] and m == {"cppo/pruned_frac": 0.75}


def test_preset_composes_and_builds():
    a = cppo()
    assert isinstance(a, CPPO) and (a.group_size, a.pruning_rate, a.prune_zero_advantage) == (16, 0.875, False)
    assert a.beta == 0.04 and "ref_logp" in a.requires


def test_unknown_key_names_the_closest():
    with pytest.raises(ConfigError) as e:
        rlx.compose(["algo=cppo", "algo.pruning_rat=0.5"])
    first = str(e.value).splitlines()[0]
    assert "'algo.pruning_rat'" in first and "did you mean 'algo.pruning_rate'" in first, first


@pytest.mark.parametrize("value", [1.0, -0.1])
def test_bad_pruning_rate_names_the_key(value):
    with pytest.raises(ConfigError, match=f"algo.pruning_rate={value}: must be in"):
        cppo(f"algo.pruning_rate={value}")
