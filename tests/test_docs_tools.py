"""Examples that call a DICOM tool say which one they mean.

pynetdicom installs its own `storescu`, `storescp`, `echoscu`, `findscu`... into the
virtual environment; activated, they come first on the PATH, take other options than
DCMTK's of the same name, and pynetdicom's storescu exits 0 for files it never sent. So an
example command names DCMTK's by its full path (/usr/bin/storescu) or pynetdicom's as
`python -m pynetdicom storescu`; a bare name would run whichever comes first.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from importlib.metadata import entry_points

import pytest

from helpers.files import ROOT

SHADOWED = sorted(ep.name for ep in entry_points(group="console_scripts")
                  if ep.dist is not None and ep.dist.name.lower() == "pynetdicom")
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CONFIGS = sorted((ROOT / "examples").glob("*.yaml"))
FENCE = re.compile(r"^```(\S*)\s*$")
SHELL_LANGUAGES = {"", "sh", "bash", "shell", "console"}
# Words that run the command that follows them, with their options that take a value.
WRAPPERS = {"sudo": {"-u", "-g"}, "env": set(), "timeout": {"-s", "-k"}, "nohup": set(), "exec": set(),
            "time": set()}
ARGUMENTS_BEFORE_COMMAND = {"timeout": 1}  # its duration
ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=.*")


def test_pynetdicom_still_installs_tools_of_dcmtk_names():
    """What the check below rests on: if pynetdicom stops installing them, it checks nothing."""
    assert {"storescu", "storescp", "echoscu", "findscu"} <= set(SHADOWED)


def example_commands(path) -> list[tuple[int, str]]:
    """(line number, command) of every example command of a page: the `$ ` lines of a
    fenced block, or every line of a shell block without prompts; in a YAML file, the
    commands its comments show (indented under a `#`)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    if path.suffix == ".yaml":
        return [(number, match[1]) for number, line in enumerate(lines, 1)
                if (match := re.match(r"#\s{2,}(\S.*)$", line))]
    found, block, language = [], None, ""
    for number, line in enumerate(lines, 1):
        fence = FENCE.match(line)
        if fence:
            if block is None:
                block, language = [], fence[1]
                continue
            prompted = [(n, text[2:]) for n, text in block if text.startswith("$ ")]
            if prompted:
                found += prompted
            elif language in SHELL_LANGUAGES:
                found += [(n, text) for n, text in block if text.strip() and not text.lstrip().startswith("#")]
            block = None
        elif block is not None:
            block.append((number, line))
    return found


def programs(command: str) -> list[str]:
    """The programs a shell command line runs: each simple command's first word, after
    variable assignments, and the command a wrapper (sudo, env, timeout...) runs."""
    try:
        lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|()<>")
        lexer.whitespace_split = True
        words = list(lexer)
    except ValueError:  # an unbalanced quote: words as they are
        words = command.split()
    found, expecting, wrapper, skip = [], True, None, 0
    for word in words:
        if set(word) <= set(";&|()<>"):
            if "<" in word or ">" in word:
                skip = 1  # a redirection and its target
            else:
                expecting, wrapper, skip = True, None, 0
            continue
        if skip:
            skip -= 1
            continue
        if not expecting or ASSIGNMENT.fullmatch(word):
            continue
        if wrapper is not None and word.startswith("-"):
            skip = 1 if word in WRAPPERS[wrapper] else 0
            continue
        found.append(word)
        wrapper = word if word in WRAPPERS else None
        expecting, skip = wrapper is not None, ARGUMENTS_BEFORE_COMMAND.get(word, 0)
    return found


@pytest.mark.parametrize("command,expected", [
    ("storescu -aec ROUTER 127.0.0.1 104 a.dcm", ["storescu"]),
    ("/usr/bin/storescu 127.0.0.1 104 a.dcm; echo \"exit $?\"", ["/usr/bin/storescu", "echo"]),
    ("sudo -u dicom storescp 104 && TCP_NODELAY=1 echoscu host 104", ["sudo", "storescp", "echoscu"]),
    ("python -m pynetdicom storescu 127.0.0.1 104 a.dcm", ["python"]),
    ("cp a.dcm var/inbox/ | grep storescu", ["cp", "grep"]),
    ("timeout 10 findscu -P 127.0.0.1 104 2>&1 > out.txt", ["timeout", "findscu"]),
])
def test_programs_of_a_command_line(command, expected):
    assert programs(command) == expected


def _bare_tools(path) -> list[str]:
    where = path.relative_to(ROOT)
    return [f"{where}:{number}: `{program}` runs pynetdicom's tool when the virtual environment is "
            f"activated; write /usr/bin/{program} for DCMTK's (or python -m pynetdicom {program})"
            for number, command in example_commands(path) for program in programs(command) if program in SHADOWED]


@pytest.mark.parametrize("path", PAGES + CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_examples_name_dcmtk_tools_by_their_full_path(path):
    assert _bare_tools(path) == []


def test_a_bare_tool_name_in_an_example_is_found(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("Send one:\n\n```\nstorescu 127.0.0.1 11112 a.dcm\n```\n\n```text\n$ ls\n"
                    "storescu.log\n$ sudo -u dicom echoscu 127.0.0.1 104\nI: ok\n```\n\n```yaml\nx: 1\n```\n",
                    encoding="utf-8")
    assert [(number, programs(command)) for number, command in example_commands(page)] == \
        [(4, ["storescu"]), (8, ["ls"]), (10, ["sudo", "echoscu"])]


def test_the_tests_run_dcmtk_tools_with_the_virtual_environment_activated():
    """The integration tests call DCMTK's storescu with DCMTK's options: an activated virtual
    environment, whose pynetdicom storescu then comes first on the PATH, must not change that."""
    scripts = sysconfig.get_path("scripts")
    env = {**os.environ, "PATH": scripts + os.pathsep + os.environ.get("PATH", "")}
    assert shutil.which("storescu", path=env["PATH"]).startswith(scripts)  # what the shell would run
    found = subprocess.run([sys.executable, "-c", "from helpers import peers; print(peers.require('storescu'))"], env=env,
                           cwd=ROOT / "tests", capture_output=True, text=True, check=True).stdout.strip()
    version = subprocess.run([found, "--version"], capture_output=True, text=True).stdout
    assert "dcmtk" in version, (found, version)
