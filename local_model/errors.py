"""Exceptions raised by the local engine.

Tree::

    LocalModelError
    ├── ModelNotFoundError     no GGUF configured and the embedded model is missing
    ├── PromptTooLongError     prompt (+ requested completion) exceeds the context window
    ├── QueueFullError         the bounded wait queue is full; carries a retry hint
    ├── EngineClosedError      the engine is shutting down
    └── GenerationFailedError  llama.cpp failed while generating (cause chained)

The gateway translates these into its own error tree in one place
(``gateway.errors.translate_engine_errors``).
"""


class LocalModelError(Exception):
    """Base class for every error the local engine raises."""


class ModelNotFoundError(LocalModelError):
    pass


class PromptTooLongError(LocalModelError):
    def __init__(self, message: str, *, prompt_tokens: int, limit: int) -> None:
        super().__init__(message)
        self.prompt_tokens = prompt_tokens
        self.limit = limit


class QueueFullError(LocalModelError):
    def __init__(self, message: str, *, retry_after_seconds: float) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class EngineClosedError(LocalModelError):
    pass


class GenerationFailedError(LocalModelError):
    pass
