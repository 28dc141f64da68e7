/**
 * A safe unpickler for torch state dicts (spec: tests/fixtures/chatglm6b-tiny/README.md §10).
 *
 * It never imports or calls anything. It first walks the whole opcode stream (which executes
 * nothing) and refuses the file if any opcode is outside the small set a `torch.save`d state dict
 * uses, or any GLOBAL names something other than the state-dict callables and storage types. Only
 * then does a tiny stack machine evaluate the pickle, knowing just those operations, and the
 * result is a table of tensor views over storages — not objects.
 */

import { type Dtype, dtypeSize } from "./dtype.ts";
import { stridedSpan } from "./stored_tensor.ts";

/** One tensor of the state dict: a view over a storage (offsets and strides in elements). */
export interface PickledTensor {
  storageKey: string;
  dtype: Dtype;
  /** Elements in the storage, from the persistent id. */
  storageNumel: number;
  /** `cpu`, `cuda:0`, …: informational. */
  location: string;
  storageOffset: number;
  shape: number[];
  stride: number[];
  requiresGrad: boolean;
}

/** torch storage type names → element dtypes. */
export const TORCH_STORAGE_DTYPES: Record<string, Dtype> = {
  HalfStorage: "F16",
  FloatStorage: "F32",
  BFloat16Storage: "BF16",
  DoubleStorage: "F64",
  LongStorage: "I64",
  IntStorage: "I32",
  ShortStorage: "I16",
  CharStorage: "I8",
  ByteStorage: "U8",
  BoolStorage: "BOOL",
};

const CALLABLES = new Set([
  "collections OrderedDict",
  "torch._utils _rebuild_tensor_v2",
  "torch._utils _rebuild_parameter",
]);

function allowedGlobal(module: string, name: string): boolean {
  if (CALLABLES.has(`${module} ${name}`)) return true;
  return module === "torch" && Object.hasOwn(TORCH_STORAGE_DTYPES, name);
}

// Every pickle opcode (protocols 0–5) with how its argument is encoded, so the scan can step over
// a refused opcode and report everything that is wrong, not only the first thing.
type ArgKind =
  | 0
  | 1
  | 2
  | 4
  | 8
  | "line"
  | "lines2"
  | "len1"
  | "len4"
  | "len8";

const OPCODES: Record<number, [string, ArgKind]> = {
  0x28: ["MARK", 0],
  0x2e: ["STOP", 0],
  0x30: ["POP", 0],
  0x31: ["POP_MARK", 0],
  0x32: ["DUP", 0],
  0x46: ["FLOAT", "line"],
  0x49: ["INT", "line"],
  0x4a: ["BININT", 4],
  0x4b: ["BININT1", 1],
  0x4c: ["LONG", "line"],
  0x4d: ["BININT2", 2],
  0x4e: ["NONE", 0],
  0x50: ["PERSID", "line"],
  0x51: ["BINPERSID", 0],
  0x52: ["REDUCE", 0],
  0x53: ["STRING", "line"],
  0x54: ["BINSTRING", "len4"],
  0x55: ["SHORT_BINSTRING", "len1"],
  0x56: ["UNICODE", "line"],
  0x58: ["BINUNICODE", "len4"],
  0x61: ["APPEND", 0],
  0x62: ["BUILD", 0],
  0x63: ["GLOBAL", "lines2"],
  0x64: ["DICT", 0],
  0x7d: ["EMPTY_DICT", 0],
  0x65: ["APPENDS", 0],
  0x67: ["GET", "line"],
  0x68: ["BINGET", 1],
  0x69: ["INST", "lines2"],
  0x6a: ["LONG_BINGET", 4],
  0x6c: ["LIST", 0],
  0x5d: ["EMPTY_LIST", 0],
  0x6f: ["OBJ", 0],
  0x70: ["PUT", "line"],
  0x71: ["BINPUT", 1],
  0x72: ["LONG_BINPUT", 4],
  0x73: ["SETITEM", 0],
  0x74: ["TUPLE", 0],
  0x29: ["EMPTY_TUPLE", 0],
  0x75: ["SETITEMS", 0],
  0x47: ["BINFLOAT", 8],
  0x80: ["PROTO", 1],
  0x81: ["NEWOBJ", 0],
  0x82: ["EXT1", 1],
  0x83: ["EXT2", 2],
  0x84: ["EXT4", 4],
  0x85: ["TUPLE1", 0],
  0x86: ["TUPLE2", 0],
  0x87: ["TUPLE3", 0],
  0x88: ["NEWTRUE", 0],
  0x89: ["NEWFALSE", 0],
  0x8a: ["LONG1", "len1"],
  0x8b: ["LONG4", "len4"],
  0x42: ["BINBYTES", "len4"],
  0x43: ["SHORT_BINBYTES", "len1"],
  0x8c: ["SHORT_BINUNICODE", "len1"],
  0x8d: ["BINUNICODE8", "len8"],
  0x8e: ["BINBYTES8", "len8"],
  0x8f: ["EMPTY_SET", 0],
  0x90: ["ADDITEMS", 0],
  0x91: ["FROZENSET", 0],
  0x92: ["NEWOBJ_EX", 0],
  0x93: ["STACK_GLOBAL", 0],
  0x94: ["MEMOIZE", 0],
  0x95: ["FRAME", 8],
  0x96: ["BYTEARRAY8", "len8"],
  0x97: ["NEXT_BUFFER", 0],
  0x98: ["READONLY_BUFFER", 0],
};

