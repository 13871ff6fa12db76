"""Protocol v1 constants (protocols/wire-v1.md is normative; src/protocol/constants.ts mirrors this)."""

MAGIC = b"PUNI"
WIRE_MAJOR = 1
WIRE_MINOR = 0
PREAMBLE_BYTES = 8

KINDS = {
    "hello": 1,
    "welcome": 2,
    "req": 3,
    "res": 4,
    "err": 5,
    "cancel": 6,
    "hb": 7,
    "credit": 8,
    "chunk": 9,
    "bye": 10,
    "prog": 11,
}
KIND_NAMES = {v: k for k, v in KINDS.items()}

FLAG_STREAMED = 0x01
KNOWN_FLAGS = FLAG_STREAMED

# dtype name -> (item size, torch dtype attribute name)
DTYPES = {
    "bool": (1, "bool"),
    "u8": (1, "uint8"),
    "i8": (1, "int8"),
    "i16": (2, "int16"),
    "i32": (4, "int32"),
    "i64": (8, "int64"),
    "f16": (2, "float16"),
    "bf16": (2, "bfloat16"),
    "f32": (4, "float32"),
    "f64": (8, "float64"),
}

STREAM_ALIGN = 64
MAX_DIMS = 32
MAX_SAFE_INT = 2**53 - 1

DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024**3
DEFAULT_WINDOW_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_HEADER_BYTES = 1024 * 1024
