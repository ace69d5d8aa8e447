"""Reading TensorBoard event files in tests, without TensorBoard."""
from __future__ import annotations

import struct
from pathlib import Path


def scalars(path: Path) -> dict[str, list[tuple[int, float]]]:
    """tag → (step, value) of a TensorBoard event file: TFRecords (length, its CRC, an Event, its CRC)."""
    from tensorboardX.proto import event_pb2

    data, offset, found = path.read_bytes(), 0, {}
    while offset < len(data):
        (length,) = struct.unpack("<Q", data[offset:offset + 8])
        event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
        offset += 12 + length + 4
        for value in event.summary.value:
            found.setdefault(value.tag, []).append((event.step, value.simple_value))
    return found
