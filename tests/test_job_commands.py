"""Every job command the documentation writes (README.md, docs/, cluster.yaml, deploy/) parses with
that job's own command line: each script runs as `python jobs/X.py ...` runs it, with its
`ArgumentParser` stopped right after parsing, so a flag the job does not have fails here."""

from __future__ import annotations

import argparse
import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest

from checkout import REPO_ROOT

SOURCES = [
    REPO_ROOT / "README.md",
    REPO_ROOT / "cluster.yaml",
    *sorted((REPO_ROOT / "docs").rglob("*.md")),
    *sorted(p for p in (REPO_ROOT / "deploy").rglob("*") if p.is_file()),
]
SCRIPT = re.compile(r"(?:^|(?<=[\s/]))((?:jobs|pipelines)/\w+\.py)\b(.*)")
SHELL_BREAKS = {"&&", "||", ";", "|", ">", ">>", "2>&1", "&"}
ELIDED = "..."


def code_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of each piece of code in a file: a fenced block's lines and an inline code
    span in Markdown, every line of a YAML file or Dockerfile (comments included: they hold commands),
    with backslash-continued lines joined."""
    text = path.read_text()
    if path.suffix != ".md":
        pieces = [(n, re.sub(r"^\s*#\s?", "", line)) for n, line in enumerate(text.splitlines(), 1)]
        return join_continued(pieces)
    pieces, prose, fenced = [], [], False
    for n, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            prose.append("")
        elif fenced:
            pieces.append((n, line))
            prose.append("")
        else:
            prose.append(line)
    spans = [
        ("\n".join(prose)[: m.start()].count("\n") + 1, " ".join(m.group(1).split()))
        for m in re.finditer(r"`([^`]+)`", "\n".join(prose))
    ]
    return join_continued(pieces) + spans


def join_continued(pieces: list[tuple[int, str]]) -> list[tuple[int, str]]:
    joined: list[tuple[int, str]] = []
    carry: tuple[int, str] | None = None
    for n, line in pieces:
        start, text = carry if carry else (n, "")
        text += line
        if line.rstrip().endswith("\\"):
            carry = (start, text.rstrip()[:-1] + " ")
        else:
            carry = None
            joined.append((start, text))
    return joined + ([carry] if carry else [])


def job_commands() -> list[tuple[str, str, list[str], bool]]:
    """(where, script, arguments, launched) of each job command written in SOURCES; `launched`: run by
    python or torchrun there, not named in a sentence (`jobs/explain.py --gpu`), where the arguments
    that every run needs may be left out."""
    found = []
    for path in SOURCES:
        for line, code in code_lines(path):
            for match in SCRIPT.finditer(code):
                rest = re.sub(r"<[^<>]*>", "PLACEHOLDER", match.group(2))  # <bucket>, <downloaded dir>
                try:
                    words = shlex.split(rest, comments=True)
                except ValueError:  # a quote closed on the next line: the words up to it
                    words = shlex.split(rest.split("'")[0].split('"')[0], comments=True)
                arguments = []
                for word in words:
                    if word in SHELL_BREAKS or SCRIPT.match(word):
                        break
                    arguments.append(word)
                launched = re.search(r"\b(python3?|torchrun)\b", code[: match.start()]) is not None
                found.append((f"{path.relative_to(REPO_ROOT)}:{line}", match.group(1), arguments, launched))
    return found


COMMANDS = job_commands()


class Parsed(Exception):
    pass


class Refused(Exception):
    pass


def parse_with_the_job(script: str, arguments: list[str], monkeypatch) -> argparse.Namespace:
    """Run the script as `python <script> <arguments>` does, stopping when its parser has parsed them."""
    parse_args = argparse.ArgumentParser.parse_args

    def parse_only(self, args=None, namespace=None):
        raise Parsed(parse_args(self, args, namespace))

    def refuse(self, message):
        raise Refused(message)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_only)
    monkeypatch.setattr(argparse.ArgumentParser, "error", refuse)
    monkeypatch.setattr(sys, "argv", [script, *arguments])
    try:
        runpy.run_path(str(REPO_ROOT / script), run_name="__main__")
    except Parsed as parsed:
        return parsed.args[0]
    raise AssertionError(f"{script} finished without parsing a command line")


def test_the_documentation_writes_commands_for_every_kind_of_place():
    places = {where.split(":")[0] for where, *_ in COMMANDS}
    assert {"README.md", "cluster.yaml", "docs/training.md", "docs/evaluation.md"} <= places
    assert any(p.startswith("deploy/") for p in places)
    assert any(script == "jobs/evaluate.py" and where.startswith("cluster.yaml") for where, script, *_ in COMMANDS)


@pytest.mark.parametrize(("where", "script", "arguments", "launched"), COMMANDS, ids=[c[0] for c in COMMANDS])
def test_a_documented_job_command_parses_with_the_job_s_own_parser(where, script, arguments, launched, monkeypatch):
    # `jobs/explain.py ... --token 0`, or a job named in a sentence: the required arguments are left out
    elided = ELIDED in arguments or not launched
    arguments = [a for i, a in enumerate(arguments) if a != ELIDED or i > 0 and arguments[i - 1].startswith("--")]
    try:
        parse_with_the_job(script, arguments, monkeypatch)
    except Refused as refused:
        if not (elided and str(refused).startswith("the following arguments are required")):
            raise AssertionError(f"{where}: {script} {shlex.join(arguments)}: {refused}") from None


def test_a_flag_the_job_does_not_have_is_refused(monkeypatch):
    with pytest.raises(Refused, match="unrecognized arguments: --gpu --actors 8"):
        parse_with_the_job("jobs/evaluate.py", ["--config", "llava-7b/evaluate", "--gpu", "--actors", "8"], monkeypatch)