/** The opcodes a torch state-dict pickle uses (§10), and nothing else. */
export const ALLOWED_OPCODES: ReadonlySet<string> = new Set([
  "PROTO",
  "EMPTY_DICT",
  "EMPTY_TUPLE",
  "MARK",
  "TUPLE",
  "TUPLE1",
  "TUPLE2",
  "TUPLE3",
  "BINUNICODE",
  "BININT",
  "BININT1",
  "BININT2",
  "LONG1",
  "NEWFALSE",
  "NEWTRUE",
  "NONE",
  "GLOBAL",
  "REDUCE",
  "BINPERSID",
  "SETITEM",
  "SETITEMS",
  "BUILD",
  "BINPUT",
  "LONG_BINPUT",
  "BINGET",
  "LONG_BINGET",
  "STOP",
]);

// ALLOWED_OPCODES by opcode byte (the scan looks at every opcode of a possibly hostile file).
const ALLOWED_CODES = new Uint8Array(256);
for (const [code, [name]] of Object.entries(OPCODES)) {
  if (ALLOWED_OPCODES.has(name)) ALLOWED_CODES[Number(code)] = 1;
}

// Opcodes that import or call something: listed first in a refusal, as the real danger.
const IMPORTING = new Set(["GLOBAL", "INST", "STACK_GLOBAL", "OBJ", "NEWOBJ", "NEWOBJ_EX"]);

interface Op {
  code: number;
  name: string;
  pos: number;
  /** Start and end of the argument bytes. */
  arg: number;
  end: number;
}

function u32(b: Uint8Array, p: number): number {
  return (b[p] | (b[p + 1] << 8) | (b[p + 2] << 16)) + b[p + 3] * 0x1000000;
}

function refuse(label: string, reason: string): never {
  throw new Error(`${label}: refused: ${reason}`);
}

/**
 * Bounds on what a checkpoint pickle may declare, far above any real state dict (a tensor takes
 * about 30 opcodes and 5 memo entries; `torch.save` nests MARKs at most 3 deep and batches
 * SETITEMS by 1000), so that a hostile pickle is refused after bounded work instead of filling
 * memory: 30 MB of MARK opcodes would otherwise mean 30 million stack entries.
 */
export const PICKLE_LIMITS = {
  /** Opcodes in one pickle: about 30k tensors' worth (a ChatGLM-6B shard holds about 50). */
  opcodes: 1_000_000,
  /** MARKs open at once. */
  markDepth: 64,
  /** Memo slots: a BINPUT/LONG_BINPUT index must be below this. */
  memo: 1_000_000,
  /** Values on the evaluation stack at once. */
  stack: 100_000,
} as const;

function invalid(label: string, reason: string): never {
  refuse(label, `not a valid checkpoint pickle: ${reason}`);
}

