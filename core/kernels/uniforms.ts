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
  /** Bytes {@link pack} returns: the struct's size rounded up to 16. */
  readonly size: number;
  /** The struct's bytes (little-endian) for `values`; throws naming the field on a bad value. */
  pack(values: UniformValues<F>): Uint8Array<ArrayBuffer>;
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

/** Describes a parameter struct by its fields (in order); see the module doc. */
export function uniformLayout<const F extends UniformFields>(
  fields: F,
  names: UniformNames = {},
): UniformLayout<F> {
  const structName = names.struct ?? "Params";
  const variable = names.variable ?? "P";
  const entries = Object.entries(fields).map(([name, type]) => ({ name, type, ...shapeOf(type) }));
  if (entries.length === 0) throw new GpuError(`uniformLayout ${structName}: no fields`);
  let end = 0;
  let structAlign = 4;
  const placed = entries.map((e) => {
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

  const write = (view: DataView, at: number, scalar: Scalar, v: number, field: string) => {
    if (scalar === "f32") {
      if (typeof v !== "number") throw new GpuError(`${structName}.${field}: ${v} is not a number`);
      view.setFloat32(at, v, true);
      return;
    }
    if (!Number.isInteger(v)) {
      throw new GpuError(`${structName}.${field} (${scalar}): ${v} is not an integer`);
    }
    if (scalar === "u32") {
      if (v < 0 || v > 0xffffffff) {
        throw new GpuError(`${structName}.${field} (u32): ${v} is outside 0..4294967295`);
      }
      view.setUint32(at, v, true);
    } else {
      if (v < -0x80000000 || v > 0x7fffffff) {
        throw new GpuError(`${structName}.${field} (i32): ${v} is outside the i32 range`);
      }
      view.setInt32(at, v, true);
    }
  };

  return {
    wgsl,
    offsets,
    size,
    pack(values) {
      const bytes = new Uint8Array(size);
      const view = new DataView(bytes.buffer);
      for (const e of placed) {
        const v = (values as Record<string, number | readonly number[] | undefined>)[e.name];
        if (v === undefined) throw new GpuError(`${structName}: field ${e.name} is missing`);
        if (e.count === 1) {
          if (typeof v !== "number") {
            throw new GpuError(`${structName}.${e.name} (${e.type}): expected a number`);
          }
          write(view, e.offset, e.scalar, v, e.name);
        } else {
          if (typeof v === "number" || v.length !== e.count) {
            throw new GpuError(`${structName}.${e.name} (${e.type}): expected ${e.count} numbers`);
          }
          v.forEach((x, i) => write(view, e.offset + 4 * i, e.scalar, x, `${e.name}[${i}]`));
        }
      }
      for (const name of Object.keys(values)) {
        if (!(name in fields)) throw new GpuError(`${structName}: unknown field ${name}`);
      }
      return bytes;
    },
  };
}
