"""``mlffm segment``: propose masks for images and folders, writing ISIC-style outputs.

Each case is written all or nothing (:mod:`training.files.segment_case`), so a
batch that was killed, ran out of disk or hit a bad image is resumed by
running the same command again: finished cases are counted and kept,
unfinished ones are written, temporaries of killed writes are swept. A
finished case is kept only if its sidecar records this run's result key:
the SHA-256 of the input file, the checkpoint id, samples, steps, seed and
eta. One whose image or settings differ, or whose sidecar predates these
fields, is left untouched and named in one line saying what differs; the
other cases still go through and the run exits 1; ``--overwrite`` replaces
it (all or nothing, as any case is written). Which files are read, and where
``--recursive`` puts a subfolder's outputs: :mod:`training.commands.segment_inputs`.
An image whose outputs' names would pass the file system's name limit (255
bytes) is skipped in one line before anything is written. Paths
in messages show control characters escaped (``'bad\\x1b[2J.png'``), so each
message stays one line. ``--shard i/n`` (independent jobs) and torchrun ranks
split the sorted image list; the files written are the same as one
process's.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tqdm import tqdm

from model import Segmenter

from ..cli_types import add_flat_field_argument, flat_field_choice, path_arg, samples_arg, seed_arg, steps_arg
from ..loop.distributed import Distributed, parse_shard, rank_device, session
from ..data.imageio import read_image
from ..files.outputs import check_writable_folder, display, escape_unprintable, one_line
from ..files.file_names import name_limit
from .segment_inputs import collect_images
from ..files.segment_case import (
    OUTPUT_SUFFIXES,
    CaseState,
    case_state,
    check_still,
    claim_new_case,
    clear_marker,
    encode_case,
    file_sha256,
    matches_existing,
    name_too_long,
    output_paths,
    result_differences,
    sweep_temporaries,
    write_case,
)

__all__ = ["OUTPUT_SUFFIXES", "add_segment_arguments", "collect_images", "output_paths", "run_segment"]


def add_segment_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", type=Path, help="images or folders of images")
    parser.add_argument("-o", "--output", type=path_arg, required=True, help="output folder (created if missing; may be the input folder)")
    parser.add_argument("--checkpoint", type=Path, help="model file (default: the shipped weights)")
    parser.add_argument("--samples", type=samples_arg, help="number of proposals per image (default: the model's; 16 for the shipped weights)")
    parser.add_argument("--steps", type=steps_arg, help="DDIM steps (default: the model's; 5 for the shipped weights)")
    parser.add_argument("--seed", type=seed_arg, default=0, help="random seed of the proposals (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda or mps; a missing GPU is an error (default: %(default)s)")
    add_flat_field_argument(parser, "override the model's choice")
    parser.add_argument(
        "--overwrite", action="store_true",
        help="replace existing outputs (without it, finished cases of the same image and settings are kept, "
        "unfinished ones completed, and ones made from another image or with other settings refused)",
    )
    parser.add_argument(
        "--recursive", action="store_true",
        help="also read the subfolders of the folders given (not links to folders), each one's outputs going to the same "
        "subfolder of -o",
    )
    parser.add_argument(
        "--shard", metavar="I/N",
        help="segment only images I, I+N, I+2N, ... of the sorted list (0 <= I < N): one of N independent jobs "
        "(Slurm array, Kubernetes job) writing to one output folder",
    )


ETA = 0.0  # deterministic DDIM; recorded (and compared) so that a future --eta cannot reuse stale outputs


def run_settings(segmenter: Segmenter, args: argparse.Namespace, source_sha256: str) -> dict:
    """This run's result key for one input (the fields of ``RESULT_KEYS``), as recorded in its sidecar."""
    return {
        "source_sha256": source_sha256,
        "checkpoint_id": segmenter.checkpoint_id,
        "samples": args.samples,
        "steps": args.steps,
        "seed": args.seed,
        "eta": ETA,
        "flat_field": segmenter.config.flat_field,
    }