// How each opcode changes the stack depth, so that the walk can bound the stack before anything
// is evaluated. MARK opens a mark; the "to mark" opcodes drop everything down to the last one and
// then push their result (1) or nothing (0). Opcodes not listed leave the depth alone (they are
// refused by the scan anyway).
const STACK_EFFECT: Record<string, number> = {
  EMPTY_DICT: 1,
  EMPTY_TUPLE: 1,
  EMPTY_LIST: 1,
  EMPTY_SET: 1,
  BINUNICODE: 1,
  SHORT_BINUNICODE: 1,
  BINUNICODE8: 1,
  UNICODE: 1,
  STRING: 1,
  BINSTRING: 1,
  SHORT_BINSTRING: 1,
  BINBYTES: 1,
  SHORT_BINBYTES: 1,
  BINBYTES8: 1,
  BYTEARRAY8: 1,
  BININT: 1,
  BININT1: 1,
  BININT2: 1,
  INT: 1,
  LONG: 1,
  LONG1: 1,
  LONG4: 1,
  BINFLOAT: 1,
  FLOAT: 1,
  NONE: 1,
  NEWTRUE: 1,
  NEWFALSE: 1,
  GLOBAL: 1,
  STACK_GLOBAL: -1,
  REDUCE: -1,
  PERSID: 1,
  SETITEM: -2,
  APPEND: -1,
  BUILD: -1,
  BINGET: 1,
  LONG_BINGET: 1,
  GET: 1,
  DUP: 1,
  POP: -1,
  TUPLE2: -1,
  TUPLE3: -2,
  NEWOBJ: -1,
  NEWOBJ_EX: -2,
  EXT1: 1,
  EXT2: 1,
  EXT4: 1,
  NEXT_BUFFER: 1,
  STOP: -1,
};
const TO_MARK_PUSHING: Record<string, number> = {
  TUPLE: 1,
  LIST: 1,
  DICT: 1,
  FROZENSET: 1,
  INST: 1,
  OBJ: 1,
  SETITEMS: 0,
  APPENDS: 0,
  ADDITEMS: 0,
  POP_MARK: 0,
};

// The opcode table as dense arrays indexed by the opcode byte: the walk looks at every byte of a
// possibly hostile file, so it does no hashing per opcode.
const OP_NAME: (string | undefined)[] = [];
const OP_ARG: (ArgKind | undefined)[] = [];
/** Depth change, or NaN for MARK, or -100 - n for "to mark, then push n". */
const OP_EFFECT = new Float64Array(256);
for (const [code, [name, kind]] of Object.entries(OPCODES)) {
  const c = Number(code);
  OP_NAME[c] = name;
  OP_ARG[c] = kind;
  OP_EFFECT[c] = name === "MARK"
    ? NaN
    : Object.hasOwn(TO_MARK_PUSHING, name)
    ? -100 - TO_MARK_PUSHING[name]
    : STACK_EFFECT[name] ?? 0;
}

/**
 * Walks the opcodes (no evaluation), calling `visit` with each (the same object, updated in
 * place: nothing is kept per opcode); throws on truncation, an unknown opcode byte, or a pickle
 * past {@link PICKLE_LIMITS}.
 */
