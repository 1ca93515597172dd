"""Source of a user's own Keras code, written to a file by the tests that bring their own model
(tests/integration/test_byom_cli.py, test_byom_harness.py): a custom layer registered the way Keras
documents it."""

SCALE_LAYER = """
import keras


@keras.saving.register_keras_serializable(package="byom")
class Scale(keras.layers.Layer):
    def __init__(self, factor=2.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return x * self.factor

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}
"""
