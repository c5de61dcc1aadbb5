"""The ``mlffm`` command line: segment, train, finetune, evaluate, calibrate, adapt, average."""

from __future__ import annotations

import argparse
import shlex
import sys
import warnings


def build_parser() -> argparse.ArgumentParser:
    from .commands.adapt import add_adapt_arguments
    from .commands.average import add_average_arguments
    from .commands.calibrate import add_calibrate_arguments
    from .commands.evaluate import add_evaluate_arguments
    from .commands.segment import add_segment_arguments
    from .commands.train import add_finetune_arguments, add_train_arguments

    parser = argparse.ArgumentParser(prog="mlffm", description="Diffusion segmentation of skin lesions in dermoscopic images.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_segment_arguments(sub.add_parser("segment", help="propose masks for images or folders"))
    add_train_arguments(sub.add_parser("train", help="train a model on a dataset folder"))
    add_finetune_arguments(sub.add_parser("finetune", help="fine-tune a model on corrected masks"))
    add_evaluate_arguments(sub.add_parser("evaluate", help="score a model on a dataset split"))
    add_calibrate_arguments(sub.add_parser("calibrate", help="fit the probability temperature and decision threshold on validation cases"))
    add_adapt_arguments(sub.add_parser("adapt", help="adapt a model to corrected cases: calibration or fine-tune + calibration, chosen by held-out Dice"))
    add_average_arguments(sub.add_parser("average", help="average the weights of models of one architecture (a model soup)"))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit status (2 for an error, 130 for Ctrl-C, 143 for SIGTERM).

    A SIGTERM (``kill``, ``timeout``, a batch scheduler) is handled as a Ctrl-C is: the clean-ups run
    (locks, claim markers, work folders) and one line says so. Training loops stop after the batch
    and save, as they do for a first Ctrl-C.
    """
    from .loop.interrupt import TerminateAsInterrupt

    argv = sys.argv[1:] if argv is None else list(argv)
    show_warning = warnings.showwarning
    warnings.showwarning = _show_warning_line
    try:
        with TerminateAsInterrupt():
            return _main(argv)
    finally:
        warnings.showwarning = show_warning


def _show_warning_line(message: Warning | str, category: type[Warning], filename: str, lineno: int, file=None, line=None) -> None:
    """A warning as one line, 'warning: <file>: <what>', above a progress bar instead of through it."""
    from tqdm import tqdm

    from .files.outputs import escape_unprintable

    tqdm.write(f"warning: {escape_unprintable(str(message))}", file=sys.stderr)


def _interrupted(command: str, err: KeyboardInterrupt) -> int:
    from .loop.interrupt import Terminated

    terminated = isinstance(err, Terminated)
    print(f"{command}: {'terminated (SIGTERM)' if terminated else 'interrupted'}", file=sys.stderr)
    return 143 if terminated else 130


def _main(argv: list[str]) -> int:
    try:
        args = build_parser().parse_args(argv)  # imports torch and the commands: a Ctrl-C here is one line too
    except KeyboardInterrupt as err:
        return _interrupted("mlffm", err)
    args.command_line = "mlffm " + shlex.join(argv)  # the command as given, for the provenance of what it writes
    try:
        if args.command == "segment":
            from .commands.segment import run_segment

            return run_segment(args)
        if args.command == "train":
            from .commands.train import run_train

            return run_train(args)
        if args.command == "finetune":
            from .commands.train import run_finetune

            return run_finetune(args)
        if args.command == "calibrate":
            from .commands.calibrate import run_calibrate

            return run_calibrate(args)
        if args.command == "adapt":
            from .commands.adapt import run_adapt

            return run_adapt(args)
        if args.command == "average":
            from .commands.average import run_average

            return run_average(args)
        from .commands.evaluate import run_evaluate

        return run_evaluate(args)
    except (ValueError, OSError, MemoryError) as err:  # CheckpointError is a ValueError; FileExistsError etc. are OSErrors
        from .loop.distributed import PeerLostError, ignore_sigterm

        if isinstance(err, PeerLostError):  # torchrun's agent SIGTERMs the ranks left: this one says why first, as in training
            ignore_sigterm()
        print(f"mlffm {args.command}: error: {str(err) or ('out of memory' if isinstance(err, MemoryError) else 'no message') + f' ({type(err).__name__})'}", file=sys.stderr)
        return 2
    except RuntimeError as err:  # torch's failed allocations (CPU or GPU) are RuntimeErrors: one line, not a traceback
        from model.inputs.limits import is_out_of_memory

        if not (is_out_of_memory(err) or "out of memory" in str(err).lower()):
            raise
        detail = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        print(
            f"mlffm {args.command}: error: out of memory ({detail}): use a smaller --batch-size, --size or --samples, "
            "or a machine with more memory",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt as err:
        return _interrupted(f"mlffm {args.command}", err)


if __name__ == "__main__":
    sys.exit(main())