function walk(bytes: Uint8Array, label: string, visit: (op: Op) => void): void {
  let pos = 0;
  let count = 0;
  let depth = 0;
  const markAt: number[] = []; // stack depth below each open MARK
  let stopped = false;
  const op: Op = { code: 0, name: "", pos: 0, arg: 0, end: 0 };
  const need = (n: number, at: number, name: string) => {
    if (at + n > bytes.length) {
      refuse(label, `the pickle is truncated inside ${name} at byte ${at}`);
    }
  };
  const lineEnd = (from: number, name: string): number => {
    const nl = bytes.indexOf(0x0a, from);
    if (nl < 0) refuse(label, `the pickle is truncated inside ${name} at byte ${from}`);
    return nl + 1;
  };
  while (pos < bytes.length) {
    const code = bytes[pos];
    const name = OP_NAME[code];
    if (name === undefined) {
      refuse(label, `unknown pickle opcode 0x${code.toString(16).padStart(2, "0")} at byte ${pos}`);
    }
    if (++count > PICKLE_LIMITS.opcodes) {
      invalid(label, `more than ${PICKLE_LIMITS.opcodes} opcodes (at byte ${pos})`);
    }
    const effect = OP_EFFECT[code];
    if (effect !== effect) { // NaN: MARK
      if (markAt.length >= PICKLE_LIMITS.markDepth) {
        invalid(
          label,
          `more than ${PICKLE_LIMITS.markDepth} MARKs open at once (at byte ${pos}); a state ` +
            "dict nests only a few",
        );
      }
      markAt.push(depth);
      depth++;
    } else if (effect <= -100) depth = (markAt.pop() ?? 0) + (-100 - effect);
    else depth = Math.max(0, depth + effect);
    if (depth > PICKLE_LIMITS.stack) {
      invalid(label, `more than ${PICKLE_LIMITS.stack} values on the stack at byte ${pos}`);
    }
    const kind = OP_ARG[code]!;
    const arg = pos + 1;
    let end: number;
    if (typeof kind === "number") {
      need(kind, arg, name);
      end = arg + kind;
    } else if (kind === "line") end = lineEnd(arg, name);
    else if (kind === "lines2") end = lineEnd(lineEnd(arg, name), name);
    else {
      const w = kind === "len1" ? 1 : kind === "len4" ? 4 : 8;
      need(w, arg, name);
      const n = w === 1
        ? bytes[arg]
        : w === 4
        ? u32(bytes, arg)
        : u32(bytes, arg) + u32(bytes, arg + 4) * 2 ** 32;
      need(n, arg + w, name);
      end = arg + w + n;
    }
    if (code === 0x71 || code === 0x72) { // BINPUT, LONG_BINPUT
      const idx = code === 0x71 ? bytes[arg] : u32(bytes, arg);
      if (idx >= PICKLE_LIMITS.memo) {
        invalid(
          label,
          `memo index ${idx} at byte ${pos} is over the limit of ${PICKLE_LIMITS.memo}`,
        );
      }
    }
    op.code = code;
    op.name = name;
    op.pos = pos;
    op.arg = arg;
    op.end = end;
    visit(op);
    pos = end;
    if (code === 0x2e) { // STOP
      stopped = true;
      break;
    }
  }
  if (!stopped) refuse(label, "the pickle ends without a STOP opcode");
  if (pos !== bytes.length) refuse(label, `${bytes.length - pos} bytes follow the pickle's STOP`);
}

function globalName(bytes: Uint8Array, op: Op): [string, string] {
  const text = new TextDecoder().decode(bytes.subarray(op.arg, op.end));
  const [module, name] = text.split("\n");
  return [module, name];
}

/**
 * Scans a pickle without evaluating it; throws naming every opcode outside the state-dict set and
 * every GLOBAL outside the allowed globals, with byte positions.
 */
export function scanPickle(bytes: Uint8Array, label: string): void {
  // Only the first few of each kind are kept for the message; the rest are counted.
  const importing: string[] = [];
  const others: string[] = [];
  let problemCount = 0;
  // Texts are made only for the problems shown: a hostile pickle may have millions.
  const problem = (isImporting: boolean, what: string, pos: number) => {
    problemCount++;
    const list = isImporting ? importing : others;
    if (list.length < 6) list.push(`${what} at byte ${pos}`);
  };
  const strings: string[] = []; // recent string pushes: what a STACK_GLOBAL would import
  walk(bytes, label, (op) => {
    if (op.name === "SHORT_BINUNICODE" || op.name === "BINUNICODE" || op.name === "BINUNICODE8") {
      const skip = op.name === "SHORT_BINUNICODE" ? 1 : op.name === "BINUNICODE" ? 4 : 8;
      strings.push(new TextDecoder().decode(bytes.subarray(op.arg + skip, op.end)));
    } else if (op.name === "STACK_GLOBAL" && strings.length >= 2) {
      const [module, name] = strings.slice(-2);
      problem(true, `STACK_GLOBAL ${module}.${name}`, op.pos);
      return;
    } else if (op.name !== "MEMOIZE" && op.name !== "BINPUT" && op.name !== "LONG_BINPUT") {
      strings.length = 0;
    }
    if (op.name === "GLOBAL" || op.name === "INST") {
      const [module, name] = globalName(bytes, op);
      if (op.name === "GLOBAL" && allowedGlobal(module, name)) return;
      problem(true, `${op.name} ${module}.${name}`, op.pos);
    } else if (!ALLOWED_CODES[op.code]) {
      const imp = IMPORTING.has(op.name);
      if ((imp ? importing : others).length < 6) problem(imp, `opcode ${op.name}`, op.pos);
      else problemCount++;
    }
  });
  if (problemCount === 0) return;
  const shown = [...importing, ...others].slice(0, 6);
  if (problemCount > shown.length) shown.push(`${problemCount - shown.length} more`);
  refuse(
    label,
    `not a plain torch state dict: ${shown.join("; ")} (only collections.OrderedDict, ` +
      `torch._utils._rebuild_tensor_v2/_rebuild_parameter and torch storage types may be ` +
      `named; nothing was executed)`,
  );
}

