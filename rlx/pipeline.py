"""A pipeline of runs (``experiment=rlhf_pipeline``: SFT → reward model → PPO; docs/algorithm_notes.md §3.1).

``cfg.pipeline.stages`` maps a stage name to its command-line overrides (``overrides``) and where it
starts from: ``init_from`` (the policy: ``model.path`` = that stage's ``<dir>/model``) and
``reward_from`` (``reward.path`` = that stage's run dir, a reward model saved by ``algo=rm``). Every
stage takes ``seed``, ``model``, ``hardware``, ``tracker``, ``rollout`` and ``trainer.progress`` from
the pipeline's own config (so every stage generates, and is evaluated, the same way), so ``python -m rlx experiment=rlhf_pipeline seed=1 hardware.num_threads=1``
sets them everywhere. All stage configs are composed and checked before the first stage runs (a typo
in the last stage fails in seconds, not after the first two have trained).

Each stage runs as ``rlx.run`` in ``<run dir>/<stage>/`` (its own metrics, summary, checkpoints,
saved model). Then the models of ``pipeline.compare`` (e.g. the SFT and the PPO policy) answer the
data's eval prompts greedily and the pipeline's own ``reward`` scores them, every term side by side
(for RLHF on ``arithmetic_pref``: the reward model's score, which PPO optimised, next to the hidden
rule's true score, which it was meant to improve). ``summary.json`` holds every stage's summary and
that table.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

from omegaconf import OmegaConf

from rlx.catalogue import build
from rlx.registry import TRAINERS

SHARED = ("seed", "model", "hardware", "tracker", "rollout")


class PipelineTrainer:
    def __init__(self, cfg, run_dir, console=None):
        from rlx.runtime.console import Console
        from rlx.track import NullTrackers

        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.console = console or Console(cfg)
        self.data = build("data", cfg.data)
        self.trackers = NullTrackers()
        self.stages = {name: self.stage_config(name, st) for name, st in cfg.pipeline.stages.items()}

    def stage_config(self, name: str, st):
        """The checked config of one stage: its overrides, the shared groups, the paths it starts from."""
        from rlx.config import ConfigError, compose, validate

        for o in st.overrides:
            if o.split("=", 1)[0].lstrip("+~").split(".")[0] in SHARED:
                raise ConfigError(f"pipeline.stages.{name}.overrides: '{o}' sets a key every stage shares "
                                  f"({', '.join(SHARED)}); set it on the pipeline itself")
        c = compose(list(st.overrides) + [f"model={self.cfg.model.name}", f"hardware={self.cfg.hardware.name}",
                                          f"tracker={self.cfg.tracker.name}"])
        for key in SHARED:
            c[key] = copy.deepcopy(self.cfg[key])
        c.trainer.progress = self.cfg.trainer.progress
        for key, field in (("init_from", "model.path"), ("reward_from", "reward.path")):
            src = st.get(key)
            if src is None:
                continue
            if src not in self.cfg.pipeline.stages or list(self.cfg.pipeline.stages).index(src) >= \
                    list(self.cfg.pipeline.stages).index(name):
                raise ConfigError(f"pipeline.stages.{name}.{key}={src}: must name an earlier stage")
            OmegaConf.update(c, field, str(self.stage_dir(src, key)))
        validate(c)
        return c

    def stage_dir(self, name: str, key: str = "reward_from") -> Path:
        return self.run_dir / name / ("model" if key == "init_from" else "")

    # ------------------------------------------------------------------ the runs
    def fit(self) -> dict:
        from rlx.runner import run

        t0, out = time.perf_counter(), {"algo": "pipeline", "stages": {}}
        for name, c in self.stages.items():
            self.console.print(f"[rlx] pipeline stage '{name}': algo={c.algo.name}, {c.trainer.steps} steps "
                               f"-> {self.run_dir / name}")
            t = time.perf_counter()
            out["stages"][name] = run(c, self.run_dir / name)
            out["stages"][name]["stage_wall_s"] = round(time.perf_counter() - t, 1)
        out["compare"] = self.compare()
        out["examples"] = self.examples
        out["wall_s"] = round(time.perf_counter() - t0, 1)
        out["steps"] = sum(s["steps"] for s in out["stages"].values())
        first, last = self.cfg.pipeline.compare[0], self.cfg.pipeline.compare[-1]
        out["initial"] = {f"compare/{k}": v for k, v in out["compare"][first].items()}
        out["final"] = {f"compare/{k}": v for k, v in out["compare"][last].items()}
        self.console.print(self.table(out))
        return out

    # ------------------------------------------------------------------ before / after
    def compare(self) -> dict:
        """Greedy answers of each compared stage's model on the eval prompts, every reward term's mean."""
        import torch

        from rlx.rewards.composite import CompositeReward
        from rlx.rollout.hf import HFEngine

        p = self.cfg.pipeline
        root = copy.deepcopy(self.cfg)   # the reward node's interpolations (${reward.path}) need their root
        if p.get("reward_from"):
            OmegaConf.update(root, "reward.path", str(self.stage_dir(p.reward_from)))
        reward = CompositeReward(root.reward)
        records = self.data.eval_set()[: p.eval_size or None]
        prompts = [r["prompt"] for r in records]
        fields = {k: [r.get(k) for r in records] for k in records[0] if k != "prompt"}
        table, self.examples = {}, {}
        for name in p.compare:
            c = self.stages[name]
            model, tok = build("model", OmegaConf.merge(c.model, {"path": str(self.stage_dir(name, "init_from"))}),
                               log=lambda *_: None)
            engine = HFEngine(model.to(torch.device(c.hardware.device)).eval(), tok, self.cfg.rollout,
                              device=c.hardware.device)
            texts, lengths = [], []
            for i in range(0, len(prompts), 256):
                out = engine.generate(prompts[i:i + 256], n=1, greedy=True)
                texts += out.texts
                lengths += out.response_mask.sum(-1).tolist()
            scored = reward.score(prompts, texts, **fields)
            row = {f"{t}/mean": _mean(v) for t, v in scored["terms"].items()}
            row["score/mean"] = _mean(scored["score"])
            row["response_length/mean"] = sum(lengths) / len(lengths)
            table[name] = row
            self.examples[name] = [p_ + t for p_, t in list(zip(prompts, texts))[:8]]
        return table

    def table(self, out: dict) -> str:
        rows = out["compare"]
        keys = list(next(iter(rows.values())))
        w = max(len(k) for k in keys)
        head = f"  {'greedy answers on ' + str(len(self.data.eval_set()[: self.cfg.pipeline.eval_size or None])) + ' eval prompts':<{w + 18}}"
        lines = ["[rlx] pipeline summary", head + "".join(f"{n:>12}" for n in rows)]
        for k in keys:
            lines.append(f"  {k:<{w + 18}}" + "".join(f"{rows[n][k]:>12.3f}" for n in rows))
        for name, s in out["stages"].items():
            final = ", ".join(f"{k} {v:.3f}" for k, v in s.get("final", {}).items())
            lines.append(f"  stage {name}: {s['steps']} steps, {s['stage_wall_s']:.0f} s; {final}")
        return "\n".join(lines)


def _mean(vals) -> float:
    ok = [v for v in vals if v is not None and math.isfinite(v)]
    return sum(ok) / len(ok) if ok else math.nan


@TRAINERS.register("pipeline")
def build_pipeline_trainer(cfg, run_dir, **kw) -> PipelineTrainer:
    return PipelineTrainer(cfg, run_dir, **kw)
