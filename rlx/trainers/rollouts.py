"""Steps 1-3 of the online loop (rlx/trainers/online.py): generation rounds, scoring, the groups and samples the
algorithm keeps, as one ``Batch``.

Random streams: every prompt of a round has its own (rlx/rollout/streams.py), keyed by (seed, step, round, its
place in the round), so its samples do not depend on the batch around it. Sharded rollouts (``rollout.shard``,
on by default; docs/distributed.md): under torchrun each rank generates and scores only its B/world prompts of a
round (whole groups: a group never spans ranks), then the ranks exchange their rollouts (one all-gather of the
tokens, masks and rewards), so that everything that reads the batch as a whole (group filters, dynamic
sampling's counts, REINFORCE++'s whitening, the metrics) sees the single process's batch; the log-prob passes
are sharded the same way (``OnlineTrainer.reference_logprobs``). A multi-turn env generates the whole batch on
every rank (its episodes draw from torch's global generator), as does an algorithm whose sampler reads the
whole batch (``PolicyAlgorithm.shards_rollouts`` False: EEPO's entropy gate and forgetting step).
"""

from __future__ import annotations

import itertools
import time

import torch

from rlx.batch import Batch, concat_batches, token_reward_matrix
from rlx.metrics import merged_extra_metrics, merged_rollout_metrics
from rlx.rollout import streams
from rlx.rollout.base import Sampler, concat_rollouts


def gather_scored(dist, out, scored: dict, pad_id: int):
    """(the ranks' rollouts as one, their scores as one), in rank order: one ``all_gather_object`` of this rank's
    rollout (on the CPU) and reward dict (lists, and dicts of lists, concatenated)."""
    fields = {k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in vars(out).items()}
    parts = dist.all_gather_object((fields, scored))
    device = out.prompt_ids.device
    merged = concat_rollouts([type(out)(**f) for f, _ in parts], pad_id)
    for k, v in vars(merged).items():
        if isinstance(v, torch.Tensor):
            setattr(merged, k, v.to(device))
    return merged, _concat_scores([s for _, s in parts])


def _concat_scores(parts: list[dict]) -> dict:
    out = {}
    for k, v in parts[0].items():
        if isinstance(v, dict):
            out[k] = _concat_scores([p[k] for p in parts])
        elif isinstance(v, list):
            out[k] = [x for p in parts for x in p[k]]
        else:
            raise TypeError(f"reward score field '{k}' is a {type(v).__name__}, not a list: cannot join ranks")
    return out