def segment_case(segmenter: Segmenter, path: Path, out_dir: Path, args: argparse.Namespace, state: CaseState, shard: str | None) -> tuple[str, ...]:
    """Propose masks for one image and write its five files, all or nothing; return the proposal's notes (a blank image, a fallback)."""
    started = time.perf_counter()
    settings = run_settings(segmenter, args, file_sha256(path))
    image = read_image(path)
    read_seconds = time.perf_counter() - started
    proposal = segmenter.propose(image, n_samples=args.samples, steps=args.steps, seed=args.seed, eta=ETA)
    record = {
        "source": str(path),
        "image_size": [int(image.shape[1]), int(image.shape[0])],
        "checkpoint": str(args.checkpoint) if args.checkpoint else "shipped default",
        **settings,
        "device": str(segmenter.device),
        **({"shard": shard} if shard else {}),
        "working_size": segmenter.config.size,
        "threshold": proposal.threshold,
        "lesion_fraction": float(proposal.consensus.mean()),
        "mean_uncertainty": float(proposal.uncertainty.mean()),
        "notes": list(proposal.notes),
        "timings": {"read_seconds": round(read_seconds, 4), "propose_seconds": round(proposal.seconds, 4), "total_seconds": round(time.perf_counter() - started, 4)},
    }
    case = encode_case(path.stem, proposal.consensus, proposal.probability, proposal.uncertainty, proposal.samples)
    if state is CaseState.FOREIGN and not args.overwrite and not matches_existing(out_dir, case):
        existing = next(p for p in output_paths(out_dir, path.stem) if p.exists())
        raise FileExistsError(f"{one_line(existing)}: already exists and was not written by this run (use --overwrite to replace it)")
    claimed = state is CaseState.NEW and not args.overwrite
    if claimed:
        claim_new_case(out_dir, path.stem)  # another run into the same folder may have written it meanwhile
    elif not args.overwrite:
        check_still(out_dir, path.stem, state)  # a killed run's case, unless a live run is writing or has written it
    write_case(out_dir, case, record, claimed=claimed)
    return proposal.notes


def describe_error(path: Path, err: BaseException) -> str:
    """One line for a failed image, naming it (control characters in its name escaped, the reason kept)."""
    shown = one_line(path)
    text = str(err).strip()
    for raw in (str(path), display(path), path.name):  # a name's newline must not cut the message before its reason
        if raw != escape_unprintable(raw):
            text = text.replace(raw, shown if raw != path.name else one_line(path.name))
    text = escape_unprintable(text.splitlines()[0]) if text else ""
    if isinstance(err, MemoryError) or "out of memory" in text.lower() or "can't allocate" in text.lower():
        reason = f"out of memory ({text})" if text else "out of memory"
    elif isinstance(err, (ValueError, OSError)):
        reason = text or type(err).__name__
    else:
        reason = f"failed ({type(err).__name__}: {text})" if text else f"failed ({type(err).__name__})"
    return reason if shown in reason else f"{shown}: {reason}"


def _remove_if_empty(folder: Path) -> bool:
    """Remove ``folder`` if it holds nothing; whether it was removed."""
    try:
        folder.rmdir()  # fails on a folder that holds anything
    except OSError:
        return False
    return True


def run_segment(args: argparse.Namespace) -> int:
    """``mlffm segment``; under torchrun each rank takes every world_size-th image (gloo gathers the summary)."""
    with session(args.device, gpu_collectives=False) as ctx:
        return _run_segment(args, ctx)


def _say(ctx: Distributed, line: str) -> None:
    if ctx.is_main:
        tqdm.write(f"mlffm segment: {line}", file=sys.stderr)


