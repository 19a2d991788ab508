"""Every job command the documentation writes (README.md, docs/, cluster.yaml, deploy/) parses with
that job's own command line: each script runs as `python jobs/X.py ...` runs it, with its
`ArgumentParser` stopped right after parsing, so a flag the job does not have fails here. Every job
takes one typed spec (`--config`, `--set a.b=c`), and every documented `--set` names a field of that
job's spec and gives it a value the field takes."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from checkout import REPO_ROOT
from mqt_llava.config import apply_overrides, parse_override
from mqt_llava.output import QUIET_LOGGERS

SOURCES = [
    REPO_ROOT / "README.md",
    REPO_ROOT / "cluster.yaml",
    *sorted((REPO_ROOT / "docs").rglob("*.md")),
    *sorted(p for p in (REPO_ROOT / "deploy").rglob("*") if p.is_file()),
]
SCRIPT = re.compile(r"(?:^|(?<=[\s/]))((?:jobs|pipelines)/\w+\.py)\b(.*)")
SHELL_BREAKS = {"&&", "||", ";", "|", ">", ">>", "2>&1", "&"}
ELIDED = "..."

NO_SUCH_FIELD = {"extra_forbidden", "unexpected_keyword_argument"}  # pydantic's, for a model and a dataclass
# Each job's spec, and the spec its `model.<field>` overrides reach where its `model` names a model
# preset (imported when a test needs it: the quickstart's imports all of Ray).
JOB_SPECS = {
    "jobs/stage1.py": ("mqt_llava.train.spec:StageSpec", "mqt_llava.model.spec:ModelSpec"),
    "jobs/stage2.py": ("mqt_llava.train.spec:StageSpec", "mqt_llava.model.spec:ModelSpec"),
    "jobs/memory_plan.py": ("mqt_llava.train.spec:StageSpec", "mqt_llava.model.spec:ModelSpec"),
    "jobs/export_checkpoint.py": ("mqt_llava.train.checkpoint_export:CheckpointExportSpec", None),
    "jobs/import_official.py": ("mqt_llava.model.official:OfficialImportSpec", None),
    "jobs/evaluate.py": ("mqt_llava.eval.spec:EvalSpec", None),
    "jobs/explain.py": ("mqt_llava.explain:ExplainSpec", None),
    "jobs/ablation.py": ("mqt_llava.ablation.spec:AblationSpec", None),
    "jobs/base_models.py": ("mqt_llava.toy.spec:BaseModelsSpec", "mqt_llava.model.spec:ModelSpec"),
    "jobs/quickstart.py": ("mqt_llava.recipes.quickstart:QuickstartSpec", None),
    "pipelines/prepare_llava.py": ("mqt_llava.data.spec:PrepareSpec", "mqt_llava.model.spec:ModelSpec"),
    "pipelines/make_synthetic.py": ("mqt_llava.toy.spec:SyntheticSpec", None),
}


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


def spec_class(ref: str):
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def set_problems(script: str, arguments: list[str]) -> list[str]:
    """What is wrong with each `--set key=value` in `arguments` for `script`'s spec: a key that names
    no field (or goes below one that is not a section), or a value the field refuses. The spec is
    validated from that one override alone, so only the errors at the key's path count."""
    spec_ref, model_ref = JOB_SPECS[script]
    items = [value for flag, value in zip(arguments, arguments[1:], strict=False) if flag == "--set"]
    problems = []
    for item in items:
        key, _, value = item.partition("=")
        elided = value == ELIDED  # `--set model=...`: only the key is checked
        item = f"{key}=PLACEHOLDER" if elided else item
        path, _ = parse_override(item)
        spec = spec_class(spec_ref)
        if model_ref and path[0] == "model" and len(path) > 1:  # model.<field>: the model preset's spec
            spec, path, item = spec_class(model_ref), path[1:], item.partition(".")[2]
        try:
            spec.model_validate(apply_overrides({}, [item]))
        except ValidationError as exc:
            problems += [
                f"--set {item}: {'.'.join(map(str, err['loc']))}: {err['msg']}"
                for err in exc.errors()
                if err["type"] != "missing"
                and tuple(err["loc"][: len(path)]) == tuple(path[: len(err["loc"])])
                and not (elided and len(err["loc"]) == len(path) and err["type"] not in NO_SUCH_FIELD)
            ]
    return problems