class RolloutRounds:
    """The online trainer's rollout (a mixin of ``OnlineTrainer``: it reads the trainer's data, engine, reward,
    algorithm and ``dist``)."""

    @property
    def sharded(self) -> bool:
        """Whether this rank generates only its share of each round (``rollout.shard`` under torchrun)."""
        return (self.dist.enabled and bool(self.cfg.rollout.get("shard", True)) and self.episodes is None
                and self.algo.shards_rollouts)

    def _sampler(self, records: list[dict], keys: list[int]) -> Sampler:
        """The ``Sampler`` of one generation round over ``records``: each call samples from the records' own
        random streams (``keys``), a fresh stream per call (EEPO samples a record twice); a record the round did
        not hand out samples from torch's global generator."""
        by_id, calls = {id(r): k for r, k in zip(records, keys)}, itertools.count()

        def generate(recs: list[dict], n: int):
            call, ks = next(calls), [by_id.get(id(r)) for r in recs]
            ks = None if None in ks else [streams.call_key(k, call) for k in ks]
            return self.sample(recs, n=n, keys=ks)

        return Sampler(generate=generate, model=self.model, autocast=self.autocast, tokenizer=self.tok)

    # ------------------------------------------------------------------ 1-3
    def rollout(self) -> tuple[Batch, dict, dict]:
        """(batch, rollout metrics, selection metrics): generation rounds of B prompts until ``keep`` has
        accepted B groups; one round unless the algorithm asks for more (``gen_rounds``: dynamic sampling
        refills the batch)."""
        B, G = self.cfg.data.prompts_per_step, self.algo.group_size
        rounds, n_pass, n_kept, n_groups, n_retried, n_retried_kept = [], 0, 0, 0, 0, 0
        max_rounds = self.algo.gen_rounds()
        retry = None   # records the algorithm generates again instead of fresh prompts (GHPO's hinted prompts)
        for round_ in range(max(1, max_rounds)):
            batch, raw, keep, records = self._generate_round(B, G, retry, round_)
            n_pass += int(keep.sum())
            n_groups += len(records)
            if retry is not None:
                n_retried, n_retried_kept = n_retried + len(records), n_retried_kept + int(keep.sum())
            keep = keep & (keep.cumsum(0) <= B - n_kept)   # never more than B groups
            n_kept += int(keep.sum())
            rounds.append((batch, raw, keep))
            if n_kept >= B:
                break
            retry = self.algo.retry_records(records, keep)
            if retry is not None and not retry:   # nothing to retry: the batch stays partly filled
                break
        metrics = merged_rollout_metrics([r[1] for r in rounds], G)
        metrics.update(merged_extra_metrics([r[1]["extra_metrics"] for r in rounds]))
        metrics["groups/kept_frac"] = n_pass / n_groups
        metrics["perf/rollout_samples_per_rank"] = float(sum(r[1]["local_samples"] for r in rounds))
        if max_rounds > 1:
            metrics[f"{self.algo.name}/gen_rounds"] = float(len(rounds))
            metrics[f"{self.algo.name}/batch_fill"] = n_kept / B
        if self.algo.retries:   # GHPO: how many groups were retried
            metrics[f"{self.algo.name}/retried_groups"] = float(n_retried)
            metrics[f"{self.algo.name}/retried_kept"] = float(n_retried_kept)
        parts, select_metrics = [], {}
        for batch, raw, keep in rounds:
            samples, select_metrics = self.algo.keep_samples(raw["rewards"].view(-1, G))
            rows = keep.repeat_interleave(G) & samples.reshape(-1)
            parts.append(batch if rows.all() else self._select(batch, rows))
        return concat_batches(parts, self.tok.pad_token_id), metrics, select_metrics

    def _generate_round(self, B: int, G: int, retry: list[dict] | None, round_: int = 0):
        """(batch [n·G], raw rollout data for the metrics, keep [n], the n records): the records the algorithm
        asked to generate again (``retry``), else (None) B fresh prompts. With sharded rollouts this rank
        generates and scores its contiguous share of the records, and the ranks' shares are gathered (in rank
        order, so the batch is the single process's) before anything reads the batch as a whole."""
        if retry is None:
            retry = self.data.train_batch(self.cursor, B)
            self.cursor += B
        records = retry
        keys = streams.prompt_keys(self.cfg.seed, self.step, round_, len(records))
        sharded = self.sharded and len(records) % self.dist.world == 0   # a short retry round: every rank, whole
        share = self.dist.share(len(records)) if sharded else slice(None)
        local = records[share]
        t0 = time.perf_counter()
        # completions (one call, or the algorithm's own schedule: EEPO), or whole episodes with a multi-turn env
        # (independent, or a tree the algorithm grows)
        if self.episodes:   # an episode's first turn from its record's stream (EpisodeRunner.run)
            self.episodes.round_keys = {id(r): k for r, k in zip(local, keys[share])}
            try:
                out = self.algo.sample_episodes(self.episodes, local, G)
            finally:   # ids of this round's records must not key a later round's
                self.episodes.round_keys = {}
        else:
            out = self.algo.sample_completions(self._sampler(local, keys[share]), local, G)
        gen_s = time.perf_counter() - t0
        fields = self.reward_fields(local, out, G, train=True)   # no data fields for label-free algorithms
        scored = self.reward.score([r["prompt"] for r in local for _ in range(G)], out.texts, **fields)
        n_local = len(out.texts)
        if sharded:
            out, scored = gather_scored(self.dist, out, scored, self.tok.pad_token_id)
        prompts = [r["prompt"] for r in records for _ in range(G)]
        if out.reward_scale is not None:   # an episode's factor on its reward (env=retry's per-turn discount)
            scored["total"] = [t * float(f) for t, f in zip(scored["total"], out.reward_scale)]
        self.last_scored = (prompts, out.texts, scored)   # for Trainer.record_samples (rlx.track.samples)
        # rewards and their bookkeeping live on the CPU (the reward functions return Python numbers); the engine's
        # masks come from the generation device, so they are brought over once here (a no-op on a CPU run)
        gen_mask, truncated = out.response_mask.cpu(), out.truncated.cpu()
        shaped, shape_metrics = self.algo.shape_rewards(torch.tensor(scored["total"], dtype=torch.float32),
                                                        gen_mask, self.cfg.rollout.max_new_tokens)
        scored["total"] = shaped.tolist()
        raw = dict(scored, response_mask=gen_mask, truncated=truncated, gen_s=gen_s,
                   gen_tokens=out.gen_tokens, shape_metrics=shape_metrics, extra_metrics=out.extra_metrics,
                   local_samples=n_local)
        rewards = shaped.clone()
        failed = torch.tensor(scored["failed"])
        resp_mask = gen_mask & ~failed.unsqueeze(-1)   # unscorable samples never train
        if failed.any():
            g = rewards.view(-1, G)
            fill = torch.nanmean(g, -1, keepdim=True).nan_to_num(0.0).expand_as(g).reshape(-1)
            rewards = torch.where(failed, fill, rewards)
        ids = torch.cat([out.prompt_ids, out.completion_ids], 1)
        am = torch.cat([out.prompt_mask, (out.attention if out.attention is not None else out.response_mask.long())], 1)
        batch = Batch(ids.to(self.device), am.to(self.device), resp_mask.to(self.device), rewards.to(self.device))
        batch.token_rewards = token_reward_matrix(scored.get("token_rewards"), batch.T, self.device)   # reward=prm
        if out.turn is not None:
            batch.turn, batch.turn_state = out.turn.to(self.device), out.turn_state.to(self.device)
        if out.tree is not None:
            batch.tree = out.tree.to(self.device)
        if out.engine_logp is not None:
            batch.engine_logp = out.engine_logp.to(self.device)
        if "greedy_baseline" in self.algo.requires:
            batch.greedy_rewards = self._greedy_rewards(records, G)
        raw["rewards"] = rewards
        return batch, raw, self.algo.keep(rewards.view(-1, G)), records

    def _greedy_rewards(self, records: list[dict], G: int) -> torch.Tensor:
        """Total reward [B*G] of one greedy decode per prompt, repeated for its G samples (NaN = unscorable)."""
        prompts = [r["prompt"] for r in records]
        out = self.sample(records, n=1, greedy=True)
        fields = self.reward_fields(records, out, 1, train=True)   # the training reward's fields (completion_ids, ...)
        total = self.reward.score(prompts, out.texts, **fields)["total"]
        return torch.tensor(total, dtype=torch.float32).repeat_interleave(G).to(self.device)

    @staticmethod
    def _select(batch: Batch, rows: torch.Tensor) -> Batch:
        return Batch(**{k: (v[rows] if isinstance(v, torch.Tensor) else v) for k, v in vars(batch).items()})