def _run_segment(args: argparse.Namespace, ctx: Distributed) -> int:
    if any(value is not None and value < 1 for value in (args.samples, args.steps)):
        raise ValueError("--samples and --steps must be >= 1")
    if args.output.exists() and not args.output.is_dir():
        raise ValueError(f"{one_line(args.output)}: -o must be a folder, and this is a file")
    shard_index, shard_count = parse_shard(args.shard) if args.shard else (0, 1)
    inputs = collect_images(args.paths, args.output, args.recursive)
    problems = inputs.problems
    for line in problems + inputs.notes:
        _say(ctx, line)
    if inputs.ignored:
        _say(ctx, f"passed over {inputs.ignored} files named like segment outputs (*{', *'.join(OUTPUT_SUFFIXES[:-1])})")
    out_dirs = {path: args.output / inputs.subfolder.get(path, Path()) for path in inputs.images}
    stems: dict[tuple[Path, str], Path] = {}
    unique = []
    limit = name_limit(args.output)
    for path in inputs.images:
        too_long = name_too_long(path.stem, limit)
        key = (out_dirs[path], path.stem)
        if too_long or key in stems:
            problems.append(f"{one_line(path)}: skipped, " + (too_long or f"its outputs would clash with {one_line(stems[key])}'s"))
            _say(ctx, problems[-1])
            continue
        stems[key] = path
        unique.append(path)
    if not unique:
        _say(ctx, "nothing to do")
        return 1
    job = unique[shard_index::shard_count]
    mine = job[ctx.rank :: ctx.world_size]
    n_ranks = shard_count * ctx.world_size
    shard = f"{shard_index * ctx.world_size + ctx.rank}/{n_ranks}" if n_ranks > 1 else None
    args.device = rank_device(args.device, ctx)
    segmenter = Segmenter.load(args.checkpoint, args.device)
    segmenter = segmenter.with_options(flat_field=flat_field_choice(args.flat_field, segmenter.config.flat_field))
    args.samples, args.steps = segmenter.sampling_settings(args.samples, args.steps)
    created = not args.output.exists()  # a folder this run makes is not left behind empty
    args.output.mkdir(parents=True, exist_ok=True)
    check_writable_folder(args.output)  # a read-only folder: one line now, not one per image after its work
    swept, own_problems, made = [], [], []
    for out_dir in sorted({out_dirs[p] for p in mine}):
        try:  # a subfolder of -o for --recursive: one that cannot be made is its images' problem, not the batch's
            new = [d for d in (out_dir, *out_dir.parents) if args.output in d.parents and not d.exists()]
            out_dir.mkdir(parents=True, exist_ok=True)
            made += new
        except OSError as err:
            failed = [p for p in mine if out_dirs[p] == out_dir]
            own_problems += [f"{one_line(p)}: skipped, its output folder {one_line(out_dir)} cannot be made ({err.strerror or type(err).__name__})" for p in failed]
            for line in own_problems[-len(failed):]:
                tqdm.write(f"mlffm segment: {line}", file=sys.stderr)
            mine = [p for p in mine if p not in failed]
            continue
        swept += sweep_temporaries(out_dir, {p.stem for p in mine if out_dirs[p] == out_dir})
    todo: list[tuple[Path, CaseState]] = []
    already = 0
    for path in mine:
        try:  # an error looking at one case's files (a path past PATH_MAX, an I/O error) is that case's, not the batch's
            state = CaseState.NEW if args.overwrite else case_state(out_dirs[path], path.stem)
            stale = None
            if state is CaseState.FINISHED:
                stale = result_differences(out_dirs[path], path.stem, run_settings(segmenter, args, file_sha256(path)))
        except OSError as err:
            own_problems.append(describe_error(path, err))
            tqdm.write(f"mlffm segment: {own_problems[-1]}", file=sys.stderr)
            continue
        if state is CaseState.FINISHED:
            if stale:
                own_problems.append(f"{one_line(path)}: {stale}; its outputs are kept (rerun with --overwrite to replace them)")
                tqdm.write(f"mlffm segment: {own_problems[-1]}", file=sys.stderr)
                continue
            already += 1
            clear_marker(out_dirs[path], path.stem)
        elif state is CaseState.CHANGED:
            own_problems.append(
                f"{one_line(out_dirs[path] / (path.stem + '.json'))}: already exists and its outputs changed since they were written "
                "(edited?); kept (use --overwrite to replace them)"
            )
            tqdm.write(f"mlffm segment: {own_problems[-1]}", file=sys.stderr)
        else:
            todo.append((path, state))
    done = 0
    for path, state in tqdm(todo, desc="segmenting", unit="image", dynamic_ncols=True, disable=not ctx.is_main):
        try:
            for note in segment_case(segmenter, path, out_dirs[path], args, state, shard):
                tqdm.write(f"mlffm segment: {one_line(path)}: {note}", file=sys.stderr)
            done += 1
        except Exception as err:  # noqa: BLE001 - one bad image must not end an archive's batch
            own_problems.append(describe_error(path, err))
            tqdm.write(f"mlffm segment: {own_problems[-1]}", file=sys.stderr)
    counts = ctx.all_gather((done, already, len(swept), own_problems))
    done = sum(c[0] for c in counts)
    already = sum(c[1] for c in counts)
    swept_total = sum(c[2] for c in counts)
    problems += [line for c in counts for line in c[3]]
    if ctx.is_main:
        if swept_total:
            print(f"mlffm segment: removed {swept_total} temporary files left by an earlier run that was stopped", file=sys.stderr)
        kept = f", {already} already segmented (kept)" if already else ""
        where = f" (shard {shard_index}/{shard_count})" if shard_count > 1 else ""
        alone = n_ranks == 1  # another shard may be writing into the folder it made
        for folder in sorted(set(made), key=lambda d: len(d.parts), reverse=True) if alone else []:
            _remove_if_empty(folder)  # a subfolder of -o this run made for images none of which was written
        if created and alone and not done and not already and _remove_if_empty(args.output):
            where += " (nothing written: the folder this run made is removed)"
        print(f"{done} segmented, {len(problems)} skipped{kept} -> {one_line(args.output)}{where}")
        if problems:
            print("skipped:", file=sys.stderr)
            for line in problems:
                print(f"  {line}", file=sys.stderr)
    return 0 if not problems else 1
