"""The terminal's words for ``hpsweep ensemble``: an ensemble's scores beside the best
single model's (the gain coloured, a warning when the ensemble is worse), or, when the
command does not wait, what it queued for the seeds stage."""

from __future__ import annotations

from coordinator.ensemble import EnsembleResult, Scores, SeedsPlan
from coordinator.term import paint


def result_text(r: EnsembleResult, color: bool = False) -> str:
    """The result as a few lines that fit 80 columns; the gain stands out."""
    shown = ", ".join(f"{m.trial_id}@{m.epoch}" + ("/ema" if m.weights == "ema" else "")
                      for m in r.members)
    if len(shown) > 66:
        shown = shown[:63] + "..."
    many = "" if len(r.members) >= r.asked or r.method == "average" else f" ({r.asked} asked)"
    gain = Scores(r.ensemble.val_acc - r.single.val_acc, r.ensemble.test_acc - r.single.test_acc)
    lines = [
        f"ensemble {r.method} of sweep {r.sweep}: {len(r.members)} member(s){many}",
        f"  members: {shown}",
        f"  {'':<12} {'val_acc':>9} {'test_acc':>9}",
        f"  {'ensemble':<12} {r.ensemble.val_acc:>9.4f} {r.ensemble.test_acc:>9.4f}",
        f"  {'best single':<12} {r.single.val_acc:>9.4f} {r.single.test_acc:>9.4f}"
        f"   trial {r.single_trial_id}",
        "  " + f"{'gain':<12} " + " ".join(
            paint(f"{g:>+9.4f}", color, fg="green" if g > 0 else "red" if g < 0 else None)
            for g in (gain.val_acc, gain.test_acc)),
    ]
    if gain.val_acc < 0:
        lines.append(paint(f"note: the ensemble's validation accuracy is LOWER than the best "
                           f"single model's ({r.ensemble.val_acc:.4f} < "
                           f"{r.single.val_acc:.4f})", color, fg="yellow"))
    lines.append(f"recorded as ensembles row {r.id}")
    return "\n".join(lines)


def plan_text(plan: SeedsPlan) -> str:
    what = "queued" if plan.created else "reusing"
    return (f"{what} {len(plan.trial_ids)} seed trial(s) in stage id {plan.stage_id} on queue "
            f"{plan.queue!r}; run the same command again once workers have trained them")
