/**
 * A transposed f32 copy of a frozen weight, kept with the weight (as a version-tagged attachment,
 * freed with it). The input gradient of a linear layer, dx = dy · W, is then the layer form
 * dy · (Wᵀ)ᵀ, which the fast texture matmul of software adapters takes; without the copy it would
 * run on the generic kernel, several times slower. Only for weights that do not change while the
 * copy is in use (frozen base weights in LoRA training).
 */

import { getPipeline } from "../../gpu/pipelines.ts";
import { grid, recordDispatch, type Recording } from "../../gpu/recording.ts";
import {
  assertUnchunked,
  bindingOf,
  emptyTensor,
  releaseTensor,
  type Tensor,
} from "../../tensor/tensor.ts";
import { declareInput, declareOutput, expectDtype, WG_BUILTINS, WG_INDEX } from "../common.ts";
import { uniformLayout } from "../uniforms.ts";

const WG = 256;
const KEY = "grad:transposed";
const TransposeParams = uniformLayout({ N: "u32", K: "u32" });

interface Transposed {
  version: number;
  tensor: Tensor;
  destroy(): void;
}

/** Wᵀ [K, N] f32 of a 2-D weight W [N, K] (f32 or f16), made once per weight version. */
export function transposedWeight(rec: Recording, w: Tensor): Tensor {
  const kernel = "transposedWeight";
  expectDtype(w, kernel, "weight", ["f32", "f16"]);
  assertUnchunked(w, kernel, "weight");
  const cached = w.meta.attachments.get(KEY) as Transposed | undefined;
  if (cached && cached.version === w.meta.version) return cached.tensor;
  cached?.destroy();
  const [N, K] = w.shape;
  // Not from the recording's reuse list: the copy outlives this step.
  const t = emptyTensor(rec.gpu, [K, N], "f32", { label: `${w.label ?? "weight"}ᵀ` });
  recordTranspose(rec, w, t);
  let destroyed = false;
  const entry: Transposed = {
    version: w.meta.version,
    tensor: t,
    destroy() {
      if (destroyed) return;
      destroyed = true;
      releaseTensor(t);
    },
  };
  w.meta.attachments.set(KEY, entry);
  return t;
}

/**
 * tᵀ [K, N] f32 of a 2-D unchunked f32 tensor t [N, K], a temporary of this recording (not
 * cached): the linear backward of a row-chunked weight reads dy's columns through it.
 */
export function transposeF32(rec: Recording, t: Tensor): Tensor {
  expectDtype(t, "transposeF32", "t", ["f32"]);
  assertUnchunked(t, "transposeF32", "t");
  const [N, K] = t.shape;
  const out = emptyTensor(rec.gpu, [K, N], "f32", { rec, label: `${t.label ?? "tensor"}ᵀ` });
  recordTranspose(rec, t, out);
  return out;
}

/** Records `T = Wᵀ` for W [N, K] (f32 or f16) into T [K, N] f32. */
function recordTranspose(rec: Recording, w: Tensor, t: Tensor): void {
  const [N, K] = w.shape;
  const pipeline = getPipeline(rec.gpu, `grad:transpose:${w.dtype}`, () => `
${TransposeParams.wgsl}${declareInput(1, "W", w.dtype)}
${declareOutput(2, "T")}
@compute @workgroup_size(${WG})
fn main(${WG_BUILTINS}) {
  let e = ${WG_INDEX} * ${WG}u + lid.x;
  if (e >= P.N * P.K) { return; }
  let k = e / P.N;
  let n = e - k * P.N;
  T[e] = ld_W(n * P.K + k);
}
`);
  recordDispatch(
    rec,
    pipeline,
    TransposeParams.pack({ N, K }),
    [bindingOf(w), bindingOf(t)],
    grid(rec.gpu, Math.ceil((N * K) / WG)),
  );
}
