"""The environment interface: what turns a prompt into an episode of several turns.

An episode starts from a data record (its prompt and fields). The policy writes a turn (up to EOS or
``rollout.max_new_tokens`` tokens); the episode answers with an observation (a tool result, "try again", a
game's feedback), which joins the context, or ends. The reward is the ``reward`` group's score of the final
turn's text (with the record's fields, as a single-turn completion is scored), times the episode's
``reward_scale`` (e.g. a per-turn discount). A single-turn task is the one-turn case (``env=single``), which runs
the single-turn loop unchanged.

``Episode.state()`` names the environment state the policy acts from before each turn; equal states across the
trajectories of a group are GiGPO's anchor states. It must be hashable and its ``repr`` stable across processes.
"""

from __future__ import annotations

import hashlib
import threading


class EnvError(RuntimeError):
    """An episode the environment could not continue: it ends, and is counted in ``env/failures``."""


class Episode:
    """One trajectory's environment side. Subclasses implement ``observe`` (and ``state``)."""

    def __init__(self, record: dict):
        self.record = record
        self.tool_calls = 0
        self.tool_errors = 0

    def observe(self, text: str) -> str | None:
        """The observation after the policy's turn ``text``, or None when ``text`` ends the episode (its answer).
        Raises ``EnvError`` (or anything else) when the episode cannot go on."""
        raise NotImplementedError

    def state(self):
        """The environment state before the next turn (hashable; default: the turn count, i.e. no recurrence)."""
        return None

    def reward_scale(self, turns: int) -> float:
        """Factor on the final turn's reward after ``turns`` policy turns (1.0: undiscounted)."""
        return 1.0


class Env:
    """Builds episodes. ``multi_turn`` False = the single-turn loop (``env=single``)."""

    multi_turn = True
    demo_keys: tuple = ()   # env settings the demonstrations depend on (part of the embedded model's cache key)

    def __init__(self, cfg):
        self.cfg = cfg
        self.name = cfg.name
        self.max_turns = int(cfg.max_turns)
        self.max_context_tokens = int(cfg.max_context_tokens)
        self.tool_timeout_s = float(cfg.tool_timeout_s)

    def start(self, record: dict) -> Episode:
        raise NotImplementedError

    def demo(self, record: dict) -> list[tuple[str, bool, bool]]:
        """A demonstration episode for the embedded model's SFT warm start: (text, is_policy, trained) segments
        after the prompt, in order. A policy turn gets EOS appended, as a sampled turn ends; only trained
        segments carry the SFT loss (a demonstrated wrong attempt is context, not a target)."""
        raise NotImplementedError

    def corpus_extra(self) -> list[str]:
        """Text the embedded tokenizer should see besides the demos (observation strings)."""
        return []


def state_hash(state) -> int:
    """A positive int63 of ``repr(state)`` (stable across processes, unlike ``hash``); 0 is reserved for 'no turn'."""
    h = int.from_bytes(hashlib.blake2b(repr(state).encode(), digest_size=8).digest(), "little") & (2**63 - 1)
    return h or 1


def call_with_timeout(fn, timeout_s: float, *args):
    """``fn(*args)`` in a daemon thread; raises ``EnvError`` when it has not returned after ``timeout_s``. A tool
    that never returns is left behind in its thread (Python cannot kill a thread); the episode ends either way.
    A call that holds the GIL in C code (a huge integer power) cannot be timed out this way: tools bound their
    inputs instead (envs/calculator.py)."""
    box: dict = {}

    def run():
        try:
            box["value"] = fn(*args)
        except BaseException as e:   # handed to the caller's thread
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        raise EnvError(f"the environment did not answer within env.tool_timeout_s={timeout_s:g} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")
