/**
 * ONNX models as plain data (graph, nodes, initializers, value infos) and their encoding into
 * ModelProto bytes, with initializers either inline as `raw_data` or in an external data file
 * (`location` / `offset` / `length` entries), which models over protobuf's 2 GB limit need.
 *
 * Field numbers follow the public `onnx.proto` (proto2): ModelProto, GraphProto, NodeProto,
 * AttributeProto, TensorProto, ValueInfoProto/TypeProto, OperatorSetIdProto.
 */

import { writeFileAtomic } from "../../base/mod.ts";
import { type ProtoMessage, protoMessage } from "./protobuf.ts";

/** Element types (TensorProto.DataType) this project writes. */
export const ONNX_DTYPES = {
  float32: 1,
  uint8: 2,
  int8: 3,
  int32: 6,
  int64: 7,
  bool: 9,
  float16: 10,
  float64: 11,
  bfloat16: 16,
} as const;
export type OnnxDtype = keyof typeof ONNX_DTYPES;

const DTYPE_BYTES: Record<OnnxDtype, number> = {
  float32: 4,
  uint8: 1,
  int8: 1,
  int32: 4,
  int64: 8,
  bool: 1,
  float16: 2,
  float64: 8,
  bfloat16: 2,
};

/** Bytes per element of an ONNX dtype. */
export function onnxDtypeSize(dtype: OnnxDtype): number {
  return DTYPE_BYTES[dtype];
}

/** A constant tensor of the graph. `data` is raw little-endian bytes, or made on demand once. */
export interface OnnxInitializer {
  name: string;
  dtype: OnnxDtype;
  dims: number[];
  data: Uint8Array | (() => Uint8Array | Promise<Uint8Array>);
}

export type OnnxAttribute =
  | { type: "int"; value: number }
  | { type: "float"; value: number }
  | { type: "string"; value: string }
  | { type: "ints"; value: number[] }
  | { type: "floats"; value: number[] }
  | { type: "tensor"; value: OnnxInitializer & { data: Uint8Array } };

export interface OnnxNode {
  op: string;
  inputs: string[];
  outputs: string[];
  name?: string;
  /** Empty for the default ONNX domain. */
  domain?: string;
  attributes?: Record<string, OnnxAttribute>;
}

/** A graph input or output: a tensor type whose dims are numbers or symbolic names. */
export interface OnnxValueInfo {
  name: string;
  dtype: OnnxDtype;
  shape: (number | string)[];
}

export interface OnnxGraph {
  name: string;
  nodes: OnnxNode[];
  initializers: OnnxInitializer[];
  inputs: OnnxValueInfo[];
  outputs: OnnxValueInfo[];
}

export interface OnnxModelOptions {
  /** Default-domain opset (17 for this project's exports). */
  opset: number;
  /** Opsets of other domains the graph's nodes use, e.g. `{ "com.microsoft": 1 }`. */
  opsets?: Record<string, number>;
  /** IR version (8 goes with opset 17). */
  irVersion?: number;
  producerName?: string;
  producerVersion?: string;
  docString?: string;
  /** `metadata_props` key/value pairs. */
  metadata?: Record<string, string>;
}

/** Attribute helpers, so the int/float distinction is explicit at the call site. */
export const attr = {
  int: (value: number): OnnxAttribute => ({ type: "int", value }),
  float: (value: number): OnnxAttribute => ({ type: "float", value }),
  string: (value: string): OnnxAttribute => ({ type: "string", value }),
  ints: (value: number[]): OnnxAttribute => ({ type: "ints", value }),
  floats: (value: number[]): OnnxAttribute => ({ type: "floats", value }),
};

/** Byte size an initializer's data must have. */
export function initializerByteLength(t: { dtype: OnnxDtype; dims: number[] }): number {
  return t.dims.reduce((a, b) => a * b, 1) * DTYPE_BYTES[t.dtype];
}

async function initializerData(t: OnnxInitializer): Promise<Uint8Array> {
  const data = typeof t.data === "function" ? await t.data() : t.data;
  const want = initializerByteLength(t);
  if (!(data instanceof Uint8Array) || data.length !== want) {
    throw new Error(
      `ONNX initializer ${t.name}: ${
        data instanceof Uint8Array ? data.length : typeof data
      } bytes, dims ${JSON.stringify(t.dims)} of ${t.dtype} need ${want}`,
    );
  }
  return data;
}

