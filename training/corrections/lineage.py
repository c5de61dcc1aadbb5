"""The base model of a resumed fine-tune: the original parent, never the resume file.

A fine-tune's resume file holds partly trained weights. A resumed run must
still record the model it started from as the parent, measure "Dice before"
on that model's weights, and fall back to exactly those weights when no
epoch beats them.
"""

from __future__ import annotations

from pathlib import Path

from model import CheckpointError, Segmenter

from ..files.outputs import display


def resumed_base(resume_provenance: dict, checkpoint: Path | None, resume: Path, device) -> tuple[Path | None, Segmenter]:
    """(path, model) of the base that the fine-tune in ``resume`` started from.

    ``checkpoint`` (``--checkpoint``), when given, must be that base; else
    the path recorded in the resume file's provenance is used (None: the
    shipped weights). Raises ValueError naming the files when the base
    cannot be found or is another model (its checkpoint id differs).
    """
    parent = resume_provenance.get("parent")
    if not isinstance(parent, dict) or not isinstance(parent.get("checkpoint_id"), str):
        raise ValueError(f"{display(resume)}: records no base model, so it is not the state of an mlffm finetune run")
    recorded = parent.get("path")
    if checkpoint is not None:
        path: Path | None = Path(checkpoint)
    elif recorded in (None, "shipped default"):
        path = None
    else:
        path = Path(str(recorded))
    try:
        base = Segmenter.load(path, device)
    except (CheckpointError, FileNotFoundError) as err:
        raise ValueError(
            f"{display(resume)}: cannot load its base model {display(path) if path else 'shipped default'} ({err}); "
            "pass the original base with --checkpoint"
        ) from None
    if base.checkpoint_id != parent["checkpoint_id"]:
        raise ValueError(
            f"{display(path) if path else 'the shipped default'} is checkpoint {base.checkpoint_id}, but {display(resume)} "
            f"continues a fine-tune of {parent['checkpoint_id']}; pass that base with --checkpoint"
        )
    return path, base
