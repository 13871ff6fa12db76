"""Protocol v1 constants, from the generated contract (protocols/constants.json is their one source)."""

from ..contract.generated import (  # noqa: F401 - re-exported for the protocol modules
    DTYPES,
    KINDS,
    LIMITS,
    MAGIC,
    MAX_DIMS,
    MAX_SAFE_INT,
    PREAMBLE_BYTES,
    STREAM_ALIGN,
    WIRE_MAJOR,
    WIRE_MINOR,
)
from ..contract.generated import FLAGS

KIND_NAMES = {v: k for k, v in KINDS.items()}
FLAG_STREAMED = FLAGS["streamed"]
KNOWN_FLAGS = 0
for _bit in FLAGS.values():
    KNOWN_FLAGS |= _bit

DEFAULT_CHUNK_BYTES = LIMITS["chunkBytes"]
DEFAULT_MAX_MESSAGE_BYTES = LIMITS["maxMessageBytes"]
DEFAULT_WINDOW_BYTES = LIMITS["windowBytes"]
DEFAULT_MAX_HEADER_BYTES = LIMITS["maxHeaderBytes"]
DEFAULT_STALL_MS = LIMITS["stallMs"]
