"""Multi-turn episodes: the policy and an environment (rlx/envs) take turns until the episode ends.

One call runs n episodes per record, all turns batched: turn k generates for every episode still going, from
its whole context (prompt, earlier turns, observations), then each episode's environment answers. The result
is one ``Rollout`` whose response columns lay out every turn and every observation in order:

    prompt | turn 1 (policy, EOS) | observation 1 | turn 2 (policy, EOS) | ...

``response_mask`` is True on the policy's tokens only, so observation tokens are context without gradient,
ratio, KL or entropy; ``attention`` is 1 on both. ``texts`` are the final turns, which the reward scores.

An episode ends when the environment returns no observation (the turn was its answer), after
``env.max_turns`` turns (truncated), when a turn hits ``rollout.max_new_tokens`` without EOS (truncated), or on
a failure, counted in ``env/failures``: the environment raised or did not answer within
``env.tool_timeout_s`` (a malformed tool call raises ``EnvError``), or an observation would push the context
past ``env.max_context_tokens``. A failed episode is scored like any other on its last turn.

``fork`` copies an episode at a turn boundary (its environment state included), for tree rollouts.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from rlx.envs.base import call_with_timeout, state_hash
from rlx.rollout.base import Rollout


@dataclass
class Trajectory:
    """One episode in progress: the prompt's ids and the (ids, is_policy) segments after it."""

    episode: object
    prompt_ids: list[int]
    segments: list = field(default_factory=list)   # [(ids, is_policy, engine log-probs or None)]
    states: list = field(default_factory=list)     # state hash before each policy turn
    snapshots: list = field(default_factory=list)  # the episode before each policy turn (tree rollouts fork here)
    text: str = ""                                 # the last policy turn, decoded
    turns: int = 0
    done: bool = False
    truncated: bool = False                        # ended without an accepted answer: out of turns, or cut
    cut: bool = False                              # a turn hit rollout.max_new_tokens without EOS
    failure: str | None = None

    def context(self) -> list[int]:
        return self.prompt_ids + [t for s in self.segments for t in s[0]]


def fork(tr: Trajectory, turn: int) -> Trajectory:
    """A new trajectory that shares ``tr``'s first ``turn`` policy turns (and their observations) and goes on
    from the environment state before policy turn ``turn + 1`` (0 = from the prompt)."""
    if len(tr.snapshots) < turn + 1:
        raise ValueError(f"fork at turn {turn}: the trajectory kept no copy of its episode there (set "
                         "EpisodeRunner.snapshots = True before playing)")
    cut, seen = len(tr.segments), 0
    for i, seg in enumerate(tr.segments):
        if seg[1]:
            if seen == turn:
                cut = i
                break
            seen += 1
    return Trajectory(episode=copy.deepcopy(tr.snapshots[turn]), prompt_ids=tr.prompt_ids,
                      segments=list(tr.segments[:cut]), states=list(tr.states[:turn]),
                      snapshots=list(tr.snapshots[:turn]), turns=turn)


