import assert from "node:assert/strict";
import {
  decodeSafetensors,
  encodeSafetensors,
  openSafetensors,
  readTensorBytes,
  type TensorToWrite,
  writeSafetensors,
} from "../core/io/safetensors.ts";
import { openTorchZip } from "../core/io/torch_zip.ts";

const FIX = new URL("./fixtures/chatglm6b-tiny/", import.meta.url).pathname;

interface BadCase {
  file: string;
  kind: "safetensors" | "torch-zip";
  reason: string;
}
const cases: BadCase[] = JSON.parse(await Deno.readTextFile(`${FIX}bad/cases.json`)).must_refuse;

// What each known bad file's error must say (beyond naming the file).
const EXPECTED: Record<string, RegExp> = {
  "offsets-past-eof.safetensors": /past the end.*40.*32 data bytes/,
  "overlapping-offsets.safetensors": /"b".*\[16, 24\).*overlap.*"a"/,
  "gap-between-tensors.safetensors": /\[8, 16\) belong to no tensor/,
  "header-2gb.safetensors": /2147483648.*over the 100000000 byte limit/,
  "header-past-eof.safetensors": /header length 4096 runs past the end/,
  "unknown-dtype.safetensors": /unknown dtype "F24"/,
  "shape-size-mismatch.safetensors": /shape \[2,4\] of F32 needs 32 bytes.*give 24/,
  "non-json-header.safetensors": /not JSON/,
  "header-not-utf8.safetensors": /not valid UTF-8/,
  "trailing-bytes.safetensors": /8 trailing bytes after the last tensor/,
  "too-short.safetensors": /4 bytes, shorter than the 8-byte header length/,
  "pickle-posix-system.bin": /GLOBAL posix\.system at byte \d+/,
  "pickle-builtins-eval.bin": /GLOBAL builtins\.eval at byte \d+/,
  "pickle-stack-global.bin": /STACK_GLOBAL os\.system at byte \d+/,
  "pickle-missing-storage.bin": /storage '7'.*no pickle-missing-storage\/data\/7 entry/,
  "pickle-storage-too-small.bin": /view \[4,3\] \(stride \[3,1\].*needs 12 elements.*holds 6/,
};

Deno.test("every file in bad/ is refused, naming the file and the reason", async () => {
  assert.ok(cases.length > 0);
  for (const c of cases) {
    const path = `${FIX}bad/${c.file}`;
    const open = c.kind === "safetensors" ? openSafetensors : openTorchZip;
    const err = await open(path).then(
      () => assert.fail(`${c.file} was accepted (${c.reason})`),
      (e: Error) => e,
    );
    assert.ok(err.message.includes(path), `error names the file: ${err.message}`);
    const want = EXPECTED[c.file] ??
      (c.kind === "safetensors"
        ? /not a valid safetensors file: \S/
        : /refused|not a readable|end of file/);
    assert.match(err.message, want, `${c.file}: ${err.message}`);
  }
});

Deno.test("model.safetensors and both adapters re-serialize byte for byte", async () => {
  for (
    const f of [
      "model.safetensors",
      "adapter-qkv/adapter_model.safetensors",
      "adapter-multi/adapter_model.safetensors",
      "bf16-sharded/model-00001-of-00002.safetensors",
      "bf16-sharded/model-00002-of-00002.safetensors",
    ]
  ) {
    const file = await openSafetensors(FIX + f);
    const tensors: TensorToWrite[] = [];
    // Given in reverse so the writer's own ordering is what is tested.
    for (const [name, t] of [...file.tensors].reverse()) {
      tensors.push({
        name,
        dtype: t.dtype,
        shape: t.shape,
        data: await readTensorBytes(file, name),
      });
    }
    const original = await Deno.readFile(FIX + f);
    const encoded = await encodeSafetensors(tensors, file.metadata ?? undefined);
    assert.deepEqual(encoded, original, f);
    const dir = await Deno.makeTempDir();
    try {
      await writeSafetensors(`${dir}/out.safetensors`, tensors, file.metadata ?? undefined);
      assert.deepEqual(await Deno.readFile(`${dir}/out.safetensors`), original, `${f} (file)`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
});

Deno.test("the header is read without the data; tensors are read by offset", async () => {
  const file = await openSafetensors(`${FIX}model.safetensors`);
  assert.deepEqual(file.metadata, { format: "pt" });
  assert.equal(file.tensors.size, 30);
  const lm = file.tensors.get("lm_head.weight")!;
  assert.deepEqual(lm.shape, [2048, 64]);
  assert.equal(lm.dtype, "F32");
  assert.equal(lm.byteLength, 2048 * 64 * 4);
  const whole = await Deno.readFile(`${FIX}model.safetensors`);
  for (const [name, t] of file.tensors) {
    const bytes = await readTensorBytes(file, name);
    assert.deepEqual(bytes, whole.subarray(t.byteOffset, t.byteOffset + t.byteLength), name);
  }
  // inv_freq buffers are in the file; skipping them is the model loader's business.
  assert.ok(file.tensors.has("transformer.layers.0.attention.rotary_emb.inv_freq"));
  await assert.rejects(readTensorBytes(file, "nope"), /no tensor named "nope"/);
});

function rawFile(header: string, dataBytes: number): Uint8Array {
  const h = new TextEncoder().encode(header);
  const out = new Uint8Array(8 + h.length + dataBytes);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
  out.set(h, 8);
  return out;
}

Deno.test("crafted headers: duplicates, bad fields, empty files", () => {
  const t = (o: string) => `{"dtype":"F32","shape":[2],"data_offsets":${o}}`;
  const refused: [string, number, RegExp][] = [
    [`{"a":${t("[0,8]")},"a":${t("[8,16]")}}`, 16, /names tensor "a" more than once/],
    [`{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}`, 8, /shape \[-2\] is not a list/],
    [`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}}`, 8, /is not \[begin, end\]/],
    [`{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}`, 8, /end before they begin/],
    [`{"__metadata__":{"x":1},"a":${t("[0,8]")}}`, 8, /__metadata__ value of "x"/],
    [`[1,2]`, 0, /not a JSON object/],
    [`{"a":${t("[8,16]")}}`, 16, /data bytes \[0, 8\) belong to no tensor/],
  ];
  for (const [header, n, re] of refused) {
    assert.throws(() => decodeSafetensors(rawFile(header, n), "crafted.safetensors"), re, header);
    assert.throws(() => decodeSafetensors(rawFile(header, n), "crafted.safetensors"), /crafted/);
  }
  const empty = decodeSafetensors(rawFile("{}", 0));
  assert.equal(empty.tensors.size, 0);
  const proto = decodeSafetensors(rawFile(`{"__proto__":${t("[0,8]")}}`, 8));
  assert.deepEqual([...proto.tensors.keys()], ["__proto__"]);
});

Deno.test("writer: dtype-then-name order, f32 input converted, padding, bad sizes refused", async () => {
  const bytes = await encodeSafetensors({
    "b": { dtype: "F32", shape: [2], data: Float32Array.of(1, 2) },
    "a": { dtype: "F32", shape: [1], data: Float32Array.of(3) },
    "h": { dtype: "F16", shape: [2], data: Float32Array.of(0.5, -1) },
    "i": { dtype: "I64", shape: [1], data: BigInt64Array.of(-7n) },
  });
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  assert.equal(n % 8, 0);
  const header = new TextDecoder().decode(bytes.subarray(8, 8 + n));
  assert.equal(
    header.trimEnd(),
    '{"i":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},' +
      '"a":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},' +
      '"b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]},' +
      '"h":{"dtype":"F16","shape":[2],"data_offsets":[20,24]}}',
  );
  const back = decodeSafetensors(bytes);
  assert.deepEqual([...new Uint16Array(back.tensors.get("h")!.data.slice().buffer)], [
    0x3800,
    0xbc00,
  ]);
  await assert.rejects(
    encodeSafetensors([{ name: "x", dtype: "F32", shape: [3], data: Float32Array.of(1) }]),
    /needs 12 bytes, its data has 4/,
  );
  await assert.rejects(
    encodeSafetensors([
      { name: "x", dtype: "F32", shape: [1], data: Float32Array.of(1) },
      { name: "x", dtype: "F32", shape: [1], data: Float32Array.of(1) },
    ]),
    /given twice/,
  );
});

Deno.test("a writer that fails midway leaves the old file intact and no temp file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/model.safetensors`;
    await writeSafetensors(path, { a: { dtype: "F32", shape: [2], data: Float32Array.of(1, 2) } });
    const before = await Deno.readFile(path);
    await assert.rejects(
      writeSafetensors(path, {
        a: { dtype: "F32", shape: [2], data: Float32Array.of(5, 6) },
        b: {
          dtype: "F32",
          shape: [2],
          data: () => {
            throw new Error("GPU readback failed");
          },
        },
      }),
      /GPU readback failed/,
    );
    assert.deepEqual(await Deno.readFile(path), before);
    const names = [];
    for await (const e of Deno.readDir(dir)) names.push(e.name);
    assert.deepEqual(names, ["model.safetensors"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a missing file is an error naming it", async () => {
  await assert.rejects(
    openSafetensors("/nonexistent/x.safetensors"),
    /\/nonexistent\/x.safetensors: file not found/,
  );
});
