"""The pretraining term of PPO-ptx (InstructGPT, Ouyang et al. 2022, arXiv:2203.02155 eq. 2):

    objective(φ) = E_{(x,y)~π_φ}[r(x, y) − β·log π_φ(y|x)/π_SFT(y|x)] + γ·E_{x~D_pretrain}[log π_φ(x)]

For every algorithm with ``ptx_coef`` γ > 0 the online loop adds, before each policy optimizer step,
the gradient of γ·L_ptx with L_ptx = −token-mean log π_φ over a batch of ``ptx_batch_size`` records
of the run's data set (their ``prompt`` + ``completion`` + EOS, loss on the completion: the stand-in
for D_pretrain here; InstructGPT mixes in its pretraining corpus). The records are drawn from their
own cursor (far from the prompt cursor), saved in checkpoints so that resume is exact.
"""

from __future__ import annotations

from rlx.algos.sft import sft_loss
from rlx.models.encode import encode_sft
from rlx.models.logprobs import token_logprobs

CURSOR_OFFSET = 10**8   # the ptx records come from far along the data stream, not the RL prompts


class PretrainTerm:
    def __init__(self, trainer):
        self.trainer, self.cursor = trainer, CURSOR_OFFSET
        self.coef = float(trainer.algo.ptx_coef)
        self.batch_size = int(trainer.algo.ptx_batch_size)

    def backward(self) -> dict:
        """Add γ·∇L_ptx to the policy's gradients; returns its metrics."""
        t = self.trainer
        records = t.data.train_batch(self.cursor, self.batch_size)
        self.cursor += self.batch_size
        ids, am, mask, T = encode_sft(t.tok, records, t.device)
        logp, _ = token_logprobs(t.model, ids, am, T, autocast=t.autocast)
        nll, _ = sft_loss(logp, mask)
        (self.coef * nll).backward()
        return {"ptx/loss": float(self.coef * nll.detach()), "ptx/nll": float(nll.detach())}

    def state_dict(self) -> dict:
        return {"cursor": self.cursor}

    def load_state_dict(self, state: dict) -> None:
        self.cursor = int(state["cursor"])
