/**
 * Kernel parameters declared by name: one typed description gives both the WGSL struct a kernel
 * reads and the bytes the host writes, so the two cannot drift apart.
 *
 * ```ts
 * const P = uniformLayout({ rows: "u32", cols: "u32", eps: "f32" });
 * // P.wgsl: `struct Params { rows: u32, cols: u32, eps: f32 };` + its binding-0 declaration `P`
 * recordDispatch(rec, pipeline, P.pack({ rows, cols, eps }), resources, workgroups);
 * ```
 *
 * Offsets follow WGSL's layout rules for the uniform address space: a scalar aligns to 4, a
 * vec2 to 8, a vec3 and a vec4 to 16 (a vec3 takes 12 bytes, so a scalar may follow it in the same
 * 16); the struct's size is the end of its last member rounded up to its largest alignment, and
 * the bytes packed are that rounded up to 16 (the uniform slot size `uniformParams` reserves).
 */

import { GpuError } from "../gpu/device.ts";
import type { PackedParams } from "../gpu/recording.ts";

type Scalar = "u32" | "i32" | "f32";
/** A WGSL type a uniform field may have. */
export type UniformType = Scalar | `vec${2 | 3 | 4}<${Scalar}>`;

/** The host value of a field of type `T`: a number, or a tuple of numbers for a vector. */
export type UniformValue<T extends UniformType> = T extends Scalar ? number
  : T extends `vec2<${Scalar}>` ? readonly [number, number]
  : T extends `vec3<${Scalar}>` ? readonly [number, number, number]
  : readonly [number, number, number, number];

/** Field name → WGSL type, in struct order. */
export type UniformFields = Record<string, UniformType>;

/** The values of every field of a layout, by name. */
export type UniformValues<F extends UniformFields> = {
  readonly [K in keyof F]: UniformValue<F[K]>;
};

/** A parameter struct: its WGSL text, byte offsets and the packing of its values. */
export interface UniformLayout<F extends UniformFields> {
  /** `struct <name> { ... };` and its declaration at `@group(0) @binding(0)` as `var<uniform>`. */
  readonly wgsl: string;
  /** Byte offset of each field. */
  readonly offsets: { readonly [K in keyof F]: number };
  /** Bytes the packed parameters take: the struct's size rounded up to 16. */
  readonly size: number;
  /**
   * The parameters of one dispatch, for `recordDispatch`: checks `values` now (throws naming the
   * field and the rule) and writes them straight into the recording's uniform data.
   */
  pack(values: UniformValues<F>): PackedParams;
  /** The struct's bytes (little-endian) for `values`, as {@link pack} writes them. */
  bytes(values: UniformValues<F>): Uint8Array<ArrayBuffer>;
}

/** Names of the struct and of its uniform variable in the WGSL {@link UniformLayout.wgsl}. */
export interface UniformNames {
  /** WGSL struct name (default "Params"). */
  struct?: string;
  /** WGSL variable name the kernel reads the fields through (default "P"). */
  variable?: string;
}

function shapeOf(type: UniformType): { scalar: Scalar; count: number } {
  const m = /^vec([234])<(u32|i32|f32)>$/.exec(type);
  if (m) return { scalar: m[2] as Scalar, count: Number(m[1]) };
  if (type === "u32" || type === "i32" || type === "f32") return { scalar: type, count: 1 };
  throw new GpuError(`uniformLayout: unsupported type ${type}`);
}

/** WGSL alignment of a scalar or vector in the uniform address space. */
function alignOf(count: number): number {
  return count === 1 ? 4 : count === 2 ? 8 : 16;
}

const roundUp = (k: number, n: number) => Math.ceil(n / k) * k;

/** A field with its place in the struct. */
interface Placed {
  name: string;
  type: UniformType;
  scalar: Scalar;
  count: number;
  offset: number;
}

/** "name (type)" of a scalar field, "name[i] (scalar)" of a vector's element. */
function elementName(e: Placed, i: number): string {
  return i < 0 ? `${e.name} (${e.type})` : `${e.name}[${i}] (${e.scalar})`;
}

