"""Wire-format version constants shared by every backend."""

from typing import Final

PROTOCOL_VERSION: Final = "meetara/1"
"""Version of the envelope schema. Receivers accept any version with the same major part."""

WIRE_MAGIC: Final = b"meetara"
"""Magic value in every stream entry, so foreign or corrupt entries are told apart from ours."""

WIRE_VERSION: Final = b"1"
"""Version of the stream-entry layout (field names and body encoding)."""

MAX_MESSAGE_BYTES: Final = 1_048_576
"""Default ceiling for one encoded message. Large payloads travel as artifact references."""
