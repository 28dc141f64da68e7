/**
 * The ONNX Runtime model runner: an exported graph (core/onnx: ChatGLM-6B or the Llama family)
 * in an onnxruntime-node InferenceSession, with the same prefill / decodeStep / cache API as the
 * WebGPU models (core/models), so one generation loop drives either backend.
 *
 * The KV cache is held once, in a capacity buffer per layer (kv_buffer.ts) fed as the graph's
 * `past_*` inputs without a copy; each run returns only the new positions' keys/values
 * (`new_*`), written into the buffer at their column. The export's cache form is checked from its
 * inputs/outputs: an export from before this contract (`present_*` outputs) is refused with a
 * message to re-export. Masks and positions come from the rows' layouts through the
 * architecture's input rules (core/onnx/input_rules.ts), the same helpers the WebGPU models use.
 */

import {
  cacheNames,
  checkExportMatchesModel,
  ONNX_MODEL_FILE,
  type OnnxExportInfo,
  type OnnxInputRules,
  onnxInputRules,
  type OnnxModelConfig,
  readOnnxExportInfo,
  type RowLayout,
} from "../../core/mod.ts";
import { loadOrt, type OrtModule, type OrtSession, type OrtTensor } from "./ort.ts";
import { capacityFor, KvBuffer, type KvShape, spreadMask } from "./kv_buffer.ts";

export type OnnxDevice = "cpu" | "cuda" | "auto";

export interface LoadOnnxModelOptions {
  /** Refuse the export unless it was made from this model directory's config.json. */
  modelDir?: string;
  /** With `modelDir`: the adapter the export must have merged (none when not given). */
  adapterDir?: string | null;
  /** "cpu" (default), "cuda" (fails when this onnxruntime build has no CUDA), "auto". */
  device?: OnnxDevice;
  /** Longest prompt + generation accepted (default and maximum: the export's maxPositions). */
  maxContext?: number;
  /** ORT intra-op threads (default: ORT's choice, one per physical core). */
  threads?: number;
  /**
   * ORT's per-node profiling: written as `<prefix>_<date>.json` when the model is disposed
   * (bench/context_decode.ts `--profile` sums it by operator).
   */
  profilePrefix?: string;
}

/** A KV cache: every layer's keys and values so far (one buffer, kv_buffer.ts), plus row layouts. */
export interface OnnxCache {
  readonly batch: number;
  readonly capacity: number;
  /** Positions filled so far (rows advance in lockstep). */
  length: number;
  rows: RowLayout[];
  /** The keys/values buffer (null until prefill; replaced when grown). */
  readonly kv: KvBuffer | null;
  freed: boolean;
  free(): void;
}

interface CacheState extends OnnxCache {
  kv: KvBuffer | null;
}

/** Explicit inputs for one forward pass (the graph's own contract, README §3). */
export interface OnnxForwardInputs {
  batch: number;
  seq: number;
  /** [b, s] */
  inputIds: ArrayLike<number>;
  /** [b, 2, s] for ChatGLM, [b, s] for the Llama family (`rules.positionsPerToken`). */
  positionIds: ArrayLike<number>;
  /** [b, s, s], 1/true = may NOT attend */
  attentionMask: ArrayLike<number | boolean>;
}

export interface OnnxStepInputs {
  batch: number;
  seq: number;
  inputIds: ArrayLike<number>;
  positionIds: ArrayLike<number>;
  /** [b, s, C + s] (C: the past's capacity, 0 without one), 1 = may NOT attend. */
  attentionMask: Uint8Array;
  /** The cache buffer fed as the past (all C columns; the mask hides the unused ones). */
  past: KvBuffer | null;
}

