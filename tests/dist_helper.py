"""Test helper for tests/test_distributed.py: ``text2emoji`` whose main process dies hard
(``os._exit``: no cleanup, no exception, as a killed machine) right after it logs the optimizer
step given in ``T2E_DIE_AFTER_STEP``. Launched by hand, as a user would launch the CLI:

    python -m accelerate.commands.launch --multi_gpu --num_processes 2 -m tests.dist_helper train ...
"""

from __future__ import annotations

import os
import sys

import finetune.train as train_module
from text2emoji.cli import main

_real_log = train_module._log


def _log_then_die(msg: str) -> None:
    _real_log(msg)
    if f"step {os.environ['T2E_DIE_AFTER_STEP']}/" in msg:
        os._exit(9)


if __name__ == "__main__":
    train_module._log = _log_then_die  # only the main process logs steps
    sys.exit(main())
