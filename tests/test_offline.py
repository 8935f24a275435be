"""The offline preference family: each loss on a hand-computed example (arithmetic in the comments),
invariants against closed forms and a sibling (DPO at initialisation = log 2, cDPO's optimum, ODPO with
unit gaps = DPO), rlx's DPO loss and gradients against TRL's DPOTrainer on the same batch, the
reference cache, the micro-batch-independent gradient, and the data loaders (TRL formats, bad rows,
HH-RLHF's real rows)."""

from __future__ import annotations

import copy
import gzip
import json
import math
from pathlib import Path

import pytest
import torch
from conftest import FAST

import rlx
from rlx.algos.dpo import dpo_loss
from rlx.algos.ipo import ipo_loss
from rlx.algos.kto import kto_loss
from rlx.algos.odpo import odpo_loss
from rlx.algos.orpo import log1mexp, orpo_loss
from rlx.algos.preference import pref_metrics
from rlx.algos.rrhf import rrhf_loss
from rlx.algos.simpo import simpo_loss
from rlx.data.arithmetic_pref import true_score
from rlx.data.preference import BadRowError
from rlx.registry import TRAINERS
from rlx.trainers.offline import layout_rows

HH = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf-harmless-base" / "test.jsonl.gz"
T = torch.tensor


def sig(x):
    return 1 / (1 + math.exp(-x))


# ---------------------------------------------------------------- losses by hand


def test_dpo_at_initialisation_is_log2_for_any_label_smoothing():
    lp = T([-1.0, -7.5, -3.2])   # policy = reference: h = 0, so -log σ(0) = log 2 whatever ε
    for eps in (0.0, 0.1, 0.3):
        loss, _ = dpo_loss(lp, lp - 1, lp, lp - 1, beta=0.1, label_smoothing=eps)
        assert loss.item() == pytest.approx(math.log(2), abs=1e-7)


def test_dpo_hand_computed():
    # h = (-1 - -2) - (-3 - -2) = 1 - (-1) = 2; β h = 0.5 * 2 = 1; L = -log σ(1) = log(1 + e^-1) = 0.313262
    loss, _ = dpo_loss(T([-1.0]), T([-3.0]), T([-2.0]), T([-2.0]), beta=0.5)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    assert loss.item() == pytest.approx(0.313262, abs=1e-6)


def test_label_smoothing_limits():
    h = torch.linspace(-3, 3, 7)
    zero = torch.zeros(7)
    dpo, _ = dpo_loss(h, zero, zero, zero, beta=0.7)
    near, _ = dpo_loss(h, zero, zero, zero, beta=0.7, label_smoothing=1e-9)
    assert near.item() == pytest.approx(dpo.item(), abs=1e-7)       # ε → 0 is DPO
    half = [dpo_loss(T([x]), T([0.0]), T([0.0]), T([0.0]), beta=0.7, label_smoothing=0.5)[0].item() for x in (2.0, -2.0)]
    assert half[0] == pytest.approx(half[1], abs=1e-7)               # ε = 1/2: labels carry no information
    # cDPO's optimum is finite: dL/dh = 0 at h* = log((1-ε)/ε)/β; ε = 0.1, β = 1: h* = log 9 = 2.1972
    hs = T([math.log(9)], requires_grad=True)
    loss, _ = dpo_loss(hs, T([0.0]), T([0.0]), T([0.0]), beta=1.0, label_smoothing=0.1)
    loss.backward()
    assert hs.grad.item() == pytest.approx(0.0, abs=1e-6)


def test_ipo_hand_computed():
    # chosen: logps -2 over 2 tokens, ref -4; rejected: logps -6 over 3 tokens, ref -3; τ = 0.5 → target 1/(2τ) = 1
    args = (T([-2.0]), T([-6.0]), T([-4.0]), T([-3.0]), T([2.0]), T([3.0]))
    # length-normalised: (-2+4)/2 - (-6+3)/3 = 1 - (-1) = 2 → (2 - 1)^2 = 1
    assert ipo_loss(*args, tau=0.5)[0].item() == pytest.approx(1.0, abs=1e-6)
    # eq. 17 on sums: 2 - (-3) = 5 → (5 - 1)^2 = 16
    assert ipo_loss(*args, tau=0.5, length_normalize=False)[0].item() == pytest.approx(16.0, abs=1e-5)


