/** Source readers: files of the three data sets → normalized records with warnings. */
export type { BuildWarning, FileKind, FileReadResult, ReadOptions, SourceRecord } from "./types.ts";
export {
  DEFAULT_READ_OPTIONS,
  readSourceBytes,
  readSourceFile,
  type RecordSink,
  type StreamOptions,
} from "./read_file.ts";
export { scanJsonArray, scanLines } from "./stream_json.ts";
export { DATA_EXTENSIONS, expandSourcePath, type MatchedFile } from "./glob.ts";
export { decodeSource, utf8ErrorOffset } from "./decode.ts";
export { parseDelimited } from "./csv.ts";
export { evalLayout, medicalDialogueRow, unpackDialogue } from "./shapes.ts";
export { type DownloadOptions, downloadSources, type DownloadSpec } from "./download.ts";