// --- evaluation ---------------------------------------------------------------------------------

interface PTuple {
  t: "tuple";
  items: PValue[];
}
interface PDict {
  t: "dict";
  entries: Map<string | number, PValue>;
}
interface PGlobal {
  t: "global";
  module: string;
  name: string;
}
interface PStorage {
  t: "storage";
  key: string;
  dtype: Dtype;
  location: string;
  numel: number;
}
interface PTensor {
  t: "tensor";
  storage: PStorage;
  offset: number;
  shape: number[];
  stride: number[];
  requiresGrad: boolean;
}
type PValue =
  | null
  | boolean
  | number
  | string
  | PTuple
  | PDict
  | PGlobal
  | PStorage
  | PTensor;

const MARK = Symbol("mark");

function describe(v: PValue | typeof MARK): string {
  if (v === MARK) return "a MARK";
  if (v === null) return "None";
  if (typeof v !== "object") return typeof v === "string" ? `'${v}'` : String(v);
  if (v.t === "global") return `${v.module}.${v.name}`;
  return `a ${v.t}`;
}

/**
 * Scans, then evaluates a torch state-dict pickle: name → tensor view, in pickle order. Checks
 * each view fits in its storage (numel from the persistent id) and that storages agree.
 */
export function unpickleStateDict(bytes: Uint8Array, label: string): Map<string, PickledTensor> {
  scanPickle(bytes, label);
  const stack: (PValue | typeof MARK)[] = [];
  const memo = new Map<number, PValue>();
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const utf8 = new TextDecoder();
  let result: PValue | undefined;

  walk(bytes, label, (op) => {
    if (stack.length >= PICKLE_LIMITS.stack) {
      invalid(label, `more than ${PICKLE_LIMITS.stack} values on the stack at byte ${op.pos}`);
    }
    const at = `${op.name} at byte ${op.pos}`;
    const pop = (): PValue => {
      const v = stack.pop();
      if (v === undefined || v === MARK) refuse(label, `${at}: pickle stack underflow`);
      return v;
    };
    const popToMark = (): PValue[] => {
      const i = stack.lastIndexOf(MARK);
      if (i < 0) refuse(label, `${at}: no MARK on the pickle stack`);
      const items = stack.splice(i) as PValue[];
      items.shift();
      return items;
    };
    const top = (): PValue => {
      const v = stack[stack.length - 1];
      if (v === undefined || v === MARK) refuse(label, `${at}: nothing to memoize`);
      return v;
    };
    switch (op.name) {
      case "PROTO":
        break;
      case "MARK":
        stack.push(MARK);
        break;
      case "EMPTY_DICT":
        stack.push({ t: "dict", entries: new Map() });
        break;
      case "EMPTY_TUPLE":
        stack.push({ t: "tuple", items: [] });
        break;
      case "TUPLE":
        stack.push({ t: "tuple", items: popToMark() });
        break;
      case "TUPLE1":
      case "TUPLE2":
      case "TUPLE3": {
        const n = op.code - 0x84;
        const items: PValue[] = [];
        for (let i = 0; i < n; i++) items.unshift(pop());
        stack.push({ t: "tuple", items });
        break;
      }
      case "BINUNICODE":
        stack.push(utf8.decode(bytes.subarray(op.arg + 4, op.end)));
        break;
      case "BININT":
        stack.push(dv.getInt32(op.arg, true));
        break;
      case "BININT1":
        stack.push(bytes[op.arg]);
        break;
      case "BININT2":
        stack.push(dv.getUint16(op.arg, true));
        break;
      case "LONG1": {
        const n = bytes[op.arg];
        let v = 0n;
        for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[op.arg + 1 + i]);
        if (n > 0 && bytes[op.arg + n] & 0x80) v -= 1n << BigInt(8 * n);
        if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < -BigInt(Number.MAX_SAFE_INTEGER)) {
          refuse(label, `${at}: integer ${v} is too large`);
        }
        stack.push(Number(v));
        break;
      }
      case "NEWTRUE":
        stack.push(true);
        break;
      case "NEWFALSE":
        stack.push(false);
        break;
      case "NONE":
        stack.push(null);
        break;
      case "GLOBAL": {
        const [module, name] = globalName(bytes, op);
        stack.push({ t: "global", module, name });
        break;
      }
      case "BINPUT":
        memo.set(bytes[op.arg], top());
        break;
      case "LONG_BINPUT":
        memo.set(u32(bytes, op.arg), top());
        break;
      case "BINGET":
      case "LONG_BINGET": {
        const idx = op.name === "BINGET" ? bytes[op.arg] : u32(bytes, op.arg);
        if (!memo.has(idx)) refuse(label, `${at}: memo entry ${idx} was never stored`);
        stack.push(memo.get(idx)!);
        break;
      }
      case "BINPERSID":
        stack.push(persistentStorage(pop(), label, at));
        break;
      case "REDUCE": {
        const args = pop();
        const fn = pop();
        stack.push(reduce(fn, args, label, at));
        break;
      }
      case "SETITEM": {
        const value = pop();
        const key = pop();
        setItems(stack[stack.length - 1], [key, value], label, at);
        break;
      }
      case "SETITEMS": {
        const items = popToMark();
        setItems(stack[stack.length - 1], items, label, at);
        break;
      }
      case "BUILD": {
        // Only `state_dict()`'s OrderedDict gets a state ({"_metadata": …}): accepted, ignored.
        const state = pop();
        const target = stack[stack.length - 1];
        if (!isDict(target) || !(isDict(state) || state === null)) {
          refuse(
            label,
            `${at}: BUILD of ${describe(target)} with ${describe(state)} is not allowed`,
          );
        }
        break;
      }
      case "STOP":
        result = pop();
        break;
      default:
        refuse(label, `${at}: opcode not allowed`); // unreachable after the scan
    }
  });
  if (!isDict(result!)) refuse(label, `the pickle holds ${describe(result!)}, not a state dict`);
  return collectTensors(result, label);
}