def test_simpo_hand_computed():
    # r_w = 2 * -2/2 = -2, r_l = 2 * -6/3 = -4; -2 - (-4) - γ(=1) = 1 → -log σ(1) = 0.313262
    loss, _ = simpo_loss(T([-2.0]), T([-6.0]), T([2.0]), T([3.0]), beta=2.0, gamma=1.0)
    assert loss.item() == pytest.approx(0.313262, abs=1e-6)


def test_orpo_odds_ratio_against_direct_computation():
    # chosen: logps -1 over 2 tokens → P = e^-0.5 = 0.60653, odds 1.54149; rejected -4 over 2 → P = e^-2 = 0.13534,
    # odds 0.15652; log odds ratio = log(1.54149 / 0.15652) = 2.2873; NLL = 1/2 = 0.5; λ = 0.1:
    # L = 0.5 + 0.1 * log(1 + e^-2.2873) = 0.5 + 0.1 * 0.09670 = 0.50967
    loss, m = orpo_loss(T([-1.0]), T([-4.0]), T([2.0]), T([2.0]), lam=0.1)
    pc, pr = math.exp(-0.5), math.exp(-2.0)
    direct = math.log(pc / (1 - pc)) - math.log(pr / (1 - pr))
    assert m["orpo/log_odds_ratio"].item() == pytest.approx(direct, abs=1e-5)
    assert direct == pytest.approx(2.2873, abs=1e-4)
    assert loss.item() == pytest.approx(0.5 + 0.1 * math.log(1 + math.exp(-direct)), abs=1e-6)
    # log(1 - e^x) stays accurate at both ends (direct formula loses it near 0 and near -inf)
    assert log1mexp(T([-1e-3], dtype=torch.float64)).item() == pytest.approx(math.log(-math.expm1(-1e-3)), rel=1e-9)
    assert log1mexp(T([-40.0], dtype=torch.float64)).item() == pytest.approx(-math.exp(-40.0), rel=1e-9)


def test_kto_only_desirable_examples():
    # r = logps - ref = [0.5, -0.5]; z0 = max(0, mean(-3 - -3.4)) = 0.4; β = 1, λ_D = 2:
    # L = mean(2 - 2σ(0.5-0.4), 2 - 2σ(-0.5-0.4)) = 2 - (σ(0.1) + σ(-0.9)) = 2 - (0.524979 + 0.289050) = 1.185971
    logps = T([-1.0, -2.0], requires_grad=True)
    kl = T([-3.0], requires_grad=True)
    loss, m = kto_loss(logps, T([-1.5, -1.5]), T([True, True]), kl, T([-3.4]), beta=1.0, lambda_d=2.0, lambda_u=5.0)
    assert loss.item() == pytest.approx(2 - (sig(0.1) + sig(-0.9)), abs=1e-6)
    assert loss.item() == pytest.approx(1.185971, abs=1e-6)
    assert m["kto/kl"].item() == pytest.approx(0.4, abs=1e-6)
    loss.backward()
    assert kl.grad is None or kl.grad.abs().sum() == 0        # z0 carries no gradient
    # a negative KL estimate is clamped to 0: L = 2 - (σ(0.5) + σ(-0.5)) = 2 - 1 = 1
    loss0, m0 = kto_loss(T([-1.0, -2.0]), T([-1.5, -1.5]), T([True, True]), T([-3.4]), T([-3.0]), beta=1.0,
                         lambda_d=2.0)
    assert m0["kto/kl"].item() == 0.0 and loss0.item() == pytest.approx(1.0, abs=1e-6)


def test_odpo_offset_and_dpo_limit():
    args = (T([-1.0, -2.0]), T([-3.0, -2.5]), T([-2.0, -2.0]), T([-2.0, -2.0]))
    # score gaps of 1: offset log 1 = 0, ODPO = DPO
    assert odpo_loss(*args, T([1.0, 1.0]), T([0.0, 0.0]), beta=0.5)[0].item() == pytest.approx(
        dpo_loss(*args, beta=0.5)[0].item(), abs=1e-7)
    # one pair, gap e: offset α log e = 1; β h = 0.5 * 2 = 1 → -log σ(1 - 1) = log 2
    loss, m = odpo_loss(*[a[:1] for a in args], T([math.e]), T([0.0]), beta=0.5, alpha=1.0)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6) and m["odpo/offset"].item() == pytest.approx(1.0)


