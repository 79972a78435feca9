// `fl.io`: images (decoding, resizing, PNG writing), safetensors weights, training checkpoints, atomic
// file writes, zip archives and the file tree that reads folders and archives alike.
export {
  encodeSafetensors,
  inspectSafetensors,
  loadSafetensors,
  loadSafetensorsSync,
  MAX_HEADER_BYTES,
  readSafetensorsMetadata,
  type SafetensorsInput,
  type SafetensorsTensor,
  saveSafetensors,
} from "./safetensors.ts";
export { loadTorch, type LoadTorchOptions } from "./torch.ts";
export { removeTemporaries, writeFileAtomic } from "./files.ts";
export {
  CHECKPOINT_FORMAT,
  type CheckpointOptimizer,
  loadCheckpoint,
  type LoadCheckpointOptions,
  saveCheckpoint,
  type SaveCheckpointOptions,
} from "./checkpoint.ts";
export {
  decodeImage,
  type DecodeOptions,
  DEFAULT_MAX_PIXELS,
  detectFormat,
  encodePngGray,
  type GrayImage,
  type ImageFormat,
  readImage,
  readImageSync,
  resizeGray,
} from "./images.ts";
export { isZipFile, writeZip, type ZipEntry, type ZipInput, type ZipLimits, ZipReader } from "./zip.ts";
export { bytesOf, type ByteSource } from "./sources.ts";
export {
  ARCHIVE_SEPARATOR,
  type ArchivePath,
  archivePath,
  closeArchives,
  isFile,
  isFolder,
  listFolder,
  openArchive,
  readBytes,
  readBytesAsync,
  readText,
  resolvePath,
  splitArchivePath,
} from "./tree.ts";
