"""The ``triage`` command line: every option of every command says what it does and what it defaults to, and
``triage train`` passes the model's name and version on and refuses a weak model unless told to keep it."""

from __future__ import annotations

import argparse
import re
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from triage_cli.commands import WEAK_MODEL, build_parser, main


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (choices,) = [a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(choices)


def parity_parser(monkeypatch: pytest.MonkeyPatch) -> argparse.ArgumentParser:
    """The parser ``triage parity`` hands its arguments to (export.parity builds it inside its ``main``)."""

    class Built(Exception):
        pass

    def capture(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        raise Built(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    with pytest.raises(Built) as built:
        main(["parity"])
    return built.value.args[0]


def rendered_help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The help text ``--help`` prints for one action, whitespace collapsed."""
    formatter = parser.formatter_class(prog=parser.prog)
    formatter.add_argument(action)
    return " ".join(formatter.format_help().split())


def test_every_option_of_every_command_has_help_and_shows_its_default(monkeypatch: pytest.MonkeyPatch) -> None:
    parsers = subcommands(build_parser())
    assert set(parsers) == {"train", "export", "parity", "synth", "predict", "serve", "explain", "report"}
    parsers["parity"] = parity_parser(monkeypatch)
    checked = 0
    for name, parser in parsers.items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            where = f"triage {name} {'/'.join(action.option_strings) or action.dest}"
            assert action.help, f"{where} has no help text"
            text = rendered_help(parser, action)
            flag, required = action.nargs == 0, action.required or not action.option_strings
            if not (flag or required):
                assert "default" in text, f"{where} does not show its default: {text!r}"
                if action.default is not None:
                    assert f"(default: {action.default})" in text, f"{where}: {text!r}"
            checked += 1
    assert checked >= 30  # every command's options, not a few of them


def test_synth_help_names_its_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["synth", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for default in ("(default: 100)", "(default: 0)", "(default: test)"):
        assert default in text


def test_defaults_said_in_words_are_the_real_ones() -> None:
    """Where the help says a default in words (the value is chosen later), it says the value the code uses."""
    from model.train import DEFAULT_EPOCHS, DEFAULT_N_TRAIN, PRETRAINED_EPOCHS, PRETRAINED_N_TRAIN
    from service.settings import Settings

    parsers = subcommands(build_parser())
    train = {a.dest: rendered_help(parsers["train"], a) for a in parsers["train"]._actions}
    assert f"(default: {DEFAULT_EPOCHS} from scratch, {PRETRAINED_EPOCHS} from pretrained weights)" in train["epochs"]
    assert (
        f"(default: {DEFAULT_N_TRAIN} from scratch, {PRETRAINED_N_TRAIN} from pretrained weights;" in train["n_train"]
    )
    assert f"exits {WEAK_MODEL}" in train["allow_weak"]
    serve = {a.dest: rendered_help(parsers["serve"], a) for a in parsers["serve"]._actions}
    defaults = Settings.model_fields
    assert f"else {defaults['host'].default})" in serve["host"] and f"else {defaults['port'].default})" in serve["port"]


def fake_training(monkeypatch: pytest.MonkeyPatch, warnings: list[str]) -> list[Any]:
    """Replace ``model.train.train`` by one that records its options and returns a card with ``warnings``."""
    import model.train as training

    calls: list[Any] = []

    def record(options: training.TrainOptions, config: Any) -> dict[str, Any]:
        calls.append(options)
        return {"warnings": warnings}

    monkeypatch.setattr(training, "train", record)
    return calls


def test_train_names_a_retrained_model_for_what_it_is_unless_told(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from model.card import RETRAINED_NAME

    calls = fake_training(monkeypatch, [])
    assert main(["train", "--out", str(tmp_path / "a")]) == 0
    assert main(["train", "--out", str(tmp_path / "b"), "--name", "returns-desk", "--version", "2.1.0"]) == 0
    assert (calls[0].name, calls[0].version) == (RETRAINED_NAME, None)  # None: training's start time, see below
    assert (calls[1].name, calls[1].version) == ("returns-desk", "2.1.0")
    assert RETRAINED_NAME != "ticket-photo-triage"  # the shipped model's name


def test_retrained_version_is_the_utc_start_time() -> None:
    from datetime import datetime, timedelta, timezone

    from model.card import retrained_version

    east = timezone(timedelta(hours=5, minutes=30))
    assert retrained_version(datetime(2026, 12, 8, 3, 41, 12, tzinfo=east)) == "20261207T221112Z"
    now = retrained_version()
    assert re.fullmatch(r"\d{8}T\d{6}Z", now)
    parsed = datetime.strptime(now, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - parsed).total_seconds()) < 3600


def test_a_weak_model_exits_with_its_own_status_unless_allowed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_training(monkeypatch, ["val accuracy 0.5000 is near chance"])
    assert main(["train", "--out", str(tmp_path / "a")]) == WEAK_MODEL
    assert "too weak" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "b"), "--allow-weak"]) == 0
    assert WEAK_MODEL not in (0, 1, 2)  # not success, a failed photo or parity check (or a traceback), a usage error