def test_every_job_and_pipeline_names_its_spec():
    scripts = {str(p.relative_to(REPO_ROOT)) for d in ("jobs", "pipelines") for p in (REPO_ROOT / d).glob("*.py")}
    assert scripts == set(JOB_SPECS)


@pytest.mark.parametrize(("where", "script", "arguments", "launched"), COMMANDS, ids=[c[0] for c in COMMANDS])
def test_a_documented_set_names_a_field_of_the_job_s_spec(where, script, arguments, launched):
    assert not set_problems(script, arguments), f"{where}: {script} {shlex.join(arguments)}"


def test_a_set_that_names_no_field_or_a_refused_value_is_found():
    assert set_problems("jobs/evaluate.py", ["--set", "budget=2,8,M"]) == [
        "--set budget=2,8,M: budget: Extra inputs are not permitted"
    ]
    assert set_problems("jobs/stage1.py", ["--set", "model.connector.num_querys=64", "--set", "lr=fast"])
    assert set_problems("jobs/quickstart.py", ["--set", "world={num_pretrain: 10, grid: 4}"])
    assert set_problems("pipelines/make_synthetic.py", ["--set", "out.path=x"])  # below a field, not a section
    assert not set_problems("jobs/stage2.py", ["--set", "model.connector.num_queries=64", "--set", "data=s3://b/x"])


@pytest.mark.parametrize("script", sorted(JOB_SPECS))
def test_every_job_takes_config_and_set(script, monkeypatch):
    args = parse_with_the_job(script, ["--config", "some.yaml", "--set", "a.b=1", "--set", "c=2"], monkeypatch)
    assert (args.config, args.overrides) == ("some.yaml", ["a.b=1", "c=2"])


def run_job(script: str, arguments: list[str], monkeypatch) -> int:
    """`python <script> <arguments>`'s exit status, in this process."""
    monkeypatch.setattr(sys, "argv", [script, *arguments])
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(str(REPO_ROOT / script), run_name="__main__")
    return exited.value.code


SPEC_ONLY_JOBS = [  # the jobs that took their own flags before they took one spec
    "pipelines/prepare_llava.py",
    "pipelines/make_synthetic.py",
    "jobs/explain.py",
    "jobs/export_checkpoint.py",
    "jobs/import_official.py",
    "jobs/memory_plan.py",
]


@pytest.mark.parametrize("script", SPEC_ONLY_JOBS)
def test_a_job_refuses_a_field_its_spec_does_not_have_before_any_work(script, monkeypatch, capsys):
    environment = dict(os.environ)
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    assert run_job(script, ["--set", "checkpiont=x"], monkeypatch) == 2
    assert "checkpiont: Extra inputs are not permitted" in capsys.readouterr().err
    # nothing of the process changed: the job quiets the libraries only once its command is accepted
    assert dict(os.environ) == environment and {n: logging.getLogger(n).level for n in QUIET_LOGGERS} == levels


@pytest.mark.parametrize(
    ("script", "missing"),
    [
        ("pipelines/prepare_llava.py", ["json_path", "output", "template"]),
        ("jobs/export_checkpoint.py", ["checkpoint", "out"]),
        ("jobs/import_official.py", ["checkpoint", "out"]),
    ],
)
def test_a_job_without_a_default_config_names_each_missing_field_and_how_to_set_it(
    script, missing, monkeypatch, capsys
):
    assert run_job(script, [], monkeypatch) == 2
    err = capsys.readouterr().err
    assert [name for name in missing if f"{name}: required (in the config, or --set {name}=...)" in err] == missing


def test_the_memory_plan_takes_the_gpu_memory_from_the_stage_spec(monkeypatch, capsys):
    assert run_job("jobs/memory_plan.py", [], monkeypatch) == 0  # llava-7b/stage2 on its 40-GiB GPUs
    assert "fits: " in capsys.readouterr().out
    assert run_job("jobs/memory_plan.py", ["--set", "resources.gpu_memory_gib=20"], monkeypatch) == 1
    assert "does not fit: " in capsys.readouterr().out
    assert run_job("jobs/memory_plan.py", ["--config", "tiny/stage1"], monkeypatch) == 2  # it sets no GPU memory
    assert "resources.gpu_memory_gib: the config sets none" in capsys.readouterr().err