export interface OnnxModel {
  readonly config: OnnxModelConfig;
  /** Masks, positions, layouts and the cache shape of the export's architecture. */
  readonly rules: OnnxInputRules;
  readonly backend: "onnx";
  readonly info: OnnxExportInfo;
  readonly dir: string;
  /** Execution providers the session was created with. */
  readonly providers: string[];
  /** Why these providers (e.g. "CPU: CUDA unavailable (…)" under device "auto"). */
  readonly providerNote?: string;
  readonly maxContext: number;
  /** Logits [b, s, V] for left-padded inputs; masks and positions derived from the ids. */
  forward(inputIds: number[][]): Promise<Float32Array>;
  /** Logits [b, s, V] for explicit masks and positions (no cache). */
  forwardWithInputs(inputs: OnnxForwardInputs): Promise<Float32Array>;
  createCache(batch: number, maxLen?: number): OnnxCache;
  /**
   * Low level: one graph run with explicit inputs and a past cache buffer (null = empty). The
   * mask is [b, s, C + s], 1 = may NOT attend. Returns logits [b, s, V] and the new positions'
   * keys/values [b, kv heads, s, d] per layer (k0, v0, k1, …), for `KvBuffer.write`.
   */
  runStep(x: OnnxStepInputs): Promise<{ logits: Float32Array; fresh: Float32Array[] }>;
  /** The cache's layers, kv heads and head size. */
  readonly kvShape: KvShape;
  /** An empty (zero) cache buffer of `capacity` columns for `batch` rows. */
  newKv(batch: number, capacity: number): KvBuffer;
  /** Runs the prompts (left-padded rows) into an empty cache; logits of the last position [b, V]. */
  prefill(
    inputIds: number[][],
    cache: OnnxCache,
    options?: { allLogits?: boolean },
  ): Promise<Float32Array>;
  /** Appends one token per row (finished rows feed the pad id); logits [b, V]. */
  decodeStep(nextIds: number[], cache: OnnxCache): Promise<Float32Array>;
  dispose(): Promise<void>;
  disposed: boolean;
}

/** Opens an export directory written by `exportModelToOnnx` / `deno task export-onnx`. */
export async function loadOnnxModel(
  dir: string,
  options: LoadOnnxModelOptions = {},
): Promise<OnnxModel> {
  const root = dir.replace(/\/+$/, "") || dir;
  const { info, config } = await readOnnxExportInfo(root);
  if (options.modelDir) {
    await checkExportMatchesModel(root, info, options.modelDir, options.adapterDir);
  }
  const ort = await loadOrt();
  const device = options.device ?? "cpu";
  if (device !== "cpu" && device !== "cuda" && device !== "auto") {
    throw new Error(`device ${JSON.stringify(device)}: expected cpu, cuda or auto`);
  }
  const path = `${root}/${ONNX_MODEL_FILE}`;
  const create = (providers: string[], quiet: boolean) =>
    ort.InferenceSession.create(path, {
      executionProviders: providers,
      graphOptimizationLevel: "all",
      // A failed CUDA attempt under "auto" is expected on CPU-only installs: keep ORT quiet.
      ...(quiet ? { logSeverityLevel: 4 as const } : {}),
      ...(options.threads ? { intraOpNumThreads: options.threads } : {}),
      ...(options.profilePrefix
        ? { enableProfiling: true, profileFilePrefix: options.profilePrefix }
        : {}),
    });
  let providers = device === "cpu" ? ["cpu"] : ["cuda", "cpu"];
  let note = device === "cpu" ? "CPU requested" : "CUDA";
  // Under "auto", a machine without the NVIDIA driver goes straight to the CPU (ORT would log a
  // loud library-load error for the CUDA attempt).
  if (device === "auto" && !(await hasNvidiaDriver())) {
    providers = ["cpu"];
    note = "CPU: no NVIDIA driver on this machine";
  }
  let session: OrtSession;
  try {
    session = await create(providers, device === "auto");
  } catch (err) {
    const msg = (err as Error).message;
    if (providers[0] === "cpu") throw new Error(`${path}: onnxruntime could not load it: ${msg}`);
    if (device === "cuda") {
      throw new Error(
        `${path}: onnxruntime could not use CUDA (${msg}); install onnxruntime-node with its CUDA ` +
          "binaries (an install without ONNXRUNTIME_NODE_INSTALL=skip, CUDA 12 and cuDNN " +
          "present), or run on the CPU",
      );
    }
    providers = ["cpu"];
    note = `CPU: CUDA unavailable (${msg.split("\n")[0]})`;
    try {
      session = await create(providers, false);
    } catch (err2) {
      throw new Error(`${path}: onnxruntime could not load it: ${(err2 as Error).message}`);
    }
  }
  return createOnnxModel(ort, session, config, info, root, providers, options.maxContext, note);
}

