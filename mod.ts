/**
 * The iBOT toolkit for Deno: a differentiable graph language whose programs are plain ONNX, a
 * reverse-mode autodiff, and an onnxruntime runtime with a named state store.
 *
 * ```ts
 * import { CompiledGraph, Graph, grad, mul, sum } from "./mod.ts";
 * const g = new Graph();
 * const x = g.input("x", "float32", [3]);
 * const loss = sum(mul(x, x));
 * g.output("loss", loss);
 * g.output("dx", grad(loss, [x])[0]);
 * const out = await (await CompiledGraph.create(g)).run({ x: Float32Array.of(1, 2, 3) });
 * console.log(out.dx); // Float32Array [2, 4, 6]
 * ```
 *
 * @module
 */

export { type DType, type Shape, Tensor, type ValueDType } from "./lib/graph/tensor.ts";
export * from "./lib/graph/dim.ts";
export {
  type Attribute,
  type ConstantSpec,
  type Domain,
  Graph,
  type GraphOptions,
  type GraphValueSpec,
  type InitRule,
  type NodeSpec,
  type ParamSpec,
  staticDim,
  type TapeEntry,
  type TensorData,
  type ValueSpec,
  type VJP,
} from "./lib/graph/graph.ts";
export { grad } from "./lib/graph/grad.ts";
export * from "./lib/graph/math.ts";
export * from "./lib/graph/shape.ts";
export * from "./lib/graph/permute.ts";
export * from "./lib/graph/masked_softmax.ts";
export * from "./lib/graph/scatter.ts";
export * from "./lib/graph/reduce.ts";
export * from "./lib/graph/linalg.ts";
export * from "./lib/graph/nn.ts";
export {
  type EncodedOnnxModel,
  encodeOnnxModel,
  type OnnxWriteOptions,
  writeOnnxModel,
} from "./lib/graph/onnx.ts";
export {
  CompiledGraph,
  type CompileOptions,
  type ExecutionProvider,
  type Feeds,
  type Outputs,
} from "./lib/runtime/session.ts";
export { StateStore } from "./lib/runtime/store.ts";
export { Rng, type RngState } from "./lib/runtime/rng.ts";
export { Progress, type ProgressOptions, type ProgressWriter } from "./lib/runtime/progress.ts";
export type { NamedTensor, NamedTensorDType, NamedTensors } from "./lib/runtime/named_tensor.ts";
export {
  type Device,
  DeviceSession,
  type DeviceSessionOptions,
  type Placement,
} from "./lib/runtime/device_session.ts";
export { ResidentState } from "./lib/runtime/resident_state.ts";
export type { OrtSessionOptions } from "./lib/runtime/ort_session.ts";
export type { OrtHandle } from "./lib/runtime/ort_api.ts";
export {
  prepareCuda,
  providerFolderProblem,
  type ProviderProblem,
} from "./lib/runtime/cuda_libraries.ts";
export {
  anyRank,
  type BroadcastData,
  type Communicator,
  launchedByMpirun,
  worldCommunicator,
  type WorldOptions,
} from "./lib/runtime/mpi.ts";
export { GradScaler, type GradScalerState } from "./lib/optim/grad_scaler.ts";
export { loadSafetensors, saveSafetensors } from "./lib/checkpoint/safetensors.ts";
export {
  layerNorm as layerNormLayer,
  linear as linearLayer,
  type LinearOptions,
} from "./lib/models/layers.ts";
export {
  attention,
  type AttentionResult,
  type BlockConfig,
  type DropPathScales,
  mlp,
  transformerBlock,
} from "./lib/models/block.ts";
export * from "./lib/optim/adamw.ts";
export {
  vit,
  VIT_SIZES,
  type VitConfig,
  type VitInputs,
  type VitOutputs,
  type VitSize,
} from "./lib/models/vit.ts";
export {
  clsLastLayer,
  headBottleneck,
  type HeadConfig,
  patchLastLayer,
} from "./lib/models/head.ts";
export {
  agreement,
  ibotLoss,
  type IbotLossInputs,
  type IbotLossTerms,
  updateCenters,
} from "./lib/losses/ibot.ts";
export { cosineSchedule, teacherTemperatureSchedule } from "./lib/optim/schedules.ts";
export { MaskGenerator, type MaskingConfig } from "./lib/data/masking.ts";
export { evalTransform, multiCrop, type MultiCropConfig } from "./lib/data/augment.ts";
export {
  type EvalBatch,
  evalBatches,
  type MultiCropBatch,
  MultiCropLoader,
  type MultiCropLoaderOptions,
} from "./lib/data/loader.ts";
export {
  type ImageSource,
  openSource,
  type RawImage,
  resolveDataPath,
  type SourceSpec,
  type Split,
} from "./lib/data/source.ts";
export {
  buildIbotStep,
  type IbotStep,
  type IbotStepConfig,
  type TrainingPrecision,
} from "./lib/train/step.ts";
export {
  buildIbotGradientStep,
  buildSplitIbotStep,
  type GradSlice,
  type IbotGradientStep,
  SPLIT_STEP_VALUES,
  type SplitIbotStep,
  splitStepDivisors,
} from "./lib/train/split_step.ts";
export {
  type IterationResult,
  StepRunner,
  type StepRunnerOptions,
} from "./lib/train/step_runner.ts";
export { pickSlotBucket, slotBuckets } from "./lib/train/slot_buckets.ts";
export {
  IbotTrainer,
  type IterationCallback,
  type IterationReport,
  type TrainerOptions,
  type TrainOutcome,
} from "./lib/train/trainer.ts";
export {
  type ArgValue,
  parsePretrainArgs,
  PRETRAIN_OPTIONS,
  type PretrainArgs,
} from "./lib/train/args.ts";
export * from "./lib/cli/options.ts";
export { type EpochMeterState, type StatName } from "./lib/train/epoch_meter.ts";
export { type RunConfig } from "./lib/train/config.ts";
export { type ClusterMetrics, clusterMetrics } from "./lib/train/cluster_metrics.ts";
export {
  loadTrainingCheckpoint,
  saveTrainingCheckpoint,
  type StoredArgs,
  type TrainingCheckpoint,
  type TrainingProgress,
} from "./lib/checkpoint/training_checkpoint.ts";
export { buildFeatureGraph, type FeatureConfig } from "./lib/models/features.ts";
export {
  evaluateKnn,
  evaluateKnnOnFiles,
  type ExtractedFeatures,
  extractFeatures,
  extractFeaturesToFile,
  FEATURE_FILES,
  type FeatureOptions,
  type KnnEvalOptions,
  type SplitOptions,
} from "./lib/eval/knn_eval.ts";
export {
  DEFAULT_KNN_BLOCK,
  DEFAULT_KNN_CHUNK,
  knnClassify,
  type KnnOptions,
  type KnnResult,
} from "./lib/eval/knn.ts";
export { type FeatureBank, l2NormalizeRows, memoryBank } from "./lib/eval/feature_bank.ts";
export { FeatureFile, FeatureFileWriter } from "./lib/eval/feature_file.ts";
export { type PthValue, readPth, stateDictFromPth, writePth } from "./lib/checkpoint/pth.ts";
export { PyDict, PyNamespace, PyTuple } from "./lib/checkpoint/pickle.ts";
export {
  type BackboneFileOptions,
  backboneStore,
  defaultImageSize,
  inputStep,
  isVitBackbone,
  loadBackbone,
  type LoadedBackbone,
  type LoadedVit,
  requireVit,
  type SwinBackboneConfig,
  type VitBackboneConfig,
} from "./lib/checkpoint/backbone_file.ts";
export {
  backboneBlocks,
  type BackboneConfig,
  type BackboneInputs,
  backboneTokens,
  backboneWidth,
  isSwin,
  patchGrid,
} from "./lib/models/backbone.ts";
export {
  swin,
  SWIN_PATCH_SIZE,
  SWIN_SIZES,
  type SwinConfig,
  swinDropPathRates,
  type SwinInputs,
  type SwinOutputs,
  type SwinSize,
  type SwinStage,
  swinStages,
} from "./lib/models/swin.ts";
export {
  relativePositionIndex,
  shiftedWindowMask,
  type WindowLayout,
  windowTokenIndex,
} from "./lib/models/window_attention.ts";
export { extractBackbone, toOfficialCheckpoint } from "./lib/checkpoint/official_checkpoint.ts";
export { checkBackboneKeys, loadBackboneWeights } from "./lib/checkpoint/weights_file.ts";
export {
  type BackboneRun,
  BackboneRunner,
  type BackboneRunnerOptions,
  checkTokenMultiple,
  headConfigFromWeights,
} from "./lib/analysis/backbone_runner.ts";
export {
  blankPicture,
  encodePng,
  enlargePicture,
  pastePicture,
  READABLE_PANEL_SIZE,
  readableScale,
  resizePicture,
  savePng,
  sideBySide,
} from "./lib/analysis/picture.ts";
export {
  cosineLr,
  DEFAULT_LRS,
  type LabelledFeatures,
  type LinearClassifier,
  linearPredict,
  type LinearProbeOptions,
  type LinearProbeReport,
  type LinearProbeResult,
  LinearProbeSweep,
  OFFICIAL_LRS,
  parseLrs,
  trainLinearProbes,
  trainLinearProbesPerEpoch,
} from "./lib/eval/linear.ts";
export { FeatureExtractor } from "./lib/eval/knn_eval.ts";
export {
  randomCropBatches,
  type RandomCropBatchOptions,
  type SourcePart,
} from "./lib/data/loader.ts";
export {
  buildOnnxBackbone,
  ONNX_BACKBONE_AXES,
  type OnnxBackboneOptions,
  type OnnxBackboneSummary,
  writeOnnxBackbone,
} from "./lib/eval/onnx_backbone.ts";
export * from "./lib/analysis/attention.ts";
export * from "./lib/analysis/correspondence.ts";
export * from "./lib/analysis/patterns.ts";
export * from "./lib/analysis/crops_preview.ts";
export * from "./lib/analysis/draw.ts";
export * from "./lib/analysis/colormap.ts";
export {
  type Cell as TableCell,
  type DisplayBundle,
  escapeHtml,
  type GridOptions,
  inKernel,
  linePlotPng,
  linePlotSvg,
  LivePlot,
  niceTicks,
  pictureBundle,
  pictureGrid,
  type PictureOptions,
  PLOT_MARGINS,
  plotBundle,
  type PlotOptions,
  plotPngBundle,
  type PlotSeries,
  show as showBundle,
  showGrid,
  type ShowOptions,
  showPicture,
  showPlot,
  type ShowPlotOptions,
  showTable,
  tableBundle,
} from "./lib/analysis/display.ts";
export { type IdxArray, readIdx, writeIdx } from "./lib/data/idx.ts";
export { type CropBox } from "./lib/data/augment.ts";
export {
  type LinearProbe,
  linearProbeAugmented,
  linearProbeCached,
  type ProbeLog,
} from "./lib/eval/linear_eval.ts";
export { type FrozenBackbone } from "./lib/eval/frozen_backbone.ts";
export {
  type FinetuneBatch,
  finetuneBatches,
  type FinetuneBatchOptions,
  finetuneEvalBatches,
  type FinetuneEvalOptions,
  finetuneItersPerEpoch,
} from "./lib/data/finetune_loader.ts";
export {
  defaultFinetuneTransform,
  finetuneEvalTransform,
  finetuneTrainTransform,
  type FinetuneTransformConfig,
} from "./lib/data/finetune_transform.ts";
export {
  type CutmixBox,
  type MixedBatch,
  Mixup,
  type MixupDraw,
  type MixupOptions,
  smoothedOneHot,
} from "./lib/data/mixup.ts";
export {
  applyRandAugment,
  drawRandAugment,
  parseRandAugment,
  type RandAugmentConfig,
  type RandAugmentOpName,
  type RandAugmentStep,
  type Resample,
} from "./lib/data/rand_augment.ts";
export {
  applyRandomErasing,
  drawRandomErasing,
  type RandomErasingOptions,
  type RandomErasingPlan,
} from "./lib/data/random_erasing.ts";
export {
  balancedSubset,
  idxImageName,
  type NamedSource,
  openNamedSource,
  openSubset,
  readSubsetFile,
  selectByName,
  subsetView,
  writeSubsetFile,
} from "./lib/data/subset.ts";
export {
  fitLogisticRegression,
  type LogisticRegressionFit,
  type LogisticRegressionOptions,
  type LogisticRegressionReport,
  type LogisticRegressionResult,
  logisticRegressionSweep,
  OFFICIAL_LAMBDAS,
} from "./lib/eval/logistic_regression.ts";
export {
  type Assignment,
  type ClusterMatching,
  hungarianAccuracy,
  linearSumAssignment,
  matchClusters,
} from "./lib/eval/hungarian.ts";
export {
  assignClusters,
  buildClusterGraph,
  clsHeadConfig,
  CLUSTER_IO,
  type ClusterAssignment,
  prototypeCountWarning,
  scoreClusters,
  type UnsupClsOptions,
  type UnsupClsResult,
} from "./lib/eval/unsup_cls.ts";
export {
  type EvalStats,
  finetune,
  type FinetuneCheckpoint,
  type FinetuneConfig,
  type FinetuneData,
  type FinetuneOutput,
  type FinetuneProgress,
  type FinetuneResult,
  FinetuneRunner,
  initialClassifierStore,
  type LabelledBatch,
  loadClassifierWeights,
  loadFinetuneCheckpoint,
  resizePositionEmbedding,
  saveFinetuneCheckpoint,
} from "./lib/eval/finetune.ts";
export {
  buildFinetuneEval,
  buildFinetuneStep,
  finetuneParameterGroups,
  type FinetuneStepConfig,
} from "./lib/eval/finetune_step.ts";
export {
  classifier,
  type ClassifierConfig,
  type ClassifierInputs,
  classifierKey,
} from "./lib/models/classifier.ts";
export {
  type LayerDecayOptions,
  layerScales,
  type ParameterGroup,
  parameterGroups,
  swinLayerId,
  vitLayerId,
} from "./lib/optim/layer_decay.ts";
export { softTargetCrossEntropy } from "./lib/losses/soft_target_ce.ts";
export * from "./lib/analysis/occlusion.ts";
export * from "./lib/analysis/shuffle.ts";
export * from "./lib/analysis/linear_part.ts";
export * from "./lib/analysis/line_plot.ts";
export * from "./lib/analysis/linear_probe_model.ts";
export * from "./lib/checkpoint/combined_checkpoint.ts";
export * from "./lib/models/token_subset_features.ts";
