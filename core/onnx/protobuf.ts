/**
 * A minimal protocol-buffers *writer*: just the wire encoding ONNX files need (varints, int64
 * including negatives, fixed32 floats, length-delimited bytes / strings / nested messages).
 *
 * A message is kept as a list of chunks rather than one growing buffer, so multi-megabyte
 * `raw_data` payloads are referenced, never copied, until the caller asks for the final bytes
 * (or streams the chunks straight to a file).
 */

const encoder = new TextEncoder();

/** Wire types of the protobuf encoding. */
const VARINT = 0;
const FIXED32 = 5;
const LEN = 2;

export interface ProtoMessage {
  /** Serialized chunks in order; their concatenation is the message. */
  readonly chunks: Uint8Array[];
  /** Total bytes of `chunks`. */
  readonly byteLength: number;
  /** Appends a varint field (int32/int64/enum/bool). Negative values take 10 bytes (two's complement). */
  int(field: number, value: number | bigint): ProtoMessage;
  /** Appends a float field (fixed32). */
  float(field: number, value: number): ProtoMessage;
  /** Appends a length-delimited field: raw bytes, a UTF-8 string or a nested message. */
  bytes(field: number, value: Uint8Array | string | ProtoMessage): ProtoMessage;
  /** The message as one buffer. */
  finish(): Uint8Array;
}

/** Encodes a varint; negative numbers as 64-bit two's complement (10 bytes), as int64 fields want. */
export function encodeVarint(value: number | bigint): Uint8Array {
  if (typeof value === "number") {
    if (!Number.isInteger(value)) throw new RangeError(`varint: ${value} is not an integer`);
    if (value >= 0 && value <= Number.MAX_SAFE_INTEGER) {
      const out: number[] = [];
      let v = value;
      while (v >= 0x80) {
        out.push((v % 0x80) | 0x80);
        v = Math.floor(v / 0x80);
      }
      out.push(v);
      return Uint8Array.from(out);
    }
    value = BigInt(value);
  }
  let v = BigInt.asUintN(64, value);
  const out: number[] = [];
  while (v >= 0x80n) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
  return Uint8Array.from(out);
}

function tag(field: number, wire: number): Uint8Array {
  if (!Number.isInteger(field) || field < 1 || field > 0x1fffffff) {
    throw new RangeError(`protobuf: bad field number ${field}`);
  }
  return encodeVarint(field * 8 + wire);
}

/** A new, empty message. */
export function protoMessage(): ProtoMessage {
  const chunks: Uint8Array[] = [];
  let byteLength = 0;
  const push = (b: Uint8Array) => {
    if (b.length === 0) return;
    chunks.push(b);
    byteLength += b.length;
  };
  const msg: ProtoMessage = {
    chunks,
    get byteLength() {
      return byteLength;
    },
    int(field, value) {
      push(tag(field, VARINT));
      push(encodeVarint(value));
      return msg;
    },
    float(field, value) {
      push(tag(field, FIXED32));
      const b = new Uint8Array(4);
      new DataView(b.buffer).setFloat32(0, value, true);
      push(b);
      return msg;
    },
    bytes(field, value) {
      push(tag(field, LEN));
      if (typeof value === "string") {
        const b = encoder.encode(value);
        push(encodeVarint(b.length));
        push(b);
      } else if (value instanceof Uint8Array) {
        push(encodeVarint(value.length));
        push(value);
      } else {
        push(encodeVarint(value.byteLength));
        for (const c of value.chunks) push(c);
      }
      return msg;
    },
    finish() {
      const out = new Uint8Array(byteLength);
      let pos = 0;
      for (const c of chunks) {
        out.set(c, pos);
        pos += c.length;
      }
      return out;
    },
  };
  return msg;
}
