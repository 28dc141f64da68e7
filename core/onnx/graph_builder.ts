/**
 * A small helper for writing ONNX graphs by hand: nodes get unique output names, constants
 * become inline initializers, and the result is a plain `OnnxGraph`.
 */

import type {
  OnnxAttribute,
  OnnxDtype,
  OnnxGraph,
  OnnxInitializer,
  OnnxNode,
  OnnxValueInfo,
} from "./onnx_model.ts";

export interface NodeOptions {
  attributes?: Record<string, OnnxAttribute>;
  /** Output names (default: one fresh name per `count` outputs). */
  outputs?: string[];
  count?: number;
  /** A readable prefix for fresh output names and the node name. */
  name?: string;
  /** The op's domain (e.g. "com.microsoft" for contrib ops); default ONNX. */
  domain?: string;
}

export interface GraphBuilder {
  /** Adds a node; returns its output names. */
  node(op: string, inputs: string[], options?: NodeOptions): string[];
  /** Adds a node with one output and returns its name. */
  op(op: string, inputs: string[], options?: NodeOptions): string;
  /** A constant initializer (bytes given now); returns its name. */
  constant(hint: string, dtype: OnnxDtype, dims: number[], data: Uint8Array): string;
  /** An int64 constant vector (e.g. shapes, axes). */
  int64s(hint: string, values: number[]): string;
  /** A float32 scalar constant. */
  scalar(hint: string, value: number): string;
  /** Adds an initializer (data may be produced later, when the model is written). */
  initializer(init: OnnxInitializer): string;
  build(name: string, inputs: OnnxValueInfo[], outputs: OnnxValueInfo[]): OnnxGraph;
}

export function createGraphBuilder(): GraphBuilder {
  const nodes: OnnxNode[] = [];
  const initializers: OnnxInitializer[] = [];
  const used = new Set<string>();
  const fresh = (hint: string) => {
    let name = hint;
    for (let i = 1; used.has(name); i++) name = `${hint}_${i}`;
    used.add(name);
    return name;
  };
  const int64Cache = new Map<string, string>();
  const scalarCache = new Map<number, string>();
  const b: GraphBuilder = {
    node(op, inputs, options = {}) {
      const base = options.name ?? op.toLowerCase();
      const outputs = options.outputs ??
        Array.from({ length: options.count ?? 1 }, (_, i) => fresh(`${base}${i ? `_o${i}` : ""}`));
      for (const o of options.outputs ?? []) {
        if (used.has(o)) throw new Error(`graph builder: value ${o} already exists`);
        used.add(o);
      }
      nodes.push({
        op,
        inputs,
        outputs,
        name: `n${nodes.length}_${base}`,
        attributes: options.attributes,
        ...(options.domain ? { domain: options.domain } : {}),
      });
      return outputs;
    },
    op(op, inputs, options) {
      return b.node(op, inputs, options)[0];
    },
    constant(hint, dtype, dims, data) {
      return b.initializer({ name: fresh(hint), dtype, dims, data });
    },
    int64s(hint, values) {
      const key = values.join(",");
      const hit = int64Cache.get(key);
      if (hit) return hit;
      const data = new Uint8Array(new BigInt64Array(values.map(BigInt)).buffer);
      const name = b.constant(hint, "int64", [values.length], data);
      int64Cache.set(key, name);
      return name;
    },
    scalar(hint, value) {
      const hit = scalarCache.get(value);
      if (hit) return hit;
      const name = b.constant(hint, "float32", [], new Uint8Array(Float32Array.of(value).buffer));
      scalarCache.set(value, name);
      return name;
    },
    initializer(init) {
      if (initializers.some((i) => i.name === init.name)) {
        throw new Error(`graph builder: initializer ${init.name} already exists`);
      }
      used.add(init.name);
      initializers.push(init);
      return init.name;
    },
    build(name, inputs, outputs) {
      for (const i of inputs) {
        if (initializers.some((t) => t.name === i.name)) {
          throw new Error(`graph builder: input ${i.name} clashes with an initializer`);
        }
      }
      return { name, nodes: [...nodes], initializers: [...initializers], inputs, outputs };
    },
  };
  return b;
}
