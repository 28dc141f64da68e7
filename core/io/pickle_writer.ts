/**
 * Writes the protocol-2 pickle of a torch state dict the way Python's pickler does for
 * `torch.save` (same opcodes, same memo puts and gets), so torch loads it and our own safe
 * unpickler reads it back.
 */

import type { Dtype } from "./dtype.ts";

export interface PickleTensorView {
  name: string;
  /** Storage key (decimal string, in order of first use). */
  storageKey: string;
  dtype: Dtype;
  storageNumel: number;
  storageOffset: number;
  shape: number[];
  stride: number[];
  requiresGrad: boolean;
}

export interface PickleStateDictOptions {
  /** `OrderedDict` (as `model.state_dict()` gives) instead of a plain dict (HF shards, peft). */
  orderedDict?: boolean;
  /** With `orderedDict`: the `_metadata` attribute (module name → {version: 1}), set by BUILD. */
  metadata?: Record<string, Record<string, number | string | boolean>>;
  /** Storage location tag (default `cpu`). */
  location?: string;
}

const DTYPE_STORAGES: Partial<Record<Dtype, string>> = {
  F16: "HalfStorage",
  F32: "FloatStorage",
  BF16: "BFloat16Storage",
  F64: "DoubleStorage",
  I64: "LongStorage",
  I32: "IntStorage",
  I16: "ShortStorage",
  I8: "CharStorage",
  U8: "ByteStorage",
  BOOL: "BoolStorage",
};

/** The torch storage type for a dtype; throws for dtypes torch zips cannot hold here. */
export function storageTypeFor(dtype: Dtype): string {
  const s = DTYPE_STORAGES[dtype];
  if (!s) throw new Error(`dtype ${dtype} has no torch storage type`);
  return s;
}

class PickleBuffer {
  private chunks: number[] = [];
  private memo = new Map<string, number>();

  byte(...b: number[]) {
    for (const x of b) this.chunks.push(x);
  }
  bytes(b: Uint8Array) {
    for (const x of b) this.chunks.push(x);
  }
  u32(v: number) {
    this.byte(v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff);
  }
  /** Emits BINGET if `id` was memoized; otherwise runs `write` and memoizes its result. */
  memoized(id: string | null, write: () => void) {
    if (id !== null) {
      const idx = this.memo.get(id);
      if (idx !== undefined) {
        if (idx < 256) this.byte(0x68, idx); // BINGET
        else {
          this.byte(0x6a); // LONG_BINGET
          this.u32(idx);
        }
        return;
      }
    }
    write();
    this.put(id ?? `anon:${this.memo.size}`);
  }
  private put(id: string) {
    const idx = this.memo.size;
    this.memo.set(id, idx);
    if (idx < 256) this.byte(0x71, idx); // BINPUT
    else {
      this.byte(0x72); // LONG_BINPUT
      this.u32(idx);
    }
  }
  str(s: string, id: string | null = null) {
    this.memoized(id, () => {
      const b = new TextEncoder().encode(s);
      this.byte(0x58); // BINUNICODE
      this.u32(b.length);
      this.bytes(b);
    });
  }
  int(v: number) {
    if (!Number.isSafeInteger(v)) throw new Error(`cannot pickle ${v} as an integer`);
    if (v >= 0 && v <= 0xff) this.byte(0x4b, v); // BININT1
    else if (v >= 0 && v <= 0xffff) this.byte(0x4d, v & 0xff, v >>> 8); // BININT2
    else if (v >= -(2 ** 31) && v < 2 ** 31) {
      this.byte(0x4a); // BININT
      this.u32(v >>> 0);
    } else {
      // LONG1: minimal little-endian two's complement, as Python's encode_long.
      const out: number[] = [];
      let x = BigInt(v);
      for (;;) {
        out.push(Number(x & 0xffn));
        x >>= 8n;
        const sign = out[out.length - 1] & 0x80;
        if ((x === 0n && !sign) || (x === -1n && sign)) break;
      }
      this.byte(0x8a, out.length, ...out);
    }
  }
  global(module: string, name: string) {
    this.memoized(`global:${module} ${name}`, () => {
      this.byte(0x63); // GLOBAL
      this.bytes(new TextEncoder().encode(`${module}\n${name}\n`));
    });
  }
  /** A tuple of ints (new object each time, as Python's `tuple(size)`). */
  intTuple(values: number[]) {
    if (values.length === 0) {
      this.byte(0x29); // EMPTY_TUPLE (not memoized)
      return;
    }
    this.memoized(null, () => {
      if (values.length > 3) this.byte(0x28); // MARK
      for (const v of values) this.int(v);
      this.byte(values.length > 3 ? 0x74 : 0x84 + values.length); // TUPLE / TUPLE1..3
    });
  }
  emptyOrderedDict() {
    this.memoized(null, () => {
      this.global("collections", "OrderedDict");
      this.byte(0x29, 0x52); // EMPTY_TUPLE, REDUCE
    });
  }
  result(): Uint8Array {
    return Uint8Array.from(this.chunks);
  }
}