class EpisodeRunner:
    """Runs episodes of ``env`` with ``engine`` (``generate_ids``) and the tokenizer ``tok``."""

    def __init__(self, env, engine, tok, max_new_tokens: int):
        self.env, self.engine, self.tok, self.max_new_tokens = env, engine, tok, max_new_tokens
        self.pad = tok.pad_token_id
        self.snapshots = False   # keep a copy of each episode before each turn (``fork`` needs them: tree rollouts)
        self.round_keys: dict = {}   # id(record) -> its random stream this round (the online loop sets them)

    def start(self, records: list[dict], n: int) -> list[Trajectory]:
        out = []
        for r in records:
            ids = self.tok(r["prompt"], add_special_tokens=False)["input_ids"]
            out += [Trajectory(self.env.start(r), ids) for _ in range(n)]
        return out

    def run(self, records: list[dict], n: int = 1, greedy: bool = False, keys: list[int] | None = None) -> Rollout:
        """n episodes per record. The first turn samples from the records' random streams (``keys``, else the
        ``round_keys`` the online loop set for them; rlx/rollout/streams.py), as a single-turn rollout does, so a
        one-turn episode is that rollout; later turns draw from torch's global generator."""
        if keys is None and self.round_keys:
            ks = [self.round_keys.get(id(r)) for r in records]
            keys = None if None in ks else ks
        trajs = self.start(records, n)
        self.play(trajs, greedy, first_n=n, keys=keys)
        return self.rollout(trajs)

    def play(self, trajs: list[Trajectory], greedy: bool = False, first_n: int = 1,
             keys: list[int] | None = None) -> None:
        """Take turns until every trajectory has ended. ``first_n`` > 1: the trajectories come in runs of
        ``first_n`` that share a prompt and have not started, so the first turn prefills each prompt once
        (with ``keys``, one per prompt, from their random streams)."""
        live = [t for t in trajs if not t.done]
        first = (first_n > 1 or keys is not None) and all(t.turns == 0 for t in live) and len(live) == len(trajs)
        while live:
            if first:
                heads = live[::first_n]
                out = self._generate([t.context() for t in heads], first_n, greedy, keys)
                first = False
            else:
                out = self._generate([t.context() for t in live], 1, greedy)
            for j, tr in enumerate(live):
                self._turn(tr, out, j)
            live = [t for t in live if not t.done]

    def _generate(self, contexts: list[list[int]], n: int, greedy: bool, keys: list[int] | None = None) -> Rollout:
        width = max(len(c) for c in contexts)
        ids = torch.full((len(contexts), width), self.pad, dtype=torch.long)
        am = torch.zeros(len(contexts), width, dtype=torch.long)
        for i, c in enumerate(contexts):   # left padding, as every prompt batch
            ids[i, width - len(c):] = torch.tensor(c, dtype=torch.long)
            am[i, width - len(c):] = 1
        device = getattr(self.engine, "device", "cpu")
        if keys is None:
            return self.engine.generate_ids(ids.to(device), am.to(device), n=n, greedy=greedy)
        return self.engine.generate_ids(ids.to(device), am.to(device), n=n, greedy=greedy, keys=keys)

    def _turn(self, tr: Trajectory, out: Rollout, j: int) -> None:
        env = self.env
        length = int(out.response_mask[j].sum())
        ids = out.completion_ids[j, :length].tolist()
        logp = out.engine_logp[j, :length].tolist() if out.engine_logp is not None else None
        tr.states.append(state_hash(tr.episode.state()))
        if self.snapshots:
            tr.snapshots.append(copy.deepcopy(tr.episode))
        tr.segments.append((ids, True, logp))
        tr.text, tr.turns = out.texts[j], tr.turns + 1
        if bool(out.truncated[j]):   # no EOS within rollout.max_new_tokens: the turn is cut, so is the episode
            tr.done = tr.truncated = tr.cut = True
            return
        try:
            obs = call_with_timeout(tr.episode.observe, env.tool_timeout_s, tr.text)
        except Exception as e:   # the environment's fault or a malformed call: the episode ends, the run goes on
            tr.done, tr.failure = True, f"{type(e).__name__}: {e}"
            return
        if obs is None:
            tr.done = True
            return
        if tr.turns >= env.max_turns:   # out of turns with the last answer rejected: no one reads the observation
            tr.done = tr.truncated = True
            return
        obs_ids = self.tok(obs, add_special_tokens=False)["input_ids"]
        if len(tr.context()) + len(obs_ids) + self.max_new_tokens > env.max_context_tokens:
            tr.done, tr.failure = True, f"context past env.max_context_tokens={env.max_context_tokens}"
            return
        tr.segments.append((obs_ids, False, None))

    def rollout(self, trajs: list[Trajectory]) -> Rollout:
        """The trajectories as one ``Rollout`` (module docstring), with the episode metrics."""
        P = max(len(t.prompt_ids) for t in trajs)
        T = max(1, max(sum(len(s[0]) for s in t.segments) for t in trajs))
        N = len(trajs)
        prompt_ids = torch.full((N, P), self.pad, dtype=torch.long)
        prompt_mask = torch.zeros(N, P, dtype=torch.long)
        comp = torch.full((N, T), self.pad, dtype=torch.long)
        policy = torch.zeros(N, T, dtype=torch.bool)
        attention = torch.zeros(N, T, dtype=torch.long)
        turn = torch.zeros(N, T, dtype=torch.long)
        turn_state = torch.zeros(N, T, dtype=torch.long)
        logp = torch.zeros(N, T) if any(s[2] is not None for t in trajs for s in t.segments if s[1]) else None
        for i, t in enumerate(trajs):
            prompt_ids[i, P - len(t.prompt_ids):] = torch.tensor(t.prompt_ids, dtype=torch.long)
            prompt_mask[i, P - len(t.prompt_ids):] = 1
            pos, k = 0, 0
            for ids, is_policy, lp in t.segments:
                end = pos + len(ids)
                comp[i, pos:end] = torch.tensor(ids, dtype=torch.long)
                attention[i, pos:end] = 1
                if is_policy:
                    policy[i, pos:end] = True
                    turn[i, pos:end] = k + 1
                    turn_state[i, pos:end] = t.states[k]
                    if logp is not None and lp is not None:
                        logp[i, pos:end] = torch.tensor(lp)
                    k += 1
                pos = end
        cut = torch.tensor([t.cut for t in trajs])   # Rollout.truncated: a response that hit the length limit
        scale = torch.tensor([t.episode.reward_scale(t.turns) for t in trajs], dtype=torch.float32)
        return Rollout(prompt_ids, prompt_mask, comp, policy, cut, [t.text for t in trajs],
                       gen_tokens=int(policy.sum()), engine_logp=logp, attention=attention, turn=turn,
                       turn_state=turn_state, reward_scale=scale, extra_metrics=episode_metrics(trajs, attention))


def episode_metrics(trajs: list[Trajectory], attention: torch.Tensor) -> dict:
    """The multi-turn vocabulary (rlx.metrics.VOCABULARY) over these episodes."""
    n = len(trajs)
    return {
        "episode/turns_mean": sum(t.turns for t in trajs) / n,
        "episode/tokens_mean": float(attention.sum()) / n,
        "episode/truncated_frac": sum(t.truncated for t in trajs) / n,
        "tool/calls_mean": sum(t.episode.tool_calls for t in trajs) / n,
        "tool/errors": float(sum(t.episode.tool_errors for t in trajs)),
        "env/failures": float(sum(t.failure is not None for t in trajs)),
    }
