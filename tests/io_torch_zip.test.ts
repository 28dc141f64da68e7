import assert from "node:assert/strict";
import { openSafetensors, readTensorBytes } from "../core/io/safetensors.ts";
import { openTorchZip, openZip } from "../core/io/torch_zip.ts";
import { scanPickle, unpickleStateDict } from "../core/io/unpickle.ts";
import { pickleStateDict } from "../core/io/pickle_writer.ts";
import {
  encodeStoredZip,
  encodeTorchStateDict,
  type TorchStorage,
  writeTorchStateDict,
} from "../core/io/torch_writer.ts";

const FIX = new URL("./fixtures/chatglm6b-tiny/", import.meta.url).pathname;

async function withTemp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function readAll(path: string) {
  const z = await openTorchZip(path);
  const out = new Map<string, { dtype: string; shape: number[]; data: Uint8Array }>();
  for (const [name, t] of z.tensors) {
    out.set(name, { dtype: t.dtype, shape: t.shape, data: await readTensorBytes(z, name) });
  }
  return { z, tensors: out };
}

Deno.test("adapters' .bin hold exactly the tensors of their .safetensors", async () => {
  for (const dir of ["adapter-qkv", "adapter-multi"]) {
    const { z, tensors } = await readAll(`${FIX}${dir}/adapter_model.bin`);
    assert.equal(z.root, "adapter_model");
    const st = await openSafetensors(`${FIX}${dir}/adapter_model.safetensors`);
    assert.deepEqual([...tensors.keys()].sort(), [...st.tensors.keys()].sort());
    for (const [name, t] of st.tensors) {
      const b = tensors.get(name)!;
      assert.equal(b.dtype, t.dtype, name);
      assert.deepEqual(b.shape, t.shape, name);
      assert.deepEqual(b.data, await readTensorBytes(st, name), name);
    }
  }
});

Deno.test("the writer reproduces torch.save's fixture files byte for byte", async () => {
  await withTemp(async (dir) => {
    for (
      const f of [
        "adapter-qkv/adapter_model.bin",
        "adapter-multi/adapter_model.bin",
        "pytorch/pytorch_model-00001-of-00002.bin",
        "pytorch/pytorch_model-00002-of-00002.bin",
      ]
    ) {
      const { tensors } = await readAll(FIX + f);
      const out = `${dir}/${f.split("/")[1]}`; // same file name → same root folder
      await writeTorchStateDict(
        out,
        [...tensors].map(([name, t]) => ({ name, ...t, dtype: t.dtype as "F32" })),
        { byteorder: false }, // the fixtures come from a torch that predates byteorder
      );
      assert.deepEqual(await Deno.readFile(out), await Deno.readFile(FIX + f), f);
    }
  });
});

Deno.test("round trip: OrderedDict with _metadata, strided views, shared storages, scalars", async () => {
  await withTemp(async (dir) => {
    const base = Float32Array.from({ length: 12 }, (_, i) => i + 0.5);
    const shared: TorchStorage = { dtype: "F32", data: base };
    const halves = Uint16Array.of(0x3c00, 0x4000, 0x4200, 0x4400); // f16 1, 2, 3, 4
    const path = `${dir}/state.bin`;
    await writeTorchStateDict(path, [
      { name: "w", storage: shared, shape: [3, 4] },
      { name: "w.T", storage: shared, shape: [4, 3], stride: [1, 4] }, // a transpose
      { name: "row1", storage: shared, shape: [4], storageOffset: 4 },
      { name: "col2", storage: shared, shape: [3], storageOffset: 2, stride: [4] },
      { name: "h", dtype: "F16", shape: [2, 2], data: halves },
      { name: "step", dtype: "I64", shape: [], data: BigInt64Array.of(42n), requiresGrad: false },
      { name: "p", dtype: "F32", shape: [2], data: Float32Array.of(-1, 1), requiresGrad: true },
    ], {
      orderedDict: true,
      metadata: { "": { version: 1 }, "layer": { version: 1 } },
    });
    const { z, tensors } = await readAll(path);
    assert.equal(z.root, "state");
    assert.deepEqual([...tensors.keys()], ["w", "w.T", "row1", "col2", "h", "step", "p"]);
    const f = (name: string) => [...new Float32Array(tensors.get(name)!.data.slice().buffer)];
    assert.deepEqual(f("w"), [...base]);
    const t = [];
    for (let c = 0; c < 4; c++) for (let r = 0; r < 3; r++) t.push(base[r * 4 + c]);
    assert.deepEqual(f("w.T"), t);
    assert.ok(z.tensors.get("w.T")!.strides, "non-contiguous view keeps its strides");
    assert.deepEqual(f("row1"), [4.5, 5.5, 6.5, 7.5]);
    assert.deepEqual(f("col2"), [2.5, 6.5, 10.5]);
    assert.deepEqual([...new Uint16Array(tensors.get("h")!.data.slice().buffer)], [...halves]);
    assert.deepEqual(tensors.get("step")!.shape, []);
    assert.equal(new BigInt64Array(tensors.get("step")!.data.slice().buffer)[0], 42n);
    assert.equal(z.pickled.get("p")!.requiresGrad, true);
    // Four views, one storage entry.
    const keys = new Set([...z.pickled.values()].map((p) => p.storageKey));
    assert.equal(keys.size, 4);
    assert.ok(z.archive.entries.has("state/byteorder"));
    assert.ok(z.archive.entries.has("state/version"));
  });
});

