// Checkpoint IO: safetensors, torch .bin zips (safe unpickler), sharded model directories and
// float conversions (atomic writes, progress, flags and JSON reading are in base/).

export { concatArrays } from "./concat.ts";
export {
  bf16BitsToNumber,
  bf16ToF32,
  bytesToF32,
  convertBytes,
  type Dtype,
  DTYPES,
  dtypeSize,
  f16BitsToNumber,
  f16ToF32,
  f32ToBf16,
  f32ToBytes,
  f32ToF16,
  type FloatDtype,
  isDtype,
  numberToBf16Bits,
  numberToF16Bits,
  numelOf,
} from "./dtype.ts";
export {
  type DecodedTensor,
  decodeSafetensors,
  encodeSafetensors,
  MAX_HEADER_LENGTH,
  openSafetensors,
  parseSafetensorsHeader,
  readSafetensorsHeader,
  type SafetensorsFile,
  type TensorData,
  type TensorsToWrite,
  type TensorToWrite,
  writeSafetensors,
} from "./safetensors.ts";
export { readTensorBytes, type StoredTensor, type TensorFile } from "./stored_tensor.ts";
export {
  openTorchZip,
  openZip,
  readZipEntry,
  type TorchZipFile,
  type ZipArchive,
  type ZipEntry,
} from "./torch_zip.ts";
export { type PickledTensor, scanPickle, unpickleStateDict } from "./unpickle.ts";
export {
  encodeStoredZip,
  encodeTorchStateDict,
  type TorchStorage,
  type TorchTensorToWrite,
  type TorchWriteOptions,
  writeTorchStateDict,
} from "./torch_writer.ts";
export {
  type Checkpoint,
  type CheckpointFormat,
  type CheckpointShard,
  type IterateOptions,
  iterateTensors,
  type LoadedTensor,
  openCheckpoint,
  readTensor as readCheckpointTensor,
  readTensorAsF32,
  tensorBytesAs,
} from "./checkpoint.ts";

export { readFileRange } from "./file_range.ts";