/** Python's `_batch_setitems`: MARK … SETITEMS per 1000 items, SETITEM for a batch of one. */
function setItems<T>(p: PickleBuffer, items: T[], writeItem: (item: T) => void) {
  for (let i = 0; i < items.length; i += 1000) {
    const batch = items.slice(i, i + 1000);
    if (batch.length > 1) p.byte(0x28);
    for (const item of batch) writeItem(item);
    p.byte(batch.length > 1 ? 0x75 : 0x73);
  }
}

/** The pickle bytes of a state dict of tensor views. */
export function pickleStateDict(
  tensors: PickleTensorView[],
  options: PickleStateDictOptions = {},
): Uint8Array {
  const p = new PickleBuffer();
  const location = options.location ?? "cpu";
  p.byte(0x80, 2); // PROTO 2
  if (options.orderedDict) p.emptyOrderedDict();
  else p.memoized(null, () => p.byte(0x7d)); // EMPTY_DICT
  let nameId = 0;
  setItems(p, tensors, (t) => {
    p.str(t.name, `name:${nameId++}`);
    p.memoized(null, () => {
      p.global("torch._utils", "_rebuild_tensor_v2");
      p.memoized(null, () => {
        p.byte(0x28); // MARK
        p.memoized(null, () => {
          p.byte(0x28);
          p.str("storage", "str:storage");
          p.global("torch", storageTypeFor(t.dtype));
          p.str(t.storageKey, `key:${t.storageKey}`);
          p.str(location, "str:location");
          p.int(t.storageNumel);
          p.byte(0x74); // TUPLE
        });
        p.byte(0x51); // BINPERSID
        p.int(t.storageOffset);
        p.intTuple(t.shape);
        p.intTuple(t.stride);
        p.byte(t.requiresGrad ? 0x88 : 0x89);
        p.emptyOrderedDict();
        p.byte(0x74); // TUPLE
      });
      p.byte(0x52); // REDUCE
    });
  });
  if (options.orderedDict && options.metadata) {
    // BUILD with the instance dict {"_metadata": OrderedDict(module → {key: value})}.
    p.memoized(null, () => p.byte(0x7d));
    p.str("_metadata", null);
    p.emptyOrderedDict();
    const modules = Object.entries(options.metadata);
    setItems(p, modules, ([module, fields]) => {
      p.str(module, null);
      p.memoized(null, () => p.byte(0x7d));
      setItems(p, Object.entries(fields), ([k, v]) => {
        p.str(k, `str:${k}`);
        if (typeof v === "boolean") p.byte(v ? 0x88 : 0x89);
        else if (typeof v === "number") p.int(v);
        else p.str(v, null);
      });
    });
    p.byte(0x73); // SETITEM
    p.byte(0x62); // BUILD
  }
  p.byte(0x2e); // STOP
  return p.result();
}