function isDict(v: PValue | typeof MARK | undefined): v is PDict {
  return typeof v === "object" && v !== null && (v as PDict).t === "dict";
}

function setItems(
  target: PValue | typeof MARK | undefined,
  items: PValue[],
  label: string,
  at: string,
) {
  if (!isDict(target)) refuse(label, `${at}: setting items on ${describe(target ?? null)}`);
  if (items.length % 2) refuse(label, `${at}: odd number of items`);
  for (let i = 0; i < items.length; i += 2) {
    const k = items[i];
    if (typeof k !== "string" && typeof k !== "number") {
      refuse(label, `${at}: dict key ${describe(k)} is not a string`);
    }
    target.entries.set(k, items[i + 1]);
  }
}

function isInt(v: PValue): v is number {
  return typeof v === "number" && Number.isSafeInteger(v);
}

function intTuple(v: PValue, what: string, label: string, at: string): number[] {
  if (typeof v !== "object" || v === null || v.t !== "tuple" || !v.items.every(isInt)) {
    refuse(label, `${at}: ${what} is ${describe(v)}, not a tuple of integers`);
  }
  return v.items as number[];
}

function persistentStorage(pid: PValue, label: string, at: string): PStorage {
  const items = typeof pid === "object" && pid !== null && pid.t === "tuple" ? pid.items : null;
  if (!items || items.length !== 5 || items[0] !== "storage") {
    refuse(label, `${at}: unknown persistent id ${describe(pid)} (expected ('storage', …))`);
  }
  const [, type, key, location, numel] = items;
  if (
    typeof type !== "object" || type === null || type.t !== "global" || type.module !== "torch" ||
    !Object.hasOwn(TORCH_STORAGE_DTYPES, type.name)
  ) {
    refuse(label, `${at}: persistent id storage type ${describe(type)} is not a torch storage`);
  }
  if (typeof key !== "string" || !/^[A-Za-z0-9_]+$/.test(key)) {
    refuse(label, `${at}: persistent id storage key ${describe(key)} is not a plain key`);
  }
  if (typeof location !== "string") refuse(label, `${at}: persistent id location is not a string`);
  if (!isInt(numel) || numel < 0) refuse(label, `${at}: persistent id numel ${describe(numel)}`);
  return { t: "storage", key, dtype: TORCH_STORAGE_DTYPES[type.name], location, numel };
}

