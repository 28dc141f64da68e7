/**
 * PEFT LoRA adapters on disk: load `adapter_config.json` + `adapter_model.safetensors` (or the
 * older `adapter_model.bin`), check them against the base model's linear modules, and save the
 * same layout so peft loads what we write (README §7).
 */

import { pathExists } from "../../base/mod.ts";
import { iterateTensors, openCheckpoint } from "../io/checkpoint.ts";
import { bytesToF32 } from "../io/dtype.ts";
import { writeSafetensors } from "../io/safetensors.ts";
import {
  isTargetModule,
  type LoraConfig,
  loraScaling,
  loraTensorKey,
  parseLoraTensorKey,
  readLoraConfig,
  writeLoraConfig,
} from "./peft_config.ts";

export interface LoraModuleWeights {
  /** Full module name, e.g. `transformer.layers.0.attention.query_key_value`. */
  module: string;
  r: number;
  inFeatures: number;
  outFeatures: number;
  /** [r, in], f32. */
  a: Float32Array;
  /** [out, r], f32. */
  b: Float32Array;
}

export interface LoraAdapter {
  /** Where it was loaded from (for messages); null for an adapter made in memory. */
  source: string | null;
  config: LoraConfig;
  scaling: number;
  /** Keyed by full module name, in the base model's module order. */
  modules: Map<string, LoraModuleWeights>;
}

/** The base model as an adapter sees it: its linear modules and their [out, in] shapes. */
export interface LoraBase {
  linearModules: ReadonlyMap<string, readonly [number, number]>;
  /** Names the base in messages (its directory). */
  name?: string;
}

const SAFETENSORS_FILE = "adapter_model.safetensors";
const BIN_FILE = "adapter_model.bin";

/** Loads a PEFT adapter directory and checks it against `base`. */
export async function loadLoraAdapter(dir: string, base: LoraBase): Promise<LoraAdapter> {
  const root = dir.replace(/\/+$/, "");
  const config = await readLoraConfig(root);
  let file = `${root}/${SAFETENSORS_FILE}`;
  if (!(await pathExists(file, "file"))) {
    file = `${root}/${BIN_FILE}`;
    if (!(await pathExists(file, "file"))) {
      throw new Error(`${root}: no adapter weights (looked for ${SAFETENSORS_FILE}, ${BIN_FILE})`);
    }
  }
  const ckpt = await openCheckpoint(file);
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  for await (const t of iterateTensors(ckpt)) {
    tensors.set(t.name, { shape: t.shape, data: bytesToF32(t.data, t.dtype) });
  }
  return buildLoraAdapter(config, tensors, base, file);
}

/**
 * Assembles an adapter from its config and tensors (file keys), checking: every targeted module
 * has both matrices, every tensor belongs to a targeted module, and shapes fit the base.
 */
export function buildLoraAdapter(
  config: LoraConfig,
  tensors: ReadonlyMap<string, { shape: readonly number[]; data: Float32Array }>,
  base: LoraBase,
  source: string | null = null,
): LoraAdapter {
  const where = source ?? "adapter";
  const baseName = base.name ? ` (${base.name})` : "";
  const hint = config.baseModelNameOrPath
    ? ` — this adapter was made for ${JSON.stringify(config.baseModelNameOrPath)}`
    : "";
  const targeted = [...base.linearModules.keys()].filter((m) =>
    isTargetModule(m, config.targetModules)
  );
  if (targeted.length === 0) {
    throw new Error(
      `${where}: target_modules ${JSON.stringify(config.targetModules)} match no linear module ` +
        `of the base model${baseName}`,
    );
  }
  const targetSet = new Set(targeted);
  for (const key of tensors.keys()) {
    const parsed = parseLoraTensorKey(key);
    if (!parsed) throw new Error(`${where}: tensor ${key} is not a LoRA weight (lora_A / lora_B)`);
    if (!targetSet.has(parsed.module)) {
      throw new Error(
        `${where}: tensor ${key} belongs to ${parsed.module}, which is not a targeted linear ` +
          `module of the base model${baseName}${hint}`,
      );
    }
  }
  const modules = new Map<string, LoraModuleWeights>();
  for (const module of targeted) {
    const [out, inF] = base.linearModules.get(module)!;
    const a = tensors.get(loraTensorKey(module, "A"));
    const b = tensors.get(loraTensorKey(module, "B"));
    if (!a || !b) {
      throw new Error(
        `${where}: missing ${loraTensorKey(module, a ? "B" : "A")} (every targeted module needs ` +
          "lora_A and lora_B)",
      );
    }
    const r = config.r;
    const shapeErr = (which: string, got: readonly number[], want: number[]) =>
      new Error(
        `${where}: ${loraTensorKey(module, which as "A" | "B")} has shape ${
          JSON.stringify(got)
        }, ` +
          `expected ${JSON.stringify(want)} for r=${r} on the base model${baseName}${hint}`,
      );
    if (a.shape.length !== 2 || a.shape[0] !== r || a.shape[1] !== inF) {
      throw shapeErr("A", a.shape, [r, inF]);
    }
    if (b.shape.length !== 2 || b.shape[0] !== out || b.shape[1] !== r) {
      throw shapeErr("B", b.shape, [out, r]);
    }
    modules.set(module, { module, r, inFeatures: inF, outFeatures: out, a: a.data, b: b.data });
  }
  return { source, config, scaling: loraScaling(config), modules };
}

/**
 * Writes `adapter_config.json` and `adapter_model.safetensors` (F32, `{"format":"pt"}`) into
 * `dir`, atomically each; the same tensors give the same bytes as peft's files.
 */
export async function saveLoraAdapter(dir: string, adapter: LoraAdapter): Promise<void> {
  const root = dir.replace(/\/+$/, "");
  await Deno.mkdir(root, { recursive: true });
  const tensors = [];
  for (const m of adapter.modules.values()) {
    tensors.push({
      name: loraTensorKey(m.module, "A"),
      dtype: "F32" as const,
      shape: [m.r, m.inFeatures],
      data: m.a,
    });
    tensors.push({
      name: loraTensorKey(m.module, "B"),
      dtype: "F32" as const,
      shape: [m.outFeatures, m.r],
      data: m.b,
    });
  }
  await writeSafetensors(`${root}/${SAFETENSORS_FILE}`, tensors, { format: "pt" });
  await writeLoraConfig(root, adapter.config);
}

/**
 * A fresh adapter as peft initialises one: A ~ kaiming-uniform (a = √5, i.e. U(±1/√in)), B = 0,
 * so the adapter starts as a no-op. `random` gives uniform numbers in [0, 1).
 */
export function initLoraAdapter(
  config: LoraConfig,
  base: LoraBase,
  random: () => number = Math.random,
): LoraAdapter {
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [module, [out, inF]] of base.linearModules) {
    if (!isTargetModule(module, config.targetModules)) continue;
    const bound = 1 / Math.sqrt(inF);
    const a = new Float32Array(config.r * inF);
    for (let i = 0; i < a.length; i++) a[i] = (2 * random() - 1) * bound;
    tensors.set(loraTensorKey(module, "A"), { shape: [config.r, inF], data: a });
    tensors.set(loraTensorKey(module, "B"), {
      shape: [out, config.r],
      data: new Float32Array(out * config.r),
    });
  }
  return buildLoraAdapter(config, tensors, base, null);
}
