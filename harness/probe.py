"""Child process: the TensorFlow half of the environment record, printed as JSON.

A child, because importing TensorFlow in the parent would warm the very libraries whose cold
import the trials measure.
"""

from __future__ import annotations

import json
import sys

from harness.lifetime import leave
from harness.runtime import (
    import_tensorflow,
    keras_safe_mode,
    keras_version,
    tflite_runtime_name,
)


def facts() -> dict[str, object]:
    rt = import_tensorflow()
    tf = rt.tf
    import numpy

    try:
        build_info = {k: str(v) for k, v in tf.sysconfig.get_build_info().items()}
    except AttributeError:  # TF < 2.3 has no get_build_info
        build_info = {}
    return {
        "tensorflow": tf.__version__,
        "tensorflow_git": getattr(tf.version, "GIT_VERSION", ""),
        "keras": keras_version(rt),
        "keras_impl": rt.keras_impl,
        "keras_safe_mode": keras_safe_mode(rt.keras),
        "numpy": numpy.__version__,
        "tflite_runtime": tflite_runtime_name(),
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "build_info": build_info,
    }


if __name__ == "__main__":
    json.dump(facts(), sys.stdout)
    leave(0)
