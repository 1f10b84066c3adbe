"""Wire protocol shared by clients and server: header frame, message kinds, cell partition."""

from melissa.protocol.messages import (
    HEADER_SIZE,
    TOKEN_BYTES,
    VERSION,
    Dtype,
    Header,
    Kind,
    decode_header,
    decode_json,
    dtype_code,
    encode_json,
    numpy_dtype,
    token_from_hex,
)
from melissa.protocol.partition import Piece, cell_range, cell_ranges, split

__all__ = [
    "HEADER_SIZE",
    "TOKEN_BYTES",
    "VERSION",
    "Dtype",
    "Header",
    "Kind",
    "Piece",
    "cell_range",
    "cell_ranges",
    "decode_header",
    "decode_json",
    "dtype_code",
    "encode_json",
    "numpy_dtype",
    "split",
    "token_from_hex",
]
