/**
 * Grouped decoding for the Llama family: the shared group runner (../chatglm/decode_group.ts:
 * slot cache, GPU sampler, ring of ids, step 0 recorded and replayed) with this family's pass,
 * slot attention and 1-D positions. A slot is unpadded, so the token fed at cache length `L`
 * sits at position `L`, and the position grows by one per step as the length does.
 */

import type { ChatGLMCache } from "../chatglm/cache.ts";
import { decodeGroupOf, type GroupArch, type SlotGroup } from "../chatglm/decode_group.ts";
import type { Attend } from "./block.ts";
import { modelTable, stackPass } from "./lockstep.ts";
import type { LlamaModel } from "./model.ts";
import { slotAttention } from "./slots.ts";

/** k decode steps over `group.slots`, ids sampled on the GPU; ids [steps, slots] step-major. */
export function decodeSlotsGroup(
  model: LlamaModel,
  group: SlotGroup,
  cache: ChatGLMCache,
): Promise<Int32Array> {
  const table = modelTable(model, cache.capacity);
  const arch: GroupArch<Attend> = {
    model,
    pass: stackPass(model),
    attend: (pos, info, maxKeys) => slotAttention(model, cache, pos, table, info, maxKeys),
    positions: (_slot, length) => [length],
    posShape: (n) => [n, 1],
    posBump: { stride: 1, offset: 0 },
  };
  return decodeGroupOf(arch, group, cache);
}
