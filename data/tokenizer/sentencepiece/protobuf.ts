/**
 * A minimal protobuf wire-format reader: just enough to walk a SentencePiece `ModelProto`.
 * Every read is bounds-checked so that a truncated or corrupt file fails with a message instead
 * of yielding garbage.
 */

export const WIRE_VARINT = 0;
export const WIRE_FIXED64 = 1;
export const WIRE_LEN = 2;
export const WIRE_FIXED32 = 5;

/** One field as read from the wire. `value` is the varint (low 64 bits folded into a number). */
export interface WireField {
  field: number;
  wire: number;
  /** varint value (wire 0); for int32 fields use `int32` below. */
  value: number;
  /** varint read as a two's-complement int32 (negative int32 values are 10-byte varints). */
  int32: number;
  /** fixed32 as float32 (wire 5). */
  float: number;
  /** payload bytes (wire 2). */
  bytes: Uint8Array;
}

export class ProtobufError extends Error {}

/** The fields of one message, in order. Throws ProtobufError on truncation or unknown wire types. */
export function readFields(buf: Uint8Array, what: string): WireField[] {
  const out: WireField[] = [];
  forEachField(buf, what, (f) => {
    out.push({ ...f });
  });
  return out;
}

/**
 * Calls `visit` for each field of one message (the field object is reused between calls: copy
 * what you keep). Throws ProtobufError on truncation or unknown wire types.
 */
export function forEachField(buf: Uint8Array, what: string, visit: (f: WireField) => void): void {
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let pos = 0;
  const end = buf.length;
  const empty = new Uint8Array(0);

  const varint = (): [number, number] => {
    // Returns [value as a number (exact below 2^53), low 32 bits as int32].
    let low = 0;
    let value = 0;
    let mul = 1;
    for (let i = 0; i < 10; i++) {
      if (pos >= end) throw new ProtobufError(`${what}: truncated varint at byte ${pos}`);
      const b = buf[pos++];
      if (i < 5) low |= (b & 0x7f) << (7 * i);
      value += (b & 0x7f) * mul;
      mul *= 128;
      if ((b & 0x80) === 0) return [value, low | 0];
    }
    throw new ProtobufError(`${what}: varint longer than 10 bytes at byte ${pos}`);
  };

  const f: WireField = { field: 0, wire: 0, value: 0, int32: 0, float: 0, bytes: empty };
  while (pos < end) {
    const keyAt = pos;
    const [key] = varint();
    const field = Math.floor(key / 8);
    const wire = key % 8;
    if (field === 0) throw new ProtobufError(`${what}: field number 0 at byte ${keyAt}`);
    f.field = field;
    f.wire = wire;
    f.value = 0;
    f.int32 = 0;
    f.float = 0;
    f.bytes = empty;
    switch (wire) {
      case WIRE_VARINT: {
        const [v, lo] = varint();
        f.value = v;
        f.int32 = lo;
        break;
      }
      case WIRE_FIXED64:
        if (pos + 8 > end) throw new ProtobufError(`${what}: truncated fixed64 at byte ${pos}`);
        f.value = view.getFloat64(pos, true);
        pos += 8;
        break;
      case WIRE_LEN: {
        const [len] = varint();
        if (len > end - pos) {
          throw new ProtobufError(
            `${what}: field ${field} claims ${len} bytes at byte ${pos} but only ${
              end - pos
            } remain (truncated?)`,
          );
        }
        f.bytes = buf.subarray(pos, pos + len);
        pos += len;
        break;
      }
      case WIRE_FIXED32:
        if (pos + 4 > end) throw new ProtobufError(`${what}: truncated fixed32 at byte ${pos}`);
        f.float = view.getFloat32(pos, true);
        f.value = view.getUint32(pos, true);
        pos += 4;
        break;
      default:
        throw new ProtobufError(`${what}: unsupported wire type ${wire} at byte ${keyAt}`);
    }
    visit(f);
  }
}
