"""The ``mlffm`` subcommands: argument parsing and the run of each, over the library in :mod:`training`.

One module per command (``train`` also holds ``finetune``); :mod:`training.cli`
dispatches to them.
"""