function reduce(fn: PValue, args: PValue, label: string, at: string): PValue {
  const callable = typeof fn === "object" && fn !== null && fn.t === "global"
    ? `${fn.module} ${fn.name}`
    : "";
  if (typeof args !== "object" || args === null || args.t !== "tuple") {
    refuse(label, `${at}: REDUCE arguments are ${describe(args)}, not a tuple`);
  }
  const a = args.items;
  if (callable === "collections OrderedDict") {
    if (a.length) refuse(label, `${at}: OrderedDict called with arguments`);
    return { t: "dict", entries: new Map() };
  }
  if (callable === "torch._utils _rebuild_tensor_v2") {
    if (a.length !== 6 && a.length !== 7) {
      refuse(label, `${at}: _rebuild_tensor_v2 takes 6 or 7 arguments, got ${a.length}`);
    }
    const [storage, offset, size, stride, requiresGrad, hooks] = a;
    if (typeof storage !== "object" || storage === null || storage.t !== "storage") {
      refuse(label, `${at}: _rebuild_tensor_v2 storage is ${describe(storage)}`);
    }
    if (!isInt(offset) || offset < 0) {
      refuse(label, `${at}: bad storage offset ${describe(offset)}`);
    }
    const shape = intTuple(size, "size", label, at);
    const strides = intTuple(stride, "stride", label, at);
    if (shape.length !== strides.length) {
      refuse(label, `${at}: size (${shape}) and stride (${strides}) differ in length`);
    }
    if (shape.some((d) => d < 0) || strides.some((d) => d < 0)) {
      refuse(label, `${at}: negative size or stride`);
    }
    if (typeof requiresGrad !== "boolean") refuse(label, `${at}: requires_grad is not a bool`);
    if (!isDict(hooks) || hooks.entries.size) refuse(label, `${at}: backward hooks are not empty`);
    return { t: "tensor", storage, offset, shape, stride: strides, requiresGrad };
  }
  if (callable === "torch._utils _rebuild_parameter") {
    const [data, requiresGrad] = a;
    if (typeof data !== "object" || data === null || data.t !== "tensor" || a.length !== 3) {
      refuse(label, `${at}: _rebuild_parameter arguments are not (tensor, requires_grad, hooks)`);
    }
    return { ...data, requiresGrad: requiresGrad === true };
  }
  refuse(label, `${at}: calling ${describe(fn)} is not allowed`);
}

function collectTensors(dict: PDict, label: string): Map<string, PickledTensor> {
  const out = new Map<string, PickledTensor>();
  const storages = new Map<string, PStorage>();
  for (const [name, v] of dict.entries) {
    if (typeof name !== "string") refuse(label, `state dict key ${name} is not a string`);
    if (typeof v !== "object" || v === null || v.t !== "tensor") {
      refuse(label, `state dict entry ${JSON.stringify(name)} is ${describe(v)}, not a tensor`);
    }
    const s = v.storage;
    const prev = storages.get(s.key);
    if (prev && (prev.dtype !== s.dtype || prev.numel !== s.numel)) {
      refuse(
        label,
        `storage '${s.key}' is described twice differently (${prev.dtype}×${prev.numel}, ` +
          `${s.dtype}×${s.numel})`,
      );
    }
    storages.set(s.key, s);
    const span = stridedSpan(v.shape, v.stride);
    const need = span === 0 ? 0 : v.offset + span;
    if (need > s.numel) {
      refuse(
        label,
        `tensor ${JSON.stringify(name)}: view [${v.shape}] (stride [${v.stride}], offset ` +
          `${v.offset}) needs ${need} elements but its storage '${s.key}' holds ${s.numel}`,
      );
    }
    out.set(name, {
      storageKey: s.key,
      dtype: s.dtype,
      storageNumel: s.numel,
      location: s.location,
      storageOffset: v.offset,
      shape: v.shape,
      stride: v.stride,
      requiresGrad: v.requiresGrad,
    });
  }
  return out;
}

/** Bytes a storage of `numel` elements of `dtype` must hold. */
export function storageBytes(t: Pick<PickledTensor, "dtype" | "storageNumel">): number {
  return t.storageNumel * dtypeSize(t.dtype);
}
