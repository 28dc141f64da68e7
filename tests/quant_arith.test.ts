import assert from "node:assert/strict";
import { openCheckpoint, readTensor } from "../core/io/checkpoint.ts";
import { viewAs } from "../core/io/dtype.ts";
import { packInt4, quantizeF16, roundHalfEven, unpackInt4 } from "../core/quant/arith.ts";
import { QUANTIZED_MODULES } from "../core/quant/format.ts";

const FIX = new URL("./fixtures/chatglm6b-tiny-quantized/", import.meta.url).pathname;

Deno.test("roundHalfEven rounds ties to even like torch.round", () => {
  assert.deepEqual([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4, -2.6].map(roundHalfEven), [
    0,
    2,
    2,
    -0,
    -2,
    -2,
    2,
    -3,
  ]);
});

Deno.test("int4 packing: high nibble holds the even column", () => {
  const q = Int8Array.from([1, -2, 7, -8]);
  const packed = packInt4(q, 1, 4);
  assert.deepEqual([...new Uint8Array(packed.buffer)], [0x1e, 0x78]);
  assert.deepEqual([...unpackInt4(packed, 1, 4)], [...q]);
});

for (const bits of [8, 4] as const) {
  Deno.test(`quantizing f16-tied/ reproduces int${bits}/ q and scales bit-exactly`, async () => {
    const src = await openCheckpoint(`${FIX}f16-tied`);
    const dst = await openCheckpoint(`${FIX}int${bits}`);
    let checked = 0;
    for (const name of src.tensorNames) {
      const mod = name.replace(/\.weight$/, "");
      if (!QUANTIZED_MODULES.some((m) => mod.endsWith(m)) || !name.endsWith(".weight")) continue;
      const w = await readTensor(src, name);
      const [rows, cols] = w.shape;
      const m = quantizeF16(viewAs(w.data, Uint16Array), rows, cols, bits);
      const q = await readTensor(dst, name);
      const s = await readTensor(dst, `${mod}.weight_scale`);
      assert.equal(q.dtype, "I8");
      const stored = new Int8Array(q.data.buffer, q.data.byteOffset, q.data.byteLength);
      const mine = bits === 8 ? m.q : packInt4(m.q, rows, cols);
      assert.deepEqual(mine, stored, `${name}: q differs`);
      assert.deepEqual(m.scales, viewAs(s.data, Uint16Array), `${name}: scales differ`);
      checked++;
    }
    assert.equal(checked, 8);
  });
}
