"""The decoding options are one set: every entry point takes exactly GenerationOptions' fields, with
its defaults (a field added, renamed or re-defaulted in one place only fails here)."""

import dataclasses
import inspect

import pytest
from udrl.cli import build_parser
from udrl.generate import DEFAULTS, GenerationOptions
from udrl.model import Model
from udrl.server import CompletionRequest, GenerateRequest

FIELDS = {f.name: getattr(DEFAULTS, f.name) for f in dataclasses.fields(GenerationOptions)}
COMMAND = {"task", "length", "reward"}


@pytest.mark.parametrize("method", [Model.submit, Model.stream, Model.generate, Model.generate_batch])
def test_each_model_method_takes_the_options_with_their_defaults(method):
    params = inspect.signature(method).parameters
    options = {name: p.default for name, p in params.items()
               if name not in {"self", "query", "requests", "on_piece", "on_done"} | COMMAND}
    assert options == FIELDS


def test_the_cli_flags_are_the_options_with_their_defaults():
    args = build_parser().parse_args(["generate", "a poster"])
    switches = {"length_guard", "whole_words"}  # on by default, turned off by --no-... flags
    assert {name: getattr(args, name) for name in FIELDS if name not in switches} == {
        name: value for name, value in FIELDS.items() if name not in switches}
    assert args.no_length_guard is (not DEFAULTS.length_guard)
    assert args.no_whole_words is (not DEFAULTS.whole_words)


@pytest.mark.parametrize("request_type", [CompletionRequest, GenerateRequest])
def test_the_server_takes_the_options_with_their_defaults(request_type):
    body = {"prompt": "a poster"} if request_type is CompletionRequest else {"query": "a poster"}
    options = request_type(**body).options()
    assert {name: value for name, value in options.items() if name not in COMMAND} == FIELDS
