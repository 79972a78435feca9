/**
 * `fl.onnx`: ONNX export by tracing (opset 17): {@link exportModel} for one model, {@link Trace} for a
 * graph of several (an ensemble). Every op states its ONNX translation next to its kernel; an op without one
 * throws `<op> cannot be exported to ONNX yet` when it runs under a trace.
 *
 * @module
 */
export {
  exportModel,
  type ExportOptions,
  IR_VERSION,
  OPSET,
  PRODUCER,
  type RecordOptions,
  type SaveInfo,
  type SaveOptions,
  Trace,
  type TraceInputSpec,
  type TraceOptions,
  type TraceOutput,
} from "./export.ts";