Deno.test("many tensors: LONG_BINPUT memo indices and storages sorted as strings", async () => {
  const tensors = Array.from({ length: 150 }, (_, i) => ({
    name: `t${i}`,
    dtype: "F32" as const,
    shape: [1],
    data: Float32Array.of(i),
  }));
  const bytes = await encodeTorchStateDict(tensors);
  await withTemp(async (dir) => {
    await Deno.writeFile(`${dir}/many.bin`, bytes);
    const { z, tensors: back } = await readAll(`${dir}/many.bin`);
    assert.equal(z.root, "archive");
    for (let i = 0; i < 150; i++) {
      assert.equal(new Float32Array(back.get(`t${i}`)!.data.slice().buffer)[0], i);
    }
    const names = [...z.archive.entries.keys()].filter((n) => n.includes("/data/"));
    assert.deepEqual(names.slice(0, 4), [
      "archive/data/0",
      "archive/data/1",
      "archive/data/10",
      "archive/data/100",
    ]);
  });
});

Deno.test("large integers go through LONG1", () => {
  const pkl = pickleStateDict([{
    name: "big",
    storageKey: "0",
    dtype: "F16",
    storageNumel: 2 ** 32 + 5,
    storageOffset: 2 ** 31,
    shape: [2 ** 32 + 5 - 2 ** 31],
    stride: [1],
    requiresGrad: false,
  }]);
  assert.ok(pkl.includes(0x8a));
  const t = unpickleStateDict(pkl, "big.pkl").get("big")!;
  assert.equal(t.storageNumel, 2 ** 32 + 5);
  assert.equal(t.storageOffset, 2 ** 31);
});

Deno.test("a ZIP64 archive reads", async () => {
  const bytes = await encodeTorchStateDict(
    [{ name: "x", dtype: "F32", shape: [3], data: Float32Array.of(1, 2, 3) }],
    { forceZip64: true, root: "z64" },
  );
  await withTemp(async (dir) => {
    await Deno.writeFile(`${dir}/z64.bin`, bytes);
    const { z, tensors } = await readAll(`${dir}/z64.bin`);
    assert.equal(z.archive.zip64, true);
    // The central directory carries 0xffffffff placeholders; the values are in ZIP64 extras.
    const cd = bytes.findIndex((_, i) =>
      bytes[i] === 0x50 && bytes[i + 1] === 0x4b && bytes[i + 2] === 1 && bytes[i + 3] === 2
    );
    assert.equal(new DataView(bytes.buffer).getUint32(cd + 42, true), 0xffffffff);
    assert.deepEqual([...new Float32Array(tensors.get("x")!.data.slice().buffer)], [1, 2, 3]);
  });
});

// --- hand-made pickles --------------------------------------------------------------------------

const enc = new TextEncoder();
function op(...parts: (number | string | Uint8Array)[]): Uint8Array {
  const out: number[] = [];
  for (const p of parts) {
    if (typeof p === "number") out.push(p);
    else if (typeof p === "string") out.push(...enc.encode(p));
    else out.push(...p);
  }
  return Uint8Array.from(out);
}
const binunicode = (s: string) => {
  const b = enc.encode(s);
  return op(0x58, b.length & 0xff, (b.length >> 8) & 0xff, 0, 0, b);
};
const global = (m: string, n: string) => op(0x63, `${m}\n${n}\n`);
const concat = (...parts: Uint8Array[]) => op(...parts);

