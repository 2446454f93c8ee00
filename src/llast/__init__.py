"""llast: end-to-end speech-to-text translation with large language models (LLaST / LST)."""

__version__ = "0.1.0"

from llast.config import Config, load_config  # noqa: E402
from llast.errors import AudioError, CheckpointError, ConfigError, DataError, LlastError  # noqa: E402


def load_model(path, **kwargs):
    """Load a checkpoint directory written by `llast train` (strict). See llast.decode.load_model."""
    from llast.decode import load_model as _load  # lazy: torch + transformers (seconds); `import llast` stays light

    return _load(path, **kwargs)


def __getattr__(name):
    if name == "Translator":
        from llast.decode import Translator  # lazy: torch + transformers (seconds); `import llast` stays light

        return Translator
    raise AttributeError(name)