def test_rrhf_hand_computed():
    # K = 3 ranked best first, one token each: p = [-1, -3, -2]; the only inversion is (2nd, 3rd):
    # max(0, p_3rd - p_2nd) = -2 - -3 = 1; SFT on the best: -(-1) = 1; L = 1 + 1 = 2
    loss, m = rrhf_loss(T([[-1.0, -3.0, -2.0]]), T([[1.0, 1.0, 1.0]]))
    assert loss.item() == pytest.approx(2.0) and m["loss/policy"].item() == pytest.approx(1.0)


def test_pref_metrics_count_ties_as_half():
    # pairs: (0 vs 0) tie → 1/2, (1 vs 0) right → 1; accuracy 3/4; margin (0 + 1)/2 = 0.5
    m = pref_metrics(T([[0.0, 0.0], [1.0, 0.0]]), T([[-1.0, -2.0], [-3.0, -4.0]]))
    assert m["pref/accuracy"] == 0.75 and m["pref/margin"] == 0.5 and m["logps/chosen"] == -2.0


def test_layouts():
    recs = [{"responses": ["a", "b", "c"], "scores": [1, 0.5, 0]}]
    assert [c for _, c, _ in layout_rows(recs, "pairs")] == [[0, 1], [0, 2], [1, 2]]   # K(K-1)/2 pairs
    assert layout_rows(recs, "pointwise")[2] == (0, [1, 2], [True, False])   # each pair: chosen desirable
    with pytest.raises(ValueError, match="algo=kto"):
        layout_rows([{"responses": ["a"], "label": True}], "pairs", "dpo")


def test_true_score_hidden_rule():
    # correct & concise 1; correct & rambling 0.5; wrong 0; wrong & rambling -0.5; nothing -0.5
    assert [true_score("2+2=", c, "4") for c in ("4", " 4 ", "4 ok", "5", "5!!", "", "ok")] == \
        [1.0, 1.0, 0.5, 0.0, -0.5, -0.5, -0.5]


# ---------------------------------------------------------------- the loop


def make_trainer(tmp_path, *overrides):
    cfg = rlx.compose([*FAST, "hardware.num_threads=1", *overrides])
    from rlx.catalogue import load as _load_components

    _load_components()
    return TRAINERS.get("offline")(cfg, tmp_path)


def one_batch(tr, n):
    records = tr.data.train_batch(0, n)
    rows = layout_rows(records, tr.algo.layout)
    main, index, kl, kl_index = tr.sequences("train", records, rows)
    return records, rows, main, index, kl, kl_index


def test_first_step_is_log2_and_reference_is_cached(tmp_path):
    tr = make_trainer(tmp_path, "algo=dpo", "data.prompts_per_step=4", "data.train_size=8", "data.responses_per_prompt=2")
    calls = []
    tr.ref.register_forward_hook(lambda mod, args, kwargs, out: calls.append(1), with_kwargs=True)
    first = tr.train_step()
    assert first["loss/total"] == pytest.approx(math.log(2), abs=1e-5)   # policy = reference at step 1
    for _ in range(5):   # 6 steps x 4 records = 3 epochs over the 8 training records
        tr.train_step()
    assert tr.ref_sequences == 16   # 8 records x 2 responses, scored once for all three epochs
    n_calls = len(calls)
    tr.train_step()
    assert len(calls) == n_calls    # a fourth epoch runs no reference forward at all
    tr.pref_accuracy(tr.data.pref_eval_set()[:8])
    tr.pref_accuracy(tr.data.pref_eval_set()[:8])
    assert tr.ref_sequences == 16 + 16   # held-out pairs scored once, cached for later evaluations


def test_reference_free_algorithms_load_no_reference(tmp_path):
    for algo in ("simpo", "orpo", "rrhf"):
        tr = make_trainer(tmp_path, f"algo={algo}", "data.prompts_per_step=2")
        assert tr.ref is None
        assert math.isfinite(tr.train_step()["loss/total"])


def test_gradient_does_not_depend_on_micro_batch(tmp_path):
    tr = make_trainer(tmp_path, "algo=kto", "data.prompts_per_step=6", "data.responses_per_prompt=3")
    grads = []
    for micro in (64, 4):   # 18 sequences: one pass, then 5 micro-batches with the two-pass accumulation
        tr.cfg.trainer.micro_batch_size = micro
        records, rows, main, index, kl, kl_index = one_batch(tr, 6)
        tr.update(main, index, records, rows, tr.reference(main), tr.reference(kl), kl, kl_index)
        grads.append(torch.cat([p.grad.flatten() for p in tr.model.parameters()]))
        tr.optim.zero_grad(set_to_none=True)
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[1], grads[0], atol=1e-6, rtol=1e-5)
    # KTO's KL pairs: every prompt with a response of another record (ids differ), one per row
    assert len(kl_index) == len(index) == 6 * 3 and all(key[2] != key[3] for key in kl.keys)