/** A pickle of {"w": tensor(storage '0', F32, [n])} followed by `extra` items. */
function stateDictPickle(n: number, extra: Uint8Array = new Uint8Array()): Uint8Array {
  return concat(
    op(0x80, 2, 0x7d, 0x28), // PROTO 2, EMPTY_DICT, MARK
    binunicode("w"),
    global("torch._utils", "_rebuild_tensor_v2"),
    op(0x28, 0x28),
    binunicode("storage"),
    global("torch", "FloatStorage"),
    binunicode("0"),
    binunicode("cpu"),
    op(0x4b, n, 0x74, 0x51), // numel, TUPLE, BINPERSID
    op(0x4b, 0, 0x4b, n, 0x85, 0x4b, 1, 0x85, 0x89), // offset, (n,), (1,), False
    global("collections", "OrderedDict"),
    op(0x29, 0x52, 0x74, 0x52), // (), REDUCE, TUPLE, REDUCE
    extra,
    op(0x75, 0x2e), // SETITEMS, STOP
  );
}

async function zipWith(pkl: Uint8Array, n: number, root = "crafted"): Promise<Uint8Array> {
  return await encodeStoredZip([
    { name: `${root}/data.pkl`, data: pkl },
    { name: `${root}/data/0`, data: new Uint8Array(4 * n) },
    { name: `${root}/version`, data: enc.encode("3\n") },
  ]);
}

Deno.test("hand-made state dict pickle evaluates; its zip loads", async () => {
  const t = unpickleStateDict(stateDictPickle(6), "ok.pkl");
  assert.deepEqual(t.get("w"), {
    storageKey: "0",
    dtype: "F32",
    storageNumel: 6,
    location: "cpu",
    storageOffset: 0,
    shape: [6],
    stride: [1],
    requiresGrad: false,
  });
  await withTemp(async (dir) => {
    await Deno.writeFile(`${dir}/ok.bin`, await zipWith(stateDictPickle(6), 6));
    const z = await openTorchZip(`${dir}/ok.bin`);
    assert.equal(z.tensors.get("w")!.byteLength, 24);
  });
});

Deno.test("pickles that import or call anything else are refused, nothing evaluated", async () => {
  const call = (g: Uint8Array) =>
    concat(binunicode("x"), g, binunicode("echo pwned"), op(0x85, 0x52));
  const bad: [string, Uint8Array, RegExp][] = [
    ["os.system", call(global("os", "system")), /GLOBAL os\.system at byte \d+/],
    ["posix.system", call(global("posix", "system")), /GLOBAL posix\.system/],
    ["builtins.eval", call(global("builtins", "eval")), /GLOBAL builtins\.eval/],
    [
      "STACK_GLOBAL",
      call(op(0x8c, 2, "os", 0x8c, 6, "system", 0x93)),
      /STACK_GLOBAL os\.system at byte \d+/,
    ],
    ["INST", concat(binunicode("x"), op(0x28, 0x69, "os\nsystem\n")), /INST os\.system at byte/],
    ["OBJ", concat(binunicode("x"), op(0x28, 0x6f)), /opcode OBJ at byte/],
    ["NEWOBJ", concat(binunicode("x"), op(0x29, 0x29, 0x81)), /opcode NEWOBJ at byte/],
    ["EXT1", concat(binunicode("x"), op(0x82, 1)), /opcode EXT1 at byte/],
    ["text PERSID", concat(binunicode("x"), op(0x50, "0\n")), /opcode PERSID at byte/],
    ["torch.load", call(global("torch", "load")), /GLOBAL torch\.load/],
  ];
  await withTemp(async (dir) => {
    for (const [what, extra, re] of bad) {
      const pkl = stateDictPickle(6, extra);
      assert.throws(() => scanPickle(pkl, "x.pkl"), re, what);
      assert.throws(() => unpickleStateDict(pkl, "x.pkl"), re, what);
      const path = `${dir}/bad.bin`;
      await Deno.writeFile(path, await zipWith(pkl, 6));
      await assert.rejects(openTorchZip(path), (e: Error) => {
        assert.match(e.message, re, what);
        assert.ok(e.message.includes(path));
        assert.match(e.message, /nothing was executed/);
        return true;
      });
    }
  });
});