function tensorHeader(t: { name: string; dtype: OnnxDtype; dims: number[] }): ProtoMessage {
  const m = protoMessage();
  for (const d of t.dims) m.int(1, d); // dims
  m.int(2, ONNX_DTYPES[t.dtype]); // data_type
  m.bytes(8, t.name); // name
  return m;
}

/** TensorProto with inline raw_data. */
function tensorInline(t: { name: string; dtype: OnnxDtype; dims: number[] }, data: Uint8Array) {
  return tensorHeader(t).bytes(9, data);
}

/** TensorProto whose bytes live at `offset` in the external file `location`. */
function tensorExternal(
  t: { name: string; dtype: OnnxDtype; dims: number[] },
  location: string,
  offset: number,
  length: number,
): ProtoMessage {
  const m = tensorHeader(t);
  const entry = (k: string, v: string) => protoMessage().bytes(1, k).bytes(2, v);
  m.bytes(13, entry("location", location));
  m.bytes(13, entry("offset", String(offset)));
  m.bytes(13, entry("length", String(length)));
  m.int(14, 1); // data_location = EXTERNAL
  return m;
}

function attributeProto(name: string, a: OnnxAttribute): ProtoMessage {
  const m = protoMessage().bytes(1, name);
  switch (a.type) {
    case "float":
      return m.float(2, a.value).int(20, 1);
    case "int":
      return m.int(3, a.value).int(20, 2);
    case "string":
      return m.bytes(4, a.value).int(20, 3);
    case "tensor":
      return m.bytes(5, tensorInline(a.value, a.value.data)).int(20, 4);
    case "floats":
      for (const v of a.value) m.float(7, v);
      return m.int(20, 6);
    case "ints":
      for (const v of a.value) m.int(8, v);
      return m.int(20, 7);
  }
}

function nodeProto(n: OnnxNode, index: number): ProtoMessage {
  const m = protoMessage();
  for (const i of n.inputs) m.bytes(1, i);
  for (const o of n.outputs) m.bytes(2, o);
  m.bytes(3, n.name ?? `${n.op}_${index}`);
  m.bytes(4, n.op);
  for (const [k, a] of Object.entries(n.attributes ?? {})) m.bytes(5, attributeProto(k, a));
  if (n.domain) m.bytes(7, n.domain);
  return m;
}

function valueInfoProto(v: OnnxValueInfo): ProtoMessage {
  const shape = protoMessage();
  for (const d of v.shape) {
    shape.bytes(1, typeof d === "number" ? protoMessage().int(1, d) : protoMessage().bytes(2, d));
  }
  const tensorType = protoMessage().int(1, ONNX_DTYPES[v.dtype]).bytes(2, shape);
  return protoMessage().bytes(1, v.name).bytes(2, protoMessage().bytes(1, tensorType));
}

function checkGraph(g: OnnxGraph): void {
  const defined = new Set<string>([
    ...g.inputs.map((i) => i.name),
    ...g.initializers.map((i) => i.name),
  ]);
  if (defined.size !== g.inputs.length + g.initializers.length) {
    throw new Error(`ONNX graph ${g.name}: an input or initializer name is used twice`);
  }
  for (const n of g.nodes) {
    for (const i of n.inputs) {
      if (i !== "" && !defined.has(i)) {
        throw new Error(`ONNX graph ${g.name}: node ${n.name ?? n.op} reads undefined value ${i}`);
      }
    }
    for (const o of n.outputs) {
      if (defined.has(o)) throw new Error(`ONNX graph ${g.name}: value ${o} is produced twice`);
      defined.add(o);
    }
  }
  for (const o of g.outputs) {
    if (!defined.has(o.name)) {
      throw new Error(`ONNX graph ${g.name}: output ${o.name} is never produced`);
    }
  }
}

/** The TensorProto of each initializer, in graph order (having placed its bytes somewhere). */
type TensorFor = (t: OnnxInitializer) => Promise<ProtoMessage>;

async function graphProto(g: OnnxGraph, tensorFor: TensorFor): Promise<ProtoMessage> {
  checkGraph(g);
  const m = protoMessage();
  g.nodes.forEach((n, i) => m.bytes(1, nodeProto(n, i)));
  m.bytes(2, g.name);
  for (const t of g.initializers) m.bytes(5, await tensorFor(t));
  for (const v of g.inputs) m.bytes(11, valueInfoProto(v));
  for (const v of g.outputs) m.bytes(12, valueInfoProto(v));
  return m;
}

