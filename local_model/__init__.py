"""The on-device engine: owns ``llama_cpp.Llama``, its queue and lock.

Nothing here imports the gateway or FastAPI; the gateway drives the engine
through :class:`local_model.engine.Engine`.
"""

from local_model.errors import (
    EngineClosedError,
    GenerationFailedError,
    LocalModelError,
    ModelNotFoundError,
    PromptTooLongError,
    QueueFullError,
)
from local_model.types import (
    ChatMessage,
    FinishReason,
    GenerationDone,
    GenerationRequest,
    GenerationResult,
    GenerationStats,
    SamplingParams,
    TokenEvent,
    TokenLogprob,
)

__all__ = [
    "ChatMessage",
    "EngineClosedError",
    "GenerationFailedError",
    "FinishReason",
    "GenerationDone",
    "GenerationRequest",
    "GenerationResult",
    "GenerationStats",
    "LocalModelError",
    "ModelNotFoundError",
    "PromptTooLongError",
    "QueueFullError",
    "SamplingParams",
    "TokenEvent",
    "TokenLogprob",
]
