import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import tiny  # noqa: E402


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    """Tiny random model directories of the real architectures, built once per test session."""
    root = tmp_path_factory.mktemp("tiny_models")
    return {
        "whisper": tiny.write_whisper(root / "whisper"),
        "llama": tiny.write_llm(root / "llama", "llama"),
        "qwen2": tiny.write_llm(root / "qwen2", "qwen2"),
        "gemma3": tiny.write_llm(root / "gemma3", "gemma3"),
        "wav2vec2": tiny.write_wav2vec2(root / "wav2vec2"),
        "hubert": tiny.write_wav2vec2(root / "hubert", hubert=True),
    }
