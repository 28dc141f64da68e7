// `deno task bench gpu`: the known-card table (peak FP32 and bandwidth by adapter name), its
// flags, and the bench runner leaving flags to the benchmarks. The benchmark itself runs on
// llvmpipe by hand (`deno task bench gpu`), never in tests (timings).
import assert from "node:assert/strict";
import { knownCard, parseGpuBenchFlags } from "../bench/gpu.ts";
import { benchNames } from "../bench/main.ts";

Deno.test("bench gpu: cards are known by their adapter names", () => {
  const card = (device: string, description = "") => knownCard({ device, description })?.name;
  assert.equal(card("NVIDIA H100 80GB HBM3"), "NVIDIA H100 SXM");
  assert.equal(card("NVIDIA H100 PCIe"), "NVIDIA H100 PCIe");
  assert.equal(card("", "NVIDIA H200"), "NVIDIA H200");
  assert.equal(card("NVIDIA A100-SXM4-80GB"), "NVIDIA A100 80GB");
  assert.equal(card("NVIDIA A100-SXM4-40GB"), "NVIDIA A100 40GB");
  assert.equal(card("NVIDIA L4"), "NVIDIA L4");
  assert.equal(card("NVIDIA L40S"), "NVIDIA L40S");
  assert.equal(card("llvmpipe (LLVM 15.0.6, 256 bits)"), undefined);
  const h100 = knownCard({ device: "NVIDIA H100 80GB HBM3", description: "" })!;
  assert.ok(h100.peakGflops > 50_000 && h100.bandwidthGbs > 3_000);
});

Deno.test("bench gpu: flags override the references and are checked", () => {
  assert.deepEqual(parseGpuBenchFlags(["gpu", "--peak-gflops=500", "--bandwidth-gbs", "40"]), {
    peakGflops: 500,
    bandwidthGbs: 40,
  });
  assert.equal(parseGpuBenchFlags(["--size=512"]).size, 512);
  assert.throws(
    () => parseGpuBenchFlags(["--peak-gflops=-1"]),
    /--peak-gflops: expected a number > 0/,
  );
  assert.throws(() => parseGpuBenchFlags(["--size=7"]), /--size/);
  assert.deepEqual(benchNames(["gpu", "--peak-gflops", "500", "engine", "--size=64"]), [
    "gpu",
    "engine",
  ]);
});