Deno.test("the scan runs before any evaluation", () => {
  // Evaluating would fail at byte 2 (memo 9 was never stored); the scan must report the global.
  const pkl = concat(op(0x80, 2, 0x68, 9), call2(global("os", "system")), op(0x2e));
  assert.throws(() => unpickleStateDict(pkl, "x.pkl"), /GLOBAL os\.system at byte 4/);
  function call2(g: Uint8Array) {
    return concat(g, binunicode("id"), op(0x85, 0x52));
  }
});

Deno.test("allowed globals used the wrong way are refused at evaluation", () => {
  const withValue = (value: Uint8Array) =>
    concat(op(0x80, 2, 0x7d, 0x28), binunicode("w"), value, op(0x75, 0x2e));
  const cases: [Uint8Array, RegExp][] = [
    // Calling a storage type.
    [concat(global("torch", "FloatStorage"), op(0x29, 0x52)), /calling torch\.FloatStorage/],
    // OrderedDict with arguments.
    [
      concat(global("collections", "OrderedDict"), binunicode("a"), op(0x85, 0x52)),
      /OrderedDict called/,
    ],
    // A persistent id that is not a storage.
    [
      concat(op(0x28), binunicode("module"), binunicode("x"), op(0x74, 0x51)),
      /unknown persistent id/,
    ],
    // A value that is not a tensor.
    [binunicode("just a string"), /entry "w" is 'just a string', not a tensor/],
  ];
  for (const [value, re] of cases) {
    assert.throws(() => unpickleStateDict(withValue(value), "x.pkl"), re);
  }
  assert.throws(() => unpickleStateDict(op(0x80, 2, 0x7d), "x.pkl"), /without a STOP/);
  assert.throws(
    () => unpickleStateDict(op(0x80, 2, 0x7d, 0x2e, 0x2e), "x.pkl"),
    /follow the pickle's STOP/,
  );
  assert.throws(
    () => unpickleStateDict(op(0x80, 2, 0xff), "x.pkl"),
    /unknown pickle opcode 0xff at byte 2/,
  );
  assert.throws(() => unpickleStateDict(op(0x80, 2, 0x58, 9, 0, 0, 0, 0x61), "x.pkl"), /truncated/);
});

Deno.test("pickle bombs are refused as invalid checkpoint pickles after bounded work", async () => {
  // 30 MB of MARK opcodes: refused at the 65th MARK (byte 67), not after walking 30 MB.
  const marks = new Uint8Array(30 * 1024 * 1024).fill(0x28);
  marks.set([0x80, 2], 0);
  marks[marks.length - 1] = 0x2e;
  for (const fn of [scanPickle, unpickleStateDict]) {
    assert.throws(
      () => fn(marks, "bomb.pkl"),
      /^Error: bomb\.pkl: refused: not a valid checkpoint pickle: more than 64 MARKs open at once \(at byte 66\)/,
    );
  }
  // The same through a zip: the message names the file.
  await withTemp(async (dir) => {
    const path = `${dir}/marks.bin`;
    await Deno.writeFile(path, await zipWith(marks, 6));
    await assert.rejects(openTorchZip(path), (e: Error) => {
      assert.ok(e.message.includes(path), e.message);
      assert.match(e.message, /not a valid checkpoint pickle: more than 64 MARKs/);
      return true;
    });
  });
  // MARKs that are closed again do not count: a deep but balanced pickle is fine up to the limit.
  const nested = (depth: number) =>
    concat(op(0x80, 2), op(...new Array(depth).fill(0x28)), op(...new Array(depth).fill(0x74)));
  assert.throws(
    () => unpickleStateDict(concat(nested(64), op(0x2e)), "deep.pkl"),
    /holds a tuple, not a state dict/, // walked and evaluated: 64 open MARKs are allowed
  );
  // A memo index far past any real checkpoint (LONG_BINPUT 2^31).
  assert.throws(
    () => scanPickle(concat(op(0x80, 2, 0x7d, 0x72, 0, 0, 0, 0x80), op(0x2e)), "memo.pkl"),
    /memo\.pkl: refused: not a valid checkpoint pickle: memo index 2147483648 at byte 3/,
  );
  // 200k NONEs: every opcode is allowed, but the stack is capped (in the walk, before evaluation).
  const nones = new Uint8Array(200_003).fill(0x4e);
  nones.set([0x80, 2], 0);
  nones[nones.length - 1] = 0x2e;
  assert.throws(
    () => unpickleStateDict(nones, "nones.pkl"),
    /nones\.pkl: refused: not a valid checkpoint pickle: more than 100000 values on the stack/,
  );
  // More opcodes than any real state dict: refused at the limit (each one is a NONE + POP pair).
  const many = new Uint8Array(2 * 500_001 + 3);
  many.set([0x80, 2], 0);
  for (let i = 2; i < many.length - 1; i += 2) many.set([0x4e, 0x30], i);
  many[many.length - 1] = 0x2e;
  assert.throws(
    () => scanPickle(many, "long.pkl"),
    /long\.pkl: refused: not a valid checkpoint pickle: more than 1000000 opcodes \(at byte 1000001\)/,
  );
});

