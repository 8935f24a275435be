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

Resume (``trainer.resume=true hydra.run.dir=<the pipeline's dir>``): a stage whose ``summary.json`` says
it finished (no ``interrupted`` key) is skipped and its summary reused; the first other stage that has
started (``metrics.jsonl`` or ``checkpoints/`` in its dir) continues from its newest checkpoint
(``trainer.resume=true`` for that stage only); the stages after it run fresh (a stale dir of theirs is
removed: they start from the stage that runs again). The comparison is computed as in an uninterrupted
run, so the final metrics are the same. SIGTERM / Ctrl-C while a stage trains: that stage checkpoints at
the step boundary and writes its summary marked interrupted (rlx/trainers/base.py); at any other moment
(a stage loading, exporting its model, the comparison) the pipeline stops at once. Either way the
pipeline's ``summary.json`` says ``"interrupted"`` and which stage, and it exits 143 / 130
(docs/reliability.md "Pipeline resume").
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import signal
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
        self._rerun = False   # a stage has run in this invocation (under resume, the later ones start over)

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
        t0, out = time.perf_counter(), {"algo": "pipeline", "stages": {}}
        # a stage's trainer puts its own handler in place while it trains and restores this one after
        prev = {sig: signal.signal(sig, _raise_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        where = next(iter(self.stages))
        try:
            for where, c in self.stages.items():
                self.run_stage(where, c, out["stages"])
            where = "compare"
            out["compare"] = self.compare()
        except (Signalled, SystemExit) as e:
            code = e.code if isinstance(e, SystemExit) else 128 + e.signum
            if code not in (130, 143):
                raise
            for sig in prev:   # a second signal does not cut the summary short
                signal.signal(sig, signal.SIG_IGN)
            self.interrupted(out, where, code)
        finally:
            for sig, handler in prev.items():
                signal.signal(sig, handler)
        out["examples"] = self.examples
        out["wall_s"] = round(time.perf_counter() - t0, 1)
        out["steps"] = sum(s["steps"] for s in out["stages"].values())
        first, last = self.cfg.pipeline.compare[0], self.cfg.pipeline.compare[-1]
        out["initial"] = {f"compare/{k}": v for k, v in out["compare"][first].items()}
        out["final"] = {f"compare/{k}": v for k, v in out["compare"][last].items()}
        self.console.print(self.table(out))
        return out

    def run_stage(self, name: str, c, stages: dict) -> None:
        """Run stage ``name`` into ``stages[name]``; under ``trainer.resume=true`` skip it when it finished,
        continue it when it started, and once a stage runs again the later ones start over."""
        from rlx.runner import run

        d, state = self.run_dir / name, "new"
        if self.cfg.trainer.resume:
            done, state = stage_state(d)
            if done is not None and not self._rerun:
                self.console.print(f"[rlx] pipeline stage '{name}': finished in an earlier run, skipped ({d})")
                stages[name] = {**done, "stage_wall_s": 0.0, "reused": True}
                return
            if state != "new" and self._rerun:   # it started from a stage that runs again now: stale
                self.console.print(f"[rlx] pipeline stage '{name}': removing {d} (it started from a stage that "
                                   "runs again); it starts over")
                shutil.rmtree(d)
                state = "new"
            self._rerun = True
        c.trainer.resume = state == "started"
        how = "continues from its newest checkpoint" if c.trainer.resume else f"{c.trainer.steps} steps"
        self.console.print(f"[rlx] pipeline stage '{name}': algo={c.algo.name}, {how} -> {d}")
        t = time.perf_counter()
        stages[name] = run(c, d)
        stages[name]["stage_wall_s"] = round(time.perf_counter() - t, 1)

    def interrupted(self, out: dict, where: str, code: int):
        """SIGTERM / Ctrl-C: summary.json marked interrupted (with the stages so far), then exit 143 / 130."""
        name = "SIGINT" if code == 130 else "SIGTERM"
        if where != "compare":   # the stage's own summary says how far it got (marked interrupted when it saved)
            s = self.run_dir / where / "summary.json"
            out["stages"][where] = _read_json(s) or {"interrupted": name, "steps": 0}
        summary = {**out, "interrupted": name, "interrupted_in": where, "run_dir": str(self.run_dir)}
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
        self.console.print(f"[rlx] pipeline {name} in {'stage ' + repr(where) if where != 'compare' else 'the comparison'}"
                           f"; continue with trainer.resume=true hydra.run.dir={self.run_dir}; exiting with {code}")
        raise SystemExit(code)

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
            when = "finished in an earlier run" if s.get("reused") else f"{s['stage_wall_s']:.0f} s"
            lines.append(f"  stage {name}: {s['steps']} steps, {when}; {final}")
        return "\n".join(lines)


class Signalled(BaseException):
    """SIGTERM / SIGINT outside a stage's training loop (a BaseException, as KeyboardInterrupt: nothing catches it)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_signal(signum, frame):
    raise Signalled(signum)


def stage_state(d: Path) -> tuple[dict | None, str]:
    """(its summary, "finished") when stage dir ``d`` holds a summary.json without ``interrupted``; else
    (None, "started") when it holds metrics.jsonl or checkpoints/, (None, "new") when neither."""
    summary = _read_json(d / "summary.json")
    if summary is not None and not summary.get("interrupted"):
        return summary, "finished"
    return None, "started" if (d / "metrics.jsonl").exists() or (d / "checkpoints").exists() else "new"


def _read_json(path: Path) -> dict | None:
    try:
        out = json.loads(path.read_text())
    except (OSError, ValueError):   # missing, or cut short by a kill during its write
        return None
    return out if isinstance(out, dict) else None


def _mean(vals) -> float:
    ok = [v for v in vals if v is not None and math.isfinite(v)]
    return sum(ok) / len(ok) if ok else math.nan


@TRAINERS.register("pipeline")
def build_pipeline_trainer(cfg, run_dir, **kw) -> PipelineTrainer:
    return PipelineTrainer(cfg, run_dir, **kw)
