// Admission control: slots, a bounded FIFO queue, refusals with Retry-After, aborts while queued.
import assert from "node:assert/strict";
import { createAdmission, QueueFullError } from "../serve/http/admission.ts";

Deno.test("admission grants up to maxConcurrent slots, queues up to maxQueue, refuses the rest", async () => {
  const adm = createAdmission({ maxConcurrent: 2, maxQueue: 2 });
  const r1 = await adm.acquire();
  const r2 = await adm.acquire();
  assert.equal(adm.active, 2);
  const order: number[] = [];
  const q3 = adm.acquire().then((r) => (order.push(3), r));
  const q4 = adm.acquire().then((r) => (order.push(4), r));
  assert.equal(adm.queued, 2);
  await assert.rejects(adm.acquire(), (e: unknown) => {
    assert.ok(e instanceof QueueFullError);
    assert.ok(e.retryAfter >= 1 && Number.isInteger(e.retryAfter));
    assert.match(e.message, /2 requests are generating and 2 are queued/);
    return true;
  });
  r1();
  r1(); // a second call must not free another slot
  const r3 = await q3;
  assert.deepEqual(order, [3]);
  assert.equal(adm.active, 2);
  assert.equal(adm.queued, 1);
  r2();
  const r4 = await q4;
  assert.deepEqual(order, [3, 4]);
  r3();
  r4();
  assert.equal(adm.active, 0);
  assert.equal(adm.queued, 0);
});

Deno.test("an aborted waiter leaves the queue; the slot goes to the next one", async () => {
  const adm = createAdmission({ maxConcurrent: 1, maxQueue: 3 });
  const held = await adm.acquire();
  const gone = new AbortController();
  const a = adm.acquire(gone.signal);
  const b = adm.acquire();
  assert.equal(adm.queued, 2);
  gone.abort(new Error("client left"));
  await assert.rejects(a, /client left/);
  assert.equal(adm.queued, 1);
  held();
  const rb = await b;
  assert.equal(adm.active, 1);
  rb();
  assert.equal(adm.active, 0);
  const already = new AbortController();
  already.abort(new Error("gone before"));
  await assert.rejects(adm.acquire(already.signal), /gone before/);
  assert.equal(adm.active, 0);
});

Deno.test("maxQueue 0 refuses as soon as the slots are taken; Retry-After grows with hold time", async () => {
  const adm = createAdmission({ maxConcurrent: 1, maxQueue: 0 });
  const r = await adm.acquire();
  await assert.rejects(adm.acquire(), QueueFullError);
  assert.equal(adm.retryAfterSeconds(), 1, "no history yet: the minimum");
  await new Promise((res) => setTimeout(res, 1100));
  r();
  const r2 = await adm.acquire();
  assert.ok(adm.retryAfterSeconds() >= 2, `retry after ${adm.retryAfterSeconds()}`);
  r2();
});

Deno.test("admission options are checked", () => {
  assert.throws(() => createAdmission({ maxConcurrent: 0, maxQueue: 1 }), /maxConcurrent/);
  assert.throws(() => createAdmission({ maxConcurrent: 1.5, maxQueue: 1 }), /maxConcurrent/);
  assert.throws(() => createAdmission({ maxConcurrent: 1, maxQueue: -1 }), /maxQueue/);
});