function patchCentral(
  bytes: Uint8Array,
  entryName: string,
  patch: (dv: DataView, at: number) => void,
) {
  const name = enc.encode(entryName);
  const dv = new DataView(bytes.buffer);
  for (let i = 0; i + 46 < bytes.length; i++) {
    if (dv.getUint32(i, true) !== 0x02014b50) continue;
    const len = dv.getUint16(i + 28, true);
    if (len === name.length && name.every((b, k) => bytes[i + 46 + k] === b)) return patch(dv, i);
  }
  throw new Error(`no central entry ${entryName}`);
}

Deno.test("zip layouts torch never writes are refused clearly", async () => {
  await withTemp(async (dir) => {
    const path = `${dir}/x.bin`;
    const refuse = async (bytes: Uint8Array, re: RegExp) => {
      await Deno.writeFile(path, bytes);
      await assert.rejects(openTorchZip(path), (e: Error) => {
        assert.match(e.message, re);
        assert.ok(e.message.includes(path));
        return true;
      });
    };
    const good = await zipWith(stateDictPickle(6), 6);
    const compressed = good.slice();
    patchCentral(compressed, "crafted/data/0", (dv, at) => dv.setUint16(at + 10, 8, true));
    await refuse(compressed, /entry crafted\/data\/0 is compressed \(method 8, deflate\)/);

    const entries = (extra: { name: string; data: Uint8Array }[]) =>
      encodeStoredZip([
        { name: "crafted/data.pkl", data: stateDictPickle(6) },
        { name: "crafted/data/0", data: new Uint8Array(24) },
        ...extra,
      ]);
    await refuse(
      await entries([{ name: "other/file", data: enc.encode("x") }]),
      /outside the root crafted\//,
    );
    await refuse(
      await entries([{ name: "crafted/../../etc/passwd", data: enc.encode("x") }]),
      /would leave/,
    );
    await refuse(
      await entries([{ name: "crafted/byteorder", data: enc.encode("big") }]),
      /big-endian/,
    );
    // Unknown entries inside the root are ignored.
    await Deno.writeFile(
      path,
      await entries([{ name: "crafted/.data/serialization_id", data: enc.encode("1") }]),
    );
    assert.equal((await openTorchZip(path)).tensors.size, 1);

    await refuse(
      await zipWith(stateDictPickle(6), 5),
      /storage crafted\/data\/0 is 20 bytes.*6 F32 elements \(24 bytes\)/,
    );
    await refuse(
      await encodeStoredZip([{ name: "crafted/version", data: enc.encode("3\n") }]),
      /no <root>\/data\.pkl/,
    );
    await refuse(stateDictPickle(6), /legacy \(torch < 1\.6\) pickle file/);
    await refuse(
      enc.encode("definitely not a zip archive at all"),
      /no zip end-of-central-directory/,
    );
    await refuse(
      good.subarray(0, good.length - 30),
      /no zip end-of-central-directory|central directory/,
    );
  });
});

Deno.test("zip reader finds data from the local header, not the central directory", async () => {
  const z = await openZip(`${FIX}adapter-qkv/adapter_model.bin`);
  for (const e of z.entries.values()) assert.equal(e.dataOffset % 64, 0, e.name);
  assert.equal(z.entries.get("adapter_model/data.pkl")!.dataOffset, 64);
});