@pytest.mark.slow
def test_dpo_matches_trl_dpo_trainer(tmp_path):
    trl = pytest.importorskip("trl", reason="TRL is a dev/bench extra; the DPO equivalence test needs it")
    from datasets import Dataset

    rows = [{"prompt": f"{a}+{b}=", "chosen": str(a + b), "rejected": f"{a + b + 1} ok"}
            for a, b in ((12, 30), (7, 5), (55, 44), (3, 98))]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tr = make_trainer(tmp_path, "algo=dpo", "data=preference", f"data.path={path}", "data.prompts_per_step=4",
                      "algo.beta=0.3", "trainer.micro_batch_size=3")   # 8 sequences: the two-pass gradient
    torch.manual_seed(1)
    with torch.no_grad():   # move the policy away from the reference so the loss is not log 2
        for p in tr.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    records, prows, main, index, kl, kl_index = one_batch(tr, 4)
    _, loss, _ = tr.update(main, index, records, prows, tr.reference(main), None, kl, kl_index)
    ours = {n: p.grad.clone() for n, p in tr.model.named_parameters()}

    policy, ref = copy.deepcopy(tr.model), copy.deepcopy(tr.ref)
    policy.zero_grad(set_to_none=True)
    args = trl.DPOConfig(output_dir=str(tmp_path / "trl"), beta=0.3, report_to="none", use_cpu=True, bf16=False,
                         max_length=None, per_device_train_batch_size=4, save_strategy="no")
    trainer = trl.DPOTrainer(model=policy, ref_model=ref, args=args, processing_class=tr.tok,
                             train_dataset=Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")}
                                                              for r in records]))
    examples = [trainer.train_dataset[i] for i in range(4)]
    for ex, rec in zip(examples, records):   # same tokens: prompt, response + EOS
        assert (ex["prompt_ids"], [ex["chosen_ids"], ex["rejected_ids"]]) == (rec["prompt_ids"], rec["response_ids"])
    theirs_loss = trainer.compute_loss(policy, trainer.data_collator(examples))
    theirs_loss.backward()
    assert loss == pytest.approx(theirs_loss.item(), abs=1e-5)
    assert abs(loss - math.log(2)) > 1e-3
    for n, p in policy.named_parameters():
        torch.testing.assert_close(ours[n], p.grad, atol=1e-5, rtol=0, msg=n)


# ---------------------------------------------------------------- data


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def load(tmp_path, path, *overrides):
    cfg = rlx.compose(["data=preference", f"data.path={path}", *overrides])
    data = rlx.build("data", cfg.data)
    model, tok = rlx.build("model", rlx.compose(FAST).model, log=lambda *_: None)
    data.prepare(tok)
    return data


GOOD = {"prompt": "1+1=", "chosen": "2", "rejected": "3"}


@pytest.mark.parametrize("bad, needle", [
    ({"prompt": "1+1=", "chosen": "2"}, "missing field 'rejected'"),
    ({"prompt": "1+1=", "chosen": "  ", "rejected": "3"}, "empty 'chosen'"),
    ({"prompt": "1+1=", "chosen": 2, "rejected": "3"}, "must be a string or a list of chat messages"),
    ({"prompt": "1+1+1+1+1+1+1=", "chosen": "7", "rejected": "3"}, "tokens > data.max_prompt_tokens=6"),
    ("{not json", "not valid JSON"),
])
@pytest.mark.slow
def test_bad_rows_name_file_and_line(tmp_path, bad, needle):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, GOOD, bad, GOOD])
    with pytest.raises(BadRowError) as e:
        load(tmp_path, path, "data.max_prompt_tokens=6")
    assert f"{path}:3" in str(e.value) and needle in str(e.value)


def test_bad_rows_dropped_and_counted(tmp_path):
    rows = [GOOD, {"prompt": "1+1=", "chosen": "2"}, {"prompt": "9+9+9+9=", "chosen": "36", "rejected": "3"}, GOOD]
    data = load(tmp_path, write_jsonl(tmp_path / "d.jsonl", rows), "data.max_prompt_tokens=6", "data.bad_rows=drop",
                "data.long_prompts=drop")
    assert len(data.train) == 2 and dict(data.dropped) == {"missing field": 1, "prompt too long": 1}
    trunc = load(tmp_path, write_jsonl(tmp_path / "e.jsonl", rows[2:]), "data.max_prompt_tokens=6",
                 "data.long_prompts=truncate")
    assert len(trunc.train[0]["prompt_ids"]) == 6   # keeps the last 6 prompt tokens ("9+9+9=" of "9+9+9+9=")


