export { Ensemble, MLPStacking, NeuralWeightModule, SoftVoting } from "./flannel.ts";
export { Bottleneck, type ModelInit, type ModelOptions, type ModelScale, ResNet, type ResNetConfig, RESNET_CONFIGS, RESNET_TINY_CONFIGS, resnet152, resnext101_32x8d } from "./resnet.ts";
export { VGG, VGG19_CFG, type VGGCfg, type VGGConfig, vgg19_bn, VGG_TINY_CONFIGS } from "./vgg.ts";
export { DenseBlock, DenseLayer, DenseNet, type DenseNetConfig, type DenseNetOptions, DENSENET161_CONFIGS, DENSENET_TINY_CONFIG, densenet161, Transition } from "./densenet.ts";
export { BasicConv2d, Inception3, InceptionA, InceptionAux, InceptionB, InceptionC, InceptionD, InceptionE, type InceptionConfig, inceptionMinInputSize, type InceptionOptions, INCEPTION_TINY_CONFIG, INCEPTION_V3_CONFIGS, inception_v3, type MixedSpec } from "./inception.ts";
export { createLearner, isLearnerArch, LEARNER_ARCHS, LEARNER_TITLES, type LearnerArch, type LearnerOptions } from "./learners.ts";
