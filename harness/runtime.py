"""Import the ML runtime a loader needs, and say which Keras / TFLite implementation it is.

Called by child processes only, and only after their import clock has started. Which runtime
is imported is part of what is measured: a TFLite deployment imports LiteRT, not TensorFlow.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from typing import Any

_LEGACY_KERAS_VALUES = ("1", "true", "True")


@dataclass
class Runtime:
    """Handles on the imported modules, plus the facts the format rules depend on."""

    tf: Any = None
    keras: Any = None
    keras_impl: str = ""  # keras2 (TF <= 2.15), keras3, tf-keras (TF >= 2.16 legacy mode)
    tf_version: tuple[int, int] = (0, 0)
    interpreter: Any = None  # a TFLite Interpreter class
    tflite_runtime: str = ""
    # The user's classes and functions (harness.usercode), passed to every Keras load.
    custom_objects: dict[str, Any] = field(default_factory=dict)

    @property
    def keras3(self) -> bool:
        return self.keras_impl == "keras3"

    def load_model(self, path: str) -> Any:
        """`keras.models.load_model(path, compile=False)`, with `safe_mode=True` where this
        Keras has it (2.13+): a model file's Lambda code is then refused, never run. Older
        Keras has no such switch (the environment record says so: `keras_safe_mode`)."""
        safe = {"safe_mode": True} if keras_safe_mode(self.keras) else {}
        return self.keras.models.load_model(
            path, compile=False, **safe, custom_objects=self.custom_objects or None
        )


def keras_safe_mode(keras: Any) -> bool:
    """Whether this Keras's `load_model` takes `safe_mode` (inspected: versions differ)."""
    import inspect  # already imported by TensorFlow: free here

    try:
        return "safe_mode" in inspect.signature(keras.models.load_model).parameters
    except (TypeError, ValueError):  # no signature to inspect
        return False


def version_tuple(version: str) -> tuple[int, int]:
    """'2.16.0-rc1' -> (2, 16)."""
    major, minor = version.split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def keras_impl_for(tf_version: tuple[int, int], legacy: bool | None = None) -> str:
    """Which Keras `tf.keras` is with this TensorFlow in this process's environment: `keras2`
    (TF <= 2.15), `tf-keras` (TF_USE_LEGACY_KERAS) or `keras3`. Needs no import, so a parent
    process can plan by it without warming what its children time. `legacy`: whether
    TF_USE_LEGACY_KERAS is set, for an environment other than this process's."""
    if tf_version < (2, 16):
        return "keras2"
    if legacy is None:
        legacy = os.environ.get("TF_USE_LEGACY_KERAS") in _LEGACY_KERAS_VALUES
    return "tf-keras" if legacy else "keras3"


def import_tensorflow(with_keras: bool = True) -> Runtime:
    """`import tensorflow` and, when the loader needs it, resolve `tf.keras` (lazy in Keras 3)."""
    import tensorflow as tf

    rt = Runtime(tf=tf, tf_version=version_tuple(tf.__version__))
    rt.keras_impl = keras_impl_for(rt.tf_version)
    if with_keras:
        rt.keras = tf.keras
        rt.keras.models  # noqa: B018 - touching it finishes Keras 3's lazy import inside the clock
    rt.interpreter = tf.lite.Interpreter
    rt.tflite_runtime = "tf.lite"
    return rt


def _litert_installed() -> bool:
    return importlib.util.find_spec("ai_edge_litert") is not None


def import_tflite() -> Runtime:
    """LiteRT's interpreter where installed (tf.lite.Interpreter is deprecated), else TF's."""
    if _litert_installed():
        from ai_edge_litert.interpreter import Interpreter

        return Runtime(interpreter=Interpreter, tflite_runtime=_litert_version())
    rt = import_tensorflow(with_keras=False)
    return rt


def _litert_version() -> str:
    from importlib import metadata

    return f"ai-edge-litert {metadata.version('ai-edge-litert')}"


def tflite_runtime_name() -> str:
    """What `import_tflite` would use, without importing anything heavy."""
    if _litert_installed():
        return _litert_version()
    return "tf.lite"


def runtime_packages(target: str) -> list[str]:
    """The installed packages whose code the import of `target` loads, without importing them.

    Resolved the way `import_tflite` resolves its runtime, so a TFLite trial that falls back to
    tf.lite names TensorFlow's packages. `import tensorflow` itself loads numpy, h5py and Keras
    (Keras 2 and 3 alike; tf-keras instead in legacy mode); LiteRT loads only numpy.
    """
    if target == "tflite" and _litert_installed():
        names = ["ai_edge_litert", "numpy"]
    else:
        legacy = os.environ.get("TF_USE_LEGACY_KERAS") in _LEGACY_KERAS_VALUES
        names = ["tensorflow", "numpy", "h5py", "tf_keras" if legacy else "keras"]
    return [name for name in names if importlib.util.find_spec(name) is not None]


def keras_version(rt: Runtime) -> str:
    """The Keras in use: tf-keras's `tf.keras` has no __version__, so ask its distribution."""
    version = getattr(rt.keras, "__version__", "")
    if version:
        return str(version)
    from importlib import metadata

    try:
        return metadata.version("tf-keras" if rt.keras_impl == "tf-keras" else "keras")
    except metadata.PackageNotFoundError:
        return ""
