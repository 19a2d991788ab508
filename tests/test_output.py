"""What jobs print: colour codes reach a terminal, never a log file."""

import os
import pty
import subprocess
import sys

from checkout import REPO_ROOT

PRINT_COLOURED = """
import sys
from colorama import Fore, Style
from mqt_llava.output import configure_output
configure_output()
# what Ray's driver prints when it folds repeated worker lines (ray._private.ray_logging)
print("(raylet) WARNING: 12 PYTHON worker processes" + Fore.GREEN + " [repeated 2x across cluster]" + Style.RESET_ALL)
print(Fore.YELLOW + "(raylet)" + Style.RESET_ALL + " on stderr", file=sys.stderr)
"""


def run(stdout, stderr):
    env = {k: v for k, v in os.environ.items() if k != "MQT_LLAVA_VERBOSE"}
    return subprocess.run(
        [sys.executable, "-c", PRINT_COLOURED],
        cwd=REPO_ROOT,
        env=env,
        stdout=stdout,
        stderr=stderr,
        timeout=120,
        check=True,
    )


def test_a_log_file_gets_the_text_without_colour_codes():
    done = run(subprocess.PIPE, subprocess.PIPE)
    assert done.stdout == b"(raylet) WARNING: 12 PYTHON worker processes [repeated 2x across cluster]\n"
    assert done.stderr == b"(raylet) on stderr\n"


def test_a_terminal_keeps_its_colours():
    leader, follower = pty.openpty()
    try:
        run(follower, follower)
        os.close(follower)
        follower = None
        printed = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closed: everything was read
                break
            if not chunk:
                break
            printed += chunk
    finally:
        os.close(leader)
        if follower is not None:
            os.close(follower)
    assert b"\x1b[32m [repeated 2x across cluster]\x1b[0m" in printed
