/**
 * `fl.models`: the torchvision-exact CNNs (ResNet/ResNeXt, VGG, DenseNet, Inception v3), COVID-Net (as the
 * FLANNEL authors ran it) and tiny variants.
 *
 * @module
 */
export {
  Bottleneck,
  type ModelInit,
  type ModelOptions,
  type ModelScale,
  ResNet,
  resnet152,
  RESNET_CONFIGS,
  RESNET_TINY_CONFIGS,
  type ResNetConfig,
  resnext101_32x8d,
} from "./resnet.ts";
export { VGG, vgg19_bn, VGG19_CFG, VGG_TINY_CONFIGS, type VGGCfg, type VGGConfig } from "./vgg.ts";
export {
  DenseBlock,
  DenseLayer,
  DenseNet,
  densenet161,
  DENSENET161_CONFIGS,
  DENSENET_TINY_CONFIG,
  type DenseNetConfig,
  type DenseNetOptions,
  type NamedSequential,
  renameLegacyDenseNetKeys,
  Transition,
} from "./densenet.ts";
export {
  BasicConv2d,
  type BasicConvOwner,
  type ConvSpec,
  foldTransformInput,
  Inception3,
  INCEPTION_TINY_CONFIG,
  inception_v3,
  INCEPTION_V3_CONFIGS,
  InceptionA,
  InceptionAux,
  InceptionB,
  type InceptionBlock,
  InceptionC,
  type InceptionConfig,
  InceptionD,
  InceptionE,
  inceptionMinInputSize,
  type InceptionOptions,
  type MixedKind,
  type MixedSpec,
} from "./inception.ts";
export {
  CovidNet,
  covidnet,
  COVIDNET_TINY_CONFIG,
  type CovidNetConfig,
  type CovidNetInit,
  type CovidNetOptions,
  PEPX,
} from "./covidnet.ts";
export {
  AICovid,
  aicovid,
  type AICovidConfig,
  type AICovidOptions,
  EfficientNet,
  efficientnet_b4,
  EFFICIENTNET_STAGES,
  EFFICIENTNET_TINY_CONFIGS,
  type EfficientNetConfig,
  makeDivisible,
  MBConv,
  type MBConvStage,
  SqueezeExcitation,
  TINY_HEAD_DROPOUT,
} from "./efficientnet.ts";
