"""Test double: the `tflite` saver aborts its process, as LLVM's converter does on some TF pairs.

With this folder on PYTHONPATH (`ABORTING_TFLITE`), Python imports this module at the start of
every process of the run; only the save worker calls a saver, so it alone dies, by the real
os.abort(): no GPU or broken wheel is needed to reproduce the crash the harness must survive.
"""

import dataclasses
import os

from harness import formats


def _abort(*_args: object) -> None:
    os.abort()


formats.ARTIFACTS["tflite"] = dataclasses.replace(formats.ARTIFACTS["tflite"], save=_abort)