/** Describes a parameter struct by its fields (in order); see the module doc. */
export function uniformLayout<const F extends UniformFields>(
  fields: F,
  names: UniformNames = {},
): UniformLayout<F> {
  const structName = names.struct ?? "Params";
  const variable = names.variable ?? "P";
  const entries = Object.entries(fields).map(([name, type]) => ({ name, type, ...shapeOf(type) }));
  if (entries.length === 0) throw new GpuError(`uniformLayout ${structName}: no fields`);
  for (const { name } of entries) {
    // A WGSL identifier, and so also a safe JavaScript property name for the packers below.
    if (!/^[A-Za-z][A-Za-z0-9_]*$/.test(name)) {
      throw new GpuError(`uniformLayout ${structName}: field name ${name} is not an identifier`);
    }
  }
  let end = 0;
  let structAlign = 4;
  const placed: Placed[] = entries.map((e) => {
    const align = alignOf(e.count);
    structAlign = Math.max(structAlign, align);
    const offset = roundUp(align, end);
    end = offset + 4 * e.count;
    return { ...e, offset };
  });
  const size = roundUp(16, roundUp(structAlign, end));
  const offsets = Object.fromEntries(placed.map((e) => [e.name, e.offset])) as {
    [K in keyof F]: number;
  };
  const wgsl = `struct ${structName} { ${
    placed.map((e) => `${e.name}: ${e.type}`).join(", ")
  } };\n@group(0) @binding(0) var<uniform> ${variable}: ${structName};\n`;

  const fail = (field: string, rule: string): never => {
    throw new GpuError(`${structName}.${field}: ${rule}`);
  };
  const check = (e: Placed, v: unknown, i: number) => {
    if (typeof v !== "number") return fail(elementName(e, i), `${v} is not a number`);
    if (e.scalar === "f32") return;
    if (!Number.isInteger(v)) fail(elementName(e, i), `${v} is not an integer`);
    if (e.scalar === "u32" && (v < 0 || v > 0xffffffff)) {
      fail(elementName(e, i), `${v} is outside 0..4294967295`);
    }
    if (e.scalar === "i32" && (v < -0x80000000 || v > 0x7fffffff)) {
      fail(elementName(e, i), `${v} is outside the i32 range`);
    }
  };
  type Given = Record<string, number | readonly number[] | undefined>;

  /**
   * Throws unless `given` has every field, with valid values, and no other key: run only when the
   * compiled check below says no, to name the field and the rule.
   */
  const validate = (given: Given) => {
    for (let f = 0; f < placed.length; f++) {
      const e = placed[f];
      const v = given[e.name];
      if (v === undefined) throw new GpuError(`${structName}: field ${e.name} is missing`);
      if (e.count === 1) {
        check(e, v, -1);
      } else {
        if (typeof v === "number" || v.length !== e.count) {
          fail(`${e.name} (${e.type})`, `expected ${e.count} numbers`);
        }
        for (let i = 0; i < e.count; i++) check(e, (v as readonly number[])[i], i);
      }
    }
    // Every field was found above, so more keys than fields means an unknown one.
    let keys = 0;
    for (const _ in given) keys++;
    if (keys > placed.length) {
      const unknown = Object.keys(given).find((k) => !(k in fields));
      throw new GpuError(`${structName}: unknown field ${unknown}`);
    }
  };
  // The per-dispatch path, compiled once per layout: reads each field by name (`v.rows`), which
  // V8 caches per call site, where a loop over the field names would look each up by a varying
  // key (measured: ~1 µs more per dispatch, ~5% of one).
  const access = placed.map((e) =>
    e.count === 1 ? [`v.${e.name}`] : Array.from({ length: e.count }, (_, i) => `v.${e.name}[${i}]`)
  );
  const valid = new Function(
    "v",
    "let x; let keys = 0; for (const _ in v) keys++; if (keys !== " + placed.length +
      ") return false;\n" +
      placed.map((e, f) =>
        (e.count === 1
          ? ""
          : `if (!Array.isArray(v.${e.name}) || v.${e.name}.length !== ${e.count}) return false;\n`) +
        access[f].map((a) =>
          `x = ${a}; if (typeof x !== "number"${
            e.scalar === "f32"
              ? ""
              : ` || !Number.isInteger(x) || x < ${e.scalar === "u32" ? 0 : -0x80000000} || x > ${
                e.scalar === "u32" ? 0xffffffff : 0x7fffffff
              }`
          }) return false;`
        ).join("\n")
      ).join("\n") + "\nreturn true;",
  ) as (v: Given) => boolean;
  const setter = { f32: "setFloat32", u32: "setUint32", i32: "setInt32" };
  const writeValues = new Function(
    "v",
    "view",
    "o",
    placed.flatMap((e, f) =>
      access[f].map((a, i) => `view.${setter[e.scalar]}(o + ${e.offset + 4 * i}, ${a}, true);`)
    ).join("\n"),
  ) as (v: Given, view: DataView, offset: number) => void;

  return {
    wgsl,
    offsets,
    size,
    pack(values) {
      const given = values as Given;
      if (!valid(given)) validate(given);
      return { byteLength: size, writeTo: (view, offset) => writeValues(given, view, offset) };
    },
    bytes(values) {
      const bytes = new Uint8Array(size);
      this.pack(values).writeTo(new DataView(bytes.buffer), 0);
      return bytes;
    },
  };
}
