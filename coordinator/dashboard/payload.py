"""What each dashboard endpoint returns: storage reads in one read-only unit of
work, plus the words a person reads (boundary flags explained)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from coordinator.flagtext import BoundaryFlag, flag_action, flag_message
from storage import dashboard as reads
from storage.db import transact

FLAG_HELP = ("A boundary flag means a stage's own trials point past an edge of the range that "
             "stage sampled (the best is the most extreme value tried there and the scores "
             "rise towards it, or every trial diverged): the true optimum may lie outside it, "
             "and the next stage's range moves past that edge.")


def sweeps(engine: Engine) -> dict[str, Any]:
    return {"sweeps": transact(engine, reads.sweep_list)}


def sweep(engine: Engine, sweep_id: int) -> dict[str, Any] | None:
    def work(s: Session) -> dict[str, Any] | None:
        header = reads.sweep_header(s, sweep_id)
        if header is None:
            return None
        stages = reads.stage_rows(s, sweep_id)
        flags = reads.flag_rows(s, sweep_id)
        for f in flags:
            f["message"] = _flag_message(f, stages, header)
        return {"sweep": header, "stages": stages, "flags": flags, "flag_help": FLAG_HELP,
                "top": reads.top_trials(s, sweep_id), "unscored": reads.unscored_trials(
                    s, sweep_id), "ensembles": reads.ensemble_rows(s, sweep_id),
                "best_so_far": reads.best_so_far(s, sweep_id),
                "version": reads.sweep_version(s, sweep_id)}

    return transact(engine, work)


def _flag_message(flag: dict[str, Any], stages: list[dict[str, Any]],
                  header: dict[str, Any]) -> str:
    """``hpsweep status``'s words for a flag; integer parameters shown as integers."""
    ranges = next((st["ranges"] for st in stages if st["idx"] == flag["stage"]), {})
    whole = ranges.get(flag["param"], {}).get("integer", False)
    value, low, high = ((round(flag[k]) if whole else flag[k]) for k in ("value", "low", "high"))
    f = BoundaryFlag(flag["param"], value, low, high, flag["side"], flag["at_limit"],
                     flag["scale"], flag["limit"], flag.get("reason", ""))
    following = next((st["ranges"] for st in stages if st["idx"] == flag["stage"] + 1
                      and st["kind"] == "search"), {})
    return flag_message(f, flag_action(f, flag["stage"], header["n_stages"], header["name"],
                                       following.get(flag["param"])))


def points(engine: Engine, sweep_id: int) -> dict[str, Any]:
    return transact(engine, lambda s: reads.scatter_points(s, sweep_id))


def trial(engine: Engine, trial_id: int) -> dict[str, Any] | None:
    def work(s: Session) -> dict[str, Any] | None:
        detail = reads.trial_detail(s, trial_id)
        if detail is not None:
            detail["version"] = reads.trial_version(s, trial_id)
        return detail

    return transact(engine, work)


def curves(engine: Engine, trial_ids: list[int]) -> dict[str, Any]:
    found = transact(engine, lambda s: reads.curves(s, trial_ids))
    return {"curves": {str(k): v for k, v in found.items()}}


def version(engine: Engine, sweep_id: int | None, trial_id: int | None) -> Any:
    def work(s: Session) -> Any:
        if trial_id is not None:
            return reads.trial_version(s, trial_id)
        if sweep_id is not None:
            return reads.sweep_version(s, sweep_id)
        return reads.sweeps_version(s)

    return transact(engine, work)
