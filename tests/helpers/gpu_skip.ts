/**
 * Why a test file's GPU tests are skipped: "" when a WebGPU adapter is there, else the reason
 * (printed once, naming the file), for `Deno.test({ ignore: reason !== "" })`.
 */
import { getGpu } from "../../core/gpu/device.ts";

export async function gpuSkipReason(file: string): Promise<string> {
  try {
    await getGpu();
    return "";
  } catch (err) {
    const reason = (err as Error).message;
    console.log(`${file}: skipped, no WebGPU adapter: ${reason}`);
    return reason;
  }
}
