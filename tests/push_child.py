"""Runs one push in a child process and holds it at a named step, so that a test can kill it there.

    python3 tests/push_child.py TARGET BATCH STEP READY_FILE PACKAGE...

STEP is a `Pusher.on_step` name ("lock", "clean up", "upload <file>", "manifest", "publish", "trigger",
"trigger-wait") or "mid-upload" (the first progress report of the first package). When the push reaches
it, the child writes READY_FILE and waits (up to 60 s) for a signal. Exits 130 on Ctrl-C, 0 when the
push finished, 5 on a HotloadError.
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hotload.errors import HotloadError  # noqa: E402
from hotload.formats.mcz import read_mcz  # noqa: E402
from hotload.formats.plan import LoadPlan  # noqa: E402
from hotload.staging.push import Pusher  # noqa: E402
from hotload.staging.targets import parse_target  # noqa: E402
from hotload.staging.transports import open_transport  # noqa: E402


def main():
    target, batch, stop_at, ready, *packages = sys.argv[1:]
    plan = LoadPlan.build([read_mcz(p) for p in packages])
    pusher = None

    def hold(step):
        if step != stop_at:
            return
        Path(ready).write_text(step)
        deadline = time.time() + 60
        while time.time() < deadline and not pusher._interrupted:
            time.sleep(0.02)

    progress_seen = []

    def progress(name, sent):
        if not progress_seen:
            progress_seen.append(name)
            hold("mid-upload")

    try:
        with open_transport(parse_target(target)) as transport:
            pusher = Pusher(transport, pending_wait=60, on_step=hold, on_progress=progress)
            pusher.push(plan, batch=batch)
    except KeyboardInterrupt:
        sys.exit(130)
    except HotloadError as error:
        print(error, file=sys.stderr)
        sys.exit(5)


if __name__ == "__main__":
    main()
