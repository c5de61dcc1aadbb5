"""``mlffm <command> --help`` states the default of every option that has one."""

import argparse

import pytest

from training.cli import build_parser


def _commands() -> dict[str, argparse.ArgumentParser]:
    return next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices


@pytest.mark.parametrize("command", sorted(_commands()))
def test_every_option_with_a_default_says_it_in_its_help(command):
    parser = _commands()[command]
    silent = []
    for action in parser._actions:
        if not action.option_strings or isinstance(action, (argparse._HelpAction, argparse._StoreTrueAction)):
            continue
        if action.default is None:
            continue
        text = (action.help or "") % {"default": action.default}
        if "default" not in text.lower():
            silent.append(action.option_strings[-1])
    assert not silent, f"mlffm {command}: options whose help does not state their default: {silent}"