function modelProto(graph: ProtoMessage, options: OnnxModelOptions): ProtoMessage {
  const m = protoMessage().int(1, options.irVersion ?? 8);
  m.bytes(2, options.producerName ?? "medglm");
  if (options.producerVersion) m.bytes(3, options.producerVersion);
  if (options.docString) m.bytes(6, options.docString);
  m.bytes(7, graph);
  m.bytes(8, protoMessage().bytes(1, "").int(2, options.opset));
  // Contrib ops (e.g. com.microsoft MatMulNBits) need their domain's opset imported too.
  for (const [domain, version] of Object.entries(options.opsets ?? {})) {
    m.bytes(8, protoMessage().bytes(1, domain).int(2, version));
  }
  for (const [k, v] of Object.entries(options.metadata ?? {})) {
    m.bytes(14, protoMessage().bytes(1, k).bytes(2, v));
  }
  return m;
}

/** Protobuf cannot encode a message of 2 GiB or more. */
const PROTO_LIMIT = 2 ** 31 - 1;

/** The whole model as one buffer, every initializer inline (models under 2 GiB). */
export async function encodeOnnxModel(
  graph: OnnxGraph,
  options: OnnxModelOptions & { onProgress?: (done: number, total: number) => void },
): Promise<Uint8Array> {
  const total = graph.initializers.reduce((a, t) => a + initializerByteLength(t), 0);
  let done = 0;
  const g = await graphProto(graph, async (t) => {
    const data = await initializerData(t);
    done += data.length;
    options.onProgress?.(done, total);
    return tensorInline(t, data);
  });
  const model = modelProto(g, options);
  if (model.byteLength > PROTO_LIMIT) {
    throw new Error(
      `ONNX model ${graph.name} is ${model.byteLength} bytes, over protobuf's 2 GiB limit: ` +
        "write it with an external data file",
    );
  }
  return model.finish();
}

export interface WriteOnnxOptions extends OnnxModelOptions {
  /**
   * Put initializers of at least `externalThreshold` bytes (default 1024) into this file, named
   * relative to the model file (e.g. `model.onnx.data`); without it everything is inline.
   */
  externalData?: string;
  externalThreshold?: number;
  /** Offsets of external tensors are multiples of this (default 4096, so ORT can map pages). */
  externalAlignment?: number;
  /** Called as initializer bytes are produced. */
  onProgress?: (done: number, total: number) => void;
}

/**
 * Writes `path` (and, with `externalData`, the data file next to it), both atomically; the data
 * file first, so a model file never names data that is not there. With external data, tensor
 * bytes are streamed to the data file one initializer at a time, so host memory stays near the
 * largest tensor.
 */
export async function writeOnnxModel(
  path: string,
  graph: OnnxGraph,
  options: WriteOnnxOptions,
): Promise<{ modelBytes: number; dataBytes: number }> {
  if (!options.externalData) {
    const bytes = await encodeOnnxModel(graph, options);
    await writeFileAtomic(path, bytes);
    return { modelBytes: bytes.length, dataBytes: 0 };
  }
  const location = options.externalData;
  if (/[\\/]/.test(location) || location.startsWith(".")) {
    throw new Error(`externalData ${JSON.stringify(location)}: give a plain file name`);
  }
  const threshold = options.externalThreshold ?? 1024;
  const align = options.externalAlignment ?? 4096;
  const slash = path.lastIndexOf("/");
  const dataPath = slash >= 0 ? `${path.slice(0, slash + 1)}${location}` : location;
  checkGraph(graph);

  const total = graph.initializers.reduce((a, t) => a + initializerByteLength(t), 0);
  const placed = new Map<string, ProtoMessage>();
  let offset = 0, done = 0;
  // Pulled by the file writer: each tensor is computed only when the previous one is written.
  async function* dataChunks(): AsyncGenerator<Uint8Array> {
    for (const t of graph.initializers) {
      const data = await initializerData(t);
      done += data.length;
      if (data.length < threshold) {
        placed.set(t.name, tensorInline(t, data));
      } else {
        const pad = (align - (offset % align)) % align;
        if (pad) yield new Uint8Array(pad);
        offset += pad;
        placed.set(t.name, tensorExternal(t, location, offset, data.length));
        yield data;
        offset += data.length;
      }
      options.onProgress?.(done, total);
    }
  }
  await writeFileAtomic(dataPath, dataChunks());
  const g = await graphProto(graph, (t) => Promise.resolve(placed.get(t.name)!));
  const model = modelProto(g, options);
  if (model.byteLength > PROTO_LIMIT) {
    throw new Error(`ONNX model ${graph.name}: the graph alone is over 2 GiB`);
  }
  await writeFileAtomic(path, model.chunks);
  return { modelBytes: model.byteLength, dataBytes: offset };
}
