/**
 * A minimal ONNX protobuf writer for one graph `C = MatMul(A, B)` with B a constant initializer,
 * so the benchmarks can run onnxruntime-node's CPU MatMul on the same shapes as our kernels.
 * (Only what this graph needs; the full exporter lives elsewhere.)
 */

class ProtoWriter {
  private parts: Uint8Array[] = [];
  private length = 0;

  private push(bytes: Uint8Array): void {
    this.parts.push(bytes);
    this.length += bytes.length;
  }

  private varint(value: number): void {
    const out: number[] = [];
    let v = BigInt(value);
    do {
      let byte = Number(v & 0x7fn);
      v >>= 7n;
      if (v > 0n) byte |= 0x80;
      out.push(byte);
    } while (v > 0n);
    this.push(Uint8Array.from(out));
  }

  /** A varint field (int64, enum). */
  int(field: number, value: number): this {
    this.varint((field << 3) | 0);
    this.varint(value);
    return this;
  }

  /** A length-delimited field: bytes, a string or an embedded message. */
  bytes(field: number, value: Uint8Array | string | ProtoWriter): this {
    const data = typeof value === "string"
      ? new TextEncoder().encode(value)
      : value instanceof ProtoWriter
      ? value.finish()
      : value;
    this.varint((field << 3) | 2);
    this.varint(data.length);
    this.push(data);
    return this;
  }

  finish(): Uint8Array {
    const out = new Uint8Array(this.length);
    let pos = 0;
    for (const p of this.parts) {
      out.set(p, pos);
      pos += p.length;
    }
    return out;
  }
}

const FLOAT = 1;

function valueInfo(name: string, shape: number[]): ProtoWriter {
  const dims = new ProtoWriter();
  for (const d of shape) dims.bytes(1, new ProtoWriter().int(1, d)); // Dimension.dim_value
  const tensorType = new ProtoWriter().int(1, FLOAT).bytes(2, dims); // elem_type, shape
  const type = new ProtoWriter().bytes(1, tensorType); // TypeProto.tensor_type
  return new ProtoWriter().bytes(1, name).bytes(2, type);
}

/** Serialized ModelProto for `C[M, N] = A[M, K] · B[K, N]`, B given (row-major f32). */
export function matmulModel(M: number, K: number, N: number, b: Float32Array): Uint8Array {
  if (b.length !== K * N) throw new RangeError(`B has ${b.length} values, expected ${K * N}`);
  const node = new ProtoWriter().bytes(1, "A").bytes(1, "B").bytes(2, "C").bytes(3, "mm")
    .bytes(4, "MatMul");
  const init = new ProtoWriter().int(1, K).int(1, N).int(2, FLOAT).bytes(8, "B")
    .bytes(9, new Uint8Array(b.buffer, b.byteOffset, b.byteLength));
  const graph = new ProtoWriter()
    .bytes(1, node)
    .bytes(2, "matmul")
    .bytes(5, init)
    .bytes(11, valueInfo("A", [M, K]))
    .bytes(12, valueInfo("C", [M, N]));
  const opset = new ProtoWriter().bytes(1, "").int(2, 13);
  return new ProtoWriter()
    .int(1, 8) // ir_version
    .bytes(2, "medglm-bench")
    .bytes(7, graph)
    .bytes(8, opset)
    .finish();
}
