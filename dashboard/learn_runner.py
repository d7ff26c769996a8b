"""Record one Learn lesson in the background: `python -m dashboard.learn_runner --db DB --folder DIR LESSON`.

The Learn page starts this for a lesson's button. It writes the lesson's workload files, then runs
the lesson's command lines (launcher.LessonRun.commands) one after another, each its own
`python -m engine` process: the simulated ones first, so the textbook numbers show within
seconds, then the real ones. It stops at the first command that fails, with that status.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from dashboard import launcher, learn_plan, settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboard.learn_runner", description=__doc__)
    parser.add_argument("--db", required=True, help="the database the runs are recorded into")
    parser.add_argument("--folder", required=True, type=Path, help="where the lesson's workload files are written")
    parser.add_argument("lesson", choices=learn_plan.LESSON_KEYS)
    args = parser.parse_args(argv)
    request = launcher.LessonRun(args.lesson)
    request.validate()
    learn_plan.write_workloads(args.lesson, args.folder)
    for command in request.commands(args.db, args.folder):
        print(f"$ {shlex.join(command.argv)}", flush=True)
        status = subprocess.run(command.argv, cwd=settings.ROOT, check=False).returncode
        if status != 0:
            print(f"stopped: that command exited with status {status}", flush=True)
            return status
    return 0


if __name__ == "__main__":
    sys.exit(main())