def test_trl_formats(tmp_path):
    chat = {"prompt": [{"role": "user", "content": "2+2="}], "chosen": [{"role": "assistant", "content": "4"}],
            "rejected": [{"role": "assistant", "content": "5"}]}
    implicit = {"chosen": "Q: 3+4= A: 7", "rejected": "Q: 3+4= A: 8"}
    scored = dict(GOOD, score_chosen=9.0, score_rejected=6.5)
    data = load(tmp_path, write_jsonl(tmp_path / "d.jsonl", [chat, implicit, scored]), "data.max_prompt_tokens=0")
    recs = {r["where"].rsplit(":", 1)[1]: r for r in data.train}
    tok = rlx.build("model", rlx.compose(FAST).model, log=lambda *_: None)[1]
    assert tok.decode(recs["1"]["prompt_ids"]) == "<|im_start|>user\n2+2=<|im_end|>\n<|im_start|>assistant\n"
    assert tok.decode(recs["1"]["response_ids"][0]) == "4<|im_end|>\n"   # chat template ends the turn, no extra EOS
    assert (recs["2"]["prompt"], recs["2"]["responses"]) == ("Q: 3+4= A:", [" 7", " 8"])   # TRL's implicit prompt
    assert recs["3"]["scores"] == [9.0, 6.5]
    # unpaired KTO rows from parquet, trained by algo=kto and refused by a paired loss
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"prompt": f"{i}+1=", "completion": str(i + 1 + (i % 2)), "label": i % 2 == 0} for i in range(6)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "u.parquet")
    tr = make_trainer(tmp_path, "algo=kto", "data=preference", f"data.path={tmp_path / 'u.parquet'}",
                      "data.prompts_per_step=6")   # all six rows: both labels in the batch
    m = tr.train_step()
    assert math.isfinite(m["loss/total"]) and "pref/chosen_reward" in m and "pref/rejected_reward" in m
    tr = make_trainer(tmp_path, "algo=dpo", "data=preference", f"data.path={tmp_path / 'u.parquet'}")
    with pytest.raises(ValueError, match="use algo=kto"):
        tr.train_step()


def test_dataset_id_that_cannot_load_names_the_key():
    cfg = rlx.compose(["data=preference", "data.path=no-such-org/no-such-dataset"])
    with pytest.raises(FileNotFoundError, match="data.path=no-such-org/no-such-dataset"):
        rlx.build("data", cfg.data)


def test_run_seed_sets_the_training_order_not_the_data():
    def ids(seed):
        data = rlx.build("data", rlx.compose(["algo=dpo", f"seed={seed}"]).data)
        return [r["id"] for r in data.train_batch(0, 8)], data.train_example(5)["responses"]

    assert ids(0) == ids(0) and ids(0)[0] != ids(1)[0] and ids(0)[1] == ids(1)[1]


def test_algo_presets_pick_preference_data_unless_data_is_given():
    assert rlx.compose(["algo=dpo"]).data.name == "arithmetic_pref"
    assert rlx.compose(["algo=dpo", "data=hh_rlhf"]).data.name == "hh_rlhf"
    assert rlx.compose(["data=hh_rlhf", "algo=kto"]).data.name == "hh_rlhf"
    assert rlx.compose([]).data.name == "arithmetic"


@pytest.mark.skipif(not HH.exists(), reason=f"{HH} not present (shared data folder absent)")
def test_hh_rlhf_real_rows(tmp_path):
    with gzip.open(HH, "rt") as fh:
        first = json.loads(fh.readline())
    cfg = rlx.compose(["data=hh_rlhf", f"data.path={HH}", "data.max_rows=100", "data.eval_size=4"])
    data = rlx.build("data", cfg.data)
    rec = next(r for r in data.train + data.heldout if r["where"].endswith(":1"))
    assert rec["prompt"].endswith("\n\nAssistant:") and rec["prompt"].startswith("\n\nHuman:")
    assert rec["prompt"] + rec["chosen"] == first["chosen"] and rec["prompt"] + rec["rejected"] == first["rejected"]
    assert "\n\nAssistant:" not in rec["chosen"]
    assert len(data.train) + len(data.heldout) + sum(data.dropped.values()) == 100
