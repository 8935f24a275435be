"""The "samples" section of ``report.html``: the ``samples.jsonl`` rows (rlx.track.samples) of every
group side by side, one table row per (step, prompt), at up to ``MAX_STEPS`` steps spread over
training. Runs with the same seed and data see the same prompts at the same step, so a row compares
the groups' completions of one prompt; a group's cell is its first run that logged samples."""

from __future__ import annotations

import html

MAX_STEPS = 6        # logged steps shown: the first, the last and evenly spaced ones between
MAX_PROMPTS = 4      # prompts per step
MAX_COMPLETIONS = 4  # completions per cell
MAX_CHARS = 300      # characters per completion


def _spread(steps: list, n: int) -> list:
    if len(steps) <= n:
        return steps
    return sorted({steps[round(i * (len(steps) - 1) / (n - 1))] for i in range(n)})


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.3g}"


def _cell(row: dict | None) -> str:
    if row is None:
        return "<td class='none'>–</td>"
    out = []
    for i, c in enumerate(row["completions"][:MAX_COMPLETIONS]):
        terms = ", ".join(f"{k} {_fmt(v[i])}" for k, v in sorted(row.get("terms", {}).items()))
        text = c if len(c) <= MAX_CHARS else c[:MAX_CHARS] + " …"
        out.append(f"<div class='c'>{html.escape(text)} <span class='r' title='{html.escape(terms)}'>"
                   f"[reward {_fmt(row['rewards'][i])}{'; ' + html.escape(terms) if terms else ''}]</span></div>")
    more = len(row["completions"]) - MAX_COMPLETIONS
    return "<td>" + "".join(out) + (f"<div class='r'>+{more} more</div>" if more > 0 else "") + "</td>"


def samples_html(groups: dict) -> str:
    """``groups``: {label: [Run, ...]} -> the section's HTML ("" when no run logged samples)."""
    by_group = {}
    for label, runs in groups.items():
        run = next((r for r in runs if r.samples), None)
        by_group[label] = {(s["step"], s["prompt"]): s for s in (run.samples if run else [])}
    steps = _spread(sorted({step for rows in by_group.values() for step, _ in rows}), MAX_STEPS)
    if not steps:
        return ""
    labels = list(groups)
    head = "".join(f"<th>{html.escape(str(g))}</th>" for g in labels)
    body = []
    for step in steps:
        prompts = list(dict.fromkeys(p for g in labels for s, p in by_group[g] if s == step))[:MAX_PROMPTS]
        for p in prompts:
            cells = "".join(_cell(by_group[g].get((step, p))) for g in labels)
            body.append(f"<tr data-step='{step}'><td>{step}</td><td class='c'>{html.escape(p)}</td>{cells}</tr>")
    return ("<h2 id='samples'>Samples</h2><div class='notes'>The first prompts of the rollout at a logged step "
            "(trainer.log_samples_every), each group's completions side by side with their reward and reward "
            "terms (same seed and data: same prompts).</div><table class='samples'><thead><tr><th>step</th>"
            f"<th>prompt</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")