async function hasNvidiaDriver(): Promise<boolean> {
  try {
    await Deno.stat("/proc/driver/nvidia/version");
    return true;
  } catch {
    return false;
  }
}

/** Wraps a session that runs an exported graph (also used by the benchmark). */
export function createOnnxModel(
  ort: OrtModule,
  session: OrtSession,
  config: OnnxModelConfig,
  info: OnnxExportInfo,
  dir: string,
  providers: string[],
  maxContext?: number,
  providerNote?: string,
): OnnxModel {
  const rules = onnxInputRules(config);
  const L = rules.numLayers, heads = rules.cacheHeads, d = rules.headDim, V = rules.vocabSize;
  const perToken = rules.positionsPerToken;
  const limit = Math.min(maxContext ?? info.maxPositions, info.maxPositions);
  if (session.outputNames.includes("present_key_0")) {
    throw new Error(
      `${dir}: this ONNX export returns the whole KV cache every step (present_* outputs, an ` +
        "older exporter); re-export it with `deno task export-onnx`",
    );
  }
  const missing = [...Array(L).keys()].flatMap((l) => Object.values(cacheNames(l)))
    .concat(["input_ids", "position_ids", "attention_mask", "logits"])
    .filter((n) => !session.inputNames.includes(n) && !session.outputNames.includes(n));
  if (missing.length) {
    throw new Error(
      `${dir}: the ONNX graph lacks ${missing.slice(0, 4).join(", ")} (config mismatch?)`,
    );
  }
  const fetchNames = ["logits"];
  for (let l = 0; l < L; l++) fetchNames.push(cacheNames(l).newKey, cacheNames(l).newValue);
  const kvShape: KvShape = { layers: L, heads, d };

  const int64 = (v: ArrayLike<number>, dims: number[]) => {
    const out = new BigInt64Array(v.length);
    for (let i = 0; i < v.length; i++) out[i] = BigInt(v[i]);
    return new ort.Tensor("int64", out, dims);
  };
  const boolTensor = (v: ArrayLike<number | boolean>, dims: number[]) => {
    const out = v instanceof Uint8Array
      ? v
      : Uint8Array.from(v as ArrayLike<number>, (x) => (x ? 1 : 0));
    return new ort.Tensor("bool", out, dims);
  };
  /** The past feeds: the buffer's arrays wrapped as they are (no copy), or empty. */
  const pastTensors = (b: number, past: KvBuffer | null) =>
    past
      ? past.data.map((x) => new ort.Tensor("float32", x, [b, heads, past.capacity, d]))
      : Array.from({ length: 2 * L }, () =>
        new ort.Tensor("float32", new Float32Array(0), [b, heads, 0, d]));
  let disposed = false;
  const checkAlive = (what: string) => {
    if (disposed) throw new Error(`${what}: the ONNX model was disposed`);
  };

  /** One session run; returns logits [b, s, V] and the new keys/values. */
  const run = async (
    b: number,
    s: number,
    ids: ArrayLike<number>,
    pos: ArrayLike<number>,
    mask: ArrayLike<number | boolean>,
    past: KvBuffer | null,
  ) => {
    const total = (past?.capacity ?? 0) + s;
    const pastFeeds = pastTensors(b, past);
    const feeds: Record<string, OrtTensor> = {
      input_ids: int64(ids, [b, s]),
      position_ids: int64(pos, perToken === 2 ? [b, 2, s] : [b, s]),
      attention_mask: boolTensor(mask, [b, s, total]),
    };
    for (let l = 0; l < L; l++) {
      const n = cacheNames(l);
      feeds[n.pastKey] = pastFeeds[2 * l];
      feeds[n.pastValue] = pastFeeds[2 * l + 1];
    }
    const out = await session.run(feeds, fetchNames);
    const fresh: Float32Array[] = [];
    for (let l = 0; l < L; l++) {
      const n = cacheNames(l);
      fresh.push(out[n.newKey].data as Float32Array, out[n.newValue].data as Float32Array);
    }
    return { logits: out.logits.data as Float32Array, fresh };
  };
  const checkLength = (n: number, what: string) => {
    if (n > limit) {
      throw new Error(`${what}: ${n} positions exceed the model's context of ${limit}`);
    }
  };
  const state = (cache: OnnxCache, what: string): CacheState => {
    const c = cache as CacheState;
    if (!("kv" in c)) throw new Error(`${what}: not a cache of this ONNX model`);
    if (c.freed) throw new Error(`${what}: the cache was freed`);
    return c;
  };
  const lastRows = (logits: Float32Array, b: number, s: number) => {
    if (s === 1) return logits;
    const out = new Float32Array(b * V);
    for (let r = 0; r < b; r++) {
      out.set(logits.subarray(((r + 1) * s - 1) * V, (r + 1) * s * V), r * V);
    }
    return out;
  };

  const model: OnnxModel = {
    config,
    rules,
    backend: "onnx",
    info,
    dir,
    providers,
    providerNote,
    maxContext: limit,
    disposed: false,
    async forward(inputIds) {
      checkAlive("forward");
      const rows = rules.layout(inputIds);
      const b = rows.length, s = inputIds[0].length;
      checkLength(s, "forward");
      const out = await run(
        b,
        s,
        inputIds.flat(),
        rules.positions(rows, 0, s),
        rules.mask(rows, 0, s, s),
        null,
      );
      return out.logits;
    },
    async forwardWithInputs(x) {
      checkAlive("forwardWithInputs");
      const { batch: b, seq: s } = x;
      const sizes: [string, number, number][] = [
        ["inputIds", x.inputIds.length, b * s],
        ["positionIds", x.positionIds.length, b * perToken * s],
        ["attentionMask", x.attentionMask.length, b * s * s],
      ];
      for (const [name, got, want] of sizes) {
        if (got !== want) {
          throw new Error(`forwardWithInputs: ${name} has ${got} values, expected ${want}`);
        }
      }
      checkLength(s, "forwardWithInputs");
      for (let i = 0; i < x.inputIds.length; i++) {
        const id = x.inputIds[i];
        if (!Number.isInteger(id) || id < 0 || id >= V) {
          throw new Error(
            `forwardWithInputs: inputIds[${i}] = ${id} is not a token id (vocab_size ${V})`,
          );
        }
      }
      for (let i = 0; i < x.positionIds.length; i++) {
        const p = x.positionIds[i];
        if (!Number.isInteger(p) || p < 0 || p >= info.maxPositions) {
          throw new Error(
            `forwardWithInputs: positionIds[${i}] = ${p} is outside 0..${info.maxPositions - 1}`,
          );
        }
      }
      const out = await run(b, s, x.inputIds, x.positionIds, x.attentionMask, null);
      return out.logits;
    },
    async runStep(x) {
      checkAlive("runStep");
      const P = x.past?.capacity ?? 0;
      if (x.past && (x.past.layers !== L || x.past.heads !== heads || x.past.d !== d)) {
        throw new Error(
          `runStep: the past buffer is [${x.past.layers} layers, ${x.past.heads} heads, d ${x.past.d}], ` +
            `this model's cache is [${L}, ${heads}, ${d}]`,
        );
      }
      if (x.past && x.past.batch !== x.batch) {
        throw new Error(
          `runStep: the past buffer has ${x.past.batch} rows for a batch of ${x.batch}`,
        );
      }
      if (x.attentionMask.length !== x.batch * x.seq * (P + x.seq)) {
        throw new Error(
          `runStep: attentionMask has ${x.attentionMask.length} values, expected ${
            x.batch * x.seq * (P + x.seq)
          }`,
        );
      }
      return await run(
        x.batch,
        x.seq,
        x.inputIds,
        x.positionIds,
        x.attentionMask,
        x.past,
      );
    },
    kvShape,
    newKv(batch, capacity) {
      return new KvBuffer(kvShape, batch, capacity);
    },
    createCache(batch, maxLen = limit) {
      checkAlive("createCache");
      if (!Number.isInteger(batch) || batch < 1) {
        throw new Error(`createCache: batch ${batch} must be >= 1`);
      }
      if (!Number.isInteger(maxLen) || maxLen < 1 || maxLen > limit) {
        throw new Error(`createCache: maxLen ${maxLen} must be in 1..${limit}`);
      }
      const cache: CacheState = {
        batch,
        capacity: maxLen,
        length: 0,
        rows: [],
        freed: false,
        kv: null,
        free() {
          if (cache.freed) return;
          cache.freed = true;
          cache.kv = null;
        },
      };
      return cache;
    },
    async prefill(inputIds, cache, options = {}) {
      checkAlive("prefill");
      const c = state(cache, "prefill");
      const rows = rules.layout(inputIds);
      const s = inputIds[0].length;
      if (rows.length !== c.batch) {
        throw new Error(`prefill: ${rows.length} rows for a cache of batch ${c.batch}`);
      }
      if (s > c.capacity) {
        throw new Error(`prefill: ${s} tokens exceed the cache capacity ${c.capacity}`);
      }
      const out = await run(
        c.batch,
        s,
        inputIds.flat(),
        rules.positions(rows, 0, s),
        rules.mask(rows, 0, s, s),
        null,
      );
      c.kv = new KvBuffer(kvShape, c.batch, capacityFor(s, c.capacity));
      c.kv.write(out.fresh, s, 0);
      c.rows = rows;
      c.length = s;
      return options.allLogits ? out.logits : lastRows(out.logits, c.batch, s);
    },
    async decodeStep(nextIds, cache) {
      checkAlive("decodeStep");
      const c = state(cache, "decodeStep");
      if (c.length === 0) throw new Error("decodeStep: run prefill on the cache first");
      if (!Array.isArray(nextIds) || nextIds.length !== c.batch) {
        throw new Error(
          `decodeStep: expected ${c.batch} ids (one per row), got ${nextIds?.length}`,
        );
      }
      for (const id of nextIds) {
        if (!Number.isInteger(id) || id < 0 || id >= V) {
          throw new Error(`decodeStep: ${id} is not a token id (vocab_size ${V})`);
        }
      }
      const t = c.length;
      if (t + 1 > c.capacity) {
        throw new Error(`decodeStep: the cache is full (${c.capacity} positions)`);
      }
      const kv = c.kv!;
      kv.reserve(t + 1, c.capacity);
      const out = await run(
        c.batch,
        1,
        nextIds,
        rules.positions(c.rows, t, 1),
        spreadMask(rules.mask(c.rows, t, 1, t + 1), c.batch, 1, t, kv.capacity),
        kv,
      );
      kv.write(out.fresh, 1, t);
      c.length = t + 1;
      return out.logits;
    },
    async dispose() {
      if (disposed) return;
      disposed = true;
      model.disposed = true;
      await session.release();
    },
  };
  return model;
}
